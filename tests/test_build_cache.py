"""A build never lies: cached builds are reused only when intact, failures are one line,
concurrent builds of one design do not collide (the tools are faked, except where named)."""

import json
import threading
import time

import pytest
import yaml

import flows.ecp5
from flows.ecp5 import FlowError, FlowResult
from gen.__main__ import EXIT_TOOL_FAILED, main
from gen.config import DEFAULT_CONFIG

# The fake flows never elaborate the board top they are handed.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

FMAX = {"$glbnet$clk": {"achieved_mhz": 80.0, "constraint_mhz": 50.0, "met": True},
        "$glbnet$host_clk": {"achieved_mhz": 90.0, "constraint_mhz": 25.0, "met": True}}


def small_config(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="cachetest", board="ulx3s-12f", clock_mhz=50)
    raw["array"].update(rows=2, cols=2)
    raw["buffers"].update(act_depth=256, wgt_depth=256, param_depth=16, out_depth=1024)
    raw["host"]["baud"] = 115200
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class FakeFlow:
    """Stands in for yosys/nextpnr/ecppack: writes a bitstream, or fails half-way."""

    def __init__(self, fail=False, delay=0.0):
        self.calls, self.fail, self.delay, self.active, self.overlap = 0, fail, delay, 0, False

    def __call__(self, top, board, build_dir, *, seed=1, progress=print):
        self.calls += 1
        self.active += 1
        self.overlap |= self.active > 1
        try:
            build_dir.mkdir(parents=True, exist_ok=True)
            (build_dir / "top.bit").write_bytes(b"\xff\x00partial")
            time.sleep(self.delay)
            if self.fail:
                (build_dir / "ecppack.log").write_text("ERROR: out of disk\n")
                raise FlowError(f"ecppack failed (exit 1) after 0s: ERROR: out of disk; "
                                f"log: {build_dir / 'ecppack.log'}")
            (build_dir / "top.bit").write_bytes(b"\xff\x00" + bytes(range(256)) * 64)
            return FlowResult(build_dir=build_dir, bitstream=build_dir / "top.bit", fmax=FMAX,
                              utilization={"TRELLIS_COMB": {"used": 3000, "available": 24288}},
                              seconds={"synth": 1.0})
        finally:
            self.active -= 1


def build(tmp_path, *extra):
    config = tmp_path / "small.yaml"
    if not config.exists():        # written once: concurrent builds must not race on it
        small_config(tmp_path)
    return main(["build", "--config", str(config), "--out", str(tmp_path / "out"), *extra])


def folder_of(tmp_path):
    (folder,) = (tmp_path / "out").iterdir()
    return folder


def test_a_cached_build_is_reused_only_while_intact(tmp_path, monkeypatch, capsys):
    fake = FakeFlow()
    monkeypatch.setattr(flows.ecp5, "run_flow", fake)
    assert build(tmp_path) == 0 and fake.calls == 1
    folder = folder_of(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    assert len(report["bitstream_sha256"]) == 64 and report["bitstream_bytes"] > 1000
    assert build(tmp_path) == 0 and fake.calls == 1                 # intact: reused
    assert "was built before" in capsys.readouterr().out
    bitstream = folder / "build" / "top.bit"
    bitstream.write_bytes(bitstream.read_bytes()[:100])            # a short bitstream
    assert build(tmp_path) == 0 and fake.calls == 2
    bitstream.write_bytes(bitstream.read_bytes()[:-1] + b"\x01")   # same size, other bytes
    assert build(tmp_path) == 0 and fake.calls == 3
    (folder / "report.json").write_text('{"design": "cachetest", "fmax": ')   # truncated
    assert build(tmp_path) == 0 and fake.calls == 4
    assert build(tmp_path, "--seed", "7") == 0 and fake.calls == 5  # another seed
    (folder / "report.json").write_text("\x00 not json")
    assert build(tmp_path, "--force") == 0 and fake.calls == 6      # --force never reads it
    assert not list(folder.glob(".tmp-*")) and not list(folder.glob("build.*"))


def test_a_failed_tool_is_one_line_and_leaves_no_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(flows.ecp5, "run_flow", FakeFlow(fail=True))
    assert build(tmp_path) == EXIT_TOOL_FAILED
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ecppack failed" in err and "log: " in err
    folder = folder_of(tmp_path)
    assert not (folder / "report.json").exists() and not (folder / "build").exists()
    fake = FakeFlow()
    monkeypatch.setattr(flows.ecp5, "run_flow", fake)
    assert build(tmp_path) == 0 and fake.calls == 1                 # the partial one is no result
    assert not list(folder.glob("build.partial-*"))


def test_an_interrupted_build_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(flows.ecp5, "run_flow", interrupted)
    assert build(tmp_path) == 130
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert not (folder_of(tmp_path) / "report.json").exists()


def test_two_builds_of_one_design_do_not_overlap(tmp_path, monkeypatch):
    fake = FakeFlow(delay=0.5)
    monkeypatch.setattr(flows.ecp5, "run_flow", fake)
    small_config(tmp_path)
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(build(tmp_path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert codes == [0, 0]
    assert not fake.overlap and fake.calls == 1       # the second found the first's result


def test_a_missing_tool_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-such-yosys"))
    assert build(tmp_path) == EXIT_TOOL_FAILED
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot run" in err and "no-such-yosys" in err
