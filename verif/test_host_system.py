"""End to end through the host link: the driver a user runs against a board, here over the
simulated serial line of the full HostSystem (UART, protocol engine, accelerator, buffers).

Also the shipped design: `gen/configs/default.yaml` through `gen.config.load_config` and
`gen.design.prepare_design`, its HostSystem exactly as `gen build` generates it, a few GEMMs
(one that no array dimension divides) bit-exact against `golden.gemm_int8` and the device's
cycle count equal to `gen.cycles.gemm_cycles`.

LEVEL (run-time clock levels) on a design built without them is an unknown command; the
designs with levels are simulated in `verif/test_clock_switch.py`.

The host link is a UART, not a stream: the driver's waits are bounded (replies time out, polls
are counted) and every test has a simulated-time bound. Random operands from ``ACCELGEN_SEED``.
"""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import Timer

from verif import golden, seeds
from verif.streams import power_on_system
from gen.host.driver import DeviceError, Driver
from gen.host.layout import LayoutError
from gen.host.transports import CocotbUartTransport
from gen.hw.host_bridge import Buffer, REPLY_UNKNOWN

REPO = Path(__file__).resolve().parent.parent
CLOCK_NS = 8          # the accelerator clock
HOST_CLOCK_NS = 26    # the host link clock: unrelated to the accelerator's, as on a board
#: Simulated-time bound of every test here: no test can hang.
TEST_TIMEOUT_MS = 400


async def setup(dut):
    """Power on; the host clock and the serial line's bit time are the design's where the
    parameters give them (``host_clock_ns``, ``bit_time_ns``: a board's host clock and the
    USB bridge's own bit time), else `HOST_CLOCK_NS` and the divisor's bit time."""
    params = json.loads(os.environ["DUT_PARAMS"])
    host_clock_ns = params.get("host_clock_ns", HOST_CLOCK_NS)
    await power_on_system(dut, CLOCK_NS, host_clock_ns)
    bit_time_ns = params.get("bit_time_ns", params["uart_divisor"] * host_clock_ns)
    transport = CocotbUartTransport(dut.uart_rx, dut.uart_tx, bit_time_ns=bit_time_ns)
    return params, transport, Driver(transport, max_chunk=64)


def board_timing(host_clock_mhz, baud):
    """``host_clock_ns`` and ``bit_time_ns`` for the simulator (1 ps steps, even for the
    clock's two halves, and a bit time whose 1.5 is whole picoseconds): the board's host
    clock, and the bit time of a sender that makes ``baud`` exactly (the FT231X does 1 and
    3 Mbaud from its 48 MHz clock), each within 100 ppm."""
    host_ps = 2 * round(1e6 / host_clock_mhz / 2)
    bit_ps = 2 * round(1e12 / baud / 2)
    return {"host_clock_ns": host_ps / 1000, "bit_time_ns": bit_ps / 1000}


def poll():
    return Timer(2, unit="us")


