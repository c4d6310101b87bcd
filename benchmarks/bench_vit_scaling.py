"""ViT accelerator scaling: the engines' lane balance, GOP/s against ViA, and a DeiT-Tiny
prediction (docs/vit.md section 4). Model only: no simulation, no bitstream.

    python benchmarks/bench_vit_scaling.py [--lanes-max 64] [--deit-lanes-max 123]

(a) The balance search (`gen.vit.balance.balance`) for the digits ViT (GELU, pruned, quick):
    every (nsa_lanes, nmp_lanes) pair, each engine's model cycles an image from the model's
    real load image (`EngineImage.entry_cycles`, within 1 % of Verilator at B = 8), the
    pipeline's cycles an image with two in flight (the busier engine), multipliers (kernel +
    LayerNorm + adder, per engine) against the ULX3S 85F's 156 MULT18X18D, and an ESTIMATE of
    the DP16KD block RAMs. The pick: fewest cycles an image under the multiplier budget.
(b) GOP/s (2 ops per useful MAC of the dense model, and per issued lane product) and GOP/s
    per multiplier, at 100 MHz (met by the shipped 8/8 design's bitstream, a what-if for the
    lane counts that are not built), beside ViA's published figures.
(c) A PREDICTION for DeiT-Tiny on the 85F, a design that is not generated (ViTDesign is for
    the 8x8 digits): the same cycle model from the model's shape (`predicted_balance`), its
    weights streamed from the board's SDRAM at a stated bandwidth.

Images/s and GOP/s are at a stated 100 MHz clock: `gen build --config
gen/configs/vit-digits.yaml --seed 2` meets it for the 8/8 design (docs/vit.md section 5);
for any other lane count it is a what-if until that design is built.
Figures go to rtl_out/bench/vit_scaling.json.
"""

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

CLOCK_MHZ = 100.0
#: ViA (Teng Wang et al., "ViA: A Novel Vision-Transformer Accelerator Based on FPGA", IEEE
#: TCAD 41(11), 2022), as published; DSPs and clock were not found in the sources searched.
VIA = {"gops": 309.6, "gops_per_w": 7.9, "board": "Xilinx Alveo U50", "precision": "FP16",
       "model": "Swin-T", "dsps": None, "clock_mhz": None,
       "note": "DSP count and clock not found in the sources searched (abstract and first page "
               "only); GOP/s per DSP not computed"}
#: The ULX3S's SDRAM: 16 bits wide; clock and efficiency are ASSUMPTIONS, not measured.
SDRAM = {"bits": 16, "clock_mhz": 100.0, "efficiency": 0.7}
DEIT_TINY = {"tokens": 197, "dim": 192, "heads": 3, "ffn": 768, "layers": 12, "classes": 1000,
             "patch_pixels": 16 * 16 * 3}
DIGITS_MEASURED = "Verilator at B = 8/8, 50 images, 2 in flight: 83.9 k cycles an image, " \
                  "NSA busy 99 %, NMP 69 % (docs/vit.md section 4)"


def pct(x):
    return f"{100 * x:5.1f}%"


def point_row(p, tag=""):
    br = "-" if p.block_rams is None else str(p.block_rams)
    return (f"{p.nsa_lanes:>4}{p.nmp_lanes:>5}{p.nsa.cycles:>10}{p.nmp.cycles:>10}"
            f"{p.cycles:>10}{p.images_per_s(CLOCK_MHZ):>9.0f}  {pct(p.busy('nsa'))} "
            f"{pct(p.busy('nmp'))}  {pct(p.lanes_busy('nsa'))} {pct(p.lanes_busy('nmp'))}"
            f"{p.multipliers:>6}{br:>6}  {tag}")


POINT_HEAD = (f"{'NSA':>4}{'NMP':>5}{'NSA cyc':>10}{'NMP cyc':>10}{'cyc/img':>10}"
              f"{'img/s*':>9}  {'busy NSA':>6} {'NMP':>6}  {'lanes NSA':>6} {'NMP':>5}"
              f"{'mult':>6}{'BRAM~':>6}")


