"""``python -m gen alloc``: size the engine for a network on a board, write a design config.

Also chooses the `auto` sizes of a design config for the design stage (:func:`size_auto_fields`,
called by :func:`gen.design.resolve_sizes`).
"""

import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from .. import cliargs
from ..artifacts import check_writable_folder
from ..config import AUTO_FIELDS
from ..errors import UserError
from .problems import (DEPLOYMENTS, GENERATED, OBJECTIVES, max_pes_at, pipelined_problem,
                       sequential_problem)
from .search import METHODS, search

__all__ = ["add_arguments", "run", "allocate", "size_auto_fields"]

DEFAULT_EVALUATIONS = 3000


def add_arguments(parser):
    parser.add_argument("--network", default="default",
                        help="workload name (`python -m gen workloads --list`)")
    parser.add_argument("--board", default="ulx3s", help="board whose budget bounds the search")
    parser.add_argument("--deployment", default="sequential", choices=DEPLOYMENTS)
    parser.add_argument("--dataflow", default=None,
                        help="sequential: accelgen_os (default), accelgen_ws, or accelgen (the "
                             "search chooses either generated dataflow); pipelined: ws "
                             "(default), rs, os, accelgen_os")
    parser.add_argument("--objective", default="latency", choices=OBJECTIVES)
    parser.add_argument("--method", default="rl_ga", choices=METHODS)
    parser.add_argument("--evaluations", type=cliargs.count(1, 10_000_000),
                        default=DEFAULT_EVALUATIONS,
                        help="cost-model evaluations the search may spend")
    parser.add_argument("--seed", type=cliargs.seed, default=0)
    parser.add_argument("--clock-mhz", type=cliargs.positive_float, default=100.0,
                        help="accelerator clock; checked like clock_mhz in a config")
    parser.add_argument("--baud", type=cliargs.count(1200, 12_000_000), default=None,
                        help="host UART baud rate (default: the default config's)")
    parser.add_argument("--power-cap-mw", type=cliargs.positive_float, default=None)
    parser.add_argument("--name", default=None, help="design name (default <network>-alloc)")
    parser.add_argument("--out", default=None, help="output folder (default rtl_out/alloc/...)")


def check_clock(clock_mhz, board, where="--clock-mhz"):
    """The clock checks of a design config (range, a PLL output) plus the allocator's own: a
    measured timing point at or above it."""
    from ..config import SCHEMA
    from ..hw.pll import plan_pll
    low, high = SCHEMA["clock_mhz"][1:3]
    if not low <= clock_mhz <= high:
        raise UserError(f"{where}: {clock_mhz:g} MHz is outside [{low:g}, {high:g}]")
    try:
        plan_pll(board.oscillator_mhz, clock_mhz)
        max_pes_at(clock_mhz)
    except UserError as exc:
        raise UserError(f"{where}: {str(exc).removeprefix('clock_mhz: ')}") from None


