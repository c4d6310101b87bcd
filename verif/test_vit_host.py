"""The ViT accelerator through its host link (gen/host/VIT_PROTOCOL.md): the driver a user runs
against a board, on the whole ViTHostSystem (bridge in the ``host`` clock domain, ViTCore in
``sync``, AsyncFIFOs between them), under Verilator.

Two builds of the small synthetic model of ``verif/test_vit_system.py``:

* ``byte_link=True`` (the bridge's byte streams on the ports: fast): INFO, LOAD, a batch of
  images through ``ViTDriver.infer`` equal to ``golden_vit.forward``, COUNTERS; then the
  refusals (IMAGE before a model and with a full FIFO, LOAD with images in flight, a bad
  pixel, an unknown command, RESULT with none waiting) and commands cut off by the inter-byte
  timeout, each followed by proof that nothing was lost or changed;
* the real UART at a small divisor: two images, to prove the serial path.

Every wait is bounded (the transports' timeouts, counted polls, simulated-time bounds per
test); the model, the images and the stimuli come from ``ACCELGEN_SEED``.
"""

import json
import os

import cocotb
import numpy as np
import pytest
import torch
from cocotb.triggers import ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from verif import golden_vit, seeds
from verif.streams import StreamBus, power_on, power_on_system
from verif.test_vit_system import _case, _load_beats

CLOCK_NS = 8            # the core clock
HOST_CLOCK_NS = 26      # the link clock: unrelated to the core's, as on a board
UART_HOST_CLOCK_NS = 10
#: Simulated-time bound of every test here: no test can hang.
TEST_TIMEOUT_MS = 200

_MODEL = dict(model="synthetic", lanes=4, dim=8, heads=2, ffn=16, layers=2, classes=3,
              images_in_flight=2)
BYTE_PARAMS = dict(_MODEL, images=6, byte_link=True, image_fifo_images=2, byte_timeout=300,
                   turnaround_timeout=1000)
UART_PARAMS = dict(_MODEL, images=4, byte_link=False, image_fifo_images=2, uart_divisor=4)


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def poll():
    return Timer(1, unit="us")


async def setup(dut):
    from gen.host.transports import CocotbByteTransport, CocotbUartTransport
    from gen.host.vit_driver import ViTDriver
    params = _params()
    design, arrays, pixels = _case(params)
    if params["byte_link"]:
        await power_on(dut, CLOCK_NS, HOST_CLOCK_NS, rx__valid=0, tx__ready=0)
        transport = CocotbByteTransport(StreamBus(dut, "rx"), StreamBus(dut, "tx"),
                                        dut.host_clk, timeout_cycles=200_000)
    else:
        await power_on_system(dut, CLOCK_NS, UART_HOST_CLOCK_NS)
        transport = CocotbUartTransport(dut.uart_rx, dut.uart_tx,
                                        bit_time_ns=params["uart_divisor"] * UART_HOST_CLOCK_NS)
    driver = ViTDriver(transport, max_chunk=400, poll_interval=poll, timeout_polls=20_000)
    return params, design, arrays, pixels, transport, driver


def golden(arrays, pixels):
    torch.set_num_threads(1)
    gold = golden_vit.forward(arrays, torch.as_tensor(np.asarray(pixels)))
    return [(int(c), [int(v) for v in l]) for c, l in zip(gold["classes"], gold["logits"])]


def check_results(got, want, what):
    assert len(got) == len(want), f"{what}: {len(got)} results, {len(want)} expected"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}, image {i}: (class, logits) {g}, golden {w} ({seeds.describe()})"


async def check_info(driver, params, design):
    from gen.hw.vit.bridge import design_digest, load_beat_bytes
    info = await driver.info()
    assert (info.tokens, info.dim, info.heads, info.ffn, info.layers, info.classes,
            info.lanes) == (17, params["dim"], params["heads"], params["ffn"], params["layers"],
                            params["classes"], params["lanes"]), info
    assert info.images_in_flight == params["images_in_flight"], info
    assert info.image_fifo_images == params["image_fifo_images"], info
    assert info.load_beat_bytes == load_beat_bytes(design), info
    assert info.digest == design_digest(design), info
    return info


