"""Switching activity of the default GEMM design on the digits ViT, from Verilator's toggle
coverage (issue 11, point 3a). Writes ``gen/runtime/activity_default.json``, which the power
model (:mod:`gen.runtime.power_model`) reads, so the runtime never runs Verilator:

    python -m verif.measure_activity [--batches 1 2 3 4 5 6 7] [--out FILE]

Method
    GemmAccelerator (the default 8x8 design's buffers) is built with ``--coverage-toggle``:
    Verilator then counts, per bit of every signal, how often it changed over the run, and
    writes the counts to ``coverage.dat``. Toggle coverage was chosen over a VCD / FST trace
    because Verilator sums the toggles itself at full simulation speed, per bit and with the
    hierarchy, and the file is small (a trace of 200k cycles of a 50k-line design is
    gigabytes, and counting it in Python would take longer than the simulation).

    The workload is real: a batch of ``b`` digits test images through the trained integer ViT
    (``gen.vit.model.prepared_int_vit``), every GEMM job of the batch as the model device lists
    it (``ModelDevice.jobs``) with that layer's real INT8 activations and weights, each job's
    outputs checked bit-exact against ``verif.golden``. Coverage counts a whole simulation, so
    each batch size runs twice on the same operands: ``run`` (load each job, run it) and
    ``load`` (load each job, never start it); their difference is the toggling of the jobs
    themselves, divided by the jobs' measured cycles. One more pair at batch 1 with 20,000
    idle cycles after the last job gives the idle rate.

Classes (each an average per bit per cycle; 1.0 = every bit toggles every cycle)
    ``ff``: bits of the registers (assigned in ``always @(posedge clk)``) outside the
    multipliers and buffers (on ECP5 those registers sit inside MULT18X18D / DP16KD);
    ``lut``: every other net bit outside them (the combinational logic: a proxy for LUT
    outputs, since Verilator sees RTL nets, not the mapped LUTs); ``mult``: the multiplier
    operand registers ``a_reg`` / ``b_reg``; ``bram_port``: the block-RAM ports (address,
    data, enables) of the buffers. Block-RAM accesses per cycle are structural, not toggles:
    every operand buffer's read port is enabled every cycle (``read_port__en = 1'h1`` in the
    emitted Verilog), so its accesses per cycle are 1.0, busy or idle; the script counts those
    ports in the Verilog and records it.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import cocotb
import numpy as np
import torch
from cocotb.triggers import RisingEdge

__all__ = ["MODULE", "OUT", "workload_jobs", "parse_coverage", "registers_by_module", "classify",
           "class_totals", "measure", "main"]

MODULE = "verif.measure_activity"
OUT = Path(__file__).resolve().parent.parent / "gen" / "runtime" / "activity_default.json"
IDLE_CYCLES = 20_000
CLASSES = ("ff", "lut", "mult", "bram_port")


# -- the workload ---------------------------------------------------------------------------------
def workload_jobs(device, batch, seed=0):
    """Every job of one batch (``device.jobs(batch)``, expanded by count) with the trained
    integer ViT's real operands for ``batch`` test images: a list of ``(name, a, w, bias,
    mult, shift)`` int64 arrays."""
    from gen.vit.model import digits_pixels, patches, prepared_int_vit
    model = prepared_int_vit(seed=seed, pruned=False)
    p = model._tensors()
    pixels, _ = digits_pixels(seed)
    out = model.forward(pixels[:batch])
    heads, dim = len(p["layers"][0]["kept_features"]), p["head"]["w"].shape[0]
    head_dim = dim // heads

    def linear(name, x, m):
        n = m["w"].shape[1]
        return (name, x.reshape(-1, x.shape[-1]), m["w"], m["bias"],
                torch.as_tensor(m["mult"]).expand(n), torch.as_tensor(m["shift"]).expand(n))

    def fixed(name, a, w, ms):
        n = w.shape[1]
        return (name, a, w, torch.zeros(n, dtype=torch.int64),
                torch.full((n,), int(ms[0])), torch.full((n,), int(ms[1])))

    jobs = [linear("embed", patches(pixels[:batch]), p["embed"])]
    for i, (layer, r) in enumerate(zip(p["layers"], out["layers"])):
        jobs += [linear(f"layers.{i}.{x}", r["X"], layer[x]) for x in ("q", "k", "v")]
        split = lambda u: u.view(batch, -1, heads, head_dim).transpose(1, 2)
        qh, kh, vh = split(r["Q"]), split(r["K"]), split(r["V"])
        jobs += [fixed(f"layers.{i}.scores", qh[b, h], kh[b, h].T, layer["scores"])
                 for b in range(batch) for h in range(heads)]
        jobs += [fixed(f"layers.{i}.context", r["P"][b, h], vh[b, h], layer["context"])
                 for b in range(batch) for h in range(heads)]
        jobs += [linear(f"layers.{i}.o", r["O"], layer["o"]),
                 linear(f"layers.{i}.fc1", r["X2"], layer["fc1"]),
                 linear(f"layers.{i}.fc2", r["H"], layer["fc2"])]
    jobs.append(linear("head", out["n"], p["head"]))
    jobs = [(name, *(np.asarray(x, dtype=np.int64) for x in arrays))
            for name, *arrays in jobs]
    # The same jobs as the model device's batch, shape for shape and count for count.
    listed = sorted((j["layer"], j["m"], j["k"], j["n"], j["count"]) for j in device.jobs(batch))
    got = defaultdict(int)
    for name, a, w, *_ in jobs:
        got[name, a.shape[0], a.shape[1], w.shape[1]] += 1
    if sorted((*key, c) for key, c in got.items()) != listed:
        raise AssertionError(f"batch {batch}: the ViT's jobs are not the model device's jobs")
    return jobs


# -- the cocotb side ------------------------------------------------------------------------------
@cocotb.test(timeout_time=3600, timeout_unit="sec")
async def activity_jobs(dut):
    """Jobs from ACTIVITY_JOBS (an .npz); ACTIVITY_MODE "run" loads and runs each job, "load"
    only loads it; ACTIVITY_IDLE idle cycles follow; results (cycles) to ACTIVITY_OUT."""
    from verif import golden
    from verif.test_gemm_accelerator import TB
    data = np.load(os.environ["ACTIVITY_JOBS"])
    names = json.loads(str(data["names"]))
    run = os.environ["ACTIVITY_MODE"] == "run"
    tb = TB(dut, ready_probability=1.0)
    await tb.reset()
    cycles = []
    for i, name in enumerate(names):
        a, w, bias, mult, shift = (data[f"{i}_{x}"] for x in ("a", "w", "bias", "mult", "shift"))
        await tb.load(a, w, bias, mult, shift)
        if not run:
            continue
        m, k = a.shape
        n = w.shape[1]
        error, c = await tb.run(m, k, n, max_cycles=1_000_000)
        assert error == 0, f"{name} ({m}x{k}x{n}): the device reports an error"
        expected = golden.gemm_int8(*(torch.from_numpy(x) for x in (a, w, bias, mult, shift)))
        got = tb.collect(m, n)
        assert (got == expected.numpy()).all(), f"{name}: {int((got != expected.numpy()).sum())} " \
                                                f"wrong outputs"
        cycles.append(c)
    for _ in range(int(os.environ["ACTIVITY_IDLE"])):
        await RisingEdge(dut.clk)
    with open(os.environ["ACTIVITY_OUT"], "w") as f:
        json.dump({"cycles": cycles}, f)


# -- coverage.dat ---------------------------------------------------------------------------------
def _demangle(name):
    """Verilator's coverage names escape characters as ``__0XX`` (hex): ``__05F`` is ``_``."""
    return re.sub(r"__0([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), name)


def parse_coverage(path):
    """``{(hierarchy, signal): toggles summed over its bits}`` and ``{same: bits}`` of the
    toggle points in a Verilator ``coverage.dat`` (Verilator 5 counts 0->1 and 1->0 as two
    points of one bit; a toggle is either)."""
    toggles, bit_names = defaultdict(int), defaultdict(set)
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith("C '"):
            continue
        keys, _, count = line[3:].rpartition("' ")
        fields = dict(kv.split("\x02", 1) for kv in keys.split("\x01") if "\x02" in kv)
        if not fields.get("page", "").startswith("v_toggle"):
            continue
        point = _demangle(fields["o"]).rsplit(":", 1)[0].strip()
        signal = re.sub(r"\[\d+\]$", "", point)
        key = (fields.get("h", ""), signal)
        toggles[key] += int(count)
        bit_names[key].add(point)
    return toggles, {key: len(names) for key, names in bit_names.items()}


def registers_by_module(verilog):
    """``{module name: set of register names}``: what ``always @(posedge clk)`` assigns."""
    regs, module = defaultdict(set), None
    clocked = False
    for line in verilog.splitlines():
        head = re.match(r"\s*module\s+\\?(\S+?)\s*\(", line)
        if head:
            module = head.group(1)
            continue
        stripped = line.strip()
        if stripped.startswith("always @(posedge"):
            clocked = True
        elif stripped.startswith(("always", "assign", "endmodule", "reg ", "wire ")):
            clocked = False
        if clocked and module:
            for name in re.findall(r"^\s*(?:if \(.*\)\s*)?\\?([^\s\[]+)(?:\s*\[[^\]]*\])?\s*<=",
                                   line):
                regs[module].add(name)
    return regs


def classify(hierarchy, signal, regs):
    """The class of one signal (None: not counted: the clock, the reset, the memories)."""
    path = hierarchy[4:] if hierarchy.startswith("TOP.") else hierarchy
    if signal in ("clk", "rst") or signal.startswith("memory"):
        return None
    if ".mult_" in path:
        return "mult" if signal in ("a_reg", "b_reg") else None
    if "_buffer" in path:
        return "bram_port" if "__" in signal else None
    return "ff" if signal.lstrip("\\") in regs.get(path, ()) else "lut"


def class_totals(toggles, bits, regs):
    """``{class: (toggles, bits)}`` over the coverage points."""
    out = {c: [0, 0] for c in CLASSES}
    for key, count in toggles.items():
        cls = classify(*key, regs)
        if cls:
            out[cls][0] += count
            out[cls][1] += bits[key]
    return out


# -- driving the simulations ---------------------------------------------------------------------
def _simulate(device, jobs, mode, idle, work):
    """One coverage simulation; returns (class totals, measured cycles)."""
    from gen.hw.accelerator import GemmAccelerator
    from verif.measure_gemm import ACCELERATOR_KEYS
    from verif.sim import run_cocotb
    params = {key: device.engine[key] for key in ACCELERATOR_KEYS}
    npz = work / "jobs.npz"
    arrays = {"names": json.dumps([j[0] for j in jobs])}
    for i, (_, *xs) in enumerate(jobs):
        arrays.update({f"{i}_{x}": v for x, v in zip(("a", "w", "bias", "mult", "shift"), xs)})
    np.savez(npz, **arrays)
    out = work / "out.json"
    results = run_cocotb(GemmAccelerator(**params), "gemm_accelerator", MODULE, params,
                         build_args=["--coverage-toggle"],
                         extra_env={"ACTIVITY_JOBS": str(npz), "ACTIVITY_MODE": mode,
                                    "ACTIVITY_IDLE": str(idle), "ACTIVITY_OUT": str(out)})
    build_dir = Path(results).parent
    coverage = build_dir / "coverage.dat"
    verilog = (build_dir / "gemm_accelerator.v").read_text()
    regs = registers_by_module(verilog)
    totals = class_totals(*parse_coverage(coverage), regs)
    coverage.unlink()
    return totals, json.loads(out.read_text())["cycles"], verilog


def measure(batches, work, progress=print):
    """The activity file's content for ``batches`` (see the module docstring)."""
    from gen.runtime.model_device import ModelDevice
    device = ModelDevice()
    work.mkdir(parents=True, exist_ok=True)
    result = {"batches": {}}
    verilog = None
    for b in batches:
        t0 = time.monotonic()
        jobs = workload_jobs(device, b)
        run, cycles, verilog = _simulate(device, jobs, "run", 0, work)
        load, _, _ = _simulate(device, jobs, "load", 0, work)
        total = sum(cycles)
        if total != device.batch_cycles(b):
            raise AssertionError(f"batch {b}: {total} cycles measured, the model says "
                                 f"{device.batch_cycles(b)}")
        rates = {c: (run[c][0] - load[c][0]) / (run[c][1] * total) for c in CLASSES}
        result["batches"][str(b)] = {"cycles": total, "jobs": len(jobs), **rates}
        progress(f"batch {b}: {len(jobs)} jobs, {total} cycles, " +
                 ", ".join(f"{c} {rates[c]:.4f}" for c in CLASSES) +
                 f" [{time.monotonic() - t0:.0f} s]")
        if b == batches[0]:
            tail, _, _ = _simulate(device, jobs, "run", IDLE_CYCLES, work)
            result["idle"] = {c: (tail[c][0] - run[c][0]) / (run[c][1] * IDLE_CYCLES)
                              for c in CLASSES}
            result["signal_bits"] = {c: run[c][1] for c in CLASSES}
            progress("idle: " + ", ".join(f"{c} {result['idle'][c]:.5f}" for c in CLASSES))
    enabled = len(re.findall(r"assign read_port__en = 1'h1;", verilog))
    buffers = len(re.findall(r"^module \\gemm_accelerator\.\w+_buffer", verilog, re.M))
    result["bram_reads_per_cycle"] = {"operand_read_ports_enabled_every_cycle": enabled,
                                      "buffers": buffers, "busy": 1.0, "idle": 1.0}
    result["design"] = {"name": "default", **{k: int(v) for k, v in device.engine.items()}}
    result["network"] = device.workload.name
    result["command"] = "python -m verif.measure_activity"
    result["method"] = ("Verilator --coverage-toggle on GemmAccelerator, real digits-ViT INT8 "
                        "operands per job; (run - load-only) toggles / measured cycles, per "
                        "bit; see verif/measure_activity.py")
    return result


def main(argv=None):
    from gen.runtime.model_device import ModelDevice
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 .. the largest that fits)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    batches = args.batches or list(range(1, ModelDevice().max_batch + 1))
    from verif.sim import SIM_BUILD
    work = SIM_BUILD / "activity-work"
    result = measure(sorted(set(batches)), work)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
