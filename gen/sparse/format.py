"""Compressed sparse weight matrix (docs/sparse_attention.md section 3) and its file format.

A :class:`CompressedMatrix` holds an INT8 matrix W of shape (K, N) for ``y = x @ W + b`` (rows are
input features, columns output features) cut into ``blocks = ceil(N / B)`` column blocks of B
columns. One *word* is the B bytes of one row inside one column block: the unit the kernel reads
per step and the unit column pruning removes.

In memory
---------
* ``shape = (K, N)``, ``block = B``.
* ``kept_rows``: sorted int64 row indices kept by row pruning.
* ``rows[c]``: sorted int64 array, the rows of block c that have a stored word (a subset of
  ``kept_rows``); ``values[c]``: int8 array (len(rows[c]), B); columns past N are zero padding.
* ``bias`` int32 (N), ``mult`` int64 (N, 0 <= M < 2^31), ``shift`` int64 (N, 1..62): the numeric
  contract's per-output-channel requantization ``clamp((acc*M + 2^(S-1)) >> S, -128, 127)``.

``to_dense()`` rebuilds W (pruned entries 0). ``from_dense(W, B)`` stores exactly the words of W
that hold a non-zero value, so ``from_dense(W, B).to_dense() == W`` for every INT8 W.

Footprint (:meth:`CompressedMatrix.footprint`)
----------------------------------------------
weights ``words * B`` bytes; indices one row index of ``max(1, ceil(log2 K))`` bits per stored
word; pointers one per block, of ``max(1, ceil(log2(K * blocks + 1)))`` bits (enough to count any
number of words), i.e. ``blocks + 1`` pointers in CSR terms minus the leading zero. Index and
pointer bits are rounded up to whole bytes per kind. Dense footprint: ``K * N`` bytes. Bias and
requantization parameters are the same for both and are not counted.

On disk (:meth:`CompressedMatrix.save`, :meth:`CompressedMatrix.load`)
---------------------------------------------------------------------
One ``.npz`` (no pickles) with CSR-like arrays:

=============  =================  ==============================================================
key            dtype, shape       meaning
=============  =================  ==============================================================
``header``     str, ()            JSON: format, model, layer, matrix, shape [K, N], block,
                                  model_sha256 (sha256 of the float model state the INT8 values
                                  come from, see :func:`gen.sparse.vit.state_sha256`),
                                  content_sha256 (sha256 of the arrays below: :func:`content_sha256`)
``kept_rows``  int64 (R,)         ``kept_rows``
``block_ptr``  int64 (blocks+1,)  words of block c are ``block_ptr[c]:block_ptr[c+1]``
``row_index``  int64 (words,)     row of each word (``rows[c]`` concatenated)
``values``     int8 (words, B)    the words (``values[c]`` concatenated)
``bias``       int32 (N,)
``mult``       int64 (N,)
``shift``      int64 (N,)
=============  =================  ==============================================================

:meth:`CompressedMatrix.load` refuses, naming the field, a file that is truncated or not an
``.npz``, whose arrays do not hash to ``content_sha256`` (edited after it was written), or whose
arrays break the format (dtypes, a block-pointer table that is not 0 .. words and
non-decreasing, row indices outside ``0 .. K-1``, unsorted or not among ``kept_rows``, values
outside INT8, padding that is not zero, a bias outside INT32, M outside ``0 .. 2^31-1``, S outside
``1 .. 62``); with ``expect={...}`` it compares the header's fields (model, layer, matrix, shape,
block, model_sha256) with what the caller's model or kernel needs.
"""

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import write_atomic
from ..errors import UserError

__all__ = ["CompressedMatrix", "FORMAT", "content_sha256"]

FORMAT = "accelgen-compressed-matrix-1"
_HEADER_FIELDS = ("model", "layer", "matrix", "shape", "block", "model_sha256")


#: The arrays of a file, in the order :func:`content_sha256` hashes them.
ARRAYS = ("kept_rows", "block_ptr", "row_index", "values", "bias", "mult", "shift")