def nsa_breakdown(arrays, lanes):
    """NSA model cycles an image by kind of step, at ``lanes`` lanes."""
    from gen.hw.attention.geometry import OP_SOFTMAX
    from gen.hw.vit.engine import STEP_DESC
    from gen.hw.vit.layout import ViTDesign, model_image
    design = ViTDesign.for_model(arrays, lanes)
    image = model_image(design, arrays)
    g = design.geometry("nsa")
    fields = dict(g.descriptor_layout)
    out = {"mac ops": 0, "softmax ops": 0, "row steps": 0, "entry ends": 0}
    for tag in image.nsa.entries:
        for pc in image.nsa.entry_steps(tag):
            st = image.nsa.steps[pc]
            c = image.nsa.step_cycles(design, pc, g)
            if st["kind"] == STEP_DESC:
                op = (st["desc"] >> fields["op"].offset) & ((1 << fields["op"].width) - 1)
                out["softmax ops" if op == OP_SOFTMAX else "mac ops"] += c
            else:
                out["row steps"] += c
        out["entry ends"] += 2
    return out


def part_a(arrays, lanes_max):
    from gen.vit.balance import ULX3S_85F_BLOCK_RAMS, ULX3S_85F_MULTIPLIERS, balance
    lanes = range(2, lanes_max + 1)
    res = balance(arrays, ULX3S_85F_MULTIPLIERS, lanes)
    res_bram = balance(arrays, ULX3S_85F_MULTIPLIERS, lanes, bram_budget=ULX3S_85F_BLOCK_RAMS)
    best, base = res.best, res.point(8, 8)
    print(f"(a) Lane balance, digits ViT (GELU, pruned), model cycles an image; lanes "
          f"2..{lanes_max} per engine, {len(res.points)} pairs; budget "
          f"{ULX3S_85F_MULTIPLIERS} MULT18X18D (ULX3S 85F)")
    print("    * img/s at 100 MHz: built and met for 8/8, a what-if for the rest. busy: engine "
          "running / pipeline cycles; lanes: MAC beats / pipeline cycles. BRAM~: DP16KD "
          "ESTIMATE")
    print(POINT_HEAD)
    print("  under the budget, best first:")
    for p in res.fitting[:8]:
        print(point_row(p, "<- pick" if p is best else ""))
    print("  reference points:")
    for a, b in ((8, 8), (16, 16), (32, 32), (64, 64), (64, 32)):
        if a <= lanes_max and b <= lanes_max:
            p = res.point(a, b)
            print(point_row(p, ("B = 8 both (the generated design)" if (a, b) == (8, 8)
                                else "" if res.fits(p) else "over budget")))
    print(f"  pick: nsa_lanes={best.nsa_lanes}, nmp_lanes={best.nmp_lanes}: "
          f"{best.cycles} cycles an image ({base.cycles / best.cycles:.2f}x the 8/8 design's "
          f"{base.cycles}), {best.multipliers} of {ULX3S_85F_MULTIPLIERS} multipliers, "
          f"~{best.block_rams} of {ULX3S_85F_BLOCK_RAMS} block RAMs (estimate); bottleneck "
          f"{best.bottleneck.upper()}")
    bb = res_bram.best
    print(f"  with the block-RAM estimate as a second budget ({ULX3S_85F_BLOCK_RAMS}): "
          f"({bb.nsa_lanes}, {bb.nmp_lanes}), {bb.cycles} cycles an image")
    print(f"  model at 8/8 {base.cycles} cycles an image; measured: {DIGITS_MEASURED}")
    nsa_floor = min(p.nsa.cycles for p in res.points)
    brk = nsa_breakdown(arrays, best.nsa_lanes)
    print(f"  why more NSA lanes stop paying: the NSA's least cycles at any lane count is "
          f"{nsa_floor}; at {best.nsa_lanes} lanes its {best.nsa.cycles} cycles are "
          + ", ".join(f"{k} {v}" for k, v in brk.items())
          + " (the softmax unit is one row at a time; receive/send are element-serial)")
    print("  each engine alone (equal lanes), cycles an image:")
    sel = [L for L in (2, 4, 8, 12, 16, 24, 32, 48, 64) if L <= lanes_max]
    print("    lanes " + "".join(f"{L:>8}" for L in sel))
    print("    NSA   " + "".join(f"{res.point(L, L).nsa.cycles:>8}" for L in sel))
    print("    NMP   " + "".join(f"{res.point(L, L).nmp.cycles:>8}" for L in sel))
    return res, res_bram, brk


def gops_rows(dims, points):
    from gen.vit.balance import dense_macs
    macs = dense_macs(dims)
    rows = []
    for label, p in points:
        ips = p.images_per_s(CLOCK_MHZ)
        useful = 2 * macs * ips / 1e9
        issued = 2 * p.lane_products * ips / 1e9
        rows.append({"design": label, "nsa_lanes": p.nsa_lanes, "nmp_lanes": p.nmp_lanes,
                     "dense_macs_per_image": macs, "lane_products_per_image": p.lane_products,
                     "gops_useful_dense": useful, "gops_issued": issued,
                     "multipliers": p.multipliers,
                     "gops_useful_per_multiplier": useful / p.multipliers,
                     "gops_issued_per_multiplier": issued / p.multipliers})
    return rows


