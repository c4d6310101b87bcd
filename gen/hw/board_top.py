"""Board top: oscillator -> PLL -> accelerator clock domain, USB serial pins, status LEDs."""

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

from .pll import pll_instance
from .system import HostSystem

__all__ = ["BoardTop"]


class BoardTop(Elaboratable):
    """The design as it goes on a board.

    Parameters
    ----------
    system : HostSystem
        Everything clocked by the accelerator clock.
    pll : PllSettings
        Makes that clock from the board oscillator.
    uart_resource : str
        Platform resource of the host serial port.
    """

    def __init__(self, system, pll, uart_resource="uart"):
        if not isinstance(system, HostSystem):
            raise TypeError(f"system must be a HostSystem, not {system!r}")
        self.system = system
        self.pll = pll
        self.uart_resource = uart_resource

    def elaborate(self, platform):
        m = Module()
        oscillator = platform.request(platform.default_clk)
        m.domains.sync = sync = ClockDomain("sync")
        # The host link runs straight from the oscillator (see HostSystem).
        m.domains.host = host = ClockDomain("host")
        locked = Signal()
        m.submodules.pll = pll_instance(self.pll, oscillator.i, sync.clk, locked)
        m.d.comb += host.clk.eq(oscillator.i)
        # Hold the design in reset until the PLL has locked.
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        m.submodules.host_reset_sync = ResetSynchronizer(~locked, domain="host")
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
