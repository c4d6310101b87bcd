"""Design configs: one YAML file says what to generate. Schema-checked before anything runs.

Every problem is reported with its place in the file (``array.rows``) and what to change.

Sizes (``array.rows/cols``, ``buffers.*``) may say ``auto``; an optional ``allocator`` section
says how to choose them. An optional ``clock_levels_mhz`` list asks for run-time accelerator
clock levels (docs/clocking.md); without it the design is exactly the one without levels. Loading a config never runs the allocator: it returns a
:class:`DesignConfig` whose ``auto_fields`` are still open, and the design stage
(:func:`gen.design.resolve_sizes`) fills them in. Data flows one way: this module knows nothing
of the allocator.
"""

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .errors import UserError
from .schema import check_mapping, show
from .yamlfile import read_yaml

__all__ = ["DesignConfig", "ArrayConfig", "BufferConfig", "HostConfig", "AllocatorConfig",
           "load_config", "parse_config", "check_name", "DEFAULT_CONFIG", "SCHEMA", "AUTO", "AUTO_FIELDS",
           "CLOCK_LEVELS"]

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
DATAFLOWS = ("output_stationary", "weight_stationary")
#: The value of a size left to the allocator, and the fields that may hold it.
AUTO = "auto"
#: Longest design name (it names a folder and a Verilog module).
MAX_NAME = 64
AUTO_FIELDS = (("array", "rows"), ("array", "cols"), ("buffers", "act_depth"),
               ("buffers", "wgt_depth"), ("buffers", "param_depth"), ("buffers", "out_depth"))
#: Run-time clock levels a design may have: the two inputs of one ECP5 DCSC
#: (`gen.hw.clock_select.CLOCK_SELECT_LEVELS`; docs/clocking.md says why one).
CLOCK_LEVELS = 2


@dataclass(frozen=True)
class ArrayConfig:
    rows: int | str          # str: AUTO, until the design stage resolves it
    cols: int | str
    dataflow: str
    drain_lanes: int = 1     # outputs drained per cycle (gen.hw.gemm.AccumulatorDrain)


@dataclass(frozen=True)
class BufferConfig:
    act_depth: int
    wgt_depth: int
    param_depth: int
    out_depth: int


@dataclass(frozen=True)
class HostConfig:
    baud: int


@dataclass(frozen=True)
class AllocatorConfig:
    """How ``auto`` sizes are chosen: the network to size for and the search's settings."""
    network: str = "default"
    objective: str = "latency"
    method: str = "rl_ga"
    evaluations: int = 3000
    seed: int = 0
    power_cap_mw: float | None = None


@dataclass(frozen=True)
class DesignConfig:
    name: str
    board: str
    clock_mhz: float
    array: ArrayConfig
    buffers: BufferConfig
    host: HostConfig
    allocator: AllocatorConfig | None = None
    #: Run-time accelerator clock levels in MHz, ``(clock_mhz, slower)``; None: no levels.
    clock_levels_mhz: tuple | None = None
    #: Where the config came from (a file name), for messages; not part of the design.
    source: str = field(default="config", compare=False)

    @property
    def auto_fields(self):
        """``(section, key)`` of the sizes that still say ``auto``."""
        return tuple((section, key) for section, key in AUTO_FIELDS
                     if getattr(getattr(self, section), key) == AUTO)

    def with_sizes(self, sizes, *, source="config"):
        """This config with ``{(section, key): value}`` filled in, checked like a file."""
        raw = self.as_dict()
        raw.pop("allocator", None)
        for (section, key), value in sizes.items():
            raw[section][key] = value
        return parse_config(raw, source=source)

    @property
    def module_name(self):
        """The Verilog name of the design's top module: a plain identifier (a ``-`` in the
        design name would make an escaped identifier that simulators' runners cannot name)."""
        return f"{self.name.replace('-', '_')}_system"

    def as_dict(self):
        raw = asdict(self)
        del raw["source"]
        if raw["allocator"] is None:
            del raw["allocator"]
        if raw["clock_levels_mhz"] is None:
            del raw["clock_levels_mhz"]       # a config without levels hashes as before
        else:
            raw["clock_levels_mhz"] = list(raw["clock_levels_mhz"])
        if raw["array"]["drain_lanes"] == 1:
            del raw["array"]["drain_lanes"]   # likewise one drain lane
        return raw

    def to_yaml(self):
        return yaml.safe_dump(self.as_dict(), sort_keys=False)


