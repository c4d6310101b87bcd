"""Allocation problems: a workload, a cost model and a budget turned into a search problem.

This is the only place where hardware meets the search: each problem is an
:class:`gen.alloc.search.ActionSpace` plus vectorized objective and constraint callables built
from :mod:`gen.cost`. Replace the cost model and the search does not change.

Deployments (ConfuciuX, MICRO 2020)
-----------------------------------
``sequential`` (layer-sequential)
    One engine runs every layer in turn; the actions are the engine's parameters (array rows,
    array columns, buffer depths). This is what ``gen build`` generates.
``pipelined`` (layer-pipelined)
    One engine per layer, all running at once on a stream of inputs; per layer two actions, an
    array shape level and a buffer level. Throughput is set by the slowest stage.

Objectives (lower is better): ``latency`` (seconds per inference: the sum of the stages),
``energy`` (joules), ``edp`` (energy x latency), ``throughput`` (seconds per inference in steady
state: the sequential latency, or the slowest pipeline stage).
Constraint: the budget's multipliers, block RAMs and LUT4 (violation = the worst relative
excess), every layer must fit its engine (a reduction longer than the buffers is infeasible for
the generated engine), the array must be one that closed timing at the clock
(:data:`MAX_PES_BY_CLOCK`), and an optional power cap.

Functions: :func:`sequential_problem`, :func:`pipelined_problem`; both return an
:class:`AllocationProblem` whose ``.problem`` is what :func:`gen.alloc.search.search` takes and
whose ``.decode(actions)`` says what the actions mean.
"""

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import cost
from ..boards import Resources
from ..errors import UserError
from ..hw.requant import REQUANT_MULTIPLIERS
from .search import ActionSpace, Problem

__all__ = ["OBJECTIVES", "DEPLOYMENTS", "AllocationProblem", "sequential_problem",
           "pipelined_problem", "ARRAY_DIMS", "DEPTH_LEVELS", "PIPELINE_SHAPES",
           "PIPELINE_BUFFER_BYTES", "MAX_PES_BY_CLOCK"]

OBJECTIVES = ("latency", "energy", "edp", "throughput")
DEPLOYMENTS = ("sequential", "pipelined")

#: Array rows / columns the sequential search may choose.
ARRAY_DIMS = tuple(range(1, 17))
#: Buffer depths (words) the sequential search may choose, for act/wgt and output buffers.
DEPTH_LEVELS = (256, 512, 1024, 2048, 4096, 8192, 16384)
OUT_DEPTH_LEVELS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
#: Largest arrays that closed timing on the ULX3S-85F at a clock (MHz -> PEs), measured with
#: `gen build`: 8x8 at 125 MHz (125.6 MHz), 8x16 at 100 MHz (106.5 MHz; 95.3 MHz at 125).
MAX_PES_BY_CLOCK = ((100.0, 128), (125.0, 64))
#: Layer-pipelined levels: per-layer array shapes and on-chip buffer sizes.
PIPELINE_SHAPES = ((1, 1), (1, 2), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16),
                   (16, 32), (32, 32), (32, 64))
PIPELINE_BUFFER_BYTES = tuple(2 ** i for i in range(10, 22))   # 1 KiB .. 2 MiB
TIE_BREAK = 1e-4
BRAM_BYTES = 2048          # one DP16KD as 2048 x 9 holds 2048 INT8 values


def max_pes_at(clock_mhz):
    """Largest array (PEs) known to close timing at ``clock_mhz``.

    Above the highest measured point nothing is known to close timing, so the search refuses
    the clock instead of dropping the constraint.
    """
    for mhz, pes in MAX_PES_BY_CLOCK:
        if clock_mhz <= mhz:
            return pes
    highest = MAX_PES_BY_CLOCK[-1][0]
    raise UserError(f"clock_mhz: {clock_mhz:g} MHz is above the highest clock with a measured "
                    f"timing point ({highest:g} MHz, {MAX_PES_BY_CLOCK[-1][1]} PEs), so the "
                    f"allocator cannot say what closes timing there; size at {highest:g} MHz "
                    f"or below")


