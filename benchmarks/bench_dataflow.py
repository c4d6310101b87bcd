"""Output-stationary vs weight-stationary: where each generated dataflow wins, measured.

    python benchmarks/bench_dataflow.py [--rows 8] [--cols 8] [--drain-lanes 1] [--clock-mhz 125]

Simulates both engines of the same ``R x C`` array (``gen.hw.gemm`` and ``gen.hw.ws_gemm``,
in a GemmAccelerator with the default design's buffers) in Verilator on GEMMs of several
shapes, every result checked against the golden model, the output never stalled and no host
transfer. Prints, per shape and dataflow, the measured cycles, the PE utilization (M*K*N /
(R*C) over the cycles), GMAC/s at ``--clock-mhz`` (a what-if for a dataflow not built at that
clock) and the cycle model's error (``gen.cycles.engine_gemm_cycles``, exact: 0), then the
winner. The table goes to rtl_out/bench/dataflow-<R>x<C>-l<L>.json and a bar plot beside it.
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
    rows = []
    for flow in DATAFLOWS:
        print(f"== {r}x{c} {flow}, {lanes} drain lane(s): Verilator, {len(shapes)} GEMMs",
              flush=True)
        params = dict(rows=r, cols=c, dataflow=flow, drain_lanes=lanes, act_depth=b.act_depth,
                      wgt_depth=b.wgt_depth, param_depth=b.param_depth,
                      out_depth=b.out_depth)
        for result in measure(params, shapes, out / f"dataflow-raw-{r}x{c}-l{lanes}-{flow}.json"):
            m, k, n, cycles = result["m"], result["k"], result["n"], result["cycles"]
            model = engine_gemm_cycles(m, k, n, r, c, lanes, dataflow=flow)
            util = ideal_gemm_cycles(m, k, n, r, c) / cycles
            rows.append({"shape": f"{m}x{k}x{n}", "dataflow": flow, "cycles": cycles,
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
    name = f"dataflow-{r}x{c}-l{lanes}"
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, out / f"{name}.png", f"{r}x{c}, {lanes} drain lane(s): PE utilization (Verilator)")
    print(f"\nwrote {out / (name + '.json')} and {name}.png")


if __name__ == "__main__":
    main()
