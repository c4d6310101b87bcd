"""Design-space sweeps: ``python -m gen sweep --spec FILE``.

A sweep spec (YAML) names a grid: array shapes x clocks x nextpnr placement seeds, applied to a
base design config (the built-in default of ``gen build``, or one the spec names). Every point
of the grid is a real yosys -> nextpnr -> ecppack build, run in parallel on Ray: a local Ray
instance started by the command and sized to the machine, or an existing cluster
(``--address HOST:PORT``). Ray runs one build per CPU (``num_cpus=1`` a task).

Each result is written atomically to ``<out>/sweep/<spec name>/<key>.json`` as soon as its
build finishes, where ``<key>`` is ``<design name>-<design digest>-s<seed>``; a rerun skips
every point that has a result, so a sweep that was killed resumes where it stopped
(``--retry-failed`` rebuilds the points whose tools failed). A failing build is recorded with
its one-line error and the sweep goes on. When the grid is done the command writes, beside the
results: ``table.txt`` (also printed) and ``results.csv``, ``fmax.png`` (Fmax vs PEs, one
series per target clock), ``resources.png`` (resource use vs PEs) and ``frontier.yaml``, the
measured timing frontier (:mod:`gen.timing_frontier`); ``--frontier PATH`` writes it there too
(the committed file the allocator reads is :data:`gen.timing_frontier.DEFAULT_FRONTIER`).

Spec (every key is checked; an unknown one is refused naming it)::

    name: sweep-85f                 # names the results folder
    base: my-design.yaml            # optional: the design config swept (relative to the spec)
    board: ulx3s-85f                # optional: overrides the base config's board
    arrays: [4x4, 8x8, 8x16]        # ROWSxCOLS
    clocks_mhz: [100, 125]
    seeds: [1, 2]                   # nextpnr --seed
    frontier_rule: any_seed         # optional: any_seed (default) or all_seeds

Exit status: 0 when every point has a result (a design that misses timing is a result), 2 on
bad input (one line naming the file and field, flag or address), 5 when the tools failed on
some point (each is listed; the rest of the sweep still ran), 130 if interrupted (the results
written so far are kept: run the same command to resume).
"""

import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import cliargs
from .errors import UserError
from .schema import check_leaf, check_mapping, show

__all__ = ["SweepSpec", "Point", "load_spec", "parse_spec", "plan_points", "build_point",
           "run_serial", "RayExecutor", "run_sweep", "stored_result", "table_lines",
           "write_outputs", "add_arguments", "run", "SPEC_SCHEMA"]

EXIT_TOOL_FAILED = 5          # as gen.__main__
EXIT_INTERRUPTED = 130
#: Most entries of each list, and most points of a grid.
MAX_LIST = 64
MAX_POINTS = 4096
#: nextpnr's JSON netlist and text config are large and only feed the next tool: a finished
#: build of a sweep drops them (its logs, report and bitstream stay).
BULKY_FILES = ("top.json", "top.config", "top.il", "top.debug.v")