@dataclass
class AllocationProblem:
    """A search problem plus what its actions mean.

    Members
    -------
    problem : gen.alloc.search.Problem
    decode : callable(actions row) -> dict
        The engine(s) an action row stands for.
    evaluate : callable(actions (P, n)) -> dict of arrays
        Latency, energy, resources and feasibility of each row, for reports.
    """
    problem: Problem
    decode: Callable
    evaluate: Callable
    deployment: str
    objective: str
    budget: Resources
    info: dict = field(default_factory=dict)


def _check(objective, dataflow):
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    cost.check_dataflow(dataflow)


def _score(objective, latency_s, energy_j, period_s):
    if objective == "latency":
        return latency_s
    if objective == "energy":
        return energy_j
    if objective == "edp":
        return energy_j * latency_s
    return period_s


def _violation(used, budget, power_mw=None, power_cap_mw=None):
    """Worst relative excess over the budget (<= 0: fits)."""
    worst = None
    for key in ("mult18", "bram18k", "lut4"):
        available = max(getattr(budget, key), 1)
        excess = (used[key] - available) / available
        worst = excess if worst is None else np.maximum(worst, excess)
    if power_cap_mw is not None:
        worst = np.maximum(worst, (power_mw - power_cap_mw) / power_cap_mw)
    return worst


