"""PyTorch integer golden models of the numeric contract (docs/DESIGN.md section 2).

Written from the contract alone: nothing here imports the generator. All arithmetic is int64,
exactly as the contract writes it, and every result is compared with the RTL by equality.
"""

import torch

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def requantize(acc, mult, shift):
    """``clamp((acc * M + 2^(S-1)) >> S, -128, 127)`` elementwise, in int64.

    ``acc`` already includes the bias. ``mult`` and ``shift`` broadcast against ``acc`` (per
    output channel: shape ``[N]`` against ``[M, N]``).
    """
    acc = torch.as_tensor(acc, dtype=torch.int64)
    mult = torch.as_tensor(mult, dtype=torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64)
    if ((mult < 0) | (mult >= 2 ** 31)).any():
        raise ValueError("multiplier outside [0, 2^31)")
    if ((shift < 1) | (shift > 62)).any():
        raise ValueError("shift outside [1, 62]")
    rounded = acc * mult + torch.bitwise_left_shift(torch.ones_like(shift), shift - 1)
    return torch.clamp(torch.bitwise_right_shift(rounded, shift), INT8_MIN, INT8_MAX)


def gemm_int8(a, w, bias, mult, shift):
    """``Y = requant(A @ W + bias)`` with INT8 ``A`` [M, K], ``W`` [K, N], INT32 ``bias`` [N].

    Raises if an accumulator leaves INT32, which the contract forbids.
    """
    a = torch.as_tensor(a, dtype=torch.int64)
    w = torch.as_tensor(w, dtype=torch.int64)
    bias = torch.as_tensor(bias, dtype=torch.int64)
    for name, t in (("A", a), ("W", w)):
        if ((t < INT8_MIN) | (t > INT8_MAX)).any():
            raise ValueError(f"{name} is not INT8")
    # Sum products explicitly: integer matmul support varies across torch builds.
    acc = (a.unsqueeze(2) * w.unsqueeze(0)).sum(dim=1) + bias
    if ((acc < INT32_MIN) | (acc > INT32_MAX)).any():
        raise OverflowError("accumulator leaves INT32")
    return requantize(acc, mult, shift).to(torch.int8)
