"""The ViT row units against `golden_vit`, bit for bit, under Verilator.

* `ResidualAdder` (lanes 1 and 3) against `golden_vit.residual_add`: every shift 1..31, INT8
  extremes, ``ma``/``mb`` 0 and 2^15-1, exact rounding ties of both signs, saturation;
* `ActivationTable` against `golden_vit.apply_table`: the elaborated ``init`` table, random,
  GELU-like and ReLU tables written through ``table_wr`` (in random order, over garbage), every
  index, pass-through (``apply`` 0) mixed in; long stalls with the pipeline full;
* `Argmax` (rows of 1, 10 and 17) against `golden_vit.first_argmax`: ties, all-equal rows,
  maxima first and last.

All of them with random input gaps (garbage on the idle payload), random output back-pressure
and phases of full throughput; tags (order) checked, protocol monitors on every stream,
nothing extra after each batch, latencies against the units' constants. One Verilator build
holds every unit (a wrapper that only forwards their ports, each unit's under its own prefix).
Stimuli from ``ACCELGEN_SEED``.
"""

import json
import math
import os

import cocotb
import torch
from cocotb.triggers import RisingEdge

from verif import golden_vit, seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, reset,
                           start_clock)

TAG_BITS = 16
PERIOD_NS = 10
CONFIG = {"tag_bits": TAG_BITS, "residual_lanes": [1, 3], "argmax_lengths": [1, 10, 17]}
EDGES8 = (-128, 127, -1, 0, 1, -127, 126)


def params():
    return json.loads(os.environ.get("DUT_PARAMS", "{}")) or CONFIG


def activation_init():
    """The table the activation unit is elaborated with (a permutation of -128..127)."""
    return [((k * 37 + 11) % 256) - 128 for k in range(256)]


def s8(x):
    x &= 0xFF
    return x - 256 if x & 0x80 else x


def value8(rng):
    return rng.choice(EDGES8) if rng.random() < 0.3 else rng.randrange(-128, 128)


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------

def _wrapper(config):
    """One component that forwards the ports of every unit under test, ``<unit>_<member>``."""
    from amaranth.hdl import unsigned

    from gen.hw.vit.activation import ActivationTable
    from gen.hw.vit.argmax import Argmax
    from gen.hw.vit.residual import ResidualAdder
    from verif.sim import bundle

    tag = unsigned(config["tag_bits"])
    units = {f"res{n}": ResidualAdder(n, tag) for n in config["residual_lanes"]}
    units["act"] = ActivationTable(tag, init=activation_init())
    units.update({f"am{n}": Argmax(n) for n in config["argmax_lengths"]})
    return bundle(units, "VitUnits")


def unit_names(config):
    return ([f"res{n}" for n in config["residual_lanes"]] + ["act"] +
            [f"am{n}" for n in config["argmax_lengths"]])


async def start(dut):
    """Clock, every stream idle, reset."""
    log_seed(dut)
    start_clock(dut.clk, PERIOD_NS)
    for unit in unit_names(params()):
        getattr(dut, f"{unit}_i__valid").value = 0
        getattr(dut, f"{unit}_o__ready").value = 0
    dut.act_table_wr__valid.value = 0
    await reset(dut.clk, dut.rst, 2)


