"""Board top: oscillator -> PLL -> accelerator clock domain (CLKOP, or a clock select between
CLKOP and CLKOS2) and host link domain (the oscillator, or CLKOS), USB serial pins, status
LEDs."""

from amaranth.hdl import C, ClockDomain, DomainRenamer, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

from .clock_select import ClockSelect
from .pll import pll_instance

__all__ = ["BoardTop"]


class BoardTop(Elaboratable):
    """The design as it goes on a board.

    Parameters
    ----------
    system : HostSystem or ViTHostSystem
        Everything but clocks and pins: the ``sync`` (accelerator) and ``host`` (link)
        domains, the serial lines and two status signals.
    pll : PllSettings
        Makes the ``sync`` clock (CLKOP) from the board oscillator. With a ``clkos_div``, its
        CLKOS output clocks the ``host`` domain (a clock that divides the baud rate exactly,
        see :func:`gen.design.plan_host_link`); without one (as :func:`~gen.hw.pll.plan_pll`
        returns it) the ``host`` domain runs straight from the oscillator. With a
        ``clkos2_div`` (run-time clock levels, docs/clocking.md) the ``sync`` clock comes from
        a :class:`~gen.hw.clock_select.ClockSelect` between CLKOP (level 0) and CLKOS2 (level
        1), driven by the system's ``level`` (a HostSystem with ``clock_levels=2``).
    uart_resource : str
        Platform resource of the host serial port.
    """

    def __init__(self, system, pll, uart_resource="uart"):
        if not all(hasattr(system, name) for name in ("uart_rx", "uart_tx", "busy", "error")):
            raise TypeError(f"system must have uart_rx, uart_tx, busy and error (a HostSystem "
                            f"or a ViTHostSystem), not {system!r}")
        levels = getattr(system, "clock_levels", 1)
        if (pll.clkos2_div is not None) != (levels > 1):
            raise ValueError(f"PLL settings with a CLKOS2 divider need a system with clock "
                             f"levels and the other way round (CLKOS2 divider "
                             f"{pll.clkos2_div}, {levels} clock level(s))")
        self.system = system
        self.pll = pll
        self.uart_resource = uart_resource

    def elaborate(self, platform):
        m = Module()
        oscillator = platform.request(platform.default_clk)
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.host = host = ClockDomain("host")
        locked = Signal()
        levels = {}
        if self.pll.clkos2_div is not None:
            # CLKOP and CLKOS2 meet in the clock select; CLKOP still feeds the PLL back.
            clkop, clkos2 = Signal(name="clkop"), Signal(name="clkos2")
            levels = dict(clk_os2=clkos2)
            sync_source = clkop
        else:
            sync_source = sync.clk
        if self.pll.clkos_div is None:
            # The host link runs straight from the oscillator (see HostSystem).
            m.submodules.pll = pll_instance(self.pll, oscillator.i, sync_source, locked,
                                            **levels)
            m.d.comb += host.clk.eq(oscillator.i)
        else:
            # The host link runs from CLKOS, on the same VCO as the accelerator clock.
            m.submodules.pll = pll_instance(self.pll, oscillator.i, sync_source, locked,
                                            clk_os=host.clk, **levels)
            platform.add_clock_constraint(host.clk, self.pll.clkos_mhz * 1e6)
        if levels:
            # The select logic runs with the host link, where the level is asked for.
            select = ClockSelect()
            m.submodules.clock_select = DomainRenamer({"sync": "host"})(select)
            m.d.comb += [select.clk0.eq(clkop), select.clk1.eq(clkos2),
                         sync.clk.eq(select.clk), select.level.eq(self.system.level),
                         self.system.level_active.eq(select.active)]
            platform.add_clock_constraint(clkop, self.pll.output_mhz * 1e6)
            platform.add_clock_constraint(clkos2, self.pll.clkos2_mhz * 1e6)
        # Hold the design in reset until the PLL has locked. The accelerator's reset reaches
        # most of its flip-flops (8 066 of them in the ViT design): on fabric routing that one
        # net took a large share of the router's resources and its time, so it goes through a
        # DCCA onto a global network (which reaches every slice's LSR), as a clock does. The
        # synchronizer runs in a domain of its own on the same clock signal (not a copy of it,
        # which would rename the accelerator's clock net that flows.report looks for).
        m.domains.sync_reset = sync_reset = ClockDomain("sync_reset")
        sync_reset.clk = sync.clk
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync_reset")
        m.submodules.reset_buffer = Instance("DCCA", i_CLKI=sync_reset.rst, i_CE=C(1, 1),
                                             o_CLKO=sync.rst)
        m.submodules.host_reset_sync = ResetSynchronizer(~locked, domain="host")
        # With levels too: timing is closed at the fastest, so every level meets it.
        platform.add_clock_constraint(sync.clk, self.pll.output_mhz * 1e6)

        m.submodules.system = system = self.system
        uart = platform.request(self.uart_resource, 0)
        m.d.comb += [system.uart_rx.eq(uart.rx.i), uart.tx.o.eq(system.uart_tx)]

        leds = [platform.request("led", index) for index in range(3)]
        heartbeat = Signal(27)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [
            leds[0].o.eq(heartbeat[-1]),      # clock is running
            leds[1].o.eq(system.busy),
            leds[2].o.eq(system.error),
        ]
        return m
