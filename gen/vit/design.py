"""From a checked ViT config to a design: the board, clocks and host link checked first, then
the model (trained, pruned and quantized from its seed, or loaded from the cache), the engines
sized for it, their resources checked against the board, and the generated files.

:class:`ViTBuild` has the interface ``gen build`` uses for a GEMM design (``config``,
``board``, ``pll``, ``digest``, ``folder``, ``generate``, ``top``, ``estimate``, ...).
"""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..artifacts import write_atomic
from ..boards import get_board
from ..errors import UserError
from ..rtl import content_hash, emit_verilog

__all__ = ["ViTBuild", "ViTEstimate", "prepare_vit_design", "MODEL_FILE"]

#: The model a design was generated for, next to its Verilog (``gen infer`` loads it).
MODEL_FILE = "model.npz"


@dataclass(frozen=True)
class ViTEstimate:
    """Resources counted from the generated structure (multipliers exactly, block RAMs by
    estimate); LUTs and flip-flops are not estimated for the ViT design (None)."""
    mult18: int
    bram18k: int
    lut4: object = None
    ff: object = None

    def as_dict(self):
        return dataclasses.asdict(self)


def _multipliers(vit, part):
    """Multipliers of one engine: the kernel's, the LayerNorm's and the residual adder's."""
    return vit.multipliers(part)


def _block_rams(vit, part):
    """DP16KD (18 Kbit) estimate of one engine's memories and the FIFO into it."""
    return vit.block_rams(part)


@dataclass(frozen=True)
class ViTBuild:
    config: object
    board: object
    pll: object
    uart_divisor: int
    model: object
    vit: object

    #: nextpnr's default router: after the Fmax pass it converged and routed better (router2
    #: reached 69.8 MHz where it reached 94.7); on the last RTL it has not converged yet in
    #: this project's tries (docs/vit.md section 5).
    nextpnr_router = None

    @property
    def clock_mhz(self):
        return self.pll.output_mhz

    @property
    def host_clock_mhz(self):
        return self.board.oscillator_mhz

    @property
    def baud_actual(self):
        return self.host_clock_mhz * 1e6 / self.uart_divisor

    @property
    def estimate(self):
        return ViTEstimate(mult18=self.vit.multipliers(), bram18k=self.vit.block_rams())

    @property
    def digest(self):
        return content_hash({"config": self.config.as_dict(), "generator": __version__,
                             "model": self.model.digest()})

    def folder(self, root=None):
        from ..design import RTL_OUT
        return Path(root or RTL_OUT) / f"{self.config.name}-{self.digest}"

    def system(self, *, byte_link=False):
        from ..hw.vit.host_system import ViTHostSystem
        return ViTHostSystem(self.vit, uart_divisor=self.uart_divisor, byte_link=byte_link)

    def top(self):
        from ..hw.board_top import BoardTop
        return BoardTop(self.system(), self.pll, uart_resource=self.board.uart_resource)

    def predicted_cycles(self):
        """The throughput model per image (docs/vit.md section 4): each engine's cycles and
        the pipeline's with two images in flight."""
        from ..hw.vit.layout import model_image
        image = model_image(self.vit, self.model.arrays())
        out = {}
        for part, eng in (("nsa", image.nsa), ("nmp", image.nmp)):
            g = self.vit.geometry(part)
            out[part] = sum(eng.entry_cycles(self.vit, tag, g) for tag in eng.entries)
        out["per_image"] = (max(out["nsa"], out["nmp"]) if self.vit.images_in_flight > 1
                            else out["nsa"] + out["nmp"])
        return out

    def link_bytes_per_image(self):
        """Bytes on the serial line per image: IMAGE (command, 64 pixels, reply) and RESULT
        (command, reply, class, logits)."""
        return (1 + 64 + 1) + (1 + 1 + 1 + self.vit.classes)

    def manifest(self):
        c, v = self.config, self.vit
        cycles = self.predicted_cycles()
        link = self.baud_actual / 10
        return {
            "generator": __version__, "design": c.name, "digest": self.digest,
            "kind": "vit", "board": self.board.name, "device": self.board.device,
            "clock": {"requested_mhz": c.clock_mhz, "pll_mhz": round(self.clock_mhz, 6)},
            "host": {"clock_mhz": self.host_clock_mhz, "baud_requested": c.baud,
                     "baud_actual": round(self.baud_actual, 1),
                     "uart_divisor": self.uart_divisor, "bytes_per_second": round(link),
                     "protocol": "gen/host/VIT_PROTOCOL.md"},
            "model": {"digest": self.model.digest(), "file": MODEL_FILE,
                      **dataclasses.asdict(c.model), "dims": dict(self.model.arrays()["dims"])},
            "engines": {part: {"lanes": v.geometry(part).lanes,
                               "multipliers": _multipliers(v, part),
                               "block_rams_estimate": _block_rams(v, part)}
                        for part in ("nsa", "nmp")},
            "images_in_flight": v.images_in_flight, "fifo_depth": v.fifo_depth,
            "estimate": self.estimate.as_dict(),
            "predicted": {
                "cycles_per_image": cycles,
                "images_per_second_compute": round(self.clock_mhz * 1e6 / cycles["per_image"], 1),
                "images_per_second_link": round(link / self.link_bytes_per_image(), 1),
                "note": "compute at the configured clock (the built Fmax is in report.json); "
                        "the link figure is the UART's bytes per second over the bytes an "
                        "image needs"},
            "top_module": c.module_name,
            "nextpnr_router": self.nextpnr_router,
        }

    def generate(self, root=None, progress=print):
        """Write the Verilog, the exact config, the model and the manifest; return the folder."""
        folder = self.folder(root)
        folder.mkdir(parents=True, exist_ok=True)
        top_module = self.config.module_name
        v = self.vit
        progress(f"[generate] {top_module}: NSA {v.geometry('nsa').lanes} lanes, NMP "
                 f"{v.geometry('nmp').lanes} lanes, {v.images_in_flight} images in flight -> "
                 f"{folder}")
        start = time.monotonic()
        write_atomic(folder / f"{top_module}.v", emit_verilog(self.system(), top_module))
        write_atomic(folder / "config.yaml", self.config.to_yaml())
        self.model.save(folder / MODEL_FILE)
        write_atomic(folder / "manifest.json", json.dumps(self.manifest(), indent=2) + "\n")
        progress(f"[generate] done in {time.monotonic() - start:.1f}s")
        return folder