def part_b(arrays, res):
    best, base = res.best, res.point(8, 8)
    rows = gops_rows(arrays["dims"], [("digits 8/8 (generated)", base),
                                      (f"digits {best.nsa_lanes}/{best.nmp_lanes} (pick)",
                                       best)])
    print()
    print("(b) GOP/s at 100 MHz (built and met for digits 8/8; a what-if clock for the "
          "others); 'useful': 2 ops per MAC of the dense model, "
          "'issued': 2 per lane product the MAC lanes issue (pruned model)")
    print(f"{'design':<28}{'GOP/s useful':>13}{'GOP/s issued':>13}{'mult':>6}"
          f"{'useful/mult':>12}{'issued/mult':>12}")
    for r in rows:
        print(f"{r['design']:<28}{r['gops_useful_dense']:>13.2f}{r['gops_issued']:>13.2f}"
              f"{r['multipliers']:>6}{r['gops_useful_per_multiplier']:>12.4f}"
              f"{r['gops_issued_per_multiplier']:>12.4f}")
    print(f"{'ViA (published)':<28}{VIA['gops']:>13.1f}{'':>13}{'?':>6}{'?':>12}{'?':>12}")
    print(f"  ViA: {VIA['gops']} GOPS, {VIA['gops_per_w']} GOPS/W, {VIA['board']}, "
          f"{VIA['precision']}, {VIA['model']}; {VIA['note']}.")
    print("  Per multiplier per 100 MHz = the GOP/s above / multipliers (they are at 100 MHz). "
          "Not like for like: INT8 vs FP16, a 1.2 MMAC digits ViT vs Swin-T, the clock a what-if beyond 8/8; "
          "no power figure here, so no GOPS/W.")
    return rows


