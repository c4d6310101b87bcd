"""Integer LayerNorm unit against `golden_vit.int_layernorm`, bit for bit, under Verilator.

Row lengths 5, 17, 64, 192 (not all powers of two), one unit of each in a single Verilator
build (a wrapper that only forwards their ports, each unit's under ``ln<dim>_``), the cocotb
tests parametrized over the dims. Per dim: rows at the edges of the definition (constant rows,
sigma = 0; all -128 / all 127; alternating -128/127; one outlier; one +1 among zeros, the
smallest non-zero variance and the largest r; half -128 and half 127, the largest variance;
ramps) and random rows (full range, narrow spreads), random per-channel parameters with their
extremes (mult 0 and 2^31 - 1, shift 1 and 62, neg both ways, biases up to INT32's edge less
2^15) in a parameter memory larger than a row, ``param_base`` switching from row to row
(garbage on it elsewhere, sampled only with a row's first element), the parameter memory
rewritten between batches; streamed back to back with random input gaps and random output
back-pressure (`verif.streams`, seeded by ``ACCELGEN_SEED``), a protocol monitor on ``o``,
nothing extra after each batch, ``busy`` low after it. With no gaps and no back-pressure the
cycles from the first element accepted to the last output must equal
`gen.cycles.layernorm_cycles`.
"""

import json
import os

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import RisingEdge

from verif import golden_vit, seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, reset,
                           start_clock)

PERIOD_NS = 10
DIMS = (5, 17, 64, 192)
INT32_MAX = 2 ** 31 - 1
#: Biases that keep +-u + bias inside INT32 for every |u| < 2^15.
BIAS_MAX = INT32_MAX - 2 ** 15
BIAS_MIN = -(2 ** 31) + 2 ** 15


def param_depth(dim):
    return 2 * dim + 3        # room for bases 0 .. dim + 3; not a power of two


CONFIG = {"dims": list(DIMS), "param_depths": [param_depth(dim) for dim in DIMS]}


def params():
    return json.loads(os.environ.get("DUT_PARAMS", "{}")) or CONFIG


def prefix(dim):
    return f"ln{dim}_"


