"""Output-stationary tiled GEMM engine: ``Y = requant(A @ W + bias)``.

The engine reads ``A`` and ``W`` from block RAM one array-wide word per cycle. Processing element
``(i, j)`` keeps the accumulator of output ``Y[mt*R + i, nt*C + j]`` for the tile ``(mt, nt)`` in
flight; row ``i`` of the array sees ``A[mt*R + i, k]`` and column ``j`` sees ``W[k, nt*C + j]``, so
a tile takes ``K`` cycles. When a tile ends, all ``R*C`` accumulators move in one cycle into a
set of shadow chains that drain ``drain_lanes`` values per cycle (adjacent outputs of one row)
through as many requantizers while the next tile accumulates, so a tile drains in
``R*C/drain_lanes`` cycles: with ``drain_lanes`` near ``R*C/K`` a small-K GEMM is no longer
drain-bound. The array never stalls: the tile sequencer instead holds back the *last* beat of a
tile until the previous tile's copy is done or certain to come first, which keeps the clock
enable off the wide datapath.

Buffer word layouts (shared with :mod:`gen.host.layout`):

* activation word ``mt*K + k``, byte ``r``: ``A[mt*R + r, k]`` (zero past ``M``);
* weight word ``nt*K + k``, byte ``c``: ``W[k, nt*C + c]`` (zero past ``N``);
* parameter word ``n // L``, element ``n % L`` (``L = drain_lanes``):
  :class:`~gen.hw.requant.RequantParams` of output channel ``n``;
* output ``Y[m, n]`` is emitted with address ``m*N + n``, up to ``L`` adjacent ones a beat;
  padded positions are never emitted.

A job may be a batch of ``B`` GEMMs of one shape that share the requantization parameters
(``b_size``; attention heads, grouped layers): GEMM ``b``'s activation and weight words follow
those of GEMM ``b - 1`` in their buffers, and its outputs start at address
``b * ceil(M/R)*R * N`` (``gen.host.layout.batch_out_stride``). Its tiles follow those of GEMM ``b - 1``
through the same pipeline, so only the first GEMM's fill and the last one's drain are paid.
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .multiplier import MULTIPLIER_LATENCY, PipelinedMultiplier
from .requant import REQUANT_MULTIPLIERS, RequantParams, Requantizer

__all__ = ["DIM_WIDTH", "ADDR_WIDTH", "OPERAND_READ_LATENCY", "GemmEngine", "TileTag", "TileSequencer",
           "MacArray", "AccumulatorDrain", "DrainTag", "OutputStationaryGemm", "OutputStream",
           "check_drain_lanes", "connect_requantizer_lanes", "lane_param_words",
           "register_overflow_check", "requantizer_input_signature", "times_constant"]

#: Width of the runtime sizes M, K and N.
DIM_WIDTH = 16
#: Width of the internal address counters; buffer ports use their low bits.
ADDR_WIDTH = 32
#: Cycles from an address on ``act_rd`` / ``wgt_rd`` to its data: the block RAM's read and
#: its output register (DP16KD ``REGMODE "OUTREG"``, see :mod:`gen.hw.accelerator`), which
#: takes the block RAM's slow clock-to-output off the fabric paths.
OPERAND_READ_LATENCY = 2
#: Adjacent columns of a row whose drain chain registers share one copy of the drain's state
#: (:class:`AccumulatorDrain`): a copy's enable reaches ``32 * CHAIN_GROUP_COLUMNS`` registers.
CHAIN_GROUP_COLUMNS = 4


def times_constant(value, constant):
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
    load : ``In(1)``
        Latch ``m_size``, ``k_size``, ``n_size`` and ``b_size`` (not while running): the
        sizes, and the flags compared from them, are registers by the next ``start``.
    start : ``In(1)``
        Begin with the sizes last loaded (all must be non-zero): ``b_size`` GEMMs, GEMM
        ``b``'s words following GEMM ``b - 1``'s.
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
    abort : ``In(1)``
        Issue no beat after this cycle (``running`` falls); beats issued stay valid.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._act_depth = operator.index(act_depth)
        self._wgt_depth = operator.index(wgt_depth)
        if self._rows < 1 or self._cols < 1:
            raise ValueError(f"array size must be positive, not {self._rows}x{self._cols}")
        super().__init__({
            "load":     In(1),
            "start":    In(1),
            "m_size":   In(DIM_WIDTH),
            "k_size":   In(DIM_WIDTH),
            "n_size":   In(DIM_WIDTH),
            "b_size":   In(DIM_WIDTH),
            "hold_last": In(1),
            "valid":    Out(1),
            "first":    Out(1),
            "last":     Out(1),
            "act_addr": Out(ADDR_WIDTH),
            "wgt_addr": Out(ADDR_WIDTH),
            "tag":      Out(TileTag()),
            "running":  Out(1),
            "overflow": Out(1),
            "abort":    In(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        m_size = Signal(DIM_WIDTH)
        k_size = Signal(DIM_WIDTH)
        n_size = Signal(DIM_WIDTH)
        rows_times_n = Signal(ADDR_WIDTH)

        # Position counters count down so that "is this the last k / column tile / row tile"
        # is a comparison of a register with a constant, not an add-and-compare.
        k_left = Signal(DIM_WIDTH)                 # K - 1 - k
        n_left = Signal(signed(DIM_WIDTH + 2))     # N - n_base
        m_left = Signal(signed(DIM_WIDTH + 2))     # M - m_base
        b_left = Signal(DIM_WIDTH)                 # B - b
        act_row_base = Signal(ADDR_WIDTH)          # (b * ceil(M/R) + mt) * K
        wgt_batch_base = Signal(ADDR_WIDTH)        # b * ceil(N/C) * K
        out_row_base = Signal(ADDR_WIDTH)          # (b * ceil(M/R) + mt) * R * N
        first = Signal()
        last_k = Signal()
        last_col_tile = Signal()
        last_row_tile = Signal()
        last_batch = Signal()

        # The three "last" flags are registers, set one step ahead from the counters' current
        # values, so that nothing but flip-flops drives the wide next-state multiplexers.
        single_k = Signal()             # K == 1
        single_col_tile = Signal()      # N <= C
        single_row_tile = Signal()      # M <= R
        # What the next beat does is kept in two registers beside `last_k` and `running`:
        # `stepping_k` (running, not the tile's last beat: the beat steps k, whatever
        # `hold_last` says) and `at_end` (running, the tile's last beat: it steps to the next
        # tile unless held). Every register's enable is then one LUT of flip-flops; decided
        # from `running`, `last_k`, `hold_last` and the three tile flags, it took four LUTs
        # across the sequencer, the routed critical path of the 12x12 array with two lanes
        # (125.2 MHz at seed 2). The step after the final tile runs like a batch step, to no
        # effect but `running` falling: the next start loads every register again.
        stepping_k = Signal()
        at_end = Signal()
        tile_step = Signal()
        final_tile = Signal()
        m.d.comb += [
            tile_step.eq(at_end & ~self.hold_last),
            final_tile.eq(last_col_tile & last_row_tile & last_batch),
            self.first.eq(first),
            self.last.eq(last_k),
            self.valid.eq(stepping_k | tile_step),
        ]

        def set_last_k(value):
            return [last_k.eq(value), at_end.eq(value), stepping_k.eq(~value)]

        # The sizes and their comparisons are latched a cycle before the start, so that the
        # start loads flip-flops only: the comparisons in front of the start's loads were the
        # routed critical path of the 12x12 array with two lanes (141.7 MHz at seed 1).
        b_size = Signal(DIM_WIDTH)
        single_batch = Signal()
        k_size_less_1 = Signal(DIM_WIDTH)
        with m.If(self.load):
            m.d.sync += [
                m_size.eq(self.m_size),
                k_size.eq(self.k_size),
                n_size.eq(self.n_size),
                b_size.eq(self.b_size),
                k_size_less_1.eq(self.k_size - 1),
                rows_times_n.eq(times_constant(self.n_size, rows)),
                single_k.eq(self.k_size == 1),
                single_col_tile.eq(self.n_size <= cols),
                single_row_tile.eq(self.m_size <= rows),
                single_batch.eq(self.b_size == 1),
            ]

        with m.If(self.start):
            m.d.sync += [
                k_left.eq(k_size_less_1),
                n_left.eq(n_size),
                m_left.eq(m_size),
                b_left.eq(b_size),
                *set_last_k(single_k),
                last_col_tile.eq(single_col_tile),
                last_row_tile.eq(single_row_tile),
                last_batch.eq(single_batch),
                first.eq(1),
                act_row_base.eq(0),
                wgt_batch_base.eq(0),
                out_row_base.eq(0),
                self.act_addr.eq(0),
                self.wgt_addr.eq(0),
                self.tag.m_base.eq(0),
                self.tag.n_base.eq(0),
                self.tag.out_base.eq(0),
                self.running.eq(1),
            ]
        with m.Elif(stepping_k):
            m.d.sync += [
                k_left.eq(k_left - 1),
                *set_last_k(k_left == 1),
                first.eq(0),
                self.act_addr.eq(self.act_addr + 1),
                self.wgt_addr.eq(self.wgt_addr + 1),
            ]
        with m.Elif(tile_step):
            m.d.sync += [
                k_left.eq(k_size_less_1),
                first.eq(1),
            ]
            with m.If(final_tile):
                m.d.sync += [self.running.eq(0), at_end.eq(0), stepping_k.eq(0)]
            with m.Else():
                m.d.sync += set_last_k(single_k)
            with m.If(~last_col_tile):
                # Next column tile: the same rows of A again, the next columns of W.
                m.d.sync += [
                    n_left.eq(n_left - cols),
                    last_col_tile.eq(n_left <= 2 * cols),
                    self.act_addr.eq(act_row_base),
                    self.wgt_addr.eq(self.wgt_addr + 1),
                    self.tag.n_base.eq(self.tag.n_base + cols),
                    self.tag.out_base.eq(self.tag.out_base + cols),
                ]
            with m.Else():
                # Next row tile, or the next GEMM of the batch, whose words follow this one's
                # in both buffers and whose outputs follow the padded rows of this one's last
                # row tile: either way the next rows of A, the first columns of W.
                m.d.sync += [
                    n_left.eq(n_size),
                    last_col_tile.eq(single_col_tile),
                    act_row_base.eq(act_row_base + k_size),
                    self.act_addr.eq(act_row_base + k_size),
                    out_row_base.eq(out_row_base + rows_times_n),
                    self.tag.n_base.eq(0),
                    self.tag.out_base.eq(out_row_base + rows_times_n),
                ]
                with m.If(~last_row_tile):
                    m.d.sync += [
                        m_left.eq(m_left - rows),
                        last_row_tile.eq(m_left <= 2 * rows),
                        self.wgt_addr.eq(wgt_batch_base),
                        self.tag.m_base.eq(self.tag.m_base + rows),
                    ]
                with m.Else():
                    m.d.sync += [
                        m_left.eq(m_size),
                        last_row_tile.eq(single_row_tile),
                        b_left.eq(b_left - 1),
                        last_batch.eq(b_left == 2),
                        wgt_batch_base.eq(self.wgt_addr + 1),
                        self.wgt_addr.eq(self.wgt_addr + 1),
                        self.tag.m_base.eq(0),
                    ]
        # An issued address beyond its buffer sets `overflow`: compared in one cycle and
        # flagged in the next, off the enables above. The flag is read when the job ends,
        # many cycles after its last beat.
        beyond = Signal()
        m.d.sync += beyond.eq(self.valid & ((self.act_addr >= self._act_depth) |
                                            (self.wgt_addr >= self._wgt_depth)))
        with m.If(self.start):
            m.d.sync += self.overflow.eq(0)
        with m.Elif(beyond):
            m.d.sync += self.overflow.eq(1)
        # Abort (host ABORT): stop issuing, over any start or step above.
        with m.If(self.abort):
            m.d.sync += [self.running.eq(0), at_end.eq(0), stepping_k.eq(0)]
        return m


class MacArray(wiring.Component):
    """Systolic ``R x C`` INT8 multiply-accumulate array, output-stationary.

    Row ``i`` of activations enters skewed by ``i`` cycles and moves one PE right per cycle;
    column ``j`` of weights enters skewed by ``j`` and moves one PE down per cycle, so PE
    ``(i, j)`` multiplies matching operands ``i + j`` cycles after they entered. Beat flags
    travel with the activations. Every net is PE-to-PE or PE-to-its-multiplier: nothing fans
    out across the array, which is what lets it run at the multipliers' speed.

    Each PE has an operand stage, a multiplier with its own input and output registers (one
    18x18 DSP), a product register and an INT32 accumulator. When the beat marked ``last`` reaches a PE, the PE's final sum goes to its
    ``hold`` register, where it stays until the drain has copied the whole tile.

    Members
    -------
    act_word : ``In(R*8)``, wgt_word : ``In(C*8)``
        Packed operands of one beat: byte ``i`` of ``act_word`` feeds row ``i``.
    valid, first, last : ``In(1)``
        Beat flags, aligned with the operand words.
    holds : ``Out(ArrayLayout(signed(32), R*C))``
        Element ``i*C + j`` is PE ``(i, j)``'s last finished sum.
    tile_ready : ``Out(1)``
        The last PE takes its hold value at the end of this cycle: from the next cycle on,
        ``holds`` is a complete tile.
    busy : ``Out(1)``
        Any beat is inside the array.
    """

    def __init__(self, *, rows, cols):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        super().__init__({
            "act_word":       In(8 * self._rows),
            "wgt_word":       In(8 * self._cols),
            "valid":          In(1),
            "first":          In(1),
            "last":           In(1),
            "holds":          Out(data.ArrayLayout(signed(32), self._rows * self._cols)),
            "tile_ready":     Out(1),
            "busy":           Out(1),
        })

    @property
    def latency(self):
        """Cycles from a beat at the input to the last PE taking it into its hold."""
        return self._rows + self._cols + MULTIPLIER_LATENCY

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        flags_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1})

        def delayed(value, cycles, name):
            for stage in range(cycles):
                reg = Signal.like(value, name=f"{name}_skew{stage}", reset_less=True)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        beat_flags = Signal(flags_layout)
        m.d.comb += beat_flags.eq(Cat(self.valid, self.first, self.last))
        row_act = [delayed(self.act_word[8 * i:8 * i + 8].as_signed(), i, f"act{i}")
                   for i in range(rows)]
        row_flags = [delayed(beat_flags, i, f"flags{i}") for i in range(rows)]
        col_wgt = [delayed(self.wgt_word[8 * j:8 * j + 8].as_signed(), j, f"wgt{j}")
                   for j in range(cols)]

        # Data registers need no reset (the flags say what is valid); a reset would cost a
        # LUT in front of each, right behind the block RAM's slow clock-to-output. The flags
        # need none either (they start at 0 from the bitstream's initial values): a beat left
        # in flight by a reset at most writes a hold that no `tile_ready` (reset) announces,
        # and the next tile's first beat restarts the accumulator. Without the reset's LSR a
        # PE's flag flip-flops pack next to its accumulator; with it, the placer moved the
        # delayed `first` of a 12x12 PE 49 rows away from its adder (126.2 MHz at seed 1).
        act = [[Signal(signed(8), name=f"act_{i}_{j}", reset_less=True) for j in range(cols)]
               for i in range(rows)]
        wgt = [[Signal(signed(8), name=f"wgt_{i}_{j}", reset_less=True) for j in range(cols)]
               for i in range(rows)]
        # Every PE's flags hold the same values as those of the PEs on its anti-diagonal, so a
        # synthesizer would merge them into one register fanning out across the chip. `keep`
        # marks them for `flows.ecp5`, which tells yosys not to (see KEEP_REGISTERS there).
        keep = {"keep": 1}
        flags = [[Signal(flags_layout, name=f"flags_{i}_{j}", attrs=keep, reset_less=True)
                  for j in range(cols)]
                 for i in range(rows)]
        for i in range(rows):
            for j in range(cols):
                m.d.sync += [
                    act[i][j].eq(row_act[i] if j == 0 else act[i][j - 1]),
                    flags[i][j].eq(row_flags[i] if j == 0 else flags[i][j - 1]),
                    wgt[i][j].eq(col_wgt[j] if i == 0 else wgt[i - 1][j]),
                ]
                m.submodules[f"mult_{i}_{j}"] = mult = PipelinedMultiplier(signed(8), signed(8))
                m.d.comb += [mult.a.eq(act[i][j]), mult.b.eq(wgt[i][j])]
                # One more fabric register: the DSP output may sit far from the accumulator.
                product = Signal(signed(16), name=f"prod_{i}_{j}", reset_less=True)
                m.d.sync += product.eq(mult.p)
                product_flags = flags[i][j]
                for stage in range(MULTIPLIER_LATENCY + 1):
                    delayed_flags = Signal(flags_layout, name=f"flags_{i}_{j}_d{stage}",
                                           attrs=keep, reset_less=True)
                    m.d.sync += delayed_flags.eq(product_flags)
                    product_flags = delayed_flags

                acc = Signal(signed(32), name=f"acc_{i}_{j}", reset_less=True)
                total = Signal(signed(32), name=f"sum_{i}_{j}")
                m.d.comb += total.eq(product + Mux(product_flags.first, 0, acc))
                hold = Signal(signed(32), name=f"hold_{i}_{j}", reset_less=True)
                m.d.comb += self.holds[i * cols + j].eq(hold)
                with m.If(product_flags.valid):
                    m.d.sync += acc.eq(total)
                    with m.If(product_flags.last):
                        m.d.sync += hold.eq(total)

        # Where the last beat is: one flag per cycle of the array's latency.
        tracker = Signal(self.latency, name="last_tracker")
        inflight = Signal(self.latency, name="beat_tracker")
        m.d.sync += [
            tracker.eq(Cat(self.valid & self.last, tracker[:-1])),
            inflight.eq(Cat(self.valid, inflight[:-1])),
        ]
        m.d.comb += [
            # tracker[-1] is the last beat at the last PE's product stage.
            self.tile_ready.eq(tracker[-1]),
            self.busy.eq(inflight.any()),
        ]
        return m


def check_drain_lanes(lanes, cols):
    """Raise ValueError unless ``lanes`` drain lanes suit a ``cols``-column array: a power of
    two (an output address splits into bank and word by its low bits) that divides ``cols``
    (every beat of the drain is ``lanes`` whole columns of one row)."""
    lanes = operator.index(lanes)
    if lanes < 1 or lanes & (lanes - 1):
        raise ValueError(f"drain lanes must be a power of two, not {lanes}")
    if cols % lanes:
        raise ValueError(f"drain lanes ({lanes}) must divide the array's columns ({cols})")
    return lanes


def OutputStream(lanes=1):
    """Stream of requantized outputs, ``lanes`` adjacent ones per beat: ``value[l]`` is the
    output at row-major address ``addr + l`` (``m*N + n``) where bit ``l`` of ``mask`` is set
    (the set bits are always the lowest ones: lanes past ``N`` are cleared)."""
    return stream.Signature(data.StructLayout({
        "value": data.ArrayLayout(signed(8), lanes),
        "addr":  unsigned(ADDR_WIDTH),
        "mask":  unsigned(lanes),
    }))


def connect_requantizer_lanes(m, drain_o, out, lanes):
    """Add ``lanes`` requantizers to ``m`` between a drain's output ``drain_o`` (``acc[l]``,
    ``params[l]`` and a :class:`DrainTag`) and the engine's ``out``
    (:func:`OutputStream`); return them. They see the same valid and ready in every cycle, so
    they move in lock step: lane 0 carries the beat's tag and speaks for all of them."""
    requants = []
    for lane in range(lanes):
        requant = Requantizer(tag_shape=DrainTag(lanes) if lane == 0 else unsigned(1))
        m.submodules[f"requant_{lane}" if lanes > 1 else "requant"] = requant
        requants.append(requant)
    out_tag = data.View(DrainTag(lanes), requants[0].o.payload.tag)
    m.d.comb += [
        drain_o.ready.eq(requants[0].i.ready),
        out.valid.eq(requants[0].o.valid),
        out.payload.addr.eq(out_tag.addr),
        out.payload.mask.eq(out_tag.mask),
    ]
    for lane, requant in enumerate(requants):
        m.d.comb += [
            requant.i.valid.eq(drain_o.valid),
            requant.i.payload.acc.eq(drain_o.payload.acc[lane]),
            requant.i.payload.params.eq(drain_o.payload.params[lane]),
            requant.o.ready.eq(out.ready),
            out.payload.value[lane].eq(requant.o.payload.value),
        ]
    m.d.comb += requants[0].i.payload.tag.eq(drain_o.payload.tag)
    return requants


