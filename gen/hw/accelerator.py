"""The GEMM accelerator: input buffers in block RAM around a dataflow engine.

The operand buffers (`OperandBuffer`, one byte lane per memory) read with the block RAM's output
register: on ECP5 they are DP16KD instances in ``REGMODE_B = "OUTREG"`` (yosys's block RAM
mapping, ``share/lattice/brams_16kd.txt``, has no output-register option, and a fabric
register after the read port stays a fabric register), so the engine's operand registers see a
flip-flop's clock-to-output instead of the block RAM array's. Everywhere else the same buffer is
a memory with a register after its read port: identical behaviour, ``OPERAND_READ_LATENCY``
(2) cycles from address to data.
"""

import operator

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .gemm import (DIM_WIDTH, OPERAND_READ_LATENCY, OutputStationaryGemm, OutputStream,
                   check_drain_lanes)
from .requant import RequantParams
from .ws_gemm import WeightStationaryGemm

__all__ = ["DATAFLOWS", "GemmAccelerator", "OperandBuffer", "OutputBuffer", "ParamBuffer",
           "BRAM_MIN_BITS"]

#: Dataflow name -> engine class. Every engine has the same ports as `OutputStationaryGemm`.
DATAFLOWS = {
    "output_stationary": OutputStationaryGemm,
    "weight_stationary": WeightStationaryGemm,
}


def _addr_width(depth):
    return max(1, (depth - 1).bit_length())


#: Below this many bits yosys keeps a memory in LUT RAM (the same threshold as
#: ``gen.estimate.BRAM_MIN_BITS``); an operand buffer that small stays an inferred memory.
BRAM_MIN_BITS = 2048
#: DP16KD data width (one block) and address shift for a byte-lane buffer of up to this depth:
#: 2048 x 9 (one block), 4096 x 4, 8192 x 2, 16384 x 1 (2, 4, 8 blocks, each a bit slice).
_DP16KD_BYTE_LANE = ((2048, 9, 8, 3), (4096, 4, 4, 2), (8192, 2, 2, 1), (16384, 1, 1, 0))


def _uses_ecp5(platform):
    return platform is not None and getattr(platform, "family", None) == "ecp5"


