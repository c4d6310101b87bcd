"""GemmAccelerator (buffers + output-stationary engine + requantizer) against the golden GEMM.

Buffers are loaded through their host-side write ports, a job is started, and every output on
the result stream (a `verif.streams.StreamSink` under random back-pressure, with a
`StreamMonitor` on the stream rules) is checked for equality with `golden.gemm_int8` at its
address; every address of Y must arrive exactly once and nothing after. Random operands and
back-pressure come from ``ACCELGEN_SEED`` (`verif.seeds`).
"""

import json
import os

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import ReadOnly, RisingEdge

from gen.host.layout import batch_out_stride, pack_activations, pack_weights
from verif import golden, seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, log_seed, reset, start_clock,
                           wait_until)

CLOCK_NS = 10
#: Simulated-time bound of every test here: no test can hang.
TEST_TIMEOUT_MS = 100


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def random_requant(rng, n, k):
    """Per-channel (bias, mult, shift) that spread outputs over INT8, plus extreme channels."""
    bias = rng.integers(-2 ** 16, 2 ** 16, n)
    mult = rng.integers(2 ** 29, 2 ** 31, n)
    # Accumulators are of order sqrt(K) * 2^13; aim their requantized values at about +-100.
    typical = max(1.0, np.sqrt(k) * 2 ** 13)
    shift = np.clip(np.round(np.log2(typical * 2 ** 30 / 100)).astype(np.int64) +
                    rng.integers(-2, 3, n), 1, 62)
    extremes = [(0, 0, 1), (2 ** 31 - 1, 0, 1), (2 ** 31 - 1, 2 ** 31 - 1 - k * 2 ** 14, 62),
                (1, -(2 ** 31 - 1 - k * 2 ** 14), 1), (2 ** 31 - 1, 0, 31)]
    for channel, (m_, b_, s_) in zip(rng.permutation(n)[:2], rng.permutation(extremes)[:2]):
        mult[channel], bias[channel], shift[channel] = m_, b_, s_
    return bias, mult, shift


def _decode(payload, lanes):
    """An output beat: its (address, INT8 value) pairs. The payload is ``lanes`` values, the
    32-bit address of the first, and the lane mask, low bits first; the mask's set bits must
    be its lowest ones, and at least one."""
    addr = payload >> 8 * lanes & 0xFFFF_FFFF
    mask = payload >> (8 * lanes + 32)
    assert mask and mask & (mask + 1) == 0, f"lane mask {mask:#x} is not a non-empty prefix"
    outputs = []
    for lane in range(mask.bit_length()):
        value = payload >> 8 * lane & 0xFF
        outputs.append((addr + lane, value - 256 if value > 127 else value))
    return outputs


