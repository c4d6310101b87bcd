"""On-chip storage of the sparse attention kernel: banked block RAMs, the activation memory and
its port arbitration, and shaped views of FIFO streams."""

import operator

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..accelerator import BRAM_MIN_BITS
from .geometry import bits, ceil_div

__all__ = ["QUEUE_DEPTH", "BANKED_READ_LATENCY", "BLOCK_RAM_BANK_WORDS", "ByteWrite",
           "banked_read_signature", "shaped_stream", "BlockRamBank", "BankedMemory",
           "BlockRamFIFO", "ActivationMemory"]

#: Entries of the queues in front of the softmax unit and of the host's read results.
QUEUE_DEPTH = 8
#: Cycles from a read address of a :class:`BankedMemory` to its data: the block RAM's read,
#: its output register, a register beside the block RAM, a register in front of the bank
#: multiplexer.
BANKED_READ_LATENCY = 4


#: Words of one :class:`BlockRamBank` at most: a DP16KD in its 36-bit (pseudo dual-port) mode.
BLOCK_RAM_BANK_WORDS = 512


class ByteWrite(data.StructLayout):
    """One result byte for amem: word ``addr``, byte ``lane``, ``value``."""
    def __init__(self, aaddr_bits, lane_bits):
        super().__init__({"addr": aaddr_bits, "lane": lane_bits, "value": 8})


def banked_read_signature(addr_bits, shape):
    """A :class:`BankedMemory` read port seen from the memory: ``addr`` in, ``data`` out
    :data:`BANKED_READ_LATENCY` cycles later (it reads every cycle)."""
    return wiring.Signature({"addr": In(addr_bits), "data": Out(shape)})


def shaped_stream(port, layout):
    """A FIFO's ``r_stream`` or ``w_stream`` with its payload seen through ``layout``.

    Amaranth 0.5's FIFOs carry plain bits; this is the same valid, ready and payload signals,
    so that the FIFO joins streams of a layout with ``wiring.connect``.
    """
    signature = stream.Signature(layout)
    if isinstance(port, wiring.FlippedInterface):
        signature = signature.flip()
    view = signature.create()
    view.payload = data.Layout.cast(layout)(port.payload)
    view.valid, view.ready = port.valid, port.ready
    return view


