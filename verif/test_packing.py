"""Proof of the packed multiplier pairs against `golden_mac.products`, bit for bit.

Exhaustive, every (x, w0, w1) triple of each plan the generator claims:

* ``dsp``: Xilinx DSP48E2 (27x18), INT8 x INT8, default field offset 16: 256^3 = 16.7M triples;
* ``wp487``: the same with offset 18 (the WP487 layout, allowed by ``offset=18``): 16.7M;
* ``ecp5``: ECP5 MULT18X18D (18x18), INT8 x INT4: 256 * 16 * 16 triples.

cocotb pays for every signal of a big design with VPI tables (a 256-instance top took minutes
to compile), so the exhaustive part runs the Verilog of one pair per plan under a small
Verilator C++ harness: it applies triple i = (x, w0, w1) = the bytes (nibbles for ecp5) of i,
one per cycle, and streams the raw p0, p1 port values to this process, which compares them
chunk by chunk with the torch golden. The same top also runs under cocotb with random and
extreme operands (every input changing every cycle), as the other RTL tests do.
"""

import json
import os
import select
import subprocess
import time

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import ReadOnly, RisingEdge

from verif import golden_mac, seeds
from verif.streams import log_seed, start_clock

#: Wall-clock bounds (seconds) of the harness build and of one plan's exhaustive pass: a
#: harness that stops writing fails the test instead of hanging it.
BUILD_TIMEOUT_S = 900
PASS_TIMEOUT_S = 600

#: plan -> (bits of w0 and w1, product bits). x is INT8 in every plan.
PLANS = {"dsp": (8, 16), "wp487": (8, 16), "ecp5": (4, 12)}


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def _signed(raw, bits):
    """Two's-complement fields (any integer tensor) to signed int64."""
    raw = raw.to(torch.int64) & ((1 << bits) - 1)
    return torch.where(raw >= 1 << (bits - 1), raw - (1 << bits), raw)


def triples(start, count, w_bits):
    """Triples ``start .. start+count-1`` in the harness order: index i holds w1 in its low
    ``w_bits``, w0 in the next ``w_bits`` and x in the 8 bits above, two's complement."""
    i = torch.arange(start, start + count, dtype=torch.int64)
    mask = (1 << w_bits) - 1
    return (_signed(i >> (2 * w_bits), 8), _signed(i >> w_bits & mask, w_bits),
            _signed(i & mask, w_bits))


# -- exhaustive: Verilator C++ harness ---------------------------------------------------------

HARNESS = r"""
// Applies every (x, w0, w1) triple of one plan, one per cycle, and writes the raw p0, p1 port
// values of each triple to stdout as two little-endian uint16 (after `latency` cycles).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "Vpacking_pairs.h"
#include "verilated.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s dsp|wp487|ecp5 latency\n", argv[0]); return 2; }
    const char *plan = argv[1];
    const int latency = atoi(argv[2]);
    const int w_bits = strcmp(plan, "ecp5") == 0 ? 4 : 8;
    const uint64_t count = 1ull << (8 + 2 * w_bits), mask = (1u << w_bits) - 1;
    Vpacking_pairs *top = new Vpacking_pairs;
    CData *x, *w0, *w1; SData *p0, *p1;
    if (strcmp(plan, "dsp") == 0) {
        x = &top->dsp_x; w0 = &top->dsp_w0; w1 = &top->dsp_w1; p0 = &top->dsp_p0; p1 = &top->dsp_p1;
    } else if (strcmp(plan, "wp487") == 0) {
        x = &top->wp487_x; w0 = &top->wp487_w0; w1 = &top->wp487_w1;
        p0 = &top->wp487_p0; p1 = &top->wp487_p1;
    } else {
        x = &top->ecp5_x; w0 = &top->ecp5_w0; w1 = &top->ecp5_w1;
        p0 = &top->ecp5_p0; p1 = &top->ecp5_p1;
    }
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); };
    top->rst = 1; tick(); tick(); top->rst = 0;
    std::vector<uint16_t> out;
    out.reserve(1 << 17);
    for (uint64_t i = 0; i + 1 < count + latency; i++) {
        if (i < count) {
            *x = (i >> (2 * w_bits)) & 0xFF;
            *w0 = (i >> w_bits) & mask;
            *w1 = i & mask;
        }
        tick();   // takes the operands of triple i; shows the products of triple i+1-latency
        if (i + 1 >= (uint64_t)latency) {
            out.push_back(*p0);
            out.push_back(*p1);
            if (out.size() == out.capacity()) {
                fwrite(out.data(), 2, out.size(), stdout);
                out.clear();
            }
        }
    }
    fwrite(out.data(), 2, out.size(), stdout);
    fflush(stdout);
    delete top;
    return 0;
}
"""


