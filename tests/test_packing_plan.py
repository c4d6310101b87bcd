"""Packing plans, their refusals, and a quick Amaranth-simulator check of the packed pair and
the MAC lanes (the exhaustive and cocotb proofs are verif/test_packing.py and
verif/test_mac_lanes.py).

Components built only for their parameters are elaborated afterwards, so that none is left
unused (Amaranth's UnusedElaboratable warning stays on)."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import Fragment, UnusedElaboratable
from amaranth.sim import Simulator

from gen.errors import UserError
from gen.hw.mac_lanes import MAC_LANES_LATENCY, MacLanes, lane_multipliers, resolve_packing
from gen.hw.packing import (ECP5_MULT18X18D, XILINX_DSP48E2, MultiplierPorts,
                            PackedMultiplierPair, packing_plan)


def test_dsp48e2_packs_int8_pairs_at_the_minimum_offset():
    plan = packing_plan(XILINX_DSP48E2, 8, 8)
    assert plan.can_pack and plan.products == 2 and plan.reason is None
    # The low product needs 16 signed bits (-128 * -128 = 2^14 needs the 16th), and
    # (w0 << 16) + w1 reaches -2^23 - 128: 25 bits, on the 27-bit port.
    assert plan.offset == 16
    assert plan.packed_operand_bits == 25
    assert plan.product_bits == 16
    assert plan.multiplier_product_bits == 33


def test_dsp48e2_takes_the_wp487_offset_but_not_beyond():
    assert packing_plan(XILINX_DSP48E2, 8, 8, offset=18).packed_operand_bits == 27
    plan = packing_plan(XILINX_DSP48E2, 8, 8, offset=19)
    assert not plan.can_pack and plan.products == 1 and plan.offset is None
    assert "28-bit port" in plan.reason and "offset <= 18" in plan.reason


def test_offset_below_the_low_product_width_is_refused():
    with pytest.raises(UserError, match=r"offset 15 is too small.*offset >= 16"):
        packing_plan(XILINX_DSP48E2, 8, 8, offset=15)


def test_ecp5_does_not_pack_int8_pairs_and_says_what_would():
    plan = packing_plan(ECP5_MULT18X18D, 8, 8)
    assert not plan.can_pack and plan.products == 1
    assert "25-bit port" in plan.reason
    assert "at most 4 bits" in plan.reason
    assert "packing=False" in plan.reason


@pytest.mark.parametrize("packed_bits,packs", [(2, True), (3, True), (4, True), (5, False),
                                               (6, False), (8, False)])
def test_ecp5_packs_int8_by_at_most_int4(packed_bits, packs):
    plan = packing_plan(ECP5_MULT18X18D, 8, packed_bits)
    assert plan.can_pack == packs
    if packs:
        assert plan.offset == 8 + packed_bits
        assert plan.packed_operand_bits == 2 * packed_bits + 9 <= 18


def test_generic_ports_either_orientation():
    # The shared operand may sit on either port.
    assert packing_plan(MultiplierPorts(8, 25), 8, 8).can_pack
    assert packing_plan(MultiplierPorts(25, 8), 8, 8).can_pack
    assert not packing_plan(MultiplierPorts(24, 8), 8, 8).can_pack


def test_a_product_that_does_not_fit_at_all_is_refused():
    with pytest.raises(UserError, match="does not fit"):
        packing_plan(ECP5_MULT18X18D, 20, 8)


@pytest.mark.parametrize("args,match", [
    ((XILINX_DSP48E2, 0, 8), "shared_bits must be at least 1"),
    ((XILINX_DSP48E2, 8, "8"), "packed_bits must be an integer"),
    (((27, 18), 8, 8), "must be a MultiplierPorts"),
])
def test_bad_plan_arguments(args, match):
    with pytest.raises(UserError, match=match):
        packing_plan(*args)


def test_bad_ports():
    with pytest.raises(UserError, match="a_bits must be an integer >= 2"):
        MultiplierPorts(1, 18)


def test_pair_refuses_what_the_plan_cannot_pack():
    # A refused pair is marked as used: collecting it must not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedElaboratable)
        with pytest.raises(UserError, match=r"PackedMultiplierPair: .*25-bit port.*packing=False"):
            PackedMultiplierPair(ECP5_MULT18X18D, 8, 8)
        gc.collect()
    pair = PackedMultiplierPair(ECP5_MULT18X18D, 8, 4)
    assert pair.latency == 3
    Fragment.get(pair, None)


def test_mac_lanes_parameters():
    packed = MacLanes(5, ports=XILINX_DSP48E2, packing=True)
    assert (packed.multipliers, packed.products_per_multiplier, packed.latency) == (3, 2, 4)
    plain = MacLanes(5, ports=XILINX_DSP48E2, packing=False)
    assert (plain.multipliers, plain.products_per_multiplier, plain.latency) == (5, 1, 4)
    auto = MacLanes(16)   # ECP5 by default: "auto" resolves to one product per MULT18X18D
    assert not auto.packing and auto.multipliers == 16
    dsp = MacLanes(16, ports=XILINX_DSP48E2)
    assert dsp.multipliers == 8
    for lanes in (packed, plain, auto, dsp):
        Fragment.get(lanes, None)
    # The same figures without hardware (what AttentionGeometry uses).
    assert MAC_LANES_LATENCY == 4
    assert resolve_packing(XILINX_DSP48E2, "auto")[1] and not resolve_packing(ECP5_MULT18X18D,
                                                                             "auto")[1]
    assert (lane_multipliers(5, True), lane_multipliers(5, False)) == (3, 5)
    with pytest.raises(UserError, match=r"MacLanes\(packing=True\): .*25-bit port"):
        resolve_packing(ECP5_MULT18X18D, True)
    with pytest.raises(UserError, match=r"MacLanes\(packing=True\): .*25-bit port"):
        MacLanes(8, ports=ECP5_MULT18X18D, packing=True)
    for bad, match in ((0, "at least 1 lane"), (2.5, "must be an integer")):
        with pytest.raises(UserError, match=match):
            MacLanes(bad)
    with pytest.raises(UserError, match="packing must be"):
        MacLanes(4, packing="yes")


@pytest.mark.parametrize("ports,w_bits,offset", [(XILINX_DSP48E2, 8, None),
                                                 (XILINX_DSP48E2, 8, 18),
                                                 (ECP5_MULT18X18D, 4, None)])
def test_pair_in_amaranth_sim(ports, w_bits, offset):
    dut = PackedMultiplierPair(ports, 8, w_bits, offset=offset)
    rng = random.Random(w_bits)
    lo, hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    edge = [lo, lo + 1, -1, 0, 1, hi]
    cases = [(x, a, b) for x in (-128, -127, -1, 0, 1, 127) for a in edge for b in edge]
    cases += [(rng.randrange(-128, 128), rng.randint(lo, hi), rng.randint(lo, hi))
              for _ in range(300)]
    outputs = []

    async def testbench(ctx):
        for x, a, b in cases + [(0, 0, 0)] * dut.latency:
            ctx.set(dut.x, x)
            ctx.set(dut.w0, a)
            ctx.set(dut.w1, b)
            await ctx.tick()
            outputs.append((ctx.get(dut.p0), ctx.get(dut.p1)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    # Set before tick k, shown after tick k + latency - 1.
    for k, (x, a, b) in enumerate(cases):
        assert outputs[k + dut.latency - 1] == (x * a, x * b), (x, a, b)


def test_mac_lanes_in_amaranth_sim():
    lanes = 3
    dut = MacLanes(lanes, ports=XILINX_DSP48E2, packing=True)
    rng = random.Random(3)
    sums, beats = [], []
    for _ in range(12):
        length = rng.choice([1, 2, 5])
        total = [0] * lanes
        for t in range(length):
            x = rng.choice([-128, 127, rng.randrange(-128, 128)])
            w = [rng.choice([-128, 127, rng.randrange(-128, 128)]) for _ in range(lanes)]
            beats.append((x, w, t == 0, t == length - 1))
            total = [acc + x * v for acc, v in zip(total, w)]
        sums.append(total)
    results, done_ticks, last_ticks = [], [], []

    async def testbench(ctx):
        tick, position = 0, 0
        while len(results) < len(sums):
            if position < len(beats) and rng.random() < 0.7:
                x, w, first, last = beats[position]
                position += 1
                ctx.set(dut.valid, 1)
                ctx.set(dut.x, x)
                ctx.set(dut.w, w)
                ctx.set(dut.first, first)
                ctx.set(dut.last, last)
                if last:
                    last_ticks.append(tick)
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            tick += 1
            if ctx.get(dut.done):
                done_ticks.append(tick)
                results.append(list(ctx.get(dut.acc)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert results == sums
    # Set before tick t (counted from 0): done shows after tick t + latency - 1, i.e. when
    # `tick` has reached t + latency.
    assert done_ticks == [t + dut.latency for t in last_ticks]


def test_parse_stat_reads_the_hierarchy_totals():
    from flows.xilinx_dsp import parse_stat
    text = """
=== mac.pair_0 ===
      10 cells
        9   $_XOR_
        1   DSP48E2

=== design hierarchy ===

        +----------Count including submodules.
        |
      451 mac
       10 mac.pair_0

        +----------Count including submodules.
        |
     1998 wires
      451 cells
        1   $_AND_
        2   DSP48E2
      172 submodules
      138   FDRE
        1   mac.pair_0

"""
    assert parse_stat(text) == {"$_AND_": 1, "DSP48E2": 2, "FDRE": 138}
