"""Full (non-quick) pruning + INT8 pipeline of the tiny ViT; prints the accuracy/sparsity table.

    nice -n 10 /work/venv/bin/python benchmarks/bench_prune.py [--seed 0] [--block 8] [--fresh]

``--fresh`` trains and prunes into a new temporary cache so the timings include training; without
it cached models in rtl_out/models are reused. Results go to rtl_out/bench/prune.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gen.sparse import cli  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=1.0)
    parser.add_argument("--fresh", action="store_true", help="ignore cached models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = tmp if args.fresh else "rtl_out/models"
        argv = ["--seed", str(args.seed), "--block", str(args.block), "--tolerance",
                str(args.tolerance), "--out", "rtl_out/bench/prune", "--cache", cache]
        start = time.monotonic()
        code = cli.main(argv)
        print(f"bench_prune: {time.monotonic() - start:.1f}s wall")
    return code


if __name__ == "__main__":
    sys.exit(main())
