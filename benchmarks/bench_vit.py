"""ViT accelerator benchmark: cycles per image, engine balance and MAC-lane use, model vs
Verilator (docs/vit.md section 3).

    python benchmarks/bench_vit.py [--images N] [--model-only]

1. The throughput model (`gen.cycles` through `gen.hw.vit.layout.EngineImage`): per engine
   and half-layer, the model cycles (kernel ops exact, row steps modelled) and the MAC beats.
2. Verilator (`verif/test_vit_system.py`'s testbench on the digits ViT, GELU, pruned, B = 8):
   N test-split images with one image in flight (each engine's busy cycles per image: the
   model's subject) and with two (throughput: both engines overlapping), with random input
   gaps and result back-pressure; every result checked against the golden model.

Throughput in images per second is given at a stated clock (100 MHz, the issue's Fmax goal);
no bitstream of the ViT design has met 100 MHz yet (docs/vit.md section 5), so that figure
is a what-if until `gen build` makes one that does. Figures go to rtl_out/bench/vit.json.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

CLOCK_MHZ = 100.0


def model_table(design, image):
    rows = []
    for part, eng in (("nsa", image.nsa), ("nmp", image.nmp)):
        g = design.geometry(part)
        for tag in sorted(eng.entries):
            rows.append((part, tag, eng.entry_cycles(design, tag, g), eng.lane_products(tag)))
    return rows


def simulate(images, in_flight):
    from verif.test_vit_system import DIGITS, run_core
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # No stalls between the engines: the cycles are the design's, not the testbench's.
        params = dict(DIGITS, images=images, images_in_flight=in_flight, watch=1, stall=0.0,
                      report=str(report))
        start = time.monotonic()
        run_core(params)
        out = json.loads(report.read_text())
        out["wall_s"] = round(time.monotonic() - start, 1)
        return out


def built_design(say):
    """The shipped config's build report, if `gen build` has made one: Fmax, resources, and
    throughput with the UART transfer (bytes an image over the link's bytes per second)."""
    from gen.artifacts import read_json
    from gen.config import load_config
    from gen.design import prepare_design
    build = prepare_design(load_config(REPO / "gen" / "configs" / "vit-digits.yaml"),
                           progress=lambda message: None)
    folder = build.folder(REPO / "rtl_out")
    report = read_json(folder / "report.json")
    cycles = build.predicted_cycles()["per_image"]
    link = build.baud_actual / 10 / build.link_bytes_per_image()
    say()
    say(f"Built design ({build.config.name}, {folder.name})")
    if report is None:
        say("  not built yet: run python -m gen build --config gen/configs/vit-digits.yaml")
        return None
    # The folder is named by config, model and generator version, not by the Verilog: a
    # report of an older generator's RTL is shown as such.
    import tempfile
    from gen.artifacts import build_fingerprint
    with tempfile.TemporaryDirectory() as tmp:
        current = build_fingerprint(build.generate(tmp, progress=lambda message: None))
    if report.get("fingerprint") != current:
        say("  STALE: this report is of an older generator's Verilog (today's differs); its "
            "figures are not today's design: rebuild with python -m gen build --config "
            "gen/configs/vit-digits.yaml --seed 2")
    fmax = report["fmax_by_domain"]["sync"]["achieved_mhz"]
    say(f"  Fmax accelerator clock {fmax:.1f} MHz (target {report['target_clock_mhz']:g}, "
        f"timing {'met' if report['timing_met'] else 'FAILED'}), host clock "
        f"{report['fmax_by_domain']['host']['achieved_mhz']:.1f} MHz")
    for key, r in report["resources"].items():
        est = "" if r["estimated"] is None else f", estimated {r['estimated']}"
        say(f"  {key:8s} {r['used']:6d} of {r['available']}{est}")
    compute = report["target_clock_mhz"] * 1e6 / cycles
    say(f"  images/s at the configured {report['target_clock_mhz']:g} MHz: compute {compute:.0f}"
        f" (model), UART {link:.0f} ({build.link_bytes_per_image()} bytes an image at "
        f"{build.baud_actual:.0f} baud): the link and the engines are within "
        f"{100 * abs(compute - link) / max(compute, link):.0f}% of each other")
    return {"fmax_mhz": fmax, "resources": report["resources"],
            "images_per_s_compute": compute, "images_per_s_link": link}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--model-only", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from gen.hw.vit.layout import ViTDesign, capacity_of, model_image
    from gen.vit.model import prepared_int_vit
    arrays = prepared_int_vit(seed=0, activation="gelu", pruned=True, quick=True).arrays()
    dims = arrays["dims"]
    design = ViTDesign(lanes=8, tokens=dims["tokens"], dim=dims["dim"], heads=dims["heads"],
                       ffn=dims["ffn"], layers=dims["layers"], classes=dims["classes"],
                       capacity=capacity_of(arrays, 8))
    image = model_image(design, arrays)
    rows = model_table(design, image)
    print("Throughput model (digits ViT, GELU, pruned; B = 8 lanes an engine)")
    print(f"{'engine':<7}{'entry':>6}{'cycles':>9}{'MAC beats':>11}{'lanes busy':>12}")
    totals = {}
    for part, tag, cycles, beats in rows:
        print(f"{part:<7}{tag:>6}{cycles:>9}{beats:>11}{100 * beats / cycles:>11.1f}%")
        c, b = totals.get(part, (0, 0))
        totals[part] = (c + cycles, b + beats)
    for part, (c, b) in totals.items():
        print(f"{part:<7}{'all':>6}{c:>9}{b:>11}{100 * b / c:>11.1f}%")
    bound = max(c for c, _ in totals.values())
    beats = sum(b for _, b in totals.values())
    print(f"model: {bound} cycles an image with two in flight (the busier engine), "
          f"lanes busy {100 * beats / (2 * bound):.1f}% averaged over both engines")
    out = {"model": {"rows": rows, "per_image_bound": bound, "beats": beats}}
    if not args.model_only:
        sims = {}
        for flight in (1, 2):
            print(f"[sim] {args.images} images, {flight} in flight ...", flush=True)
            sims[flight] = simulate(args.images, flight)
        n = args.images
        one, two = sims[1], sims[2]
        print()
        print(f"Verilator, {n} test-split digits (every result equal to the golden model)")
        print(f"{'':<34}{'1 in flight':>13}{'2 in flight':>13}")
        print(f"{'cycles an image':<34}{one['cycles'] / n:>13.0f}{two['cycles'] / n:>13.0f}")
        print(f"{'images/s at 100 MHz (what-if)':<34}"
              f"{CLOCK_MHZ * 1e6 * n / one['cycles']:>13.0f}"
              f"{CLOCK_MHZ * 1e6 * n / two['cycles']:>13.0f}")
        for part in ("nsa", "nmp"):
            print(f"{part.upper() + ' busy fraction':<34}"
                  f"{100 * one[part + '_busy'] / one['cycles']:>12.1f}%"
                  f"{100 * two[part + '_busy'] / two['cycles']:>12.1f}%")
        print(f"{'MAC lanes busy (both engines)':<34}"
              f"{100 * beats * n / (2 * one['cycles']):>12.1f}%"
              f"{100 * beats * n / (2 * two['cycles']):>12.1f}%")
        for part in ("nsa", "nmp"):
            model = totals[part][0]
            measured = one[part + "_busy"] / n
            print(f"{part.upper()} busy cycles an image: model {model}, measured "
                  f"{measured:.0f} ({100 * (model - measured) / measured:+.2f}%)")
        gops = 2 * beats * 8 / (two["cycles"] / n) * CLOCK_MHZ * 1e6 / 1e9
        print(f"GOP/s at 100 MHz (2 ops a lane product, lane products issued): {gops:.2f}")
        out["sim"] = sims
    out["built"] = built_design(print)
    dest = REPO / "rtl_out" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vit.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {dest / 'vit.json'}")


if __name__ == "__main__":
    main()
