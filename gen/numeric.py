"""The numeric contract on the generator side: one home for every integer definition it uses.

``docs/DESIGN.md`` section 2 states the contract; this module is its executable form for
host software (preparing and checking jobs, quantizing models, building memory images). The
verification golden models (``verif/golden*.py``) are written separately, in torch, and never
call this module, so that an error here cannot hide in an error there.

Each definition is given once, with a numpy form (host tools) and a torch form (the integer
reference of a model) where both are needed; both compute in int64, exactly as written.

* Requantization: ``y = clamp((acc * M + 2^(S-1)) >> S, -128, 127)``, ``>>`` arithmetic
  (floor), ``0 <= M < 2^31``, ``1 <= S <= 62``.
* Integer softmax over INT8 scores in log2/16 units (``docs/sparse_attention.md`` section 5)::

      t_j = max(s) - s_j;  e_j = EXP2_LUT[t_j & 15] >> (t_j >> 4);  r = floor(2^31 / sum_j e_j)
      p_j = min((e_j * r + 2^23) >> 24, 127)
"""

import math

import numpy as np
import torch

__all__ = ["INT8_MIN", "INT8_MAX", "INT32_MAX", "EXP2_LUT", "requantize", "requantize_torch",
           "gemm_int8", "multiplier_and_shift", "int_softmax"]

INT8_MIN, INT8_MAX = -128, 127
INT32_MAX = 2 ** 31 - 1

#: ``round(2^15 * 2^(-f/16))`` for ``f = 0 .. 15``: the integer softmax's table.
EXP2_LUT = tuple(round(2 ** 15 * 2 ** (-f / 16)) for f in range(16))
_EXP2_LUT_TORCH = torch.tensor(EXP2_LUT, dtype=torch.int64)


def requantize(acc, mult, shift):
    """``clamp((acc * M + 2^(S-1)) >> S, -128, 127)`` in int64, elementwise (numpy)."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return np.clip((acc * mult + (np.int64(1) << (shift - 1))) >> shift, INT8_MIN, INT8_MAX)


def requantize_torch(acc, mult, shift):
    """:func:`requantize` on torch int64 tensors (M, S broadcast per channel)."""
    acc = torch.as_tensor(acc, dtype=torch.int64)
    mult = torch.as_tensor(mult, dtype=torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64)
    rounding = torch.bitwise_left_shift(torch.ones_like(shift), shift - 1)
    return torch.clamp(torch.bitwise_right_shift(acc * mult + rounding, shift),
                       INT8_MIN, INT8_MAX)


def gemm_int8(a, w, bias, mult, shift):
    """``requantize(A @ W + bias)`` as INT8 (numpy), the GEMM engine's job."""
    acc = np.asarray(a, dtype=np.int64) @ np.asarray(w, dtype=np.int64) + np.asarray(bias)
    return requantize(acc, mult, shift).astype(np.int8)


def multiplier_and_shift(scale):
    """Integer ``(M, S)`` with ``M / 2^S`` closest to a positive real ``scale``, M < 2^31."""
    scale = float(scale)
    if not 0 < scale < 2 ** 31:
        raise ValueError(f"scale must lie in (0, 2^31), not {scale}")
    shift = 62
    while shift > 1 and round(scale * 2 ** shift) >= 2 ** 31:
        shift -= 1
    mult = round(scale * 2 ** shift)
    if mult >= 2 ** 31:
        raise ValueError(f"scale {scale} too large for a multiplier below 2^31 with shift >= 1")
    return mult, shift


def int_softmax(scores):
    """Row-wise integer softmax of INT8 scores in log2/16 units over the last dimension (torch).

    Returns int64 in 0..127 meaning ``p * 128``. One division per row (``floor(2^31 / sum)``);
    ``sum >= 2^15`` because the maximum contributes ``EXP2_LUT[0]``.
    """
    s = torch.as_tensor(scores).to(torch.int64)
    if s.shape[-1] < 1:
        raise ValueError("int_softmax needs rows of length >= 1")
    if ((s < INT8_MIN) | (s > INT8_MAX)).any():
        raise ValueError("int_softmax takes INT8 scores")
    t = s.amax(dim=-1, keepdim=True) - s                # 0 .. 255
    e = torch.bitwise_right_shift(_EXP2_LUT_TORCH[t & 15], t >> 4)
    total = e.sum(dim=-1, keepdim=True)
    r = torch.div(2 ** 31, total, rounding_mode="floor")
    return torch.clamp(torch.bitwise_right_shift(e * r + 2 ** 23, 24), max=INT8_MAX)


# -- the all-integer ViT (docs/vit.md section 1) ------------------------------------------------

__all__ += ["LN_R", "LN_FRAC", "isqrt", "int_layernorm", "residual_add", "apply_table",
            "first_argmax", "quantize_layernorm", "quantize_residual", "activation_table"]

