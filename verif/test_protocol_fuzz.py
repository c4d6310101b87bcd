"""The host protocol engine fails well (issue 9.4): whatever arrives on the line, the device
resynchronises, refuses what does not fit, and stops a job when told to.

Two levels, both against ``gen/host/PROTOCOL.md``:

* The protocol engine alone (`BridgeHarness`: `HostBridge`, its output buffer with a known
  pattern, and a stand-in job that runs until the testbench ends it or ABORT stops it), fed at
  its byte streams by the shared `verif.streams` transactors, one clock, a 24-cycle inter-byte
  timeout: many random sequences (complete commands checked byte for byte against a model of
  the protocol, commands cut off, commands with stalls just under the timeout, random bytes);
  after each, and a bounded wait (the timeout plus the longest reply), INFO answers correctly
  and nothing more comes. Every START that reaches the job fits the buffers. The size check of
  START against its formula at and around every limit, and the timeout's exact boundary.
  The same fuzz on the engine with two clock levels (LEVEL commands among the others, the
  harness's clock select standing in with the two cycles the real one takes).
* The whole `HostSystem` (UART, protocol engine, accelerator) through its simulated serial line
  (`CocotbUartTransport`) with a timeout of three byte times: random bytes and frames cut off
  mid-byte, INFO after each; an oversize START refused at once; ABORT in the middle of a job,
  then a GEMM bit-exact with the modelled cycle count; commands cut off, then INFO and a GEMM.

The counts of sequences and bytes tried are logged and written to
``sim_build/protocol_fuzz-counts.json`` (printed by the pytest functions). Every wait is
bounded and every test has a simulated-time bound. Random stimuli from ``ACCELGEN_SEED``.
"""

import json
import os
import struct

import cocotb
import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.triggers import ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from gen.hw.host_bridge import (LEVEL_QUERY, MAGIC, PROTOCOL_VERSION, REPLY_ERROR, REPLY_OK,
                                REPLY_UNKNOWN, Buffer, Command, HostBridge, start_fits)
from verif import seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed,
                           power_on_system, reset, start_clock)

CLOCK_NS = 10
#: Simulated-time bound of every test here.
TEST_TIMEOUT_MS = 200
COUNTS_FILE = "protocol_fuzz-counts.json"

K, E = bytes([REPLY_OK]), bytes([REPLY_ERROR])


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def _addr_width(depth):
    return max(1, (depth - 1).bit_length())


def out_pattern(depth):
    """What the harness's output buffer holds: byte ``i`` is ``(37 i + 11) mod 256``."""
    return [(37 * i + 11) & 0xFF for i in range(depth)]


def info_bytes(p, dataflow_id=0):
    return (MAGIC + bytes([PROTOCOL_VERSION, p["rows"], p["cols"], dataflow_id]) +
            struct.pack("<4I", p["act_depth"], p["wgt_depth"], p["param_depth"],
                        p["out_depth"]))


def depths(p):
    return {k: p[k] for k in ("act_depth", "wgt_depth", "param_depth", "out_depth")}


def _record_counts(name, counts):
    from verif.sim import SIM_BUILD
    path = SIM_BUILD / COUNTS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[name] = counts
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


