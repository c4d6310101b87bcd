"""The board link fails well: sizes and seeds checked before the port opens; a missing port, a
silent board and garbage replies are one line and a non-zero exit (a pseudo-terminal stands in
for the board)."""

import os
import pty
import threading

import pytest

from gen.__main__ import main


def run_gemm(capsys, *extra):
    try:
        code = main(["run-gemm", "--timeout", "0.3", *extra])
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("args, expected", [
    (["--port", "/dev/null", "--m", "0"], "argument --m: 0 must be 1 .. 65535"),
    (["--port", "/dev/null", "--seed", "-1"], "argument --seed: -1 is outside"),
    (["--port", "/dev/null", "--m", "512", "--k", "512"], "needs 32768 words of buffers.act_depth"),
    (["--port", "/no/such/port"], "--port /no/such/port: cannot open the serial port"),
    (["--port", "/dev/null", "--batch", "0"], "argument --batch: 0 must be 1 .. 65535"),
    (["--port", "/dev/null", "--m", "16", "--k", "16", "--n", "16", "--batch", "600"],
     "needs 19200 words of buffers.act_depth"),
    # Padded rows between the GEMMs of a batch count: 16 * 16 + 9 rows of 64.
    (["--port", "/dev/null", "--m", "9", "--k", "1", "--n", "64", "--batch", "17"],
     "needs 16960 words of buffers.out_depth"),
    (["--port", "/dev/null", "--config", "gen/configs/ulx3s-85f-8x8-ws.yaml", "--batch", "2"],
     "--batch 2: the weight_stationary engine"),
])
def test_bad_sizes_and_ports_are_one_line(capsys, args, expected):
    code, err = run_gemm(capsys, *args)
    assert code == 2 and expected in err and err.count("\n") == 0, err


@pytest.fixture
def fake_board():
    """A pseudo-terminal whose far end answers with ``reply`` bytes to anything."""
    controller, device = pty.openpty()
    state = {"reply": b""}

    def answer():
        while True:
            try:
                data = os.read(controller, 1024)
            except OSError:
                return
            if data and state["reply"]:
                os.write(controller, state["reply"])
    threading.Thread(target=answer, daemon=True).start()
    yield os.ttyname(device), state
    os.close(controller)
    os.close(device)


def test_a_silent_board_says_what_to_check(capsys, fake_board):
    port, _ = fake_board
    code, err = run_gemm(capsys, "--port", port, "--m", "8", "--k", "8", "--n", "8")
    assert code == 2 and err.count("\n") == 0, err
    from gen.config import load_config
    assert "is the bitstream loaded" in err and f"baud rate {load_config().host.baud}" in err


def test_garbage_replies_are_one_line(capsys, fake_board):
    port, state = fake_board
    state["reply"] = b"Z" * 64
    code, err = run_gemm(capsys, "--port", port, "--m", "8", "--k", "8", "--n", "8")
    assert code == 2 and err.count("\n") == 0 and "expected an OK byte" in err, err
    state["reply"] = b"K" + b"XXXX" + bytes(60)
    code, err = run_gemm(capsys, "--port", port, "--m", "8", "--k", "8", "--n", "8")
    assert code == 2 and "bad magic" in err, err


