"""The all-integer ViT, generator side (gen/vit/model.py, gen/numeric.py; docs/vit.md 1-2).

The model tests share quick models (10 epochs, a coarse pruning search) trained into a temporary
folder once per module.
"""

import json
import math
import zipfile

import numpy as np
import pytest
import torch

from gen.errors import UserError
from gen.numeric import (LN_FRAC, LN_R, activation_table, apply_table, first_argmax,
                         int_layernorm, isqrt, quantize_layernorm, quantize_residual,
                         requantize_torch, residual_add)


# -- the integer functions (docs/vit.md section 1) ----------------------------------------------

def test_constants():
    assert (LN_R, LN_FRAC) == (30, 10)


def test_isqrt_is_the_exact_floor_root():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.integers(0, 2 ** 40, 20000), np.arange(0, 5000),
                        [2 ** 40, 2 ** 40 - 1]])
    roots = rng.integers(0, 2 ** 20 + 1, 2000)
    v = np.concatenate([v, roots ** 2, roots ** 2 - 1, roots ** 2 + 1, (roots + 1) ** 2 - 1])
    v = v[v >= 0]
    got = isqrt(torch.from_numpy(v)).tolist()
    assert got == [math.isqrt(int(x)) for x in v]
    with pytest.raises(ValueError):
        isqrt(torch.tensor([-1]))
    with pytest.raises(ValueError):
        isqrt(torch.tensor([2.0]))


def _ln_reference(x, ln):
    """docs/vit.md section 1.1 written out per row with Python integers."""
    out = []
    for row in x.tolist():
        d = len(row)
        s1, s2 = sum(row), sum(v * v for v in row)
        sigma = math.isqrt(d * s2 - s1 * s1)
        r = 2 ** 30 // sigma if sigma else 0
        y = []
        for i, v in enumerate(row):
            u = ((d * v - s1) * r + 2 ** 19) >> 20
            acc = (-u if ln["neg"][i] else u) + int(ln["bias"][i])
            m, s = int(ln["mult"][i]), int(ln["shift"][i])
            y.append(min(max((acc * m + (1 << (s - 1))) >> s, -128), 127))
        out.append(y)
    return out


def test_int_layernorm_is_the_contract_and_close_to_float():
    rng = np.random.default_rng(1)
    d = 64
    gamma = rng.normal(0, 1, d)
    gamma[:3] = [-0.7, 1e-4, -1e-4]             # negative, tiny (raised to 2^-8)
    beta = rng.normal(0, 0.3, d)
    s_y = 4.0 / 127
    ln = quantize_layernorm(gamma, beta, s_y)
    assert ln["neg"].dtype == np.uint8 and ln["bias"].dtype == np.int32
    assert ln["mult"].dtype == np.int64 and ln["shift"].dtype == np.int64
    assert ln["neg"][0] == 1 and ln["neg"][2] == 1 and ln["neg"][1] == 0
    x = rng.integers(-128, 128, (40, d))
    x[0] = 5                                      # sigma = 0: y = requant(bias)
    x[1] = np.where(np.arange(d) % 2, 127, -128)  # the extremes
    y = int_layernorm(torch.from_numpy(x), ln)
    assert y.tolist() == _ln_reference(x, ln)
    assert y[0].tolist() == requantize_torch(torch.from_numpy(ln["bias"].astype(np.int64)),
                                             torch.from_numpy(ln["mult"]),
                                             torch.from_numpy(ln["shift"])).tolist()
    xf = torch.from_numpy(x[2:]).double()
    g = np.where(np.abs(gamma) < 2 ** -8, np.sign(gamma + 1e-30) * 2 ** -8, gamma)
    ref = torch.nn.functional.layer_norm(xf, (d,), torch.from_numpy(g), torch.from_numpy(beta),
                                         eps=0.0)
    ref = torch.clamp(torch.round(ref / s_y), -128, 127)
    assert (y[2:].double() - ref).abs().max() <= 1


