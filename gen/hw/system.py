"""The accelerator behind its host link: everything of a board design except clocks and pins."""

from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .accelerator import DATAFLOWS, GemmAccelerator
from .host_bridge import HostBridge
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["HostSystem"]


class HostSystem(wiring.Component):
    """UART, host protocol engine, GEMM accelerator and output buffer.

    Parameters
    ----------
    rows, cols, dataflow, act_depth, wgt_depth, param_depth, out_depth
        As in :class:`~gen.hw.accelerator.GemmAccelerator`.
    uart_divisor : int
        Clock cycles per UART bit.

    Members
    -------
    uart_rx : ``In(1, init=1)``, uart_tx : ``Out(1, init=1)``
        Serial lines, host side 8N1.
    busy, error : ``Out(1)``
        For status LEDs.
    """

    def __init__(self, *, rows, cols, dataflow="output_stationary", act_depth, wgt_depth,
                 param_depth, out_depth, uart_divisor):
        self._accel_args = dict(rows=rows, cols=cols, dataflow=dataflow, act_depth=act_depth,
                                wgt_depth=wgt_depth, param_depth=param_depth,
                                out_depth=out_depth)
        self._uart_divisor = uart_divisor
        # Build the parts now so that bad parameters fail here, not at elaboration.
        self._accelerator = GemmAccelerator(**self._accel_args)
        self._bridge = HostBridge(
            rows=rows, cols=cols, dataflow_id=sorted(DATAFLOWS).index(dataflow),
            act_depth=act_depth, wgt_depth=wgt_depth, param_depth=param_depth,
            out_depth=out_depth)
        self._receiver = UARTReceiver(uart_divisor)
        self._transmitter = UARTTransmitter(uart_divisor)
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "busy":    Out(1),
            "error":   Out(1),
        })

    @property
    def bridge(self):
        return self._bridge

    def elaborate(self, platform):
        m = Module()
        m.submodules.accelerator = accel = self._accelerator
        m.submodules.bridge = bridge = self._bridge
        m.submodules.uart_rx = receiver = self._receiver
        m.submodules.uart_tx = transmitter = self._transmitter

        m.d.comb += [receiver.rx.eq(self.uart_rx), self.uart_tx.eq(transmitter.tx)]
        wiring.connect(m, receiver.o, bridge.rx)
        wiring.connect(m, bridge.tx, transmitter.i)
        wiring.connect(m, bridge.act_wr, accel.act_wr)
        wiring.connect(m, bridge.wgt_wr, accel.wgt_wr)
        wiring.connect(m, bridge.param_wr, accel.param_wr)

        m.d.comb += [
            accel.start.eq(bridge.start),
            accel.m_size.eq(bridge.m_size),
            accel.k_size.eq(bridge.k_size),
            accel.n_size.eq(bridge.n_size),
            bridge.busy.eq(accel.busy),
            bridge.done.eq(accel.done),
            bridge.error.eq(accel.error),
            bridge.cycles.eq(accel.cycles),
            self.busy.eq(accel.busy),
            self.error.eq(accel.error),
        ]

        # Output buffer: the accelerator writes Y[m, n] at m*N + n; the host reads it back.
        out_depth = self._accel_args["out_depth"]
        m.submodules.out_buffer = out_buffer = memory.Memory(shape=8, depth=out_depth, init=[])
        write_port = out_buffer.write_port()
        read_port = out_buffer.read_port()
        m.d.comb += [
            accel.o.ready.eq(1),
            write_port.addr.eq(accel.o.payload.addr),
            write_port.data.eq(accel.o.payload.value),
            write_port.en.eq(accel.o.valid),
        ]
        wiring.connect(m, bridge.out_rd, read_port)
        return m
