"""Output-stationary vs weight-stationary: where each generated dataflow wins, measured.

    python benchmarks/bench_dataflow.py [--rows 8] [--cols 8] [--drain-lanes 1] [--clock-mhz 125]

Simulates both engines of the same ``R x C`` array (``gen.hw.gemm`` and ``gen.hw.ws_gemm``,
in a GemmAccelerator with the default design's buffers) in Verilator on GEMMs of several
shapes, every result checked against the golden model, the output never stalled and no host
transfer. Prints, per shape and dataflow, the measured cycles, the PE utilization (M*K*N /
(R*C) over the cycles), GMAC/s at ``--clock-mhz`` (a what-if for a dataflow not built at that
clock) and the cycle model's error (``gen.cycles.engine_gemm_cycles``, exact: 0), then the
winner. A second table runs small GEMMs as batches (one BATCH job of B GEMMs, output-stationary
only) against the same GEMM as one job. The tables go to rtl_out/bench/dataflow-<R>x<C>-l<L>.json
and a bar plot beside it.
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Shapes that show the difference: large and square, not dividing by 8, short reductions, a
#: first-layer convolution (K = 27: 3x3x3), batch-1 and batch-7 fully connected layers.
SHAPES = [(128, 128, 128), (100, 100, 100), (16, 16, 16), (128, 16, 128), (256, 27, 64),
          (1, 512, 64), (7, 256, 64), (121, 64, 32)]
DATAFLOWS = ("output_stationary", "weight_stationary")
#: Small GEMMs as batches (attention heads, grouped layers): M x K x N and the batch sizes.
BATCHES = [((16, 16, 16), (1, 2, 4, 8, 32)), ((8, 64, 8), (1, 8)), ((17, 27, 16), (1, 8))]


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    labels = sorted({r["shape"] for r in rows}, key=[r["shape"] for r in rows].index)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for offset, flow in ((-0.2, DATAFLOWS[0]), (0.2, DATAFLOWS[1])):
        util = [100 * next(r["utilization"] for r in rows
                           if r["shape"] == s and r["dataflow"] == flow) for s in labels]
        ax.bar(x + offset, util, width=0.4, label=flow.replace("_", "-"))
    ax.set_xticks(x, labels, rotation=30)
    ax.set_ylabel("PE utilization %")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    from gen.config import load_config
    from gen.cycles import engine_gemm_cycles, ideal_gemm_cycles
    from gen.host.layout import GemmShape
    from verif.measure_gemm import measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--drain-lanes", type=int, default=1)
    parser.add_argument("--clock-mhz", type=float, default=125.0)
    args = parser.parse_args(argv)
    b = load_config().buffers
    r, c, lanes = args.rows, args.cols, args.drain_lanes
    out = REPO / "rtl_out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    shapes = [s for s in SHAPES if s[0] * s[2] <= b.out_depth and s[2] <= b.param_depth and
              all(GemmShape(*s).act_words(r, flow) <= b.act_depth for flow in DATAFLOWS) and
              GemmShape(*s).wgt_words(c) <= b.wgt_depth]
    rows, batch_rows = [], []
    for flow in DATAFLOWS:
        print(f"== {r}x{c} {flow}, {lanes} drain lane(s): Verilator, {len(shapes)} GEMMs",
              flush=True)
        params = dict(rows=r, cols=c, dataflow=flow, drain_lanes=lanes, act_depth=b.act_depth,
                      wgt_depth=b.wgt_depth, param_depth=b.param_depth,
                      out_depth=b.out_depth)
        jobs = [[f"{m}x{k}x{n}", m, k, n] for m, k, n in shapes]
        if flow == "output_stationary":
            jobs += [[f"batch {m}x{k}x{n}", m, k, n, b] for (m, k, n), batches in BATCHES
                     for b in batches]
        for result in measure(params, jobs, out / f"dataflow-raw-{r}x{c}-l{lanes}-{flow}.json"):
            m, k, n, cycles = result["m"], result["k"], result["n"], result["cycles"]
            batch = result["batch"]
            model = engine_gemm_cycles(m, k, n, r, c, lanes, dataflow=flow, batch=batch)
            util = ideal_gemm_cycles(m, k, n, r, c, batch) / cycles
            (batch_rows if result["name"].startswith("batch") else rows).append(
                {"shape": f"{m}x{k}x{n}", "batch": batch, "dataflow": flow, "cycles": cycles,
                 "utilization": util, "gmac_s": r * c * util * args.clock_mhz / 1e3,
                 "model": model, "model_error": (model - cycles) / cycles})
    print(f"\n{r}x{c} array, {lanes} drain lane(s); GMAC/s at {args.clock_mhz:g} MHz "
          f"(what-if for a dataflow not built at that clock)")
    print(f"{'M x K x N':>14s} | {'OS cycles':>9s} {'util':>6s} {'GMAC/s':>6s} | "
          f"{'WS cycles':>9s} {'util':>6s} {'GMAC/s':>6s} | {'model err':>9s} | winner")
    for shape in dict.fromkeys(row["shape"] for row in rows):
        os_, ws = (next(row for row in rows if row["shape"] == shape and row["dataflow"] == f)
                   for f in DATAFLOWS)
        worst = max(abs(os_["model_error"]), abs(ws["model_error"]))
        winner = ("WS" if ws["cycles"] < os_["cycles"] else "OS" if os_["cycles"] < ws["cycles"]
                  else "tie")
        ratio = max(os_["cycles"], ws["cycles"]) / min(os_["cycles"], ws["cycles"])
        print(f"{shape:>14s} | {os_['cycles']:>9d} {100 * os_['utilization']:>5.1f}% "
              f"{os_['gmac_s']:>6.2f} | {ws['cycles']:>9d} {100 * ws['utilization']:>5.1f}% "
              f"{ws['gmac_s']:>6.2f} | {100 * worst:>8.2f}% | {winner} x{ratio:.2f}")
    print(f"\nBatches on the output-stationary engine (one BATCH job of B GEMMs; the weight-"
          f"stationary engine runs none) against B jobs of one GEMM (cycles of the single job "
          f"above, times B; host commands not counted)")
    print(f"{'M x K x N':>14s} {'B':>3s} | {'cycles':>7s} {'util':>6s} {'GMAC/s':>6s} | "
          f"{'B jobs':>7s} {'util':>6s} | {'model err':>9s}")
    for row in batch_rows:
        single = next(x for x in batch_rows if x["shape"] == row["shape"] and x["batch"] == 1)
        apart = f"{single['cycles'] * row['batch']:>7d} {100 * single['utilization']:>5.1f}%"
        print(f"{row['shape']:>14s} {row['batch']:>3d} | {row['cycles']:>7d} "
              f"{100 * row['utilization']:>5.1f}% {row['gmac_s']:>6.2f} | {apart} | "
              f"{100 * abs(row['model_error']):>8.2f}%")
    name = f"dataflow-{r}x{c}-l{lanes}"
    (out / f"{name}.json").write_text(json.dumps(rows + batch_rows, indent=2) + "\n")
    plot(rows, out / f"{name}.png", f"{r}x{c}, {lanes} drain lane(s): PE utilization (Verilator)")
    print(f"\nwrote {out / (name + '.json')} and {name}.png")


if __name__ == "__main__":
    main()
