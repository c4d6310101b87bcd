"""A table-driven device: the default GEMM engine serving a network in batches.

Throughput is the project's exact cycle model, checked against Verilator per batch
(``verif/test_batch_cycles.py``); power is the toggle-activity model of
:mod:`gen.runtime.power_model`, whose activity is measured in Verilator but whose per-toggle
energies are assumptions, so its powers stay labelled WHAT-IF. Frequency levels are clocks a
run-time clock select can switch among (:mod:`gen.hw.clock_select`, docs/clocking.md): output
dividers ``VCO / n`` of the one VCO the design's PLL runs (:func:`design_pll`), at most the
design's clock; a level change pauses the engine for the switch (``relock_s``, a few cycles).
(The hardware switches two levels today, one DCSC; the model device allows any number of such
outputs, a what-if of cascaded selects.)

Throughput
    A batch of ``b`` inputs is the network's (:mod:`gen.workloads`) jobs of :func:`batch_jobs`:
    a conv / gemm layer's GEMM with ``M = b x rows-per-input`` (one weight pass for the batch),
    an attention product once per input and head (its right-hand operand is the input's own),
    split into jobs as the runtime splits them. Cycles per batch are the sum of
    :func:`gen.cycles.gemm_cycles` over those jobs (here by its closed form, through
    :func:`gen.cost.layer_cost`), equal to Verilator's count for the default design at batch
    1, 2 and 7 (``verif/test_batch_cycles.py``; every batch size: ``python -m
    verif.measure_batch``). Host transfers are left out: the what-if is a link fast enough that
    compute dominates (the generated design's UART is far slower; see ``gen alloc``).

Largest batch
    The largest ``b`` (at most 255, BatchDVFS's range) for which every layer's batch runs
    without splitting M: its activations fit ``buffers.act_depth`` and its outputs
    ``buffers.out_depth`` (and ``M`` fits the engine's dimension registers).

Power (WHAT-IF energies, measured activity)
    :class:`gen.runtime.power_model.PowerModel` of the design: busy at batch ``b`` while a
    batch of ``b`` runs, idle otherwise, at the current level; a period's power is its energy
    over its length. A reading adds relative noise ``noise_rel`` (:data:`DEVICE_CONSTANTS`).
"""

import math
from fractions import Fraction

import numpy as np

from ..config import load_config
from ..errors import UserError
from .device import Device, PeriodReport

__all__ = ["ModelDevice", "DEVICE_CONSTANTS", "default_levels_mhz", "check_levels",
           "design_pll", "batch_layers", "batch_jobs"]

#: The device's own constants (not the power model's): both what-ifs, chosen before any
#: controller ran.
DEVICE_CONSTANTS = {
    "noise_rel": 0.01,          # relative standard deviation of a power reading
    # Pause on a level change, idle at the new level. The clock select (a DCSC, no PLL relock)
    # holds the clock low until the new clock's first falling edge after its enable: under two
    # periods of the slower clock (docs/clocking.md), 80 ns at 25 MHz; rounded up to 1 us.
    "relock_s": 1e-6,
}
#: The engine's largest matrix dimension (gen/hw/gemm.py: 16-bit dimension registers).
MAX_DIM = (1 << 16) - 1
#: BatchDVFS's batch range.
MAX_BATCH = 255


#: How near a ``levels_mhz`` entry must be to a divider of the VCO (the clocks are printed to
#: 6 decimals, well within it; as ``gen.design.LEVEL_TOLERANCE_PPM``).
LEVEL_TOLERANCE_PPM = 1.0