# (type, low, high, help) per leaf; sections are dicts. Ranges are inclusive.
SCHEMA = {
    "name": (str, None, None, "design name: letters, digits, '-' and '_'"),
    "board": (str, None, None, "a board from `python -m gen boards`"),
    "clock_mhz": (float, 10.0, 400.0, "accelerator clock in MHz, made by the ECP5 PLL"),
    "array": {
        "rows": (int, 1, 64, "PE array rows (outputs per column of a tile)"),
        "cols": (int, 1, 64, "PE array columns"),
        "dataflow": (str, None, None, f"one of {', '.join(DATAFLOWS)}"),
        "drain_lanes": (int, 1, 64, "outputs drained per cycle, optional (default 1): a power "
                                    "of two dividing array.cols; each lane adds a "
                                    "requantizer and its multipliers"),
    },
    "buffers": {
        "act_depth": (int, 16, 1 << 20, "activation buffer words (rows*8 bits each)"),
        "wgt_depth": (int, 16, 1 << 20, "weight buffer words (cols*8 bits each)"),
        "param_depth": (int, 1, 1 << 16, "output channels with bias/multiplier/shift"),
        "out_depth": (int, 16, 1 << 22, "output buffer bytes (M*N of the largest GEMM)"),
    },
    "host": {
        "baud": (int, 1200, 12_000_000, "UART baud rate of the USB serial link"),
    },
}

#: The optional ``allocator`` section; every key may be left out (defaults of
#: :class:`AllocatorConfig`).
ALLOCATOR_SCHEMA = {
    "network": (str, None, None, "a network from `python -m gen workloads`"),
    "objective": (str, None, None, "latency, energy, edp or throughput"),
    "method": (str, None, None, "a search method of `python -m gen alloc --help`"),
    "evaluations": (int, 1, 10_000_000, "cost-model evaluations the search may spend"),
    "seed": (int, 0, 2 ** 32 - 1, "the search's random seed"),
    "power_cap_mw": (float, 1.0, 1e6, "largest predicted power in mW"),
}


#: Keys of SCHEMA a config may leave out, with their defaults.
OPTIONAL_FIELDS = {"array.drain_lanes": 1}


def _walk(raw, schema):
    values = check_mapping(raw, schema, optional=tuple(OPTIONAL_FIELDS),
                           accept=lambda path, value: value == AUTO and
                           tuple(path.split(".")) in AUTO_FIELDS)
    for path, default in OPTIONAL_FIELDS.items():
        section, key = path.split(".")
        if values[section][key] is None:
            values[section][key] = default
    return values


def _allocator_section(raw):
    values = check_mapping(raw, ALLOCATOR_SCHEMA, "allocator", optional=ALLOCATOR_SCHEMA,
                           accept=lambda path, value: path == "allocator.power_cap_mw" and
                           value is None)
    return AllocatorConfig(**{key: value for key, value in values.items() if value is not None})


