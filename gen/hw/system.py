"""The accelerator behind its host link: everything of a board design except clocks and pins."""

from amaranth.hdl import DomainRenamer, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .accelerator import GemmAccelerator, OutputBuffer
from .host_bridge import DATAFLOW_IDS, DEFAULT_BYTE_TIMEOUT, HostBridge
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["HostSystem"]


class HostSystem(wiring.Component):
    """UART, host protocol engine, GEMM accelerator and output buffer.

    Parameters
    ----------
    rows, cols, dataflow, drain_lanes, act_depth, wgt_depth, param_depth, out_depth
        As in :class:`~gen.hw.accelerator.GemmAccelerator`.
    uart_divisor : int
        ``host`` clock cycles per UART bit.
    byte_timeout : int
        ``host`` clock cycles a command may wait for its next byte before it is dropped (see
        PROTOCOL.md); at least two byte times (``20 * uart_divisor``). The default is 5 ms at
        a 25 MHz oscillator (the generator passes 5 ms at other host clocks).
    clock_levels : int
        1 (default: the system as without levels, byte for byte) or 2: the protocol gets its
        LEVEL command and the system its ``level`` / ``level_active`` members, to be wired to
        a :class:`~gen.hw.clock_select.ClockSelect` that makes the ``sync`` clock (see
        :class:`~gen.hw.board_top.BoardTop` and docs/clocking.md).

    Clock domains: ``sync`` runs the accelerator; ``host`` runs the UART and the protocol
    engine (on a board, the oscillator or a PLL output that divides the baud rate exactly,
    see :func:`gen.design.plan_host_link`). The link needs no speed, and keeping its control
    logic out of the accelerator's clock keeps it off the accelerator's critical paths. The
    buffers are dual-clock block RAMs; job control crosses with toggle synchronizers; sizes and
    the cycle count are stable whenever they are read across (see PROTOCOL.md).

    Members
    -------
    uart_rx : ``In(1, init=1)``, uart_tx : ``Out(1, init=1)``
        Serial lines, host side 8N1.
    busy, error : ``Out(1)``
        For status LEDs.
    level : ``Out(1)``, level_active : ``In(1)``
        Only with two clock levels, both in the ``host`` domain: the level the host asked for
        (to the clock select's ``level``) and the one it applies (from its ``active``).
    """

    def __init__(self, *, rows, cols, dataflow="output_stationary", drain_lanes=1, act_depth,
                 wgt_depth, param_depth, out_depth, uart_divisor,
                 byte_timeout=DEFAULT_BYTE_TIMEOUT, clock_levels=1):
        self._accel_args = dict(rows=rows, cols=cols, dataflow=dataflow,
                                drain_lanes=drain_lanes, act_depth=act_depth,
                                wgt_depth=wgt_depth, param_depth=param_depth,
                                out_depth=out_depth)
        self._uart_divisor = uart_divisor
        if byte_timeout < 20 * uart_divisor:
            raise ValueError(f"byte_timeout {byte_timeout} is under two byte times "
                             f"({20 * uart_divisor} host cycles at divisor {uart_divisor})")
        # Build the parts now so that bad parameters fail here, not at elaboration.
        self._accelerator = GemmAccelerator(**self._accel_args, host_domain="host")
        self._bridge = HostBridge(
            rows=rows, cols=cols, dataflow_id=DATAFLOW_IDS.index(dataflow),
            act_depth=act_depth, wgt_depth=wgt_depth, param_depth=param_depth,
            out_depth=out_depth, byte_timeout=byte_timeout, clock_levels=clock_levels)
        self._receiver = UARTReceiver(uart_divisor)
        self._transmitter = UARTTransmitter(uart_divisor)
        levels = {}
        if self._bridge.clock_levels > 1:
            levels = {"level": Out(range(self._bridge.clock_levels)),
                      "level_active": In(range(self._bridge.clock_levels))}
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "busy":    Out(1),
            "error":   Out(1),
            **levels,
        })

    @property
    def bridge(self):
        return self._bridge

    @property
    def clock_levels(self):
        return self._bridge.clock_levels

    def elaborate(self, platform):
        m = Module()
        to_host = DomainRenamer({"sync": "host"})
        m.submodules.accelerator = accel = self._accelerator
        m.submodules.bridge = bridge = to_host(self._bridge)
        m.submodules.uart_rx = receiver = to_host(self._receiver)
        m.submodules.uart_tx = transmitter = to_host(self._transmitter)
        bridge, receiver, transmitter = self._bridge, self._receiver, self._transmitter

        m.d.comb += [receiver.rx.eq(self.uart_rx), self.uart_tx.eq(transmitter.tx)]
        if self.clock_levels > 1:
            # Both in the host domain: the clock select's own logic runs there too.
            m.d.comb += [self.level.eq(bridge.level), bridge.level_active.eq(self.level_active)]
        wiring.connect(m, receiver.o, bridge.rx)
        wiring.connect(m, bridge.tx, transmitter.i)
        wiring.connect(m, bridge.act_wr, accel.act_wr)
        wiring.connect(m, bridge.wgt_wr, accel.wgt_wr)
        wiring.connect(m, bridge.param_wr, accel.param_wr)

        # host -> sync: START as a toggle; the sizes were set by the START (BATCH) command's arguments
        # long before the toggle arrives, and are sampled by the accelerator with it.
        start_toggle = Signal()
        with m.If(bridge.start):
            m.d.host += start_toggle.eq(~start_toggle)
        start_toggle_sync = Signal()
        start_toggle_seen = Signal()
        m.submodules.start_sync = FFSynchronizer(start_toggle, start_toggle_sync, o_domain="sync")
        m.d.sync += start_toggle_seen.eq(start_toggle_sync)
        m.d.comb += [
            accel.start.eq(start_toggle_sync != start_toggle_seen),
            accel.m_size.eq(bridge.m_size),
            accel.k_size.eq(bridge.k_size),
            accel.n_size.eq(bridge.n_size),
            accel.b_size.eq(bridge.b_size),
        ]
        # host -> sync: ABORT the same way (a toggle, one pulse on the accelerator's side).
        abort_toggle = Signal()
        with m.If(bridge.abort):
            m.d.host += abort_toggle.eq(~abort_toggle)
        abort_toggle_sync = Signal()
        abort_toggle_seen = Signal()
        m.submodules.abort_sync = FFSynchronizer(abort_toggle, abort_toggle_sync, o_domain="sync")
        m.d.sync += abort_toggle_seen.eq(abort_toggle_sync)
        m.d.comb += accel.abort.eq(abort_toggle_sync != abort_toggle_seen)

        # sync -> host: busy and error as levels, done as a toggle, the cycle count as bits
        # (read by the host only when no job runs, so it is stable).
        done_toggle = Signal()
        with m.If(accel.done):
            m.d.sync += done_toggle.eq(~done_toggle)
        done_toggle_host = Signal()
        done_toggle_seen = Signal()
        busy_host = Signal()
        error_host = Signal()
        cycles_host = Signal(32)
        m.submodules.done_sync = FFSynchronizer(done_toggle, done_toggle_host, o_domain="host")
        m.submodules.busy_sync = FFSynchronizer(accel.busy, busy_host, o_domain="host")
        m.submodules.error_sync = FFSynchronizer(accel.error, error_host, o_domain="host")
        m.submodules.cycles_sync = FFSynchronizer(accel.cycles, cycles_host, o_domain="host")
        m.d.host += done_toggle_seen.eq(done_toggle_host)
        # A START is in flight until the accelerator reports busy: count it as busy, so that
        # a STATUS right after START cannot see the previous job's "done, not busy".
        start_pending = Signal()
        with m.If(bridge.start):
            m.d.host += start_pending.eq(1)
        with m.Elif(busy_host | (done_toggle_host != done_toggle_seen)):
            m.d.host += start_pending.eq(0)
        m.d.comb += [
            bridge.busy.eq(busy_host | start_pending),
            bridge.done.eq(done_toggle_host != done_toggle_seen),
            bridge.error.eq(error_host),
            bridge.cycles.eq(cycles_host),
            self.busy.eq(accel.busy),
            self.error.eq(accel.error),
        ]

        # Output buffer: the accelerator writes Y[m, n] at m*N + n; the host reads it back.
        m.submodules.out_buffer = out_buffer = OutputBuffer(
            self._accel_args["out_depth"], lanes=accel.drain_lanes, read_domain="host")
        wiring.connect(m, accel.o, out_buffer.i)
        wiring.connect(m, bridge.out_rd, out_buffer.rd)
        return m
