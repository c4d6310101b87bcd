"""The sparse attention kernel: its components joined (see :mod:`gen.hw.attention`)."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..requant import Requantizer, RequantParams
from ..softmax import IntSoftmax
from .control import HostPort, OpControl
from .geometry import OP_SOFTMAX, AttentionGeometry
from .mac import GroupTag, LaneDrain, MacDatapath, MacSequencer, ResultTag, ResultWriter
from .memory import ActivationMemory, BankedMemory, shaped_stream
from .softmax_path import SoftmaxReader, SoftmaxWriter

__all__ = ["SparseAttentionKernel"]


class SparseAttentionKernel(wiring.Component):
    """Sparse INT8 encoder-layer kernel: linear (compressed weights), scores, softmax, context.

    Parameters
    ----------
    geometry : AttentionGeometry, optional
        What to generate. Without it, the keyword arguments are those of
        :class:`AttentionGeometry` (``lanes``, ``tokens``, ``dim``, ``heads``, ``ffn``,
        ``capacity``, ``packing``, ``ports``, ``extra_params``).

    Members
    -------
    load : ``In(stream.Signature(geometry.load_layout))``
        ``{target, addr, data}`` writes one word of wmem / pmem / qmem / amem.
    desc : ``In(stream.Signature(geometry.descriptor_layout))``
        One op per transfer.
    rd_addr : ``In(stream.Signature(...))``, rd_data : ``Out(stream.Signature(8 * B))``
        Read an amem word (served while no op runs).
    busy, done : ``Out(1)``
        An op runs; it has finished (one-cycle pulse).
    cycles : ``Out(32)``
        Cycles during which ``busy`` was high, since reset.
    act_wr : ``Out(memory.WritePort.Signature(addr_width=act_addr_bits, shape=signed(8)))``
        Only with ``geometry.activation_tables``: writes entry ``v + 128`` of the table.
    """

    def __init__(self, geometry=None, **params):
        try:
            if geometry is None:
                geometry = AttentionGeometry(**params)
            elif params:
                raise UserError(f"give either a geometry or its parameters, not both "
                                f"({sorted(params)})")
            elif not isinstance(geometry, AttentionGeometry):
                raise UserError(f"geometry must be an AttentionGeometry, not {geometry!r}")
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        self._geometry = g = geometry
        members = {
            "load":    In(stream.Signature(g.load_layout)),
            "desc":    In(stream.Signature(g.descriptor_layout)),
            "rd_addr": In(stream.Signature(unsigned(g.aaddr_bits))),
            "rd_data": Out(stream.Signature(unsigned(8 * g.lanes))),
            "busy":    Out(1),
            "done":    Out(1),
            "cycles":  Out(32),
        }
        if g.activation_tables:
            members["act_wr"] = Out(memory.WritePort.Signature(addr_width=g.act_addr_bits, shape=signed(8)))
        super().__init__(members)

    @property
    def geometry(self):
        """The :class:`AttentionGeometry` the kernel is generated for."""
        return self._geometry

    def elaborate(self, platform):
        m = Module()
        g = self._geometry

        # Memories: wmem is the deepest (all weights), so banked like amem.
        m.submodules.wmem = wmem = BankedMemory(g.weight_word_layout, g.wmem_depth)
        m.submodules.pmem = pmem = memory.Memory(shape=g.pointer_layout, depth=g.pmem_depth,
                                                 init=[])
        m.submodules.qmem = qmem = BankedMemory(RequantParams(), g.qmem_depth)
        m.submodules.amem = amem = ActivationMemory(lanes=g.lanes, depth=g.amem_depth)

        # Host side and op control.
        m.submodules.host = host = HostPort(g)
        m.submodules.control = control = OpControl(g)
        wiring.connect(m, wiring.flipped(self.load), host.load)
        wiring.connect(m, wiring.flipped(self.rd_addr), host.rd_addr)
        wiring.connect(m, host.rd_data, wiring.flipped(self.rd_data))
        wiring.connect(m, wiring.flipped(self.desc), control.desc)
        wiring.connect(m, host.wmem_wr, wmem.wr)
        wiring.connect(m, host.pmem_wr, pmem.write_port())
        wiring.connect(m, host.qmem_wr, qmem.wr)
        wiring.connect(m, host.amem_wr, amem.host_wr)
        wiring.connect(m, host.amem_rd, amem.host_rd)
        op = control.op
        # Which op owns amem's port A and write port, as a register: it selects every address
        # bit. It follows `op` a cycle late, still before any part touches amem (the parts
        # start JOB_START_LATENCY after `op` is set, and read or write later still).
        op_is_mac = Signal()
        m.d.sync += op_is_mac.eq(op.op != OP_SOFTMAX)
        m.d.comb += [
            control.hold.eq(host.hold),
            host.busy.eq(control.busy),
            amem.busy.eq(control.busy),
            amem.mac.eq(op_is_mac),
            self.busy.eq(control.busy),
            self.done.eq(control.done),
            self.cycles.eq(control.cycles),
        ]

        # MAC ops: sequencer -> operands and MAC lanes -> drain -> requantizer -> amem; each
        # group's tag waits in a queue from its last beat to its sums.
        m.submodules.sequencer = sequencer = MacSequencer(g)
        m.submodules.datapath = datapath = MacDatapath(g)
        m.submodules.tags = tags = fifo.SyncFIFO(width=GroupTag(g).size,
                                                 depth=sequencer.tags_in_flight)
        m.submodules.drain = drain = LaneDrain(g)
        m.submodules.requant = requant = Requantizer(tag_shape=unsigned(ResultTag(g).size))
        m.submodules.writer = writer = ResultWriter(g)
        wiring.connect(m, control.mac_job, sequencer.job, datapath.job, drain.job, writer.job)
        wiring.connect(m, sequencer.ptr_rd, pmem.read_port())
        wiring.connect(m, sequencer.beats, datapath.beats)
        wiring.connect(m, sequencer.tags, shaped_stream(tags.w_stream, GroupTag(g)))
        wiring.connect(m, datapath.wmem_rd, wmem.rd)
        wiring.connect(m, datapath.amem_rd, amem.mac_rd)
        wiring.connect(m, datapath.amem_rd1, amem.mac_rd1)
        wiring.connect(m, datapath.sums, drain.sums)
        wiring.connect(m, shaped_stream(tags.r_stream, GroupTag(g)), drain.tags)
        wiring.connect(m, drain.param_rd, qmem.rd)
        wiring.connect(m, drain.o, requant.i)
        wiring.connect(m, requant.o, writer.i)
        wiring.connect(m, writer.write, amem.mac_wr)
        if g.activation_tables:
            wiring.connect(m, wiring.flipped(self.act_wr), writer.act_wr)

        # Softmax ops: S rows -> IntSoftmax -> P rows.
        m.submodules.softmax_reader = reader = SoftmaxReader(g)
        m.submodules.softmax = softmax = IntSoftmax(g.tokens)
        m.submodules.softmax_writer = sm_writer = SoftmaxWriter(g)
        wiring.connect(m, control.softmax_job, reader.job, sm_writer.job)
        wiring.connect(m, reader.amem_rd, amem.softmax_rd)
        wiring.connect(m, reader.scores, softmax.i)
        wiring.connect(m, softmax.o, sm_writer.probs)
        wiring.connect(m, sm_writer.write, amem.softmax_wr)

        m.d.comb += [
            control.parts_busy.sequencer.eq(sequencer.busy),
            control.parts_busy.drain.eq(drain.busy),
            control.parts_busy.requantizer.eq(requant.busy),
            control.parts_busy.mac_writer.eq(writer.busy),
            control.parts_busy.softmax_reader.eq(reader.busy),
            control.parts_busy.softmax_writer.eq(sm_writer.busy),
        ]
        return m
