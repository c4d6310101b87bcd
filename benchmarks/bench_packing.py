"""Multipliers and logic of MacLanes, packed and unpacked, counted by yosys.

    /work/venv/bin/python benchmarks/bench_packing.py [--lanes 8 16]

Xilinx UltraScale+ (synth_xilinx -family xcup): DSP48E2 count, LUT6 and flip-flops, unpacked
vs packed (two INT8 products per DSP48E2). ECP5 (synth_ecp5): MULT18X18D and LUT4 per MAC, with
the multipliers instantiated as MULT18X18D as the generator does on the ECP5 platform (INT8 x
INT8 cannot pack there). Also one PackedMultiplierPair per target for reference.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amaranth.hdl import Module, signed  # noqa: E402

from flows.xilinx_dsp import count_ecp5_cells, count_xilinx_dsps  # noqa: E402
from gen.hw.mac_lanes import MacLanes  # noqa: E402
from gen.hw.multiplier import PipelinedMultiplier  # noqa: E402
from gen.hw.packing import (ECP5_MULT18X18D, XILINX_DSP48E2,  # noqa: E402
                            PackedMultiplierPair)


class Ecp5Family:
    """Stands in for the ECP5 platform in ``elaborate`` (only ``family`` is read)."""
    family = "ecp5"


def xilinx_rows(lanes_list):
    rows = []
    for lanes in lanes_list:
        for packing in (False, True):
            dut = MacLanes(lanes, ports=XILINX_DSP48E2, packing=packing)
            start = time.monotonic()
            counts = count_xilinx_dsps(dut, "mac_lanes")
            rows.append((lanes, packing, dut.multipliers, counts, time.monotonic() - start))
    return rows


def ecp5_rows(lanes_list):
    rows = []
    for lanes in lanes_list:
        dut = MacLanes(lanes, ports=ECP5_MULT18X18D, packing=False)
        counts = count_ecp5_cells(dut, "mac_lanes", platform=Ecp5Family())
        rows.append((lanes, dut.multipliers, counts))
    return rows


def pair_rows():
    """One packed pair vs two plain multipliers of the same operands, per target."""
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class TwoPlain(wiring.Component):
        def __init__(self, w_bits):
            self._w_bits = w_bits
            super().__init__({"x": In(signed(8)), "w0": In(signed(w_bits)),
                              "w1": In(signed(w_bits)), "p0": Out(signed(8 + w_bits)),
                              "p1": Out(signed(8 + w_bits))})

        def elaborate(self, platform):
            m = Module()
            for i, (w, p) in enumerate(((self.w0, self.p0), (self.w1, self.p1))):
                m.submodules[f"mult_{i}"] = mult = PipelinedMultiplier(signed(8),
                                                                       signed(self._w_bits))
                m.d.comb += [mult.a.eq(self.x), mult.b.eq(w)]
                m.d.sync += p.eq(mult.p)     # the pair's unpacking register
            return m

    rows = []
    xilinx = [("2 x INT8xINT8 plain", TwoPlain(8)),
              ("PackedMultiplierPair INT8xINT8", PackedMultiplierPair(XILINX_DSP48E2, 8, 8))]
    for name, dut in xilinx:
        counts = count_xilinx_dsps(dut, "pair")
        rows.append(("xcup", name, counts["dsp48e2"], counts["lut"], counts["ff"]))
    ecp5 = [("2 x INT8xINT4 plain", TwoPlain(4)),
            ("PackedMultiplierPair INT8xINT4", PackedMultiplierPair(ECP5_MULT18X18D, 8, 4))]
    for name, dut in ecp5:
        counts = count_ecp5_cells(dut, "pair", platform=Ecp5Family())
        rows.append(("ecp5", name, counts["mult18x18d"], counts["lut4"], counts["ff"]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()

    print("Xilinx UltraScale+ (yosys synth_xilinx -family xcup; DSP48E2 counted after "
          "-run :map_luts, LUT6 after splitnets + the rest of synth_xilinx)")
    print(f"{'lanes':>5} {'packing':>8} {'mults':>5} {'DSP48E2':>8} {'LUT':>6} {'FF':>6} "
          f"{'CARRY4':>6} {'LUT/MAC':>8} {'FF/MAC':>7} {'secs':>5}")
    xrows = xilinx_rows(args.lanes)
    for lanes, packing, mults, c, secs in xrows:
        lut = "n/a" if c["lut"] is None else c["lut"]
        per = "n/a" if c["lut"] is None else f"{c['lut'] / lanes:.1f}"
        print(f"{lanes:>5} {str(packing):>8} {mults:>5} {c['dsp48e2']:>8} {lut:>6} {c['ff']:>6} "
              f"{c['carry4']:>6} {per:>8} {c['ff'] / lanes:>7.1f} {secs:>5.1f}")
        if c["lut_error"]:
            print(f"      ({c['lut_error']})")
    for lanes in args.lanes:
        plain = next(c["dsp48e2"] for l, p, _, c, _ in xrows if l == lanes and not p)
        packed = next(c["dsp48e2"] for l, p, _, c, _ in xrows if l == lanes and p)
        print(f"  {lanes} lanes: DSP48E2 {plain} -> {packed} "
              f"({'halved' if packed * 2 == plain else f'x{packed / plain:.2f}'})")

    print()
    print("Lattice ECP5 (yosys synth_ecp5; multipliers instantiated as MULT18X18D, as on the "
          "ECP5 platform; INT8 x INT8 does not pack on 18x18)")
    print(f"{'lanes':>5} {'mults':>5} {'MULT18X18D':>10} {'LUT4':>6} {'FF':>6} {'CCU2C':>6} "
          f"{'MULT/MAC':>8} {'LUT4/MAC':>8} {'FF/MAC':>7}")
    for lanes, mults, c in ecp5_rows(args.lanes):
        print(f"{lanes:>5} {mults:>5} {c['mult18x18d']:>10} {c['lut4']:>6} {c['ff']:>6} "
              f"{c['ccu2c']:>6} {c['mult18x18d'] / lanes:>8.2f} {c['lut4'] / lanes:>8.1f} "
              f"{c['ff'] / lanes:>7.1f}")

    print()
    print("One pair of products sharing x: packed vs two multipliers")
    print(f"{'target':>6} {'unit':<32} {'mults':>5} {'LUT':>5} {'FF':>5}")
    for target, name, mults, lut, ff in pair_rows():
        print(f"{target:>6} {name:<32} {mults:>5} {str(lut):>5} {ff:>5}")


if __name__ == "__main__":
    main()
