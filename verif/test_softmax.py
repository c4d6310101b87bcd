"""Integer softmax unit against `golden_softmax.int_softmax`, bit for bit, under Verilator.

Rows of random lengths 1..max_length (max_length itself, 17 and other lengths that are not
powers of two), all-equal rows, INT8 extremes, length-1 rows, all streamed back to back with
random input gaps and random output back-pressure (`verif.streams`, seeded by ``ACCELGEN_SEED``);
a protocol monitor on the output stream; nothing extra after each batch; the
cycles per row against `IntSoftmax.row_cycles`; over-long rows (truncated, `error` raised)."""

import json
import os

import cocotb
import torch

from verif import golden_softmax, seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, reset,
                           start_clock)

MAX_LENGTH = 40          # not a power of two: the buffer and its counters end off a boundary
PERIOD_NS = 10


def params():
    return json.loads(os.environ.get("DUT_PARAMS", "{}")) or {"max_length": MAX_LENGTH}


def edge_rows(n_max, rng):
    """Rows at the edges of the definition."""
    rows = []
    for n in (n_max, 17, 1, 2, 3):
        for v in (-128, 127, 0, 5):
            rows.append([v] * n)                              # all equal
    for n in (4, 8, 16, 32):
        if n <= n_max:
            rows.append([-7] * n)                             # sum divides 2^31 exactly
    for n in (n_max, 17, 2):
        rows.append([127] + [-128] * (n - 1))                 # one 127, rest -128
        rows.append([-128] * (n - 1) + [127])
        spike = [-128] * n
        spike[rng.randrange(n)] = 127
        rows.append(spike)
        rows.append([-128] + [127] * (n - 1))                 # one far below the rest
    for n in (n_max, 17, 9):                                  # max - min = 255
        row = [rng.randrange(-128, 128) for _ in range(n)]
        i, j = rng.sample(range(n), 2)
        row[i], row[j] = -128, 127
        rows.append(row)
    for v in (-128, 127, 0, -1):                              # length 1
        rows.append([v])
    # t = m - s on every table entry and every shift: m = 127, s = 127 - t for t = 0..255.
    rows.append([127 - t for t in range(0, 256, 7)][:n_max])
    rows.append([127 - t for t in range(1, 256, 8)][:n_max])
    return rows


def random_rows(n_max, rng, count):
    rows = []
    for _ in range(count):
        n = rng.choice([rng.randint(1, n_max), n_max, 17, rng.randint(1, 4)])
        spread = rng.choice([256, 64, 16, 4])                 # narrow rows use the table finely
        top = rng.randrange(-128 + spread - 1, 128)
        rows.append([rng.randint(top - spread + 1, top) for _ in range(n)])
    return rows


