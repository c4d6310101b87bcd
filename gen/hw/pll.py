"""ECP5 PLL (EHXPLLL) settings for a requested output clock, and the instance that makes it.

CLKOP (fed back) makes the accelerator clock; CLKOS, a second divider on the same VCO, may make
the host link's clock (see :func:`secondary_outputs` and :func:`gen.design.plan_host_link`);
CLKOS2, a third, may make a slower accelerator clock level switched in at run time
(:func:`output_levels`, :class:`gen.hw.clock_select.ClockSelect`, docs/clocking.md).
"""

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from amaranth.hdl import Instance

from ..errors import UserError

__all__ = ["PllSettings", "plan_pll", "pll_instance", "nearest_clocks", "secondary_outputs",
           "output_levels", "level_settings", "OUTPUT_DIV_MAX"]

# ECP5 sysCLOCK PLL limits (ECP5 family data sheet, FPGA-DS-02012, PLL timing table).
PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)
OUT_MHZ = (3.125, 400.0)
#: Largest CLKOP/CLKOS output divider.
OUTPUT_DIV_MAX = 128


@dataclass(frozen=True)
class PllSettings:
    input_mhz: float
    requested_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    #: Divider of the second output, CLKOS (the same VCO), or None where CLKOS is unused.
    clkos_div: int | None = None
    #: Divider of the third output, CLKOS2 (a slower accelerator clock level), or None.
    clkos2_div: int | None = None

    @property
    def output_mhz(self):
        return self.input_mhz * self.clkfb_div / self.clki_div

    @property
    def vco_mhz(self):
        return self.output_mhz * self.clkop_div

    @property
    def exact_output_mhz(self):
        """CLKOP as an exact fraction (``output_mhz`` is its float)."""
        return Fraction(self.input_mhz) * self.clkfb_div / self.clki_div

    def _divided(self, divider):
        """The VCO divided by ``divider`` as an exact fraction, or None (output unused)."""
        return None if divider is None else self.exact_output_mhz * self.clkop_div / divider

    @property
    def exact_clkos_mhz(self):
        return self._divided(self.clkos_div)

    @property
    def clkos_mhz(self):
        """The CLKOS output in MHz, or None where it is unused."""
        return None if self.clkos_div is None else float(self.exact_clkos_mhz)

    @property
    def exact_clkos2_mhz(self):
        return self._divided(self.clkos2_div)

    @property
    def clkos2_mhz(self):
        """The CLKOS2 output in MHz, or None where it is unused."""
        return None if self.clkos2_div is None else float(self.exact_clkos2_mhz)

    @property
    def error_ppm(self):
        return (self.output_mhz - self.requested_mhz) / self.requested_mhz * 1e6


def plan_pll(input_mhz, output_mhz, *, tolerance_ppm=10000):
    """Dividers giving the closest output to ``output_mhz`` (feedback from CLKOP).

    Among equally close settings, the one with the VCO nearest 600 MHz wins (mid-range, as
    Lattice's own tools prefer). Fails if nothing is within ``tolerance_ppm``.
    """
    if not OUT_MHZ[0] <= output_mhz <= OUT_MHZ[1]:
        raise UserError(f"clock_mhz: {output_mhz} MHz is outside what the ECP5 PLL makes "
                        f"({OUT_MHZ[0]} to {OUT_MHZ[1]} MHz)")
    best = None
    for clki_div, clkfb_div, clkop_div, out, vco in _settings(input_mhz):
        key = (abs(out - output_mhz), abs(vco - 600))
        if best is None or key < best[0]:
            best = (key, PllSettings(input_mhz, output_mhz, clki_div, clkfb_div, clkop_div))
    if best is None or abs(best[1].error_ppm) > tolerance_ppm:
        near = " or ".join(f"{mhz:g}" for mhz in nearest_clocks(input_mhz, output_mhz))
        raise UserError(f"clock_mhz: the PLL cannot make {output_mhz} MHz from "
                        f"{input_mhz} MHz within {tolerance_ppm} ppm; the nearest clocks it "
                        f"makes are {near} MHz")
    return best[1]


