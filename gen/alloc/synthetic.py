"""A synthetic stand-in for layer-pipelined accelerator sizing, to tune and compare searches.

Each layer ``l`` has work ``w_l`` (lognormal) and a memory pressure ``s_l``. Two steps per layer:
a PE level (``pe = PE_LEVELS[a]``) and a buffer level (``buf = 2**a`` blocks). Stage latency is
``w_l / pe_l * (1 + s_l / buf_l) + overhead``; the objective is the slowest stage (``"max"``,
pipelined) or the sum (``"sum"``). The constraint is total PEs and total buffer blocks under their
budgets; the violation is the larger relative overshoot.

Run ``python -m gen.alloc.synthetic`` to compare the methods (median over seeds, equal budgets);
``--network resnet50`` (or ``mobilenet_v2``, ...) compares them on the real layer-pipelined problem
of :func:`gen.alloc.problems.pipelined_problem` on the ULX3S-85F budget instead.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gen.alloc.search import ActionSpace, Problem, search

PE_LEVELS = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160])


def pipeline_problem(n_layers: int = 50, n_pe: int = 24, n_buf: int = 10, kind: str = "max",
                     pe_budget: float = 6.0, buf_budget: float = 3.0, seed: int = 0) -> Problem:
    """Budgets are per layer: total PEs <= ``pe_budget * n_layers``, buffer blocks likewise."""
    rng = np.random.default_rng(seed)
    work = rng.lognormal(0.0, 1.0, n_layers)
    work /= work.mean()
    press = rng.lognormal(0.0, 1.0, n_layers) * 2.0
    pe_lv = PE_LEVELS[:n_pe].astype(np.float64)
    buf_lv = 2.0 ** np.arange(n_buf)
    overhead = 0.002
    pe_cap, buf_cap = pe_budget * n_layers, buf_budget * n_layers

    def latency(a):
        pe = pe_lv[a[:, 0::2]]
        buf = buf_lv[a[:, 1::2]]
        return work / pe * (1.0 + press / buf) + overhead

    def objective(a):
        lat = latency(a)
        return lat.max(axis=1) if kind == "max" else lat.sum(axis=1)

    def constraint(a):
        pe = pe_lv[a[:, 0::2]].sum(axis=1)
        buf = buf_lv[a[:, 1::2]].sum(axis=1)
        return np.maximum(pe / pe_cap - 1.0, buf / buf_cap - 1.0)

    choices = (n_pe, n_buf) * n_layers
    names = tuple(f"l{i}.{k}" for i in range(n_layers) for k in ("pe", "buf"))
    feats = np.stack([np.repeat(np.log(work), 2), np.repeat(np.log(press), 2),
                      np.tile([1.0, 0.0], n_layers)], axis=1)
    return Problem(ActionSpace(choices, names, feats), objective, constraint)


def compare(problem: Problem, methods, budget: int, seeds: int, out=print):
    rows = {}
    for m in methods:
        vals, secs, feas = [], [], 0
        for s in range(seeds):
            r = search(problem, m, budget, s)
            vals.append(r.best_value if r.feasible else np.inf)
            secs.append(r.seconds)
            feas += r.feasible
        rows[m] = float(np.median(vals))
        out(f"  {m:10s} median {np.median(vals):.5g}  min {np.min(vals):.5g}  max {np.max(vals):.5g}"
            f"  feasible {feas}/{seeds}  {np.mean(secs):.1f} s/run")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=50)
    ap.add_argument("--budget", type=int, default=10000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--kind", default="max", choices=["max", "sum"])
    ap.add_argument("--methods", default="rl_ga,rl,ga,annealing,random")
    ap.add_argument("--network", default=None, help="use the real pipelined problem of this network")
    ap.add_argument("--objective", default="throughput", help="objective of the real problem")
    ap.add_argument("--board", default="ulx3s")
    args = ap.parse_args(argv)
    if args.network:
        from gen.alloc.problems import pipelined_problem
        from gen.boards import get_board
        from gen.workloads import get_workload
        p = pipelined_problem(get_workload(args.network), get_board(args.board).budget,
                              objective=args.objective).problem
        what = f"{args.network} pipelined {args.objective} on {args.board}"
    else:
        p = pipeline_problem(args.layers, kind=args.kind)
        what = f"synthetic {args.kind}: {args.layers} layers"
    print(f"{what}: 10^{p.space.log10_size:.1f} points, budget {args.budget}, {args.seeds} seeds")
    t = time.monotonic()
    compare(p, args.methods.split(","), args.budget, args.seeds, out=lambda s: print(s, flush=True))
    print(f"total {time.monotonic() - t:.0f} s")


if __name__ == "__main__":
    main()