class OperandBuffer(wiring.Component):
    """A byte-wide buffer: written from ``write_domain``, read in ``sync`` with a registered
    output, ``OPERAND_READ_LATENCY`` cycles from ``rd.addr`` to ``rd.data``.

    ``rd.en`` enables the memory read (the data then stays); the output register always
    follows it. On ECP5, for depths from ``BRAM_MIN_BITS / 8`` to 16384 words, the buffer is
    DP16KD blocks with the output register inside (port A writes, port B reads,
    ``REGMODE_B = "OUTREG"``); otherwise an inferred memory and a fabric register.
    """

    def __init__(self, depth, *, write_domain="sync"):
        self._depth = operator.index(depth)
        self._write_domain = write_domain
        super().__init__({
            "wr": In(memory.WritePort.Signature(addr_width=_addr_width(depth), shape=8)),
            "rd": In(memory.ReadPort.Signature(addr_width=_addr_width(depth), shape=8)),
        })

    @property
    def uses_block_ram_instances(self):
        """Whether, on ECP5, the buffer is DP16KD instances rather than an inferred memory."""
        return BRAM_MIN_BITS <= 8 * self._depth <= 8 * _DP16KD_BYTE_LANE[-1][0]

    def elaborate(self, platform):
        m = Module()
        if _uses_ecp5(platform) and self.uses_block_ram_instances:
            depth, data_width, lane_bits, shift = next(
                shape for shape in _DP16KD_BYTE_LANE if self._depth <= shape[0])
            for block in range(8 // lane_bits):
                bits = slice(block * lane_bits, (block + 1) * lane_bits)
                ports = {}
                for k in range(14):
                    a = k - shift
                    ports[f"i_ADA{k}"] = self.wr.addr[a] if 0 <= a < len(self.wr.addr) else 0
                    ports[f"i_ADB{k}"] = self.rd.addr[a] if 0 <= a < len(self.rd.addr) else 0
                for k in range(18):
                    ports[f"i_DIA{k}"] = self.wr.data[bits][k] if k < lane_bits else 0
                    ports[f"i_DIB{k}"] = Const(0, 1)
                for k in range(lane_bits):
                    ports[f"o_DOB{k}"] = self.rd.data[bits][k]
                for k in range(3):
                    ports[f"i_CSA{k}"] = ports[f"i_CSB{k}"] = Const(0, 1)
                m.submodules[f"bram_{block}"] = Instance(
                    "DP16KD",
                    p_DATA_WIDTH_A=data_width, p_DATA_WIDTH_B=data_width,
                    p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
                    p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                    p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                    p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
                    i_CLKA=ClockSignal(self._write_domain), i_CEA=Const(1, 1),
                    i_OCEA=Const(1, 1), i_WEA=self.wr.en, i_RSTA=Const(0, 1),
                    i_CLKB=ClockSignal("sync"), i_CEB=self.rd.en, i_OCEB=Const(1, 1),
                    i_WEB=Const(0, 1), i_RSTB=Const(0, 1),
                    **ports)
        else:
            m.submodules.memory = mem = memory.Memory(shape=8, depth=self._depth, init=[])
            write_port = mem.write_port(domain=self._write_domain)
            read_port = mem.read_port()
            # The output register: no reset, like the block RAM's (RSTB is tied off).
            data = Signal(8, reset_less=True)
            m.d.comb += [
                write_port.addr.eq(self.wr.addr),
                write_port.data.eq(self.wr.data),
                write_port.en.eq(self.wr.en),
                read_port.addr.eq(self.rd.addr),
                read_port.en.eq(self.rd.en),
                self.rd.data.eq(data),
            ]
            m.d.sync += data.eq(read_port.data)
        assert OPERAND_READ_LATENCY == 2
        return m


class ParamBuffer(wiring.Component):
    """The per-channel requantization parameters, read ahead through an output register.

    ``rd.data`` takes, in each cycle with ``rd.en``, the word at the ``rd.addr`` of the cycle
    before (the block RAM reads every cycle; ``en`` enables its output register), as
    :class:`~gen.hw.gemm.AccumulatorDrain` expects. On ECP5, up to 512 channels (and from
    ``BRAM_MIN_BITS`` bits), it is DP16KD blocks in the 36-bit mode yosys itself uses for wide
    memories (``share/lattice/brams_map_16kd.v``: data ``{DIB, DIA}`` and ``{DOB, DOA}``,
    byte enables ``ADA[3:0]``, word address ``AD[13:5]``), with both ``REGMODE``s ``"OUTREG"``
    and ``OCEB = OCEA = rd.en``; otherwise an inferred memory and a fabric register.
    """

    def __init__(self, depth, *, write_domain="sync"):
        self._depth = operator.index(depth)
        self._write_domain = write_domain
        self._width = RequantParams().size
        super().__init__({
            "wr": In(memory.WritePort.Signature(addr_width=_addr_width(depth),
                                                shape=RequantParams())),
            "rd": In(memory.ReadPort.Signature(addr_width=_addr_width(depth),
                                               shape=RequantParams())),
        })

    @property
    def uses_block_ram_instances(self):
        """Whether, on ECP5, the buffer is DP16KD instances rather than an inferred memory."""
        return self._depth <= 512 and self._width * self._depth >= BRAM_MIN_BITS

    def elaborate(self, platform):
        m = Module()
        wr_data, rd_data = self.wr.data.as_value(), self.rd.data.as_value()
        if _uses_ecp5(platform) and self.uses_block_ram_instances:
            for block in range(-(-self._width // 36)):
                ports = {}
                for k in range(14):
                    a = k - 5
                    ports[f"i_ADA{k}"] = (self.wr.addr[a] if 0 <= a < len(self.wr.addr) else
                                          self.wr.en if k < 4 else 0)
                    ports[f"i_ADB{k}"] = self.rd.addr[a] if 0 <= a < len(self.rd.addr) else 0
                for k in range(36):
                    bit = 36 * block + k
                    pin = f"A{k}" if k < 18 else f"B{k - 18}"
                    ports[f"i_DI{pin}"] = wr_data[bit] if bit < self._width else 0
                    if bit < self._width:
                        ports[f"o_DO{pin}"] = rd_data[bit]
                for k in range(3):
                    ports[f"i_CSA{k}"] = ports[f"i_CSB{k}"] = Const(0, 1)
                # Both output registers on, both enabled by `rd.en`: the 36-bit read leaves
                # on DOA and DOB, and Lattice's PDPW16KD (this mode) has a single REGMODE that
                # nextpnr gives both ports. nextpnr times the DOA half by REGMODE_A, so with
                # NOREG there it was the critical path of the 4x4 to 8x8 designs (a 5.6 ns
                # clock-to-output, about 140 MHz), and no Lattice tool makes that mix.
                m.submodules[f"bram_{block}"] = Instance(
                    "DP16KD",
                    p_DATA_WIDTH_A=36, p_DATA_WIDTH_B=36,
                    p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
                    p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                    p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                    p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
                    i_CLKA=ClockSignal(self._write_domain), i_CEA=Const(1, 1),
                    i_OCEA=self.rd.en, i_WEA=Const(1, 1), i_RSTA=Const(0, 1),
                    i_CLKB=ClockSignal("sync"), i_CEB=Const(1, 1), i_OCEB=self.rd.en,
                    i_WEB=Const(0, 1), i_RSTB=Const(0, 1),
                    **ports)
        else:
            m.submodules.memory = mem = memory.Memory(shape=self._width, depth=self._depth,
                                                      init=[])
            write_port = mem.write_port(domain=self._write_domain)
            read_port = mem.read_port()
            data = Signal(self._width, reset_less=True)
            m.d.comb += [
                write_port.addr.eq(self.wr.addr),
                write_port.data.eq(wr_data),
                write_port.en.eq(self.wr.en),
                read_port.addr.eq(self.rd.addr),
                rd_data.eq(data),
            ]
            with m.If(self.rd.en):
                m.d.sync += data.eq(read_port.data)
        return m


class OutputBuffer(wiring.Component):
    """The output buffer: takes the engine's beats of up to ``lanes`` adjacent outputs in one
    cycle and serves the host one byte at an address.

    Output address ``a`` lives in bank ``a % lanes`` at word ``a // lanes``, so the adjacent
    addresses of one beat fall in distinct banks (rotated by the beat's first address) and each
    bank takes at most one write a cycle. With one lane it is a single memory.

    Members
    -------
    i : ``In(OutputStream(lanes))``
        The engine's outputs; always ready.
    rd : ``Out(memory.ReadPort.Signature(addr_width=..., shape=8))``
        The host's read port in ``read_domain``: data one cycle after the address.
    """

    def __init__(self, depth, *, lanes=1, read_domain="sync"):
        self._depth = operator.index(depth)
        self._lanes = operator.index(lanes)
        if self._depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        if self._lanes < 1 or self._lanes & (self._lanes - 1):
            raise ValueError(f"lanes must be a power of two, not {lanes}")
        self._read_domain = read_domain
        super().__init__({
            "i":  In(OutputStream(self._lanes)),
            "rd": Out(memory.ReadPort.Signature(addr_width=_addr_width(depth), shape=8)),
        })

    @property
    def bank_words(self):
        return -(-self._depth // self._lanes)

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        m.d.comb += self.i.ready.eq(1)
        if lanes == 1:
            m.submodules.memory = mem = memory.Memory(shape=8, depth=self._depth, init=[])
            write_port = mem.write_port()
            m.d.comb += [
                write_port.addr.eq(self.i.payload.addr),
                write_port.data.eq(self.i.payload.value[0]),
                write_port.en.eq(self.i.valid & self.i.payload.mask[0]),
            ]
            wiring.connect(m, wiring.flipped(self.rd), mem.read_port(domain=self._read_domain))
            return m

        bits = (lanes - 1).bit_length()
        # The beat is registered first: the requantizers' output registers sat by their
        # clamp logic, a 2.6 ns route from the banks (111.6 MHz at a 115 MHz target). Nothing
        # waits for the write: the host reads the buffer only after the job is done.
        beat = Signal.like(self.i.payload, name="beat_q")
        beat_valid = Signal(name="beat_valid_q")
        m.d.sync += [beat.eq(self.i.payload), beat_valid.eq(self.i.valid)]
        base = beat.addr
        first_bank = base[:bits]
        first_word = base >> bits
        read_bank = Signal(bits)
        banks = []
        for bank in range(lanes):
            m.submodules[f"bank{bank}"] = mem = memory.Memory(
                shape=8, depth=self.bank_words, init=[])
            write_port = mem.write_port()
            read_port = mem.read_port(domain=self._read_domain)
            # The lane that lands here: (bank - first address) mod lanes; the lanes below the
            # first bank wrap into the next word.
            lane = Signal(bits, name=f"bank{bank}_lane")
            m.d.comb += [
                lane.eq(bank - first_bank),
                write_port.addr.eq(first_word + (bank < first_bank)),
                write_port.data.eq(beat.value.as_value().word_select(lane, 8)),
                write_port.en.eq(beat_valid & beat.mask.bit_select(lane, 1)),
                read_port.addr.eq(self.rd.addr >> bits),
                read_port.en.eq(self.rd.en),
            ]
            banks.append(read_port.data)
        # The bank of the byte being read, taken with the address like the memories' data.
        with m.If(self.rd.en):
            m.d[self._read_domain] += read_bank.eq(self.rd.addr[:bits])
        with m.Switch(read_bank):
            for bank, data in enumerate(banks):
                with m.Case(bank):
                    m.d.comb += self.rd.data.eq(data)
        return m


class GemmAccelerator(wiring.Component):
    """INT8 GEMM engine with its activation, weight and parameter buffers.

    Parameters
    ----------
    rows, cols : int
        PE array size.
    dataflow : str
        A key of :data:`DATAFLOWS` (the activation buffer takes that engine's layout).
    m_tile : int or None
        Weight-stationary only: rows of a chunk (see :class:`~gen.hw.ws_gemm.WeightStationaryGemm`).
    drain_lanes : int
        Outputs drained per cycle (see :class:`~gen.hw.gemm.OutputStationaryGemm`). The
        parameter buffer is then that many memories, channel ``n`` in memory ``n % L`` at word
        ``n // L``, read together; the host still writes channel ``n`` at ``param_wr`` address
        ``n``.
    act_depth, wgt_depth, param_depth, out_depth : int
        Buffer depths in words (see :mod:`gen.hw.gemm` for the word layouts). The output buffer
        itself lives outside; ``out_depth`` bounds the addresses the engine may emit.

    Members
    -------
    act_wr, wgt_wr, param_wr : ``Out(memory.WritePort.Signature(...))``
        Host-side write ports of the buffers.
    start, m_size, k_size, n_size, b_size, busy, done, error, cycles, abort
        As in :class:`~gen.hw.gemm.OutputStationaryGemm`.
    o : ``Out(OutputStream(drain_lanes))``
        Requantized outputs with their row-major addresses.
    """

    def __init__(self, *, rows, cols, dataflow="output_stationary", drain_lanes=1,
                 act_depth, wgt_depth, param_depth, out_depth, host_domain="sync",
                 m_tile=None):
        self._host_domain = host_domain
        if dataflow not in DATAFLOWS:
            raise ValueError(f"unknown dataflow {dataflow!r}; the generator has "
                             f"{', '.join(sorted(DATAFLOWS))}")
        self._dataflow = dataflow
        if m_tile is not None and dataflow != "weight_stationary":
            raise ValueError("m_tile is a parameter of the weight-stationary engine only")
        self._engine_options = {} if m_tile is None else {"m_tile": operator.index(m_tile)}
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._drain_lanes = check_drain_lanes(drain_lanes, self._cols)
        self._depths = {
            "act": operator.index(act_depth),
            "wgt": operator.index(wgt_depth),
            "param": operator.index(param_depth),
            "out": operator.index(out_depth),
        }
        super().__init__({
            "act_wr":   Out(memory.WritePort.Signature(
                addr_width=_addr_width(act_depth), shape=8 * self._rows)),
            "wgt_wr":   Out(memory.WritePort.Signature(
                addr_width=_addr_width(wgt_depth), shape=8 * self._cols)),
            "param_wr": Out(memory.WritePort.Signature(
                addr_width=_addr_width(param_depth), shape=RequantParams())),
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
            "o":        Out(OutputStream(self._drain_lanes)),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def dataflow(self):
        return self._dataflow

    @property
    def drain_lanes(self):
        return self._drain_lanes

    @property
    def depths(self):
        return dict(self._depths)

    def elaborate(self, platform):
        m = Module()
        depths = self._depths
        m.submodules.engine = engine = DATAFLOWS[self._dataflow](
            rows=self._rows, cols=self._cols, act_depth=depths["act"], wgt_depth=depths["wgt"],
            param_depth=depths["param"], out_depth=depths["out"],
            drain_lanes=self._drain_lanes, **self._engine_options)

        # Operand buffers are one memory per byte lane. A wide memory may be mapped by yosys
        # as block RAMs stacked in depth, with a multiplexer after their outputs; a byte-wide
        # one fits a block RAM's native aspect ratios (2048x9 ... 16384x1) without stacking up
        # to 16384 words, so every block RAM output goes straight into its output register.
        buffers = {
            "act": (self._rows, self.act_wr, engine.act_rd),
            "wgt": (self._cols, self.wgt_wr, engine.wgt_rd),
        }
        for name, (lanes, host_port, engine_port) in buffers.items():
            for lane in range(lanes):
                m.submodules[f"{name}_buffer_{lane}"] = buffer = OperandBuffer(
                    depths[name], write_domain=self._host_domain)
                m.d.comb += [
                    buffer.wr.addr.eq(host_port.addr),
                    buffer.wr.data.eq(host_port.data[8 * lane:8 * lane + 8]),
                    buffer.wr.en.eq(host_port.en),
                    buffer.rd.addr.eq(engine_port.addr),
                    buffer.rd.en.eq(engine_port.en),
                    engine_port.data[8 * lane:8 * lane + 8].eq(buffer.rd.data),
                ]

        lanes = self._drain_lanes
        lane_bits = (lanes - 1).bit_length()
        for lane in range(lanes):
            name = f"param_buffer_{lane}" if lanes > 1 else "param_buffer"
            m.submodules[name] = buffer = ParamBuffer(
                engine.param_words, write_domain=self._host_domain)
            m.d.comb += [
                buffer.wr.addr.eq(self.param_wr.addr >> lane_bits),
                buffer.wr.data.eq(self.param_wr.data),
                buffer.wr.en.eq(self.param_wr.en & (self.param_wr.addr[:lane_bits] == lane
                                                    if lanes > 1 else 1)),
                buffer.rd.addr.eq(engine.param_rd.addr),
                buffer.rd.en.eq(engine.param_rd.en),
                engine.param_rd.data[lane].eq(buffer.rd.data),
            ]

        m.d.comb += [
            engine.start.eq(self.start),
            engine.m_size.eq(self.m_size),
            engine.k_size.eq(self.k_size),
            engine.n_size.eq(self.n_size),
            engine.b_size.eq(self.b_size),
            self.busy.eq(engine.busy),
            self.done.eq(engine.done),
            self.error.eq(engine.error),
            self.cycles.eq(engine.cycles),
        ]
        m.d.comb += engine.abort.eq(self.abort)      # host ABORT
        wiring.connect(m, engine.o, wiring.flipped(self.o))
        return m
