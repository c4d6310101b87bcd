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


#: BatchDVFS with none of this project's refinements: the paper's rule on the dynamic band.
PAPER_RULE = dict(hold_low=0.8, margin_z=0, window=1, level_steps="one", ceiling=False)


def test_batchdvfs_raises_batch_then_level_below_the_cap():
    device = TableDevice()
    history = drive(BatchDVFS(**PAPER_RULE), device, cap=100.0, periods=12)  # far above all
    batches = [b for _, b, _ in history]
    levels = [lv for lv, _, _ in history]
    assert batches[0] == 1 and levels[0] == 2                        # starts mid-range
    top = batches.index(8)
    assert batches[:top + 1] == sorted(batches[:top + 1])            # binary search upward
    assert levels[:top + 1] == [2] * (top + 1)                       # the level waits for it
    assert levels[-1] == 3                                           # then one step up


def test_batchdvfs_backs_off_above_the_cap():
    device = TableDevice()
    controller = BatchDVFS(**PAPER_RULE)
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
    controller = BatchDVFS(**PAPER_RULE)
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


def test_batchdvfs_hold_band_is_relative_to_the_idle_power():
    """The adaptation: the band's low edge is idle + 0.8 (cap - idle); the paper's literal
    0.8 cap (band="total") holds at a point far below the cap when the idle power is large."""
    device = TableDevice()                                            # idle 1.0
    adapted, paper = BatchDVFS(hold_low=0.8), BatchDVFS(band="total", hold_low=0.8)
    for controller in (adapted, paper):
        controller.start(device, 2.5, 0.05)
    assert adapted.band_low(2.5) == pytest.approx(1.0 + 0.8 * 1.5)
    assert paper.band_low(2.5) == pytest.approx(2.0) and paper.name == "batchdvfs_paper"
    cap = device.pw[2, 0] / 0.81          # the start (level 2, batch 1) is in the paper's band only
    held = drive(BatchDVFS(band="total", **PAPER_RULE), device, cap, periods=6)
    moved = drive(BatchDVFS(**PAPER_RULE), TableDevice(), cap, periods=6)
    assert {(lv, b) for lv, b, _ in held[1:]} == {(2, 1)}             # holds where it starts
    assert len({(lv, b) for lv, b, _ in moved}) > 1
    with pytest.raises(UserError, match="band"):
        BatchDVFS(band="gpu")


def test_batchdvfs_paper_is_the_literal_rule_and_parameters_are_checked():
    from gen.runtime.controllers import make_controller
    paper = make_controller("batchdvfs_paper")
    assert (paper.band, paper.hold_low, paper.margin_z, paper.window, paper.level_steps,
            paper.ceiling) == ("total", 0.8, 0, 1, "one", False)
    default = make_controller("batchdvfs")
    assert (default.band, default.hold_low, default.margin_z, default.window,
            default.level_steps, default.ceiling) == ("dynamic", 0.9, 2.0, 8, "scaled", True)
    for field, value in (("hold_low", 1.5), ("hold_low", "0.9"), ("margin_z", -1),
                         ("margin_z", True), ("window", 0), ("window", 2.5),
                         ("level_steps", "two"), ("ceiling", "yes"), ("noise_rel", 1.0)):
        with pytest.raises(UserError, match=rf"^batchdvfs: {field} ") as info:
            BatchDVFS(**{field: value})
        assert "\n" not in str(info.value)


def test_batchdvfs_guard_holds_below_the_cap_by_the_reading_noise():
    """margin_z: a reading within margin_z sigma of the cap counts as above it (the search
    backs off); the paper's rule holds there. sigma is measured once readings repeat."""
    device = TableDevice()
    cap = device.pw[1, 3] * 1.005                    # (1, batch 4) 0.5 % below the cap
    for margin_z, moved in ((0, False), (1, True)):
        controller = BatchDVFS(hold_low=0.5, margin_z=margin_z, window=1, level_steps="one",
                               ceiling=False)
        controller.start(device, cap, 0.05)
        controller.level, controller.cur = 1, 3
        device.set_level(1)
        device.set_batch(4)
        assert (controller.step(device.run_period(1.0), cap) != (1, 4)) == moved
    controller = BatchDVFS()
    drive(controller, TableDevice(), cap=100.0, periods=30)          # exact readings repeat
    assert controller.sigma() == 0.0 and controller.guard(5.0) == 5.0
    assert BatchDVFS(noise_rel=0.02, margin_z=2).noise_rel == 0.02


