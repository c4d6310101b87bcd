"""Design-space sweeps (`python -m gen sweep`): the spec is checked strictly, results are stored
as they finish and reused, a failing point is recorded while the sweep goes on, the frontier
follows its stated rule, and a tiny sweep really runs on a local Ray instance.

Everything but the last test runs without Ray and without the tools (the flow is faked)."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flows.ecp5
from flows.ecp5 import FlowError, FlowResult
from gen import sweep as sweep_module
from gen.__main__ import main
from gen.errors import UserError
from gen.sweep import SPEC_SCHEMA, load_spec, parse_spec, plan_points, run_serial, run_sweep
from gen.alloc.problems import max_pes_at
from gen.timing_frontier import (DEFAULT_FRONTIER, compute_frontier, load_frontier,
                                 read_frontier)

REPO = Path(__file__).resolve().parent.parent
# The fake flows never elaborate the board top they are handed.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

BASE = {"name": "tiny", "board": "ulx3s-12f", "clock_mhz": 50,
        "array": {"rows": 1, "cols": 1, "dataflow": "output_stationary"},
        "buffers": {"act_depth": 16, "wgt_depth": 16, "param_depth": 2, "out_depth": 16},
        "host": {"baud": 115200}}
SPEC = {"name": "tiny-sweep", "base": "base.yaml", "arrays": ["1x1", "1x2"],
        "clocks_mhz": [50], "seeds": [1]}


def write_spec(folder, spec=None, base=None):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(base or BASE))
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC if spec is None else spec))
    return path


def one_line_error(call):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- the spec --------------------------------------------------------------------------------

def test_the_committed_spec_is_the_issues_measured_grid():
    spec = load_spec(REPO / "gen" / "configs" / "sweep-85f.yaml")
    points = plan_points(spec)
    assert spec.board == "ulx3s-85f" and len(points) >= 24
    assert len({p.key for p in points}) == len(points)
    assert {p.seed for p in points} == {1, 2} and {p.clock_mhz for p in points} == {100, 125}
    assert len({(p.rows, p.cols) for p in points}) >= 6


def test_cli_dry_run_lists_points_and_builds_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1x1 @ 50 MHz seed 1" in out and "1x2 @ 50 MHz seed 1" in out and "2 to build" in out
    assert not (tmp_path / "out").exists()


VALID_VALUES = {"name": "ok", "base": "base.yaml", "board": "ulx3s-12f", "arrays": ["1x1"],
                "clocks_mhz": [50], "seeds": [1], "frontier_rule": "any_seed"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.text(min_size=1, max_size=12).filter(lambda k: k not in SPEC_SCHEMA))
def test_an_unknown_key_is_refused_naming_it(key):
    raw = dict(SPEC, **{key: 1})
    message = one_line_error(lambda: parse_spec(raw, source="s.yaml"))
    assert message.startswith("s.yaml: ") and "unknown key" in message


junk = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                 st.lists(st.one_of(st.integers(-5, 500), st.text(max_size=6), st.none(),
                                    st.floats()), max_size=4),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(SPEC_SCHEMA)), value=junk)
def test_a_bad_value_is_refused_in_one_line_naming_its_field(field, value):
    raw = dict(VALID_VALUES, **{field: value})
    try:
        parse_spec(raw, source="s.yaml")
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.startswith(f"s.yaml: {field}"), message
    # Some junk is valid by chance (a string names a base file; a list of good seeds).


@pytest.mark.parametrize("change, field", [
    ({"arrays": []}, "arrays: is empty"),
    ({"arrays": ["8x8", "8X8"]}, "arrays[1]: 8x8 is given twice"),
    ({"arrays": ["8by8"]}, "arrays[0]: '8by8' is not ROWSxCOLS"),
    ({"arrays": ["0x4"]}, "arrays[0] rows"),
    ({"arrays": ["4x65"]}, "arrays[0] cols"),
    ({"clocks_mhz": [50, 50.0]}, "clocks_mhz[1]"),
    ({"clocks_mhz": [5]}, "clocks_mhz[0]"),
    ({"seeds": [-1]}, "seeds[0]"),
    ({"seeds": [True]}, "seeds[0]"),
    ({"board": "nosuchboard"}, "board:"),
    ({"frontier_rule": "most_seeds"}, "frontier_rule:"),
    ({"name": "has space"}, "name:"),
])
def test_bad_specs_name_the_field(change, field):
    raw = {k: v for k, v in dict(SPEC, **change).items() if v is not None}
    message = one_line_error(lambda: parse_spec(raw, source="s.yaml"))
    assert message.startswith(f"s.yaml: {field}"), message


def test_a_missing_field_is_named():
    raw = {k: v for k, v in SPEC.items() if k != "seeds"}
    assert one_line_error(lambda: parse_spec(raw, source="s.yaml")).startswith(
        "s.yaml: seeds: missing")


def test_points_are_checked_like_gen_check_before_anything_builds(tmp_path):
    # 16x16 needs 260 multipliers: more than the 12F's 28.
    roomy = dict(BASE, buffers=dict(BASE["buffers"], param_depth=64, out_depth=4096))
    spec = load_spec(write_spec(tmp_path, dict(SPEC, arrays=["1x1", "16x16"]), base=roomy))
    message = one_line_error(lambda: plan_points(spec))
    assert "arrays[1] (16x16) at clocks_mhz[0] (50 MHz)" in message and "mult18" in message
    bad_base = dict(BASE, extra=1)
    spec = load_spec(write_spec(tmp_path / "b", base=bad_base))
    message = one_line_error(lambda: plan_points(spec))
    assert ": base: " in message and "extra: unknown key" in message
    spec = load_spec(write_spec(tmp_path / "c", dict(SPEC, base="missing.yaml")))
    assert "does not exist" in one_line_error(lambda: plan_points(spec))


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    spec = write_spec(tmp_path, dict(SPEC, arrays=["1x1"], colour="blue"))
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "colour: unknown key" in err and str(spec) in err


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:1", "--address 127.0.0.1:1: no Ray cluster answers there"),
    ("ray://127.0.0.1:1", "--address ray://127.0.0.1:1: no Ray cluster answers there"),
    ("nonsense", "--address: 'nonsense' is not HOST:PORT"),
    ("", "--address: '' is not HOST:PORT"),
])
def test_an_unreachable_ray_address_is_one_line_with_the_address(tmp_path, capsys, address,
                                                                 expected):
    spec = write_spec(tmp_path)
    code = main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out"),
                 "--address", address])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and expected in err, err
    assert not (tmp_path / "out").exists()


# -- storing, resuming, failures (the flow is faked; no Ray) ---------------------------------

FMAX = {"$glbnet$clk": {"achieved_mhz": 80.0, "constraint_mhz": 50.0, "met": True},
        "$glbnet$host_clk": {"achieved_mhz": 90.0, "constraint_mhz": 25.0, "met": True}}


class FakeFlow:
    """Stands in for yosys/nextpnr/ecppack; fails for 1x2 arrays when ``fail_cols`` has 2."""

    def __init__(self, fail_cols=()):
        self.calls, self.fail_cols = [], set(fail_cols)

    def __call__(self, top, board, build_dir, *, seed=1, progress=print):
        self.calls.append((build_dir.parent.name, seed))
        build_dir.mkdir(parents=True, exist_ok=True)
        if "1x2" in build_dir.parent.name and 2 in self.fail_cols:
            raise FlowError(f"nextpnr failed (exit 1) after 3s: ERROR: no placement; "
                            f"log: {build_dir / 'nextpnr.log'}")
        (build_dir / "top.bit").write_bytes(b"\xff" * 100)
        (build_dir / "top.json").write_text("{}")
        return FlowResult(build_dir=build_dir, bitstream=build_dir / "top.bit", fmax=FMAX,
                          utilization={"TRELLIS_COMB": {"used": 3000, "available": 24288},
                                       "MULT18X18D": {"used": 5, "available": 28}},
                          seconds={"synth": 1.0, "pnr": 2.0, "pack": 0.5})


def serial():
    return contextlib.nullcontext(run_serial)


def test_results_are_stored_as_they_finish_and_a_rerun_builds_nothing(tmp_path, monkeypatch):
    fake = FakeFlow()
    monkeypatch.setattr(flows.ecp5, "run_flow", fake)
    spec = load_spec(write_spec(tmp_path, dict(SPEC, seeds=[1, 2])))
    results = run_sweep(spec, tmp_path / "out", executor=serial(), progress=lambda line: None)
    assert len(fake.calls) == 4 and [r["status"] for r in results] == ["ok"] * 4
    folder = tmp_path / "out" / "sweep" / "tiny-sweep"
    stored = sorted(folder.glob("*.json"))
    assert len(stored) == 4
    first = json.loads(stored[0].read_text())
    assert first["timing_met"] is True and first["fmax_mhz"] == 80.0
    assert first["resources"]["lut4"]["used"] == 3000 and first["key"] == stored[0].stem
    assert not (Path(first["build_dir"]) / "top.json").exists()     # bulky files dropped
    assert (Path(first["build_dir"]) / "top.bit").exists()
    for name in ("table.txt", "results.csv", "fmax.png", "resources.png", "frontier.yaml"):
        assert (folder / name).stat().st_size > 0, name
    # A rerun reuses every stored result: no build at all.
    lines = []
    again = run_sweep(spec, tmp_path / "out", executor=serial(), progress=lines.append)
    assert len(fake.calls) == 4 and again == results
    assert "4 have results" in lines[0] and "0 to build" in lines[0]
    # A damaged or truncated result is built again; the others are kept.
    stored[1].write_text('{"key": "x"')
    run_sweep(spec, tmp_path / "out", executor=serial(), progress=lambda line: None)
    assert len(fake.calls) == 5


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path, monkeypatch):
    fake = FakeFlow()
    monkeypatch.setattr(flows.ecp5, "run_flow", fake)
    spec = load_spec(write_spec(tmp_path, dict(SPEC, seeds=[1, 2, 3])))

    @contextlib.contextmanager
    def killed_after_two():
        def execute(tasks):
            for n, pair in enumerate(run_serial(tasks)):
                yield pair
                if n == 1:
                    raise KeyboardInterrupt
        yield execute

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", executor=killed_after_two(),
                  progress=lambda line: None)
    assert len(fake.calls) == 2
    assert len(list((tmp_path / "out" / "sweep" / "tiny-sweep").glob("*.json"))) == 2
    run_sweep(spec, tmp_path / "out", executor=serial(), progress=lambda line: None)
    assert len(fake.calls) == 6          # the 4 left, not the 2 stored


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    fake = FakeFlow(fail_cols={2})
    monkeypatch.setattr(flows.ecp5, "run_flow", fake)
    # The command's Ray executor replaced by the serial one: the CLI path is the same.
    monkeypatch.setattr(sweep_module, "RayExecutor", lambda **kw: serial())
    spec = write_spec(tmp_path, dict(SPEC, seeds=[1, 2]))
    code = main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 5 and len(fake.calls) == 4
    folder = tmp_path / "out" / "sweep" / "tiny-sweep"
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 2 and all("nextpnr failed" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in results) == 2
    assert "FAILED" in out and "tools failed on 2 of 4 points" in out
    # The frontier comes from what finished: 1x1 met timing at 50 MHz.
    assert load_frontier(folder / "frontier.yaml") == ((50.0, 1),)
    # A rerun keeps the failures; --retry-failed builds just those again.
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")]) == 5
    assert len(fake.calls) == 4
    fake.fail_cols = set()
    assert main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out"),
                 "--retry-failed", "--frontier", str(tmp_path / "f.yaml")]) == 0
    assert len(fake.calls) == 6
    assert load_frontier(tmp_path / "f.yaml") == ((50.0, 2),)


def test_an_unexpected_error_in_one_build_is_a_failed_result(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError("out of memory in the placer")
    monkeypatch.setattr(flows.ecp5, "run_flow", broken)
    spec = load_spec(write_spec(tmp_path, dict(SPEC, arrays=["1x1"])))
    (result,) = run_sweep(spec, tmp_path / "out", executor=serial(),
                          progress=lambda line: None)
    assert result["status"] == "failed" and result["error"].startswith("MemoryError: out of")


# -- the frontier rule -----------------------------------------------------------------------

def result(rows, cols, clock, seed, met, status="ok", fmax=None):
    return {"status": status, "rows": rows, "cols": cols, "clock_mhz": clock, "seed": seed,
            "timing_met": met, "fmax_mhz": fmax if fmax is not None else (clock + 10 if met
                                                                           else clock - 10)}


def test_frontier_takes_the_largest_array_that_met_with_none_smaller_failing():
    results = [result(4, 4, 100, 1, True), result(8, 8, 100, 1, True),
               result(8, 16, 100, 1, True), result(12, 12, 100, 1, False),
               result(4, 4, 125, 1, True), result(8, 8, 125, 1, True),
               result(8, 12, 125, 1, False), result(12, 12, 125, 1, True)]
    entries = compute_frontier(results)
    # 12x12 met at 125 MHz but the smaller 8x12 did not: the frontier stops below 96 PEs.
    assert [(e["clock_mhz"], e["max_pes"], e["array"]) for e in entries] == \
        [(100.0, 128, "8x16"), (125.0, 64, "8x8")]


def test_frontier_seed_rules():
    results = [result(8, 8, 125, 1, False), result(8, 8, 125, 2, True),
               result(4, 4, 125, 1, True), result(4, 4, 125, 2, True)]
    (any_seed,) = compute_frontier(results, "any_seed")
    assert any_seed["max_pes"] == 64 and (any_seed["seeds_met"], any_seed["seeds"]) == (1, 2)
    (all_seeds,) = compute_frontier(results, "all_seeds")
    assert all_seeds["max_pes"] == 16


def test_frontier_ignores_failed_builds_and_carries_higher_clocks_down():
    results = [result(8, 8, 100, 1, None, status="failed"), result(4, 4, 100, 1, True),
               result(8, 8, 125, 1, True), result(2, 2, 150, 1, False)]
    entries = compute_frontier(results)
    # 8x8 met 125 MHz, so it meets 100 MHz (its 100 MHz build failed in the tools);
    # nothing met 150 MHz: no entry.
    assert [(e["clock_mhz"], e["max_pes"]) for e in entries] == [(100.0, 64), (125.0, 64)]
    assert compute_frontier([result(2, 2, 150, 1, False)]) == []


def test_the_committed_frontier_loads_as_the_allocators_points():
    assert DEFAULT_FRONTIER.is_file()
    frontier = load_frontier()
    assert frontier, "the committed frontier is empty"
    assert all(isinstance(c, float) and isinstance(p, int) for c, p in frontier)
    clocks, pes = [c for c, _ in frontier], [p for _, p in frontier]
    # A frontier file's own rules: ascending clocks, never more PEs at a higher clock.
    assert clocks == sorted(set(clocks))
    assert pes == sorted(pes, reverse=True)
    # The default design (8x8 at 125 MHz) is inside it.
    assert max_pes_at(125.0, frontier) >= 64
    assert read_frontier()["rule"] in ("any_seed", "all_seeds")


GOOD_FRONTIER = {"board": "ulx3s-85f", "rule": "any_seed", "source": "test",
                 "frontier": [{"clock_mhz": 100, "max_pes": 128},
                              {"clock_mhz": 125, "max_pes": 64}]}


@pytest.mark.parametrize("change, field", [
    ({"extra": 1}, "extra: unknown key"),
    ({"rule": "some"}, "rule:"),
    ({"frontier": []}, "frontier: is empty"),
    ({"frontier": [{"clock_mhz": 100}]}, "frontier[0].max_pes: missing"),
    ({"frontier": [{"clock_mhz": 100, "max_pes": "many"}]}, "frontier[0].max_pes: expected"),
    ({"frontier": [{"clock_mhz": 100, "max_pes": 64, "colour": 1}]}, "frontier[0].colour"),
    ({"frontier": [{"clock_mhz": 125, "max_pes": 64}, {"clock_mhz": 100, "max_pes": 128}]},
     "frontier[1].clock_mhz"),
    ({"frontier": [{"clock_mhz": 100, "max_pes": 64}, {"clock_mhz": 125, "max_pes": 128}]},
     "frontier[1].max_pes"),
])
def test_a_malformed_frontier_file_is_one_line_naming_the_field(tmp_path, change, field):
    path = tmp_path / "frontier.yaml"
    path.write_text(yaml.safe_dump(dict(GOOD_FRONTIER, **change)))
    message = one_line_error(lambda: load_frontier(path))
    assert message.startswith(f"{path}: {field}"), message
    path.write_text("frontier: [")
    assert "not valid YAML" in one_line_error(lambda: load_frontier(path))
    assert "does not exist" in one_line_error(lambda: load_frontier(tmp_path / "none.yaml"))


# -- a real sweep on a local Ray instance ----------------------------------------------------

def test_a_tiny_sweep_runs_on_a_local_ray_instance_and_resumes(tmp_path):
    """Two 1xN designs on the 12F through yosys/nextpnr/ecppack, in parallel on Ray."""
    spec = write_spec(tmp_path)
    command = [sys.executable, "-m", "gen", "sweep", "--spec", str(spec), "--out",
               str(tmp_path / "out"), "--cpus", "2"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "building on a local Ray instance (2 CPUs)" in proc.stdout
    folder = tmp_path / "out" / "sweep" / "tiny-sweep"
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert sorted((r["rows"], r["cols"]) for r in results) == [(1, 1), (1, 2)]
    for r in results:
        assert r["status"] == "ok" and r["timing_met"] is True and r["fmax_mhz"] >= 50
        assert r["resources"]["mult18"]["used"] == r["pes"] + 4
        assert Path(r["build_dir"], "top.bit").stat().st_size > 10_000
    for name in ("fmax.png", "resources.png"):
        assert (folder / name).stat().st_size > 1000
    assert load_frontier(folder / "frontier.yaml") == ((50.0, 2),)
    assert "1x2" in (folder / "table.txt").read_text()
    print((folder / "table.txt").read_text())
    # Run again: every point has its result, so Ray is not even started.
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 to build" in again.stdout
    assert "Ray instance" not in again.stdout