class BlockRamBank(wiring.Component):
    """A simple dual-port memory of up to :data:`BLOCK_RAM_BANK_WORDS` words read through its
    output register: ``rd.data`` shows the word at ``rd.addr`` 2 cycles later (it reads every
    cycle); ``wr`` writes at the clock edge.

    On ECP5 (from ``BRAM_MIN_BITS`` bits) it is DP16KD instances in the 36-bit mode, port A
    writing and port B reading, output registers on (``REGMODE = "OUTREG"``, as
    :class:`~gen.hw.accelerator.ParamBuffer`): the fabric sees the output register's
    clock-to-output, not the array's (nextpnr 0.11, speed 6: 0.96 ns against 5.83 ns), and
    no logic sits behind the block RAM. An
    inferred memory would have both costs: yosys maps no output register, and it emulates
    Amaranth's "old word on a read during a write to it" with a register and a multiplexer
    behind the block RAM (the DP16KD's cross-port collision is undefined); that multiplexer,
    tied to the write side, pulled the first register away from its block RAM (routed 3.9 to
    4.9 ns: the ViT design's critical paths at 92 - 99 MHz).

    So a read of a word in the cycle it is written has no defined result here. Everywhere but
    on ECP5 the bank is an inferred memory and a register that returns **all ones** for such a
    read: a pessimistic stand-in for the block RAM, so that the bit-exact simulations would
    show any such read that reaches a result.

    Parameters
    ----------
    shape : shape-like
    depth : int
        Words, 1 .. :data:`BLOCK_RAM_BANK_WORDS`.
    granularity : 8 or None
        Bits per write enable (None: one enable for the word).

    Members
    -------
    wr : ``In(memory.WritePort.Signature(...))``
    rd : ``Out(banked_read_signature(...))``
    """

    #: Cycles from ``rd.addr`` to ``rd.data``: the block RAM's read and its output register.
    READ_LATENCY = 2

    def __init__(self, shape, depth, *, granularity=None):
        self._shape = shape
        self._depth = operator.index(depth)
        if not 1 <= self._depth <= BLOCK_RAM_BANK_WORDS:
            raise ValueError(f"depth {depth} must be 1 .. {BLOCK_RAM_BANK_WORDS}")
        self._width = Shape.cast(shape).width
        if granularity not in (None, 8) or (granularity and self._width % 8):
            raise ValueError(f"granularity {granularity!r} must be None or 8 (and divide the "
                             f"{self._width}-bit word)")
        self._granularity = granularity
        addr_bits = bits(self._depth - 1)
        super().__init__({
            "wr": In(memory.WritePort.Signature(addr_width=addr_bits, shape=shape,
                                                granularity=granularity)),
            "rd": Out(banked_read_signature(addr_bits, shape)),
        })

    @property
    def uses_block_ram_instances(self):
        """Whether, on ECP5, the bank is DP16KD instances rather than an inferred memory."""
        return self._width * self._depth >= BRAM_MIN_BITS

    def elaborate(self, platform):
        m = Module()
        wr_data, rd_data = Value.cast(self.wr.data), Value.cast(self.rd.data)
        ecp5 = platform is not None and getattr(platform, "family", None) == "ecp5"
        if ecp5 and self.uses_block_ram_instances:
            self._block_rams(m, wr_data, rd_data)
            return m
        mem = memory.Memory(shape=self._width, depth=self._depth, init=[])
        m.submodules.memory = mem
        write_port = mem.write_port(granularity=self._granularity)
        read_port = mem.read_port()
        collision = Signal()
        out = Signal(self._width, reset_less=True)
        m.d.comb += [
            write_port.addr.eq(self.wr.addr), write_port.data.eq(wr_data),
            write_port.en.eq(self.wr.en), read_port.addr.eq(self.rd.addr),
            rd_data.eq(out),
        ]
        m.d.sync += [
            collision.eq(self.wr.en.any() & (self.wr.addr == self.rd.addr)),
            out.eq(Mux(collision, Const((1 << self._width) - 1, self._width), read_port.data)),
        ]
        return m

    def _block_rams(self, m, wr_data, rd_data):
        # 36-bit mode (share/lattice/brams_map_16kd.v): data {DIB, DIA} / {DOB, DOA}, word
        # address AD[13:5], write byte enables ADA[3:0] of 9 bits each. With byte enables a
        # block holds 4 bytes, byte j in bits 9j .. 9j + 7; else 36 bits of the word.
        per_block = 32 if self._granularity else 36
        for block in range(ceil_div(self._width, per_block)):
            ports = {}
            for k in range(14):
                a = k - 5
                if 0 <= a < len(self.wr.addr):
                    ports[f"i_ADA{k}"] = self.wr.addr[a]
                elif k < 4:
                    byte = 4 * block + k
                    ports[f"i_ADA{k}"] = ((self.wr.en[byte] if byte < len(self.wr.en) else 0)
                                          if self._granularity else self.wr.en[0])
                else:
                    ports[f"i_ADA{k}"] = 0
                ports[f"i_ADB{k}"] = self.rd.addr[a] if 0 <= a < len(self.rd.addr) else 0
            for k in range(36):
                if self._granularity:
                    bit = 32 * block + 8 * (k // 9) + k % 9 if k % 9 < 8 else None
                else:
                    bit = 36 * block + k
                pin = f"A{k}" if k < 18 else f"B{k - 18}"
                used = bit is not None and bit < self._width
                ports[f"i_DI{pin}"] = wr_data[bit] if used else 0
                if used:
                    ports[f"o_DO{pin}"] = rd_data[bit]
            for k in range(3):
                ports[f"i_CSA{k}"] = ports[f"i_CSB{k}"] = Const(0, 1)
            m.submodules[f"bram_{block}"] = Instance(
                "DP16KD",
                p_DATA_WIDTH_A=36, p_DATA_WIDTH_B=36,
                # Both output registers on: in the 36-bit mode the read data leaves on both
                # ports' DO pins, and Lattice's documents do not say whose output register
                # serves the DOA half; both ports are clocked by `sync` here, so either way
                # every bit arrives with the same latency.
                p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
                i_CLKA=ClockSignal("sync"), i_CEA=Const(1, 1), i_OCEA=Const(1, 1),
                i_WEA=Const(1, 1), i_RSTA=Const(0, 1),
                i_CLKB=ClockSignal("sync"), i_CEB=Const(1, 1), i_OCEB=Const(1, 1),
                i_WEB=Const(0, 1), i_RSTB=Const(0, 1),
                **ports)


class BankedMemory(wiring.Component):
    """A memory cut into banks of at most ``bank_words`` words, read with
    :data:`BANKED_READ_LATENCY` (4) cycles of latency.

    Each bank is a :class:`BlockRamBank` per read port (2 cycles: the block RAM and its output
    register), and each bank's output goes through two more registers before the bank
    multiplexer: the first has the second as its only load, so the placer keeps it beside its
    block RAM; the second carries the word to the multiplexer. (They were added while this
    project believed that nextpnr times a DP16KD's output at the array's 5.83 ns whatever its
    ``REGMODE``; it does not: an ``OUTREG`` output is timed at 0.96 ns, measured on one block
    RAM with nextpnr 0.11. They cost two cycles of read latency and may be more than needed.)

    Parameters
    ----------
    shape : shape-like
        The word.
    depth : int
        Words.
    read_ports : int
        Read ports ``rd``, ``rd1``, ...
    granularity : int or None
        Bits per write enable (None: one enable for the word).
    bank_words : int
        Words per block RAM bank.

    Members
    -------
    wr : ``Out(memory.WritePort.Signature(...))``
        Write port (``en`` one bit per ``granularity`` bits of the word, or one), registered
        twice: the word is written at the third clock edge.
    rd, rd1, ... : ``Out(banked_read_signature(...))``
        Read ports: ``data`` shows the word at ``addr`` :data:`BANKED_READ_LATENCY` cycles
        later.
    """

    def __init__(self, shape, depth, *, read_ports=1, granularity=None,
                 bank_words=BLOCK_RAM_BANK_WORDS):
        self._shape = shape
        self._depth = operator.index(depth)
        self._bank_words = operator.index(bank_words)
        self._read_ports = operator.index(read_ports)
        self._granularity = granularity
        if self._depth < 1 or self._bank_words < 1 or self._read_ports < 1:
            raise ValueError("depth, bank_words and read_ports must be at least 1")
        if self._bank_words > BLOCK_RAM_BANK_WORDS:
            raise ValueError(f"bank_words {bank_words} must be at most {BLOCK_RAM_BANK_WORDS}")
        members = {"wr": Out(memory.WritePort.Signature(
            addr_width=self.addr_bits, shape=shape, granularity=granularity))}
        for port in range(self._read_ports):
            members[self.read_port_name(port)] = Out(banked_read_signature(self.addr_bits, shape))
        super().__init__(members)

    @property
    def addr_bits(self):
        return bits(self._depth - 1)

    @property
    def banks(self):
        return ceil_div(self._depth, min(self._bank_words, self._depth))

    @staticmethod
    def read_port_name(port):
        return "rd" if port == 0 else f"rd{port}"

    def elaborate(self, platform):
        m = Module()
        per_bank = min(self._bank_words, self._depth)
        low_bits = max(1, (per_bank - 1).bit_length())
        ports = [getattr(self, self.read_port_name(p)) for p in range(self._read_ports)]
        selects = []
        for p, port in enumerate(ports):
            select = None
            # The bank of each read, beside it until its data reaches the multiplexer.
            for k in range(BANKED_READ_LATENCY):
                later = Signal(range(self.banks), name=f"select{p}_{k + 1}")
                m.d.sync += later.eq(port.addr >> low_bits if k == 0 else select)
                select = later
            selects.append(select)
        # The write into a register first: the writers' selects and byte enables were a
        # chain of LUTs in front of a 5 ns route to a far bank (the critical path at 96.0 MHz).
        # With the register beside each bank below, a word is written two cycles later;
        # nothing reads it that soon (an op reads no word it writes, and the next op starts
        # well after the last write; the bit-exact tests would show a stale read).
        wr_addr = Signal.like(self.wr.addr, name="wr_addr_q")
        wr_data = Signal.like(self.wr.data, name="wr_data_q", reset_less=True)
        wr_en = Signal.like(self.wr.en, name="wr_en_q")
        m.d.sync += [wr_addr.eq(self.wr.addr), wr_data.eq(self.wr.data), wr_en.eq(self.wr.en)]
        outputs = [[] for _ in ports]
        for k in range(self.banks):
            words = min(per_bank, self._depth - k * per_bank)
            hit = (wr_addr >> low_bits) == k
            for p, port in enumerate(ports):
                # One bank per read port: a DP16KD in the 36-bit mode has one read port.
                bank = BlockRamBank(self._shape, words, granularity=self._granularity)
                m.submodules[f"bank{k}_{p}"] = bank
                # No reset: a reset would put a LUT between the output register and these.
                near = Signal(self._shape, name=f"bank{k}_near{p}", reset_less=True)
                data_q = Signal(self._shape, name=f"bank{k}_q{p}", reset_less=True)
                # And again beside each block RAM: the copies of a bank for two read ports sit
                # far apart, and a write decoded once reached the far one over a 5 ns route
                # behind its LUTs. Now that route runs from register to register.
                # `keep`: identical registers, which yosys would otherwise merge into one
                # (see flows.ecp5.KEEP_REGISTERS).
                keep = {"keep": 1}
                bank_addr = Signal(low_bits, name=f"bank{k}_wr_addr{p}", reset_less=True,
                                   attrs=keep)
                bank_data = Signal(self._shape, name=f"bank{k}_wr_data{p}", reset_less=True,
                                   attrs=keep)
                bank_en = Signal(len(wr_en), name=f"bank{k}_wr_en{p}", attrs=keep)
                m.d.sync += [bank_addr.eq(wr_addr[:low_bits]), bank_data.eq(wr_data),
                             bank_en.eq(Mux(hit, wr_en, 0))]
                m.d.comb += [
                    bank.wr.addr.eq(bank_addr), bank.wr.data.eq(bank_data),
                    bank.wr.en.eq(bank_en),
                    bank.rd.addr.eq(port.addr[:low_bits]),
                ]
                m.d.sync += [near.eq(bank.rd.data), data_q.eq(near)]
                outputs[p].append(data_q)
        for p, port in enumerate(ports):
            with m.Switch(selects[p]):
                for k, data_q in enumerate(outputs[p]):
                    with m.Case(k):
                        m.d.comb += port.data.eq(data_q)
        return m


class BlockRamFIFO(wiring.Component):
    """A first-in first-out queue of ``depth`` words in a :class:`BankedMemory`, one beat a
    cycle each way, whose words reach the fabric from registers beside the block RAMs.

    For deep queues (the ViT engines' message FIFOs): Amaranth's ``SyncFIFOBuffered`` of
    that depth is an inferred memory, which yosys maps without the DP16KD's output register,
    so its word leaves the block RAM 5.83 ns after the clock (nextpnr, speed 6; 0.96 ns with
    ``REGMODE = "OUTREG"``) and any route from it decides the clock (the ViT design's
    critical path at 97.2 MHz). Here the reads run ahead into a small LUT-RAM queue of
    :data:`OUTPUT_DEPTH` entries, paced by credits, so the storage's
    :data:`BANKED_READ_LATENCY` and write delay cost latency, not throughput.

    Parameters
    ----------
    width, depth : int
        Bits per word, words (``w_stream`` is ready while fewer are held).

    Members
    -------
    w_stream : ``In(stream.Signature(width))``
    r_stream : ``Out(stream.Signature(width))``
    """

    #: Entries of the output queue: a read's round trip (issue, the storage's latency, the
    #: queue's own two cycles) so that a read can issue every cycle.
    OUTPUT_DEPTH = BANKED_READ_LATENCY + 4
    #: Clock edges after a write's handshake until its word is in the block RAM
    #: (:class:`BankedMemory` registers a write twice): a read may sample it from the next.
    WRITE_EDGES = 3

    def __init__(self, *, width, depth):
        self._width = operator.index(width)
        self._depth = operator.index(depth)
        if self._width < 1 or self._depth < 1:
            raise ValueError(f"width {width} and depth {depth} must be at least 1")
        super().__init__({"w_stream": In(stream.Signature(self._width)),
                          "r_stream": Out(stream.Signature(self._width))})

    @property
    def width(self):
        return self._width

    @property
    def depth(self):
        return self._depth

    @property
    def latency(self):
        """Cycles from a beat's write to the first cycle it can be taken (an empty queue): the
        storage's write edges and read latency, and the output queue's two cycles."""
        return self.WRITE_EDGES + BANKED_READ_LATENCY + 2

    @property
    def full_rate(self):
        """Whether the queue passes a beat every cycle with both sides always ready: it must
        hold the beats of a whole round trip (a beat counts until it is taken)."""
        return self._depth > self.latency

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.storage = storage = BankedMemory(self._width, depth)
        m.submodules.output = output = fifo.SyncFIFOBuffered(width=self._width,
                                                             depth=self.OUTPUT_DEPTH)

        def advance(pointer):
            return Mux(pointer == depth - 1, 0, pointer + 1)

        write_ptr = Signal(range(depth), name="write_ptr")
        read_ptr = Signal(range(depth), name="read_ptr")
        held = Signal(range(depth + 1), name="held")          # written, not yet taken
        readable = Signal(range(depth + 1), name="readable")  # in the block RAM, not read
        credits = Signal(range(self.OUTPUT_DEPTH + 1), name="credits",
                         init=self.OUTPUT_DEPTH)
        full = Signal(name="full")

        write = self.w_stream.valid & self.w_stream.ready
        read = Signal(name="read")
        taken = self.r_stream.valid & self.r_stream.ready
        # A write's handshake, delayed until its word is in the block RAM.
        landed = write
        for edge in range(self.WRITE_EDGES - 1):
            later = Signal(name=f"write_landed_{edge + 1}")
            m.d.sync += later.eq(landed)
            landed = later
        # The read data's valid, beside the storage's latency.
        arriving = read
        for stage in range(BANKED_READ_LATENCY):
            later = Signal(name=f"read_arriving_{stage + 1}")
            m.d.sync += later.eq(arriving)
            arriving = later

        m.d.comb += [
            self.w_stream.ready.eq(~full),
            storage.wr.addr.eq(write_ptr), storage.wr.data.eq(self.w_stream.payload),
            storage.wr.en.eq(write),
            read.eq((readable != 0) & (credits != 0)),
            storage.rd.addr.eq(read_ptr),
            output.w_stream.valid.eq(arriving), output.w_stream.payload.eq(storage.rd.data),
            self.r_stream.valid.eq(output.r_stream.valid),
            self.r_stream.payload.eq(output.r_stream.payload),
            output.r_stream.ready.eq(self.r_stream.ready),
        ]
        with m.If(write):
            m.d.sync += write_ptr.eq(advance(write_ptr))
        with m.If(read):
            m.d.sync += read_ptr.eq(advance(read_ptr))
        # `full` is a register (no adder in front of w_stream.ready): held after this cycle.
        # A beat counts until it leaves `r_stream`, so the queue holds `depth` beats in all
        # (its slot in the banks is free from its read on, later than needed).
        held_next = held + write - taken
        m.d.sync += [held.eq(held_next), full.eq(held_next == depth),
                     readable.eq(readable + landed - read),
                     credits.eq(credits - read + taken)]
        return m


class ActivationMemory(wiring.Component):
    """amem (B byte lanes per word) and who uses its ports when.

    Port A (``rd``) serves the running op's broadcast operand (MAC ops) or its scores (softmax)
    while ``busy``, else the host's reads; port B serves the per-lane operand of scores and
    context. The write port takes the running op's result bytes while ``busy``, else the
    host's words.

    Parameters
    ----------
    lanes, depth : int
        B and the words (``geometry.lanes``, ``geometry.amem_depth``).

    Members
    -------
    busy, mac : ``In(1)``
        An op runs; it is a MAC op (linear, scores, context), not a softmax.
    host_wr : ``Out(memory.WritePort.Signature(...))``
        The host's word writes (byte enables).
    mac_wr, softmax_wr : ``In(stream.Signature(ByteWrite(...), always_ready=True))``
        Result bytes of MAC ops and of softmax ops.
    host_rd, mac_rd, softmax_rd, mac_rd1 : ``Out(banked_read_signature(...))``
        Port A for the host, the MAC operands and the softmax scores; port B for the MAC
        operands.
    """

    def __init__(self, *, lanes, depth):
        self._lanes = operator.index(lanes)
        self._depth = operator.index(depth)
        if self._lanes < 1 or self._depth < 1:
            raise ValueError(f"lanes and depth must be at least 1, not {lanes} and {depth}")
        word = 8 * self._lanes
        addr_bits = bits(self._depth - 1)
        write = stream.Signature(ByteWrite(addr_bits, bits(self._lanes - 1)), always_ready=True)
        read = banked_read_signature(addr_bits, word)
        super().__init__({
            "busy": In(1),
            "mac": In(1),
            "host_wr": Out(memory.WritePort.Signature(addr_width=addr_bits, shape=word,
                                                      granularity=8)),
            "mac_wr": In(write),
            "softmax_wr": In(write),
            "host_rd": Out(read),
            "mac_rd": Out(read),
            "softmax_rd": Out(read),
            "mac_rd1": Out(read),
        })

    def elaborate(self, platform):
        m = Module()
        b = self._lanes
        # Port A: broadcast operand (MAC), S (softmax), or host reads; port B: per-lane operand.
        m.submodules.banks = amem = BankedMemory(8 * b, self._depth, read_ports=2, granularity=8)
        with m.If(self.busy & self.mac):
            m.d.comb += amem.rd.addr.eq(self.mac_rd.addr)
        with m.Elif(self.busy):
            m.d.comb += amem.rd.addr.eq(self.softmax_rd.addr)
        with m.Else():
            m.d.comb += amem.rd.addr.eq(self.host_rd.addr)
        m.d.comb += [port.data.eq(amem.rd.data)
                     for port in (self.host_rd, self.mac_rd, self.softmax_rd)]
        wiring.connect(m, wiring.flipped(self.mac_rd1), amem.rd1)

        # The write port: the running op's result byte (in every lane, enabled in its own),
        # or the host's word.
        result = Signal.like(self.mac_wr.payload)
        result_valid = Signal()
        m.d.comb += [
            result.eq(Mux(self.mac, self.mac_wr.payload, self.softmax_wr.payload)),
            result_valid.eq(Mux(self.mac, self.mac_wr.valid, self.softmax_wr.valid)),
        ]
        with m.If(self.busy):
            m.d.comb += [
                amem.wr.addr.eq(result.addr),
                amem.wr.data.eq(result.value.replicate(b)),
                amem.wr.en.eq(Mux(result_valid, Const(1, b) << result.lane, 0)),
            ]
        with m.Else():
            m.d.comb += [amem.wr.addr.eq(self.host_wr.addr), amem.wr.data.eq(self.host_wr.data),
                         amem.wr.en.eq(self.host_wr.en)]
        return m
