"""A table-driven WHAT-IF device: the default GEMM engine serving a network in batches.

Throughput is the project's exact cycle model; power is NOT measured: it is a provisional
formula whose constants are stated once, below, until the Verilator-toggle power model of
issue 11 point 3 exists. Frequency levels are clocks the ECP5 PLL makes exactly from the board
oscillator; switching them at run time (point 2) is not built yet, so this device switches
instantly apart from a what-if relock pause. Batching is modelled, not measured in Verilator
(point 1).

Throughput
    A batch of ``b`` inputs of each layer of the chosen network (:mod:`gen.workloads`) is the
    layer's GEMM with ``M = b x rows-per-input``, split into jobs as the runtime splits them
    (:func:`gen.cost.layer_cost`, whose cycles are :func:`gen.cycles.gemm_cycles` exactly).
    Host transfers are left out: the what-if is a link fast enough that compute dominates (the
    generated design's UART is far slower; see ``gen alloc``).

Largest batch
    The largest ``b`` (at most 255, BatchDVFS's range) for which every layer's batch runs
    without splitting M: its activations fit ``buffers.act_depth`` and its outputs
    ``buffers.out_depth`` (and ``M`` fits the engine's dimension registers).

Power (WHAT-IF)
    ``P = P_STATIC_W + f_MHz * (C0_W_PER_MHZ + C1_W_PER_MHZ * u)`` with ``u`` the fraction of
    PE-cycles doing a MAC over the period (0 while idle). See :data:`WHAT_IF_POWER`.
"""

import math

import numpy as np

from ..config import load_config
from ..errors import UserError
from .device import Device, PeriodReport

__all__ = ["ModelDevice", "WHAT_IF_POWER", "default_levels_mhz", "check_levels"]

#: WHAT-IF power constants: provisional, not measured (docs/runtime.md, "Device model").
#: ``p_static_w`` is gen/cost.py's STATIC_MW (a Lattice power-calculator ballpark for the
#: ECP5-85F's quiescent core power); the per-MHz terms are round guesses, chosen before any
#: controller was run: a clock-tree / idle-register part and a part proportional to PE
#: activity, the activity part twice the other at full utilization.
WHAT_IF_POWER = {
    "p_static_w": 0.100,        # W, quiescent
    "c0_w_per_mhz": 0.0010,     # W per MHz, clocks and registers running, PEs idle
    "c1_w_per_mhz": 0.0020,     # W per MHz at 100 % PE utilization
    "noise_rel": 0.01,          # relative standard deviation of a power reading
    "relock_s": 0.001,          # PLL relock pause on a level change, idle at the new level
}
#: The engine's largest matrix dimension (gen/hw/gemm.py: 16-bit dimension registers).
MAX_DIM = (1 << 16) - 1
#: BatchDVFS's batch range.
MAX_BATCH = 255


def default_levels_mhz(design_mhz, oscillator_mhz=25.0):
    """Levels from the oscillator's frequency up to the design's clock, in oscillator/4 steps
    (25 .. 125 MHz in 6.25 MHz steps for the default design)."""
    step = oscillator_mhz / 4
    count = int(math.floor(design_mhz / step + 1e-9))
    return tuple(step * i for i in range(4, count + 1))


def check_levels(levels_mhz, oscillator_mhz, design_mhz, where="levels_mhz"):
    """The levels sorted, each one a clock the PLL makes exactly and at most the design's clock
    (its timing was closed there); a clear error otherwise."""
    from ..hw.pll import nearest_clocks, plan_pll
    if not levels_mhz:
        raise UserError(f"{where}: needs at least one frequency level")
    out = []
    for mhz in levels_mhz:
        if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz):
            raise UserError(f"{where}: {mhz!r} is not a frequency in MHz")
        mhz = float(mhz)
        if mhz > design_mhz + 1e-9:
            raise UserError(f"{where}: {mhz:g} MHz is above the design's clock "
                            f"({design_mhz:g} MHz, where its timing was closed)")
        try:
            plan_pll(oscillator_mhz, mhz, tolerance_ppm=0.001)
        except UserError:
            near = " or ".join(f"{x:g}" for x in nearest_clocks(oscillator_mhz, mhz))
            raise UserError(f"{where}: the ECP5 PLL cannot make {mhz:g} MHz exactly from the "
                            f"{oscillator_mhz:g} MHz oscillator; nearest: {near} MHz") from None
        out.append(mhz)
    if len(set(out)) != len(out):
        raise UserError(f"{where}: a frequency level is given twice")
    return tuple(sorted(out))


