"""The numeric contract on the host side (numpy): requantization and the INT8 GEMM.

This is what host software uses to prepare and check jobs; the verification golden models in
`verif/golden.py` are written separately, in torch, and never call this module.
"""

import numpy as np

__all__ = ["requantize", "gemm_int8", "multiplier_and_shift"]


def requantize(acc, mult, shift):
    """``clamp((acc * M + 2^(S-1)) >> S, -128, 127)`` in int64, elementwise."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return np.clip((acc * mult + (np.int64(1) << (shift - 1))) >> shift, -128, 127)


def gemm_int8(a, w, bias, mult, shift):
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
