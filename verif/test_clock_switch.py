"""Run-time clock levels: the DCSC model (`verif/cells/dcsc.v`) and the GEMM system clocked
through `gen.hw.clock_select.ClockSelect`, under Verilator.

(a) The model alone, its select changed at random (seeded) times, asynchronous to both
    clocks: no pulse on the output is shorter than the faster input's phase, and once a
    select has had time to take (a period of the old clock and one of the new), the output's
    edges are the selected clock's edges, at the same times.
(b) The HostSystem with clock levels, its ``sync`` domain clocked by the clock select fed by
    two cocotb clocks of different periods: LEVEL commands over the serial line (the driver a
    user runs) toggle the level several times at random moments while a GEMM job runs; the
    result equals `verif.golden.gemm_int8` and the cycle count `gen.cycles.gemm_cycles`
    (the job lost no cycle and no data), and the switched clock never has a short pulse.

Every test has a simulated-time bound; the driver's waits are bounded too.
"""

import json
import os

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import Edge, RisingEdge, Timer
from cocotb.utils import get_sim_time

from verif import golden, seeds
from verif.streams import log_seed, start_clock

CELLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cells")
MODEL = os.path.join(CELLS, "dcsc.v")

#: (a): the two inputs' periods in ps (the fast one 8 ns, the slow one unrelated to it).
MODEL_PERIODS_PS = (8000, 21_700)
MODEL_SWITCHES = 1000
#: (b): the accelerator's two levels, the host link's clock.
FAST_NS, SLOW_NS, HOST_NS = 8, 19.4, 20
TEST_TIMEOUT_MS = 200


class EdgeLog:
    """Times (ps) and new values of every change of ``signal``, from now on."""

    def __init__(self, signal):
        self.signal = signal
        self.events = []
        self._task = cocotb.start_soon(self._watch())

    async def _watch(self):
        while True:
            await Edge(self.signal)
            self.events.append((get_sim_time("ps"), int(self.signal.value)))

    def stop(self):
        self._task.cancel()

    def pulses(self):
        """Widths (ps) of every complete pulse, high or low."""
        times = [t for t, _ in self.events]
        return [b - a for a, b in zip(times, times[1:])]

    def between(self, start, end):
        return [(t, v) for t, v in self.events if start <= t < end]

    def value_at(self, time):
        """The value after the last change at or before ``time`` (None before the first)."""
        before = [v for t, v in self.events if t <= time]
        return before[-1] if before else None


