"""The MULT18X18D the bitstream uses, simulated: `verif/cells/mult18x18d.v` under the generator.

`gen.hw.multiplier.PipelinedMultiplier` elaborated for the ECP5 platform is the MULT18X18D
Instance of the bitstream; here it runs on the model in ``verif/cells/mult18x18d.v`` side by
side with the same multiplier elaborated as plain RTL (what every other test simulates), and
both are compared every cycle with an exact Python model of the pipeline (registered operands,
registered product, clock enable, reset).

* Exhaustive: every INT8 x INT8 pair (65,536) for each operand signedness combination
  (signed x signed as the PE array uses it, and unsigned/mixed), 16 lanes per combination, so
  one pass is 4,096 cycles.
* The wider shapes the generator instantiates (the requantizer's four partial products, the
  softmax's 16 x 17 bits unsigned) and the full 18-bit port widths: random operands with the
  extremes first.
* Then random operands with a random clock enable and a reset pulse.

yosys's ECP5 library has no MULT18X18D model (only a black box in ``cells_bb.v``), so there is
nothing of yosys's to compare the model with.
"""

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from verif import seeds

CELLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cells")
MODEL = os.path.join(CELLS, "mult18x18d.v")

#: (a, b) operand shapes as (width, signed), and lanes of each.
EXHAUSTIVE = [((8, True), (8, True)), ((8, False), (8, False)),
              ((8, True), (8, False)), ((8, False), (8, True))]
EXHAUSTIVE_LANES = 16
WIDE = [
    # gen/hw/requant.py: x_lo * m_lo, x_lo * m_hi, x_hi * m_lo, x_hi * m_hi
    ((16, False), (16, False)), ((16, False), (15, False)),
    ((16, True), (16, False)), ((16, True), (15, False)),
    # gen/hw/softmax.py: e * r
    ((16, False), (17, False)),
    # the widest operands PipelinedMultiplier accepts
    ((18, True), (18, True)), ((17, False), (17, False)), ((18, True), (17, False)),
]
WIDE_LANES = 2
RANDOM_CYCLES = 1024
RESET_AT = 700


def lanes():
    """Every lane: ((a_width, a_signed), (b_width, b_signed))."""
    return ([shapes for shapes in EXHAUSTIVE for _ in range(EXHAUSTIVE_LANES)] +
            [shapes for shapes in WIDE for _ in range(WIDE_LANES)])


def product_shape(a, b):
    """Width and signedness of PipelinedMultiplier.p for operand shapes a and b."""
    (aw, asg), (bw, bsg) = a, b
    return aw + bw + (asg != bsg), asg or bsg


def _range(width, signed):
    return (-(1 << width - 1), (1 << width - 1) - 1) if signed else (0, (1 << width) - 1)


def _pack(values, widths):
    word, offset = 0, 0
    for value, width in zip(values, widths):
        word |= (value & ((1 << width) - 1)) << offset
        offset += width
    return word


def _unpack(word, shapes):
    values, offset = [], 0
    for width, signed in shapes:
        v = (word >> offset) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        values.append(v)
        offset += width
    return values


