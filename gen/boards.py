"""Board descriptions from ``boards/*.yaml``: device, resource budget and Amaranth platform."""

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .schema import check_mapping, show
from .yamlfile import read_yaml

__all__ = ["Board", "Budget", "Resources", "BOARDS_DIR", "BOARD_SCHEMA", "load_boards",
           "get_board"]

def _boards_dir():
    """``boards/`` of a checkout, else the board files installed as ``gen.board_files``."""
    checkout = Path(__file__).resolve().parent.parent / "boards"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "board_files"


BOARDS_DIR = _boards_dir()


@dataclass(frozen=True)
class Resources:
    """FPGA resources: LUT4s, flip-flops, 18x18 multipliers, 18 Kbit block RAMs."""
    lut4: int
    ff: int
    mult18: int
    bram18k: int

    def as_dict(self):
        return {"lut4": self.lut4, "ff": self.ff, "mult18": self.mult18, "bram18k": self.bram18k}


#: A board's resource budget.
Budget = Resources


@dataclass(frozen=True)
class Board:
    name: str
    aliases: tuple
    description: str
    device: str
    package: str
    speed_grade: int
    nextpnr_device: str
    oscillator_mhz: float
    platform: str
    budget: Budget
    default_clock_mhz: float
    uart_resource: str
    uart_max_baud: int

    def platform_class(self):
        module, _, name = self.platform.partition(":")
        return getattr(importlib.import_module(module), name)

    def nextpnr_args(self):
        return [f"--{self.nextpnr_device}", "--package", self.package,
                "--speed", str(self.speed_grade)]


#: The schema of a board file (``boards/*.yaml``); ``aliases`` may be left out.
BOARD_SCHEMA = {
    "name": (str, None, None, "the board's name, as `--board` takes it"),
    "aliases": (list, None, None, "other names for the board, a list of strings"),
    "description": (str, None, None, "one line about the board"),
    "device": (str, None, None, "the FPGA, e.g. LFE5U-85F"),
    "package": (str, None, None, "the FPGA package, e.g. CABGA381"),
    "speed_grade": (int, 6, 8, "ECP5 speed grade"),
    "nextpnr_device": (str, None, None, "nextpnr-ecp5's device flag without dashes, e.g. 85k"),
    "oscillator_mhz": (float, 1.0, 500.0, "the board oscillator that feeds the PLL, in MHz"),
    "platform": (str, None, None, "the Amaranth platform as module:Class"),
    "budget": {
        "lut4": (int, 1, 10_000_000, "LUT4s of the device"),
        "ff": (int, 1, 10_000_000, "flip-flops of the device"),
        "mult18": (int, 0, 100_000, "18x18 multipliers (MULT18X18D)"),
        "bram18k": (int, 0, 100_000, "18 Kbit block RAMs (DP16KD)"),
    },
    "default_clock_mhz": (float, 10.0, 400.0, "the accelerator clock to use by default"),
    "uart": {
        "resource": (str, None, None, "the platform's UART resource name"),
        "max_baud": (int, 1200, 12_000_000, "the USB serial bridge's fastest baud rate"),
    },
}
NEXTPNR_DEVICES = ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k",
                   "um5g-45k", "um5g-85k")


def _board_from_yaml(path):
    raw = read_yaml(path, "board file")
    try:
        values = check_mapping(raw, BOARD_SCHEMA, optional=("aliases",))
        aliases = values["aliases"] or []
        if not values["name"].strip():
            raise UserError("name: a board needs a name (what `--board` takes), not an empty "
                            "string")
        if not all(isinstance(alias, str) and alias for alias in aliases):
            raise UserError("aliases: expected a list of names (strings)")
        if values["nextpnr_device"] not in NEXTPNR_DEVICES:
            raise UserError(f"nextpnr_device: {show(values['nextpnr_device'])} is not one of "
                            f"{', '.join(NEXTPNR_DEVICES)}")
        module, colon, name = values["platform"].partition(":")
        if not (colon and module and name):
            raise UserError(f"platform: {show(values['platform'])} must be module:Class, e.g. "
                            f"amaranth_boards.ulx3s:ULX3S_85F_Platform")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return Board(
        name=values["name"], aliases=tuple(aliases), description=values["description"],
        device=values["device"], package=values["package"], speed_grade=values["speed_grade"],
        nextpnr_device=values["nextpnr_device"], oscillator_mhz=values["oscillator_mhz"],
        platform=values["platform"], budget=Budget(**values["budget"]),
        default_clock_mhz=values["default_clock_mhz"],
        uart_resource=values["uart"]["resource"], uart_max_baud=values["uart"]["max_baud"])


def load_boards(directory=BOARDS_DIR, problems=None):
    """All good boards, by name, in name order. A bad board file does not break the others:
    its one-line error goes to ``problems`` (a list) when given, and is skipped."""
    boards = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            board = _board_from_yaml(path)
            if board.name in boards:
                raise UserError(f"{path}: name: {board.name!r} is also the name of another "
                                f"board file; names must be unique")
        except UserError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        boards[board.name] = board
    return boards


def get_board(name, directory=BOARDS_DIR):
    problems = []
    boards = load_boards(directory, problems)
    lookup = dict(boards)
    for board in boards.values():
        for alias in board.aliases:
            lookup[alias] = board
    if name in lookup:
        return lookup[name]
    close = difflib.get_close_matches(name, lookup, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = ", ".join(f"{b.name}" + (f" (alias {', '.join(b.aliases)})" if b.aliases else "")
                      for b in boards.values())
    broken = [p for p in problems if Path(p.split(":", 1)[0]).stem == name]
    if broken:        # the board asked for is there, but its file is bad: say why
        raise UserError(broken[0])
    raise UserError(f"unknown board {show(name)}.{hint} Known boards: {known}")
