"""Board descriptions from ``boards/*.yaml``: device, resource budget and Amaranth platform."""

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import UserError

__all__ = ["Board", "Budget", "Resources", "BOARDS_DIR", "load_boards", "get_board"]

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"


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


def _board_from_yaml(path):
    raw = yaml.safe_load(path.read_text())
    try:
        return Board(
            name=raw["name"], aliases=tuple(raw.get("aliases", ())),
            description=raw["description"], device=raw["device"], package=raw["package"],
            speed_grade=int(raw["speed_grade"]), nextpnr_device=raw["nextpnr_device"],
            oscillator_mhz=float(raw["oscillator_mhz"]), platform=raw["platform"],
            budget=Budget(**raw["budget"]),
            default_clock_mhz=float(raw["default_clock_mhz"]),
            uart_resource=raw["uart"]["resource"], uart_max_baud=int(raw["uart"]["max_baud"]))
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: malformed board file ({exc})") from None


def load_boards(directory=BOARDS_DIR):
    """All boards, by name, in name order."""
    boards = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        board = _board_from_yaml(path)
        boards[board.name] = board
    return boards


def get_board(name, directory=BOARDS_DIR):
    boards = load_boards(directory)
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
    raise UserError(f"unknown board {name!r}.{hint} Known boards: {known}")
