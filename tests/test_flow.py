"""A small design through the whole open-source flow, and the build verdicts.

The large default design is built by `make build` and the benchmark, not here (CI time).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import ecp5
from flows.ecp5 import parse_nextpnr_report
from gen.config import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parent.parent


def small_config(tmp_path, clock_mhz):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name=f"flowtest{int(clock_mhz)}", board="ulx3s-12f", clock_mhz=clock_mhz)
    raw["array"].update(rows=2, cols=2)
    raw["buffers"].update(act_depth=256, wgt_depth=256, param_depth=16, out_depth=1024)
    raw["host"]["baud"] = 115200
    path = tmp_path / f"small{int(clock_mhz)}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def build(tmp_path, config):
    return subprocess.run(
        [sys.executable, "-m", "gen", "build", "--config", str(config), "--out",
         str(tmp_path / "rtl_out")], cwd=REPO, capture_output=True, text=True, timeout=1500)


def test_small_design_builds_a_bitstream_and_reports(tmp_path):
    proc = build(tmp_path, small_config(tmp_path, 50))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder,) = (tmp_path / "rtl_out").iterdir()
    report = json.loads((folder / "report.json").read_text())
    assert report["board"] == "ulx3s-12f" and report["device"] == "LFE5U-12F"
    assert report["target_clock_mhz"] == 50
    assert report["timing_met"] is True
    assert set(report["fmax_by_domain"]) == {"sync", "host"}
    clock = report["fmax_by_domain"]["sync"]
    assert clock["achieved_mhz"] >= 50 and clock["constraint_mhz"] == pytest.approx(50)
    assert report["fmax_by_domain"]["host"]["constraint_mhz"] == pytest.approx(25)
    for key in ("lut4", "ff", "mult18", "bram18k"):
        assert 0 <= report["resources"][key]["used"] <= report["resources"][key]["available"]
    assert report["resources"]["mult18"]["used"] == 2 * 2 + 4
    bitstream = Path(report["bitstream"])
    assert bitstream.stat().st_size > 10_000
    assert (folder / "utilization.png").stat().st_size > 1000
    assert (folder / "config.yaml").exists() and (folder / "manifest.json").exists()
    assert "timing met" in proc.stdout


def test_timing_failure_exits_non_zero_with_the_report(tmp_path):
    proc = build(tmp_path, small_config(tmp_path, 400))
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "timing FAILED" in proc.stdout and "ERROR: timing not met" in proc.stdout
    (folder,) = (tmp_path / "rtl_out").iterdir()
    report = json.loads((folder / "report.json").read_text())
    assert report["timing_met"] is False


def test_over_budget_config_fails_before_synthesis(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["board"] = "ulx3s-25f"
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = build(tmp_path, path)
    assert proc.returncode == 2
    assert "does not fit ulx3s-25f" in proc.stderr and "mult18" in proc.stderr
    assert not (tmp_path / "rtl_out").exists()


def test_nextpnr_report_parsing(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({
        "fmax": {"$glbnet$clk": {"achieved": 131.2, "constraint": 125.0},
                 "$glbnet$slow": {"achieved": 20.0, "constraint": 25.0}},
        "utilization": {"MULT18X18D": {"used": 68, "available": 156}}}))
    fmax, utilization = parse_nextpnr_report(path)
    assert fmax["$glbnet$clk"] == {"achieved_mhz": 131.2, "constraint_mhz": 125.0, "met": True}
    assert fmax["$glbnet$slow"]["met"] is False
    assert utilization["MULT18X18D"] == {"used": 68, "available": 156}

def test_a_failure_names_the_error_the_tool_wrote_only_to_its_own_log(tmp_path):
    # yosys writes an internal assertion to its -l log, not to its output.
    script = ("import sys; open('tool.rpt', 'w').write(\"3.46 Executing ABC9.\\n"
              "ERROR: Assert `x' failed in kernel/rtlil.cc:3091.\\n\"); "
              "print('Running ABC command'); sys.exit(1)")
    with pytest.raises(ecp5.FlowError) as info:
        ecp5._run("yosys", [sys.executable, "-c", script], tmp_path, tmp_path / "yosys.log",
                  lambda line: None, lambda line: False, tool_log=tmp_path / "tool.rpt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("yosys failed (exit 1)")
    assert "ERROR: Assert `x' failed in kernel/rtlil.cc:3091." in message
    assert str(tmp_path / "yosys.log") in message


def test_an_error_on_the_output_is_named_first(tmp_path):
    script = "import sys; print('ERROR: out of memory'); sys.exit(2)"
    with pytest.raises(ecp5.FlowError, match=r"nextpnr failed \(exit 2\).*ERROR: out of memory"):
        ecp5._run("nextpnr", [sys.executable, "-c", script], tmp_path, tmp_path / "n.log",
                  lambda line: None, lambda line: False, tool_log=tmp_path / "missing.rpt")
