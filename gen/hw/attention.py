# amaranth: UnusedElaboratable=no
"""Sparse INT8 attention kernel: one B-lane MAC structure runs every product of an encoder layer.

See ``docs/sparse_attention.md`` (sections 3-6) for the data it consumes. The host loads weight
words, block pointers, requantization parameters and activations into on-chip memories through
the ``load`` stream, then issues one descriptor per op on the ``desc`` stream; results are read
back through ``rd_addr``/``rd_data``. Ops run one at a time; ``busy`` is high while one runs and
``done`` pulses when it has written its last value.

Memories (all :class:`amaranth.lib.memory.Memory`, synchronous reads)
---------------------------------------------------------------------

Each memory is cut into fixed regions when the kernel is generated; the properties
``wmem_map``, ``pmem_map``, ``qmem_map`` and ``amem_map`` give their bases:

* wmem: ``q, k, v, o, fc1, fc2`` (``capacity[name]`` words each), then ``features`` (D entries:
  the kept-feature lists of all heads) and ``keys`` (T entries);
* pmem: ``ceil(N / B)`` block pointers per matrix, same order;
* qmem: N parameter words per matrix, same order, then ``extra`` (scores, context);
* amem: ``x, q, kt, v, s, p, o, z, x2, h, f`` (X, Q, K^T, V, one head's S and P, the context O,
  Z = O Wo, the host's LN2 output X2, H = relu(X2 W1), F = H W2).

``wmem`` (target 0), word :class:`WeightWord`: ``value`` (B bytes, byte ``l`` = lane ``l``),
``word`` and ``lane`` (the inner index ``k`` as ``k // B`` and ``k % B``).

* A compressed matrix: for each column block ``c`` its kept rows ``k`` in order, ``value`` =
  ``W[k, c*B : c*B + B]`` (zero past ``N``).
* An index list (scores, context): one entry per inner index ``k`` (a kept feature ``f`` of a
  head, or a key ``j``); ``value`` holds the word offset of row ``k`` of the per-lane operand
  (``k * stride`` of K^T or V), the bytes are not multiplied.

``pmem`` (target 1), word :class:`BlockPointer`: ``start`` (wmem address of block ``c``'s first
word) and ``count`` (its kept rows, 0 for a fully pruned block).

``qmem`` (target 2), word :class:`~gen.hw.requant.RequantParams` (bias, M, S).

``amem`` (target 3), ``8*B`` bits: activations, B byte lanes. A matrix of ``R x C`` INT8 values
is stored row-major with a row stride of ``ceil(C / B)`` words (C the generated maximum):
element ``(r, e)`` at word ``base + r*stride + e // B``, byte lane ``e % B``. K is stored
transposed (K^T, ``D x T``) so that the scores' per-lane words are rows of K^T.
``gen.hw.attention_layout`` builds the images and the descriptor program of a layer.

Load stream ``load``: ``{target, addr, data}``; ``data`` holds the memory word in its low bits
(for wmem: ``value``, then ``word``, then ``lane``, least significant first, as in the layouts).
Accepted only while no op runs. Read stream ``rd_addr`` -> ``rd_data``: one amem word per
address, in order, served while no op runs (up to 8 results queue under back-pressure).
Loads and reads have priority over ``desc``: a descriptor is taken only when neither is offered
and no read result waits, so a host that loads, starts an op, waits for ``done`` and reads sees
program order.

Descriptor (:class:`Descriptor`, one op each)
---------------------------------------------

``op``
    0 linear, 1 scores, 2 softmax, 3 context.
``rows``
    Output rows ``M`` (tokens). An op with ``rows == 0``, ``c_hi <= c_lo`` (MAC ops) or
    ``n_hi == 0`` (softmax) does nothing but pulse ``done``.
``c_lo``, ``c_hi``
    Column blocks ``[c_lo, c_hi)`` to compute (B output columns each, block ``c`` = columns
    ``c*B .. c*B + B - 1``); ``n_lo``, ``n_hi``: only output columns in ``[n_lo, n_hi)`` are
    written (a head's slice of V, or T keys out of a padded block).
``a_base``, ``a_stride``
    Broadcast operand (X, Q or P; softmax: S) in amem: row ``i`` starts at ``a_base + i*a_stride``.
``b_base``
    scores / context: per-lane operand base (K^T or V); block ``c`` of inner index ``k`` is read
    at ``b_base + offset(k) + c`` (``offset`` from the index list).
``ptr_base``
    linear: pmem address of block 0 of the matrix (the *matrix id* resolves to it).
``list_base``, ``list_len``
    scores / context: the index list in wmem (kept features of the head, or keys 0..T-1).
``q_base``, ``per_channel``
    Requantization: parameters ``qmem[q_base + n]`` for output column ``n`` if ``per_channel``
    (linear), else ``qmem[q_base]`` for all (the *requant selection* of scores and context).
``relu``
    Write ``max(value, 0)``.
``transpose``
    Write output ``(i, n)`` to row ``n``, column ``i`` (K^T); needs ``c_lo == 0``.
``o_base``, ``o_stride``
    Output matrix in amem (softmax: P, with ``n_hi`` = row length).

The head of a scores / context op is implied by its index list and column range.

Timing of a MAC op (linear, scores, context)
--------------------------------------------

Groups ``g`` = (row ``i``, block ``c``) in row-major order take ``s_g = max(count, 1)`` beats
(a fully pruned block sends one beat with a zero operand so that its bias is still written).
The drain takes B cycles per group, so the last beat of a group waits until B cycles after the
previous group's last beat: the op takes ``max(s_0, 2) + sum_{g >= 1} max(s_g, B) +
mac.latency + tail`` cycles (``tail`` = B + 23 when the last group's lanes are all written;
exactly :meth:`SparseAttentionKernel.mac_op_cycles`). With one requantizer draining one value
per cycle, a group cannot finish faster than its B outputs: pruning a block below B words (or
a head below B features) saves no further cycles. A softmax op of R rows of n scores takes
``R * IntSoftmax.row_cycles(n) + 8`` (:meth:`SparseAttentionKernel.softmax_op_cycles`).

Every block RAM output is registered before any logic uses it (ECP5 block RAM's clock-to-output
is about 6 ns): wmem and amem are banked (512 words per bank) with registered bank outputs
(2-cycle reads), and the operand pipeline has 6 stages from a beat to the MAC structure.
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from .mac_lanes import MacLanes
from .packing import ECP5_MULT18X18D
from .requant import REQUANT_LATENCY, REQUANT_MULTIPLIERS, RequantParams, Requantizer
from .softmax import IntSoftmax

__all__ = ["OP_LINEAR", "OP_SCORES", "OP_SOFTMAX", "OP_CONTEXT", "MATRICES",
           "TARGET_WMEM", "TARGET_PMEM", "TARGET_QMEM", "TARGET_AMEM",
           "WeightWord", "BlockPointer", "Descriptor", "SparseAttentionKernel"]

OP_LINEAR, OP_SCORES, OP_SOFTMAX, OP_CONTEXT = 0, 1, 2, 3
#: Registers from a beat to the MAC structure's operands (see the operand pipeline).
_OPERAND_STAGES = 6
#: Entries of the queues in front of the softmax unit and of the host's read results.
_QUEUE_DEPTH = 8
#: Multipliers inside IntSoftmax (the ``e_j * r`` product, one PipelinedMultiplier).
SOFTMAX_MULTIPLIERS = 1
TARGET_WMEM, TARGET_PMEM, TARGET_QMEM, TARGET_AMEM = 0, 1, 2, 3

#: The weight matrices of one encoder layer, in memory order.
MATRICES = ("q", "k", "v", "o", "fc1", "fc2")

def _bits(n):
    """Bits of an unsigned counter that holds 0..n."""
    return max(1, int(n).bit_length())


def _ceil_div(a, b):
    return -(-a // b)


def _times_constant(value, constant):
    """``value * constant`` as shifts and adds (no multiplier)."""
    if constant == 0:
        return Const(0, 1)
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


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
    """One op (see the module docstring for the meaning of each field)."""
    def __init__(self, *, dim_bits, block_bits, aaddr_bits, waddr_bits, paddr_bits, qaddr_bits):
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
        })


class _BankedMemory(wiring.Component):
    """A memory cut into banks of at most ``bank_words`` words, read with 2 cycles of latency.

    A deep memory becomes a column of block RAMs whose outputs yosys joins with a multiplexer
    right behind their slow clock-to-output (about 6 ns on ECP5). Here every bank's output is
    registered first and the registered outputs are multiplexed in the next cycle.

    Members
    -------
    wr_addr, wr_data, wr_en : ``In``
        Write port (``wr_en`` has one bit per ``granularity`` bits of the word, or one).
    rd_addr, rd_data (``rd1_addr``, ``rd1_data`` with ``read_ports=2``)
        Read address; ``rd_data`` shows its word two cycles later (read every cycle).
    """

    def __init__(self, shape, depth, *, read_ports=1, granularity=None, bank_words=512):
        self._shape = shape
        self._depth = operator.index(depth)
        self._bank_words = operator.index(bank_words)
        self._read_ports = operator.index(read_ports)
        self._granularity = granularity
        addr_bits = _bits(self._depth - 1)
        enables = 1 if granularity is None else Shape.cast(shape).width // granularity
        members = {
            "wr_addr": In(addr_bits),
            "wr_data": In(shape),
            "wr_en":   In(enables),
        }
        for port in range(self._read_ports):
            suffix = "" if port == 0 else str(port)
            members[f"rd{suffix}_addr"] = In(addr_bits)
            members[f"rd{suffix}_data"] = Out(shape)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        per_bank = min(self._bank_words, self._depth)
        low_bits = max(1, (per_bank - 1).bit_length())
        banks = _ceil_div(self._depth, per_bank)
        ports = [(getattr(self, "rd_addr" if p == 0 else f"rd{p}_addr"),
                  getattr(self, "rd_data" if p == 0 else f"rd{p}_data"))
                 for p in range(self._read_ports)]
        selects = []
        for p, (addr, _) in enumerate(ports):
            select = Signal(range(banks), name=f"select{p}")
            select_q = Signal(range(banks), name=f"select{p}_q")
            m.d.sync += [select.eq(addr >> low_bits), select_q.eq(select)]
            selects.append(select_q)
        outputs = [[] for _ in ports]
        for k in range(banks):
            words = min(per_bank, self._depth - k * per_bank)
            mem = memory.Memory(shape=self._shape, depth=words, init=[])
            wr = mem.write_port(granularity=self._granularity)
            m.submodules[f"bank{k}"] = mem
            hit = (self.wr_addr >> low_bits) == k
            m.d.comb += [
                wr.addr.eq(self.wr_addr[:low_bits]), wr.data.eq(self.wr_data),
                wr.en.eq(Mux(hit, self.wr_en, 0)),
            ]
            for p, (addr, _) in enumerate(ports):
                rd = mem.read_port()
                # No reset: a reset would put a LUT between the block RAM and the register.
                data_q = Signal(self._shape, name=f"bank{k}_q{p}", reset_less=True)
                m.d.comb += rd.addr.eq(addr[:low_bits])
                m.d.sync += data_q.eq(rd.data)
                outputs[p].append(data_q)
        for p, (_, rd_data) in enumerate(ports):
            with m.Switch(selects[p]):
                for k, data_q in enumerate(outputs[p]):
                    with m.Case(k):
                        m.d.comb += rd_data.eq(data_q)
        return m


class SparseAttentionKernel(wiring.Component):
    """Sparse INT8 encoder-layer kernel: linear (compressed weights), scores, softmax, context.

    Parameters
    ----------
    lanes : int
        B, the MAC lanes, the bytes of a weight word and of an activation word (>= 2).
    tokens, dim, heads, ffn : int
        Largest T, D, H (``dim % heads == 0``) and FFN width the kernel is generated for.
    capacity : dict or None
        Weight words per matrix of :data:`MATRICES` (an int, or anything with ``words``, e.g. a
        ``CompressedMatrix``); missing matrices get their dense word count ``K * ceil(N / B)``.
    packing : bool or "auto"
        Passed to :class:`~gen.hw.mac_lanes.MacLanes` (two INT8 products per multiplier where
        ``ports`` allow it).
    ports : MultiplierPorts
        The target's multiplier (``gen.hw.packing.ECP5_MULT18X18D`` by default).
    extra_params : int
        Requantization entries after the per-channel ones (scores and context selections).

    Members
    -------
    load : ``In(stream.Signature(...))``
        ``{target, addr, data}`` writes one word of wmem / pmem / qmem / amem.
    desc : ``In(stream.Signature(Descriptor(...)))``
        One op per transfer.
    rd_addr : ``In(stream.Signature(...))``, rd_data : ``Out(stream.Signature(8 * B))``
        Read an amem word (served while no op runs).
    busy, done : ``Out(1)``
        An op runs; it has finished (one-cycle pulse).
    cycles : ``Out(32)``
        Cycles during which ``busy`` was high, since reset.
    """

    def __init__(self, *, lanes, tokens, dim, heads, ffn, capacity=None, packing=False,
                 ports=ECP5_MULT18X18D, extra_params=2):
        self._lanes = operator.index(lanes)
        self._tokens = operator.index(tokens)
        self._dim = operator.index(dim)
        self._heads = operator.index(heads)
        self._ffn = operator.index(ffn)
        self._packing = packing
        self._extra_params = operator.index(extra_params)
        if self._lanes < 2:
            raise UserError(f"lanes must be at least 2, not {self._lanes}")
        for name in ("tokens", "dim", "heads", "ffn"):
            if getattr(self, "_" + name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, '_' + name)}")
        if self._dim % self._heads:
            raise UserError(f"dim {self._dim} is not a multiple of heads {self._heads}")
        if self._extra_params < 0:
            raise UserError("extra_params must not be negative")

        # Built now so that its latency and multiplier count are known before elaboration.
        # (Kernels are also built only for their layouts and cycle model, never elaborated:
        # the first line of this file turns off Amaranth's unused-elaboratable warning for
        # these two children, which are always used when the kernel is.)
        self._mac = MacLanes(self._lanes, ports=ports, packing=packing)
        self._softmax = IntSoftmax(self._tokens)

        capacity = dict(capacity or {})
        unknown = set(capacity) - set(MATRICES)
        if unknown:
            raise UserError(f"capacity names unknown matrices {sorted(unknown)}; "
                            f"use {list(MATRICES)}")
        self._capacity = {}
        for name in MATRICES:
            k, n = self.matrix_shape(name)
            dense = k * _ceil_div(n, self._lanes)
            cap = capacity.get(name, dense)
            if not isinstance(cap, int):
                cap = getattr(cap, "words", None)
                cap = cap() if callable(cap) else cap
            cap = operator.index(cap)
            if not 0 <= cap <= dense:
                raise UserError(f"capacity of {name} must be 0..{dense} words, not {cap}")
            self._capacity[name] = cap

        self._build_memory_map()
        b = self._lanes
        max_inner = max(self._dim, self._ffn, self._tokens)
        # The numeric contract: no accumulator may leave INT32 (|acc| <= K * 2^14 + |bias|).
        if max_inner * 2 ** 14 >= 2 ** 31:
            raise UserError(f"an inner dimension of {max_inner} could overflow the INT32 "
                            f"accumulators; keep dim, ffn and tokens below {2 ** 17}")
        self._word_bits = _bits(_ceil_div(max_inner, b) - 1)
        self._lane_bits = _bits(b - 1)
        self._aaddr_bits = _bits(self.amem_depth - 1)
        self._waddr_bits = _bits(self.wmem_depth - 1)
        self._paddr_bits = _bits(self.pmem_depth - 1)
        self._qaddr_bits = _bits(self.qmem_depth - 1)
        self._dim_bits = _bits(max_inner)
        self._block_bits = _bits(_ceil_div(max_inner, b))
        self._count_bits = _bits(max_inner)
        if self._aaddr_bits > 8 * b:
            raise UserError(f"{b} lanes are too narrow to hold activation offsets of "
                            f"{self._aaddr_bits} bits in an index list; use more lanes")
        self._wword = WeightWord(b, self._word_bits, self._lane_bits)
        self._bptr = BlockPointer(self._waddr_bits, self._count_bits)
        self._desc = Descriptor(dim_bits=self._dim_bits, block_bits=self._block_bits,
                                aaddr_bits=self._aaddr_bits, waddr_bits=self._waddr_bits,
                                paddr_bits=self._paddr_bits, qaddr_bits=self._qaddr_bits)
        addr_bits = max(self._aaddr_bits, self._waddr_bits, self._paddr_bits, self._qaddr_bits)
        self._load_data_bits = max(self._wword.size, self._bptr.size, RequantParams().size, 8 * b)
        self._load_layout = data.StructLayout({
            "target": unsigned(2),
            "addr":   unsigned(addr_bits),
            "data":   unsigned(self._load_data_bits),
        })
        super().__init__({
            "load": In(stream.Signature(self._load_layout)),
            "desc": In(stream.Signature(self._desc)),
            "rd_addr": In(stream.Signature(unsigned(self._aaddr_bits))),
            "rd_data": Out(stream.Signature(unsigned(8 * b))),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
        })

    # -- parameters and derived values -----------------------------------------------------

    @property
    def lanes(self):
        return self._lanes

    @property
    def tokens(self):
        return self._tokens

    @property
    def dim(self):
        return self._dim

    @property
    def heads(self):
        return self._heads

    @property
    def ffn(self):
        return self._ffn

    @property
    def packing(self):
        """Whether MAC lane pairs share a multiplier (resolved)."""
        return self._mac.packing

    @property
    def capacity(self):
        """Weight words per matrix (a copy)."""
        return dict(self._capacity)

    @property
    def descriptor_layout(self):
        return self._desc

    @property
    def weight_word_layout(self):
        return self._wword

    @property
    def pointer_layout(self):
        return self._bptr

    @property
    def load_layout(self):
        """Payload layout of the ``load`` stream."""
        return self._load_layout

    @property
    def mac_latency(self):
        """Cycles from a last beat at the MAC structure's input to its ``done``."""
        return self._mac.latency

    def softmax_op_cycles(self, rows, length):
        """Cycles of a softmax op over ``rows`` rows of ``length`` scores (exact): the
        softmax unit's ``row_cycles`` per row plus accept, first read, last write and the
        idle detection."""
        return rows * self._softmax.row_cycles(length) + 8

    @property
    def multipliers(self):
        """Multipliers instantiated: the MAC structure's, the requantizer's and the softmax
        unit's (its one rounding product)."""
        return self._mac.multipliers + REQUANT_MULTIPLIERS + SOFTMAX_MULTIPLIERS

    def matrix_shape(self, name):
        """``(K, N)`` of weight matrix ``name`` in ``y = x @ W``."""
        d, f = self._dim, self._ffn
        return {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d),
                "fc1": (d, f), "fc2": (f, d)}[name]

    def _build_memory_map(self):
        b, t, d, f = self._lanes, self._tokens, self._dim, self._ffn
        regions, base = {}, 0
        for name in MATRICES:
            regions[name] = (base, self._capacity[name])
            base += self._capacity[name]
        # Index lists: the kept features of every head (at most D in all) and the keys.
        regions["features"] = (base, d)
        base += d
        regions["keys"] = (base, t)
        base += t
        self._wmem_map, self._wmem_depth = regions, max(1, base)

        regions, base = {}, 0
        for name in MATRICES:
            blocks = _ceil_div(self.matrix_shape(name)[1], b)
            regions[name] = (base, blocks)
            base += blocks
        self._pmem_map, self._pmem_depth = regions, base

        regions, base = {}, 0
        for name in MATRICES:
            n = self.matrix_shape(name)[1]
            regions[name] = (base, n)
            base += n
        regions["extra"] = (base, self._extra_params)
        base += self._extra_params
        self._qmem_map, self._qmem_depth = regions, base

        # Activations: (rows, columns) of each matrix; strides are ceil(columns / B) words.
        shapes = {"x": (t, d), "q": (t, d), "kt": (d, t), "v": (t, d), "s": (t, t),
                  "p": (t, t), "o": (t, d), "z": (t, d), "x2": (t, d), "h": (t, f),
                  "f": (t, d)}
        regions, base = {}, 0
        for name, (rows, cols) in shapes.items():
            stride = _ceil_div(cols, b)
            regions[name] = (base, rows, stride)
            base += rows * stride
        self._amem_map, self._amem_depth = regions, base

    @property
    def wmem_map(self):
        """``{region: (base, words)}`` of wmem: the matrices, then the index lists."""
        return dict(self._wmem_map)

    @property
    def pmem_map(self):
        """``{matrix: (base, blocks)}`` of pmem."""
        return dict(self._pmem_map)

    @property
    def qmem_map(self):
        """``{matrix or "extra": (base, entries)}`` of qmem."""
        return dict(self._qmem_map)

    @property
    def amem_map(self):
        """``{matrix: (base word, rows, stride)}`` of amem."""
        return dict(self._amem_map)

    @property
    def wmem_depth(self):
        return self._wmem_depth

    @property
    def pmem_depth(self):
        return self._pmem_depth

    @property
    def qmem_depth(self):
        return self._qmem_depth

    @property
    def amem_depth(self):
        return self._amem_depth

    def mac_op_cycles(self, steps, last_lanes=None):
        """Exact cycles (``cycles`` increments) of one MAC op.

        ``steps[g]`` is the beat count ``max(count, 1)`` of group ``g`` in issue order;
        ``last_lanes`` (default B) how many lanes of the final group are written (columns
        ``< n_hi``). The last beat of a group waits B cycles after the previous group's (the
        drain's pace), the first group at least 2 cycles; then the tail: the operand stages,
        the MAC latency, the drain up to the last written lane, the requantizer, the write
        and the idle detection.
        """
        steps = [max(1, int(s)) for s in steps]
        if not steps:
            raise ValueError("a MAC op has at least one group")
        b = self._lanes
        last_lanes = b if last_lanes is None else int(last_lanes)
        stages = _OPERAND_STAGES
        tail = max(last_lanes + 2 + REQUANT_LATENCY + 4 + stages, b + 5 + stages)
        return (max(steps[0], 2) + sum(max(s, b) for s in steps[1:]) + self.mac_latency +
                tail)

    # -- hardware ------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        b = self._lanes
        desc_layout = self._desc

        # wmem is the deepest memory (all weights): banked, with registered bank outputs.
        wmem = _BankedMemory(self._wword, self._wmem_depth)
        pmem = memory.Memory(shape=self._bptr, depth=self._pmem_depth, init=[])
        qmem = memory.Memory(shape=RequantParams(), depth=self._qmem_depth, init=[])
        # amem: port rd (broadcast operand, softmax input, host reads) and port rd1 (the
        # per-lane operand of scores and context), both 2 cycles, banked like wmem.
        amem = _BankedMemory(unsigned(8 * b), self._amem_depth, read_ports=2, granularity=8)
        p_wr, q_wr = pmem.write_port(), qmem.write_port()
        p_rd, q_rd = pmem.read_port(), qmem.read_port()
        m.submodules.wmem, m.submodules.pmem = wmem, pmem
        m.submodules.qmem, m.submodules.amem = qmem, amem

        m.submodules.mac = mac = self._mac
        # The requantizer's tag is the output word and byte lane.
        m.submodules.requant = requant = Requantizer(
            tag_shape=unsigned(self._aaddr_bits + self._lane_bits))
        m.submodules.softmax = softmax = self._softmax

        # ---- control: descriptor accept, busy, done, cycle counter ----
        d = Signal(desc_layout)
        rd_pending = Signal()      # host reads not yet handed over (driven below)
        start = Signal()            # the cycle a descriptor is accepted
        finish = Signal()           # the op has written everything (driven below)
        is_mac = Signal()
        m.d.comb += [
            self.load.ready.eq(~self.busy),
            # Host reads go first: port A's held read data would be overwritten by an op.
            self.desc.ready.eq(~self.busy & ~self.load.valid & ~self.rd_addr.valid &
                               ~rd_pending),
            start.eq(self.desc.valid & self.desc.ready),
            is_mac.eq(d.op != OP_SOFTMAX),
        ]
        # An op with nothing to do (no rows, no blocks, softmax rows of length 0) only
        # pulses done.
        empty = Signal()
        p = self.desc.payload
        m.d.comb += empty.eq((p.rows == 0) | Mux(p.op == OP_SOFTMAX, p.n_hi == 0,
                                                p.c_hi <= p.c_lo))
        m.d.sync += self.done.eq(0)
        with m.If(start):
            m.d.sync += [d.eq(self.desc.payload), self.busy.eq(1)]
        with m.Elif(self.busy & finish):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # ---- host loads ----
        load = self.load.payload
        load_en = Signal()
        m.d.comb += [
            load_en.eq(self.load.valid & self.load.ready),
            wmem.wr_addr.eq(load.addr), wmem.wr_data.eq(load.data),
            wmem.wr_en.eq(load_en & (load.target == TARGET_WMEM)),
            p_wr.addr.eq(load.addr), p_wr.data.eq(load.data),
            p_wr.en.eq(load_en & (load.target == TARGET_PMEM)),
            q_wr.addr.eq(load.addr), q_wr.data.eq(load.data),
            q_wr.en.eq(load_en & (load.target == TARGET_QMEM)),
        ]
        # amem's write port: host load, requantized results, or softmax results.
        res_we = Signal()
        res_addr = Signal(self._aaddr_bits)
        res_lane = Signal(self._lane_bits)
        res_value = Signal(8)
        with m.If(self.busy):
            m.d.comb += [
                amem.wr_addr.eq(res_addr),
                amem.wr_data.eq(Cat(*[res_value] * b)),
                amem.wr_en.eq(Mux(res_we, Const(1, b) << res_lane, 0)),
            ]
        with m.Else():
            m.d.comb += [
                amem.wr_addr.eq(load.addr),
                amem.wr_data.eq(load.data),
                amem.wr_en.eq(Mux(load_en & (load.target == TARGET_AMEM), (1 << b) - 1, 0)),
            ]

        # ---- host reads (while idle): amem port rd into a small queue ----
        # A read is taken only when the queue has room for it and the reads in flight.
        m.submodules.rd_queue = rd_queue = fifo.SyncFIFOBuffered(width=8 * b, depth=_QUEUE_DEPTH)
        rd_take = Signal()
        rd_flight = Signal(2)      # reads taken 1 and 2 cycles ago
        m.d.comb += [
            rd_take.eq(~self.busy & self.rd_addr.valid &
                       (rd_queue.level + rd_flight[0] + rd_flight[1] < _QUEUE_DEPTH)),
            self.rd_addr.ready.eq(rd_take),
            rd_queue.w_en.eq(rd_flight[1]),
            rd_queue.w_data.eq(amem.rd_data),
            self.rd_data.valid.eq(rd_queue.r_rdy),
            self.rd_data.payload.eq(rd_queue.r_data),
            rd_queue.r_en.eq(self.rd_data.ready),
            rd_pending.eq(rd_flight.any() | rd_queue.r_rdy | (rd_queue.level != 0)),
        ]
        m.d.sync += rd_flight.eq(Cat(rd_take, rd_flight[0]))

        # ---- MAC sequencer: groups (row i, block c), beats s within a group ----
        # Every block RAM output goes into a register before any logic: ECP5 block RAM has a
        # slow clock-to-output (about 6 ns), so no adder or multiplexer may follow it in the
        # same cycle.
        seq_run = Signal()
        i_left = Signal(self._dim_bits)          # rows after this one
        i_word = Signal(self._aaddr_bits)        # i // B (for transposed output)
        i_lane = Signal(self._lane_bits)         # i % B
        c = Signal(self._block_bits)
        a_row = Signal(self._aaddr_bits)         # a_base + i * a_stride
        b_col = Signal(self._aaddr_bits)         # b_base + c
        o_row = Signal(self._aaddr_bits)         # o_base + i * o_stride
        o_tcol = Signal(self._aaddr_bits)        # o_base + c * B * o_stride (transposed)
        n_base = Signal(self._dim_bits + 1)      # c * B
        since_last = Signal(_bits(b))            # cycles since the last beat of a group, to B
        count = Signal(self._count_bits)         # inner-loop length of the current group
        waddr = Signal(self._waddr_bits)         # wmem address of the next beat
        linear = Signal()
        m.d.comb += linear.eq(d.op == OP_LINEAR)

        # The group's flags are registers, set when the group is entered, so that the beat
        # decision (which enables most of the sequencer) starts from flip-flops.
        zero = Signal()              # the group has no words: one beat with a zero operand
        left = Signal(self._count_bits)  # beats after the current one (count - 1 - s)
        first = Signal()             # the next beat is the group's first
        last_block = Signal()        # c is the last block of the row
        c_next = Signal(self._block_bits)    # the block of the next group
        p_next = Signal(self._paddr_bits)    # its pointer's pmem address
        is_last = Signal()
        beat = Signal()
        group_begins = Signal()      # the first cycle of a group (its beats may be held)
        last_group = Signal()
        m.d.comb += [
            is_last.eq(zero | (left == 0)),
            beat.eq(seq_run & ~(is_last & (since_last < b))),
            last_group.eq(last_block & (i_left == 0)),
        ]

        # Block pointers: the first group's is read at accept; the next group's in the first
        # cycle of the current one. A group lasts at least 2 cycles (B >= 2, and the first
        # group's last beat waits one cycle), so the pointer is on pmem's read port when the
        # group ends and is taken into `count` / `waddr` then.
        m.d.comb += [
            p_rd.addr.eq(Mux(start, self.desc.payload.ptr_base + self.desc.payload.c_lo,
                             p_next)),
            p_rd.en.eq(start | (seq_run & group_begins)),
        ]
        next_count = Signal(self._count_bits)
        next_waddr = Signal(self._waddr_bits)
        m.d.comb += [
            next_count.eq(Mux(linear, p_rd.data.count, d.list_len)),
            next_waddr.eq(Mux(linear, p_rd.data.start, d.list_base)),
        ]

        def enter_group(c_new):
            """Updates when the group of block ``c_new`` (a register) becomes current."""
            wraps = c_new + 1 == d.c_hi
            c_after = Mux(wraps, d.c_lo, c_new + 1)
            return [
                count.eq(next_count), waddr.eq(next_waddr),
                zero.eq(next_count == 0), left.eq(next_count - 1), first.eq(1),
                last_block.eq(wraps),
                c_next.eq(c_after), p_next.eq(d.ptr_base + c_after),
            ]

        # Sequencer starts the cycle after accept (pointer read in flight).
        launch = Signal()
        m.d.sync += launch.eq(start & (self.desc.payload.op != OP_SOFTMAX) & ~empty)
        with m.If(launch):
            m.d.sync += enter_group(d.c_lo)
            m.d.sync += [
                seq_run.eq(1),
                i_left.eq(d.rows - 1), i_word.eq(0), i_lane.eq(0),
                c.eq(d.c_lo),
                a_row.eq(d.a_base), b_col.eq(d.b_base + d.c_lo),
                o_row.eq(d.o_base), o_tcol.eq(d.o_base),
                n_base.eq(_times_constant(d.c_lo, b)),
                since_last.eq(b - 1),
            ]
        with m.Elif(beat):
            with m.If(is_last):
                m.d.sync += enter_group(c_next)
                m.d.sync += [since_last.eq(1), c.eq(c_next)]
                with m.If(last_group):
                    m.d.sync += seq_run.eq(0)
                with m.Elif(last_block):
                    m.d.sync += [
                        n_base.eq(_times_constant(d.c_lo, b)),
                        b_col.eq(d.b_base + d.c_lo),
                        i_left.eq(i_left - 1),
                        a_row.eq(a_row + d.a_stride), o_row.eq(o_row + d.o_stride),
                        o_tcol.eq(d.o_base),
                    ]
                    with m.If(i_lane == b - 1):
                        m.d.sync += [i_lane.eq(0), i_word.eq(i_word + 1)]
                    with m.Else():
                        m.d.sync += i_lane.eq(i_lane + 1)
                with m.Else():
                    m.d.sync += [n_base.eq(n_base + b), b_col.eq(b_col + 1),
                                 o_tcol.eq(o_tcol + _times_constant(d.o_stride, b))]
            with m.Else():
                m.d.sync += [left.eq(left - 1), first.eq(0), waddr.eq(waddr + 1)]
        with m.If(~launch & ~(beat & is_last) & (since_last < b)):
            m.d.sync += since_last.eq(since_last + 1)
        m.d.sync += group_begins.eq(launch | (beat & is_last))

        # The tag of each group waits in a FIFO from its last beat to its `done`.
        tag_layout = data.StructLayout({
            "n_base": unsigned(self._dim_bits + 1),
            "word":   unsigned(self._aaddr_bits),
            "i_lane": unsigned(self._lane_bits),
        })
        fifo_depth = _ceil_div(_OPERAND_STAGES + self.mac_latency, b) + 2
        m.submodules.tags = tags = fifo.SyncFIFO(width=tag_layout.size, depth=fifo_depth)
        push_tag = Signal(tag_layout)
        m.d.comb += [
            push_tag.n_base.eq(n_base),
            push_tag.word.eq(Mux(d.transpose, o_tcol + i_word, o_row + c)),
            push_tag.i_lane.eq(i_lane),
            tags.w_data.eq(push_tag),
            tags.w_en.eq(beat & is_last),
        ]

        # Operand pipeline, _OPERAND_STAGES registers from a beat to the MAC structure:
        # 1 wmem read, 1b its banks' outputs registered, 2 the word registered, 3 amem reads
        # (broadcast row + k // B, per-lane row offset(k) + c), 4 their banks' outputs
        # registered, 5 lane select -> MAC operands.
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "zero": 1})
        st1, st1b, st2, st3, st4 = (Signal(flags, name=f"st{n}")
                                    for n in ("1", "1b", "2", "3", "4"))
        st1_a_row, st1b_a_row, st2_a_row = (Signal(self._aaddr_bits, name=f"st{n}_a_row")
                                            for n in ("1", "1b", "2"))
        st1_b_col, st1b_b_col, st2_b_col = (Signal(self._aaddr_bits, name=f"st{n}_b_col")
                                            for n in ("1", "1b", "2"))
        st2_word = Signal(self._word_bits)
        st2_lane, st3_lane, st4_lane = (Signal(self._lane_bits, name=f"st{n}_lane")
                                        for n in (2, 3, 4))
        # Data registers need no reset (the flags say what is valid).
        st2_value, st3_value, st4_value = (Signal(8 * b, name=f"st{n}_value", reset_less=True)
                                           for n in (2, 3, 4))
        m.d.comb += wmem.rd_addr.eq(waddr)
        m.d.sync += [
            st1.valid.eq(beat), st1.first.eq(first), st1.last.eq(is_last), st1.zero.eq(zero),
            st1_a_row.eq(a_row), st1_b_col.eq(b_col),
            st1b.eq(st1), st1b_a_row.eq(st1_a_row), st1b_b_col.eq(st1_b_col),
            st2.eq(st1b), st2_a_row.eq(st1b_a_row), st2_b_col.eq(st1b_b_col),
            st2_word.eq(wmem.rd_data.word), st2_lane.eq(wmem.rd_data.lane),
            st2_value.eq(wmem.rd_data.value),
            st3.eq(st2), st3_lane.eq(st2_lane), st3_value.eq(st2_value),
            st4.eq(st3), st4_lane.eq(st3_lane), st4_value.eq(st3_value),
        ]
        m.d.comb += amem.rd1_addr.eq(st2_b_col + st2_value[:self._aaddr_bits])
        x_reg = Signal(signed(8), reset_less=True)
        w_reg = Signal(8 * b, reset_less=True)
        st5 = Signal(flags)
        m.d.sync += [
            st5.eq(st4),
            x_reg.eq(Mux(st4.zero, 0, amem.rd_data.word_select(st4_lane, 8))),
            w_reg.eq(Mux(linear, st4_value, amem.rd1_data)),
        ]
        m.d.comb += [
            mac.valid.eq(st5.valid), mac.first.eq(st5.first), mac.last.eq(st5.last),
            mac.x.eq(x_reg), mac.w.eq(w_reg),
        ]
        outstanding = Signal(range(fifo_depth + 1))
        with m.If((beat & is_last) & ~mac.done):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~(beat & is_last) & mac.done):
            m.d.sync += outstanding.eq(outstanding - 1)

        # ---- drain: B accumulators into a shift chain, one value per cycle ----
        chain = [Signal(signed(32), name=f"chain_{l}", reset_less=True) for l in range(b)]
        drain_left = Signal(range(b + 1))
        dr_n = Signal(self._dim_bits + 1)
        dr_word = Signal(self._aaddr_bits)
        dr_lane = Signal(self._lane_bits)
        dr_ilane = Signal(self._lane_bits)
        send = Signal()
        m.d.comb += [send.eq(drain_left != 0), tags.r_en.eq(mac.done)]
        head_tag = Signal(tag_layout)
        m.d.comb += head_tag.eq(tags.r_data)
        with m.If(mac.done):
            m.d.sync += [chain[l].eq(mac.acc[l]) for l in range(b)]
            m.d.sync += [drain_left.eq(b), dr_n.eq(head_tag.n_base), dr_word.eq(head_tag.word),
                         dr_lane.eq(0), dr_ilane.eq(head_tag.i_lane)]
        with m.Elif(send):
            m.d.sync += [chain[l].eq(chain[l + 1]) for l in range(b - 1)]
            m.d.sync += [drain_left.eq(drain_left - 1), dr_n.eq(dr_n + 1),
                         dr_lane.eq(dr_lane + 1),
                         dr_word.eq(dr_word + Mux(d.transpose, d.o_stride, 0))]
        out_valid, out_skip = Signal(), Signal()
        out_acc = Signal(signed(32), reset_less=True)
        out_word = Signal(self._aaddr_bits)
        out_lane = Signal(self._lane_bits)
        m.d.sync += [
            out_valid.eq(send),
            out_skip.eq((dr_n < d.n_lo) | (dr_n >= d.n_hi)),
            out_acc.eq(chain[0]),
            out_word.eq(dr_word),
            out_lane.eq(Mux(d.transpose, dr_ilane, dr_lane)),
        ]
        m.d.comb += [
            q_rd.addr.eq(Mux(d.per_channel, d.q_base + dr_n, d.q_base)),
            q_rd.en.eq(send),
            requant.i.valid.eq(out_valid & ~out_skip),
            requant.i.payload.acc.eq(out_acc),
            requant.i.payload.params.eq(q_rd.data),
            requant.i.payload.tag.eq(Cat(out_word, out_lane)),
            requant.o.ready.eq(1),
        ]
        # Requantized values go straight into amem (registered), with the optional ReLU.
        mac_we = Signal()
        mac_addr = Signal(self._aaddr_bits)
        mac_lane = Signal(self._lane_bits)
        mac_value = Signal(signed(8))
        rq = requant.o.payload.value
        m.d.sync += [
            mac_we.eq(requant.o.valid),
            mac_addr.eq(requant.o.payload.tag[:self._aaddr_bits]),
            mac_lane.eq(requant.o.payload.tag[self._aaddr_bits:]),
            mac_value.eq(Mux(d.relu & rq[7], 0, rq)),
        ]

        # ---- softmax: S rows byte by byte into IntSoftmax, P rows back into amem ----
        # Reads of S go through amem's 2-cycle port into a queue in front of the unit; a read
        # is issued only when the queue has room for it and the reads in flight.
        sm_run = Signal()        # reading S
        sm_wait = Signal()       # writing P
        sm_rows_left = Signal(self._dim_bits)
        sm_col = Signal(self._dim_bits)
        sm_word = Signal(self._aaddr_bits)
        sm_lane = Signal(self._lane_bits)
        m.submodules.sm_queue = sm_queue = fifo.SyncFIFOBuffered(width=9, depth=_QUEUE_DEPTH)
        flight = data.StructLayout({"valid": 1, "lane": self._lane_bits, "last": 1})
        sm_f1, sm_f2 = Signal(flight), Signal(flight)
        sm_issue = Signal()
        sm_row_end = Signal()
        m.d.comb += [
            sm_row_end.eq(sm_col + 1 == d.n_hi),
            sm_issue.eq(sm_run & (sm_queue.level + sm_f1.valid + sm_f2.valid < _QUEUE_DEPTH)),
            sm_queue.w_en.eq(sm_f2.valid),
            sm_queue.w_data.eq(Cat(amem.rd_data.word_select(sm_f2.lane, 8), sm_f2.last)),
            softmax.i.valid.eq(sm_queue.r_rdy),
            softmax.i.payload.value.eq(sm_queue.r_data[:8]),
            softmax.i.payload.last.eq(sm_queue.r_data[8]),
            sm_queue.r_en.eq(softmax.i.ready),
        ]
        m.d.sync += [
            sm_f1.valid.eq(sm_issue), sm_f1.lane.eq(sm_lane), sm_f1.last.eq(sm_row_end),
            sm_f2.eq(sm_f1),
        ]
        with m.If(start & (self.desc.payload.op == OP_SOFTMAX) & ~empty):
            m.d.sync += [sm_run.eq(1), sm_wait.eq(1),
                         sm_rows_left.eq(self.desc.payload.rows - 1), sm_col.eq(0),
                         sm_word.eq(self.desc.payload.a_base), sm_lane.eq(0)]
        with m.Elif(sm_issue):
            with m.If(sm_row_end):
                m.d.sync += [sm_col.eq(0), sm_lane.eq(0), a_row.eq(a_row + d.a_stride),
                             sm_word.eq(a_row + d.a_stride), sm_rows_left.eq(sm_rows_left - 1)]
                with m.If(sm_rows_left == 0):
                    m.d.sync += sm_run.eq(0)
            with m.Else():
                m.d.sync += sm_col.eq(sm_col + 1)
                with m.If(sm_lane == b - 1):
                    m.d.sync += [sm_lane.eq(0), sm_word.eq(sm_word + 1)]
                with m.Else():
                    m.d.sync += sm_lane.eq(sm_lane + 1)
        with m.If(start):
            m.d.sync += a_row.eq(self.desc.payload.a_base)

        # Outputs: always accepted, written at (row, column) counters of P.
        so_rows_left = Signal(self._dim_bits)
        so_row = Signal(self._aaddr_bits)
        so_word = Signal(self._aaddr_bits)
        so_lane = Signal(self._lane_bits)
        sm_we = Signal()
        sm_addr = Signal(self._aaddr_bits)
        sm_out_lane = Signal(self._lane_bits)
        sm_value = Signal(8)
        m.d.comb += softmax.o.ready.eq(1)
        m.d.sync += [sm_we.eq(softmax.o.valid), sm_addr.eq(so_word), sm_out_lane.eq(so_lane),
                     sm_value.eq(softmax.o.payload.value)]
        with m.If(start):
            m.d.sync += [so_rows_left.eq(self.desc.payload.rows - 1),
                         so_row.eq(self.desc.payload.o_base), so_word.eq(self.desc.payload.o_base),
                         so_lane.eq(0)]
        with m.Elif(softmax.o.valid):
            with m.If(softmax.o.payload.last):
                m.d.sync += [so_row.eq(so_row + d.o_stride), so_word.eq(so_row + d.o_stride),
                             so_lane.eq(0), so_rows_left.eq(so_rows_left - 1)]
                with m.If(so_rows_left == 0):
                    m.d.sync += sm_wait.eq(0)
            with m.Elif(so_lane == b - 1):
                m.d.sync += [so_lane.eq(0), so_word.eq(so_word + 1)]
            with m.Else():
                m.d.sync += so_lane.eq(so_lane + 1)

        # Port A: broadcast operand (MAC), S (softmax), or host reads.
        with m.If(self.busy & is_mac):
            m.d.comb += amem.rd_addr.eq(st2_a_row + st2_word)
        with m.Elif(self.busy):
            m.d.comb += amem.rd_addr.eq(sm_word)
        with m.Else():
            m.d.comb += amem.rd_addr.eq(self.rd_addr.payload)

        # Result writes of the running op.
        m.d.comb += [
            res_we.eq(Mux(is_mac, mac_we, sm_we)),
            res_addr.eq(Mux(is_mac, mac_addr, sm_addr)),
            res_lane.eq(Mux(is_mac, mac_lane, sm_out_lane)),
            res_value.eq(Mux(is_mac, mac_value, sm_value)),
        ]

        # ---- completion: every part idle, registered twice (as in gen.hw.gemm) ----
        parts_idle = Signal(4)
        all_idle = Signal()
        m.d.sync += [
            parts_idle.eq(Cat(~seq_run & (outstanding == 0) & ~launch,
                              (drain_left == 0) & ~out_valid,
                              ~requant.busy & ~mac_we,
                              ~sm_run & ~sm_wait & ~sm_we & ~sm_f1.valid & ~sm_f2.valid &
                              ~sm_queue.r_rdy & (sm_queue.level == 0))),
            all_idle.eq(parts_idle.all()),
        ]
        with m.If(start):
            m.d.sync += [parts_idle.eq(0), all_idle.eq(0)]
        m.d.comb += finish.eq(all_idle & ~start)
        return m