class TB:
    """Clock, reset, buffer loading and a back-pressured output sink for one DUT."""

    def __init__(self, dut, ready_probability=0.7, seed=0):
        self.dut = dut
        self.params = _params()
        self.rows, self.cols = self.params["rows"], self.params["cols"]
        self.lanes = self.params.get("drain_lanes", 1)
        self.dataflow = self.params.get("dataflow", "output_stationary")
        start_clock(dut.clk, CLOCK_NS)
        out = StreamBus(dut, "o")
        self.sink = StreamSink(out, dut.clk, ready_probability=ready_probability,
                               rng=seeds.rng(f"gemm sink {seed}"))
        self.monitor = StreamMonitor(out, dut.clk)

    @property
    def ready_probability(self):
        return self.sink.ready_probability

    @ready_probability.setter
    def ready_probability(self, value):
        self.sink.ready_probability = value

    async def reset(self):
        dut = self.dut
        for name in ("start", "act_wr__en", "wgt_wr__en", "param_wr__en"):
            getattr(dut, name).value = 0
        await reset(dut.clk, dut.rst, 3)
        await RisingEdge(dut.clk)

    async def write(self, port, words):
        dut = self.dut
        for addr, word in enumerate(words):
            getattr(dut, f"{port}__addr").value = addr
            getattr(dut, f"{port}__data").value = word
            getattr(dut, f"{port}__en").value = 1
            await RisingEdge(dut.clk)
        getattr(dut, f"{port}__en").value = 0

    async def load(self, a, w, bias, mult, shift):
        """Load one GEMM's operands, or a batch's (``a`` [B, M, K], ``w`` [B, K, N]: each
        GEMM's words after the previous one's)."""
        a_batch, w_batch = (a,) if a.ndim == 2 else a, (w,) if w.ndim == 2 else w
        await self.write("act_wr", [int.from_bytes(x, "little") for a_ in a_batch
                                    for x in pack_activations(a_, self.rows, self.dataflow)])
        await self.write("wgt_wr", [int.from_bytes(x, "little") for w_ in w_batch
                                    for x in pack_weights(w_, self.cols)])
        await self.write("param_wr", [int(b) & 0xFFFFFFFF | int(mm) << 32 | int(s) << 63
                                      for b, mm, s in zip(bias, mult, shift)])

    async def run(self, m, k, n, max_cycles=2_000_000, batch=1):
        """Start a job (of ``batch`` GEMMs) and wait (at most ``max_cycles``) for done:
        (error, cycles)."""
        dut = self.dut
        self.sink.clear()
        dut.m_size.value, dut.k_size.value, dut.n_size.value = m, k, n
        dut.b_size.value = batch
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await ReadOnly()
        if not int(dut.done.value):
            await wait_until(dut.clk, lambda: int(dut.done.value), timeout_cycles=max_cycles,
                             what=f"done of the {m}x{k}x{n} job")
        error, cycles = int(dut.error.value), int(dut.cycles.value)
        await RisingEdge(dut.clk)
        return error, cycles

    def collect(self, m, n, batch=None):
        """Y ([B, M, N] for a batch) from the received outputs; each address must arrive
        exactly once, GEMM ``b``'s at ``b * batch_out_stride`` on (none in the padding)."""
        stride = batch_out_stride(m, n, self.rows)
        y = np.full((batch or 1, m, n), 999, dtype=np.int64)
        seen = set()
        while self.sink.beats:
            for addr, value in _decode(self.sink.beats.popleft(), self.lanes):
                b, offset = divmod(addr, stride)
                assert b < (batch or 1) and offset < m * n, (
                    f"output address {addr} outside {batch or 1} x {m}x{n} "
                    f"({seeds.describe()})")
                assert addr not in seen, (f"output address {addr} written twice "
                                          f"({seeds.describe()})")
                seen.add(addr)
                y[b, offset // n, offset % n] = value
        missing = (batch or 1) * m * n - len(seen)
        assert missing == 0, f"{missing} outputs missing ({seeds.describe()})"
        return y if batch else y[0]


async def check_gemm(tb, a, w, bias, mult, shift):
    """One GEMM, or a batch (``a`` [B, M, K], ``w`` [B, K, N]: one job), against the golden
    model GEMM by GEMM."""
    batch = a.shape[0] if a.ndim == 3 else None
    m, k = a.shape[-2:]
    n = w.shape[-1]
    await tb.load(a, w, bias, mult, shift)
    error, cycles = await tb.run(m, k, n, batch=batch or 1)
    what = f"{m}x{k}x{n}" if batch is None else f"batch of {batch} {m}x{k}x{n}"
    assert error == 0, f"{what}: device reports an error"
    expected = np.stack([
        golden.gemm_int8(torch.from_numpy(a_), torch.from_numpy(w_), torch.from_numpy(bias),
                         torch.from_numpy(mult), torch.from_numpy(shift)).numpy()
        for a_, w_ in zip(a.reshape(-1, m, k), w.reshape(-1, k, n))])
    expected = expected if batch else expected[0]
    got = tb.collect(m, n, batch)
    mismatches = np.argwhere(got != expected)
    assert len(mismatches) == 0, (
        f"{what}: {len(mismatches)} mismatches, first at {tuple(mismatches[0])}: "
        f"got {got[tuple(mismatches[0])]}, expected {expected[tuple(mismatches[0])]} "
        f"({seeds.describe()})")
    # Nothing after the last output of the job.
    await tb.sink.expect_quiet(16)
    return cycles


def _shapes(rows, cols):
    """Shapes around the array size: exact multiples, one short, one over, and degenerate."""
    return [
        (rows, 1, cols), (1, 1, 1), (rows * 2, 5, cols * 2), (rows * 2 - 1, 7, cols + 1),
        (rows + 1, 16, cols * 3 - 1), (1, 33, cols * 2 + 1), (rows * 3 + 2, 3, 1),
        (5, 64, 6), (rows * 13 + 1, 7, cols * 2 + 1),
    ]


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def random_shapes_and_values(dut):
    log_seed(dut)
    tb = TB(dut, ready_probability=0.6, seed=1)
    await tb.reset()
    rng = seeds.np_rng("gemm 1")
    for m, k, n in _shapes(tb.rows, tb.cols):
        a = rng.integers(-128, 128, (m, k))
        w = rng.integers(-128, 128, (k, n))
        await check_gemm(tb, a, w, *random_requant(rng, n, k))
    tb.monitor.check_valid_independent()


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def extreme_values(dut):
    """All-(-128) and all-127 operands (largest accumulators), zeros, and alternating signs."""
    log_seed(dut)
    tb = TB(dut, ready_probability=0.5, seed=2)
    await tb.reset()
    rng = seeds.np_rng("gemm 2")
    m, k, n = tb.rows * 2 + 1, 40, tb.cols + 2
    cases = [
        (np.full((m, k), -128), np.full((k, n), -128)),
        (np.full((m, k), 127), np.full((k, n), -128)),
        (np.full((m, k), 127), np.full((k, n), 127)),
        (np.zeros((m, k), dtype=np.int64), rng.integers(-128, 128, (k, n))),
        (rng.choice([-128, 127], (m, k)), rng.choice([-128, 127], (k, n))),
    ]
    for a, w in cases:
        await check_gemm(tb, a, w, *random_requant(rng, n, k))


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def back_pressure_extremes(dut):
    """An output stream that is almost never ready, then always ready."""
    log_seed(dut)
    rng = seeds.np_rng("gemm 3")
    tb = TB(dut, ready_probability=0.05, seed=3)
    await tb.reset()
    m, k, n = tb.rows + 1, 2, tb.cols * 2 - 1
    a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    await check_gemm(tb, a, w, *random_requant(rng, n, k))
    tb.monitor.check_valid_independent()
    tb.ready_probability = 1.0
    await check_gemm(tb, a, w, *random_requant(rng, n, k))


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def refuses_bad_jobs(dut):
    """A zero size, or a job larger than the buffers, ends at once with the error flag."""
    log_seed(dut)
    tb = TB(dut, ready_probability=1.0, seed=4)
    await tb.reset()
    p = tb.params
    for m, k, n in [(0, 4, 4), (4, 0, 4), (4, 4, 0)]:
        error, _ = await tb.run(m, k, n)
        assert error == 1, f"{m}x{k}x{n} should be refused"
    # More activation rows than the buffer holds.
    too_many_k = p["act_depth"] // 1 + 1
    error, _ = await tb.run(tb.rows, too_many_k, 1)
    assert error == 1, "activation buffer overflow not reported"
    # More output channels than the parameter buffer holds (with drain lanes: a channel of a
    # lane other than the first).
    error, _ = await tb.run(1, 1, p["param_depth"] + 1)
    assert error == 1, "parameter buffer overflow not reported"
    # The error flag clears with the next good job.
    rng = seeds.np_rng("gemm 4")
    a, w = rng.integers(-128, 128, (2, 3)), rng.integers(-128, 128, (3, 2))
    await check_gemm(tb, a, w, *random_requant(rng, 2, 3))


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def cycles_match_the_cycle_model(dut):
    """With the output always ready, a job takes exactly what gen.perf predicts."""
    from gen.cycles import engine_gemm_cycles
    log_seed(dut)
    tb = TB(dut, ready_probability=1.0, seed=5)
    await tb.reset()
    rng = seeds.np_rng("gemm 5")
    r, c = tb.rows, tb.cols
    # Dividing shapes and shapes whose last tile is padded (the tail depends on how much).
    for m, k, n in [(r, 1, c), (2 * r, 3, c), (r, 40, 2 * c), (3 * r, 2, 2 * c),
                    (r + 1, 5, c + 1), (1, 7, 1), (2 * r - 1, 2, 3 * c - 2), (1, 30, c),
                    (r, 3, 1), (7, 3, 5), (13 * r + 1, 7, 2 * c + 1), (41, 2, c)]:
        a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
        cycles = await check_gemm(tb, a, w, *random_requant(rng, n, k))
        predicted = engine_gemm_cycles(m, k, n, r, c, tb.lanes, dataflow=tb.dataflow,
                                       m_tile=tb.params.get("m_tile"))
        assert cycles == predicted, (
            f"{m}x{k}x{n}: {cycles} cycles, model says {predicted} ({seeds.describe()})")


def _batch_shapes(rows, cols):
    """Batches around the array size: one GEMM, tiles that divide, padded rows between the
    GEMMs (M not a multiple of R), single-tile GEMMs with K = 1."""
    return [(1, rows, 3, cols), (3, rows * 2, 5, cols), (4, rows + 1, 7, cols * 2 - 1),
            (2, 1, 1, 1), (5, rows - 1 or 1, 16, cols + 1), (7, 3, 1, 2)]


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def batches(dut):
    """A batch of GEMMs in one job: every GEMM bit-exact at its address, under random
    back-pressure and then always ready (cycles against the model); an engine without
    batches refuses one with the error flag, and so does every engine a batch of 0."""
    from gen.cycles import engine_gemm_cycles
    log_seed(dut)
    tb = TB(dut, ready_probability=0.6, seed=6)
    await tb.reset()
    rng = seeds.np_rng("gemm 6")
    r, c = tb.rows, tb.cols
    error, _ = await tb.run(r, 2, c, batch=0)
    assert error == 1, "a batch of 0 GEMMs should be refused"
    if tb.dataflow == "weight_stationary":
        error, _ = await tb.run(r, 2, c, batch=2)
        assert error == 1, "the weight-stationary engine should refuse a batch"
        a, w = rng.integers(-128, 128, (1, 2, 3)), rng.integers(-128, 128, (1, 3, 2))
        await check_gemm(tb, a, w, *random_requant(rng, 2, 3))
        return
    for ready in (0.6, 1.0):
        tb.ready_probability = ready
        for batch, m, k, n in _batch_shapes(r, c):
            a = rng.integers(-128, 128, (batch, m, k))
            w = rng.integers(-128, 128, (batch, k, n))
            cycles = await check_gemm(tb, a, w, *random_requant(rng, n, k))
            if ready == 1.0:
                predicted = engine_gemm_cycles(m, k, n, r, c, tb.lanes, batch=batch)
                assert cycles == predicted, (f"batch of {batch} {m}x{k}x{n}: {cycles} cycles, "
                                             f"model says {predicted} ({seeds.describe()})")
    # Extremes: the largest accumulators in one GEMM of the batch, zeros in another.
    m, k, n = r + 1, 40, c + 2
    a = np.stack([np.full((m, k), -128), np.zeros((m, k), dtype=np.int64),
                  rng.choice([-128, 127], (m, k))])
    w = np.stack([np.full((k, n), -128), rng.integers(-128, 128, (k, n)),
                  rng.choice([-128, 127], (k, n))])
    await check_gemm(tb, a, w, *random_requant(rng, n, k))
    tb.monitor.check_valid_independent()


CONFIGS = [
    dict(rows=3, cols=4, act_depth=512, wgt_depth=512, param_depth=64, out_depth=1024),
    dict(rows=1, cols=1, act_depth=512, wgt_depth=512, param_depth=16, out_depth=512),
    # Drain lanes: every beat of the drain is several columns of one row, so N that do not
    # divide by the lanes leave partial beats; param_depth not a multiple of the lanes leaves
    # the last parameter word partly unused.
    dict(rows=3, cols=4, drain_lanes=4, act_depth=512, wgt_depth=512, param_depth=61,
         out_depth=1024),
    dict(rows=4, cols=8, drain_lanes=2, act_depth=512, wgt_depth=512, param_depth=64,
         out_depth=1024),
    # Two and three beats per drain row (the parameter address kept a beat ahead wraps at
    # the row's end), and a row whose columns do not fill the drain's last group of
    # CHAIN_GROUP_COLUMNS.
    dict(rows=2, cols=4, drain_lanes=2, act_depth=512, wgt_depth=512, param_depth=64,
         out_depth=1024),
    dict(rows=3, cols=6, drain_lanes=2, act_depth=512, wgt_depth=512, param_depth=61,
         out_depth=1024),
    # Weight-stationary: a K that does not divide by R, chunks of rows smaller than M (m_tile
    # 16, so both accumulator banks take turns within one column tile), drain lanes.
    dict(rows=3, cols=4, dataflow="weight_stationary", m_tile=16, act_depth=512,
         wgt_depth=512, param_depth=64, out_depth=1024),
    dict(rows=4, cols=8, dataflow="weight_stationary", drain_lanes=2, m_tile=16,
         act_depth=512, wgt_depth=512, param_depth=61, out_depth=1024),
    dict(rows=2, cols=1, dataflow="weight_stationary", m_tile=8, act_depth=512,
         wgt_depth=512, param_depth=16, out_depth=512),
]


@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: f"{p['rows']}x{p['cols']}"
                         f"{'-l%d' % p['drain_lanes'] if 'drain_lanes' in p else ''}"
                         f"{'-ws' if p.get('dataflow') == 'weight_stationary' else ''}")
def test_gemm_accelerator(params):
    from gen.hw.accelerator import GemmAccelerator
    from verif.sim import run_cocotb
    run_cocotb(GemmAccelerator(**params), "gemm_accelerator", "verif.test_gemm_accelerator", params)
