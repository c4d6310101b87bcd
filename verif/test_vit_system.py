"""The ViT core (NSA and NMP engines in a ring of FIFOs) against `golden_vit`, under Verilator.

The testbench loads a model through the load stream (random gaps), sends images (random
gaps), takes results under random back-pressure, stalls the streams between the engines at
random (the core's verification-only stall ports), and watches both FIFOs' inputs: every
message is a half-layer's whole residual stream, so each layer's ``(x_l, Z_l)`` (NSA to NMP)
and ``(y_l, F_l)`` (NMP to NSA) is compared with the golden model, element for element, for
every image; the results (class and INT8 logits) too. Every wait is bounded; the stimuli come
from ``ACCELGEN_SEED``.

Builds: a small synthetic model (B=4, D=8, 2 heads, FFN 16, 2 layers, 3 classes; random
weights, random sparsity) and the digits ViT (B=8, D=64, 4 heads, FFN 128, 2 layers, GELU,
pruned) on real digit images.
"""

import json
import math
import os

import cocotb
import numpy as np
import torch
from cocotb.triggers import ReadOnly, RisingEdge

from verif import golden_vit, seeds
from verif.streams import StreamBus, StreamMonitor, StreamSource, log_seed, reset, start_clock

CLOCK_NS = 10

SYNTHETIC = dict(model="synthetic", lanes=4, dim=8, heads=2, ffn=16, layers=2, classes=3,
                 images=4, images_in_flight=2, watch=4)
#: Every message of the first ``watch`` images is compared, and every result of all images.
DIGITS = dict(model="digits", lanes=8, images=50, images_in_flight=2, watch=2)


def _params():
    return json.loads(os.environ["DUT_PARAMS"])


def synthetic_model(seed, d, heads, ffn, layers, classes):
    """A random all-integer model in the format of docs/vit.md section 2, with random block
    sparsity (pruned rows, pruned blocks, whole pruned features) and scales that keep the
    values spread over INT8."""
    rng = np.random.default_rng(seed)

    def mat(k, n):
        w = rng.integers(-128, 128, (k, n))
        w[rng.random((k, n)) < 0.3] = 0                  # scattered zeros
        w[rng.random(k) < 0.2, :] = 0                    # pruned rows
        w = w.astype(np.int8)
        shift = 30 + int(math.ceil(math.log2(k))) + 7
        return {"w": w, "bias": rng.integers(-3000, 3000, n).astype(np.int32),
                "mult": rng.integers(2 ** 29, 2 ** 30, n).astype(np.int64),
                "shift": np.full(n, shift, np.int64)}

    def ln():
        return {"neg": rng.integers(0, 2, d).astype(np.uint8),
                "bias": rng.integers(-20000, 20000, d).astype(np.int32),
                "mult": rng.integers(2 ** 28, 2 ** 29, d).astype(np.int64),
                "shift": np.full(d, 33, np.int64)}

    def radd():
        return {"ma": int(rng.integers(4000, 16000)), "mb": int(rng.integers(4000, 16000)),
                "shift": 14}

    hd = d // heads
    lay = []
    for _ in range(layers):
        table = np.clip(np.round(np.arange(-128, 128) * 0.7 + rng.integers(-3, 4, 256)),
                        -128, 127).astype(np.int8)
        lay.append({"add1": radd(), "ln1": ln(), "q": mat(d, d), "k": mat(d, d),
                    "v": mat(d, d), "o": mat(d, d), "scores": (2 ** 29, 30 + 6),
                    "context": (2 ** 29, 30 + 6),
                    "kept_features": [np.sort(rng.choice(hd, int(rng.integers(1, hd + 1)),
                                                         replace=False)).astype(np.int64)
                                      for _ in range(heads)],
                    "add2": radd(), "ln2": ln(), "fc1": mat(d, ffn), "act": table,
                    "fc2": mat(ffn, d)})
    return {"dims": {"tokens": 17, "dim": d, "heads": heads, "ffn": ffn, "layers": layers,
                     "classes": classes, "patch_pixels": 4},
            "embed": mat(4, d), "cls": rng.integers(-128, 128, d).astype(np.int8),
            "pos": rng.integers(-128, 128, (17, d)).astype(np.int8), "layers": lay,
            "add_f": radd(), "ln_f": ln(), "head": mat(d, classes), "scales": {}}


