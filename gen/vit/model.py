"""The all-integer tiny ViT (docs/vit.md sections 1.4-1.5 and 2): quantization and reference.

:meth:`IntViT.from_float` quantizes a float :class:`~gen.sparse.vit.TinyViT` (pruned or not,
ReLU or GELU) so that the whole network, from the digit's integer pixels to the class, runs in
integers: embedding, class token and position table, every LayerNorm, residual add, linear,
the scores/softmax/context of docs/sparse_attention.md section 4, the activation table and the
classifier. :meth:`IntViT.forward` is the generator side's integer reference, built only from
:mod:`gen.numeric`; :meth:`IntViT.arrays` is the exported model of docs/vit.md section 2.

Scales (symmetric, zero point 0), calibrated on the float model's own activations over the
training images (as :mod:`gen.sparse.quantize` does), per tensor ``max |a| / 127``:

* input: exactly 1/16 (the pixels 0..16 are the INT8 values);
* ``embed``: the embedding output and the class token (``E``); ``pos``: the position table;
* per layer ``l``: ``x`` (residual stream into the layer), ``X`` (LN1 out), ``q``, ``k``, ``v``,
  ``o`` (context), ``z`` (Wo out), ``y`` (residual after attention), ``X2`` (LN2 out), ``hp``
  (FC1 out, before the activation), ``h`` (activation out), ``f`` (FC2 out);
* ``xL`` (the residual stream after the last layer), ``n`` (final LN out), ``logits``.

Exceptions to ``max |a| / 127``, both for ``hp`` where the activation makes part of the range
irrelevant: ReLU uses ``max(a) / 127`` (every negative value maps to 0 anyway, so the clamp at
-128 loses nothing, exactly as quantize.py's ``max(requant(.), 0)``) and ``s_h = s_hp``; GELU
uses ``max(max(a), min(-min(a), 4)) / 127`` (GELU is within 1.3e-4 of 0 below -4).

Weights: per output channel ``max |W[:, n]| / 127``, INT32 bias ``round(b / (s_x * s_w))`` with
the column's scale widened until ``|bias| + K * 2^14`` fits INT32 (:func:`quantize_linear`).

Files: :meth:`IntViT.save` writes one ``.npz`` (no pickles) whose ``header`` entry is JSON with
``format``, ``model``, ``model_sha256`` (the float state the model was quantized from),
``arrays_sha256`` (:meth:`IntViT.digest`), ``activation``, ``dims`` and the scalar parameters;
:meth:`IntViT.load` refuses a damaged or mismatching file with a :class:`UserError` naming the
field.
"""

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..artifacts import write_atomic
from ..errors import UserError
from ..numeric import (INT32_MAX, activation_table, apply_table, first_argmax, int_layernorm,
                       int_softmax, multiplier_and_shift, quantize_layernorm, quantize_residual,
                       requantize_torch, residual_add)
from ..sparse.prune import kept_features
from ..sparse.vit import (CLASSES, DIM, FFN, HEAD_DIM, HEADS, LAYERS, MATRICES, TOKENS,
                          check_activation, state_sha256)

__all__ = ["IntViT", "FORMAT", "MODEL_NAME", "INPUT_SCALE", "PIXEL_MAX", "quantize_linear",
           "check_pixels", "check_arrays", "digits_pixels", "prepared_int_vit", "patches"]

#: Version of the :meth:`IntViT.save` file; bump when its layout changes.
FORMAT = 1
MODEL_NAME = "tinyvit-digits-int"
PIXEL_MAX = 16
INPUT_SCALE = 1.0 / PIXEL_MAX
PATCH_PIXELS = 4
LOG2E = 1.0 / math.log(2.0)
#: GELU's pre-activation scale ignores values below this (GELU(-4) = -1.3e-4).
GELU_NEG_RANGE = 4.0

_LAYER_MATRICES = MATRICES
_LAYER_LN = ("ln1", "ln2")
_LAYER_RADD = ("add1", "add2")
_MS_MAX = 2 ** 31 - 1


# -- quantization helpers -----------------------------------------------------------------------

