"""Weight-stationary tiled GEMM engine: ``Y = requant(A @ W + bias)``.

Processing element ``(i, j)`` holds the weight ``W[kt*R + i, nt*C + j]`` of the weight tile
``(kt, nt)`` in flight; the rows ``m`` of ``A`` stream through the array, row ``i`` of the
array seeing ``A[m, kt*R + i]``, and the partial sums move down the columns, so the bottom of
column ``j`` yields ``sum_i A[m, kt*R + i] * W[kt*R + i, nt*C + j]`` one row ``m`` a cycle.
The sums of the ``K/R`` weight tiles of one column tile are added in an accumulator memory
(one per column, ``m_tile`` rows, two banks); when a chunk of up to ``m_tile`` rows has seen
its last weight tile its bank drains, ``drain_lanes`` outputs a cycle through as many
requantizers, while the other bank takes the next chunk.

A pass is one weight tile against one chunk of rows: ``R`` cycles load the tile into a shift
chain in the PEs, one cycle captures it into their shadow registers, and the pass's first row
swaps it in, PE by PE, as it passes; the next tile loads while the rows of this one stream.
A pass of ``rows`` rows then takes ``max(rows, R + 2)`` cycles (:func:`gen.cycles.ws_gemm_cycles`).

Where it differs from the output-stationary engine (``gen.hw.gemm``): nothing pads ``M``
(an ``M`` that does not divide by ``R`` costs nothing), ``K`` pads to a multiple of ``R``, and
each weight tile is read once per chunk rather than once per row tile.

Buffer word layouts (shared with :mod:`gen.host.layout`):

* activation word ``kt*M + m``, byte ``i``: ``A[m, kt*R + i]`` (zero past ``K``);
* weight word ``nt*K + k``, byte ``c``: ``W[k, nt*C + c]`` (zero past ``N``), as for
  output-stationary;
* parameter word ``n // L``, element ``n % L``: as for output-stationary;
* output ``Y[m, n]`` is emitted with address ``m*N + n``, up to ``L`` adjacent ones a beat.
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .gemm import (ADDR_WIDTH, DIM_WIDTH, OPERAND_READ_LATENCY, GemmEngine,
                   check_drain_lanes, connect_requantizer_lanes, lane_param_words,
                   register_overflow_check, requantizer_input_signature)
from .multiplier import MULTIPLIER_LATENCY, PipelinedMultiplier
from .requant import RequantParams

__all__ = ["WS_M_TILE", "WS_MIN_ROWS", "WS_PASS_SETUP_CYCLES", "WeightStationaryGemm", "WsPassFlags",
           "WsSequencer", "WsArray", "WsAccumulators", "WsDrain", "ws_psum_shape"]

#: Rows of a chunk (the accumulator memories' depth): one DP16KD of 512 x 36 per column and bank.
WS_M_TILE = 512
#: Fewest array rows (a one-row array would be a row of multipliers, better generated as
#: output-stationary).
WS_MIN_ROWS = 2
#: Cycles a pass takes beyond its weight load when its rows are few: the loader's advance
#: cycle and the capture cycle (a pass takes ``max(rows, R + WS_PASS_SETUP_CYCLES)``).
WS_PASS_SETUP_CYCLES = 2


def ws_psum_shape(rows):
    """Shape of a partial sum down a column of ``rows`` PEs: ``rows`` INT8 x INT8 products."""
    return signed(16 + (rows - 1).bit_length() + 1)


class WsPassFlags(data.StructLayout):
    """What travels with each row of ``A`` through the array: the beat is valid, begins
    (``swap``: it swaps the new weight tile in) or ends its pass, which bank its chunk
    accumulates in and whether this is its chunk's first or last weight tile."""
    def __init__(self):
        super().__init__({"valid": 1, "swap": 1, "last": 1, "first_kt": 1, "last_kt": 1,
                          "bank": 1})


class ChunkTag(data.StructLayout):
    """Where a chunk's outputs land: its rows, the output address of its corner, its first
    channel and how many of the tile's columns are inside ``N``."""
    def __init__(self, cols):
        super().__init__({
            "rows":     unsigned(DIM_WIDTH),
            "out_base": unsigned(ADDR_WIDTH),
            "n_base":   unsigned(DIM_WIDTH + 1),
            "n_valid":  range(cols + 1),
        })


