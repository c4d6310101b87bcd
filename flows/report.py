"""The build report: report.json, a terminal summary and a utilization plot."""

import json
from pathlib import Path

from gen.artifacts import write_atomic

from .ecp5 import RESOURCE_CELLS

__all__ = ["make_report", "write_report", "summary_lines", "plot_utilization"]


def make_report(design, result):
    """report.json content from a prepared design and a finished flow."""
    resources = {}
    for key, cell in RESOURCE_CELLS.items():
        used = result.utilization.get(cell, {}).get("used", 0)
        resources[key] = {
            "used": used,
            "available": getattr(design.board.budget, key),
            "estimated": getattr(design.estimate, key),
        }
    return {
        "design": design.config.name,
        "digest": design.digest,
        "board": design.board.name,
        "device": design.board.device,
        "package": design.board.package,
        "speed_grade": design.board.speed_grade,
        "target_clock_mhz": design.config.clock_mhz,
        "pll_clock_mhz": round(design.clock_mhz, 6),
        "fmax": result.fmax,
        # nextpnr names clocks by their global nets; the board top's domains are `sync` (the
        # accelerator, net clk) and `host` (the host link, net host_clk).
        "fmax_by_domain": {domain: result.fmax[net] for domain, net in
                           (("sync", "$glbnet$clk"), ("host", "$glbnet$host_clk"))
                           if net in result.fmax},
        "timing_met": result.timing_met,
        # The host link and what a 128x128x128 GEMM spends on it vs the accelerator (a ViT
        # design, which has no such GEMM, has none).
        **_link(design),
        "resources": resources,
        "fits": all(r["used"] <= r["available"] for r in resources.values()),
        "bitstream": str(result.bitstream),
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "nextpnr_utilization": result.utilization,
    }


def _link(design):
    if not hasattr(design, "link_report"):
        return {}
    return {"host_link": {"clock_mhz": round(design.host_clock_mhz, 6),
                          "clock_source": ("oscillator" if design.host_clock_source ==
                                           "oscillator" else "pll_clkos"),
                          "baud": round(design.baud_actual, 1),
                          "bytes_per_second": round(design.bytes_per_second, 1)},
            "link_vs_compute": design.link_report()}


def write_report(report, folder):
    """``report.json`` (atomically, after the plot: a report exists only for a whole build)."""
    folder = Path(folder)
    plot_utilization(report, folder / "utilization.png")
    write_atomic(folder / "report.json", json.dumps(report, indent=2) + "\n")


def summary_lines(report):
    lines = [f"{report['design']} on {report['board']} ({report['device']}-"
             f"{report['speed_grade']}), target {report['target_clock_mhz']:g} MHz"]
    for net, clock in report["fmax"].items():
        verdict = "met" if clock["met"] else "FAILED"
        lines.append(f"  Fmax {net}: {clock['achieved_mhz']:.1f} MHz "
                     f"(constraint {clock['constraint_mhz']:.1f} MHz) timing {verdict}")
    for key, r in report["resources"].items():
        lines.append(f"  {key:8s} {r['used']:6d} / {r['available']:6d} "
                     f"({100 * r['used'] / r['available']:5.1f}%)  estimated {r['estimated']}")
    link = report.get("link_vs_compute")
    if link:
        lines.append(f"  host link {link['bytes_per_second']:.0f} bytes/s: GEMM {link['gemm']} "
                     f"transfer {link['transfer_ms']:.1f} ms vs compute {link['compute_ms']:.3f} "
                     f"ms")
    lines.append(f"  bitstream {report['bitstream']}")
    return lines


def plot_utilization(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["resources"])
    used = [100 * report["resources"][n]["used"] / report["resources"][n]["available"]
            for n in names]
    # A resource the design does not estimate (None) is drawn as 0.
    estimated = [100 * (report["resources"][n]["estimated"] or 0) /
                 report["resources"][n]["available"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], used, width=0.4, label="used (nextpnr)")
    ax.bar([p + 0.2 for p in positions], estimated, width=0.4, label="estimated", alpha=0.6)
    ax.axhline(100, color="red", linewidth=1)
    ax.set_xticks(list(positions), names)
    ax.set_ylabel(f"% of {report['device']}")
    clocks = ", ".join(f"{c['achieved_mhz']:.0f} MHz" for c in report["fmax"].values())
    ax.set_title(f"{report['design']} on {report['board']}: Fmax {clocks}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