# ---------------------------------------------------------------------------------------
# (a) the model alone


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def dcsc_random_switching(dut):
    log_seed(dut)
    mode = json.loads(os.environ["DUT_PARAMS"])["mode"]
    held = 1 if mode == "POS" else 0      # the output's value while no input is enabled
    rng = seeds.rng(f"dcsc model {mode}")
    fast, slow = MODEL_PERIODS_PS
    dut.MODESEL.value = 0
    dut.SEL0.value, dut.SEL1.value = 1, 0
    start_clock(dut.CLK0, fast / 1000)
    await Timer(rng.randrange(1, slow), unit="ps")       # an arbitrary phase between them
    start_clock(dut.CLK1, slow / 1000)
    logs = {name: EdgeLog(getattr(dut, name)) for name in ("CLK0", "CLK1", "DCSOUT")}
    await Timer(3 * slow, unit="ps")
    selects = []            # (time, (SEL1, SEL0))
    choices = [(0, 1), (1, 0), (0, 0)]
    for _ in range(MODEL_SWITCHES):
        sel = rng.choice(choices)
        dut.SEL1.value, dut.SEL0.value = sel
        selects.append((get_sim_time("ps"), sel))
        # Mostly long enough to settle, sometimes a switch before the last one finished.
        await Timer(rng.randrange(slow // 4, 8 * slow) if rng.random() < 0.8
                    else rng.randrange(100, fast), unit="ps")
    end = get_sim_time("ps")
    for log in logs.values():
        log.stop()

    pulses = logs["DCSOUT"].pulses()
    assert len(pulses) > MODEL_SWITCHES, f"{len(pulses)} output edges: the output hardly ran"
    shortest = min(pulses)
    assert shortest >= fast // 2, (
        f"a {shortest} ps pulse on DCSOUT, shorter than the fast clock's {fast // 2} ps phase "
        f"({seeds.describe()})")
    followed = 0
    for (start, sel), (stop, _) in zip(selects, selects[1:] + [(end, None)]):
        # A switch takes a period of the old clock, then one of the new (margin: a fast one).
        settled = start + 2 * fast + slow
        if settled >= stop:
            continue
        out = logs["DCSOUT"].between(settled, stop)
        if sel == (0, 0):
            assert out == [] and logs["DCSOUT"].value_at(settled) == held, (
                f"SEL 00 from {start} ps: the output moved ({out[:3]}...), it should hold "
                f"at {held} ({mode}, {seeds.describe()})")
            continue
        source = logs["CLK0" if sel == (0, 1) else "CLK1"].between(settled, stop)
        assert out == source, (
            f"SEL {sel[0]}{sel[1]} from {start} ps: from {settled} ps the output's edges "
            f"{out[:4]} are not the selected clock's {source[:4]} ({seeds.describe()})")
        followed += len(out)
    assert followed > 3 * MODEL_SWITCHES, f"only {followed} edges checked"
    # Held state: with neither input enabled the output rests high (POS) or low (NEG).
    dut.SEL1.value, dut.SEL0.value = 0, 0
    await Timer(2 * slow, unit="ps")
    assert int(dut.DCSOUT.value) == held
    dut._log.info("DCSC model, DCSMODE %s: %d switches, %d output pulses, shortest %d ps, %d "
                  "edges checked against the selected clock", mode, len(selects), len(pulses),
                  shortest, followed)


@cocotb.test(timeout_time=1, timeout_unit="ms")
async def dcsc_mux_mode(dut):
    """MODESEL 1: a plain multiplexer (the mode the clock select does not use)."""
    fast, slow = MODEL_PERIODS_PS
    start_clock(dut.CLK0, fast / 1000)
    start_clock(dut.CLK1, slow / 1000)
    dut.MODESEL.value = 1
    for sel, source in (((0, 1), dut.CLK0), ((1, 0), dut.CLK1), ((1, 1), None)):
        dut.SEL1.value, dut.SEL0.value = sel
        for step in range(40):
            await Timer(1237, unit="ps")      # prime: never on a clock edge here
            expected = 0 if source is None else int(source.value)
            assert int(dut.DCSOUT.value) == expected, (sel, step)


@pytest.mark.parametrize("mode", ["POS", "NEG"])
def test_dcsc_model(mode):
    from verif.sim import run_cocotb
    run_cocotb(None, "DCSC", "verif.test_clock_switch", {"model": "dcsc", "mode": mode},
               sources=[MODEL], build_args=[f'-GDCSMODE="{mode}"'],
               testcase=["dcsc_random_switching", "dcsc_mux_mode"])


# ---------------------------------------------------------------------------------------
# (b) the GEMM system clocked through the clock select


