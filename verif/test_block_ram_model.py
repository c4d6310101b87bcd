"""The operand buffers' DP16KD instances, simulated: `verif/cells/dp16kd.v` under the generator.

`gen.hw.accelerator.OperandBuffer` elaborated for the ECP5 platform is DP16KD blocks in their
registered-output mode (x9, x4, x2 or x1 slices by depth); here each runs on the model next to
the same buffer as plain RTL (a memory and a register), written from their own clock (``host``,
as the host link writes them) and read in ``sync``. Every address of every buffer is written,
then read back in order and at random: the two must agree every cycle, and the data must be
what was written, ``OPERAND_READ_LATENCY`` cycles after its address.

`gen.hw.accelerator.ParamBuffer` the same way: two DP16KD in the 36-bit mode per buffer, read
ahead (random addresses, a random output enable) against the plain RTL and the written data.

`gen.hw.attention.memory.BlockRamBank` (the attention kernel's wmem and amem banks) the same
way: 36-bit mode blocks with byte enables or one enable, random writes beside random reads of
other words (a read of the word being written has no defined result on the block RAM).
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


#: The attention kernel's banks (`gen.hw.attention.memory.BlockRamBank`): (word bits,
#: granularity, depth): amem's 8 byte lanes with byte enables, and a weight-word-like word.
KERNEL_BANKS = [(64, 8, 512), (53, None, 300)]
BANK_ADDR_BITS = 9


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def dp16kd_model_equals_rtl_kernel_bank(dut):
    """BlockRamBank: 36-bit mode DP16KD blocks (byte enables or one enable) against the plain
    RTL and the written data, random writes beside random reads of other words."""
    from verif.streams import log_seed, start_clock
    rng = seeds.rng("dp16kd kernel bank")
    log_seed(dut)
    start_clock(dut.clk, READ_NS)
    dut.rst.value = 1
    dut.we.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    contents = [[0] * depth for _, _, depth in KERNEL_BANKS]
    widths = [w for w, _, _ in KERNEL_BANKS]
    pipeline = [None, None]
    checked = 0
    for step in range(4000):
        await FallingEdge(dut.clk)
        got_bram = _unpack_widths(dut.rd_bram.value.to_unsigned(), widths)
        got_rtl = _unpack_widths(dut.rd_rtl.value.to_unsigned(), widths)
        assert got_bram == got_rtl, f"step {step}: DP16KD model {got_bram}, plain RTL {got_rtl}"
        expected = pipeline.pop(0)
        if expected is not None:
            assert got_bram == expected, f"step {step}: read {got_bram}, expected {expected}"
            checked += 1
        wa, wd, we, ra = 0, 0, 0, 0
        reads, offset, en_offset = [], 0, 0
        for i, (width, granularity, depth) in enumerate(KERNEL_BANKS):
            enables = width // 8 if granularity else 1
            write_addr = rng.randrange(depth)
            data = rng.getrandbits(width)
            en = rng.getrandbits(enables) if rng.random() < 0.5 else 0
            # Never the word being written: that read has no defined result on the block RAM.
            read_addr = rng.choice([a for a in range(depth) if not (en and a == write_addr)])
            reads.append(contents[i][read_addr])
            if en:
                mask = 0
                for lane in range(enables):
                    if en >> lane & 1:
                        mask |= ((1 << (granularity or width)) - 1) << (lane * (granularity or 0))
                contents[i][write_addr] = (contents[i][write_addr] & ~mask) | (data & mask)
            wa |= write_addr << (BANK_ADDR_BITS * i)
            ra |= read_addr << (BANK_ADDR_BITS * i)
            wd |= data << offset
            we |= en << en_offset
            offset += width
            en_offset += enables
        pipeline.append(reads)
        dut.wa.value, dut.wd.value, dut.we.value, dut.ra.value = wa, wd, we, ra
    dut._log.info(f"{checked} reads checked against the written data")


def _unpack_widths(word, widths):
    values = []
    for width in widths:
        values.append(word & ((1 << width) - 1))
        word >>= width
    return values


def _kernel_banks():
    """Each of KERNEL_BANKS twice: on the ECP5 platform (DP16KD instances) and as plain RTL."""
    from amaranth.hdl import Elaboratable, Fragment, Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from gen.boards import get_board
    from gen.hw.attention.memory import BlockRamBank

    ecp5 = get_board("ulx3s-85f").platform_class()()
    total = sum(w for w, _, _ in KERNEL_BANKS)
    enables = sum(w // 8 if g else 1 for w, g, _ in KERNEL_BANKS)

    class OnPlatform(Elaboratable):
        def __init__(self, inner, platform):
            self.inner, self.platform = inner, platform

        def elaborate(self, platform):
            return Fragment.get(self.inner, self.platform)

    class Banks(wiring.Component):
        wa: In(BANK_ADDR_BITS * len(KERNEL_BANKS))
        wd: In(total)
        we: In(enables)
        ra: In(BANK_ADDR_BITS * len(KERNEL_BANKS))
        rd_bram: Out(total)
        rd_rtl: Out(total)

        def elaborate(self, platform):
            m = Module()
            offset = en_offset = 0
            for i, (width, granularity, depth) in enumerate(KERNEL_BANKS):
                bits = slice(offset, offset + width)
                count = width // 8 if granularity else 1
                addr = slice(BANK_ADDR_BITS * i, BANK_ADDR_BITS * (i + 1))
                for name, target in (("bram", ecp5), ("rtl", None)):
                    bank = BlockRamBank(width, depth, granularity=granularity)
                    assert bank.uses_block_ram_instances
                    m.submodules[f"{name}_{i}"] = OnPlatform(bank, target)
                    m.d.comb += [
                        bank.wr.addr.eq(self.wa[addr]), bank.wr.data.eq(self.wd[bits]),
                        bank.wr.en.eq(self.we[en_offset:en_offset + count]),
                        bank.rd.addr.eq(self.ra[addr]),
                        getattr(self, f"rd_{name}")[bits].eq(bank.rd.data),
                    ]
                offset += width
                en_offset += count
            return m

    return Banks()


def test_dp16kd_model_against_kernel_bank():
    from amaranth.back import verilog

    from verif.sim import SIM_BUILD, run_cocotb

    text = verilog.convert(_kernel_banks(), name="kernel_bank", emit_src=False)
    # 64 bits with byte enables: 2 blocks of 4 bytes; 53 bits: 2 blocks of 36.
    assert text.count("DP16KD ") == 2 + 2, text.count("DP16KD ")
    source = SIM_BUILD / "kernel_bank-rtl" / "kernel_bank.v"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(None, "kernel_bank", "verif.test_block_ram_model", {}, sources=[source, MODEL],
               build_args=["-Wno-MULTIDRIVEN"], testcase="dp16kd_model_equals_rtl_kernel_bank")
