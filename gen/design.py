"""From a checked config to a design: clocks, host link, hardware, generated files, build."""

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from . import __version__
from .artifacts import write_atomic
from .boards import get_board
from .config import SCHEMA, DesignConfig
from .errors import UserError
from .estimate import check_fits, estimate_resources
from .hw.board_top import BoardTop
from .hw.gemm import DIM_WIDTH
from .hw.host_bridge import DEFAULT_BYTE_TIMEOUT, PARAM_WORD_BYTES, PROTOCOL_VERSION
from .hw.pll import PllSettings, level_settings, plan_pll, secondary_outputs
from .hw.system import HostSystem
from .hw.uart import MIN_DIVISOR
from .cycles import engine_gemm_cycles
from .host.driver import gemm_link_bytes
from .rtl import content_hash, emit_verilog

__all__ = ["Design", "HostLink", "prepare_design", "resolve_sizes", "usable_bauds",
           "uart_divisor", "plan_host_link", "link_report", "plan_clock_levels",
           "clock_levels_line", "LEVEL_TOLERANCE_PPM", "RTL_OUT", "UART_TOLERANCE",
           "PREFERRED_DIVISOR", "HOST_CLOCK_MAX_MHZ", "BYTE_TIMEOUT_S", "LINK_GEMM"]

#: Where generated designs go: ``$ACCELGEN_RTL_OUT``, else ``rtl_out/`` in the working folder.
RTL_OUT = Path(os.environ.get("ACCELGEN_RTL_OUT", "rtl_out"))
#: Largest baud-rate error an 8N1 link tolerates with margin (half a bit over 10 bits is 5%).
UART_TOLERANCE = 0.02
#: Clocks per bit preferred when a PLL output clocks the host link (16, as UARTs commonly
#: oversample); a smaller divisor, down to ``MIN_DIVISOR``, only where no output gives 16.
PREFERRED_DIVISOR = 16
#: Fastest host clock chosen while a slower PLL output makes the baud as well: the protocol
#: engine's timing stays easy (the accelerator has its own clock).
HOST_CLOCK_MAX_MHZ = 100
#: The inter-byte timeout (PROTOCOL.md): ``DEFAULT_BYTE_TIMEOUT`` cycles at the 25 MHz
#: oscillator, as many cycles as make 5 ms at any other host clock.
BYTE_TIMEOUT_S = 5e-3
#: The GEMM whose transfer and compute times `gen check` and the manifest state.
LINK_GEMM = (128, 128, 128)
#: How near a ``clock_levels_mhz`` entry must be to a clock the PLL makes (the clocks are
#: printed to 6 decimals, well within it).
LEVEL_TOLERANCE_PPM = 1.0
#: Levels `clock_levels_line` names before it elides the rest.
_LEVELS_SHOWN = 12


@dataclass(frozen=True)
class HostLink:
    """The host link's clock and UART divisor (:func:`plan_host_link`).

    ``source`` is ``"oscillator"`` (the board's, straight) or ``"pll"`` (the EHXPLLL's CLKOS
    output, on the VCO that also makes the accelerator clock); ``pll`` is the design's PLL
    settings, with ``clkos_div`` set exactly when ``source`` is ``"pll"``.
    """
    source: str
    clock_mhz: Fraction
    divisor: int
    baud: int
    pll: PllSettings

    @property
    def baud_actual(self):
        return float(self.clock_mhz * 10 ** 6 / self.divisor)

    @property
    def exact(self):
        return self.clock_mhz * 10 ** 6 / self.divisor == self.baud

    @property
    def baud_error(self):
        return abs(self.baud_actual - self.baud) / self.baud

    @property
    def bytes_per_second(self):
        """8N1: ten bit times a byte."""
        return self.baud_actual / 10

    @property
    def byte_timeout(self):
        """The protocol engine's inter-byte timeout in host cycles (5 ms)."""
        return round(BYTE_TIMEOUT_S * self.clock_mhz * 10 ** 6)


