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
    """Simulate GemmAccelerator(**params) on ``shapes`` (``[m, k, n]`` or ``[name, m, k, n]``);
    writes and returns the list of ``{"name", "m", "k", "n", "cycles"}``."""
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
    """Jobs from BENCH_SHAPES: ``[m, k, n]`` or ``[name, m, k, n]``; results to BENCH_OUT."""
    jobs = [job if len(job) == 4 else [f"{job[0]}x{job[1]}x{job[2]}", *job]
            for job in json.loads(os.environ["BENCH_SHAPES"])]
    tb = TB(dut, ready_probability=1.0)
    await tb.reset()
    rng = np.random.default_rng(0)
    results = []
    for name, m, k, n in jobs:
        a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
        bias, mult, shift = random_requant(rng, n, k)
        await tb.load(a, w, bias, mult, shift)
        error, cycles = await tb.run(m, k, n, max_cycles=10_000_000)
        assert error == 0, f"{name} ({m}x{k}x{n}): the device reports an error"
        expected = golden.gemm_int8(*(torch.from_numpy(np.asarray(x))
                                      for x in (a, w, bias, mult, shift))).numpy()
        got = tb.collect(m, n)
        assert (got == expected).all(), (
            f"{name} ({m}x{k}x{n}): {int((got != expected).sum())} wrong outputs")
        results.append({"name": name, "m": m, "k": k, "n": n, "cycles": cycles})
        # cost_report follows these lines for its progress display.
        dut._log.info("COST %s %dx%dx%d: %d cycles", name, m, k, n, cycles)
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(results, f)
