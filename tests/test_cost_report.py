"""The cost report's tables and verdict, from synthetic measurements (no simulator, no builds)."""

import json

import pytest

from gen import cost_report
from gen.rtl import canonical_verilog
from gen.cost_report import (CONFIGS, dataflow_of, CYCLE_TOLERANCE, JOBS, RESOURCE_TOLERANCE, RESOURCES,
                             conv_job, design_config, format_report, jobs_for, make_report,
                             predict_cycles)
from gen.estimate import check_fits, estimate_resources
from gen.boards import get_board
from gen.cycles import engine_gemm_cycles


def synthetic(cycle_scale=1.0, resource_scale=None):
    """Measurements that are the model's own numbers, optionally scaled."""
    resource_scale = resource_scale or {}
    measurements = {}
    for spec in CONFIGS:
        estimate = estimate_resources(design_config(spec)).as_dict()
        measurements[spec["name"]] = {
            "config": dict(spec),
            "cycles": [{"name": job.name, "m": job.m, "k": job.k, "n": job.n,
                        "count": job.count,
                        "cycles": round(engine_gemm_cycles(
                            job.m, job.k, job.n, spec["rows"], spec["cols"],
                            dataflow=dataflow_of(spec)) * cycle_scale)}
                       for job in jobs_for(spec)] if spec.get("simulate", True) else None,
            "resources": {key: round(estimate[key] * resource_scale.get(key, 1.0))
                          for key in RESOURCES},
            "fmax": {"$glbnet$clk": {"achieved_mhz": 90.0, "constraint_mhz": 75.0,
                                      "met": True}},
            "timing_met": True,
        }
    return measurements


def test_every_config_fits_the_board_and_runs_enough_jobs():
    board = get_board(cost_report.BOARD)
    simulated = [spec for spec in CONFIGS if spec.get("simulate", True)]
    assert len(simulated) >= 3
    assert len({(spec["rows"], spec["cols"], dataflow_of(spec))
                for spec in simulated}) == len(simulated)
    assert {dataflow_of(spec) for spec in simulated} == {"output_stationary",
                                                         "weight_stationary"}
    assert any(spec["rows"] != spec["cols"] for spec in simulated)
    for spec in CONFIGS:
        check_fits(design_config(spec), board)
    for spec in simulated:
        jobs = jobs_for(spec)
        assert len(jobs) >= 10, spec["name"]
        rows, cols = spec["rows"], spec["cols"]
        assert any(job.m % rows or job.n % cols for job in jobs), "no job off the array size"
        assert any(job.k < rows * cols for job in jobs), "no job with K < R*C"
        assert any(job.name.startswith("conv") for job in jobs)
        assert any(job.count > 1 for job in jobs), "no per-group (depthwise) job"


def test_conv_jobs_are_im2col_views():
    # 3x3, 8 -> 32 channels, 16x16 input, stride 2, padding 1: 8x8 outputs.
    assert conv_job("c", 8, 32, 16, 3, stride=2, padding=1) == conv_job("c", 8, 32, 16, 3,
                                                                       stride=2, padding=1)
    job = conv_job("c", 8, 32, 16, 3, stride=2, padding=1)
    assert (job.m, job.k, job.n, job.count) == (64, 72, 32, 1)
    depthwise = conv_job("dw", 16, 16, 8, 3, padding=1, groups=16)
    assert (depthwise.m, depthwise.k, depthwise.n, depthwise.count) == (64, 9, 1, 16)
    lenet = conv_job("lenet", 6, 16, 12, 5)
    assert (lenet.m, lenet.k, lenet.n) == (64, 150, 16)
    with pytest.raises(ValueError):
        conv_job("bad", 6, 16, 8, 3, groups=4)


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda spec: spec["name"])
def test_predicted_cycles_are_the_engine_model(spec):
    flow = dataflow_of(spec)
    for job in JOBS:
        assert predict_cycles(job.m, job.k, job.n, spec["rows"], spec["cols"], flow) == \
            engine_gemm_cycles(job.m, job.k, job.n, spec["rows"], spec["cols"],
                               dataflow=flow), job


def test_exact_measurements_pass():
    report = make_report(synthetic())
    assert report["verdict"]["ok"]
    assert report["verdict"]["text"].startswith("verdict: PASS")
    for config in report["configs"]:
        assert all(row["error"] == 0 and row["ok"] for row in config["cycles"])
        assert [row["resource"] for row in config["resources"]] == list(RESOURCES)
    json.dumps(report)      # the report is written as JSON


def test_cycles_off_by_more_than_the_tolerance_fail():
    inside = make_report(synthetic(cycle_scale=1 / (1 + CYCLE_TOLERANCE * 0.8)))
    assert inside["verdict"]["cycles"]["ok"]
    outside = make_report(synthetic(cycle_scale=1 / (1 + CYCLE_TOLERANCE * 1.5)))
    verdict = outside["verdict"]
    assert not verdict["ok"] and not verdict["cycles"]["ok"] and verdict["resources"]["ok"]
    # predicted > measured: the error is positive, about +7.5%
    assert verdict["cycles"]["worst"]["error"] == pytest.approx(1.5 * CYCLE_TOLERANCE, rel=0.1)
    assert "cycles within 5%: FAIL" in verdict["text"]


