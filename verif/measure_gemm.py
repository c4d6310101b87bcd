"""Cycle measurement of `gen cost-report` and `benchmarks/bench_foundation.py` (cocotb side).

Runs GEMMs on GemmAccelerator, checks each against the golden model and records its cycles.
The output stream is always ready (the board's output buffer never stalls), so the cycle
counts are the engine's own, without host transfer. Every result is also compared with the
golden model: a fast wrong answer is not a measurement.

Run it with `measure` (from Python, outside the simulator), or as the cocotb module
``verif.measure_gemm`` with BENCH_SHAPES and BENCH_OUT in the environment.
"""

import json
import os

import cocotb
import numpy as np
import torch

from verif import golden
from verif.test_gemm_accelerator import TB, random_requant

__all__ = ["measure", "MODULE"]

MODULE = "verif.measure_gemm"
ACCELERATOR_KEYS = ("rows", "cols", "act_depth", "wgt_depth", "param_depth", "out_depth")


def measure(params, shapes, out_path, *, extra_env=None):
    """Simulate GemmAccelerator(**params) on ``shapes`` (``[m, k, n]``, ``[name, m, k, n]`` or
    ``[name, m, k, n, batch]``: one job of ``batch`` GEMMs); writes and returns the list of
    ``{"name", "m", "k", "n", "batch", "cycles"}``."""
    from pathlib import Path

    from gen.hw.accelerator import GemmAccelerator
    from verif.sim import run_cocotb
    params = {key: params[key] for key in ACCELERATOR_KEYS + ("drain_lanes", "dataflow", "m_tile")
              if key in params}
    env = {"BENCH_SHAPES": json.dumps([list(s) for s in shapes]), "BENCH_OUT": str(out_path)}
    env.update(extra_env or {})
    run_cocotb(GemmAccelerator(**params), "gemm_accelerator", MODULE, params, extra_env=env)
    return json.loads(Path(out_path).read_text())


@cocotb.test()
async def measure_jobs(dut):
    """Jobs from BENCH_SHAPES: ``[m, k, n]``, ``[name, m, k, n]`` or ``[name, m, k, n, batch]``;
    results to BENCH_OUT."""
    jobs = [job if len(job) == 5 else job + [1] if len(job) == 4 else
            [f"{job[0]}x{job[1]}x{job[2]}", *job, 1]
            for job in json.loads(os.environ["BENCH_SHAPES"])]
    tb = TB(dut, ready_probability=1.0)
    await tb.reset()
    rng = np.random.default_rng(0)
    results = []
    for name, m, k, n, batch in jobs:
        a, w = rng.integers(-128, 128, (batch, m, k)), rng.integers(-128, 128, (batch, k, n))
        bias, mult, shift = random_requant(rng, n, k)
        await tb.load(a if batch > 1 else a[0], w if batch > 1 else w[0], bias, mult, shift)
        error, cycles = await tb.run(m, k, n, max_cycles=10_000_000, batch=batch)
        assert error == 0, f"{name} ({m}x{k}x{n}): the device reports an error"
        expected = np.stack([golden.gemm_int8(*(torch.from_numpy(np.asarray(x))
                                                for x in (a_, w_, bias, mult, shift))).numpy()
                             for a_, w_ in zip(a, w)])
        got = tb.collect(m, n, batch if batch > 1 else None).reshape(expected.shape)
        assert (got == expected).all(), (
            f"{name} ({m}x{k}x{n}): {int((got != expected).sum())} wrong outputs")
        results.append({"name": name, "m": m, "k": k, "n": n, "batch": batch,
                        "cycles": cycles})
        # cost_report follows these lines for its progress display.
        dut._log.info("COST %s %dx%dx%d: %d cycles", name, m, k, n, cycles)
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(results, f)
