"""Control of the sparse attention kernel: the host's port to the memories, and the op
sequencing (one descriptor at a time, busy, done, cycle count)."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..requant import RequantParams
from .geometry import OP_SOFTMAX, TARGET_AMEM, TARGET_PMEM, TARGET_QMEM, TARGET_WMEM, as_geometry
from .memory import BANKED_READ_LATENCY, QUEUE_DEPTH, banked_read_signature

__all__ = ["JOB_START_LATENCY", "PartsBusy", "job_signature", "OpControl", "HostPort"]

#: Cycles from a descriptor's acceptance to its parts' ``start``: the op's register, then the
#: start's, decided from that register.
JOB_START_LATENCY = 2


class PartsBusy(data.StructLayout):
    """Which parts of the kernel still hold work of the running op."""
    def __init__(self):
        super().__init__({name: 1 for name in (
            "sequencer", "drain", "requantizer", "mac_writer", "softmax_reader",
            "softmax_writer")})


def job_signature(geometry):
    """The ops handed to one part of the kernel, seen from :class:`OpControl`.

    ``start`` pulses :data:`JOB_START_LATENCY` cycles after a descriptor for this part is
    taken, with that descriptor on ``desc``; ``running`` holds the running op from the cycle
    after it was taken until the op is done (so ``desc`` and ``running`` are the same
    register; while no op runs it follows the offered descriptor).
    """
    layout = as_geometry(geometry).descriptor_layout
    return wiring.Signature({"start": Out(1), "desc": Out(layout), "running": Out(layout)})


class OpControl(wiring.Component):
    """Takes one descriptor at a time and runs it: start, busy, done and the cycle count.

    A descriptor is taken only while no op runs and the host neither offers a load or a read
    nor waits for read results (``hold``), so a host that loads, starts an op, waits for
    ``done`` and reads sees program order. An op with nothing to do (no rows, no blocks, rows
    of length 0) starts no part and only pulses ``done``.

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    desc : ``In(stream.Signature(Descriptor))``
    hold : ``In(1)``
        The host has loads or reads in progress.
    mac_job, softmax_job : ``Out(job_signature(...))``
        MAC ops (linear, scores, context) and softmax ops with work, for the parts that run
        them.
    op : ``Out(Descriptor)``
        The running op, from the cycle after it was taken until it is done (while no op runs,
        the offered descriptor of the cycle before).
    parts_busy : ``In(PartsBusy())``
        The op is finished when every part has been idle (registered twice, as in
        :mod:`gen.hw.gemm`: the parts are spread over the chip).
    busy, done : ``Out(1)``
        An op runs; it has finished (one-cycle pulse).
    cycles : ``Out(32)``
        Cycles during which ``busy`` was high, since reset.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        super().__init__({
            "desc":          In(stream.Signature(g.descriptor_layout)),
            "hold":          In(1),
            "mac_job":       Out(job_signature(g)),
            "softmax_job":   Out(job_signature(g)),
            "op":            Out(g.descriptor_layout),
            "parts_busy":    In(PartsBusy()),
            "busy":          Out(1),
            "done":          Out(1),
            "cycles":        Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        desc = self.desc.payload
        start = Signal()             # the cycle a descriptor is taken
        empty = Signal()
        softmax = Signal()
        op = self.op
        m.d.comb += [
            self.desc.ready.eq(~self.busy & ~self.hold),
            start.eq(self.desc.valid & self.desc.ready),
            softmax.eq(op.op == OP_SOFTMAX),
            empty.eq((op.rows == 0) | Mux(softmax, op.n_hi == 0, op.c_hi <= op.c_lo)),
        ]
        # The parts' start is a register (JOB_START_LATENCY), decided from the op's register,
        # not from the offered descriptor: the handshake depends on the host port and the
        # engine's program, and the start fans out to every part's op registers; with the
        # descriptor's compares behind the handshake that chain was the routed critical path
        # (91.1 MHz at seed 2).
        pending = Signal(JOB_START_LATENCY)      # a start on its way to the parts, by cycle
        m.d.sync += [
            pending.eq(Cat(start, pending[:-1])),
            self.mac_job.start.eq(pending[-2] & ~empty & ~softmax),
            self.softmax_job.start.eq(pending[-2] & ~empty & softmax),
        ]
        m.d.comb += [job.desc.eq(self.op) for job in (self.mac_job, self.softmax_job)]
        m.d.comb += [job.running.eq(self.op) for job in (self.mac_job, self.softmax_job)]

        # Completion: every part idle, registered twice. "All idle two cycles ago" still means
        # "all idle now": nothing enters a part without a new start.
        busy_q = Signal(PartsBusy())
        all_idle = Signal()
        finish = Signal()
        m.d.sync += [busy_q.eq(self.parts_busy), all_idle.eq(~busy_q.as_value().any())]
        # The forcing starts the cycle after the start (`pending`), and the op register loads
        # whenever no op runs, so that the handshake's `start` reaches only `busy` and
        # `pending`: into the completion registers and the op's enables it was the routed
        # critical path (98.4 MHz at seed 3). Neither changes a cycle: `finish` is masked
        # while a start is pending, and from the cycle after the start the forced values
        # are the same; the op register holds from the start on (`busy`).
        with m.If(pending.any()):
            m.d.sync += [busy_q.eq(~0), all_idle.eq(0)]
        m.d.comb += finish.eq(all_idle & ~pending.any())

        m.d.sync += self.done.eq(0)
        with m.If(~self.busy):
            m.d.sync += self.op.eq(desc)
        with m.If(start):
            m.d.sync += self.busy.eq(1)
        with m.Elif(self.busy & finish):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m


class HostPort(wiring.Component):
    """The host's access to the memories while no op runs: loads and activation reads.

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    busy : ``In(1)``
        An op runs: loads and reads wait.
    load : ``In(stream.Signature(geometry.load_layout))``
        ``{target, addr, data}`` writes one word of wmem / pmem / qmem / amem.
    rd_addr : ``In(stream.Signature(unsigned(aaddr_bits)))``
    rd_data : ``Out(stream.Signature(unsigned(8 * B)))``
        One amem word per address, in order (up to :data:`~.memory.QUEUE_DEPTH` results queue
        under back-pressure).
    hold : ``Out(1)``
        A load or read is offered, or read results are not yet taken: no descriptor may start.
    wmem_wr, pmem_wr, qmem_wr, amem_wr : ``In(memory.WritePort.Signature(...))``
        Write ports of the four memories (amem's with byte enables).
    amem_rd : ``In(banked_read_signature(...))``
        amem's port A.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        word = unsigned(8 * g.lanes)
        super().__init__({
            "busy":    In(1),
            "load":    In(stream.Signature(g.load_layout)),
            "rd_addr": In(stream.Signature(unsigned(g.aaddr_bits))),
            "rd_data": Out(stream.Signature(word)),
            "hold":    Out(1),
            "wmem_wr": In(memory.WritePort.Signature(addr_width=g.waddr_bits,
                                                     shape=g.weight_word_layout)),
            "pmem_wr": In(memory.WritePort.Signature(addr_width=g.paddr_bits,
                                                     shape=g.pointer_layout)),
            "qmem_wr": In(memory.WritePort.Signature(addr_width=g.qaddr_bits,
                                                     shape=RequantParams())),
            "amem_wr": In(memory.WritePort.Signature(addr_width=g.aaddr_bits, shape=word,
                                                     granularity=8)),
            "amem_rd": In(banked_read_signature(g.aaddr_bits, word)),
        })

    def elaborate(self, platform):
        m = Module()
        b = self._geometry.lanes
        load = self.load.payload
        take = Signal()
        m.d.comb += [self.load.ready.eq(~self.busy), take.eq(self.load.valid & self.load.ready)]
        for port, target in ((self.wmem_wr, TARGET_WMEM), (self.pmem_wr, TARGET_PMEM),
                             (self.qmem_wr, TARGET_QMEM)):
            m.d.comb += [port.addr.eq(load.addr), port.data.eq(load.data),
                         port.en.eq(take & (load.target == target))]
        m.d.comb += [
            self.amem_wr.addr.eq(load.addr), self.amem_wr.data.eq(load.data),
            self.amem_wr.en.eq(Mux(take & (load.target == TARGET_AMEM), (1 << b) - 1, 0)),
        ]

        # Reads: amem's port A into a queue; an address is taken only when the queue has room
        # for it and for the reads in flight.
        m.submodules.results = results = fifo.SyncFIFOBuffered(width=8 * b, depth=QUEUE_DEPTH)
        flight = Signal(BANKED_READ_LATENCY)     # reads taken 1, 2, ... cycles ago
        # The queue's free entries less the reads in flight, as a register (a sum of the
        # level and the reads in flight was an adder and a compare in front of `ready`).
        credits = Signal(range(QUEUE_DEPTH + 1), init=QUEUE_DEPTH)
        taken = Signal()
        returned = Signal()
        m.d.comb += [
            self.rd_addr.ready.eq(~self.busy & (credits != 0)),
            self.amem_rd.addr.eq(self.rd_addr.payload),
            taken.eq(self.rd_addr.valid & self.rd_addr.ready),
            returned.eq(self.rd_data.valid & self.rd_data.ready),
        ]
        with m.If(taken & ~returned):
            m.d.sync += credits.eq(credits - 1)
        with m.Elif(~taken & returned):
            m.d.sync += credits.eq(credits + 1)
        m.d.sync += flight.eq((flight << 1) | (self.rd_addr.valid & self.rd_addr.ready))
        arriving = results.w_stream
        m.d.comb += [arriving.valid.eq(flight[-1]), arriving.payload.eq(self.amem_rd.data)]
        wiring.connect(m, results.r_stream, wiring.flipped(self.rd_data))

        # Host reads go first: an op would overwrite port A's read data. Reads in flight and
        # queued results hold an op back from a register: their sum of the queue's level was
        # a chain of LUTs in front of the descriptor handshake and `busy` (86.6 MHz). The
        # register is a cycle late, which is safe: whatever is in flight or queued in cycle t
        # was taken in t-1 or before, when an offered read or load or a busy queue already
        # set it; an offer in t itself is seen directly.
        in_progress = Signal()
        m.d.sync += in_progress.eq(self.load.valid | self.rd_addr.valid | flight.any() |
                                   results.r_rdy | (results.level != 0))
        m.d.comb += self.hold.eq(self.load.valid | self.rd_addr.valid | in_progress)
        return m
