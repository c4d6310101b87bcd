"""Requantizer against `golden.requantize`: every shift 1..62, extreme accumulators, biases and
multipliers, random input gaps and random output back-pressure; order kept (tags)."""

import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

import golden

TAG_BITS = 16


def vectors(seed=0):
    rng = random.Random(seed)
    edges = [-(2 ** 31), -(2 ** 31) + 1, -1, 0, 1, 2 ** 31 - 1, 2 ** 30, -(2 ** 30)]
    mults = [0, 1, 2 ** 30, 2 ** 31 - 1]
    out = []
    for shift in range(1, 63):
        for _ in range(24):
            total = rng.choice(edges) if rng.random() < 0.3 else rng.randrange(-(2 ** 31), 2 ** 31)
            bias = rng.randrange(-(2 ** 20), 2 ** 20)
            acc = total - bias
            if not -(2 ** 31) <= acc < 2 ** 31:   # keep acc itself an INT32
                acc, bias = total, 0
            mult = rng.choice(mults) if rng.random() < 0.3 else rng.randrange(0, 2 ** 31)
            out.append((acc, bias, mult, shift))
    # Exact rounding ties: (acc*M) is an odd multiple of 2^(S-1).
    for shift in range(1, 31):
        for sign in (1, -1):
            out.append((sign * (2 * rng.randrange(1, 1000) + 1), 0, 1 << (shift - 1), shift))
    rng.shuffle(out)
    return out


@cocotb.test()
async def matches_golden_under_back_pressure(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    rng = random.Random(7)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    cases = vectors()
    acc = torch.tensor([c[0] for c in cases]) + torch.tensor([c[1] for c in cases])
    expected = golden.requantize(acc, torch.tensor([c[2] for c in cases]),
                                 torch.tensor([c[3] for c in cases])).tolist()
    received = []

    async def sink():
        while len(received) < len(cases):
            await RisingEdge(dut.clk)
            ready = rng.random() < 0.6
            dut.o__ready.value = int(ready)
            await ReadOnly()
            if ready and int(dut.o__valid.value):
                payload = int(dut.o__payload.value)
                value = payload & 0xFF
                received.append((payload >> 8, value - 256 if value > 127 else value))

    sink_task = cocotb.start_soon(sink())
    index, offering = 0, False
    while index < len(cases):
        # A compliant source: once valid is raised it stays up, payload fixed, until taken.
        if not offering and rng.random() < 0.8:
            a, b, mult, shift = cases[index]
            dut.i__payload.value = ((a & 0xFFFFFFFF) | (b & 0xFFFFFFFF) << 32 | mult << 64 |
                                    shift << 95 | (index % 2 ** TAG_BITS) << 101)
            offering = True
        dut.i__valid.value = int(offering)
        await ReadOnly()
        taken = offering and int(dut.i__ready.value)
        await RisingEdge(dut.clk)
        if taken:
            index, offering = index + 1, False
    dut.i__valid.value = 0
    await sink_task
    for position, (tag, value) in enumerate(received):
        assert tag == position % 2 ** TAG_BITS, f"output {position} carries tag {tag}"
        a, b, mult, shift = cases[position]
        assert value == expected[position], (
            f"acc={a} bias={b} M={mult} S={shift}: got {value}, expected {expected[position]}")


def test_requantizer():
    from amaranth.hdl import unsigned
    from gen.hw.requant import Requantizer
    from sim import run_cocotb
    run_cocotb(Requantizer(tag_shape=unsigned(TAG_BITS)), "requantizer", "test_requantizer",
               {"tag_bits": TAG_BITS})
