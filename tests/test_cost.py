"""The analytic cost model: exact engine cycles, resources, job splitting, classic dataflows."""

import itertools

import numpy as np
import pytest

from gen import cost
from gen.config import load_config
from gen.errors import UserError
from gen.estimate import estimate_resources
from gen.cycles import gemm_cycles as predicted_cycles
from gen.workloads import get_workload


def test_closed_form_equals_the_tile_recurrence():
    shapes = list(itertools.product([1, 2, 7, 8, 9, 33], [1, 2, 5, 9, 16, 17, 31, 64, 65, 300],
                                    [1, 3, 8, 17]))
    for rows, cols, lanes in [(1, 1, 1), (2, 2, 1), (3, 4, 1), (8, 8, 1), (8, 16, 1), (1, 7, 1),
                              (16, 2, 1), (2, 2, 2), (3, 4, 4), (8, 8, 2), (8, 8, 8),
                              (8, 16, 4), (16, 2, 2), (12, 12, 4)]:
        m, k, n = (np.array(x) for x in zip(*shapes))
        got = cost.engine_gemm_cycles(m, k, n, rows, cols, lanes)
        want = [predicted_cycles(*s, rows, cols, lanes) for s in shapes]
        assert got.tolist() == want, (rows, cols, lanes)
        # A batch is its GEMMs' tiles one after the other through the same recurrence.
        for batch in (2, 3, 8):
            got = cost.engine_gemm_cycles(m, k, n, rows, cols, lanes, batch)
            want = [predicted_cycles(*s, rows, cols, lanes, batch) for s in shapes]
            assert got.tolist() == want, (rows, cols, lanes, batch)


def test_engine_resources_equal_the_estimate_of_the_config():
    base = load_config()
    from dataclasses import replace
    for rows, cols, act, wgt, par, out, lanes in [
            (8, 8, 2048, 2048, 512, 16384, 1), (1, 1, 16, 16, 1, 16, 1),
            (3, 5, 300, 1000, 64, 5000, 1), (16, 8, 8192, 4096, 2048, 65536, 1),
            (8, 8, 2048, 2048, 512, 16384, 8), (4, 12, 1024, 300, 61, 5000, 4)]:
        config = replace(base, array=replace(base.array, rows=rows, cols=cols,
                                             drain_lanes=lanes),
                         buffers=replace(base.buffers, act_depth=act, wgt_depth=wgt,
                                         param_depth=par, out_depth=out))
        want = estimate_resources(config).as_dict()
        got = cost.engine_resources(rows, cols, act, wgt, par, out, lanes)
        for key in ("lut4", "ff", "mult18", "bram18k"):
            assert int(got[key]) == want[key], (key, rows, cols)


ENGINE = {"rows": 8, "cols": 8, "act_depth": 2048, "wgt_depth": 2048, "param_depth": 512,
          "out_depth": 16384}


def layer(m, k, n, count=1):
    return {"M": np.array([m]), "K": np.array([k]), "N": np.array([n]),
            "count": np.array([count])}


def test_a_gemm_that_fits_is_one_job_with_the_exact_cycles():
    r = cost.layer_cost(layer(100, 64, 120), ENGINE)
    assert r["jobs"].tolist() == [1]
    assert r["compute_cycles"].tolist() == [predicted_cycles(100, 64, 120, 8, 8)]
    # The driver's bytes: A padded to 13 row tiles of 8, W to 15 column tiles, the outputs,
    # the parameter words and the commands of one job.
    assert r["traffic_bytes"][0] == (104 * 64 + 64 * 120 + 100 * 120 + 120 * cost.PARAM_BYTES +
                                     cost.PROTOCOL_BYTES_PER_JOB)
    assert r["feasible"].all()


def test_a_large_gemm_is_split_into_jobs_that_fit_and_costs_their_sum():
    m, k, n = 1000, 200, 300
    r = cost.layer_cost(layer(m, k, n), ENGINE)
    assert r["jobs"][0] > 1
    # Rows of A: 2048 words // 200 = 10 row tiles of 8 -> 80; N: 10 col tiles -> 80 columns.
    total = 0
    for m0 in range(0, m, 80):
        for n0 in range(0, n, 80):
            total += predicted_cycles(min(80, m - m0), k, min(80, n - n0), 8, 8)
    assert r["compute_cycles"][0] == total
    assert r["traffic_bytes"][0] >= m * k + k * n + m * n


def test_a_reduction_longer_than_the_buffers_is_infeasible():
    r = cost.layer_cost(layer(8, 4096, 8), ENGINE)
    assert not r["feasible"].any()


def test_repeated_groups_multiply_the_cost():
    one = cost.layer_cost(layer(64, 9, 1), ENGINE)
    many = cost.layer_cost(layer(64, 9, 1, count=32), ENGINE)
    for key in ("compute_cycles", "traffic_bytes", "macs"):
        assert many[key][0] == 32 * one[key][0]


