"""Accuracy of the all-integer ViT (docs/vit.md) against float, GELU and ReLU, on held-out digits.

    nice -n 10 .venv/bin/python benchmarks/bench_vit_accuracy.py [--quick] [--seed 0] [--fresh]

For each activation (gelu, relu) and each training recipe (``clamp``: attention scores clamped
during training to what the INT8 score holds, or not) it prints the test-split accuracy of the
float model, of its integer reference (unpruned), of the pruned float model and of the pruned
integer model, plus the training and pruning times (as recorded when the model was trained:
``--fresh`` trains everything anew in a temporary cache). Models are cached in rtl_out/models.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 epochs, coarse pruning search")
    parser.add_argument("--fresh", action="store_true", help="ignore cached models")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    from gen.sparse.prune import PruneSettings, load_or_prune
    from gen.vit.model import IntViT, digits_pixels
    from gen.sparse.vit import load_digits_split

    pixels, labels = digits_pixels(args.seed, "test")
    calib = load_digits_split(args.seed).train[0]
    rows = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cache = tmp if args.fresh else "rtl_out/models"
        for activation in ("gelu", "relu"):
            for clamp in (True, False):
                settings = PruneSettings.for_mode(args.quick)
                float_model, info, result = load_or_prune(
                    args.seed, settings, quick=args.quick, cache_dir=cache,
                    activation=activation, clamp_scores=clamp)
                int_dense = IntViT.from_float(float_model, calib)
                int_pruned = IntViT.from_float(result.model, calib)
                rows.append({
                    "activation": activation, "clamp": "yes" if clamp else "no",
                    "float": info["test_accuracy"],
                    "int": int_dense.accuracy(pixels, labels),
                    "pruned float": result.accuracy["columns"]["test"],
                    "pruned int": int_pruned.accuracy(pixels, labels),
                    "MACs removed": 100 * result.stats["columns"]["sparsity"],
                    "train s": info["train_seconds"], "prune s": result.seconds})
    mode = "quick (10 epochs)" if args.quick else "full (60 epochs)"
    print(f"bench_vit_accuracy: seed {args.seed}, {mode}, test split {len(labels)} images, "
          f"accuracy in %")
    cols = list(rows[0])
    print(" | ".join(f"{c:>12s}" for c in cols))
    print("-|-".join("-" * 12 for _ in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>12.1f}" if isinstance(r[c], float) else f"{r[c]:>12}"
                         for c in cols))
    print(f"bench_vit_accuracy: {time.monotonic() - start:.1f}s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