def _check_fits(build):
    e, b = build.estimate, build.board.budget
    problems = []
    if e.mult18 > b.mult18:
        problems.append(f"mult18: needs {e.mult18}, {build.board.name} has {b.mult18}: use "
                        f"fewer vit.lanes / vit.nmp_lanes")
    if e.bram18k > b.bram18k:
        problems.append(f"bram18k: needs about {e.bram18k}, {build.board.name} has "
                        f"{b.bram18k}: prune more, or use a smaller vit.fifo_depth")
    if problems:
        raise UserError(f"design {build.config.name!r} does not fit {build.board.name}: " +
                        "; ".join(problems))


def prepare_vit_design(config, progress=print):
    """Check ``config`` against its board (clock, host link, the deadlock rule) before any
    long work, then make the model and size the engines for it, and check the resources."""
    from ..design import uart_divisor
    from ..hw.pll import plan_pll
    from ..hw.vit.layout import ViTDesign, fifo_depth_problem
    from ..sparse.vit import DIM, TOKENS
    try:
        board = get_board(config.board)
        config = dataclasses.replace(config, board=board.name)
        pll = plan_pll(board.oscillator_mhz, config.clock_mhz)
        divisor = uart_divisor(config.baud, board, board.oscillator_mhz)
        message = TOKENS * DIM
        problem = fifo_depth_problem(config.images_in_flight, config.fifo_depth or message,
                                     message)
        if problem:
            raise UserError(f"vit.fifo_depth: {problem}")
        from .model import prepared_int_vit
        m = config.model
        progress(f"[model] {m.activation} ViT, seed {m.seed}, "
                 f"{'pruned' if m.pruned else 'dense'}, {m.recipe} recipe")
        model = prepared_int_vit(seed=m.seed, activation=m.activation, pruned=m.pruned,
                                 quick=m.recipe == "quick", progress=progress)
        if config.lanes == "auto":
            config = _balanced(config, model.arrays(), board, progress)
        vit = ViTDesign.for_model(model.arrays(), config.lanes, config.nmp_lanes,
                                  images_in_flight=config.images_in_flight,
                                  fifo_depth=config.fifo_depth)
        build = ViTBuild(config=config, board=board, pll=pll, uart_divisor=divisor,
                         model=model, vit=vit)
        _check_fits(build)
    except UserError as exc:
        text = str(exc)
        if text.startswith(config.source):
            raise
        raise UserError(f"{config.source}: {text}") from None
    return build


def _balanced(config, arrays, board, progress):
    """``config`` with the lane pair of the balance search (gen.vit.balance): the fewest model
    cycles an image whose multipliers and estimated block RAMs fit ``board``."""
    from .balance import balance
    found = balance(arrays, budget=board.budget.mult18, bram_budget=board.budget.bram18k,
                    images_in_flight=config.images_in_flight).best
    progress(f"[balance] lanes NSA {found.nsa_lanes}, NMP {found.nmp_lanes}: {found.cycles} "
             f"model cycles an image, {found.multipliers} multipliers")
    return dataclasses.replace(config, lanes=found.nsa_lanes, nmp_lanes=found.nmp_lanes)
