"""PyTorch int64 golden model of the all-integer ViT (docs/vit.md, issue 10).

Written from ``docs/vit.md`` (sections 1 and 2) and ``docs/sparse_attention.md`` (sections 4-5)
alone: nothing here imports the generator. All arithmetic is plain torch int64, exactly as the
contract writes it (``>>`` is arithmetic, i.e. floor), and every result is compared with the
integer model and the RTL by equality.

The unit functions (`isqrt`, `int_layernorm`, `residual_add`, `apply_table`, `first_argmax`)
are the contract's section 1.1-1.5 definitions; `forward` chains them over the exported model
dict of section 2. The weight matrices are the *dense* restored ones (zeros where pruned) and
every product is computed in full, over all rows of every W, so that equality with the sparse
hardware also proves that its skipping is exact.

Measured error bounds against float (``tests/test_vit_golden.py`` asserts them, seeded random
and extreme inputs) are given in each function's docstring.
"""

import torch

from verif.golden import requantize
from verif.golden_softmax import int_softmax

__all__ = ["LN_R", "LN_FRAC", "isqrt", "int_layernorm", "residual_add", "apply_table",
           "first_argmax", "patches", "linear", "forward"]

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
#: ``r = floor(2^LN_R / sigma)``; ``u`` keeps ``LN_FRAC`` fraction bits (shift LN_R - LN_FRAC).
LN_R, LN_FRAC = 30, 10
_ISQRT_MAX = 2 ** 62


