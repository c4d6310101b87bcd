"""The allocator's choice before and after the measured timing frontier (issue 12).

    python benchmarks/bench_frontier_alloc.py [--frontier PATH] [--evaluations N] [--seeds S]

Sizes the generated engine (`gen alloc`'s sequential deployment, its default method and
objective) for ResNet-50 and MobileNet-V2 on the ULX3S 85F at each clock the frontiers name,
twice: under the two points that were written by hand before any sweep
(``gen.alloc.problems.MAX_PES_BY_CLOCK``) and under the measured frontier (default the committed
file, gen/configs/sweep-85f-frontier.yaml, which ``python -m gen sweep --frontier`` writes).
For each it prints the PE limit, the chosen engine (the best of ``--seeds`` seeds), its
predicted compute time, its whole latency over the design's real UART link, and the what-if
latency with a 2 B/cycle SDRAM (a link the generated design does not have). Writes
rtl_out/bench/frontier_alloc.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:      # gen from this checkout, installed or not
    sys.path.insert(0, str(REPO))

NETWORKS = ("resnet50", "mobilenet_v2")


def choose(workload, board, clock_mhz, frontier, evaluations, seeds, host_baud):
    """The best engine over ``seeds`` under ``frontier``: a dict of what it is and costs."""
    from gen.alloc.problems import sequential_problem
    from gen.alloc.search import search
    from gen.errors import UserError
    try:
        allocation = sequential_problem(workload, board.budget, clock_mhz=clock_mhz,
                                        frontier=frontier, host_baud=host_baud)
    except UserError as exc:              # no measured point at or above this clock
        return {"max_pes": None, "refused": str(exc)}
    best = None
    for seed in seeds:
        result = search(allocation.problem, "rl_ga", evaluations, seed)
        if result.feasible and (best is None or result.best_value < best.best_value):
            best = result
    if best is None:
        return {"max_pes": allocation.info["max_pes"], "refused": "no feasible engine found"}
    figures = allocation.evaluate(best.best_actions[None, :])
    design = allocation.decode(best.best_actions)
    return {"max_pes": allocation.info["max_pes"],
            "array": f"{design['array']['rows']}x{design['array']['cols']}",
            "pes": design["array"]["rows"] * design["array"]["cols"],
            "buffers": design["buffers"],
            "compute_ms": float(figures["compute_s"][0]) * 1e3,
            "latency_ms": float(figures["latency_s"][0]) * 1e3,
            "whatif_sdram_ms": float(figures["whatif_sdram_latency_s"][0]) * 1e3,
            "mult18": int(figures["mult18"][0]), "bram18k": int(figures["bram18k"][0])}


def main():
    from gen import cliargs
    from gen.alloc.problems import MAX_PES_BY_CLOCK
    from gen.boards import get_board
    from gen.config import load_config
    from gen.errors import UserError
    from gen.timing_frontier import DEFAULT_FRONTIER, load_frontier, read_frontier
    from gen.workloads import get_workload

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frontier", default=str(DEFAULT_FRONTIER),
                        help="the measured frontier file (default: the committed one)")
    parser.add_argument("--evaluations", type=cliargs.count(1, 10_000_000), default=3000)
    parser.add_argument("--seeds", type=cliargs.count(1, 1000), default=3)
    args = parser.parse_args()

    start = time.monotonic()
    board = get_board("ulx3s-85f")
    host_baud = load_config().host.baud
    try:
        measured = load_frontier(args.frontier)
        source = read_frontier(args.frontier).get("source", "")
    except UserError as exc:               # checked before any search runs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frontiers = {"hand points": tuple(MAX_PES_BY_CLOCK), "measured": measured}
    clocks = sorted({mhz for points in frontiers.values() for mhz, _ in points})
    print(f"== the allocator's choice on {board.name}: rl_ga, objective latency, "
          f"{args.evaluations} evaluations, best of {args.seeds} seeds; UART {host_baud} baud")
    print(f"   hand points: {list(MAX_PES_BY_CLOCK)}")
    print(f"   measured:    {list(measured)}  ({args.frontier})")
    print(f"   its source:  {' '.join(source.split())}")
    header = (f"{'network':14s} {'clock':>6s} {'frontier':12s} {'max PEs':>7s} {'chosen':>7s} "
              f"{'PEs':>4s} {'MULT':>4s} {'BRAM':>4s} {'compute ms':>11s} {'latency ms':>12s} "
              f"{'what-if SDRAM ms':>16s}")
    print(header)
    print("-" * len(header))
    rows = []
    for network in NETWORKS:
        workload = get_workload(network)
        for clock in clocks:
            for label, frontier in frontiers.items():
                row = {"network": network, "clock_mhz": clock, "frontier": label,
                       **choose(workload, board, clock, frontier, args.evaluations,
                                range(args.seeds), host_baud)}
                rows.append(row)
                if "refused" in row:
                    print(f"{network:14s} {clock:6g} {label:12s} {str(row['max_pes']):>7s}   "
                          f"refused: {row['refused']}")
                    continue
                print(f"{network:14s} {clock:6g} {label:12s} {row['max_pes']:7d} "
                      f"{row['array']:>7s} {row['pes']:4d} {row['mult18']:4d} "
                      f"{row['bram18k']:4d} {row['compute_ms']:11.2f} {row['latency_ms']:12.1f} "
                      f"{row['whatif_sdram_ms']:16.2f}")
    out = REPO / "rtl_out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier_alloc.json").write_text(json.dumps(
        {"frontier_file": args.frontier, "hand_points": list(MAX_PES_BY_CLOCK),
         "measured": list(measured), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out / 'frontier_alloc.json'} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