def test_one_resource_off_fails_and_names_it():
    measured_lut = 1 / (1 - RESOURCE_TOLERANCE * 1.2)     # estimate 12% low
    report = make_report(synthetic(resource_scale={"lut4": measured_lut}))
    verdict = report["verdict"]
    assert verdict["cycles"]["ok"] and not verdict["resources"]["ok"]
    fitted = [spec for spec in CONFIGS if not spec.get("holdout")]
    assert verdict["resources"]["failed"] == len(fitted)
    assert verdict["holdout"]["failed"] == len(CONFIGS) - len(fitted)
    assert verdict["resources"]["worst"]["item"] == "lut4"
    assert verdict["resources"]["worst"]["error"] < -RESOURCE_TOLERANCE
    lines = format_report(report)
    lut_lines = [line for line in lines if " lut4 " in line]
    assert len(lut_lines) == len(CONFIGS) and all(line.endswith("MISS") for line in lut_lines)
    assert not any(line.endswith("MISS") for line in lines if " ff " in line)


def test_the_estimate_has_a_hold_out_judged_on_its_own():
    held = [spec for spec in CONFIGS if spec.get("holdout")]
    assert len(held) >= 2
    def design(spec):
        return spec["rows"], spec["cols"], dataflow_of(spec)
    fitted = {design(spec) for spec in CONFIGS if not spec.get("holdout")}
    assert not {design(spec) for spec in held} & fitted
    measurements = synthetic()
    off = measurements[held[0]["name"]]["resources"]
    off["ff"] = round(off["ff"] / (1 - RESOURCE_TOLERANCE * 1.5))      # estimate 15% low
    report = make_report(measurements)
    verdict = report["verdict"]
    assert verdict["resources"]["ok"] and not verdict["holdout"]["ok"] and not verdict["ok"]
    assert verdict["holdout"]["worst"]["config"] == held[0]["name"]
    assert "hold-out resources within 10%: FAIL" in verdict["text"]
    lines = format_report(report)
    resource_lines = lines[next(i for i, line in enumerate(lines) if line.startswith("== resources")):]
    rows = [line for line in resource_lines if line.startswith(held[0]["name"])]
    assert rows and all("hold-out" in line for line in rows)
    assert any(line.endswith("MISS") and " ff " in line for line in rows)


def test_missing_measurements_fail_the_verdict():
    measurements = synthetic()
    for entry in measurements.values():
        entry["resources"] = None
    report = make_report(measurements)
    assert report["verdict"]["cycles"]["ok"]
    assert not report["verdict"]["ok"]
    assert "nothing measured" in report["verdict"]["resources"]["text"]
    assert any("(not built)" in line for line in format_report(report))


def test_table_rows():
    measurements = synthetic()
    spec = CONFIGS[0]
    first = measurements[spec["name"]]["cycles"][0]
    first["cycles"] = 1000
    predicted = engine_gemm_cycles(first["m"], first["k"], first["n"], spec["rows"], spec["cols"])
    lines = format_report(make_report(measurements))
    assert lines[0].startswith("== cycles")
    row = next(line for line in lines if line.startswith(spec["name"]) and first["name"] in line)
    fields = row.split()
    assert f"{first['m']}x{first['k']}x{first['n']}" in fields
    assert str(predicted) in fields and "1000" in fields
    assert f"{100 * (predicted - 1000) / 1000:+.2f}%" in row
    assert lines[-1].startswith("verdict: ")
    resources_at = next(i for i, line in enumerate(lines) if line.startswith("== resources"))
    assert resources_at - 2 == sum(len(jobs_for(s)) for s in CONFIGS     # title, header
                                   if s.get("simulate", True))
    assert len(lines) - resources_at - 3 == len(CONFIGS) * len(RESOURCES)


def test_plot_is_written(tmp_path):
    report = make_report(synthetic(cycle_scale=1.01, resource_scale={"ff": 0.95}))
    cost_report.plot_report(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cached_measurements_make_the_report_without_tools(tmp_path, monkeypatch):
    """A run whose measurements are all cached writes the JSON, the PNG and the verdict."""
    measurements = synthetic()

    def fake_measure(specs, out, **kwargs):
        return {spec["name"]: measurements[spec["name"]] for spec in specs}
    monkeypatch.setattr(cost_report, "measure", fake_measure)
    import argparse
    parser = argparse.ArgumentParser()
    cost_report.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--only", CONFIGS[0]["name"]])
    assert cost_report.run(args) == 0
    written = json.loads((tmp_path / "cost_report.json").read_text())
    assert [c["name"] for c in written["configs"]] == [CONFIGS[0]["name"]]
    assert (tmp_path / "cost_report.png").exists()


def test_cache_key_ignores_the_port_order_of_module_headers():
    """Amaranth orders the clock ports of a two-domain design by Python's hash seed."""
    a = "module top(clk, rst, host_clk, x);\n  input clk;\nendmodule\n" \
        "module \\top.sub (host_rst, clk,\n  \\port$1$0 , rst);\nendmodule\n"
    b = "module top(host_clk, x, clk, rst);\n  input clk;\nendmodule\n" \
        "module \\top.sub (rst, \\port$1$0 , host_rst,\n  clk);\nendmodule\n"
    assert canonical_verilog(a) == canonical_verilog(b)
    changed = b.replace("input clk", "input [1:0] clk")
    assert canonical_verilog(a) != canonical_verilog(changed)


def test_a_new_measurement_replaces_the_stale_ones(tmp_path):
    for name in ("cycles-cost2x2-0000000000000000.json", "cycles-cost2x24-0000000000000000.json",
                 "cycles-cost2x2-raw.json", "resources-cost2x2-0000000000000000.json"):
        (tmp_path / name).write_text("{}")
    cost_report._store(tmp_path / "cycles-cost2x2-1111111111111111.json", [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cycles-cost2x2-1111111111111111.json", "cycles-cost2x2-raw.json",
        "cycles-cost2x24-0000000000000000.json", "resources-cost2x2-0000000000000000.json"]
