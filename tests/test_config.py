"""Config schema, boards, PLL planning, UART divisor and the budget check."""

from fractions import Fraction

import pytest
import yaml

from gen.boards import get_board, load_boards
from gen.config import DEFAULT_CONFIG, load_config, parse_config
from gen.design import (HOST_CLOCK_MAX_MHZ, PREFERRED_DIVISOR, plan_host_link,
                        prepare_design)
from gen.errors import UserError
from gen.estimate import bram_blocks
from gen.hw.pll import plan_pll


def default_raw():
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def test_default_config_is_valid_and_fits_its_board():
    design = prepare_design(load_config())
    assert design.board.name == "ulx3s-85f"
    assert design.clock_mhz == 125
    # 3 Mbaud: the host link runs from the PLL's CLKOS at 75 MHz, 25 clocks a bit, exactly.
    assert design.uart_divisor == 25 and design.host_clock_mhz == 75
    assert design.baud_actual == design.config.host.baud == 3_000_000


def test_boards_have_the_data_sheet_budgets():
    boards = load_boards()
    assert set(boards) >= {"ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "ulx3s-85f"}
    b = boards["ulx3s-85f"].budget
    assert (b.lut4, b.mult18, b.bram18k) == (83640, 156, 208)
    assert get_board("ulx3s") is not None and get_board("ulx3s").name == "ulx3s-85f"
    for board in boards.values():
        assert board.platform_class().device == board.device


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown board 'ulx3s-99f'.*ulx3s-12f.*ulx3s-85f"):
        get_board("ulx3s-99f")


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["array"].update(rowz=8), r"array.rowz: unknown key \(did you mean 'rows'\?\)"),
    (lambda c: c["array"].pop("cols"), r"array.cols: missing"),
    (lambda c: c["array"].update(rows="8"), r"array.rows: expected int, got '8'"),
    (lambda c: c["array"].update(rows=0), r"array.rows: 0 is outside \[1, 64\]"),
    (lambda c: c["array"].update(rows=True), r"array.rows: expected int"),
    (lambda c: c["buffers"].update(out_depth=2), r"buffers.out_depth: 2 is outside"),
    (lambda c: c["array"].update(dataflow="weight_stationary", rows=1),
     r"array.rows: a weight_stationary array needs at least 2 rows, not 1"),
    (lambda c: c["array"].update(dataflow="diagonal"),
     r"array.dataflow: 'diagonal' is not available; use one of output_stationary, "
     r"weight_stationary"),
    (lambda c: c.update(name="my design"), r"name: 'my design' must start with a letter and hold at most 64 letters"),
    (lambda c: c.update(extra=1), r"extra: unknown key"),
    (lambda c: c.update(host=5), r"host: expected a mapping"),
])
def test_malformed_configs_say_what_to_change(mutate, message):
    raw = default_raw()
    mutate(raw)
    with pytest.raises(UserError, match=message):
        parse_config(raw)


def test_float_clock_accepts_integers():
    raw = default_raw()
    raw["clock_mhz"] = 100
    assert parse_config(raw).clock_mhz == 100.0


def test_over_budget_design_fails_before_synthesis_with_advice():
    raw = default_raw()
    raw["board"] = "ulx3s-12f"
    with pytest.raises(UserError) as info:
        prepare_design(parse_config(raw))
    text = str(info.value)
    assert "does not fit ulx3s-12f" in text
    assert "mult18: needs about 68, ulx3s-12f has 28" in text
    assert "array.rows * array.cols" in text
    assert "at most 24 PEs fit, e.g. array.rows: 4, array.cols: 6" in text, text


def test_bram_budget_is_checked():
    raw = default_raw()
    raw["buffers"]["out_depth"] = 4 * 1024 * 1024
    with pytest.raises(UserError, match=r"bram18k: needs about \d+, ulx3s-85f has 208"):
        prepare_design(parse_config(raw))


def test_small_design_fits_the_smallest_board():
    raw = default_raw()
    raw.update(board="ulx3s-12f")
    raw["array"].update(rows=4, cols=4)
    raw["buffers"].update(act_depth=512, wgt_depth=512, out_depth=4096, param_depth=64)
    design = prepare_design(parse_config(raw))
    assert design.estimate.mult18 == 20


def test_bram_blocks_follow_dp16kd_shapes():
    assert bram_blocks(64, 2048) == 8          # 8 x (2048 x 9)
    assert bram_blocks(128, 2048) == 15         # 15 x (2048 x 9): 135 bits
    assert bram_blocks(8, 16384) == 8          # 8 x (16384 x 1)
    assert bram_blocks(69, 512) == 2           # 2 x (512 x 36)
    assert bram_blocks(8, 64) == 0             # small: stays in logic


