"""The measured timing frontier: for each clock, the largest PE array known to close timing.

``python -m gen sweep`` builds a grid of designs (array shapes x clocks x place-and-route
seeds) and derives the frontier from the results with :func:`compute_frontier`; it writes it
with :func:`write_frontier`. The allocator's timing constraint reads the committed file
(:data:`DEFAULT_FRONTIER`) with :func:`load_frontier`, which returns the same shape of data as
the two points that were written by hand before (``((100.0, 128), (125.0, 64))``).

The rule (stated in every file this module writes):

* a build *met* timing when nextpnr reported every clock at or above its constraint;
* a design (array shape, clock) met timing under ``any_seed`` when at least one of its seeds met
  it (a build can be rerun with that seed: ``gen build --seed``), under ``all_seeds`` when
  every seed that finished met it; it *failed* when seeds finished and none (``any_seed``) or
  not all (``all_seeds``) met it; a design with no finished seed (tool failure) says nothing;
* at a clock, the frontier is the largest PE count of a design that met timing there such that
  no design with as many PEs or fewer failed there (so every swept array up to it closed);
* a design that met timing at a clock meets it at every lower clock, so the frontier at a clock
  is at least the frontier at any higher clock (it never grows with the clock);
* a clock at which no design met timing has no entry.

A frontier file is YAML; every problem with one is a :class:`UserError` naming the file and
the field.
"""

import math
import textwrap
from pathlib import Path

import yaml

from .artifacts import write_atomic
from .errors import UserError
from .schema import check_mapping
from .yamlfile import read_yaml

__all__ = ["DEFAULT_FRONTIER", "RULES", "compute_frontier", "frontier_document",
           "write_frontier", "read_frontier", "load_frontier"]

#: The committed frontier of the ULX3S-85F (regenerate: README, "Design-space sweeps").
DEFAULT_FRONTIER = Path(__file__).resolve().parent / "configs" / "sweep-85f-frontier.yaml"

RULES = {
    "any_seed": "a design met timing at a clock if at least one of its place-and-route seeds "
                "met it",
    "all_seeds": "a design met timing at a clock only if every finished place-and-route seed "
                 "met it",
}

_RULE_TEXT = ("at a clock: the largest PE count of a design that met timing there with no "
              "design of as many PEs or fewer failing there; never less than at a higher clock")

FILE_SCHEMA = {
    "board": (str, None, None, "the board the designs were built for"),
    "rule": (str, None, None, f"one of {', '.join(RULES)}"),
    "source": (str, None, None, "how the file was made"),
    "frontier": (list, None, None, "a list of {clock_mhz, max_pes, ...} entries"),
}
ENTRY_SCHEMA = {
    "clock_mhz": (float, 1.0, 1000.0, "target clock in MHz"),
    "max_pes": (int, 1, 1 << 16, "largest PE count that closed timing at the clock"),
    "array": (str, None, None, "the array (ROWSxCOLS) that set max_pes"),
    "fmax_mhz": (float, 0.0, 10000.0, "its best achieved Fmax"),
    "seeds_met": (int, 0, 1 << 16, "its seeds that met timing"),
    "seeds": (int, 0, 1 << 16, "its seeds that finished"),
}
ENTRY_OPTIONAL = ("array", "fmax_mhz", "seeds_met", "seeds")


def _design_verdicts(results, rule):
    """``{(clock, rows, cols): (met, best_fmax, seeds_met, seeds)}`` over finished builds."""
    if rule not in RULES:
        raise UserError(f"frontier rule: {rule!r} is not one of {', '.join(RULES)}")
    groups = {}
    for r in results:
        if r.get("status") != "ok":
            continue                       # a failed or refused build says nothing of timing
        key = (float(r["clock_mhz"]), int(r["rows"]), int(r["cols"]))
        groups.setdefault(key, []).append(r)
    verdicts = {}
    for key, runs in groups.items():
        met = sum(1 for r in runs if r["timing_met"])
        ok = met >= 1 if rule == "any_seed" else met == len(runs)
        fmaxes = [r["fmax_mhz"] for r in runs if r.get("fmax_mhz") is not None]
        verdicts[key] = (ok, max(fmaxes) if fmaxes else None, met, len(runs))
    return verdicts