def test_batchdvfs_scaled_level_steps_follow_a_cap_drop_at_once():
    """level_steps="scaled": on a cap drop the level goes straight to where the first-order
    estimate fits the cap, the batch kept; the paper's rule searches the batch down first."""
    def after_drop(**kwargs):
        device = TableDevice(levels=(10.0, 20.0, 30.0, 40.0, 50.0, 60.0), max_batch=8)
        controller = BatchDVFS(hold_low=0.5, margin_z=0, window=1, **kwargs)
        controller.start(device, 100.0, 0.05)
        controller.level, controller.cur = 5, 7                      # 60 MHz, batch 8: 10.0 W
        device.set_level(5)
        device.set_batch(8)
        return device, controller.step(device.run_period(1.0), 5.0)

    device, (level, batch) = after_drop(level_steps="scaled", ceiling=True)
    assert batch == 8 and level < 4 and device.pw[level, 7] <= 5.0   # several levels, one period
    _, (level, batch) = after_drop(level_steps="one", ceiling=False)
    assert level == 5 and batch < 8                                  # the paper: batch first


def test_batchdvfs_ceiling_undoes_an_overshooting_raise_and_remembers_it():
    def run(ceiling):
        device = TableDevice(levels=(10.0, 20.0, 30.0), max_batch=2)   # starts at 20 MHz
        # 20 MHz batch 2 draws 5.0 W, below the band; 30 MHz batch 2 7.0 W, above the cap
        return drive(BatchDVFS(hold_low=0.99, margin_z=0, window=1, level_steps="one",
                               ceiling=ceiling), device, cap=6.0, periods=30)

    history = run(True)
    over = [i for i, (_, _, p) in enumerate(history) if p > 6.0]
    assert len(over) == 1 and history[over[0]][:2] == (2, 2)        # tried once, then not
    assert history[over[0] + 1][:2] == (1, 2)                        # undone, the batch kept
    assert set(history[over[0] + 1:]) == {history[-1]}
    paper = run(False)
    assert sum(p > 6.0 for _, _, p in paper) > 5                     # the paper's rule cycles


def test_bobd_stays_within_its_budget_and_is_deterministic():
    def run(seed):
        device = TableDevice()
        controller = BOBD(evaluations=12, initial=4, seed=seed)
        history = drive(controller, device, cap=4.0, periods=16)
        return controller, history

    a, history_a = run(3)
    _, history_b = run(3)
    assert history_a == history_b                                    # same seed, same probes
    probes = a.probes_per_job[0]
    assert len(a.probes_per_job) == 1 and 1 <= probes <= 12
    assert len(a.opt.yi) <= 50
    assert len(set(history_a[probes:])) == 1                         # settled after its probes
    level, batch, power = history_a[-1]
    assert power <= 4.0
    device = TableDevice()
    assert device.thr[level, batch - 1] >= 0.8 * device.thr[device.pw <= 4.0].max()
    with pytest.raises(UserError, match="1 .. 50"):
        BOBD(evaluations=60)


def test_bobd_settles_when_a_low_cap_spends_its_tells():
    """Under a cap only the lowest point meets, BOBD settles on a point within the cap."""
    device = TableDevice(levels=tuple(float(f) for f in range(10, 42, 2)), max_batch=16)
    cap = float(device.pw.min()) * 1.01
    history = drive(BOBD(seed=3), device, cap=cap, periods=40)
    assert history[-1][:2] == history[-2][:2]                 # settled
    assert history[-1][2] <= cap


def drive_caps(controller, device, caps, periods):
    """``drive`` over a cap trace: ``caps`` is a list of (first period, cap)."""
    def cap_at(i):
        return [c for start, c in caps if start <= i][-1]
    level, batch = controller.start(device, cap_at(0), 0.05)
    history = []
    for i in range(periods):
        device.set_level(level)
        device.set_batch(batch)
        report = device.run_period(1.0)
        history.append((level, batch, report.power_w, cap_at(i)))
        level, batch = controller.step(report, cap_at(i + 1))
    return history