@pytest.mark.parametrize("target", [125, 100, 50, 75, 150])
def test_pll_hits_round_clocks_exactly_within_limits(target):
    pll = plan_pll(25, target)
    assert pll.output_mhz == target
    assert 400 <= pll.vco_mhz <= 800
    assert 3.125 <= 25 / pll.clki_div <= 400


def test_pll_refuses_unreachable_clock():
    with pytest.raises(UserError, match="outside what the ECP5 PLL makes"):
        plan_pll(25, 1000)


def test_uart_baud_checks():
    raw = default_raw()
    raw["host"]["baud"] = 6_000_000
    with pytest.raises(UserError, match="exceeds the ulx3s-85f serial port's 3000000"):
        prepare_design(parse_config(raw))
    # 25 MHz / 9 = 2.78 Mbaud is 4% off; a PLL output beside 125 MHz comes within 0.15%.
    raw["host"]["baud"] = 2_900_000
    design = prepare_design(parse_config(raw))
    assert design.host_clock_source == "pll" and abs(design.baud_actual / 2.9e6 - 1) < 0.002
    raw["host"]["baud"] = 115200         # 25 MHz / 217 = 115207 baud: 0.01% off, fine
    design = prepare_design(parse_config(raw))
    assert design.uart_divisor == 217 and design.host_clock_source == "oscillator"


def test_a_baud_no_host_clock_makes_is_one_line_with_usable_advice():
    board = get_board("ulx3s")
    pll = plan_pll(25, 125)
    with pytest.raises(UserError) as info:
        plan_host_link(board, pll, 2_900_000, tolerance=1e-4)
    message = str(info.value)
    assert message.startswith("host.baud: 2900000 is more than 0.01% off every rate the 25 MHz "
                              "oscillator and the PLL outputs") and "\n" not in message
    advice = message.rsplit("; use ", 1)[1].split(" or ")
    assert len(advice) == 2 and int(advice[0]) < 2_900_000 < int(advice[1])
    for rate in advice:
        assert plan_host_link(board, pll, int(rate), tolerance=1e-4).baud_error <= 1e-4


@pytest.mark.parametrize("baud", [1_000_000, 500_000, 250_000])
def test_oscillator_stays_the_host_clock_where_it_divides_exactly(baud):
    raw = default_raw()
    raw["host"]["baud"] = baud
    design = prepare_design(parse_config(raw))
    assert design.host_clock_source == "oscillator" and design.pll.clkos_div is None
    assert design.pll == plan_pll(25, raw["clock_mhz"])       # the accelerator PLL as before
    assert design.uart_divisor * baud == 25_000_000
    # Same parameters as before the host clock could come from the PLL: same Verilog.
    assert "byte_timeout" not in design.system_params and design.byte_timeout == 125_000


def clkos_model(settings, input_mhz=25):
    """The EHXPLLL's outputs from its dividers alone (CLKOP fed back): exact fractions."""
    pfd = Fraction(input_mhz) / settings.clki_div
    clkop = pfd * settings.clkfb_div
    vco = clkop * settings.clkop_div
    return pfd, clkop, vco, vco / settings.clkos_div


@pytest.mark.parametrize("clock_mhz", [125, 100, 50, 75, 150, 62.5])
def test_3_mbaud_host_clock_from_pll_is_exact_and_keeps_the_accelerator_clock(clock_mhz):
    board = get_board("ulx3s")
    accel = plan_pll(25, clock_mhz)
    link = plan_host_link(board, accel, 3_000_000)
    assert link.source == "pll" and link.exact
    pfd, clkop, vco, clkos = clkos_model(link.pll)
    assert clkop == Fraction(clock_mhz) == accel.exact_output_mhz    # unchanged
    assert 3.125 <= pfd <= 400 and 400 <= vco <= 800 and 3.125 <= clkos <= 400
    assert clkos == link.clock_mhz and clkos * 10 ** 6 == 3_000_000 * link.divisor
    assert link.divisor >= PREFERRED_DIVISOR and clkos <= HOST_CLOCK_MAX_MHZ
    assert link.byte_timeout == round(clkos * 5000)                 # 5 ms, as at 25 MHz
    if clock_mhz == 125:
        assert (link.pll.clki_div, link.pll.clkfb_div, link.pll.clkop_div,
                link.pll.clkos_div, link.divisor) == (1, 5, 6, 10, 25)   # 750 MHz / 10 / 25


