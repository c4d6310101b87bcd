"""The MAC path of the sparse attention kernel: sequencer, operand pipeline with the MAC lanes,
lane drain and result writer (linear, scores and context ops).

Every block RAM output goes into a register before any logic: ECP5 block RAM has a slow
clock-to-output (about 6 ns), so no adder or multiplexer may follow it in the same cycle.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..mac_lanes import ACC_BITS, MAC_LANES_LATENCY, MacLanes
from ..requant import RequantParams
from .control import job_signature
from .geometry import OP_LINEAR, as_geometry, bits, ceil_div
from .memory import BANKED_READ_LATENCY, ByteWrite, banked_read_signature

#: Extra cycles from a requantized value to its amem write when the geometry has an
#: activation table: the table read and its output register.
ACTIVATION_TABLE_LATENCY = 2

__all__ = ["OPERAND_STAGES", "SEQUENCER_START_CYCLES", "MIN_GROUP_CYCLES", "ACTIVATION_TABLE_LATENCY", "Beat", "GroupTag", "ResultTag", "times_constant",
           "requant_input_signature", "requant_output_signature",
           "MacSequencer", "MacDatapath", "LaneDrain", "ResultWriter"]

#: Registers from a beat to the MAC structure's operands (see :class:`MacDatapath`): the wmem
#: read, the word, the amem addresses, the amem reads and the operands.
OPERAND_STAGES = 2 * BANKED_READ_LATENCY + 3
#: Registers a drained value waits in for its requantization parameters (qmem, a
#: BankedMemory, reads in BANKED_READ_LATENCY cycles; the drain's output register is one).
DRAIN_PARAM_STAGES = BANKED_READ_LATENCY - 1
#: Cycles from a MAC op's start to its walk: the first pointer's address into a register, its
#: read, and the read data into a register.
SEQUENCER_START_CYCLES = 3
#: Cycles a group lasts at least (and the first group of an op): the next group's pointer is
#: read in a group's first cycle and is in a register from its third.
MIN_GROUP_CYCLES = 3


def times_constant(value, constant):
    """``value * constant`` as shifts and adds (no multiplier)."""
    if constant == 0:
        return 0
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class Beat(data.StructLayout):
    """One beat of the MAC structure: the wmem word, the broadcast operand's row start, the
    per-lane operand's column, and the group's ``first`` / ``last`` / ``zero`` (no words)."""
    def __init__(self, geometry):
        super().__init__({
            "waddr": unsigned(geometry.waddr_bits),
            "a_row": unsigned(geometry.aaddr_bits),
            "b_col": unsigned(geometry.aaddr_bits),
            "first": 1,
            "last":  1,
            "zero":  1,
        })


class GroupTag(data.StructLayout):
    """Where a group's B sums land: first output column, output word, and the row's lane
    (``i % B``, the lane of a transposed write)."""
    def __init__(self, geometry):
        super().__init__({
            "n_base": unsigned(geometry.dim_bits + 1),
            "word":   unsigned(geometry.aaddr_bits),
            "i_lane": unsigned(geometry.lane_bits),
        })


class ResultTag(data.StructLayout):
    """The amem word and byte lane of one requantized value."""
    def __init__(self, geometry):
        super().__init__({"word": unsigned(geometry.aaddr_bits),
                          "lane": unsigned(geometry.lane_bits)})


def requant_input_signature(geometry):
    """The :class:`~gen.hw.requant.Requantizer`'s input with a :class:`ResultTag` (as bits:
    the requantizer carries its tag as a plain shape)."""
    return stream.Signature(data.StructLayout({
        "acc": signed(ACC_BITS), "params": RequantParams(),
        "tag": unsigned(ResultTag(geometry).size)}))


def requant_output_signature(geometry):
    """The :class:`~gen.hw.requant.Requantizer`'s output with a :class:`ResultTag` (as bits)."""
    return stream.Signature(data.StructLayout({
        "value": signed(8), "tag": unsigned(ResultTag(geometry).size)}))