def test_bobd_warm_starts_within_a_lower_cap():
    """After a cap step down, the new job's first probe is a point that meets the new cap (the
    earlier job's readings, the power model), and it settles near the new best in few probes."""
    device = TableDevice(levels=tuple(float(f) for f in range(10, 42, 2)), max_batch=8)
    controller = BOBD(seed=1)
    history = drive_caps(controller, device, [(0, 5.0), (25, 4.0)], periods=50)
    level, batch, power, cap = history[25]                          # the first period at 4.0
    assert cap == 4.0 and power <= 4.0
    assert sum(p > c for _, _, p, c in history) <= 2                 # probes above the cap
    assert len(controller.probes_per_job) == 2 and max(controller.probes_per_job) <= 20
    level, batch, power, _ = history[-1]
    best = device.thr[device.pw <= 4.0].max()
    assert power <= 4.0 and device.thr[level, batch - 1] >= 0.9 * best


def test_bobd_judges_the_cap_at_full_load():
    """A reading at part load says little about the power when the queue fills: a point read
    only at part load meets the cap only through the power model's full-load prediction."""
    device = TableDevice()
    controller = BOBD(seed=0)
    controller.start(device, 3.0, 0.05)
    part = PeriodReport(0.0, 1.0, 10, 0.3, 1, 0.01, 2.0, 2.0, 3, 8)   # busy 30 %: 2.0 W
    controller.step(part, 3.0)
    assert controller._full((3, 8)) == (None, 0)
    assert not controller._meets((3, 8), 3.0, 0.01)                  # no model yet
    full = PeriodReport(0.0, 1.0, 10, 1.0, 1, 0.01, 2.0, 2.0, 0, 1)
    controller.step(full, 3.0)
    assert controller._full((0, 1)) == (2.0, 1) and controller._meets((0, 1), 3.0, 0.01)


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
    with pytest.raises(UserError, match="frequency level 25 does not exist"):
        model.set_level(25)


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
    with pytest.raises(UserError, match=r"levels_mhz: the clock select cannot make 33 MHz: .*"
                                        r"output divider of the design's 750 MHz VCO.*nearest: "
                                        r"32.608696 \(/23\) or 34.090909 \(/22\) MHz"):
        ModelDevice(levels_mhz=[25, 33])
    with pytest.raises(UserError, match="above the design's clock"):
        ModelDevice(levels_mhz=[150])


def test_default_levels_are_the_dividers_of_the_one_vco(model):
    """Every default level is VCO / n of the design's PLL (what a clock select can switch to
    without a relock), from the oscillator's 25 MHz to the design's 125 MHz."""
    from gen.runtime.model_device import check_levels, design_pll
    assert model.vco_mhz == 750.0 == design_pll(model.config).vco_mhz
    assert model.levels == tuple(750 / n for n in range(30, 5, -1))
    grid = (25, 31.25, 37.5, 50, 62.5, 75, 93.75, 125)          # the old 6.25 MHz grid's share
    assert set(grid) <= set(model.levels)
    assert check_levels(list(grid), 750.0, 125.0) == tuple(map(float, grid))
    assert check_levels([68.181818], 750.0, 125.0) == (750 / 11,)   # as `gen check` prints it
    for bad in (43.75, 118.75, 56.25):                          # old grid levels, no divider
        with pytest.raises(UserError, match="cannot make"):
            check_levels([25, bad], 750.0, 125.0)
    with pytest.raises(UserError, match="given twice"):
        check_levels([25, 25.0], 750.0, 125.0)


_DIVIDERS = {750 / n for n in range(6, 129)}                      # 125 .. 5.86 MHz


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 140).map(lambda n: 750 / n),
                          st.floats(0.5, 200, allow_nan=False),
                          st.integers(1, 200)), min_size=1, max_size=6))
def test_levels_are_refused_or_accepted_by_the_divider_rule(levels):
    from gen.runtime.model_device import check_levels
    makeable = all(any(abs(mhz - d) <= mhz * 1e-6 for d in _DIVIDERS) for mhz in levels)
    try:
        got = check_levels(levels, 750.0, 125.0)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("levels_mhz: ")
        assert not makeable or "given twice" in message
        return
    assert makeable and len(got) == len(levels) and list(got) == sorted(got)
    assert all(mhz == 750 / round(750 / mhz) for mhz in got)       # stored exactly VCO / n


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