def test_layernorm_quantizer_refuses_a_bias_that_does_not_fit():
    with pytest.raises(ValueError, match="INT32"):
        quantize_layernorm([1e-6], [1e5], 0.01)
    with pytest.raises(ValueError):
        quantize_layernorm([1.0], [0.0], 0.0)


def test_residual_add():
    rng = np.random.default_rng(2)
    for s_a, s_b, s_y in [(0.01, 0.02, 0.025), (0.5, 0.001, 0.4), (1e-3, 1e-3, 1.0),
                          (0.3, 0.3, 0.01)]:
        r = quantize_residual(s_a, s_b, s_y)
        s = r["shift"]
        assert 1 <= s <= 31 and 0 <= r["ma"] < 2 ** 15 and 0 <= r["mb"] < 2 ** 15
        top = max(s_a, s_b) / s_y
        assert s == 31 or round(top * 2 ** (s + 1)) >= 2 ** 15        # the largest S
        a, b = rng.integers(-128, 128, 500), rng.integers(-128, 128, 500)
        y = residual_add(torch.from_numpy(a), torch.from_numpy(b), r)
        ref = [min(max((int(x) * r["ma"] + int(z) * r["mb"] + (1 << (s - 1))) >> s, -128), 127)
               for x, z in zip(a, b)]
        assert y.tolist() == ref
        exact = np.clip(np.round((a * s_a + b * s_b) / s_y), -128, 127)
        assert np.abs(y.numpy() - exact).max() <= 1
    with pytest.raises(ValueError):
        quantize_residual(1.0, 1.0, 1e-5)
    with pytest.raises(ValueError):
        residual_add(torch.tensor([1]), torch.tensor([1]), {"ma": 2 ** 15, "mb": 0, "shift": 3})


def test_activation_tables():
    relu = activation_table("relu", 0.05)
    assert relu.dtype == np.int8 and relu.shape == (256,)
    assert relu.tolist() == [max(v, 0) for v in range(-128, 128)]
    v = torch.arange(-128, 128)
    assert apply_table(v, relu).tolist() == torch.clamp(v, min=0).tolist()
    s_hp, s_h = 0.04, 0.035
    gelu = activation_table("gelu", s_hp, s_h)
    assert gelu.dtype == np.int8 and gelu.shape == (256,)
    for i, x in enumerate(range(-128, 128)):
        t = x * s_hp
        g = 0.5 * t * (1 + math.erf(t / math.sqrt(2)))
        assert gelu[i] == min(max(round(g / s_h), -128), 127)
    assert apply_table(torch.tensor([[-128, 0, 127]]), gelu).tolist() == \
        [[gelu[0], gelu[128], gelu[255]]]
    with pytest.raises(ValueError):
        activation_table("tanh", 0.1, 0.1)
    with pytest.raises(ValueError):
        activation_table("relu", 0.1, 0.2)
    with pytest.raises(ValueError):
        apply_table(torch.tensor([128]), gelu)


def test_first_argmax_takes_the_first_of_ties():
    logits = torch.tensor([[1, 3, 3, 0], [-5, -5, -5, -5], [0, 0, 0, 7]])
    assert first_argmax(logits).tolist() == [1, 0, 3]


# -- the model ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from gen.sparse.vit import load_or_train
    from gen.vit.model import prepared_int_vit
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("models")
    out = {"cache": cache}
    for pruned in (False, True):
        out["gelu", pruned] = prepared_int_vit(0, "gelu", pruned=pruned, quick=True,
                                               cache_dir=cache)
    out["float"] = load_or_train(0, cache, quick=True, activation="gelu", clamp_scores=True)
    return out


MATRIX_SHAPES = {"q": (64, 64), "k": (64, 64), "v": (64, 64), "o": (64, 64), "fc1": (64, 128),
                 "fc2": (128, 64)}


