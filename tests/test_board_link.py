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
    assert "is the bitstream loaded" in err and "baud rate 1000000" in err


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
