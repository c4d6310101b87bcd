"""A ViT reuse engine (ViA's NSA or NMP): a sparse attention kernel, the row units and a
program that runs one half-layer per message (docs/vit.md section 3).

An engine is stateless between half-layers: a *message* is a whole half-layer's input, the
pair ``(shortcut, branch)`` of every element of a ``T x D`` residual stream, and the engine
starts the program its tag selects (``entry[tag]``) when one arrives. The program's steps:

``RECEIVE``
    the message's pairs (or, ``local``, two amem matrices read side by side) through the
    :class:`~gen.hw.vit.residual.ResidualAdder` (half-layer mapping: the residual add that
    ends the previous half-layer runs here) into amem at ``x_base``, and at the same time
    (``ln``) through the :class:`~gen.hw.vit.layernorm.IntLayerNorm` into ``n_base``;
``DESC``
    one kernel op (linear, scores, softmax, context), waiting for its ``done``;
``SEND``
    the matrices at ``a_base`` and ``b_base`` out as the next message, with ``tag``;
``IMAGE``
    (an engine with an image input) ``rows x cols`` pixels of one image into amem at
    ``x_base``: a new image enters the pipeline;
``RESULT``
    (an engine with a result output) the ``cols`` logits at ``a_base``, with their first
    maximum's index, out as one result: an image leaves the pipeline;
``END``
    back to waiting for a message (or an image).

The host loads every memory through ``load`` while the engine waits: targets 0-3 are the
kernel's (wmem, pmem, qmem, amem), 4 the program, 5 the entry table, 6 the LayerNorm
parameters, 7 the activation table (an engine whose geometry has one).
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..attention import SparseAttentionKernel
from ..attention.geometry import as_geometry, bits
from .argmax import Argmax
from .layernorm import IntLayerNorm, LnParams
from .residual import ResidualAdder, ResidualParams
from .rows import RowJob, RowPacker, RowReader

__all__ = ["STEP_DESC", "STEP_RECEIVE", "STEP_SEND", "STEP_IMAGE", "STEP_RESULT", "STEP_END",
           "TARGET_PROGRAM", "TARGET_ENTRY", "TARGET_LN", "TARGET_ACT",
           "MessageBeat", "Step", "EngineShape", "ViTEngine"]

STEP_DESC, STEP_RECEIVE, STEP_SEND, STEP_IMAGE, STEP_RESULT, STEP_END = range(6)
#: Entries of each registered queue between the receive path's units, and its latency
#: (``SyncFIFOBuffered``: a write, then the output register).
SKID_DEPTH = 4
SKID_LATENCY = 2
#: Entries of the registered queue of writes into the kernel (host loads and the packers'
#: words), and the cycles a write spends in it.
KERNEL_LOAD_DEPTH = 2
KERNEL_LOAD_LATENCY = 2
#: Cycles a message beat spends in the registered queue between the inter-engine FIFO and the
#: residual adder, and that queue's entries (its room is a register: see the engine).
MESSAGE_QUEUE_LATENCY = SKID_LATENCY
MESSAGE_QUEUE_DEPTH = SKID_DEPTH + 2
#: Cycles a read address spends in the registered queue between a row reader and the kernel
#: (``SyncFIFOBuffered`` of ``SKID_DEPTH``, as the receive path's queues).
READ_ADDRESS_LATENCY = SKID_LATENCY
#: Cycles from a row step's start in the program to its units' start (a register: the
#: start fans out to every unit's job registers).
UNIT_START_LATENCY = 1
#: Cycles from a row step's units all idle to the program's next fetch (a register).
UNITS_IDLE_LATENCY = 1
#: Cycles a program run spends looking up its entry (the registered tag, then the table).
ENTRY_LOOKUP_CYCLES = 1
#: Registers between the program memory's read data and the step's decode: the inferred block
#: RAM's word (5.61 ns after the clock) through the decode of the step's kind into its flags
#: was the routed critical path at 99.8 MHz (seed 3); each step costs this many cycles more.
PROGRAM_WORD_STAGES = 1
#: Cycles a program run costs beyond its steps: the entry lookup and the END step's own (its
#: fetch, the program word's register and its decode).
PROGRAM_OVERHEAD_CYCLES = ENTRY_LOOKUP_CYCLES + 2 + PROGRAM_WORD_STAGES
TARGET_PROGRAM, TARGET_ENTRY, TARGET_LN, TARGET_ACT = 4, 5, 6, 7


class MessageBeat(data.StructLayout):
    """One element pair of a message, with the half-layer it is for."""
    def __init__(self, tag_bits):
        super().__init__({"a": unsigned(8), "b": unsigned(8), "tag": unsigned(tag_bits)})


class EngineShape:
    """What one engine is generated for, beyond its kernel's geometry.

    Parameters
    ----------
    geometry : AttentionGeometry
    program_depth : int
        Steps the program memory holds.
    entries : int
        Entry-table size (message tags ``0 .. entries - 1``).
    ln_params : int
        LayerNorm parameter words (``D`` per LayerNorm the engine runs).
    image_pixels : int
        0, or the pixels of one image (an engine with an image input).
    classes : int
        0, or the logits of one result (an engine with a result output).
    images_in_flight : int
        With an image input: images let in before the first has left.
    """

    def __init__(self, geometry, *, program_depth, entries, ln_params, image_pixels=0,
                 classes=0, images_in_flight=1):
        self.geometry = as_geometry(geometry)
        for name, value, low in (("program_depth", program_depth, 1), ("entries", entries, 1),
                                 ("ln_params", ln_params, self.geometry.dim),
                                 ("image_pixels", image_pixels, 0), ("classes", classes, 0),
                                 ("images_in_flight", images_in_flight, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"engine {name} must be an integer >= {low}, not {value!r}")
        if classes > 255:
            raise UserError(f"engine classes must be at most 255, not {classes}")
        self.program_depth = program_depth
        self.entries = entries
        self.ln_params = ln_params
        self.image_pixels = image_pixels
        self.classes = classes
        self.images_in_flight = images_in_flight

    @property
    def tag_bits(self):
        return bits(self.entries - 1)

    @property
    def pc_bits(self):
        return bits(self.program_depth - 1)

    @property
    def message_layout(self):
        return MessageBeat(self.tag_bits)

    @property
    def step_layout(self):
        return Step(self)

    @property
    def load_layout(self):
        g = self.geometry
        kernel = g.load_layout
        addr = max(kernel["addr"].shape.width, self.pc_bits, bits(self.entries - 1),
                   bits(self.ln_params - 1), 8)
        width = max(kernel["data"].shape.width, Step(self).size, LnParams().size, 8)
        return data.StructLayout({"target": unsigned(3), "addr": unsigned(addr),
                                  "data": unsigned(width)})

    @property
    def result_layout(self):
        return data.StructLayout({"cls": unsigned(8),
                                  "logits": data.ArrayLayout(unsigned(8), max(self.classes, 1))})


class Step(data.StructLayout):
    """One program step (see the module's docstring for what each kind does)."""
    def __init__(self, shape):
        g = shape.geometry
        a = unsigned(g.aaddr_bits)
        super().__init__({
            "kind":    unsigned(3),
            "desc":    g.descriptor_layout,
            "local":   unsigned(1),
            "ln":      unsigned(1),
            "a_base":  a, "b_base": a, "x_base": a, "n_base": a,
            "rows":    unsigned(g.dim_bits),
            "cols":    unsigned(g.dim_bits),
            "words":   unsigned(g.dim_bits),
            "stride":  a,
            "count":   unsigned(bits(g.max_inner * g.max_inner)),
            "ln_base": unsigned(bits(shape.ln_params - 1)),
            "radd":    ResidualParams(),
            "tag":     unsigned(shape.tag_bits),
        })


class ViTEngine(wiring.Component):
    """A reuse engine: kernel, residual adder, LayerNorm, row movers and the program.

    Parameters
    ----------
    shape : EngineShape

    Members
    -------
    load : ``In(stream.Signature(shape.load_layout))``
        ``{target, addr, data}``; taken only while the engine waits for work.
    msg_in : ``In(stream.Signature(shape.message_layout))``, msg_out : ``Out(...)``
        Messages: ``T x D`` pairs each, the tag on every beat.
    image : ``In(stream.Signature(unsigned(8)))``
        Only with ``shape.image_pixels``: pixels, one image after another.
    result : ``Out(stream.Signature(shape.result_layout))``
        Only with ``shape.classes``: the class and the INT8 logits of one image.
    busy : ``Out(1)``
        A program runs.
    cycles, op_cycles : ``Out(32)``
        Cycles a program ran; cycles a kernel op ran (its MAC lanes or softmax unit busy).
    """

    def __init__(self, shape):
        if not isinstance(shape, EngineShape):
            self._MustUse__silence = True
            raise UserError(f"shape must be an EngineShape, not {shape!r}")
        self._shape = shape
        members = {
            "load":      In(stream.Signature(shape.load_layout)),
            "msg_in":    In(stream.Signature(shape.message_layout)),
            "msg_out":   Out(stream.Signature(shape.message_layout)),
            "busy":      Out(1),
            "cycles":    Out(32),
            "op_cycles": Out(32),
        }
        if shape.image_pixels:
            members["image"] = In(stream.Signature(unsigned(8)))
        if shape.classes:
            members["result"] = Out(stream.Signature(shape.result_layout))
        super().__init__(members)

    @property
    def shape(self):
        return self._shape

    def elaborate(self, platform):
        m = Module()
        sh = self._shape
        g = sh.geometry

        m.submodules.kernel = kernel = SparseAttentionKernel(g)
        m.submodules.adder = adder = ResidualAdder(lanes=1)
        m.submodules.ln = ln = IntLayerNorm(g.dim, sh.ln_params)
        m.submodules.x_packer = x_packer = RowPacker(g)
        m.submodules.n_packer = n_packer = RowPacker(g)
        m.submodules.pairs = pairs = RowReader(g, pair=True)

        program = memory.Memory(shape=Step(sh), depth=sh.program_depth, init=[])
        entry = memory.Memory(shape=unsigned(sh.pc_bits), depth=sh.entries, init=[])
        m.submodules.program = program
        m.submodules.entry = entry
        prog_wr, prog_rd = program.write_port(), program.read_port()
        entry_wr, entry_rd = entry.write_port(), entry.read_port(domain="comb")

        # -- control ----------------------------------------------------------------------
        step = Signal(Step(sh))
        pc = Signal(sh.pc_bits)
        started = Signal()              # the current step's unit has been started
        unit_start = Signal()           # the program starts the step's units ...
        unit_go = Signal()              # ... and they see it (UNIT_START_LATENCY)
        m.d.sync += unit_go.eq(unit_start)
        inflight = Signal(range(sh.images_in_flight + 1))

        # The step's kind as flags, registers set with the step itself (DECODE): decoded from
        # `step` they were LUTs in front of the pair reader's ready logic (the routed critical
        # path at 85 MHz). The engine is idle only on the END step (or after reset), where
        # every flag is 0, so they equal "busy and the step is of this kind".
        local = Signal()
        sending = Signal()
        fetched = Signal(Step(sh))      # the program word, a register with no enable
        m.d.comb += [
            prog_rd.addr.eq(pc),
            prog_rd.en.eq(1),
        ]
        m.d.sync += fetched.eq(prog_rd.data)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += self.op_cycles.eq(kernel.cycles)

        idle_load = Signal()
        take_image = Signal()
        if sh.image_pixels:
            # The pixels wait in a registered queue beside the x packer: taken straight, the
            # packer's ready reached the host side's pixel stage and came back, through one
            # multiplexer, into the packer's own enables (99.1 MHz, seed 6). A pixel a cycle
            # still passes, so an image step costs no cycle more.
            m.submodules.pixels = pixels = fifo.SyncFIFOBuffered(width=8, depth=SKID_DEPTH)
            m.d.comb += [pixels.w_stream.valid.eq(self.image.valid),
                         pixels.w_stream.payload.eq(self.image.payload),
                         self.image.ready.eq(pixels.w_stream.ready)]
            m.d.comb += take_image.eq(pixels.r_stream.valid & (inflight < sh.images_in_flight))

        units_busy = Signal()
        # The message's tag into a register before the entry table (ENTRY_LOOKUP_CYCLES): the
        # FIFO's block RAM output, the table read and the program counter were one path.
        entry_tag = Signal(sh.tag_bits)
        m.d.comb += entry_rd.addr.eq(entry_tag)
        # A register (UNITS_IDLE_LATENCY): the OR of every unit's state was in front of the
        # program counter. Forced while the step's units are being started.
        units_busy_q = Signal()
        m.d.sync += units_busy_q.eq(units_busy | unit_start)
        # The descriptor is the step's, whatever the state (only `valid` depends on it): a
        # payload gated by the program's state put that state in front of the kernel's op
        # registers.
        m.d.comb += kernel.desc.payload.eq(step.desc)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += idle_load.eq(1)
                with m.If(self.msg_in.valid & ~self.load.valid):
                    m.d.sync += [entry_tag.eq(self.msg_in.payload.tag), self.busy.eq(1)]
                    m.next = "ENTRY"
                with m.Elif(take_image & ~self.load.valid):
                    m.d.sync += [entry_tag.eq(0), self.busy.eq(1)]
                    m.next = "ENTRY"
            with m.State("ENTRY"):
                m.d.sync += pc.eq(entry_rd.data)
                m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "WORD"
            with m.State("WORD"):       # PROGRAM_WORD_STAGES: the word lands in `fetched`
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += [
                    step.eq(fetched), started.eq(0),
                    local.eq((fetched.kind == STEP_RECEIVE) & fetched.local),
                    sending.eq(fetched.kind == STEP_SEND),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                with m.Switch(step.kind):
                    with m.Case(STEP_DESC):
                        m.d.comb += kernel.desc.valid.eq(~started)
                        with m.If(kernel.desc.ready & ~started):
                            m.d.sync += started.eq(1)
                        with m.If(started & kernel.done):
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "FETCH"
                    with m.Case(STEP_END):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
                    with m.Default():
                        m.d.comb += unit_start.eq(~started)
                        m.d.sync += started.eq(1)
                        with m.If(started & ~units_busy_q):
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "FETCH"

        # -- host loads -------------------------------------------------------------------
        # Writes into the kernel (the host's loads and the packers' words) go through a
        # registered queue: the kernel's host port holds descriptors back while a load is
        # offered, and from a register that check no longer follows the engine's state.
        m.submodules.kernel_loads = kernel_loads = fifo.SyncFIFOBuffered(
            width=g.load_layout.size, depth=KERNEL_LOAD_DEPTH)
        m.d.comb += [kernel.load.valid.eq(kernel_loads.r_stream.valid),
                     kernel.load.payload.eq(kernel_loads.r_stream.payload),
                     kernel_loads.r_stream.ready.eq(kernel.load.ready)]
        k_load = stream.Signature(g.load_layout).flip().create()
        m.d.comb += [kernel_loads.w_stream.valid.eq(k_load.valid),
                     kernel_loads.w_stream.payload.eq(k_load.payload),
                     k_load.ready.eq(kernel_loads.w_stream.ready)]
        load = self.load.payload
        kernel_load = Signal()
        m.d.comb += [
            self.load.ready.eq(idle_load & ((load.target >= 4) | k_load.ready)),
            kernel_load.eq(self.load.valid & idle_load & (load.target < 4)),
            prog_wr.addr.eq(load.addr), prog_wr.data.eq(load.data),
            prog_wr.en.eq(self.load.valid & idle_load & (load.target == TARGET_PROGRAM)),
            entry_wr.addr.eq(load.addr), entry_wr.data.eq(load.data),
            entry_wr.en.eq(self.load.valid & idle_load & (load.target == TARGET_ENTRY)),
            ln.param_wr.addr.eq(load.addr), ln.param_wr.data.eq(load.data),
            ln.param_wr.en.eq(self.load.valid & idle_load & (load.target == TARGET_LN)),
        ]
        if g.activation_tables:
            m.d.comb += [kernel.act_wr.addr.eq(load.addr), kernel.act_wr.data.eq(load.data),
                         kernel.act_wr.en.eq(self.load.valid & idle_load &
                                             (load.target == TARGET_ACT))]

        # Writes into the kernel: the packers' (x first) while a step runs, the host's loads
        # while the engine waits (never both: a step ends only when its packers are empty).
        # The packers come first so that their `ready` does not depend on the program state.
        # The x packer's ready is the queue's alone (not gated by its own valid): its output
        # handshake enables the packer's registers.
        m.d.comb += x_packer.o.ready.eq(k_load.ready)
        with m.If(x_packer.o.valid):
            m.d.comb += [k_load.valid.eq(1), k_load.payload.eq(x_packer.o.payload)]
        with m.Elif(n_packer.o.valid):
            m.d.comb += [k_load.valid.eq(1), k_load.payload.eq(n_packer.o.payload),
                         n_packer.o.ready.eq(k_load.ready)]
        with m.Elif(kernel_load):
            m.d.comb += [k_load.valid.eq(1), k_load.payload.target.eq(load.target),
                         k_load.payload.addr.eq(load.addr), k_load.payload.data.eq(load.data)]

        # -- row jobs -----------------------------------------------------------------------
        def row_job(base, b_base=None):
            job = Signal(RowJob(g))
            m.d.comb += [job.a_base.eq(base), job.b_base.eq(step.b_base if b_base is None
                                                              else b_base),
                         job.rows.eq(step.rows), job.cols.eq(step.cols),
                         job.words.eq(step.words), job.stride.eq(step.stride)]
            return job

        is_kind = lambda kind: step.kind == kind

        def unit_go_if(condition, name):
            # `unit_go & condition` as its own register (the step does not change between
            # `unit_start` and `unit_go`): the step's decode was in front of each unit's
            # start, which enables all of the unit's job registers.
            go = Signal(name=name)
            m.d.sync += go.eq(unit_start & condition)
            return go

        m.d.comb += [
            x_packer.start.eq(unit_go_if(is_kind(STEP_RECEIVE) | is_kind(STEP_IMAGE), "x_go")),
            x_packer.job.eq(row_job(step.x_base)),
            n_packer.start.eq(unit_go_if(is_kind(STEP_RECEIVE) & step.ln, "n_go")),
            n_packer.job.eq(row_job(step.n_base)),
            pairs.start.eq(unit_go_if((is_kind(STEP_RECEIVE) & step.local) |
                                      is_kind(STEP_SEND), "pairs_go")),
            pairs.job.eq(row_job(step.a_base)),
            adder.params.eq(step.radd),
            ln.param_base.eq(step.ln_base),
        ]

        # Reads from the kernel: the pair reader, or the result reader.
        reading = [pairs]
        if sh.classes:
            m.submodules.logits = logits_reader = RowReader(g, pair=False)
            reading.append(logits_reader)
            m.d.comb += [logits_reader.start.eq(unit_go_if(is_kind(STEP_RESULT), "logits_go")),
                         logits_reader.job.eq(row_job(step.a_base))]
        # Which reader has the kernel's read port: a register that follows the step (a reader
        # issues its first read two cycles after its step's RUN began, the flag is right from
        # the first).
        result_step = Signal()
        m.d.sync += result_step.eq(step.kind == STEP_RESULT)
        # The read addresses reach the kernel through a registered queue (READ_ADDRESS_LATENCY):
        # taken straight, the kernel's `busy` decided each reader's issue and so the enables
        # of all its address and row registers, a path spread over the chip (79.2 MHz, seed 3).
        m.submodules.read_addrs = read_addrs = fifo.SyncFIFOBuffered(
            width=g.aaddr_bits, depth=SKID_DEPTH)
        m.d.comb += [kernel.rd_addr.valid.eq(read_addrs.r_stream.valid),
                     kernel.rd_addr.payload.eq(read_addrs.r_stream.payload),
                     read_addrs.r_stream.ready.eq(kernel.rd_addr.ready)]
        for n, reader in enumerate(reading):
            with m.If(result_step == (n == 1)):
                m.d.comb += [read_addrs.w_stream.valid.eq(reader.rd_addr.valid),
                             read_addrs.w_stream.payload.eq(reader.rd_addr.payload),
                             reader.rd_addr.ready.eq(read_addrs.w_stream.ready)]
                wiring.connect(m, kernel.rd_data, reader.rd_data)

        # RECEIVE: message (or local pairs) -> adder -> x_packer, and -> LayerNorm -> n_packer.
        # The step's message beats come through a registered queue (MESSAGE_QUEUE_LATENCY), and
        # whether any are left to take is a register: the count's compare and the adder's
        # ready were a chain into the inter-engine FIFO's read side (80.5 MHz, seed 5). Only
        # this step's beats enter the queue; the next message stays in the FIFO, where the
        # program's entry looks at its tag.
        to_receive = Signal(range(g.max_inner * g.max_inner + 1))
        more = Signal()                 # to_receive != 0
        with m.If(unit_go & is_kind(STEP_RECEIVE) & ~step.local):
            m.d.sync += [to_receive.eq(step.count), more.eq(step.count != 0)]
        # Its room is a register too (`room`: at least two entries free a cycle ago, so one is
        # free now): the queue's level compare was in front of the inter-engine FIFO's read
        # side, its credit adder and its `full` flag (routed 99.4 and 98.3 MHz, seeds 2 and 3).
        # Two entries more than the other queues keep it open at a beat a cycle.
        m.submodules.messages = messages = fifo.SyncFIFOBuffered(
            width=sh.message_layout.size, depth=MESSAGE_QUEUE_DEPTH)
        room = Signal(init=1)
        m.d.sync += room.eq(messages.level <= MESSAGE_QUEUE_DEPTH - 3)
        msg_take = Signal()
        m.d.comb += [
            messages.w_stream.valid.eq(self.msg_in.valid & more & room),
            messages.w_stream.payload.eq(self.msg_in.payload),
            self.msg_in.ready.eq(room & more),
            msg_take.eq(self.msg_in.valid & self.msg_in.ready),
        ]
        with m.If(msg_take):
            m.d.sync += [to_receive.eq(to_receive - 1), more.eq(to_receive != 1)]
        queued = sh.message_layout(messages.r_stream.payload)
        with m.If(local):
            m.d.comb += [adder.i.valid.eq(pairs.o.valid),
                         adder.i.payload.a[0].eq(pairs.o.payload.a),
                         adder.i.payload.b[0].eq(pairs.o.payload.b),
                         pairs.o.ready.eq(adder.i.ready)]
        with m.Else():
            m.d.comb += [adder.i.valid.eq(messages.r_stream.valid),
                         adder.i.payload.a[0].eq(queued.a),
                         adder.i.payload.b[0].eq(queued.b),
                         messages.r_stream.ready.eq(adder.i.ready)]

        # Registered queues between the units of the receive path: each unit's stall is then
        # a register away from the next one's, not a chain of ready signals across the engine
        # (which limited the built design to 58 MHz).
        m.submodules.sums = sums = fifo.SyncFIFOBuffered(width=8, depth=SKID_DEPTH)
        m.submodules.normed = normed = fifo.SyncFIFOBuffered(width=8, depth=SKID_DEPTH)
        m.d.comb += [sums.w_stream.valid.eq(adder.o.valid),
                     sums.w_stream.payload.eq(adder.o.payload.value[0]),
                     adder.o.ready.eq(sums.w_stream.ready)]
        summed = sums.r_stream

        # The sums to both the x packer and (ln) the LayerNorm, each exactly once.
        sent_x, sent_n = Signal(), Signal()
        use_ln = step.ln
        x_in = Signal(unsigned(8))
        done_x = sent_x | x_packer.i.ready
        done_n = ~use_ln | sent_n | ln.i.ready
        m.d.comb += [
            x_in.eq(summed.payload),
            ln.i.valid.eq(summed.valid & use_ln & ~sent_n),
            ln.i.payload.eq(summed.payload),
            summed.ready.eq(done_x & done_n),
        ]
        with m.If(summed.valid):
            with m.If(summed.ready):
                m.d.sync += [sent_x.eq(0), sent_n.eq(0)]
            with m.Else():
                m.d.sync += [sent_x.eq(done_x), sent_n.eq(sent_n | ln.i.ready)]
        m.d.comb += [normed.w_stream.valid.eq(ln.o.valid),
                     normed.w_stream.payload.eq(ln.o.payload),
                     ln.o.ready.eq(normed.w_stream.ready)]
        wiring.connect(m, normed.r_stream, n_packer.i)

        # x packer input: the adder's output, or (IMAGE) the pixels.
        if sh.image_pixels:
            with m.If(is_kind(STEP_IMAGE) & self.busy):
                m.d.comb += [x_packer.i.valid.eq(pixels.r_stream.valid),
                             x_packer.i.payload.eq(pixels.r_stream.payload),
                             pixels.r_stream.ready.eq(x_packer.i.ready)]
            with m.Else():
                m.d.comb += [x_packer.i.valid.eq(summed.valid & ~sent_x),
                             x_packer.i.payload.eq(x_in)]
            with m.If(unit_go & is_kind(STEP_IMAGE)):
                m.d.sync += inflight.eq(inflight + 1)
        else:
            m.d.comb += [x_packer.i.valid.eq(summed.valid & ~sent_x),
                         x_packer.i.payload.eq(x_in)]

        # SEND: pairs out with the step's tag.
        with m.If(sending):
            m.d.comb += [self.msg_out.valid.eq(pairs.o.valid),
                         self.msg_out.payload.a.eq(pairs.o.payload.a),
                         self.msg_out.payload.b.eq(pairs.o.payload.b),
                         self.msg_out.payload.tag.eq(step.tag),
                         pairs.o.ready.eq(self.msg_out.ready)]

        # RESULT: logits -> first maximum; the logits kept beside it.
        result_busy = Signal()
        if sh.classes:
            m.submodules.argmax = argmax = Argmax(sh.classes)
            kept = Signal(data.ArrayLayout(unsigned(8), sh.classes))
            index = Signal(range(sh.classes + 1))
            pending = Signal()
            m.d.comb += [argmax.i.valid.eq(logits_reader.o.valid),
                         argmax.i.payload.eq(logits_reader.o.payload),
                         logits_reader.o.ready.eq(argmax.i.ready)]
            with m.If(logits_reader.start):
                m.d.sync += [index.eq(0), pending.eq(1)]
            with m.If(logits_reader.o.valid & logits_reader.o.ready):
                with m.Switch(index):
                    for i in range(sh.classes):
                        with m.Case(i):
                            m.d.sync += kept[i].eq(logits_reader.o.payload)
                m.d.sync += index.eq(index + 1)
            m.d.comb += [self.result.valid.eq(argmax.o.valid),
                         self.result.payload.cls.eq(argmax.o.payload.index),
                         self.result.payload.logits.eq(kept),
                         argmax.o.ready.eq(self.result.ready)]
            with m.If(self.result.valid & self.result.ready):
                m.d.sync += [pending.eq(0), inflight.eq(inflight - 1)]
            m.d.comb += result_busy.eq(pending | logits_reader.busy)

        m.d.comb += units_busy.eq(
            x_packer.busy | n_packer.busy | pairs.busy | adder.busy | ln.busy |
            more | (messages.level != 0) | adder.o.valid | (sums.level != 0) | (normed.level != 0) |
            (kernel_loads.level != 0) | result_busy | unit_go)
        return m