def _int64(x):
    """``x`` (numpy, torch, list or int) as an int64 torch tensor."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.int64)
    return torch.as_tensor(x).to(torch.int64)


def _check_int8(t, name):
    if ((t < INT8_MIN) | (t > INT8_MAX)).any():
        raise ValueError(f"{name} is not INT8")


def _check_int32(acc, name):
    if ((acc < INT32_MIN) | (acc > INT32_MAX)).any():
        raise OverflowError(f"{name}: accumulator leaves INT32")
    return acc


# --------------------------------------------------------------------------------------------
# Section 1.1: integer square root and LayerNorm
# --------------------------------------------------------------------------------------------

def isqrt(v):
    """Floor square root of a non-negative int64 tensor, by Newton's iteration in integers.

    Returns the unique integer ``sigma`` with ``sigma^2 <= v < (sigma + 1)^2`` (int64, same
    shape). I-BERT's manner: start from ``x_0 = 2^ceil(bits(v) / 2) >= sqrt(v)`` and iterate
    ``x_{k+1} = (x_k + v // x_k) >> 1`` while it decreases; from an upper start the iterates
    decrease monotonically to ``floor(sqrt(v))`` (integer Newton never undershoots it). A
    final correction step (``x -= x^2 > v``, ``x += (x+1)^2 <= v``) checks the result; it is a
    no-op by the argument above, and the tests (``tests/test_vit_golden.py``) confirm exactness
    against ``math.isqrt`` on edge values (0, 1, squares, squares - 1, 2^40) and random values
    up to 2^40. Valid for ``0 <= v < 2^62``; raises ``ValueError`` otherwise.

    Error against float: none (exact by definition).
    """
    v = _int64(v)
    if (v < 0).any():
        raise ValueError("isqrt of a negative value")
    if (v >= _ISQRT_MAX).any():
        raise ValueError("isqrt: value outside [0, 2^62)")
    # bits(v) = number of k with v >= 2^k (bit length), all integer.
    bits = torch.zeros_like(v)
    for k in range(62):
        bits += (v >= (1 << k)).to(torch.int64)
    x = torch.bitwise_left_shift(torch.ones_like(v), (bits + 1) >> 1)   # >= sqrt(v), >= 1
    while True:
        y = (x + torch.div(v, x.clamp(min=1), rounding_mode="floor")) >> 1   # x = 0 only for v = 0
        dec = y < x
        if not dec.any():
            break
        x = torch.where(dec, y, x)
    # Correction (check) step: the unique floor square root.
    x = x - (x * x > v).to(torch.int64)
    x = x + ((x + 1) * (x + 1) <= v).to(torch.int64)
    if ((x * x > v) | ((x + 1) * (x + 1) <= v)).any():
        raise ArithmeticError("isqrt did not converge")  # unreachable: kept as a self-check
    return x


def int_layernorm(x, ln):
    """Integer LayerNorm over the last dim (D) of INT8 ``x`` (docs/vit.md section 1.1).

    Per row: ``s1 = sum x``, ``s2 = sum x^2``, ``v = D*s2 - s1^2``, ``sigma = isqrt(v)``,
    ``r = floor(2^30 / sigma)`` (0 if ``sigma = 0``), ``c_i = D*x_i - s1``,
    ``u_i = (c_i * r + 2^19) >> 20`` (~ ``(x_i - mean)/std * 2^10``), and
    ``y_i = requant((-u_i if neg_i else u_i) + bias_i, mult_i, shift_i)``.
    ``ln = {"neg", "bias", "mult", "shift"}`` of length-D arrays (numpy or torch). Returns
    int64 ``[..., D]`` in -128..127.

    Error against float (``torch.nn.functional.layer_norm``, float64, with float gamma/beta
    quantized as section 1.1 says), in output LSBs of ``s_y``. Derived, and asserted on every
    element of the tests (seeded): with ``u* = 2^10 (x_i - mean)/std`` and
    ``k = |g_i| / (2^10 s_y)``,

        |y_i - y_float_i| <= 1/2 + k * (|u*_i| / sigma + 1.02)

    (``floor(sqrt(v))`` has relative error < 1/sigma, ``floor(2^30/sigma)`` adds < |c|/2^20,
    the roundings of ``u`` and of the bias 1/2 each, the requantization 1/2); the measured
    error reaches 0.995-0.999 of it. So the error is 1/2 LSB plus a relative error of about
    ``1 / (D * std)`` on the normalized output: it depends on the row's spread. Measured
    maxima (gamma in +-[0.05, 2], beta in [-1, 1], s_y so that the output uses ~3/4 of INT8;
    512 x 10 Gaussian rows per case), by the row's std in INT8 LSBs:

        std     2     4     8     16    32    64
        D = 64  1.13  0.75  0.62  0.56  0.53  0.53
        D = 16  5.45  1.69  0.93  0.71  0.62  0.55

    Extreme rows (constant, +-128/127 alternating, ramps, full-range spikes): at most 0.51
    (D = 64) / 0.52 (D = 16) LSB for rows with std >= 16; tiny-variance rows are coarse (one
    +1 spike in zeros, ``v = D - 1``, for D = 64 ``sigma = floor(sqrt(63)) = 7``: up to
    14.6 / 27.1 LSB),
    within the derived bound. A constant row (``v = 0``) gives ``u = 0``, i.e.
    ``y = requant(bias)``: float LayerNorm's ``beta`` within 1/2 LSB plus the bias rounding.
    """
    x = _int64(x)
    _check_int8(x, "LayerNorm input")
    neg, bias = _int64(ln["neg"]), _int64(ln["bias"])
    mult, shift = _int64(ln["mult"]), _int64(ln["shift"])
    d = x.shape[-1]
    s1 = x.sum(dim=-1, keepdim=True)
    s2 = (x * x).sum(dim=-1, keepdim=True)
    v = d * s2 - s1 * s1
    sigma = isqrt(v)
    r = torch.where(sigma > 0,
                    torch.div(torch.full_like(sigma, 1 << LN_R), sigma.clamp(min=1),
                              rounding_mode="floor"),
                    torch.zeros_like(sigma))
    c = d * x - s1
    shift_u = LN_R - LN_FRAC
    u = (c * r + (1 << (shift_u - 1))) >> shift_u
    if (u.abs() >= 2 ** 15).any():
        raise OverflowError("LayerNorm: |u| reached 2^15")
    w = torch.where(neg.bool(), -u, u) + bias
    _check_int32(w, "LayerNorm bias add")
    return requantize(w, mult, shift)


# --------------------------------------------------------------------------------------------
# Sections 1.2 and 1.3: residual add, activation table
# --------------------------------------------------------------------------------------------

def residual_add(a, b, radd):
    """``y = clamp((a*ma + b*mb + 2^(S-1)) >> S, -128, 127)`` (docs/vit.md section 1.2).

    ``a``, ``b`` INT8 (broadcasting), ``radd = {"ma", "mb", "shift"}`` with ``0 <= ma, mb <
    2^15``, ``1 <= S <= 31``. Returns int64 in -128..127.

    Error against the float sum ``(a*s_a + b*s_b) / s_y`` with (ma, mb, S) quantized as
    section 1.2 says, in LSBs of ``s_y``: derived ``<= 1/2 + 128 / 2^S`` (round half up, plus
    ``|a| * |ma - s_a/s_y 2^S| / 2^S <= 64 / 2^S`` for each input), asserted on all 65536
    (a, b) pairs, also against the clamped float sum. Measured max: 0.506 LSB (40 seeded
    random scale pairs, ``s_a/s_y``, ``s_b/s_y`` in [0.05, 2]); 0.500 LSB on extreme ratios
    (equal scales, 2^-8 against 1, 1.9999, 1e-4, 1/3 and 2/3).
    """
    a, b = _int64(a), _int64(b)
    _check_int8(a, "residual input a")
    _check_int8(b, "residual input b")
    ma, mb, s = int(radd["ma"]), int(radd["mb"]), int(radd["shift"])
    if not (0 <= ma < 2 ** 15 and 0 <= mb < 2 ** 15):
        raise ValueError("residual multipliers outside [0, 2^15)")
    if not 1 <= s <= 31:
        raise ValueError("residual shift outside [1, 31]")
    return torch.clamp((a * ma + b * mb + (1 << (s - 1))) >> s, INT8_MIN, INT8_MAX)


def apply_table(h_pre, table):
    """``h = table[h_pre + 128]`` (docs/vit.md section 1.3): INT8 ``h_pre``, INT8 table [256].

    The table is model data (GELU or ReLU); returns int64 of ``h_pre``'s shape.

    Error of a GELU table built as section 1.3 says (``round(gelu(v*s_hp)/s_h)``, exact erf
    GELU in float64) against float GELU at its 256 inputs: measured max 0.500 LSB of ``s_h``
    (the rounding only; 50 seeded s_hp in [0.01, 0.1], s_h = gelu(127 s_hp) / 127, so nothing
    clamps), asserted <= 1/2. The ReLU table ``max(v, 0)`` is exact.
    """
    h = _int64(h_pre)
    _check_int8(h, "activation input")
    t = _int64(table).reshape(-1)
    if t.numel() != 256:
        raise ValueError("activation table must have 256 entries")
    _check_int8(t, "activation table")
    return t[h + 128]


def first_argmax(logits):
    """Index (int64) of the first maximum of ``logits`` over the last dim (exact, no error)."""
    z = _int64(logits)
    m = z.amax(dim=-1, keepdim=True)
    idx = torch.arange(z.shape[-1], dtype=torch.int64).expand_as(z)
    return torch.where(z == m, idx, torch.full_like(idx, z.shape[-1])).amin(dim=-1)


# --------------------------------------------------------------------------------------------
# Sections 1.4-1.5: the network
# --------------------------------------------------------------------------------------------

def _matmul(a, b, name):
    """Exact int64 ``a @ b`` over the last dims, as explicit sums over the inner dim.

    ``a`` [..., M, K], ``b`` [..., K, N] (broadcasting leading dims). Every product is
    computed (nothing skipped); raises if the accumulator leaves INT32.
    """
    a, b = _int64(a), _int64(b)
    k = a.shape[-1]
    if b.shape[-2] != k:
        raise ValueError(f"{name}: inner dimensions {k} and {b.shape[-2]} differ")
    acc = None
    for i in range(k):
        term = a[..., :, i:i + 1] * b[..., i:i + 1, :]
        acc = term if acc is None else acc + term
    return _check_int32(acc, name)


def linear(x, matrix, name="linear"):
    """``requant(x @ W + bias)`` per output channel; ``matrix = {"w", "bias", "mult", "shift"}``.

    Dense ``W`` [K, N] INT8 (zeros where pruned); every product is computed.
    """
    w = _int64(matrix["w"])
    _check_int8(w, f"{name} weights")
    acc = _matmul(x, w, name) + _int64(matrix["bias"])
    _check_int32(acc, f"{name} (with bias)")
    return requantize(acc, matrix["mult"], matrix["shift"])


def patches(pixels, patch=2):
    """``[n, 8, 8]`` -> ``[n, 16, patch*patch]``: 2x2 patches in raster order, pixels in
    raster order within a patch (docs/vit.md section 1.4, ``TinyViT.patches``)."""
    p = _int64(pixels)
    n, h, w = p.shape
    t = p.reshape(n, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return t.reshape(n, (h // patch) * (w // patch), patch * patch)


def _attention(x_ln, layer, heads):
    """NSA's attention on INT8 X ``[n, T, D]``: Q, K, V, S, P, O, Z (S, P: ``[n, H, T, T]``).

    ``S_h = requant(Q_h[:, kept] K_h[:, kept]^T)``: every product over the head's d features
    is computed and the features outside ``kept_features[h]`` are masked to 0 (for the
    exported model Q and K are already 0 there, docs/sparse_attention.md section 2).
    """
    q = linear(x_ln, layer["q"], "Q")
    k = linear(x_ln, layer["k"], "K")
    v = linear(x_ln, layer["v"], "V")
    dim = q.shape[-1]
    d = dim // heads
    sm, ss = layer["scores"]
    cm, cs = layer["context"]
    scores, probs, context = [], [], []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        mask = torch.zeros(d, dtype=torch.int64)
        mask[_int64(layer["kept_features"][h]).reshape(-1)] = 1
        qh, kh, vh = q[..., cols] * mask, k[..., cols], v[..., cols]
        s = requantize(_matmul(qh, kh.transpose(-1, -2), "scores"), sm, ss)
        p = int_softmax(s)
        o = requantize(_matmul(p, vh, "context"), cm, cs)
        scores.append(s)
        probs.append(p)
        context.append(o)
    o = torch.cat(context, dim=-1)
    z = linear(o, layer["o"], "Wo")
    return {"Q": q, "K": k, "V": v, "S": torch.stack(scores, dim=-3),
            "P": torch.stack(probs, dim=-3), "O": o, "Z": z}


def forward(model, pixels):
    """The whole integer ViT (docs/vit.md sections 1.4-1.5) on ``pixels`` int ``[n, 8, 8]``.

    ``model`` is the exported dict of section 2. Per image: ``E[t] = requant(patch[t-1] @ We
    + be)`` for t = 1..16, ``E[0] = cls``; ``x_0 = radd(pos, E; add1 of layer 0)``; per layer
    ``l``: ``x_l = radd(y_{l-1}, F_{l-1}; add1)`` (l > 0), ``X = LN(x_l; ln1)``, attention
    (Q, K, V, S, P, O, Z), ``y_l = radd(x_l, Z; add2)``, ``X2 = LN(y_l; ln2)``,
    ``Hp = requant(X2 @ W1 + b1)``, ``H = act[Hp + 128]``, ``F = requant(H @ W2 + b2)``; head:
    ``x_L = radd(y_{L-1}, F_{L-1}; add_f)`` (all tokens), ``n = LN(x_L[:, 0]; ln_f)``,
    ``logits = requant(n @ Wh + bh)``, ``classes = first_argmax(logits)``.

    Returns ``{"logits": [n, classes], "classes": [n], "E": [n, T, D], "xL": [n, T, D],
    "n": [n, D], "layers": [{"x", "X", "Q", "K", "V", "S", "P", "O", "Z", "y", "X2", "Hp", "H",
    "F"}]}``, all int64 (S and P ``[n, heads, T, T]``, the rest ``[n, T, width]``). Raises
    ``OverflowError`` if an accumulator leaves INT32 and ``ValueError`` on pixels outside
    0..16.
    """
    px = _int64(pixels)
    if px.dim() == 2:
        px = px.unsqueeze(0)
    if ((px < 0) | (px > 16)).any():
        raise ValueError("pixels must be integers 0..16")
    dims = model["dims"]
    heads = int(dims["heads"])
    patch = int(round(int(dims.get("patch_pixels", 4)) ** 0.5))
    tok = patches(px, patch)                                     # [n, 16, pp]
    e_rows = linear(tok, model["embed"], "embedding")            # [n, 16, D]
    cls = _int64(model["cls"]).reshape(1, 1, -1).expand(px.shape[0], 1, -1)
    e = torch.cat([cls, e_rows], dim=1)                          # [n, T, D]
    pos = _int64(model["pos"])
    out = {"E": e, "layers": []}
    a, b = pos, e
    for layer in model["layers"]:
        x = residual_add(a, b, layer["add1"])
        if x.shape != e.shape:
            x = x.expand_as(e).clone()
        lo = {"x": x, "X": int_layernorm(x, layer["ln1"])}
        lo.update(_attention(lo["X"], layer, heads))
        lo["y"] = residual_add(x, lo["Z"], layer["add2"])
        lo["X2"] = int_layernorm(lo["y"], layer["ln2"])
        lo["Hp"] = linear(lo["X2"], layer["fc1"], "FC1")
        lo["H"] = apply_table(lo["Hp"], layer["act"])
        lo["F"] = linear(lo["H"], layer["fc2"], "FC2")
        out["layers"].append(lo)
        a, b = lo["y"], lo["F"]
    out["xL"] = residual_add(a, b, model["add_f"])
    out["n"] = int_layernorm(out["xL"][:, 0], model["ln_f"])
    out["logits"] = linear(out["n"], model["head"], "head")
    out["classes"] = first_argmax(out["logits"])
    return out
