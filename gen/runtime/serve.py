"""The serving simulation behind ``python -m gen serve-sim`` (issue 11, point 5).

Requests arrive from a trace (Poisson at a rate, or a base rate with bursts); the device forms
batches from the queue, up to the controller's batch (it never waits for a batch to fill);
each request's latency is its arrival to its batch's completion; the power cap follows a trace
file (``time_s, cap_w`` rows, YAML or CSV, validated strictly). Every control period the
controller reads the device's report and chooses (level, batch) for the next.

Metrics per run (:func:`metrics`): served throughput and its ratio to the oracle's on the same
arrivals and caps; the fraction of time whose true mean power was above the cap and the worst
overshoot; the fraction of requests over the latency target (requests still queued at the end
count if they already waited longer); and per cap segment the periods until the setting stops
changing (probes before settling).
"""

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..schema import show

__all__ = ["RequestQueue", "CapTrace", "load_cap_trace", "parse_cap_points", "make_arrivals",
           "load_serve_config", "ServeConfig", "simulate", "metrics", "run_serve_sim",
           "format_table", "write_plots", "add_arguments", "run"]

#: Most points a cap trace may hold, and the longest time it may name.
MAX_CAP_POINTS = 100_000
MAX_TIME_S = 1e6
MAX_CAP_W = 1e5
MAX_BYTES = 1 << 20


# -- requests -----------------------------------------------------------------------------------
class RequestQueue:
    """Arrival times (sorted) and how many have been taken."""

    def __init__(self, arrivals):
        self.arrivals = np.asarray(arrivals, dtype=float)
        self.head = 0

    def take(self, now, limit):
        """Up to ``limit`` requests that arrived by ``now``: ``(count, arrival_times)``."""
        a, h = self.arrivals, self.head
        if h >= len(a) or a[h] > now:
            return 0, None
        last = min(h + limit, len(a))
        if a[last - 1] > now:
            last = int(np.searchsorted(a, now, side="right", sorter=None))
            last = min(last, h + limit)
        self.head = last
        return last - h, a[h:last]

    def next_arrival(self):
        return float(self.arrivals[self.head]) if self.head < len(self.arrivals) else None

    def waiting(self):
        return self.arrivals[self.head:]


def make_arrivals(spec, duration_s, seed):
    """Arrival times over ``[0, duration_s)`` for ``spec``: ``{kind: poisson, rate_rps}`` or
    ``{kind: bursts, rate_rps, burst_rps, burst_s, every_s}`` (bursts start at ``every_s``,
    ``2 every_s``, ...)."""
    rng = np.random.default_rng(seed)
    kind = spec["kind"]
    if kind == "poisson":
        pieces = [(0.0, duration_s, spec["rate_rps"])]
    else:
        pieces, t = [], 0.0
        while t < duration_s:
            start = min(t + spec["every_s"], duration_s)
            pieces.append((t, start, spec["rate_rps"]))
            stop = min(start + spec["burst_s"], duration_s)
            if stop > start:
                pieces.append((start, stop, spec["burst_rps"]))
            t = stop
    out = []
    for a, b, rate in pieces:
        if rate <= 0 or b <= a:
            continue
        n = rng.poisson(rate * (b - a))
        out.append(np.sort(rng.uniform(a, b, n)))
    return np.concatenate(out) if out else np.zeros(0)


# -- cap traces -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CapTrace:
    """A piecewise-constant power cap: ``caps_w[i]`` from ``times_s[i]`` on."""
    times_s: tuple
    caps_w: tuple
    source: str = "cap trace"

    def at(self, t):
        i = int(np.searchsorted(np.asarray(self.times_s), t, side="right")) - 1
        return self.caps_w[max(i, 0)]

    def check_device(self, device):
        """Refuse a cap the device cannot meet even idle at its lowest level."""
        idle = device.idle_power_w
        for i, cap in enumerate(self.caps_w):
            if cap < idle:
                raise UserError(f"{self.source}: point {i + 1}: cap {cap:g} W is below the "
                                f"design's idle power at its lowest level; the minimum cap is "
                                f"{idle:.4g} W")