def sequential_problem(workload, budget, *, dataflow="accelgen_os", objective="latency",
                       clock_mhz=100.0, power_cap_mw=None, param_depth=None, fixed=None,
                       host_baud=1_000_000):
    """One engine for all layers: actions rows, cols, act_depth, wgt_depth, out_depth.

    ``fixed`` maps config paths (``array.rows``, ``buffers.act_depth``, ...) to values the
    search must keep (a config that sizes some fields itself). Latency includes the host
    transfers over the design's real link, the UART at ``host_baud``; ``whatif_sdram_latency_s``
    is the same with a 2 B/cycle memory the design does not have.
    """
    _check(objective, dataflow)
    if dataflow != "accelgen_os":
        raise UserError("the sequential deployment sizes the generated engine: use "
                        "--dataflow accelgen_os (the classic dataflows are compared in the "
                        "pipelined deployment)")
    layers = workload.as_arrays()
    if param_depth is None:
        param_depth = int(min(4096, max(16, 1 << int(np.max(layers["N"]) - 1).bit_length())))
    fixed = dict(fixed or {})
    if "buffers.param_depth" in fixed:
        param_depth = fixed.pop("buffers.param_depth")
    names = ("array.rows", "array.cols", "buffers.act_depth", "buffers.wgt_depth",
             "buffers.out_depth")
    unknown = set(fixed) - set(names)
    if unknown:
        raise UserError(f"cannot fix {', '.join(sorted(unknown))}; fixable: {', '.join(names)}")
    levels = [np.array([fixed[name]]) if name in fixed else np.array(default)
              for name, default in zip(names, (ARRAY_DIMS, ARRAY_DIMS, DEPTH_LEVELS,
                                               DEPTH_LEVELS, OUT_DEPTH_LEVELS))]
    space = ActionSpace(choices=tuple(len(x) for x in levels), names=names)
    max_pes = max_pes_at(clock_mhz)
    link = cost.uart_bytes_per_cycle(host_baud, clock_mhz)

    def engine_of(actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(-1, 5)
        engine = {key: levels[i][actions[:, i]][:, None] for i, key in
                  enumerate(("rows", "cols", "act_depth", "wgt_depth", "out_depth"))}
        engine["param_depth"] = np.full((len(actions), 1), param_depth)
        return engine

    def evaluate(actions):
        engine = engine_of(actions)
        per_layer = cost.layer_cost(layers, engine, dataflow, clock_mhz=clock_mhz,
                                    link_bytes_per_cycle=link)
        cycles = per_layer["cycles"].sum(axis=1)
        latency = cycles / (clock_mhz * 1e6)
        compute = per_layer["compute_cycles"].sum(axis=1)
        sdram = np.ceil(per_layer["traffic_bytes"] / cost.SDRAM_BYTES_PER_CYCLE).sum(axis=1)
        energy = per_layer["energy_pj"].sum(axis=1) * 1e-12
        used = {k: v[:, 0] for k, v in cost.engine_resources(**engine).items()}
        power = cost.STATIC_MW + energy / np.maximum(latency, 1e-30) * 1e3
        infeasible_layers = (~per_layer["feasible"]).sum(axis=1)
        pes = engine["rows"][:, 0] * engine["cols"][:, 0]
        return {"latency_s": latency, "energy_j": energy, "power_mw": power,
                "period_s": latency, "cycles": cycles, "infeasible_layers": infeasible_layers,
                "compute_s": compute / (clock_mhz * 1e6),
                "transfer_s": (cycles - compute) / (clock_mhz * 1e6),
                "traffic_bytes": per_layer["traffic_bytes"].sum(axis=1),
                "whatif_sdram_latency_s": (compute + sdram) / (clock_mhz * 1e6),
                "pes": pes, **used}

    def objective_fn(actions):
        r = evaluate(actions)
        # Among equally fast engines prefer the smaller one: a tie-break of at most 0.01%.
        share = (r["mult18"] / max(budget.mult18, 1) + r["bram18k"] / max(budget.bram18k, 1)) / 2
        return _score(objective, r["latency_s"], r["energy_j"], r["period_s"]) * (
            1 + TIE_BREAK * np.minimum(share, 1))

    def constraint_fn(actions):
        r = evaluate(actions)
        worst = _violation(r, budget, r["power_mw"], power_cap_mw)
        # A layer that does not fit the buffers, or an array that would miss timing.
        worst = np.where(r["infeasible_layers"] > 0,
                         np.maximum(worst, r["infeasible_layers"] / len(layers["M"])), worst)
        if max_pes is not None:
            worst = np.maximum(worst, (r["pes"] - max_pes) / max_pes)
        return worst

    def decode(row):
        engine = {k: int(v[0, 0]) for k, v in engine_of(row).items()}
        return {"array": {"rows": engine["rows"], "cols": engine["cols"],
                          "dataflow": "output_stationary"},
                "buffers": {"act_depth": engine["act_depth"], "wgt_depth": engine["wgt_depth"],
                            "param_depth": engine["param_depth"],
                            "out_depth": engine["out_depth"]}}

    return AllocationProblem(Problem(space, objective_fn, constraint_fn), decode, evaluate,
                             "sequential", objective, budget,
                             {"clock_mhz": clock_mhz, "max_pes": max_pes,
                              "param_depth": param_depth, "dataflow": dataflow,
                              "host_link": f"UART {host_baud} baud "
                                           f"({cost.uart_bytes_per_second(host_baud):.0f} B/s)"})


def _layer_features(layers):
    """Per-layer observation for the policy: log sizes of the GEMM view and the MACs."""
    feats = np.stack([np.log2(np.maximum(layers[k], 1)) for k in ("M", "K", "N", "count")] +
                     [np.log2(np.maximum(layers["M"] * layers["K"] * layers["N"] *
                                         layers["count"], 1))], axis=1).astype(np.float64)
    feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-9)
    return feats


