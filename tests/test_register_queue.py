"""`gen.hw.vit.system.RegisterQueue` in Amaranth simulation: every beat once, in order, under
random valid and ready, and a beat every cycle when both stay high."""

import random

import pytest
from amaranth.sim import Simulator

from gen.hw.vit.system import RegisterQueue


def run(valid_p, ready_p, beats=600, seed=0, width=12):
    dut = RegisterQueue(width)
    sent, got, cycles = [], [], []

    async def bench(ctx):
        rng = random.Random(seed)
        word = 0
        for cycle in range(40 * beats):
            if len(got) == beats:
                cycles.append(cycle)
                return
            ctx.set(dut.i.valid, word < beats and rng.random() < valid_p)
            ctx.set(dut.i.payload, (word * 2654435761) % (1 << width))
            ctx.set(dut.o.ready, rng.random() < ready_p)
            await ctx.delay(1e-9)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                sent.append((word * 2654435761) % (1 << width))
                word += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return sent, got, cycles


@pytest.mark.parametrize("valid_p, ready_p, seed", [(0.7, 0.6, 1), (0.3, 0.9, 2), (1.0, 0.2, 3),
                                                    (0.5, 0.5, 4)])
def test_every_beat_once_in_order(valid_p, ready_p, seed):
    sent, got, cycles = run(valid_p, ready_p, seed=seed)
    assert cycles, "the queue stopped passing beats"
    assert got == sent and len(got) == 600


def test_a_beat_every_cycle():
    sent, got, cycles = run(1.0, 1.0, beats=200)
    assert got == sent and cycles[0] <= 200 + 2, cycles
