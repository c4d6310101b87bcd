"""Cost-model speed and a dataflow comparison.

Prints (1) how many layer configurations per second `gen.cost.layer_cost` scores on one core
(goal: at least 100,000), for the generated engine and the classic dataflows, and (2) each
network's cycles, utilization, traffic and energy on an 8x8 array under every dataflow.

    python benchmarks/bench_cost.py
"""

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from gen import cost  # noqa: E402
from gen.workloads import get_workload, workload_names  # noqa: E402


def random_engines(rng, n):
    rows = rng.integers(1, 17, (n, 1))
    cols = rng.integers(1, 17, (n, 1))
    return {"rows": rows, "cols": cols,
            "act_depth": 2 ** rng.integers(8, 15, (n, 1)),
            "wgt_depth": 2 ** rng.integers(8, 15, (n, 1)),
            "param_depth": np.full((n, 1), 2048),
            "out_depth": 2 ** rng.integers(10, 17, (n, 1)),
            "buffer_bytes": 2 ** rng.integers(10, 22, (n, 1))}


def rate(layers, dataflow, configs=4000, repeats=3):
    rng = np.random.default_rng(0)
    engine = random_engines(rng, configs)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        cost.layer_cost(layers, engine, dataflow)
        best = max(best, configs * len(layers["M"]) / (time.perf_counter() - start))
    return best


def main():
    print("cost-model rate (layer x configuration evaluations per second, one core):")
    print(f"  {'network':16s} {'layers':>6s} " + " ".join(f"{d:>12s}" for d in cost.DATAFLOWS))
    for name in ("resnet50", "mobilenet_v2", "deit_tiny"):
        layers = get_workload(name).as_arrays()
        rates = [rate(layers, d) for d in cost.DATAFLOWS]
        print(f"  {name:16s} {len(layers['M']):6d} " + " ".join(f"{r:12,.0f}" for r in rates))
    print("  goal: >= 100,000 per second\n")

    engine = {"rows": 8, "cols": 8, "act_depth": 8192, "wgt_depth": 8192, "param_depth": 4096,
              "out_depth": 1 << 20, "buffer_bytes": 1 << 18}
    print("8x8 array, 100 MHz, 2 B/cycle off-chip; generated engine with 8192-word buffers, "
          "classic ones with 256 KiB")
    print(f"  {'network':16s} {'dataflow':12s} {'Mcycles':>10s} {'util %':>7s} "
          f"{'traffic MB':>11s} {'energy mJ':>10s}")
    for name in workload_names():
        if name == "default":
            continue
        layers = get_workload(name).as_arrays()
        for dataflow in cost.DATAFLOWS:
            r = cost.layer_cost(layers, engine, dataflow)
            if not r["feasible"].all():
                print(f"  {name:16s} {dataflow:12s} (a layer does not fit the buffers)")
                continue
            cycles = r["cycles"].sum()
            util = r["macs"].sum() / (r["compute_cycles"].sum() * 64)
            print(f"  {name:16s} {dataflow:12s} {cycles / 1e6:10.2f} {100 * util:7.1f} "
                  f"{r['traffic_bytes'].sum() / 1e6:11.2f} {r['energy_pj'].sum() * 1e-9:10.3f}")


if __name__ == "__main__":
    main()