class BridgeHarness(wiring.Component):
    """`HostBridge` with an output buffer holding `out_pattern` and a stand-in job.

    The job starts on the bridge's ``start``, counts cycles, and ends (``done`` pulse) when the
    testbench pulses ``job_end`` (error 0) or ``abort_latency`` cycles after the bridge's
    ``abort`` (error 1). The buffers' write ports, ``start`` with the sizes and ``abort`` are
    outputs, for the testbench to watch. With ``clock_levels`` 2 a stand-in clock select
    applies the bridge's ``level`` two cycles later (as `gen.hw.clock_select.ClockSelect`),
    and ``level`` is an output too.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth, param_depth, out_depth,
                 byte_timeout, abort_latency=3, clock_levels=1):
        self._bridge = HostBridge(rows=rows, cols=cols, act_depth=act_depth,
                                  wgt_depth=wgt_depth, param_depth=param_depth,
                                  out_depth=out_depth, byte_timeout=byte_timeout,
                                  clock_levels=clock_levels)
        levels = {"level": Out(1)} if clock_levels > 1 else {}
        self._out_depth = out_depth
        self._abort_latency = abort_latency
        super().__init__({
            "rx":         In(stream.Signature(8)),
            "tx":         Out(stream.Signature(8)),
            "wr_en":      Out(3),
            "act_addr":   Out(_addr_width(act_depth)),
            "wgt_addr":   Out(_addr_width(wgt_depth)),
            "param_addr": Out(_addr_width(param_depth)),
            "act_data":   Out(8 * rows),
            "wgt_data":   Out(8 * cols),
            "param_data": Out(69),
            "start":      Out(1),
            "m_size":     Out(16),
            "k_size":     Out(16),
            "n_size":     Out(16),
            "b_size":     Out(16),
            "abort":      Out(1),
            "busy":       Out(1),
            "job_end":    In(1),
            **levels,
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = self._bridge
        wiring.connect(m, wiring.flipped(self.rx), bridge.rx)
        wiring.connect(m, bridge.tx, wiring.flipped(self.tx))
        m.d.comb += [
            self.wr_en.eq(Cat(bridge.act_wr.en, bridge.wgt_wr.en, bridge.param_wr.en)),
            self.act_addr.eq(bridge.act_wr.addr),
            self.wgt_addr.eq(bridge.wgt_wr.addr),
            self.param_addr.eq(bridge.param_wr.addr),
            self.act_data.eq(bridge.act_wr.data),
            self.wgt_data.eq(bridge.wgt_wr.data),
            self.param_data.eq(bridge.param_wr.data.as_value()),
            self.start.eq(bridge.start),
            self.m_size.eq(bridge.m_size),
            self.k_size.eq(bridge.k_size),
            self.n_size.eq(bridge.n_size),
            self.b_size.eq(bridge.b_size),
            self.abort.eq(bridge.abort),
        ]
        m.submodules.out_buffer = out = memory.Memory(
            shape=8, depth=self._out_depth, init=out_pattern(self._out_depth))
        wiring.connect(m, bridge.out_rd, out.read_port())

        busy, done, error, cycles = Signal(), Signal(), Signal(), Signal(32)
        abort_pipe = Signal(self._abort_latency)
        m.d.sync += [abort_pipe.eq(Cat(bridge.abort, abort_pipe[:-1])), done.eq(0)]
        with m.If(bridge.start):
            m.d.sync += [busy.eq(1), error.eq(0), cycles.eq(0)]
        with m.Elif(busy):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(abort_pipe[-1]):
                m.d.sync += [busy.eq(0), done.eq(1), error.eq(1)]
            with m.Elif(self.job_end):
                m.d.sync += [busy.eq(0), done.eq(1)]
        m.d.comb += [bridge.busy.eq(busy), bridge.done.eq(done), bridge.error.eq(error),
                     bridge.cycles.eq(cycles), self.busy.eq(busy)]
        if bridge.clock_levels > 1:
            taking, active = Signal(), Signal()
            m.d.sync += [taking.eq(bridge.level), active.eq(taking)]
            m.d.comb += [bridge.level_active.eq(active), self.level.eq(active)]
        return m


# -- A model of the protocol (PROTOCOL.md) for complete commands --------------------------------

class Expect:
    """A command's expected reply (``prefix`` exactly, ``length`` bytes in all), the writes
    it stores, the START it passes on, whether it aborts."""

    def __init__(self, prefix, length=None, writes=(), start=None, abort=False):
        self.prefix, self.length = prefix, len(prefix) if length is None else length
        self.writes, self.start, self.abort = list(writes), start, abort


class ProtocolModel:
    def __init__(self, p):
        self.p = p
        self.busy = self.done = self.error = False
        self.levels = p.get("clock_levels", 1)
        self.level = 0

    def word_bytes(self, buf):
        return {Buffer.ACT: self.p["rows"], Buffer.WGT: self.p["cols"], Buffer.PARAM: 9}.get(
            buf, 1)

    def depth(self, buf):
        p = self.p
        return [p["act_depth"], p["wgt_depth"], p["param_depth"]][buf] if buf < 3 else \
            p["out_depth"]

    @staticmethod
    def word_value(buf, raw):
        """The value the bridge puts on a write port for the word ``raw``."""
        if buf == Buffer.PARAM:
            bias, mult, shift = struct.unpack("<IIB", raw)
            return bias | (mult & 0x7FFFFFFF) << 32 | (shift & 0x3F) << 63
        return int.from_bytes(raw, "little")

    def status_byte(self):
        return int(self.busy) | int(self.done) << 1 | int(self.error and self.done) << 2

    def write_accepted(self, buf, addr, count):
        return buf <= Buffer.PARAM and addr + count <= self.depth(buf) and not self.busy

    def expect(self, cmd):
        """Expected outcome of the complete command ``cmd`` (bytes); updates the state."""
        code = cmd[0]
        if code == Command.INFO:
            return Expect(K + info_bytes(self.p))
        if code == Command.STATUS:
            return Expect(K + bytes([self.status_byte()]))
        if code == Command.CYCLES:
            return Expect(K, 5)
        if code == Command.ABORT:
            if self.busy:
                self.busy, self.done, self.error = False, True, True
                return Expect(K, abort=True)
            return Expect(K)
        if code in (Command.START, Command.BATCH):
            # START is a batch of one.
            m, k, n, b = struct.unpack("<HHHH", cmd[1:9] if code == Command.BATCH else
                                       cmd[1:7] + b"\x01\x00")
            if self.busy or not start_fits(m, k, n, rows=self.p["rows"], cols=self.p["cols"],
                                           batch=b, **depths(self.p)):
                return Expect(E)
            self.busy, self.done, self.error = True, False, False
            return Expect(K, start=(m, k, n, b))
        if code == Command.WRITE:
            buf, addr, count = struct.unpack("<BII", cmd[1:10])
            if not self.write_accepted(buf, addr, count):
                return Expect(E)
            size = self.word_bytes(buf)
            data = cmd[10:]
            return Expect(K, writes=[(buf, addr + i, self.word_value(buf, data[i * size:
                                                                            (i + 1) * size]))
                                     for i in range(count)])
        if code == Command.READ:
            buf, addr, count = struct.unpack("<BII", cmd[1:10])
            if buf != Buffer.OUT or addr + count > self.p["out_depth"] or self.busy:
                return Expect(E)
            return Expect(K + bytes(out_pattern(self.p["out_depth"])[addr:addr + count]))
        if code == Command.LEVEL and self.levels > 1:
            # Busy or not: a level switch loses nothing.
            level = cmd[1]
            if level == LEVEL_QUERY or level < self.levels:
                self.level = self.level if level == LEVEL_QUERY else level
                return Expect(K + bytes([self.level, self.levels]))
            return Expect(E)
        return Expect(bytes([REPLY_UNKNOWN]))

    def job_ended(self):
        self.busy, self.done, self.error = False, True, False


def random_size(rng, limit):
    """A size near the interesting values of a dimension whose largest fitting value is
    ``limit``: 0, 1, the limit and its neighbours, anything."""
    choice = rng.random()
    if choice < 0.1:
        return rng.choice([0, 1, 65535])
    if choice < 0.5:
        return max(0, min(65535, limit + rng.choice([-1, 0, 0, 1])))
    if choice < 0.85:
        return rng.randint(1, max(1, limit))
    return rng.randrange(65536)


def random_start(rng, p):
    """START arguments near the fitting limits of the design."""
    rows, cols = p["rows"], p["cols"]
    m_limit = min(p["out_depth"], p["act_depth"] * rows)
    n_limit = min(p["out_depth"], (p["param_depth"] // cols) * cols)
    m = random_size(rng, m_limit)
    n = random_size(rng, min(n_limit, max(1, p["out_depth"] // max(1, m))))
    k_limit = min(p["act_depth"] // max(1, -(-m // rows)), p["wgt_depth"] // max(1, -(-n // cols)))
    return m, random_size(rng, k_limit), n


def random_batch(rng, p):
    """BATCH arguments: START's, and a batch near the largest that fits them."""
    m, k, n = random_start(rng, p)
    rows, cols = p["rows"], p["cols"]
    m_tiles, n_tiles = -(-m // rows), -(-n // cols)
    b_limit = min(p["act_depth"] // max(1, m_tiles * k), p["wgt_depth"] // max(1, n_tiles * k),
                  (p["out_depth"] - m * n) // max(1, m_tiles * rows * n) + 1)
    return m, k, n, random_size(rng, max(1, b_limit))


def random_command(rng, p, *, max_count=6, huge=False):
    """One complete, well-formed command (bytes) with random, boundary-biased arguments."""
    levels = p.get("clock_levels", 1) > 1
    code = rng.choices([Command.INFO, Command.WRITE, Command.READ, Command.START,
                        Command.BATCH, Command.STATUS, Command.CYCLES, Command.ABORT,
                        Command.LEVEL, None],
                       weights=[1, 5, 3, 4, 2, 2, 1, 2, 3 if levels else 0, 1])[0]
    if code is None:
        known = b"IWRSPCABL" if levels else b"IWRSPCAB"
        return bytes([rng.choice([b for b in range(256) if b not in known])])
    if code == Command.LEVEL:
        return bytes([code, rng.choice([0, 1, 2, 3, LEVEL_QUERY, rng.randrange(256)])])
    if code in (Command.WRITE, Command.READ):
        buf = rng.choice([0, 1, 2, 3] * 3 + [4, 255]) if code == Command.WRITE else \
            rng.choice([3] * 6 + [0, 1, 2, 7])
        depth = ProtocolModel(p).depth(buf) if buf <= 3 else 64
        count = rng.randint(0, max_count)
        if code == Command.READ and rng.random() < 0.1:
            count = rng.randint(0, p["out_depth"])    # the longest replies
        addr = rng.choice([0, rng.randint(0, depth), max(0, depth - count),
                           depth - count + 1, depth])
        if huge and rng.random() < 0.3:
            count = rng.choice([2 ** 32 - 1, 2 ** 31, depth + 1])
        if rng.random() < 0.05:
            addr = rng.choice([2 ** 32 - 1, 2 ** 32 - count if count else 0])
        addr &= 0xFFFFFFFF
        cmd = struct.pack("<BBII", code, buf, addr, count)
        if code == Command.WRITE and count <= max_count:
            cmd += bytes(rng.randrange(256) for _ in range(count * ProtocolModel(p).word_bytes(buf)))
        return cmd
    if code == Command.START:
        return struct.pack("<BHHH", code, *random_start(rng, p))
    if code == Command.BATCH:
        return struct.pack("<BHHHH", code, *random_batch(rng, p))
    return bytes([code])


def random_garbage(rng, length):
    """Bytes biased towards command bytes, small values and all ones."""
    pool = list(b"IWRSPCAB") + [0, 1, 2, 3, 0xFF]
    return bytes(rng.choice(pool) if rng.random() < 0.4 else rng.randrange(256)
                 for _ in range(length))


# -- The protocol engine alone ---------------------------------------------------------------------

class BridgeTB:
    def __init__(self, dut, salt):
        self.dut = dut
        self.p = _params()
        self.timeout = self.p["byte_timeout"]
        self.rng = seeds.rng(f"protocol fuzz {salt}")
        start_clock(dut.clk, CLOCK_NS)
        dut.job_end.value = 0
        self.source = StreamSource(StreamBus(dut, "rx"), dut.clk, rng=self.rng, idle="random")
        self.sink = StreamSink(StreamBus(dut, "tx"), dut.clk, ready_probability=0.8,
                               rng=seeds.rng(f"protocol fuzz sink {salt}"))
        self.monitor = StreamMonitor(StreamBus(dut, "tx"), dut.clk)
        self.model = ProtocolModel(self.p)
        self.writes, self.starts, self.aborts = [], [], 0
        self.bytes_sent = 0
        self.level_switches = 0
        #: False after garbage, until `resync_model` has asked LEVEL which level is active.
        self.level_known = True
        self._watch_task = cocotb.start_soon(self._watch())

    async def _watch(self):
        """Records stored words, STARTs and aborts; every START must fit the buffers."""
        dut, p = self.dut, self.p
        ports = [(dut.act_addr, dut.act_data), (dut.wgt_addr, dut.wgt_data),
                 (dut.param_addr, dut.param_data)]
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            en = int(dut.wr_en.value)
            if en:
                for buf, (addr, data) in enumerate(ports):
                    if en >> buf & 1:
                        self.writes.append((buf, int(addr.value), int(data.value)))
            if int(dut.start.value):
                sizes = (int(dut.m_size.value), int(dut.k_size.value), int(dut.n_size.value),
                         int(dut.b_size.value))
                assert start_fits(*sizes[:3], rows=p["rows"], cols=p["cols"], batch=sizes[3],
                                  **depths(p)), (
                    f"START {sizes} reached the job but does not fit ({seeds.describe()})")
                self.starts.append(sizes)
            if int(dut.abort.value):
                self.aborts += 1

    async def reset(self):
        await reset(self.dut.clk, self.dut.rst)
        await RisingEdge(self.dut.clk)

    async def send(self, data):
        self.bytes_sent += len(data)
        await self.source.send(data, timeout_cycles=20 * len(data) + 10 * self.timeout + 1000)

    async def cycles(self, n):
        for _ in range(n):
            await RisingEdge(self.dut.clk)

    async def exchange(self, cmd, *, gap_at=None, gap=0):
        """Send the complete command ``cmd`` (with a stall of ``gap`` cycles before byte
        ``gap_at``) and check its reply, stores, START and abort against the model."""
        expect = self.model.expect(cmd)
        writes0, starts0, aborts0 = len(self.writes), len(self.starts), self.aborts
        if gap_at is None:
            await self.send(cmd)
        else:
            await self.send(cmd[:gap_at])
            await self.cycles(gap)
            await self.send(cmd[gap_at:])
        got = bytes(await self.sink.recv(expect.length,
                                         timeout_cycles=8 * expect.length + 400))
        what = f"{cmd[:12].hex()}... ({len(cmd)} bytes; {seeds.describe()})"
        assert got[:len(expect.prefix)] == expect.prefix, f"{what}: replied {got.hex()}, " \
            f"expected {expect.prefix.hex()}"
        await self.cycles(2)
        assert self.writes[writes0:] == expect.writes, f"{what}: stored " \
            f"{self.writes[writes0:]}, expected {expect.writes}"
        assert self.starts[starts0:] == ([expect.start] if expect.start else []), what
        assert self.aborts - aborts0 == int(expect.abort), what
        if self.model.levels > 1 and self.level_known:
            assert int(self.dut.level.value) == self.model.level, (
                f"{what}: the clock select has level {int(self.dut.level.value)}, the model "
                f"{self.model.level}")
            self.level_switches += cmd[0] == Command.LEVEL and cmd[1] < self.model.levels
        return got

    async def wait_quiet(self):
        """The bounded wait after any input: until nothing has been sent for the timeout plus
        a margin, at most the timeout plus the longest reply (a READ of the whole buffer)."""
        # BATCH's size check is the slowest reply to start: 53 cycles after its last byte.
        quiet_needed = self.timeout + 64
        bound = self.timeout + 8 * (self.p["out_depth"] + 40) + 200
        await self.source.wait_idle(timeout_cycles=bound)
        last, quiet = self.sink.received, 0
        for _ in range(bound):
            await RisingEdge(self.dut.clk)
            if self.sink.received != last:
                last, quiet = self.sink.received, 0
            else:
                quiet += 1
                if quiet >= quiet_needed:
                    return
        raise AssertionError(f"the device was still replying {bound} cycles after the input "
                             f"({seeds.describe()})")

    async def check_info(self):
        """The property: INFO answers correctly, and nothing more comes."""
        self.sink.clear()
        got = await self.exchange(bytes([Command.INFO]))
        assert got == K + info_bytes(self.p)
        await self.sink.expect_quiet(8)

    async def resync_model(self):
        """After input the model cannot follow: take busy/done/error from STATUS."""
        self.sink.clear()
        self.bytes_sent += 1
        await self.source.send(bytes([Command.STATUS]))
        ok, bits = await self.sink.recv(2, timeout_cycles=400)
        assert ok == REPLY_OK and bits & 0xF8 == 0, f"STATUS {ok:#x} {bits:#x}"
        assert bool(bits & 1) == bool(int(self.dut.busy.value)), "STATUS busy is not the job's"
        assert not (bits & 4) or bits & 2, "error without done"
        self.model.busy, self.model.done, self.model.error = (bool(bits & 1), bool(bits & 2),
                                                              bool(bits & 4))
        if self.model.levels > 1:
            # Garbage may have held a LEVEL: ask which level is active.
            self.sink.clear()
            self.bytes_sent += 2
            await self.source.send(bytes([Command.LEVEL, LEVEL_QUERY]))
            ok, level, count = await self.sink.recv(3, timeout_cycles=400)
            assert (ok, count) == (REPLY_OK, self.model.levels) and level < count
            assert level == int(self.dut.level.value), "LEVEL's answer is not the active level"
            self.model.level = level
            self.level_known = True

    async def end_job(self):
        await RisingEdge(self.dut.clk)
        self.dut.job_end.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.job_end.value = 0
        await self.cycles(3)
        if self.model.busy:
            self.model.job_ended()


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def bridge_fuzz(dut):
    """Random sequences; after each, and a bounded wait, INFO answers correctly."""
    log_seed(dut)
    tb = BridgeTB(dut, "bridge")
    await tb.reset()
    rng, p, timeout = tb.rng, tb.p, tb.timeout
    kinds = {"commands": 0, "cut off": 0, "stalled": 0, "garbage": 0}
    checked = 0
    sequences = int(os.environ["FUZZ_SEQUENCES"])
    for _ in range(sequences):
        kind = rng.choices(list(kinds), weights=[3, 3, 2, 3])[0]
        kinds[kind] += 1
        if kind == "commands":
            for _ in range(rng.randint(1, 4)):
                await tb.exchange(random_command(rng, p))
                checked += 1
        elif kind == "stalled":
            # A stall under the timeout anywhere inside a command changes nothing.
            cmd = random_command(rng, p)
            while len(cmd) < 2:
                cmd = random_command(rng, p)
            await tb.exchange(cmd, gap_at=rng.randint(1, len(cmd) - 1),
                              gap=rng.randint(1, timeout - 6))
            checked += 1
        elif kind == "cut off":
            cmd = random_command(rng, p, huge=True)
            while len(cmd) < 2:
                cmd = random_command(rng, p, huge=True)
            cut = rng.randint(1, len(cmd) - 1)
            writes0, starts0 = len(tb.writes), len(tb.starts)
            tb.sink.clear()
            await tb.send(cmd[:cut])
            await tb.cycles(timeout + 8)
            assert not tb.sink.beats, f"a cut-off command {cmd[:cut].hex()} was answered"
            assert tb.starts[starts0:] == []
            expected = []
            if cmd[0] == Command.WRITE and cut > 10:
                buf, addr, count = struct.unpack("<BII", cmd[1:10])
                if tb.model.write_accepted(buf, addr, count):
                    size = tb.model.word_bytes(buf)
                    expected = [(buf, addr + i, tb.model.word_value(
                        buf, cmd[10 + i * size:10 + (i + 1) * size]))
                        for i in range((cut - 10) // size)]
            assert tb.writes[writes0:] == expected, (
                f"cut-off WRITE {cmd[:cut].hex()}: stored {tb.writes[writes0:]}, expected "
                f"the whole words only: {expected}")
            checked += 1
        else:
            tb.source.gap_probability = rng.choice([0, 0, 0.3])
            tb.level_known = False
            data = random_garbage(rng, rng.randint(1, 48))
            if rng.random() < 0.3:        # a stall past the timeout somewhere inside
                at = rng.randint(0, len(data))
                await tb.send(data[:at])
                await tb.cycles(timeout + rng.randint(1, 40))
                data = data[at:]
            await tb.send(data)
            tb.source.gap_probability = 0
        await tb.wait_quiet()
        await tb.check_info()
        if kind == "garbage":
            await tb.resync_model()
        if tb.model.busy and rng.random() < 0.4:
            await tb.end_job()
    counts = {"sequences": sequences, "by_kind": kinds, "commands_checked": checked,
              "bytes_sent": tb.bytes_sent, "starts_passed": len(tb.starts),
              "aborts": tb.aborts, "words_stored": len(tb.writes),
              "simulated_us": round(get_sim_time("ns") / 1000, 1)}
    name = "bridge_fuzz"
    if tb.model.levels > 1:
        counts["level_switches"] = tb.level_switches
        assert tb.level_switches >= sequences // 40, counts
        name = "bridge_fuzz_levels"
    dut._log.info("bridge fuzz: %s (%s)", json.dumps(counts), seeds.describe())
    _record_counts(name, counts)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def start_size_check(dut):
    """START (BATCH) is refused at once unless M, K, N (and B) fit the buffers by the
    documented formula."""
    log_seed(dut)
    tb = BridgeTB(dut, "start sizes")
    await tb.reset()
    p, rng = tb.p, tb.rng
    rows, cols = p["rows"], p["cols"]
    # Every dimension at its limits given the others, and far beyond.
    cases = [(65535, 65535, 65535), (0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
    for m in (1, rows, rows + 1, p["out_depth"], p["out_depth"] + 1):
        for n in (1, cols, cols + 1, p["param_depth"] // cols * cols,
                  p["param_depth"] // cols * cols + 1):
            k_max = min(p["act_depth"] // -(-m // rows), p["wgt_depth"] // -(-n // cols))
            cases += [(m, k_max, n), (m, k_max + 1, n)]
    cases += [random_start(rng, p) for _ in range(int(os.environ["FUZZ_SIZE_CASES"]))]
    cases = [(m, k, n, None) for m, k, n in cases]
    # Batches: 0, 1, the largest that fits and one more, for M that do and do not divide by
    # the rows (padded rows between the GEMMs count against the output buffer), and random.
    for m in (1, rows, rows + 1, 2 * rows - 1):
        for n, k in ((1, 1), (cols + 1, 2), (cols, 3)):
            b_max = max(b for b in range(1, 4096) if b == 1 or start_fits(
                m, k, n, rows=rows, cols=cols, batch=b, **depths(p)))
            cases += [(m, k, n, b) for b in (0, 1, b_max, b_max + 1, 65535)]
    cases += [random_batch(rng, p) for _ in range(int(os.environ["FUZZ_SIZE_CASES"]) // 2)]
    accepted = latest = 0
    for m, k, n, batch in cases:
        cmd = (struct.pack("<BHHH", Command.START, m, k, n) if batch is None else
               struct.pack("<BHHHH", Command.BATCH, m, k, n, batch))
        await tb.send(cmd[:-1])
        # The last byte, then the reply: the model says K or E; the time says "at once".
        expect = tb.model.expect(cmd)
        starts0 = len(tb.starts)
        await tb.send(cmd[-1:])
        sent_at = get_sim_time("ns")
        got = bytes(await tb.sink.recv(1, timeout_cycles=400))
        latency = (get_sim_time("ns") - sent_at) / CLOCK_NS
        latest = max(latest, latency)
        fits = start_fits(m, k, n, rows=rows, cols=cols, batch=1 if batch is None else batch,
                          **depths(p))
        what = f"START {m}x{k}x{n}" if batch is None else f"BATCH {batch} x {m}x{k}x{n}"
        assert got == (K if fits else E), f"{what}: {got!r}, fits={fits}"
        assert got == expect.prefix
        await tb.cycles(2)
        assert tb.starts[starts0:] == ([(m, k, n, 1 if batch is None else batch)] if fits
                                       else [])
        # START: 37 cycles of checks; BATCH: 16 more for the batch's products.
        assert latency < (60 if batch is None else 80), f"{what} answered after {latency} cycles"
        if fits:
            accepted += 1
            await tb.end_job()
    dut._log.info("START size check: %d cases, %d accepted, reply at most %d cycles after "
                  "the last byte", len(cases), accepted, latest)
    _record_counts("start_size_check", {"cases": len(cases), "accepted": accepted,
                                        "max_reply_cycles": latest})


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def timeout_boundary(dut):
    """A command continues if its next byte is taken within byte_timeout cycles of the previous
    one, and is dropped (no reply, a partial word not stored) if it comes later: its remaining
    bytes are then commands of their own (here all unknown: one `?` each)."""
    log_seed(dut)
    tb = BridgeTB(dut, "timeout")
    await tb.reset()
    p, timeout = tb.p, tb.timeout
    rows = p["rows"]
    data = bytes(range(1, 3 * rows + 1))          # no command byte among them
    write = struct.pack("<BBII", Command.WRITE, Buffer.ACT, 5, 3) + data
    start = struct.pack("<BHHH", Command.START, 1, 1, 1)
    words = [(Buffer.ACT, 5 + i, int.from_bytes(data[i * rows:(i + 1) * rows], "little"))
             for i in range(3)]
    outcomes = set()
    # Cut inside START's arguments, right after WRITE's header, inside a word, between words.
    for cmd, at in [(start, 3), (write, 10), (write, 11), (write, 10 + rows)]:
        for gap in range(timeout - 4, timeout + 3):
            tb.sink.clear()
            writes0, starts0 = len(tb.writes), len(tb.starts)
            await tb.send(cmd[:at])
            await tb.cycles(gap)
            await tb.send(cmd[at:])
            times = tb.source.accepted_times
            measured = round((times[at - len(cmd)] - times[at - len(cmd) - 1]) / CLOCK_NS)
            await tb.wait_quiet()
            got, kept = bytes(tb.sink.beats), measured <= timeout
            what = f"{cmd.hex()} stalled {measured} cycles before byte {at} (timeout {timeout})"
            if kept:
                assert got == K, f"{what}: replied {got!r}, expected K"
                assert tb.writes[writes0:] == (words if cmd is write else []), what
                assert len(tb.starts) - starts0 == (cmd is start), what
                if cmd is start:
                    await tb.end_job()
            else:
                assert got == bytes([REPLY_UNKNOWN]) * (len(cmd) - at), f"{what}: {got!r}"
                whole = max(0, at - 10) // rows if cmd is write else 0
                assert tb.writes[writes0:] == words[:whole], what
                assert len(tb.starts) == starts0, what
            outcomes.add((at, kept))
            await tb.check_info()
    assert len(outcomes) == 8, f"the sweep did not cross the timeout everywhere: {outcomes}"
    dut._log.info("inter-byte timeout %d: a byte taken %d cycles after the previous one "
                  "continues the command, %d cycles after drops it", timeout, timeout,
                  timeout + 1)


#: The protocol engine's test design: small buffers, so that random sizes meet their limits.
BRIDGE_PARAMS = dict(rows=3, cols=4, act_depth=64, wgt_depth=48, param_depth=22, out_depth=100,
                     byte_timeout=24)
#: How many random sequences / START sizes (``ACCELGEN_FUZZ_SEQUENCES`` overrides the first).
FUZZ_SEQUENCES = 2500
SIZE_CASES = 300
#: Random sequences of the fuzz with clock levels.
LEVEL_FUZZ_SEQUENCES = 1000


def _fuzz_env():
    return {"FUZZ_SEQUENCES": os.environ.get("ACCELGEN_FUZZ_SEQUENCES", str(FUZZ_SEQUENCES)),
            "FUZZ_SIZE_CASES": str(SIZE_CASES)}


def _print_counts():
    from verif.sim import SIM_BUILD
    print(json.dumps(json.loads((SIM_BUILD / COUNTS_FILE).read_text()), indent=1))


def test_bridge_protocol():
    """The protocol engine alone at its byte streams: fuzz, START's size check, timeout."""
    from verif.sim import run_cocotb
    run_cocotb(BridgeHarness(**BRIDGE_PARAMS), "bridge_harness", "verif.test_protocol_fuzz",
               BRIDGE_PARAMS, extra_env=_fuzz_env(),
               testcase=["bridge_fuzz", "start_size_check", "timeout_boundary"])
    _print_counts()


def test_bridge_protocol_with_levels():
    """The same fuzz on the engine with two clock levels: LEVEL among the random commands
    (select, query, unknown levels refused), while jobs run or not."""
    from verif.sim import run_cocotb
    params = dict(BRIDGE_PARAMS, clock_levels=2)
    env = dict(_fuzz_env(), FUZZ_SEQUENCES=os.environ.get("ACCELGEN_FUZZ_SEQUENCES",
                                                          str(LEVEL_FUZZ_SEQUENCES)))
    run_cocotb(BridgeHarness(**params), "bridge_harness", "verif.test_protocol_fuzz", params,
               extra_env=env, testcase=["bridge_fuzz"])
    _print_counts()


# -- The whole HostSystem through its serial line ---------------------------------------------

SYSTEM_CLOCK_NS = 8       # the accelerator clock
HOST_CLOCK_NS = 26        # the host link clock (unrelated, as on a board)
#: The system's test design: a timeout of three byte times, buffers for a job long enough to
#: be stopped in the middle.
SYSTEM_PARAMS = dict(rows=3, cols=4, act_depth=1024, wgt_depth=1024, param_depth=64,
                     out_depth=1024, uart_divisor=8, byte_timeout=240)
#: Random sequences on the serial line.
UART_SEQUENCES = 150


class FuzzTransport:
    """The simulated serial line (`CocotbUartTransport`) plus what a fuzzer needs: frames cut
    off in the middle, and a count / discard of what the device sent."""

    def __init__(self, dut, bit_ns):
        from gen.host.transports import CocotbUartTransport
        self.line = CocotbUartTransport(dut.uart_rx, dut.uart_tx, bit_time_ns=bit_ns)
        self.rx, self.bit_ns = dut.uart_rx, bit_ns
        self.discarded = 0
        self.bytes_sent = 0

    async def write(self, data):
        self.bytes_sent += len(data)
        await self.line.write(data)

    async def read(self, count):
        return await self.line.read(count)

    async def write_cut_frame(self, byte, bits):
        """A frame cut off after ``bits`` bits (start bit included): then the line idles."""
        for bit in ([0] + [(byte >> i) & 1 for i in range(8)])[:bits]:
            self.rx.value = bit
            await Timer(self.bit_ns, unit="ns")
        self.rx.value = 1

    def received(self):
        return self.discarded + self.line._received.qsize()

    def discard(self):
        queue = self.line._received
        while not queue.empty():
            queue.get_nowait()
            self.discarded += 1


async def setup_system(dut):
    from gen.host.driver import Driver
    p = _params()
    await power_on_system(dut, SYSTEM_CLOCK_NS, HOST_CLOCK_NS)
    transport = FuzzTransport(dut, p["uart_divisor"] * HOST_CLOCK_NS)
    return p, transport, Driver(transport, max_chunk=64)


def byte_ns(p):
    return 10 * p["uart_divisor"] * HOST_CLOCK_NS


async def wait_quiet_line(p, transport):
    """The bounded wait after any input: until the device has sent nothing for the timeout
    plus three byte times, at most the timeout plus the longest reply (all of buffer 3)."""
    step = byte_ns(p)
    timeout_ns = p["byte_timeout"] * HOST_CLOCK_NS
    quiet_needed = timeout_ns + 3 * step
    bound = timeout_ns + (p["out_depth"] + 40) * step
    waited = quiet = 0
    last = transport.received()
    while waited < bound:
        await Timer(step, unit="ns")
        waited += step
        if transport.received() != last:
            last, quiet = transport.received(), 0
        else:
            quiet += step
            if quiet >= quiet_needed:
                return waited
    raise AssertionError(f"the device still replied {bound} ns after the input "
                         f"({seeds.describe()})")


async def check_info_line(p, transport, driver):
    """After a bounded wait, discard what came and ask INFO: it answers correctly."""
    await wait_quiet_line(p, transport)
    transport.discard()
    info = await driver.info()
    assert (info.rows, info.cols, info.act_depth, info.wgt_depth, info.param_depth,
            info.out_depth, info.version) == (p["rows"], p["cols"], p["act_depth"],
                                              p["wgt_depth"], p["param_depth"],
                                              p["out_depth"], PROTOCOL_VERSION), info
    await Timer(3 * byte_ns(p), unit="ns")
    assert transport.line._received.empty(), "bytes after the INFO reply"


def _poll():
    return Timer(2, unit="us")


async def gemm_bit_exact(driver, p, rng, m, k, n):
    """A GEMM through the driver: Y as the golden model, cycles as gen.cycles predicts."""
    import torch
    from gen.cycles import gemm_cycles
    from verif import golden
    from verif.test_gemm_accelerator import random_requant
    a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    bias, mult, shift = random_requant(rng, n, k)
    run = await driver.gemm(a, w, bias, mult, shift, poll_interval=_poll)
    want = golden.gemm_int8(*(torch.as_tensor(np.asarray(x))
                              for x in (a, w, bias, mult, shift))).numpy()
    np.testing.assert_array_equal(run.y, want, err_msg=f"{m}x{k}x{n} ({seeds.describe()})")
    assert run.cycles == gemm_cycles(m, k, n, p["rows"], p["cols"]), run.cycles
    return a, w, bias, mult, shift


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def uart_fuzz(dut):
    """Random bytes, cut-off commands and frames cut mid-byte on the serial line; after each,
    and a bounded wait, INFO answers correctly; then a GEMM is bit-exact."""
    p, transport, driver = await setup_system(dut)
    rng = seeds.rng("protocol fuzz uart")
    kinds = {"garbage": 0, "cut off": 0, "cut frame": 0, "paused": 0}
    for _ in range(UART_SEQUENCES):
        kind = rng.choice(list(kinds))
        kinds[kind] += 1
        if kind == "garbage":
            await transport.write(random_garbage(rng, rng.randint(1, 24)))
        elif kind == "cut off":
            cmd = random_command(rng, p, huge=True)
            await transport.write(cmd[:rng.randint(1, max(1, len(cmd) - 1))])
        elif kind == "cut frame":
            cmd = random_command(rng, p, huge=True)
            cut = rng.randint(0, len(cmd) - 1)
            await transport.write(cmd[:cut])
            await transport.write_cut_frame(cmd[cut], rng.randint(1, 9))
        else:
            # Pauses under and over the timeout between random bytes.
            for _ in range(rng.randint(2, 5)):
                await transport.write(random_garbage(rng, rng.randint(1, 8)))
                await Timer(rng.choice([0.3, 0.9, 1.5]) * p["byte_timeout"] * HOST_CLOCK_NS,
                            unit="ns")
        await check_info_line(p, transport, driver)
    status = await driver.abort()          # garbage may have started a job
    assert not status.busy
    await gemm_bit_exact(driver, p, seeds.np_rng("protocol fuzz uart gemm"), 7, 9, 10)
    counts = {"sequences": UART_SEQUENCES, "by_kind": kinds,
              "bytes_sent": transport.bytes_sent, "bytes_discarded": transport.discarded,
              "simulated_us": round(get_sim_time("ns") / 1000, 1)}
    dut._log.info("UART fuzz: %s (%s)", json.dumps(counts), seeds.describe())
    _record_counts("uart_fuzz", counts)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def oversize_start_refused(dut):
    """START beyond the buffers is refused at once and starts nothing; at the limits it runs."""
    from gen.host.driver import DeviceError
    p, transport, driver = await setup_system(dut)
    await driver.info()
    rows, cols = p["rows"], p["cols"]
    limits = [(65535, 65535, 65535), (0, 5, 5), (5, 0, 5), (5, 5, 0),
              (rows + 1, p["act_depth"] // 2 + 1, 4),             # act: 2 tiles * K
              (3, p["wgt_depth"] // 2 + 1, cols + 1),             # wgt: 2 tiles * K
              (1, 1, p["param_depth"] + 1),                       # param
              (p["out_depth"] // 16 + 1, 1, 16)]                  # out: M*N
    for m, k, n in limits:
        assert not start_fits(m, k, n, rows=rows, cols=cols, **depths(p))
        await transport.write(struct.pack("<BHHH", Command.START, m, k, n))
        sent = get_sim_time("ns")
        assert await transport.read(1) == E, f"START {m}x{k}x{n}"
        # The reply's start bit follows within a byte time (the check takes ~40 host cycles).
        latency = get_sim_time("ns") - sent - byte_ns(p)
        assert latency < 2 * byte_ns(p), f"START {m}x{k}x{n} refused after {latency} ns"
        status = await driver.status()
        assert not (status.busy or status.done or status.error), status
        assert int(dut.busy.value) == 0
    with pytest.raises(DeviceError):
        await driver.start(65535, 65535, 65535)
    # Exactly at the limits: accepted, runs, ends without error.
    for m, k, n in [(rows, p["act_depth"], cols), (p["out_depth"] // 16, 1, 16),
                    (1, p["wgt_depth"] // 2, cols + 1)]:
        assert start_fits(m, k, n, rows=rows, cols=cols, **depths(p))
        await driver.start(m, k, n)
        for _ in range(1000):
            status = await driver.status()
            if status.done and not status.busy:
                break
        assert status.done and not status.error and not status.busy, (m, k, n, status)
    await gemm_bit_exact(driver, p, seeds.np_rng("protocol oversize"), p["rows"] + 2, 11, 9)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def abort_mid_job(dut):
    """ABORT stops a running job at once; STATUS shows it ended with the error bit; the next
    GEMM is bit-exact with the modelled cycle count. ABORT with no job changes nothing."""
    from gen.cycles import gemm_cycles
    p, transport, driver = await setup_system(dut)
    await driver.info()
    rng = seeds.np_rng("protocol abort")
    status = await driver.abort()                                 # nothing runs
    assert not (status.busy or status.done or status.error), status
    m, k, n = 24, 40, 40                                          # 80 tiles, 3200+ cycles
    assert start_fits(m, k, n, rows=p["rows"], cols=p["cols"], **depths(p))
    full = gemm_cycles(m, k, n, p["rows"], p["cols"])
    for round_ in range(2):
        await driver.start(m, k, n)
        status = await driver.status()
        assert status.busy and not status.done, status
        sent = get_sim_time("ns")
        status = await driver.abort()
        took = get_sim_time("ns") - sent
        assert not status.busy and status.done and status.error, status
        assert int(dut.busy.value) == 0, "the accelerator is still busy"
        cycles = await driver.cycles()
        assert 0 < cycles < full, f"aborted after {cycles} of {full} cycles"
        dut._log.info("ABORT: the job stopped after %d of %d cycles; ABORT and STATUS took "
                      "%.1f us (%d byte times)", cycles, full, took / 1000,
                      round(took / byte_ns(p)))
        # The next GEMM is exact, the aborted one leaves nothing behind.
        await gemm_bit_exact(driver, p, rng, 7 + round_, 9, 10)
        status = await driver.abort()                             # after a good job: no-op
        assert status.done and not status.error and not status.busy, status
    # The aborted size itself, run to its end.
    await gemm_bit_exact(driver, p, rng, m, 8, n)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def cut_off_commands_resync(dut):
    """Commands cut off on the line are dropped after the timeout (no reply); INFO answers; a
    cut-off WRITE stores its whole words and not the partial one (seen through a GEMM)."""
    import torch
    from verif import golden
    p, transport, driver = await setup_system(dut)
    await driver.info()
    rows = p["rows"]
    for cmd in [struct.pack("<BBII", Command.WRITE, Buffer.WGT, 0, 3) + bytes(6),
                struct.pack("<BBII", Command.WRITE, Buffer.ACT, 0, 1)[:7],
                struct.pack("<BBII", Command.READ, Buffer.OUT, 0, 4)[:5],
                struct.pack("<BHHH", Command.START, 1, 1, 1)[:4],
                bytes([Command.WRITE])]:
        await transport.write(cmd)
        await Timer(p["byte_timeout"] * HOST_CLOCK_NS + 2 * byte_ns(p), unit="ns")
        assert transport.line._received.empty(), f"{cmd.hex()} was answered"
        await check_info_line(p, transport, driver)
    status = await driver.status()
    assert not (status.busy or status.done), status                # no START got through
    # Load a GEMM, run it; then overwrite activation word 0 and half of word 1 and stall.
    rng = seeds.np_rng("protocol cut write")
    m, k, n = rows, 4, 5
    a, w, bias, mult, shift = await gemm_bit_exact(driver, p, rng, m, k, n)
    new_word0 = rng.integers(-128, 128, rows)
    half = bytes(rng.integers(0, 256, rows // 2 + 1).tolist())
    await transport.write(struct.pack("<BBII", Command.WRITE, Buffer.ACT, 0, 2) +
                          bytes((new_word0 & 0xFF).tolist()) + half)
    await check_info_line(p, transport, driver)
    a2 = a.copy()
    a2[:, 0] = new_word0                                           # word 0: A[0:rows, k=0]
    await driver.start(m, k, n)
    for _ in range(1000):
        status = await driver.status()
        if status.done and not status.busy:
            break
    assert status.done and not status.error
    y = np.frombuffer(await driver.read_output(0, m * n), dtype=np.int8).reshape(m, n)
    want = golden.gemm_int8(*(torch.as_tensor(np.asarray(x))
                              for x in (a2, w, bias, mult, shift))).numpy()
    np.testing.assert_array_equal(y, want, err_msg="a cut-off WRITE stored more or less than "
                                                   "its whole words")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def batch_over_the_line(dut):
    """BATCH through the serial line: a batch whose M leaves padded rows between its GEMMs is
    bit-exact, GEMM by GEMM, in the modelled cycles; one GEMM more than the output buffer
    holds is refused at once and starts nothing; then a plain GEMM is exact."""
    import torch
    from gen.cycles import gemm_cycles
    from gen.host.driver import DeviceError
    from verif import golden
    from verif.test_gemm_accelerator import random_requant
    p, transport, driver = await setup_system(dut)
    await driver.info()
    rng = seeds.np_rng("protocol batch")
    rows, cols = p["rows"], p["cols"]
    for batch, m, k, n in [(3, rows + 1, 5, cols + 1), (6, rows, 16, cols), (1, 2, 3, 4)]:
        a, w = rng.integers(-128, 128, (batch, m, k)), rng.integers(-128, 128, (batch, k, n))
        bias, mult, shift = random_requant(rng, n, k)
        run = await driver.gemm_batch(a, w, bias, mult, shift, poll_interval=_poll)
        want = np.stack([golden.gemm_int8(*(torch.as_tensor(np.asarray(x))
                                            for x in (a[b], w[b], bias, mult, shift))).numpy()
                         for b in range(batch)])
        np.testing.assert_array_equal(run.y, want, err_msg=f"batch of {batch} {m}x{k}x{n} "
                                                           f"({seeds.describe()})")
        assert run.cycles == gemm_cycles(m, k, n, rows, cols, batch=batch), run.cycles
    m, k, n = rows + 1, 1, 16
    b_max = max(b for b in range(1, 1000)
                if start_fits(m, k, n, rows=rows, cols=cols, batch=b, **depths(p)))
    with pytest.raises(DeviceError):
        await driver.start(m, k, n, b_max + 1)
    status = await driver.status()
    assert not status.busy, status
    await driver.start(m, k, n, b_max)
    for _ in range(1000):
        status = await driver.status()
        if status.done and not status.busy:
            break
    assert status.done and not status.error and not status.busy, status
    await gemm_bit_exact(driver, p, rng, rows + 2, 11, 9)


def test_system_protocol():
    """The whole HostSystem through its serial line: fuzz, oversize START, ABORT, cut-offs."""
    from gen.hw.system import HostSystem
    from verif.sim import run_cocotb
    run_cocotb(HostSystem(**SYSTEM_PARAMS), "host_system", "verif.test_protocol_fuzz",
               SYSTEM_PARAMS, testcase=["uart_fuzz", "oversize_start_refused",
                                        "abort_mid_job", "cut_off_commands_resync",
                                        "batch_over_the_line"])
    _print_counts()


class _ScriptedTransport:
    """Answers the driver from a script of replies (no simulator): for host-side checks."""

    def __init__(self, *replies):
        self.replies, self.sent = bytearray(b"".join(replies)), bytearray()

    async def write(self, data):
        self.sent += data

    async def read(self, count):
        out, self.replies = bytes(self.replies[:count]), self.replies[count:]
        return out


def test_driver_checks_the_version_and_aborts():
    """The driver refuses a device of another protocol version; abort() sends `A` and returns
    the STATUS after it."""
    import asyncio
    from gen.host.driver import Driver, ProtocolError
    p = dict(BRIDGE_PARAMS)
    old = bytearray(info_bytes(p))
    old[4] = PROTOCOL_VERSION - 1
    with pytest.raises(ProtocolError, match=f"protocol version {PROTOCOL_VERSION - 1}"):
        asyncio.run(Driver(_ScriptedTransport(K + bytes(old))).info())
    transport = _ScriptedTransport(K + info_bytes(p), K, K + bytes([0b110]))
    driver = Driver(transport)
    assert asyncio.run(driver.info()).version == PROTOCOL_VERSION
    status = asyncio.run(driver.abort())
    assert (status.busy, status.done, status.error) == (False, True, True)
    assert bytes(transport.sent) == b"IAP"


def test_driver_level_command():
    """LEVEL on the host side: the bytes sent, the reply read, refusals and a device without
    levels (two `?`: the command and its argument) as DeviceError, bad levels never sent."""
    import asyncio
    from gen.host.driver import ClockLevel, DeviceError, Driver
    transport = _ScriptedTransport(K + bytes([1, 2]), K + bytes([1, 2]))
    driver = Driver(transport)
    assert asyncio.run(driver.level(1)) == ClockLevel(active=1, count=2)
    assert asyncio.run(driver.level()) == ClockLevel(active=1, count=2)
    assert bytes(transport.sent) == bytes([Command.LEVEL, 1, Command.LEVEL, LEVEL_QUERY])
    with pytest.raises(DeviceError, match="refused clock level 5"):
        asyncio.run(Driver(_ScriptedTransport(E)).level(5))
    unknown = _ScriptedTransport(bytes([REPLY_UNKNOWN]) * 2)
    with pytest.raises(DeviceError, match="no clock levels"):
        asyncio.run(Driver(unknown).level(0))
    assert not unknown.replies, "the second `?` (the argument's) was not read"
    quiet = _ScriptedTransport()
    for bad in (32, ord("S"), -1, True, 1.0):
        with pytest.raises(ValueError, match="level must be an int from 0 to 31"):
            asyncio.run(Driver(quiet).level(bad))
    assert not quiet.sent