def _check_matrix(m, k, n):
    assert set(m) == {"w", "bias", "mult", "shift"}
    assert m["w"].dtype == np.int8 and m["w"].shape == (k, n)
    assert m["bias"].dtype == np.int32 and m["bias"].shape == (n,)
    assert m["mult"].dtype == np.int64 and m["mult"].shape == (n,)
    assert m["shift"].dtype == np.int64 and m["shift"].shape == (n,)
    assert m["w"].min() >= -127
    assert (np.abs(m["bias"].astype(np.int64)) + k * 2 ** 14 <= 2 ** 31 - 1).all()
    assert ((0 <= m["mult"]) & (m["mult"] < 2 ** 31)).all()
    assert ((1 <= m["shift"]) & (m["shift"] <= 62)).all()


def _check_ln(ln):
    assert set(ln) == {"neg", "bias", "mult", "shift"}
    assert ln["neg"].dtype == np.uint8 and ln["neg"].shape == (64,) and ln["neg"].max() <= 1
    assert ln["bias"].dtype == np.int32 and ln["bias"].shape == (64,)
    assert (np.abs(ln["bias"].astype(np.int64)) + 2 ** 15 <= 2 ** 31 - 1).all()
    assert ln["mult"].dtype == np.int64 and ((0 <= ln["mult"]) & (ln["mult"] < 2 ** 31)).all()
    assert ln["shift"].dtype == np.int64 and ((1 <= ln["shift"]) & (ln["shift"] <= 62)).all()


def _check_radd(r):
    assert set(r) == {"ma", "mb", "shift"}
    assert all(type(v) is int for v in r.values())
    assert 0 <= r["ma"] < 2 ** 15 and 0 <= r["mb"] < 2 ** 15 and 1 <= r["shift"] <= 31


@pytest.mark.parametrize("pruned", [False, True])
def test_arrays_are_the_documented_dict_within_the_contract(models, pruned):
    a = models["gelu", pruned].arrays()
    assert set(a) == {"dims", "embed", "cls", "pos", "layers", "add_f", "ln_f", "head", "scales"}
    assert a["dims"] == {"tokens": 17, "dim": 64, "heads": 4, "ffn": 128, "layers": 2,
                         "classes": 10, "patch_pixels": 4}
    _check_matrix(a["embed"], 4, 64)
    assert a["cls"].dtype == np.int8 and a["cls"].shape == (64,)
    assert a["pos"].dtype == np.int8 and a["pos"].shape == (17, 64)
    assert len(a["layers"]) == 2
    for layer in a["layers"]:
        assert set(layer) == {"add1", "ln1", "q", "k", "v", "o", "scores", "context",
                              "kept_features", "add2", "ln2", "fc1", "act", "fc2"}
        for name, (k, n) in MATRIX_SHAPES.items():
            _check_matrix(layer[name], k, n)
        _check_ln(layer["ln1"])
        _check_ln(layer["ln2"])
        _check_radd(layer["add1"])
        _check_radd(layer["add2"])
        for m, s in (layer["scores"], layer["context"]):
            assert 0 <= m < 2 ** 31 and 1 <= s <= 62
        assert layer["act"].dtype == np.int8 and layer["act"].shape == (256,)
        assert len(layer["kept_features"]) == 4
        for h, kept in enumerate(layer["kept_features"]):
            assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
            pruned_f = np.setdiff1d(np.arange(16), kept) + 16 * h
            for name in ("q", "k"):                   # pruned features are exactly zero
                assert not layer[name]["w"][:, pruned_f].any()
                assert not layer[name]["bias"][pruned_f].any()
            if not pruned:
                assert kept.tolist() == list(range(16))
    _check_radd(a["add_f"])
    _check_ln(a["ln_f"])
    _check_matrix(a["head"], 64, 10)
    assert all(isinstance(v, float) and v > 0 for v in a["scales"].values())
    assert a["scales"]["input"] == 1 / 16
    # arrays() is a copy: editing it does not change the model.
    a["cls"][:] = 0
    assert models["gelu", pruned].arrays()["cls"].any()


def test_pruned_model_has_zeros(models):
    a = models["gelu", True].arrays()
    zeros = sum(int((layer[name]["w"] == 0).sum()) for layer in a["layers"]
                for name in MATRIX_SHAPES)
    assert zeros > 0.2 * sum(k * n for k, n in MATRIX_SHAPES.values()) * 2


