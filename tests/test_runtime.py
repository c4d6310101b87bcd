"""gen.runtime: the controllers on a small synthetic table, the model device (cycle model per
batch, the power model's table), cap traces and `python -m gen serve-sim` end to end (issue 11,
points 4-6; the power model itself: tests/test_power_model.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.__main__ import main
from gen.errors import UserError
from gen.runtime.controllers import BOBD, BatchDVFS, ClipperAIMD, FreqOnly, Oracle
from gen.runtime.device import Device, PeriodReport
from gen.runtime.serve import load_cap_trace, parse_cap_points


class TableDevice(Device):
    """A synthetic device: throughput and power per (level, batch) from a formula, always
    saturated, power read exactly."""

    name = "table"

    def __init__(self, levels=(10.0, 20.0, 30.0, 40.0), max_batch=8):
        super().__init__()
        self._levels, self._max = levels, max_batch
        f = np.array(levels)[:, None]
        b = np.arange(1, max_batch + 1)[None, :]
        self.thr = f * b / (b + 2.0)                   # batching helps, with diminishing returns
        self.pw = 1.0 + 0.1 * f * (1 + b / max_batch)  # more clock, more batch: more power
        self.calls = 0

    levels = property(lambda self: self._levels)
    max_batch = property(lambda self: self._max)
    idle_power_w = property(lambda self: 1.0)

    def table(self):
        return self.thr, self.pw

    def run_period(self, seconds, queue=None):
        self.calls += 1
        thr = self.thr[self.level, self.batch - 1]
        power = self.pw[self.level, self.batch - 1]
        self._last_power = power
        return PeriodReport(0.0, seconds, int(thr * seconds), seconds, 1, 0.001, power, power,
                            self.level, self.batch)


def drive(controller, device, cap, periods):
    level, batch = controller.start(device, cap, 0.05)
    history = []
    for _ in range(periods):
        device.set_level(level)
        device.set_batch(batch)
        report = device.run_period(1.0)
        history.append((level, batch, report.power_w))
        level, batch = controller.step(report, cap)
    return history


def test_batchdvfs_raises_batch_then_level_below_the_cap():
    device = TableDevice()
    history = drive(BatchDVFS(), device, cap=100.0, periods=12)     # far above any power
    batches = [b for _, b, _ in history]
    levels = [lv for lv, _, _ in history]
    assert batches[0] == 1 and levels[0] == 2                        # starts mid-range
    top = batches.index(8)
    assert batches[:top + 1] == sorted(batches[:top + 1])            # binary search upward
    assert levels[:top + 1] == [2] * (top + 1)                       # the level waits for it
    assert levels[-1] == 3                                           # then one step up


def test_batchdvfs_backs_off_above_the_cap():
    device = TableDevice()
    controller = BatchDVFS()
    drive(controller, device, cap=100.0, periods=12)                 # at level 3, batch 8
    history = []
    level, batch = controller.level, controller.cur + 1
    for _ in range(12):
        device.set_level(level)
        device.set_batch(batch)
        report = device.run_period(1.0)
        history.append((level, batch))
        level, batch = controller.step(report, 1.5)                   # below all but the least
    assert history[1][1] < history[0][1]                             # batch first
    assert history[-1] == (0, 1)                                     # then levels, to the floor


def test_batchdvfs_holds_inside_the_band():
    device = TableDevice()
    cap = device.pw[1, 3] / 0.9                                      # (1, batch 4) is in band
    controller = BatchDVFS()
    controller.start(device, cap, 0.05)
    controller.level, controller.cur = 1, 3
    device.set_level(1)
    device.set_batch(4)
    assert controller.step(device.run_period(1.0), cap) == (1, 4)


def test_frequency_only_and_clipper():
    device = TableDevice()
    history = drive(FreqOnly(1), device, cap=100.0, periods=4)
    assert [b for _, b, _ in history] == [1] * 4 and history[-1][0] == 3
    history = drive(FreqOnly("max"), TableDevice(), cap=1.5, periods=4)
    assert {b for _, b, _ in history} == {8} and history[-1][0] == 0
    history = drive(ClipperAIMD(), TableDevice(), cap=100.0, periods=4)
    assert [b for _, b, _ in history] == [1, 5, 8, 8]                 # +4, clamped
    clipper = ClipperAIMD()
    clipper.start(TableDevice(), 100.0, 0.05)
    clipper.batch = 8
    slow = PeriodReport(0, 1, 10, 1, 1, 0.2, 2.0, 2.0, 3, 8)         # batch latency > target
    assert clipper.step(slow, 100.0)[1] == 7                         # -10 %, at least one


@pytest.mark.parametrize("cap", [2.5, 3.5, 5.0, 100.0])
def test_the_oracle_is_the_best_feasible_point(cap):
    device = TableDevice()
    level, batch = Oracle().start(device, cap, 0.05)
    feasible = device.pw <= cap
    best = device.thr[feasible].max()
    assert device.pw[level, batch - 1] <= cap
    assert device.thr[level, batch - 1] == best


def test_bobd_stays_within_its_budget_and_is_deterministic():
    def run(seed):
        device = TableDevice()
        controller = BOBD(evaluations=12, initial=4, seed=seed)
        history = drive(controller, device, cap=4.0, periods=16)
        return controller, history

    a, history_a = run(3)
    b, history_b = run(3)
    assert history_a == history_b                                    # same seed, same probes
    assert a.probes_per_job == [12]
    assert len(a.opt.yi) <= 50
    assert len(set(history_a[12:])) == 1                             # settled after 12
    level, batch, power = history_a[-1]
    assert power <= 4.0
    device = TableDevice()
    assert device.thr[level, batch - 1] >= 0.8 * device.thr[device.pw <= 4.0].max()
    with pytest.raises(UserError, match="1 .. 50"):
        BOBD(evaluations=60)


def test_bobd_settles_when_a_low_cap_spends_its_tells():
    """Under a cap only the lowest point meets, most asks are told a penalty unprobed; when
    the 50 tells run out before the 20 probes, BOBD settles instead of failing."""
    device = TableDevice(levels=tuple(float(f) for f in range(10, 42, 2)), max_batch=16)
    cap = float(device.pw.min()) * 1.01
    history = drive(BOBD(seed=3), device, cap=cap, periods=40)
    assert history[-1][:2] == history[-2][:2]                 # settled
    assert history[-1][2] <= cap


# -- the model device -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from gen.runtime.model_device import ModelDevice
    return ModelDevice()


def test_model_device_table(model):
    assert model.levels[0] == 25.0 and model.levels[-1] == 125.0
    assert model.max_batch == 7                       # fc2 (K=128) fills act_depth at 8 rows
    thr, pw = model.table()
    assert (np.diff(thr, axis=0) > 0).all() and (np.diff(thr, axis=1) > 0).all()
    assert (np.diff(pw, axis=0) > 0).all() and (np.diff(pw, axis=1) > 0).all()
    assert model.idle_power_w == pytest.approx(model.power_model.power_w(25.0))
    assert model.idle_power_w < pw.min()
    with pytest.raises(UserError, match="largest batch that fits is 7"):
        model.set_batch(8)
    with pytest.raises(UserError, match="frequency level 17 does not exist"):
        model.set_level(17)


def test_model_device_batches_are_its_jobs(model):
    """A batch is its jobs: gemm layers with the batch in M, attention per input and head."""
    from gen.cycles import gemm_cycles
    for b in (1, 2, model.max_batch):
        jobs = model.jobs(b)
        assert model.batch_cycles(b) == sum(j["count"] * gemm_cycles(j["m"], j["k"], j["n"],
                                                                     model.rows, model.cols)
                                            for j in jobs)
        fc2 = [j for j in jobs if j["layer"] == "layers.0.fc2"]
        scores = [j for j in jobs if j["layer"] == "layers.0.scores"]
        assert [(j["m"], j["count"]) for j in fc2] == [(17 * b, 1)]
        assert [(j["m"], j["count"]) for j in scores] == [(17, 4 * b)]
    with pytest.raises(UserError, match="batch 8 must be an integer 1 .. 7"):
        model.batch_cycles(8)


def test_levels_the_pll_cannot_make_are_refused():
    from gen.runtime.model_device import ModelDevice
    with pytest.raises(UserError, match="cannot make 33 MHz exactly.*nearest"):
        ModelDevice(levels_mhz=[25, 33])
    with pytest.raises(UserError, match="above the design's clock"):
        ModelDevice(levels_mhz=[150])


# -- cap traces --------------------------------------------------------------------------------------
def test_cap_traces_from_files(tmp_path, model):
    path = tmp_path / "cap.csv"
    path.write_text("time_s,cap_w\n0,0.4\n5,0.3\n")
    trace = load_cap_trace(path)
    assert trace.at(0) == 0.4 and trace.at(4.99) == 0.4 and trace.at(7) == 0.3
    yaml_path = tmp_path / "cap.yaml"
    yaml_path.write_text("- {time_s: 0, cap_w: 0.4}\n- {time_s: 2, cap_w: 0.1}\n")
    low = load_cap_trace(yaml_path)
    with pytest.raises(UserError, match=rf"point 2: cap 0.1 W is below .* minimum cap is "
                                        rf"{model.idle_power_w:.4g} W"):
        low.check_device(model)


point = st.one_of(st.tuples(st.one_of(st.floats(allow_nan=True), st.integers(), st.text(),
                                      st.none(), st.booleans()),
                            st.one_of(st.floats(allow_nan=True), st.integers(), st.text(),
                                      st.none())),
                  st.dictionaries(st.text(max_size=6), st.floats(), max_size=3),
                  st.text(max_size=5), st.integers())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(point, max_size=6), st.text(max_size=10), st.none(),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)))
def test_malformed_cap_traces_give_one_line_errors(points):
    try:
        trace = parse_cap_points(points)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert trace.times_s[0] == 0 and all(np.diff(trace.times_s) > 0)
    assert all(0 < c for c in trace.caps_w)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_malformed_cap_trace_files_give_one_line_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("t") / "cap.csv"
    path.write_text(text, encoding="utf-8")
    try:
        load_cap_trace(path)
    except UserError as exc:
        assert "\n" not in str(exc)


# -- python -m gen serve-sim ---------------------------------------------------------------------------
def test_serve_sim_end_to_end(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    config.write_text("duration_s: 4\nperiod_s: 0.1\nlatency_target_ms: 20\n"
                      "arrivals: {kind: bursts, rate_rps: 1500, burst_rps: 6000, burst_s: 0.5, "
                      "every_s: 1.5}\ncontrollers: [batchdvfs, bobd, freq_b1, oracle]\n")
    trace = tmp_path / "cap.csv"
    trace.write_text("time_s,cap_w\n0,0.38\n2,0.31\n")
    out = tmp_path / "out"
    assert main(["serve-sim", "--config", str(config), "--cap-trace", str(trace),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "WHAT-IF model device" in text and "oracle" in text and "vs oracle" in text
    for name in ("summary.json", "summary.txt", "batchdvfs.png", "bobd.png", "all.png"):
        assert (out / name).is_file()


def test_serve_sim_bad_input_exits_2(tmp_path, capsys):
    trace = tmp_path / "cap.csv"
    trace.write_text("time_s,cap_w\n0,0.05\n")
    assert main(["serve-sim", "--cap-trace", str(trace), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "below the design's idle power" in err and err.count("\n") == 1
    trace.write_text("time_s,cap_w\n1,0.3\n")
    assert main(["serve-sim", "--cap-trace", str(trace), "--out", str(tmp_path / "o")]) == 2
    assert "first time_s must be 0" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text("levels_mhz: [25, 33]\n")
    assert main(["serve-sim", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "cannot make 33 MHz" in capsys.readouterr().err


# -- the GPU backend ---------------------------------------------------------------------------------
def test_gpu_backend_reads_power_and_batches():
    from gen.runtime.gpu_device import GpuDevice, gpu_unavailable_reason
    reason = gpu_unavailable_reason()
    if reason:
        with pytest.raises(UserError, match="GPU|NVML|nvidia-ml-py"):
            GpuDevice()
        pytest.skip(reason)
    device = GpuDevice(max_batch=32)
    assert device.levels == (0.0,)
    with pytest.raises(UserError, match="leaves the GPU's clocks"):
        device.set_level(1)
    device.set_batch(32)
    report = device.run_period(0.5)
    assert report.served > 0 and report.power_read_w > 0
