"""Host side of :mod:`gen.hw.attention`: memory images, descriptor programs and the cycle model.

Everything here works from an :class:`~gen.hw.attention.AttentionGeometry` (or a kernel, whose
``geometry`` is used): no hardware is constructed.

:func:`layer_program` turns the compressed matrices of one encoder layer (``CompressedMatrix``
of ``gen.sparse.format``, or anything with the same fields, e.g. :class:`BlockSparse`) into the
load beats of the kernel's weight, pointer and parameter memories and the descriptors of the
layer's attention (Q, K^T, V; per head scores -> softmax -> context; output projection) and FFN
(fc1 + ReLU, fc2). It refuses, with :class:`~gen.errors.UserError`, a pattern the kernel was not
generated for (shape, block width, or more weight words than a matrix's capacity).

The cycle model (:meth:`LayerProgram.cycles`) is exact for every op (checked against the
simulation by ``verif/test_attention.py``): MAC ops by :func:`gen.cycles.attention_mac_op_cycles`,
softmax ops by :func:`gen.cycles.attention_softmax_op_cycles` (the overlapped rows of
``softmax_rows_cycles`` plus a constant), through the geometry's ``mac_op_cycles`` and
``softmax_op_cycles``.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from .attention.geometry import (MATRICES, OP_CONTEXT, OP_LINEAR, OP_SCORES, OP_SOFTMAX,
                                 TARGET_PMEM, TARGET_QMEM, TARGET_WMEM, as_geometry)

__all__ = ["BlockSparse", "LayerProgram", "layer_program", "quantized_layer_program",
           "matrix_loads", "linear_op",
           "capacity_for", "pack_fields", "pack_params",
           "pack_activation_words", "unpack_activation_words", "kept_features_of",
           "footprint_bytes", "dense_footprint_bytes"]


def _ceil_div(a, b):
    return -(-a // b)


@dataclass
class BlockSparse:
    """Block-sparse ``W`` (K x N) with the fields of ``gen.sparse.format.CompressedMatrix``.

    Used where that module is not at hand (random tests); :meth:`from_dense` keeps the
    (row, column block) pairs that hold a non-zero weight.
    """
    shape: tuple
    block: int
    kept_rows: np.ndarray
    rows: list
    values: list
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray

    @property
    def blocks(self):
        return _ceil_div(self.shape[1], self.block)

    @classmethod
    def from_dense(cls, w, block, bias, mult, shift):
        w = np.asarray(w, dtype=np.int64)
        k, n = w.shape
        blocks = _ceil_div(n, block)
        padded = np.zeros((k, blocks * block), dtype=np.int64)
        padded[:, :n] = w
        rows, values = [], []
        for c in range(blocks):
            part = padded[:, c * block:(c + 1) * block]
            kept = np.flatnonzero(np.any(part != 0, axis=1))
            rows.append(kept)
            values.append(part[kept].astype(np.int8))
        kept_rows = np.flatnonzero(np.any(w != 0, axis=1))
        return cls((k, n), block, kept_rows, rows, values, np.asarray(bias, dtype=np.int64),
                   np.asarray(mult, dtype=np.int64), np.asarray(shift, dtype=np.int64))

    def to_dense(self):
        k, n = self.shape
        out = np.zeros((k, self.blocks * self.block), dtype=np.int64)
        for c in range(self.blocks):
            out[np.asarray(self.rows[c], dtype=np.int64), c * self.block:(c + 1) * self.block] = \
                np.asarray(self.values[c], dtype=np.int64)
        return out[:, :n]


def _words(matrix):
    return sum(len(r) for r in matrix.rows)


def footprint_bytes(matrix, index_bits=None):
    """Compressed bytes: B bytes + one row index per kept word, one pointer per block."""
    k, _ = matrix.shape
    index_bits = index_bits or max(1, (k - 1).bit_length())
    words = _words(matrix)
    pointer_bits = max(1, words.bit_length())
    return words * matrix.block + _ceil_div(words * index_bits + matrix.blocks * pointer_bits, 8)


def dense_footprint_bytes(matrix):
    k, n = matrix.shape
    return k * n


def pack_fields(layout, fields):
    """The integer of a ``data.StructLayout`` value given as ``{field: int}`` (others 0)."""
    value = 0
    for name, fld in layout:
        if name in fields:
            v = int(fields[name])
            width = fld.width
            if not 0 <= v < 2 ** width:
                raise UserError(f"descriptor field {name} = {v} does not fit {width} bits")
            value |= v << fld.offset
    return value


def pack_params(bias, mult, shift):
    """A ``RequantParams`` word: bias (INT32), M (31 bits), S (6 bits), LSB first."""
    return int(bias) & 0xFFFFFFFF | int(mult) << 32 | int(shift) << 63


def pack_activation_words(x, lanes, stride=None):
    """Words of an INT8 matrix ``x`` (R x C) with row stride ``ceil(C / B)`` (or ``stride``)."""
    x = np.asarray(x, dtype=np.int64)
    r, c = x.shape
    stride = stride or _ceil_div(c, lanes)
    words = []
    for i in range(r):
        row = np.zeros(stride * lanes, dtype=np.int64)
        row[:c] = x[i]
        for w in range(stride):
            words.append(sum((int(v) & 0xFF) << (8 * l)
                             for l, v in enumerate(row[w * lanes:(w + 1) * lanes])))
    return words


def unpack_activation_words(words, rows, cols, lanes, signed=True, stride=None):
    """Inverse of :func:`pack_activation_words`."""
    stride = stride or _ceil_div(cols, lanes)
    out = np.zeros((rows, cols), dtype=np.int64)
    for i in range(rows):
        for j in range(cols):
            byte = words[i * stride + j // lanes] >> (8 * (j % lanes)) & 0xFF
            out[i, j] = byte - 256 if signed and byte > 127 else byte
    return out


def kept_features_of(wq, wk, heads):
    """Per head, the features ``f`` (``0 .. d-1``, column ``h*d + f``) of Q and K that can be
    non-zero: column and bias of both Wq and Wk not all zero.

    ``Q[:, h*d + f]`` is exactly 0 when that column of Wq and its bias are 0
    (``requant(0) = 0``), and likewise for K: such a feature adds nothing to any score.
    """
    dim = wq.shape[1]
    d = dim // heads
    live = []
    for mat in (wq, wk):
        dense = mat.to_dense()
        live.append(np.any(dense != 0, axis=0) | (np.asarray(mat.bias) != 0))
    both = live[0] & live[1]
    return [[f for f in range(d) if both[h * d + f]] for h in range(heads)]


@dataclass
class LayerProgram:
    """Load beats and descriptors of one encoder layer on one kernel.

    Members
    -------
    geometry : AttentionGeometry
        The kernel's.
    loads : list of (target, addr, data)
        Weight words, index lists, block pointers and requantization parameters.
    attention, ffn : list of dict
        Descriptor fields of the attention part (input X at ``amem_map["x"]``, output Z at
        ``"z"``) and the FFN (input X2 at ``"x2"``, output F at ``"f"``).
    mac_steps : list
        For each descriptor of ``attention + ffn``: the inner-loop length of each group
        (kept words, kept features or keys; a group of 0 still takes one beat), None for
        softmax.
    kept_features : list of lists
        Per head, the features ``0 .. d-1`` the scores use.
    words : dict
        Weight words loaded per matrix.
    """
    geometry: object
    tokens: int
    loads: list = field(default_factory=list)
    attention: list = field(default_factory=list)
    ffn: list = field(default_factory=list)
    mac_steps: list = field(default_factory=list)
    kept_features: list = field(default_factory=list)
    words: dict = field(default_factory=dict)

    def descriptor_words(self, part):
        layout = self.geometry.descriptor_layout
        return [pack_fields(layout, fields) for fields in getattr(self, part)]

    def op_cycles(self, index):
        """Cycles of descriptor ``index`` of ``attention + ffn`` (exact, as ``cycles`` counts)."""
        op = (self.attention + self.ffn)[index]
        steps = self.mac_steps[index]
        if op["op"] == OP_SOFTMAX:
            return self.geometry.softmax_op_cycles(op["rows"], op["n_hi"])
        b = self.geometry.lanes
        last_lanes = min(b, op["n_hi"] - (op["c_hi"] - 1) * b)
        return self.geometry.mac_op_cycles(steps, last_lanes)

    def cycles(self, part=None):
        """Model cycles of ``"attention"``, ``"ffn"`` or (None) both."""
        n_att = len(self.attention)
        indices = {"attention": range(n_att),
                   "ffn": range(n_att, n_att + len(self.ffn)),
                   None: range(n_att + len(self.ffn))}[part]
        return sum(self.op_cycles(i) for i in indices)

    def macs(self, part=None):
        """Lane products issued: inner-loop steps times B (zero beats of empty groups excluded)."""
        ops = self.attention + self.ffn
        n_att = len(self.attention)
        indices = {"attention": range(n_att), "ffn": range(n_att, len(ops)),
                   None: range(len(ops))}[part]
        b = self.geometry.lanes
        return sum(sum(self.mac_steps[i]) * b for i in indices if self.mac_steps[i] is not None)


def _check_matrix(geometry, name, matrix):
    shape = tuple(int(v) for v in matrix.shape)
    if shape != geometry.matrix_shape(name):
        raise UserError(f"a sparsity pattern the kernel was not generated for: matrix {name} "
                        f"has shape {shape}, the kernel's is {geometry.matrix_shape(name)}")
    if int(matrix.block) != geometry.lanes:
        raise UserError(f"a sparsity pattern the kernel was not generated for: matrix {name} "
                        f"has block width {matrix.block}, the kernel has {geometry.lanes} lanes; "
                        f"compress with block={geometry.lanes} or generate with lanes="
                        f"{matrix.block}")
    words = _words(matrix)
    if words > geometry.capacity[name]:
        raise UserError(f"a sparsity pattern the kernel was not generated for: matrix {name} "
                        f"keeps {words} weight words, the kernel holds {geometry.capacity[name]}; "
                        f"prune more or generate the kernel with capacity {name}={words}")
    k, n = shape
    for field_name in ("bias", "mult", "shift"):
        if len(getattr(matrix, field_name)) != n:
            raise UserError(f"matrix {name}: {field_name} has {len(getattr(matrix, field_name))} "
                            f"entries, not {n}")
    bias = np.abs(np.asarray(matrix.bias, dtype=np.int64))
    if bias.size and int(bias.max()) + k * 2 ** 14 > 2 ** 31 - 1:
        raise UserError(f"matrix {name}: a bias of {int(bias.max())} plus {k} products can "
                        f"leave INT32 (numeric contract); rescale that output channel")
    mult = np.asarray(matrix.mult, dtype=np.int64)
    shift = np.asarray(matrix.shift, dtype=np.int64)
    if ((mult < 0) | (mult >= 2 ** 31)).any() or ((shift < 1) | (shift > 62)).any():
        raise UserError(f"matrix {name}: requantization outside 0 <= M < 2^31, 1 <= S <= 62")


def matrix_loads(geometry, matrix, wbase, pbase, qbase):
    """Load beats of one compressed matrix at wmem ``wbase``, pmem ``pbase``, qmem ``qbase``.

    Returns ``(loads, counts)``: the beats, and the kept words of each column block."""
    geometry = as_geometry(geometry)
    b = geometry.lanes
    wword = geometry.weight_word_layout
    loads, counts, addr = [], [], wbase
    n = int(matrix.shape[1])
    for c in range(_ceil_div(n, b)):
        rows = np.asarray(matrix.rows[c], dtype=np.int64)
        vals = np.asarray(matrix.values[c], dtype=np.int64).reshape(len(rows), b)
        start = addr
        for k, word in zip(rows, vals):
            value = sum((int(v) & 0xFF) << (8 * l) for l, v in enumerate(word))
            loads.append((TARGET_WMEM, addr, pack_fields(
                wword, {"value": value, "word": int(k) // b, "lane": int(k) % b})))
            addr += 1
        loads.append((TARGET_PMEM, pbase + c, pack_fields(
            geometry.pointer_layout, {"start": start, "count": len(rows)})))
        counts.append(len(rows))
    for j in range(n):
        loads.append((TARGET_QMEM, qbase + j,
                      pack_params(matrix.bias[j], matrix.mult[j], matrix.shift[j])))
    return loads, counts


def linear_op(geometry, shape, counts, *, rows, src, dst, ptr_base, q_base, relu=False,
              transpose=False, table=0):
    """``(fields, steps)`` of one linear op over a matrix of ``shape`` (K, N) whose column
    blocks keep ``counts`` words; ``src`` and ``dst`` are amem ``(base, stride)``."""
    b = as_geometry(geometry).lanes
    k, n = shape
    blocks = _ceil_div(n, b)
    fields = dict(op=OP_LINEAR, relu=int(relu), transpose=int(transpose), per_channel=1,
                  rows=rows, c_lo=0, c_hi=blocks, n_lo=0, n_hi=n,
                  a_base=src[0], a_stride=src[1], ptr_base=ptr_base,
                  q_base=q_base, o_base=dst[0], o_stride=dst[1], table=int(table))
    return fields, [counts[c] for _ in range(rows) for c in range(blocks)]


def layer_program(geometry, matrices, *, tokens, score_requant, context_requant,
                  kept_features=None, dense=False, parts=("attention", "ffn"), offsets=None,
                  regions=None, table=0):
    """Memory images and descriptors of one encoder layer.

    Parameters
    ----------
    geometry : AttentionGeometry
        The kernel's (a ``SparseAttentionKernel`` stands for its ``geometry``).
    matrices : dict
        ``{name: CompressedMatrix}`` for every name of :data:`~gen.hw.attention.MATRICES`.
    tokens : int
        T of this input (at most the kernel's).
    score_requant, context_requant : (M, S)
        The per-layer requantization of the scores and of the context.
    kept_features : list of lists or None
        Per head ``h``, the features ``f`` in ``0 .. d-1`` (column ``h*d + f`` of Q and K) to
        use, as ``QuantizedEncoderLayer.kept_features``; None derives them
        (:func:`kept_features_of`).
    dense : bool
        Build the program of the dense layer instead (every block full, every feature kept):
        the baseline of the cycle estimate. Its loads are not meaningful.
    parts : tuple
        ``"attention"`` (Q, K, V, O and the heads) and/or ``"ffn"`` (fc1, fc2): the matrices
        and ops of the other part are neither needed nor loaded.
    offsets : dict or None
        ``{"wmem", "pmem", "qmem"}``: added to every address of those memories (a layer of a
        many-layer image; the kernel's ``min_depths`` must cover it).
    regions : dict or None
        amem ``{region: (base, stride)}`` to use instead of the geometry's map.
    table : int
        The activation table fc1's results go through (a geometry with
        ``activation_tables``).
    """
    geometry = as_geometry(geometry)
    b, heads, dim = geometry.lanes, geometry.heads, geometry.dim
    d = dim // heads
    if not 1 <= tokens <= geometry.tokens:
        raise UserError(f"{tokens} tokens: the kernel was generated for 1..{geometry.tokens}")
    unknown = set(parts) - {"attention", "ffn"}
    if unknown or not parts:
        raise UserError(f"parts must name attention and/or ffn, not {sorted(parts)}")
    offsets = dict(offsets or {})
    used = [name for name in MATRICES
            if ("attention" if name in ("q", "k", "v", "o") else "ffn") in parts]
    missing = [name for name in used if name not in matrices]
    if missing:
        raise UserError(f"layer_program needs matrices {missing}")
    for name in used:
        _check_matrix(geometry, name, matrices[name])
    if dense or "attention" not in parts:
        kept_features = [list(range(d)) for _ in range(heads)]
    elif kept_features is None:
        kept_features = kept_features_of(matrices["q"], matrices["k"], heads)
    if len(kept_features) != heads:
        raise UserError(f"kept_features has {len(kept_features)} heads, the kernel {heads}")
    for h, feats in enumerate(kept_features):
        if any(not 0 <= int(f) < d for f in feats):
            raise UserError(f"kept_features of head {h} must lie in 0..{d - 1}")

    prog = LayerProgram(geometry=geometry, tokens=tokens,
                        kept_features=[list(map(int, f)) for f in kept_features])
    wmap, pmap = geometry.wmem_map, geometry.pmem_map
    qmap, amap = geometry.qmem_map, geometry.amem_map
    w_off, p_off, q_off = (int(offsets.get(name, 0)) for name in ("wmem", "pmem", "qmem"))
    counts = {}
    for name in used:
        loads, counts[name] = matrix_loads(geometry, matrices[name], wmap[name][0] + w_off,
                                           pmap[name][0] + p_off, qmap[name][0] + q_off)
        prog.loads += loads
        prog.words[name] = sum(counts[name])
    wword = geometry.weight_word_layout
    for what, (mult, shift) in (("score", score_requant), ("context", context_requant)):
        if "attention" not in parts:
            break
        if not (0 <= int(mult) < 2 ** 31 and 1 <= int(shift) <= 62):
            raise UserError(f"{what} requantization ({mult}, {shift}) is outside "
                            f"0 <= M < 2^31, 1 <= S <= 62")
    extra, n_extra = qmap["extra"]
    extra += q_off
    if n_extra < 2 and "attention" in parts:
        raise UserError("the kernel needs extra_params >= 2 for scores and context")
    for index, (mult, shift) in enumerate((score_requant, context_requant)):
        if "attention" in parts:
            prog.loads.append((TARGET_QMEM, extra + index, pack_params(0, mult, shift)))

    # Index lists: kept features of each head (offset into K^T), keys (offset into V).
    kt_base, _, kt_stride = amap["kt"]
    v_base, _, v_stride = amap["v"]
    feat_base, key_base = wmap["features"][0] + w_off, wmap["keys"][0] + w_off
    head_lists, addr = [], feat_base
    for h, feats in enumerate(prog.kept_features if "attention" in parts else ()):
        head_lists.append((addr, len(feats)))
        for f in (h * d + f for f in feats):
            prog.loads.append((TARGET_WMEM, addr, pack_fields(
                wword, {"value": f * kt_stride, "word": f // b, "lane": f % b})))
            addr += 1
    for j in range(tokens if "attention" in parts else 0):
        prog.loads.append((TARGET_WMEM, key_base + j, pack_fields(
            wword, {"value": j * v_stride, "word": j // b, "lane": j % b})))

    regions = dict(regions or {})

    def region(name):
        if name in regions:
            return regions[name]
        base, _, stride = amap[name]
        return base, stride

    def linear(name, src, dst, relu=False, transpose=False):
        k, n = geometry.matrix_shape(name)
        per_block = [k] * _ceil_div(n, b) if dense else counts[name]
        return linear_op(geometry, (k, n), per_block, rows=tokens, src=region(src),
                         dst=region(dst), ptr_base=pmap[name][0] + p_off,
                         q_base=qmap[name][0] + q_off, relu=relu, transpose=transpose,
                         table=table if relu else 0)

    ops = []
    if "attention" not in parts:
        heads = 0
    else:
        ops.append(linear("q", "x", "q"))
        ops.append(linear("k", "x", "kt", transpose=True))
        ops.append(linear("v", "x", "v"))
    q_base, q_stride = region("q")
    s_base, s_stride = region("s")
    p_base, p_stride = region("p")
    o_base, o_stride = region("o")
    key_blocks = _ceil_div(tokens, b)
    for h in range(heads):
        list_base, list_len = head_lists[h]
        ops.append((dict(op=OP_SCORES, rows=tokens, c_lo=0, c_hi=key_blocks, n_lo=0,
                         n_hi=tokens, a_base=q_base, a_stride=q_stride, b_base=kt_base,
                         list_base=list_base, list_len=list_len, q_base=extra,
                         per_channel=0, o_base=s_base, o_stride=s_stride),
                    [list_len] * (tokens * key_blocks)))
        ops.append((dict(op=OP_SOFTMAX, rows=tokens, n_hi=tokens, a_base=s_base,
                         a_stride=s_stride, o_base=p_base, o_stride=p_stride), None))
        c_lo, c_hi = h * d // b, _ceil_div((h + 1) * d, b)
        ops.append((dict(op=OP_CONTEXT, rows=tokens, c_lo=c_lo, c_hi=c_hi, n_lo=h * d,
                         n_hi=(h + 1) * d, a_base=p_base, a_stride=p_stride, b_base=v_base,
                         list_base=key_base, list_len=tokens, q_base=extra + 1,
                         per_channel=0, o_base=o_base, o_stride=o_stride),
                    [tokens] * (tokens * (c_hi - c_lo))))
    if "attention" in parts:
        ops.append(linear("o", "o", "z"))
    n_att = len(ops)
    if "ffn" in parts:
        ops.append(linear("fc1", "x2", "h", relu=True))
        ops.append(linear("fc2", "h", "f"))
    prog.attention = [f for f, _ in ops[:n_att]]
    prog.ffn = [f for f, _ in ops[n_att:]]
    prog.mac_steps = [s for _, s in ops]
    return prog


def quantized_layer_program(geometry, layer, tokens=None, dense=False):
    """:func:`layer_program` of a ``gen.sparse.quantize.QuantizedEncoderLayer``."""
    return layer_program(geometry, layer.matrices(), tokens=tokens or layer.tokens,
                         score_requant=(int(layer.scores_mult), int(layer.scores_shift)),
                         context_requant=(int(layer.context_mult), int(layer.context_shift)),
                         kept_features=[[int(f) for f in feats]
                                        for feats in layer.kept_features],
                         dense=dense)


def capacity_for(*layers):
    """Per matrix, the most weight words any of ``layers`` keeps: the ``capacity`` of an
    :class:`~gen.hw.attention.AttentionGeometry` for exactly this sparsity pattern."""
    return {name: max(_words(layer.matrices()[name]) for layer in layers) for name in MATRICES}
