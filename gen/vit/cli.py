"""``python -m gen infer``: images through a ViT design, in Verilator or on a board, through
the same driver (:mod:`gen.host.vit_driver`)."""

import json
import re
import time
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["load_images", "load_model_for", "cmd_infer", "load_progress", "infer_progress"]

_DIGITS = re.compile(r"digits(?:-(train|val|test))?(?:\[(\d*):(\d*)\])?")


def load_images(spec, seed=0):
    """``(pixels int64 [n, 8, 8] in 0..16, labels or None)`` for ``spec``: ``digits[:N]`` or
    ``digits[A:B]`` (the held-out test split; ``digits-val``, ``digits-train`` for the others),
    or a ``.npy`` file of pixels."""
    match = _DIGITS.fullmatch(spec)
    if match:
        from .model import digits_pixels
        split = match.group(1) or "test"
        pixels, labels = digits_pixels(seed, split)
        pixels, labels = np.asarray(pixels), np.asarray(labels)
        lo = int(match.group(2)) if match.group(2) else 0
        hi = int(match.group(3)) if match.group(3) else len(pixels)
        if not 0 <= lo < hi <= len(pixels):
            raise UserError(f"--images {spec}: the {split} split has {len(pixels)} images; "
                            f"give a range inside 0..{len(pixels)}")
        return pixels[lo:hi].astype(np.int64), labels[lo:hi]
    path = Path(spec)
    if path.suffix != ".npy":
        raise UserError(f"--images {spec!r}: give digits[:N], digits[A:B] or a .npy file of "
                        f"[n, 8, 8] pixels 0..16")
    if not path.is_file():
        raise UserError(f"--images {spec}: no such file")
    try:
        pixels = np.load(path, allow_pickle=False)
    except Exception as exc:             # numpy raises several kinds for a damaged file
        raise UserError(f"--images {spec}: not a .npy array ({type(exc).__name__})") from None
    if pixels.ndim != 3 or pixels.shape[1:] != (8, 8) or not len(pixels):
        raise UserError(f"--images {spec}: shape {pixels.shape}; it must be [n, 8, 8]")
    if not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0 or pixels.max() > 16:
        raise UserError(f"--images {spec}: pixels must be integers 0..16")
    return pixels.astype(np.int64), None


def load_model_for(build, path=None, model=None):
    """The model to run on ``build``: its own, or the file ``path`` (or that file already
    loaded, ``model``), which must fit the generated design (same dims, no more weight words
    than the engines hold)."""
    if path is None:
        return build.model
    from ..hw.vit.layout import model_image
    from .model import IntViT
    if model is None:
        model = IntViT.load(path)
    try:
        model_image(build.vit, model.arrays())
    except UserError as exc:
        raise UserError(f"--model {path}: {exc}") from None
    return model


def load_progress(log, every=8192):
    """A driver ``load`` progress callback that logs every ``every`` beats and the last."""
    state = {"next": every}

    def progress(sent, total):
        if sent >= state["next"] or sent == total:
            log(f"[infer] model: {sent}/{total} load beats")
            state["next"] = sent + every
    return progress


def infer_progress(log, every=10):
    """A driver ``infer`` progress callback that logs every ``every`` images and the last."""
    def progress(done, total):
        if done == total or done % every == 0:
            log(f"[infer] {done}/{total} images")
    return progress


def _fmax(build, folder):
    """The clock to quote images/s at: the built Fmax when the build in ``folder`` is of
    today's Verilog, else the configured clock, saying why."""
    import tempfile
    from ..artifacts import build_fingerprint, read_json
    report = read_json(folder / "report.json")
    if not (report and report.get("fmax_by_domain", {}).get("sync")):
        return build.clock_mhz, "configured clock: no bitstream built yet"
    # The folder is named by config, model and generator version, not by the Verilog: a
    # report of an older generator's RTL must not lend today's design its Fmax.
    with tempfile.TemporaryDirectory() as tmp:
        current = build_fingerprint(build.generate(tmp, progress=lambda message: None))
    if report.get("fingerprint") != current:
        return build.clock_mhz, ("configured clock: the bitstream in the build folder is of "
                                 "an older generator's Verilog; python -m gen build rebuilds "
                                 "it")
    met = "timing met" if report.get("timing_met") else "timing FAILED"
    return report["fmax_by_domain"]["sync"]["achieved_mhz"], f"built Fmax, {met}"


