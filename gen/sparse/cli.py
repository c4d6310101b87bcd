"""``python -m gen prune``: train or load the tiny ViT, prune it, quantize it, report.

Writes into ``--out`` (default rtl_out/prune): ``report.json``, ``prune.png`` (accuracy against
sparsity and footprint), and per encoder layer ``layer<i>.json`` plus ``layer<i>_<matrix>.npz``
(the compressed INT8 matrices of docs/sparse_attention.md section 3). ``python -m gen.sparse.cli``
runs the same without the top-level CLI.
"""

import json
import sys
import time
from pathlib import Path

from .. import cliargs
from ..artifacts import check_writable_folder

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser):
    """Add the ``prune`` options to an argparse parser."""
    parser.add_argument("--seed", type=cliargs.seed, default=0,
                        help="seed of data split, init, training")
    parser.add_argument("--block", type=cliargs.count(1, 64), default=8,
                        help="column block B = the kernel's lane count (default 8)")
    parser.add_argument("--out", default="rtl_out/prune", help="output folder")
    parser.add_argument("--cache", default="rtl_out/models",
                        help="folder of cached float and pruned models")
    parser.add_argument("--quick", action="store_true",
                        help="few epochs and a coarse search (for tests; lower accuracy)")
    parser.add_argument("--tolerance", type=cliargs.nonnegative_float, default=1.0,
                        help="accuracy points the pruned model may lose on the validation set")
    return parser


def _log(message):
    print(message, flush=True)


def int8_stats(qmodel):
    """Sparsity and footprint counted from the exported INT8 matrices (see prune.mask_stats)."""
    macs = dense_macs = foot = dense_foot = 0
    per_matrix = {}
    for layer in qmodel.layers:
        t, d, h = layer.tokens, layer.head_dim, layer.heads
        for name, cm in layer.matrices().items():
            f = cm.footprint()
            n = cm.shape[1]
            macs += t * sum(len(r) * min(cm.block, n - c * cm.block)
                            for c, r in enumerate(cm.rows))
            dense_macs += t * cm.shape[0] * cm.shape[1]
            foot += f["total"]
            dense_foot += f["dense"]
            per_matrix[f"layer{layer.index}.{name}"] = {
                "kept_rows": len(cm.kept_rows), "words": cm.words,
                "dense_words": cm.shape[0] * cm.blocks, **f}
        macs += t * t * sum(len(k) for k in layer.kept_features) + t * t * d * h
        dense_macs += 2 * t * t * d * h
    return {"macs": macs, "dense_macs": dense_macs, "sparsity": 1 - macs / dense_macs,
            "footprint": foot, "dense_footprint": dense_foot, "per_matrix": per_matrix}


def _plot(path, rows, history):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "sparsity", "fraction of MACs removed"),
                           (axes[1], "footprint", "weight memory incl. indices (bytes)")):
        trials = [h for h in history]
        ax.scatter([h[key] for h in trials], [h["val"] for h in trials], s=12, c=[
            "tab:green" if h["accepted"] else "tab:red" for h in trials], alpha=0.5,
            label="search trials (val; green kept, red backed off)")
        ax.plot([r[key] for r in rows], [r["test"] for r in rows], "o-", color="tab:blue",
                label="stages (test)")
        for r in rows:
            ax.annotate(r["stage"], (r[key], r["test"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        if key == "footprint":
            ax.axvline(rows[0]["dense_footprint"], ls="--", color="gray", label="dense bytes")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Tiny ViT on 8x8 digits: row + column-block pruning, INT8")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args):
    """Run the pipeline for parsed ``args``; returns the exit code."""
    import torch
    from .prune import PruneSettings, load_or_prune, mask_stats
    from .quantize import quantize_model
    from .vit import evaluate, load_digits_split

    torch.set_num_threads(1)
    check_writable_folder(args.out, "--out")
    check_writable_folder(args.cache, "--cache")
    start = time.monotonic()
    settings = PruneSettings.for_mode(args.quick, block=args.block, tolerance=args.tolerance)
    float_model, info, result = load_or_prune(args.seed, settings, quick=args.quick,
                                              cache_dir=args.cache, progress=_log)
    data = load_digits_split(args.seed)
    _log("[quantize] calibrating on the training images, INT8 inference")
    q_start = time.monotonic()
    qmodel = quantize_model(result.model, data.train[0], block=args.block)
    int8 = {"val": evaluate(result.model, data.val, forward=qmodel),
            "test": evaluate(result.model, data.test, forward=qmodel)}
    q_seconds = time.monotonic() - q_start
    istats = int8_stats(qmodel)
    dense = mask_stats(float_model, args.block)

    rows = []
    for stage, acc, stats in (("float", result.accuracy["float"], dense),
                              ("rows", result.accuracy["rows"], result.stats["rows"]),
                              ("rows+columns", result.accuracy["columns"],
                               result.stats["columns"]),
                              ("INT8", int8, istats)):
        rows.append({"stage": stage, "val": acc["val"], "test": acc["test"],
                     "sparsity": stats["sparsity"], "footprint": stats["footprint"],
                     "dense_footprint": stats["dense_footprint"]})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    qmodel.save(out)
    report = {
        "seed": args.seed, "block": args.block, "quick": args.quick,
        "tolerance": args.tolerance, "settings": settings.__dict__,
        "float_model": info, "pruned_model_sha256": qmodel.sha256,
        "prune_seconds": result.seconds, "quantize_seconds": round(q_seconds, 1),
        "ratios": result.ratios, "stages": rows, "int8": istats, "history": result.history,
        "kept_features": {f"layer{l.index}": [k.tolist() for k in l.kept_features]
                          for l in qmodel.layers},
        "files": sorted(p.name for p in out.glob("layer*")),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    _plot(out / "prune.png", rows, result.history)

    print(f"\n{'stage':13s} {'val %':>6s} {'test %':>7s} {'MACs removed':>13s} "
          f"{'bytes (incl. idx)':>18s} {'dense bytes':>12s}")
    for r in rows:
        print(f"{r['stage']:13s} {r['val']:6.1f} {r['test']:7.1f} {r['sparsity']:13.1%} "
              f"{r['footprint']:18d} {r['dense_footprint']:12d}")
    print(f"\naccepted ratios: rows {result.ratios['rows']:.3f}, Q/K features per head "
          f"{result.ratios['qk_features']:.3f}, words {result.ratios['words']:.3f}; "
          f"float training {info['train_seconds']}s, pruning {result.seconds}s, "
          f"quantization {q_seconds:.1f}s")
    _log(f"[report] {out / 'report.json'}, {out / 'prune.png'} "
         f"({time.monotonic() - start:.0f}s in all)")
    return 0


def main(argv=None):
    """``python -m gen.sparse.cli`` is ``python -m gen prune``."""
    from gen.__main__ import main as gen_main
    return gen_main(["prune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