def pipelined_problem(workload, budget, *, dataflow="ws", objective="throughput",
                      clock_mhz=100.0, power_cap_mw=None):
    """One engine per layer: per layer an array-shape level and a buffer level."""
    _check(objective, dataflow)
    layers = workload.as_arrays()
    n_layers = len(layers["M"])
    shapes = np.array(PIPELINE_SHAPES)
    buffers = np.array(PIPELINE_BUFFER_BYTES)
    feats = _layer_features(layers)
    step_features = np.concatenate([
        np.repeat(feats, 2, axis=0),
        np.tile(np.array([[1.0, 0.0], [0.0, 1.0]]), (n_layers, 1))], axis=1)
    names = tuple(f"{i}.{what}" for i in range(n_layers) for what in ("pes", "buffer"))
    space = ActionSpace(choices=(len(shapes), len(buffers)) * n_layers, names=names,
                        features=step_features)

    def engines_of(actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(-1, 2 * n_layers)
        shape = shapes[actions[:, 0::2]]
        engine = {"rows": shape[..., 0], "cols": shape[..., 1],
                  "buffer_bytes": buffers[actions[:, 1::2]]}
        if dataflow == "accelgen_os":
            # The generated engine's buffers: the capacity split evenly in act/wgt/out words.
            words = engine["buffer_bytes"] // 3
            engine.update(act_depth=np.maximum(words // engine["rows"], 16),
                          wgt_depth=np.maximum(words // engine["cols"], 16),
                          param_depth=np.full_like(words, 4096), out_depth=words)
        return engine

    def evaluate(actions):
        engine = engines_of(actions)
        per_layer = cost.layer_cost(layers, engine, dataflow, clock_mhz=clock_mhz)
        stage_s = per_layer["cycles"] / (clock_mhz * 1e6)
        latency = stage_s.sum(axis=1)
        period = stage_s.max(axis=1)
        energy = per_layer["energy_pj"].sum(axis=1) * 1e-12
        pes = engine["rows"] * engine["cols"]
        mult = pes.sum(axis=1)
        if dataflow == "accelgen_os":
            mult = mult + REQUANT_MULTIPLIERS * n_layers
        bram = np.ceil(engine["buffer_bytes"] / BRAM_BYTES).astype(np.int64).sum(axis=1)
        # One system base (host link, control) plus each engine's array-dependent logic.
        base = cost.estimate.LUT_BASE
        lut = (cost.estimate.logic_estimate(engine["rows"], engine["cols"])[0] - base).sum(
            axis=1) + base
        power = cost.STATIC_MW + energy / np.maximum(period, 1e-30) * 1e3
        infeasible_layers = (~per_layer["feasible"]).sum(axis=1)
        return {"latency_s": latency, "energy_j": energy, "period_s": period,
                "power_mw": power, "mult18": mult, "bram18k": bram, "lut4": lut,
                "infeasible_layers": infeasible_layers, "stage_s": stage_s}

    def objective_fn(actions):
        r = evaluate(actions)
        return _score(objective, r["latency_s"], r["energy_j"], r["period_s"])

    def constraint_fn(actions):
        r = evaluate(actions)
        worst = _violation(r, budget, r["power_mw"], power_cap_mw)
        return np.where(r["infeasible_layers"] > 0,
                        np.maximum(worst, r["infeasible_layers"] / n_layers), worst)

    def decode(row):
        engine = engines_of(row)
        return {"layers": [{"name": op.name, "rows": int(engine["rows"][0, i]),
                            "cols": int(engine["cols"][0, i]),
                            "buffer_bytes": int(engine["buffer_bytes"][0, i])}
                           for i, op in enumerate(workload.ops)]}

    return AllocationProblem(Problem(space, objective_fn, constraint_fn), decode, evaluate,
                             "pipelined", objective, budget,
                             {"clock_mhz": clock_mhz, "dataflow": dataflow,
                              "host_link": "what-if: a 2 B/cycle memory (the generated design "
                                           "has none)"})


def smallest_budget(allocation):
    """The least resources any action of the space needs (per resource, each minimized on
    its own): what an over-tight budget must at least grant."""
    space = allocation.problem.space
    lowest = np.zeros((1, space.n_steps), dtype=np.int64)
    r = allocation.evaluate(lowest)
    return {key: int(np.asarray(r[key]).reshape(-1)[0]) for key in ("mult18", "bram18k", "lut4")}