def packing_pairs():
    """The test top: one PackedMultiplierPair per plan, with ports ``<plan>_<port>``."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring

    from gen.hw.packing import ECP5_MULT18X18D, XILINX_DSP48E2, PackedMultiplierPair

    def pair(plan):
        if plan == "ecp5":
            return PackedMultiplierPair(ECP5_MULT18X18D, 8, 4)
        return PackedMultiplierPair(XILINX_DSP48E2, 8, 8, offset=18 if plan == "wp487" else None)

    class PackingPairs(wiring.Component):
        def __init__(self):
            self._pairs = {plan: pair(plan) for plan in PLANS}
            ports = {}
            for plan, unit in self._pairs.items():
                for name, member in unit.signature.members.items():
                    ports[f"{plan}_{name}"] = member
            super().__init__(ports)
            self.offsets = {plan: unit.plan.offset for plan, unit in self._pairs.items()}
            latencies = {unit.latency for unit in self._pairs.values()}
            assert len(latencies) == 1
            self.latency = latencies.pop()

        def elaborate(self, platform):
            m = Module()
            for plan, unit in self._pairs.items():
                m.submodules[plan] = unit
                m.d.comb += [unit.x.eq(getattr(self, f"{plan}_x")),
                             unit.w0.eq(getattr(self, f"{plan}_w0")),
                             unit.w1.eq(getattr(self, f"{plan}_w1")),
                             getattr(self, f"{plan}_p0").eq(unit.p0),
                             getattr(self, f"{plan}_p1").eq(unit.p1)]
            return m

    return PackingPairs()


def build_harness(top):
    """Verilate ``top`` with the C++ harness (once per Verilog text); returns the binary."""
    from gen.rtl import content_hash, emit_verilog
    from verif.sim import SIM_BUILD, verilator_env

    root = verilator_env()
    text = emit_verilog(top, "packing_pairs")
    build_dir = SIM_BUILD / f"packing_harness-{content_hash([text, HARNESS])}"
    binary = build_dir / "Vpacking_pairs"
    if binary.exists():
        return binary
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "packing_pairs.v").write_text(text)
    (build_dir / "harness.cpp").write_text(HARNESS)
    subprocess.run(
        ["nice", "-n", "10", str(root / "bin" / "verilator"), "--cc", "--exe", "--build",
         "-O2", "-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast",
         "--top-module", "packing_pairs", "-Mdir", str(build_dir),
         "-CFLAGS", "-O2", "-o", "Vpacking_pairs", "packing_pairs.v", "harness.cpp"],
        cwd=build_dir, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    return binary


def _read(fd, count, deadline, what):
    """Up to ``count`` bytes from ``fd`` (fewer only at end of file); fails at ``deadline``."""
    chunks, got = [], 0
    while got < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what}: the harness wrote {got} of {count} bytes in time "
                                 f"(limit {PASS_TIMEOUT_S} s)")
        if not select.select([fd], [], [], min(left, 5))[0]:
            continue
        data = os.read(fd, min(count - got, 1 << 20))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def harness():
    top = packing_pairs()
    return build_harness(top), top.latency, top.offsets


@pytest.mark.parametrize("plan", list(PLANS))
def test_every_triple(harness, plan):
    torch.set_num_threads(1)
    binary, latency, offsets = harness
    w_bits, product_bits = PLANS[plan]
    total = 1 << (8 + 2 * w_bits)
    chunk = 1 << 16
    proc = subprocess.Popen([str(binary), plan, str(latency)], stdout=subprocess.PIPE)
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + PASS_TIMEOUT_S
    checked = 0
    try:
        while checked < total:
            count = min(chunk, total - checked)
            raw = _read(fd, 4 * count, deadline, plan)
            assert len(raw) == 4 * count, f"{plan}: harness stopped after {checked} triples"
            got = torch.from_numpy(np.frombuffer(raw, dtype="<u2").astype(np.int64))
            got = _signed(got, product_bits).reshape(count, 2)
            x, w0, w1 = triples(checked, count, w_bits)
            expected = golden_mac.products(x, torch.stack([w0, w1], dim=1), 8, w_bits)
            if not torch.equal(got, expected):
                k = int((got != expected).any(dim=1).nonzero()[0])
                raise AssertionError(
                    f"{plan} (offset {offsets[plan]}): x={int(x[k])} w0={int(w0[k])} "
                    f"w1={int(w1[k])}: got (p0, p1) = {tuple(got[k].tolist())}, expected "
                    f"{tuple(expected[k].tolist())}")
            checked += count
        assert _read(fd, 1, deadline, plan) == b"", (
            f"{plan}: harness wrote more than {total} triples")
        assert proc.wait(timeout=max(1, deadline - time.monotonic())) == 0, (
            f"{plan}: harness exited with {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.wait()
    assert checked == total


# -- random and extremes under cocotb ----------------------------------------------------------

@cocotb.test(timeout_time=5, timeout_unit="ms")
async def random_and_extremes(dut):
    """Every operand of every plan changes every cycle: random values on even cycles, values
    drawn from the extremes on odd ones (from ``ACCELGEN_SEED``); checked ``latency`` cycles
    later."""
    log_seed(dut)
    start_clock(dut.clk, 10)
    latency = _params()["latency"]
    rng = seeds.rng("packing random_and_extremes")
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    extremes = {8: [-128, -127, -64, -1, 0, 1, 63, 126, 127], 4: [-8, -7, -1, 0, 1, 6, 7]}
    sent = []
    cycles = 4000
    for i in range(cycles + latency):
        await RisingEdge(dut.clk)
        if i < cycles:
            # Written after edge i: taken at edge i + 1, shown after edge i + latency.
            case = {}
            for plan, (w_bits, _) in PLANS.items():
                ops = []
                for bits in (8, w_bits, w_bits):
                    ops.append(rng.choice(extremes[bits]) if i % 2 else
                               rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)))
                case[plan] = ops
                for name, value, bits in zip(("x", "w0", "w1"), ops, (8, w_bits, w_bits)):
                    getattr(dut, f"{plan}_{name}").value = value & ((1 << bits) - 1)
            sent.append(case)
        j = i - latency
        if j < 0:
            continue
        await ReadOnly()
        for plan, (x, w0, w1) in sent[j].items():
            w_bits, product_bits = PLANS[plan]
            expected = golden_mac.products(x, [w0, w1], 8, w_bits).tolist()
            got = [int(_signed(torch.tensor(int(getattr(dut, f"{plan}_{p}").value)),
                               product_bits)) for p in ("p0", "p1")]
            assert got == expected, (f"{plan}: x={x} w0={w0} w1={w1}: got {got}, expected "
                                     f"{expected} ({seeds.describe()})")


def test_random_and_extremes():
    from verif.sim import run_cocotb
    top = packing_pairs()
    run_cocotb(top, "packing_pairs", "verif.test_packing",
               {"plans": PLANS, "latency": top.latency})
