"""cocotb side of `gen.cost_report`: run GEMM jobs on GemmAccelerator, check them, record cycles.

Environment: ``COST_SHAPES`` is a JSON list of ``[name, m, k, n]``; ``COST_OUT`` names the JSON
file written at the end (a list of ``{"name", "m", "k", "n", "cycles"}``). The file is written
only once every job has matched the golden model, so a wrong answer never becomes a
measurement.

The output stream is always ready (the board's output buffer never stalls), so the counts are
the engine's own cycles from START to done, without host transfer, which is what the cost
model predicts.
"""

import json
import os

import cocotb
import numpy as np
import torch

import golden
from test_gemm_accelerator import TB, random_requant


@cocotb.test()
async def measure(dut):
    shapes = json.loads(os.environ["COST_SHAPES"])
    tb = TB(dut, ready_probability=1.0)
    await tb.reset()
    rng = np.random.default_rng(0)
    results = []
    for name, m, k, n in shapes:
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
        dut._log.info("COST %s %dx%dx%d: %d cycles", name, m, k, n, cycles)
    with open(os.environ["COST_OUT"], "w") as f:
        json.dump(results, f)