def compute_frontier(results, rule="any_seed"):
    """The frontier entries (ascending clock) from sweep results (dicts with ``status``,
    ``clock_mhz``, ``rows``, ``cols``, ``timing_met``, ``fmax_mhz``), by :data:`RULES`."""
    by_clock = {}
    for (clock, rows, cols), (ok, fmax, met, seeds) in _design_verdicts(results, rule).items():
        by_clock.setdefault(clock, []).append((rows * cols, ok, fmax or 0.0, rows, cols, met,
                                               seeds))
    own = {}
    for clock, designs in by_clock.items():
        first_failure = min((d[0] for d in designs if not d[1]), default=math.inf)
        passing = [d for d in designs if d[1] and d[0] < first_failure]
        if passing:
            pes, _, fmax, rows, cols, met, seeds = max(passing, key=lambda d: (d[0], d[2]))
            own[clock] = {"clock_mhz": clock, "max_pes": pes, "array": f"{rows}x{cols}",
                          "fmax_mhz": round(fmax, 2), "seeds_met": met, "seeds": seeds}
    # What closes at a clock closes below it: the higher clocks' frontier is carried down.
    entries, carried = [], None
    for clock in sorted(by_clock, reverse=True):
        entry = own.get(clock)
        if carried is not None and (entry is None or carried["max_pes"] > entry["max_pes"]):
            entry = dict(carried, clock_mhz=clock)
        if entry is not None:
            entries.append(entry)
            carried = entry
    return sorted(entries, key=lambda e: e["clock_mhz"])


def frontier_document(entries, *, board, rule, source):
    """The frontier file's content (a dict) for ``entries`` of :func:`compute_frontier`."""
    return {"board": board, "rule": rule, "source": source, "frontier": entries}


def write_frontier(path, document):
    """Write ``document`` as a frontier file (atomically), its rule stated in the header."""
    check_document(document, str(path))
    header = textwrap.wrap(
        "Measured timing frontier (gen/timing_frontier.py reads it; the allocator's timing "
        "constraint uses it); regenerate it as README.md, Design-space sweeps, says. "
        f"Rule ({document['rule']}): {RULES[document['rule']]}; {_RULE_TEXT}.", 90,
        initial_indent="# ", subsequent_indent="# ")
    text = "\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False, width=90)
    write_atomic(path, text)
    return Path(path)


def check_document(raw, source):
    """``raw`` (a parsed frontier file) checked; a UserError names ``source`` and the field."""
    try:
        values = check_mapping(raw, FILE_SCHEMA, "")
        if values["rule"] not in RULES:
            raise UserError(f"rule: {values['rule']!r} is not one of {', '.join(RULES)}")
        if not values["frontier"]:
            raise UserError("frontier: is empty; it needs at least one {clock_mhz, max_pes}")
        entries = []
        for i, entry in enumerate(values["frontier"]):
            where = f"frontier[{i}]"
            checked = check_mapping(entry, ENTRY_SCHEMA, where, optional=ENTRY_OPTIONAL)
            if not math.isfinite(checked["clock_mhz"]):
                raise UserError(f"{where}.clock_mhz: must be a finite number")
            if entries and checked["clock_mhz"] <= entries[-1]["clock_mhz"]:
                raise UserError(f"{where}.clock_mhz: {checked['clock_mhz']:g} does not rise "
                                f"above the entry before it ({entries[-1]['clock_mhz']:g}); "
                                f"list clocks once each, lowest first")
            if entries and checked["max_pes"] > entries[-1]["max_pes"]:
                raise UserError(f"{where}.max_pes: {checked['max_pes']} is more than at the "
                                f"lower clock {entries[-1]['clock_mhz']:g} MHz "
                                f"({entries[-1]['max_pes']}); what closes timing at a clock "
                                f"closes it below, so max_pes never grows with the clock")
            entries.append(checked)
        values["frontier"] = entries
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return values


def read_frontier(path=None):
    """The checked frontier file at ``path`` (default :data:`DEFAULT_FRONTIER`) as a dict."""
    path = Path(path) if path else DEFAULT_FRONTIER
    return check_document(read_yaml(path, "timing frontier file"), str(path))


def load_frontier(path=None):
    """``((clock_mhz, max_pes), ...)`` ascending by clock, from the frontier file at ``path``
    (default :data:`DEFAULT_FRONTIER`): the shape of ``gen.alloc.problems.MAX_PES_BY_CLOCK``.
    A missing or malformed file is one :class:`UserError` line naming the file and field."""
    document = read_frontier(path)
    return tuple((float(e["clock_mhz"]), int(e["max_pes"])) for e in document["frontier"])