def design_pll(config, board=None):
    """The PLL settings the design runs (as :func:`gen.design.prepare_design` plans them: the
    accelerator clock, the host link's clock where it is a PLL output, the clock levels where
    the config has them). Its VCO is the one every run-time level must divide."""
    from ..boards import get_board
    from ..design import plan_clock_levels, plan_host_link
    from ..hw.pll import plan_pll
    board = board or get_board(config.board)
    pll = plan_host_link(board, plan_pll(board.oscillator_mhz, config.clock_mhz),
                         config.host.baud).pll
    if config.clock_levels_mhz is not None:
        pll = plan_clock_levels(pll, config.clock_levels_mhz)
    return pll


def _vco_outputs(vco_mhz, design_mhz):
    """``{exact MHz: n}`` for every output divider ``VCO / n`` the ECP5 PLL makes (n = 1 ..
    128, the output within its range) at most ``design_mhz``, fastest first."""
    from ..hw.pll import OUT_MHZ, OUTPUT_DIV_MAX
    vco = Fraction(vco_mhz).limit_denominator(10 ** 6)
    top = Fraction(design_mhz).limit_denominator(10 ** 6)
    out = {}
    for n in range(1, OUTPUT_DIV_MAX + 1):
        mhz = vco / n
        if OUT_MHZ[0] <= mhz <= OUT_MHZ[1] and mhz <= top:
            out[mhz] = n
    return out


def default_levels_mhz(vco_mhz, design_mhz, oscillator_mhz=25.0):
    """The default levels: every output ``VCO / n`` (:func:`_vco_outputs`) from the
    oscillator's frequency up to the design's clock, lowest first. For the default design's
    750 MHz VCO: n = 30 .. 6, 25 levels, 25, 25.862069, 26.785714, ... 93.75, 107.142857 and
    125 MHz (the earlier oscillator/4 grid kept only the 8 of them it shares, 25, 31.25, 37.5,
    50, 62.5, 75, 93.75 and 125; those are a subset, ``levels_mhz`` gives them)."""
    low = Fraction(oscillator_mhz).limit_denominator(10 ** 6)
    return tuple(sorted(float(mhz) for mhz in _vco_outputs(vco_mhz, design_mhz) if mhz >= low))


def _mhz(value):
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def check_levels(levels_mhz, vco_mhz, design_mhz, where="levels_mhz"):
    """The levels sorted, each one an output divider ``VCO / n`` of the design's VCO (what a
    run-time clock select can switch to without a PLL relock, docs/clocking.md) within
    :data:`LEVEL_TOLERANCE_PPM`, and at most the design's clock (its timing was closed
    there); a one-line UserError naming ``where`` and the nearest levels otherwise."""
    if isinstance(levels_mhz, (str, bytes)) or not hasattr(levels_mhz, "__iter__"):
        raise UserError(f"{where}: {levels_mhz!r} must be a list of frequencies in MHz")
    levels_mhz = list(levels_mhz)
    if not levels_mhz:
        raise UserError(f"{where}: needs at least one frequency level")
    outputs = _vco_outputs(vco_mhz, design_mhz)
    out = []
    for mhz in levels_mhz:
        if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz):
            raise UserError(f"{where}: {mhz!r} is not a frequency in MHz")
        mhz = float(mhz)
        if mhz > design_mhz * (1 + LEVEL_TOLERANCE_PPM * 1e-6):
            raise UserError(f"{where}: {mhz:g} MHz is above the design's clock "
                            f"({design_mhz:g} MHz, where its timing was closed); use levels "
                            f"at most {design_mhz:g} MHz")
        near = min(outputs, key=lambda x: abs(float(x) - mhz))
        if abs(float(near) - mhz) > abs(mhz) * LEVEL_TOLERANCE_PPM * 1e-6:
            below = max((x for x in outputs if x <= mhz), default=None)
            above = min((x for x in outputs if x > mhz), default=None)
            nearest = " or ".join(f"{_mhz(x)} (/{outputs[x]})" for x in (below, above)
                                  if x is not None)
            raise UserError(f"{where}: the clock select cannot make {mhz:g} MHz: a level must "
                            f"be an output divider of the design's {vco_mhz:g} MHz VCO (VCO / n, "
                            f"n = 1 .. 128, at most {design_mhz:g} MHz); nearest: {nearest} MHz")
        out.append(float(near))
    if len(set(out)) != len(out):
        raise UserError(f"{where}: a frequency level is given twice")
    return tuple(sorted(out))