async def load_model(driver, design, arrays):
    from gen.hw.vit.layout import model_image
    from gen.host.vit_driver import load_beats
    image = model_image(design, arrays)
    assert load_beats(image) == _load_beats(design, image), "driver and testbench beats differ"
    seen = []
    total = await driver.load(image, progress=lambda done, n: seen.append((done, n)))
    assert seen and seen[-1] == (total, total) and len(seen) > 1, seen
    return total


async def results_of(driver, count, polls=20_000):
    """The next ``count`` results, polling RESULT (bounded)."""
    got = []
    for _ in range(polls):
        result = await driver.result()
        if result is not None:
            got.append(result)
            if len(got) == count:
                return got
        else:
            await poll()
    raise AssertionError(f"{len(got)} of {count} results after {polls} polls "
                         f"({seeds.describe()})")


async def expect_no_reply(dut, cycles):
    """``cycles`` host cycles without a reply byte on offer (then leave read-only)."""
    for cycle in range(cycles):
        await RisingEdge(dut.host_clk)
        await ReadOnly()
        assert not int(dut.tx__valid.value), f"a reply byte {cycle} cycles into the silence"
    await RisingEdge(dut.host_clk)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def images_through_the_driver(dut):
    params, design, arrays, pixels, transport, driver = await setup(dut)
    await check_info(driver, params, design)
    beats = await load_model(driver, design, arrays)
    done = []
    got = await driver.infer(list(pixels), progress=lambda d, n: done.append(d))
    check_results(got, golden(arrays, pixels), "infer")
    assert done == list(range(1, len(pixels) + 1)), done
    first = await driver.counters()
    second = await driver.counters()
    dut._log.info(f"{beats} load beats; {len(pixels)} images; counters {first}")
    assert first == second, f"idle core, counters moved: {first} then {second}"
    assert first.results == len(pixels), first
    elapsed = int(get_sim_time("ns") // CLOCK_NS)
    for busy, ops in ((first.nsa_cycles, first.nsa_op_cycles),
                      (first.nmp_cycles, first.nmp_op_cycles)):
        assert 0 < ops <= busy < elapsed, (first, elapsed)
    assert not int(dut.busy.value) and not int(dut.error.value)
    assert await driver.result() is None             # nothing more


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def refusals_and_cut_off_commands(dut):
    from gen.host.vit_driver import DeviceError
    from gen.hw.vit.layout import image_beats
    params, design, arrays, pixels, transport, driver = await setup(dut)
    want = golden(arrays, pixels)
    timeout = params["byte_timeout"]
    await check_info(driver, params, design)
    # No model yet: IMAGE refused at once; RESULT has nothing; an unknown byte is answered ?.
    assert await driver.image(pixels[0]) is False
    with pytest.raises(DeviceError):
        await driver.infer([pixels[0]])
    assert await driver.result() is None
    await transport.write(b"x")
    assert await transport.read(1) == b"?"
    # LOAD of 0 beats: K K, nothing changes (IMAGE still refused).
    await transport.write(b"L" + bytes(4))
    assert await transport.read(2) == b"KK"
    assert await driver.image(pixels[0]) is False
    # LOAD cut off in its count: no reply, dropped after the timeout; the link works after.
    assert not int(dut.error.value)
    await transport.write(b"L\x05\x00")
    await expect_no_reply(dut, timeout + 40)
    assert int(dut.error.value), "error LED not lit by a dropped command"
    await check_info(driver, params, design)

    await load_model(driver, design, arrays)
    # Fill the queue without reading results: IMAGE until refused (at once: nothing sent).
    accepted = 0
    while await driver.image(pixels[accepted]):
        accepted += 1
        assert accepted < len(pixels), f"{accepted} images taken: the FIFO never filled"
    assert accepted >= params["image_fifo_images"], accepted
    dut._log.info(f"queue full after {accepted} images")
    # LOAD with images in flight: refused after the count, before any beat.
    with pytest.raises(DeviceError):
        await driver.load_raw([0])
    # The refused IMAGE lost nothing: results of the accepted ones, in order, then the rest.
    got = await results_of(driver, accepted)
    check_results(got, want[:accepted], "a full queue")
    got += await driver.infer(list(pixels[accepted:]))
    check_results(got, want, "after the refusal")

    # A pixel above 16: the image is dropped (E after the pixels), nothing is queued.
    await transport.write(b"M")
    assert await transport.read(1) == b"K"
    await transport.write(bytes([3] * 63 + [17]))
    assert await transport.read(1) == b"E"
    assert await driver.result() is None
    # IMAGE cut off in its pixels, and after its go-ahead before any pixel: dropped, nothing
    # entered the FIFO (the next image's result is its own).
    await transport.write(b"M")
    assert await transport.read(1) == b"K"
    await transport.write(bytes(10))
    await expect_no_reply(dut, timeout + 40)
    await transport.write(b"M")
    assert await transport.read(1) == b"K"
    await expect_no_reply(dut, params["turnaround_timeout"] + 40)
    check_results(await driver.infer([pixels[2]]), [want[2]], "after cut-off images")
    # A first pixel later than byte_timeout after the go-ahead, within the turnaround
    # timeout, is taken (a host may be slow to answer a go-ahead).
    await transport.write(b"M")
    assert await transport.read(1) == b"K"
    await expect_no_reply(dut, timeout + 40)
    await transport.write(bytes(image_beats(pixels[3])))
    assert await transport.read(1) == b"K"
    check_results(await results_of(driver, 1), [want[3]], "a slow first pixel")
    counters = await driver.counters()
    assert counters.results == len(pixels) + 2, counters
    # LOAD cut off in its beats: IMAGE is refused until a LOAD completes.
    await transport.write(b"L" + (3).to_bytes(4, "little"))
    assert await transport.read(1) == b"K"
    await transport.write(bytes(5))
    await expect_no_reply(dut, timeout + 40)
    assert await driver.image(pixels[0]) is False
    await check_info(driver, params, design)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def images_over_the_uart(dut):
    params, design, arrays, pixels, transport, driver = await setup(dut)
    await check_info(driver, params, design)
    await load_model(driver, design, arrays)
    chosen = [pixels[0], pixels[2]]
    check_results(await driver.infer(chosen), golden(arrays, chosen), "UART")
    counters = await driver.counters()
    assert counters.results == 2 and counters.nsa_cycles > 0, counters
    assert not int(dut.error.value)


def _system(params):
    from gen.hw.vit.host_system import ViTHostSystem
    design, _, _ = _case(params)
    kwargs = {k: params[k] for k in ("byte_timeout", "turnaround_timeout", "uart_divisor",
                                     "image_fifo_images") if k in params}
    return ViTHostSystem(design, byte_link=params["byte_link"], **kwargs)


def test_vit_host_byte_link():
    from verif.sim import run_cocotb
    run_cocotb(_system(BYTE_PARAMS), "vit_host_bytes", "verif.test_vit_host", BYTE_PARAMS,
               testcase=["images_through_the_driver", "refusals_and_cut_off_commands"])


def test_vit_host_uart():
    from verif.sim import run_cocotb
    run_cocotb(_system(UART_PARAMS), "vit_host_uart", "verif.test_vit_host", UART_PARAMS,
               testcase="images_over_the_uart")


def test_parameters_refused():
    from gen.errors import UserError
    from gen.hw.vit.bridge import ViTHostBridge
    from gen.hw.vit.host_system import ViTHostSystem
    design, _, _ = _case(BYTE_PARAMS)
    with pytest.raises(UserError, match="power of two"):
        ViTHostBridge(design, image_fifo_images=3)
    with pytest.raises(UserError, match="turnaround_timeout"):
        ViTHostBridge(design, byte_timeout=1000, turnaround_timeout=10)
    with pytest.raises(UserError, match="ViTDesign"):
        ViTHostBridge("digits")
    with pytest.raises(UserError, match="two byte times"):
        ViTHostSystem(design, uart_divisor=100, byte_timeout=1000)
    with pytest.raises(UserError, match="uart_divisor"):
        ViTHostSystem(design)
