"""Output-stationary tiled GEMM engine: ``Y = requant(A @ W + bias)``.

The engine reads ``A`` and ``W`` from block RAM one array-wide word per cycle. Processing element
``(i, j)`` keeps the accumulator of output ``Y[mt*R + i, nt*C + j]`` for the tile ``(mt, nt)`` in
flight; row ``i`` of the array sees ``A[mt*R + i, k]`` and column ``j`` sees ``W[k, nt*C + j]``, so
a tile takes ``K`` cycles. When a tile ends, all ``R*C`` accumulators move in one cycle into a
shadow chain that drains one value per cycle through the requantizer while the next tile
accumulates. The array never stalls: the tile sequencer instead holds back the *last* beat of a
tile while the shadow chain is still busy, which keeps the clock enable off the wide datapath.

Buffer word layouts (shared with :mod:`gen.host.layout`):

* activation word ``mt*K + k``, byte ``r``: ``A[mt*R + r, k]`` (zero past ``M``);
* weight word ``nt*K + k``, byte ``c``: ``W[k, nt*C + c]`` (zero past ``N``);
* parameter word ``n``: :class:`~gen.hw.requant.RequantParams` of output channel ``n``;
* output ``Y[m, n]`` is emitted with address ``m*N + n``; padded positions are never emitted.
"""

import operator

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .requant import REQUANT_LATENCY, REQUANT_MULTIPLIERS, RequantParams, Requantizer

__all__ = ["DIM_WIDTH", "ADDR_WIDTH", "TileTag", "TileSequencer", "MacArray",
           "AccumulatorDrain", "OutputStationaryGemm", "OutputStream"]

#: Width of the runtime sizes M, K and N.
DIM_WIDTH = 16
#: Width of the internal address counters; buffer ports use their low bits.
ADDR_WIDTH = 32


def _times_constant(value, constant):
    """``value * constant`` as shifts and adds, so that no multiplier is spent on it."""
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class TileTag(data.StructLayout):
    """Where a tile lands: first row, first column and the output address of its corner."""
    def __init__(self):
        super().__init__({
            "m_base":   unsigned(DIM_WIDTH + 1),
            "n_base":   unsigned(DIM_WIDTH + 1),
            "out_base": unsigned(ADDR_WIDTH),
        })


def OutputStream():
    """Stream of requantized outputs with their row-major address ``m*N + n``."""
    return stream.Signature(data.StructLayout({
        "value": signed(8),
        "addr":  unsigned(ADDR_WIDTH),
    }))