def _chain(m, value, cycles, name):
    for stage in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{stage}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class WsSequencer(wiring.Component):
    """Walks the passes of a weight-stationary GEMM: column tiles, chunks of rows, weight tiles.

    Two issuers share the pass order. The loader reads a pass's weight tile (``R`` beats, the
    deepest row first; rows past ``K`` are zeroed) and then captures it; the row issuer starts
    the pass once it is captured (and, for a chunk's first pass, once its bank is free), one
    row of ``A`` a cycle, and the loader advances to the next pass.

    Members
    -------
    start : ``In(1)``
        Latch the sizes and begin (all non-zero).
    w_valid, w_zero, w_capture : ``Out(1)``; w_addr : ``Out(ADDR_WIDTH)``
        A weight beat (``w_zero``: a row past ``K``, whose word is replaced by zeros), and
        the cycle that captures the loaded tile.
    a_valid : ``Out(1)``; a_addr : ``Out(ADDR_WIDTH)``; a_flags : ``Out(WsPassFlags())``
        A row beat, with its pass's flags.
    bank_busy : ``In(2)``
        A bank still holds a chunk that has not drained.
    chunk_start : ``Out(1)``; chunk_bank : ``Out(1)``; chunk_tag : ``Out(ChunkTag(C))``
        A chunk's first pass starts now (its bank becomes busy).
    running, overflow : ``Out(1)``
    abort : ``In(1)``
        Start no pass and issue no row after this cycle.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth, m_tile=WS_M_TILE):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._act_depth = operator.index(act_depth)
        self._wgt_depth = operator.index(wgt_depth)
        self._m_tile = operator.index(m_tile)
        if self._rows < WS_MIN_ROWS or self._cols < 1:
            raise ValueError(f"a weight-stationary array needs at least {WS_MIN_ROWS} rows and "
                             f"one column, not {self._rows}x{self._cols}")
        if self._m_tile < 1 or self._m_tile & (self._m_tile - 1):
            raise ValueError(f"m_tile must be a power of two, not {self._m_tile}")
        super().__init__({
            "start":       In(1),
            "m_size":      In(DIM_WIDTH),
            "k_size":      In(DIM_WIDTH),
            "n_size":      In(DIM_WIDTH),
            "w_valid":     Out(1),
            "w_zero":      Out(1),
            "w_capture":   Out(1),
            "w_addr":      Out(ADDR_WIDTH),
            "a_valid":     Out(1),
            "a_addr":      Out(ADDR_WIDTH),
            "a_flags":     Out(WsPassFlags()),
            "bank_busy":   In(2),
            "chunk_start": Out(1),
            "chunk_bank":  Out(1),
            "chunk_tag":   Out(ChunkTag(self._cols)),
            "running":     Out(1),
            "overflow":    Out(1),
            "abort":       In(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols, m_tile = self._rows, self._cols, self._m_tile
        tile_shift = (m_tile - 1).bit_length()

        m_size = Signal(DIM_WIDTH)
        k_size = Signal(DIM_WIDTH)
        n_size = Signal(DIM_WIDTH)

        # The pass the loader holds (loading, captured, or waiting to be taken).
        wgt_tile_base = Signal(ADDR_WIDTH)   # nt * K
        n_base = Signal(DIM_WIDTH + 1)       # nt * C
        n_left = Signal(signed(DIM_WIDTH + 2))      # N - nt*C
        chunk_m = Signal(DIM_WIDTH + 1)      # first row of the chunk
        m_left = Signal(signed(DIM_WIDTH + 2))      # M - chunk_m
        out_row_base = Signal(ADDR_WIDTH)    # chunk_m * N
        kt_k = Signal(DIM_WIDTH + 1)         # kt * R
        kt_act = Signal(ADDR_WIDTH)          # kt * M
        first_kt = Signal()
        last_kt = Signal()
        last_chunk = Signal()
        last_col_tile = Signal()
        bank = Signal()                      # chunks alternate banks
        chunk_rows = Signal(DIM_WIDTH)

        # Loader state.
        loading = Signal()
        advancing = Signal()
        beat = Signal(range(rows))
        k_index = Signal(signed(DIM_WIDTH + 2))   # the k of the row the beat loads
        capture = Signal()
        full = Signal()                      # captured, not yet taken

        # Row issuer state.
        a_left = Signal(DIM_WIDTH)
        a_last = Signal()
        flags = Signal(WsPassFlags())

        take = Signal()
        m.d.comb += [
            take.eq((capture | full) & (~self.a_valid | a_last) & ~self.abort &
                    (~first_kt | ~self.bank_busy.bit_select(bank, 1))),
            self.w_valid.eq(loading),
            self.w_zero.eq(k_index >= k_size),
            self.w_capture.eq(capture),
            self.a_flags.eq(flags),
            self.a_flags.valid.eq(self.a_valid),
            self.chunk_start.eq(take & first_kt),
            self.chunk_bank.eq(bank),
            self.chunk_tag.rows.eq(chunk_rows),
            self.chunk_tag.out_base.eq(out_row_base + n_base),
            self.chunk_tag.n_base.eq(n_base),
            self.chunk_tag.n_valid.eq(Mux(n_left >= cols, cols, n_left)),
            self.running.eq(loading | advancing | capture | full | self.a_valid),
        ]

        def load_pass(kt_k_value):
            # The first beat of a pass: the tile's deepest row first (the chain shifts down).
            return [loading.eq(1), beat.eq(0), k_index.eq(kt_k_value + rows - 1)]

        with m.If(self.start):
            m.d.sync += [
                m_size.eq(self.m_size), k_size.eq(self.k_size), n_size.eq(self.n_size),
                wgt_tile_base.eq(0), n_base.eq(0), n_left.eq(self.n_size),
                chunk_m.eq(0), m_left.eq(self.m_size), out_row_base.eq(0),
                kt_k.eq(0), kt_act.eq(0), first_kt.eq(1),
                last_kt.eq(self.k_size <= rows),
                last_chunk.eq(self.m_size <= m_tile),
                last_col_tile.eq(self.n_size <= cols),
                bank.eq(0),
                chunk_rows.eq(Mux(self.m_size >= m_tile, m_tile, self.m_size)),
                advancing.eq(0), capture.eq(0), full.eq(0),
                self.w_addr.eq(rows - 1),
                self.overflow.eq(0),
            ]
            m.d.sync += load_pass(0)
        with m.Else():
            with m.If(loading):
                m.d.sync += [beat.eq(beat + 1), k_index.eq(k_index - 1),
                             self.w_addr.eq(self.w_addr - 1)]
                with m.If((k_index < k_size) & (self.w_addr >= self._wgt_depth)):
                    m.d.sync += self.overflow.eq(1)
                with m.If(beat == rows - 1):
                    m.d.sync += [loading.eq(0), capture.eq(1)]
            with m.If(capture):
                m.d.sync += [capture.eq(0), full.eq(~take)]
            with m.Elif(take):
                m.d.sync += full.eq(0)
            # Taken: advance to the next pass (one cycle), then load it.
            with m.If(take):
                m.d.sync += advancing.eq(1)
                with m.If(~last_kt):
                    m.d.sync += [kt_k.eq(kt_k + rows), kt_act.eq(kt_act + m_size),
                                 first_kt.eq(0), last_kt.eq(kt_k + 2 * rows >= k_size)]
                with m.Elif(~last_chunk):
                    m.d.sync += [
                        kt_k.eq(0), kt_act.eq(0), first_kt.eq(1),
                        last_kt.eq(k_size <= rows),
                        chunk_m.eq(chunk_m + m_tile), m_left.eq(m_left - m_tile),
                        last_chunk.eq(m_left <= 2 * m_tile),
                        chunk_rows.eq(Mux(m_left - m_tile >= m_tile, m_tile, m_left - m_tile)),
                        out_row_base.eq(out_row_base + (n_size << tile_shift)),
                        bank.eq(~bank),
                    ]
                with m.Elif(~last_col_tile):
                    m.d.sync += [
                        kt_k.eq(0), kt_act.eq(0), first_kt.eq(1),
                        last_kt.eq(k_size <= rows),
                        chunk_m.eq(0), m_left.eq(m_size),
                        last_chunk.eq(m_size <= m_tile),
                        chunk_rows.eq(Mux(m_size >= m_tile, m_tile, m_size)),
                        out_row_base.eq(0),
                        wgt_tile_base.eq(wgt_tile_base + k_size),
                        n_base.eq(n_base + cols), n_left.eq(n_left - cols),
                        last_col_tile.eq(n_left <= 2 * cols),
                        bank.eq(~bank),
                    ]
                with m.Else():
                    m.d.sync += advancing.eq(0)
            with m.If(advancing):
                m.d.sync += [advancing.eq(0), self.w_addr.eq(wgt_tile_base + kt_k + rows - 1)]
                m.d.sync += load_pass(kt_k)

        # The row issuer: a taken pass streams its chunk's rows, one a cycle.
        with m.If(self.start):
            m.d.sync += [self.a_valid.eq(0), a_last.eq(0)]
        with m.Elif(take):
            m.d.sync += [
                self.a_valid.eq(1),
                self.a_addr.eq(kt_act + chunk_m),
                a_left.eq(chunk_rows - 1),
                a_last.eq(chunk_rows == 1),
                flags.swap.eq(1),
                flags.last.eq(chunk_rows == 1),
                flags.first_kt.eq(first_kt),
                flags.last_kt.eq(last_kt),
                flags.bank.eq(bank),
            ]
        with m.Elif(self.a_valid):
            with m.If(a_last | self.abort):
                m.d.sync += [self.a_valid.eq(0), a_last.eq(0)]
            with m.Else():
                m.d.sync += [
                    self.a_addr.eq(self.a_addr + 1),
                    a_left.eq(a_left - 1),
                    a_last.eq(a_left == 1),
                    flags.swap.eq(0),
                    flags.last.eq(a_left == 1),
                ]
        with m.If(self.a_valid & (self.a_addr >= self._act_depth)):
            m.d.sync += self.overflow.eq(1)
        with m.If(self.abort):
            m.d.sync += [loading.eq(0), advancing.eq(0), capture.eq(0), full.eq(0)]
        return m


class WsArray(wiring.Component):
    """Systolic ``R x C`` INT8 array, weight-stationary.

    Row ``i`` of ``A`` enters skewed by ``i`` cycles and moves one PE right per cycle; weight
    beats enter column ``j`` skewed by ``j`` and shift down its chain; ``capture`` copies the
    chains into the shadow registers, and a beat flagged ``swap`` makes each PE it reaches
    multiply by its shadow weight from then on. Partial sums move one PE down per cycle.

    Members
    -------
    act_word : ``In(R*8)``, flags : ``In(WsPassFlags())``
        A row of ``A`` (byte ``i`` for array row ``i``) and its flags.
    wgt_word : ``In(C*8)``, w_valid, w_zero, w_capture : ``In(1)``
        A weight beat (``w_zero`` replaces its word by zeros) and the capture.
    psums : ``Out(ArrayLayout(ws_psum_shape(R), C))``, out_flags : ``Out(ArrayLayout(...))``
        Column ``j``'s partial sum at the bottom and its beat's flags (aligned).
    pre_flags : ``Out(ArrayLayout(WsPassFlags(), C))``
        Column ``j``'s flags one cycle before they reach ``out_flags``.
    busy : ``Out(1)``
        A row beat is inside the array.
    """

    def __init__(self, *, rows, cols):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        flags = data.ArrayLayout(WsPassFlags(), self._cols)
        super().__init__({
            "act_word":  In(8 * self._rows),
            "flags":     In(WsPassFlags()),
            "wgt_word":  In(8 * self._cols),
            "w_valid":   In(1),
            "w_zero":    In(1),
            "w_capture": In(1),
            "psums":     Out(data.ArrayLayout(ws_psum_shape(self._rows), self._cols)),
            "out_flags": Out(flags),
            "pre_flags": Out(flags),
            "busy":      Out(1),
        })

    @property
    def latency(self):
        """Cycles from a row at the input to its partial sum at the bottom of the last column."""
        return self._rows + self._cols - 1 + MULTIPLIER_LATENCY + 3

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        psum_shape = ws_psum_shape(rows)

        def skewed(value, cycles, name, reset_less=True):
            for stage in range(cycles):
                reg = Signal.like(value, name=f"{name}_skew{stage}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        row_act = [skewed(self.act_word[8 * i:8 * i + 8].as_signed(), i, f"act{i}")
                   for i in range(rows)]
        row_swap = [skewed(self.flags.swap & self.flags.valid, i, f"swap{i}", reset_less=False)
                    for i in range(rows)]
        last_row_flags = skewed(self.flags, rows - 1, "flags", reset_less=False)
        word = Mux(self.w_zero, 0, self.wgt_word)
        col_wgt = [skewed(word[8 * j:8 * j + 8].as_signed(), j, f"wgt{j}") for j in range(cols)]
        col_load = [skewed(self.w_valid, j, f"wload{j}", reset_less=False) for j in range(cols)]
        col_capture = [skewed(self.w_capture, j, f"wcap{j}", reset_less=False)
                       for j in range(cols)]

        # Per-column copies of the load and capture enables, so that no net fans out to more
        # than one column (`keep`: see flows.ecp5.KEEP_REGISTERS).
        keep = {"keep": 1}
        act_in = list(row_act)
        swap_in = list(row_swap)
        flags_in = last_row_flags
        psum_above = [None] * cols
        chain_above = [None] * cols
        for i in range(rows):
            for j in range(cols):
                act = Signal(signed(8), name=f"act_{i}_{j}", reset_less=True)
                swap = Signal(name=f"swap_{i}_{j}", attrs=keep)
                chain = Signal(signed(8), name=f"chain_{i}_{j}", reset_less=True)
                shadow = Signal(signed(8), name=f"shadow_{i}_{j}", reset_less=True)
                weight = Signal(signed(8), name=f"weight_{i}_{j}", reset_less=True)
                m.d.sync += [act.eq(act_in[i]), swap.eq(swap_in[i])]
                with m.If(swap_in[i]):
                    m.d.sync += weight.eq(shadow)
                with m.If(col_load[j]):
                    m.d.sync += chain.eq(col_wgt[j] if i == 0 else chain_above[j])
                with m.If(col_capture[j]):
                    m.d.sync += shadow.eq(chain)
                act_in[i], swap_in[i] = act, swap
                chain_above[j] = chain

                m.submodules[f"mult_{i}_{j}"] = mult = PipelinedMultiplier(signed(8), signed(8))
                m.d.comb += [mult.a.eq(act), mult.b.eq(weight)]
                product = Signal(signed(16), name=f"prod_{i}_{j}", reset_less=True)
                m.d.sync += product.eq(mult.p)
                psum = Signal(psum_shape, name=f"psum_{i}_{j}", reset_less=True)
                m.d.sync += psum.eq(product if i == 0 else psum_above[j] + product)
                psum_above[j] = psum

        # The last row's flags move right with its rows; each column's copy is delayed to
        # meet its partial sum at the bottom (act register, multiplier, product, sum).
        for j in range(cols):
            row_flags = Signal(WsPassFlags(), name=f"bottom_flags_{j}", attrs=keep)
            m.d.sync += row_flags.eq(flags_in)
            flags_in = row_flags
            pre = _chain(m, row_flags, MULTIPLIER_LATENCY + 1, f"col{j}_flags")
            out = Signal(WsPassFlags(), name=f"col{j}_out_flags")
            m.d.sync += out.eq(pre)
            m.d.comb += [self.pre_flags[j].eq(pre), self.out_flags[j].eq(out),
                         self.psums[j].eq(psum_above[j])]

        inflight = Signal(self.latency, name="beat_tracker")
        m.d.sync += inflight.eq(Cat(self.flags.valid, inflight[:-1]))
        m.d.comb += self.busy.eq(inflight.any())
        return m


class WsAccumulators(wiring.Component):
    """Per column, two banks of ``m_tile`` INT32 partial sums, and the drain's read port.

    At the bottom of column ``j`` each beat's sum is added to what its row holds in its
    chunk's bank (nothing on the chunk's first weight tile) and written back, two cycles
    later. When the last beat of a chunk's last pass is written in the last column,
    ``chunk_done`` pulses with its bank. While ``drain_owns`` a bank, its read ports take
    ``drain_addr`` (enabled by ``drain_en``) instead; ``drain_data[j]`` is column ``j``'s word
    of bank ``drain_bank``, a cycle after its address.
    """

    def __init__(self, *, rows, cols, m_tile=WS_M_TILE):
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._m_tile = operator.index(m_tile)
        flags = data.ArrayLayout(WsPassFlags(), self._cols)
        super().__init__({
            "psums":      In(data.ArrayLayout(ws_psum_shape(self._rows), self._cols)),
            "out_flags":  In(flags),
            "pre_flags":  In(flags),
            "chunk_done": Out(1),
            "done_bank":  Out(1),
            "drain_owns": In(2),
            "drain_bank": In(1),
            "drain_addr": In(unsigned(max(1, (self._m_tile - 1).bit_length()))),
            "drain_en":   In(1),
            "drain_data": Out(data.ArrayLayout(signed(32), self._cols)),
            "pending":    Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols, m_tile = self._cols, self._m_tile
        addr_shape = unsigned(max(1, (m_tile - 1).bit_length()))
        writes_pending = []
        for j in range(cols):
            pre, out = self.pre_flags[j], self.out_flags[j]
            count = Signal(addr_shape, name=f"row_{j}")
            row_next = Signal(addr_shape, name=f"row_next_{j}")
            m.d.comb += row_next.eq(Mux(pre.swap, 0, count + 1))
            with m.If(pre.valid):
                m.d.sync += count.eq(row_next)
            total = Signal(signed(32), name=f"total_{j}", reset_less=True)
            w_en = Signal(name=f"acc_write_{j}")
            w_addr = Signal(addr_shape, name=f"acc_addr_{j}", reset_less=True)
            w_bank = Signal(name=f"acc_bank_{j}", reset_less=True)
            w_done = Signal(name=f"acc_done_{j}")
            banks = []
            for b in range(2):
                mem = memory.Memory(shape=signed(32), depth=m_tile, init=[])
                m.submodules[f"acc_{j}_bank{b}"] = mem
                rd = mem.read_port()
                wr = mem.write_port()
                owned = self.drain_owns[b]
                m.d.comb += [
                    rd.addr.eq(Mux(owned, self.drain_addr, row_next)),
                    rd.en.eq(Mux(owned, self.drain_en, 1)),
                    wr.addr.eq(w_addr), wr.data.eq(total), wr.en.eq(w_en & (w_bank == b)),
                ]
                banks.append(rd.data)
            m.d.comb += self.drain_data[j].eq(Mux(self.drain_bank, banks[1], banks[0]))
            held = Mux(out.bank, banks[1], banks[0])
            m.d.sync += [
                total.eq(self.psums[j] + Mux(out.first_kt, 0, held)),
                w_en.eq(out.valid), w_addr.eq(count), w_bank.eq(out.bank),
                w_done.eq(out.valid & out.last & out.last_kt),
            ]
            writes_pending.append(w_en)
            if j == cols - 1:
                done = Signal()
                bank_q = Signal()
                m.d.sync += [done.eq(w_done), bank_q.eq(w_bank)]
                m.d.comb += [self.chunk_done.eq(done), self.done_bank.eq(bank_q)]
                writes_pending.append(done)
        m.d.comb += self.pending.eq(Cat(writes_pending).any())
        return m


class WsDrain(wiring.Component):
    """Drains a finished chunk from its accumulator bank, ``lanes`` outputs a cycle.

    Chunks drain in the order they finish (banks alternate). A beat is ``lanes`` adjacent
    columns of one row: word ``m`` of the columns' memories is read (``acc_addr``, one
    cycle), the beat's lanes are picked from the columns and its parameter word
    (``param_rd``, read ahead as in :class:`~gen.hw.gemm.AccumulatorDrain`) joins it in the
    output register. The whole pipeline moves only when the output register is free, so
    back-pressure stalls it. A bank is released (``bank_busy`` falls) when its last beat
    leaves the memory stage.
    """

    def __init__(self, *, cols, param_depth, out_depth, lanes=1, m_tile=WS_M_TILE):
        self._cols = operator.index(cols)
        self._lanes = check_drain_lanes(lanes, self._cols)
        self._param_depth = operator.index(param_depth)
        self._out_depth = operator.index(out_depth)
        self._m_tile = operator.index(m_tile)
        super().__init__({
            "chunk_start": In(1),
            "chunk_bank":  In(1),
            "chunk_tag":   In(ChunkTag(self._cols)),
            "chunk_done":  In(1),
            "done_bank":   In(1),
            "bank_busy":   Out(2),
            "owns":        Out(2),
            "bank":        Out(1),
            "data_bank":   Out(1),
            "acc_addr":    Out(unsigned(max(1, (self._m_tile - 1).bit_length()))),
            "acc_en":      Out(1),
            "acc_data":    In(data.ArrayLayout(signed(32), self._cols)),
            "n_size":      In(DIM_WIDTH),
            "param_rd":    In(memory.ReadPort.Signature(
                addr_width=self.param_addr_width,
                shape=data.ArrayLayout(RequantParams(), self._lanes))),
            "o":           Out(requantizer_input_signature(self._lanes)),
            "pending":     Out(1),
            "overflow":    Out(1),
            "clear":       In(1),
        })

    @property
    def param_words(self):
        return lane_param_words(self._param_depth, self._lanes)[0]

    @property
    def param_addr_width(self):
        return lane_param_words(self._param_depth, self._lanes)[1]

    def elaborate(self, platform):
        m = Module()
        cols, lanes = self._cols, self._lanes
        lane_shift = (lanes - 1).bit_length()
        groups = cols // lanes

        tags = [Signal(ChunkTag(cols), name=f"chunk_tag{b}") for b in range(2)]
        finished = Signal(2)          # chunks computed, not yet drained
        in_use = Signal(2)
        for b in range(2):
            with m.If(self.chunk_start & (self.chunk_bank == b)):
                m.d.sync += tags[b].eq(self.chunk_tag)

        busy = Signal()
        tag = Signal(ChunkTag(cols))
        row = Signal(DIM_WIDTH)
        group = Signal(range(groups))
        last_group = Signal()
        last_row = Signal()
        row_addr = Signal(ADDR_WIDTH)
        channel = Signal(DIM_WIDTH + 1)
        mem_row = Signal.like(self.acc_addr)

        # Memory stage (the beat whose word the memories are reading) and output register.
        s1_valid = Signal()
        s1_group = Signal(range(groups))
        s1_addr = Signal(ADDR_WIDTH)
        s1_channel = Signal(DIM_WIDTH + 1)
        s1_mask = Signal(lanes)
        s1_final = Signal()
        s1_bank = Signal()
        out_valid = Signal()
        out_acc = Signal(data.ArrayLayout(signed(32), lanes), reset_less=True)
        out_addr = Signal(ADDR_WIDTH, reset_less=True)
        out_mask = Signal(lanes)
        out_channel = Signal(DIM_WIDTH + 1)

        advance = Signal()
        issue = Signal()
        begin = Signal()
        m.d.comb += [
            advance.eq(~out_valid | self.o.ready),
            issue.eq(busy & advance),
            begin.eq(~busy & finished.bit_select(self.bank, 1)),
            self.acc_addr.eq(mem_row),
            self.acc_en.eq(advance),
            self.data_bank.eq(s1_bank),
            self.bank_busy.eq(in_use),
            self.param_rd.addr.eq(Mux(issue, channel, s1_channel) >> lane_shift),
            self.param_rd.en.eq(advance),
        ]
        set_use = Mux(self.chunk_start, 1 << self.chunk_bank, 0)
        set_done = Mux(self.chunk_done, 1 << self.done_bank, 0)
        release = Signal(2)
        set_own = Mux(begin, 1 << self.bank, 0)
        m.d.sync += [
            self.owns.eq((self.owns | set_own) & ~release),
            in_use.eq((in_use | set_use) & ~release),
            finished.eq((finished | set_done) & ~Mux(begin, 1 << self.bank, 0)),
        ]

        with m.If(begin):
            chosen = Signal(ChunkTag(cols))
            m.d.comb += chosen.eq(Mux(self.bank, tags[1], tags[0]))
            m.d.sync += [
                busy.eq(1),
                tag.eq(chosen),
                row.eq(0), group.eq(0), mem_row.eq(0),
                last_row.eq(chosen.rows == 1),
                last_group.eq(chosen.n_valid <= lanes),
                row_addr.eq(chosen.out_base),
                channel.eq(chosen.n_base),
            ]
        with m.Elif(issue):
            with m.If(last_group):
                m.d.sync += [
                    group.eq(0), row.eq(row + 1), mem_row.eq(mem_row + 1),
                    last_row.eq(row + 2 == tag.rows),
                    last_group.eq(tag.n_valid <= lanes),
                    row_addr.eq(row_addr + self.n_size),
                    channel.eq(tag.n_base),
                ]
                with m.If(last_row):
                    m.d.sync += [busy.eq(0), self.bank.eq(~self.bank)]
            with m.Else():
                m.d.sync += [
                    group.eq(group + 1),
                    last_group.eq((group + 2) * lanes >= tag.n_valid),
                    channel.eq(channel + lanes),
                ]

        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(issue),
                s1_group.eq(group),
                s1_addr.eq(row_addr + group * lanes),
                s1_channel.eq(channel),
                s1_mask.eq(Cat(group * lanes + lane < tag.n_valid for lane in range(lanes))),
                s1_final.eq(last_row & last_group),
                s1_bank.eq(self.bank),
                out_valid.eq(s1_valid),
                out_addr.eq(s1_addr),
                out_mask.eq(s1_mask),
                out_channel.eq(s1_channel),
            ]
            for lane in range(lanes):
                choices = [self.acc_data[g * lanes + lane] for g in range(groups)]
                picked = choices[0]
                for g in range(1, groups):
                    picked = Mux(s1_group == g, choices[g], picked)
                m.d.sync += out_acc[lane].eq(picked)
        # The bank is free once its last word has left the memories' read register.
        with m.If(advance & s1_valid & s1_final):
            m.d.comb += release.eq(1 << s1_bank)

        beyond_q = register_overflow_check(
            m, valid=out_valid & self.o.ready, mask=out_mask, channel=out_channel,
            addr=out_addr, param_depth=self._param_depth, out_depth=self._out_depth,
            clear=self.clear, overflow=self.overflow)
        with m.If(self.clear):
            m.d.sync += [in_use.eq(0), finished.eq(0), busy.eq(0), self.owns.eq(0),
                         self.bank.eq(0), s1_valid.eq(0), out_valid.eq(0)]

        m.d.comb += [
            self.o.valid.eq(out_valid),
            self.o.payload.acc.eq(out_acc),
            self.o.payload.params.eq(self.param_rd.data),
            self.o.payload.tag.addr.eq(out_addr),
            self.o.payload.tag.mask.eq(out_mask),
            self.pending.eq(finished.any() | busy | s1_valid | out_valid | beyond_q.any()),
        ]
        return m


class WeightStationaryGemm(GemmEngine):
    """Tiled INT8 GEMM with per-output-channel requantization, weight-stationary.

    The same ports and parameters as :class:`~gen.hw.gemm.OutputStationaryGemm` (the
    activation buffer in this engine's layout, see the module's docstring), plus

    m_tile : int
        Rows of a chunk: the depth of each column's two accumulator banks (a power of two).
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth, param_depth, out_depth,
                 drain_lanes=1, m_tile=WS_M_TILE):
        self._m_tile = operator.index(m_tile)
        if self._m_tile < 1 or self._m_tile & (self._m_tile - 1):
            raise ValueError(f"m_tile must be a power of two, not {self._m_tile}")
        if operator.index(rows) < WS_MIN_ROWS:
            raise ValueError(f"a weight-stationary array needs at least {WS_MIN_ROWS} rows, "
                             f"not {rows}")
        super().__init__(rows=rows, cols=cols, act_depth=act_depth, wgt_depth=wgt_depth,
                         param_depth=param_depth, out_depth=out_depth,
                         drain_lanes=drain_lanes)

    @property
    def m_tile(self):
        return self._m_tile

    def elaborate(self, platform):
        m = Module()
        rows, cols, lanes = self._rows, self._cols, self._drain_lanes

        m.submodules.sequencer = seq = WsSequencer(
            rows=rows, cols=cols, act_depth=self._act_depth, wgt_depth=self._wgt_depth,
            m_tile=self._m_tile)
        m.submodules.array = array = WsArray(rows=rows, cols=cols)
        m.submodules.accumulators = acc = WsAccumulators(rows=rows, cols=cols,
                                                         m_tile=self._m_tile)
        m.submodules.drain = drain = WsDrain(
            cols=cols, param_depth=self._param_depth, out_depth=self._out_depth, lanes=lanes,
            m_tile=self._m_tile)
        requants = connect_requantizer_lanes(m, drain.o, self.o, lanes)

        launch, start_q, sizes_q, _ = self.register_request(m)
        n_size = Signal(DIM_WIDTH)
        m.d.comb += [
            seq.start.eq(launch),
            seq.m_size.eq(sizes_q[0]),
            seq.k_size.eq(sizes_q[1]),
            seq.n_size.eq(sizes_q[2]),
            self.act_rd.addr.eq(seq.a_addr),
            self.wgt_rd.addr.eq(seq.w_addr),
            self.act_rd.en.eq(1),
            self.wgt_rd.en.eq(1),
        ]

        # Beat flags wait for their operands (OPERAND_READ_LATENCY cycles of buffer read).
        a_flags = _chain(m, seq.a_flags, OPERAND_READ_LATENCY, "act_beat")
        w_beat = _chain(m, Cat(seq.w_valid, seq.w_zero, seq.w_capture),
                        OPERAND_READ_LATENCY, "wgt_beat")
        beats_in_flight = Signal(OPERAND_READ_LATENCY)
        m.d.sync += beats_in_flight.eq(Cat(seq.a_valid, beats_in_flight[:-1]))
        m.d.comb += [
            array.act_word.eq(self.act_rd.data),
            array.flags.eq(a_flags),
            array.wgt_word.eq(self.wgt_rd.data),
            array.w_valid.eq(w_beat[0]),
            array.w_zero.eq(w_beat[1]),
            array.w_capture.eq(w_beat[2]),
            acc.psums.eq(array.psums),
            acc.out_flags.eq(array.out_flags),
            acc.pre_flags.eq(array.pre_flags),
            acc.drain_owns.eq(drain.owns),
            acc.drain_bank.eq(drain.data_bank),
            acc.drain_addr.eq(drain.acc_addr),
            acc.drain_en.eq(drain.acc_en),
            drain.acc_data.eq(acc.drain_data),
            drain.chunk_start.eq(seq.chunk_start),
            drain.chunk_bank.eq(seq.chunk_bank),
            drain.chunk_tag.eq(seq.chunk_tag),
            drain.chunk_done.eq(acc.chunk_done),
            drain.done_bank.eq(acc.done_bank),
            drain.n_size.eq(n_size),
            drain.clear.eq(launch),
            seq.bank_busy.eq(drain.bank_busy),
        ]
        wiring.connect(m, wiring.flipped(self.param_rd), drain.param_rd)

        with m.If(launch):
            m.d.sync += n_size.eq(sizes_q[2])
        self.finish_jobs(m, launch, start_q,
                         [~seq.running, ~beats_in_flight.any(), ~array.busy, ~acc.pending,
                          ~drain.pending, ~requants[0].busy],
                         seq.overflow | drain.overflow, seq.abort)
        return m
