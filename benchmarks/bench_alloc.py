"""Evidence for the allocator: the default method against exhaustive search, its parts and the
baselines, at every budget.

1. Spaces small enough to enumerate (the layer-sequential engine space of each network,
   16 x 16 x 7 x 7 x 7 = 87,808 engines): the exhaustive optimum vs the default's best at a
   budget of a few percent of the space (goal: within 1%).
2. Layer-pipelined ResNet-50 and MobileNet-V2 (per layer an array shape out of 12 and a buffer
   out of 12: 144^L points), under the throughput and the latency objective, on a multiplier /
   block-RAM budget and on one eight times looser: the median over 5 seeds of each method's
   best at 1,000, 3,000, 10,000 and 20,000 cost-model evaluations, and the evaluations each
   needs to come within 5% of the best value any run found at 20,000. Goals: the default
   (``rl_ga``) never worse than any of its parts (``local``, ``rl``) or baselines (``ga``,
   ``annealing``, ``random``) at any budget, and within 5% of that best at 3,000 on
   MobileNet-V2 and at 10,000 on ResNet-50.

    python benchmarks/bench_alloc.py [--quick] [--part 1|2] [--jobs N]

``--quick`` (about two minutes): part 1 on two networks, part 2 on MobileNet-V2 up to 3,000
evaluations with 2 seeds. The full run is dominated by the policy (``rl``) at 20,000
evaluations, about a minute a run on one core; ``--jobs`` runs that many processes.

Every method runs once per seed and budget, except the policy alone (``rl``), whose first
evaluations do not depend on the budget (tests/test_search.py checks it): it runs once per
seed at the largest budget and its value at a smaller one is read off that run's history,
after the first batch that reached the budget (up to 31 evaluations more than the others get).

Writes rtl_out/bench/alloc.json (every run's value per budget, and the default's choice for
each problem) and convergence plots rtl_out/bench/alloc_<network>_<objective>_<budget>.png.
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from gen.alloc.problems import pipelined_problem, sequential_problem  # noqa: E402
from gen.alloc.search import search  # noqa: E402
from gen.boards import Resources, get_board  # noqa: E402
from gen.workloads import get_workload  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "rtl_out", "bench")
#: The layer-pipelined budget: a large FPGA's worth of multipliers and block RAM, tight enough
#: that the slowest stages compete for it (ConfuciuX sets budgets the same way).
PIPELINE_BUDGET = Resources(lut4=10 ** 7, ff=10 ** 7, mult18=1024, bram18k=512)
#: The same, eight times looser in multipliers and block RAM.
LOOSE_BUDGET = Resources(lut4=10 ** 7, ff=10 ** 7, mult18=8 * 1024, bram18k=8 * 512)
BUDGETS = {"normal": PIPELINE_BUDGET, "8x looser": LOOSE_BUDGET}
#: The default first, then its parts, then the baselines.
METHODS = ("rl_ga", "local", "rl", "ga", "annealing", "random")
#: Methods whose run at a budget is the prefix of the run at a larger one (the policy: its
#: runs take a minute each at 20,000 evaluations; all the others run once per budget).
PREFIX = ("rl",)
EVALUATIONS = (1000, 3000, 10000, 20000)
#: Where the default must already be within 5% of the best value found at the largest budget.
GOAL = {"mobilenet_v2": 3000, "resnet50": 10000}


def evaluations_to_reach(history, target):
    h = np.asarray(history)
    hit = np.nonzero(h[:, 1] <= target)[0]
    return int(h[hit[0], 0]) if len(hit) else None


def value_at(history, evaluations):
    """Best feasible value after ``evaluations`` (inf before the first feasible row).

    The history has one entry per evaluator call; the value is the one after the first call
    that reached ``evaluations``: a run read off a longer one gets up to a batch more (the
    policy's batch, 32 rows), never fewer."""
    h = np.asarray(history)
    i = min(np.searchsorted(h[:, 0], evaluations, side="left"), len(h) - 1)
    return float(h[i, 1])


def part_exhaustive(networks, budget, seeds):
    board = get_board("ulx3s")
    print(f"1. layer-sequential engine spaces, exhaustive vs the default ({budget} evaluations, "
          f"seeds {list(seeds)})")
    print(f"   {'network':16s} {'space':>7s} {'optimum (ms)':>13s} {'gap % per seed':>32s} "
          f"{'median':>7s}")
    rows = []
    for name in networks:
        allocation = sequential_problem(get_workload(name), board.budget)
        exact = search(allocation.problem, "exhaustive", allocation.problem.space.size, 0)
        found = [search(allocation.problem, "rl_ga", budget, seed).best_value for seed in seeds]
        gaps = [100 * (value / exact.best_value - 1) for value in found]
        rows.append({"network": name, "space": allocation.problem.space.size,
                     "optimum": exact.best_value, "rl_ga": found, "gap_percent": gaps})
        print(f"   {name:16s} {allocation.problem.space.size:7d} {exact.best_value * 1e3:13.4f} "
              f"{' '.join(f'{g:5.2f}' for g in gaps):>32s} {np.median(gaps):7.2f}", flush=True)
    return rows


_PROBLEMS = {}


def _problem(network, objective, budget_name):
    key = (network, objective, budget_name)
    if key not in _PROBLEMS:
        _PROBLEMS[key] = pipelined_problem(get_workload(network), BUDGETS[budget_name],
                                           dataflow="ws", objective=objective)
    return _PROBLEMS[key]


def _run(task):
    """One search (in a worker process when --jobs > 1)."""
    network, objective, budget_name, method, evaluations, seed = task
    allocation = _problem(network, objective, budget_name)
    start = time.monotonic()
    r = search(allocation.problem, method, evaluations, seed)
    return task, {"history": r.history, "best_actions": r.best_actions, "feasible": r.feasible,
                  "seconds": time.monotonic() - start}


def _tasks(settings, seeds, evaluations):
    tasks = []
    for network, objective, budget_name in settings:
        for method in METHODS:
            for seed in seeds:
                for n in ((max(evaluations),) if method in PREFIX else evaluations):
                    tasks.append((network, objective, budget_name, method, n, seed))
    # Longest first, so that the pool's last minutes are not one policy run alone.
    return sorted(tasks, key=lambda t: -(t[4] * (60 if t[3] in ("rl",) else 1)))


def part_pipelined(networks, objectives, budget_names, seeds, evaluations, jobs):
    settings = [(n, o, b) for b in budget_names for n in networks for o in objectives]
    tasks = _tasks(settings, seeds, evaluations)
    print(f"\n2. layer-pipelined, ws dataflow, {len(tasks)} searches over "
          f"{len(settings)} problems ({len(seeds)} seeds; {jobs} process(es))", flush=True)
    done = {}
    start = time.monotonic()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for k, (task, out) in enumerate(pool.map(_run, tasks)):
                done[task] = out
    else:
        for k, task in enumerate(tasks):
            done[task] = _run(task)[1]
            if task[3] == "rl" or k % 50 == 49:
                print(f"   [{k + 1}/{len(tasks)}] {time.monotonic() - start:.0f} s", flush=True)
    print(f"   all searches: {time.monotonic() - start:.0f} s")
    records, verdicts = [], []
    for setting in settings:
        records.append(_report(setting, done, seeds, evaluations, verdicts))
    print("\n   summary (goal: the default never worse than any method at any budget; within 5% "
          "of the best found at the largest budget by 3,000 on MobileNet-V2, 10,000 on ResNet-50)")
    for line in verdicts:
        print("   " + line)
    return records


def _values(done, setting, method, seed, evaluations):
    """The run's best feasible value at each budget (inf: none feasible)."""
    if method in PREFIX:
        run = done[(*setting, method, max(evaluations), seed)]
        return [value_at(run["history"], n) for n in evaluations]
    return [value_at(done[(*setting, method, n, seed)]["history"], n) for n in evaluations]


def _report(setting, done, seeds, evaluations, verdicts):
    network, objective, budget_name = setting
    budget = BUDGETS[budget_name]
    allocation = _problem(*setting)
    top = max(evaluations)
    values = {m: np.array([_values(done, setting, m, s, evaluations) for s in seeds])
              for m in METHODS}                               # (seeds, budgets)
    best = min(float(v[:, -1].min()) for v in values.values())
    space = allocation.problem.space
    print(f"\n   {network}, {objective}, {budget_name} budget ({budget.mult18} multipliers, "
          f"{budget.bram18k} block RAMs): {space.n_steps // 2} layers, space "
          f"10^{space.log10_size:.0f}; best found {best * 1e3:.4f} ms")
    header = " ".join(f"{n:>10d}" for n in evaluations)
    print(f"   {'median ms':10s} {header}   {'evals to 5% (median, runs)':>27s}")
    record = {"network": network, "objective": objective, "budget": budget_name,
              "resources": {"mult18": budget.mult18, "bram18k": budget.bram18k},
              "evaluations": list(evaluations), "best_found": best, "methods": {}}
    for m in METHODS:
        median = np.median(values[m], axis=0)
        histories = ([done[(*setting, m, top, s)]["history"] for s in seeds])
        reach = [evaluations_to_reach(h, 1.05 * best) for h in histories]
        got = sorted(x for x in reach if x is not None)
        # The median over all runs, a run that never gets there counting as never.
        if len(got) * 2 > len(reach):
            text = f"{int(np.median([x if x is not None else np.inf for x in reach]))}"
        else:
            text = "never"
        text += f" ({len(got)}/{len(reach)})"
        cells = " ".join(f"{v * 1e3:10.4f}" if np.isfinite(v) else f"{'none':>10s}"
                         for v in median)
        print(f"   {m:10s} {cells}   {text:>27s}")
        record["methods"][m] = {"values": values[m].tolist(), "median": median.tolist(),
                                "evaluations_to_5pct": reach}
    # The goals.
    default = np.median(values["rl_ga"], axis=0)
    worse = [f"{m} at {n}" for m in METHODS[1:] for n, d, o in
             zip(evaluations, default, np.median(values[m], axis=0)) if o < d]
    goal_n = GOAL.get(network)
    where = f"{network} {objective} {budget_name}"
    line = f"{where:40s} default never worse: {'yes' if not worse else 'NO (' + ', '.join(worse) + ')'}"
    if goal_n in evaluations:
        at = default[evaluations.index(goal_n)]
        gap = 100 * (at / best - 1)
        line += f"; at {goal_n}: {gap:.2f}% above the best ({'met' if gap <= 5 else 'NOT met'})"
        record["goal"] = {"evaluations": goal_n, "gap_percent": gap, "met": bool(gap <= 5)}
    record["default_never_worse"] = not worse
    verdicts.append(line)
    # The default's choice at the largest budget (median seed) and the convergence plot.
    order = np.argsort(values["rl_ga"][:, -1], kind="stable")
    seed = list(seeds)[order[len(order) // 2]]
    run = done[(*setting, "rl_ga", top, seed)]
    choice = allocation.evaluate(run["best_actions"][None])
    record["default_choice"] = {
        "seed": seed, "layers": allocation.decode(run["best_actions"])["layers"],
        "period_ms": float(choice["period_s"][0]) * 1e3,
        "latency_ms": float(choice["latency_s"][0]) * 1e3,
        "mult18": int(choice["mult18"][0]), "bram18k": int(choice["bram18k"][0])}
    _plot(setting, done, seeds, values, top)
    return record


def _plot(setting, done, seeds, values, top):
    from gen.alloc.cli import plot_convergence
    network, objective, budget_name = setting
    runs = []
    for m in METHODS:
        order = np.argsort(values[m][:, -1], kind="stable")
        seed = list(seeds)[order[len(order) // 2]]
        runs.append(SimpleNamespace(method=m, history=done[(*setting, m, top, seed)]["history"]))
    tag = "normal" if budget_name == "normal" else "loose"
    plot_convergence(runs, os.path.join(OUT, f"alloc_{network}_{objective}_{tag}.png"),
                     title=f"{network} layer-pipelined, {objective}, {budget_name} budget "
                           f"(median seed per method)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer networks, seeds, budgets")
    parser.add_argument("--part", type=int, choices=(1, 2), help="run only part 1 or 2")
    parser.add_argument("--jobs", type=int, default=1, help="processes for part 2")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    start = time.monotonic()
    seeds = range(args.seeds)
    small = pipe = None
    if args.quick:
        if args.part in (None, 1):
            small = part_exhaustive(["default", "mobilenet_v2"], 2000, range(2))
        if args.part in (None, 2):
            pipe = part_pipelined(["mobilenet_v2"], ("throughput", "latency"),
                                  ("normal", "8x looser"), range(2), (1000, 3000), args.jobs)
    else:
        if args.part in (None, 1):
            small = part_exhaustive(["default", "mobilenet_v2", "resnet50", "deit_tiny",
                                     "bert_base_layer"], 3000, seeds)
        if args.part in (None, 2):
            pipe = part_pipelined(["resnet50", "mobilenet_v2"], ("throughput", "latency"),
                                  ("normal", "8x looser"), seeds, EVALUATIONS, args.jobs)
    name = "alloc_quick.json" if args.quick else (
        "alloc.json" if args.part is None else f"alloc_part{args.part}.json")
    with open(os.path.join(OUT, name), "w") as f:
        json.dump({"exhaustive": small, "pipelined": pipe}, f, indent=1, default=float)
    print(f"wrote {os.path.join(OUT, name)} and the convergence plots "
          f"({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
