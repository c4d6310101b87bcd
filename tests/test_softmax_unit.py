"""Integer softmax unit in Amaranth's simulator: a few rows against the golden model, the cycle
formula, an over-long row, and parameter validation."""

import random

import pytest
import torch
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from gen.errors import UserError
from gen.hw.softmax import EXP2_LUT, IntSoftmax
from verif.golden_softmax import EXP2_LUT as GOLDEN_LUT
from verif.golden_softmax import int_softmax


def run_rows(dut, rows, *, seed=0, gaps=0.0, ready_p=1.0):
    """Stream ``rows`` through ``dut``; return the received rows, per-row start cycles, error."""
    received, current, starts = [], [], []
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
    return received, starts, error[0]


def test_tables_agree():
    assert EXP2_LUT == GOLDEN_LUT
    assert list(EXP2_LUT) == [round(2 ** 15 * 2 ** (-f / 16)) for f in range(16)]


def test_rows_match_golden_with_back_pressure():
    rng = random.Random(3)
    dut = IntSoftmax(20)
    rows = [[rng.randrange(-128, 128) for _ in range(n)] for n in (17, 1, 20, 3)]
    rows += [[-128] * 20, [127] + [-128] * 6]
    received, _, error = run_rows(dut, rows, seed=1, gaps=0.3, ready_p=0.5)
    for row, got in zip(rows, received):
        assert got == int_softmax(torch.tensor(row)).tolist(), row
    assert error == 0


def test_row_cycles_formula():
    dut = IntSoftmax(8)
    rows = [[5, -3, 100], [0] * 8, [1], [7, 7]]
    received, starts, _ = run_rows(dut, rows)
    for row, got in zip(rows, received):
        assert got == int_softmax(torch.tensor(row)).tolist()
    for k in range(len(rows) - 1):
        assert starts[k + 1] - starts[k] == dut.row_cycles(len(rows[k])), k


def test_long_row_is_truncated_and_flagged():
    dut = IntSoftmax(4)
    rows = [[10, 20, 30, 40, 127, 127], [1, 2]]
    received, _, error = run_rows(dut, rows)
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
    assert dut.row_cycles(17) == 3 * 17 + 28
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
