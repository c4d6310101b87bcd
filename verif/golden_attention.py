"""PyTorch int64 golden model of one encoder layer's integer attention and FFN.

Written from ``docs/sparse_attention.md`` section 4 and the numeric contract alone; nothing here
imports the generator. It is sparse-agnostic: it takes the *dense* restored matrices (zeros where
pruned) and computes every product in full, over all features of a head and all rows of W, so
that equality with the kernel also proves that the kernel's skipping is exact.

A weight matrix is a dict ``{"w": (K, N) int, "bias": (N,), "mult": (N,), "shift": (N,)}``
(torch convention ``y = x @ W + b``: rows are input features).
"""

import torch

from verif.golden_softmax import int_softmax

__all__ = ["requantize", "linear", "head_scores", "head_context", "attention", "ffn", "layer"]

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _int64(x):
    return torch.as_tensor(x).to(torch.int64)


def requantize(acc, mult, shift):
    """``clamp((acc * M + 2^(S-1)) >> S, -128, 127)``, int64, ``>>`` arithmetic."""
    acc, mult, shift = _int64(acc), _int64(mult), _int64(shift)
    if ((mult < 0) | (mult >= 2 ** 31)).any() or ((shift < 1) | (shift > 62)).any():
        raise ValueError("requantization parameters outside the contract")
    rounded = acc * mult + torch.bitwise_left_shift(torch.ones_like(shift), shift - 1)
    return torch.clamp(torch.bitwise_right_shift(rounded, shift), INT8_MIN, INT8_MAX)


def _matmul(a, b):
    """Exact int64 ``a @ b`` (explicit sums: integer matmul support varies across builds)."""
    acc = (_int64(a).unsqueeze(2) * _int64(b).unsqueeze(0)).sum(dim=1)
    if ((acc < INT32_MIN) | (acc > INT32_MAX)).any():
        raise OverflowError("accumulator leaves INT32")
    return acc


def linear(x, matrix, relu=False):
    """``requant(x @ W + b)`` per output channel, then ``max(., 0)`` if ``relu``."""
    acc = _matmul(x, matrix["w"]) + _int64(matrix["bias"])
    if ((acc < INT32_MIN) | (acc > INT32_MAX)).any():
        raise OverflowError("accumulator plus bias leaves INT32")
    y = requantize(acc, matrix["mult"], matrix["shift"])
    return torch.clamp(y, min=0) if relu else y


def head_scores(q, k, head, heads, requant):
    """``S_h = requant(Q_h @ K_h^T)`` over all d features of head ``h``; ``requant = (M, S)``."""
    d = q.shape[1] // heads
    cols = slice(head * d, (head + 1) * d)
    return requantize(_matmul(_int64(q)[:, cols], _int64(k)[:, cols].T), *requant)


def head_context(p, v, head, heads, requant):
    """``O_h = requant(P_h @ V_h)`` (T x d)."""
    d = v.shape[1] // heads
    return requantize(_matmul(p, _int64(v)[:, head * d:(head + 1) * d]), *requant)


def attention(x, mats, heads, score_requant, context_requant):
    """Attention of one layer on INT8 ``x`` (T x D, the LN1 output).

    Returns a dict with ``q``, ``k``, ``v``, ``s`` and ``p`` (lists per head), ``o`` and
    ``z`` (the output projection), all int64.
    """
    q = linear(x, mats["q"])
    k = linear(x, mats["k"])
    v = linear(x, mats["v"])
    s = [head_scores(q, k, h, heads, score_requant) for h in range(heads)]
    p = [int_softmax(sh) for sh in s]
    o = torch.cat([head_context(p[h], v, h, heads, context_requant) for h in range(heads)],
                  dim=1)
    z = linear(o, mats["o"])
    return {"q": q, "k": k, "v": v, "s": s, "p": p, "o": o, "z": z}


def ffn(x2, mats):
    """``H = relu(requant(X2 @ W1 + b1))``, ``F = requant(H @ W2 + b2)``; returns (H, F)."""
    h = linear(x2, mats["fc1"], relu=True)
    return h, linear(h, mats["fc2"])


def layer(x, x2, mats, heads, score_requant, context_requant):
    """Both parts; ``x2`` is the INT8 LN2 output the host computed from ``z`` (float side)."""
    out = attention(x, mats, heads, score_requant, context_requant)
    out["h"], out["f"] = ffn(x2, mats)
    return out