#: ``r = floor(2^LN_R / sigma)`` in the integer LayerNorm (docs/vit.md section 1.1).
LN_R = 30
#: Fraction bits of the normalised value ``u`` (so ``u = (c * r + 2^19) >> 20``).
LN_FRAC = 10
_LN_U_SHIFT = LN_R - LN_FRAC

#: The largest argument :func:`isqrt` is checked to be exact for (docs/vit.md section 1.1 needs
#: ``D^2 * 2^14`` at most; 2^52 keeps the float estimate within one of the root).
ISQRT_MAX = 2 ** 52


def _int64(x):
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"expected an integer tensor, got dtype {t.dtype}")
    return t.to(torch.int64)


def isqrt(v):
    """Exact floor square root of an int64 tensor ``v >= 0`` (docs/vit.md section 1.1).

    Returns ``sigma`` int64, the unique integer with ``sigma^2 <= v < (sigma + 1)^2``. A float64
    estimate (within one of the root for ``v <= 2^52``) is corrected by exact integer compares,
    so the result does not depend on how the estimate rounds.
    """
    v = _int64(v)
    if v.numel() and bool((v < 0).any()):
        raise ValueError("isqrt takes integers >= 0")
    if v.numel() and bool((v > ISQRT_MAX).any()):
        raise ValueError(f"isqrt is exact for v <= 2^52 only, got {int(v.max())}")
    s = torch.floor(torch.sqrt(v.to(torch.float64))).to(torch.int64)
    for _ in range(2):                               # the estimate is off by at most one
        s = torch.where(s * s > v, s - 1, s)
        s = torch.where((s + 1) * (s + 1) <= v, s + 1, s)
    return s


def _ln_params(ln, d):
    out = {}
    for name in ("neg", "bias", "mult", "shift"):
        if name not in ln:
            raise ValueError(f"LayerNorm parameters lack {name!r}")
        t = _int64(ln[name])
        if t.shape != (d,):
            raise ValueError(f"LayerNorm {name!r} has shape {tuple(t.shape)}, expected ({d},)")
        out[name] = t
    return out


def int_layernorm(x, ln):
    """Integer LayerNorm over the last dimension of INT8 ``x`` (docs/vit.md section 1.1).

    ``ln`` is a dict of per-channel arrays ``neg`` (0/1), ``bias`` (INT32), ``mult``, ``shift``
    of length D. Returns int64 in -128..127::

        s1 = sum x; s2 = sum x^2; v = D*s2 - s1^2; sigma = isqrt(v)
        r = floor(2^30 / sigma) (0 if sigma = 0); c = D*x - s1; u = (c*r + 2^19) >> 20
        y = requant((-u if neg else u) + bias, mult, shift)
    """
    x = _int64(x)
    d = x.shape[-1]
    p = _ln_params(ln, d)
    s1 = x.sum(dim=-1, keepdim=True)
    s2 = (x * x).sum(dim=-1, keepdim=True)
    sigma = isqrt(d * s2 - s1 * s1)
    r = torch.where(sigma > 0, torch.div(2 ** LN_R, torch.clamp(sigma, min=1),
                                         rounding_mode="floor"), torch.zeros_like(sigma))
    c = d * x - s1
    u = torch.bitwise_right_shift(c * r + 2 ** (_LN_U_SHIFT - 1), _LN_U_SHIFT)
    u = torch.where(p["neg"] != 0, -u, u)
    return requantize_torch(u + p["bias"], p["mult"], p["shift"])


def residual_add(a, b, radd):
    """``clamp((a * ma + b * mb + 2^(S-1)) >> S, -128, 127)`` (docs/vit.md section 1.2).

    ``radd`` is ``{"ma", "mb", "shift"}`` (ints); ``a``, ``b`` INT8 tensors (broadcast).
    """
    a, b = _int64(a), _int64(b)
    ma, mb, s = (int(radd[k]) for k in ("ma", "mb", "shift"))
    if not (0 <= ma < 2 ** 15 and 0 <= mb < 2 ** 15 and 1 <= s <= 31):
        raise ValueError(f"residual parameters out of contract: ma={ma}, mb={mb}, shift={s}")
    return torch.clamp(torch.bitwise_right_shift(a * ma + b * mb + (1 << (s - 1)), s),
                       INT8_MIN, INT8_MAX)


def apply_table(h_pre, table):
    """``h = table[h_pre + 128]`` for INT8 ``h_pre`` and a 256-entry INT8 table (section 1.3)."""
    h_pre = _int64(h_pre)
    table = _int64(table)
    if table.shape != (256,):
        raise ValueError(f"an activation table has 256 entries, got shape {tuple(table.shape)}")
    if h_pre.numel() and bool(((h_pre < INT8_MIN) | (h_pre > INT8_MAX)).any()):
        raise ValueError("apply_table takes INT8 inputs")
    return table[h_pre + 128]


def first_argmax(logits):
    """The first index of the maximum over the last dimension, int64 (docs/vit.md section 1.5)."""
    x = _int64(logits)
    if x.shape[-1] < 1:
        raise ValueError("first_argmax needs rows of length >= 1")
    idx = torch.arange(x.shape[-1], dtype=torch.int64).expand_as(x)
    is_max = x == x.amax(dim=-1, keepdim=True)
    return torch.where(is_max, idx, torch.full_like(idx, x.shape[-1])).amin(dim=-1)