class Port:
    """A unit's input source, output sink and monitors."""

    def __init__(self, dut, unit, salt):
        self.i_bus, self.o_bus = StreamBus(dut, f"{unit}_i"), StreamBus(dut, f"{unit}_o")
        self.i_monitor = StreamMonitor(self.i_bus, dut.clk)    # our own source keeps the rules
        self.o_monitor = StreamMonitor(self.o_bus, dut.clk)
        self.source = StreamSource(self.i_bus, dut.clk, gap_probability=0.2, idle="random",
                                   rng=seeds.rng(f"{salt} source"))
        self.sink = StreamSink(self.o_bus, dut.clk, ready_probability=0.6,
                               rng=seeds.rng(f"{salt} sink"))
        self.rng = seeds.rng(f"{salt} pressure")

    def pressure(self, gap=None, ready=None):
        """Set (or draw) the input gap and output ready probabilities."""
        self.source.gap_probability = (self.rng.choice((0.0, 0.2, 0.5)) if gap is None else gap)
        self.sink.ready_probability = (self.rng.choice((0.15, 0.5, 0.8, 1.0)) if ready is None
                                       else ready)

    async def run(self, beats, quiet):
        """Send ``beats``, receive as many outputs, then expect ``quiet`` cycles of nothing.
        At full pressure (no gaps, always ready) the input must never stall."""
        full = self.source.gap_probability == 0 and self.sink.ready_probability == 1
        stalls = self.i_monitor.stalls
        self.source.send_nowait(beats)
        got = await self.sink.recv(len(beats))
        await self.source.wait_idle()
        await self.sink.expect_quiet(quiet)
        if full:
            assert self.i_monitor.stalls == stalls, (
                f"{self.i_bus.name}: input stalled at full throughput ({seeds.describe()})")
        return got

    def check_protocol(self):
        self.o_monitor.check_valid_independent()


# --------------------------------------------------------------------------------------------
# Residual add
# --------------------------------------------------------------------------------------------

M_MAX = 2 ** 15 - 1


def residual_jobs(rng):
    """(ma, mb, shift) of each job."""
    jobs = []
    for ma, mb in ((0, 0), (M_MAX, M_MAX), (0, M_MAX), (M_MAX, 0), (1, 1), (1, 0)):
        for shift in (1, 31, rng.randint(2, 30)):
            jobs.append((ma, mb, shift))
    for shift in list(range(1, 32)) * 2:                     # every shift, random multipliers
        jobs.append((rng.randrange(2 ** 15), rng.randrange(2 ** 15), shift))
    for _ in range(8):                                        # as quantized: y ~ a + b
        shift = rng.randint(12, 16)
        jobs.append((rng.randrange(2 ** (shift - 2), 2 ** 15), rng.randrange(2 ** (shift - 2),
                                                                            2 ** 15), shift))
    for shift in range(1, 16):                                # exact ties: (a + b) odd
        half = 1 << (shift - 1)
        jobs.append((half, half, shift))
        if 3 * half < 2 ** 15:
            jobs.append((half, 3 * half, shift))
    rng.shuffle(jobs)
    return jobs


async def residual_test(dut, lanes):
    from gen.hw.vit.residual import RESIDUAL_LATENCY
    await start(dut)
    unit = f"res{lanes}"
    rng = seeds.rng(f"vit residual {lanes} vectors")
    port = Port(dut, unit, f"vit residual {lanes}")
    params_port, busy = getattr(dut, f"{unit}_params"), getattr(dut, f"{unit}_busy")
    tag, ties = 0, set()
    for job, (ma, mb, shift) in enumerate(residual_jobs(rng)):
        n = rng.choice((1, 2, rng.randint(3, 64), rng.randint(3, 64)))
        a = [[value8(rng) for _ in range(lanes)] for _ in range(n)]
        b = [[value8(rng) for _ in range(lanes)] for _ in range(n)]
        radd = {"ma": ma, "mb": mb, "shift": shift}
        expected = golden_vit.residual_add(torch.tensor(a), torch.tensor(b), radd).tolist()
        for row_a, row_b in zip(a, b):
            for x, y in zip(row_a, row_b):
                total = x * ma + y * mb
                if total % (1 << shift) == 1 << (shift - 1):
                    ties.add(total > 0)
        beats = []
        for row_a, row_b in zip(a, b):
            word = 0
            for lane, x in enumerate(row_a):
                word |= (x & 0xFF) << (8 * lane)
            for lane, y in enumerate(row_b):
                word |= (y & 0xFF) << (8 * (lanes + lane))
            beats.append(word | ((tag + len(beats)) % 2 ** TAG_BITS) << (16 * lanes))
        params_port.value = ma | mb << 15 | shift << 30     # the pipeline is empty here
        port.pressure(*((0.0, 1.0) if job % 7 == 0 else ()))
        got = await port.run(beats, RESIDUAL_LATENCY + 4)
        assert int(busy.value) == 0, f"{unit}: busy after the last output ({seeds.describe()})"
        for k, word in enumerate(got):
            assert word >> (8 * lanes) == (tag + k) % 2 ** TAG_BITS, (
                f"{unit} job {job}: output {k} carries tag {word >> (8 * lanes)}")
            value = [s8(word >> (8 * lane)) for lane in range(lanes)]
            assert value == expected[k], (
                f"{unit} ma={ma} mb={mb} S={shift} a={a[k]} b={b[k]}: got {value}, expected "
                f"{expected[k]} ({seeds.describe()})")
        tag += n
    assert ties == {False, True}, f"{unit}: the vectors missed exact ties of a sign: {ties}"
    port.check_protocol()
    dut._log.info("%s: %d outputs, %d output stalls", unit, tag, port.o_monitor.stalls)


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def residual_lanes_1(dut):
    await residual_test(dut, 1)


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def residual_lanes_3(dut):
    await residual_test(dut, 3)


