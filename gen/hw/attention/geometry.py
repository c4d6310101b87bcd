"""What a sparse attention kernel is, without any hardware: sizes, word formats, memory map,
multipliers and cycle model.

:class:`AttentionGeometry` is a plain frozen data class. The host side
(:mod:`gen.hw.attention_layout`), the benchmarks and the tests use it to build memory images,
descriptor programs and cycle estimates without constructing or elaborating a kernel; the
kernel (:class:`~gen.hw.attention.SparseAttentionKernel`) takes one and sizes every component
from it.
"""

import operator
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

from amaranth.hdl import unsigned
from amaranth.lib import data

from ...errors import UserError
from ..mac_lanes import MAC_LANES_LATENCY, lane_multipliers, resolve_packing
from ..packing import ECP5_MULT18X18D
from ..requant import REQUANT_MULTIPLIERS, RequantParams
from ..softmax import SOFTMAX_MULTIPLIERS, check_max_length

__all__ = ["OP_LINEAR", "OP_SCORES", "OP_SOFTMAX", "OP_CONTEXT", "MATRICES",
           "TARGET_WMEM", "TARGET_PMEM", "TARGET_QMEM", "TARGET_AMEM",
           "WeightWord", "BlockPointer", "Descriptor", "AttentionGeometry", "as_geometry",
           "bits", "ceil_div"]

OP_LINEAR, OP_SCORES, OP_SOFTMAX, OP_CONTEXT = 0, 1, 2, 3
TARGET_WMEM, TARGET_PMEM, TARGET_QMEM, TARGET_AMEM = 0, 1, 2, 3

#: The weight matrices of one encoder layer, in memory order.
MATRICES = ("q", "k", "v", "o", "fc1", "fc2")

#: Activation regions of amem in memory order, as (rows, columns) in T, D, F.
_AMEM_REGIONS = ("x", "q", "kt", "v", "s", "p", "o", "z", "x2", "h", "f")


def bits(n):
    """Bits of an unsigned counter that holds 0..n."""
    return max(1, int(n).bit_length())