def part_c(lanes_max):
    from gen.hw.attention.geometry import AttentionGeometry
    from gen.vit.balance import (ULX3S_85F_BLOCK_RAMS, ULX3S_85F_MULTIPLIERS, dense_macs,
                                 predicted_balance, stream_bytes)
    dims = DEIT_TINY
    t, d, f, layers = dims["tokens"], dims["dim"], dims["ffn"], dims["layers"]
    peak = SDRAM["bits"] / 8 * SDRAM["clock_mhz"] * 1e6          # bytes/s
    bw = peak * SDRAM["efficiency"]
    bram_bytes = ULX3S_85F_BLOCK_RAMS * 18 * 1024 // 8
    print()
    print("(c) PREDICTION (what-if; not a generated design): DeiT-Tiny (224x224, patch 16, "
          f"T = {t}, D = {d}, {layers} layers, {dims['heads']} heads, MLP {f}, "
          f"{dims['classes']} classes) on the ULX3S 85F, same cycle model from the shape")
    print(f"    SDRAM assumed: {SDRAM['bits']} bit x {SDRAM['clock_mhz']:.0f} MHz = "
          f"{peak / 1e6:.0f} MB/s peak, {SDRAM['efficiency']:.0%} efficiency -> "
          f"{bw / 1e6:.0f} MB/s; compute at {CLOCK_MHZ:.0f} MHz; transfer overlapped with "
          f"compute; lanes 2..{lanes_max} (smaller counts the kernel refuses are skipped)")
    out = []
    for keep, label in ((1.0, "dense"), (0.5, "every block keeps 50 % of its rows")):
        res = predicted_balance(dims, ULX3S_85F_MULTIPLIERS, range(2, lanes_max + 1), keep=keep)
        p = res.best
        sb = stream_bytes(dims, p.nsa_lanes, p.nmp_lanes, keep)
        compute_s = p.cycles / (CLOCK_MHZ * 1e6)
        weights_s = sb["total"] / bw
        # If a batch's half-layer messages (T x D pairs) were parked in SDRAM between weight
        # passes: each written and read once.
        msg_bytes = 2 * layers * 2 * (2 * t * d)
        msg_s = msg_bytes / bw
        batch = max(1, math.ceil(weights_s / max(compute_s - msg_s, 1e-12))) \
            if compute_s > msg_s else None
        per_image_b1 = max(compute_s, weights_s)
        limit = "compute" if compute_s >= weights_s else "weight transfer"
        amem = {part: AttentionGeometry(lanes=lanes, tokens=t, dim=d, heads=dims["heads"],
                                        ffn=f).amem_depth * lanes
                for part, lanes in (("nsa", p.nsa_lanes), ("nmp", p.nmp_lanes))}
        macs = dense_macs(dims)
        row = {"weights": label, "keep": keep, "nsa_lanes": p.nsa_lanes,
               "nmp_lanes": p.nmp_lanes, "multipliers": p.multipliers,
               "nsa_cycles": p.nsa.cycles, "nmp_cycles": p.nmp.cycles,
               "cycles_per_image": p.cycles, "compute_s": compute_s,
               "stream_bytes": sb, "weights_s_per_pass": weights_s,
               "limit_at_batch_1": limit, "images_per_s_batch_1": 1 / per_image_b1,
               "batch_for_compute_limit": math.ceil(weights_s / compute_s),
               "message_bytes_if_parked": msg_bytes, "message_s_if_parked": msg_s,
               "batch_for_compute_limit_with_parked_messages": batch,
               "dense_macs": macs, "gops_useful": 2 * macs / per_image_b1 / 1e9,
               "amem_bytes_per_engine": amem}
        out.append(row)
        print(f"  {label}: pick nsa_lanes={p.nsa_lanes}, nmp_lanes={p.nmp_lanes} "
              f"({p.multipliers} multipliers)")
        print(f"    compute: NSA {p.nsa.cycles / 1e6:.2f} M, NMP {p.nmp.cycles / 1e6:.2f} M "
              f"cycles an image -> {p.cycles / 1e6:.2f} M (two in flight) = "
              f"{1e3 * compute_s:.1f} ms at {CLOCK_MHZ:.0f} MHz")
        print(f"    weights per pass: {sb['total'] / 1e6:.2f} MB in the engines' formats "
              f"({sb['int8_weights'] / 1e6:.2f} MB of INT8 weights) -> "
              f"{1e3 * weights_s:.1f} ms")
        print(f"    limit at batch 1: {limit}; {1 / per_image_b1:.2f} images/s, "
              f"{row['gops_useful']:.1f} GOP/s useful (dense MACs "
              f"{macs / 1e9:.2f} G an image); batch for compute to be the limit: "
              f"{row['batch_for_compute_limit']}"
              + (f" (already at batch 1: one weight pass is {weights_s / compute_s:.0%} of "
                 f"an image's compute)" if row["batch_for_compute_limit"] <= 1 else ""))
        print(f"    if a batch's half-layer messages were parked in SDRAM: "
              f"{msg_bytes / 1e6:.2f} MB an image, {1e3 * msg_s:.1f} ms; batch for compute to "
              f"be the limit: {batch if batch is not None else 'none (traffic alone exceeds compute)'}")
        print(f"    does not fit as is: the kernels' activation memories (amem, one image) are "
              f"{amem['nsa'] / 1e3:.0f} kB (NSA) and {amem['nmp'] / 1e3:.0f} kB (NMP), the "
              f"whole 85F has {bram_bytes / 1e3:.0f} kB of block RAM (and a result of "
              f"{dims['classes']} logits exceeds the engine's 255); the prediction counts "
              f"compute and weight traffic only")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes-max", type=int, default=64,
                    help="largest lane count of each engine in the digits search")
    ap.add_argument("--deit-lanes-max", type=int, default=123,
                    help="largest lane count of each engine in the DeiT-Tiny search")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from gen.vit.model import prepared_int_vit
    arrays = prepared_int_vit(seed=0, activation="gelu", pruned=True, quick=True).arrays()
    res, res_bram, brk = part_a(arrays, args.lanes_max)
    gops = part_b(arrays, res)
    deit = part_c(args.deit_lanes_max)
    out = {"clock_mhz_what_if": CLOCK_MHZ,
           "digits": {"balance": res.as_dict(CLOCK_MHZ, limit=50),
                      "balance_with_bram_budget": {"best": res_bram.best.as_dict(CLOCK_MHZ)},
                      "baseline_8_8": res.point(8, 8).as_dict(CLOCK_MHZ),
                      "nsa_breakdown_at_pick": brk, "measured_8_8": DIGITS_MEASURED},
           "gops": gops, "via": VIA, "sdram_assumed": SDRAM,
           "deit_tiny_prediction": {"dims": DEIT_TINY, "rows": deit}}
    dest = REPO / "rtl_out" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vit_scaling.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {dest / 'vit_scaling.json'}")


if __name__ == "__main__":
    main()