# --------------------------------------------------------------------------------------------
# Activation table
# --------------------------------------------------------------------------------------------

def gelu_table(s_hp):
    def gelu(x):
        return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
    s_h = gelu(127 * s_hp) / 127
    return [max(-128, min(127, math.floor(gelu(v * s_hp) / s_h + 0.5))) for v in range(-128, 128)]


async def activation_lookups(port, table, rng, tag, *, apply_probability=0.8, gap=None,
                             ready=None):
    """Look up every index (shuffled) plus random values; check; return the next tag."""
    from gen.hw.vit.activation import ACTIVATION_LATENCY
    values = list(range(-128, 128)) + [value8(rng) for _ in range(64)]
    rng.shuffle(values)
    applies = [int(rng.random() < apply_probability) for _ in values]
    looked_up = golden_vit.apply_table(torch.tensor(values), torch.tensor(table)).tolist()
    expected = [t if a else v for v, a, t in zip(values, applies, looked_up)]
    beats = [(v & 0xFF) | a << 8 | ((tag + k) % 2 ** TAG_BITS) << 9
             for k, (v, a) in enumerate(zip(values, applies))]
    port.pressure(gap, ready)
    got = await port.run(beats, ACTIVATION_LATENCY + 4)
    for k, word in enumerate(got):
        assert word >> 8 == (tag + k) % 2 ** TAG_BITS, f"act: output {k} carries tag {word >> 8}"
        assert s8(word) == expected[k], (
            f"act: value {values[k]} apply {applies[k]}: got {s8(word)}, expected {expected[k]} "
            f"({seeds.describe()})")
    return tag + len(values)


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def activation_table(dut):
    await start(dut)
    rng = seeds.rng("vit activation vectors")
    port = Port(dut, "act", "vit activation")
    wr = StreamSource(StreamBus(dut, "act_table_wr"), dut.clk, gap_probability=0.3,
                      idle="random", rng=seeds.rng("vit activation table writes"))
    # The table the unit was elaborated with, before any write.
    table = activation_init()
    tag = await activation_lookups(port, table, rng, 0)
    tables = [("random", [rng.randrange(-128, 128) for _ in range(256)]),
              ("gelu", gelu_table(rng.uniform(0.01, 0.1))),
              ("relu", [max(v, 0) for v in range(-128, 128)]),
              ("extremes", [rng.choice((-128, 127)) for _ in range(256)])]
    for name, new in tables:
        # Garbage first, then every entry in random order; then a few entries rewritten.
        writes = [(rng.randrange(256), rng.randrange(-128, 128)) for _ in range(32)]
        order = list(range(256))
        rng.shuffle(order)
        writes += [(k, new[k]) for k in order]
        for k in rng.sample(range(256), 8):
            new[k] = rng.randrange(-128, 128)
            writes.append((k, new[k]))
        await wr.send([addr | (value & 0xFF) << 8 for addr, value in writes])
        for _ in range(2):
            await RisingEdge(dut.clk)
        assert int(dut.act_table_wr__ready.value) == 1
        table = new
        # Mixed pressure; the pipeline full behind long stalls; full throughput; pass-through.
        for gap, ready, apply_p in ((None, None, 0.8), (0.0, 0.1, 0.8), (0.0, 1.0, 0.8),
                                    (0.5, 0.3, 0.0)):
            tag = await activation_lookups(port, table, rng, tag, apply_probability=apply_p,
                                           gap=gap, ready=ready)
        dut._log.info("act: table %s checked", name)
    assert int(dut.act_busy.value) == 0
    port.check_protocol()
    dut._log.info("act: %d outputs, %d output stalls", tag, port.o_monitor.stalls)