def _settings(input_mhz):
    """Every divider setting within the PLL's limits: ``(clki, clkfb, clkop, out, vco)``."""
    for clki_div in range(1, 129):
        pfd = input_mhz / clki_div
        if not PFD_MHZ[0] <= pfd <= PFD_MHZ[1]:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if not OUT_MHZ[0] <= out <= OUT_MHZ[1]:
                continue
            for clkop_div in range(1, OUTPUT_DIV_MAX + 1):
                vco = out * clkop_div
                if VCO_MHZ[0] <= vco <= VCO_MHZ[1]:
                    yield clki_div, clkfb_div, clkop_div, out, vco


@lru_cache(maxsize=64)
def secondary_outputs(input_mhz, primary):
    """Every setting that makes exactly ``primary``'s CLKOP (the same fraction of the input,
    any VCO in range) with a CLKOS output within the PLL's limits: a tuple of
    :class:`PllSettings` with ``clkos_div`` set, one per CLKOS frequency, slowest first."""
    out = primary.exact_output_mhz
    found = []
    for clki_div, clkfb_div, clkop_div, _, _ in _settings(input_mhz):
        if Fraction(input_mhz) * clkfb_div / clki_div != out:
            continue
        vco = out * clkop_div
        for clkos_div in range(1, OUTPUT_DIV_MAX + 1):
            if OUT_MHZ[0] <= vco / clkos_div <= OUT_MHZ[1]:
                found.append(PllSettings(input_mhz, primary.requested_mhz, clki_div, clkfb_div,
                                         clkop_div, clkos_div))
    # One setting per CLKOS frequency: ``primary``'s own dividers where they make it, else
    # the VCO nearest 600 MHz (as plan_pll prefers), else the smallest input divider.
    same = (primary.clki_div, primary.clkfb_div, primary.clkop_div)
    found.sort(key=lambda s: ((s.clki_div, s.clkfb_div, s.clkop_div) != same,
                              abs(out * s.clkop_div - 600), s.clki_div))
    unique = {}
    for setting in found:
        unique.setdefault(setting.exact_clkos_mhz, setting)
    return tuple(sorted(unique.values(), key=lambda s: s.exact_clkos_mhz))


def output_levels(settings):
    """Every clock an output divider makes from ``settings``' VCO at or below its CLKOP (the
    accelerator clock, where timing is closed): ``{exact MHz: divider}``, fastest first.
    These are the accelerator clock levels a design with these settings can switch among."""
    vco = settings.exact_output_mhz * settings.clkop_div
    levels = {}
    for div in range(settings.clkop_div, OUTPUT_DIV_MAX + 1):
        mhz = vco / div
        if OUT_MHZ[0] <= mhz <= OUT_MHZ[1]:
            levels.setdefault(mhz, div)
    return levels


@lru_cache(maxsize=64)
def level_settings(input_mhz, primary):
    """Every clock a CLKOS2 output can add below ``primary``'s CLKOP, on any VCO that keeps
    ``primary``'s CLKOP and (where it has one) its CLKOS exactly: ``{exact MHz: PllSettings
    with clkos2_div}``, fastest first. For each level, ``primary``'s own dividers where they
    make it, else the VCO nearest 600 MHz (as plan_pll prefers), else the smallest input
    divider."""
    out, clkos = primary.exact_output_mhz, primary.exact_clkos_mhz
    candidates = []
    for clki_div, clkfb_div, clkop_div, _, _ in _settings(input_mhz):
        if Fraction(input_mhz) * clkfb_div / clki_div != out:
            continue
        clkos_div = None
        if clkos is not None:
            ratio = out * clkop_div / clkos
            if ratio.denominator != 1 or not 1 <= ratio <= OUTPUT_DIV_MAX:
                continue
            clkos_div = int(ratio)
        candidates.append(PllSettings(input_mhz, primary.requested_mhz, clki_div, clkfb_div,
                                      clkop_div, clkos_div))
    same = (primary.clki_div, primary.clkfb_div, primary.clkop_div)
    candidates.sort(key=lambda s: ((s.clki_div, s.clkfb_div, s.clkop_div) != same,
                                   abs(out * s.clkop_div - 600), s.clki_div))
    levels = {}
    for setting in candidates:
        for mhz, div in output_levels(setting).items():
            if mhz < out:
                levels.setdefault(mhz, dataclasses.replace(setting, clkos2_div=div))
    return dict(sorted(levels.items(), reverse=True))