def rows_per_batch(dim):
    """Rows of the random batches: about 4 000 elements per dim, at least 40 rows."""
    return max(40, 4000 // dim)


# ---- stimuli ---------------------------------------------------------------------------------

def edge_rows(dim, rng):
    rows = []
    for value in (-128, 127, 0, 5, -1):
        rows.append([value] * dim)                                    # sigma = 0
    rows.append([-128 if j % 2 == 0 else 127 for j in range(dim)])    # alternating
    rows.append([127 if j % 2 == 0 else -128 for j in range(dim)])
    for low, high in ((-128, 127), (127, -128), (0, 1), (0, -1), (-128, -127)):
        for where in (0, dim - 1, rng.randrange(dim)):
            row = [low] * dim
            row[where] = high                                         # one outlier
            rows.append(row)
    half = dim // 2
    rows.append([-128] * half + [127] * (dim - half))                 # largest variance
    rows.append([127] * half + [-128] * (dim - half))
    rows.append([(-128 + (255 * j) // (dim - 1)) for j in range(dim)])   # ramp over INT8
    rows.append([(j % 7) - 3 for j in range(dim)])
    return rows


def random_rows(dim, rng, count):
    rows = []
    for _ in range(count):
        spread = rng.choice([256, 256, 64, 8, 2])
        top = rng.randrange(-128 + spread - 1, 128)
        rows.append([rng.randint(top - spread + 1, top) for _ in range(dim)])
    return rows


def random_params(depth, rng):
    """``depth`` parameter words: mostly useful scales (outputs inside INT8), some extremes."""
    words = []
    for _ in range(depth):
        neg = rng.randrange(2)
        if rng.random() < 0.7:
            mult = rng.randrange(2 ** 29, 2 ** 31)
            shift = rng.randrange(33, 41)
            bias = rng.randrange(-(2 ** 14), 2 ** 14)
        else:
            mult = rng.choice([0, 1, 2 ** 31 - 1, rng.randrange(2 ** 31)])
            shift = rng.choice([1, 2, 31, 61, 62, rng.randrange(1, 63)])
            bias = rng.choice([BIAS_MIN, BIAS_MAX, 0, rng.randrange(BIAS_MIN, BIAS_MAX + 1)])
        words.append((neg, bias, mult, shift))
    return words


def pack_params(neg, bias, mult, shift):
    """One LnParams word: neg bit 0, bias bits 1-32, mult 33-63, shift 64-69."""
    return neg | (bias & 0xFFFFFFFF) << 1 | mult << 33 | shift << 64


def expected(rows, bases, words, dim):
    """The golden over all rows at once: row k uses words[bases[k] : bases[k] + dim]."""
    table = np.array(words, dtype=np.int64)                            # [depth, 4]
    index = np.array(bases)[:, None] + np.arange(dim)[None, :]
    per = table[index]                                                 # [rows, dim, 4]
    ln = {"neg": per[..., 0], "bias": per[..., 1], "mult": per[..., 2], "shift": per[..., 3]}
    return golden_vit.int_layernorm(np.array(rows, dtype=np.int64), ln).tolist()


# ---- harness -------------------------------------------------------------------------------

def _wrapper(config):
    """One component that forwards the ports of an `IntLayerNorm` of each dim,
    ``ln<dim>_<member>``."""
    from gen.hw.vit.layernorm import IntLayerNorm
    from verif.sim import bundle

    units = {prefix(dim)[:-1]: IntLayerNorm(dim, depth)
             for dim, depth in zip(config["dims"], config["param_depths"])}
    return bundle(units, "LayerNorms")


# ---- testbench -------------------------------------------------------------------------------

class TB:
    """For the unit of row length ``dim``: clock, reset (of every unit, the others kept idle),
    a parameter writer, a row source (element and ``param_base`` as one beat) with random
    gaps, an output sink with random back-pressure, all seeded."""

    def __init__(self, dut, dim, salt):
        config = params()
        assert dim in config["dims"], f"no unit of dim {dim} in this build ({config})"
        self.dut = dut
        self.dim, self.depth = dim, config["param_depths"][config["dims"].index(dim)]
        self.port = lambda name: getattr(dut, prefix(dim) + name)
        self.rng = seeds.rng(f"layernorm tb {salt} {dim}")
        start_clock(dut.clk, PERIOD_NS)
        for other in config["dims"]:
            getattr(dut, prefix(other) + "param_wr__en").value = 0
            getattr(dut, prefix(other) + "i__valid").value = 0
            getattr(dut, prefix(other) + "o__ready").value = 0
        p = prefix(dim)
        self.source = StreamSource(
            StreamBus(dut, valid=p + "i__valid", ready=p + "i__ready",
                      fields={"value": p + "i__payload", "base": p + "param_base"}),
            dut.clk, rng=self.rng, idle="random")
        self.o_bus = StreamBus(dut, p + "o")
        self.sink = StreamSink(self.o_bus, dut.clk, rng=self.rng)
        self.words = None

    async def reset(self):
        self.port("i__valid").value = 0
        self.port("o__ready").value = 0
        self.source.clear()
        await reset(self.dut.clk, self.dut.rst, 3)

    async def load_params(self, words):
        """Write the whole parameter memory, one word per cycle."""
        dut = self.dut
        addr, data, en = (self.port(f"param_wr__{name}") for name in ("addr", "data", "en"))
        for a, word in enumerate(words):
            await RisingEdge(dut.clk)
            addr.value = a
            data.value = pack_params(*word)
            en.value = 1
        await RisingEdge(dut.clk)
        en.value = 0
        self.words = list(words)

    async def run(self, rows, bases):
        """Stream ``rows`` (row k with ``param_base = bases[k]``); returns the outputs as rows
        and the cycles from the first element accepted to the last output."""
        self.source.accepted_times.clear()
        last_time = []
        self.sink.on_beat = lambda beat, time_ns: last_time.append(time_ns)
        beats = []
        for row, base in zip(rows, bases):
            for j, value in enumerate(row):
                beats.append({"value": value & 0xFF,
                              "base": base if j == 0 else self.rng.randrange(self.depth)})
        self.source.send_nowait(beats)
        flat = [b - 256 if b & 0x80 else b for b in await self.sink.recv(len(beats))]
        await self.source.wait_idle()
        await self.sink.expect_quiet(40)
        assert int(self.port("busy").value) == 0, (f"dim {self.dim}: busy after the batch "
                                                   f"({seeds.describe()})")
        cycles = (last_time[-1] - self.source.accepted_times[0]) // PERIOD_NS
        got = [flat[k * self.dim:(k + 1) * self.dim] for k in range(len(rows))]
        return got, cycles


def check(rows, bases, words, got, dim, what):
    want = expected(rows, bases, words, dim)
    for k, (row, out, exp) in enumerate(zip(rows, got, want)):
        assert out == exp, (f"dim {dim}, {what}: row {k} (base {bases[k]}) {row}: got {out}, "
                            f"expected {exp} ({seeds.describe()})")


@cocotb.test(timeout_time=100, timeout_unit="ms")
@cocotb.parametrize(dim=DIMS)
async def rows_match_golden_with_gaps_and_back_pressure(dut, dim):
    torch.set_num_threads(1)
    log_seed(dut)
    tb = TB(dut, dim, "golden")
    depth = tb.depth
    rng = seeds.rng(f"layernorm rows {dim}")
    monitor = StreamMonitor(tb.o_bus, dut.clk)
    await tb.reset()
    assert int(tb.port("busy").value) == 0
    count = rows_per_batch(dim)
    rows = edge_rows(dim, rng) + random_rows(dim, rng, 2 * count)
    rng.shuffle(rows)
    bases = [rng.choice([0, depth - dim, rng.randrange(depth - dim + 1)]) for _ in rows]
    half = len(rows) // 2

    # Batch 1: input gaps and output back-pressure (ready probability 0.3 .. 1).
    await tb.load_params(random_params(depth, rng))
    tb.source.gap_probability, tb.sink.ready_probability = 0.3, rng.uniform(0.3, 0.7)
    got, _ = await tb.run(rows[:half], bases[:half])
    check(rows[:half], bases[:half], tb.words, got, dim, "gaps and back-pressure")

    # Batch 2: new parameters; back-pressure only (the output is the bottleneck).
    await tb.load_params(random_params(depth, rng))
    tb.source.gap_probability, tb.sink.ready_probability = 0.0, 0.5
    got, _ = await tb.run(rows[half:], bases[half:])
    check(rows[half:], bases[half:], tb.words, got, dim, "back-pressure")

    # Batch 3: gaps only (the input is the bottleneck), always ready.
    tb.source.gap_probability, tb.sink.ready_probability = 0.5, 1.0
    some = rows[:count // 2]
    got, _ = await tb.run(some, bases[:len(some)])
    check(some, bases[:len(some)], tb.words, got, dim, "gaps")
    monitor.check_valid_independent()


@cocotb.test(timeout_time=50, timeout_unit="ms")
@cocotb.parametrize(dim=DIMS)
async def cycles_follow_the_model(dut, dim):
    from gen.cycles import layernorm_cycles
    log_seed(dut)
    tb = TB(dut, dim, "cycles")
    depth = tb.depth
    rng = seeds.rng(f"layernorm cycles {dim}")
    await tb.reset()
    await tb.load_params(random_params(depth, rng))
    tb.source.gap_probability, tb.sink.ready_probability = 0.0, 1.0
    measured, model = [], []
    for n_rows in (1, 2, 7):
        rows = random_rows(dim, rng, n_rows - 1) + [[0] * dim]
        bases = [rng.randrange(depth - dim + 1) for _ in rows]
        got, cycles = await tb.run(rows, bases)
        check(rows, bases, tb.words, got, dim, f"{n_rows} rows back to back")
        measured.append(cycles)
        model.append(layernorm_cycles(n_rows, dim))
    assert measured == model, (f"dim {dim}: cycles for 1, 2, 7 rows {measured}, model {model} "
                               f"({seeds.describe()})")
    dut._log.info("dim %d: cycles for 1, 2, 7 rows: %s", dim, measured)


# ---- pytest entry points -------------------------------------------------------------------

def test_vit_layernorm_every_dim():
    """One build holding a unit of each of `DIMS`; every cocotb test for every dim."""
    from cocotb_tools.runner import get_results

    from verif.sim import run_cocotb
    results = run_cocotb(_wrapper(CONFIG), "vit_layernorms", "verif.test_vit_layernorm", CONFIG)
    ran, failed = get_results(results)
    assert (ran, failed) == (2 * len(DIMS), 0), f"{ran} cocotb tests ran, {failed} failed"


def test_layernorm_refuses_bad_parameters():
    from gen.errors import UserError
    from gen.hw.vit.layernorm import IntLayerNorm
    for dim, depth, name in ((1, 8, "dim"), (257, 300, "dim"), (True, 8, "dim"),
                             (2.0, 8, "dim"), (16, 15, "param_depth"),
                             (16, 2 ** 16 + 1, "param_depth"), (16, "32", "param_depth")):
        with pytest.raises(UserError, match=name):
            IntLayerNorm(dim, depth)
    unit = IntLayerNorm(17, 40)
    assert (unit.dim, unit.param_depth, unit.param_addr_bits, unit.buffer_depth) == (17, 40, 6, 34)


def test_layernorm_cycle_model_sustains_one_element_per_cycle():
    from gen.cycles import layernorm_cycles
    from gen.hw.vit.layernorm import LN_EMIT_LATENCY, LN_INPUT_STAGES, ln_geometry
    assert layernorm_cycles(0, 64) == 0
    for dim in (52, 64, 192, 256):
        stats = ln_geometry(dim).stats_cycles
        for rows in (1, 2, 10):
            assert layernorm_cycles(rows, dim) == ((rows + 1) * dim + LN_INPUT_STAGES + stats +
                                                   LN_EMIT_LATENCY)
    for dim in (2, 5, 17):         # short rows: the statistics stage sets the pace
        assert layernorm_cycles(9, dim) - layernorm_cycles(8, dim) == ln_geometry(dim).stats_cycles + 1
