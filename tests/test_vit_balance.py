"""Separate lane counts per ViT engine (gen.hw.vit.layout.ViTDesign.nmp_lanes), the engines'
multipliers and block-RAM estimate, and the lane-balance search (gen.vit.balance)."""

import numpy as np
import pytest

from gen.errors import UserError
from gen.estimate import bram_blocks
from gen.hw.vit.layernorm import LN_MULTIPLIERS
from gen.hw.vit.layout import ViTDesign, capacity_of, model_image
from gen.vit.balance import (Balance, EngineCost, LanePoint, balance, balance_costs,
                             dense_macs, model_costs, predicted_balance, predicted_costs,
                             stream_bytes)
from verif.test_vit_system import synthetic_model

DIMS = dict(d=8, heads=2, ffn=16, layers=2, classes=3)


def _model(seed=1, dense=False):
    arrays = synthetic_model(seed, DIMS["d"], DIMS["heads"], DIMS["ffn"], DIMS["layers"],
                             DIMS["classes"])
    if dense:
        mats = [arrays["embed"], arrays["head"]] + [
            layer[name] for layer in arrays["layers"]
            for name in ("q", "k", "v", "o", "fc1", "fc2")]
        for m in mats:
            m["w"][m["w"] == 0] = 1
        hd = DIMS["d"] // DIMS["heads"]
        for layer in arrays["layers"]:
            layer["kept_features"] = [np.arange(hd) for _ in layer["kept_features"]]
    return arrays


def test_nmp_lanes_default_and_refusals():
    arrays = _model()
    d = ViTDesign.for_model(arrays, 4)
    assert d.nmp_lanes == 0 and d.lanes_of("nmp") == 4
    assert d.geometry("nmp").lanes == 4
    for bad in (-1, True, 2.0):
        with pytest.raises(UserError, match="nmp_lanes must be a non-negative integer"):
            ViTDesign.for_model(arrays, 4, nmp_lanes=bad)
    with pytest.raises(UserError, match="engine must be nsa or nmp"):
        d.lanes_of("head")


def test_capacity_of_counts_each_engine_in_its_own_blocks():
    arrays = _model()
    four, eight = capacity_of(arrays, 4), capacity_of(arrays, 8)
    assert capacity_of(arrays, 4, None) == four == capacity_of(arrays, 4, 4)
    mixed = capacity_of(arrays, 4, 8)
    assert {k: mixed[k] for k in "qkvo"} == {k: four[k] for k in "qkvo"}
    assert (mixed["fc1"], mixed["fc2"]) == (eight["fc1"], eight["fc2"])


def test_engines_with_different_lanes_are_the_equal_lane_engines():
    """Each engine's image with (4, 8) lanes is that engine's image of the equal-lane design
    of its own width: nothing but the lane count of that engine matters to it."""
    arrays = _model()
    mixed = ViTDesign.for_model(arrays, 4, nmp_lanes=8)
    assert (mixed.geometry("nsa").lanes, mixed.geometry("nmp").lanes) == (4, 8)
    img = model_image(mixed, arrays)
    nsa_only, nmp_only = (model_image(ViTDesign.for_model(arrays, b), arrays) for b in (4, 8))
    assert img.nsa.loads == nsa_only.nsa.loads and img.nsa.steps == nsa_only.nsa.steps
    assert img.nmp.loads == nmp_only.nmp.loads and img.nmp.steps == nmp_only.nmp.steps
    assert mixed.regions("nmp") == ViTDesign.for_model(arrays, 8).regions("nmp")
    g = mixed.geometry("nmp")
    assert (sum(img.nmp.entry_cycles(mixed, t, g) for t in img.nmp.entries)
            == model_costs(arrays, 8)["nmp"].cycles)
    # FFN capacities counted in the NSA's wider blocks hold too few words for 4-lane blocks.
    wrong = ViTDesign(lanes=8, nmp_lanes=4, tokens=17, dim=8, heads=2, ffn=16, layers=2,
                      classes=3, capacity=capacity_of(arrays, 8))
    with pytest.raises(UserError, match="matrix fc[12] keeps .* the kernel holds"):
        model_image(wrong, arrays)


def test_multipliers_and_block_rams():
    arrays = _model()
    d = ViTDesign.for_model(arrays, 8, nmp_lanes=4)
    # MAC lanes + requantizer (4) + softmax rounding (1) + LayerNorm + one-lane adder (2).
    assert d.multipliers("nsa") == 8 + 4 + 1 + LN_MULTIPLIERS + 2
    assert d.multipliers("nmp") == 4 + 4 + 1 + LN_MULTIPLIERS + 2
    assert d.multipliers() == d.multipliers("nsa") + d.multipliers("nmp")
    for part in ("nsa", "nmp"):
        names = [m[0] for m in d.memories(part)]
        assert any(n.startswith("wmem") for n in names) and "ln_params" in names
        assert any(n.startswith("fifo_in") for n in names) and ("act" in names) == (part == "nmp")
        assert d.block_rams(part) == sum(c * bram_blocks(w, n) for _, w, n, c in
                                         d.memories(part)) > 0
    assert d.block_rams() == d.block_rams("nsa") + d.block_rams("nmp")
    assert bram_blocks(36, 512) == 1 and bram_blocks(8, 100) == 0