def allocate(network, board, *, deployment="sequential", dataflow=None, objective="latency",
             method="rl_ga", evaluations=DEFAULT_EVALUATIONS, seed=0, clock_mhz=100.0,
             power_cap_mw=None, fixed=None, host_baud=None, progress=print):
    """Run the search; returns (allocation problem, search result, workload).

    Every argument is checked before the workload is built or the search runs.
    """
    from ..config import load_config
    from ..workloads import get_workload
    check_clock(clock_mhz, board)
    if power_cap_mw is not None and not (math.isfinite(power_cap_mw) and power_cap_mw > 0):
        raise UserError(f"power cap: {power_cap_mw!r} mW must be a number above 0")
    if host_baud is None:
        host_baud = load_config().host.baud
    workload = get_workload(network)
    dataflow = dataflow or ("accelgen_os" if deployment == "sequential" else "ws")
    if deployment == "sequential":
        allocation = sequential_problem(workload, board.budget, dataflow=dataflow,
                                        objective=objective, clock_mhz=clock_mhz,
                                        power_cap_mw=power_cap_mw, fixed=fixed,
                                        host_baud=host_baud)
    else:
        allocation = pipelined_problem(workload, board.budget, dataflow=dataflow,
                                       objective=objective, clock_mhz=clock_mhz,
                                       power_cap_mw=power_cap_mw)
    space = allocation.problem.space
    progress(f"[alloc] {workload.name}: {len(workload.ops)} layers, {workload.macs / 1e6:.1f} M "
             f"MACs; {deployment} on {board.name} ({dataflow}), objective {objective}; space "
             f"10^{space.log10_size:.1f} points, {evaluations} evaluations, {method}, "
             f"seed {seed}")
    last = {"t": 0.0}

    def report(name, done, best):
        now = time.monotonic()
        if now - last["t"] >= 1.0:
            last["t"] = now
            shown = "none feasible yet" if not np.isfinite(best) else f"best {best:.6g}"
            progress(f"[alloc] {name}: {done}/{evaluations} evaluations, {shown}")

    result = search(allocation.problem, method, evaluations, seed, progress=report)
    if not result.feasible:
        raise UserError(_no_fit_message(allocation, board, workload, result))
    return allocation, result, workload


#: Spaces up to this many points are enumerated to tell "nothing fits" from "not found".
ENUMERATE_LIMIT = 200_000


def _no_fit_message(allocation, board, workload, result):
    """Why the search found nothing: no point of the space fits (say what would have to
    change), or some do and the search ran out of evaluations (say how many it needs)."""
    space = allocation.problem.space
    where = f"{workload.name} on {board.name} ({allocation.deployment})"
    if space.size <= ENUMERATE_LIMIT:
        grids = np.stack(np.meshgrid(*[np.arange(c) for c in space.choices], indexing="ij"),
                         axis=-1).reshape(-1, space.n_steps)
        fitting = int((allocation.problem.constraint(grids) <= 0).sum())
        if fitting:
            need = math.ceil(space.size / fitting)
            return (f"the search spent its {result.evaluations} evaluations without finding "
                    f"one of the {fitting} configurations (of {space.size}) that fit {where}; "
                    f"raise --evaluations (a random search needs about {need} per hit, "
                    f"--method exhaustive needs {space.size})")
    else:   # per-layer choices are independent in resources: the lowest levels bound them
        grids = np.zeros((1, space.n_steps), dtype=np.int64)
    r = allocation.evaluate(grids)
    runs = r["infeasible_layers"] == 0
    if "pes" in r and allocation.info.get("max_pes") is not None:
        runs &= r["pes"] <= allocation.info["max_pes"]
    if not runs.any():
        return (f"no configuration of the search space can run {workload.name}: some layer "
                f"needs a larger buffer than the largest level (reduction too long)")
    need = {key: int(np.asarray(r[key])[runs].min()) for key in ("mult18", "bram18k", "lut4")}
    have = board.budget
    lacking = [f"{key} >= {need[key]} (has {getattr(have, key)})" for key in need
               if need[key] > getattr(have, key)]
    if lacking:
        return (f"no configuration fits {where}: the smallest needs {', '.join(lacking)}; "
                f"choose a larger board, a smaller network or the other deployment")
    if space.size <= ENUMERATE_LIMIT:
        return (f"no configuration fits {where}: each resource alone fits, but none fits "
                f"them together under the power cap and the timing limit; raise the power cap "
                f"or lower the clock")
    return (f"the search found no configuration that fits {where} in {result.evaluations} "
            f"evaluations, although the smallest choices fit: raise --evaluations")