def switched_system(**params):
    """The HostSystem with two clock levels, its ``sync`` clock from a ClockSelect whose two
    inputs are ports (``clk0`` level 0, ``clk1`` level 1), as BoardTop wires it to the PLL.
    Ports: ``clk0``, ``clk1``, ``sync_rst``, ``host_clk``, ``host_rst``, the serial lines,
    ``busy``, ``error`` and ``sync_clk`` (the switched clock, to measure it)."""
    from amaranth.hdl import ClockDomain, DomainRenamer, Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from gen.hw.clock_select import ClockSelect
    from gen.hw.system import HostSystem

    class SwitchedSystem(wiring.Component):
        def __init__(self):
            self._system = HostSystem(**params, clock_levels=2)
            self._select = ClockSelect()
            super().__init__({"clk0": In(1), "clk1": In(1), "sync_rst": In(1),
                              "uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
                              "busy": Out(1), "error": Out(1), "sync_clk": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.domains.sync = sync = ClockDomain("sync")
            m.submodules.select = select = DomainRenamer({"sync": "host"})(self._select)
            m.submodules.system = system = self._system
            select, system = self._select, self._system
            m.d.comb += [
                select.clk0.eq(self.clk0), select.clk1.eq(self.clk1),
                sync.clk.eq(select.clk), sync.rst.eq(self.sync_rst),
                self.sync_clk.eq(select.clk),
                select.level.eq(system.level), system.level_active.eq(select.active),
                system.uart_rx.eq(self.uart_rx), self.uart_tx.eq(system.uart_tx),
                self.busy.eq(system.busy), self.error.eq(system.error),
            ]
            return m

    return SwitchedSystem()


def expected(a, w, bias, mult, shift):
    return golden.gemm_int8(*(torch.as_tensor(np.asarray(x)) for x in (a, w, bias, mult, shift))
                            ).numpy()


async def power_on_switched(dut):
    log_seed(dut)
    start_clock(dut.clk0, FAST_NS)
    start_clock(dut.clk1, SLOW_NS)
    start_clock(dut.host_clk, HOST_NS)
    dut.uart_rx.value = 1
    dut.sync_rst.value = 1
    dut.host_rst.value = 1
    for _ in range(4):
        await RisingEdge(dut.host_clk)
    dut.sync_rst.value = 0
    dut.host_rst.value = 0
    await RisingEdge(dut.host_clk)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def gemm_with_level_switches(dut):
    from gen.cycles import gemm_cycles
    from gen.host.driver import DeviceError, Driver
    from gen.host.layout import pack_activations, pack_params, pack_weights
    from gen.host.transports import CocotbUartTransport
    from gen.hw.host_bridge import Buffer

    params = json.loads(os.environ["DUT_PARAMS"])
    rows, cols = params["rows"], params["cols"]
    await power_on_switched(dut)
    transport = CocotbUartTransport(dut.uart_rx, dut.uart_tx,
                                    bit_time_ns=params["uart_divisor"] * HOST_NS)
    driver = Driver(transport, max_chunk=64)
    info = await driver.info()
    assert (info.rows, info.cols) == (rows, cols)
    # The level command: query, select, refuse an unknown level (nothing changes).
    level = await driver.level()
    assert (level.active, level.count) == (0, 2)
    assert (await driver.level(1)).active == 1
    for bad in (2, 31):
        with pytest.raises(DeviceError):
            await driver.level(bad)
        assert (await driver.level()).active == 1
    assert (await driver.level(0)).active == 0
    status = await driver.status()
    assert not (status.busy or status.done or status.error)

    rng = seeds.rng("clock switch gemm")
    np_rng = seeds.np_rng("clock switch gemm operands")
    fast_ps, slow_ps, host_ps = (round(ns * 1000) for ns in (FAST_NS, SLOW_NS, HOST_NS))
    pulses, periods = [], []
    # Jobs of 7,000 to 8,000 cycles, long against a LEVEL and a STATUS on the line (8 bytes,
    # 6.4 us): nothing divides the array in the second.
    for m, k, n in [(8 * rows, 128, 8 * cols), (8 * rows - 2, 120, 8 * cols - 3)]:
        a, w = np_rng.integers(-128, 128, (m, k)), np_rng.integers(-128, 128, (k, n))
        bias = np_rng.integers(-5000, 5000, n)
        mult = np_rng.integers(2 ** 29, 2 ** 31, n)
        shift = np.full(n, 36)
        await driver.write_buffer(Buffer.ACT, 0, pack_activations(a, rows))
        await driver.write_buffer(Buffer.WGT, 0, pack_weights(w, cols))
        await driver.write_buffer(Buffer.PARAM, 0, pack_params(bias, mult, shift))
        await driver.start(m, k, n)
        clock = EdgeLog(dut.sync_clk)         # only while the job runs: a callback an edge
        switches_in_job = 0
        current = (await driver.level()).active
        for _ in range(200):
            await Timer(rng.randrange(0, 12_000), unit="ns")
            current = 1 - current
            assert (await driver.level(current)).active == current
            status = await driver.status()
            if not status.busy:
                break
            switches_in_job += 1
        else:
            raise AssertionError("the job did not end after 200 level switches")
        clock.stop()
        assert status.done and not status.error, status
        assert switches_in_job >= 3, (
            f"{m}x{k}x{n}: only {switches_in_job} level switches while the job ran; make it "
            f"longer ({seeds.describe()})")
        # The switched clock: no pulse under the fast level's phase; periods of the two
        # levels, and one longer period a switch: POS holds the output high from the old
        # clock's rising edge (within one old period of the break) until the new clock's
        # first falling edge after the make, one host cycle later: longer than the fast
        # period, at most a host cycle and two slow periods.
        job_pulses = clock.pulses()
        rises = [t for t, v in clock.events if v == 1]
        job_periods = [b - a for a, b in zip(rises, rises[1:])]
        merged = [p for p in job_periods if p not in (fast_ps, slow_ps)]
        assert min(job_pulses) >= fast_ps // 2, (
            f"a {min(job_pulses)} ps pulse on the accelerator clock ({seeds.describe()})")
        assert all(fast_ps < p <= host_ps + 2 * slow_ps for p in merged), sorted(set(merged))[:8]
        assert len(merged) >= switches_in_job, (len(merged), switches_in_job)
        pulses += job_pulses
        periods += job_periods
        cycles = await driver.cycles()
        raw = await driver.read_output(0, m * n)
        y = np.frombuffer(raw, dtype=np.int8).reshape(m, n)
        np.testing.assert_array_equal(y, expected(a, w, bias, mult, shift),
                                      err_msg=f"{m}x{k}x{n} with {switches_in_job} clock "
                                              f"switches ({seeds.describe()})")
        assert cycles == gemm_cycles(m, k, n, rows, cols), (
            f"{m}x{k}x{n}: {cycles} cycles, gen.cycles.gemm_cycles says "
            f"{gemm_cycles(m, k, n, rows, cols)}")
        dut._log.info("%dx%dx%d: bit-exact, %d cycles, %d level switches while it ran", m, k,
                      n, cycles, switches_in_job)
    assert periods.count(fast_ps) > 500 and periods.count(slow_ps) > 500, (
        f"fast periods {periods.count(fast_ps)}, slow {periods.count(slow_ps)}")
    merged = [p for p in periods if p not in (fast_ps, slow_ps)]
    dut._log.info("accelerator clock while the jobs ran: %d periods (%d fast, %d slow, %d "
                  "across a switch, %d..%d ps), shortest pulse %d ps", len(periods),
                  periods.count(fast_ps), periods.count(slow_ps), len(merged), min(merged),
                  max(merged), min(pulses))


SWITCHED_PARAMS = dict(rows=3, cols=4, act_depth=1024, wgt_depth=1024, param_depth=32,
                       out_depth=1024, uart_divisor=4)


def test_gemm_across_clock_switches():
    from gen.rtl import emit_verilog
    from verif.sim import SIM_BUILD, run_cocotb
    text = emit_verilog(switched_system(**SWITCHED_PARAMS), "switched_system")
    assert text.count("DCSC ") == 1, text.count("DCSC ")
    source = SIM_BUILD / "switched_system-rtl" / "switched_system.v"
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(None, "switched_system", "verif.test_clock_switch", SWITCHED_PARAMS,
               sources=[source, MODEL], testcase="gemm_with_level_switches")


@pytest.mark.filterwarnings("ignore:.*created but never used")   # the refused parts
def test_clock_select_parameters():
    from gen.errors import UserError
    from gen.hw.clock_select import ClockSelect
    from gen.hw.system import HostSystem
    assert ClockSelect().levels == 2 and ClockSelect(dcs_mode="NEG").dcs_mode == "NEG"
    with pytest.raises(UserError, match="dcs_mode: 'CLK0_LOW'"):
        ClockSelect(dcs_mode="CLK0_LOW")
    with pytest.raises(ValueError, match="clock_levels must be 1 or 2"):
        HostSystem(**SWITCHED_PARAMS, clock_levels=3)