def ceil_div(a, b):
    return -(-a // b)


class WeightWord(data.StructLayout):
    """One weight-memory word: ``value`` (B bytes), inner index ``k`` as ``word``/``lane``."""
    def __init__(self, lanes, word_bits, lane_bits):
        super().__init__({
            "value": unsigned(8 * lanes),
            "word":  unsigned(word_bits),
            "lane":  unsigned(lane_bits),
        })


class BlockPointer(data.StructLayout):
    """Where a column block's words start in wmem, and how many there are."""
    def __init__(self, addr_bits, count_bits):
        super().__init__({"start": unsigned(addr_bits), "count": unsigned(count_bits)})


class Descriptor(data.StructLayout):
    """One op (see :mod:`gen.hw.attention` for the meaning of each field)."""
    def __init__(self, *, dim_bits, block_bits, aaddr_bits, waddr_bits, paddr_bits, qaddr_bits,
                 table_bits=1):
        super().__init__({
            "op":          unsigned(2),
            "relu":        unsigned(1),
            "transpose":   unsigned(1),
            "per_channel": unsigned(1),
            "rows":        unsigned(dim_bits),
            "c_lo":        unsigned(block_bits),
            "c_hi":        unsigned(block_bits),
            "n_lo":        unsigned(dim_bits),
            "n_hi":        unsigned(dim_bits),
            "a_base":      unsigned(aaddr_bits),
            "a_stride":    unsigned(aaddr_bits),
            "b_base":      unsigned(aaddr_bits),
            "ptr_base":    unsigned(paddr_bits),
            "list_base":   unsigned(waddr_bits),
            "list_len":    unsigned(dim_bits),
            "q_base":      unsigned(qaddr_bits),
            "o_base":      unsigned(aaddr_bits),
            "o_stride":    unsigned(aaddr_bits),
            "table":       unsigned(table_bits),
        })


def _count(name, value, minimum):
    if isinstance(value, bool):
        raise UserError(f"{name} must be an integer, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise UserError(f"{name} must be an integer, not {value!r}") from None
    if value < minimum:
        raise UserError(f"{name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class AttentionGeometry:
    """Sizes, word formats, memory map and cycle model of a sparse attention kernel.

    Parameters
    ----------
    lanes : int
        B, the MAC lanes, the bytes of a weight word and of an activation word (>= 2).
    tokens, dim, heads, ffn : int
        Largest T, D, H (``dim % heads == 0``) and FFN width the kernel is generated for.
    capacity : dict or None
        Weight words per matrix of :data:`MATRICES` (an int, or anything with ``words``, e.g.
        a ``CompressedMatrix``); missing matrices get their dense word count
        ``K * ceil(N / B)``. Stored as a read-only ``{matrix: words}`` of every matrix.
    packing : bool or "auto"
        Two INT8 products per multiplier where ``ports`` allow it (see
        :class:`~gen.hw.mac_lanes.MacLanes`). Stored resolved (a bool).
    ports : MultiplierPorts
        The target's multiplier (``gen.hw.packing.ECP5_MULT18X18D`` by default).
    extra_params : int
        Requantization entries after the per-channel ones (scores and context selections).
    activation_tables : int
        0, or the number of 256-entry INT8 tables (loaded through the kernel's ``act_wr``
        port at ``256 * table + v + 128``): results of ops with ``relu`` set become
        ``tables[desc.table][v + 128]`` instead of ``max(v, 0)`` (GELU, or any function of one
        INT8 value: docs/vit.md section 1.3). Adds ``ACTIVATION_TABLE_LATENCY`` cycles to
        every MAC op.
    extra_amem : int
        Words of amem after the layer's regions (region ``"extra"``), for a user's own data.
    min_depths : dict or None
        Least depth of ``wmem``, ``pmem`` and ``qmem`` (words), for a user that lays out more
        than one layer's weights (``gen.hw.vit``): the maps above stay those of one layer.

    Raises ``UserError`` naming the parameter when the kernel cannot be generated.
    """
    lanes: int
    tokens: int
    dim: int
    heads: int
    ffn: int
    capacity: object = None
    packing: object = False
    ports: object = ECP5_MULT18X18D
    extra_params: int = 2
    activation_tables: int = 0
    extra_amem: int = 0
    min_depths: object = None

    def __post_init__(self):
        lanes = _count("lanes", self.lanes, 0)
        if lanes < 2:
            raise UserError(f"lanes must be at least 2, not {lanes}")
        sizes = {name: _count(name, getattr(self, name), 1)
                 for name in ("tokens", "dim", "heads", "ffn")}
        if sizes["dim"] % sizes["heads"]:
            raise UserError(f"dim {sizes['dim']} is not a multiple of heads {sizes['heads']}")
        extra = _count("extra_params", self.extra_params, 0)
        extra_amem = _count("extra_amem", self.extra_amem, 0)
        tables = _count("activation_tables", self.activation_tables, 0)
        depths = dict(self.min_depths or {})
        unknown = set(depths) - {"wmem", "pmem", "qmem"}
        if unknown:
            raise UserError(f"min_depths names unknown memories {sorted(unknown)}; "
                            f"use wmem, pmem, qmem")
        depths = {name: _count(f"min_depths[{name}]", value, 0)
                  for name, value in depths.items()}
        object.__setattr__(self, "min_depths", MappingProxyType(depths))
        _, packed = resolve_packing(self.ports, self.packing)
        # The softmax unit's row buffer holds one row of scores: T of them.
        check_max_length(sizes["tokens"])
        for name, value in dict(lanes=lanes, extra_params=extra, packing=packed,
                                extra_amem=extra_amem, activation_tables=tables,
                                **sizes).items():
            object.__setattr__(self, name, value)

        given = dict(self.capacity or {})
        unknown = set(given) - set(MATRICES)
        if unknown:
            raise UserError(f"capacity names unknown matrices {sorted(unknown)}; "
                            f"use {list(MATRICES)}")
        capacity = {}
        for name in MATRICES:
            k, n = self.matrix_shape(name)
            dense = k * ceil_div(n, lanes)
            cap = given.get(name, dense)
            if not isinstance(cap, int):
                cap = getattr(cap, "words", None)
                cap = cap() if callable(cap) else cap
            cap = operator.index(cap)
            if not 0 <= cap <= dense:
                raise UserError(f"capacity of {name} must be 0..{dense} words, not {cap}")
            capacity[name] = cap
        object.__setattr__(self, "capacity", MappingProxyType(capacity))

        # The numeric contract: no accumulator may leave INT32 (|acc| <= K * 2^14 + |bias|).
        if self.max_inner * 2 ** 14 >= 2 ** 31:
            raise UserError(f"an inner dimension of {self.max_inner} could overflow the INT32 "
                            f"accumulators; keep dim, ffn and tokens below {2 ** 17}")
        # An index list entry holds an amem word offset in the B bytes of a weight word.
        if self.aaddr_bits > 8 * lanes:
            raise UserError(f"{lanes} lanes are too narrow to hold activation offsets of "
                            f"{self.aaddr_bits} bits in an index list; use more lanes")

    def __hash__(self):
        return hash((self.lanes, self.tokens, self.dim, self.heads, self.ffn,
                     tuple(self.capacity.items()), self.packing, self.ports, self.extra_params,
                     self.activation_tables, self.extra_amem,
                     tuple(sorted(self.min_depths.items()))))

    # -- shapes ------------------------------------------------------------------------------

    @property
    def head_dim(self):
        """d = D / H."""
        return self.dim // self.heads

    @property
    def max_inner(self):
        """The longest inner loop (and row count) of any op: ``max(D, FFN, T)``."""
        return max(self.dim, self.ffn, self.tokens)

    def matrix_shape(self, name):
        """``(K, N)`` of weight matrix ``name`` in ``y = x @ W``."""
        d, f = self.dim, self.ffn
        return {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d),
                "fc1": (d, f), "fc2": (f, d)}[name]

    # -- memory map --------------------------------------------------------------------------

    @cached_property
    def _maps(self):
        b, t, d, f = self.lanes, self.tokens, self.dim, self.ffn
        wmem, base = {}, 0
        for name in MATRICES:
            wmem[name] = (base, self.capacity[name])
            base += self.capacity[name]
        # Index lists: the kept features of every head (at most D in all) and the keys.
        wmem["features"] = (base, d)
        base += d
        wmem["keys"] = (base, t)
        base += t
        wmem_depth = max(1, base, self.min_depths.get("wmem", 0))

        pmem, base = {}, 0
        for name in MATRICES:
            blocks = ceil_div(self.matrix_shape(name)[1], b)
            pmem[name] = (base, blocks)
            base += blocks
        pmem_depth = max(base, self.min_depths.get("pmem", 0))

        qmem, base = {}, 0
        for name in MATRICES:
            n = self.matrix_shape(name)[1]
            qmem[name] = (base, n)
            base += n
        qmem["extra"] = (base, self.extra_params)
        qmem_depth = max(base + self.extra_params, self.min_depths.get("qmem", 0))

        # Activations: (rows, columns) of each matrix; strides are ceil(columns / B) words.
        shapes = {"x": (t, d), "q": (t, d), "kt": (d, t), "v": (t, d), "s": (t, t),
                  "p": (t, t), "o": (t, d), "z": (t, d), "x2": (t, d), "h": (t, f),
                  "f": (t, d)}
        amem, base = {}, 0
        for name in _AMEM_REGIONS:
            rows, cols = shapes[name]
            stride = ceil_div(cols, b)
            amem[name] = (base, rows, stride)
            base += rows * stride
        amem["extra"] = (base, self.extra_amem, 1)
        base += self.extra_amem
        return (wmem, wmem_depth), (pmem, pmem_depth), (qmem, qmem_depth), (amem, base)

    @property
    def wmem_map(self):
        """``{region: (base, words)}`` of wmem: the matrices, then the index lists."""
        return dict(self._maps[0][0])

    @property
    def pmem_map(self):
        """``{matrix: (base, blocks)}`` of pmem."""
        return dict(self._maps[1][0])

    @property
    def qmem_map(self):
        """``{matrix or "extra": (base, entries)}`` of qmem."""
        return dict(self._maps[2][0])

    @property
    def amem_map(self):
        """``{matrix: (base word, rows, stride)}`` of amem."""
        return dict(self._maps[3][0])

    @property
    def wmem_depth(self):
        return self._maps[0][1]

    @property
    def pmem_depth(self):
        return self._maps[1][1]

    @property
    def qmem_depth(self):
        return self._maps[2][1]

    @property
    def amem_depth(self):
        return self._maps[3][1]

    # -- field widths --------------------------------------------------------------------------

    @property
    def act_addr_bits(self):
        """Bits of an activation-table address (``256 * table + v + 128``)."""
        return 8 + bits(max(self.activation_tables - 1, 0)) if self.activation_tables > 1 else 8

    @property
    def word_bits(self):
        """Bits of ``k // B`` for any inner index ``k``."""
        return bits(ceil_div(self.max_inner, self.lanes) - 1)

    @property
    def lane_bits(self):
        return bits(self.lanes - 1)

    @property
    def aaddr_bits(self):
        return bits(self.amem_depth - 1)

    @property
    def waddr_bits(self):
        return bits(self.wmem_depth - 1)

    @property
    def paddr_bits(self):
        return bits(self.pmem_depth - 1)

    @property
    def qaddr_bits(self):
        return bits(self.qmem_depth - 1)

    @property
    def dim_bits(self):
        """Bits of a row count or output column (0 .. max_inner)."""
        return bits(self.max_inner)

    @property
    def block_bits(self):
        return bits(ceil_div(self.max_inner, self.lanes))

    @property
    def count_bits(self):
        """Bits of a group's inner-loop length."""
        return bits(self.max_inner)

    # -- word formats --------------------------------------------------------------------------

    @property
    def weight_word_layout(self):
        return WeightWord(self.lanes, self.word_bits, self.lane_bits)

    @property
    def pointer_layout(self):
        return BlockPointer(self.waddr_bits, self.count_bits)

    @property
    def descriptor_layout(self):
        return Descriptor(dim_bits=self.dim_bits, block_bits=self.block_bits,
                          aaddr_bits=self.aaddr_bits, waddr_bits=self.waddr_bits,
                          paddr_bits=self.paddr_bits, qaddr_bits=self.qaddr_bits,
                          table_bits=bits(max(self.activation_tables - 1, 0)))

    @property
    def load_layout(self):
        """Payload of the ``load`` stream: ``{target, addr, data}``, ``data`` wide enough for
        any memory's word."""
        addr = max(self.aaddr_bits, self.waddr_bits, self.paddr_bits, self.qaddr_bits)
        width = max(self.weight_word_layout.size, self.pointer_layout.size,
                    RequantParams().size, 8 * self.lanes)
        return data.StructLayout({"target": unsigned(2), "addr": unsigned(addr),
                                  "data": unsigned(width)})

    # -- resources -----------------------------------------------------------------------------

    @property
    def mac_latency(self):
        """Cycles from a last beat at the MAC structure's input to its ``done``."""
        return MAC_LANES_LATENCY

    @property
    def mac_multipliers(self):
        """Multipliers of the MAC lanes (half of them, rounded up, when packed)."""
        return lane_multipliers(self.lanes, self.packing)

    @property
    def multipliers(self):
        """Multipliers instantiated: the MAC structure's, the requantizer's and the softmax
        unit's (its one rounding product)."""
        return self.mac_multipliers + REQUANT_MULTIPLIERS + SOFTMAX_MULTIPLIERS

    # -- cycle model (gen.cycles) ---------------------------------------------------------------

    def mac_op_cycles(self, steps, last_lanes=None):
        """Exact cycles of one MAC op: :func:`gen.cycles.attention_mac_op_cycles`."""
        # gen.cycles imports the hardware modules' latencies, which import this module.
        from ...cycles import attention_mac_op_cycles
        from .mac import ACTIVATION_TABLE_LATENCY
        return attention_mac_op_cycles(
            steps, self.lanes, last_lanes, mac_latency=self.mac_latency,
            write_latency=ACTIVATION_TABLE_LATENCY if self.activation_tables else 0)

    def softmax_op_cycles(self, rows, length):
        """Exact cycles of a softmax op: :func:`gen.cycles.attention_softmax_op_cycles`."""
        from ...cycles import attention_softmax_op_cycles
        if not 1 <= length <= self.tokens:
            raise ValueError(f"row length {length} outside 1 .. {self.tokens}")
        return attention_softmax_op_cycles(rows, length)


def as_geometry(value):
    """``value`` if it is an :class:`AttentionGeometry`, else its ``geometry`` (a kernel)."""
    geometry = value if isinstance(value, AttentionGeometry) else getattr(value, "geometry", None)
    if not isinstance(geometry, AttentionGeometry):
        raise TypeError(f"expected an AttentionGeometry (or a kernel), not {value!r}")
    return geometry