def _case(params):
    """(design, arrays, pixels [n, 8, 8]) of a JSON-able ``params``."""
    from gen.hw.vit.layout import ViTDesign, capacity_of
    if params["model"] == "synthetic":
        arrays = synthetic_model(seeds.derive("vit synthetic model"), params["dim"],
                                 params["heads"], params["ffn"], params["layers"],
                                 params["classes"])
        rng = np.random.default_rng(seeds.derive("vit synthetic images"))
        pixels = rng.integers(0, 17, (params["images"], 8, 8))
        pixels[0] = 16                                   # extremes: all ink, no ink
        pixels[1] = 0
    else:
        from gen.vit.model import digits_pixels, prepared_int_vit
        arrays = prepared_int_vit(seed=0, activation="gelu", pruned=True, quick=True).arrays()
        pixels, _ = digits_pixels(0, "test")
        pixels = np.asarray(pixels)[:params["images"]]
    dims = arrays["dims"]
    design = ViTDesign(lanes=params["lanes"], tokens=dims["tokens"], dim=dims["dim"],
                       heads=dims["heads"], ffn=dims["ffn"], layers=dims["layers"],
                       classes=dims["classes"], capacity=capacity_of(arrays, params["lanes"]),
                       images_in_flight=params["images_in_flight"])
    return design, arrays, np.asarray(pixels, dtype=np.int64)


def _load_beats(design, image):
    beats = []
    for engine, part in enumerate((image.nsa, image.nmp)):
        layout = design.engine_shape(("nsa", "nmp")[engine]).load_layout
        a_off, d_off = layout["addr"].offset, layout["data"].offset
        for target, addr, value in part.loads:
            beat = target | addr << a_off | value << d_off
            beats.append(engine | beat << 1)
    return beats


def _s8(v):
    return v - 256 if v & 0x80 else v


class MessageWatch:
    """Collects the beats entering one FIFO into messages (tag, a [T*D], b [T*D])."""

    def __init__(self, dut, name, clock, beats_per_message, limit):
        self.valid = getattr(dut, f"{name}_valid")
        self.beat = getattr(dut, name)
        self.clock = clock
        self.size = beats_per_message
        self.limit = limit
        self.messages = []
        self._current = []
        cocotb.start_soon(self._run())

    async def _run(self):
        while len(self.messages) < self.limit:
            await RisingEdge(self.clock)
            await ReadOnly()
            if int(self.valid.value):
                v = int(self.beat.value)
                self._current.append((v >> 16, _s8(v & 0xFF), _s8((v >> 8) & 0xFF)))
                if len(self._current) == self.size:
                    tags = {t for t, _, _ in self._current}
                    assert len(tags) == 1, f"a message mixes tags {sorted(tags)}"
                    self.messages.append((tags.pop(), [a for _, a, _ in self._current],
                                          [b for _, _, b in self._current]))
                    self._current = []


def _check_messages(watch, expected, what):
    """``expected[tag]`` = list over images of (a, b) [T, D] int arrays."""
    seen = {}
    for tag, a, b in watch.messages:
        k = seen.get(tag, 0)
        seen[tag] = k + 1
        if k >= len(expected[tag]):          # an image beyond the watched ones
            continue
        ea, eb = expected[tag][k]
        got_a = np.array(a).reshape(ea.shape)
        got_b = np.array(b).reshape(eb.shape)
        for name, got, want in (("shortcut", got_a, ea), ("branch", got_b, eb)):
            if not np.array_equal(got, want):
                bad = np.argwhere(got != want)[:4].tolist()
                raise AssertionError(
                    f"{what} message tag {tag} of image {k}: {name} differs at "
                    f"(row, col) {bad}: got {[int(got[r, c]) for r, c in bad]}, golden "
                    f"{[int(want[r, c]) for r, c in bad]} ({seeds.describe()})")
    return seen

