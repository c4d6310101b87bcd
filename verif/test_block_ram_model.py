"""The operand buffers' DP16KD instances, simulated: `verif/cells/dp16kd.v` under the generator.

`gen.hw.accelerator.OperandBuffer` elaborated for the ECP5 platform is DP16KD blocks in their
registered-output mode (x9, x4, x2 or x1 slices by depth); here each runs on the model next to
the same buffer as plain RTL (a memory and a register), written from their own clock (``host``,
as the host link writes them) and read in ``sync``. Every address of every buffer is written,
then read back in order and at random: the two must agree every cycle, and the data must be
what was written, ``OPERAND_READ_LATENCY`` cycles after its address.

`gen.hw.accelerator.ParamBuffer` the same way: two DP16KD in the 36-bit mode per buffer, read
ahead (random addresses, a random output enable) against the plain RTL and the written data.
"""

import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from gen.hw.accelerator import OperandBuffer, ParamBuffer
from verif import seeds
from verif.streams import power_on

CELLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cells")
MODEL = os.path.join(CELLS, "dp16kd.v")
#: One depth per DP16KD slicing (x9 small and full, x4 partly used, x2, x1).
DEPTHS = [256, 2048, 3000, 8192, 16384]
ADDR_BITS = 14
WRITE_NS, READ_NS = 13, 10


