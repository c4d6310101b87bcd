"""PyTorch integer golden models of packed products and broadcast multiply-accumulate lanes.

Written from the spec alone (docs/sparse_attention.md section 6, docs/DESIGN.md section 2):
nothing here imports the generator. Plain int64 products and sums; results are compared with
the RTL by equality.
"""

import torch

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _signed_check(name, t, bits):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if ((t < low) | (t > high)).any():
        raise ValueError(f"{name} is not a signed {bits}-bit integer")


def products(x, w, x_bits=8, w_bits=8):
    """``x * w`` in int64, broadcasting ``x`` (shape ``S``) against ``w`` (shape ``S + (n,)``)."""
    x = torch.as_tensor(x, dtype=torch.int64)
    w = torch.as_tensor(w, dtype=torch.int64)
    _signed_check("x", x, x_bits)
    _signed_check("w", w, w_bits)
    return x.unsqueeze(-1) * w


def mac_sum(x, w):
    """One sum of a MAC structure: ``acc[l] = sum_t x[t] * w[t, l]`` for INT8 ``x`` [T] and
    ``w`` [T, lanes]; raises if an accumulator leaves INT32, which the contract forbids."""
    acc = products(x, w).sum(dim=0)
    if ((acc < INT32_MIN) | (acc > INT32_MAX)).any():
        raise OverflowError("accumulator leaves INT32")
    return acc