def requantizer_input_signature(lanes):
    """What a drain hands its ``lanes`` requantizers a beat: ``acc[l]``, ``params[l]`` and the
    beat's :class:`DrainTag` (see :func:`connect_requantizer_lanes`)."""
    return stream.Signature(data.StructLayout({
        "acc":    data.ArrayLayout(signed(32), lanes),
        "params": data.ArrayLayout(RequantParams(), lanes),
        "tag":    DrainTag(lanes),
    }))


def register_overflow_check(m, *, valid, mask, channel, addr, param_depth, out_depth, clear,
                            overflow):
    """Set ``overflow`` (until ``clear``) when a beat ``valid`` in this cycle has a lane of
    ``mask`` whose channel (``channel + l``) or output address (``addr + l``) is beyond its
    buffer. The comparisons are registered before their OR sets the flag: comparators, the OR
    over the lanes and the flag's enable in one cycle were the routed critical path of the 8x8
    array with four lanes (111.4 MHz at 115); the flag is read only when the job ends, at
    least three cycles after the last beat. Lane ``l``'s bounds are constants less ``l``, so
    no lane needs an adder. Returns the registered comparisons (pending while any is set)."""
    lanes = len(mask)
    beyond = Signal(lanes)
    m.d.comb += [beyond[lane].eq(mask[lane] & (
        (channel >= param_depth - lane) | (addr >= out_depth - lane))) for lane in range(lanes)]
    beyond_q = Signal(lanes)
    m.d.sync += beyond_q.eq(Mux(valid & ~clear, beyond, 0))
    with m.If(clear):
        m.d.sync += overflow.eq(0)
    with m.Elif(beyond_q.any()):
        m.d.sync += overflow.eq(1)
    return beyond_q


