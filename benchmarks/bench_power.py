"""Issue 11, point 3: the power model of the default GEMM design, per batch size and frequency
level, as a table and a heat map.

Power is :mod:`gen.runtime.power_model` (static + per-class activity x energy x f): the
activity is measured in Verilator on the digits ViT's real operands
(``python -m verif.measure_activity``), the per-toggle energies are ASSUMPTIONS (no ECP5 figure
was found for them), so every power here is a WHAT-IF. Writes ``power.txt`` and
``power_heatmap.png`` to ``rtl_out/bench/`` (``--out`` elsewhere).

    .venv/bin/python benchmarks/bench_power.py [--out DIR]
"""

import argparse
import glob
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from gen.runtime.model_device import ModelDevice  # noqa: E402
from gen.runtime.power_model import CONSTANTS, PowerModel  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _default_report():
    """A build report of the default design under rtl_out/, if one exists."""
    for path in sorted(glob.glob(str(REPO / "rtl_out" / "default-*" / "report.json"))):
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if report.get("design") == "default" and isinstance(report.get("resources"), dict):
            return path
    return None


def report_lines(device, report_path):
    model = device.power_model
    lines = ["Power model of the default GEMM design (8x8, digits ViT) -- "
             f"{model.label}", ""]
    lines.append("Constants (gen/runtime/power_model.py CONSTANTS):")
    for name, c in CONSTANTS.items():
        tag = "ASSUMPTION" if c.assumption else "sourced"
        lines.append(f"  {name:18s} {c.value:g} {c.unit} [{tag}] {c.source}")
    lines.append("")
    lines.append(f"Resources ({model.resource_source}): " +
                 ", ".join(f"{k} {v}" for k, v in model.resources.items()) +
                 f"; operand block RAMs read every cycle: {model.bram_reads_share:.3f} of them")
    if report_path:
        built = PowerModel.for_design(device.config, device.levels, model.activity,
                                      report=report_path)
        lines.append(f"Build report {Path(report_path).relative_to(REPO)}: " +
                     ", ".join(f"{k} {v}" for k, v in built.resources.items()) +
                     f" -> {built.power_w(device.levels[-1], device.max_batch):.4f} W at "
                     f"{device.levels[-1]:g} MHz, batch {device.max_batch} (estimate: "
                     f"{model.power_w(device.levels[-1], device.max_batch):.4f} W)")
    lines.append("")
    lines.append(f"Measured activity ({model.activity.source}): toggles per bit per cycle")
    lines.append(f"  {'batch':>5} {'lut':>7} {'ff':>7} {'mult':>7} {'bram rd':>7} "
                 f"{'PE util':>7}")
    for b in [None, *range(1, device.max_batch + 1)]:
        a = model.activity.at(b)
        util = "" if b is None else f"{device.utilization(b):7.3f}"
        lines.append(f"  {'idle' if b is None else b:>5} {a['lut']:7.4f} {a['ff']:7.4f} "
                     f"{a['mult']:7.4f} {a['bram']:7.3f} {util}")
    lines.append("")
    batches = list(range(1, device.max_batch + 1))
    lines.append("Power (W) while busy, per frequency level (rows) and batch size (columns); "
                 "idle in the last column:")
    lines.append("  " + f"{'MHz':>7} " + " ".join(f"{'b=' + str(b):>7}" for b in batches) +
                 f" {'idle':>7}")
    _, power = device.table()
    for i, f in enumerate(device.levels):
        lines.append("  " + f"{f:7.2f} " + " ".join(f"{power[i, b - 1]:7.4f}" for b in batches)
                     + f" {device.power_w(i):7.4f}")
    lines.append("")
    top = device.levels[-1]
    parts = model.breakdown_w(top, device.max_batch)
    idle = model.breakdown_w(top)
    lines.append(f"Breakdown at {top:g} MHz (W): " +
                 ", ".join(f"{k} {v:.4f} (idle {idle[k]:.4f})" for k, v in parts.items()))
    dyn = sum(parts.values()) - parts["static"]
    act = parts["lut4"] + parts["ff"] + parts["mult18"]
    lines.append(f"  dynamic {dyn:.4f} W, of which activity-dependent (lut4 + ff + mult18) "
                 f"{act:.4f} W ({100 * act / dyn:.0f} %)")
    lines.append("")
    lines.append("Check against published measurements: none found (no ECP5 / ULX3S power "
                 "measurement of this or a comparable design, no per-resource ECP5 energy "
                 "figure); only the static core current has a (secondary) published source. "
                 "The model is unvalidated.")
    return lines, power


def heat_map(device, power, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(power, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(device.max_batch), [str(b) for b in range(1, device.max_batch + 1)])
    ax.set_yticks(range(len(device.levels)), [f"{f:g}" for f in device.levels])
    ax.set_xlabel("batch size")
    ax.set_ylabel("frequency level (MHz)")
    for i in range(power.shape[0]):
        for j in range(power.shape[1]):
            ax.text(j, i, f"{power[i, j]:.3f}", ha="center", va="center", fontsize=6,
                    color="white" if power[i, j] < power.mean() else "black")
    fig.colorbar(image, ax=ax, label="power while busy (W)")
    ax.set_title("default 8x8 GEMM design, digits ViT: power (WHAT-IF energies,\n"
                 "Verilator-measured activity)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "rtl_out" / "bench")
    args = parser.parse_args(argv)
    device = ModelDevice()
    lines, power = report_lines(device, _default_report())
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (args.out / "power.txt").write_text(text)
    heat_map(device, power, args.out / "power_heatmap.png")
    print(text)
    print(f"written: {args.out / 'power.txt'}, {args.out / 'power_heatmap.png'}")
    assert np.isfinite(power).all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
