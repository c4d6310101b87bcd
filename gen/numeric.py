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
