"""SparseAttentionKernel against `golden_attention` (equality), under Verilator.

One small build (B=4, T=7, D=12, H=2 so d=6 straddles words, FFN 10; unpacked ECP5 lanes) runs
random layers with random sparsity patterns (all kept, pruned rows, pruned blocks, blocks of
0-2 words, whole matrices pruned, heads with pruned Q/K features, -128/127 extremes, fewer
tokens than generated) through the full descriptor program of `gen.hw.attention_layout`, with
random gaps on the load, descriptor and read-address streams and random back-pressure on the
read results (`verif.streams`: a protocol monitor on the results, nothing extra after each
read, every wait bounded; stimuli from ``ACCELGEN_SEED``); every intermediate matrix read back
must equal the golden, and every op's measured cycles must EQUAL the cycle model
(`gen.cycles`, through the geometry). A second build (the tiny ViT's B=8, T=17, D=64, H=4,
FFN 128, lanes packed in pairs on DSP48E2-sized multipliers) runs both pruned, quantized
encoder layers of the trained model on digit images. The testbenches use only the kernel's `AttentionGeometry`; the
hardware is built once per build, by the pytest runner.
"""

import json
import os

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import ReadOnly, RisingEdge

from verif import golden_attention as golden
from verif import seeds
from verif.streams import (StreamBus, StreamMonitor, StreamSink, StreamSource, log_seed, reset,
                           start_clock, wait_until)

CLOCK_NS = 10
#: Bound of the wait for one op's ``done`` (the largest op of the ViT build takes about 20 000).
DONE_TIMEOUT_CYCLES = 200_000

SMALL = dict(lanes=4, tokens=7, dim=12, heads=2, ffn=10)
# The ViT build packs lane pairs onto 27x18 (DSP48E2) multipliers, so that the packed MAC
# structure is checked end to end too; the small build is the unpacked ECP5 default.
VIT = dict(lanes=8, tokens=17, dim=64, heads=4, ffn=128, packing=True)


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def _geometry(params):
    """The kernel geometry of a JSON-able ``params`` (``packing=True`` selects DSP48E2 ports).

    The testbenches need only the geometry (layouts, memory map, cycle model); the hardware is
    built once, by the pytest runner, to be emitted."""
    from gen.hw.attention import AttentionGeometry
    from gen.hw.packing import XILINX_DSP48E2
    params = dict(params)
    if params.get("packing") is True:
        params["ports"] = XILINX_DSP48E2
    return AttentionGeometry(**params)


def _kernel(params):
    from gen.hw.attention import SparseAttentionKernel
    return SparseAttentionKernel(_geometry(params))