def stimulus():
    """Per cycle: (a values, b values, en, rst); the random part from ``ACCELGEN_SEED``."""
    rng = seeds.rng("mult18x18d model")
    spec = lanes()
    cycles = 256 * 256 // EXHAUSTIVE_LANES
    extremes = {}
    for a, b in spec:
        for shape in (a, b):
            lo, hi = _range(*shape)
            extremes[shape] = [lo, hi, 0, 1, -1 if shape[1] else 2, lo + 1, hi - 1]
    schedule = []
    for t in range(cycles + RANDOM_CYCLES):
        avals, bvals = [], []
        for lane, (a, b) in enumerate(spec):
            if t < cycles and lane < len(EXHAUSTIVE) * EXHAUSTIVE_LANES:
                index = t * EXHAUSTIVE_LANES + lane % EXHAUSTIVE_LANES
                av, bv = index >> 8, index & 0xFF
                if a[1] and av >= 128:
                    av -= 256
                if b[1] and bv >= 128:
                    bv -= 256
            else:
                ea, eb = extremes[a], extremes[b]
                if t < len(ea) * len(eb):
                    av, bv = ea[t % len(ea)], eb[t // len(ea)]
                else:
                    av, bv = rng.randint(*_range(*a)), rng.randint(*_range(*b))
            avals.append(av)
            bvals.append(bv)
        random_phase = t >= cycles
        en = rng.random() < 0.7 if random_phase else True
        rst = random_phase and t - cycles in (RESET_AT, RESET_AT + 1)
        schedule.append((avals, bvals, en, rst))
    return schedule


@cocotb.test()
async def dsp_model_equals_rtl_multiplier(dut):
    spec = lanes()
    a_widths = [a[0] for a, _ in spec]
    b_widths = [b[0] for _, b in spec]
    p_shapes = [product_shape(a, b) for a, b in spec]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 1
    dut.a.value = 0
    dut.b.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    # The pipeline of PipelinedMultiplier: a_reg, b_reg <- a, b; p <- a_reg * b_reg (with en).
    a_reg = [0] * len(spec)
    b_reg = [0] * len(spec)
    p_reg = [0] * len(spec)
    checked = 0
    exhaustive_pairs = set()
    for t, (avals, bvals, en, rst) in enumerate(stimulus()):
        await FallingEdge(dut.clk)
        got_dsp = _unpack(dut.p_dsp.value.to_unsigned(), p_shapes)
        got_rtl = _unpack(dut.p_rtl.value.to_unsigned(), p_shapes)
        if got_dsp != p_reg or got_rtl != p_reg:
            for lane, (d, r, e) in enumerate(zip(got_dsp, got_rtl, p_reg)):
                assert d == e and r == e, (
                    f"cycle {t}, lane {lane} {spec[lane]}: MULT18X18D model {d}, "
                    f"plain RTL {r}, expected {e}")
        checked += len(spec)
        dut.a.value = _pack(avals, a_widths)
        dut.b.value = _pack(bvals, b_widths)
        dut.en.value = int(en)
        dut.rst.value = int(rst)
        if rst:
            a_reg, b_reg, p_reg = [0] * len(spec), [0] * len(spec), [0] * len(spec)
        elif en:
            p_reg = [x * y for x, y in zip(a_reg, b_reg)]
            a_reg, b_reg = list(avals), list(bvals)
            if t < 4096:
                exhaustive_pairs.update(
                    (spec[lane], avals[lane], bvals[lane])
                    for lane in range(len(EXHAUSTIVE) * EXHAUSTIVE_LANES))
    for _ in range(3):      # the last products through the pipeline
        await FallingEdge(dut.clk)
    assert len(exhaustive_pairs) == len(EXHAUSTIVE) * 65536, len(exhaustive_pairs)
    dut._log.info(f"{checked} products compared, {len(exhaustive_pairs)} distinct INT8 "
                  f"(shape, a, b) triples among them")


def _bank():
    """The generator's multiplier twice per lane: on the ECP5 platform and as plain RTL."""
    from amaranth.hdl import Elaboratable, Fragment, Module, Shape
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from gen.boards import get_board
    from gen.hw.multiplier import PipelinedMultiplier

    ecp5 = get_board("ulx3s-85f").platform_class()()
    assert getattr(ecp5, "family", None) == "ecp5"

    class OnPlatform(Elaboratable):
        """Elaborate ``inner`` for ``platform`` whatever the enclosing design is built for."""
        def __init__(self, inner, platform):
            self.inner, self.platform = inner, platform

        def elaborate(self, platform):
            return Fragment.get(self.inner, self.platform)

    spec = lanes()
    a_bits = sum(a[0] for a, _ in spec)
    b_bits = sum(b[0] for _, b in spec)
    p_bits = sum(product_shape(a, b)[0] for a, b in spec)

    class Bank(wiring.Component):
        a: In(a_bits)
        b: In(b_bits)
        en: In(1)
        p_dsp: Out(p_bits)
        p_rtl: Out(p_bits)

        def elaborate(self, platform):
            m = Module()
            a_off = b_off = p_off = 0
            for lane, (a, b) in enumerate(spec):
                a_shape, b_shape = Shape(*a), Shape(*b)
                p_width = product_shape(a, b)[0]
                for name, target in (("dsp", ecp5), ("rtl", None)):
                    mult = PipelinedMultiplier(a_shape, b_shape)
                    m.submodules[f"{name}_{lane}"] = OnPlatform(mult, target)
                    m.d.comb += [
                        mult.a.eq(self.a[a_off:a_off + a[0]]),
                        mult.b.eq(self.b[b_off:b_off + b[0]]),
                        mult.en.eq(self.en),
                        getattr(self, f"p_{name}")[p_off:p_off + p_width].eq(mult.p),
                    ]
                a_off, b_off, p_off = a_off + a[0], b_off + b[0], p_off + p_width
            return m

    return Bank()


def test_mult18x18d_model_against_generator():
    from amaranth.back import verilog

    from verif.sim import SIM_BUILD, run_cocotb

    text = verilog.convert(_bank(), name="mult_bank", emit_src=False)
    assert text.count("MULT18X18D ") == len(lanes()), "the ECP5 lanes lost their Instances"
    source = SIM_BUILD / "mult_bank-rtl" / "mult_bank.v"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(None, "mult_bank", "verif.test_multiplier_model", {"lanes": len(lanes())},
               sources=[source, MODEL])
