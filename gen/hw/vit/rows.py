"""Row movers of the ViT engines: INT8 rows between a kernel's activation memory and streams.

The kernel's activation memory (amem) holds a matrix of ``R x C`` INT8 values row-major, B
byte lanes a word, a row every ``stride`` words (``docs/sparse_attention.md`` section 6). An
engine moves whole rows through its host port while no op runs:

* :class:`RowPacker`: a stream of INT8 elements (``rows * cols`` of them) into amem words,
  as ``{target, addr, data}`` load beats (lanes past ``cols`` in a row's last word are 0);
* :class:`RowReader`: amem words out, read through ``rd_addr`` / ``rd_data``, as a stream of
  elements, or of element pairs from two matrices read side by side.

Both take one job at a time (``start`` with its parameters, then ``busy`` until the last
beat has left).
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..attention.geometry import TARGET_AMEM, as_geometry

__all__ = ["RowJob", "RowPacker", "RowReader", "PairElement"]


class RowJob(data.StructLayout):
    """Where rows are: ``a_base`` (and ``b_base`` for pairs) in amem words, ``rows``, ``cols``
    INT8 values a row (``words = ceil(cols / B)`` words of them) and ``stride`` words between
    rows."""
    def __init__(self, geometry):
        g = as_geometry(geometry)
        super().__init__({
            "a_base": unsigned(g.aaddr_bits),
            "b_base": unsigned(g.aaddr_bits),
            "rows":   unsigned(g.dim_bits),
            "cols":   unsigned(g.dim_bits),
            "words":  unsigned(g.dim_bits),
            "stride": unsigned(g.aaddr_bits),
        })


class PairElement(data.StructLayout):
    """One element of each of two matrices at the same (row, column)."""
    def __init__(self):
        super().__init__({"a": signed(8), "b": signed(8)})


def _job_members(geometry):
    return {"start": In(1), "job": In(RowJob(geometry)), "busy": Out(1)}


class RowPacker(wiring.Component):
    """INT8 elements into amem words at ``job.a_base`` (``rows`` rows of ``cols``).

    Members
    -------
    start : ``In(1)``
        Pulse with ``job`` valid; ignored while ``busy``.
    job : ``In(RowJob)``
    i : ``In(stream.Signature(signed(8)))``
        The elements, row by row; accepted only while a job runs.
    o : ``Out(stream.Signature(geometry.load_layout))``
        One load beat (target amem) per word.
    busy : ``Out(1)``
        From the cycle after ``start`` until the last word has been taken.

    One element per cycle: a completed word moves to the output register while the next fills.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        super().__init__({**_job_members(g),
                          "i": In(stream.Signature(signed(8))),
                          "o": Out(stream.Signature(g.load_layout))})

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        job = Signal(RowJob(g))
        active = Signal()                      # elements still to come
        row = Signal(g.dim_bits)
        col = Signal(g.dim_bits)
        lane = Signal(range(b))
        row_base = Signal(g.aaddr_bits)
        word = Signal(g.aaddr_bits)            # word of the row being filled
        fill = Signal(8 * b)                   # the word being filled
        out_full = Signal()

        # Whether the next element is its row's last, fills the word's last lane, and whether
        # the row is the last: registers, so that no comparator sits on the ready path.
        last_col = Signal()
        last_lane = Signal()
        last_row = Signal()
        # `cols - 2` and `rows - 2` of the job, so that each flag's next value is one compare
        # of two registers (all ones when the count is below 2: never equal).
        cols_m2 = Signal(g.dim_bits + 1)
        rows_m2 = Signal(g.dim_bits + 1)
        closes = last_lane | last_col
        take = Signal()
        m.d.comb += [
            # Not `| self.o.ready`: the output's ready would then reach the input's in the
            # same cycle (routed 94.7 MHz: the kernel's write queue level through both
            # packers into the LayerNorm queue). A word closes every `b` elements, by when
            # the last one has long gone, so this costs a cycle only under back-pressure.
            self.i.ready.eq(active & (~closes | ~out_full)),
            take.eq(self.i.valid & self.i.ready),
            self.o.valid.eq(out_full),
            self.o.payload.target.eq(TARGET_AMEM),
            self.busy.eq(active | out_full),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_full.eq(0)

        with m.If(self.start & ~self.busy):
            empty = (self.job.rows == 0) | (self.job.cols == 0)
            m.d.sync += [job.eq(self.job), active.eq(~empty), row.eq(0), col.eq(0),
                         lane.eq(0), row_base.eq(self.job.a_base), word.eq(0), fill.eq(0),
                         last_col.eq(self.job.cols == 1), last_lane.eq(b == 1),
                         last_row.eq(self.job.rows == 1),
                         cols_m2.eq(self.job.cols - 2), rows_m2.eq(self.job.rows - 2)]
        with m.Elif(take):
            value = self.i.payload
            filled = Signal(8 * b)
            m.d.comb += filled.eq(fill | (value.as_unsigned() << (lane * 8)))
            with m.If(closes):
                m.d.sync += [out_full.eq(1), self.o.payload.addr.eq(row_base + word),
                             self.o.payload.data.eq(filled), fill.eq(0), lane.eq(0),
                             last_lane.eq(b == 1)]
                with m.If(last_col):
                    m.d.sync += [col.eq(0), word.eq(0), row.eq(row + 1),
                                 row_base.eq(row_base + job.stride),
                                 last_col.eq(job.cols == 1), last_row.eq(row == rows_m2)]
                    with m.If(last_row):
                        m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [col.eq(col + 1), word.eq(word + 1),
                                 last_col.eq(col == cols_m2)]
            with m.Else():
                m.d.sync += [fill.eq(filled), lane.eq(lane + 1), col.eq(col + 1),
                             last_lane.eq(lane + 2 == b), last_col.eq(col == cols_m2)]
        return m


class RowReader(wiring.Component):
    """amem rows out as elements (``pair=False``) or as pairs of two matrices (``pair=True``:
    ``a`` from ``job.a_base``, ``b`` from ``job.b_base``, same shape and stride).

    Members
    -------
    start, job, busy : as :class:`RowPacker`
    rd_addr : ``Out(stream.Signature(unsigned(aaddr_bits)))``
    rd_data : ``In(stream.Signature(unsigned(8 * B)))``
        The kernel's read port (results in address order).
    o : ``Out(stream.Signature(PairElement() if pair else signed(8)))``
    """

    def __init__(self, geometry, pair):
        self._geometry = g = as_geometry(geometry)
        if not isinstance(pair, bool):
            self._MustUse__silence = True
            raise UserError(f"pair must be true or false, not {pair!r}")
        self._pair = pair
        super().__init__({**_job_members(g),
                          "rd_addr": Out(stream.Signature(unsigned(g.aaddr_bits))),
                          "rd_data": In(stream.Signature(unsigned(8 * g.lanes))),
                          "o": Out(stream.Signature(PairElement() if pair else signed(8)))})

    @property
    def pair(self):
        return self._pair

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        job = Signal(RowJob(g))

        # Issue: row by row, word by word, a's word then b's. The address and the "last word"
        # and "last row" flags are registers computed a step ahead, so that the read port's
        # address and the issue decision start from flip-flops.
        issuing = Signal()
        i_row = Signal(g.dim_bits)
        i_word = Signal(g.dim_bits)
        i_second = Signal()
        i_last_word = Signal()
        i_last_row = Signal()
        # `i_last_word & i_last_row` as a register of its own: the AND, in front of the issue
        # flag's enable, was built into a chain through the row counter's enable logic
        # (routed 98.5 MHz, seed 2: five LUTs, 8.4 ns of routing).
        i_final = Signal()
        # `words - 2`, `rows - 2` and `cols - 2` of the job (as in RowPacker).
        words_m2 = Signal(g.dim_bits + 1)
        rows_m2 = Signal(g.dim_bits + 1)
        cols_m2 = Signal(g.dim_bits + 1)
        a_row = Signal(g.aaddr_bits)
        b_row = Signal(g.aaddr_bits)
        addr = Signal(g.aaddr_bits)
        m.d.comb += [self.rd_addr.valid.eq(issuing), self.rd_addr.payload.eq(addr)]
        first_of_pair = ~i_second if self._pair else 0
        with m.If(self.rd_addr.valid & self.rd_addr.ready):
            with m.If(first_of_pair):
                m.d.sync += [i_second.eq(1), addr.eq(b_row + i_word)]
            with m.Else():
                m.d.sync += i_second.eq(0)
                with m.If(i_final):
                    m.d.sync += issuing.eq(0)
                with m.If(i_last_word):
                    m.d.sync += [i_word.eq(0), i_row.eq(i_row + 1),
                                 a_row.eq(a_row + job.stride), b_row.eq(b_row + job.stride),
                                 addr.eq(a_row + job.stride), i_last_word.eq(job.words == 1),
                                 i_last_row.eq(i_row == rows_m2),
                                 i_final.eq((job.words == 1) & (i_row == rows_m2))]
                with m.Else():
                    m.d.sync += [i_word.eq(i_word + 1), addr.eq(a_row + i_word + 1),
                                 i_last_word.eq(i_word == words_m2),
                                 i_final.eq((i_word == words_m2) & i_last_row)]

        # Return: collect a word (and its pair), then emit its elements one per cycle; the
        # "last" flags are registers here too.
        emitting = Signal()                    # elements to come from the current rows
        a_word = Signal(8 * b)
        b_word = Signal(8 * b)
        have_a = Signal()
        full = Signal()
        lane = Signal(range(b))
        col = Signal(g.dim_bits)
        row = Signal(g.dim_bits)
        last_col = Signal()
        last_lane = Signal()
        last_row = Signal()
        m.d.comb += self.rd_data.ready.eq(emitting & ~full)
        with m.If(self.rd_data.valid & self.rd_data.ready):
            if self._pair:
                with m.If(~have_a):
                    m.d.sync += [a_word.eq(self.rd_data.payload), have_a.eq(1)]
                with m.Else():
                    m.d.sync += [b_word.eq(self.rd_data.payload), have_a.eq(0), full.eq(1)]
            else:
                m.d.sync += [a_word.eq(self.rd_data.payload), full.eq(1)]

        # The words shift down a byte per element, so the output is their low byte (a lane
        # multiplexer there was in front of every consumer's compare or adder).
        a_value = a_word[:8].as_signed()
        b_value = b_word[:8].as_signed()
        if self._pair:
            m.d.comb += [self.o.payload.a.eq(a_value), self.o.payload.b.eq(b_value)]
        else:
            m.d.comb += self.o.payload.eq(a_value)
        m.d.comb += self.o.valid.eq(full)
        with m.If(self.o.valid & self.o.ready):
            with m.If(last_col | last_lane):
                m.d.sync += [full.eq(0), lane.eq(0), last_lane.eq(b == 1)]
            with m.Else():
                m.d.sync += [lane.eq(lane + 1), last_lane.eq(lane + 2 == b),
                             a_word.eq(a_word >> 8), b_word.eq(b_word >> 8)]
            with m.If(last_col):
                m.d.sync += [col.eq(0), row.eq(row + 1), last_col.eq(job.cols == 1),
                             last_row.eq(row == rows_m2)]
                with m.If(last_row):
                    m.d.sync += emitting.eq(0)
            with m.Else():
                m.d.sync += [col.eq(col + 1), last_col.eq(col == cols_m2)]

        with m.If(self.start & ~self.busy):
            empty = (self.job.rows == 0) | (self.job.cols == 0)
            m.d.sync += [job.eq(self.job), issuing.eq(~empty), emitting.eq(~empty),
                         i_row.eq(0), i_word.eq(0), i_second.eq(0),
                         a_row.eq(self.job.a_base), b_row.eq(self.job.b_base),
                         addr.eq(self.job.a_base), i_last_word.eq(self.job.words == 1),
                         i_last_row.eq(self.job.rows == 1),
                         i_final.eq((self.job.words == 1) & (self.job.rows == 1)),
                         have_a.eq(0), full.eq(0), lane.eq(0), col.eq(0), row.eq(0),
                         last_col.eq(self.job.cols == 1), last_lane.eq(b == 1),
                         last_row.eq(self.job.rows == 1), words_m2.eq(self.job.words - 2),
                         rows_m2.eq(self.job.rows - 2), cols_m2.eq(self.job.cols - 2)]
        m.d.comb += self.busy.eq(issuing | emitting)
        return m
