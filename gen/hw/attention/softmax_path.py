"""The softmax path of the sparse attention kernel: S rows from amem into the integer softmax
unit (:class:`~gen.hw.softmax.IntSoftmax`), its P rows back into amem."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..softmax import prob_layout, score_layout
from .control import job_signature
from .geometry import as_geometry
from .memory import (BANKED_READ_LATENCY, QUEUE_DEPTH, ByteWrite, banked_read_signature,
                     shaped_stream)

__all__ = ["SoftmaxReader", "SoftmaxWriter"]


class SoftmaxReader(wiring.Component):
    """Streams the S rows of a softmax op out of amem, score by score.

    Reads go through amem's port (:data:`BANKED_READ_LATENCY` cycles) into a queue in front of the softmax unit; a read is
    issued only when the queue has room for it and for the reads in flight, so the queue never
    overflows while the unit holds back its input (between rows).

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    job : ``In(job_signature(...))``
        Softmax ops (``rows``, ``a_base``, ``a_stride`` and the row length ``n_hi``).
    amem_rd : ``In(banked_read_signature(...))``
        amem's port A.
    scores : ``Out(stream.Signature(score_layout()))``
        The scores, ``last`` on each row's final one.
    busy : ``Out(1)``
        Scores remain to be read or handed on.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        super().__init__({
            "job":     In(job_signature(g)),
            "amem_rd": In(banked_read_signature(g.aaddr_bits, 8 * g.lanes)),
            "scores":  Out(stream.Signature(score_layout())),
            "busy":    Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        d = self.job.running
        run = Signal()
        rows_left = Signal(g.dim_bits)
        col = Signal(g.dim_bits)
        a_row = Signal(g.aaddr_bits)             # a_base + i * a_stride
        word = Signal(g.aaddr_bits)
        lane = Signal(g.lane_bits)
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=score_layout().size,
                                                           depth=QUEUE_DEPTH)
        flight = data.StructLayout({"valid": 1, "lane": g.lane_bits, "last": 1})
        reads = [Signal(flight, name=f"read{k}") for k in range(BANKED_READ_LATENCY)]
        issue = Signal()
        # Registers, so that the issue decision (which enables most of the reader) starts
        # from flip-flops: whether `col` is its row's last score and the row the op's last,
        # and the queue's free entries less the reads in flight (a credit count; as a sum of
        # the queue's level and the reads in flight it was an adder and a compare deep).
        row_end = Signal()
        last_row = Signal()
        credits = Signal(range(QUEUE_DEPTH + 1), init=QUEUE_DEPTH)
        taken = Signal()
        m.d.comb += [
            issue.eq(run & (credits != 0)),
            self.amem_rd.addr.eq(word),
            taken.eq(self.scores.valid & self.scores.ready),
        ]
        with m.If(issue & ~taken):
            m.d.sync += credits.eq(credits - 1)
        with m.Elif(~issue & taken):
            m.d.sync += credits.eq(credits + 1)
        m.d.sync += [reads[0].valid.eq(issue), reads[0].lane.eq(lane), reads[0].last.eq(row_end)]
        m.d.sync += [later.eq(earlier) for earlier, later in zip(reads, reads[1:])]
        # The read data arrives with the last stage; the credit check above keeps room for it.
        into_queue = shaped_stream(queue.w_stream, score_layout())
        m.d.comb += [
            into_queue.valid.eq(reads[-1].valid),
            into_queue.payload.value.eq(self.amem_rd.data.word_select(reads[-1].lane, 8)),
            into_queue.payload.last.eq(reads[-1].last),
        ]
        wiring.connect(m, shaped_stream(queue.r_stream, score_layout()),
                       wiring.flipped(self.scores))

        start = self.job.desc
        with m.If(self.job.start):
            m.d.sync += [run.eq(1), rows_left.eq(start.rows - 1), col.eq(0),
                         a_row.eq(start.a_base), word.eq(start.a_base), lane.eq(0),
                         row_end.eq(start.n_hi == 1), last_row.eq(start.rows == 1)]
        with m.Elif(issue):
            with m.If(row_end):
                m.d.sync += [col.eq(0), lane.eq(0), a_row.eq(a_row + d.a_stride),
                             word.eq(a_row + d.a_stride), rows_left.eq(rows_left - 1),
                             row_end.eq(d.n_hi == 1), last_row.eq(rows_left == 1)]
                with m.If(last_row):
                    m.d.sync += run.eq(0)
            with m.Else():
                m.d.sync += [col.eq(col + 1), row_end.eq(col + 2 == d.n_hi)]
                with m.If(lane == b - 1):
                    m.d.sync += [lane.eq(0), word.eq(word + 1)]
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
        m.d.comb += self.busy.eq(run | Cat(read.valid for read in reads).any() | queue.r_rdy |
                                 (queue.level != 0))
        return m


class SoftmaxWriter(wiring.Component):
    """Writes the softmax unit's probabilities into the P rows of amem (registered).

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    job : ``In(job_signature(...))``
        Softmax ops (``rows``, ``o_base``, ``o_stride``).
    probs : ``In(stream.Signature(prob_layout()))``
        Always ready.
    write : ``Out(stream.Signature(ByteWrite, always_ready=True))``
    busy : ``Out(1)``
        Rows of the op remain to be written.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        super().__init__({
            "job":   In(job_signature(g)),
            "probs": In(stream.Signature(prob_layout())),
            "write": Out(stream.Signature(ByteWrite(g.aaddr_bits, g.lane_bits),
                                          always_ready=True)),
            "busy":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        d = self.job.running
        waiting = Signal()           # rows of the op not yet written
        rows_left = Signal(g.dim_bits)
        row = Signal(g.aaddr_bits)   # o_base + i * o_stride
        word = Signal(g.aaddr_bits)
        lane = Signal(g.lane_bits)
        prob = self.probs.payload
        m.d.comb += self.probs.ready.eq(1)
        m.d.sync += [self.write.valid.eq(self.probs.valid), self.write.payload.addr.eq(word),
                     self.write.payload.lane.eq(lane), self.write.payload.value.eq(prob.value)]
        start = self.job.desc
        with m.If(self.job.start):
            m.d.sync += [waiting.eq(1), rows_left.eq(start.rows - 1), row.eq(start.o_base),
                         word.eq(start.o_base), lane.eq(0)]
        with m.Elif(self.probs.valid):
            with m.If(prob.last):
                m.d.sync += [row.eq(row + d.o_stride), word.eq(row + d.o_stride),
                             lane.eq(0), rows_left.eq(rows_left - 1)]
                with m.If(rows_left == 0):
                    m.d.sync += waiting.eq(0)
            with m.Elif(lane == b - 1):
                m.d.sync += [lane.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
        m.d.comb += self.busy.eq(waiting | self.write.valid)
        return m
