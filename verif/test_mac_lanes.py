"""MacLanes against `golden_mac.mac_sum`: random sums of random lengths (including one beat),
INT8 extremes and long -128 * -128 sums, odd and even lane counts, packing on and off, random
gaps between beats (with garbage on the idle inputs; `verif.streams.StreamSource`, seeded by
``ACCELGEN_SEED``) and back-to-back sums. Also checks the
timing contract: `done` exactly `latency` cycles after the `last` beat, `acc` held until the
next sum's first beat reaches the accumulators.

One Verilator build holds every configuration (UNITS): the MacLanes instances share the inputs
(an instance of n lanes takes lanes 0..n-1 of the word) and each has its own `done` and `acc`."""

import json
import os

import cocotb
import torch
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from verif import golden_mac, seeds
from verif.streams import StreamBus, StreamSource, log_seed, start_clock

CLOCK_NS = 10


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def _to_signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


class TB:
    """Drives beats (a `verif.streams.StreamSource`) after rising edges and samples at the
    rising edge's read-only phase; random from ``ACCELGEN_SEED``.

    A beat driven before rising edge ``n`` is taken at edge ``n``; its result is visible after
    edge ``n + latency - 1`` (``latency`` cycles after the cycle it was driven in).
    """

    def __init__(self, dut, seed):
        self.dut = dut
        params = _params()
        self.units = params["units"]           # name -> lanes
        self.lanes = max(self.units.values())  # width of the shared word
        self.latency = params["latency"]
        self.rng = seeds.rng(f"mac lanes {seed}")
        log_seed(dut)
        start_clock(dut.clk, CLOCK_NS)
        # The input pipe: valid only (no ready), its payload on four ports.
        self.bus = StreamBus(dut, valid="valid", ready=False,
                             fields={name: name for name in ("x", "w", "first", "last")})

    async def reset(self):
        dut = self.dut
        dut.valid.value = 0
        dut.first.value = 0
        dut.last.value = 0
        dut.x.value = 0
        dut.w.value = 0
        dut.rst.value = 1
        for _ in range(2):
            await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

    def outputs(self):
        """(done, acc) of every unit, read in the read-only phase."""
        out = {}
        for name, lanes in self.units.items():
            bus = int(getattr(self.dut, f"{name}_acc").value)
            out[name] = (int(getattr(self.dut, f"{name}_done").value),
                         [_to_signed(bus >> (32 * lane) & 0xFFFFFFFF, 32)
                          for lane in range(lanes)])
        return out

    def _word(self, values):
        word = 0
        for lane, value in enumerate(values):
            word |= (int(value) & 0xFF) << (8 * lane)
        return word

    async def run(self, sums, gap_probability):
        """Feed ``sums`` (a list of (x [T], w [T, lanes]) tensors) and check every result.

        The beats go through a `StreamSource` on the valid-only input (``x``, ``w``, ``first``,
        ``last`` as fields; garbage on them while ``valid`` is 0); it reports the cycle each
        beat was taken in. Times here are of rising edges, in ns.
        """
        dut, latency = self.dut, self.latency
        period = CLOCK_NS
        expected = [golden_mac.mac_sum(x, w).tolist() for x, w in sums]
        beats, meta = [], []   # field values; (first, last, sum index)
        for index, (x, w) in enumerate(sums):
            xs, ws = x.tolist(), w.tolist()
            for t in range(len(xs)):
                beats.append({"x": xs[t], "w": self._word(ws[t]), "first": int(t == 0),
                              "last": int(t == len(xs) - 1)})
                meta.append((t == 0, t == len(xs) - 1, index))
        first_edge, last_edge = {}, {}   # sum index -> time of the edge that took the beat
        taken = []

        def on_accept(beat, time_ns):
            first, last, index = meta[len(taken)]
            taken.append(time_ns)
            if first:
                first_edge[index] = time_ns + period
            if last:
                last_edge[index] = time_ns + period

        source = StreamSource(self.bus, dut.clk, gap_probability=gap_probability, rng=self.rng,
                              idle="random", on_accept=on_accept)
        source.send_nowait(beats)
        done_edges = []
        results = {}
        held = None          # (sum index, values) that acc must keep showing
        bound = int(len(beats) / max(0.05, 1 - gap_probability) * 2) + 100 * latency + 1000
        for _ in range(bound):
            if not source.queue and len(done_edges) == len(sums):
                break
            await RisingEdge(dut.clk)
            await ReadOnly()
            edge = get_sim_time("ns")
            outputs = self.outputs()
            dones = {name: done for name, (done, _) in outputs.items()}
            assert len(set(dones.values())) == 1, f"edge {edge}: done differs: {dones}"
            if any(dones.values()):
                index = len(done_edges)
                assert index < len(sums), f"edge {edge}: done without a pending sum"
                done_edges.append(edge)
                assert edge == last_edge.get(index, -1) + (latency - 1) * period, (
                    f"sum {index}: done after edge {edge} ns, last beat taken at edge "
                    f"{last_edge.get(index)} ns, latency {latency} ({seeds.describe()})")
                for name, (_, acc) in outputs.items():
                    want = expected[index][:self.units[name]]
                    assert acc == want, (f"{name}, sum {index} ({len(sums[index][0])} beats): "
                                         f"got {acc}, expected {want} ({seeds.describe()})")
                results[index] = outputs
                held = (index, {name: acc for name, (_, acc) in outputs.items()})
            elif held is not None:
                index, values = held
                # The next sum's first beat overwrites acc after edge first + latency - 1.
                nxt = first_edge.get(index + 1)
                if nxt is None or edge < nxt + (latency - 1) * period:
                    assert {name: acc for name, (_, acc) in outputs.items()} == values, (
                        f"edge {edge}: acc changed from sum {index}'s result before the next "
                        f"sum's first beat reached it ({seeds.describe()})")
                else:
                    held = None
        else:
            raise AssertionError(f"{len(done_edges)} of {len(sums)} sums done, "
                                 f"{len(source.queue)} beats not sent after {bound} cycles "
                                 f"({seeds.describe()})")
        await RisingEdge(dut.clk)
        source.clear()
        source.stop()
        assert len(results) == len(sums)


