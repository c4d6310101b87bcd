"""Requantizer against `golden.requantize`: every shift 1..62, extreme accumulators, biases and
multipliers, random input gaps (garbage on the idle payload) and random output back-pressure;
order kept (tags); nothing extra after the last result; stimuli from ``ACCELGEN_SEED``."""

import random

import cocotb
import torch

from verif import golden, seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, reset,
                           start_clock)

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


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def matches_golden_under_back_pressure(dut):
    log_seed(dut)
    start_clock(dut.clk, 10)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await reset(dut.clk, dut.rst, 2)

    cases = vectors(seeds.derive("requantizer vectors"))
    acc = torch.tensor([c[0] for c in cases]) + torch.tensor([c[1] for c in cases])
    expected = golden.requantize(acc, torch.tensor([c[2] for c in cases]),
                                 torch.tensor([c[3] for c in cases])).tolist()
    i_bus, o_bus = StreamBus(dut, "i"), StreamBus(dut, "o")
    StreamMonitor(i_bus, dut.clk)          # our own source keeps the rules too
    monitor = StreamMonitor(o_bus, dut.clk)
    sink = StreamSink(o_bus, dut.clk, ready_probability=0.6, rng=seeds.rng("requantizer sink"))
    source = StreamSource(i_bus, dut.clk, gap_probability=0.2, idle="random",
                          rng=seeds.rng("requantizer source"))
    await source.send([(a & 0xFFFFFFFF) | (b & 0xFFFFFFFF) << 32 | mult << 64 | shift << 95 |
                       (index % 2 ** TAG_BITS) << 101
                       for index, (a, b, mult, shift) in enumerate(cases)])
    received = [(payload >> 8, (payload & 0xFF) - 256 if payload & 0x80 else payload & 0xFF)
                for payload in await sink.recv(len(cases))]
    await sink.expect_quiet(32)
    monitor.check_valid_independent()
    for position, (tag, value) in enumerate(received):
        assert tag == position % 2 ** TAG_BITS, f"output {position} carries tag {tag}"
        a, b, mult, shift = cases[position]
        assert value == expected[position], (
            f"acc={a} bias={b} M={mult} S={shift}: got {value}, expected {expected[position]} "
            f"({seeds.describe()})")


def test_requantizer():
    from amaranth.hdl import unsigned
    from gen.hw.requant import Requantizer
    from verif.sim import run_cocotb
    run_cocotb(Requantizer(tag_shape=unsigned(TAG_BITS)), "requantizer", "verif.test_requantizer",
               {"tag_bits": TAG_BITS})
