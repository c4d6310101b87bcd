"""From a checked config to a design: clocks, host link, hardware, generated files, build."""

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .artifacts import write_atomic
from .boards import get_board
from .config import DesignConfig
from .errors import UserError
from .estimate import check_fits, estimate_resources
from .hw.board_top import BoardTop
from .hw.gemm import DIM_WIDTH
from .hw.host_bridge import DEFAULT_BYTE_TIMEOUT, PARAM_WORD_BYTES, PROTOCOL_VERSION
from .hw.pll import plan_pll
from .hw.system import HostSystem
from .hw.uart import MIN_DIVISOR
from .cycles import gemm_cycles
from .rtl import content_hash, emit_verilog

__all__ = ["Design", "prepare_design", "resolve_sizes", "usable_bauds", "uart_divisor",
           "RTL_OUT", "UART_TOLERANCE"]

#: Where generated designs go: ``$ACCELGEN_RTL_OUT``, else ``rtl_out/`` in the working folder.
RTL_OUT = Path(os.environ.get("ACCELGEN_RTL_OUT", "rtl_out"))
#: Largest baud-rate error an 8N1 link tolerates with margin (half a bit over 10 bits is 5%).
UART_TOLERANCE = 0.02


@dataclass(frozen=True)
class Design:
    config: DesignConfig
    board: object
    pll: object
    uart_divisor: int

    @property
    def clock_mhz(self):
        return self.pll.output_mhz

    @property
    def host_clock_mhz(self):
        """The host link's clock: the board oscillator."""
        return self.board.oscillator_mhz

    @property
    def baud_actual(self):
        return self.host_clock_mhz * 1e6 / self.uart_divisor

    @property
    def estimate(self):
        return estimate_resources(self.config)

    @property
    def system_params(self):
        c = self.config
        return dict(rows=c.array.rows, cols=c.array.cols, dataflow=c.array.dataflow,
                    act_depth=c.buffers.act_depth, wgt_depth=c.buffers.wgt_depth,
                    param_depth=c.buffers.param_depth, out_depth=c.buffers.out_depth,
                    uart_divisor=self.uart_divisor)

    @property
    def digest(self):
        """Names the build folder: same config and generator version, same folder."""
        return content_hash({"config": self.config.as_dict(), "generator": __version__})

    def folder(self, root=None):
        return Path(root or RTL_OUT) / f"{self.config.name}-{self.digest}"

    def system(self):
        return HostSystem(**self.system_params)

    def top(self):
        return BoardTop(self.system(), self.pll, uart_resource=self.board.uart_resource)

    def manifest(self):
        c = self.config
        return {
            "generator": __version__,
            "design": c.name,
            "digest": self.digest,
            "board": self.board.name,
            "device": self.board.device,
            "clock": {"requested_mhz": c.clock_mhz, "pll_mhz": round(self.clock_mhz, 6),
                      "pll": {"clki_div": self.pll.clki_div, "clkfb_div": self.pll.clkfb_div,
                              "clkop_div": self.pll.clkop_div,
                              "vco_mhz": round(self.pll.vco_mhz, 3)}},
            "host": {"clock_mhz": self.host_clock_mhz,
                     "baud_requested": c.host.baud, "baud_actual": round(self.baud_actual, 1),
                     "uart_divisor": self.uart_divisor, "protocol_version": PROTOCOL_VERSION,
                     "byte_timeout_cycles": DEFAULT_BYTE_TIMEOUT,
                     "byte_timeout_ms": round(DEFAULT_BYTE_TIMEOUT / self.host_clock_mhz / 1e3,
                                              3),
                     "protocol": "gen/host/PROTOCOL.md"},
            "array": {"rows": c.array.rows, "cols": c.array.cols,
                      "dataflow": c.array.dataflow},
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
                f"{m}x{k}x{n}": gemm_cycles(m, k, n, c.array.rows, c.array.cols)
                for m, k, n in ((c.array.rows, 1, c.array.cols), (64, 64, 64),
                                (128, 128, 128))},
            "top_module": c.module_name,
            "ports": {"clk": "in", "rst": "in", "host_clk": "in", "host_rst": "in",
                      "uart_rx": "in", "uart_tx": "out",
                      "busy": "out", "error": "out"},
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


def _uart_divisor(config, board, clock_mhz):
    return uart_divisor(config.host.baud, board, clock_mhz)


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
        pll = plan_pll(board.oscillator_mhz, config.clock_mhz)
        divisor = _uart_divisor(config, board, board.oscillator_mhz)
        config = resolve_sizes(config, board, progress=progress)
        design = Design(config=config, board=board, pll=pll, uart_divisor=divisor)
        check_fits(config, board, design.estimate)
    except UserError as exc:
        message = str(exc)
        if message.startswith(config.source):
            raise
        raise UserError(f"{config.source}: {message}") from None
    return design