def quantize_layernorm(gamma, beta, s_y):
    """Integer parameters of a float LayerNorm ``(gamma, beta)`` with output scale ``s_y``.

    docs/vit.md section 1.1: ``|g|`` raised to at least ``2^-8``, ``neg = g < 0``,
    ``(mult, shift) = multiplier_and_shift(|g| / (2^10 * s_y))``,
    ``bias = round(beta * 2^10 / |g|)``. Returns ``{"neg": uint8, "bias": int32, "mult": int64,
    "shift": int64}`` numpy arrays; raises ValueError when a bias does not fit INT32 with room
    for ``|u| < 2^15``, or a scale is not positive and finite.
    """
    g = np.asarray(gamma, dtype=np.float64).reshape(-1)
    b = np.asarray(beta, dtype=np.float64).reshape(-1)
    if g.shape != b.shape:
        raise ValueError(f"gamma {g.shape} and beta {b.shape} differ in shape")
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        raise ValueError("LayerNorm gamma/beta must be finite")
    s_y = float(s_y)
    if not (np.isfinite(s_y) and s_y > 0):
        raise ValueError(f"LayerNorm output scale must be positive, got {s_y}")
    mag = np.maximum(np.abs(g), 2.0 ** -8)
    neg = (g < 0).astype(np.uint8)
    ms = [multiplier_and_shift(m / (2 ** LN_FRAC * s_y)) for m in mag]
    bias = np.round(b * 2 ** LN_FRAC / mag)
    limit = INT32_MAX - 2 ** 15
    if bias.size and np.abs(bias).max() > limit:
        i = int(np.abs(bias).argmax())
        raise ValueError(f"LayerNorm bias of channel {i} ({bias[i]:.0f}) does not fit INT32 "
                         f"with room for |u| < 2^15 (|beta/gamma| too large)")
    return {"neg": neg, "bias": bias.astype(np.int32),
            "mult": np.array([m for m, _ in ms], np.int64),
            "shift": np.array([s for _, s in ms], np.int64)}


def quantize_residual(s_a, s_b, s_y):
    """``{"ma", "mb", "shift"}`` aligning scales ``s_a``, ``s_b`` to ``s_y`` (docs/vit.md 1.2).

    The largest ``S <= 31`` with ``round(max(s_a, s_b) / s_y * 2^S) < 2^15``; then
    ``ma = round(s_a / s_y * 2^S)``, ``mb = round(s_b / s_y * 2^S)``. Raises ValueError when
    no ``S >= 1`` fits (``s_y`` far too small for its inputs) or a scale is not positive.
    """
    s_a, s_b, s_y = float(s_a), float(s_b), float(s_y)
    for name, s in (("s_a", s_a), ("s_b", s_b), ("s_y", s_y)):
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"residual scale {name} must be positive, got {s}")
    top = max(s_a, s_b) / s_y
    for shift in range(31, 0, -1):
        if round(top * 2 ** shift) < 2 ** 15:
            return {"ma": int(round(s_a / s_y * 2 ** shift)),
                    "mb": int(round(s_b / s_y * 2 ** shift)), "shift": shift}
    raise ValueError(f"residual add: input/output scale ratio {top:.4g} needs a multiplier "
                     f">= 2^15 even at shift 1")


def activation_table(kind, s_hp, s_h=None):
    """The 256-entry INT8 activation table (docs/vit.md section 1.3), numpy int8.

    ``kind`` "gelu": ``act[v + 128] = clamp(round(gelu(v * s_hp) / s_h), -128, 127)`` with the
    exact (erf) GELU in float64. "relu": ``act[v + 128] = max(v, 0)``; its output scale is
    ``s_hp`` (``s_h`` must be None or equal to it).
    """
    v = np.arange(-128, 128, dtype=np.float64)
    if kind == "relu":
        if s_h is not None and not math.isclose(float(s_h), float(s_hp), rel_tol=1e-12):
            raise ValueError(f"a ReLU table keeps the scale: s_h must equal s_hp, "
                             f"got {s_h} and {s_hp}")
        return np.maximum(v, 0).astype(np.int8)
    if kind != "gelu":
        raise ValueError(f"activation must be 'gelu' or 'relu', got {kind!r}")
    s_hp = float(s_hp)
    s_h = float(s_h) if s_h is not None else float("nan")
    if not (np.isfinite(s_hp) and s_hp > 0 and np.isfinite(s_h) and s_h > 0):
        raise ValueError(f"GELU table scales must be positive, got s_hp={s_hp}, s_h={s_h}")
    a = v * s_hp
    gelu = np.array([0.5 * t * (1.0 + math.erf(t / math.sqrt(2.0))) for t in a])
    return np.clip(np.round(gelu / s_h), INT8_MIN, INT8_MAX).astype(np.int8)
