"""Issue 11, point 7: the power-capped controllers on the WHAT-IF model device.

Per controller, cap trace and arrival rate: throughput relative to the oracle (same arrivals,
same caps), fraction of time above the cap and the worst overshoot (true mean power per control
period), latency-target violations, and the control periods before the setting stops changing
after each cap change (probes before settling). Then the issue's goals, checked.

EVERYTHING HERE IS MEASURED ON THE MODEL DEVICE (gen/runtime/model_device.py): the throughput
is the GEMM engine's cycle model (equal to Verilator per batch, verif/test_batch_cycles.py), the
power is gen/runtime/power_model.py (activity measured in Verilator, per-toggle energies
ASSUMED: a WHAT-IF), and its frequency levels are every output divider VCO / n of the design's
one VCO from 25 MHz to the design's clock (what a run-time clock select can switch among; the
hardware has one two-input select today). batchdvfs and freq_b1 use this project's hold band
(relative to the idle power), batchdvfs_paper and freq_b1_paper the paper's literal [0.8 cap,
cap]; batchdvfs also has its documented refinements (a guard below the cap from the measured
reading noise, level steps sized by the reading, undoing an overshooting level raise, hold_low
0.9), batchdvfs_paper none. After the goals: batchdvfs with each refinement switched off alone,
and its trade-off of the hold band's low fraction against the guard (same arrivals, caps and
oracle). The last section shows how much the batching gain depends on the assumed energies.

Cap traces are given as fractions x of the device's power range, cap = idle + x (peak - idle)
(idle: idle at the lowest level; peak: the largest batch at the highest level), so that they
bind the same way whatever the power model's absolute level; the fractions are those the
earlier watt traces (0.40 -> 0.26 -> 0.40 W, and 0.40 -> 0.24 -> 0.40 W) had on the earlier
what-if formula's range (0.125 .. 0.414 W).

    .venv/bin/python benchmarks/bench_batchdvfs.py [--quick]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from gen.runtime.controllers import BatchDVFS  # noqa: E402
from gen.runtime.model_device import DEVICE_CONSTANTS, ModelDevice  # noqa: E402
from gen.runtime.power_model import CONSTANTS  # noqa: E402
from gen.runtime.serve import (ServeConfig, format_table, make_arrivals,  # noqa: E402
                               make_device, metrics, parse_cap_points, run_serve_sim,
                               simulate)

#: The earlier what-if's range, which the fractions below come from.
_OLD_IDLE_W, _OLD_PEAK_W = 0.125, 0.414


def _fraction(watts):
    return (watts - _OLD_IDLE_W) / (_OLD_PEAK_W - _OLD_IDLE_W)


TRACES = {
    "step": ([(0, _fraction(0.40)), (20, _fraction(0.26)), (40, _fraction(0.40))], 60.0),
    "ramp": ([(t, _fraction(w)) for t, w in ((0, 0.40), (5, 0.36), (10, 0.32), (15, 0.28),
                                               (20, 0.24), (25, 0.28), (30, 0.32), (35, 0.36),
                                               (40, 0.40))], 60.0),
}
RATES = {"moderate 2000 req/s": 2000.0, "heavy 5000 req/s": 5000.0}
CONTROLLERS = ("batchdvfs", "batchdvfs_paper", "bobd", "freq_b1", "freq_b1_paper",
               "freq_bmax", "clipper", "oracle")

#: BatchDVFS's refinements (gen/runtime/controllers.py), each switched off alone, then all.
PAPER_RULE = dict(hold_low=0.8, margin_z=0, window=1, level_steps="one", ceiling=False)
ABLATION = (("default (all refinements)", {}),
            ("margin_z 0 (no guard)", dict(margin_z=0)),
            ("window 1 (no averaging)", dict(window=1)),
            ("level_steps one", dict(level_steps="one")),
            ("ceiling off", dict(ceiling=False)),
            ("hold_low 0.8", dict(hold_low=0.8)),
            ("none (the earlier batchdvfs)", PAPER_RULE))
#: The trade-off table: hold band's low fraction x guard (the other refinements on).
HOLD_LOWS = (0.7, 0.8, 0.9, 0.95)
MARGINS = (0.0, 1.0, 2.0, 3.0)


def _batchdvfs_rows(scenarios, results, variants):
    """Per variant (label, BatchDVFS kwargs): its metrics on every scenario, against the
    oracle of the main run (same arrivals, caps and seed)."""
    out = []
    for label, kwargs in variants:
        cells = []
        for key, (config, trace) in scenarios.items():
            target = config.latency_target_ms / 1e3
            run = simulate(make_device(config), BatchDVFS(**kwargs),
                           make_arrivals(config.arrivals, config.duration_s, config.seed),
                           trace, duration_s=config.duration_s, period_s=config.period_s,
                           latency_target_s=target)
            cells.append(metrics(run, target, results[key]["oracle"]["throughput_rps"]))
        out.append((label, cells))
    return out


def _print_variants(title, scenarios, rows):
    print(title)
    names = [f"{t} {r.split()[0]}" for t, r in scenarios]
    print(f"   {'':34s} " + " ".join(f"{n:>17s}" for n in names))
    print(f"   {'':34s} " + " ".join(f"{'vs oracle  >cap %':>17s}" for _ in names))
    for label, cells in rows:
        print(f"   {label:34s} " + " ".join(
            f"{m['vs_oracle']:9.3f} {100 * m['above_cap_frac']:7.2f}" for m in cells))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20 s traces")
    args = parser.parse_args()
    results, scenarios = {}, {}
    start = time.monotonic()
    device = ModelDevice()
    idle, peak = device.idle_power_w, float(device.table()[1].max())
    print("BatchDVFS benchmark -- MEASURED ON THE MODEL DEVICE (power: "
          f"{device.power_label}; see docs/runtime.md)")
    levels = device.levels
    print(f"design: default 8x8, {len(levels)} levels {levels[0]:g} .. {levels[-1]:g} MHz "
          f"(every VCO / n of the {device.vco_mhz:g} MHz VCO in that range, a clock select's "
          f"outputs), network digits_vit, control period 0.1 s, latency target 20 ms, "
          f"power-reading noise {100 * DEVICE_CONSTANTS['noise_rel']:g} %")
    print(f"power range: idle {idle:.4f} W .. peak {peak:.4f} W; caps = idle + x (peak - idle)")
    for trace_name, (fractions, duration) in TRACES.items():
        points = [(t, round(idle + x * (peak - idle), 4)) for t, x in fractions]
        print(f"   {trace_name}: " + ", ".join(f"{t:g} s: x {x:.3f} = {c:.4f} W"
                                            for (t, x), (_, c) in zip(fractions, points)))
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
            scenarios[trace_name, rate_name] = (config, trace)
            results[trace_name, rate_name] = {r["controller"]: r for r in rows}
            print()
            print(format_table(rows, f"== cap trace {trace_name} ({len(points)} points, "
                                     f"{duration:g} s), Poisson {rate_name} "
                                     f"[{time.monotonic() - t0:.0f} s to simulate]"))
            bobd = results[trace_name, rate_name]["bobd"]
            print(f"   bobd probes per job (cap change or re-search): "
                  f"{bobd['bobd_probes_per_job']}")
    print()
    print("== goals (model device, WHAT-IF energies)")
    for (trace_name, rate_name), rows in results.items():
        b1 = rows["freq_b1"]["throughput_rps"]
        b1_paper = rows["freq_b1_paper"]["throughput_rps"]
        for name in ("batchdvfs", "batchdvfs_paper", "bobd"):
            r = rows[name]
            ok_thr = r["vs_oracle"] >= 0.95
            ok_cap = r["above_cap_frac"] < 0.01
            gain = r["throughput_rps"] / b1 - 1
            line = (f"  {trace_name:4s} {rate_name:20s} {name:15s}: {r['vs_oracle']:.3f} of the "
                    f"oracle ({'met' if ok_thr else 'NOT met'}: >= 0.95), "
                    f"{100 * r['above_cap_frac']:.2f} % above the cap "
                    f"({'met' if ok_cap else 'NOT met'}: < 1 %), {100 * gain:+.1f} % vs freq_b1 "
                    f"({'met' if gain >= 0.25 else 'NOT met'}: >= +25 %; "
                    f"{100 * (r['throughput_rps'] / b1_paper - 1):+.1f} % vs freq_b1_paper)")
            if name == "bobd":
                most = max(r["bobd_probes_per_job"])
                line += f", <= {most} probes per job ({'met' if most <= 20 else 'NOT met'}: <= 20)"
            print(line)
    print()
    t0 = time.monotonic()
    _print_variants("== batchdvfs: each refinement switched off alone (the rest as the default; "
                    "docs/runtime.md)", scenarios,
                    _batchdvfs_rows(scenarios, results, ABLATION))
    print()
    grid = [(f"hold_low {h:g}, margin_z {z:g}", dict(hold_low=h, margin_z=z))
            for h in HOLD_LOWS for z in MARGINS]
    _print_variants("== batchdvfs trade-off: hold band's low fraction x guard below the cap "
                    "(margin_z reading-noise sigmas; window 8, scaled level steps, ceiling)",
                    scenarios, _batchdvfs_rows(scenarios, results, grid))
    print(f"   [{time.monotonic() - t0:.0f} s]")
    print()
    print("== sensitivity of the batching gain to the assumed energies (table, full load):")
    print("   best throughput under the cap over all batches / best at batch 1; the activity")
    print("   energies (e_lut4_pj, e_ff_pj, e_mult18_pj) scaled by a factor, the rest as is")
    for factor in (0.5, 1.0, 2.0, 4.0):
        power = {k: CONSTANTS[k].value * factor for k in ("e_lut4_pj", "e_ff_pj", "e_mult18_pj")}
        scaled = ModelDevice(power=power)
        thr, pw = scaled.table()
        lo, hi = scaled.idle_power_w, float(pw.max())
        gains = []
        for x in (_fraction(0.40), _fraction(0.32), _fraction(0.26)):
            cap = lo + x * (hi - lo)
            best = thr[pw <= cap].max()
            best1 = thr[:, 0][pw[:, 0] <= cap].max() if (pw[:, 0] <= cap).any() else 0.0
            gain = f"{100 * (best / best1 - 1):+.1f} %" if best1 else "batch 1 never fits"
            gains.append(f"x {x:.2f} ({cap:.3f} W): {gain}")
        label = " (default)" if factor == 1.0 else ""
        print(f"   energies x{factor:g}{label}: {', '.join(gains)}")
    print(f"\n[{time.monotonic() - start:.0f} s in all]")


if __name__ == "__main__":
    main()