def expected(a, w, bias, mult, shift):
    return golden.gemm_int8(*(torch.as_tensor(np.asarray(x)) for x in (a, w, bias, mult, shift))
                            ).numpy()


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def gemm_through_the_driver(dut):
    params, _, driver = await setup(dut)
    info = await driver.info()
    assert (info.rows, info.cols) == (params["rows"], params["cols"])
    assert info.act_depth == params["act_depth"] and info.out_depth == params["out_depth"]

    rng = seeds.np_rng("host system 11")
    cases = [
        (7, 9, 10),                                # nothing divides the 3x4 array
        (params["rows"] * 2, 12, params["cols"] * 2),
    ]
    for m, k, n in cases:
        a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
        bias = rng.integers(-5000, 5000, n)
        mult = rng.integers(2 ** 29, 2 ** 31, n)
        shift = np.full(n, 36)
        run = await driver.gemm(a, w, bias, mult, shift, poll_interval=poll)
        np.testing.assert_array_equal(run.y, expected(a, w, bias, mult, shift),
                                      err_msg=f"{m}x{k}x{n} ({seeds.describe()})")
        assert run.cycles > 0
    # A batch (BATCH): M leaves padded rows between the GEMMs; each GEMM against the golden
    # model. The weight-stationary engine runs none: the driver and the device refuse.
    batch, m, k, n = 3, params["rows"] + 1, 5, params["cols"] + 1
    a, w = rng.integers(-128, 128, (batch, m, k)), rng.integers(-128, 128, (batch, k, n))
    bias, mult, shift = rng.integers(-5000, 5000, n), rng.integers(2 ** 29, 2 ** 31, n), 36
    if info.runs_batches:
        run = await driver.gemm_batch(a, w, bias, mult, shift, poll_interval=poll)
        for b in range(batch):
            np.testing.assert_array_equal(run.y[b], expected(a[b], w[b], bias, mult, shift),
                                          err_msg=f"GEMM {b} of the batch ({seeds.describe()})")
    else:
        with pytest.raises(LayoutError):
            await driver.gemm_batch(a, w, bias, mult, shift, poll_interval=poll)
        with pytest.raises(DeviceError):
            await driver.start(m, k, n, batch)
    # Extremes: the largest accumulators, saturating both ways.
    m, k, n = 5, 16, 6
    a = np.full((m, k), -128)
    w = np.where(np.arange(n) % 2 == 0, -128, 127) * np.ones((k, 1), dtype=np.int64)
    run = await driver.gemm(a, w, np.zeros(n, dtype=np.int64), np.full(n, 2 ** 31 - 1),
                            np.full(n, 20), poll_interval=poll)
    np.testing.assert_array_equal(run.y, expected(a, w, np.zeros(n, dtype=np.int64),
                                                   np.full(n, 2 ** 31 - 1), np.full(n, 20)))


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def refusals(dut):
    params, transport, driver = await setup(dut)
    await driver.info()
    # Beyond the end of a buffer: the device refuses and stays in step.
    with pytest.raises(DeviceError):
        await driver.write_buffer(Buffer.ACT, params["act_depth"] - 1,
                                  [bytes(params["rows"])] * 2)
    # Reading an input buffer is not part of the protocol.
    await transport.write(bytes([ord("R"), Buffer.ACT]) + bytes(8))
    assert await transport.read(1) == b"E"
    # Unknown command.
    await transport.write(b"x")
    assert await transport.read(1) == bytes([REPLY_UNKNOWN])
    # A design without clock levels does not know LEVEL (nor its argument byte, which then
    # arrives as a command): two `?`, and the driver says what it means.
    with pytest.raises(DeviceError, match="no clock levels"):
        await driver.level(1)
    with pytest.raises(ValueError, match="level must be"):
        await driver.level(ord("S"))        # a command byte: refused before it is sent
    # A GEMM larger than the buffers is refused by the driver before anything is sent.
    with pytest.raises(LayoutError):
        await driver.gemm(np.zeros((params["out_depth"], 2), dtype=np.int64),
                          np.zeros((2, 2), dtype=np.int64), 0, 1, 1)
    # A zero-size job, or one beyond the buffers (here only the output buffer), is refused at
    # once (protocol version 2; version 1 ran it to an error): nothing starts.
    for sizes in [(0, 1, 1), (params["out_depth"], 1, 2), (65535, 65535, 65535)]:
        with pytest.raises(DeviceError):
            await driver.start(*sizes)
        status = await driver.status()
        assert not (status.busy or status.done or status.error), (sizes, status)
    # And the link still works.
    assert (await driver.info()).rows == params["rows"]


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def default_config_gemms(dut):
    """The shipped design: GEMMs bit-exact, cycles as `gen.cycles.engine_gemm_cycles`
    predicts for its dataflow."""
    from gen.cycles import engine_gemm_cycles
    from verif.test_gemm_accelerator import random_requant
    params, _, driver = await setup(dut)
    info = await driver.info()
    r, c, lanes = params["rows"], params["cols"], params.get("drain_lanes", 1)
    dataflow = params.get("dataflow", "output_stationary")
    assert (info.rows, info.cols, info.dataflow) == (r, c, dataflow)
    assert (info.act_depth, info.out_depth) == (params["act_depth"], params["out_depth"])
    rng = seeds.np_rng("host system default config")
    # Dividing, nothing divides the array (padded last tiles both ways), one output.
    for m, k, n in [(2 * r, 24, 2 * c), (r + 5, 20, c + 3), (1, 5, 1)]:
        a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
        bias, mult, shift = random_requant(rng, n, k)
        run = await driver.gemm(a, w, bias, mult, shift, poll_interval=poll)
        np.testing.assert_array_equal(run.y, expected(a, w, bias, mult, shift),
                                      err_msg=f"{m}x{k}x{n} ({seeds.describe()})")
        predicted = engine_gemm_cycles(m, k, n, r, c, lanes, dataflow=dataflow)
        assert run.cycles == predicted, (
            f"{m}x{k}x{n}: {run.cycles} cycles, gen.cycles says {predicted}")
        dut._log.info("default %dx%d, %d drain lanes, GEMM %dx%dx%d: %d cycles (model %d)",
                      r, c, lanes, m, k, n, run.cycles, predicted)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def link_at_board_timing(dut):
    """A GEMM and a refusal over the line at the board's host clock and baud."""
    params, transport, driver = await setup(dut)
    info = await driver.info()
    assert (info.rows, info.cols) == (params["rows"], params["cols"])
    rng = seeds.np_rng("host system at board timing")
    m, k, n = 7, 9, 10
    a, w = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    bias = rng.integers(-5000, 5000, n)
    mult = rng.integers(2 ** 29, 2 ** 31, n)
    shift = np.full(n, 36)
    run = await driver.gemm(a, w, bias, mult, shift, poll_interval=poll)
    np.testing.assert_array_equal(run.y, expected(a, w, bias, mult, shift),
                                  err_msg=f"{m}x{k}x{n} ({seeds.describe()})")
    await transport.write(b"x")
    assert await transport.read(1) == bytes([REPLY_UNKNOWN])