def _blocks(n, block):
    return -(-n // block)


def content_sha256(arrays):
    """sha256 over the named arrays' dtypes, shapes and bytes, in :data:`ARRAYS` order."""
    h = hashlib.sha256()
    for key in ARRAYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{list(a.shape)};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check_arrays(path, header, arrays):
    """Refuse arrays that break the format (see the module docstring), naming the field."""
    def bad(field, why):
        raise UserError(f"{path}: field '{field}' {why}; regenerate the file (python -m gen "
                        f"prune)")
    shape, block = header.get("shape"), header.get("block")
    if not (isinstance(shape, list) and len(shape) == 2 and
            all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in shape)):
        bad("shape", f"is {shape!r}, not [K, N] of positive integers")
    if not (isinstance(block, int) and not isinstance(block, bool) and block >= 1):
        bad("block", f"is {block!r}, not a positive integer")
    k, n = shape
    blocks = _blocks(n, block)
    for key in ("kept_rows", "block_ptr", "row_index", "mult", "shift"):
        if arrays[key].ndim != 1 or not np.issubdtype(arrays[key].dtype, np.integer):
            bad(key, f"must be a 1-D integer array, is {arrays[key].dtype} {arrays[key].shape}")
    values, bias = arrays["values"], arrays["bias"]
    if values.dtype != np.int8 or values.ndim != 2 or values.shape[1] != block:
        bad("values", f"must be int8 (words, {block}), is {values.dtype} {values.shape}")
    if bias.dtype != np.int32 or bias.shape != (n,):
        bad("bias", f"must be int32 ({n},) (INT32 values), is {bias.dtype} {bias.shape}")
    for key in ("mult", "shift"):
        if arrays[key].shape != (n,):
            bad(key, f"has {arrays[key].shape[0]} entries, not one per column ({n})")
    mult, shift = arrays["mult"].astype(np.int64), arrays["shift"].astype(np.int64)
    if n and (mult.min() < 0 or mult.max() > 2 ** 31 - 1):
        bad("mult", "holds a multiplier outside 0 .. 2^31-1")
    if n and (shift.min() < 1 or shift.max() > 62):
        bad("shift", "holds a shift outside 1 .. 62")
    ptr, words = arrays["block_ptr"].astype(np.int64), len(values)
    if len(ptr) != blocks + 1 or ptr[0] != 0 or ptr[-1] != words or (np.diff(ptr) < 0).any():
        bad("block_ptr", f"must rise from 0 to the {words} words in {blocks + 1} entries")
    rows = arrays["row_index"].astype(np.int64)
    if len(rows) != words:
        bad("row_index", f"has {len(rows)} entries for {words} words")
    kept = arrays["kept_rows"].astype(np.int64)
    if kept.size and (kept.min() < 0 or kept.max() >= k or (np.diff(kept) <= 0).any()):
        bad("kept_rows", f"must be increasing row indices in 0 .. {k - 1}")
    for c in range(blocks):
        r = rows[ptr[c]:ptr[c + 1]]
        if r.size and ((np.diff(r) <= 0).any() or not np.isin(r, kept).all()):
            bad("row_index", f"of block {c} must be increasing rows among kept_rows")
    if blocks * block > n and words and values[ptr[blocks - 1]:, n - (blocks - 1) * block:].any():
        bad("values", f"holds non-zero padding past column {n - 1}")