# --------------------------------------------------------------------------------------------
# Argmax
# --------------------------------------------------------------------------------------------

def argmax_rows(n, rng, count):
    rows = [[v] * n for v in (-128, 127, 0, -1, rng.randrange(-128, 128))]      # all equal
    rows += [[127] + [-128] * (n - 1), [-128] * (n - 1) + [127], [127] * n]
    if n > 1:
        rows.append([-128] + [127] * (n - 1))                                   # max from 1
        rows.append(list(range(-64, -64 + n)))                                  # increasing
        rows.append(list(range(64, 64 - n, -1)))                                # decreasing
        for _ in range(4):                                                      # max twice
            row = [rng.randrange(-128, 100) for _ in range(n)]
            i, j = sorted(rng.sample(range(n), 2))
            row[i] = row[j] = rng.randrange(100, 128)
            rows.append(row)
    for _ in range(count):
        spread = rng.choice((256, 8, 2))                                        # narrow: ties
        low = rng.randrange(-128, 129 - spread)
        rows.append([rng.randrange(low, low + spread) for _ in range(n)])
    rng.shuffle(rows)
    return rows


async def argmax_unit(dut, n):
    from gen.hw.vit.argmax import ARGMAX_LATENCY
    unit = f"am{n}"
    rng = seeds.rng(f"vit argmax {n} vectors")
    port = Port(dut, unit, f"vit argmax {n}")
    index_bits = (n - 1).bit_length()
    results = 0
    for gap, ready in ((None, None), (0.0, 0.15), (0.0, 1.0), (0.6, 1.0), (None, None)):
        rows = argmax_rows(n, rng, 40)
        expected = golden_vit.first_argmax(torch.tensor(rows)).tolist()
        port.pressure(gap, ready)
        full = gap == 0 and ready == 1
        stalls = port.i_monitor.stalls
        port.source.send_nowait([v & 0xFF for row in rows for v in row])
        got = await port.sink.recv(len(rows))
        await port.source.wait_idle()
        await port.sink.expect_quiet(ARGMAX_LATENCY + 8)
        if full:
            assert port.i_monitor.stalls == stalls, f"{unit}: input stalled at full throughput"
        for k, word in enumerate(got):
            index, value = word & ((1 << index_bits) - 1), s8(word >> index_bits)
            assert (index, value) == (expected[k], max(rows[k])), (
                f"{unit}: row {rows[k]}: got index {index} value {value}, expected "
                f"{expected[k]} ({seeds.describe()})")
        results += len(rows)
    port.check_protocol()
    dut._log.info("%s: %d rows, %d output stalls", unit, results, port.o_monitor.stalls)


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def argmax_rows_of_every_length(dut):
    await start(dut)
    tasks = [cocotb.start_soon(argmax_unit(dut, n)) for n in params()["argmax_lengths"]]
    for task in tasks:
        await task


