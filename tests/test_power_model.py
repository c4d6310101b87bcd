"""gen.runtime.power_model: the formula, its constants' sources, the measured activity file, the
model device's use of it, and one-line errors for bad input (issue 11, point 3)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.errors import UserError
from gen.runtime.power_model import (ACTIVITY_CLASSES, CONSTANTS, RESOURCE_CLASSES, Activity,
                                     PowerModel, check_resources, load_activity)

RESOURCES = {"lut4": 1000, "ff": 2000, "mult18": 10, "bram18k": 4}
LEVELS = (25.0, 50.0, 100.0)


def synthetic_activity():
    busy = {1: {"lut": 0.1, "ff": 0.2, "mult": 0.3, "bram": 1.0},
            3: {"lut": 0.2, "ff": 0.4, "mult": 0.5, "bram": 1.0}}
    idle = {"lut": 0.0, "ff": 0.01, "mult": 0.0, "bram": 0.5}
    return Activity(busy, idle)


def test_the_formula_term_by_term():
    model = PowerModel(RESOURCES, LEVELS, synthetic_activity(), bram_reads_share=0.5)
    k = {name: c.value for name, c in CONSTANTS.items()}
    f = 50.0
    parts = model.breakdown_w(f, 1)
    assert parts["static"] == k["p_static_w"]
    assert parts["lut4"] == pytest.approx(f * 1e-6 * 1000 * 0.1 * k["e_lut4_pj"])
    assert parts["ff"] == pytest.approx(f * 1e-6 * 2000 * 0.2 * k["e_ff_pj"])
    assert parts["mult18"] == pytest.approx(f * 1e-6 * 10 * 0.3 * k["e_mult18_pj"])
    assert parts["bram18k"] == pytest.approx(f * 1e-6 * 4 * 0.5 * 1.0 * k["e_bram18k_pj"])
    assert parts["clock"] == pytest.approx(f * 1e-6 * 2000 * k["e_clock_pj_per_ff"])
    assert model.power_w(f, 1) == pytest.approx(sum(parts.values()))
    # Batch 2 lies halfway between the measured 1 and 3; beyond 3 it is batch 3's.
    half = model.breakdown_w(f, 2)
    assert half["lut4"] == pytest.approx(f * 1e-6 * 1000 * 0.15 * k["e_lut4_pj"])
    assert model.power_w(f, 9) == model.power_w(f, 3)
    idle = model.breakdown_w(f)
    assert idle["lut4"] == 0 and idle["bram18k"] == pytest.approx(f * 1e-6 * 4 * 0.5 * 0.5 *
                                                                    k["e_bram18k_pj"])


def test_power_grows_with_frequency_and_activity():
    model = PowerModel(RESOURCES, LEVELS, synthetic_activity())
    table = model.table([1, 2, 3])
    assert table.shape == (3, 3)
    assert (np.diff(table, axis=0) > 0).all() and (np.diff(table, axis=1) > 0).all()
    assert all(model.power_w(f) < model.power_w(f, 1) for f in LEVELS)
    empty = PowerModel({c: 0 for c in RESOURCE_CLASSES}, LEVELS, synthetic_activity())
    assert empty.power_w(100.0, 3) == CONSTANTS["p_static_w"].value


def test_every_constant_states_its_source():
    for name, c in CONSTANTS.items():
        assert c.source and c.unit and math.isfinite(c.value) and c.value > 0, name
        if c.assumption:
            assert c.source.startswith("assumption"), name
        else:
            assert "http" in c.source, name          # a published figure, with its address
    model = PowerModel(RESOURCES, LEVELS, synthetic_activity())
    assert model.assumptions and model.label.startswith("WHAT-IF")


def test_the_measured_activity_file():
    from gen.runtime.model_device import ModelDevice
    activity = load_activity()
    device = ModelDevice()
    assert activity.batches[0] == 1 and activity.measured(device.max_batch)
    assert activity.design["rows"] == device.rows and activity.design["cols"] == device.cols
    idle = activity.at(None)
    for b in activity.batches:
        rates = activity.at(b)
        assert set(rates) == set(ACTIVITY_CLASSES.values())
        for cls in ("lut", "ff", "mult"):
            assert 0 < rates[cls] < 1 and idle[cls] < rates[cls], (b, cls)
    raw = json.loads(Path(activity.source).read_text())
    assert raw["command"] == "python -m verif.measure_activity"
    # Each batch's measured cycles are the cycle model's.
    for b, row in raw["batches"].items():
        assert row["cycles"] == device.batch_cycles(int(b))


def test_the_model_device_uses_the_power_model():
    from gen.runtime.model_device import ModelDevice
    device = ModelDevice()
    model = device.power_model
    assert model.resource_source == "gen.estimate"
    _, power = device.table()
    assert power[-1, -1] == pytest.approx(model.power_w(device.levels[-1], device.max_batch))
    assert device.idle_power_w == pytest.approx(model.power_w(device.levels[0]))
    assert "WHAT-IF" in device.power_label
    hotter = ModelDevice(power={"e_mult18_pj": 2 * CONSTANTS["e_mult18_pj"].value})
    assert hotter.table()[1][-1, -1] > power[-1, -1]
    assert hotter.idle_power_w == pytest.approx(device.idle_power_w)   # no operands toggle
    with pytest.raises(UserError, match="unknown constant 'c1_w_per_mhz'"):
        ModelDevice(power={"c1_w_per_mhz": 0.003})


def test_resources_from_a_build_report(tmp_path):
    from gen.config import load_config
    report = {"resources": {"lut4": {"used": 9752}, "ff": {"used": 11676},
                            "mult18": {"used": 68}, "bram18k": {"used": 26}}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    model = PowerModel.for_design(load_config(None), LEVELS, synthetic_activity(), report=path)
    assert model.resources == {"lut4": 9752, "ff": 11676, "mult18": 68, "bram18k": 26}
    assert model.resource_source == "build report"
    assert model.bram_reads_share == pytest.approx(16 / 26)     # the operand buffers
    path.write_text("{}")
    with pytest.raises(UserError, match="has no resources"):
        PowerModel.for_design(load_config(None), LEVELS, synthetic_activity(), report=path)


# -- bad input: one clear line -----------------------------------------------------------------
def one_line(call):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


junk = st.one_of(st.integers(-10 ** 6, -1), st.floats(allow_nan=True), st.text(max_size=4),
                 st.none(), st.booleans(), st.lists(st.integers(), max_size=2))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(RESOURCE_CLASSES), junk)
def test_bad_resource_counts(cls, value):
    resources = dict(RESOURCES, **{cls: value})
    message = one_line(lambda: PowerModel(resources, LEVELS, synthetic_activity()))
    assert cls in message


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=8).filter(lambda s: s not in RESOURCE_CLASSES))
def test_unknown_resource_class(name):
    message = one_line(lambda: check_resources(dict(RESOURCES, **{name: 1})))
    assert "unknown resource class" in message


def test_missing_resource_class():
    assert "bram18k: missing" in one_line(
        lambda: check_resources({k: 1 for k in RESOURCE_CLASSES[:-1]}))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1000, 1000),
                 st.text(max_size=4), st.none()))
def test_frequency_not_a_level(mhz):
    model = PowerModel(RESOURCES, LEVELS, synthetic_activity())
    if isinstance(mhz, (int, float)) and not isinstance(mhz, bool) and mhz in LEVELS:
        assert model.power_w(mhz) > 0
        return
    message = one_line(lambda: model.power_w(mhz))
    assert "frequency" in message


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3),
                 st.booleans()))
def test_bad_batch(batch):
    model = PowerModel(RESOURCES, LEVELS, synthetic_activity())
    assert "batch" in one_line(lambda: model.power_w(50.0, batch))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12), junk)
def test_bad_constants(name, value):
    build = lambda: PowerModel(RESOURCES, LEVELS, synthetic_activity(), constants={name: value})
    if name in CONSTANTS and is_number(value) and value >= 0:
        assert build().constants[name] == value
        return
    message = one_line(build)
    assert ("unknown constant" in message) if name not in CONSTANTS else (name in message)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.lists(junk, max_size=3), st.just([]), st.just([0.0]), st.just("125")))
def test_bad_levels(levels):
    build = lambda: PowerModel(RESOURCES, levels, synthetic_activity())
    if isinstance(levels, list) and levels and all(is_number(f) and f > 0 for f in levels):
        assert build().levels_mhz == tuple(sorted(set(map(float, levels))))
        return
    one_line(build)


activity_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 5),
                           st.text(max_size=3), st.none(), st.dictionaries(
                               st.sampled_from(["lut", "ff", "mult", "bram", "x"]),
                               st.floats(-1, 3), max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.dictionaries(st.text(max_size=3), activity_value, max_size=3),
                 st.lists(st.integers(), max_size=2), st.text(max_size=10), st.none()))
def test_malformed_activity_files(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("a") / "activity.json"
    raw = {"batches": content, "idle": {"lut": 0, "ff": 0, "mult": 0},
           "bram_reads_per_cycle": {"busy": 1.0, "idle": 1.0}}
    path.write_text(json.dumps(raw))
    try:
        activity = load_activity(path)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    for b in activity.batches:
        assert all(0 <= v <= 2 for v in activity.at(b).values())


def test_unreadable_activity_file(tmp_path):
    assert "no activity file" in one_line(lambda: load_activity(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{not json")
    assert "not a readable activity file" in one_line(lambda: load_activity(tmp_path /
                                                                            "bad.json"))