def _unpack(word, count, width):
    return [(word >> (width * i)) & ((1 << width) - 1) for i in range(count)]


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def dp16kd_model_equals_rtl_buffer(dut):
    depths = json.loads(os.environ["DUT_PARAMS"])["depths"]
    rng = seeds.rng("dp16kd model")
    await power_on(dut, READ_NS, WRITE_NS, we=0, ra=0)
    contents = [dict() for _ in depths]

    async def reader(addresses, check):
        """Present one address per buffer each cycle (``addresses``: a list, or a function
        giving the next cycle's); compare both copies every cycle."""
        pipeline = [None, None]
        compared = 0
        steps = addresses + [None, None] if isinstance(addresses, list) else addresses
        for step in steps:
            await FallingEdge(dut.clk)
            got_bram = _unpack(dut.rd_bram.value.to_unsigned(), len(depths), 8)
            got_rtl = _unpack(dut.rd_rtl.value.to_unsigned(), len(depths), 8)
            assert got_bram == got_rtl, f"DP16KD model {got_bram}, plain RTL {got_rtl}"
            issued = pipeline.pop(0)
            if check and issued is not None:
                for i, addr in enumerate(issued):
                    assert got_bram[i] == contents[i][addr], (
                        f"depth {depths[i]}, address {addr}: read {got_bram[i]}, wrote "
                        f"{contents[i][addr]}")
                    compared += 1
            if step is not None:
                word = 0
                for i, addr in enumerate(step):
                    word |= addr << (ADDR_BITS * i)
                dut.ra.value = word
            pipeline.append(step)
        return compared

    # Write every address of every buffer, reading meanwhile (half a buffer away from the
    # writes: a read and a write of one word in one cycle are undefined on the device).
    written = {"addr": 0, "done": False}

    async def writer():
        for addr in range(max(depths)):
            written["addr"] = addr
            await FallingEdge(dut.host_clk)
            data = rng.getrandbits(8 * len(depths))
            dut.wa.value = addr
            dut.wd.value = data
            dut.we.value = 1
            for i, depth in enumerate(depths):
                if addr < depth:
                    contents[i][addr] = (data >> (8 * i)) & 0xFF
        await FallingEdge(dut.host_clk)
        dut.we.value = 0
        await FallingEdge(dut.host_clk)
        written["done"] = True

    def away_from_the_writes():
        while not written["done"]:
            yield [(written["addr"] + d // 2 + rng.randrange(d // 4)) % d for d in depths]
        yield None
        yield None

    write = cocotb.start_soon(writer())
    await reader(away_from_the_writes(), check=False)
    await write
    in_order = [[addr % d for d in depths] for addr in range(max(depths))]
    at_random = [[rng.randrange(d) for d in depths] for _ in range(4000)]
    compared = await reader(in_order + at_random, check=True)
    dut._log.info(f"{compared} reads checked against the written data")


PARAM_DEPTHS = [64, 512]
PARAM_BITS = 69


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def dp16kd_wide_model_equals_rtl_param_buffer(dut):
    """ParamBuffer: 36-bit mode DP16KD pairs, read ahead with a random output enable."""
    depths = PARAM_DEPTHS
    rng = seeds.rng("dp16kd wide model")
    await power_on(dut, READ_NS, WRITE_NS, we=0, ren=0)
    contents = [dict() for _ in depths]
    for addr in range(max(depths)):
        await FallingEdge(dut.host_clk)
        data = rng.getrandbits(PARAM_BITS * len(depths))
        dut.wa.value = addr
        dut.wd.value = data
        dut.we.value = 1
        for i, depth in enumerate(depths):
            if addr < depth:
                contents[i][addr] = (data >> (PARAM_BITS * i)) & ((1 << PARAM_BITS) - 1)
    await FallingEdge(dut.host_clk)
    dut.we.value = 0
    for _ in range(3):
        await FallingEdge(dut.host_clk)
    # data(t+1) = en(t) ? word at addr(t-1) : data(t)
    previous_addr = None
    expected = None
    checked = 0
    for step in range(6000):
        await FallingEdge(dut.clk)
        got_bram = _unpack(dut.rd_bram.value.to_unsigned(), len(depths), PARAM_BITS)
        got_rtl = _unpack(dut.rd_rtl.value.to_unsigned(), len(depths), PARAM_BITS)
        assert got_bram == got_rtl, f"step {step}: DP16KD model {got_bram}, RTL {got_rtl}"
        if expected is not None:
            assert got_bram == expected, f"step {step}: read {got_bram}, expected {expected}"
            checked += 1
        addr = [rng.randrange(d) for d in depths]
        en = rng.random() < 0.6
        if en and previous_addr is not None:
            expected = [contents[i][a] for i, a in enumerate(previous_addr)]
        word = 0
        for i, a in enumerate(addr):
            word |= a << (ADDR_BITS * i)
        dut.ra.value = word
        dut.ren.value = int(en)
        previous_addr = addr
    dut._log.info(f"{checked} read-ahead cycles checked")


def _bank(buffer_class, word_bits, depths):
    """``buffer_class`` (OperandBuffer or ParamBuffer) per depth, twice: on the ECP5 platform
    (DP16KD instances) and as plain RTL, sharing write and read ports."""
    from amaranth.hdl import Elaboratable, Fragment, Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from gen.boards import get_board

    ecp5 = get_board("ulx3s-85f").platform_class()()

    class OnPlatform(Elaboratable):
        def __init__(self, inner, platform):
            self.inner, self.platform = inner, platform

        def elaborate(self, platform):
            return Fragment.get(self.inner, self.platform)

    class Bank(wiring.Component):
        wa: In(ADDR_BITS)
        wd: In(word_bits * len(depths))
        we: In(1)
        ra: In(ADDR_BITS * len(depths))
        ren: In(1)
        rd_bram: Out(word_bits * len(depths))
        rd_rtl: Out(word_bits * len(depths))

        def elaborate(self, platform):
            m = Module()
            for i, depth in enumerate(depths):
                for name, target in (("bram", ecp5), ("rtl", None)):
                    buffer = buffer_class(depth, write_domain="host")
                    assert buffer.uses_block_ram_instances
                    m.submodules[f"{name}_{depth}"] = OnPlatform(buffer, target)
                    width = len(buffer.wr.addr)
                    bits = slice(word_bits * i, word_bits * (i + 1))
                    m.d.comb += [
                        buffer.wr.addr.eq(self.wa[:width]),
                        buffer.wr.data.eq(self.wd[bits]),
                        buffer.wr.en.eq(self.we & (self.wa < depth)),
                        buffer.rd.addr.eq(self.ra[ADDR_BITS * i:ADDR_BITS * i + width]),
                        getattr(self, f"rd_{name}")[bits].eq(buffer.rd.data),
                    ]
                    if buffer_class is ParamBuffer:     # the operand buffers read every cycle
                        m.d.comb += buffer.rd.en.eq(self.ren)
            return m

    return Bank()


def test_dp16kd_model_against_generator():
    from amaranth.back import verilog

    from verif.sim import SIM_BUILD, run_cocotb

    text = verilog.convert(_bank(OperandBuffer, 8, DEPTHS), name="bram_bank", emit_src=False)
    # x9: one block; 3000 words: two x4; 8192: four x2; 16384: eight x1.
    assert text.count("DP16KD ") == 1 + 1 + 2 + 4 + 8, text.count("DP16KD ")
    source = SIM_BUILD / "bram_bank-rtl" / "bram_bank.v"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(None, "bram_bank", "verif.test_block_ram_model", {"depths": DEPTHS},
               sources=[source, MODEL], build_args=["-Wno-MULTIDRIVEN"],
               testcase="dp16kd_model_equals_rtl_buffer")


def test_dp16kd_wide_model_against_generator():
    from amaranth.back import verilog

    from verif.sim import SIM_BUILD, run_cocotb

    text = verilog.convert(_bank(ParamBuffer, PARAM_BITS, PARAM_DEPTHS),
                           name="param_bank", emit_src=False)
    assert text.count("DP16KD ") == 2 * len(PARAM_DEPTHS), text.count("DP16KD ")
    source = SIM_BUILD / "param_bank-rtl" / "param_bank.v"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(None, "param_bank", "verif.test_block_ram_model",
               {"param_depths": PARAM_DEPTHS}, sources=[source, MODEL],
               build_args=["-Wno-MULTIDRIVEN"],
               testcase="dp16kd_wide_model_equals_rtl_param_buffer")