def test_3_mbaud_design_reports_its_host_clock_and_link():
    raw = default_raw()
    raw["host"]["baud"] = 3_000_000
    design = prepare_design(parse_config(raw))
    host = design.manifest()["host"]
    assert host["clock_source"] == "pll_clkos" and host["clock_mhz"] == 75
    assert host["baud_actual"] == 3_000_000 and host["bytes_per_second"] == 300_000
    assert host["byte_timeout_ms"] == 5 and design.system_params["byte_timeout"] == 375_000
    link = design.manifest()["link_vs_compute"]
    assert link["gemm"] == "128x128x128" and link["bytes"]["total"] > 3 * 128 * 128
    assert link["transfer_ms"] == round(link["bytes"]["total"] / 300, 3)


def test_board_override_on_load():
    config = load_config(board="ulx3s-45f")
    assert config.board == "ulx3s-45f"


# -- Run-time clock levels (docs/clocking.md) -------------------------------------------------

def levels_raw(levels):
    raw = default_raw()
    raw["clock_levels_mhz"] = levels
    return raw


def test_clock_levels_come_from_the_accelerator_clocks_vco():
    import json
    from gen.design import clock_levels_line
    design = prepare_design(parse_config(levels_raw([125, 62.5]), source="levels.yaml"),
                            progress=lambda line: None)
    pll = design.pll
    # The host link's VCO (750 MHz: CLKOS /10 = 75 MHz for 3 Mbaud) makes both levels.
    assert (pll.clkop_div, pll.clkos_div, pll.clkos2_div) == (6, 10, 12)
    assert pll.vco_mhz == 750 and design.host_clock_mhz == 75
    assert design.clock_levels_mhz == (125.0, 62.5)
    assert design.system_params["clock_levels"] == 2
    manifest = json.loads(json.dumps(design.manifest()))
    assert manifest["clock"]["levels"] == [
        {"level": 0, "mhz": 125.0, "output": "CLKOP"},
        {"level": 1, "mhz": 62.5, "output": "CLKOS2"}]
    assert manifest["clock"]["pll"]["clkos2_div"] == 12
    assert manifest["ports"]["level"] == "out"
    assert "1 = 62.5 MHz (CLKOS2 = VCO 750 / 12)" in clock_levels_line(design)
    # The config round-trips through its YAML, and names a different design.
    again = parse_config(yaml.safe_load(design.config.to_yaml()))
    assert again.clock_levels_mhz == (125.0, 62.5) and again == design.config
    assert design.digest != prepare_design(load_config(), progress=lambda line: None).digest


@pytest.mark.parametrize("levels, message", [
    ([125, 60], r"^levels.yaml: clock_levels_mhz: the PLL cannot make 60 MHz beside the 125 MHz "
                r"accelerator clock and the 75 MHz host link clock \(an output divider of "
                r"one VCO\); the nearest levels it makes are 57.692308 or 62.5 MHz$"),
    ([125, 100], r"cannot make 100 MHz .* nearest levels it makes are 93.75 or 107.142857 MHz$"),
    ([125, 2], r"clock_levels_mhz: the PLL cannot make 2 MHz .* nearest levels it makes are "
               r"5.859375 MHz$"),
    ([125], r"clock_levels_mhz: expected a list of 2 accelerator clocks"),
    ("fast", r"clock_levels_mhz: expected a list of 2 accelerator clocks.*got 'fast'"),
    ([125, True], r"clock_levels_mhz: expected a list"),
    ([100, 50], r"clock_levels_mhz: the first level must be clock_mhz \(125"),
    ([125, 130], r"clock_levels_mhz: the second level, 130 MHz, must be slower"),
    ([125, 125], r"clock_levels_mhz: the second level, 125 MHz, must be slower"),
])
def test_a_clock_level_the_pll_cannot_make_is_one_line(levels, message):
    with pytest.raises(UserError, match=message) as info:
        prepare_design(parse_config(levels_raw(levels), source="levels.yaml"),
                       progress=lambda line: None)
    assert "\n" not in str(info.value)


def test_a_level_printed_by_check_is_accepted():
    """`gen check` prints the makeable levels to 6 decimals: each is accepted as written."""
    from gen.design import clock_levels_line
    line = clock_levels_line(prepare_design(load_config(), progress=lambda line: None))
    assert "the PLL can add 107.142857, 93.75, 83.333333, 75, 68.181818, 62.5" in line
    assert "... 5.859375 MHz (122 levels)" in line
    design = prepare_design(parse_config(levels_raw([125, 107.142857])),
                            progress=lambda line: None)
    assert design.pll.clkos2_div == 7
    # A divider of the running VCO, though no PLL setting makes it as its CLKOP.
    design = prepare_design(parse_config(levels_raw([125, 68.181818])),
                            progress=lambda line: None)
    assert design.pll.clkos2_div == 11
    assert design.pll.exact_clkos2_mhz == Fraction(750, 11)