def _number(value, where, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: {what} {show(value)} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{where}: {what} {show(value)} is not finite")
    return value


def parse_cap_points(points, source="cap trace"):
    """A :class:`CapTrace` from ``[(time_s, cap_w), ...]`` (or mappings with those keys),
    strictly: the first time is 0, times increase, caps are positive and finite."""
    if not isinstance(points, (list, tuple)) or not points:
        raise UserError(f"{source}: expected a non-empty list of (time_s, cap_w) points, got "
                        f"{show(points)}")
    if len(points) > MAX_CAP_POINTS:
        raise UserError(f"{source}: {len(points)} points; at most {MAX_CAP_POINTS}")
    times, caps = [], []
    for i, point in enumerate(points):
        where = f"{source}: point {i + 1}"
        if isinstance(point, dict):
            extra = set(point) - {"time_s", "cap_w"}
            if extra or len(point) != 2:
                raise UserError(f"{where}: expected keys time_s and cap_w, got "
                                f"{show(sorted(map(str, point)))}")
            t, cap = point["time_s"], point["cap_w"]
        elif isinstance(point, (list, tuple)) and len(point) == 2:
            t, cap = point
        else:
            raise UserError(f"{where}: expected time_s and cap_w, got {show(point)}")
        t, cap = _number(t, where, "time_s"), _number(cap, where, "cap_w")
        if not 0 <= t <= MAX_TIME_S:
            raise UserError(f"{where}: time_s {t:g} is outside [0, {MAX_TIME_S:g}]")
        if i == 0 and t != 0:
            raise UserError(f"{where}: the first time_s must be 0 (the cap from the start), "
                            f"not {t:g}")
        if times and t <= times[-1]:
            raise UserError(f"{where}: time_s {t:g} does not increase (previous {times[-1]:g})")
        if not 0 < cap <= MAX_CAP_W:
            raise UserError(f"{where}: cap_w {cap:g} must be above 0 and at most {MAX_CAP_W:g}")
        times.append(t)
        caps.append(cap)
    return CapTrace(tuple(times), tuple(caps), source)


def load_cap_trace(path):
    """A cap trace file: CSV with a ``time_s,cap_w`` header, or YAML: a list of
    ``{time_s, cap_w}`` mappings (or a mapping whose only key ``cap_trace`` holds that list)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        from ..yamlfile import read_yaml
        doc = read_yaml(path, "cap trace")
        if isinstance(doc, dict):
            if set(doc) != {"cap_trace"}:
                raise UserError(f"{path}: a YAML cap trace is a list of {{time_s, cap_w}} "
                                f"points or a mapping with only the key cap_trace")
            doc = doc["cap_trace"]
        return parse_cap_points(doc, str(path))
    if path.suffix.lower() != ".csv":
        raise UserError(f"{path}: a cap trace is a .csv or .yaml file")
    text = _read_text(path)
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""))
                if row and any(c.strip() for c in row)]
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable CSV file (a stray carriage return or quote "
                        f"inside a field?); write lines of time_s,cap_w") from None
    if not rows or [c.strip() for c in rows[0]] != ["time_s", "cap_w"]:
        raise UserError(f"{path}: the first line must be the header time_s,cap_w")
    points = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise UserError(f"{path}: line {n}: expected 2 fields (time_s,cap_w), got {len(row)}")
        try:
            points.append((float(row[0]), float(row[1])))
        except ValueError:
            raise UserError(f"{path}: line {n}: {show(','.join(row))} is not two numbers") \
                from None
    if not points:
        raise UserError(f"{path}: no points after the header")
    return parse_cap_points(points, str(path))


def _read_text(path):
    try:
        if not path.is_file():
            raise UserError(f"{path}: does not exist or is not a file")
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path}: larger than {MAX_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if b"\0" in data:
        raise UserError(f"{path}: holds binary data, not CSV text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: is not UTF-8 text (byte {exc.start})") from None


# -- the serve-sim config ------------------------------------------------------------------------
@dataclass
class ServeConfig:
    device: str = "model"
    design: str | None = None
    network: str = "digits_vit"
    levels_mhz: tuple | None = None
    duration_s: float = 30.0
    period_s: float = 0.1
    latency_target_ms: float = 20.0
    arrivals: dict = field(default_factory=lambda: {"kind": "poisson", "rate_rps": 4000.0})
    controllers: tuple = ("batchdvfs", "bobd", "freq_b1", "freq_bmax", "clipper", "oracle")
    seed: int = 0
    power: dict = field(default_factory=dict)
    gpu_max_batch: int = 64
    source: str = "serve config"


_TOP = {"device", "design", "network", "levels_mhz", "duration_s", "period_s",
        "latency_target_ms", "arrivals", "controllers", "seed", "power", "gpu_max_batch"}


def _positive(raw, key, where, low, high):
    value = _number(raw[key], f"{where}: {key}", "value")
    if not low <= value <= high:
        raise UserError(f"{where}: {key}: {value:g} is outside [{low:g}, {high:g}]")
    return value


def parse_serve_config(raw, source="serve config"):
    """A :class:`ServeConfig` from a mapping, every key checked."""
    from .controllers import CONTROLLERS
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of {', '.join(sorted(_TOP))}")
    unknown = [k for k in raw if k not in _TOP]
    if unknown:
        import difflib
        close = difflib.get_close_matches(str(unknown[0]), _TOP, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{source}: {show(unknown[0])}: unknown key{hint}; known: "
                        f"{', '.join(sorted(_TOP))}")
    c = ServeConfig(source=source)
    if "device" in raw:
        if raw["device"] not in ("model", "gpu"):
            raise UserError(f"{source}: device: {show(raw['device'])} must be model or gpu")
        c.device = raw["device"]
    for key in ("design", "network"):
        if key in raw and raw[key] is not None:
            if not isinstance(raw[key], str):
                raise UserError(f"{source}: {key}: expected a string, got {show(raw[key])}")
            setattr(c, key, raw[key])
    if c.design is not None and not Path(c.design).is_absolute():
        c.design = str((Path(source).parent / c.design)) if Path(source).exists() else c.design
    if raw.get("levels_mhz") is not None:
        if not isinstance(raw["levels_mhz"], list):
            raise UserError(f"{source}: levels_mhz: expected a list of MHz")
        c.levels_mhz = tuple(raw["levels_mhz"])
    if "duration_s" in raw:
        c.duration_s = _positive(raw, "duration_s", source, 0.01, 1e5)
    if "period_s" in raw:
        c.period_s = _positive(raw, "period_s", source, 1e-4, 60)
    if "latency_target_ms" in raw:
        c.latency_target_ms = _positive(raw, "latency_target_ms", source, 1e-3, 1e6)
    if c.period_s > c.duration_s:
        raise UserError(f"{source}: period_s {c.period_s:g} is longer than duration_s "
                        f"{c.duration_s:g}")
    if "arrivals" in raw:
        c.arrivals = _arrivals(raw["arrivals"], f"{source}: arrivals")
    if "controllers" in raw:
        names = raw["controllers"]
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) for n in names):
            raise UserError(f"{source}: controllers: expected a list of names "
                            f"({', '.join(CONTROLLERS)})")
        for name in names:
            if name not in CONTROLLERS:
                raise UserError(f"{source}: controllers: unknown {name!r}; known: "
                                f"{', '.join(CONTROLLERS)}")
        c.controllers = tuple(dict.fromkeys(names))
    if "seed" in raw:
        if isinstance(raw["seed"], bool) or not isinstance(raw["seed"], int) or \
                not 0 <= raw["seed"] < 2 ** 32:
            raise UserError(f"{source}: seed: {show(raw['seed'])} must be an integer "
                            f"0 .. 2^32-1")
        c.seed = raw["seed"]
    if "power" in raw:
        if not isinstance(raw["power"], dict):
            raise UserError(f"{source}: power: expected a mapping of power-model constants")
        c.power = dict(raw["power"])
    if "gpu_max_batch" in raw:
        c.gpu_max_batch = int(_positive(raw, "gpu_max_batch", source, 1, 255))
    return c


def _arrivals(raw, where):
    if not isinstance(raw, dict) or raw.get("kind") not in ("poisson", "bursts"):
        raise UserError(f"{where}: expected a mapping with kind: poisson or kind: bursts")
    keys = {"poisson": ("rate_rps",),
            "bursts": ("rate_rps", "burst_rps", "burst_s", "every_s")}[raw["kind"]]
    extra = set(raw) - set(keys) - {"kind"}
    if extra:
        raise UserError(f"{where}: unknown key {sorted(map(str, extra))[0]!r} for kind "
                        f"{raw['kind']}; it takes {', '.join(keys)}")
    out = {"kind": raw["kind"]}
    for key in keys:
        if key not in raw:
            raise UserError(f"{where}: {key}: missing")
        out[key] = _positive(raw, key, where, 0 if key.endswith("rps") else 1e-3, 1e7)
    return out


def load_serve_config(path):
    """The serve-sim config in ``path`` (None: the built-in example)."""
    from ..yamlfile import read_yaml
    path = Path(path) if path else EXAMPLES / "serve.yaml"
    return parse_serve_config(read_yaml(path, "serve-sim config"), str(path))


EXAMPLES = Path(__file__).resolve().parent / "examples"


def make_device(config, seed=None):
    """The device a config names."""
    seed = config.seed if seed is None else seed
    if config.device == "gpu":
        from .gpu_device import GpuDevice
        return GpuDevice(max_batch=config.gpu_max_batch)
    from .model_device import ModelDevice
    return ModelDevice(design=config.design, network=config.network,
                       levels_mhz=config.levels_mhz, power=config.power, seed=seed)


# -- the simulation ---------------------------------------------------------------------------------
@dataclass
class Run:
    """Per-period records of one controller on one trace."""
    controller: str
    t: np.ndarray
    seconds: np.ndarray
    cap: np.ndarray
    power: np.ndarray
    power_read: np.ndarray
    level_mhz: np.ndarray
    batch: np.ndarray
    throughput: np.ndarray
    served: int
    duration_s: float
    latencies_s: np.ndarray
    late_unserved: int
    segments: list
    extra: dict = field(default_factory=dict)


def simulate(device, controller, arrivals, cap_trace, *, duration_s, period_s,
             latency_target_s, progress=None):
    """Run ``controller`` on ``device`` over the arrivals and the cap trace; return a
    :class:`Run`."""
    queue = RequestQueue(arrivals)
    if hasattr(device, "reset_clock"):
        device.reset_clock(0.0)
    cap = cap_trace.at(0.0)
    level, batch = controller.start(device, cap, latency_target_s)
    rec = {k: [] for k in ("t", "seconds", "cap", "power", "power_read", "level_mhz", "batch",
                           "throughput")}
    latencies = []
    t = 0.0
    next_note = duration_s / 5
    wall = time.monotonic()
    segments, seg_start, seg_cap = [], 0, cap
    while t < duration_s - 1e-12:
        device.set_level(level)
        device.set_batch(batch)
        report = device.run_period(min(period_s, duration_s - t), queue)
        for key, value in (("t", report.start_s), ("seconds", report.seconds), ("cap", cap),
                           ("power", report.power_w), ("power_read", report.power_read_w),
                           ("level_mhz", device.levels[report.level]), ("batch", report.batch),
                           ("throughput", report.throughput_rps)):
            rec[key].append(value)
        if report.latencies_s.size:
            latencies.append(report.latencies_s)
        t = report.start_s + report.seconds
        new_cap = cap_trace.at(t)
        if new_cap != seg_cap:
            segments.append((seg_start, len(rec["t"])))
            seg_start, seg_cap = len(rec["t"]), new_cap
        cap = new_cap
        level, batch = controller.step(report, cap)
        if progress and t >= next_note:
            next_note += duration_s / 5
            progress(f"[serve] {controller.name}: t={t:.1f}/{duration_s:g} s, "
                     f"{device.levels[report.level]:g} MHz, batch {report.batch}, "
                     f"{report.power_w:.3f} W (cap {cap:g} W), "
                     f"{report.throughput_rps:.0f} req/s ({time.monotonic() - wall:.1f}s)")
    segments.append((seg_start, len(rec["t"])))
    waiting = queue.waiting()
    late = int((t - waiting[waiting < t] > latency_target_s).sum())
    lat = np.concatenate(latencies) if latencies else np.zeros(0)
    arrays = {k: np.asarray(v, dtype=float) for k, v in rec.items()}
    extra = {}
    if hasattr(controller, "probes_per_job"):
        extra["bobd_probes_per_job"] = list(controller.probes_per_job)
    return Run(controller=controller.name, served=int(lat.size), duration_s=t,
               latencies_s=lat, late_unserved=late, segments=segments, extra=extra, **arrays)


def _settling(run):
    """Per cap segment: periods until the setting stops changing, and whether it was still
    changing in the segment's last quarter (not settled)."""
    setting = list(zip(run.level_mhz, run.batch))
    probes, unsettled = [], 0
    for start, stop in run.segments:
        if stop <= start:
            continue
        first_final = start
        for i in range(start + 1, stop):
            if setting[i] != setting[i - 1]:
                first_final = i
        probes.append(first_final - start + 1)
        if stop - start >= 4 and first_final >= stop - (stop - start) // 4:
            unsettled += 1
    return probes, unsettled


def metrics(run, latency_target_s, oracle_throughput=None):
    """The point-7 numbers of one run (a dict)."""
    weights = run.seconds / run.seconds.sum()
    above = run.power > run.cap * (1 + 1e-12)
    over = np.maximum(run.power / run.cap - 1, 0)
    violations = int((run.latencies_s > latency_target_s).sum()) + run.late_unserved
    counted = run.served + run.late_unserved
    probes, unsettled = _settling(run)
    throughput = run.served / run.duration_s
    out = {
        "controller": run.controller,
        "throughput_rps": throughput,
        "vs_oracle": throughput / oracle_throughput if oracle_throughput else None,
        "above_cap_frac": float((weights * above).sum()),
        "worst_overshoot": float(over.max()) if over.size else 0.0,
        "latency_violation_frac": violations / counted if counted else 0.0,
        "p99_latency_ms": float(np.percentile(run.latencies_s, 99) * 1e3)
        if run.latencies_s.size else None,
        "probes_mean": float(np.mean(probes)) if probes else 0.0,
        "probes_max": int(max(probes)) if probes else 0,
        "segments": len(probes),
        "unsettled_segments": unsettled,
        "mean_power_w": float((weights * run.power).sum()),
    }
    out.update(run.extra)
    return out


def format_table(rows, title=None):
    """The point-7 table: one line per controller."""
    head = (f"{'controller':11s} {'req/s':>8s} {'vs oracle':>9s} {'>cap %':>7s} "
            f"{'worst over %':>12s} {'lat viol %':>10s} {'p99 ms':>8s} {'probes mean/max':>15s}"
            f" {'unsettled':>9s}")
    lines = ([title] if title else []) + [head]
    for r in rows:
        rel = f"{r['vs_oracle']:.3f}" if r["vs_oracle"] is not None else "-"
        p99 = f"{r['p99_latency_ms']:.1f}" if r["p99_latency_ms"] is not None else "-"
        lines.append(f"{r['controller']:11s} {r['throughput_rps']:8.0f} {rel:>9s} "
                     f"{100 * r['above_cap_frac']:7.2f} {100 * r['worst_overshoot']:12.2f} "
                     f"{100 * r['latency_violation_frac']:10.2f} {p99:>8s} "
                     f"{r['probes_mean']:9.1f}/{r['probes_max']:<5d} "
                     f"{r['unsettled_segments']:>4d}/{r['segments']:<4d}")
    return "\n".join(lines)


def run_serve_sim(config, cap_trace, *, progress=print, controllers=None):
    """Every controller of ``config`` on the same arrivals and caps: ``(runs, rows)``."""
    names = tuple(controllers or config.controllers)
    from .controllers import make_controller
    arrivals = make_arrivals(config.arrivals, config.duration_s, config.seed)
    probe = make_device(config)
    cap_trace.check_device(probe)
    if config.device == "gpu" and "oracle" in names:
        raise UserError("controller oracle needs the model device's (level, batch) table; "
                        "leave it out with device: gpu")
    target = config.latency_target_ms / 1e3
    runs = {}
    for name in names:
        device = probe if config.device == "gpu" else make_device(config)
        controller = make_controller(name, config.seed)
        runs[name] = simulate(device, controller, arrivals, cap_trace,
                              duration_s=config.duration_s, period_s=config.period_s,
                              latency_target_s=target, progress=progress)
    reference = runs["oracle"].served / runs["oracle"].duration_s if "oracle" in runs else None
    rows = [metrics(run, target, reference) for run in runs.values()]
    return runs, rows


def write_plots(runs, folder, title=""):
    """One PNG per controller (power and cap, batch, frequency, throughput over time) and
    ``all.png`` with every controller's power and throughput; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    folder = Path(folder)
    paths = []
    for name, run in runs.items():
        fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
        axes[0].plot(run.t, run.power, label="power (true)", lw=1)
        axes[0].plot(run.t, run.power_read, label="power read", lw=0.6, alpha=0.6)
        axes[0].step(run.t, run.cap, where="post", label="cap", color="k", lw=1.2)
        axes[0].set_ylabel("W")
        axes[0].legend(loc="lower left", fontsize=7)
        axes[1].step(run.t, run.batch, where="post")
        axes[1].set_ylabel("batch")
        axes[2].step(run.t, run.level_mhz, where="post")
        axes[2].set_ylabel("MHz")
        axes[3].plot(run.t, run.throughput, lw=1)
        axes[3].set_ylabel("req/s")
        axes[3].set_xlabel("time (s)")
        fig.suptitle(f"{name} {title} (WHAT-IF model device)" if title else name)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, run in runs.items():
        axes[0].plot(run.t, run.power, lw=0.8, label=name)
        axes[1].plot(run.t, run.throughput, lw=0.8, label=name)
    first = next(iter(runs.values()))
    axes[0].step(first.t, first.cap, where="post", color="k", lw=1.5, label="cap")
    axes[0].set_ylabel("W")
    axes[0].legend(fontsize=7, ncol=4)
    axes[1].set_ylabel("req/s")
    axes[1].set_xlabel("time (s)")
    fig.suptitle(f"all controllers {title}")
    fig.tight_layout()
    path = folder / "all.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
    return paths


# -- the command ------------------------------------------------------------------------------------
def add_arguments(parser):
    from .. import cliargs
    parser.add_argument("--config", help="serve-sim YAML (default: gen/runtime/examples/"
                                         "serve.yaml)")
    parser.add_argument("--cap-trace", help="power cap trace, CSV (time_s,cap_w) or YAML "
                                            "(default: gen/runtime/examples/cap_step.csv)")
    parser.add_argument("--controller", action="append",
                        help="run only this controller (repeatable)")
    parser.add_argument("--duration", type=cliargs.positive_float,
                        help="override duration_s")
    parser.add_argument("--seed", type=cliargs.seed, help="override the config's seed")
    parser.add_argument("--out", help="output folder (default: rtl_out/serve/<config>-<trace>)")


def run(args):
    from ..artifacts import check_writable_folder, write_atomic
    from ..design import RTL_OUT
    config = load_serve_config(args.config)
    if args.duration:
        config.duration_s = args.duration
    if args.seed is not None:
        config.seed = args.seed
    if config.period_s > config.duration_s:
        raise UserError(f"--duration {config.duration_s:g} is shorter than period_s "
                        f"{config.period_s:g}")
    trace_path = Path(args.cap_trace) if args.cap_trace else EXAMPLES / "cap_step.csv"
    trace = load_cap_trace(trace_path)
    if args.controller:
        from .controllers import CONTROLLERS
        for name in args.controller:
            if name not in CONTROLLERS:
                raise UserError(f"--controller: unknown {name!r}; known: "
                                f"{', '.join(CONTROLLERS)}")
    stem = f"{Path(config.source).stem}-{trace_path.stem}"
    folder = Path(args.out) if args.out else RTL_OUT / "serve" / stem
    check_writable_folder(folder, "--out")
    label = "WHAT-IF model device" if config.device == "model" else "GPU (NVML), batching only"
    print(f"[serve] {label}; arrivals {config.arrivals}, {config.duration_s:g} s, period "
          f"{config.period_s:g} s, latency target {config.latency_target_ms:g} ms, cap trace "
          f"{trace_path} ({len(trace.caps_w)} points)", flush=True)
    runs, rows = run_serve_sim(config, trace, controllers=args.controller,
                               progress=lambda m: print(m, flush=True))
    folder.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, f"summary ({label}; throughput vs the oracle on the same "
                               f"arrivals and caps)")
    print(table)
    write_atomic(folder / "summary.txt", table + "\n")
    write_atomic(folder / "summary.json", json.dumps(
        {"device": label, "config": config.source, "cap_trace": str(trace_path),
         "arrivals": config.arrivals, "duration_s": config.duration_s,
         "period_s": config.period_s, "latency_target_ms": config.latency_target_ms,
         "rows": rows}, indent=2, default=float) + "\n")
    paths = write_plots(runs, folder, f"{Path(config.source).stem} / {trace_path.stem}")
    print(f"[serve] wrote {folder / 'summary.json'}, {folder / 'summary.txt'} and "
          f"{len(paths)} plots in {folder}")
    return 0
