"""`gen.hw.attention.memory.BlockRamFIFO` in Verilator against a Python queue.

Each configuration runs twice: as plain RTL (an inferred memory per bank, whose read of a word
in the cycle it is written returns all ones) and elaborated for ECP5, DP16KD instances on the
cell model `verif/cells/dp16kd.v`. Every beat that leaves must be the next one the queue holds
(no beat lost, duplicated or reordered), under random gaps and random back-pressure; a FIFO
that nobody reads takes exactly ``depth`` beats; with both sides always ready it passes a beat
every cycle; and once drained it offers nothing more.
"""

import json
import os

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from verif import seeds
from verif.streams import StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, start_clock

CELLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cells")
MODEL = os.path.join(CELLS, "dp16kd.v")
CLOCK_NS = 10
#: (width, depth): the ViT design's message FIFO (three banks, the last partly used), one word
#: wider than a block and two banks, and one below a block RAM's worth (LUT RAM).
CONFIGS = [(18, 1088), (40, 600), (7, 5)]


async def _start(dut):
    log_seed(dut)
    start_clock(dut.clk, CLOCK_NS)
    dut.rst.value = 1
    dut.w__valid.value = 0
    dut.r__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def fifo_equals_a_queue(dut):
    params = json.loads(os.environ["DUT_PARAMS"])
    width, depth = params["width"], params["depth"]
    rng = seeds.rng(f"bram fifo {width}x{depth}")
    await _start(dut)
    w, r = StreamBus(dut, "w"), StreamBus(dut, "r")
    StreamMonitor(w, dut.clk)
    StreamMonitor(r, dut.clk)
    source = StreamSource(w, dut.clk, rng=rng, idle="random")
    sink = StreamSink(r, dut.clk, ready_probability=0.0, rng=rng)

    def words(count):
        return [rng.getrandbits(width) for _ in range(count)]

    # Nobody reads: exactly `depth` beats go in, however long the writer waits.
    first = words(depth + 3)
    source.send_nowait(first)
    await ClockCycles(dut.clk, depth + 40)
    assert source.sent == depth, f"a full FIFO of {depth} took {source.sent} beats"
    assert sink.received == 0
    sink.ready_probability = 1.0
    got = await sink.recv(len(first))
    assert got == first, "the first fill came out changed"

    # Random gaps and back-pressure: the same beats, in order.
    for gap, ready in ((0.3, 0.6), (0.7, 0.9), (0.0, 0.3)):
        beats = words(2 * depth + 17)
        source.gap_probability, sink.ready_probability = gap, ready
        await source.send(beats)
        got = await sink.recv(len(beats))
        assert got == beats, (f"gaps {gap}, ready {ready}: "
                              f"{sum(a != b for a, b in zip(got, beats))} beats differ")

    # One beat into the empty queue: its latency, as the component states it.
    from gen.hw.attention.memory import BlockRamFIFO
    fifo = BlockRamFIFO(width=width, depth=depth)
    sent_at, taken_at = [], []
    source.on_accept = lambda beat, time_ns: sent_at.append(time_ns)
    sink.on_beat = lambda beat, time_ns: taken_at.append(time_ns)
    source.gap_probability, sink.ready_probability = 0.0, 1.0
    await ClockCycles(dut.clk, 20)
    await source.send(words(1))
    await sink.recv(1)
    latency = (taken_at[-1] - sent_at[-1]) / CLOCK_NS
    assert latency == fifo.latency, f"latency {latency:.0f} cycles, stated {fifo.latency}"

    # Both sides always ready: a beat a cycle once the first is through (if the queue holds
    # a round trip's beats; else `depth` beats per round trip).
    beats = words(max(3 * depth, 200))
    taken_at.clear()
    await source.send(beats)
    got = await sink.recv(len(beats))
    assert got == beats
    cycles = (taken_at[-1] - taken_at[0]) / CLOCK_NS + 1
    if fifo.full_rate:
        assert cycles == len(beats), f"{len(beats)} beats took {cycles:.0f} cycles at full rate"
    else:
        round_trip = fifo.latency + 1
        assert cycles <= -(-len(beats) // depth) * round_trip, (
            f"{len(beats)} beats took {cycles:.0f} cycles, {depth} per {round_trip} expected")
    await sink.expect_quiet(64)
    dut._log.info(f"{width}x{depth}: every beat in order; full rate {len(beats)} beats in "
                  f"{cycles:.0f} cycles")


def _top(width, depth, ecp5):
    """The FIFO as a component with ports ``w`` and ``r`` (elaborated for ECP5 or not)."""
    from amaranth.hdl import Elaboratable, Fragment, Module
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    from gen.boards import get_board
    from gen.hw.attention.memory import BlockRamFIFO

    class OnPlatform(Elaboratable):
        def __init__(self, inner, platform):
            self.inner, self.platform = inner, platform

        def elaborate(self, platform):
            return Fragment.get(self.inner, self.platform)

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"w": In(stream.Signature(width)), "r": Out(stream.Signature(width))})

        def elaborate(self, platform):
            m = Module()
            queue = BlockRamFIFO(width=width, depth=depth)
            m.submodules.fifo = (OnPlatform(queue, get_board("ulx3s-85f").platform_class()())
                                 if ecp5 else queue)
            wiring.connect(m, wiring.flipped(self.w), queue.w_stream)
            wiring.connect(m, queue.r_stream, wiring.flipped(self.r))
            return m

    return Top()


def _run(width, depth, ecp5):
    from amaranth.back import verilog

    from verif.sim import SIM_BUILD, run_cocotb
    params = {"width": width, "depth": depth}
    if not ecp5:
        run_cocotb(_top(width, depth, False), "bram_fifo", "verif.test_block_ram_fifo", params)
        return
    text = verilog.convert(_top(width, depth, True), name="bram_fifo", emit_src=False)
    from gen.hw.accelerator import BRAM_MIN_BITS
    banks = [min(512, depth - k) for k in range(0, depth, 512)]
    blocks = sum(-(-width // 36) for words in banks if width * words >= BRAM_MIN_BITS)
    assert text.count("DP16KD ") == blocks, (text.count("DP16KD "), blocks)
    source = SIM_BUILD / f"bram_fifo-ecp5-{width}x{depth}" / "bram_fifo.v"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(None, "bram_fifo", "verif.test_block_ram_fifo", {**params, "ecp5": True},
               sources=[source, MODEL], build_args=["-Wno-MULTIDRIVEN"])


def test_block_ram_fifo_rtl():
    for width, depth in CONFIGS:
        _run(width, depth, ecp5=False)


def test_block_ram_fifo_on_dp16kd_model():
    for width, depth in CONFIGS:
        _run(width, depth, ecp5=True)