@pytest.mark.parametrize("lanes", [2, 3, 4, 8, 16])
def test_prediction_from_the_shape_is_the_model_image(lanes):
    """predicted_engine (no weights) equals the load image's model on a dense model."""
    arrays = _model(seed=3, dense=True)
    real, shape = model_costs(arrays, lanes), predicted_costs(arrays["dims"], lanes)
    for part in ("nsa", "nmp"):
        assert (shape[part].cycles, shape[part].beats, shape[part].multipliers) == \
            (real[part].cycles, real[part].beats, real[part].multipliers)


def test_balance_picks_the_fewest_cycles_under_the_budget():
    arrays = _model()
    lanes = range(2, 9)
    res = balance(arrays, 40, lanes)
    assert isinstance(res, Balance) and res.best.multipliers <= 40
    fitting = [p for p in res.points if p.multipliers <= 40]
    least = min(p.cycles for p in fitting)
    assert res.best.cycles == least
    assert res.best.multipliers == min(p.multipliers for p in fitting if p.cycles == least)
    assert len(res.points) == len(lanes) ** 2
    # The pair's figures are those of the design generated with that pair.
    b = res.best
    design = ViTDesign.for_model(arrays, b.nsa_lanes, nmp_lanes=b.nmp_lanes)
    img = model_image(design, arrays)
    for part, eng in (("nsa", img.nsa), ("nmp", img.nmp)):
        g = design.geometry(part)
        assert sum(eng.entry_cycles(design, t, g) for t in eng.entries) == \
            b.engine(part).cycles
        assert design.multipliers(part) == b.engine(part).multipliers
        assert design.block_rams(part) == b.engine(part).block_rams
    assert b.cycles == max(b.nsa.cycles, b.nmp.cycles)
    assert 0 < b.lanes_busy("nsa") <= b.busy("nsa") <= 1
    # A bigger budget never does worse; a block-RAM budget is honoured.
    assert balance(arrays, 1000, lanes).best.cycles <= b.cycles
    tight = balance(arrays, 1000, lanes, bram_budget=b.block_rams)
    assert tight.best.block_rams <= b.block_rams


def test_balance_refusals_and_one_image_in_flight():
    arrays = _model()
    with pytest.raises(UserError, match="no lane pair fits 10 multipliers; the smallest"):
        balance(arrays, 10, range(2, 5))
    with pytest.raises(UserError, match="budget must be a positive integer"):
        balance(arrays, 0, range(2, 5))
    one = balance(arrays, 1000, range(2, 5), images_in_flight=1)
    assert one.best.cycles == one.best.nsa.cycles + one.best.nmp.cycles


def test_ties_prefer_fewer_multipliers():
    def cost(lanes, cycles):
        return EngineCost(lanes=lanes, cycles=cycles, beats=1, multipliers=lanes + 16)
    costs = {4: {"nsa": cost(4, 100), "nmp": cost(4, 90)},
             8: {"nsa": cost(8, 100), "nmp": cost(8, 50)}}
    res = balance_costs(costs, 100)
    assert (res.best.nsa_lanes, res.best.nmp_lanes) == (4, 4)
    assert res.point(8, 4) == LanePoint(costs[8]["nsa"], costs[4]["nmp"])


def test_shape_figures():
    dims = {"tokens": 17, "dim": 8, "heads": 2, "ffn": 16, "layers": 2, "classes": 3,
            "patch_pixels": 4}
    assert dense_macs(dims) == 16 * 4 * 8 + 2 * (4 * 17 * 64 + 2 * 17 * 17 * 8
                                                + 2 * 17 * 8 * 16) + 8 * 3
    sb = stream_bytes(dims, 4)
    assert sb["total"] == sb["nsa"] + sb["nmp"] and sb["int8_weights"] == (
        2 * (4 * 64 + 2 * 128) + 4 * 8 + 8 * 3)
    half = stream_bytes(dims, 4, keep=0.5)
    assert half["int8_weights"] * 2 == sb["int8_weights"] and half["total"] < sb["total"]
    res = predicted_balance(dims, 60, range(2, 9), keep=0.5)
    assert res.best.multipliers <= 60 and res.best.block_rams is None
