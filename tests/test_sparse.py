"""Tiny ViT pruning, compressed format, INT8 quantization (gen/sparse, docs/sparse_attention.md).

The model tests share one quick pipeline (few epochs, coarse search) cached in a temporary folder.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gen.errors import UserError
from gen.numeric import requantize as np_requantize
from gen.sparse.format import CompressedMatrix
from gen.numeric import EXP2_LUT, int_softmax
from gen.numeric import requantize_torch as requantize
from gen.sparse.quantize import load_quantized_layer, quantize_model

REPO = Path(__file__).resolve().parent.parent


# -- compressed format --------------------------------------------------------------------------

def _random_sparse(rng, k, n, block, row_p=0.3, word_p=0.3):
    w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    blocks = -(-n // block)
    words = rng.random((k, blocks)) < word_p
    w[np.repeat(words, block, axis=1)[:, :n]] = 0
    w[rng.random(k) < row_p] = 0
    return w


@pytest.mark.parametrize("k,n,block", [(64, 64, 8), (13, 21, 8), (5, 7, 8), (1, 1, 1),
                                       (128, 64, 4), (9, 30, 16)])
def test_format_round_trip_is_exact(k, n, block, tmp_path):
    rng = np.random.default_rng(k * 1000 + n + block)
    cases = [_random_sparse(rng, k, n, block),
             rng.integers(1, 128, size=(k, n)).astype(np.int8),      # all rows and words kept
             np.zeros((k, n), np.int8)]                              # everything pruned
    extremes = np.full((k, n), -128, np.int8)
    extremes[::2] = 127
    cases.append(extremes)
    for i, w in enumerate(cases):
        bias = rng.integers(-2 ** 31, 2 ** 31, size=n).astype(np.int32)
        mult = rng.integers(0, 2 ** 31, size=n)
        shift = rng.integers(1, 63, size=n)
        cm = CompressedMatrix.from_dense(w, block, bias=bias, mult=mult, shift=shift)
        assert np.array_equal(cm.to_dense(), w)
        assert cm.blocks == math.ceil(n / block)
        nonzero_words = np.zeros((k, cm.blocks * block), bool)
        nonzero_words[:, :n] = w != 0
        assert cm.words == int(nonzero_words.reshape(k, cm.blocks, block).any(2).sum())
        for c in range(cm.blocks):
            assert set(cm.rows[c].tolist()) <= set(cm.kept_rows.tolist())
            assert cm.values[c].shape == (len(cm.rows[c]), block)
        assert CompressedMatrix.from_dense(cm.to_dense(), block, kept_rows=cm.kept_rows,
                                           bias=bias, mult=mult, shift=shift) == cm
        path = cm.save(tmp_path / f"m{i}.npz", "m", 0, "q", "abc")
        back = CompressedMatrix.load(path, expect={"shape": [k, n], "block": block,
                                                  "model_sha256": "abc"})
        assert back == cm and np.array_equal(back.to_dense(), w)
        f = cm.footprint()
        assert f["dense"] == k * n and f["weights"] == cm.words * block
        assert f["total"] == f["weights"] + f["indices"] + f["pointers"]


def test_kept_rows_keep_all_zero_rows_and_refuse_lost_rows():
    w = np.zeros((4, 8), np.int8)
    w[1, 3] = 5
    cm = CompressedMatrix.from_dense(w, 8, kept_rows=[0, 1, 3])
    assert cm.kept_rows.tolist() == [0, 1, 3] and cm.rows[0].tolist() == [1]
    with pytest.raises(UserError, match="kept_rows"):
        CompressedMatrix.from_dense(w, 8, kept_rows=[0, 3])


def test_bad_header_raises_user_error_naming_the_field(tmp_path):
    w = _random_sparse(np.random.default_rng(1), 16, 24, 8)
    path = CompressedMatrix.from_dense(w, 8).save(tmp_path / "w.npz", "tinyvit", 1, "fc1", "aa")
    for field, value in (("shape", [16, 32]), ("block", 4), ("model_sha256", "bb"),
                         ("matrix", "fc2"), ("layer", 0), ("model", "other")):
        with pytest.raises(UserError, match=f"'{field}'"):
            CompressedMatrix.load(path, expect={field: value})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a compressed matrix"):
        CompressedMatrix.load(tmp_path / "junk.npz")


# -- integer kernels ----------------------------------------------------------------------------

EXP2_LUT_SPEC = [32768, 31379, 30048, 28774, 27554, 26386, 25268, 24196, 23170, 22188, 21247,
                 20347, 19484, 18658, 17867, 17109]


def _softmax_rows(rng):
    rows = [torch.tensor([v]) for v in (-128, 0, 127)]                    # length 1
    rows += [torch.full((n,), v) for n in (2, 17, 64) for v in (-128, 0, 127)]  # all equal
    rows += [torch.tensor([127] + [-128] * 16), torch.tensor([-128, 127] * 8)]
    rows += [torch.from_numpy(rng.integers(-128, 128, size=n)) for n in (1, 2, 3, 8, 17, 33)
             for _ in range(20)]
    rows += [torch.from_numpy(rng.integers(100, 128, size=17)) for _ in range(20)]
    return rows


def test_int_softmax_follows_the_spec_and_bounds_float_error():
    assert list(EXP2_LUT) == EXP2_LUT_SPEC
    rng = np.random.default_rng(5)
    for row in _softmax_rows(rng):
        p = int_softmax(row)
        assert p.dtype == torch.int64 and p.shape == row.shape
        assert int(p.min()) >= 0 and int(p.max()) <= 127
        # Float reference: base-2 softmax of s/16, i.e. the natural softmax of the float scores.
        # Bound (in units of 1/128): table rounding 5/4 per term, r's floor, final rounding.
        ref = 128 * torch.softmax(row.double() / 16 * math.log(2), dim=0)
        n = row.numel()
        assert (p.double() - ref).abs().max() <= max(1.0, 0.5 + 1 / 512 + 5 * (n + 1) / 1024)
    assert int_softmax(torch.tensor([5])).tolist() == [127]           # p = 1 saturates at 127
    assert int_softmax(torch.tensor([3, 3])).tolist() == [64, 64]
    batch = torch.from_numpy(rng.integers(-128, 128, size=(3, 4, 17)))
    assert torch.equal(int_softmax(batch)[1, 2], int_softmax(batch[1, 2]))


def _golden_softmax():
    path = REPO / "verif" / "golden_softmax.py"
    spec = importlib.util.spec_from_file_location("golden_softmax_for_sparse_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.int_softmax


def test_int_softmax_agrees_with_the_golden_model():
    golden = _golden_softmax()
    for row in _softmax_rows(np.random.default_rng(7)):
        expected = torch.as_tensor(golden(row.clone())).to(torch.int64)
        assert torch.equal(int_softmax(row), expected), row.tolist()


def test_requantize_is_the_contract():
    rng = np.random.default_rng(3)
    acc = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 500), [-(2 ** 31), 2 ** 31 - 1, 0, -1]])
    mult = rng.integers(0, 2 ** 31, acc.size)
    shift = rng.integers(1, 63, acc.size)
    mult[-4:], shift[-4:] = 2 ** 31 - 1, 62
    assert requantize(torch.from_numpy(acc), torch.from_numpy(mult),
                      torch.from_numpy(shift)).tolist() == np_requantize(acc, mult, shift).tolist()


# -- the quick pipeline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from gen.sparse.prune import load_or_prune
    from gen.sparse.vit import load_digits_split
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("models")
    float_model, info, result = load_or_prune(0, quick=True, cache_dir=cache)
    data = load_digits_split(0)
    qmodel = quantize_model(result.model, data.train[0][:400], block=8)
    return {"cache": cache, "float": float_model, "info": info, "result": result,
            "data": data, "q": qmodel}


def test_pruned_weights_restore_to_the_masked_dense_weight(pipeline):
    qmodel, model = pipeline["q"], pipeline["result"].model
    for layer, fl in zip(qmodel.layers, model.layers):
        for name, cm in layer.matrices().items():
            lin = getattr(fl, name)
            scale = torch.from_numpy(layer.weight_scales[name])
            expected = torch.clamp(torch.round(lin.effective_weight().double() / scale), -127, 127)
            dense = cm.to_dense()
            assert np.array_equal(dense, expected.numpy().astype(np.int8)), name
            mask = lin.mask.numpy()
            assert not dense[mask == 0].any()
            dropped = np.setdiff1d(np.arange(cm.shape[0]), cm.kept_rows)
            assert not dense[dropped].any()
            assert np.array_equal(np.flatnonzero(mask.any(1)), cm.kept_rows)


def test_pruning_reduces_macs_and_footprint(pipeline):
    from gen.sparse.cli import int8_stats
    from gen.sparse.prune import mask_stats
    result = pipeline["result"]
    dense = mask_stats(pipeline["float"], 8)
    assert dense["sparsity"] == 0 and dense["dense_footprint"] == 2 * (4 * 64 * 64 + 2 * 64 * 128)
    pruned = result.stats["columns"]
    assert pruned["footprint"] < dense["footprint"]
    assert pruned["footprint"] < pruned["dense_footprint"]
    assert pruned["sparsity"] > 0.1
    stats = int8_stats(pipeline["q"])
    assert stats["footprint"] <= pruned["footprint"] and stats["sparsity"] >= pruned["sparsity"]
    # The search never accepts a state below the tolerance on the validation set.
    ref = result.accuracy["float"]["val"]
    assert all(h["val"] >= ref - result.settings.tolerance for h in result.history if h["accepted"])
    assert result.accuracy["columns"]["val"] >= ref - result.settings.tolerance


def test_quantized_parameters_obey_the_contract(pipeline):
    for layer in pipeline["q"].layers:
        for name, cm in layer.matrices().items():
            assert cm.bias.dtype == np.int32
            assert ((cm.mult >= 0) & (cm.mult < 2 ** 31)).all()
            assert ((cm.shift >= 1) & (cm.shift <= 62)).all()
            dense = cm.to_dense().astype(np.int64)
            assert dense.min() >= -127 and dense.max() <= 127
            bound = cm.shape[0] * 2 ** 14 + np.abs(cm.bias.astype(np.int64))
            assert bound.max() < 2 ** 31, name
        for m, s in ((layer.scores_mult, layer.scores_shift),
                     (layer.context_mult, layer.context_shift)):
            assert 0 <= m < 2 ** 31 and 1 <= s <= 62
        # Scores mean s/16 log2 units of q.k/sqrt(d).
        real = layer.scales["q"] * layer.scales["k"] * 16 / math.log(2) / math.sqrt(16)
        assert layer.scores_mult / 2 ** layer.scores_shift == pytest.approx(real, rel=1e-6)
        # Pruned Q/K features: shared per head, zero columns and zero bias in Wq and Wk.
        wq, wk = layer.q.to_dense(), layer.k.to_dense()
        for h, kept in enumerate(layer.kept_features):
            assert len(kept) >= 1 and np.all(np.diff(kept) > 0)
            pruned = np.setdiff1d(np.arange(16), kept) + 16 * h
            for cm, w in ((layer.q, wq), (layer.k, wk)):
                assert not w[:, pruned].any() and not cm.bias[pruned].any()


def test_integer_inference_is_deterministic_and_matches_the_contract(pipeline, tmp_path):
    from gen.numeric import gemm_int8
    from gen.sparse.vit import evaluate
    qmodel, data = pipeline["q"], pipeline["data"]
    images = data.test[0][:64]
    assert torch.equal(qmodel(images), qmodel(images))
    accuracy = evaluate(qmodel.model, data.test, forward=qmodel)
    assert accuracy >= pipeline["result"].accuracy["columns"]["test"] - 5

    io = qmodel.layer_io(data.test[0][3], 1)
    assert io["X"].shape == (17, 64) and io["X"].dtype == np.int8 and io["X2"].dtype == np.int8
    tr = io["trace"]
    layer = qmodel.layers[1]
    # Cross-check the linears against the numpy contract (a separate implementation).
    for src, dst, name in (("X", "Q", "q"), ("X", "V", "v"), ("O", "Z", "o"), ("H", "F", "fc2")):
        cm = getattr(layer, name)
        assert np.array_equal(gemm_int8(tr[src], cm.to_dense(), cm.bias, cm.mult, cm.shift),
                              tr[dst]), name
    h = np.maximum(gemm_int8(io["X2"], layer.fc1.to_dense(), layer.fc1.bias, layer.fc1.mult,
                             layer.fc1.shift), 0)
    assert np.array_equal(h, tr["H"])
    for hd, kept in enumerate(layer.kept_features):
        pruned = np.setdiff1d(np.arange(16), kept) + 16 * hd
        assert not tr["Q"][:, pruned].any() and not tr["K"][:, pruned].any()
    assert tr["P"].min() >= 0 and tr["P"].max() <= 127

    # What was saved loads back (header checked against the model) and computes the same.
    qmodel.save(tmp_path)
    back = load_quantized_layer(tmp_path, 1, model_sha256=qmodel.sha256, block=8)
    again = back.attention(torch.from_numpy(io["X"]))
    assert all(np.array_equal(again[k].numpy(), tr[k]) for k in ("Q", "K", "V", "S", "P", "O", "Z"))
    with pytest.raises(UserError, match="model_sha256"):
        load_quantized_layer(tmp_path, 1, model_sha256="0" * 64)
    with pytest.raises(UserError, match="'block'"):
        load_quantized_layer(tmp_path, 1, block=16)


def test_cli_writes_report_npz_and_plot(pipeline, tmp_path, capsys):
    from gen.sparse.cli import main
    out = tmp_path / "prune"
    assert main(["--quick", "--seed", "0", "--out", str(out), "--cache",
                 str(pipeline["cache"])]) == 0
    text = capsys.readouterr().out
    assert "INT8" in text and "rows+columns" in text
    report = json.loads((out / "report.json").read_text())
    assert [r["stage"] for r in report["stages"]] == ["float", "rows", "rows+columns", "INT8"]
    assert (out / "prune.png").stat().st_size > 0
    assert len(list(out.glob("layer*_*.npz"))) == 12
    assert main(["--quick", "--block", "0", "--out", str(out)]) == 2


def test_integer_layer_agrees_with_the_golden_attention(pipeline, monkeypatch):
    """The exported layer through verif/golden_attention.py (written from the spec alone)."""
    monkeypatch.syspath_prepend(str(REPO / "verif"))
    spec = importlib.util.spec_from_file_location("golden_attention_for_sparse_test",
                                                  REPO / "verif" / "golden_attention.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    qmodel, data = pipeline["q"], pipeline["data"]
    for index, layer in enumerate(qmodel.layers):
        mats = {name: {"w": cm.to_dense(), "bias": cm.bias, "mult": cm.mult, "shift": cm.shift}
                for name, cm in layer.matrices().items()}
        for image in data.test[0][:3]:
            io = qmodel.layer_io(image, index)
            out = golden.layer(io["X"], io["X2"], mats, layer.heads,
                               (layer.scores_mult, layer.scores_shift),
                               (layer.context_mult, layer.context_shift))
            tr = io["trace"]
            for mine, theirs in (("Q", "q"), ("K", "k"), ("V", "v"), ("O", "o"), ("Z", "z"),
                                 ("H", "h"), ("F", "f")):
                assert np.array_equal(tr[mine], out[theirs].numpy()), mine
            for h in range(layer.heads):
                assert np.array_equal(tr["S"][h], out["s"][h].numpy())
                assert np.array_equal(tr["P"][h], out["p"][h].numpy())