def test_a_level_may_move_the_vco_where_the_host_link_allows():
    """At 1 Mbaud the host link runs from the oscillator, so the VCO is free: plan_pll's
    625 MHz (nearest 600) makes no 75 MHz, 750 MHz does, with CLKOP still 125 MHz."""
    raw = levels_raw([125, 75])
    raw["host"]["baud"] = 1_000_000
    design = prepare_design(parse_config(raw), progress=lambda line: None)
    assert design.host_clock_source == "oscillator" and design.link.pll.vco_mhz == 625
    pll = design.pll
    assert (pll.vco_mhz, pll.clkop_div, pll.clkos2_div, pll.clkos_div) == (750, 6, 10, None)
    assert design.clock_mhz == 125 and design.clock_levels_mhz == (125.0, 75.0)


def test_default_design_has_no_clock_levels():
    """Without clock_levels_mhz nothing changes: the config, its digest inputs, the system's
    parameters and Verilog (no DCSC, no LEVEL) and the board top (no clock select)."""
    from amaranth.back import rtlil
    from gen.hw.system import HostSystem
    from gen.rtl import emit_verilog
    design = prepare_design(load_config(), progress=lambda line: None)
    assert design.config.clock_levels_mhz is None
    assert "clock_levels_mhz" not in design.config.as_dict()
    assert "clock_levels" not in design.system_params
    assert "levels" not in design.manifest()["clock"]
    assert design.pll.clkos2_div is None and design.clock_levels_mhz == (125.0,)
    text = emit_verilog(design.system(), "top")
    assert "DCSC" not in text and "level" not in text
    params = dict(design.system_params)
    assert emit_verilog(HostSystem(**params, clock_levels=1), "top") == text
    platform = design.board.platform_class()()
    plan = platform.prepare(design.top(), name="top")
    assert "DCSC" not in plan.files["top.il"] and "CLKOS2" not in plan.files["top.il"]


@pytest.mark.filterwarnings("ignore:.*created but never used")   # the refused BoardTop
def test_board_top_with_levels_switches_clkop_and_clkos2():
    design = prepare_design(parse_config(levels_raw([125, 62.5])), progress=lambda line: None)
    platform = design.board.platform_class()()
    plan = platform.prepare(design.top(), name="top")
    il, lpf = plan.files["top.il"], plan.files["top.lpf"]
    assert il.count("cell \\DCSC") == 1 and "parameter \\CLKOS2_DIV 12" in il
    assert "parameter \\DCSMODE \"POS\"" in il and "connect \\MODESEL 1'0" in il
    # Timing is closed at the fastest level; both PLL outputs are constrained too.
    assert 'FREQUENCY NET "clkop" 125000000.0 HZ;' in lpf
    assert 'FREQUENCY NET "clkos2" 62500000.0 HZ;' in lpf
    from types import SimpleNamespace
    from gen.hw.board_top import BoardTop
    no_levels = SimpleNamespace(uart_rx=None, uart_tx=None, busy=None, error=None)
    with pytest.raises(ValueError, match="CLKOS2 divider"):
        BoardTop(no_levels, design.pll)


@pytest.mark.parametrize("lanes, message", [
    (3, "array.drain_lanes: 3 is not a power of two"),
    (16, "array.drain_lanes: 16 does not divide array.cols (8)"),
    (0, "array.drain_lanes: 0 is outside [1, 64]"),
    ("4", "array.drain_lanes: expected int"),
])
def test_bad_drain_lanes_are_one_line_naming_the_field(lanes, message):
    raw = default_raw()
    raw["array"]["drain_lanes"] = lanes
    with pytest.raises(UserError) as info:
        parse_config(raw)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_drain_lanes_default_to_one_and_one_hashes_as_before():
    raw = default_raw()
    config = parse_config(raw)
    assert config.array.drain_lanes == 1 and "drain_lanes" not in config.as_dict()["array"]
    raw["array"]["drain_lanes"] = 4
    config = parse_config(raw)
    assert config.array.drain_lanes == 4 and config.as_dict()["array"]["drain_lanes"] == 4
    assert prepare_design(config, progress=lambda line: None).estimate.mult18 == 64 + 4 * 4


def test_a_weight_stationary_config_is_generated_with_its_accumulator_banks():
    """The second dataflow parses, and its estimate counts two banks of INT32 accumulators
    per column (one DP16KD each) on top of the output-stationary design's block RAMs."""
    from gen.config import parse_config
    from gen.estimate import estimate_resources
    raw = default_raw()
    os_estimate = estimate_resources(parse_config(raw))
    raw["array"]["dataflow"] = "weight_stationary"
    config = parse_config(raw)
    assert config.array.dataflow == "weight_stationary"
    assert estimate_resources(config).bram18k == os_estimate.bram18k + 2 * config.array.cols
