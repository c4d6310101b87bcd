"""Sweep benchmark (issue 12): the measured timing frontier of the ULX3S 85F.

    python benchmarks/bench_sweep.py [--spec FILE] [--dry-run] [--address HOST:PORT]
                                     [--cpus N] [--out DIR] [--frontier PATH]

Runs ``python -m gen sweep`` on ``gen/configs/sweep-85f.yaml`` (7 array shapes from 4x4 to
12x12 x 100 and 125 MHz x 2 nextpnr seeds = 28 real builds) on a local Ray instance (or the
cluster at ``--address``), then prints the table, the measured frontier and how it compares
with the frontier the allocator reads now (gen/configs/sweep-85f-frontier.yaml). A default-size
build takes 49 s (4x4) to 7.6 min (8x16), and the whole grid took 62 minutes on a 2-core
machine (2026-12-07): it stores each result as it finishes, and running the same command again
resumes (and builds nothing once every point is stored). ``--dry-run`` checks
the spec and lists the points without building. ``--frontier PATH`` writes the measured
frontier there (the committed file: see README.md, "Design-space sweeps").

Figures go to rtl_out/sweep/sweep-85f/ (table.txt, results.csv, fmax.png, resources.png,
frontier.yaml) and a summary to rtl_out/bench/sweep.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:      # gen from this checkout, installed or not
    sys.path.insert(0, str(REPO))

SPEC = REPO / "gen" / "configs" / "sweep-85f.yaml"


#: The GEMM whose sustained rate issue 12 asks for.
RATE_SHAPE = (128, 128, 128)


def print_gemm_rates(results):
    """GMAC/s on ``RATE_SHAPE`` per swept design: PEs x clock x utilization, where the
    utilization is the cycle model's (``gen.cycles.gemm_cycles``, exact against Verilator:
    ``benchmarks/bench_dataflow.py --rows R --cols C`` measures it) for the swept designs'
    single drain lane. The configured clock is what a bitstream that met timing runs at; the
    best achieved Fmax is a what-if (a build configured at that clock may not close)."""
    from gen.cycles import gemm_cycles
    m, k, n = RATE_SHAPE
    designs = {}
    for r in results:
        if r.get("status") == "ok":
            designs.setdefault((r["rows"], r["cols"], float(r["clock_mhz"])), []).append(r)
    if not designs:
        return
    print(f"== {m}x{k}x{n} GEMM per design (1 drain lane; utilization from the cycle model, "
          f"exact against Verilator)")
    print(f"  {'array':>6s} {'PEs':>4s} {'clock':>6s} {'met':>5s} {'best Fmax':>9s} "
          f"{'util':>6s} {'GMAC/s at clock':>15s} {'at Fmax (what-if)':>17s}")
    for (rows, cols, clock), runs in sorted(designs.items(), key=lambda kv: (kv[0][0] * kv[0][1],
                                                                            kv[0])):
        util = m * k * n / (rows * cols * gemm_cycles(m, k, n, rows, cols))
        met = sum(bool(r.get("timing_met")) for r in runs)
        fmax = max(r.get("fmax_mhz") or 0.0 for r in runs)
        at_clock = f"{rows * cols * clock * util / 1e3:.2f}" if met else "missed"
        print(f"  {rows:>3d}x{cols:<2d} {rows * cols:4d} {clock:6g} {met:>2d}/{len(runs):<2d} "
              f"{fmax:9.1f} {100 * util:5.1f}% {at_clock:>15s} "
              f"{rows * cols * fmax * util / 1e3:17.2f}")


def main():
    from gen.__main__ import main as gen_main
    from gen.sweep import load_spec, sweep_folder
    from gen.timing_frontier import DEFAULT_FRONTIER, load_frontier, read_frontier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(SPEC))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--address")
    parser.add_argument("--cpus")
    parser.add_argument("--out")
    parser.add_argument("--frontier")
    args = parser.parse_args()

    command = ["sweep", "--spec", args.spec]
    for flag in ("address", "cpus", "out", "frontier"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    if args.dry_run:
        return gen_main(command + ["--dry-run"])
    start = time.monotonic()
    code = gen_main(command)
    if code not in (0, 5):            # bad input or interrupted: nothing to summarize
        return code
    spec = load_spec(args.spec)
    folder = sweep_folder(args.out, spec)
    measured_path = folder / "frontier.yaml"
    committed = load_frontier(DEFAULT_FRONTIER)
    print(f"== frontier (rule {spec.frontier_rule}) vs the one the allocator reads now "
          f"({DEFAULT_FRONTIER.relative_to(REPO)})")
    measured = read_frontier(measured_path)["frontier"] if measured_path.exists() else []
    now = dict(committed)
    for entry in measured:
        before = now.get(entry["clock_mhz"])
        print(f"  {entry['clock_mhz']:6g} MHz: {entry['max_pes']:4d} PEs ({entry['array']}, "
              f"Fmax {entry.get('fmax_mhz', 0):.1f} MHz, {entry['seeds_met']}/{entry['seeds']} "
              f"seeds met)   committed: {before if before is not None else '-'}")
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    print_gemm_rates(results)
    out = REPO / "rtl_out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"spec": str(args.spec), "points": len(results),
               "finished": sum(r.get("status") == "ok" for r in results),
               "timing_met": sum(bool(r.get("timing_met")) for r in results),
               "frontier": measured, "committed_frontier": [list(p) for p in committed],
               "seconds_this_run": round(time.monotonic() - start, 1),
               "build_seconds": round(sum(r.get("seconds") or 0 for r in results), 1)}
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'sweep.json'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