SPEC_SCHEMA = {
    "name": (str, None, None, "sweep name: letters, digits, '-' and '_' (names its folder)"),
    "base": (str, None, None, "design config file swept (relative to the spec's folder)"),
    "board": (str, None, None, "a board from `python -m gen boards` (overrides the base's)"),
    "arrays": (list, None, None, "array shapes as ROWSxCOLS, e.g. [4x4, 8x8, 8x16]"),
    "clocks_mhz": (list, None, None, "target clocks in MHz, e.g. [100, 125]"),
    "seeds": (list, None, None, "nextpnr placement seeds, e.g. [1, 2]"),
    "frontier_rule": (str, None, None, "any_seed or all_seeds (see gen/timing_frontier.py)"),
}
SPEC_OPTIONAL = ("base", "board", "frontier_rule")
_ARRAY = re.compile(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    source: str                  # the spec file, for messages
    base: Path | None            # None: the built-in default config
    board: str | None
    arrays: tuple                # ((rows, cols), ...)
    clocks_mhz: tuple
    seeds: tuple
    frontier_rule: str = "any_seed"

    @property
    def size(self):
        return len(self.arrays) * len(self.clocks_mhz) * len(self.seeds)


@dataclass(frozen=True)
class Point:
    rows: int
    cols: int
    clock_mhz: float
    seed: int
    design: str                  # the point's design (config) name
    digest: str
    board: str
    config: dict                 # the point's design config, as a mapping

    @property
    def key(self):
        return f"{self.design}-{self.digest}-s{self.seed}"

    @property
    def label(self):
        return f"{self.rows}x{self.cols} @ {self.clock_mhz:g} MHz seed {self.seed}"

    def describe(self):
        return {"key": self.key, "design": self.design, "digest": self.digest,
                "board": self.board, "rows": self.rows, "cols": self.cols,
                "pes": self.rows * self.cols, "clock_mhz": self.clock_mhz, "seed": self.seed}


# -- the spec ------------------------------------------------------------------------------

def _unique(values, field, show_value=str):
    seen = set()
    for i, value in enumerate(values):
        if value in seen:
            raise UserError(f"{field}[{i}]: {show_value(value)} is given twice; list it once")
        seen.add(value)


def _list(values, field):
    if not values:
        raise UserError(f"{field}: is empty; list at least one")
    if len(values) > MAX_LIST:
        raise UserError(f"{field}: {len(values)} entries is more than {MAX_LIST}; split the "
                        f"sweep")
    return values


def parse_spec(raw, *, source="sweep spec", folder=None):
    """Validate a sweep spec mapping; ``folder`` resolves a relative ``base``."""
    from .config import SCHEMA, check_name
    from .timing_frontier import RULES
    try:
        values = check_mapping(raw, SPEC_SCHEMA, "", optional=SPEC_OPTIONAL)
        check_name(values["name"], "name")
        arrays = []
        for i, text in enumerate(_list(values["arrays"], "arrays")):
            match = _ARRAY.fullmatch(text) if isinstance(text, str) else None
            if match is None:
                raise UserError(f"arrays[{i}]: {show(text)} is not ROWSxCOLS (e.g. 8x8)")
            rows = check_leaf(int(match[1]), SCHEMA["array"]["rows"], f"arrays[{i}] rows")
            cols = check_leaf(int(match[2]), SCHEMA["array"]["cols"], f"arrays[{i}] cols")
            arrays.append((rows, cols))
        _unique(arrays, "arrays", lambda a: f"{a[0]}x{a[1]}")
        clocks = [check_leaf(value, SCHEMA["clock_mhz"], f"clocks_mhz[{i}]")
                  for i, value in enumerate(_list(values["clocks_mhz"], "clocks_mhz"))]
        for i, value in enumerate(clocks):
            if not math.isfinite(value):
                raise UserError(f"clocks_mhz[{i}]: must be a finite number")
        _unique(clocks, "clocks_mhz", lambda c: f"{c:g}")
        seeds = [check_leaf(value, (int, 0, cliargs.MAX_SEED, "a nextpnr placement seed"),
                            f"seeds[{i}]")
                 for i, value in enumerate(_list(values["seeds"], "seeds"))]
        _unique(seeds, "seeds")
        rule = values["frontier_rule"] or "any_seed"
        if rule not in RULES:
            raise UserError(f"frontier_rule: {show(rule)} is not one of {', '.join(RULES)}")
        base = values["base"]
        if base is not None:
            if not base.strip() or "\0" in base:
                raise UserError(f"base: {show(base)} is not a file name")
            base = Path(base)
            if not base.is_absolute() and folder is not None:
                base = Path(folder) / base
        board = values["board"]
        if board is not None:
            from .boards import get_board
            try:
                board = get_board(board).name
            except UserError as exc:
                raise UserError(f"board: {exc}") from None
        spec = SweepSpec(name=values["name"], source=str(source), base=base, board=board,
                         arrays=tuple(arrays), clocks_mhz=tuple(clocks), seeds=tuple(seeds),
                         frontier_rule=rule)
        if spec.size > MAX_POINTS:
            raise UserError(f"arrays x clocks_mhz x seeds: {spec.size} points is more than "
                            f"{MAX_POINTS}; split the sweep")
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return spec


def load_spec(path):
    """Read and check the sweep spec in ``path``."""
    from .yamlfile import read_yaml
    path = Path(path)
    return parse_spec(read_yaml(path, "sweep spec"), source=str(path), folder=path.parent)


def _base_config(spec):
    from .config import DesignConfig, load_config
    try:
        base = load_config(spec.base, board=spec.board)
    except UserError as exc:
        raise UserError(f"{spec.source}: base: {exc}") from None
    if not isinstance(base, DesignConfig):
        raise UserError(f"{spec.source}: base: {spec.base} is a ViT design; a sweep varies the "
                        f"GEMM engine's array (a config with array.rows/cols)")
    return base


def plan_points(spec):
    """Every point of the grid, each checked like ``gen check`` (clock, host link, fit by
    estimate) before anything is built: a problem is one line naming the spec's fields."""
    from .config import AUTO, parse_config
    from .design import prepare_design
    base = _base_config(spec)
    raw = base.as_dict()
    raw.pop("allocator", None)
    for section, key in base.auto_fields:
        if section == "buffers":
            raise UserError(f"{spec.source}: base: {base.source}: {section}.{key} says "
                            f"{AUTO!r}; a sweep needs fixed buffer sizes")
    points = []
    for i, (rows, cols) in enumerate(spec.arrays):
        for j, clock in enumerate(spec.clocks_mhz):
            where = (f"{spec.source}: arrays[{i}] ({rows}x{cols}) at clocks_mhz[{j}] "
                     f"({clock:g} MHz)")
            point_raw = json.loads(json.dumps(raw))
            point_raw["name"] = f"{base.name[:40]}-{rows}x{cols}-{clock:g}mhz".replace(".", "p")
            point_raw["clock_mhz"] = clock
            point_raw["array"].update(rows=rows, cols=cols)
            config = parse_config(point_raw, source=where)
            design = prepare_design(config, progress=lambda line: None)
            for seed in spec.seeds:
                points.append(Point(rows=rows, cols=cols, clock_mhz=clock, seed=seed,
                                    design=config.name, digest=design.digest,
                                    board=design.board.name, config=config.as_dict()))
    return points


# -- one build (runs in a Ray worker) ------------------------------------------------------

def _one_line(text, limit=400):
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


def build_point(task):
    """Build one point (``task``: :meth:`Point.describe` plus ``config`` and ``root``, the folder
    its design is generated in) and return its result; a failure is a result too."""
    import shutil
    import flows.ecp5 as ecp5
    from flows.report import make_report
    from .artifacts import write_atomic
    from .config import parse_config
    from .design import prepare_design
    start = time.monotonic()
    result = {k: task[k] for k in ("key", "design", "digest", "board", "rows", "cols", "pes",
                                   "clock_mhz", "seed")}
    result["node"] = socket.gethostname()
    def quiet(line):                    # the driver shows progress
        pass
    try:
        design = prepare_design(parse_config(task["config"], source=task["design"]),
                                progress=quiet)
        # The design's config and manifest name what was built (`gen generate --config
        # <folder>/config.yaml` writes its Verilog); the flow elaborates the design itself.
        folder = design.folder(task["root"])
        write_atomic(folder / "config.yaml", design.config.to_yaml())
        write_atomic(folder / "manifest.json", json.dumps(design.manifest(), indent=2) + "\n")
        build_dir = folder / f"build-s{task['seed']}"
        shutil.rmtree(build_dir, ignore_errors=True)      # a killed earlier attempt
        flow = ecp5.run_flow(design.top(), design.board, build_dir, seed=task["seed"],
                             progress=quiet)
        report = make_report(design, flow)
        sync = report["fmax_by_domain"].get("sync")
        result.update(status="ok", timing_met=bool(flow.timing_met), fits=report["fits"],
                      fmax_mhz=sync["achieved_mhz"] if sync else None,
                      fmax=report["fmax"], fmax_by_domain=report["fmax_by_domain"],
                      resources=report["resources"], tool_seconds=report["seconds"],
                      build_dir=str(build_dir))
        for name in BULKY_FILES:
            (build_dir / name).unlink(missing_ok=True)
    except (ecp5.FlowError, UserError) as exc:
        result.update(status="failed", error=_one_line(exc))
    except Exception as exc:               # noqa: BLE001 - one point must not stop the sweep
        result.update(status="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
    result["seconds"] = round(time.monotonic() - start, 1)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return result


# -- executors: yield (task, result) as each build finishes --------------------------------

def run_serial(tasks):
    """In this process, one after the other (tests, and a machine without Ray)."""
    for task in tasks:
        yield task, build_point(task)


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_reachable(address, timeout=5.0):
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that takes a TCP connection, or a UserError."""
    if address == "auto":
        return
    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address: {show(address)} is not HOST:PORT (or ray://HOST:PORT, or "
                        f"auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"--address {address}: no Ray cluster answers there ({reason}); start "
                        f"one (`ray start --head`) or leave --address out for a local "
                        f"instance") from None


@contextlib.contextmanager
def _stderr_to_file():
    """Ray's C++ client writes its retries straight to file descriptor 2 while it connects;
    they go to a temporary file instead (the failure is reported in one line)."""
    import tempfile
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class RayExecutor:
    """Builds on Ray: ``with RayExecutor(...) as run: for task, result in run(tasks)``."""

    def __init__(self, address=None, cpus=None, progress=print, heartbeat_s=120.0):
        self.address, self.progress, self.heartbeat_s = address, progress, heartbeat_s
        self.cpus = cpus or _usable_cpus()
        self.ray = None

    def __enter__(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError as exc:
            raise UserError(f"sweep needs Ray: pip install ray ({exc})") from None
        options = dict(include_dashboard=False, log_to_driver=False,
                       logging_level="ERROR", configure_logging=True)
        try:
            where = self._connect(ray, options)
        except UserError:
            raise
        except Exception as exc:            # noqa: BLE001 - Ray's own errors, in one line
            what = f"--address {self.address}" if self.address else "a local Ray instance"
            hint = ("; a cluster started by `ray start --head` wants its token: "
                    "RAY_AUTH_MODE=token and ~/.ray/auth_token or RAY_AUTH_TOKEN"
                    if self.address else "")
            raise UserError(f"{what}: Ray could not start or connect: "
                            f"{_one_line(exc, 200)}{hint}") from None
        self.ray = ray
        self.progress(f"[sweep] building on {where}")
        return self.run

    def _connect(self, ray, options):
        if self.address is None:
            # Workers import gen from where this process did, installed or not.
            root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            os.environ["PYTHONPATH"] = path
            # Ray starts its workers at niceness 15: beside any other busy process (a test
            # run, a second build) the builds, the whole point of the sweep, would starve.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address="local", num_cpus=self.cpus,
                     object_store_memory=128 * 1024 * 1024, **options)
            return f"a local Ray instance ({self.cpus} CPUs)"
        _check_reachable(self.address)
        with _stderr_to_file():
            ray.init(address=self.address, **options)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        return f"the Ray cluster at {self.address} ({cpus} CPUs)"

    def __exit__(self, *exc):
        if self.ray is not None:
            self.ray.shutdown()
            self.ray = None
        return False

    def run(self, tasks):
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(build_point)
        refs = {remote.remote(task): task for task in tasks}
        pending, last = list(refs), time.monotonic()
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1,
                                         timeout=min(self.heartbeat_s, 30.0))
                if not done:
                    if time.monotonic() - last >= self.heartbeat_s:
                        last = time.monotonic()
                        self.progress(f"[sweep] {len(pending)} builds still running or queued")
                    continue
                last = time.monotonic()
                for ref in done:
                    task = refs[ref]
                    try:
                        result = ray.get(ref)
                    except Exception as exc:    # noqa: BLE001 - the worker died, say so
                        result = {k: task[k] for k in task if k not in ("config", "root")}
                        result.update(status="failed", seconds=None,
                                      error=_one_line(f"the Ray task failed: {exc}"))
                    yield task, result
        finally:
            # Interrupted: running builds get a KeyboardInterrupt, which stops their tools.
            for ref in pending:
                ray.cancel(ref)
            if pending:
                ray.wait(pending, num_returns=len(pending), timeout=10)


# -- the sweep ------------------------------------------------------------------------------

RESULT_KEYS = ("key", "rows", "cols", "clock_mhz", "seed", "status")


def sweep_folder(root, spec):
    from .design import RTL_OUT
    return Path(root or RTL_OUT) / "sweep" / spec.name


def stored_result(folder, point):
    """The result stored for ``point``, or None (missing, unreadable, or not this point's)."""
    from .artifacts import read_json
    result = read_json(Path(folder) / f"{point.key}.json")
    if result is None or any(k not in result for k in RESULT_KEYS):
        return None
    if result["key"] != point.key or result["status"] not in ("ok", "failed"):
        return None
    if result["status"] == "ok" and any(k not in result for k in ("timing_met", "fmax_mhz",
                                                                  "resources")):
        return None
    return result


def _describe_result(result):
    if result["status"] != "ok":
        return f"FAILED: {result.get('error', '?')}"
    verdict = "timing met" if result["timing_met"] else "timing missed"
    fmax = result.get("fmax_mhz")
    fmax = f"{fmax:.1f} MHz" if fmax is not None else "no Fmax"
    return f"Fmax {fmax}, {verdict} ({result.get('seconds') or 0:.0f} s)"


def run_sweep(spec, root=None, *, executor=None, progress=print, retry_failed=False,
              frontier_path=None):
    """Run the grid of ``spec`` (points with a stored result are skipped) and write the table,
    plots and frontier; returns the results in grid order. ``executor`` is a context manager
    whose value maps tasks to ``(task, result)`` pairs as they finish (default: Ray, local)."""
    from .artifacts import check_writable_folder, write_atomic
    folder = sweep_folder(root, spec)
    check_writable_folder(folder, "--out")
    points = plan_points(spec)
    results, todo = {}, []
    for point in points:
        result = stored_result(folder, point)
        if result is not None and not (retry_failed and result["status"] != "ok"):
            results[point.key] = result
        else:
            todo.append(point)
    progress(f"[sweep] {spec.name}: {len(points)} points ({len(spec.arrays)} arrays x "
             f"{len(spec.clocks_mhz)} clocks x {len(spec.seeds)} seeds); {len(results)} have "
             f"results in {folder}, {len(todo)} to build")
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        tasks = [dict(p.describe(), config=p.config, root=str((folder / "designs").resolve()))
                 for p in todo]
        start, done = time.monotonic(), 0
        with (executor if executor is not None else RayExecutor(progress=progress)) as execute:
            for task, result in execute(tasks):
                write_atomic(folder / f"{task['key']}.json", json.dumps(result, indent=2) + "\n")
                results[task["key"]] = result
                done += 1
                elapsed = time.monotonic() - start
                left = (len(todo) - done) * elapsed / done
                progress(f"[sweep] {len(results)}/{len(points)} {task['rows']}x{task['cols']} "
                         f"@ {task['clock_mhz']:g} MHz seed {task['seed']}: "
                         f"{_describe_result(result)}; {elapsed / 60:.1f} min elapsed"
                         + (f", about {left / 60:.0f} min left" if done < len(todo) else ""))
    ordered = [results[p.key] for p in points]
    write_outputs(spec, folder, ordered, frontier_path=frontier_path)
    return ordered


# -- table, plots, frontier -----------------------------------------------------------------

COLUMNS = ("array", "pes", "clock_mhz", "seed", "status", "fmax_mhz", "timing_met", "lut4",
           "ff", "mult18", "bram18k", "seconds")


def _row(result):
    resources = result.get("resources") or {}
    row = {"array": f"{result['rows']}x{result['cols']}", "pes": result["rows"] * result["cols"],
           "clock_mhz": result["clock_mhz"], "seed": result["seed"], "status": result["status"],
           "fmax_mhz": result.get("fmax_mhz"), "timing_met": result.get("timing_met"),
           "seconds": result.get("seconds")}
    for key in ("lut4", "ff", "mult18", "bram18k"):
        row[key] = resources.get(key, {}).get("used")
    return row


def table_lines(results):
    """The results as a fixed-width table (one line a build)."""
    def cell(value, fmt="{}"):
        return "-" if value is None else fmt.format(value)
    lines = [(f"{'array':>7s} {'PEs':>4s} {'clock':>6s} {'seed':>5s} {'Fmax':>7s} "
              f"{'timing':>7s} {'LUT4':>6s} {'FF':>6s} {'MULT18':>6s} {'BRAM18':>6s} "
              f"{'time':>6s}")]
    for result in results:
        r = _row(result)
        verdict = ("met" if r["timing_met"] else "missed") if r["status"] == "ok" else "FAILED"
        lines.append(f"{r['array']:>7s} {r['pes']:4d} {r['clock_mhz']:6g} {r['seed']:5d} "
                     f"{cell(r['fmax_mhz'], '{:.1f}'):>7s} {verdict:>7s} {cell(r['lut4']):>6s} "
                     f"{cell(r['ff']):>6s} {cell(r['mult18']):>6s} {cell(r['bram18k']):>6s} "
                     f"{cell(r['seconds'], '{:.0f}s'):>6s}")
    for result in results:
        if result["status"] != "ok":
            lines.append(f"  {result['rows']}x{result['cols']} @ {result['clock_mhz']:g} MHz "
                         f"seed {result['seed']}: {result.get('error', '?')}")
    return lines


def _csv(results):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS + ("error",))
    writer.writeheader()
    for result in results:
        writer.writerow(dict(_row(result), error=result.get("error", "")))
    return out.getvalue()


def plot_fmax(results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    clocks = sorted({r["clock_mhz"] for r in results})
    for n, clock in enumerate(clocks):
        color = f"C{n % 10}"
        ok = [r for r in results if r["clock_mhz"] == clock and r["status"] == "ok"
              and r.get("fmax_mhz") is not None]
        ax.axhline(clock, color=color, linestyle=":", linewidth=1)
        if not ok:
            continue
        ax.scatter([r["pes"] for r in ok], [r["fmax_mhz"] for r in ok], color=color,
                   marker="o", s=18, alpha=0.6)
        best = {}
        for r in ok:
            best[r["pes"]] = max(best.get(r["pes"], 0.0), r["fmax_mhz"])
        xs = sorted(best)
        ax.plot(xs, [best[x] for x in xs], color=color, label=f"target {clock:g} MHz (best seed)")
    ax.set_xlabel("PEs (rows x cols)")
    ax.set_ylabel("achieved Fmax of the accelerator clock (MHz)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_resources(results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ok = [r for r in results if r["status"] == "ok" and r.get("resources")]
    for n, key in enumerate(("lut4", "ff", "mult18", "bram18k")):
        by_pes = {}
        for r in ok:
            res = r["resources"].get(key)
            if res and res.get("available"):
                by_pes.setdefault(r["pes"], []).append(100 * res["used"] / res["available"])
        xs = sorted(by_pes)
        if xs:
            ax.plot(xs, [max(by_pes[x]) for x in xs], marker="o", color=f"C{n}", label=key)
    ax.axhline(100, color="red", linewidth=1)
    ax.set_xlabel("PEs (rows x cols)")
    ax.set_ylabel("% of the device used (most over seeds and clocks)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(spec, folder, results, *, frontier_path=None):
    """``table.txt``, ``results.csv``, ``fmax.png``, ``resources.png`` and ``frontier.yaml`` in
    ``folder`` (and the frontier at ``frontier_path`` too, when given)."""
    from .artifacts import write_atomic
    from .timing_frontier import compute_frontier, frontier_document, write_frontier
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "table.txt", "\n".join(table_lines(results)) + "\n")
    write_atomic(folder / "results.csv", _csv(results))
    boards = sorted({r["board"] for r in results})
    title = f"{spec.name} on {', '.join(boards)}"
    plot_fmax(results, folder / "fmax.png", title)
    plot_resources(results, folder / "resources.png", title)
    entries = compute_frontier(results, spec.frontier_rule)
    finished = sum(1 for r in results if r["status"] == "ok")
    written = []
    if entries:
        source = (f"python -m gen sweep --spec {spec.source}: {finished} of {len(results)} "
                  f"builds finished ({len(spec.arrays)} arrays x {len(spec.clocks_mhz)} clocks "
                  f"x {len(spec.seeds)} seeds), {time.strftime('%Y-%m-%d')}")
        document = frontier_document(entries, board=", ".join(boards), rule=spec.frontier_rule,
                                     source=source)
        written.append(write_frontier(folder / "frontier.yaml", document))
        if frontier_path is not None:
            written.append(write_frontier(frontier_path, document))
    return entries, written


# -- the command ----------------------------------------------------------------------------

def add_arguments(p):
    p.add_argument("--spec", required=True, help="sweep spec YAML (gen/configs/sweep-85f.yaml)")
    p.add_argument("--address", help="an existing Ray cluster, HOST:PORT or ray://HOST:PORT "
                                     "(default: start a local instance)")
    p.add_argument("--cpus", type=cliargs.count(1, 4096),
                   help="builds at once on the local instance (default: this machine's CPUs)")
    p.add_argument("--out", help="root of the results (default: rtl_out): <out>/sweep/<name>/")
    p.add_argument("--frontier", help="also write the measured frontier here (the committed "
                                      "one: gen/configs/sweep-85f-frontier.yaml)")
    p.add_argument("--retry-failed", action="store_true",
                   help="rebuild the points whose tools failed before")
    p.add_argument("--dry-run", action="store_true",
                   help="check the spec and list the points (and which have results); build "
                        "nothing")


def _log(message):
    print(message, flush=True)


def run(args):
    if args.address is not None and args.cpus is not None:
        raise UserError("--cpus: sizes a local instance; a cluster given with --address has "
                        "its own CPUs")
    if args.address is not None and not args.dry_run:
        _check_reachable(args.address)          # before anything: one line if nobody answers
    if args.frontier is not None:
        from .artifacts import check_writable_folder
        check_writable_folder(Path(args.frontier).parent, "--frontier")
        if Path(args.frontier).is_dir():
            raise UserError(f"--frontier: {args.frontier} is a folder; name the file to write")
    spec = load_spec(args.spec)
    folder = sweep_folder(args.out, spec)
    if args.dry_run:
        points = plan_points(spec)
        stored = 0
        _log(f"[sweep] {spec.name}: {len(points)} points ({len(spec.arrays)} arrays x "
             f"{len(spec.clocks_mhz)} clocks x {len(spec.seeds)} seeds), results in {folder}")
        for point in points:
            has = stored_result(folder, point) is not None
            stored += has
            _log(f"  {point.label:32s} {point.key}  {'stored' if has else 'to build'}")
        _log(f"[sweep] {stored} stored, {len(points) - stored} to build (dry run: nothing "
             f"built)")
        return 0
    executor = RayExecutor(address=args.address, cpus=args.cpus, progress=_log)
    try:
        results = run_sweep(spec, args.out, executor=executor, progress=_log,
                            retry_failed=args.retry_failed, frontier_path=args.frontier)
    except KeyboardInterrupt:
        stored = len(list(folder.glob("*.json")))
        print(f"error: interrupted; {stored} results are kept in {folder}: run the same "
              f"command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    for line in table_lines(results):
        _log(line)
    _log(f"[sweep] table, plots and frontier in {folder} (table.txt, results.csv, fmax.png, "
         f"resources.png, frontier.yaml)" + (f"; frontier also in {args.frontier}"
                                             if args.frontier else ""))
    if not any(r["status"] == "ok" and r["timing_met"] for r in results):
        _log("[sweep] no design met timing: no frontier was written")
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        _log(f"ERROR: the tools failed on {len(failed)} of {len(results)} points (listed "
             f"above; --retry-failed rebuilds them)")
        return EXIT_TOOL_FAILED
    return 0