def run(args):
    from ..boards import get_board
    from ..config import check_name
    board = get_board(args.board)
    # Everything that could fail after the search is checked before it.
    if args.name is not None:
        check_name(args.name, "--name")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable_folder(out)
    start = time.monotonic()
    allocation, result, workload = allocate(
        args.network, board, deployment=args.deployment, dataflow=args.dataflow,
        objective=args.objective, method=args.method, evaluations=args.evaluations,
        seed=args.seed, clock_mhz=args.clock_mhz, power_cap_mw=args.power_cap_mw,
        host_baud=args.baud)
    out = out or (Path("rtl_out") / "alloc" /
                  f"{workload.name}-{board.name}-{allocation.deployment}")
    check_writable_folder(out).mkdir(parents=True, exist_ok=True)
    summary = summarize(allocation, result, workload, board)
    for line in summary["lines"]:
        print(line)
    written = [out / "allocation.json", out / "convergence.png"]
    if allocation.deployment == "sequential":
        name = args.name or f"{workload.name}-alloc".replace(".", "-")
        config = design_config(name, board, args.clock_mhz, allocation.decode(result.best_actions),
                               baud=args.baud)
        path = out / f"{name}.yaml"
        path.write_text(_config_text(config, allocation, result, workload, args))
        written.insert(0, path)
    (out / "allocation.json").write_text(json.dumps(summary["json"], indent=1) + "\n")
    plot_convergence([result], out / "convergence.png",
                     title=f"{workload.name} on {board.name}: {allocation.deployment}, "
                           f"{allocation.objective}")
    for path in written:
        print(f"[alloc] wrote {path}")
    if allocation.deployment == "sequential":
        print(f"[alloc] build it: python -m gen build --config {written[0]}")
    else:
        print("[alloc] the generator builds one engine (layer-sequential); this layer-pipelined "
              "assignment is a report, not a buildable config")
    print(f"[alloc] done in {time.monotonic() - start:.1f}s")
    return 0


def design_config(name, board, clock_mhz, decoded, baud=None):
    """A design config mapping (as `gen build` reads it) from a decoded sequential action."""
    from dataclasses import asdict
    from ..config import load_config
    host = asdict(load_config().host)
    if baud is not None:
        host["baud"] = baud
    return {"name": name, "board": board.name, "clock_mhz": clock_mhz, **decoded, "host": host}


