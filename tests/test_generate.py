"""Generated files: byte-identical for the same config, traceable to it."""

import json
import re

import yaml

from gen.config import load_config, parse_config, DEFAULT_CONFIG
from gen.design import prepare_design


def small_design(**array):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="small", board="ulx3s-12f")
    raw["array"].update({"rows": 2, "cols": 3, **array})
    raw["buffers"].update(act_depth=64, wgt_depth=64, param_depth=16, out_depth=256)
    return prepare_design(parse_config(raw))


def test_same_config_gives_byte_identical_rtl(tmp_path):
    first = small_design().generate(tmp_path / "a", progress=lambda _: None)
    second = small_design().generate(tmp_path / "b", progress=lambda _: None)
    assert first.name == second.name            # the folder is named by the config hash
    names = sorted(p.name for p in first.iterdir())
    assert names == ["config.yaml", "manifest.json", "small_system.v"]
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_config_gives_a_different_folder(tmp_path):
    a = small_design().generate(tmp_path, progress=lambda _: None)
    b = small_design(rows=3).generate(tmp_path, progress=lambda _: None)
    assert a != b
    assert (a / "small_system.v").read_text() != (b / "small_system.v").read_text()


def test_folder_holds_the_exact_config_and_a_manifest(tmp_path):
    design = small_design()
    folder = design.generate(tmp_path, progress=lambda _: None)
    again = parse_config(yaml.safe_load((folder / "config.yaml").read_text()))
    assert again == design.config
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["array"] == {"rows": 2, "cols": 3, "dataflow": "output_stationary",
                                 "drain_lanes": 1}
    assert manifest["buffers"]["act"] == {"depth": 64, "word_bits": 16}
    assert manifest["host"]["uart_divisor"] == design.uart_divisor
    verilog = (folder / "small_system.v").read_text()
    assert "module small_system(" in verilog
    for port in manifest["ports"]:
        assert port in verilog


def test_board_alias_names_the_same_design():
    assert prepare_design(load_config(board="ulx3s")).digest == \
        prepare_design(load_config(board="ulx3s-85f")).digest == \
        prepare_design(load_config()).digest


def test_rtl_does_not_depend_on_the_python_hash_seed(tmp_path):
    """Amaranth orders undriven-domain ports by a set of names; gen.rtl sorts them."""
    import os
    import subprocess
    import sys
    texts = set()
    for seed in ("1", "3", "7"):
        out = tmp_path / seed
        subprocess.run([sys.executable, "-m", "gen", "generate", "--out", str(out)], check=True,
                       capture_output=True, env=dict(os.environ, PYTHONHASHSEED=seed))
        texts.add(next(out.glob("*/*.v")).read_bytes())
    assert len(texts) == 1


def test_a_hyphenated_name_makes_a_plain_verilog_module(tmp_path):
    """A name the schema accepts works downstream: no escaped identifier a runner cannot name."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="my-small-design", board="ulx3s-12f")
    raw["array"].update(rows=2, cols=2)
    raw["buffers"].update(act_depth=64, wgt_depth=64, param_depth=16, out_depth=256)
    design = prepare_design(parse_config(raw))
    folder = design.generate(tmp_path, progress=lambda _: None)
    assert folder.name.startswith("my-small-design-")
    text = (folder / "my_small_design_system.v").read_text()
    # The top module is a plain identifier (its submodules are named hierarchically, escaped).
    assert re.search(r"^module my_small_design_system\s*\(", text, re.MULTILINE), text[:400]
    assert "module \\my-small" not in text
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["top_module"] == "my_small_design_system"