def test_forward_returns_every_documented_intermediate(models):
    from gen.vit.model import digits_pixels
    model = models["gelu", True]
    pixels, _ = digits_pixels(0, "test")
    out = model.forward(pixels[:3])
    assert out["logits"].shape == (3, 10) and out["classes"].shape == (3,)
    assert out["E"].shape == (3, 17, 64) and out["xL"].shape == (3, 17, 64)
    assert out["n"].shape == (3, 64)
    shapes = {"S": (3, 4, 17, 17), "P": (3, 4, 17, 17), "Hp": (3, 17, 128), "H": (3, 17, 128)}
    for layer in out["layers"]:
        assert set(layer) == set("x X Q K V S P O Z y X2 Hp H F".split())
        for k, v in layer.items():
            assert v.dtype == torch.int64 and v.shape == shapes.get(k, (3, 17, 64)), k
            assert v.min() >= -128 and v.max() <= 127
        assert layer["P"].min() >= 0
    table = torch.from_numpy(model.arrays()["layers"][0]["act"].astype(np.int64))
    assert torch.equal(out["layers"][0]["H"], table[out["layers"][0]["Hp"] + 128])
    for k in ("logits", "classes", "E", "xL", "n"):
        assert out[k].dtype == torch.int64
    assert torch.equal(out["classes"], first_argmax(out["logits"]))
    # The same answer one image at a time (no batch coupling) and from floats holding integers.
    single = model.forward(pixels[1:2].double())
    assert torch.equal(single["logits"][0], out["logits"][1])


def test_integer_accuracy_is_close_to_float(models):
    from gen.sparse.vit import evaluate, load_digits_split
    from gen.vit.model import digits_pixels
    pixels, labels = digits_pixels(0, "test")
    images, labels2 = load_digits_split(0).test
    assert torch.equal(labels, labels2) and torch.equal(pixels, torch.round(images * 16).long())
    assert pixels.min() >= 0 and pixels.max() <= 16 and pixels.shape[1:] == (8, 8)
    float_model, _ = models["float"]
    float_acc = evaluate(float_model, load_digits_split(0).test)
    for pruned in (False, True):
        model = models["gelu", pruned]
        int_acc = model.accuracy(pixels, labels)
        ref = model.meta["float_accuracy"]["test"]
        assert int_acc >= ref - 3.0, (pruned, int_acc, ref)
        assert int_acc >= 80.0
    assert models["gelu", False].meta["float_accuracy"]["test"] == pytest.approx(float_acc)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8), np.int64), r"shape"),
    (np.zeros((2, 8, 7), np.int64), r"shape"),
    (np.zeros((0, 8, 8), np.int64), r"shape"),
    (np.full((1, 8, 8), 17), r"0\.\.16"),
    (np.full((1, 8, 8), -1), r"0\.\.16"),
    (np.full((1, 8, 8), 0.5), r"integers"),
    (np.full((1, 8, 8), np.nan), r"integers"),
    (np.zeros((1, 8, 8), bool), r"dtype"),
    ("not pixels", r"pixels"),
])
def test_bad_pixels_raise_one_clear_line(models, bad, match):
    with pytest.raises(UserError, match=match) as info:
        models["gelu", True].forward(bad)
    assert "\n" not in str(info.value)


def test_model_file_round_trips(models, tmp_path):
    from gen.vit.model import IntViT, digits_pixels
    model = models["gelu", True]
    path = model.save(tmp_path / "vit.npz")
    back = IntViT.load(path, model_sha256=model.model_sha256, activation="gelu",
                       digest=model.digest())
    assert back.digest() == model.digest()
    assert back.model_sha256 == model.model_sha256 and back.meta == model.meta
    a, b = model.arrays(), back.arrays()
    assert b["layers"][1]["scores"] == a["layers"][1]["scores"]
    assert b["scales"] == a["scales"]
    pixels, _ = digits_pixels(0, "val")
    assert torch.equal(back.forward(pixels[:20])["logits"], model.forward(pixels[:20])["logits"])
    with zipfile.ZipFile(path) as z:            # plain arrays, no pickles
        assert all(n.endswith(".npy") for n in z.namelist())


