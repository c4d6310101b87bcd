"""The netlist that goes into the bitstream, simulated end to end through the host link.

A small `HostSystem` (2x2 array) is synthesized by yosys `synth_ecp5` for the ECP5 platform
(`flows.netlist`): its MULT18X18D instances and its DP16KD block RAMs (activation, weight and
parameter buffers instantiated with their output registers, the parameters in the 36-bit
mode; the output buffer mapped by yosys) are in the netlist, which Verilator runs with yosys's
fabric cell models and this project's MULT18X18D / DP16KD models. The test
module is the RTL's own (`verif.test_host_system`): the host driver does GEMMs over the
simulated UART, bit-exact against the golden model, including sizes that do not divide the
array and accumulator extremes, and the refusals.

The wall time of the three steps (yosys, Verilator build, simulation) is printed and written to
``sim_build/host_system_netlist-timing.json``.
"""

import json
import time
import xml.etree.ElementTree as ET

#: Small enough to synthesize and compile in about a minute, and every buffer in block RAM as
#: in the default design: the 256-word operand buffers (one DP16KD x9 per byte lane) and the
#: 64-channel parameter buffer (69 bits: two DP16KD in the 36-bit mode), all with their output
#: registers on, and the 512-byte output buffer (x9, mapped by yosys).
PARAMS = dict(rows=2, cols=2, act_depth=256, wgt_depth=256, param_depth=64, out_depth=512,
              uart_divisor=8)


def _sim_seconds(results):
    """Simulated tests' wall time from the cocotb results file."""
    root = ET.parse(results).getroot()
    return sum(float(case.get("time", 0)) for case in root.iter("testcase"))


def test_host_system_netlist():
    from flows.netlist import SIM_BUILD_ARGS, simulation_models, synthesize_netlist
    from gen.hw.requant import REQUANT_MULTIPLIERS
    from gen.hw.system import HostSystem
    from verif.sim import SIM_BUILD, run_cocotb

    build_dir = SIM_BUILD / "host_system_netlist"
    start = time.monotonic()
    result = synthesize_netlist(HostSystem(**PARAMS), "host_system", build_dir)
    synth = time.monotonic() - start
    # What this test is for: the hard blocks of the bitstream are in what it simulates.
    assert result.count("MULT18X18D") == PARAMS["rows"] * PARAMS["cols"] + REQUANT_MULTIPLIERS
    assert result.count("DP16KD") == PARAMS["rows"] + PARAMS["cols"] + 1 + 2, result.cells
    assert result.parameters["DP16KD"]["DATA_WIDTH_B"] == ["32'd36", "32'd9"]
    assert not [c for c in result.cells if c.startswith("$") and c != "$scopeinfo"], result.cells

    # The operand and parameter buffers' block RAMs read through their output registers
    # (gen.hw.accelerator); the output buffer is an inferred memory (yosys maps it without).
    regmode_b = result.parameters["DP16KD"]["REGMODE_B"]
    assert regmode_b == ['"NOREG"', '"OUTREG"'], regmode_b
    # The 36-bit parameter blocks have both output registers on (the DP16KD model refuses
    # two different REGMODEs in that mode); the operand blocks' write ports have none.
    regmode_a = result.parameters["DP16KD"]["REGMODE_A"]
    assert regmode_a == ['"NOREG"', '"OUTREG"'], regmode_a

    sources, include_dirs = simulation_models(build_dir)
    start = time.monotonic()
    timing = {"synth_s": round(synth, 1), "cells": result.cells}
    try:
        results = run_cocotb(
            None, "host_system", "verif.test_host_system", dict(PARAMS, netlist=True),
            sources=[result.wrapper, result.netlist, *sources],
            build_args=[f"-I{d}" for d in include_dirs] + SIM_BUILD_ARGS)
    finally:
        total = time.monotonic() - start
        results = SIM_BUILD.glob("host_system-src-*/*.result.xml")
        latest = max(results, key=lambda p: p.stat().st_mtime, default=None)
        simulated = _sim_seconds(latest) if latest else 0.0
        timing.update(verilator_build_s=round(total - simulated, 1),
                      simulation_s=round(simulated, 1))
        (SIM_BUILD / "host_system_netlist-timing.json").write_text(json.dumps(timing, indent=1))
        print(f"netlist simulation: yosys {timing['synth_s']} s (0 when cached), Verilator "
              f"build {timing['verilator_build_s']} s, simulation {timing['simulation_s']} s")