class TileSequencer(wiring.Component):
    """Walks the tiles of an output-stationary GEMM and issues one beat per cycle.

    Parameters
    ----------
    rows, cols : int
        PE array size ``R x C``.
    act_depth, wgt_depth : int
        Words in the activation and weight buffers; an address past them sets ``overflow``.

    Members
    -------
    start : ``In(1)``
        Latch ``m_size``, ``k_size``, ``n_size`` and begin (all three must be non-zero).
    hold_last : ``In(1)``
        Do not issue a tile's last beat in this cycle.
    valid, first, last : ``Out(1)``
        A beat is issued this cycle; it begins / ends its tile's reduction over ``K``.
    act_addr, wgt_addr : ``Out(ADDR_WIDTH)``
        Buffer words the beat reads (valid with ``valid``).
    tag : ``Out(TileTag())``
        The tile the beat belongs to.
    running, overflow : ``Out(1)``
        Beats remain to be issued; an issued address exceeded its buffer.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._act_depth = operator.index(act_depth)
        self._wgt_depth = operator.index(wgt_depth)
        if self._rows < 1 or self._cols < 1:
            raise ValueError(f"array size must be positive, not {self._rows}x{self._cols}")
        super().__init__({
            "start":    In(1),
            "m_size":   In(DIM_WIDTH),
            "k_size":   In(DIM_WIDTH),
            "n_size":   In(DIM_WIDTH),
            "hold_last": In(1),
            "valid":    Out(1),
            "first":    Out(1),
            "last":     Out(1),
            "act_addr": Out(ADDR_WIDTH),
            "wgt_addr": Out(ADDR_WIDTH),
            "tag":      Out(TileTag()),
            "running":  Out(1),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        m_size = Signal(DIM_WIDTH)
        k_last_index = Signal(DIM_WIDTH)
        n_size = Signal(DIM_WIDTH)
        k_size = Signal(DIM_WIDTH)
        rows_times_n = Signal(ADDR_WIDTH)

        k = Signal(DIM_WIDTH)
        act_row_base = Signal(ADDR_WIDTH)     # mt * K
        out_row_base = Signal(ADDR_WIDTH)     # mt * R * N
        last_row_tile = Signal()
        last_col_tile = Signal()
        last_k = Signal()

        m.d.comb += [
            last_row_tile.eq(self.tag.m_base + self._rows >= m_size),
            last_col_tile.eq(self.tag.n_base + self._cols >= n_size),
            last_k.eq(k == k_last_index),
            self.first.eq(k == 0),
            self.last.eq(last_k),
            self.valid.eq(self.running & ~(last_k & self.hold_last)),
        ]

        with m.If(self.start):
            m.d.sync += [
                m_size.eq(self.m_size),
                k_size.eq(self.k_size),
                n_size.eq(self.n_size),
                k_last_index.eq(self.k_size - 1),
                rows_times_n.eq(_times_constant(self.n_size, self._rows)),
                k.eq(0),
                act_row_base.eq(0),
                out_row_base.eq(0),
                self.act_addr.eq(0),
                self.wgt_addr.eq(0),
                self.tag.m_base.eq(0),
                self.tag.n_base.eq(0),
                self.tag.out_base.eq(0),
                self.overflow.eq(0),
                self.running.eq(1),
            ]
        with m.Elif(self.valid):
            with m.If((self.act_addr >= self._act_depth) | (self.wgt_addr >= self._wgt_depth)):
                m.d.sync += self.overflow.eq(1)
            with m.If(~last_k):
                m.d.sync += [
                    k.eq(k + 1),
                    self.act_addr.eq(self.act_addr + 1),
                    self.wgt_addr.eq(self.wgt_addr + 1),
                ]
            with m.Elif(~last_col_tile):
                # Next column tile: the same rows of A again, the next columns of W.
                m.d.sync += [
                    k.eq(0),
                    self.act_addr.eq(act_row_base),
                    self.wgt_addr.eq(self.wgt_addr + 1),
                    self.tag.n_base.eq(self.tag.n_base + self._cols),
                    self.tag.out_base.eq(self.tag.out_base + self._cols),
                ]
            with m.Elif(~last_row_tile):
                m.d.sync += [
                    k.eq(0),
                    act_row_base.eq(act_row_base + k_size),
                    self.act_addr.eq(act_row_base + k_size),
                    self.wgt_addr.eq(0),
                    out_row_base.eq(out_row_base + rows_times_n),
                    self.tag.m_base.eq(self.tag.m_base + self._rows),
                    self.tag.n_base.eq(0),
                    self.tag.out_base.eq(out_row_base + rows_times_n),
                ]
            with m.Else():
                m.d.sync += self.running.eq(0)
        return m


class MacArray(wiring.Component):
    """``R x C`` INT8 multiply-accumulate array, operands broadcast along rows and columns.

    Pipeline: operand registers, product registers (one 18x18 multiplier each), INT32
    accumulators. A beat marked ``first`` restarts the accumulators; when a beat marked ``last``
    reaches them, ``result`` (the accumulators including that beat) is valid for one cycle
    with ``result_valid`` and the beat's ``tag``.

    Members
    -------
    act_word : ``In(R*8)``, wgt_word : ``In(C*8)``
        Packed operands of one beat: byte ``i`` of ``act_word`` feeds row ``i``.
    valid, first, last : ``In(1)``
        Beat flags, aligned with the operand words.
    tag : ``In(tag_shape)``
        Carried with the beat to ``result_tag``.
    result : ``Out(ArrayLayout(signed(32), R*C))``
        Element ``i*C + j`` is PE ``(i, j)``.
    result_valid : ``Out(1)``, result_tag : ``Out(tag_shape)``
    last_pending : ``Out(1)``
        A last beat is inside the array and has not reached the accumulators.
    busy : ``Out(1)``
        Any beat is inside the array.
    """

    #: Cycles from a beat at the input to its ``result_valid``.
    LATENCY = 2

    def __init__(self, *, rows, cols, tag_shape):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._tag_shape = tag_shape
        super().__init__({
            "act_word":     In(8 * self._rows),
            "wgt_word":     In(8 * self._cols),
            "valid":        In(1),
            "first":        In(1),
            "last":         In(1),
            "tag":          In(tag_shape),
            "result":       Out(data.ArrayLayout(signed(32), self._rows * self._cols)),
            "result_valid": Out(1),
            "result_tag":   Out(tag_shape),
            "last_pending": Out(1),
            "busy":         Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        # Stage 1: operand registers (they also cut the block RAM output from the fan-out).
        act = [Signal(signed(8), name=f"act_{i}") for i in range(rows)]
        wgt = [Signal(signed(8), name=f"wgt_{j}") for j in range(cols)]
        valid1, first1, last1 = Signal(), Signal(), Signal()
        tag1 = Signal(self._tag_shape)
        m.d.sync += [
            *(act[i].eq(self.act_word[8 * i:8 * i + 8]) for i in range(rows)),
            *(wgt[j].eq(self.wgt_word[8 * j:8 * j + 8]) for j in range(cols)),
            valid1.eq(self.valid), first1.eq(self.first), last1.eq(self.last),
            tag1.eq(self.tag),
        ]

        # Stage 2: products.
        valid2, first2, last2 = Signal(), Signal(), Signal()
        tag2 = Signal(self._tag_shape)
        products = [Signal(signed(16), name=f"prod_{i}_{j}")
                    for i in range(rows) for j in range(cols)]
        m.d.sync += [
            valid2.eq(valid1), first2.eq(first1), last2.eq(last1), tag2.eq(tag1),
            *(products[i * cols + j].eq(act[i] * wgt[j])
              for i in range(rows) for j in range(cols)),
        ]

        # Stage 3: accumulators; `result` is their next value, so it includes the last beat.
        for index, product in enumerate(products):
            acc = Signal(signed(32), name=f"acc_{index // cols}_{index % cols}")
            acc_next = self.result[index]
            m.d.comb += acc_next.eq(product + Mux(first2, 0, acc))
            with m.If(valid2):
                m.d.sync += acc.eq(acc_next)

        m.d.comb += [
            self.result_valid.eq(valid2 & last2),
            self.result_tag.eq(tag2),
            self.last_pending.eq((valid1 & last1) | (valid2 & last2)),
            self.busy.eq(valid1 | valid2),
        ]
        return m


class AccumulatorDrain(wiring.Component):
    """Shadow register chain that drains a finished tile one accumulator per cycle.

    Fetches each value's channel parameters from the parameter buffer and emits, for every
    position inside ``M x N``, a requantizer input tagged with its output address. Padded
    positions are dropped without a cycle of back-pressure.

    Members
    -------
    load : ``In(1)``
        Capture ``result`` and ``tag`` (only while ``busy`` is low).
    result : ``In(ArrayLayout(signed(32), R*C))``, tag : ``In(TileTag())``
    m_size, n_size : ``In(DIM_WIDTH)``
    param_rd : ``In(memory.ReadPort.Signature(...))``
        Read port of the parameter buffer.
    o : ``Out(stream.Signature(...))``
        Requantizer input: ``acc``, ``params``, ``tag`` (output address).
    busy : ``Out(1)``
        The shadow chain holds values not yet sent.
    pending : ``Out(1)``
        ``busy``, or a value is still in the output register.
    overflow : ``Out(1)``
        An emitted output or parameter address exceeded its buffer (cleared on ``clear``).
    clear : ``In(1)``
    """

    def __init__(self, *, rows, cols, param_depth, out_depth):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._param_depth = operator.index(param_depth)
        self._out_depth = operator.index(out_depth)
        param_addr_width = max(1, (self._param_depth - 1).bit_length())
        super().__init__({
            "load":     In(1),
            "result":   In(data.ArrayLayout(signed(32), self._rows * self._cols)),
            "tag":      In(TileTag()),
            "m_size":   In(DIM_WIDTH),
            "n_size":   In(DIM_WIDTH),
            "param_rd": In(memory.ReadPort.Signature(addr_width=param_addr_width,
                                                     shape=RequantParams())),
            "o":        Out(stream.Signature(data.StructLayout({
                "acc":    signed(32),
                "params": RequantParams(),
                "tag":    unsigned(ADDR_WIDTH),
            }))),
            "busy":     Out(1),
            "pending":  Out(1),
            "overflow": Out(1),
            "clear":    In(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        count = rows * cols

        shadow = [Signal(signed(32), name=f"shadow_{e}") for e in range(count)]
        tile = Signal(TileTag())
        row = Signal(range(rows))
        col = Signal(range(cols))
        row_addr = Signal(ADDR_WIDTH)      # out_base + row * N
        row_m = Signal(DIM_WIDTH + 1)      # m_base + row

        out_valid = Signal()
        out_skip = Signal()
        out_acc = Signal(signed(32))
        out_addr = Signal(ADDR_WIDTH)

        can_send = Signal()
        send = Signal()
        channel = Signal(DIM_WIDTH + 1)
        m.d.comb += [
            can_send.eq(~out_valid | out_skip | self.o.ready),
            send.eq(self.busy & can_send),
            channel.eq(tile.n_base + col),
            self.param_rd.addr.eq(channel),
            self.param_rd.en.eq(send),
        ]

        with m.If(self.load):
            m.d.sync += [
                *(shadow[e].eq(self.result[e]) for e in range(count)),
                tile.eq(self.tag),
                row.eq(0),
                col.eq(0),
                row_addr.eq(self.tag.out_base),
                row_m.eq(self.tag.m_base),
                self.busy.eq(1),
            ]
        with m.Elif(send):
            m.d.sync += [shadow[e].eq(shadow[e + 1]) for e in range(count - 1)]
            with m.If(col == cols - 1):
                m.d.sync += [
                    col.eq(0),
                    row.eq(row + 1),
                    row_addr.eq(row_addr + self.n_size),
                    row_m.eq(row_m + 1),
                ]
                with m.If(row == rows - 1):
                    m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += col.eq(col + 1)

        skip = Signal()
        m.d.comb += skip.eq((row_m >= self.m_size) | (channel >= self.n_size))
        with m.If(send):
            m.d.sync += [
                out_valid.eq(1),
                out_skip.eq(skip),
                out_acc.eq(shadow[0]),
                out_addr.eq(row_addr + col),
            ]
            with m.If(~skip & ((channel >= self._param_depth) |
                               (row_addr + col >= self._out_depth))):
                m.d.sync += self.overflow.eq(1)
        with m.Elif(can_send):
            m.d.sync += out_valid.eq(0)
        with m.If(self.clear):
            m.d.sync += self.overflow.eq(0)

        m.d.comb += [
            self.o.valid.eq(out_valid & ~out_skip),
            self.o.payload.acc.eq(out_acc),
            self.o.payload.params.eq(self.param_rd.data),
            self.o.payload.tag.eq(out_addr),
            self.pending.eq(self.busy | out_valid),
        ]
        return m


class OutputStationaryGemm(wiring.Component):
    """Tiled INT8 GEMM with per-output-channel requantization, output-stationary.

    Parameters
    ----------
    rows, cols : int
        PE array size.
    act_depth, wgt_depth, param_depth, out_depth : int
        Words in the activation, weight, parameter and output buffers.

    Members
    -------
    start : ``In(1)``
        Begin a job of size ``m_size x k_size x n_size`` (ignored while ``busy``).
    busy : ``Out(1)``, done : ``Out(1)``
        ``done`` pulses once when the last output has been accepted.
    error : ``Out(1)``
        The last job had a zero size or an address beyond a buffer; its outputs are invalid.
    cycles : ``Out(32)``
        Cycles from ``start`` to ``done`` of the current or last job.
    act_rd, wgt_rd, param_rd : read ports of the three input buffers.
    o : ``Out(OutputStream())``
        Requantized outputs with their row-major address, in tile order.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth, param_depth, out_depth):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._act_depth = operator.index(act_depth)
        self._wgt_depth = operator.index(wgt_depth)
        self._param_depth = operator.index(param_depth)
        self._out_depth = operator.index(out_depth)
        for name in ("rows", "cols", "act_depth", "wgt_depth", "param_depth", "out_depth"):
            if getattr(self, "_" + name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, '_' + name)}")
        super().__init__({
            "start":    In(1),
            "m_size":   In(DIM_WIDTH),
            "k_size":   In(DIM_WIDTH),
            "n_size":   In(DIM_WIDTH),
            "busy":     Out(1),
            "done":     Out(1),
            "error":    Out(1),
            "cycles":   Out(32),
            "act_rd":   In(memory.ReadPort.Signature(addr_width=self.act_addr_width,
                                                     shape=8 * self._rows)),
            "wgt_rd":   In(memory.ReadPort.Signature(addr_width=self.wgt_addr_width,
                                                     shape=8 * self._cols)),
            "param_rd": In(memory.ReadPort.Signature(addr_width=self.param_addr_width,
                                                     shape=RequantParams())),
            "o":        Out(OutputStream()),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def act_addr_width(self):
        return max(1, (self._act_depth - 1).bit_length())

    @property
    def wgt_addr_width(self):
        return max(1, (self._wgt_depth - 1).bit_length())

    @property
    def param_addr_width(self):
        return max(1, (self._param_depth - 1).bit_length())

    @property
    def multipliers(self):
        """18x18 multipliers the engine instantiates."""
        return self._rows * self._cols + REQUANT_MULTIPLIERS

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        m.submodules.sequencer = seq = TileSequencer(
            rows=rows, cols=cols, act_depth=self._act_depth, wgt_depth=self._wgt_depth)
        m.submodules.array = array = MacArray(rows=rows, cols=cols, tag_shape=TileTag())
        m.submodules.drain = drain = AccumulatorDrain(
            rows=rows, cols=cols, param_depth=self._param_depth, out_depth=self._out_depth)
        m.submodules.requant = requant = Requantizer(tag_shape=unsigned(ADDR_WIDTH))

        m_size = Signal(DIM_WIDTH)
        n_size = Signal(DIM_WIDTH)
        zero_size = Signal()
        launch = Signal()
        m.d.comb += [
            zero_size.eq((self.m_size == 0) | (self.k_size == 0) | (self.n_size == 0)),
            launch.eq(self.start & ~self.busy & ~zero_size),
            seq.start.eq(launch),
            seq.m_size.eq(self.m_size),
            seq.k_size.eq(self.k_size),
            seq.n_size.eq(self.n_size),
        ]

        # Beat stage aligned with the synchronous buffer reads.
        beat_valid, beat_first, beat_last = Signal(), Signal(), Signal()
        beat_tag = Signal(TileTag())
        m.d.comb += [
            self.act_rd.addr.eq(seq.act_addr),
            self.wgt_rd.addr.eq(seq.wgt_addr),
        ]
        m.d.sync += [
            beat_valid.eq(seq.valid), beat_first.eq(seq.first), beat_last.eq(seq.last),
            beat_tag.eq(seq.tag),
        ]
        m.d.comb += [
            array.act_word.eq(self.act_rd.data),
            array.wgt_word.eq(self.wgt_rd.data),
            array.valid.eq(beat_valid),
            array.first.eq(beat_first),
            array.last.eq(beat_last),
            array.tag.eq(beat_tag),
            # A tile may end only once the previous one has left the shadow chain.
            seq.hold_last.eq(drain.busy | (beat_valid & beat_last) | array.last_pending),
        ]

        m.d.comb += [
            drain.load.eq(array.result_valid),
            drain.result.eq(array.result),
            drain.tag.eq(array.result_tag),
            drain.m_size.eq(m_size),
            drain.n_size.eq(n_size),
            drain.clear.eq(launch),
        ]
        wiring.connect(m, wiring.flipped(self.param_rd), drain.param_rd)
        wiring.connect(m, drain.o, requant.i)

        m.d.comb += [
            self.o.valid.eq(requant.o.valid),
            self.o.payload.value.eq(requant.o.payload.value),
            self.o.payload.addr.eq(requant.o.payload.tag),
            requant.o.ready.eq(self.o.ready),
        ]

        finished = Signal()
        m.d.comb += finished.eq(self.busy & ~seq.running & ~beat_valid & ~array.busy &
                                ~drain.pending & ~requant.busy)
        m.d.sync += self.done.eq(0)
        with m.If(launch):
            m.d.sync += [
                m_size.eq(self.m_size),
                n_size.eq(self.n_size),
                self.busy.eq(1),
                self.error.eq(0),
                self.cycles.eq(0),
            ]
        with m.Elif(self.start & ~self.busy):
            m.d.sync += [self.error.eq(1), self.done.eq(1), self.cycles.eq(0)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(finished):
                m.d.sync += [
                    self.busy.eq(0),
                    self.done.eq(1),
                    self.error.eq(seq.overflow | drain.overflow),
                ]
        return m