@cocotb.test(timeout_time=4000, timeout_unit="ms")
async def images_through_the_ring_equal_the_golden(dut):
    from gen.hw.vit.layout import image_beats, model_image
    log_seed(dut)
    params = _params()
    design, arrays, pixels = _case(params)
    image = model_image(design, arrays)
    torch.set_num_threads(1)
    gold = golden_vit.forward(arrays, torch.as_tensor(pixels))
    layers, watched = design.layers, params["watch"]
    to_nmp = {l: [(gold["layers"][l]["x"][i].numpy(), gold["layers"][l]["Z"][i].numpy())
                  for i in range(watched)] for l in range(layers)}
    to_nsa = {l + 1: [(gold["layers"][l]["y"][i].numpy(), gold["layers"][l]["F"][i].numpy())
                      for i in range(watched)] for l in range(layers)}

    start_clock(dut.clk, CLOCK_NS)
    for name in ("load", "image"):
        getattr(dut, f"{name}__valid").value = 0
    dut.stall_nmp.value = 0
    dut.stall_nsa.value = 0
    dut.result__ready.value = 0
    await reset(dut.clk, dut.rst, 3)

    # With n images in flight, messages of the next n - 1 images interleave with the watched.
    limit = (watched + design.images_in_flight - 1) * layers
    watch_nmp = MessageWatch(dut, "to_nmp", dut.clk, design.message_beats, limit)
    watch_nsa = MessageWatch(dut, "to_nsa", dut.clk, design.message_beats, limit)
    load = StreamSource(StreamBus(dut, "load"), dut.clk, gap_probability=0.1,
                        rng=seeds.rng("vit load"))
    load_monitor = StreamMonitor(StreamBus(dut, "load"), dut.clk)
    await load.send(_load_beats(design, image), timeout_cycles=200_000)
    await load.wait_idle(timeout_cycles=200_000)
    load.stop()
    load_monitor.stop()

    start = int(dut.nsa_cycles.value)
    rng = seeds.rng("vit images and results")
    beats = [p for one in pixels for p in image_beats(one)]
    got, first, last = await images_and_results(dut, beats, len(pixels), rng,
                                                 timeout_cycles=len(pixels) * 400_000,
                                                 stall=params.get("stall", 0.3))
    for _ in range(64):                       # nothing more comes out
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert not int(dut.result__valid.value), "a result beyond the last image"

    nmp_seen = _check_messages(watch_nmp, to_nmp, "NSA -> NMP")
    nsa_seen = _check_messages(watch_nsa, to_nsa, "NMP -> NSA")
    assert all(nmp_seen.get(l, 0) >= watched for l in range(layers)), nmp_seen
    assert all(nsa_seen.get(l + 1, 0) >= watched for l in range(layers)), nsa_seen
    classes = design.classes
    for i, beat in enumerate(got):
        cls = beat & 0xFF
        logits = [_s8((beat >> (8 + 8 * c)) & 0xFF) for c in range(classes)]
        want = gold["logits"][i].tolist()
        assert logits == want, f"image {i}: logits {logits}, golden {want} ({seeds.describe()})"
        assert cls == int(gold["classes"][i]), f"image {i}: class {cls}, golden " \
                                               f"{int(gold['classes'][i])}"
    report = {"images": len(pixels), "cycles": last - first,
              "nsa_busy": int(dut.nsa_cycles.value) - start,
              "nmp_busy": int(dut.nmp_cycles.value),
              "nsa_ops": int(dut.nsa_op_cycles.value), "nmp_ops": int(dut.nmp_op_cycles.value),
              "classes": [beat & 0xFF for beat in got]}
    dut._log.info(f"{len(pixels)} images in {report['cycles']} cycles: NSA busy "
                  f"{report['nsa_busy']}, NMP {report['nmp_busy']}, NSA ops "
                  f"{report['nsa_ops']}, NMP ops {report['nmp_ops']}")
    if params.get("report"):
        with open(params["report"], "w") as f:
            json.dump(report, f)


async def images_and_results(dut, beats, results, rng, *, timeout_cycles, gap=0.3, ready=0.5,
                             stall=0.3):
    """Offer ``beats`` on ``image`` (random gaps, garbage while idle) and take ``results``
    results under random back-pressure, and stall the two FIFO-to-engine streams at random
    (``stall`` of the 16-cycle slots), in one task (one wake-up a cycle: long runs are bound by
    the testbench, not by the simulator), checking the result stream's rule (a result, once
    valid, stays unchanged until taken).

    Returns ``(results, cycle of the first pixel taken, cycle of the last result)``."""
    offering, index, taken, cycle = False, 0, False, 0
    got, first, last, held = [], None, None, None
    while len(got) < results:
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > timeout_cycles:
            raise AssertionError(f"{len(got)} of {results} results after {timeout_cycles} "
                                 f"cycles, {index} of {len(beats)} pixels taken "
                                 f"({seeds.describe()})")
        if taken:
            offering, index = False, index + 1
        if not offering and index < len(beats) and rng.random() >= gap:
            offering = True
        dut.image__valid.value = int(offering)
        dut.image__payload.value = beats[index] if offering else rng.randrange(256)
        take = rng.random() < ready
        dut.result__ready.value = int(take)
        # Random gaps and back-pressure on the streams between the engines, in bursts.
        if cycle % 16 == 0:
            dut.stall_nmp.value = int(rng.random() < stall)
            dut.stall_nsa.value = int(rng.random() < stall)
        await ReadOnly()
        taken = offering and bool(int(dut.image__ready.value))
        if taken and first is None:
            first = cycle
        valid = bool(int(dut.result__valid.value))
        payload = int(dut.result__payload.value) if valid else None
        if held is not None and (not valid or payload != held):
            raise AssertionError(f"result stream: a valid result changed before it was taken "
                                 f"({seeds.describe()})")
        held = None
        if valid and take:
            got.append(payload)
            last = cycle
        elif valid:
            held = payload
    return got, first, last


def _core(params):
    from gen.hw.vit.system import ViTCore
    design, _, _ = _case(params)
    return ViTCore(design, stall_ports=True)


def run_core(params):
    """Build the core of ``params`` and run the testbench (also used by the benchmark)."""
    from verif.sim import run_cocotb
    run_cocotb(_core(params), "vit_core", "verif.test_vit_system", params)


def test_vit_core_synthetic():
    run_core(SYNTHETIC)


def test_vit_core_digits():
    run_core(DIGITS)
