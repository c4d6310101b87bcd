"""Allocation problems and the `gen alloc` / auto-size integration (the search itself is
tested in tests/test_search.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gen.__main__ import main
from gen.alloc.cli import allocate
from gen.alloc.problems import pipelined_problem, sequential_problem
from gen.alloc.search import search
from gen.boards import Resources, get_board
from gen.config import load_config, parse_config
from gen.design import resolve_sizes
from gen.errors import UserError
from gen.estimate import check_fits
from gen.workloads import get_workload

BOARD = get_board("ulx3s")
REPO = Path(__file__).resolve().parent.parent


def test_sequential_choice_is_a_config_that_fits_and_runs_every_layer():
    allocation, result, workload = allocate("default", BOARD, evaluations=400, seed=1,
                                            progress=lambda line: None)
    decoded = allocation.decode(result.best_actions)
    raw = {"name": "t", "board": BOARD.name, "clock_mhz": 100.0, **decoded,
           "host": {"baud": 1000000}}
    config = parse_config(raw)
    check_fits(config, BOARD)
    r = allocation.evaluate(result.best_actions[None, :])
    assert r["infeasible_layers"][0] == 0
    assert r["pes"][0] <= allocation.info["max_pes"]


def test_a_given_frontier_bounds_the_array():
    from gen.alloc.problems import sequential_problem
    workload = get_workload("default")
    allocation = sequential_problem(workload, BOARD.budget, clock_mhz=100.0,
                                    frontier=((100.0, 16), (125.0, 9)))
    assert allocation.info["max_pes"] == 16
    five_by_four = np.array([[4, 3, 0, 0, 0]])        # 5x4 = 20 PEs > 16
    four_by_four = np.array([[3, 3, 0, 0, 0]])
    assert allocation.problem.constraint(five_by_four)[0] > 0
    assert allocation.evaluate(four_by_four)["pes"][0] == 16


def test_the_search_beats_the_smallest_engine():
    allocation, result, _ = allocate("resnet50", BOARD, evaluations=300, seed=0,
                                     progress=lambda line: None)
    smallest = np.array([[0, 0, 5, 5, 6]])        # 1x1 array with buffers deep enough
    assert allocation.problem.objective(smallest)[0] > 10 * result.best_value


def test_same_seed_same_allocation():
    runs = [allocate("mobilenet_v2", BOARD, evaluations=300, seed=3, progress=lambda l: None)[1]
            for _ in range(2)]
    assert runs[0].best_actions.tolist() == runs[1].best_actions.tolist()
    assert runs[0].best_value == runs[1].best_value


def test_fixed_fields_are_kept():
    workload = get_workload("default")
    allocation = sequential_problem(workload, BOARD.budget,
                                    fixed={"array.rows": 4, "buffers.act_depth": 1024})
    result = search(allocation.problem, "random", 200, 0)
    decoded = allocation.decode(result.best_actions)
    assert decoded["array"]["rows"] == 4 and decoded["buffers"]["act_depth"] == 1024


def test_a_budget_nothing_meets_names_the_smallest_needed():
    tiny = get_board("ulx3s-12f")
    with pytest.raises(UserError, match=r"smallest needs .*mult18 >= 5|no configuration fits"):
        allocate("default", tiny.__class__(**{**tiny.__dict__,
                                              "budget": Resources(lut4=100, ff=100, mult18=2,
                                                                  bram18k=1)}),
                 evaluations=100, progress=lambda line: None)


def test_unknown_names_are_refused():
    with pytest.raises(UserError, match="resnet50"):
        allocate("resnet5O", BOARD, evaluations=10, progress=lambda line: None)
    with pytest.raises(UserError, match="known: accelgen_os"):
        allocate("default", BOARD, deployment="pipelined", dataflow="eyeriss", evaluations=10,
                 progress=lambda line: None)


def test_pipelined_problem_sums_resources_and_takes_the_slowest_stage():
    workload = get_workload("mobilenet_v2")
    budget = Resources(lut4=10 ** 6, ff=10 ** 6, mult18=2048, bram18k=1024)
    allocation = pipelined_problem(workload, budget, objective="throughput")
    actions = allocation.problem.space.random(np.random.default_rng(0), 8)
    r = allocation.evaluate(actions)
    assert np.allclose(r["period_s"], r["stage_s"].max(axis=1))
    assert np.allclose(allocation.problem.objective(actions), r["period_s"], rtol=1e-3)
    assert (r["mult18"] >= len(workload.ops)).all()


def test_gen_alloc_writes_a_buildable_config_and_a_plot(tmp_path, capsys):
    assert main(["alloc", "--network", "default", "--evaluations", "300", "--out",
                 str(tmp_path)]) == 0
    config_file = tmp_path / "digits_vit-alloc.yaml"
    config = load_config(config_file)
    check_fits(config, BOARD)
    assert (tmp_path / "convergence.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "predicted: latency" in out and "evaluations" in out


def test_auto_sizes_are_filled_by_the_design_stage():
    raw = yaml.safe_load(open("gen/configs/auto-digits.yaml"))
    raw["allocator"]["evaluations"] = 300
    config = parse_config(raw)              # loading runs no search: the sizes stay open
    assert config.array.rows == "auto" and ("array", "rows") in config.auto_fields
    resolved = resolve_sizes(config, progress=lambda line: None)
    assert isinstance(resolved.array.rows, int) and not resolved.auto_fields
    assert resolved.buffers.param_depth == 512
    assert resolved.allocator is None
    parse_config(resolved.as_dict())
    raw["allocator"]["colour"] = "red"
    with pytest.raises(UserError, match="unknown key"):
        parse_config(raw)


def test_loading_a_config_imports_nothing_of_the_allocator():
    code = ("import sys; from gen.config import load_config; "
            "c = load_config('gen/configs/auto-digits.yaml'); "
            "assert c.auto_fields, c; "
            "assert not [m for m in sys.modules if m.startswith('gen.alloc')], 'gen.alloc imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_power_cap_below_the_static_power_is_refused():
    with pytest.raises(UserError, match="power cap"):
        allocate("default", BOARD, power_cap_mw=50, evaluations=100, progress=lambda l: None)


def test_a_power_cap_is_respected():
    capped, result, _ = allocate("resnet50", BOARD, objective="latency", power_cap_mw=112,
                                 evaluations=400, progress=lambda l: None)
    r = capped.evaluate(result.best_actions[None, :])
    assert r["power_mw"][0] <= 112


def test_the_timing_constraint_does_not_disappear_above_the_measured_points():
    with pytest.raises(UserError, match="above the highest clock with a measured timing"):
        allocate("default", BOARD, clock_mhz=126, evaluations=50, progress=lambda l: None)
    with pytest.raises(UserError, match="power cap"):
        allocate("default", BOARD, power_cap_mw=0, evaluations=50, progress=lambda l: None)


def test_a_search_that_ran_out_says_so_and_how_many_it_needs():
    with pytest.raises(UserError, match=r"spent its 50 evaluations without finding one of the "
                                        r"\d+ configurations .* --method exhaustive needs \d+"):
        allocate("resnet50", get_board("ulx3s-12f"), method="random", evaluations=50,
                 progress=lambda l: None)


def test_latency_is_for_the_uart_the_design_has(tmp_path, capsys):
    allocation, result, _ = allocate("default", BOARD, evaluations=200, host_baud=115200,
                                     progress=lambda l: None)
    r = allocation.evaluate(result.best_actions[None, :])
    assert np.isclose(r["transfer_s"][0], np.ceil(r["traffic_bytes"][0] /
                      (115200 / 10 / 100e6)) / 100e6, rtol=1e-3)
    assert r["whatif_sdram_latency_s"][0] < r["latency_s"][0]
    assert main(["alloc", "--network", "default", "--evaluations", "100", "--seed", "3",
                 "--baud", "115200", "--out", str(tmp_path)]) == 0
    header = (tmp_path / "digits_vit-alloc.yaml").read_text().splitlines()[0]
    for option in ("--network digits_vit", "--board ulx3s", "--deployment sequential",
                   "--objective latency", "--method rl_ga", "--evaluations 100", "--seed 3",
                   "--clock-mhz 100", "--baud 115200", "--name digits_vit-alloc"):
        assert option in header, (option, header)
    assert load_config(tmp_path / "digits_vit-alloc.yaml").host.baud == 115200
    assert "what-if (not the generated design)" in capsys.readouterr().out


def test_the_allocator_chooses_the_dataflow_with_the_sizes():
    """With dataflow "accelgen" the dataflow is an action: a row choosing weight-stationary
    scores exactly what the weight-stationary problem gives the same sizes, and decodes to a
    config of that dataflow."""
    workload = get_workload("default")
    both = sequential_problem(workload, BOARD.budget, dataflow="accelgen")
    ws = sequential_problem(workload, BOARD.budget, dataflow="accelgen_ws")
    os_ = sequential_problem(workload, BOARD.budget, dataflow="accelgen_os")
    sizes = np.array([3, 3, 5, 5, 6])
    for flow, single in ((0, os_), (1, ws)):
        row = np.append(sizes, flow)[None, :]
        assert both.problem.objective(row)[0] == single.problem.objective(sizes[None, :])[0]
        assert both.decode(row[0])["array"]["dataflow"] == (
            "weight_stationary" if flow else "output_stationary")
    result = search(both.problem, "random", 200, 0)
    assert both.decode(result.best_actions)["array"]["dataflow"] in (
        "output_stationary", "weight_stationary")


def test_a_classic_dataflow_is_refused_for_the_sequential_deployment():
    with pytest.raises(UserError, match="accelgen_os, accelgen_ws or accelgen"):
        sequential_problem(get_workload("default"), BOARD.budget, dataflow="ws")