@dataclass
class CompressedMatrix:
    """INT8 W (K, N) stored as per-column-block lists of kept row words (see module docstring).

    Members
    -------
    shape : (int, int)
        (K, N): K input features (rows), N output features (columns).
    block : int
        B, the word width in bytes = the kernel's lane count.
    kept_rows : int64 array
        Rows kept by row pruning, sorted.
    rows : list of int64 arrays
        ``rows[c]``: the rows with a stored word in column block c, sorted, subset of kept_rows.
    values : list of int8 arrays
        ``values[c]``: shape (len(rows[c]), B), zero-padded past column N.
    bias, mult, shift : arrays (N,)
        INT32 bias and the per-output-channel requantization (M, S) of the numeric contract.
    """

    shape: tuple
    block: int
    kept_rows: np.ndarray
    rows: list
    values: list
    bias: np.ndarray = None
    mult: np.ndarray = None
    shift: np.ndarray = None
    header: dict = field(default_factory=dict)

    def __post_init__(self):
        k, n = (int(v) for v in self.shape)
        self.shape = (k, n)
        self.block = int(self.block)
        if k < 1 or n < 1 or self.block < 1:
            raise UserError(f"CompressedMatrix needs K, N, B >= 1, got shape {self.shape}, "
                            f"block {self.block}")
        self.kept_rows = np.asarray(self.kept_rows, dtype=np.int64).reshape(-1)
        if len(self.rows) != self.blocks or len(self.values) != self.blocks:
            raise UserError(f"CompressedMatrix has {len(self.rows)} row lists and "
                            f"{len(self.values)} value lists for {self.blocks} blocks")
        self.rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in self.rows]
        self.values = [np.asarray(v, dtype=np.int8).reshape(len(r), self.block)
                       for r, v in zip(self.rows, self.values)]
        kept = set(self.kept_rows.tolist())
        if any(np.diff(self.kept_rows) <= 0) or any(r < 0 or r >= k for r in kept):
            raise UserError("kept_rows must be sorted, distinct and inside 0..K-1")
        for c, r in enumerate(self.rows):
            if any(np.diff(r) <= 0) or not set(r.tolist()) <= kept:
                raise UserError(f"rows[{c}] must be sorted, distinct and a subset of kept_rows")
        pad = self.blocks * self.block - n
        if pad and any(v[:, self.block - pad:].any() for v in self.values[-1:]):
            raise UserError("values of the last block must be 0 past column N")
        self.bias = np.zeros(n, np.int32) if self.bias is None else \
            np.asarray(self.bias).astype(np.int32).reshape(n)
        self.mult = np.zeros(n, np.int64) if self.mult is None else \
            np.asarray(self.mult).astype(np.int64).reshape(n)
        self.shift = np.ones(n, np.int64) if self.shift is None else \
            np.asarray(self.shift).astype(np.int64).reshape(n)
        if ((self.mult < 0) | (self.mult >= 2 ** 31)).any():
            raise UserError("mult must lie in [0, 2^31)")
        if ((self.shift < 1) | (self.shift > 62)).any():
            raise UserError("shift must lie in [1, 62]")

    # -- derived values -------------------------------------------------------------------
    @property
    def blocks(self):
        """``ceil(N / B)``."""
        return _blocks(self.shape[1], self.block)

    @property
    def words(self):
        """Stored words (row, block pairs) over all blocks."""
        return sum(len(r) for r in self.rows)

    @property
    def words_per_block(self):
        return [len(r) for r in self.rows]

    @property
    def index_bits(self):
        return max(1, math.ceil(math.log2(self.shape[0])))

    @property
    def pointer_bits(self):
        return max(1, math.ceil(math.log2(self.shape[0] * self.blocks + 1)))

    def footprint(self):
        """``{"weights", "indices", "pointers", "total", "dense"}`` in bytes (module docstring)."""
        weights = self.words * self.block
        indices = math.ceil(self.words * self.index_bits / 8)
        pointers = math.ceil(self.blocks * self.pointer_bits / 8)
        return {"weights": weights, "indices": indices, "pointers": pointers,
                "total": weights + indices + pointers, "dense": self.shape[0] * self.shape[1]}

    # -- conversions ----------------------------------------------------------------------
    def to_dense(self):
        """W as an int8 array (K, N), pruned entries 0."""
        k, n = self.shape
        wide = np.zeros((k, self.blocks * self.block), np.int8)
        for c, (r, v) in enumerate(zip(self.rows, self.values)):
            wide[r, c * self.block:(c + 1) * self.block] = v
        return wide[:, :n].copy()

    @classmethod
    def from_dense(cls, w, block, kept_rows=None, bias=None, mult=None, shift=None, header=None):
        """Store the words of INT8 ``w`` (K, N) that hold a non-zero value.

        ``kept_rows`` defaults to the rows with any non-zero value; when given it must contain
        every such row (a row outside it would be lost).
        """
        w = np.asarray(w)
        if w.ndim != 2:
            raise UserError(f"from_dense needs a 2-D matrix, got shape {w.shape}")
        if w.size and (w.min() < -128 or w.max() > 127):
            raise UserError("from_dense needs INT8 values in -128..127")
        block = int(block)
        if block < 1:
            raise UserError(f"block width must be >= 1, got {block}")
        k, n = w.shape
        blocks = _blocks(n, block)
        wide = np.zeros((k, blocks * block), np.int8)
        wide[:, :n] = w
        words = wide.reshape(k, blocks, block)
        nonzero = words.any(axis=2)                       # (K, blocks)
        if kept_rows is None:
            kept_rows = np.flatnonzero(nonzero.any(axis=1))
        kept_rows = np.asarray(kept_rows, dtype=np.int64)
        lost = np.setdiff1d(np.flatnonzero(nonzero.any(axis=1)), kept_rows)
        if lost.size:
            raise UserError(f"rows {lost.tolist()} hold non-zero weights but are not in kept_rows")
        rows = [np.flatnonzero(nonzero[:, c]).astype(np.int64) for c in range(blocks)]
        values = [words[r, c, :] for c, r in enumerate(rows)]
        return cls((k, n), block, kept_rows, rows, values, bias, mult, shift, dict(header or {}))

    # -- files ----------------------------------------------------------------------------
    def save(self, path, model="", layer=-1, matrix="", model_sha256=""):
        """Write the ``.npz`` of the module docstring; the header fields identify the source."""
        header = {"format": FORMAT, "model": model, "layer": int(layer), "matrix": matrix,
                  "shape": list(self.shape), "block": self.block, "model_sha256": model_sha256}
        self.header = header
        ptr = np.concatenate([[0], np.cumsum(self.words_per_block)]).astype(np.int64)
        row_index = np.concatenate(self.rows + [np.zeros(0, np.int64)]).astype(np.int64)
        values = np.concatenate(self.values + [np.zeros((0, self.block), np.int8)]).astype(np.int8)
        bias = np.asarray(self.bias, np.int64)
        if bias.size and (bias.min() < -2 ** 31 or bias.max() > 2 ** 31 - 1):
            raise UserError(f"{path}: bias holds values outside INT32; they cannot be stored")
        arrays = {"kept_rows": np.asarray(self.kept_rows, np.int64), "block_ptr": ptr,
                  "row_index": row_index, "values": values,
                  "bias": np.asarray(self.bias, np.int32),
                  "mult": np.asarray(self.mult, np.int64),
                  "shift": np.asarray(self.shift, np.int64)}
        header["content_sha256"] = content_sha256(arrays)
        self.header = header
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(header)), **arrays)
        return write_atomic(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path, expect=None):
        """Read a file written by :meth:`save`.

        ``expect`` maps header fields (model, layer, matrix, shape, block, model_sha256) to the
        values the caller needs; the first mismatch raises :class:`UserError` naming the field.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
        except Exception as e:          # truncated zip, bad member, not a file...
            raise UserError(f"{path}: not a compressed matrix file "
                            f"({type(e).__name__}: {str(e)[:120]})") from None
        missing = {"header", "kept_rows", "block_ptr", "row_index", "values", "bias", "mult",
                   "shift"} - set(arrays)
        if missing:
            raise UserError(f"{path}: missing arrays {sorted(missing)}")
        try:
            header = json.loads(str(arrays["header"]))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: header is not JSON ({e})") from None
        if not isinstance(header, dict):
            raise UserError(f"{path}: header is not a JSON object")
        if header.get("format") != FORMAT:
            raise UserError(f"{path}: field 'format' is {header.get('format')!r}, "
                            f"expected {FORMAT!r}")
        for key, want in (expect or {}).items():
            if key not in _HEADER_FIELDS:
                raise ValueError(f"unknown header field {key!r}")
            have = header.get(key)
            if key == "shape":
                have, want = list(have or []), list(want)
            if have != want:
                raise UserError(f"{path}: field '{key}' is {have!r} but the model/kernel needs "
                                f"{want!r}; regenerate the file (python -m gen prune) or use the "
                                f"matching model")
        if header.get("content_sha256") != content_sha256(arrays):
            raise UserError(f"{path}: field 'content_sha256' does not match the arrays: the "
                            f"file was changed or damaged after it was written; regenerate it "
                            f"(python -m gen prune)")
        _check_arrays(path, header, arrays)
        ptr = arrays["block_ptr"]
        block = int(header["block"])
        shape = tuple(header["shape"])
        rows = [arrays["row_index"][ptr[c]:ptr[c + 1]] for c in range(len(ptr) - 1)]
        values = [arrays["values"][ptr[c]:ptr[c + 1]] for c in range(len(ptr) - 1)]
        return cls(shape, block, arrays["kept_rows"], rows, values, arrays["bias"],
                   arrays["mult"], arrays["shift"], header)

    def __eq__(self, other):
        if not isinstance(other, CompressedMatrix):
            return NotImplemented
        return (self.shape == other.shape and self.block == other.block
                and np.array_equal(self.kept_rows, other.kept_rows)
                and all(np.array_equal(a, b) for a, b in zip(self.rows, other.rows))
                and all(np.array_equal(a, b) for a, b in zip(self.values, other.values))
                and np.array_equal(self.bias, other.bias) and np.array_equal(self.mult, other.mult)
                and np.array_equal(self.shift, other.shift))
