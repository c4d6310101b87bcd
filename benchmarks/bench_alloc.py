"""Evidence for the allocator: RL+GA against exhaustive search and against the baselines.

1. Spaces small enough to enumerate (the layer-sequential engine space of each network,
   16 x 16 x 7 x 7 x 7 = 87,808 engines): the exhaustive optimum vs RL+GA's best at a budget of
   a few percent of the space (goal: within 1%).
2. Layer-pipelined ResNet-50 and MobileNet-V2 (per layer an array shape out of 12 and a buffer
   out of 12: 144^L points), throughput objective under a multiplier / block-RAM budget: the
   median over 5 seeds of each method's best at equal cost-model evaluations (goal: RL+GA
   beats GA alone, annealing and random), and the evaluations each needs to come within 5% of
   the best value any run found.

    python benchmarks/bench_alloc.py [--quick]

Writes rtl_out/bench/alloc.json and convergence plots rtl_out/bench/alloc_<network>.png.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from gen.alloc.cli import plot_convergence  # noqa: E402
from gen.alloc.problems import pipelined_problem, sequential_problem  # noqa: E402
from gen.alloc.search import search  # noqa: E402
from gen.boards import Resources, get_board  # noqa: E402
from gen.workloads import get_workload  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "rtl_out", "bench")
#: The layer-pipelined budget: a large FPGA's worth of multipliers and block RAM, tight enough
#: that the slowest stages compete for it (ConfuciuX sets budgets the same way).
PIPELINE_BUDGET = Resources(lut4=10 ** 7, ff=10 ** 7, mult18=1024, bram18k=512)
METHODS = ("rl_ga", "ga", "annealing", "random")


def evaluations_to_reach(history, target):
    h = np.asarray(history)
    hit = np.nonzero(h[:, 1] <= target)[0]
    return int(h[hit[0], 0]) if len(hit) else None


def part_exhaustive(networks, budget, seeds):
    board = get_board("ulx3s")
    print(f"1. layer-sequential engine spaces, exhaustive vs RL+GA ({budget} evaluations, "
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
              f"{' '.join(f'{g:5.2f}' for g in gaps):>32s} {np.median(gaps):7.2f}")
    return rows


def part_pipelined(networks, budget, seeds, objective="throughput"):
    print(f"\n2. layer-pipelined, {objective}, ws dataflow, budget "
          f"{PIPELINE_BUDGET.mult18} multipliers / {PIPELINE_BUDGET.bram18k} block RAMs, "
          f"{budget} evaluations per run, seeds {list(seeds)}")
    records = []
    for name in networks:
        allocation = pipelined_problem(get_workload(name), PIPELINE_BUDGET, dataflow="ws",
                                       objective=objective)
        results = {m: [] for m in METHODS}
        for method in METHODS:
            for seed in seeds:
                start = time.monotonic()
                results[method].append(search(allocation.problem, method, budget, seed))
                print(f"   {name} {method:9s} seed {seed}: {results[method][-1].best_value * 1e3:.4f} "
                      f"ms ({time.monotonic() - start:.1f}s)", flush=True)
        best = min(r.best_value for rs in results.values() for r in rs if r.feasible)
        print(f"\n   {name}: {len(allocation.problem.space.choices) // 2} layers, space "
              f"10^{allocation.problem.space.log10_size:.0f}; best found {best * 1e3:.4f} "
              f"(ms for latency/throughput)")
        print(f"   {'method':10s} {'median ms':>10s} {'vs best':>8s} {'worst ms':>9s} "
              f"{'feasible':>8s} {'evals to 5% (median)':>21s}")
        for method in METHODS:
            values = [r.best_value if r.feasible else np.inf for r in results[method]]
            reach = [evaluations_to_reach(r.history, 1.05 * best) for r in results[method]]
            reached = sorted(x for x in reach if x is not None)
            reach_text = (f"{int(np.median(reached))} ({len(reached)}/{len(reach)} runs)"
                          if reached else f"never (0/{len(reach)})")
            median = float(np.median(values))
            print(f"   {method:10s} {median * 1e3:10.4f} {100 * (median / best - 1):7.2f}% "
                  f"{max(values) * 1e3:9.4f} {sum(np.isfinite(values)):5d}/{len(values)} "
                  f"{reach_text:>21s}")
            records.append({"network": name, "method": method, "values": values,
                            "evaluations_to_5pct": reach, "best_found": best})
        medians = {m: np.median([r.best_value if r.feasible else np.inf for r in results[m]])
                   for m in METHODS}
        winner = min(medians, key=medians.get)
        print(f"   lowest median: {winner}\n")
        median_runs = [sorted(results[m], key=lambda r: r.best_value)[len(seeds) // 2]
                       for m in METHODS]
        suffix = "" if objective == "throughput" else f"_{objective}"
        plot_convergence(median_runs, os.path.join(OUT, f"alloc_{name}{suffix}.png"),
                         title=f"{name} layer-pipelined, {objective} (median seed per method)")
    return records


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer evaluations and networks")
    parser.add_argument("--part", type=int, choices=(1, 2), help="run only part 1 or 2")
    parser.add_argument("--objective", default="throughput",
                        choices=("throughput", "latency", "energy", "edp"),
                        help="objective of the layer-pipelined part")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    seeds = range(5)
    if args.quick:
        small = part_exhaustive(["default", "mobilenet_v2"], 2000, range(2))
        pipe = part_pipelined(["mobilenet_v2"], 4000, range(3))
    else:
        small = pipe = None
        if args.part in (None, 1):
            small = part_exhaustive(["default", "mobilenet_v2", "resnet50", "deit_tiny",
                                     "bert_base_layer"], 3000, seeds)
        if args.part in (None, 2):
            pipe = part_pipelined(["resnet50", "mobilenet_v2"], 20000, seeds, args.objective)
    name = "alloc.json" if args.part is None else f"alloc_part{args.part}.json"
    if args.objective != "throughput":
        name = name.replace(".json", f"_{args.objective}.json")
    with open(os.path.join(OUT, name), "w") as f:
        json.dump({"exhaustive": small, "pipelined": pipe}, f, indent=1, default=float)
    print(f"wrote {os.path.join(OUT, name)} and the convergence plots")


if __name__ == "__main__":
    main()
