"""Integer softmax unit in Amaranth's simulator: rows against the golden model (with input gaps,
output back-pressure and over-long rows, many rows overlapping in the unit), the cycle model
(a stage-by-stage recurrence, and the closed forms of `gen.cycles` against it), and parameter
validation."""

import itertools
import random

import pytest
import torch
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from gen.cycles import softmax_row_cycles, softmax_rows_cycles
from gen.errors import UserError
from gen.hw.softmax import EXP2_LUT, IntSoftmax
from verif.golden_softmax import EXP2_LUT as GOLDEN_LUT
from verif.golden_softmax import int_softmax
from verif.test_softmax import stage_model


def run_rows(dut, rows, *, seed=0, gaps=0.0, ready_p=1.0):
    """Stream ``rows`` through ``dut``; return the received rows, per-row start cycles (first
    score accepted), error, and per-row end cycles (last probability transferred), cycles
    counted from the start of the simulation."""
    received, current, starts, ends = [], [], [], []
    cycle = [0]
    rng = random.Random(seed)

    async def producer(ctx):
        for row in rows:
            for k, value in enumerate(row):
                while rng.random() < gaps:
                    await ctx.tick()
                ctx.set(dut.i.payload, {"value": value, "last": int(k == len(row) - 1)})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                if k == 0:
                    # The transfer happened at the edge just awaited.
                    starts.append(cycle[0] - 1)
                ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(received) < len(rows):
            ready = rng.random() < ready_p
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.o.valid):
                payload = ctx.get(dut.o.payload)
                current.append(payload.value)
                if payload.last:
                    received.append(list(current))
                    current.clear()
                    ends.append(cycle[0])
            await ctx.tick()

    async def counter(ctx):
        while True:
            await ctx.tick()
            cycle[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(counter)
    error = []

    async def finish(ctx):
        while len(received) < len(rows):
            await ctx.tick()
        error.append(ctx.get(dut.error))
    sim.add_testbench(finish)
    sim.run_until(1e-8 * (200 + 20 * sum(len(r) + 20 for r in rows)))
    assert len(received) == len(rows), f"only {len(received)} of {len(rows)} rows came out"
    return received, starts, error[0], ends


def test_tables_agree():
    assert EXP2_LUT == GOLDEN_LUT
    assert list(EXP2_LUT) == [round(2 ** 15 * 2 ** (-f / 16)) for f in range(16)]


def test_rows_match_golden_with_back_pressure():
    rng = random.Random(3)
    dut = IntSoftmax(20)
    rows = [[rng.randrange(-128, 128) for _ in range(n)] for n in (17, 1, 20, 3)]
    rows += [[-128] * 20, [127] + [-128] * 6]
    received, _, error, _ = run_rows(dut, rows, seed=1, gaps=0.3, ready_p=0.5)
    for row, got in zip(rows, received):
        assert got == int_softmax(torch.tensor(row)).tolist(), row
    assert error == 0


def test_rows_overlap_under_gaps_back_pressure_and_long_rows():
    """Many consecutive rows of random lengths 1 .. max_length (and over-long ones) with random
    input gaps and output back-pressure: every row equals the golden of its first max_length
    scores, in order."""
    rng = random.Random(11)
    n_max = 9
    rows = []
    for _ in range(60):
        n = rng.choice([rng.randint(1, n_max), n_max, 1, rng.randint(n_max + 1, 2 * n_max + 2)])
        spread = rng.choice([256, 64, 16])
        top = rng.randrange(-128 + spread - 1, 128)
        rows.append([rng.randint(top - spread + 1, top) for _ in range(n)])
    for gaps, ready_p, seed in ((0.3, 0.6, 2), (0.0, 0.4, 3), (0.6, 1.0, 4)):
        received, _, error, _ = run_rows(IntSoftmax(n_max), rows, seed=seed, gaps=gaps,
                                         ready_p=ready_p)
        for index, (row, got) in enumerate(zip(rows, received)):
            assert got == int_softmax(torch.tensor(row[:n_max])).tolist(), (index, row)
        assert error == 1


def test_row_cycles_follow_the_stage_model():
    """Rows of mixed lengths (over-long ones too) back to back: every row's last probability
    leaves when the stage recurrence says."""
    n_max = 8
    rng = random.Random(5)
    lengths = [3, 8, 1, 1, 2, 8, 8, 12, 5, 1, 7, 8, 17, 2]
    rows = [[rng.randrange(-128, 128) for _ in range(n)] for n in lengths]
    received, starts, _, ends = run_rows(IntSoftmax(n_max), rows)
    for row, got in zip(rows, received):
        assert got == int_softmax(torch.tensor(row[:n_max])).tolist()
    assert starts[0] == 0
    assert ends == stage_model(lengths, n_max)


@pytest.mark.parametrize("n", [1, 3, 10, 11, 12, 17, 20])
def test_steady_row_period_and_total(n):
    """Rows of n scores back to back: one row every softmax_row_cycles(n) cycles, and
    softmax_rows_cycles(rows, n) from the first score to the cycle after the last probability."""
    rows_count = 6
    dut = IntSoftmax(20)
    rows = [[(7 * k + j) % 256 - 128 for j in range(n)] for k in range(rows_count)]
    received, starts, _, ends = run_rows(dut, rows)
    for row, got in zip(rows, received):
        assert got == int_softmax(torch.tensor(row)).tolist()
    periods = [b - a for a, b in itertools.pairwise(ends)]
    assert periods == [dut.row_cycles(n)] * (rows_count - 1)
    assert ends[-1] + 1 - starts[0] == softmax_rows_cycles(rows_count, n)


def test_closed_forms_match_the_stage_model():
    for n in range(1, 80):
        assert softmax_row_cycles(n) == max(n + 8, 19)
        for rows in range(1, 30):
            assert softmax_rows_cycles(rows, n) == stage_model([n] * rows, n)[-1] + 1, (n, rows)
    assert softmax_rows_cycles(0, 17) == 0
    assert softmax_row_cycles(17) == 25          # was 3 * 17 + 28 = 79 before rows overlapped


def test_long_row_is_truncated_and_flagged():
    dut = IntSoftmax(4)
    rows = [[10, 20, 30, 40, 127, 127], [1, 2]]
    received, _, error, _ = run_rows(dut, rows)
    assert received[0] == int_softmax(torch.tensor(rows[0][:4])).tolist()
    assert received[1] == int_softmax(torch.tensor(rows[1])).tolist()
    assert error == 1


@pytest.mark.parametrize("bad", [0, -1, 2 ** 16 + 1, 3.5, "8", True])
def test_bad_max_length_is_refused(bad):
    with pytest.raises(UserError, match="max_length"):
        IntSoftmax(bad)


def test_derived_values():
    dut = IntSoftmax(17)
    Fragment.get(dut, None)         # elaborates
    assert dut.max_length == 17
    assert dut.sum_bits == (17 * 2 ** 15).bit_length()
    assert dut.row_cycles(17) == 17 + 8
    with pytest.raises(ValueError):
        dut.row_cycles(18)


# The golden model itself (pure torch, fast): a hand-worked row, rows as batches, input checks,
# and the documented error bound against the float reference.

def test_golden_hand_worked_row():
    # m = 3, t = (2, 1, 0): e = (30048, 31379, 32768), sum = 94195, r = 22798.
    assert int_softmax(torch.tensor([1, 2, 3])).tolist() == [41, 43, 45]
    assert int_softmax(torch.tensor([-100])).tolist() == [127]          # 128 clamps to 127
    assert int_softmax(torch.tensor([127, -128])).tolist() == [127, 0]  # e = 32768 >> 15 = 1


def test_golden_rows_are_independent():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(-128, 128, (3, 5, 17), generator=g)
    whole = int_softmax(batch)
    assert whole.dtype == torch.int64 and whole.shape == batch.shape
    for a in range(3):
        for b in range(5):
            assert torch.equal(whole[a, b], int_softmax(batch[a, b]))


def test_golden_refuses_bad_rows():
    with pytest.raises(ValueError, match="at least one"):
        int_softmax(torch.zeros(2, 0, dtype=torch.int64))
    with pytest.raises(ValueError, match="INT8"):
        int_softmax(torch.tensor([0, 128]))


def test_golden_within_error_bound_of_float_reference():
    from verif.golden_softmax import error_bound, float_reference
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    worst = {}
    for n in (1, 2, 3, 17, 64, 101, 256):
        rows = [torch.randint(-128, 128, (300, n), generator=g),
                torch.randint(110, 128, (300, n), generator=g),          # fine table steps
                torch.full((1, n), -128), torch.full((1, n), 127)]
        spike = torch.full((n, n), -128)
        spike[range(n), range(n)] = 127
        rows.append(spike)
        s = torch.cat(rows)
        err = (int_softmax(s) - float_reference(s)).abs().max().item()
        assert err <= error_bound(n), (n, err, error_bound(n))
        worst[n] = err
    # Not vacuous: the clamp and the rounding do show up.
    assert worst[1] == 1.0 and worst[2] > 0.9
    assert error_bound(101) == 1.0 and error_bound(102) > 1.0
