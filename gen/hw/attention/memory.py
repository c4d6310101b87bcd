"""On-chip storage of the sparse attention kernel: banked block RAMs, the activation memory and
its port arbitration, and shaped views of FIFO streams."""

import operator

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .geometry import bits, ceil_div

__all__ = ["QUEUE_DEPTH", "BANKED_READ_LATENCY", "ByteWrite", "banked_read_signature",
           "shaped_stream", "BankedMemory", "ActivationMemory"]

#: Entries of the queues in front of the softmax unit and of the host's read results.
QUEUE_DEPTH = 8
#: Cycles from a read address of a :class:`BankedMemory` to its data: the block RAM's read,
#: a register next to it, a register in front of the bank multiplexer.
BANKED_READ_LATENCY = 3


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


class BankedMemory(wiring.Component):
    """A memory cut into banks of at most ``bank_words`` words, read with
    :data:`BANKED_READ_LATENCY` (3) cycles of latency.

    A deep memory becomes a column of block RAMs whose outputs yosys joins with a multiplexer
    right behind their slow clock-to-output (5.83 ns on ECP5: yosys maps no output register).
    Here every bank's output goes through two registers before the multiplexer: the first has
    the second as its only load, so the placer keeps it beside its block RAM (with one
    register, shared with the multiplexer, it sat up to 37 rows away and the 3.9 ns route made
    the design's critical path at 99.4 MHz); the second carries the word across the chip.

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
        Write port (synchronous, ``en`` one bit per ``granularity`` bits of the word, or one).
    rd, rd1, ... : ``Out(banked_read_signature(...))``
        Read ports: ``data`` shows the word at ``addr`` :data:`BANKED_READ_LATENCY` cycles
        later.
    """

    def __init__(self, shape, depth, *, read_ports=1, granularity=None, bank_words=512):
        self._shape = shape
        self._depth = operator.index(depth)
        self._bank_words = operator.index(bank_words)
        self._read_ports = operator.index(read_ports)
        self._granularity = granularity
        if self._depth < 1 or self._bank_words < 1 or self._read_ports < 1:
            raise ValueError("depth, bank_words and read_ports must be at least 1")
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
            select = Signal(range(self.banks), name=f"select{p}")
            select_q = Signal(range(self.banks), name=f"select{p}_q")
            select_qq = Signal(range(self.banks), name=f"select{p}_qq")
            m.d.sync += [select.eq(port.addr >> low_bits), select_q.eq(select),
                         select_qq.eq(select_q)]
            selects.append(select_qq)
        outputs = [[] for _ in ports]
        for k in range(self.banks):
            words = min(per_bank, self._depth - k * per_bank)
            mem = memory.Memory(shape=self._shape, depth=words, init=[])
            wr = mem.write_port(granularity=self._granularity)
            m.submodules[f"bank{k}"] = mem
            hit = (self.wr.addr >> low_bits) == k
            m.d.comb += [
                wr.addr.eq(self.wr.addr[:low_bits]), wr.data.eq(self.wr.data),
                wr.en.eq(Mux(hit, self.wr.en, 0)),
            ]
            for p, port in enumerate(ports):
                rd = mem.read_port()
                # No reset: a reset would put a LUT between the block RAM and the register.
                near = Signal(self._shape, name=f"bank{k}_near{p}", reset_less=True)
                data_q = Signal(self._shape, name=f"bank{k}_q{p}", reset_less=True)
                m.d.comb += rd.addr.eq(port.addr[:low_bits])
                m.d.sync += [near.eq(rd.data), data_q.eq(near)]
                outputs[p].append(data_q)
        for p, port in enumerate(ports):
            with m.Switch(selects[p]):
                for k, data_q in enumerate(outputs[p]):
                    with m.Case(k):
                        m.d.comb += port.data.eq(data_q)
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