def test_vectorized_over_layers_and_configurations():
    layers = get_workload("resnet50").as_arrays()
    engine = {k: np.full((5, 1), v) for k, v in ENGINE.items()}
    engine["rows"] = np.array([[1], [2], [4], [8], [16]])
    engine["act_depth"] = np.full((5, 1), 8192)
    engine["wgt_depth"] = np.full((5, 1), 8192)
    r = cost.layer_cost(layers, engine)
    assert r["cycles"].shape == (5, len(layers["M"]))
    compute = r["compute_cycles"].sum(axis=1)
    assert (np.diff(compute) < 0).all(), "more PEs must not be slower on ResNet-50"


@pytest.mark.parametrize("dataflow", ["ws", "rs", "os", "accelgen_os"])
def test_no_dataflow_beats_its_peak(dataflow):
    layers = get_workload("mobilenet_v2").as_arrays()
    engine = dict(ENGINE, act_depth=8192, wgt_depth=8192, out_depth=1 << 20,
                  buffer_bytes=1 << 20)
    r = cost.layer_cost(layers, engine, dataflow)
    assert (r["macs"] <= r["compute_cycles"] * 64).all()
    assert (r["energy_pj"] > r["macs"] * cost.E_MAC).all()


def test_unknown_dataflow_is_refused_with_the_known_ones():
    with pytest.raises(UserError, match="known: accelgen_os"):
        cost.layer_cost(layer(8, 8, 8), ENGINE, "weight_stationry")


@pytest.mark.parametrize("rows, cols, act, wgt, par, out, lut4, ff", [
    (2, 2, 8192, 2048, 64, 4096, 4363, 3206),       # nextpnr utilization of real builds
    (3, 5, 4096, 1024, 64, 4096, 5610, 4868),       # (calibration table in gen/estimate.py)
    (4, 4, 4096, 1024, 128, 8192, 5614, 4989),
    (8, 8, 2048, 2048, 512, 16384, 10587, 12095),
    (2, 24, 8192, 512, 64, 4096, 9120, 11744),
    (2, 2, 128, 128, 16, 128, 5228, 3355),
    (6, 3, 2048, 4096, 128, 8192, 5937, 5351),       # hold-out: not used in the fit
    (5, 10, 4096, 1024, 256, 8192, 9321, 10153),     # hold-out
])
def test_estimate_stays_within_3_percent_of_measured_builds(rows, cols, act, wgt, par, out,
                                                            lut4, ff):
    got = cost.engine_resources(rows, cols, act, wgt, par, out)
    assert abs(int(got["lut4"]) / lut4 - 1) < 0.03
    assert abs(int(got["ff"]) / ff - 1) < 0.03


WS = dict(ENGINE)


def test_weight_stationary_jobs_fit_its_layout_and_cost_their_exact_cycles():
    """accelgen_ws splits a GEMM so that each job's ceil(K/R)*M activation words fit (K padded
    to whole weight tiles, M not) and costs each job gen.cycles.ws_gemm_cycles (the model the
    cocotb tests check against Verilator)."""
    from gen.cycles import ws_gemm_cycles
    r = cost.layer_cost(layer(100, 64, 120), WS, "accelgen_ws")
    assert r["jobs"].tolist() == [1] and r["feasible"].all()
    assert r["compute_cycles"].tolist() == [ws_gemm_cycles(100, 64, 120, 8, 8)]
    # The driver's bytes: A with K padded to 8 tiles of 8 (64: none), M not; W padded to 15
    # column tiles; the outputs, parameter words and commands of one job.
    assert r["traffic_bytes"][0] == (100 * 64 + 64 * 120 + 100 * 120 +
                                     120 * cost.PARAM_BYTES + cost.PROTOCOL_BYTES_PER_JOB)
    m, k, n = 1000, 200, 300
    r = cost.layer_cost(layer(m, k, n), WS, "accelgen_ws")
    # 2048 words // 25 weight tiles of K = 81 rows of A a job; N in jobs of 80 columns.
    total = sum(ws_gemm_cycles(min(81, m - m0), k, min(80, n - n0), 8, 8)
                for m0 in range(0, m, 81) for n0 in range(0, n, 80))
    assert r["compute_cycles"][0] == total
    assert not cost.layer_cost(layer(8, 8 * 2049, 8), WS, "accelgen_ws")["feasible"].any()


def test_weight_stationary_cycles_vectorize():
    from gen.cycles import ws_gemm_cycles
    shapes = list(itertools.product([1, 7, 8, 9, 600], [1, 5, 8, 17, 64], [1, 3, 8, 17]))
    for rows, cols, lanes, m_tile in [(2, 1, 1, 512), (3, 4, 1, 16), (8, 8, 1, 512),
                                      (8, 8, 8, 512), (4, 8, 2, 8)]:
        m, k, n = (np.array(x) for x in zip(*shapes))
        got = ws_gemm_cycles(m, k, n, rows, cols, lanes, m_tile)
        want = [ws_gemm_cycles(*s, rows, cols, lanes, m_tile) for s in shapes]
        assert got.tolist() == want, (rows, cols, lanes, m_tile)


def test_weight_stationary_resources_add_its_accumulator_banks():
    os_ = cost.engine_resources(8, 8, 2048, 2048, 512, 16384)
    ws = cost.engine_resources(8, 8, 2048, 2048, 512, 16384, dataflow="weight_stationary")
    assert int(ws["bram18k"]) == int(os_["bram18k"]) + 16
    assert int(ws["mult18"]) == int(os_["mult18"])