def quantize_linear(w, b, s_x, s_y):
    """INT8 ``matrix`` dict for ``y = x @ W + b`` (W float [K, N]), input/output scales s_x, s_y.

    Per output channel weight scale ``max_k |W[k, n]| / 127`` (1 for a zero column), widened so
    that ``|bias| + K * 2^14`` fits INT32 (the contract's no-overflow proof); INT32 bias
    ``round(b / (s_x * s_w))``; ``(mult, shift) = multiplier_and_shift(s_x * s_w / s_y)``.
    Returns ``({"w": int8 [K, N], "bias": int32 [N], "mult": int64 [N], "shift": int64 [N]},
    s_w float64 [N])``. The same steps as :mod:`gen.sparse.quantize` (pruned entries stay 0).
    """
    w = torch.as_tensor(w).detach().double()
    b = torch.as_tensor(b).detach().double()
    k, n = w.shape
    s_w = w.abs().amax(dim=0) / 127
    s_w = torch.where(s_w > 0, s_w, torch.ones_like(s_w))
    limit = INT32_MAX - k * 2 ** 14
    s_w = torch.maximum(s_w, b.abs() / (s_x * limit))
    w_int = torch.clamp(torch.round(w / s_w), -127, 127).to(torch.int64)
    bias = torch.round(b / (s_x * s_w)).to(torch.int64)
    ms = [multiplier_and_shift(float(s_x * s_w[c] / s_y)) for c in range(n)]
    return ({"w": w_int.numpy().astype(np.int8), "bias": bias.numpy().astype(np.int32),
             "mult": np.array([m for m, _ in ms], np.int64),
             "shift": np.array([s for _, s in ms], np.int64)}, s_w.numpy())


def _quantize_tensor(x, scale):
    return np.clip(np.round(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def _scale(a):
    return max(float(a.abs().max()), 1e-8) / 127


def _hp_scale(hp, activation):
    top = float(hp.max())
    if activation == "gelu":
        top = max(top, min(-float(hp.min()), GELU_NEG_RANGE))
    return max(top, 1e-8) / 127


def patches(pixels):
    """[n, 8, 8] -> [n, 16, 4]: 2x2 patches in raster order (as ``TinyViT.patches``)."""
    n = pixels.shape[0]
    return pixels.reshape(n, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(n, 16, PATCH_PIXELS)


@torch.no_grad()
def _float_trace(model, images):
    """Every float tensor that gets a per-tensor scale, on images [n, 8, 8] in 0..1."""
    acts = {}
    e = model.embed(model.patches(images))
    acts["embed"] = torch.cat([e.flatten(), model.cls.detach().flatten()])
    acts["pos"] = model.pos.detach()
    x = model.tokens(images)
    n, t, _ = x.shape
    for i, layer in enumerate(model.layers):
        a = {"x": x}
        xs = layer.ln1(x)
        q, k, v = layer.q(xs), layer.k(xs), layer.v(xs)
        split = lambda u: u.view(n, t, HEADS, HEAD_DIM).transpose(1, 2)
        scores = layer.scores(split(q) @ split(k).transpose(-1, -2) / math.sqrt(HEAD_DIM))
        o = (torch.softmax(scores, -1) @ split(v)).transpose(1, 2).reshape(n, t, DIM)
        z = layer.o(o)
        y = x + z
        x2 = layer.ln2(y)
        hp = layer.fc1(x2)
        h = layer.act(hp)
        f = layer.fc2(h)
        a.update({"X": xs, "q": q, "k": k, "v": v, "o": o, "z": z, "y": y, "X2": x2, "hp": hp,
                  "h": h, "f": f})
        acts.update({f"layer{i}.{name}": val for name, val in a.items()})
        x = y + f
    acts["xL"] = x
    acts["n"] = model.norm(x[:, 0])
    acts["logits"] = model.head(acts["n"])
    return acts


# -- checks -------------------------------------------------------------------------------------

def check_pixels(pixels):
    """``pixels`` as torch int64 [n, 8, 8] in 0..16, or :class:`UserError` in one line."""
    try:
        t = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, torch.Tensor)
                            else pixels)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"pixels must be an integer array [n, 8, 8] in 0..{PIXEL_MAX}: "
                        f"{type(exc).__name__}: {str(exc)[:80]}") from None
    if t.dim() != 3 or t.shape[1:] != (8, 8) or t.shape[0] < 1:
        raise UserError(f"pixels must have shape [n, 8, 8] with n >= 1, got {list(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise UserError(f"pixels must be integers 0..{PIXEL_MAX}, got dtype {t.dtype}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == torch.round(t)).all()):
            raise UserError(f"pixels must be integers 0..{PIXEL_MAX} (scikit-learn's digit "
                            f"values, not scaled to 0..1); got non-integral values")
    if bool(((t < 0) | (t > PIXEL_MAX)).any()):
        raise UserError(f"pixels must lie in 0..{PIXEL_MAX}, got values "
                        f"{t.min().item()}..{t.max().item()}")
    return t.to(torch.int64)