def random_sums(rng, lanes, count, max_length):
    sums = []
    for _ in range(count):
        length = rng.choice([1, 1, 2, 3, rng.randrange(1, max_length + 1)])
        g = torch.Generator().manual_seed(rng.getrandbits(32))
        x = torch.randint(-128, 128, (length,), generator=g)
        w = torch.randint(-128, 128, (length, lanes), generator=g)
        sums.append((x, w))
    return sums


def extreme_sums(rng, lanes):
    sums = []
    for length in (1, 2, 7, 300):
        for xv, wv in ((-128, -128), (-128, 127), (127, -128), (127, 127), (0, -128)):
            sums.append((torch.full((length,), xv), torch.full((length, lanes), wv)))
    # Lanes with different extremes in one word (pairs see mixed signs in both fields).
    for _ in range(20):
        length = rng.randrange(1, 20)
        x = torch.tensor([rng.choice([-128, 127, -1, 0, 1]) for _ in range(length)])
        w = torch.tensor([[rng.choice([-128, 127, -1, 0, 1]) for _ in range(lanes)]
                          for _ in range(length)])
        sums.append((x, w))
    rng.shuffle(sums)
    return sums


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def random_sums_with_gaps(dut):
    tb = TB(dut, seed=1)
    await tb.reset()
    await tb.run(random_sums(tb.rng, tb.lanes, 150, 40), gap_probability=0.3)


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def back_to_back_random_sums(dut):
    tb = TB(dut, seed=2)
    await tb.reset()
    await tb.run(random_sums(tb.rng, tb.lanes, 150, 12), gap_probability=0.0)


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def extremes(dut):
    tb = TB(dut, seed=3)
    await tb.reset()
    await tb.run(extreme_sums(tb.rng, tb.lanes), gap_probability=0.05)


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def longest_extreme_sum(dut):
    """The longest -128 * -128 sum an INT32 accumulator takes (131071 * 2^14 <= 2^31 - 1),
    then the most negative one. The body beats are all equal, so the inputs are held
    instead of driven beat by beat."""
    tb = TB(dut, seed=4)
    await tb.reset()
    lanes, latency = tb.lanes, tb.latency
    for length, xv, wv in ((131071, -128, -128), (131072, -128, 127)):
        expected = golden_mac.mac_sum(torch.full((1,), xv), torch.full((1, lanes), wv)) * length
        dut.valid.value = 1
        dut.x.value = xv & 0xFF
        dut.w.value = tb._word([wv] * lanes)
        dut.first.value = 1
        dut.last.value = 0
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.first.value = 0
        await ClockCycles(dut.clk, length - 2, rising=False)
        dut.last.value = 1
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.valid.value = 0
        dut.last.value = 0
        # Taken at the edge just passed; the result shows after latency - 1 edges.
        for _ in range(latency - 2):
            await RisingEdge(dut.clk)
            await ReadOnly()
            assert not any(d for d, _ in tb.outputs().values()), "done came early"
        await RisingEdge(dut.clk)
        await ReadOnly()
        for name, (done, acc) in tb.outputs().items():
            assert done, f"{name}: no done {latency} cycles after the last beat"
            want = expected.tolist()[:tb.units[name]]
            assert acc == want, f"{name}: {length} beats of {xv} * {wv}: got {acc}, want {want}"
        await FallingEdge(dut.clk)


