"""Issue 11, point 7: the power-capped controllers on the WHAT-IF model device.

Per controller, cap trace and arrival rate: throughput relative to the oracle (same arrivals,
same caps), fraction of time above the cap and the worst overshoot (true mean power per control
period), latency-target violations, and the control periods before the setting stops changing
after each cap change (probes before settling). Then the issue's goals, checked.

EVERYTHING HERE IS MEASURED ON THE WHAT-IF MODEL DEVICE (gen/runtime/model_device.py): the
throughput is the GEMM engine's exact cycle model, but the power is a provisional formula whose
constants are guesses, batching is not measured in Verilator and the PLL is not switched at run
time. The last section shows how much the batching gain depends on those constants.

    .venv/bin/python benchmarks/bench_batchdvfs.py [--quick]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from gen.runtime.model_device import WHAT_IF_POWER, ModelDevice  # noqa: E402
from gen.runtime.serve import (ServeConfig, format_table, parse_cap_points,  # noqa: E402
                               run_serve_sim)

TRACES = {
    "step": ([(0, 0.40), (20, 0.26), (40, 0.40)], 60.0),
    "ramp": ([(0, 0.40), (5, 0.36), (10, 0.32), (15, 0.28), (20, 0.24), (25, 0.28),
              (30, 0.32), (35, 0.36), (40, 0.40)], 60.0),
}
RATES = {"moderate 2000 req/s": 2000.0, "heavy 5000 req/s": 5000.0}
CONTROLLERS = ("batchdvfs", "bobd", "freq_b1", "freq_bmax", "clipper", "oracle")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20 s traces")
    args = parser.parse_args()
    results = {}
    start = time.monotonic()
    print("BatchDVFS benchmark -- MEASURED ON THE WHAT-IF MODEL DEVICE (provisional power "
          "constants, see docs/runtime.md)")
    print(f"design: default 8x8 @ 25..125 MHz (17 PLL levels), network digits_vit, control "
          f"period 0.1 s, latency target 20 ms, power-reading noise "
          f"{100 * WHAT_IF_POWER['noise_rel']:g} %")
    for trace_name, (points, duration) in TRACES.items():
        if args.quick:
            points = [(t / 3, c) for t, c in points]
            duration /= 3
        trace = parse_cap_points(points, trace_name)
        for rate_name, rate in RATES.items():
            config = ServeConfig(duration_s=duration, period_s=0.1, latency_target_ms=20,
                                 arrivals={"kind": "poisson", "rate_rps": rate},
                                 controllers=CONTROLLERS, seed=1)
            t0 = time.monotonic()
            _, rows = run_serve_sim(config, trace, progress=None)
            results[trace_name, rate_name] = {r["controller"]: r for r in rows}
            print()
            print(format_table(rows, f"== cap trace {trace_name} ({len(points)} points, "
                                     f"{duration:g} s), Poisson {rate_name} "
                                     f"[{time.monotonic() - t0:.0f} s to simulate]"))
            bobd = results[trace_name, rate_name]["bobd"]
            print(f"   bobd probes per job (cap change or re-search): "
                  f"{bobd['bobd_probes_per_job']}")
    print()
    print("== goals (WHAT-IF model device)")
    for (trace_name, rate_name), rows in results.items():
        b1 = rows["freq_b1"]["throughput_rps"]
        for name in ("batchdvfs", "bobd"):
            r = rows[name]
            ok_thr = r["vs_oracle"] >= 0.95
            ok_cap = r["above_cap_frac"] < 0.01
            gain = r["throughput_rps"] / b1 - 1
            line = (f"  {trace_name:4s} {rate_name:20s} {name:9s}: {r['vs_oracle']:.3f} of the "
                    f"oracle ({'met' if ok_thr else 'NOT met'}: >= 0.95), "
                    f"{100 * r['above_cap_frac']:.2f} % above the cap "
                    f"({'met' if ok_cap else 'NOT met'}: < 1 %), {100 * gain:+.1f} % vs freq_b1 "
                    f"({'met' if gain >= 0.25 else 'NOT met'}: >= +25 %)")
            if name == "bobd":
                most = max(r["bobd_probes_per_job"])
                line += f", <= {most} probes per job ({'met' if most <= 20 else 'NOT met'}: <= 20)"
            print(line)
    print()
    print("== sensitivity of the batching gain to the WHAT-IF power split (table, full load):")
    print("   best throughput under the cap over all batches / best at batch 1")
    full = WHAT_IF_POWER["c0_w_per_mhz"] + WHAT_IF_POWER["c1_w_per_mhz"]
    for share in (1 / 3, 2 / 3, 0.8):
        power = {"c0_w_per_mhz": full * (1 - share), "c1_w_per_mhz": full * share}
        thr, pw = ModelDevice(power=power).table()
        gains = []
        for cap in (0.40, 0.32, 0.26):
            best = thr[pw <= cap].max()
            best1 = thr[:, 0][pw[:, 0] <= cap].max()
            gains.append(f"cap {cap:.2f} W: {100 * (best / best1 - 1):+.1f} %")
        label = " (default)" if abs(share - 2 / 3) < 1e-9 else ""
        print(f"   activity share of dynamic power {share:.2f}{label}: {', '.join(gains)}")
    print(f"\n[{time.monotonic() - start:.0f} s in all]")


if __name__ == "__main__":
    main()
