"""UART transmitter -> receiver loopback in Amaranth's simulator, with stream back-pressure."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from gen.hw.uart import MIN_DIVISOR, UARTReceiver, UARTTransmitter


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


def receive_line(divisor, clock_hz, bit_s, data, *, gap_bits=0.0, phase=0.37):
    """Bytes sent 8N1 on a receiver's ``rx`` by a sender with its own bit time ``bit_s``
    (not a multiple of the receiver's clock: its edges fall anywhere in a cycle), starting
    ``phase`` cycles into the simulation, ``gap_bits`` of idle line between a stop bit and the
    next start bit (0: back to back). Returns what the receiver delivered and its error flags."""
    rx = UARTReceiver(divisor)
    received = []
    period = 1 / clock_hz
    end = (10 + 2 + gap_bits) * bit_s * len(data) + 40 * period

    async def sender(ctx):
        ctx.set(rx.rx, 1)
        now, start = 0.0, 10 * period + phase * period
        for index, byte in enumerate(data):
            byte_start = start + index * (10 + gap_bits) * bit_s
            for bit, level in enumerate([0] + [(byte >> i) & 1 for i in range(8)] + [1]):
                at = byte_start + bit * bit_s
                await ctx.delay(at - now)
                now = at
                ctx.set(rx.rx, level)

    async def consumer(ctx):
        ctx.set(rx.o.ready, 1)
        while True:
            await ctx.tick()
            if ctx.get(rx.o.valid):
                received.append(ctx.get(rx.o.payload))

    sim = Simulator(rx)
    sim.add_clock(period)
    sim.add_testbench(sender)
    sim.add_testbench(consumer, background=True)
    flags = {}

    async def flags_at_end(ctx):
        await ctx.delay(end)
        flags.update(overrun=ctx.get(rx.overrun), framing_error=ctx.get(rx.framing_error))

    sim.add_testbench(flags_at_end)
    sim.run()
    return received, flags


#: The FT231X makes 3 Mbaud exactly (its 48 MHz clock / 16).
FT231X_BIT_S = 1 / 3_000_000


def three_mbaud_host_clock():
    """The host clock and divisor the shipped design's PLL planning picks for 3 Mbaud."""
    from gen.boards import get_board
    from gen.config import load_config
    from gen.design import plan_host_link
    from gen.hw.pll import plan_pll
    config = load_config()
    board = get_board(config.board)
    link = plan_host_link(board, plan_pll(board.oscillator_mhz, config.clock_mhz), 3_000_000)
    assert link.exact and link.source == "pll"
    return float(link.clock_mhz) * 1e6, link.divisor


@pytest.mark.parametrize("timing", [0.0, +0.02, -0.02], ids=["exact", "sender+2%", "sender-2%"])
@pytest.mark.parametrize("clock", ["design", "48MHz", "min"])
def test_receiver_at_3_mbaud_takes_ft231x_bytes_back_to_back(clock, timing):
    """3 Mbaud at the host clock the design uses (and at 48 MHz / 16 and the smallest divisor
    the generator allows), bytes back to back, the sender's bit time exact (the FT231X) or 2%
    long or short: every byte bit-exact, no error flag."""
    if clock == "design":
        clock_hz, divisor = three_mbaud_host_clock()
    elif clock == "48MHz":
        clock_hz, divisor = 48e6, 16
    else:
        clock_hz, divisor = 3e6 * MIN_DIVISOR, MIN_DIVISOR
    rng = random.Random(f"{clock} {timing}")
    data = [0x00, 0xFF, 0x55, 0xAA, 0x80, 0x01, 0xFE, 0x7F] + [rng.randrange(256)
                                                              for _ in range(24)]
    for phase in (0.05, 0.5, 0.95):
        received, flags = receive_line(divisor, clock_hz, FT231X_BIT_S * (1 + timing), data,
                                       phase=phase)
        assert received == data, (clock, timing, phase)
        assert flags == {"overrun": 0, "framing_error": 0}


def test_receiver_after_idle_gaps_and_mixed_timing():
    """Gaps of a fraction of a bit to several bits between bytes resynchronise on each start
    bit (the design's 3 Mbaud clock and divisor)."""
    clock_hz, divisor = three_mbaud_host_clock()
    data = list(range(0, 256, 7))
    for gap in (0.3, 1.0, 3.7):
        received, flags = receive_line(divisor, clock_hz, FT231X_BIT_S * 1.015, data,
                                       gap_bits=gap)
        assert received == data and flags == {"overrun": 0, "framing_error": 0}, gap


@pytest.mark.parametrize("timing", [+0.04, -0.04], ids=["sender+4%", "sender-4%"])
def test_design_divisor_has_margin_beyond_the_tolerance(timing):
    """At the design's 3 Mbaud divisor the receiver takes a sender 4% off (the generator's 2%
    host-clock tolerance and 2% of the sender's own), back to back."""
    clock_hz, divisor = three_mbaud_host_clock()
    data = [0x00, 0xFF, 0x55, 0xAA] + [random.Random(timing).randrange(256) for _ in range(12)]
    for phase in (0.05, 0.95):
        received, flags = receive_line(divisor, clock_hz, FT231X_BIT_S * (1 + timing), data,
                                       phase=phase)
        assert received == data and flags == {"overrun": 0, "framing_error": 0}, phase


def test_receiver_below_its_margin_fails_in_this_harness():
    """The harness can fail: divisor 4 against a sender 3% fast loses bytes back to back."""
    data = [0x00, 0xFF, 0x55, 0xAA] + [random.Random(3).randrange(256) for _ in range(12)]
    results = [receive_line(MIN_DIVISOR, 3e6 * MIN_DIVISOR, FT231X_BIT_S * 0.97, data,
                            phase=phase) for phase in (0.02, 0.3, 0.6, 0.98)]
    assert any(received != data or flags["framing_error"] for received, flags in results)