PARAMS = dict(rows=3, cols=4, act_depth=256, wgt_depth=256, param_depth=32, out_depth=512,
              uart_divisor=8)


def test_host_system():
    from gen.hw.system import HostSystem
    from verif.sim import run_cocotb
    run_cocotb(HostSystem(**PARAMS), "host_system", "verif.test_host_system", PARAMS,
               testcase=["gemm_through_the_driver", "refusals"])


def test_host_system_with_drain_lanes():
    """Four drain lanes: the banked output buffer and the lane-interleaved parameters behind
    the same host protocol (param_depth not a multiple of the lanes)."""
    from gen.hw.system import HostSystem
    from verif.sim import run_cocotb
    params = dict(PARAMS, drain_lanes=4, param_depth=30)
    run_cocotb(HostSystem(**params), "host_system", "verif.test_host_system", params,
               testcase=["gemm_through_the_driver", "refusals", "default_config_gemms"])


def test_host_system_weight_stationary():
    """The weight-stationary engine behind the same protocol: INFO names its dataflow and the
    driver lays out A for it."""
    from gen.hw.system import HostSystem
    from verif.sim import run_cocotb
    params = dict(PARAMS, dataflow="weight_stationary", drain_lanes=2)
    run_cocotb(HostSystem(**params), "host_system", "verif.test_host_system", params,
               testcase=["gemm_through_the_driver", "refusals", "default_config_gemms"])


def test_shipped_weight_stationary_config():
    """gen/configs/ulx3s-85f-8x8-ws.yaml as `gen build` generates it, at its host clock and
    baud."""
    from gen.config import load_config
    from gen.design import prepare_design
    from verif.sim import run_cocotb
    design = prepare_design(load_config(REPO / "gen/configs/ulx3s-85f-8x8-ws.yaml"),
                            progress=lambda line: None)
    params = design.system_params
    run_cocotb(design.system(), "host_system", "verif.test_host_system",
               dict(params, **board_timing(design.host_clock_mhz, design.config.host.baud)),
               testcase="default_config_gemms")


def test_host_system_at_3_mbaud():
    """The small system with the host link the generator plans for 3 Mbaud beside a 125 MHz
    accelerator clock (a PLL CLKOS output, its divisor and 5 ms timeout), simulated at that
    host clock, fed by a sender at exactly 3 Mbaud."""
    from gen.boards import get_board
    from gen.design import plan_host_link
    from gen.hw.pll import plan_pll
    from gen.hw.system import HostSystem
    from verif.sim import run_cocotb
    board = get_board("ulx3s")
    link = plan_host_link(board, plan_pll(board.oscillator_mhz, 1000 / CLOCK_NS), 3_000_000)
    assert link.source == "pll" and link.exact
    system = dict(PARAMS, uart_divisor=link.divisor, byte_timeout=link.byte_timeout)
    run_cocotb(HostSystem(**system), "host_system", "verif.test_host_system",
               dict(system, **board_timing(float(link.clock_mhz), 3_000_000)),
               testcase="link_at_board_timing")


def test_default_config():
    """gen/configs/default.yaml as shipped, simulated as `gen build` generates it, at its host
    clock and baud."""
    from gen.config import DEFAULT_CONFIG, load_config
    from gen.design import prepare_design
    from verif.sim import run_cocotb
    design = prepare_design(load_config(DEFAULT_CONFIG), progress=lambda line: None)
    params = design.system_params
    run_cocotb(design.system(), "host_system", "verif.test_host_system",
               dict(params, **board_timing(design.host_clock_mhz, design.config.host.baud)),
               testcase="default_config_gemms")