def _rewrite(src, dst, edit_header=None, edit_arrays=None):
    with np.load(src, allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    header = json.loads(raw.pop("header").tobytes().decode())
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(raw)
    np.savez(dst, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **raw)
    return dst


@pytest.mark.parametrize("edit_header, edit_arrays, field", [
    (lambda h: h.update(format=99), None, "'format'"),
    (lambda h: h.update(model="something-else"), None, "'model'"),
    (lambda h: h.pop("model_sha256"), None, "'model_sha256'"),
    (lambda h: h["layers"][0]["add1"].update(shift=h["layers"][0]["add1"]["shift"] - 1), None,
     "'arrays_sha256'"),
    (lambda h: h["layers"][0]["add1"].update(ma=2 ** 15), None, r"layers\[0\]\.add1\.ma"),
    (lambda h: h["dims"].update(dim=32), None, "'dims'|dims"),
    (None, lambda a: a["layers.1.fc1.w"].__setitem__((0, 0), 1), "'arrays_sha256'"),
    (None, lambda a: a.update({"head.bias": a["head.bias"].astype(np.int64)}), r"head\.bias"),
    (None, lambda a: a.pop("layers.0.act"), "layers.0.act"),
])
def test_tampered_file_is_refused_naming_the_field(models, tmp_path, edit_header, edit_arrays,
                                                   field):
    from gen.vit.model import IntViT
    src = models["gelu", True].save(tmp_path / "good.npz")
    bad = _rewrite(src, tmp_path / "bad.npz", edit_header, edit_arrays)
    with pytest.raises(UserError, match=field):
        IntViT.load(bad)


def test_mismatching_or_damaged_file_is_refused(models, tmp_path):
    from gen.vit.model import IntViT
    model = models["gelu", True]
    path = model.save(tmp_path / "vit.npz")
    with pytest.raises(UserError, match="'model_sha256'"):
        IntViT.load(path, model_sha256="0" * 64)
    with pytest.raises(UserError, match="'activation'"):
        IntViT.load(path, activation="relu")
    with pytest.raises(UserError, match="'arrays_sha256'"):
        IntViT.load(path, digest=models["gelu", False].digest())
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match="damaged"):
        IntViT.load(tmp_path / "cut.npz")
    with pytest.raises(UserError, match="no such"):
        IntViT.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "noheader.npz", x=np.zeros(3))
    with pytest.raises(UserError, match="'header'"):
        IntViT.load(tmp_path / "noheader.npz")


def test_relu_model_and_options(models):
    from gen.sparse.vit import TinyViT, variant_suffix
    from gen.vit.model import IntViT, digits_pixels
    with pytest.raises(UserError, match="activation"):
        TinyViT("tanh")
    # The defaults keep the cache names of before the options.
    assert variant_suffix() == "" and variant_suffix("gelu") == "_gelu"
    assert variant_suffix("relu", True) == "_clampS"
    assert sorted(p.name for p in models["cache"].iterdir() if p.suffix == ".pt")[0] == \
        "vit_digits_seed0_e10_v2_gelu_clampS.pt"
    h = torch.linspace(-3, 3, 7)
    assert torch.equal(TinyViT("gelu").layers[0].act(h), torch.nn.functional.gelu(h))
    # An untrained ReLU model quantizes too: its table is max(v, 0) and s_h = s_hp.
    torch.manual_seed(0)
    model = IntViT.from_float(TinyViT("relu").eval(), digits_pixels(0, "train")[0][:200] / 16)
    a = model.arrays()
    for i, layer in enumerate(a["layers"]):
        assert layer["act"].tolist() == [max(v, 0) for v in range(-128, 128)]
        assert a["scales"][f"layer{i}.h"] == a["scales"][f"layer{i}.hp"]
    assert model.activation == "relu"
    with pytest.raises(UserError, match="split"):
        digits_pixels(0, "holdout")