def lane_param_words(param_depth, lanes):
    """Words of a lane-interleaved parameter buffer (``lanes`` channels a word) and the width
    of its address."""
    words = -(-param_depth // lanes)
    return words, max(1, (words - 1).bit_length())


class DrainTag(data.StructLayout):
    """What travels beside a drain beat through the requantizers: its first output address and
    which lanes carry an output."""
    def __init__(self, lanes):
        super().__init__({"addr": unsigned(ADDR_WIDTH), "mask": unsigned(lanes)})


class AccumulatorDrain(wiring.Component):
    """Copies a finished tile out of the PEs' hold registers and drains it, ``lanes`` values a
    cycle.

    The copy frees the hold registers at once, so the array can finish the next tile while
    this one drains. Lane ``l`` drains the columns ``j`` with ``j % lanes == l``, row by row,
    so each beat is ``lanes`` adjacent outputs of one row: a tile takes ``R*C/lanes`` beats.
    Each beat's channel parameters are one word of the lane-interleaved parameter buffer (word
    ``n // lanes`` holds channels ``n .. n+lanes-1``); each beat with an output inside
    ``M x N`` is emitted tagged with its first output address and its lane mask; beats wholly
    in the padding are dropped without costing back-pressure.

    Members
    -------
    tile_ready : ``In(1)``
        ``holds`` completes at the end of this cycle (see :class:`MacArray`).
    holds : ``In(ArrayLayout(signed(32), R*C))``, tag : ``In(TileTag())``
        The finished tile and where it lands (``tag`` is stable from ``tile_ready`` on).
    holds_full : ``Out(1)``
        A finished tile waits in the hold registers.
    copied : ``Out(1)``
        The hold registers are copied into the chains at the end of this cycle.
    m_size, n_size : ``In(DIM_WIDTH)``
    param_rd : ``In(memory.ReadPort.Signature(...))``
        Read port of the parameter buffer (``lanes`` channels a word), read ahead: ``addr`` is
        presented every cycle and ``data`` is the word at the address of the cycle before the
        last one with ``en`` (a block RAM read followed by an output register enabled by
        ``en``, see :class:`~gen.hw.accelerator.ParamBuffer`).
    o : ``Out(stream.Signature(...))``
        Requantizer inputs: ``acc[l]``, ``params[l]`` and the beat's :class:`DrainTag`.
    busy : ``Out(1)``
        The drain chains hold values not yet sent.
    pending : ``Out(1)``
        Anything not yet handed on: a full hold, a busy chain, or the output register.
    overflow : ``Out(1)``
        An emitted output or parameter address exceeded its buffer (cleared on ``clear``).
    clear : ``In(1)``
    """

    def __init__(self, *, rows, cols, param_depth, out_depth, lanes=1):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._lanes = check_drain_lanes(lanes, self._cols)
        self._param_depth = operator.index(param_depth)
        self._out_depth = operator.index(out_depth)
        super().__init__({
            "tile_ready": In(1),
            "holds":      In(data.ArrayLayout(signed(32), self._rows * self._cols)),
            "tag":        In(TileTag()),
            "holds_full": Out(1),
            "copied":     Out(1),
            "m_size":     In(DIM_WIDTH),
            "n_size":     In(DIM_WIDTH),
            "param_rd":   In(memory.ReadPort.Signature(
                addr_width=self.param_addr_width,
                shape=data.ArrayLayout(RequantParams(), self._lanes))),
            "o":          Out(requantizer_input_signature(self._lanes)),
            "busy":       Out(1),
            "pending":    Out(1),
            "overflow":   Out(1),
            "clear":      In(1),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def param_words(self):
        """Words of the lane-interleaved parameter buffer."""
        return lane_param_words(self._param_depth, self._lanes)[0]

    @property
    def param_addr_width(self):
        return lane_param_words(self._param_depth, self._lanes)[1]

    @property
    def beats_per_tile(self):
        return self._rows * self._cols // self._lanes

    def elaborate(self, platform):
        m = Module()
        rows, cols, lanes = self._rows, self._cols, self._lanes
        per_row = cols // lanes                 # beats of one row of the tile
        beats = rows * per_row
        lane_shift = (lanes - 1).bit_length()

        # chains[l][b]: the value lane l sends at beat b, from PE
        # (b // per_row, l + lanes * (b % per_row)).
        chains = [[Signal(signed(32), name=f"chain_{lane}_{b}", reset_less=True)
                   for b in range(beats)] for lane in range(lanes)]
        tile = Signal(TileTag())
        row = Signal(range(rows))
        col = Signal(range(cols))          # the column of lane 0 (a multiple of lanes)
        row_addr = Signal(ADDR_WIDTH)      # out_base + row * N
        row_m = Signal(DIM_WIDTH + 1)      # m_base + row

        out_valid = Signal()
        out_skip = Signal()
        out_mask = Signal(lanes)
        out_acc = Signal(data.ArrayLayout(signed(32), lanes), reset_less=True)
        out_addr = Signal(ADDR_WIDTH, reset_less=True)

        with m.If(self.tile_ready):
            m.d.sync += self.holds_full.eq(1)

        copy = Signal()
        can_send = Signal()
        send = Signal()
        channel = Signal(DIM_WIDTH + 1)   # n_base + col, kept as a counter
        # The parameter buffer reads one cycle ahead (its data comes out of the block RAM's
        # output register): its address is the channel of the next cycle, and `en` (the send)
        # takes that word into the output register, next to the value sent. The block RAM
        # lies far from the drain (4 ns of routing), so the address is no more than a choice
        # between two registers (below): an adder, the column compare and the copy in front of
        # that route were the critical path of the 12x12 array with two lanes (112.8 MHz at
        # 110).
        channel_after = Signal.like(channel)   # the channel of the beat after `channel`'s
        m.d.comb += [
            copy.eq(self.holds_full & ~self.busy),
            self.copied.eq(copy),
            can_send.eq(~out_valid | out_skip | self.o.ready),
            send.eq(self.busy & can_send),
            self.param_rd.addr.eq(Mux(send, channel_after, channel) >> lane_shift),
            self.param_rd.en.eq(send),
        ]

        # The chains span the whole array; driving their R*C*32 registers from the one `copy`
        # and `send` of the controller would make two nets with thousands of loads. Each group
        # of CHAIN_GROUP_COLUMNS adjacent columns of a row instead follows its own copy of the
        # controller's two state bits (kept apart from each other in synthesis by `keep`, see
        # flows.ecp5.KEEP_REGISTERS). With one copy a row, the copy of the 12x12 array's row
        # (384 registers across the chip) was its routed critical path (132.9 MHz).
        # Whether the beat sent next is the tile's last, kept as a register (from a count of
        # the beats left) so that a comparison of the row and column counters is not in front
        # of the long routes to every row's state (the routed critical path at 113.5 MHz).
        beats_left = Signal(range(beats))
        final_beat = Signal()
        with m.If(copy):
            m.d.sync += [beats_left.eq(beats - 1), final_beat.eq(beats == 1)]
        with m.Elif(send):
            m.d.sync += [beats_left.eq(beats_left - 1), final_beat.eq(beats_left == 1)]
        last_send = Signal()
        m.d.comb += last_send.eq(send & final_beat)
        group_beats = max(1, CHAIN_GROUP_COLUMNS // lanes)
        for r in range(rows):
            for g0 in range(0, per_row, group_beats):
                name = f"row{r}_{g0}"
                # `copy_g` (full and not busy) is a register too, taken from the next values
                # of the other two, so that the chains' enables and input selects are one LUT
                # of flip-flops: as a LUT of its own, it put two long routes in a row (the routed
                # critical path of the 12x12 array with two lanes at seed 1, 124.8 MHz).
                full_g, busy_g, copy_g = (Signal(name=f"{state}_{name}", attrs={"keep": 1})
                                          for state in ("holds_full", "busy", "copy"))
                full_next, busy_next = Signal(), Signal()
                send_g = Signal(name=f"send_{name}")
                m.d.comb += [
                    full_next.eq(~copy_g & (full_g | self.tile_ready)),
                    busy_next.eq(copy_g | (busy_g & ~last_send)),
                    send_g.eq(busy_g & can_send),
                ]
                m.d.sync += [full_g.eq(full_next), busy_g.eq(busy_next),
                             copy_g.eq(full_next & ~busy_next)]
                group = range(r * per_row + g0, r * per_row + min(per_row, g0 + group_beats))
                with m.If(copy_g):
                    m.d.sync += [chains[lane][b].eq(
                        self.holds[r * cols + lane + lanes * (b % per_row)])
                        for lane in range(lanes) for b in group]
                with m.Elif(send_g):
                    m.d.sync += [chains[lane][b].eq(chains[lane][b + 1])
                                 for lane in range(lanes) for b in group if b + 1 < beats]

        with m.If(copy):
            m.d.sync += [
                tile.eq(self.tag),
                row.eq(0),
                col.eq(0),
                row_addr.eq(self.tag.out_base),
                row_m.eq(self.tag.m_base),
                self.busy.eq(1),
                self.holds_full.eq(0),
            ]
        with m.Elif(send):
            with m.If(col == cols - lanes):
                m.d.sync += [
                    col.eq(0),
                    row.eq(row + 1),
                    row_addr.eq(row_addr + self.n_size),
                    row_m.eq(row_m + 1),
                ]
                with m.If(final_beat):
                    m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += col.eq(col + lanes)

        # `channel` and `channel_after` step one beat at each send. While the drain is idle, or
        # from its tile's last send, they follow the tag of the next tile, which is stable from
        # `tile_ready` on, so a copy finds them already at that tile's first two channels.
        with m.If(send & ~final_beat):
            # After the row's last column comes the tile's first again.
            wraps_after = col == cols - 2 * lanes if per_row > 1 else 1
            m.d.sync += [
                channel.eq(channel_after),
                channel_after.eq(Mux(wraps_after, tile.n_base, channel_after + lanes)),
            ]
        with m.Elif(~self.busy | send):
            m.d.sync += [
                channel.eq(self.tag.n_base),
                channel_after.eq(self.tag.n_base + lanes if per_row > 1 else self.tag.n_base),
            ]

        # Lane l carries an output when its row and its channel are inside M x N; lane 0 has
        # the beat's lowest channel, so a beat with no output is one whose lane 0 has none.
        row_inside = Signal()
        lane_inside = Signal(lanes)
        m.d.comb += row_inside.eq(row_m < self.m_size)
        m.d.comb += [lane_inside[lane].eq(channel + lane < self.n_size) for lane in range(lanes)]
        out_channel = Signal.like(channel)
        with m.If(send):
            m.d.sync += [
                out_valid.eq(1),
                out_skip.eq(~row_inside | ~lane_inside[0]),
                out_mask.eq(lane_inside),
                out_addr.eq(row_addr + col),
                out_channel.eq(channel),
            ]
            m.d.sync += [out_acc[lane].eq(chains[lane][0]) for lane in range(lanes)]
        with m.Elif(can_send):
            m.d.sync += out_valid.eq(0)
        # Checked from the output register, a cycle later, to keep adders and comparators in
        # separate cycles.
        beyond_q = register_overflow_check(
            m, valid=out_valid & ~out_skip, mask=out_mask, channel=out_channel, addr=out_addr,
            param_depth=self._param_depth, out_depth=self._out_depth, clear=self.clear,
            overflow=self.overflow)

        m.d.comb += [
            self.o.valid.eq(out_valid & ~out_skip),
            self.o.payload.acc.eq(out_acc),
            self.o.payload.params.eq(self.param_rd.data),
            self.o.payload.tag.addr.eq(out_addr),
            self.o.payload.tag.mask.eq(out_mask),
            self.pending.eq(self.holds_full | self.busy | out_valid | beyond_q.any()),
        ]
        return m


class GemmEngine(wiring.Component):
    """What every GEMM engine of :data:`gen.hw.accelerator.DATAFLOWS` has: its parameters,
    checked, its ports (see :class:`OutputStationaryGemm`), the properties derived from them,
    and the job control a subclass's ``elaborate`` builds with :meth:`register_request` and
    :meth:`finish_jobs`."""

    def __init__(self, *, rows, cols, act_depth, wgt_depth, param_depth, out_depth,
                 drain_lanes=1):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._act_depth = operator.index(act_depth)
        self._wgt_depth = operator.index(wgt_depth)
        self._param_depth = operator.index(param_depth)
        self._out_depth = operator.index(out_depth)
        for name in ("rows", "cols", "act_depth", "wgt_depth", "param_depth", "out_depth"):
            if getattr(self, "_" + name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, '_' + name)}")
        self._drain_lanes = check_drain_lanes(drain_lanes, self._cols)
        super().__init__({
            "start":    In(1),
            "m_size":   In(DIM_WIDTH),
            "k_size":   In(DIM_WIDTH),
            "n_size":   In(DIM_WIDTH),
            "b_size":   In(DIM_WIDTH),
            "busy":     Out(1),
            "done":     Out(1),
            "error":    Out(1),
            "cycles":   Out(32),
            "abort":    In(1),
            "act_rd":   In(memory.ReadPort.Signature(addr_width=self.act_addr_width,
                                                     shape=8 * self._rows)),
            "wgt_rd":   In(memory.ReadPort.Signature(addr_width=self.wgt_addr_width,
                                                     shape=8 * self._cols)),
            "param_rd": In(memory.ReadPort.Signature(
                addr_width=self.param_addr_width,
                shape=data.ArrayLayout(RequantParams(), self._drain_lanes))),
            "o":        Out(OutputStream(self._drain_lanes)),
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
    def drain_lanes(self):
        return self._drain_lanes

    @property
    def param_words(self):
        """Words of the lane-interleaved parameter buffer (``drain_lanes`` channels each)."""
        return lane_param_words(self._param_depth, self._drain_lanes)[0]

    @property
    def param_addr_width(self):
        return lane_param_words(self._param_depth, self._drain_lanes)[1]

    @property
    def multipliers(self):
        """18x18 multipliers the engine instantiates."""
        return self._rows * self._cols + self._drain_lanes * REQUANT_MULTIPLIERS

    #: Whether the engine runs batches (``b_size`` above 1); one that does not refuses them
    #: like a zero size.
    runs_batches = False

    def register_request(self, m):
        """``(launch, start_q, sizes_q, taken)``: the request is registered before it is
        acted on; a zero size, or a batch the engine does not run, never launches. ``sizes_q``
        is M, K, N and B. ``taken`` (combinational) is the cycle the request is registered
        while the engine is free: a launch follows in the next cycle unless it is refused, so
        a part may latch the request's sizes (``self.m_size`` ...) then.

        ``launch`` fans out to every sequencer register, so it is a flip-flop of its own, set
        from the request and the value ``busy`` takes next (``finish_jobs`` drives it): as
        ``start_q & ~busy & ~refused_q``, a LUT spread over the chip, it was the routed
        critical path of the 12x12 array with two lanes at seed 1 (118.7 MHz)."""
        start_q, refused_q = Signal(), Signal()
        sizes_q = [Signal(DIM_WIDTH, name=f"{dim}_size_q") for dim in "mknb"]
        sizes = [self.m_size, self.k_size, self.n_size, self.b_size]
        refused = Cat(size == 0 for size in sizes).any()
        if not self.runs_batches:
            refused = refused | (self.b_size != 1)
        m.d.sync += [start_q.eq(self.start), refused_q.eq(refused)]
        m.d.sync += [size_q.eq(size) for size_q, size in zip(sizes_q, sizes)]
        launch = Signal()
        taken = Signal()
        self._busy_next = Signal()
        m.d.comb += taken.eq(self.start & ~self._busy_next)
        m.d.sync += launch.eq(taken & ~refused)
        return launch, start_q, sizes_q, taken

    def finish_jobs(self, m, launch, start_q, idle, overflow, abort_to):
        """``busy``, ``done``, ``error``, ``cycles`` and ``abort`` of a job whose parts report
        ``idle`` (a list of 1-bit values) and ``overflow``; ``abort_to`` takes the abort.

        Each part's idle flag is registered next to the part, then combined in a second
        register: the parts are spread over the whole chip, so their AND would otherwise be one
        long path. "All idle two cycles ago, sequencer included" still means "all idle now":
        nothing enters the pipeline without a new start. The idle flags of the two cycles
        from a launch are those of the previous job: `all_idle` ignores them (a launch reset
        the part's flags, far away, was the routed critical path of a 12x12 build)."""
        parts_idle = Signal(len(idle))
        all_idle = Signal()
        launch_q = Signal()
        m.d.sync += [
            parts_idle.eq(Cat(*idle)),
            launch_q.eq(launch),
            all_idle.eq(parts_idle.all() & ~launch & ~launch_q),
        ]
        finished = Signal()
        aborted = Signal()
        m.d.comb += [
            finished.eq(self.busy & all_idle),
            # What `busy` takes at the end of this cycle (below), for `register_request`.
            self._busy_next.eq(launch | (self.busy & ~finished)),
        ]
        m.d.sync += self.done.eq(0)
        with m.If(launch):
            m.d.sync += [
                self.busy.eq(1),
                self.error.eq(0),
                self.cycles.eq(0),
                aborted.eq(0),
            ]
        with m.Elif(start_q & ~self.busy):
            m.d.sync += [self.error.eq(1), self.done.eq(1), self.cycles.eq(0)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(finished):
                m.d.sync += [
                    self.busy.eq(0),
                    self.done.eq(1),
                    self.error.eq(overflow | aborted),
                ]

        # Abort: the sequencer stops issuing; the job then finishes as above, with `error`.
        m.d.comb += abort_to.eq(self.abort)
        with m.If(self.abort & (self.busy | launch)):
            m.d.sync += aborted.eq(1)


class OutputStationaryGemm(GemmEngine):
    """Tiled INT8 GEMM with per-output-channel requantization, output-stationary.

    Runs batches: a job of ``b_size`` GEMMs of one shape (see the module's word layouts).

    Parameters
    ----------
    rows, cols : int
        PE array size.
    act_depth, wgt_depth, param_depth, out_depth : int
        Words in the activation, weight, parameter and output buffers.

    Members
    -------
    start : ``In(1)``
        Begin a job of ``b_size`` GEMMs of size ``m_size x k_size x n_size`` (ignored while
        ``busy``).
    busy : ``Out(1)``, done : ``Out(1)``
        ``done`` pulses once when the last output has been accepted.
    error : ``Out(1)``
        The last job had a zero size or an address beyond a buffer; its outputs are invalid.
        (An engine that does not run batches, ``runs_batches`` false, also refuses
        ``b_size`` other than 1 this way.)
    drain_lanes : int
        Outputs the drain hands to its requantizers per cycle (a power of two dividing
        ``cols``; one requantizer each): a tile drains in ``R*C/drain_lanes`` cycles.
    cycles : ``Out(32)``
        Cycles from ``start`` to ``done`` of the current or last job.
    abort : ``In(1)``
        Stop the running job: no beat is issued after this cycle; what is in flight drains
        (at most two tiles, about ``2*R*C + R + C`` cycles), then the
        job ends as usual (``busy`` falls, ``done`` pulses) with ``error`` set. Ignored when
        no job runs. Nothing of the job is left in the pipeline for the next one.
    act_rd, wgt_rd, param_rd : read ports of the three input buffers.
        ``act_rd`` and ``wgt_rd`` data arrive ``OPERAND_READ_LATENCY`` cycles after their
        address (``en`` is left at 1); ``param_rd`` is read ahead, ``drain_lanes`` channels a
        word (see :class:`AccumulatorDrain`).
    o : ``Out(OutputStream(drain_lanes))``
        Requantized outputs with their row-major address, in tile order.
    """

    runs_batches = True

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        m.submodules.sequencer = seq = TileSequencer(
            rows=rows, cols=cols, act_depth=self._act_depth, wgt_depth=self._wgt_depth)
        m.submodules.array = array = MacArray(rows=rows, cols=cols)
        m.submodules.drain = drain = AccumulatorDrain(
            rows=rows, cols=cols, param_depth=self._param_depth, out_depth=self._out_depth,
            lanes=self._drain_lanes)
        lanes = self._drain_lanes
        requants = connect_requantizer_lanes(m, drain.o, self.o, lanes)

        m_size = Signal(DIM_WIDTH)
        n_size = Signal(DIM_WIDTH)
        launch, start_q, sizes_q, taken = self.register_request(m)
        m.d.comb += [
            seq.load.eq(taken),
            seq.start.eq(launch),
            seq.m_size.eq(self.m_size),
            seq.k_size.eq(self.k_size),
            seq.n_size.eq(self.n_size),
            seq.b_size.eq(self.b_size),
        ]

        # Beat stages aligned with the operand buffer reads: the data of an address arrives
        # OPERAND_READ_LATENCY cycles later (block RAM read, then its output register).
        m.d.comb += [
            self.act_rd.addr.eq(seq.act_addr),
            self.wgt_rd.addr.eq(seq.wgt_addr),
        ]
        beat = Cat(seq.valid, seq.first, seq.last)
        beat_stages = []
        for stage in range(OPERAND_READ_LATENCY):
            beat_stage = Signal(3, name=f"beat_stage{stage}")
            m.d.sync += beat_stage.eq(beat)
            beat_stages.append(beat_stage)
            beat = beat_stage
        beat_valid, beat_first, beat_last = beat[0], beat[1], beat[2]
        beat_in_flight = Signal()
        m.d.comb += beat_in_flight.eq(Cat(stage[0] for stage in beat_stages).any())
        # Tiles whose last beat has issued and which the drain has not copied yet: at most
        # two, their tags in a queue (head: the next the drain copies). Counting them in a
        # register keeps an OR over the array's latency off the sequencer's path.
        last_issue = Signal()
        m.d.comb += last_issue.eq(seq.valid & seq.last)
        waiting = Signal(range(3))
        # The queue takes a last beat's tag a cycle after the beat, from registers: its write
        # select behind `seq.valid`, whose fan-out spans the sequencer, was the routed
        # critical path of the 12x12 array with two lanes (115.2 MHz, seed 2). The drain
        # reads the head at the earliest R + C + MULTIPLIER_LATENCY cycles after the beat.
        # `stored` counts the tags in the queue; it lags `waiting` by that cycle.
        issued_tag = Signal(TileTag())
        issued_last = Signal()
        m.d.sync += [issued_tag.eq(seq.tag), issued_last.eq(last_issue)]
        stored = Signal(range(3))
        tags = [Signal(TileTag(), name=f"tile_tag{k}") for k in range(2)]
        with m.If(drain.copied):
            m.d.sync += tags[0].eq(tags[1])
        with m.If(issued_last):
            with m.If((stored == 0) | ((stored == 1) & drain.copied)):
                m.d.sync += tags[0].eq(issued_tag)
            with m.Else():
                m.d.sync += tags[1].eq(issued_tag)
        m.d.sync += stored.eq(stored + issued_last - drain.copied)
        waiting_next = Signal.like(waiting)
        m.d.comb += waiting_next.eq(waiting + last_issue - drain.copied)
        m.d.sync += waiting.eq(waiting_next)
        # The next tile's last beat may issue before the drain has copied this one when the
        # copy is certain to come first: PE (i, j) takes the new last beat into its hold
        # register ORL + MULTIPLIER_LATENCY + 2 + i + j cycles after it issues, and with the
        # drain idle and its holds empty (nothing but this tile can make it busy) this tile is
        # copied R + C + MULTIPLIER_LATENCY + ORL + 1 cycles after its own last beat; so
        # R + C - 1 cycles between the two last beats are enough. Whether a last beat may
        # issue early is decided in the cycle before (the drain cannot turn busy then without
        # its holds full).
        spacing = rows + cols - 1
        since_last = Signal(range(spacing + 1))
        with m.If(last_issue):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < spacing):
            m.d.sync += since_last.eq(since_last + 1)
        early_next = Signal()
        m.d.comb += early_next.eq(~drain.busy & ~drain.holds_full & ~last_issue &
                                  (since_last >= spacing - 1))
        # Hold the next tile's last beat while two tiles wait, or one waits and the next
        # last beat would not be early. It is registered, from the next values of `waiting`
        # and `early`, so that `seq.valid`, which enables every sequencer register, is one
        # LUT of flip-flops (`running`, `last`, this): decided in the same cycle, it was the
        # routed critical path of the 8x8 and 12x12 arrays with one lane at 125 MHz.
        hold_last = Signal()
        m.d.sync += hold_last.eq((waiting_next == 2) | ((waiting_next == 1) & ~early_next))
        m.d.comb += [
            array.act_word.eq(self.act_rd.data),
            array.wgt_word.eq(self.wgt_rd.data),
            array.valid.eq(beat_valid),
            array.first.eq(beat_first),
            array.last.eq(beat_last),
            # A PE may finish a tile only once the drain has copied out the previous one, or
            # certainly will have by then (above).
            seq.hold_last.eq(hold_last),
        ]

        m.d.comb += [
            drain.tile_ready.eq(array.tile_ready),
            drain.holds.eq(array.holds),
            drain.tag.eq(tags[0]),
            drain.m_size.eq(m_size),
            drain.n_size.eq(n_size),
            drain.clear.eq(launch),
        ]
        wiring.connect(m, wiring.flipped(self.param_rd), drain.param_rd)

        with m.If(launch):
            m.d.sync += [m_size.eq(sizes_q[0]), n_size.eq(sizes_q[2])]
        self.finish_jobs(m, launch, start_q,
                         [~seq.running, ~beat_in_flight, ~array.busy, ~drain.pending,
                          ~requants[0].busy],
                         seq.overflow | drain.overflow, seq.abort)
        return m
