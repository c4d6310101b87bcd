"""INT8 quantization and integer inference of the pruned ViT (spec section 4, docs/DESIGN.md section 2).

Scales (all symmetric, zero point 0):

* weights: one scale per output channel n, ``s_w[n] = max_k |W[k, n]| / 127`` (a zero column
  gets 1), ``W_int = round(W / s_w)``;
* activations: one scale per tensor, ``max |a| / 127`` over the float model's activations on the
  training images (calibration), for X (LN1 out), Q, K, V, O (context), Z (Wo out), X2 (LN2 out),
  H (ReLU(FC1) out) and F (FC2 out);
* bias: INT32, ``round(b / (s_x * s_w[n]))``; should ``|bias| + K * 2^14`` not fit in INT32, the
  column's weight scale is raised until it does (the contract forbids accumulator overflow);
* requantization of ``acc`` (scale ``s_x * s_w[n]``) to an output of scale ``s_y``: ``(M, S) =``
  :func:`gen.numeric.multiplier_and_shift` ``(s_x * s_w[n] / s_y)`` per output channel, applied
  exactly as ``clamp((acc * M + 2^(S-1)) >> S, -128, 127)``;
* scores: one (M, S) per layer for ``s_q * s_k * 16 * log2(e) / sqrt(d)``, so the INT8 score s
  means ``s / 16`` log2 units (spec section 4 step 2);
* softmax: :func:`int_softmax` (spec section 5), P in 0..127 meaning ``p * 128``;
* context: one (M, S) per layer for ``s_v / 128 / s_o``.

Integer inference (:class:`QuantizedViT`): patch embedding, LayerNorms, residual adds and the
classifier run in float on the host; X and X2 are quantized at the boundary, Z and F dequantized.
Everything between is int64 torch arithmetic, exactly the contract.

Export for the hardware: :class:`QuantizedEncoderLayer` (per layer: six
:class:`~gen.sparse.format.CompressedMatrix`, scores/context (M, S), ``kept_features``, dims,
scales) and :meth:`QuantizedViT.layer_io` (INT8 X and X2 of one layer for one digit image, with
every intermediate of the integer reference).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import UserError
from ..numeric import INT32_MAX, int_softmax, multiplier_and_shift
from ..numeric import requantize_torch as requantize
from .format import CompressedMatrix
from .prune import kept_features
from .vit import DIM, FFN, HEAD_DIM, HEADS, MATRICES, TOKENS, state_sha256

__all__ = ["QuantizedEncoderLayer", "QuantizedViT",
           "quantize_model", "load_quantized_layer"]

LOG2E = 1.0 / math.log(2.0)

def _check_int32(acc, what):
    if acc.numel() and acc.abs().max() > INT32_MAX:
        raise OverflowError(f"{what}: accumulator leaves INT32")
    return acc


def _quantize_act(x, scale):
    return torch.clamp(torch.round(x / scale), -128, 127).to(torch.int64)


@dataclass
class QuantizedEncoderLayer:
    """Everything the hardware needs for one encoder layer (spec section 4).

    Members
    -------
    index : int
        Layer number (0 or 1).
    q, k, v, o, fc1, fc2 : CompressedMatrix
        INT8 weights (K, N) for ``y = x @ W``, with INT32 ``bias`` and per-output-channel
        ``mult``/``shift``. ``fc1`` is followed by ReLU (``max(requant(.), 0)``).
    scores_mult, scores_shift : int
        (M, S) of ``S_h = requant(Q_h[:, kept] @ K_h[:, kept]^T)`` (no bias), for every head.
    context_mult, context_shift : int
        (M, S) of ``O_h = requant(P_h @ V_h)`` (no bias), for every head.
    kept_features : list of int64 arrays
        Per head h, the feature indices f in 0..d-1 (column ``h*d + f`` of Wq/Wk) not pruned;
        for the others Q and K are exactly 0.
    tokens, dim, heads, head_dim, ffn : int
        T = 17, D = 64, H = 4, d = 16, FFN width 128.
    scales : dict of float
        Per-tensor dequantization scales (real = int * scale): x, q, k, v, o (context), z, x2,
        h, f; ``p`` = 1/128; ``scores`` = 1/16 log2 units.
    weight_scales : dict of float arrays
        Per matrix, per output channel weight scale.
    """

    index: int
    q: CompressedMatrix
    k: CompressedMatrix
    v: CompressedMatrix
    o: CompressedMatrix
    fc1: CompressedMatrix
    fc2: CompressedMatrix
    scores_mult: int
    scores_shift: int
    context_mult: int
    context_shift: int
    kept_features: list
    tokens: int = TOKENS
    dim: int = DIM
    heads: int = HEADS
    head_dim: int = HEAD_DIM
    ffn: int = FFN
    scales: dict = field(default_factory=dict)
    weight_scales: dict = field(default_factory=dict)

    def matrices(self):
        """``{name: CompressedMatrix}`` in the order q, k, v, o, fc1, fc2."""
        return {name: getattr(self, name) for name in MATRICES}

    # -- the integer reference of spec section 4 ------------------------------------------
    def _linear(self, x, name, relu=False):
        cm = getattr(self, name)
        w = torch.from_numpy(cm.to_dense()).to(torch.int64)
        acc = _check_int32(x @ w + torch.from_numpy(cm.bias).to(torch.int64), name)
        y = requantize(acc, torch.from_numpy(cm.mult), torch.from_numpy(cm.shift))
        return torch.clamp(y, min=0) if relu else y

    def attention(self, x):
        """Steps 1-5a: INT8 X (..., T, D) -> dict of int64 Q, K, V, S, P, O, Z (heads on dim -3)."""
        x = torch.as_tensor(x, dtype=torch.int64)
        q, k, v = (self._linear(x, name) for name in ("q", "k", "v"))
        lead = x.shape[:-1]
        split = lambda t: t.view(*lead, self.heads, self.head_dim).transpose(-2, -3)
        qh, kh, vh = split(q), split(k), split(v)
        scores, probs, context = [], [], []
        for h in range(self.heads):
            kept = torch.from_numpy(self.kept_features[h])
            acc = qh[..., h, :, kept] @ kh[..., h, :, kept].transpose(-1, -2)
            s = requantize(_check_int32(acc, "scores"), self.scores_mult, self.scores_shift)
            p = int_softmax(s)
            acc = _check_int32(p @ vh[..., h, :, :], "context")
            scores.append(s)
            probs.append(p)
            context.append(requantize(acc, self.context_mult, self.context_shift))
        o = torch.cat(context, dim=-1)
        return {"Q": q, "K": k, "V": v, "S": torch.stack(scores, -3),
                "P": torch.stack(probs, -3), "O": o, "Z": self._linear(o, "o")}

    def ffn_int(self, x2):
        """Step 5b: INT8 X2 -> dict of int64 H (after ReLU) and F."""
        x2 = torch.as_tensor(x2, dtype=torch.int64)
        h = self._linear(x2, "fc1", relu=True)
        return {"H": h, "F": self._linear(h, "fc2")}

    # -- files -----------------------------------------------------------------------------
    def save(self, folder, model="tinyvit-digits", model_sha256=""):
        """``layer<i>_<matrix>.npz`` (format.py) plus ``layer<i>.json`` with the rest."""
        folder = Path(folder)
        for name, cm in self.matrices().items():
            cm.save(folder / f"layer{self.index}_{name}.npz", model, self.index, name,
                    model_sha256)
        meta = {"model": model, "model_sha256": model_sha256, "index": self.index,
                "scores_mult": int(self.scores_mult), "scores_shift": int(self.scores_shift),
                "context_mult": int(self.context_mult),
                "context_shift": int(self.context_shift),
                "kept_features": [f.tolist() for f in self.kept_features],
                "tokens": self.tokens, "dim": self.dim, "heads": self.heads,
                "head_dim": self.head_dim, "ffn": self.ffn, "scales": self.scales,
                "weight_scales": {k: np.asarray(v).tolist() for k, v in self.weight_scales.items()}}
        (folder / f"layer{self.index}.json").write_text(json.dumps(meta, indent=1))


def load_quantized_layer(folder, index, model_sha256=None, block=None):
    """Read what :meth:`QuantizedEncoderLayer.save` wrote; mismatches raise :class:`UserError`."""
    folder = Path(folder)
    path = folder / f"layer{index}.json"
    if not path.exists():
        raise UserError(f"{path} does not exist: run `python -m gen prune --out {folder}` first")
    meta = json.loads(path.read_text())
    if model_sha256 is not None and meta["model_sha256"] != model_sha256:
        raise UserError(f"{path}: field 'model_sha256' is {meta['model_sha256']!r} but the model "
                        f"needs {model_sha256!r}")
    shapes = {"q": (meta["dim"], meta["dim"]), "k": (meta["dim"], meta["dim"]),
              "v": (meta["dim"], meta["dim"]), "o": (meta["dim"], meta["dim"]),
              "fc1": (meta["dim"], meta["ffn"]), "fc2": (meta["ffn"], meta["dim"])}
    mats = {}
    for name in MATRICES:
        expect = {"model": meta["model"], "layer": index, "matrix": name,
                  "shape": list(shapes[name]), "model_sha256": meta["model_sha256"]}
        if block is not None:
            expect["block"] = block
        mats[name] = CompressedMatrix.load(folder / f"layer{index}_{name}.npz", expect=expect)
    return QuantizedEncoderLayer(
        index, **mats, scores_mult=meta["scores_mult"], scores_shift=meta["scores_shift"],
        context_mult=meta["context_mult"], context_shift=meta["context_shift"],
        kept_features=[np.asarray(f, dtype=np.int64) for f in meta["kept_features"]],
        tokens=meta["tokens"], dim=meta["dim"], heads=meta["heads"], head_dim=meta["head_dim"],
        ffn=meta["ffn"], scales=meta["scales"],
        weight_scales={k: np.asarray(v) for k, v in meta["weight_scales"].items()})


@torch.no_grad()
def _float_trace(layer, x):
    """The float layer, returning every tensor that gets a per-tensor scale, and the output."""
    n, t, _ = x.shape
    xs = layer.ln1(x)
    q, k, v = layer.q(xs), layer.k(xs), layer.v(xs)
    split = lambda a: a.view(n, t, HEADS, HEAD_DIM).transpose(1, 2)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(HEAD_DIM)
    o = (torch.softmax(scores, -1) @ split(v)).transpose(1, 2).reshape(n, t, DIM)
    z = layer.o(o)
    x = x + z
    x2 = layer.ln2(x)
    h = F.relu(layer.fc1(x2))
    f = layer.fc2(h)
    return {"x": xs, "q": q, "k": k, "v": v, "o": o, "z": z, "x2": x2, "h": h, "f": f}, x + f


def _quantize_linear(lin, s_x, s_y, block):
    w = lin.effective_weight().double()
    b = lin.effective_bias().double()
    k, n = w.shape
    s_w = w.abs().amax(dim=0) / 127
    s_w = torch.where(s_w > 0, s_w, torch.ones_like(s_w))
    # Keep |bias| + K * 2^14 inside INT32 (the contract's overflow proof) by widening s_w.
    limit = INT32_MAX - k * 2 ** 14
    s_w = torch.maximum(s_w, b.abs() / (s_x * limit))
    w_int = torch.clamp(torch.round(w / s_w), -127, 127).to(torch.int64)
    bias = torch.round(b / (s_x * s_w)).to(torch.int64)
    ms = [multiplier_and_shift(float(s_x * s_w[c] / s_y)) for c in range(n)]
    kept_rows = np.flatnonzero(lin.mask.any(dim=1).numpy())
    cm = CompressedMatrix.from_dense(w_int.numpy().astype(np.int8), block, kept_rows=kept_rows,
                                     bias=bias.numpy().astype(np.int32),
                                     mult=np.array([m for m, _ in ms], np.int64),
                                     shift=np.array([s for _, s in ms], np.int64))
    return cm, s_w.numpy()


@torch.no_grad()
def quantize_model(model, calib_images, block=8):
    """Calibrate on ``calib_images`` (float [n, 8, 8]) and quantize every encoder layer.

    ``model`` is the pruned float :class:`~gen.sparse.vit.TinyViT` (gammas folded). Returns a
    :class:`QuantizedViT`.
    """
    model.eval()
    x = model.tokens(calib_images)
    layers = []
    for i, layer in enumerate(model.layers):
        acts, x = _float_trace(layer, x)
        s = {name: max(float(a.abs().max()), 1e-8) / 127 for name, a in acts.items()}
        mats, wscales = {}, {}
        io = {"q": ("x", "q"), "k": ("x", "k"), "v": ("x", "v"), "o": ("o", "z"),
              "fc1": ("x2", "h"), "fc2": ("h", "f")}
        for name, lin in layer.matrices().items():
            mats[name], wscales[name] = _quantize_linear(lin, s[io[name][0]], s[io[name][1]],
                                                         block)
        sm, ss = multiplier_and_shift(s["q"] * s["k"] * 16 * LOG2E / math.sqrt(HEAD_DIM))
        cmult, cshift = multiplier_and_shift(s["v"] / 128 / s["o"])
        layers.append(QuantizedEncoderLayer(
            i, **mats, scores_mult=sm, scores_shift=ss, context_mult=cmult, context_shift=cshift,
            kept_features=kept_features(layer),
            scales={**s, "p": 1 / 128, "scores": 1 / 16}, weight_scales=wscales))
    return QuantizedViT(model, layers)


class QuantizedViT:
    """The pruned model with integer encoder layers (host parts stay float).

    Members
    -------
    model : TinyViT
        The pruned float model: its embedding, LayerNorms and classifier are used on the host.
    layers : list of QuantizedEncoderLayer
    sha256 : str
        :func:`gen.sparse.vit.state_sha256` of ``model``, written into every exported file.
    """

    def __init__(self, model, layers):
        self.model = model
        self.layers = layers
        self.sha256 = state_sha256(model)

    @torch.no_grad()
    def layer_forward(self, i, x):
        """Float residual stream ``x`` [n, T, D] through integer layer ``i``.

        Returns ``(x_out, ints)`` with ``ints`` the int64 tensors X, Q, K, V, S, P, O, Z, X2,
        H, F of the layer.
        """
        fl, ql = self.model.layers[i], self.layers[i]
        xq = _quantize_act(fl.ln1(x), ql.scales["x"])
        ints = {"X": xq, **ql.attention(xq)}
        x = x + ints["Z"].float() * ql.scales["z"]
        ints["X2"] = _quantize_act(fl.ln2(x), ql.scales["x2"])
        ints.update(ql.ffn_int(ints["X2"]))
        return x + ints["F"].float() * ql.scales["f"], ints

    @torch.no_grad()
    def __call__(self, images):
        """Logits [n, 10] of float images [n, 8, 8] with integer encoder layers."""
        x = self.model.tokens(torch.as_tensor(images, dtype=torch.float32))
        for i in range(len(self.layers)):
            x, _ = self.layer_forward(i, x)
        return self.model.classify(x)

    @torch.no_grad()
    def layer_io(self, image, layer):
        """INT8 inputs of encoder ``layer`` for one digit ``image`` ([8, 8] float 0..1).

        Returns a dict: ``X`` (T x D int8 numpy, the quantized LN1 output), ``X2`` (T x D int8,
        the quantized LN2 output of the residual after this layer's integer attention),
        ``scales`` (the layer's dequantization scales) and ``trace``: every int64 intermediate
        of the integer reference (Q, K, V, S [H, T, T], P, O, Z, H, F) as numpy arrays, for
        debugging only (golden models must compute their own).
        """
        if not 0 <= layer < len(self.layers):
            raise UserError(f"layer must be in 0..{len(self.layers) - 1}, got {layer}")
        image = torch.as_tensor(image, dtype=torch.float32).reshape(1, 8, 8)
        x = self.model.tokens(image)
        for i in range(layer + 1):
            x, ints = self.layer_forward(i, x)
        arrays = {k: v[0].numpy() for k, v in ints.items()}
        return {"X": arrays["X"].astype(np.int8), "X2": arrays["X2"].astype(np.int8),
                "scales": dict(self.layers[layer].scales), "trace": arrays}

    def save(self, folder, model="tinyvit-digits"):
        for layer in self.layers:
            layer.save(folder, model, self.sha256)