def nearest_clocks(input_mhz, output_mhz):
    """The achievable output clocks just below and just above ``output_mhz`` (one if it lies
    outside the range), rounded to 6 digits, each of which :func:`plan_pll` accepts."""
    outputs = {round(setting[3], 6) for setting in _settings(input_mhz)}
    below = [mhz for mhz in outputs if mhz <= output_mhz]
    above = [mhz for mhz in outputs if mhz > output_mhz]
    return tuple(x for x in (max(below, default=None), min(above, default=None))
                 if x is not None)


def pll_instance(settings, clk_in, clk_out, locked, clk_os=None, clk_os2=None):
    """EHXPLLL with CLKOP fed back, as ``ecppll`` from Project Trellis configures it; with
    ``settings.clkos_div`` set, CLKOS drives ``clk_os`` too (zero phase: its coarse phase is
    CLKOP's, as ``ecppll`` sets a secondary output's), and likewise CLKOS2 ``clk_os2`` with
    ``settings.clkos2_div``."""
    if (settings.clkos_div is None) != (clk_os is None):
        raise ValueError("clk_os is needed exactly when the settings have a CLKOS divider")
    if (settings.clkos2_div is None) != (clk_os2 is None):
        raise ValueError("clk_os2 is needed exactly when the settings have a CLKOS2 divider")
    secondary = {}
    if clk_os is not None:
        secondary = dict(
            a_FREQUENCY_PIN_CLKOS=f"{settings.clkos_mhz:.6g}",
            p_CLKOS_ENABLE="ENABLED",
            p_CLKOS_DIV=settings.clkos_div,
            p_CLKOS_CPHASE=settings.clkop_div - 1,
            p_CLKOS_FPHASE=0,
            o_CLKOS=clk_os,
            i_ENCLKOS=0,
        )
    if clk_os2 is not None:
        secondary.update(
            a_FREQUENCY_PIN_CLKOS2=f"{settings.clkos2_mhz:.6g}",
            p_CLKOS2_ENABLE="ENABLED",
            p_CLKOS2_DIV=settings.clkos2_div,
            p_CLKOS2_CPHASE=settings.clkop_div - 1,
            p_CLKOS2_FPHASE=0,
            o_CLKOS2=clk_os2,
            i_ENCLKOS2=0,
        )
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{settings.input_mhz:g}",
        a_FREQUENCY_PIN_CLKOP=f"{settings.output_mhz:g}",
        a_ICP_CURRENT="12",
        a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED",
        p_INTFB_WAKE="DISABLED",
        p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA",
        p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC",
        p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=settings.clki_div,
        p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_DIV=settings.clkop_div,
        p_CLKOP_CPHASE=settings.clkop_div - 1,
        p_CLKOP_FPHASE=0,
        p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=settings.clkfb_div,
        i_RST=0,
        i_STDBY=0,
        i_CLKI=clk_in,
        o_CLKOP=clk_out,
        i_CLKFB=clk_out,
        i_PHASESEL0=0,
        i_PHASESEL1=0,
        i_PHASEDIR=1,
        i_PHASESTEP=1,
        i_PHASELOADREG=1,
        i_PLLWAKESYNC=0,
        i_ENCLKOP=0,
        o_LOCK=locked,
        **secondary,
    )
