"""Cycles per batch of the default GEMM design serving the digits ViT: Verilator against the
cycle model (issue 11, point 1).

A batch of ``b`` inputs is the jobs :meth:`gen.runtime.model_device.ModelDevice.jobs` lists
(a conv / gemm layer with ``M = b x rows-per-input``, one weight pass per batch; attention
products one per input and head). Each distinct job shape runs once on GemmAccelerator in
Verilator (``verif.measure_gemm``: random INT8 operands, every output checked bit-exact against
``verif.golden``, the output always ready); the batch's cycles are the measured cycles of its
jobs times their counts, compared with ``gen.cycles.gemm_cycles`` per job and with the model
device's per-batch cycles.

    python -m verif.measure_batch [--batches 1 2 7]       # prints the table
"""

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["measure_batches", "format_table"]


def measure_batches(batches, device=None, out_dir=None):
    """Measure every distinct job of each batch size in ``batches`` in one simulation.

    Returns ``{batch: {"jobs": [job + {"measured", "model"}], "measured": cycles,
    "model": the device's batch_cycles}}``."""
    from gen.cycles import gemm_cycles
    from gen.runtime.model_device import ModelDevice
    from verif.measure_gemm import ACCELERATOR_KEYS, measure
    device = device or ModelDevice()
    params = {key: device.engine[key] for key in ACCELERATOR_KEYS}
    jobs = {b: device.jobs(b) for b in batches}
    shapes = sorted({(j["m"], j["k"], j["n"]) for js in jobs.values() for j in js})
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        rows = measure(params, [[f"{m}x{k}x{n}", m, k, n] for m, k, n in shapes],
                       Path(tmp) / "cycles.json")
    cycles = {(r["m"], r["k"], r["n"]): r["cycles"] for r in rows}
    out = {}
    for b, js in jobs.items():
        listed = [dict(j, measured=cycles[j["m"], j["k"], j["n"]],
                       model=gemm_cycles(j["m"], j["k"], j["n"], params["rows"], params["cols"]))
                  for j in js]
        out[b] = {"jobs": listed,
                  "measured": sum(j["count"] * j["measured"] for j in listed),
                  "model": device.batch_cycles(b)}
    return out


def format_table(results, clock_mhz):
    lines = [f"{'batch':>5} {'jobs':>5} {'Verilator cycles':>17} {'model cycles':>13} "
             f"{'equal':>6} {'cycles/input':>13} {'inputs/s @' + format(clock_mhz, 'g'):>14}"]
    for b, r in sorted(results.items()):
        jobs = sum(j["count"] for j in r["jobs"])
        lines.append(f"{b:>5} {jobs:>5} {r['measured']:>17} {r['model']:>13} "
                     f"{'yes' if r['measured'] == r['model'] else 'NO':>6} "
                     f"{r['measured'] / b:>13.0f} {b * clock_mhz * 1e6 / r['measured']:>14.0f}")
    return "\n".join(lines)


def main(argv=None):
    from gen.runtime.model_device import ModelDevice
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 .. the largest that fits)")
    args = parser.parse_args(argv)
    device = ModelDevice()
    batches = args.batches or list(range(1, device.max_batch + 1))
    results = measure_batches(batches, device)
    print(f"default design {device.rows}x{device.cols}, network {device.workload.name}: "
          f"cycles of one batch (START to done of every job, output never stalled)")
    print(format_table(results, device.design_mhz))
    return 0 if all(r["measured"] == r["model"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
