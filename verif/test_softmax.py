"""Integer softmax unit against `golden_softmax.int_softmax`, bit for bit, under Verilator.

Rows of random lengths 1..max_length (max_length itself, 17 and other lengths that are not
powers of two), all-equal rows, INT8 extremes, length-1 rows, all streamed back to back with
random input gaps and random output back-pressure (`verif.streams`, seeded by ``ACCELGEN_SEED``),
so that up to four rows overlap in the unit; a protocol monitor on the output stream; nothing
extra after each batch; over-long rows (truncated, `error` raised), alone and mixed into long
random streams; the cycles: every row's last probability against `stage_model` (the unit's
stage-by-stage recurrence), and the steady row period and total of rows of one length against
`gen.cycles.softmax_row_cycles` / `softmax_rows_cycles`."""

import json
import os

import cocotb
import torch

from verif import golden_softmax, seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, reset,
                           start_clock)

MAX_LENGTH = 40          # not a power of two: the buffer and its counters end off a boundary
PERIOD_NS = 10


def stage_model(lengths, n_max):
    """Cycle of each row's last probability (the first score accepted at 0; input always valid,
    output always ready), stage by stage as ``gen/hw/softmax.py`` hands the rows on.

    Row k is received from ``F_k`` (the cycle after stage A handed row k - 1 on) and waits in
    ``a_full`` from the cycle after its last score; the sum stage takes it at ``AB_k`` once free
    (the cycle after it handed row k - 1 on), reads it in the ``n`` cycles after and marks the
    sum done ``EXP_STAGES + 1`` later; the divider takes it at ``BD_k`` once free and is done
    ``QUOTIENT_BITS + 1`` later; the emit stage takes it at ``DC_k`` once free (the cycle after
    row k - 1's last probability) and its last probability leaves ``n + EMIT_LATENCY`` later.
    An over-long row is received in full and processed as its first ``n_max`` scores.
    """
    from gen.hw.softmax import EMIT_LATENCY, EXP_STAGES, QUOTIENT_BITS
    never = -(1 << 40)
    ab = bd = dc = out = never
    ends = []
    for k, length in enumerate(lengths):
        n = min(length, n_max)
        first = 0 if k == 0 else ab + 1
        ab = max(first + length, bd + 1)
        bd = max(ab + n + EXP_STAGES + 1, dc + 1)
        dc = max(bd + QUOTIENT_BITS + 1, out + 1)
        out = dc + n + EMIT_LATENCY
        ends.append(out)
    return ends


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
        self.ends = []            # cycle of each row's last probability transfer
        self._end_times = []
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
            self._end_times.append(time_ns)
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
        self._end_times.clear()
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
        self.ends = [t // PERIOD_NS for t in self._end_times]
        return got


def check(rows, got, n_max=None):
    """Each received row equals the golden of its row (of its first ``n_max`` scores)."""
    assert len(got) == len(rows)
    for index, (row, out) in enumerate(zip(rows, got)):
        expected = golden_softmax.int_softmax(torch.tensor(row[:n_max])).tolist()
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
async def cycles_follow_the_stage_model(dut):
    from gen.cycles import softmax_rows_cycles
    from gen.hw.softmax import IntSoftmax
    n_max = params()["max_length"]
    unit = IntSoftmax(n_max)
    log_seed(dut)
    rng = seeds.rng("softmax rows 3")
    tb = TB(dut, seed=9)
    await tb.reset()
    # Mixed lengths (an over-long one too), input always valid, output always ready.
    lengths = [1, 2, 17, n_max, 3, n_max - 1, 1, 1, 16, n_max + 5, 2, n_max]
    rows = [[rng.randrange(-128, 128) for _ in range(n)] for n in lengths]
    got = await tb.run(rows)
    check(rows, got, n_max)
    measured = [end - tb.starts[0] for end in tb.ends]
    assert measured == stage_model(lengths, n_max), (
        f"last probabilities at {measured}, model {stage_model(lengths, n_max)} "
        f"({seeds.describe()})")
    # Rows of one length: one every row_cycles(n), softmax_rows_cycles in all.
    for n in (17, 5, n_max):
        rows = [[rng.randrange(-128, 128) for _ in range(n)] for _ in range(8)]
        got = await tb.run(rows)
        check(rows, got)
        periods = [b - a for a, b in zip(tb.ends, tb.ends[1:])]
        assert periods == [unit.row_cycles(n)] * (len(rows) - 1), (n, periods)
        total = tb.ends[-1] + 1 - tb.starts[0]
        assert total == softmax_rows_cycles(len(rows), n), (n, total)
        dut._log.info("rows of %d scores: one every %d cycles (%d for %d rows)", n,
                      periods[-1], total, len(rows))


@cocotb.test(timeout_time=40, timeout_unit="ms")
async def long_random_streams_with_overlong_rows(dut):
    """Many consecutive rows of random lengths 1..max_length and over-long ones, random input
    gaps and output back-pressure: every row's probabilities equal the golden, in order."""
    torch.set_num_threads(1)
    n_max = params()["max_length"]
    log_seed(dut)
    rng = seeds.rng("softmax rows 21")
    tb = TB(dut, seed=13)
    monitor = tb.monitor()
    await tb.reset()
    rows = []
    for _ in range(400):
        n = rng.choice([rng.randint(1, n_max), rng.randint(1, n_max), rng.randint(1, 4), n_max,
                        rng.randint(n_max + 1, 2 * n_max)])
        spread = rng.choice([256, 64, 16, 4])
        top = rng.randrange(-128 + spread - 1, 128)
        rows.append([rng.randint(top - spread + 1, top) for _ in range(n)])
    for (gap_p, ready_range), part in zip((((0.3, (0.3, 1.0))), (0.0, (0.2, 0.9)),
                                           (0.6, (0.8, 1.0)), (0.0, (1.0, 1.0))),
                                          (rows[:100], rows[100:200], rows[200:300],
                                           rows[300:])):
        tb.gap_p, tb.ready_range = gap_p, ready_range
        check(part, await tb.run(part), n_max)
    assert int(dut.error.value) == 1
    monitor.check_valid_independent()


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
