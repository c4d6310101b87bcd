"""The ViT design's config and ``gen infer``'s inputs: bad input gets one line naming the
field, checked before any long work (no model is trained for a config that cannot work)."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.config import load_config
from gen.errors import UserError
from gen.vit.cli import load_images
from gen.vit.config import ViTConfig, parse_vit_config

GOOD = yaml.safe_load(open("gen/configs/vit-digits.yaml"))


def _parse(raw):
    return parse_vit_config(raw, source="vit.yaml")


def test_shipped_config_parses():
    config = load_config("gen/configs/vit-digits.yaml")
    assert isinstance(config, ViTConfig)
    assert config.lanes == 8 and config.model.activation == "gelu" and config.model.pruned


@pytest.mark.parametrize("path,value,match", [
    (("vit", "lanes"), 1, r"vit.lanes: 1 is outside \[2, 64\]"),
    (("vit", "lanes"), "8", "vit.lanes: expected int"),
    (("vit", "model", "activation"), "tanh", "vit.model.activation: 'tanh' is not known"),
    (("vit", "model", "pruned"), "yes", "vit.model.pruned: expected bool"),
    (("vit", "model", "recipe"), "slow", "vit.model.recipe: 'slow' is not known"),
    (("vit", "images_in_flight"), 0, "vit.images_in_flight: 0 is outside"),
    (("host", "baud"), 10, "host.baud: 10 is outside"),
    (("name",), "9bad", "name: '9bad' must start with a letter"),
])
def test_bad_fields_are_named(path, value, match):
    raw = copy.deepcopy(GOOD)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(UserError, match=match) as info:
        _parse(raw)
    assert str(info.value).startswith("vit.yaml: ") and "\n" not in str(info.value)


def test_unknown_key_gets_a_suggestion():
    raw = copy.deepcopy(GOOD)
    raw["vit"]["lane"] = raw["vit"].pop("lanes")
    with pytest.raises(UserError, match="vit.lane: unknown key .*did you mean 'lanes'"):
        _parse(raw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["vit", "host"]), key=st.text(min_size=1, max_size=12),
       value=st.one_of(st.integers(-10 ** 9, 10 ** 9), st.floats(allow_nan=True),
                       st.text(max_size=8), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=3)))
def test_generated_bad_values_get_one_line(section, key, value):
    """Any key of a section set to any value: parsed, or refused with one UserError line."""
    raw = copy.deepcopy(GOOD)
    raw[section][key] = value
    try:
        _parse(raw)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("vit.yaml: ")


def test_deadlocking_fifo_is_refused_before_the_model(tmp_path):
    raw = copy.deepcopy(GOOD)
    raw["vit"]["fifo_depth"] = 100
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "gen", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "vit.fifo_depth: 100 can deadlock with 2 images in flight" in out.stderr
    assert "[model]" not in out.stdout and "Traceback" not in out.stderr
    raw["vit"].update(fifo_depth=17 * 64, images_in_flight=3)     # deadlock-free, but stalls
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "gen", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "vit.fifo_depth: 1088 can stall an engine with 3 images in flight" in out.stderr
    assert "use fifo_depth >= 2176" in out.stderr and "[model]" not in out.stdout


@pytest.mark.parametrize("spec,match", [
    ("digits[5:2]", "give a range inside 0..360"), ("digits[:9999]", "range inside"),
    ("mnist[:3]", "give digits"), ("missing.npy", "no such file"),
])
def test_bad_image_specs(spec, match):
    with pytest.raises(UserError, match=match):
        load_images(spec)


def test_image_files(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((3, 8, 8), dtype=np.int64))
    pixels, labels = load_images(str(good))
    assert pixels.shape == (3, 8, 8) and labels is None
    for name, array, match in (("shape.npy", np.zeros((3, 8, 7), np.int64), "shape"),
                               ("range.npy", np.full((1, 8, 8), 17), "0..16"),
                               ("float.npy", np.zeros((1, 8, 8)) + 0.5, "0..16")):
        np.save(tmp_path / name, array)
        with pytest.raises(UserError, match=match):
            load_images(str(tmp_path / name))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="not a .npy array"):
        load_images(str(tmp_path / "junk.npy"))
    pixels, labels = load_images("digits[:4]")
    assert pixels.shape == (4, 8, 8) and len(labels) == 4


def _gen(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gen", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_infer_refuses_bad_input_in_one_line_before_any_work():
    for args, match in (
            (["--images", "digits[:0]"], "give a range inside 0..360"),
            (["--images", "pictures/*.png"], "give digits[:N], digits[A:B] or a .npy file"),
            (["--config", "gen/configs/default.yaml"], "not a ViT config"),
            (["--model", "no/such/model.npz"], "no such integer ViT file")):
        out = _gen("infer", *args)
        assert out.returncode == 2, out.stderr
        assert match in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert "[model]" not in out.stdout and "Traceback" not in out.stderr


def test_model_file_that_does_not_fit_the_design_is_refused(tmp_path):
    from gen.config import load_config
    from gen.design import prepare_design
    from gen.vit.cli import load_model_for
    from gen.vit.model import IntViT
    build = prepare_design(load_config("gen/configs/vit-digits.yaml"), progress=lambda m: None)
    arrays = build.model.arrays()
    # Denser weights than the design was generated for: more words than the engines hold.
    arrays["layers"][0]["fc1"]["w"] = np.where(arrays["layers"][0]["fc1"]["w"] == 0, 1,
                                               arrays["layers"][0]["fc1"]["w"]).astype(np.int8)
    other = IntViT(arrays, build.model.activation, build.model.model_sha256)
    path = tmp_path / "dense.npz"
    other.save(path)
    with pytest.raises(UserError, match=r"--model .*matrix fc1 keeps \d+ weight words, the "
                                        r"kernel holds \d+"):
        load_model_for(build, str(path))
    assert load_model_for(build, None) is build.model


def test_lanes_auto_runs_the_balance_search():
    from gen.design import prepare_design
    raw = copy.deepcopy(GOOD)
    raw["vit"]["lanes"] = raw["vit"]["nmp_lanes"] = "auto"
    config = _parse(raw)
    assert config.lanes == "auto"
    build = prepare_design(config, progress=lambda message: None)
    # The throughput analysis's choice for the digits model (benchmarks/bench_vit_scaling.py).
    assert (build.config.lanes, build.config.nmp_lanes) == (32, 16)
    assert build.vit.lanes_of("nsa") == 32 and build.vit.lanes_of("nmp") == 16
    assert build.estimate.mult18 <= build.board.budget.mult18
    raw["vit"]["nmp_lanes"] = 4
    with pytest.raises(UserError, match="vit.nmp_lanes: auto only with vit.lanes: auto"):
        _parse(raw)


def test_infer_quotes_a_built_fmax_only_for_todays_verilog(tmp_path):
    """`gen infer` prices images/s at the built Fmax only when report.json is of the Verilog
    generated today; a stale report falls back to the configured clock, and says so."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from gen.artifacts import build_fingerprint
    from gen.vit.cli import _fmax

    def generate(folder, progress=None):
        folder = Path(folder)
        (folder / "top.v").write_text("module top; endmodule\n")
        (folder / "manifest.json").write_text("{}\n")
        return folder

    build = SimpleNamespace(clock_mhz=100.0, generate=generate)
    built = tmp_path / "built"
    built.mkdir()
    assert _fmax(build, built) == (100.0, "configured clock: no bitstream built yet")
    today = tmp_path / "today"
    today.mkdir()
    report = {"fmax_by_domain": {"sync": {"achieved_mhz": 101.5}}, "timing_met": True,
              "fingerprint": build_fingerprint(generate(today))}
    (built / "report.json").write_text(json.dumps(report))
    assert _fmax(build, built) == (101.5, "built Fmax, timing met")
    report["fingerprint"] = "an older generator's"
    (built / "report.json").write_text(json.dumps(report))
    mhz, what = _fmax(build, built)
    assert mhz == 100.0 and "older generator" in what