class TB:
    """Clock, reset and the kernel's streams through `verif.streams`, random from
    ``ACCELGEN_SEED``: sources with random gaps on ``load``, ``desc`` and ``rd_addr`` (garbage
    on their payloads while ``valid`` is 0), a sink with random back-pressure and a protocol
    monitor on ``rd_data``. Every wait is bounded (the transactors' ``timeout_cycles``)."""

    def __init__(self, dut, geometry, seed=0, gap=0.3, ready=0.6):
        self.dut, self.geometry = dut, geometry
        log_seed(dut)
        start_clock(dut.clk, CLOCK_NS)
        self.sources = {name: StreamSource(StreamBus(dut, name), dut.clk, gap_probability=gap,
                                           rng=seeds.rng(f"attention {seed} {name}"),
                                           idle="random")
                        for name in ("load", "desc", "rd_addr")}
        self.sink = StreamSink(StreamBus(dut, "rd_data"), dut.clk, ready_probability=ready,
                               rng=seeds.rng(f"attention {seed} rd_data"))
        self.monitor = StreamMonitor(StreamBus(dut, "rd_data"), dut.clk)

    async def reset(self):
        await reset(self.dut.clk, self.dut.rst, 3)
        await RisingEdge(self.dut.clk)

    async def load(self, beats):
        from gen.hw.attention_layout import pack_fields
        layout = self.geometry.load_layout
        await self.sources["load"].send(
            [pack_fields(layout, {"target": t, "addr": a, "data": d}) for t, a, d in beats])

    async def load_matrix(self, region, x):
        from gen.hw.attention import TARGET_AMEM
        from gen.hw.attention_layout import pack_activation_words
        base, _, stride = self.geometry.amem_map[region]
        words = pack_activation_words(x, self.geometry.lanes, stride)
        await self.load([(TARGET_AMEM, base + n, w) for n, w in enumerate(words)])

    async def run(self, fields, *, timeout_cycles=DONE_TIMEOUT_CYCLES):
        """Issue one descriptor, wait for ``done`` (bounded); returns the op's measured
        cycles (the increments of ``cycles``)."""
        from gen.hw.attention_layout import pack_fields
        dut = self.dut
        await ReadOnly()
        before = int(dut.cycles.value)
        await RisingEdge(dut.clk)
        # Waiting for done starts before the descriptor is offered: an op may finish within
        # a few cycles of being taken.
        done = cocotb.start_soon(wait_until(dut.clk, lambda: int(dut.done.value),
                                            timeout_cycles=timeout_cycles,
                                            what=f"done of op {fields.get('op')}"))
        await self.sources["desc"].send([pack_fields(self.geometry.descriptor_layout, fields)])
        await done
        cycles = int(dut.cycles.value) - before       # still in done's read-only phase
        await RisingEdge(dut.clk)
        return cycles

    async def read_words(self, addrs):
        """amem words at ``addrs``, in order; nothing more may arrive."""
        await self.sources["rd_addr"].send(addrs)
        got = await self.sink.recv(len(addrs))
        await self.sink.expect_quiet(16)
        return got

    async def read_matrix(self, region, rows, cols, signed=True):
        from gen.hw.attention_layout import unpack_activation_words
        base, _, stride = self.geometry.amem_map[region]
        words = await self.read_words([base + n for n in range(rows * stride)])
        return unpack_activation_words(words, rows, cols, self.geometry.lanes, signed, stride)


def _requant_for(rng, n, k, target=100):
    """Per-channel (bias, M, S) spreading outputs over INT8, plus a few extreme channels."""
    bias = rng.integers(-2 ** 12, 2 ** 12, n)
    mult = rng.integers(2 ** 29, 2 ** 31, n)
    typical = max(1.0, np.sqrt(k) * 2 ** 13)
    shift = np.clip(np.round(np.log2(typical * 2 ** 30 / target)).astype(np.int64) +
                    rng.integers(-2, 3, n), 1, 62)
    for ch in rng.permutation(n)[:1]:
        mult[ch], shift[ch] = 2 ** 31 - 1, 31          # saturates
    return bias, mult, shift