@dataclass(frozen=True)
class Design:
    config: DesignConfig
    board: object
    pll: object
    uart_divisor: int
    #: The host link (:func:`plan_host_link`); None: the board oscillator, as before.
    link: HostLink | None = None

    @property
    def clock_mhz(self):
        return self.pll.output_mhz

    @property
    def clock_levels_mhz(self):
        """The run-time clock levels, level 0 first (CLKOP, then CLKOS2); ``(clock_mhz,)``
        for a design without levels."""
        if self.pll.clkos2_div is None:
            return (self.clock_mhz,)
        return (self.clock_mhz, self.pll.clkos2_mhz)

    @property
    def host_clock_source(self):
        """``"oscillator"`` or ``"pll"`` (the EHXPLLL's CLKOS output)."""
        return self.link.source if self.link else "oscillator"

    @property
    def host_clock_mhz(self):
        """The host link's clock: the board oscillator, or the PLL's CLKOS output."""
        return float(self.link.clock_mhz) if self.link else self.board.oscillator_mhz

    @property
    def baud_actual(self):
        return self.host_clock_mhz * 1e6 / self.uart_divisor

    @property
    def bytes_per_second(self):
        """The link's payload rate: 8N1 is ten bit times a byte."""
        return self.baud_actual / 10

    @property
    def byte_timeout(self):
        """The protocol engine's inter-byte timeout in host cycles (5 ms)."""
        return self.link.byte_timeout if self.link else DEFAULT_BYTE_TIMEOUT

    def link_report(self, m=None, k=None, n=None):
        """Transfer vs compute of an ``m x k x n`` GEMM (default `LINK_GEMM`, 128x128x128) on
        this design at its clocks: see :func:`link_report`."""
        m, k, n = (m, k, n) if m is not None else LINK_GEMM
        c = self.config
        return link_report(m, k, n, rows=c.array.rows, cols=c.array.cols,
                           drain_lanes=c.array.drain_lanes, clock_mhz=self.clock_mhz,
                           baud=self.baud_actual, dataflow=c.array.dataflow)

    @property
    def estimate(self):
        return estimate_resources(self.config)

    @property
    def system_params(self):
        c = self.config
        return dict(rows=c.array.rows, cols=c.array.cols, dataflow=c.array.dataflow,
                    # Only with more than one lane, as the two below.
                    **({"drain_lanes": c.array.drain_lanes}
                       if c.array.drain_lanes != 1 else {}),
                    act_depth=c.buffers.act_depth, wgt_depth=c.buffers.wgt_depth,
                    param_depth=c.buffers.param_depth, out_depth=c.buffers.out_depth,
                    uart_divisor=self.uart_divisor,
                    # Only where it differs from the default: a design clocked as before has
                    # the same parameters (and simulation builds) as before.
                    **({"byte_timeout": self.byte_timeout}
                       if self.byte_timeout != DEFAULT_BYTE_TIMEOUT else {}),
                    # Likewise only with clock levels.
                    **({"clock_levels": len(self.clock_levels_mhz)}
                       if len(self.clock_levels_mhz) > 1 else {}))

    @property
    def digest(self):
        """Names the build folder: same config and generator version, same folder."""
        return content_hash({"config": self.config.as_dict(), "generator": __version__})

    def folder(self, root=None):
        return Path(root or RTL_OUT) / f"{self.config.name}-{self.digest}"

    def system(self):
        return HostSystem(**self.system_params)

    def top(self):
        # Settings with a CLKOS divider clock the host domain from CLKOS (see BoardTop).
        return BoardTop(self.system(), self.pll, uart_resource=self.board.uart_resource)

    def manifest(self):
        c = self.config
        pll = {"clki_div": self.pll.clki_div, "clkfb_div": self.pll.clkfb_div,
               "clkop_div": self.pll.clkop_div, "vco_mhz": round(self.pll.vco_mhz, 3)}
        if self.pll.clkos_div is not None:
            pll.update(clkos_div=self.pll.clkos_div, clkos_mhz=round(self.pll.clkos_mhz, 6))
        clock = {"requested_mhz": c.clock_mhz, "pll_mhz": round(self.clock_mhz, 6), "pll": pll}
        ports = {"clk": "in", "rst": "in", "host_clk": "in", "host_rst": "in",
                 "uart_rx": "in", "uart_tx": "out", "busy": "out", "error": "out"}
        if self.pll.clkos2_div is not None:
            # Only with levels: a design without them has the manifest it had before.
            pll.update(clkos2_div=self.pll.clkos2_div, clkos2_mhz=round(self.pll.clkos2_mhz, 6))
            clock["levels"] = [{"level": i, "mhz": round(mhz, 6), "output": output}
                               for i, (mhz, output) in enumerate(zip(self.clock_levels_mhz,
                                                                     ("CLKOP", "CLKOS2")))]
            clock["level_command"] = "LEVEL (gen/host/PROTOCOL.md)"
            ports.update(level="out", level_active="in")
        return {
            "generator": __version__,
            "design": c.name,
            "digest": self.digest,
            "board": self.board.name,
            "device": self.board.device,
            "clock": clock,
            "host": {"clock_mhz": round(self.host_clock_mhz, 6),
                     "clock_source": ("oscillator" if self.host_clock_source == "oscillator"
                                      else "pll_clkos"),
                     "baud_requested": c.host.baud, "baud_actual": round(self.baud_actual, 1),
                     "uart_divisor": self.uart_divisor,
                     "bytes_per_second": round(self.bytes_per_second, 1),
                     "protocol_version": PROTOCOL_VERSION,
                     "byte_timeout_cycles": self.byte_timeout,
                     "byte_timeout_ms": round(self.byte_timeout / self.host_clock_mhz / 1e3, 3),
                     "protocol": "gen/host/PROTOCOL.md"},
            "link_vs_compute": self.link_report(),
            "array": {"rows": c.array.rows, "cols": c.array.cols,
                      "dataflow": c.array.dataflow, "drain_lanes": c.array.drain_lanes},
            "buffers": {
                "act": {"depth": c.buffers.act_depth, "word_bits": 8 * c.array.rows},
                "wgt": {"depth": c.buffers.wgt_depth, "word_bits": 8 * c.array.cols},
                "param": {"depth": c.buffers.param_depth, "word_bytes": PARAM_WORD_BYTES},
                "out": {"depth": c.buffers.out_depth, "word_bits": 8},
            },
            "limits": {"max_dim": 2 ** DIM_WIDTH - 1,
                       "accumulator": "INT32; |acc| <= K*2^14 + |bias| is checked by the "
                                      "driver before every job"},
            "estimate": self.estimate.as_dict(),
            "expected_cycles": {
                f"{m}x{k}x{n}": engine_gemm_cycles(m, k, n, c.array.rows, c.array.cols,
                                                   c.array.drain_lanes,
                                                   dataflow=c.array.dataflow)
                for m, k, n in ((c.array.rows, 1, c.array.cols), (64, 64, 64),
                                (128, 128, 128))},
            "top_module": c.module_name,
            "ports": ports,
        }

    def generate(self, root=None, progress=print):
        """Write the Verilog, the exact config and the manifest; return the folder."""
        folder = self.folder(root)
        folder.mkdir(parents=True, exist_ok=True)
        top_module = self.config.module_name
        progress(f"[generate] {top_module}: {self.config.array.rows}x{self.config.array.cols} "
                 f"{self.config.array.dataflow} array -> {folder}")
        start = time.monotonic()
        write_atomic(folder / f"{top_module}.v", emit_verilog(self.system(), top_module))
        write_atomic(folder / "config.yaml", self.config.to_yaml())
        write_atomic(folder / "manifest.json", json.dumps(self.manifest(), indent=2) + "\n")
        progress(f"[generate] done in {time.monotonic() - start:.1f}s")
        return folder