def _config_text(config, allocation, result, workload, args):
    r = allocation.evaluate(result.best_actions[None, :])
    options = [f"--network {workload.name}", f"--board {args.board}",
               f"--deployment {allocation.deployment}",
               f"--dataflow {allocation.info['dataflow']}",
               f"--objective {allocation.objective}", f"--method {result.method}",
               f"--evaluations {args.evaluations}", f"--seed {args.seed}",
               f"--clock-mhz {args.clock_mhz:g}", f"--baud {config['host']['baud']}"]
    if args.power_cap_mw is not None:
        options.append(f"--power-cap-mw {args.power_cap_mw:g}")
    options.append(f"--name {config['name']}")
    header = [
        f"# Sized by `python -m gen alloc {' '.join(options)}`",
        f"# Predicted by gen.cost: {float(r['latency_s'][0]) * 1e3:.3f} ms per inference "
        f"({int(r['cycles'][0])} cycles at {allocation.info['clock_mhz']:g} MHz: compute "
        f"{float(r['compute_s'][0]) * 1e3:.3f} ms + transfers over the "
        f"{allocation.info['host_link']} {float(r['transfer_s'][0]) * 1e3:.3f} ms), "
        f"{float(r['energy_j'][0]) * 1e3:.3f} mJ; multipliers {int(r['mult18'][0])}, "
        f"block RAMs {int(r['bram18k'][0])}, LUT4 ~{int(r['lut4'][0])}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)


def summarize(allocation, result, workload, board):
    """Terminal lines and a JSON record of the chosen assignment and its predicted cost."""
    r = allocation.evaluate(result.best_actions[None, :])
    decoded = allocation.decode(result.best_actions)
    lines = [f"[alloc] {result.summary()}"]
    budget = board.budget
    record = {"network": workload.name, "board": board.name,
              "deployment": allocation.deployment, "objective": allocation.objective,
              "method": result.method, "evaluations": result.evaluations,
              "best_value": result.best_value, "assignment": decoded,
              "predicted": {"latency_s": float(r["latency_s"][0]),
                            "period_s": float(r["period_s"][0]),
                            "energy_j": float(r["energy_j"][0]),
                            "power_mw": float(r["power_mw"][0])},
              "resources": {}, "history": result.history.tolist(), **allocation.info}
    if allocation.deployment == "sequential":
        a, b = decoded["array"], decoded["buffers"]
        lines.append(f"  engine: {a['rows']}x{a['cols']} PEs, act {b['act_depth']} / wgt "
                     f"{b['wgt_depth']} words, params {b['param_depth']}, out {b['out_depth']} B")
    else:
        shapes = [f"{x['rows']}x{x['cols']}" for x in decoded["layers"]]
        lines.append(f"  per-layer arrays: {', '.join(shapes[:12])}"
                     f"{' ...' if len(shapes) > 12 else ''}")
    lines.append(f"  predicted: latency {record['predicted']['latency_s'] * 1e3:.3f} ms, "
                 f"period {record['predicted']['period_s'] * 1e3:.3f} ms, energy "
                 f"{record['predicted']['energy_j'] * 1e3:.3f} mJ, power "
                 f"{record['predicted']['power_mw']:.0f} mW")
    lines.append(f"  host link: {allocation.info['host_link']}")
    if "transfer_s" in r:
        record["predicted"].update(
            compute_s=float(r["compute_s"][0]), transfer_s=float(r["transfer_s"][0]),
            traffic_bytes=int(r["traffic_bytes"][0]),
            whatif_sdram_latency_s=float(r["whatif_sdram_latency_s"][0]))
        lines.append(f"  latency = compute {float(r['compute_s'][0]) * 1e3:.3f} ms + transfers "
                     f"{float(r['transfer_s'][0]) * 1e3:.3f} ms ({int(r['traffic_bytes'][0])} "
                     f"bytes over the UART)")
        lines.append(f"  what-if (not the generated design): with a 2 B/cycle SDRAM link the "
                     f"latency would be {float(r['whatif_sdram_latency_s'][0]) * 1e3:.3f} ms")
    for key in ("mult18", "bram18k", "lut4"):
        used, have = int(np.asarray(r[key]).reshape(-1)[0]), getattr(budget, key)
        record["resources"][key] = {"used": used, "available": have}
        lines.append(f"  {key:8s} {used:7d} of {have:7d} ({100 * used / have:5.1f}%)")
    return {"lines": lines, "json": record}


def plot_convergence(results, path, title=""):
    """Best value so far against evaluations, one line per search result."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for result in results:
        h = np.asarray(result.history, dtype=float)
        if len(h):
            ax.step(h[:, 0], h[:, 1], where="post", label=result.method)
    ax.set_xlabel("cost-model evaluations")
    ax.set_ylabel("best feasible objective")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def size_auto_fields(config, board, progress=print):
    """The allocator's choice for the sizes of ``config`` that say ``auto``, on ``board``.

    ``config`` is a :class:`gen.config.DesignConfig`; its ``allocator`` section (or the defaults)
    names the network and the search; its fixed sizes stay fixed. Returns
    ``{(section, key): value}`` for :meth:`~gen.config.DesignConfig.with_sizes`.
    """
    from ..config import AllocatorConfig
    options = config.allocator or AllocatorConfig()
    autos = config.auto_fields
    fixed = {f"{section}.{key}": getattr(getattr(config, section), key)
             for section, key in AUTO_FIELDS if (section, key) not in autos}
    allocation, result, workload = allocate(
        options.network, board, fixed=fixed, objective=options.objective,
        method=options.method, evaluations=options.evaluations, seed=options.seed,
        clock_mhz=float(config.clock_mhz), power_cap_mw=options.power_cap_mw,
        host_baud=config.host.baud, progress=progress,
        dataflow={v: k for k, v in GENERATED.items()}[config.array.dataflow])
    decoded = allocation.decode(result.best_actions)
    sizes = {(section, key): decoded[section][key] for section, key in autos}
    progress(f"[alloc] {config.name}: " + ", ".join(f"{s}.{k} = {v}"
                                                    for (s, k), v in sizes.items()))
    return sizes
