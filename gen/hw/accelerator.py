"""The GEMM accelerator: input buffers in block RAM around a dataflow engine."""

import operator

from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .gemm import DIM_WIDTH, OutputStationaryGemm, OutputStream
from .requant import RequantParams

__all__ = ["DATAFLOWS", "GemmAccelerator"]

#: Dataflow name -> engine class. Every engine has the same ports as `OutputStationaryGemm`.
DATAFLOWS = {
    "output_stationary": OutputStationaryGemm,
}


def _addr_width(depth):
    return max(1, (depth - 1).bit_length())


class GemmAccelerator(wiring.Component):
    """INT8 GEMM engine with its activation, weight and parameter buffers.

    Parameters
    ----------
    rows, cols : int
        PE array size.
    dataflow : str
        A key of :data:`DATAFLOWS`.
    act_depth, wgt_depth, param_depth, out_depth : int
        Buffer depths in words (see :mod:`gen.hw.gemm` for the word layouts). The output buffer
        itself lives outside; ``out_depth`` bounds the addresses the engine may emit.

    Members
    -------
    act_wr, wgt_wr, param_wr : ``Out(memory.WritePort.Signature(...))``
        Host-side write ports of the buffers.
    start, m_size, k_size, n_size, busy, done, error, cycles
        As in :class:`~gen.hw.gemm.OutputStationaryGemm`.
    o : ``Out(OutputStream())``
        Requantized outputs with their row-major addresses.
    """

    def __init__(self, *, rows, cols, dataflow="output_stationary",
                 act_depth, wgt_depth, param_depth, out_depth, host_domain="sync"):
        self._host_domain = host_domain
        if dataflow not in DATAFLOWS:
            raise ValueError(f"unknown dataflow {dataflow!r}; the generator has "
                             f"{', '.join(sorted(DATAFLOWS))}")
        self._dataflow = dataflow
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
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
            "busy":     Out(1),
            "done":     Out(1),
            "error":    Out(1),
            "cycles":   Out(32),
            "o":        Out(OutputStream()),
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
    def depths(self):
        return dict(self._depths)

    def elaborate(self, platform):
        m = Module()
        depths = self._depths
        m.submodules.engine = engine = DATAFLOWS[self._dataflow](
            rows=self._rows, cols=self._cols, act_depth=depths["act"], wgt_depth=depths["wgt"],
            param_depth=depths["param"], out_depth=depths["out"])

        # Operand buffers are one memory per byte lane. A wide memory may be mapped by yosys
        # as block RAMs stacked in depth, with a multiplexer after their outputs; a byte-wide
        # one fits a block RAM's native aspect ratios (2048x9 ... 16384x1) without stacking up
        # to 16384 words, so every block RAM output goes straight into a register.
        buffers = {
            "act": (self._rows, self.act_wr, engine.act_rd),
            "wgt": (self._cols, self.wgt_wr, engine.wgt_rd),
        }
        for name, (lanes, host_port, engine_port) in buffers.items():
            for lane in range(lanes):
                m.submodules[f"{name}_buffer_{lane}"] = buffer = memory.Memory(
                    shape=8, depth=depths[name], init=[])
                write_port = buffer.write_port(domain=self._host_domain)
                read_port = buffer.read_port()
                m.d.comb += [
                    write_port.addr.eq(host_port.addr),
                    write_port.data.eq(host_port.data[8 * lane:8 * lane + 8]),
                    write_port.en.eq(host_port.en),
                    read_port.addr.eq(engine_port.addr),
                    read_port.en.eq(engine_port.en),
                    engine_port.data[8 * lane:8 * lane + 8].eq(read_port.data),
                ]

        m.submodules.param_buffer = buffer = memory.Memory(
            shape=RequantParams(), depth=depths["param"], init=[])
        write_port = buffer.write_port(domain=self._host_domain)
        read_port = buffer.read_port()
        m.d.comb += [
            write_port.addr.eq(self.param_wr.addr),
            write_port.data.eq(self.param_wr.data),
            write_port.en.eq(self.param_wr.en),
            read_port.addr.eq(engine.param_rd.addr),
            read_port.en.eq(engine.param_rd.en),
            engine.param_rd.data.eq(read_port.data),
        ]

        m.d.comb += [
            engine.start.eq(self.start),
            engine.m_size.eq(self.m_size),
            engine.k_size.eq(self.k_size),
            engine.n_size.eq(self.n_size),
            self.busy.eq(engine.busy),
            self.done.eq(engine.done),
            self.error.eq(engine.error),
            self.cycles.eq(engine.cycles),
        ]
        wiring.connect(m, engine.o, wiring.flipped(self.o))
        return m