#: name -> (lanes, ports, packing): even and odd lane counts (an odd one leaves a lane unpaired
#: when packing), packing on and off, both targets' ports.
UNITS = {
    "packed8": (8, "XILINX_DSP48E2", True),
    "packed5": (5, "XILINX_DSP48E2", True),
    "plain7": (7, "ECP5_MULT18X18D", False),
}


def mac_lanes_top():
    from amaranth.hdl import Module, signed
    from amaranth.lib import data, wiring
    from amaranth.lib.wiring import In, Out

    from gen.hw import packing as packing_module
    from gen.hw.mac_lanes import MacLanes

    class MacLanesTop(wiring.Component):
        def __init__(self):
            self._units = {name: MacLanes(lanes, ports=getattr(packing_module, ports),
                                          packing=packing)
                           for name, (lanes, ports, packing) in UNITS.items()}
            for name, unit in self._units.items():
                lanes, _, packing = UNITS[name]
                assert unit.packing == packing
                assert unit.multipliers == ((lanes + 1) // 2 if packing else lanes)
            latencies = {unit.latency for unit in self._units.values()}
            assert len(latencies) == 1
            self.latency = latencies.pop()
            widest = max(lanes for lanes, _, _ in UNITS.values())
            ports = {"valid": In(1), "first": In(1), "last": In(1), "x": In(signed(8)),
                     "w": In(data.ArrayLayout(signed(8), widest))}
            for name, unit in self._units.items():
                ports[f"{name}_done"] = Out(1)
                ports[f"{name}_acc"] = Out(unit.acc.shape())
            super().__init__(ports)

        def elaborate(self, platform):
            m = Module()
            for name, unit in self._units.items():
                m.submodules[name] = unit
                m.d.comb += [unit.valid.eq(self.valid), unit.first.eq(self.first),
                             unit.last.eq(self.last), unit.x.eq(self.x),
                             getattr(self, f"{name}_done").eq(unit.done),
                             getattr(self, f"{name}_acc").eq(unit.acc)]
                m.d.comb += [unit.w[lane].eq(self.w[lane]) for lane in range(unit.lanes)]
            return m

    return MacLanesTop()


def test_mac_lanes():
    from verif.sim import run_cocotb
    top = mac_lanes_top()
    run_cocotb(top, "mac_lanes_top", "verif.test_mac_lanes",
               {"units": {name: lanes for name, (lanes, _, _) in UNITS.items()},
                "latency": top.latency})
