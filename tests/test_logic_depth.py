"""flows.logic_depth: estimated delays into every sequential input of a synthesized netlist."""

import json

import pytest

from flows import logic_depth as ld


def _cell(kind, inputs, outputs):
    conns, dirs = {}, {}
    for port, bit in inputs.items():
        conns[port], dirs[port] = [bit], "input"
    for port, bit in outputs.items():
        conns[port], dirs[port] = [bit], "output"
    return {"type": kind, "connections": conns, "port_directions": dirs}


def _netlist():
    # ff_a -> lut1 -> lut2 -> ff_deep.DI ; ff_a -> ff_near.DI ; a 3-cell carry chain into
    # ff_sum.DI ; a LUT fed by a constant and by a combinational loop-free fan-in.
    cells = {
        "ff_a": _cell("TRELLIS_FF", {"CLK": 1, "DI": 2}, {"Q": 3}),
        "lut1": _cell("LUT4", {"A": 3, "B": "0"}, {"Z": 4}),
        "lut2": _cell("LUT4", {"A": 4, "B": 3}, {"Z": 5}),
        "ff_deep": _cell("TRELLIS_FF", {"CLK": 1, "DI": 5}, {"Q": 6}),
        "ff_near": _cell("TRELLIS_FF", {"CLK": 1, "DI": 3}, {"Q": 7}),
        "c0": _cell("CCU2C", {"A0": 3, "CIN": "0"}, {"COUT": 8, "S0": 9}),
        "c1": _cell("CCU2C", {"A0": 7, "CIN": 8}, {"COUT": 10, "S0": 11}),
        "c2": _cell("CCU2C", {"A0": 7, "CIN": 10}, {"COUT": 12, "S0": 13}),
        "ff_sum": _cell("TRELLIS_FF", {"CLK": 1, "DI": 13}, {"Q": 14}),
    }
    return {"modules": {"top": {"cells": cells}}}


def test_delays_rank_endpoints():
    ends = {(e.cell, e.port): e for e in ld.endpoint_delays(_netlist())}
    assert ("ff_a", "CLK") not in ends                     # clocks are not endpoints
    ff = ld.SOURCE_NS["TRELLIS_FF"]
    hop = ld.ROUTE_NS
    assert ends[("ff_near", "DI")].delay_ns == pytest.approx(ff + hop + 0.1)
    assert ends[("ff_deep", "DI")].delay_ns == pytest.approx(ff + 2 * (ld.LUT_NS + hop) + hop
                                                             + 0.1)
    assert ends[("ff_deep", "DI")].path == ("ff_a", "lut1", "lut2")
    # The carry chain: operands of c0 enter once, then a carry hop per cell, then a sum.
    chain = ff + ld.LUT_NS + ld.CARRY_NS + hop + 2 * ld.CARRY_NS + ld.SUM_NS + hop + 0.1
    assert ends[("ff_sum", "DI")].delay_ns == pytest.approx(chain)
    ordered = ld.endpoint_delays(_netlist())
    assert [e.delay_ns for e in ordered] == sorted((e.delay_ns for e in ordered), reverse=True)


def test_by_module_groups_slow_endpoints():
    ends = ld.endpoint_delays(_netlist())
    groups = ld.by_module(ends, above_ns=0.0, depth=1)
    assert set(groups) == {"ff_deep", "ff_near", "ff_sum", "ff_a"}
    assert sum(count for _, count in groups.values()) == len(ends)


def test_cli(tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist()))
    assert ld.main([str(path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "ff_deep.DI" in out and "by module" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert ld.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0]
