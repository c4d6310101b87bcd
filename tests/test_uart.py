"""UART transmitter -> receiver loopback in Amaranth's simulator, with stream back-pressure."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from gen.hw.uart import UARTReceiver, UARTTransmitter


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_loopback_carries_every_byte(divisor):
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor)
    m.submodules.rx = rx = UARTReceiver(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x80, 0x01] + [random.Random(divisor).randrange(256)
                                                   for _ in range(20)]
    received = []

    async def producer(ctx):
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)

    async def consumer(ctx):
        rng = random.Random(1)
        while len(received) < len(data):
            # Reads at random moments; one byte time is 10 * divisor cycles, so no overrun.
            ready = rng.random() < 0.5
            ctx.set(rx.o.ready, ready)
            if ready and ctx.get(rx.o.valid):
                received.append(ctx.get(rx.o.payload))   # transferred at the coming edge
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(len(data) * 12 * divisor * 1e-8 + 1e-6)
    assert received == data


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_divisor_below_minimum_is_refused():
    with pytest.raises(ValueError, match="at least 4 clocks per bit"):
        UARTReceiver(3)