def check_name(name, where="name"):
    """Refuse a design name that could not name a build folder and a Verilog module."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,%d}"
                                                      % (MAX_NAME - 1), name):
        raise UserError(f"{where}: {show(name)} must start with a letter and hold at most "
                        f"{MAX_NAME} letters, digits, '-' and '_' (it names the build folder "
                        f"and the Verilog module)")
    return name


def parse_config(raw, *, source="config"):
    """Validate a config mapping and return a :class:`DesignConfig`."""
    try:
        levels = None
        if isinstance(raw, dict) and "allocator" in raw:
            raw = dict(raw)
            allocator = _allocator_section(raw.pop("allocator"))
        else:
            allocator = None
        if isinstance(raw, dict) and "clock_levels_mhz" in raw:
            raw = dict(raw)
            levels = raw.pop("clock_levels_mhz")
        values = _walk(raw, SCHEMA)
        if levels is not None:
            levels = _clock_levels(levels, values["clock_mhz"])
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    check_name(values["name"], f"{source}: name")
    dataflow = values["array"]["dataflow"]
    if dataflow not in DATAFLOWS:
        raise UserError(f"{source}: array.dataflow: {dataflow!r} is not available; "
                        f"use one of {', '.join(DATAFLOWS)}")
    if dataflow == "weight_stationary" and values["array"]["rows"] < 2:
        raise UserError(f"{source}: array.rows: a weight_stationary array needs at least 2 "
                        f"rows, not {values['array']['rows']}")
    _check_useful(values, source)
    config = DesignConfig(
        name=values["name"], board=values["board"], clock_mhz=values["clock_mhz"],
        array=ArrayConfig(**values["array"]), buffers=BufferConfig(**values["buffers"]),
        host=HostConfig(**values["host"]), allocator=allocator, clock_levels_mhz=levels,
        source=str(source))
    if allocator is not None and not config.auto_fields:
        raise UserError(f"{source}: allocator: given but no size says 'auto'")
    return config


def _clock_levels(raw, clock_mhz):
    """``clock_levels_mhz`` checked for its shape: ``[clock_mhz, a slower clock]`` (whether
    the PLL makes the slower one beside the others is the design stage's check)."""
    where = "clock_levels_mhz"
    help_text = (f"{CLOCK_LEVELS} accelerator clocks in MHz to switch among at run time, "
                 f"clock_mhz first, e.g. [{clock_mhz:g}, {clock_mhz / 2:g}]")
    if (not isinstance(raw, list) or len(raw) != CLOCK_LEVELS or
            any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in raw)):
        raise UserError(f"{where}: expected a list of {help_text}, got {show(raw)}")
    levels = tuple(float(x) for x in raw)
    if levels[0] != clock_mhz:
        raise UserError(f"{where}: the first level must be clock_mhz ({clock_mhz:g}, where "
                        f"timing is closed and the design starts), not {levels[0]:g}")
    if not 0 < levels[1] < clock_mhz:
        raise UserError(f"{where}: the second level, {levels[1]:g} MHz, must be slower than "
                        f"clock_mhz ({clock_mhz:g})")
    return levels


def _check_useful(values, source):
    """Refuse sizes that the schema allows one by one but that together make PEs no job can
    use (sizes still ``auto`` are checked once the allocator has chosen them)."""
    array, buffers = values["array"], values["buffers"]
    rows, cols = array["rows"], array["cols"]
    lanes = array["drain_lanes"]
    if lanes & (lanes - 1):
        raise UserError(f"{source}: array.drain_lanes: {lanes} is not a power of two; use "
                        f"1, 2, 4, 8 ...")
    if cols != AUTO and cols % lanes:
        raise UserError(f"{source}: array.drain_lanes: {lanes} does not divide array.cols "
                        f"({cols}); use a power of two that does, at most {cols & -cols}")
    if AUTO not in (cols, buffers["param_depth"]) and buffers["param_depth"] < cols:
        raise UserError(f"{source}: buffers.param_depth: {buffers['param_depth']} is below "
                        f"array.cols ({cols}), so columns beyond it never produce an output; "
                        f"set it to at least {cols}")
    if AUTO not in (rows, cols, buffers["out_depth"]) and buffers["out_depth"] < rows * cols:
        raise UserError(f"{source}: buffers.out_depth: {buffers['out_depth']} bytes cannot hold "
                        f"one {rows}x{cols} tile of outputs; set it to at least {rows * cols}")


def load_config(path=None, *, board=None):
    """Load and check a config file (the built-in default if ``path`` is None); ``board``
    overrides its board. Sizes that say ``auto`` stay open (:attr:`DesignConfig.auto_fields`).
    A file with a ``vit`` section is a ViT design (:class:`gen.vit.config.ViTConfig`)."""
    path = Path(path) if path else DEFAULT_CONFIG
    raw = read_yaml(path, "config file")
    if board is not None and isinstance(raw, dict):
        raw = dict(raw, board=board)
    from .vit.config import is_vit_config, parse_vit_config
    if is_vit_config(raw):
        return parse_vit_config(raw, source=str(path))
    return parse_config(raw, source=str(path))
