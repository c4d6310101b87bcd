"""Batching on the generated GEMM engine: cycles per batch in Verilator equal the cycle model
(issue 11, point 1).

The default 8x8 design runs every distinct job of a digits-ViT batch (``ModelDevice.jobs``:
the conv / gemm layers with ``M = batch x rows-per-input``, the attention products per input)
at batch 1, 2 and the largest that fits; each job's outputs are compared bit-exact with the
golden model (``verif.measure_gemm``), each job's cycles with ``gen.cycles.gemm_cycles`` and
each batch's total with the model device's per-batch cycles.
"""

from gen.cycles import gemm_cycles
from gen.runtime.model_device import ModelDevice
from verif.measure_batch import measure_batches


def test_batch_cycles_equal_the_model(tmp_path):
    device = ModelDevice()
    batches = sorted({1, 2, device.max_batch})
    results = measure_batches(batches, device, out_dir=tmp_path)
    assert set(results) == set(batches)
    for b, r in results.items():
        # The batch really is in M: the largest layer's M grows with the batch.
        assert max(j["m"] for j in r["jobs"]) >= 17 * b
        for job in r["jobs"]:
            assert job["measured"] == job["model"] == gemm_cycles(
                job["m"], job["k"], job["n"], device.rows, device.cols), job
        assert r["measured"] == r["model"] == device.batch_cycles(b), (b, r["measured"],
                                                                      r["model"])
    # Batching pays: fewer cycles per input at the largest batch than at batch 1.
    top = device.max_batch
    assert results[top]["measured"] / top < results[1]["measured"]