def _engine(config):
    c = config
    return {"rows": c.array.rows, "cols": c.array.cols, "act_depth": c.buffers.act_depth,
            "wgt_depth": c.buffers.wgt_depth, "param_depth": c.buffers.param_depth,
            "out_depth": c.buffers.out_depth}


def batch_layers(workload, batch):
    """The GEMM view (``as_arrays`` columns) of one batch of ``batch`` inputs.

    A conv / gemm layer's batch is part of M: one weight pass serves every input. An attention
    product's right-hand operand (K^T, V) belongs to one input, so its batch multiplies the
    number of products instead (``gemm_view`` would put it in M as if K^T were shared)."""
    arrays = workload.with_batch(batch).as_arrays()
    attention = np.isin(arrays["kind"], ("attn_scores", "attn_context"))
    arrays["M"] = np.where(attention, arrays["M"] // batch, arrays["M"])
    arrays["count"] = np.where(attention, arrays["count"] * batch, arrays["count"])
    return arrays


def batch_jobs(workload, engine, batch):
    """The engine jobs of one batch, as the runtime splits them (:func:`gen.cost._split_jobs`):
    a list of ``{"layer", "m", "k", "n", "count"}``; their cycles sum to the batch's."""
    from ..cost import _split_jobs
    arrays = batch_layers(workload, batch)
    _, mc, nc = _split_jobs(arrays["M"], arrays["K"], arrays["N"], engine["rows"],
                            engine["cols"], engine["act_depth"], engine["wgt_depth"],
                            engine["param_depth"], engine["out_depth"])
    jobs = []
    for i, name in enumerate(arrays["name"]):
        m, k, n, count = (int(arrays[key][i]) for key in ("M", "K", "N", "count"))
        for mm, jm in ((int(mc[i]), m // int(mc[i])), (m % int(mc[i]), int(m % int(mc[i]) > 0))):
            for nn, jn in ((int(nc[i]), n // int(nc[i])),
                           (n % int(nc[i]), int(n % int(nc[i]) > 0))):
                if jm * jn:
                    jobs.append({"layer": str(name), "m": mm, "k": k, "n": nn,
                                 "count": count * jm * jn})
    return jobs


def _batch_cost(workload, engine, batch):
    """(cycles, MACs, fits) of one batch of ``batch`` inputs through every layer."""
    from ..cost import _split_jobs, layer_cost
    arrays = batch_layers(workload, batch)
    cost = layer_cost(arrays, engine, "accelgen_os")
    if not cost["feasible"].all():
        bad = arrays["name"][~cost["feasible"]][0]
        raise UserError(f"{workload.name}: layer {bad} does not fit the design's buffers at "
                        f"all (its reduction K exceeds buffers.act_depth or wgt_depth)")
    _, mc, _ = _split_jobs(arrays["M"], arrays["K"], arrays["N"], engine["rows"],
                           engine["cols"], engine["act_depth"], engine["wgt_depth"],
                           engine["param_depth"], engine["out_depth"])
    fits = bool((mc == arrays["M"]).all() and (arrays["M"] <= MAX_DIM).all())
    return int(cost["compute_cycles"].sum()), int(cost["macs"].sum()), fits


class ModelDevice(Device):
    """The table device (see the module docstring).

    ``design``: a design config path (None: the built-in default); ``network``: a workload name;
    ``levels_mhz``: None for :func:`default_levels_mhz`; ``power``: overrides of the power
    model's :data:`~gen.runtime.power_model.CONSTANTS` and of :data:`DEVICE_CONSTANTS`;
    ``seed``: the power-reading noise; ``activity``: an activity file (None: the default
    design's); ``report``: a build's report.json for the resource counts (None: the estimate).
    """

    name = "model"

    def __init__(self, design=None, network="digits_vit", levels_mhz=None, power=None, seed=0,
                 activity=None, report=None):
        super().__init__()
        from ..boards import get_board
        from ..workloads import get_workload
        config = load_config(design)
        if getattr(config, "vit", None) is not None or not hasattr(config, "array"):
            raise UserError(f"{config.source}: a ViT design; the model device models the GEMM "
                            f"engine (use a GEMM design config)")
        if config.auto_fields:
            raise UserError(f"{config.source}: sizes still say 'auto'; run `python -m gen alloc` "
                            f"and use the config it writes")
        self.config = config
        self.rows, self.cols = config.array.rows, config.array.cols
        board = get_board(config.board)
        oscillator = board.oscillator_mhz
        self.pll = design_pll(config, board)
        self.vco_mhz = float(self.pll.vco_mhz)
        self.design_mhz = float(self.pll.output_mhz)
        self._levels = (default_levels_mhz(self.vco_mhz, self.design_mhz, oscillator)
                        if levels_mhz is None
                        else check_levels(levels_mhz, self.vco_mhz, self.design_mhz))
        if not self._levels:
            raise UserError(f"{config.source}: clock_mhz {self.design_mhz:g} is below the "
                            f"lowest default level ({oscillator:g} MHz); give levels_mhz")
        self.workload = get_workload(network)
        self.engine = engine = _engine(config)
        cycles, macs = [], []
        for b in range(1, MAX_BATCH + 1):
            c, m, fits = _batch_cost(self.workload, engine, b)
            if not fits:
                break
            cycles.append(c)
            macs.append(m)
        if not cycles:
            raise UserError(f"{config.source}: not even one input of {self.workload.name} fits "
                            f"the buffers without splitting; enlarge buffers.act_depth / "
                            f"out_depth")
        self._cycles = np.array(cycles, dtype=np.int64)          # per batch size 1..max
        self._macs = np.array(macs, dtype=np.int64)
        self._util = self._macs / (self._cycles * self.rows * self.cols)
        self._power_setup(config, power, activity, report)
        self._rng = np.random.default_rng(seed)
        self._level = len(self._levels) - 1
        self._now = 0.0
        self._limit_reason = (f" ({self.workload.name} on {self.rows}x{self.cols} with "
                              f"act_depth {config.buffers.act_depth}, out_depth "
                              f"{config.buffers.out_depth})")

    # -- the interface -----------------------------------------------------------------------
    @property
    def levels(self):
        return self._levels

    @property
    def max_batch(self):
        return len(self._cycles)

    @property
    def idle_power_w(self):
        return self.power_w(0)

    def _batch_limit_reason(self):
        return self._limit_reason

    def set_level(self, level):
        old = self._level
        super().set_level(level)
        if self._level != old:
            self._relock = self.power["relock_s"]

    # -- the table ---------------------------------------------------------------------------
    def _check_batch(self, batch):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or \
                not 1 <= batch <= self.max_batch:
            raise UserError(f"{self.name}: batch {batch!r} must be an integer 1 .. "
                            f"{self.max_batch}")
        return int(batch)

    def batch_cycles(self, batch):
        """Engine cycles of one batch of ``batch`` inputs through the whole network (the cycle
        model that ``verif/test_batch_cycles.py`` checks against Verilator)."""
        return int(self._cycles[self._check_batch(batch) - 1])

    def jobs(self, batch):
        """The engine jobs of one batch (:func:`batch_jobs`)."""
        return batch_jobs(self.workload, self.engine, self._check_batch(batch))

    def batch_seconds(self, level, batch):
        """Service time of one batch of ``batch`` inputs at ``level``."""
        return self._cycles[batch - 1] / (self._levels[level] * 1e6)

    def utilization(self, batch):
        """Fraction of PE-cycles doing a MAC while a batch of ``batch`` runs."""
        return float(self._util[batch - 1])

    def power_w(self, level, batch=None):
        """The model's power at ``level`` busy at ``batch`` (None: idle)."""
        if batch is None:
            return float(self._p_idle[level])
        return float(self._p_busy[level, self._check_batch(batch) - 1])

    def table(self):
        levels = np.array(self._levels)[:, None]
        throughput = np.arange(1, self.max_batch + 1)[None, :] / (self._cycles[None, :] /
                                                                  (levels * 1e6))
        return throughput, self._p_busy.copy()

    def _power_setup(self, config, power, activity, report):
        from .power_model import CONSTANTS, PowerModel, load_activity
        if power is not None and not isinstance(power, dict):
            raise UserError("power: expected a mapping of constants")
        power = dict(power or {})
        known = list(CONSTANTS) + list(DEVICE_CONSTANTS)
        unknown = sorted(map(str, set(power) - set(known)))
        if unknown:
            raise UserError(f"power: unknown constant {unknown[0]!r}; known: "
                            f"{', '.join(known)}")
        self.power = dict(DEVICE_CONSTANTS)
        for key in DEVICE_CONSTANTS:
            if key in power:
                value = power.pop(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                        not math.isfinite(value) or value < 0:
                    raise UserError(f"power.{key}: {value!r} must be a finite number >= 0")
                self.power[key] = float(value)
        activity = load_activity(activity)
        self.power_model = PowerModel.for_design(config, self._levels, activity, power, report)
        self._p_idle = np.array([self.power_model.power_w(f) for f in self._levels])
        self._p_busy = self.power_model.table(range(1, self.max_batch + 1))
        measured_on = {k: activity.design.get(k) for k in self.engine}
        notes = [self.power_model.label]
        if measured_on != self.engine:
            notes.append("activity measured on the default design, not this one")
        if not activity.measured(self.max_batch):
            notes.append(f"activity beyond batch {activity.batches[-1]} is batch "
                         f"{activity.batches[-1]}'s")
        self.power_label = "; ".join(notes)

    # -- running ------------------------------------------------------------------------------
    def reset_clock(self, now=0.0):
        self._now = float(now)
        self._relock = 0.0

    def run_period(self, seconds, queue=None):
        start = self._now
        end = start + float(seconds)
        level, batch = self._level, self._batch
        f_hz = self._levels[level] * 1e6
        t = start
        relock = min(getattr(self, "_relock", 0.0), seconds)
        self._relock = 0.0
        t += relock
        busy = extra = 0.0         # seconds busy, joules above idle while busy
        served = batches = 0
        worst = 0.0
        lat_parts = []
        while t < end:
            if queue is None:
                n = batch
                arrivals = None
            else:
                n, arrivals = queue.take(t, batch)
                if n == 0:
                    nxt = queue.next_arrival()
                    if nxt is None or nxt >= end:
                        t = end
                        break
                    t = nxt
                    continue
            dt = self._cycles[n - 1] / f_hz
            t += dt
            busy += dt
            extra += dt * (self._p_busy[level, n - 1] - self._p_idle[level])
            served += n
            batches += 1
            worst = max(worst, dt)
            if arrivals is not None:
                lat_parts.append(t - arrivals)
        duration = max(t, end) - start
        p = self.power
        power = self._p_idle[level] + extra / duration
        reading = power * (1 + p["noise_rel"] * self._rng.standard_normal())
        self._last_power = reading
        self._now = start + duration
        latencies = np.concatenate(lat_parts) if lat_parts else np.zeros(0)
        return PeriodReport(start_s=start, seconds=duration, served=served, busy_s=busy,
                            batches=batches, batch_latency_s=worst, power_w=power,
                            power_read_w=reading, level=level, batch=batch,
                            latencies_s=latencies)
