"""``gen infer`` in Verilator: the ViT host system (byte link) driven by the same
:class:`gen.host.vit_driver.ViTDriver` that talks to a board, from a cocotb test.

The parent (``gen infer``) passes, in ``DUT_PARAMS``: the config file, the image spec and
where to write the results; this module rebuilds the design from the config (its model comes
from the cache the parent filled), runs the images and writes
``{"classes", "logits", "cycles", "counters", "seconds"}`` as JSON.
"""

import dataclasses
import json
import os
import time

import cocotb
from cocotb.triggers import RisingEdge, Timer
from cocotb.utils import get_sim_time

from verif.streams import StreamBus, start_clock

HOST_CLOCK_NS = 40            # the 25 MHz oscillator


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


@cocotb.test(timeout_time=3600, timeout_unit="sec")
async def infer(dut):
    from gen.config import load_config
    from gen.design import prepare_design
    from gen.host.transports import CocotbByteTransport
    from gen.host.vit_driver import ViTDriver
    from gen.hw.vit.layout import model_image
    from gen.vit.cli import infer_progress, load_images, load_model_for, load_progress

    params = _params()
    quiet = lambda message: None
    build = prepare_design(load_config(params["config"]), progress=quiet)
    model = load_model_for(build, params.get("model"))
    pixels, _ = load_images(params["images"])
    clock_ns = 1e3 / build.clock_mhz
    start_clock(dut.clk, clock_ns)
    start_clock(dut.host_clk, HOST_CLOCK_NS)
    for name in ("rst", "host_rst"):
        getattr(dut, name).value = 1
    dut.rx__valid.value = 0
    dut.tx__ready.value = 0
    await Timer(10 * HOST_CLOCK_NS, unit="ns")
    for name in ("rst", "host_rst"):
        getattr(dut, name).value = 0
    await RisingEdge(dut.host_clk)

    transport = CocotbByteTransport(StreamBus(dut, "rx"), StreamBus(dut, "tx"), dut.host_clk)
    driver = ViTDriver(transport)
    say = lambda message: print(message, flush=True)
    info = await driver.info()
    say(f"[infer] device: ViT T={info.tokens}, D={info.dim}, {info.layers} layers, "
        f"digest {info.digest:08x}")
    start = time.monotonic()
    await driver.load(model_image(build.vit, model.arrays()), progress=load_progress(say))
    before = await driver.counters()
    t0 = get_sim_time("ns")
    results = await driver.infer(list(pixels), progress=infer_progress(say))
    t1 = get_sim_time("ns")
    after = await driver.counters()
    out = {"classes": [int(c) for c, _ in results],
           "logits": [[int(v) for v in logits] for _, logits in results],
           "cycles": round((t1 - t0) / clock_ns),
           "counters_before": dataclasses.asdict(before),
           "counters_after": dataclasses.asdict(after),
           "seconds": round(time.monotonic() - start, 1)}
    with open(params["results"], "w") as f:
        json.dump(out, f)
