"""Glitch-free run-time switching of the accelerator clock between two PLL outputs.

ECP5's DCSC (dynamic clock select, Lattice TN1263) in its glitch-free mode (``MODESEL`` 0,
``DCSMODE`` ``"POS"``): ``SEL0`` enables ``CLK0``, ``SEL1`` enables ``CLK1``; an input's
enable is taken on that clock's rising edge, and only once the other input's enable has
dropped, while the output holds high between the two. The merged high phase runs from the
old clock's rising edge to the new clock's falling edge, so no pulse is ever shorter than a
phase of either input. See docs/clocking.md.
"""

from amaranth.hdl import Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError

__all__ = ["ClockSelect", "CLOCK_SELECT_LEVELS", "DCS_MODES"]

#: Inputs of one DCSC. The 85F has two DCSCs; one is used (see docs/clocking.md).
CLOCK_SELECT_LEVELS = 2
#: The glitch-free DCSMODEs: ``POS`` holds the output high during a switch, ``NEG`` low.
DCS_MODES = ("POS", "NEG")


class ClockSelect(wiring.Component):
    """Two clocks in, one out, switched at run time without a runt pulse.

    Parameters
    ----------
    dcs_mode : str
        The DCSC's glitch-free mode, ``"POS"`` (default: flops of the switched domain act on
        rising edges, so a held-high output adds no edge) or ``"NEG"``.

    The select logic runs in this component's ``sync`` domain: rename it to the domain the
    request comes from (the host link's). It drives the DCSC's select pins from registers,
    break before make (``SEL`` 01 -> 00 -> 10, never 11, which the DCSC reads as "hold"
    asynchronously); the DCSC takes each select on its own input clock's edge, which is
    where the request crosses into the clocks being switched.

    Members
    -------
    clk0, clk1 : ``In(1)``
        The input clocks (level 0, the power-on level, and level 1).
    level : ``In(1)``
        The wanted clock.
    active : ``Out(1)``
        The level whose select is applied; the DCSC completes the switch within a period of
        the old clock plus one of the new one.
    clk : ``Out(1)``
        The selected clock.
    """

    def __init__(self, *, dcs_mode="POS"):
        if dcs_mode not in DCS_MODES:
            raise UserError(f"dcs_mode: {dcs_mode!r} is not a glitch-free DCSC mode; use one "
                            f"of {', '.join(DCS_MODES)}")
        self._dcs_mode = dcs_mode
        super().__init__({
            "clk0":   In(1),
            "clk1":   In(1),
            "level":  In(1),
            "active": Out(1),
            "clk":    Out(1),
        })

    @property
    def levels(self):
        return CLOCK_SELECT_LEVELS

    @property
    def dcs_mode(self):
        return self._dcs_mode

    def elaborate(self, platform):
        m = Module()
        # One-hot {SEL1, SEL0}, registered so that no combinational glitch reaches the pins.
        sel = Signal(2, init=0b01)
        with m.If(sel == 0):
            # Make: enable the new input (the DCSC waits for the old one to let go).
            m.d.sync += sel.eq(Mux(self.active, 0b10, 0b01))
        with m.Elif(self.level != self.active):
            # Break: release the old input first.
            m.d.sync += [sel.eq(0), self.active.eq(self.level)]
        m.submodules.dcsc = Instance(
            "DCSC",
            p_DCSMODE=self._dcs_mode,
            i_CLK0=self.clk0,
            i_CLK1=self.clk1,
            i_SEL0=sel[0],
            i_SEL1=sel[1],
            i_MODESEL=0,            # 0: glitch-free switching (1 would be a plain mux)
            o_DCSOUT=self.clk,
        )
        return m