def _engine(config):
    c = config
    return {"rows": c.array.rows, "cols": c.array.cols, "act_depth": c.buffers.act_depth,
            "wgt_depth": c.buffers.wgt_depth, "param_depth": c.buffers.param_depth,
            "out_depth": c.buffers.out_depth}


def _batch_cost(workload, engine, batch):
    """(cycles, MACs, fits) of one batch of ``batch`` inputs through every layer."""
    from ..cost import _split_jobs, layer_cost
    arrays = workload.with_batch(batch).as_arrays()
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
    """The WHAT-IF table device (see the module docstring).

    ``design``: a design config path (None: the built-in default); ``network``: a workload name;
    ``levels_mhz``: None for :func:`default_levels_mhz`; ``power``: overrides of
    :data:`WHAT_IF_POWER`; ``seed``: the power-reading noise.
    """

    name = "model"

    def __init__(self, design=None, network="digits_vit", levels_mhz=None, power=None, seed=0):
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
        oscillator = get_board(config.board).oscillator_mhz
        self.design_mhz = float(config.clock_mhz)
        self._levels = (default_levels_mhz(self.design_mhz, oscillator) if levels_mhz is None
                        else check_levels(levels_mhz, oscillator, self.design_mhz))
        if not self._levels:
            raise UserError(f"{config.source}: clock_mhz {self.design_mhz:g} is below the "
                            f"lowest default level ({oscillator:g} MHz); give levels_mhz")
        unknown = set(power or {}) - set(WHAT_IF_POWER)
        if unknown:
            raise UserError(f"power: unknown constant {sorted(unknown)[0]!r}; known: "
                            f"{', '.join(WHAT_IF_POWER)}")
        self.power = dict(WHAT_IF_POWER, **(power or {}))
        for key, value in self.power.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value < 0:
                raise UserError(f"power.{key}: {value!r} must be a finite number >= 0")
        self.workload = get_workload(network)
        engine = _engine(config)
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
        return self.power_w(0, 0.0)

    def _batch_limit_reason(self):
        return self._limit_reason

    def set_level(self, level):
        old = self._level
        super().set_level(level)
        if self._level != old:
            self._relock = self.power["relock_s"]

    # -- the table ---------------------------------------------------------------------------
    def batch_seconds(self, level, batch):
        """Service time of one batch of ``batch`` inputs at ``level``."""
        return self._cycles[batch - 1] / (self._levels[level] * 1e6)

    def utilization(self, batch):
        """Fraction of PE-cycles doing a MAC while a batch of ``batch`` runs."""
        return float(self._util[batch - 1])

    def power_w(self, level, utilization):
        """The WHAT-IF power at ``level`` with mean PE utilization ``utilization``."""
        p = self.power
        return p["p_static_w"] + self._levels[level] * (p["c0_w_per_mhz"] +
                                                        p["c1_w_per_mhz"] * utilization)

    def table(self):
        levels = np.array(self._levels)[:, None]
        throughput = np.arange(1, self.max_batch + 1)[None, :] / (self._cycles[None, :] /
                                                                  (levels * 1e6))
        p = self.power
        power = p["p_static_w"] + levels * (p["c0_w_per_mhz"] +
                                            p["c1_w_per_mhz"] * self._util[None, :])
        return throughput, power

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
        busy = active = 0.0        # seconds busy, PE-active seconds (utilization x time)
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
            active += dt * self._util[n - 1]
            served += n
            batches += 1
            worst = max(worst, dt)
            if arrivals is not None:
                lat_parts.append(t - arrivals)
        duration = max(t, end) - start
        p = self.power
        mhz = self._levels[level]
        energy = duration * (p["p_static_w"] + mhz * p["c0_w_per_mhz"]) + \
            mhz * p["c1_w_per_mhz"] * active
        power = energy / duration
        reading = power * (1 + p["noise_rel"] * self._rng.standard_normal())
        self._last_power = reading
        self._now = start + duration
        latencies = np.concatenate(lat_parts) if lat_parts else np.zeros(0)
        return PeriodReport(start_s=start, seconds=duration, served=served, busy_s=busy,
                            batches=batches, batch_latency_s=worst, power_w=power,
                            power_read_w=reading, level=level, batch=batch,
                            latencies_s=latencies)