def _bad(where, what):
    raise UserError(f"integer ViT: {where} {what}")


def _check_array(where, a, dtype, shape, lo=None, hi=None):
    if not isinstance(a, np.ndarray):
        _bad(where, f"is not a numpy array ({type(a).__name__})")
    if a.dtype != np.dtype(dtype):
        _bad(where, f"has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if tuple(a.shape) != tuple(shape):
        _bad(where, f"has shape {list(a.shape)}, expected {list(shape)}")
    if a.size and lo is not None and int(a.min()) < lo:
        _bad(where, f"has {int(a.min())} below the contract's minimum {lo}")
    if a.size and hi is not None and int(a.max()) > hi:
        _bad(where, f"has {int(a.max())} above the contract's maximum {hi}")


def _check_matrix(where, m, k, n):
    if not isinstance(m, dict) or set(m) != {"w", "bias", "mult", "shift"}:
        _bad(where, "must be a dict of w, bias, mult, shift")
    _check_array(f"{where}.w", m["w"], np.int8, (k, n))
    _check_array(f"{where}.bias", m["bias"], np.int32, (n,),
                 -(INT32_MAX - k * 2 ** 14), INT32_MAX - k * 2 ** 14)
    _check_array(f"{where}.mult", m["mult"], np.int64, (n,), 0, _MS_MAX)
    _check_array(f"{where}.shift", m["shift"], np.int64, (n,), 1, 62)


def _check_ln(where, ln, d):
    if not isinstance(ln, dict) or set(ln) != {"neg", "bias", "mult", "shift"}:
        _bad(where, "must be a dict of neg, bias, mult, shift")
    _check_array(f"{where}.neg", ln["neg"], np.uint8, (d,), 0, 1)
    _check_array(f"{where}.bias", ln["bias"], np.int32, (d,), -(INT32_MAX - 2 ** 15),
                 INT32_MAX - 2 ** 15)
    _check_array(f"{where}.mult", ln["mult"], np.int64, (d,), 0, _MS_MAX)
    _check_array(f"{where}.shift", ln["shift"], np.int64, (d,), 1, 62)


def _check_int(where, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        _bad(where, f"must be an integer in {lo}..{hi}, got {v!r}")


def _check_radd(where, r):
    if not isinstance(r, dict) or set(r) != {"ma", "mb", "shift"}:
        _bad(where, "must be a dict of ma, mb, shift")
    _check_int(f"{where}.ma", r["ma"], 0, 2 ** 15 - 1)
    _check_int(f"{where}.mb", r["mb"], 0, 2 ** 15 - 1)
    _check_int(f"{where}.shift", r["shift"], 1, 31)


def _check_ms(where, ms):
    if not isinstance(ms, (tuple, list)) or len(ms) != 2:
        _bad(where, f"must be a pair (M, S), got {ms!r}")
    _check_int(f"{where}[0]", ms[0], 0, _MS_MAX)
    _check_int(f"{where}[1]", ms[1], 1, 62)


def check_arrays(a):
    """Raise :class:`UserError` (naming the entry) unless ``a`` is a model of docs/vit.md
    section 2 for this network's dimensions, every parameter within the contract's ranges."""
    keys = {"dims", "embed", "cls", "pos", "layers", "add_f", "ln_f", "head", "scales"}
    if not isinstance(a, dict) or set(a) != keys:
        _bad("model", f"must be a dict of exactly {sorted(keys)}")
    want = {"tokens": TOKENS, "dim": DIM, "heads": HEADS, "ffn": FFN, "layers": LAYERS,
            "classes": CLASSES, "patch_pixels": PATCH_PIXELS}
    if a["dims"] != want:
        _bad("dims", f"is {a['dims']!r}, this network has {want!r}")
    t, d, f = TOKENS, DIM, FFN
    _check_matrix("embed", a["embed"], PATCH_PIXELS, d)
    _check_array("cls", a["cls"], np.int8, (d,))
    _check_array("pos", a["pos"], np.int8, (t, d))
    if not isinstance(a["layers"], list) or len(a["layers"]) != LAYERS:
        _bad("layers", f"must be a list of {LAYERS} layers")
    lkeys = {"add1", "ln1", "q", "k", "v", "o", "scores", "context", "kept_features", "add2",
             "ln2", "fc1", "act", "fc2"}
    for i, layer in enumerate(a["layers"]):
        w = f"layers[{i}]"
        if not isinstance(layer, dict) or set(layer) != lkeys:
            _bad(w, f"must be a dict of exactly {sorted(lkeys)}")
        for name in _LAYER_RADD:
            _check_radd(f"{w}.{name}", layer[name])
        for name in _LAYER_LN:
            _check_ln(f"{w}.{name}", layer[name], d)
        for name in ("q", "k", "v", "o"):
            _check_matrix(f"{w}.{name}", layer[name], d, d)
        _check_matrix(f"{w}.fc1", layer["fc1"], d, f)
        _check_matrix(f"{w}.fc2", layer["fc2"], f, d)
        _check_ms(f"{w}.scores", layer["scores"])
        _check_ms(f"{w}.context", layer["context"])
        _check_array(f"{w}.act", layer["act"], np.int8, (256,))
        kf = layer["kept_features"]
        if not isinstance(kf, list) or len(kf) != HEADS:
            _bad(f"{w}.kept_features", f"must be a list of {HEADS} arrays")
        for h, feats in enumerate(kf):
            where = f"{w}.kept_features[{h}]"
            if not isinstance(feats, np.ndarray) or feats.dtype != np.int64 or feats.ndim != 1:
                _bad(where, "must be a 1-D int64 numpy array")
            if feats.size and (feats.min() < 0 or feats.max() >= HEAD_DIM
                               or (np.diff(feats) <= 0).any()):
                _bad(where, f"must be strictly increasing feature indices in 0..{HEAD_DIM - 1}")
    _check_radd("add_f", a["add_f"])
    _check_ln("ln_f", a["ln_f"], d)
    _check_matrix("head", a["head"], d, CLASSES)
    if not isinstance(a["scales"], dict) or not all(
            isinstance(v, float) and v > 0 for v in a["scales"].values()):
        _bad("scales", "must map names to positive floats")


# -- flattening for files and the digest --------------------------------------------------------

def _flatten(a):
    """(``{name: ndarray}``, ``{scalar part}``) of a section 2 dict, names like ``layers.0.q.w``."""
    arrays, scalars = {}, {"dims": a["dims"], "scales": a["scales"], "add_f": a["add_f"],
                            "layers": []}

    def put(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                arrays[f"{prefix}.{k}"] = x
        else:
            arrays[prefix] = v

    for name in ("embed", "cls", "pos", "ln_f", "head"):
        put(name, a[name])
    for i, layer in enumerate(a["layers"]):
        s = {}
        for name, v in layer.items():
            if name in _LAYER_RADD:
                s[name] = {k: int(x) for k, x in v.items()}
            elif name in ("scores", "context"):
                s[name] = [int(v[0]), int(v[1])]
            elif name == "kept_features":
                for h, feats in enumerate(v):
                    arrays[f"layers.{i}.kept_features.{h}"] = feats
            else:
                put(f"layers.{i}.{name}", v)
        scalars["layers"].append(s)
    scalars["add_f"] = {k: int(x) for k, x in a["add_f"].items()}
    return arrays, scalars


def _unflatten(arrays, scalars):
    def group(prefix, keys):
        return {k: arrays[f"{prefix}.{k}"] for k in keys}

    m = ("w", "bias", "mult", "shift")
    ln = ("neg", "bias", "mult", "shift")
    layers = []
    for i, s in enumerate(scalars["layers"]):
        layer = {"add1": dict(s["add1"]), "ln1": group(f"layers.{i}.ln1", ln)}
        for name in ("q", "k", "v", "o"):
            layer[name] = group(f"layers.{i}.{name}", m)
        layer["scores"] = tuple(s["scores"])
        layer["context"] = tuple(s["context"])
        layer["kept_features"] = [arrays[f"layers.{i}.kept_features.{h}"]
                                  for h in range(HEADS)]
        layer.update({"add2": dict(s["add2"]), "ln2": group(f"layers.{i}.ln2", ln),
                      "fc1": group(f"layers.{i}.fc1", m), "act": arrays[f"layers.{i}.act"],
                      "fc2": group(f"layers.{i}.fc2", m)})
        layers.append(layer)
    return {"dims": dict(scalars["dims"]), "embed": group("embed", m), "cls": arrays["cls"],
            "pos": arrays["pos"], "layers": layers, "add_f": dict(scalars["add_f"]),
            "ln_f": group("ln_f", ln), "head": group("head", m),
            "scales": {k: float(v) for k, v in scalars["scales"].items()}}


def _digest(a):
    arrays, scalars = _flatten(a)
    h = hashlib.sha256()
    for name in sorted(arrays):
        x = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{x.dtype.str}:{list(x.shape)};".encode())
        h.update(x.tobytes())
    h.update(json.dumps(scalars, sort_keys=True).encode())
    return h.hexdigest()


def _copy(a):
    if isinstance(a, dict):
        return {k: _copy(v) for k, v in a.items()}
    if isinstance(a, list):
        return [_copy(v) for v in a]
    if isinstance(a, np.ndarray):
        return a.copy()
    return a


# -- the model ----------------------------------------------------------------------------------

class IntViT:
    """The all-integer ViT: the parameters of docs/vit.md section 2 and their integer reference.

    Members
    -------
    activation : str
        "gelu" or "relu" (the table in each layer's ``act`` is what runs; this says how it was
        made).
    model_sha256 : str
        :func:`gen.sparse.vit.state_sha256` of the float (pruned) model it was quantized from.
    meta : dict
        Free-form provenance (seed, pruned, quick, float accuracy), saved with the model.
    """

    def __init__(self, arrays, activation, model_sha256, meta=None):
        check_arrays(arrays)
        self._a = _copy(arrays)
        self.activation = check_activation(activation)
        self.model_sha256 = str(model_sha256)
        self.meta = dict(meta or {})
        self._t = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def from_float(cls, model, calib_images, meta=None):
        """Calibrate on ``calib_images`` (float [n, 8, 8] in 0..1) and quantize ``model``.

        ``model`` is a :class:`~gen.sparse.vit.TinyViT` (pruned models: gammas folded, pruned
        weights zero, as :func:`gen.sparse.prune.prune` leaves them).
        """
        model.eval()
        activation = model.activation
        images = torch.as_tensor(calib_images, dtype=torch.float32)
        acts = _float_trace(model, images)
        s = {"input": INPUT_SCALE}
        for name, a in acts.items():
            if name.endswith(".hp"):
                s[name] = _hp_scale(a, activation)
            elif name.endswith(".h") and activation == "relu":
                s[name] = s[name[:-1] + "hp"]
            else:
                s[name] = _scale(a)
        for i in range(len(model.layers)):
            s[f"layer{i}.p"] = 1 / 128
            s[f"layer{i}.scores"] = 1 / 16

        embed, _ = quantize_linear(model.embed.weight.T, model.embed.bias, INPUT_SCALE,
                                   s["embed"])
        arrays = {"dims": {"tokens": TOKENS, "dim": DIM, "heads": HEADS, "ffn": FFN,
                           "layers": LAYERS, "classes": CLASSES, "patch_pixels": PATCH_PIXELS},
                  "embed": embed,
                  "cls": _quantize_tensor(model.cls.detach().reshape(DIM), s["embed"]),
                  "pos": _quantize_tensor(model.pos.detach().reshape(TOKENS, DIM), s["pos"]),
                  "layers": []}
        io_scales = {"q": ("X", "q"), "k": ("X", "k"), "v": ("X", "v"), "o": ("o", "z"),
                     "fc1": ("X2", "hp"), "fc2": ("h", "f")}
        prev = ("pos", "embed")
        for i, layer in enumerate(model.layers):
            ls = lambda name: s[f"layer{i}.{name}"]
            q = {"add1": quantize_residual(s[prev[0]], s[prev[1]], ls("x")),
                 "ln1": _ln(layer.ln1, ls("X"))}
            for name, lin in layer.matrices().items():
                sx, sy = io_scales[name]
                q[name], _ = quantize_linear(lin.effective_weight(), lin.effective_bias(),
                                             ls(sx), ls(sy))
            q["scores"] = multiplier_and_shift(ls("q") * ls("k") * 16 * LOG2E
                                               / math.sqrt(HEAD_DIM))
            q["context"] = multiplier_and_shift(ls("v") / 128 / ls("o"))
            q["kept_features"] = kept_features(layer)
            q["add2"] = quantize_residual(ls("x"), ls("z"), ls("y"))
            q["ln2"] = _ln(layer.ln2, ls("X2"))
            q["act"] = activation_table(activation, ls("hp"),
                                        None if activation == "relu" else ls("h"))
            arrays["layers"].append({k: q[k] for k in (
                "add1", "ln1", "q", "k", "v", "o", "scores", "context", "kept_features",
                "add2", "ln2", "fc1", "act", "fc2")})
            prev = (f"layer{i}.y", f"layer{i}.f")
        arrays["add_f"] = quantize_residual(s[prev[0]], s[prev[1]], s["xL"])
        arrays["ln_f"] = _ln(model.norm, s["n"])
        arrays["head"], _ = quantize_linear(model.head.weight.T, model.head.bias, s["n"],
                                            s["logits"])
        arrays["scales"] = {k: float(v) for k, v in s.items()}
        return cls(arrays, activation, state_sha256(model), meta)

    # -- the exported model -----------------------------------------------------------------
    def arrays(self):
        """A copy of the model as the plain dict of docs/vit.md section 2 (numpy arrays)."""
        return _copy(self._a)

    def digest(self):
        """sha256 over every integer parameter and scale (:meth:`save` records it)."""
        return _digest(self._a)

    # -- the integer reference --------------------------------------------------------------
    def _tensors(self):
        if self._t is None:
            conv = lambda v: ({k: conv(x) for k, x in v.items()} if isinstance(v, dict)
                              else [conv(x) for x in v] if isinstance(v, list)
                              else torch.from_numpy(v.astype(np.int64))
                              if isinstance(v, np.ndarray) else v)
            self._t = conv(self._a)
        return self._t

    @staticmethod
    def _linear(x, m, what):
        acc = x @ m["w"] + m["bias"]
        if acc.numel() and acc.abs().max() > INT32_MAX:
            raise OverflowError(f"{what}: accumulator leaves INT32")
        return requantize_torch(acc, m["mult"], m["shift"])

    @torch.no_grad()
    def forward(self, pixels):
        """Integer forward of ``pixels`` (int [n, 8, 8] in 0..16), docs/vit.md section 1.4-1.5.

        Returns a dict of int64 tensors: ``logits`` [n, classes], ``classes`` [n], ``E``
        [n, T, D] (row 0 the class token), ``xL`` [n, T, D] (the whole last residual; only row 0
        reaches the head), ``n`` [n, D] and ``layers``: per layer a dict of ``x, X, Q, K, V, O,
        Z, y, X2`` [n, T, D], ``S, P`` [n, H, T, T], ``Hp, H`` [n, T, FFN] and ``F`` [n, T, D].
        """
        p = check_pixels(pixels)
        a = self._tensors()
        n = p.shape[0]
        e = self._linear(patches(p), a["embed"], "embed")
        out = {"E": torch.cat([a["cls"].expand(n, 1, DIM), e], dim=1), "layers": []}
        left, right = a["pos"], out["E"]
        for i, layer in enumerate(a["layers"]):
            r = {"x": residual_add(left, right, layer["add1"])}
            r["X"] = int_layernorm(r["x"], layer["ln1"])
            for name in ("q", "k", "v"):
                r[name.upper()] = self._linear(r["X"], layer[name], f"layer {i} {name}")
            heads = lambda u: u.view(n, TOKENS, HEADS, HEAD_DIM).transpose(1, 2)
            qh, kh, vh = heads(r["Q"]), heads(r["K"]), heads(r["V"])
            s_ms, c_ms = layer["scores"], layer["context"]
            scores, probs, context = [], [], []
            for h in range(HEADS):
                kept = layer["kept_features"][h]
                acc = qh[:, h][..., kept] @ kh[:, h][..., kept].transpose(-1, -2)
                sc = requantize_torch(acc, s_ms[0], s_ms[1])
                pr = int_softmax(sc)
                context.append(requantize_torch(pr @ vh[:, h], c_ms[0], c_ms[1]))
                scores.append(sc)
                probs.append(pr)
            r["S"], r["P"] = torch.stack(scores, 1), torch.stack(probs, 1)
            r["O"] = torch.cat(context, dim=-1)
            r["Z"] = self._linear(r["O"], layer["o"], f"layer {i} o")
            r["y"] = residual_add(r["x"], r["Z"], layer["add2"])
            r["X2"] = int_layernorm(r["y"], layer["ln2"])
            r["Hp"] = self._linear(r["X2"], layer["fc1"], f"layer {i} fc1")
            r["H"] = apply_table(r["Hp"], layer["act"])
            r["F"] = self._linear(r["H"], layer["fc2"], f"layer {i} fc2")
            out["layers"].append({k: r[k] for k in ("x", "X", "Q", "K", "V", "S", "P", "O",
                                                    "Z", "y", "X2", "Hp", "H", "F")})
            left, right = r["y"], r["F"]
        out["xL"] = residual_add(left, right, a["add_f"])
        out["n"] = int_layernorm(out["xL"][:, 0], a["ln_f"])
        out["logits"] = self._linear(out["n"], a["head"], "head")
        out["classes"] = first_argmax(out["logits"])
        return out

    __call__ = forward

    def classify(self, pixels, batch=512):
        """Classes int64 [n] of ``pixels``, in batches (only the logits are kept)."""
        p = check_pixels(pixels)
        return torch.cat([self.forward(p[i:i + batch])["classes"]
                          for i in range(0, p.shape[0], batch)])

    def accuracy(self, pixels, labels):
        """Accuracy in percent of :meth:`classify` against ``labels``."""
        labels = torch.as_tensor(labels, dtype=torch.int64)
        return 100.0 * (self.classify(pixels) == labels).double().mean().item()

    # -- files ------------------------------------------------------------------------------
    def save(self, path):
        """Write the model to ``path`` (``.npz``, no pickles) atomically; returns the path."""
        arrays, scalars = _flatten(self._a)
        header = {"format": FORMAT, "model": MODEL_NAME, "model_sha256": self.model_sha256,
                  "arrays_sha256": self.digest(), "activation": self.activation,
                  "meta": self.meta, **scalars}
        buffer = io.BytesIO()
        np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                 **arrays)
        return write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path, model_sha256=None, activation=None, digest=None):
        """Read what :meth:`save` wrote. A missing, damaged or mismatching file (``model_sha256``,
        ``activation`` or ``digest`` given and different) raises :class:`UserError` naming the
        field."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such integer ViT file (IntViT.save writes one)")
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except Exception as exc:            # zipfile/numpy raise many kinds for a damaged file
            raise UserError(f"{path}: not a readable .npz, damaged? "
                            f"({type(exc).__name__}: {str(exc)[:80]})") from None
        if "header" not in raw:
            raise UserError(f"{path}: field 'header' is missing")
        try:
            header = json.loads(raw.pop("header").tobytes().decode())
        except (UnicodeDecodeError, ValueError):
            raise UserError(f"{path}: field 'header' is not JSON") from None
        if not isinstance(header, dict):
            raise UserError(f"{path}: field 'header' is not a JSON object")

        def field(name, expected=None):
            if name not in header:
                raise UserError(f"{path}: field {name!r} is missing")
            if expected is not None and header[name] != expected:
                raise UserError(f"{path}: field {name!r} is {header[name]!r}, expected "
                                f"{expected!r}")
            return header[name]

        field("format", FORMAT)
        field("model", MODEL_NAME)
        field("model_sha256", model_sha256)
        field("activation", activation)
        recorded = field("arrays_sha256", digest)
        for name in ("dims", "scales", "add_f", "layers", "meta"):
            field(name)
        try:
            arrays = _unflatten(raw, header)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{path}: entry {str(exc)[:60]} is missing or malformed") from None
        try:
            model = cls(arrays, header["activation"], header["model_sha256"], header["meta"])
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        if model.digest() != recorded:
            raise UserError(f"{path}: field 'arrays_sha256' does not match the contents "
                            f"(damaged or edited file)")
        return model


def _ln(ln, s_y):
    try:
        return quantize_layernorm(ln.weight.detach().numpy(), ln.bias.detach().numpy(), s_y)
    except ValueError as exc:
        raise UserError(f"cannot quantize a LayerNorm: {exc}") from None


# -- data and the one-call entry ----------------------------------------------------------------

def digits_pixels(seed=0, split="test"):
    """``(pixels int64 [n, 8, 8] in 0..16, labels int64 [n])`` of the seeded digits ``split``
    ("train", "val" or "test"), the same split as :class:`gen.sparse.vit.Digits`."""
    from ..sparse.vit import load_digits_split
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be train, val or test, got {split!r}")
    images, labels = getattr(load_digits_split(seed), split)
    return torch.round(images * PIXEL_MAX).to(torch.int64), labels


def prepared_int_vit(seed=0, activation="gelu", pruned=True, quick=True,
                     cache_dir="rtl_out/models", progress=None, clamp_scores=True):
    """Train/load (and prune/load, when ``pruned``) the float ViT in ``cache_dir`` and quantize
    it to an :class:`IntViT`, calibrated on the training images of ``seed``.

    ``clamp_scores`` trains the float model with its attention scores clamped to what the INT8
    score holds (:data:`gen.sparse.vit.SCORE_RANGE`): without it the contract's score
    saturation costs the integer model 3-4 points on digits (benchmarks/bench_vit_accuracy.py).
    ``quick`` (10 epochs, a coarse pruning search) takes about 10 s on one core the first time.
    """
    from ..sparse.prune import PruneSettings, load_or_prune
    from ..sparse.vit import load_digits_split, load_or_train
    check_activation(activation)
    torch.set_num_threads(1)
    if pruned:
        settings = PruneSettings.for_mode(quick)
        _, info, result = load_or_prune(seed, settings, quick=quick, cache_dir=cache_dir,
                                        progress=progress, activation=activation,
                                        clamp_scores=clamp_scores)
        model = result.model
        accuracy = result.accuracy["columns"]
    else:
        model, info = load_or_train(seed, cache_dir, quick=quick, progress=progress,
                                    activation=activation, clamp_scores=clamp_scores)
        accuracy = {"val": info["val_accuracy"], "test": info["test_accuracy"]}
    meta = {"seed": seed, "pruned": bool(pruned), "quick": bool(quick),
            "clamp_scores": bool(clamp_scores),
            "float_sha256": info["sha256"], "float_accuracy": accuracy}
    return IntViT.from_float(model, load_digits_split(seed).train[0], meta)
