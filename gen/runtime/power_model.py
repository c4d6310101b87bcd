"""Power model of a generated GEMM design on the ECP5-85F (issue 11, point 3).

::

    P = P_static + f_MHz * 1e-6 * ( sum_c N_c * a_c * E_c  +  N_ff * E_clock )      [W]

``c`` runs over the resource classes (:data:`RESOURCE_CLASSES`: LUT4s, flip-flops, MULT18X18D
multipliers, DP16KD block RAMs), ``N_c`` is the design's count of that class (the resource
estimate of :mod:`gen.estimate`, or a build report's ``used`` counts), ``a_c`` its switching
activity and ``E_c`` the energy of one unit of activity in picojoules (pJ x MHz = uW). The
clock tree toggles every cycle; its load is taken as proportional to the flip-flops it clocks.

Activity (``a_c``) is measured, not assumed: toggles per bit per cycle from Verilator's toggle
coverage of the design running the digits ViT's real operands at each batch size
(``python -m verif.measure_activity`` writes :data:`ACTIVITY_FILE`; docs/runtime.md). LUTs take
the toggle rate of the RTL's combinational nets (a proxy: Verilator sees nets, not mapped
LUTs), flip-flops that of its registers, multipliers that of their operand registers; block
RAMs take read accesses per cycle per block, which is structural: the operand buffers read
every cycle, busy or idle.

Energies are in :data:`CONSTANTS`, each with its source; ``assumption=True`` marks the ones no
published figure was found for (all the per-toggle energies): a power computed with them is a
WHAT-IF and is labelled so (:attr:`PowerModel.label`).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["RESOURCE_CLASSES", "ACTIVITY_CLASSES", "Constant", "CONSTANTS", "ACTIVITY_FILE",
           "Activity", "load_activity", "PowerModel", "check_resources"]

#: Resource classes, named as gen.estimate / gen.boards.Resources name them.
RESOURCE_CLASSES = ("lut4", "ff", "mult18", "bram18k")
#: The measured activity class of each resource class (keys of the activity file).
ACTIVITY_CLASSES = {"lut4": "lut", "ff": "ff", "mult18": "mult", "bram18k": "bram"}
ACTIVITY_FILE = Path(__file__).resolve().parent / "activity_default.json"


@dataclass(frozen=True)
class Constant:
    """One constant of the model: value, unit, where it comes from, and whether it is an
    assumption (no published figure behind it)."""
    value: float
    unit: str
    source: str
    assumption: bool


#: Every constant of the model, in one table (docs/runtime.md shows it).
CONSTANTS = {
    "p_static_w": Constant(
        0.233, "W",
        "1.1 V x 212 mA: the ECP5-85F's VCC (core) current as quoted by G. Davill, "
        "https://github.com/butterstick-fpga/butterstick-hardware/issues/2 (2019: 'ranges from "
        "77mA on the 12F to 212mA on the 85F'), presumably the DS1044 data sheet's figure, which "
        "could not be read here; core rail only (VCCAUX, VCCIO and the board are left out)",
        False),
    "e_lut4_pj": Constant(
        0.30, "pJ per LUT4 output toggle",
        "assumption: 1/2 C V^2 with C = 0.5 pF for a LUT output and its routing at VCC 1.1 V "
        "(no ECP5 per-LUT figure found; Lattice TN1266 leaves it to the Power Calculator)",
        True),
    "e_ff_pj": Constant(
        0.20, "pJ per flip-flop output toggle",
        "assumption: 1/2 C V^2 with C = 0.33 pF (register output and local routing)", True),
    "e_mult18_pj": Constant(
        4.0, "pJ per MULT18X18D cycle with every operand bit toggling",
        "assumption: an 18x18 array multiplier of about 5 pF switched capacitance, "
        "1/2 C V^2 at 1.1 V, scaled by the operand toggle rate", True),
    "e_bram18k_pj": Constant(
        6.0, "pJ per DP16KD read access",
        "assumption: a read of one 18 kbit block (bit lines, sense amplifiers, output "
        "register) in a 40 nm process", True),
    "e_clock_pj_per_ff": Constant(
        0.025, "pJ per flip-flop per cycle",
        "assumption: about 10 fF of clock pin and local clock routing per flip-flop, C V^2 per "
        "cycle (both edges), doubled for the global spines and row buffers", True),
}


def _number(where, value, *, lo=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < lo:
        raise UserError(f"{where}: {value!r} must be a finite number >= {lo:g}")
    return float(value)


def check_resources(resources, where="resources"):
    """``{class: count}`` for every class of :data:`RESOURCE_CLASSES`, each an integer >= 0."""
    if hasattr(resources, "as_dict"):
        resources = resources.as_dict()
    if not isinstance(resources, dict):
        raise UserError(f"{where}: expected a mapping of {', '.join(RESOURCE_CLASSES)}")
    unknown = sorted(map(str, set(resources) - set(RESOURCE_CLASSES)))
    if unknown:
        raise UserError(f"{where}: unknown resource class {unknown[0]!r}; known: "
                        f"{', '.join(RESOURCE_CLASSES)}")
    out = {}
    for key in RESOURCE_CLASSES:
        if key not in resources:
            raise UserError(f"{where}: {key}: missing")
        value = resources[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{where}: {key}: {value!r} must be an integer count >= 0")
        out[key] = int(value)
    return out


class Activity:
    """Measured activity per class, busy at each measured batch size and idle.

    ``busy``: ``{batch: {class: rate}}``; ``idle``: ``{class: rate}``; classes are the values
    of :data:`ACTIVITY_CLASSES`. Between measured batches the rate is interpolated linearly;
    outside them it is the nearest measured batch's (:meth:`measured` says which apply).
    """

    def __init__(self, busy, idle, design=None, source="given"):
        classes = sorted(ACTIVITY_CLASSES.values())
        if not isinstance(busy, dict) or not busy:
            raise UserError(f"{source}: activity: needs at least one measured batch")
        self.batches = tuple(sorted(self._batch(source, b) for b in busy))
        if len(set(self.batches)) != len(self.batches):
            raise UserError(f"{source}: activity: a batch is given twice")
        rows = {self._batch(source, b): rates for b, rates in busy.items()}
        self._busy = {c: np.array([self._rate(source, f"batch {b}", rows[b], c)
                                   for b in self.batches]) for c in classes}
        self._idle = {c: self._rate(source, "idle", idle, c) for c in classes}
        self.design = dict(design or {})
        self.source = source

    @staticmethod
    def _batch(source, b):
        try:
            value = int(b)
        except (TypeError, ValueError):
            raise UserError(f"{source}: activity: batch {b!r} is not an integer") from None
        if value < 1 or str(value) != str(b).strip():
            raise UserError(f"{source}: activity: batch {b!r} must be an integer >= 1")
        return value

    @staticmethod
    def _rate(source, where, rates, cls):
        if not isinstance(rates, dict) or cls not in rates:
            raise UserError(f"{source}: activity {where}: {cls}: missing")
        value = _number(f"{source}: activity {where}: {cls}", rates[cls])
        if value > 2.0:   # a bit toggles at most once a cycle (twice with a glitch-free DDR)
            raise UserError(f"{source}: activity {where}: {cls}: {value:g} toggles per bit per "
                            f"cycle is more than a bit can make")
        return value

    def measured(self, batch):
        """Whether ``batch`` lies within the measured batch sizes."""
        return self.batches[0] <= batch <= self.batches[-1]

    def at(self, batch=None):
        """``{class: rate}`` busy at ``batch`` (None: idle)."""
        if batch is None:
            return dict(self._idle)
        batch = _number("batch", batch, lo=1)
        return {c: float(np.interp(batch, self.batches, rates))
                for c, rates in self._busy.items()}


def load_activity(path=None):
    """The activity file written by ``python -m verif.measure_activity`` (None: the default
    design's, :data:`ACTIVITY_FILE`)."""
    path = Path(path) if path else ACTIVITY_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no activity file; run `python -m verif.measure_activity`") \
            from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable activity file ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("batches"), dict) or \
            not isinstance(raw.get("bram_reads_per_cycle"), dict):
        raise UserError(f"{path}: expected batches and bram_reads_per_cycle (the output of "
                        f"`python -m verif.measure_activity`)")
    reads = raw["bram_reads_per_cycle"]
    busy = {b: dict(rates, bram=reads.get("busy")) if isinstance(rates, dict) else rates
            for b, rates in raw["batches"].items()}
    idle = raw.get("idle")
    idle = dict(idle, bram=reads.get("idle")) if isinstance(idle, dict) else idle
    return Activity(busy, idle, raw.get("design"), str(path))


class PowerModel:
    """``P(f, batch)`` of one design (the module docstring's formula).

    ``resources``: ``{class: count}`` (:data:`RESOURCE_CLASSES`); ``activity``: an
    :class:`Activity` (None: :func:`load_activity`); ``levels_mhz``: the frequencies the design
    runs at (a power at any other frequency is refused); ``constants``: overrides of
    :data:`CONSTANTS` values; ``bram_reads_share``: the fraction of the block RAMs whose reads
    the activity's read rate applies to (the others are read only now and then: 0).
    """

    #: Where the resource counts came from (``for_design`` says which).
    resource_source = "given"

    def __init__(self, resources, levels_mhz, activity=None, constants=None,
                 bram_reads_share=1.0):
        self.resources = check_resources(resources)
        if isinstance(levels_mhz, (str, bytes)) or not hasattr(levels_mhz, "__iter__"):
            raise UserError(f"levels_mhz: {levels_mhz!r} must be a list of frequencies in MHz")
        levels = tuple(_number("levels_mhz", f) for f in levels_mhz)
        if not levels or min(levels) <= 0:
            raise UserError("levels_mhz: needs at least one frequency above 0 MHz")
        self.levels_mhz = tuple(sorted(set(levels)))
        self.activity = activity if activity is not None else load_activity()
        if constants is not None and not isinstance(constants, dict):
            raise UserError(f"power: expected a mapping of constants "
                            f"({', '.join(CONSTANTS)})")
        unknown = sorted(map(str, set(constants or {}) - set(CONSTANTS)))
        if unknown:
            raise UserError(f"power: unknown constant {unknown[0]!r}; known: "
                            f"{', '.join(CONSTANTS)}")
        self.constants = {k: c.value for k, c in CONSTANTS.items()}
        for key, value in (constants or {}).items():
            self.constants[key] = _number(f"power.{key}", value)
        self.bram_reads_share = _number("bram_reads_share", bram_reads_share)
        if self.bram_reads_share > 1:
            raise UserError(f"bram_reads_share: {bram_reads_share!r} must be at most 1")

    @classmethod
    def for_design(cls, config, levels_mhz, activity=None, constants=None, report=None):
        """The model of a GEMM design config: resources from ``report`` (a build's
        report.json: its ``used`` counts) or else from :func:`gen.estimate.estimate_resources`;
        the operand buffers' share of the block RAMs is what the activity's reads apply to."""
        from ..estimate import bram_blocks, estimate_resources
        if report is None:
            resources = estimate_resources(config).as_dict()
        else:
            resources = _report_resources(report)
        b = config.buffers
        operand = (bram_blocks(8, b.act_depth) * config.array.rows +
                   bram_blocks(8, b.wgt_depth) * config.array.cols)
        share = min(1.0, operand / resources["bram18k"]) if resources["bram18k"] else 0.0
        model = cls(resources, levels_mhz, activity, constants, bram_reads_share=share)
        model.resource_source = "build report" if report is not None else "gen.estimate"
        return model

    @property
    def assumptions(self):
        """Names of the constants that are assumptions (none overridden counts as measured)."""
        return tuple(k for k, c in CONSTANTS.items() if c.assumption)

    @property
    def label(self):
        """How to label a power from this model."""
        if self.assumptions:
            return (f"WHAT-IF: measured activity, assumed energies "
                    f"({', '.join(self.assumptions)})")
        return "model from measured activity and published constants"

    def _check_mhz(self, mhz):
        mhz = _number("frequency", mhz)
        if not any(abs(mhz - f) <= 1e-9 * max(1.0, f) for f in self.levels_mhz):
            raise UserError(f"frequency {mhz:g} MHz is not a level; levels: "
                            f"{', '.join(f'{f:g}' for f in self.levels_mhz)} MHz")
        return mhz

    def breakdown_w(self, mhz, batch=None):
        """``{static, lut4, ff, mult18, bram18k, clock}`` in W at ``mhz`` (a level) busy at
        ``batch`` (None: idle)."""
        mhz = self._check_mhz(mhz)
        if batch is not None and (isinstance(batch, bool) or
                                  not isinstance(batch, (int, np.integer)) or batch < 1):
            raise UserError(f"batch {batch!r} must be an integer >= 1 (None: idle)")
        rates = self.activity.at(batch)
        k, n = self.constants, self.resources
        scale = mhz * 1e-6                      # pJ x MHz = uW
        out = {"static": k["p_static_w"]}
        for cls in ("lut4", "ff", "mult18"):
            out[cls] = scale * n[cls] * rates[ACTIVITY_CLASSES[cls]] * k[f"e_{cls}_pj"]
        out["bram18k"] = (scale * n["bram18k"] * self.bram_reads_share * rates["bram"] *
                          k["e_bram18k_pj"])
        out["clock"] = scale * n["ff"] * k["e_clock_pj_per_ff"]
        return out

    def power_w(self, mhz, batch=None):
        """Total power in W at ``mhz`` busy at ``batch`` (None: idle)."""
        return sum(self.breakdown_w(mhz, batch).values())

    def table(self, batches):
        """Power in W busy, shape (levels, len(batches))."""
        return np.array([[self.power_w(f, b) for b in batches] for f in self.levels_mhz])


def _report_resources(report):
    """The ``used`` counts of a build report (a path or its loaded dict)."""
    where = "report"
    if isinstance(report, (str, Path)):
        where = str(report)
        try:
            report = json.loads(Path(report).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}: not a readable build report ({exc})") from None
    res = report.get("resources") if isinstance(report, dict) else None
    if not isinstance(res, dict):
        raise UserError(f"{where}: has no resources (a report.json of `python -m gen build`)")
    return check_resources({k: (v.get("used") if isinstance(v, dict) else v)
                            for k, v in res.items()}, f"{where}: resources")