def random_layer(rng, geometry, kind):
    """Random dense matrices (zeros where pruned) for the pattern ``kind``."""
    from gen.hw.attention import MATRICES
    b, heads = geometry.lanes, geometry.heads
    d = geometry.dim // heads
    mats = {}
    for name in MATRICES:
        k, n = geometry.matrix_shape(name)
        if kind == "extreme":
            w = rng.choice([-128, 127], (k, n))
        else:
            w = rng.integers(-128, 128, (k, n))
        bias, mult, shift = _requant_for(rng, n, k)
        if kind == "rows":
            w[rng.random(k) < 0.5] = 0
        elif kind == "blocks":
            for c in range(-(-n // b)):
                w[rng.random(k) < 0.6, c * b:(c + 1) * b] = 0
        elif kind == "random":
            w[rng.random(k) < 0.3] = 0
            for c in range(-(-n // b)):
                w[rng.random(k) < 0.4, c * b:(c + 1) * b] = 0
            w[rng.random((k, n)) < 0.2] = 0
        elif kind == "ultra":
            # About 1 word in 12 kept: blocks of 0, 1, 2 words side by side.
            for c in range(-(-n // b)):
                w[rng.random(k) < 0.92, c * b:(c + 1) * b] = 0
        elif kind == "empty" and name in ("k", "fc1"):
            w[:] = 0
        mats[name] = {"w": w, "bias": bias, "mult": mult, "shift": shift}
    if kind in ("heads", "random", "blocks"):
        # Pruned Q/K features shared per head with bias 0; head 0 loses all of them.
        for h in range(heads):
            gone = [f for f in range(h * d, (h + 1) * d) if h == 0 or rng.random() < 0.4]
            for name in ("q", "k"):
                mats[name]["w"][:, gone] = 0
                mats[name]["bias"][gone] = 0
    if kind == "extreme":
        for name in MATRICES:
            mats[name]["bias"][:] = 0
    return mats


def _compress(geometry, mats):
    from gen.hw.attention_layout import BlockSparse
    return {name: BlockSparse.from_dense(m["w"], geometry.lanes, m["bias"], m["mult"], m["shift"])
            for name, m in mats.items()}


def _torch_mats(mats):
    return {name: {key: torch.from_numpy(np.asarray(v, dtype=np.int64)) for key, v in m.items()}
            for name, m in mats.items()}


async def run_layer(tb, mats, x, x2, score_rq, ctx_rq, tokens, compressed=None, check_all=True,
                    kept_features=None):
    """Load, run both programs, read back and compare with the golden; returns the program
    and per-op cycles."""
    from gen.hw.attention_layout import layer_program
    geometry = tb.geometry
    compressed = compressed or _compress(geometry, mats)
    prog = layer_program(geometry, compressed, tokens=tokens, score_requant=score_rq,
                         context_requant=ctx_rq, kept_features=kept_features)
    await tb.load(prog.loads)
    await tb.load_matrix("x", x)
    cycles = []
    for fields in prog.attention:
        cycles.append(await tb.run(fields))
    await tb.load_matrix("x2", x2)
    for fields in prog.ffn:
        cycles.append(await tb.run(fields))

    # The golden sees the test's own dense matrices; only the trained model's come from
    # CompressedMatrix.to_dense (gen.sparse.format, not the code under test here).
    dense = mats or {name: {"w": c.to_dense(), "bias": c.bias, "mult": c.mult,
                            "shift": c.shift} for name, c in compressed.items()}
    ref = golden.layer(torch.from_numpy(x), torch.from_numpy(x2), _torch_mats(dense),
                       geometry.heads, score_rq, ctx_rq)
    t, dim, ffn = tokens, geometry.dim, geometry.ffn
    last = geometry.heads - 1
    # In op order, so that the first mismatch names the first wrong op. S and P hold the last
    # head's; the others are checked through O.
    checks = [("q", ref["q"], t, dim, True), ("kt", ref["k"].T, dim, t, True),
              ("v", ref["v"], t, dim, True), ("s", ref["s"][last], t, t, True),
              ("p", ref["p"][last], t, t, False), ("o", ref["o"], t, dim, True),
              ("z", ref["z"], t, dim, True), ("h", ref["h"], t, ffn, True),
              ("f", ref["f"], t, dim, True)]
    for region, want, rows, cols, signed in checks:
        if not check_all and region not in ("o", "z", "f"):
            continue
        got = await tb.read_matrix(region, rows, cols, signed)
        want = want.numpy()
        bad = np.argwhere(got != want)
        assert len(bad) == 0, (f"{region}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
                               f"got {got[tuple(bad[0])]}, expected {want[tuple(bad[0])]} "
                               f"({seeds.describe()})")
    return prog, cycles


def _check_cycles(prog, cycles, where):
    for index, measured in enumerate(cycles):
        model = prog.op_cycles(index)
        op = (prog.attention + prog.ffn)[index]
        assert measured == model, (f"{where}: op {index} ({op['op']}) took {measured} cycles, "
                                   f"the model says {model} ({seeds.describe()})")


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def random_sparsity_patterns(dut):
    params = _params()
    geometry = _geometry(params)
    tb = TB(dut, geometry, seed=1)
    await tb.reset()
    rng = seeds.np_rng("attention random patterns")
    t, dim = geometry.tokens, geometry.dim
    d = dim // geometry.heads
    score_rq = (int(rng.integers(2 ** 29, 2 ** 31)),
                int(np.round(np.log2(d * 6000 * 2 ** 30 / 60))))
    ctx_rq = (int(rng.integers(2 ** 29, 2 ** 31)), int(np.round(np.log2(12800 * 2 ** 30 / 100))))
    for kind, tokens in [("dense", t), ("rows", t), ("blocks", t), ("random", t - 2),
                         ("ultra", t), ("empty", t), ("heads", t), ("extreme", t),
                         ("random", 1)]:
        mats = random_layer(rng, geometry, kind)
        if kind == "extreme":
            x = rng.choice([-128, 127], (tokens, dim))
            x2 = rng.choice([-128, 127], (tokens, dim))
        else:
            x = rng.integers(-128, 128, (tokens, dim))
            x2 = rng.integers(-128, 128, (tokens, dim))
        prog, cycles = await run_layer(tb, mats, x, x2, score_rq, ctx_rq, tokens)
        _check_cycles(prog, cycles, f"{kind}, T={tokens}")
        dut._log.info(f"{kind} T={tokens}: {sum(cycles)} cycles, model {prog.cycles()}")
    tb.monitor.check_valid_independent()


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def extreme_back_pressure(dut):
    """A read stream that is almost never ready and long gaps on every input stream."""
    params = _params()
    geometry = _geometry(params)
    tb = TB(dut, geometry, seed=2, gap=0.8, ready=0.05)
    await tb.reset()
    rng = seeds.np_rng("attention back-pressure")
    mats = random_layer(rng, geometry, "random")
    t, dim = geometry.tokens, geometry.dim
    x, x2 = rng.integers(-128, 128, (t, dim)), rng.integers(-128, 128, (t, dim))
    prog, cycles = await run_layer(tb, mats, x, x2, (2 ** 30, 22), (2 ** 30, 38), t,
                                   check_all=True)
    _check_cycles(prog, cycles, "back-pressure")
    # Ops with nothing to do only pulse done (the op's start and completion registers); they
    # must not write anything.
    from gen.cycles import ATTENTION_FINISH_CYCLES
    z = await tb.read_matrix("z", t, dim)
    z_op = dict(prog.attention[-1])
    for empty in (dict(z_op, rows=0), dict(z_op, c_hi=0), dict(op=2, rows=t, n_hi=0,
                                                               o_base=z_op["o_base"])):
        took = await tb.run(empty)
        assert took <= ATTENTION_FINISH_CYCLES, f"an empty op took {took} cycles"
    assert np.array_equal(await tb.read_matrix("z", t, dim), z), "an empty op wrote"
    tb.monitor.check_valid_independent()


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def trained_vit_layer(dut):
    """The pruned, quantized encoder layers of the trained tiny ViT on digit images."""
    from gen.sparse.quantize import load_quantized_layer
    params = _params()
    geometry = _geometry(params)
    tb = TB(dut, geometry, seed=3, gap=0.1, ready=0.8)
    await tb.reset()
    folder = os.environ["VIT_DIR"]
    io = np.load(os.path.join(folder, "layer_io.npz"))
    for index in range(int(io["layers"])):
        layer = load_quantized_layer(folder, index, block=geometry.lanes)
        for image in range(int(io["images"])):
            x = io[f"x_{index}_{image}"].astype(np.int64)
            x2 = io[f"x2_{index}_{image}"].astype(np.int64)
            prog, cycles = await run_layer(
                tb, None, x, x2, (int(layer.scores_mult), int(layer.scores_shift)),
                (int(layer.context_mult), int(layer.context_shift)), layer.tokens,
                compressed=layer.matrices(), check_all=(image == 0),
                kept_features=[[int(f) for f in feats] for feats in layer.kept_features])
            _check_cycles(prog, cycles, f"layer {index}, image {image}")
            dut._log.info(f"layer {index} image {image}: {sum(cycles)} cycles "
                          f"(model {prog.cycles()}), words {prog.words}")
    tb.monitor.check_valid_independent()


# -- pytest runners ---------------------------------------------------------------------------

def test_attention_random():
    from verif.sim import run_cocotb
    run_cocotb(_kernel(SMALL), "sparse_attention", "verif.test_attention", SMALL,
               testcase=["random_sparsity_patterns", "extreme_back_pressure"])


def test_attention_trained_vit(tmp_path):
    from gen.sparse.prune import load_or_prune
    from gen.sparse.quantize import quantize_model
    from gen.sparse.vit import load_digits_split
    from verif.sim import run_cocotb
    torch.set_num_threads(1)
    # The quick-trained, quick-pruned model from the shared cache (trained on first use).
    _, _, result = load_or_prune(seed=0, quick=True)
    data = load_digits_split(0)
    qvit = quantize_model(result.model, data.train[0])
    qvit.save(tmp_path)
    arrays = {"layers": len(qvit.layers), "images": 2}
    for index, layer in enumerate(qvit.layers):
        dense = {name: {"w": cm.to_dense(), "bias": cm.bias, "mult": cm.mult,
                        "shift": cm.shift} for name, cm in layer.matrices().items()}
        for image in range(arrays["images"]):
            io = qvit.layer_io(data.test[0][image], index)
            arrays[f"x_{index}_{image}"] = io["X"]
            arrays[f"x2_{index}_{image}"] = io["X2"]
            # Both integer references of spec section 4 must agree: this golden (dense,
            # every feature) and gen.sparse.quantize's (kept features only).
            ref = golden.layer(torch.from_numpy(io["X"].astype(np.int64)),
                               torch.from_numpy(io["X2"].astype(np.int64)), _torch_mats(dense),
                               layer.heads, (int(layer.scores_mult), int(layer.scores_shift)),
                               (int(layer.context_mult), int(layer.context_shift)))
            for key in ("z", "f"):
                assert np.array_equal(ref[key].numpy(), io["trace"][key.upper()]), (
                    f"layer {index}: golden_attention and gen.sparse.quantize disagree on {key}")
    np.savez(tmp_path / "layer_io.npz", **arrays)
    geometry = _geometry(VIT)
    assert geometry.packing and geometry.multipliers == 4 + 4 + 1
    kernel = _kernel(VIT)
    assert kernel.geometry == geometry
    run_cocotb(kernel, "sparse_attention", "verif.test_attention", VIT,
               testcase="trained_vit_layer", extra_env={"VIT_DIR": str(tmp_path)})


def test_layout_refuses_patterns_the_kernel_was_not_generated_for():
    from gen.errors import UserError
    from gen.hw.attention_layout import BlockSparse, layer_program
    rng = seeds.np_rng("attention layout refusals")
    small = dict(SMALL, capacity={"q": 10})
    geometry = _geometry(small)
    mats = random_layer(rng, geometry, "dense")
    comp = _compress(geometry, mats)
    with pytest.raises(UserError, match="q keeps .* weight words, the kernel holds 10"):
        layer_program(geometry, comp, tokens=7, score_requant=(1, 1), context_requant=(1, 1))
    mats["q"]["w"][:] = 0
    mats["q"]["w"][:2, :] = 1       # 2 rows x 3 blocks = 6 words: fits
    comp = _compress(geometry, mats)
    prog = layer_program(geometry, comp, tokens=7, score_requant=(1, 1), context_requant=(1, 1))
    assert prog.words["q"] == 6
    wrong_block = dict(comp, k=BlockSparse.from_dense(mats["k"]["w"], 2, mats["k"]["bias"],
                                                      mats["k"]["mult"], mats["k"]["shift"]))
    with pytest.raises(UserError, match="block width 2"):
        layer_program(geometry, wrong_block, tokens=7, score_requant=(1, 1), context_requant=(1, 1))
    wrong_shape = dict(comp, v=BlockSparse.from_dense(np.ones((12, 8)), 4, np.zeros(8),
                                                      np.ones(8), np.ones(8)))
    with pytest.raises(UserError, match="shape"):
        layer_program(geometry, wrong_shape, tokens=7, score_requant=(1, 1), context_requant=(1, 1))
    with pytest.raises(UserError, match="tokens"):
        layer_program(geometry, comp, tokens=8, score_requant=(1, 1), context_requant=(1, 1))


def test_kernel_refuses_bad_parameters():
    from gen.errors import UserError
    from gen.hw.attention import SparseAttentionKernel
    for bad, match in [(dict(lanes=1), "lanes"), (dict(heads=5), "multiple of heads"),
                       (dict(capacity={"q": 10 ** 6}), "capacity of q"),
                       (dict(capacity={"qq": 1}), "unknown matrices"),
                       (dict(ffn=2 ** 17), "overflow")]:
        # The geometry validates; the kernel refuses through it (and is not left unused).
        with pytest.raises(UserError, match=match):
            _geometry(dict(SMALL, **bad))
        with pytest.raises(UserError, match=match):
            SparseAttentionKernel(**dict(SMALL, **bad))


def test_geometry_without_hardware():
    """The geometry alone gives the memory map, the multipliers and the cycle model."""
    import dataclasses

    from gen.hw.attention import AttentionGeometry
    geometry = _geometry(SMALL)
    auto = AttentionGeometry(**SMALL, packing="auto")      # ECP5: resolves to unpacked
    assert geometry == auto and hash(geometry) == hash(auto) and not auto.packing
    assert geometry.multipliers == 4 + 4 + 1 and _geometry(VIT).multipliers == 4 + 4 + 1
    for regions, depth in ((geometry.wmem_map, geometry.wmem_depth),
                           (geometry.pmem_map, geometry.pmem_depth),
                           (geometry.qmem_map, geometry.qmem_depth)):
        end = 0
        for base, size in sorted(regions.values()):
            assert base == end, regions
            end += size
        assert end == depth
    end = 0
    for base, rows, stride in sorted(geometry.amem_map.values()):
        assert base == end
        end += rows * stride
    assert end == geometry.amem_depth
    with pytest.raises(dataclasses.FrozenInstanceError):
        geometry.lanes = 8
    with pytest.raises(TypeError):
        geometry.capacity["q"] = 1
    # One group of 1 beat, all lanes written: max(1, 3) + 2 (the first pointer's address
    # and data registered) + 11 operand stages (two 4-cycle banked reads and 3 registers) + 4
    # (MAC) + (4 + 2 + 3 + 11 + 1) (4 lanes; the drain's copy and output registers and 3 more
    # while qmem's 4-cycle banked read; the requantizer; the write) + 2 (the op's register, then
    # the start's) + 3;
    # a softmax op of 7 rows of 7 scores, rows overlapped: the first row's 3 * 7 + 31, then a
    # row every max(7 + 8, 19) = 19 cycles, + 2 (start) + 10 (its 4-cycle banked reads among
    # them).
    assert geometry.mac_op_cycles([1]) == 3 + 2 + 11 + 4 + 21 + 2 + 3
    assert geometry.softmax_op_cycles(7, 7) == (3 * 7 + 31) + 6 * 19 + 2 + 10