def test_program_needs_an_intact_build(tmp_path, capsys):
    code = main(["program", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no intact build" in err and err.count("\n") == 0, err


def board_rtlil(baud):
    """The board top of a small design at ``baud`` as the build elaborates it (RTLIL, no
    synthesis), and the design."""
    import yaml
    from gen.config import DEFAULT_CONFIG, parse_config
    from gen.design import prepare_design
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["array"].update(rows=2, cols=2)
    raw["buffers"].update(act_depth=256, wgt_depth=256, param_depth=16, out_depth=1024)
    raw["host"]["baud"] = baud
    design = prepare_design(parse_config(raw))
    plan = design.board.platform_class()().prepare(design.top(), name="top")
    return design, plan.files["top.il"], plan.files["top.lpf"]


def ehxplll(rtlil):
    """Parameters, attributes and connections of the one EHXPLLL cell."""
    import re
    lines = rtlil.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("  cell \\EHXPLLL ")]
    first = at
    while lines[first - 1].startswith("  attribute "):
        first -= 1
    end = lines.index("  end", at)
    text = "\n".join(lines[first:end])
    params = {k: v.strip('"') for k, v in re.findall(r"parameter \\(\w+) (.*)", text)}
    attrs = {k: v.strip('"') for k, v in re.findall(r"attribute \\(\w+) (.*)", text)}
    connects = dict(re.findall(r"connect \\(\w+) (.*)", text))
    return params, attrs, connects


def test_3_mbaud_board_top_clocks_the_host_link_from_clkos():
    """The PLL as the bitstream gets it: its outputs recomputed from the instance's own
    dividers (CLKOP fed back) are the accelerator clock and a host clock that the UART
    divisor divides to 3 Mbaud exactly, within the ECP5 PLL's limits; the host clock net
    carries a constraint at that frequency."""
    from fractions import Fraction
    design, rtlil, lpf = board_rtlil(3_000_000)
    params, attrs, connects = ehxplll(rtlil)
    pfd = Fraction(25) / int(params["CLKI_DIV"])
    clkop = pfd * int(params["CLKFB_DIV"])
    vco = clkop * int(params["CLKOP_DIV"])
    clkos = vco / int(params["CLKOS_DIV"])
    assert params["FEEDBK_PATH"] == "CLKOP" and params["CLKOS_ENABLE"] == "ENABLED"
    assert 3.125 <= pfd <= 400 and 400 <= vco <= 800 and 3.125 <= clkos <= 400
    assert clkop == design.config.clock_mhz == 125
    assert clkos * 10 ** 6 / design.uart_divisor == 3_000_000
    assert float(attrs["FREQUENCY_PIN_CLKOS"]) == clkos == design.host_clock_mhz
    assert connects["CLKOS"].strip() == "\\host_clk"
    assert f"{float(clkos) * 1e6} HZ" in lpf


def test_1_mbaud_board_top_runs_the_host_link_from_the_oscillator():
    design, rtlil, _ = board_rtlil(1_000_000)
    params, _, connects = ehxplll(rtlil)
    assert "CLKOS_ENABLE" not in params and "CLKOS" not in connects
    assert design.host_clock_source == "oscillator" and design.uart_divisor == 25


def test_link_byte_model_counts_what_the_driver_sends():
    """`gemm_link_bytes` (what `gen check` reports) against the bytes the driver moves through
    a transport that answers like the device (one STATUS poll: done at once)."""
    import asyncio
    import struct

    import numpy as np

    from gen.host.driver import Driver, gemm_link_bytes
    from gen.hw.host_bridge import PROTOCOL_VERSION

    class Device:
        def __init__(self):
            self.replies, self.count = bytearray(), 0

        async def write(self, data):
            self.count += len(data)
            command = data[0]
            if command == ord("I"):
                self.replies += b"K" + b"GEMM" + bytes([PROTOCOL_VERSION, 8, 8, 0]) + struct.pack(
                    "<4I", 4096, 4096, 512, 1 << 16)
            elif command == ord("P"):
                self.replies += b"K\x02"
            elif command == ord("C"):
                self.replies += b"K" + bytes(4)
            elif command == ord("R"):
                self.replies += b"K" + bytes(struct.unpack("<BBII", data[:10])[3])
            else:
                self.replies += b"K"

        async def read(self, n):
            out, self.replies = bytes(self.replies[:n]), self.replies[n:]
            self.count += n
            return out

    for m, k, n in [(128, 128, 128), (7, 9, 10), (200, 3, 65)]:
        device = Device()
        driver = Driver(device)
        asyncio.run(driver.info())
        device.count = 0
        asyncio.run(driver.gemm(np.zeros((m, k), dtype=np.int64), np.zeros((k, n), dtype=np.int64),
                                np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64),
                                np.ones(n, dtype=np.int64)))
        assert device.count == gemm_link_bytes(m, k, n, 8, 8)["total"], (m, k, n)
    for batch, m, k, n in [(2, 16, 16, 16), (5, 7, 9, 10)]:
        device = Device()
        driver = Driver(device)
        asyncio.run(driver.info())
        device.count = 0
        asyncio.run(driver.gemm_batch(
            np.zeros((batch, m, k), dtype=np.int64), np.zeros((batch, k, n), dtype=np.int64),
            np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64)))
        assert device.count == gemm_link_bytes(m, k, n, 8, 8, batch=batch)["total"], (batch, m)


def test_board_top_puts_the_accelerator_reset_on_a_global_network():
    """The `sync` domain's reset leaves its synchronizer through one DCCA (a global buffer):
    it reaches most flip-flops of a design, far too many sinks for fabric routing."""
    import re
    _, rtlil, _ = board_rtlil(1_000_000)
    cells = re.findall(r"  cell \\DCCA (\S+)\n(.*?)\n  end", rtlil, re.S)
    assert len(cells) == 1, [name for name, _ in cells]
    connects = dict(re.findall(r"connect \\(\w+) (.*)", cells[0][1]))
    assert connects["CE"].strip() == "1'1" and connects["CLKO"].strip() == "\\rst"