class TB:
    """Clock, reset, a compliant score source, a probability sink and an output monitor
    (`verif.streams`), all random from ``ACCELGEN_SEED``."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = seeds.rng(f"softmax tb {seed}")
        self.ready_range = (1.0, 1.0)
        self.starts = []          # cycle of each row's first accepted score
        start_clock(dut.clk, PERIOD_NS)
        self.source = StreamSource(StreamBus(dut, "i"), dut.clk, rng=self.rng)
        self.sink = StreamSink(StreamBus(dut, "o"), dut.clk, rng=self.rng, on_beat=self._on_beat)

    @property
    def gap_p(self):
        return self.source.gap_probability

    @gap_p.setter
    def gap_p(self, value):
        self.source.gap_probability = value

    def _on_beat(self, payload, time_ns):
        if payload >> 7:          # a row ends: the next one sees another ready probability
            self.sink.ready_probability = self.rng.uniform(*self.ready_range)

    def monitor(self):
        """Stream rules on ``o``: a held transfer keeps valid and payload until it is taken."""
        return StreamMonitor(StreamBus(self.dut, "o"), self.dut.clk)

    async def reset(self):
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 0
        self.source.clear()
        await reset(self.dut.clk, self.dut.rst, 3)

    async def receive(self, n_rows, max_beats):
        """``n_rows`` rows (each ends with the ``last`` flag); at most ``max_beats`` beats."""
        rows, current = [], []
        for _ in range(max_beats):
            if len(rows) == n_rows:
                break
            payload, = await self.sink.recv(1)
            current.append(payload & 0x7F)
            if payload >> 7:
                rows.append(current)
                current = []
        assert len(rows) == n_rows and not current, (
            f"{len(rows)} of {n_rows} rows after {max_beats} beats ({seeds.describe()})")
        return rows

    async def run(self, rows, expected_rows=None):
        self.source.accepted_times.clear()
        beats, firsts = [], []
        for row in rows:
            firsts.append(len(beats))
            beats += [(value & 0xFF) | (int(k == len(row) - 1) << 8)
                      for k, value in enumerate(row)]
        self.sink.ready_probability = self.rng.uniform(*self.ready_range)
        self.source.send_nowait(beats)
        got = await self.receive(len(rows) if expected_rows is None else expected_rows,
                                 max_beats=len(beats))
        await self.source.wait_idle()
        await self.sink.expect_quiet(8)
        times = self.source.accepted_times
        self.starts = [times[i] // PERIOD_NS for i in firsts]
        return got


def check(rows, got):
    assert len(got) == len(rows)
    for index, (row, out) in enumerate(zip(rows, got)):
        expected = golden_softmax.int_softmax(torch.tensor(row)).tolist()
        assert out == expected, (f"row {index} (n={len(row)}) {row}: got {out}, expected "
                                 f"{expected} ({seeds.describe()})")


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def rows_match_golden_with_gaps_and_back_pressure(dut):
    torch.set_num_threads(1)
    n_max = params()["max_length"]
    log_seed(dut)
    rng = seeds.rng("softmax rows 11")
    tb = TB(dut, seed=5)
    monitor = tb.monitor()
    await tb.reset()
    assert int(dut.error.value) == 0

    rows = edge_rows(n_max, rng) + random_rows(n_max, rng, 300)
    rng.shuffle(rows)
    # First part: steady gaps and ready probabilities from 0.3 to 1.0 per row.
    tb.gap_p, tb.ready_range = 0.3, (0.3, 1.0)
    check(rows[:200], await tb.run(rows[:200]))
    # Second part: no gaps, back-pressure only.
    tb.gap_p, tb.ready_range = 0.0, (0.3, 1.0)
    check(rows[200:], await tb.run(rows[200:]))
    assert int(dut.error.value) == 0, "error raised by rows within max_length"
    monitor.check_valid_independent()


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def cycles_per_row_follow_the_formula(dut):
    from gen.hw.softmax import IntSoftmax
    n_max = params()["max_length"]
    unit = IntSoftmax(n_max)
    log_seed(dut)
    rng = seeds.rng("softmax rows 3")
    tb = TB(dut, seed=9)
    await tb.reset()
    lengths = [1, 2, 17, n_max, 3, n_max - 1, 1, 16, n_max]
    rows = [[rng.randrange(-128, 128) for _ in range(n)] for n in lengths]
    got = await tb.run(rows)        # input always valid, output always ready
    check(rows, got)
    measured = [b - a for a, b in zip(tb.starts, tb.starts[1:])]
    expected = [unit.row_cycles(n) for n in lengths[:-1]]
    assert measured == expected, (f"cycles per row {measured}, formula {expected} "
                                  f"({seeds.describe()})")
    dut._log.info("cycles per row (n: cycles): %s",
                  ", ".join(f"{n}: {c}" for n, c in zip(lengths, measured)))


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def overlong_rows_are_truncated_and_flagged(dut):
    n_max = params()["max_length"]
    log_seed(dut)
    rng = seeds.rng("softmax rows 4")
    tb = TB(dut, seed=2)
    tb.monitor()
    await tb.reset()
    tb.ready_range = (0.3, 1.0)
    normal = [[rng.randrange(-128, 128) for _ in range(17)]]
    check(normal, await tb.run(normal))
    assert int(dut.error.value) == 0
    # The maximum (127) sits past max_length in the first row: it must not count.
    long_rows = [[rng.randrange(-128, 100) for _ in range(n_max)] + [127] * 3,
                 [rng.randrange(-128, 128) for _ in range(2 * n_max + 1)]]
    got = await tb.run(long_rows)
    check([row[:n_max] for row in long_rows], got)
    assert int(dut.error.value) == 1
    # The unit goes on working; the flag stays up until reset.
    after = [[0, 1, 2], [127] * n_max]
    check(after, await tb.run(after))
    assert int(dut.error.value) == 1
    await tb.reset()
    assert int(dut.error.value) == 0


def test_softmax():
    from gen.hw.softmax import IntSoftmax
    from verif.sim import run_cocotb
    run_cocotb(IntSoftmax(MAX_LENGTH), "int_softmax", "verif.test_softmax",
               {"max_length": MAX_LENGTH})
