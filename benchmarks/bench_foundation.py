"""Foundation benchmark: PE utilization of GEMMs in simulation, Fmax and resources on the board.

    python benchmarks/bench_foundation.py [--config FILE] [--skip-build]

1. Simulates the config's accelerator (its array and buffers) in Verilator and runs GEMMs of
   several shapes with the output never stalled; every result is checked against the golden
   model. Prints measured cycles, the ideal M*K*N/(R*C), PE utilization (ideal / measured),
   the sustained GMAC/s at the config's clock (R*C * utilization * clock) and the analytic
   model's prediction.
2. Builds the config for its board with `python -m gen build` (skipped when the same config
   was built before) and prints Fmax and utilization from its report.json.

Figures go to rtl_out/bench/foundation-<design>.json and a plot, utilization-<design>.png,
beside it.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:      # gen and verif from this checkout, installed or not
    sys.path.insert(0, str(REPO))

SHAPES = [(128, 128, 128), (64, 64, 64), (100, 100, 100), (256, 64, 64), (32, 512, 48),
          (16, 16, 16), (8, 1024, 16), (128, 16, 128)]


def simulate(design, shapes, out_path):
    from verif.measure_gemm import measure
    return measure(design.system_params, shapes, out_path)


def fitting_shapes(design):
    from gen.host.layout import GemmShape
    c = design.config
    fits = []
    for m, k, n in SHAPES:
        if (GemmShape(m, k, n).act_words(c.array.rows, c.array.dataflow) <= c.buffers.act_depth and
                -(-n // c.array.cols) * k <= c.buffers.wgt_depth and
                m * n <= c.buffers.out_depth and n <= c.buffers.param_depth):
            fits.append((m, k, n))
    return fits


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['m']}x{r['k']}x{r['n']}" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(labels, [100 * r["utilization"] for r in rows])
    ax.axhline(85, color="red", linewidth=1, label="goal 85%")
    ax.set_ylabel("PE utilization %")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    from gen.config import load_config
    from gen.design import prepare_design
    from gen.cycles import engine_gemm_cycles, ideal_gemm_cycles as ideal_cycles

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    design = prepare_design(load_config(args.config))
    c = design.config
    out = REPO / "rtl_out" / "bench"
    out.mkdir(parents=True, exist_ok=True)

    lanes = c.array.drain_lanes
    print(f"== cycles: {c.array.rows}x{c.array.cols} {c.array.dataflow}, {lanes} drain "
          f"lane(s), Verilator, output never stalled, host transfer excluded; GMAC/s at "
          f"{c.clock_mhz:g} MHz", flush=True)
    measured = simulate(design, fitting_shapes(design), out / f"cycles_raw-{c.name}.json")
    rows = []
    print(f"{'M x K x N':>16s} {'cycles':>9s} {'ideal':>9s} {'util':>7s} {'GMAC/s':>7s} "
          f"{'model':>9s} {'model err':>9s}")
    pes = c.array.rows * c.array.cols
    for r in measured:
        ideal = ideal_cycles(r["m"], r["k"], r["n"], c.array.rows, c.array.cols)
        model = engine_gemm_cycles(r["m"], r["k"], r["n"], c.array.rows, c.array.cols, lanes,
                                   dataflow=c.array.dataflow)
        row = dict(r, ideal=ideal, utilization=ideal / r["cycles"], model=model,
                   model_error=(model - r["cycles"]) / r["cycles"])
        row["gmac_s"] = pes * row["utilization"] * c.clock_mhz / 1e3
        rows.append(row)
        print(f"{r['m']:>5d}x{r['k']:>4d}x{r['n']:>4d} {r['cycles']:>9d} {ideal:>9.0f} "
              f"{100 * row['utilization']:>6.1f}% {row['gmac_s']:>7.2f} {model:>9d} "
              f"{100 * row['model_error']:>8.2f}%")
    plot(rows, out / f"utilization-{c.name}.png",
         f"{c.name}: {c.array.rows}x{c.array.cols} PE utilization (Verilator)")

    report = None
    if not args.skip_build:
        print(f"== build: python -m gen build ({c.name} on {c.board})", flush=True)
        command = [sys.executable, "-m", "gen", "build"]
        if args.config:
            command += ["--config", args.config]
        code = subprocess.call(command, cwd=REPO)
        report_path = design.folder(REPO / "rtl_out") / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            print(f"build exit code {code}; report {report_path}")
            for net, clock in report["fmax"].items():
                print(f"Fmax {net}: {clock['achieved_mhz']:.1f} MHz "
                      f"(target {clock['constraint_mhz']:.1f}, "
                      f"{'met' if clock['met'] else 'FAILED'})")
            for key, r in report["resources"].items():
                print(f"{key:8s} used {r['used']:6d} of {r['available']:6d} "
                      f"({100 * r['used'] / r['available']:.1f}%), estimated {r['estimated']}")
    (out / f"foundation-{c.name}.json").write_text(json.dumps(
        {"config": c.as_dict(), "cycles": rows, "build_report": report}, indent=2) + "\n")
    print(f"figures: {out / f'foundation-{c.name}.json'}, {out / f'utilization-{c.name}.png'}")


if __name__ == "__main__":
    main()