# --------------------------------------------------------------------------------------------
# Latency and throughput
# --------------------------------------------------------------------------------------------

@cocotb.test(timeout_time=2, timeout_unit="ms")
async def latencies(dut):
    """Cycles from an input transfer to its output, pipeline otherwise empty, as the constants
    say; then a burst at full throughput takes one cycle per transfer."""
    from gen.hw.vit.activation import ACTIVATION_LATENCY
    from gen.hw.vit.argmax import ARGMAX_LATENCY
    from gen.hw.vit.residual import RESIDUAL_LATENCY
    await start(dut)
    config = params()
    units = [(f"res{n}", RESIDUAL_LATENCY, 1) for n in config["residual_lanes"]]
    units += [("act", ACTIVATION_LATENCY, 1)]
    units += [(f"am{n}", ARGMAX_LATENCY, n) for n in config["argmax_lengths"]]
    for unit, latency, per_output in units:
        accepted, emitted = [], []
        i_bus, o_bus = StreamBus(dut, f"{unit}_i"), StreamBus(dut, f"{unit}_o")
        source = StreamSource(i_bus, dut.clk, on_accept=lambda beat, t: accepted.append(t))
        sink = StreamSink(o_bus, dut.clk, on_beat=lambda beat, t: emitted.append(t))
        for count in (1, 24):
            accepted.clear()
            emitted.clear()
            await source.send([0] * (count * per_output))
            await sink.recv(count)
            await sink.expect_quiet(latency + 4)
            measured = [(out - accepted[(k + 1) * per_output - 1]) / PERIOD_NS
                        for k, out in enumerate(emitted)]
            assert measured == [latency] * count, (
                f"{unit}: latencies {measured}, expected {latency}")
            span = (accepted[-1] - accepted[0]) / PERIOD_NS
            assert span == count * per_output - 1, f"{unit}: {span + 1} cycles for a burst"
        source.stop()
        sink.stop()
        dut._log.info("%s: latency %d cycles, one transfer per cycle", unit, latency)


# --------------------------------------------------------------------------------------------
# pytest entry points (one build, shared)
# --------------------------------------------------------------------------------------------

def _run(testcase):
    from verif.sim import run_cocotb
    run_cocotb(_wrapper(CONFIG), "vit_units", "verif.test_vit_units", CONFIG, testcase=testcase)


def test_residual_adder():
    _run(["residual_lanes_1", "residual_lanes_3"])


def test_activation_table():
    _run(["activation_table"])


def test_argmax():
    _run(["argmax_rows_of_every_length"])


def test_latencies():
    _run(["latencies"])


def test_parameters_are_checked():
    import pytest
    from amaranth.hdl import unsigned

    from gen.errors import UserError
    from gen.hw.vit.activation import ActivationTable
    from gen.hw.vit.argmax import Argmax
    from gen.hw.vit.residual import ResidualAdder
    for bad in (lambda: ResidualAdder(0), lambda: ResidualAdder(1.5), lambda: ResidualAdder(True),
                lambda: ResidualAdder(1, "wide"), lambda: Argmax(0), lambda: Argmax("10"),
                lambda: ActivationTable(init=[0] * 255), lambda: ActivationTable(init=[128] * 256),
                lambda: ActivationTable("x")):
        with pytest.raises(UserError):
            bad()
    adder, argmax10, argmax1 = ResidualAdder(3, unsigned(4)), Argmax(10), Argmax(1)
    for unit in (adder, argmax10, argmax1):
        unit._MustUse__silence = True          # built only for their properties
    assert (adder.lanes, adder.multipliers, adder.tag_shape) == (3, 6, unsigned(4))
    assert (argmax10.index_bits, argmax1.index_bits, argmax10.length) == (4, 0, 10)