def _baud_error(clock_mhz, divisor, baud):
    return abs(clock_mhz * 1e6 / divisor - baud) / baud


def usable_bauds(board, clock_mhz):
    """Every integer baud rate the link accepts: within the serial port's limit, at least
    ``MIN_DIVISOR`` clocks per bit, and within ``UART_TOLERANCE`` of what the clock divides to."""
    rates = []
    for divisor in range(MIN_DIVISOR, int(clock_mhz * 1e6 // 1200) + 1):
        baud = round(clock_mhz * 1e6 / divisor)
        if baud <= board.uart_max_baud and _baud_error(clock_mhz, divisor, baud) <= UART_TOLERANCE:
            rates.append(baud)
    return rates


def _nearest_bauds(board, clock_mhz, baud):
    rates = usable_bauds(board, clock_mhz)
    below = [r for r in rates if r <= baud]
    above = [r for r in rates if r > baud]
    near = [x for x in (max(below, default=None), min(above, default=None)) if x is not None]
    return " or ".join(str(r) for r in near)


def uart_divisor(baud, board, clock_mhz):
    """Host-clock cycles per UART bit for ``baud`` on ``board``, or one UserError line naming
    ``host.baud`` and the nearest rates that work."""
    if baud > board.uart_max_baud:
        raise UserError(f"host.baud: {baud} exceeds the {board.name} serial port's "
                        f"{board.uart_max_baud}; use {_nearest_bauds(board, clock_mhz, baud)}")
    divisor = round(clock_mhz * 1e6 / baud)
    if divisor < MIN_DIVISOR:
        raise UserError(f"host.baud: {baud} is too fast for a {clock_mhz:g} MHz clock (the "
                        f"UART needs at least {MIN_DIVISOR} clocks per bit); use "
                        f"{_nearest_bauds(board, clock_mhz, baud)}")
    error = _baud_error(clock_mhz, divisor, baud)
    if error > UART_TOLERANCE:
        raise UserError(f"host.baud: {baud} is {error:.1%} off what the {clock_mhz:g} MHz host "
                        f"clock can divide to; use {_nearest_bauds(board, clock_mhz, baud)}")
    return divisor


def _host_clocks(board, pll):
    """The host link's possible clocks: ``(source, exact MHz, PLL settings)``, the oscillator
    first, then every CLKOS output of a PLL that makes ``pll``'s accelerator clock exactly."""
    clocks = [("oscillator", Fraction(board.oscillator_mhz), pll)]
    clocks += [("pll", s.exact_clkos_mhz, s)
               for s in secondary_outputs(board.oscillator_mhz, pll)]
    return clocks


def _link_options(board, pll, baud, tolerance):
    for source, mhz, settings in _host_clocks(board, pll):
        hz = mhz * 10 ** 6
        divisor = round(hz / baud)
        if divisor < MIN_DIVISOR:
            continue
        error = abs(hz / divisor - baud) / baud
        if error <= tolerance:
            yield error, HostLink(source, mhz, divisor, baud, settings)


def _pll_preference(link):
    """Among PLL outputs equally good for the baud: at most `HOST_CLOCK_MAX_MHZ`, then at least
    `PREFERRED_DIVISOR` clocks a bit (or as near as can be), then the slowest clock."""
    return (link.clock_mhz > HOST_CLOCK_MAX_MHZ, max(0, PREFERRED_DIVISOR - link.divisor),
            link.clock_mhz)


def plan_host_link(board, pll, baud, *, tolerance=UART_TOLERANCE):
    """The host link's clock and divisor for ``baud``: the board oscillator where it divides
    to ``baud`` exactly; else a CLKOS output of the accelerator clock's PLL that does (the
    accelerator clock stays exactly what ``pll`` makes; the VCO may differ); else the
    oscillator within ``tolerance``; else the PLL output nearest ``baud`` within it.
    Anything else is one UserError line naming ``host.baud`` and the nearest usable rates."""
    if baud > board.uart_max_baud:
        raise UserError(f"host.baud: {baud} exceeds the {board.name} serial port's "
                        f"{board.uart_max_baud}; use {_nearest_link_bauds(board, pll, baud)}")
    options = list(_link_options(board, pll, baud, tolerance))
    oscillator = [(e, link) for e, link in options if link.source == "oscillator"]
    plls = [(e, link) for e, link in options if link.source == "pll"]
    if oscillator and oscillator[0][0] == 0:
        return oscillator[0][1]
    exact = [link for e, link in plls if e == 0]
    if exact:
        return min(exact, key=_pll_preference)
    if oscillator:
        return oscillator[0][1]
    if plls:
        return min(plls, key=lambda option: (option[0], _pll_preference(option[1])))[1]
    raise UserError(f"host.baud: {baud} is more than {tolerance * 100:g}% off every rate the "
                    f"{board.oscillator_mhz:g} MHz oscillator and the PLL outputs beside the "
                    f"{pll.output_mhz:g} MHz accelerator clock divide to; use "
                    f"{_nearest_link_bauds(board, pll, baud, tolerance)}")


def _nearest_link_bauds(board, pll, baud, tolerance=UART_TOLERANCE):
    """The usable rates just below and just above ``baud`` over all host clocks, as
    ``"A or B"``; each is one that :func:`plan_host_link` accepts."""
    low, high = SCHEMA["host"]["baud"][1:3]
    below, above = None, None
    for _, mhz, _ in _host_clocks(board, pll):
        hz = mhz * 10 ** 6
        fastest = max(MIN_DIVISOR, math.ceil(hz / board.uart_max_baud))
        for divisor in {math.floor(hz / baud), math.ceil(hz / baud), fastest}:
            divisor = max(divisor, fastest)
            rate = round(hz / divisor)
            if (rate > board.uart_max_baud or not low <= rate <= high or
                    abs(hz / divisor - rate) / rate > tolerance):
                continue
            if rate <= baud:
                below = rate if below is None else max(below, rate)
            else:
                above = rate if above is None else min(above, rate)
    return " or ".join(str(r) for r in (below, above) if r is not None)


def link_report(m, k, n, *, rows, cols, clock_mhz, baud, drain_lanes=1,
                dataflow="output_stationary"):
    """What an ``m x k x n`` GEMM spends on the host link vs the accelerator: the bytes the
    protocol moves (`gen.host.layout.gemm_link_bytes`: A, B, the parameters, C and the
    commands, both directions; the driver waits for each reply, so they add up) at ``baud``
    8N1, and `gen.cycles.engine_gemm_cycles` at ``clock_mhz``. USB latency is not counted."""
    moved = gemm_link_bytes(m, k, n, rows, cols, dataflow=dataflow)
    bytes_per_second = baud / 10
    cycles = engine_gemm_cycles(m, k, n, rows, cols, drain_lanes, dataflow=dataflow)
    transfer_s = moved["total"] / bytes_per_second
    compute_s = cycles / (clock_mhz * 1e6)
    return {
        "gemm": f"{m}x{k}x{n}",
        "bytes_per_second": round(bytes_per_second, 1),
        "bytes": moved,
        "transfer_ms": round(transfer_s * 1e3, 3),
        "compute_cycles": cycles,
        "compute_ms": round(compute_s * 1e3, 4),
        "transfer_to_compute": round(transfer_s / compute_s, 1),
    }


def _mhz(value):
    """A clock as `gen check` prints it: exact to 6 decimals, no trailing zeros."""
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def plan_clock_levels(pll, levels_mhz, where="clock_levels_mhz"):
    """``pll`` with a CLKOS2 divider making ``levels_mhz[1]``, on a VCO that keeps its CLKOP
    (``levels_mhz[0]``, which the config checks) and its CLKOS (the host link's clock)
    exactly: ``pll``'s own VCO where it makes the level (:func:`gen.hw.pll.level_settings`).
    A level no such output makes within `LEVEL_TOLERANCE_PPM` is one UserError line naming
    ``where`` and the nearest levels the PLL makes.

    `gen.runtime.model_device.check_levels` applies the same rule (VCO / n) to the model
    device's levels."""
    makeable = level_settings(pll.input_mhz, pll)
    mhz = levels_mhz[1]
    near = min(makeable, key=lambda level: abs(level - Fraction(mhz)))
    if abs(near - Fraction(mhz)) > Fraction(mhz) * Fraction(LEVEL_TOLERANCE_PPM) / 10 ** 6:
        below = max((x for x in makeable if x <= mhz), default=None)
        above = min((x for x in makeable if x > mhz), default=None)
        nearest = " or ".join(_mhz(x) for x in (below, above) if x is not None)
        host = (f" and the {_mhz(pll.clkos_mhz)} MHz host link clock"
                if pll.clkos_div is not None else "")
        raise UserError(f"{where}: the PLL cannot make {mhz:g} MHz beside the "
                        f"{pll.output_mhz:g} MHz accelerator clock{host} (an output divider "
                        f"of one VCO); the nearest levels it makes are {nearest} MHz")
    return makeable[near]


def clock_levels_line(design):
    """`gen check`'s line on clock levels: the design's, or the ones its PLL could add
    (CLKOS2 on a VCO that keeps the accelerator clock and the host link's clock)."""
    pll = design.pll
    if len(design.clock_levels_mhz) > 1:
        fast, slow = design.clock_levels_mhz
        return (f"  clock levels: 0 = {_mhz(fast)} MHz (CLKOP), 1 = {_mhz(slow)} MHz (CLKOS2 "
                f"= VCO {_mhz(pll.vco_mhz)} / {pll.clkos2_div}), glitch-free DCSC switch, "
                f"LEVEL command")
    levels = list(level_settings(pll.input_mhz, pll))
    shown = ", ".join(_mhz(x) for x in levels[:_LEVELS_SHOWN])
    more = f", ... {_mhz(levels[-1])}" if len(levels) > _LEVELS_SHOWN else ""
    return (f"  clock levels: none (clock_levels_mhz: [{_mhz(design.clock_mhz)}, <level>] "
            f"adds one); the PLL can add {shown}{more} MHz ({len(levels)} levels)")


def resolve_sizes(config, board=None, progress=print):
    """``config`` with its ``auto`` sizes chosen by the allocator (:mod:`gen.alloc`) for the
    network its ``allocator`` section names; a config without ``auto`` comes back as it is."""
    if not config.auto_fields:
        return config
    from .alloc.cli import size_auto_fields
    board = board or get_board(config.board)
    sizes = size_auto_fields(config, board, progress=progress)
    return config.with_sizes(sizes, source=config.source)


def prepare_design(config, progress=print):
    """Check ``config`` against its board (clocks, host link, resources) and plan the design;
    ``auto`` sizes are resolved first (:func:`resolve_sizes`), after the clock and the host
    link are checked, so that a config that cannot work fails before the search. A ViT config
    goes to :func:`gen.vit.design.prepare_vit_design`."""
    from .vit.config import ViTConfig
    if isinstance(config, ViTConfig):
        from .vit.design import prepare_vit_design
        return prepare_vit_design(config, progress=progress)
    try:
        board = get_board(config.board)
        # An alias (`ulx3s`) and the board's own name must give the same design and folder.
        config = dataclasses.replace(config, board=board.name)
        link = plan_host_link(board, plan_pll(board.oscillator_mhz, config.clock_mhz),
                              config.host.baud)
        pll = link.pll
        if config.clock_levels_mhz is not None:
            # Levels from the VCO the host link settled on, checked before any search.
            pll = plan_clock_levels(pll, config.clock_levels_mhz)
        config = resolve_sizes(config, board, progress=progress)
        if config.array.cols % config.array.drain_lanes:
            raise UserError(f"array.drain_lanes: {config.array.drain_lanes} does not divide "
                            f"the array's {config.array.cols} columns; use a power of two "
                            f"that does, at most {config.array.cols & -config.array.cols}")
        design = Design(config=config, board=board, pll=pll, uart_divisor=link.divisor,
                        link=link)
        check_fits(config, board, design.estimate)
    except UserError as exc:
        message = str(exc)
        if message.startswith(config.source):
            raise
        raise UserError(f"{config.source}: {message}") from None
    return design