class MacSequencer(wiring.Component):
    """Walks the groups (row ``i``, column block ``c``) of a MAC op and issues their beats.

    A group's inner loop is its block's kept rows (linear, from the block pointer in pmem) or
    an index list (scores: kept features, context: keys). The drain takes B cycles per group,
    so a group's last beat is held until B cycles after the previous group's.

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    job : ``In(job_signature(...))``
        MAC ops with work.
    ptr_rd : ``In(memory.ReadPort.Signature(...))``
        pmem's read port (block pointers).
    beats : ``Out(stream.Signature(Beat, always_ready=True))``
        One beat per cycle at most; there is no back-pressure.
    tags : ``Out(stream.Signature(GroupTag))``
        The group's tag with its last beat, into a queue at least :attr:`tags_in_flight` deep
        (so never full).
    busy : ``Out(1)``
        Beats remain to be issued.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        super().__init__({
            "job":    In(job_signature(g)),
            "ptr_rd": In(memory.ReadPort.Signature(addr_width=g.paddr_bits,
                                                   shape=g.pointer_layout)),
            "beats":  Out(stream.Signature(Beat(g), always_ready=True)),
            "tags":   Out(stream.Signature(GroupTag(g))),
            "busy":   Out(1),
        })

    @property
    def tags_in_flight(self):
        """Most groups between their last beat and their sums (groups are >= B cycles apart,
        the first >= 2): the depth the tag queue needs."""
        return ceil_div(OPERAND_STAGES + MAC_LANES_LATENCY, self._geometry.lanes) + 2

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        d = self.job.running
        seq_run = Signal()
        i_left = Signal(g.dim_bits)              # rows after this one
        # `i_left == 0` as a register beside it: the compare was in front of the row step's
        # enables (the routed critical path at 99.2 MHz, seed 4).
        i_last = Signal()
        i_word = Signal(g.aaddr_bits)            # i // B (for transposed output)
        i_lane = Signal(g.lane_bits)             # i % B
        c = Signal(g.block_bits)
        a_row = Signal(g.aaddr_bits)             # a_base + i * a_stride
        b_col = Signal(g.aaddr_bits)             # b_base + c
        o_row = Signal(g.aaddr_bits)             # o_base + i * o_stride
        o_tcol = Signal(g.aaddr_bits)            # o_base + c * B * o_stride (transposed)
        n_base = Signal(g.dim_bits + 1)          # c * B
        pace = max(b, MIN_GROUP_CYCLES)          # a group's cycles at least
        since_last = Signal(bits(pace))          # cycles since the last beat of a group
        count = Signal(g.count_bits)             # inner-loop length of the current group
        waddr = Signal(g.waddr_bits)             # wmem address of the next beat
        linear = Signal()
        m.d.comb += linear.eq(d.op == OP_LINEAR)

        # The group's flags are registers, set when the group is entered, so that the beat
        # decision (which enables most of the sequencer) starts from flip-flops.
        zero = Signal()              # the group has no words: one beat with a zero operand
        left = Signal(g.count_bits)  # beats after the current one (count - 1 - s)
        first = Signal()             # the next beat is the group's first
        last_block = Signal()        # c is the last block of the row
        c_next = Signal(g.block_bits)    # the block of the next group
        p_next = Signal(g.paddr_bits)    # its pointer's pmem address
        p_lo = Signal(g.paddr_bits)      # the first block's pointer address (per op)
        is_last = Signal()
        beat = Signal()
        group_begins = Signal()      # the first cycle of a group (its beats may be held)
        last_group = Signal()
        # `is_last` (the current beat closes its group) and `paced` (B cycles have passed
        # since the previous group's last beat) are registers kept beside `left` and
        # `since_last`: the beat decision enables most of the sequencer.
        paced = Signal()
        m.d.comb += [
            beat.eq(seq_run & ~(is_last & ~paced)),
            last_group.eq(last_block & i_last),
        ]

        # Block pointers: the first group's is read after start; the next group's in the first
        # cycle of the current one. A group lasts at least MIN_GROUP_CYCLES, so the pointer is
        # in `ptr_q` when the group ends and is taken into `count` / `waddr` then.
        # The first pointer is read the cycle after start, from `p_lo` (a register: its adder
        # in front of pmem's address was one of the kernel's longest paths).
        start = self.job.desc
        fetch_first = Signal()
        m.d.sync += fetch_first.eq(self.job.start)
        m.d.comb += [
            self.ptr_rd.addr.eq(Mux(fetch_first, p_lo, p_next)),
            self.ptr_rd.en.eq(fetch_first | (seq_run & group_begins)),
        ]
        # pmem's output into a register before any logic (its clock-to-output is about 6 ns):
        # a pointer read in a group's first cycle is in `ptr_q` from its third, which is why a
        # group lasts at least MIN_GROUP_CYCLES.
        ptr_q = Signal(g.pointer_layout)
        m.d.sync += ptr_q.eq(self.ptr_rd.data)
        next_count = Signal(g.count_bits)
        next_waddr = Signal(g.waddr_bits)
        m.d.comb += [
            next_count.eq(Mux(linear, ptr_q.count, d.list_len)),
            next_waddr.eq(Mux(linear, ptr_q.start, d.list_base)),
        ]

        # The block after `c_next` and its pointer address, from registers only: whether
        # `c_next` is the row's last block (`next_wraps`), the first block's pointer address
        # (`p_lo`) and the block before the last (`c_prelast`), all set per op. (Computed from
        # `c_next` itself, an adder, a compare, a multiplexer and an adder were in series.)
        next_wraps = Signal()
        c_prelast = Signal(g.block_bits + 1)
        lo_wraps = Signal()

        def enter_group(wraps, c_after, p_after, after_wraps):
            """Updates when the group of the block ``c_next`` (or, at launch, ``c_lo``)
            becomes current: ``wraps`` says whether it is the row's last block; the block
            after it is ``c_after`` at ``p_after``, itself the last block iff
            ``after_wraps``."""
            return [
                count.eq(next_count), waddr.eq(next_waddr),
                zero.eq(next_count == 0), left.eq(next_count - 1), first.eq(1),
                is_last.eq(next_count <= 1),
                last_block.eq(wraps),
                c_next.eq(c_after), p_next.eq(p_after), next_wraps.eq(after_wraps),
            ]

        # The walk starts two cycles after start (SEQUENCER_START_CYCLES: `p_lo`, then the
        # first pointer's read).
        launch = Signal()
        fetch_wait = Signal()
        m.d.sync += [fetch_wait.eq(fetch_first), launch.eq(fetch_wait)]
        with m.If(self.job.start):
            m.d.sync += [p_lo.eq(start.ptr_base + start.c_lo), c_prelast.eq(start.c_hi - 2),
                         lo_wraps.eq(start.c_lo + 1 == start.c_hi)]
        with m.If(launch):
            m.d.sync += enter_group(lo_wraps, Mux(lo_wraps, d.c_lo, d.c_lo + 1),
                                    Mux(lo_wraps, p_lo, p_lo + 1),
                                    Mux(lo_wraps, lo_wraps, d.c_lo == c_prelast))
            m.d.sync += [
                seq_run.eq(1),
                i_left.eq(d.rows - 1), i_last.eq(d.rows == 1), i_word.eq(0), i_lane.eq(0),
                c.eq(d.c_lo),
                a_row.eq(d.a_base), b_col.eq(d.b_base + d.c_lo),
                o_row.eq(d.o_base), o_tcol.eq(d.o_base),
                n_base.eq(times_constant(d.c_lo, b)),
                # The first group's last beat may come MIN_GROUP_CYCLES after launch.
                since_last.eq(pace - (MIN_GROUP_CYCLES - 1)), paced.eq(0),
            ]
        with m.Elif(beat):
            with m.If(is_last):
                m.d.sync += enter_group(next_wraps, Mux(next_wraps, d.c_lo, c_next + 1),
                                        Mux(next_wraps, p_lo, p_next + 1),
                                        Mux(next_wraps, lo_wraps, c_next == c_prelast))
                m.d.sync += [since_last.eq(1), paced.eq(0), c.eq(c_next)]
                with m.If(last_group):
                    m.d.sync += seq_run.eq(0)
                with m.Elif(last_block):
                    m.d.sync += [
                        n_base.eq(times_constant(d.c_lo, b)),
                        b_col.eq(d.b_base + d.c_lo),
                        i_left.eq(i_left - 1), i_last.eq(i_left == 1),
                        a_row.eq(a_row + d.a_stride), o_row.eq(o_row + d.o_stride),
                        o_tcol.eq(d.o_base),
                    ]
                    with m.If(i_lane == b - 1):
                        m.d.sync += [i_lane.eq(0), i_word.eq(i_word + 1)]
                    with m.Else():
                        m.d.sync += i_lane.eq(i_lane + 1)
                with m.Else():
                    m.d.sync += [n_base.eq(n_base + b), b_col.eq(b_col + 1),
                                 o_tcol.eq(o_tcol + times_constant(d.o_stride, b))]
            with m.Else():
                m.d.sync += [left.eq(left - 1), first.eq(0), waddr.eq(waddr + 1),
                             is_last.eq(left == 1)]
        with m.If(~launch & ~(beat & is_last) & ~paced):
            m.d.sync += [since_last.eq(since_last + 1), paced.eq(since_last == pace - 1)]
        m.d.sync += group_begins.eq(launch | (beat & is_last))

        m.d.comb += [
            self.beats.valid.eq(beat),
            self.beats.payload.waddr.eq(waddr),
            self.beats.payload.a_row.eq(a_row),
            self.beats.payload.b_col.eq(b_col),
            self.beats.payload.first.eq(first),
            self.beats.payload.last.eq(is_last),
            self.beats.payload.zero.eq(zero),
            # The tag waits in a queue from the group's last beat to its sums.
            self.tags.valid.eq(beat & is_last),
            self.tags.payload.n_base.eq(n_base),
            self.tags.payload.word.eq(Mux(d.transpose, o_tcol + i_word, o_row + c)),
            self.tags.payload.i_lane.eq(i_lane),
            self.busy.eq(seq_run | launch | fetch_first | fetch_wait),
        ]
        return m


class MacDatapath(wiring.Component):
    """Beats in, sums out: the operand pipeline and the MAC lanes.

    The pipeline has :data:`OPERAND_STAGES` registers from a beat to the MAC structure's
    operands: the wmem read (:data:`BANKED_READ_LATENCY` cycles), the word registered, the amem
    addresses registered (broadcast row + ``k // B`` for port A, per-lane row ``offset(k) + c``
    for port B), the amem reads (:data:`BANKED_READ_LATENCY`), and lane select -> MAC operands.

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    beats : ``In(stream.Signature(Beat, always_ready=True))``
    job : ``In(job_signature(...))``
        MAC ops: a linear op's per-lane operand is the weight word itself, that of scores and
        context an amem word (the weight word holds its offset).
    wmem_rd, amem_rd, amem_rd1 : ``In(banked_read_signature(...))``
        wmem's read port; amem's port A (broadcast operand) and port B (per-lane operand).
    sums : ``Out(stream.Signature(ArrayLayout(signed(32), B), always_ready=True))``
        A group's B sums, one transfer per group; held only for that cycle.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        word = unsigned(8 * g.lanes)
        super().__init__({
            "beats":    In(stream.Signature(Beat(g), always_ready=True)),
            "job":      In(job_signature(g)),
            "wmem_rd":  In(banked_read_signature(g.waddr_bits, g.weight_word_layout)),
            "amem_rd":  In(banked_read_signature(g.aaddr_bits, word)),
            "amem_rd1": In(banked_read_signature(g.aaddr_bits, word)),
            "sums":     Out(stream.Signature(data.ArrayLayout(signed(ACC_BITS), g.lanes),
                                             always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        m.submodules.lanes = mac = MacLanes(b, ports=g.ports, packing=g.packing)

        beat = self.beats.payload
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "zero": 1})
        now = Signal(flags)
        m.d.comb += [now.valid.eq(self.beats.valid), now.first.eq(beat.first),
                     now.last.eq(beat.last), now.zero.eq(beat.zero)]

        def delayed(value, shape, name, reset_less=False):
            # `value` BANKED_READ_LATENCY cycles later: beside a read in flight.
            for k in range(BANKED_READ_LATENCY):
                reg = Signal(shape, name=f"{name}_{k + 1}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        # The wmem read; the beat's flags and operand rows travel beside it.
        m.d.comb += self.wmem_rd.addr.eq(beat.waddr)
        at_wmem = delayed(now, flags, "st_w")
        at_wmem_a_row = delayed(beat.a_row, g.aaddr_bits, "st_w_a_row")
        at_wmem_b_col = delayed(beat.b_col, g.aaddr_bits, "st_w_b_col")
        # Stage 2: the word registered; stage 2b: the amem addresses registered (their adders
        # in front of the banks' address multiplexers were among the kernel's longest paths).
        st2, st2b, st5 = (Signal(flags, name=f"st{n}") for n in ("2", "2b", "5"))
        st2_a_row = Signal(g.aaddr_bits)
        st2_b_col = Signal(g.aaddr_bits)
        st2_word = Signal(g.word_bits)
        st2_lane, st2b_lane = (Signal(g.lane_bits, name=f"st{n}_lane") for n in ("2", "2b"))
        # Data registers need no reset (the flags say what is valid).
        st2_value, st2b_value = (Signal(8 * b, name=f"st{n}_value", reset_less=True)
                                 for n in ("2", "2b"))
        addr_a = Signal(g.aaddr_bits)
        addr_b = Signal(g.aaddr_bits)
        m.d.sync += [
            st2.eq(at_wmem), st2_a_row.eq(at_wmem_a_row), st2_b_col.eq(at_wmem_b_col),
            st2_word.eq(self.wmem_rd.data.word), st2_lane.eq(self.wmem_rd.data.lane),
            st2_value.eq(self.wmem_rd.data.value),
            st2b.eq(st2), st2b_lane.eq(st2_lane), st2b_value.eq(st2_value),
            addr_a.eq(st2_a_row + st2_word),
            addr_b.eq(st2_b_col + st2_value[:g.aaddr_bits]),
        ]
        # The amem reads, with the lane and the weight word beside them.
        at_amem = delayed(st2b, flags, "st_a")
        at_amem_lane = delayed(st2b_lane, g.lane_bits, "st_a_lane")
        at_amem_value = delayed(st2b_value, 8 * b, "st_a_value", reset_less=True)
        m.d.sync += st5.eq(at_amem)
        m.d.comb += [self.amem_rd.addr.eq(addr_a), self.amem_rd1.addr.eq(addr_b)]
        x_reg = Signal(signed(8), reset_less=True)
        w_reg = Signal(8 * b, reset_less=True)
        m.d.sync += [
            x_reg.eq(Mux(at_amem.zero, 0, self.amem_rd.data.word_select(at_amem_lane, 8))),
            w_reg.eq(Mux(self.job.running.op == OP_LINEAR, at_amem_value, self.amem_rd1.data)),
        ]
        m.d.comb += [
            mac.valid.eq(st5.valid), mac.first.eq(st5.first), mac.last.eq(st5.last),
            mac.x.eq(x_reg), mac.w.eq(w_reg),
            self.sums.valid.eq(mac.done),
            self.sums.payload.eq(mac.acc),
        ]
        return m


class LaneDrain(wiring.Component):
    """A group's B sums into the requantizer, one value per cycle, with their parameters.

    The sums are copied into a shift chain when they arrive; each value's requantization
    parameters are read from qmem (its output column's, or the op's one selection); values
    outside the op's column range ``[n_lo, n_hi)`` are dropped. The drain never stalls: the
    requantizer's output is always taken (:class:`ResultWriter`), so its input is always ready.

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    sums : ``In(stream.Signature(ArrayLayout(signed(32), B), always_ready=True))``
    tags : ``In(stream.Signature(GroupTag))``
        The group's tag, taken with its sums.
    job : ``In(job_signature(...))``
        MAC ops (``transpose``, ``o_stride``, ``n_lo``, ``n_hi``, ``per_channel``,
        ``q_base`` of the running one).
    param_rd : ``In(banked_read_signature(...))``
        qmem's read port (a :class:`~gen.hw.attention.memory.BankedMemory`): the values wait
        :data:`DRAIN_PARAM_STAGES` registers beside the read for their parameters.
    o : ``Out(requant_input_signature(...))``
        Accumulator, parameters and the :class:`ResultTag` of its amem byte.
    busy : ``Out(1)``
        A group waits or drains.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        super().__init__({
            "sums":     In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), g.lanes),
                                            always_ready=True)),
            "tags":     In(stream.Signature(GroupTag(g))),
            "job":      In(job_signature(g)),
            "param_rd": In(banked_read_signature(g.qaddr_bits, RequantParams())),
            "o":        Out(requant_input_signature(g)),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        b = g.lanes
        d = self.job.running
        chain = [Signal(signed(ACC_BITS), name=f"chain_{l}", reset_less=True) for l in range(b)]
        drain_left = Signal(range(b + 1))
        dr_n = Signal(g.dim_bits + 1)
        dr_word = Signal(g.aaddr_bits)
        dr_lane = Signal(g.lane_bits)
        dr_ilane = Signal(g.lane_bits)
        send = Signal()
        head = self.tags.payload
        m.d.comb += [send.eq(drain_left != 0), self.tags.ready.eq(self.sums.valid)]
        # qmem's address follows `dr_n` as a register (the adder and the multiplexer were in
        # front of the read port): q_base + dr_n per channel, else q_base.
        q_addr = Signal(g.qaddr_bits)
        with m.If(self.sums.valid):
            m.d.sync += [chain[l].eq(self.sums.payload[l]) for l in range(b)]
            m.d.sync += [drain_left.eq(b), dr_n.eq(head.n_base), dr_word.eq(head.word),
                         dr_lane.eq(0), dr_ilane.eq(head.i_lane),
                         q_addr.eq(Mux(d.per_channel, d.q_base + head.n_base, d.q_base))]
        with m.Elif(send):
            m.d.sync += [chain[l].eq(chain[l + 1]) for l in range(b - 1)]
            m.d.sync += [drain_left.eq(drain_left - 1), dr_n.eq(dr_n + 1),
                         dr_lane.eq(dr_lane + 1),
                         dr_word.eq(dr_word + Mux(d.transpose, d.o_stride, 0)),
                         q_addr.eq(q_addr + d.per_channel)]

        out_valid, out_skip = Signal(), Signal()
        out_acc = Signal(signed(ACC_BITS), reset_less=True)
        out_tag = Signal(ResultTag(g))
        m.d.sync += [
            out_valid.eq(send),
            out_skip.eq((dr_n < d.n_lo) | (dr_n >= d.n_hi)),
            out_acc.eq(chain[0]),
            out_tag.word.eq(dr_word),
            out_tag.lane.eq(Mux(d.transpose, dr_ilane, dr_lane)),
        ]
        # qmem's word comes BANKED_READ_LATENCY cycles after its address (from a register
        # beside its block RAM, not from the block RAM itself, which on ECP5 is timed 5.8 ns
        # after the clock: the routed critical path at 95.5 MHz): the value waits for it.
        valid, skip, acc, tag = out_valid, out_skip, out_acc, out_tag
        stage_valids = [out_valid]
        for stage in range(DRAIN_PARAM_STAGES):
            valid_q, skip_q = Signal(name=f"param_wait{stage}_valid"), Signal(
                name=f"param_wait{stage}_skip")
            acc_q = Signal.like(out_acc, name=f"param_wait{stage}_acc", reset_less=True)
            tag_q = Signal.like(out_tag, name=f"param_wait{stage}_tag")
            m.d.sync += [valid_q.eq(valid), skip_q.eq(skip), acc_q.eq(acc), tag_q.eq(tag)]
            valid, skip, acc, tag = valid_q, skip_q, acc_q, tag_q
            stage_valids.append(valid_q)
        m.d.comb += [
            self.param_rd.addr.eq(q_addr),
            self.o.valid.eq(valid & ~skip),
            self.o.payload.acc.eq(acc),
            self.o.payload.params.eq(self.param_rd.data),
            self.o.payload.tag.eq(tag),
            self.busy.eq((drain_left != 0) | Cat(*stage_valids).any() | self.tags.valid),
        ]
        return m


class ResultWriter(wiring.Component):
    """Requantized values into amem bytes (registered), with the op's optional ReLU, or its
    activation table where the geometry has one.

    Parameters
    ----------
    geometry : AttentionGeometry

    Members
    -------
    i : ``In(requant_output_signature(...))``
        Always ready.
    job : ``In(job_signature(...))``
        MAC ops: write ``max(value, 0)`` (or ``table[value + 128]`` with
        ``geometry.activation_tables``) if the running one has ``relu``.
    act_wr : ``Out(memory.WritePort.Signature(addr_width=act_addr_bits, shape=signed(8)))``
        Only with ``geometry.activation_tables``: entry ``v + 128`` of the table.
    write : ``Out(stream.Signature(ByteWrite, always_ready=True))``
    busy : ``Out(1)``
        A write is pending.
    """

    def __init__(self, geometry):
        self._geometry = g = as_geometry(geometry)
        members = {
            "i":     In(requant_output_signature(g)),
            "job":   In(job_signature(g)),
            "write": Out(stream.Signature(ByteWrite(g.aaddr_bits, g.lane_bits),
                                          always_ready=True)),
            "busy":  Out(1),
        }
        if g.activation_tables:
            members["act_wr"] = Out(memory.WritePort.Signature(addr_width=g.act_addr_bits, shape=signed(8)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        value = self.i.payload.value
        tag = ResultTag(g)(self.i.payload.tag)
        m.d.comb += self.i.ready.eq(1)
        if not g.activation_tables:
            m.d.comb += self.busy.eq(self.write.valid)
            m.d.sync += [
                self.write.valid.eq(self.i.valid),
                self.write.payload.addr.eq(tag.word),
                self.write.payload.lane.eq(tag.lane),
                self.write.payload.value.eq(Mux(self.job.running.relu & value[7], 0, value)),
            ]
            return m

        # The table: a read, then a register (a block RAM's output is never used unregistered).
        m.submodules.table = table = memory.Memory(shape=signed(8),
                                                   depth=256 * g.activation_tables, init=[])
        wiring.connect(m, wiring.flipped(self.act_wr), table.write_port())
        rd = table.read_port()
        valid = [Signal(name=f"valid_{n}") for n in range(ACTIVATION_TABLE_LATENCY)]
        tags = [Signal(ResultTag(g), name=f"tag_{n}") for n in range(ACTIVATION_TABLE_LATENCY)]
        apply = [Signal(name=f"apply_{n}") for n in range(ACTIVATION_TABLE_LATENCY)]
        plain = [Signal(signed(8), name=f"plain_{n}") for n in range(ACTIVATION_TABLE_LATENCY)]
        looked_up = Signal(signed(8))
        m.d.comb += [rd.addr.eq(Cat(value.as_unsigned() ^ 0x80, self.job.running.table)),
                     rd.en.eq(1)]
        m.d.sync += [valid[0].eq(self.i.valid), tags[0].eq(tag), plain[0].eq(value),
                     apply[0].eq(self.job.running.relu), looked_up.eq(rd.data)]
        for n in range(1, ACTIVATION_TABLE_LATENCY):
            m.d.sync += [valid[n].eq(valid[n - 1]), tags[n].eq(tags[n - 1]),
                         plain[n].eq(plain[n - 1]), apply[n].eq(apply[n - 1])]
        last = ACTIVATION_TABLE_LATENCY - 1
        m.d.sync += [
            self.write.valid.eq(valid[last]),
            self.write.payload.addr.eq(tags[last].word),
            self.write.payload.lane.eq(tags[last].lane),
            self.write.payload.value.eq(Mux(apply[last], looked_up, plain[last])),
        ]
        m.d.comb += self.busy.eq(self.write.valid | (sum(valid) != 0))
        return m
