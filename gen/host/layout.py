"""How matrices are laid out in the accelerator's buffers (see ``gen.hw.gemm`` and, for the
weight-stationary dataflow, ``gen.hw.ws_gemm``).

These functions are the host's half of the buffer contract: the RTL reads what they write.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ACT_LAYOUTS", "GemmShape", "pack_activations", "pack_weights", "pack_params", "words_to_bytes",
           "check_gemm_operands", "check_batch_operands", "batch_out_stride", "LayoutError"]

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


class LayoutError(ValueError):
    """Operands that the accelerator cannot take as they are."""


def batch_out_stride(m, n, rows):
    """Output bytes from one GEMM of a batch to the next: ``ceil(M/R)*R*N``, the rows of its
    padded tiles (the engine's output address runs on through them)."""
    return -(-m // rows) * rows * n


@dataclass(frozen=True)
class GemmShape:
    """``batch`` GEMMs of ``m x k x n`` (one job; a batch's words follow each other)."""
    m: int
    k: int
    n: int
    batch: int = 1

    def act_words(self, rows, dataflow="output_stationary"):
        if _check_dataflow(dataflow) == "weight_stationary":
            return self.batch * -(-self.k // rows) * self.m
        return self.batch * -(-self.m // rows) * self.k

    def wgt_words(self, cols):
        return self.batch * -(-self.n // cols) * self.k

    def out_words(self, rows):
        """Output bytes the job spans: every GEMM's stride but the last one's, then ``M*N``."""
        return (self.batch - 1) * batch_out_stride(self.m, self.n, rows) + self.m * self.n


def _as_array(name, x):
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise LayoutError(f"{name} is not an array of numbers ({exc})") from None


def _int8(name, x):
    x = _as_array(name, x)
    if x.ndim != 2:
        raise LayoutError(f"{name} must be a matrix, not of shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise LayoutError(f"{name} must hold integers, not {x.dtype}")
    if x.size and (x.min() < -128 or x.max() > 127):
        raise LayoutError(f"{name} holds values outside INT8 [-128, 127]: "
                          f"min {x.min()}, max {x.max()}")
    return x.astype(np.int64)


def check_gemm_operands(a, w, bias, mult, shift):
    """Validate ``Y = requant(A @ W + bias)`` operands against the numeric contract.

    Returns the operands as int64 numpy arrays and the :class:`GemmShape`.
    """
    a, w = _int8("A", a), _int8("W", w)
    if a.shape[1] != w.shape[0]:
        raise LayoutError(f"A is {a.shape[0]}x{a.shape[1]} but W is {w.shape[0]}x{w.shape[1]}: "
                          f"the inner sizes must agree")
    shape = GemmShape(a.shape[0], a.shape[1], w.shape[1])
    if 0 in (shape.m, shape.k, shape.n):
        raise LayoutError(f"empty GEMM {shape.m}x{shape.k}x{shape.n}")
    if max(shape.m, shape.k, shape.n) >= 2 ** 16:
        raise LayoutError("M, K and N must each be below 65536")
    vectors = {}
    for name, v, low, high in (("bias", bias, INT32_MIN, INT32_MAX),
                               ("mult", mult, 0, 2 ** 31 - 1),
                               ("shift", shift, 1, 62)):
        try:
            v = np.broadcast_to(np.asarray(v, dtype=np.int64), (shape.n,))
        except (ValueError, TypeError, OverflowError):
            raise LayoutError(f"{name} must be one integer or N = {shape.n} of them, "
                              f"not {v!r:.60}") from None
        if v.min() < low or v.max() > high:
            raise LayoutError(f"{name} must lie in [{low}, {high}]; got min {v.min()}, "
                              f"max {v.max()}")
        vectors[name] = v
    # The contract's overflow proof: |acc| <= K * 2^14 + |bias| must fit INT32.
    worst = shape.k * 2 ** 14 + int(np.abs(vectors["bias"]).max())
    if worst > INT32_MAX:
        raise LayoutError(f"K={shape.k} with |bias| up to {int(np.abs(vectors['bias']).max())} "
                          f"may overflow the INT32 accumulator (bound {worst} > {INT32_MAX}); "
                          f"split K or shrink the bias")
    return a, w, vectors["bias"], vectors["mult"], vectors["shift"], shape


def check_batch_operands(a, w, bias, mult, shift):
    """:func:`check_gemm_operands` for a batch: ``A`` [B, M, K] and ``W`` [B, K, N], one set
    of requantization parameters for all B GEMMs. Returns the operands and the
    :class:`GemmShape` (with ``batch``)."""
    a, w = _as_array("A", a), _as_array("W", w)
    if a.ndim != 3 or w.ndim != 3:
        raise LayoutError(f"a batch needs A [B, M, K] and W [B, K, N], not A of shape "
                          f"{a.shape} and W of shape {w.shape}")
    if a.shape[0] != w.shape[0]:
        raise LayoutError(f"A holds {a.shape[0]} matrices but W {w.shape[0]}: the batch "
                          f"sizes must agree")
    if not 1 <= a.shape[0] < 2 ** 16:
        raise LayoutError(f"the batch must hold 1 to 65535 GEMMs, not {a.shape[0]}")
    checked = [check_gemm_operands(a[b], w[b], bias, mult, shift) for b in range(a.shape[0])]
    _, _, bias, mult, shift, shape = checked[0]
    return (np.stack([c[0] for c in checked]), np.stack([c[1] for c in checked]), bias, mult,
            shift, GemmShape(shape.m, shape.k, shape.n, a.shape[0]))


def _check_dataflow(dataflow):
    if dataflow not in ACT_LAYOUTS:
        raise LayoutError(f"unknown dataflow {dataflow!r}; one of {', '.join(ACT_LAYOUTS)}")
    return dataflow


#: The dataflows whose activation layout this module knows (``gen.hw.accelerator.DATAFLOWS``).
ACT_LAYOUTS = ("output_stationary", "weight_stationary")


def pack_activations(a, rows, dataflow="output_stationary"):
    """Activation words. Output-stationary: word ``mt*K + k`` holds ``A[mt*R + r, k]`` in
    byte ``r``; weight-stationary: word ``kt*M + m`` holds ``A[m, kt*R + i]`` in byte ``i``
    (zero past ``K``)."""
    m, k = a.shape
    if _check_dataflow(dataflow) == "weight_stationary":
        tiles = -(-k // rows)
        padded = np.zeros((m, tiles * rows), dtype=np.int64)
        padded[:, :k] = a
        # [M, tiles, rows] -> [tiles, M, rows]: one word per (tile, m), k as bytes.
        return _bytes_to_words(padded.reshape(m, tiles, rows).transpose(1, 0, 2)
                               .reshape(-1, rows))
    tiles = -(-m // rows)
    padded = np.zeros((tiles * rows, k), dtype=np.int64)
    padded[:m] = a
    # [tiles, rows, K] -> [tiles, K, rows]: one word per (tile, k), rows as bytes.
    return _bytes_to_words(padded.reshape(tiles, rows, k).transpose(0, 2, 1).reshape(-1, rows))


def pack_weights(w, cols):
    """Weight words: word ``nt*K + k`` holds ``W[k, nt*C + c]`` in byte ``c``."""
    k, n = w.shape
    tiles = -(-n // cols)
    padded = np.zeros((k, tiles * cols), dtype=np.int64)
    padded[:, :n] = w
    return _bytes_to_words(padded.reshape(k, tiles, cols).transpose(1, 0, 2).reshape(-1, cols))


def pack_params(bias, mult, shift):
    """Parameter words as they travel: bias (int32 LE), multiplier (uint32 LE), shift (uint8)."""
    return [int(b).to_bytes(4, "little", signed=True) + int(mm).to_bytes(4, "little") +
            bytes([int(s)]) for b, mm, s in zip(bias, mult, shift)]


def _bytes_to_words(matrix):
    """Rows of INT8 values -> list of little-endian byte strings, one per row."""
    return [bytes(row.astype(np.int8).view(np.uint8).tolist()) for row in matrix]


def words_to_bytes(words):
    return b"".join(words)