def cmd_infer(args, log=print):
    from ..config import load_config
    from ..design import prepare_design
    config = load_config(args.config, board=getattr(args, "board", None))
    if getattr(config, "model", None) is None:
        raise UserError(f"{args.config}: not a ViT config (it has no vit section); use e.g. "
                        f"gen/configs/vit-digits.yaml")
    pixels, labels = load_images(args.images)      # a bad spec fails before any long work
    given = None
    if args.model:                                  # and so does an unreadable model file
        from .model import IntViT
        given = IntViT.load(args.model)
    build = prepare_design(config, progress=log)
    model = load_model_for(build, args.model, given)
    gold = model.forward(pixels)
    start = time.monotonic()
    if args.port:
        results = _on_board(build, model, pixels, args.port, log)
        cycles = None
    else:
        results, cycles = _in_verilator(build, args, log)
    classes = np.asarray(results["classes"])
    mismatches = int((classes != np.asarray(gold["classes"])).sum())
    lines = [f"[infer] {len(pixels)} images, {time.monotonic() - start:.0f}s: "
             f"{mismatches} classes differ from the integer golden model"]
    if labels is not None:
        lines.append(f"[infer] accuracy {100 * float((classes == labels).mean()):.1f}% "
                     f"(integer model {100 * float((gold['classes'].numpy() == labels).mean()):.1f}%)")
    if cycles:
        mhz, what = _fmax(build, build.folder(args.out))
        lines.append(f"[infer] {cycles / len(pixels):.0f} cycles an image (byte link), "
                     f"{mhz * 1e6 * len(pixels) / cycles:.0f} images/s at {mhz:.1f} MHz ({what})")
    for line in lines:
        log(line)
    out = Path(args.results) if args.results else build.folder(args.out) / "infer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "mismatches": mismatches,
                               "labels": None if labels is None else labels.tolist()}) + "\n")
    log(f"[infer] per-image classes in {out}")
    return 0 if mismatches == 0 else 1


def _in_verilator(build, args, log):
    import tempfile
    from verif.sim import run_cocotb
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        params = {"config": str(Path(args.config).resolve()), "images": args.images,
                  "model": str(Path(args.model).resolve()) if args.model else None,
                  "results": str(results)}
        folder = build.folder(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        build_log = folder / "verilator_build.log"
        log(f"[infer] building the Verilator model (minutes the first time; its log: "
            f"{build_log}) ...")
        run_cocotb(build.system(byte_link=True), build.config.module_name + "_sim",
                   "verif.vit_infer", params,
                   build_log=build_log)
        data = json.loads(results.read_text())
    return data, data.get("cycles")


def _on_board(build, model, pixels, port, log):
    import asyncio
    from ..host.transports import SerialTransport
    from ..host.vit_driver import ViTDriver
    from ..hw.vit.layout import model_image

    async def run():
        transport = SerialTransport(port, round(build.baud_actual))
        try:
            driver = ViTDriver(transport)
            await driver.info()
            await driver.load(model_image(build.vit, model.arrays()),
                              progress=load_progress(log))
            results = await driver.infer(list(pixels), progress=infer_progress(log))
            return {"classes": [int(c) for c, _ in results],
                    "logits": [[int(v) for v in lg] for _, lg in results]}
        finally:
            transport.close()
    return asyncio.run(run())


def add_arguments(p):
    p.add_argument("--config", default="gen/configs/vit-digits.yaml",
                   help="ViT design config (default: gen/configs/vit-digits.yaml)")
    p.add_argument("--board", help="override the config's board")
    p.add_argument("--out", help="folder of generated designs (default: rtl_out)")
    p.add_argument("--images", default="digits[:50]",
                   help="digits[:N] / digits[A:B] of the held-out split, or a .npy file "
                        "(default: digits[:50])")
    p.add_argument("--model", help="a model file (IntViT.save) to run instead of the design's")
    p.add_argument("--port", help="serial port of a board running the design; without it the "
                                  "design runs in Verilator")
    p.add_argument("--results", help="where to write the per-image classes (JSON; default: "
                                     "the design's folder, infer.json)")


def run(args):
    return cmd_infer(args, log=lambda message: print(message, flush=True))
