"""Power-capped controllers of batch size and frequency level (issue 11, point 4).

Each sees only :class:`gen.runtime.device.Device`'s small interface: ``levels``, ``max_batch``
and, every control period, the report of the last period (a power reading, what was served).
Each returns the ``(level, batch)`` for the next period. All are deterministic for a seed.

* :class:`BatchDVFS` (Nabavinejad et al., TPDS 2022, as in its public code): hold while the
  reading is within [0.8 cap, cap]; below, binary-search the batch upward and, at the largest
  batch, raise the level one step; above, search downward and, at batch 1, lower the level.
* :class:`BOBD`: Bayesian optimisation over (level, batch) with scikit-optimize's ``Optimizer``
  (Gaussian process, ask / tell), throughput as the objective and the power reading as a
  constraint (a penalty); at most ``evaluations`` probes (one control period each) per job, a job
  starting when the cap changes (or when a reading after settling exceeds the cap); then it
  holds the best feasible point it saw.
* :class:`FreqOnly`: frequency scaling alone at a fixed batch (1, or the largest): one level up
  below 0.8 cap, one down above the cap (the paper's DVFS baseline).
* :class:`ClipperAIMD`: Clipper's additive-increase / multiplicative-decrease batching, +4 while
  the batch latency meets the target, -10 % when it does not; the level stays where it is (the
  design's clock); it also backs off when the reading is above the cap.
* :class:`Oracle`: knows the whole (level, batch) table of the model device and picks the
  highest-throughput point whose full-load power is within the cap.
"""

import math
import warnings

import numpy as np

from ..errors import UserError

__all__ = ["Controller", "BatchDVFS", "BOBD", "FreqOnly", "ClipperAIMD", "Oracle",
           "CONTROLLERS", "make_controller"]


class Controller:
    """Base class: ``start`` once, then ``step`` every control period."""

    name = "controller"

    def start(self, device, cap_w, latency_target_s):
        """Called before the first period; returns the first ``(level, batch)``."""
        self.device, self.cap_w, self.latency_target_s = device, cap_w, latency_target_s
        self.levels, self.max_batch = len(device.levels), device.max_batch
        return self.first()

    def first(self):
        raise NotImplementedError

    def step(self, report, cap_w):
        """The next ``(level, batch)`` after ``report`` (:class:`PeriodReport`), for cap
        ``cap_w`` (which may have just changed)."""
        raise NotImplementedError


class BatchDVFS(Controller):
    """BatchDVFS's rule (see the module docstring). Batch indices 0 .. max_batch-1 stand for
    batches 1 .. max_batch; the search keeps ``lo``, ``hi`` and the current index as the
    public code does, including its restart when stuck at a bound."""

    name = "batchdvfs"

    def __init__(self, hold_low=0.8):
        self.hold_low = hold_low

    def first(self):
        self.lo, self.hi, self.cur = 0, self.max_batch - 1, 0
        self.level = self.levels // 2          # the public code starts mid-range
        return self.level, self.cur + 1

    def step(self, report, cap_w):
        power, top = report.power_read_w, self.max_batch - 1
        if self.hold_low * cap_w <= power <= cap_w:
            pass
        elif power < self.hold_low * cap_w:
            if self.cur == top:
                self.level = min(self.level + 1, self.levels - 1)
            elif self.cur == self.hi:
                self.lo, self.hi = self.hi, top
                self.cur = math.ceil((self.lo + self.hi) / 2)
            else:
                self.lo = self.cur
                self.cur = math.ceil((self.lo + self.hi) / 2)
        else:
            if self.cur == 0:
                self.level = max(self.level - 1, 0)
            elif self.cur == self.lo:
                self.hi, self.lo = self.lo, 0
                self.cur = (self.lo + self.hi) // 2
            else:
                self.hi = self.cur
                self.cur = (self.lo + self.hi) // 2
        return self.level, self.cur + 1


class FreqOnly(Controller):
    """Frequency scaling alone at a fixed batch: ``batch`` is 1 or ``"max"``."""

    def __init__(self, batch=1, hold_low=0.8):
        self.fixed, self.hold_low = batch, hold_low
        self.name = "freq_b1" if batch == 1 else f"freq_b{batch}"

    def first(self):
        self.batch = self.max_batch if self.fixed == "max" else min(int(self.fixed),
                                                                    self.max_batch)
        self.level = self.levels // 2
        return self.level, self.batch

    def step(self, report, cap_w):
        power = report.power_read_w
        if power < self.hold_low * cap_w:
            self.level = min(self.level + 1, self.levels - 1)
        elif power > cap_w:
            self.level = max(self.level - 1, 0)
        return self.level, self.batch


class ClipperAIMD(Controller):
    """Clipper's AIMD batching: +``increase`` while the longest batch latency of the period is
    within the target (and the reading within the cap), x(1 - ``decrease``) otherwise."""

    name = "clipper"

    def __init__(self, increase=4, decrease=0.10, level=None):
        self.increase, self.decrease, self.fixed_level = increase, decrease, level

    def first(self):
        self.level = self.levels - 1 if self.fixed_level is None else self.fixed_level
        self.batch = 1
        return self.level, self.batch

    def step(self, report, cap_w):
        too_slow = report.batch_latency_s > self.latency_target_s
        if too_slow or report.power_read_w > cap_w:
            self.batch = max(1, min(self.batch - 1, math.floor(self.batch * (1 - self.decrease))))
        elif report.batches:
            self.batch = min(self.max_batch, self.batch + self.increase)
        return self.level, self.batch


class Oracle(Controller):
    """The best feasible table point for the current cap (full-load power within the cap)."""

    name = "oracle"

    def first(self):
        self.throughput, self.power = self.device.table()
        return self._best(self.cap_w)

    def _best(self, cap_w):
        feasible = self.power <= cap_w
        if not feasible.any():
            return 0, 1
        score = np.where(feasible, self.throughput, -np.inf)
        level, b = np.unravel_index(int(np.argmax(score)), score.shape)
        return int(level), int(b) + 1

    def step(self, report, cap_w):
        return self._best(cap_w)


class BOBD(Controller):
    """Bayesian optimisation of (level, batch): scikit-optimize ``Optimizer`` with a Gaussian
    process, minimising ``-log(throughput)`` plus a penalty when the power reading is above the
    cap. The throughput is the period's requests per busy second (what the setting serves with
    a full queue), so a light load does not flatten the objective."""

    name = "bobd"

    def __init__(self, evaluations=20, initial=5, seed=0, penalty=5.0, margin=0.02):
        if not 1 <= evaluations <= 50:
            raise UserError(f"bobd: evaluations {evaluations} must be 1 .. 50 per job")
        self.evaluations, self.initial, self.seed, self.penalty = (evaluations, initial, seed,
                                                                   penalty)
        #: Settle only on a point read at least this fraction below the cap (a reading is
        #: noisy), and search again only on readings this far above it.
        self.margin = margin

    def first(self):
        self.jobs = 0
        self.probes_per_job = []
        return self._new_job(self.cap_w)

    def _new_job(self, cap_w):
        from skopt import Optimizer
        from skopt.space import Integer
        self.job_cap = cap_w
        self.jobs += 1
        dims = [Integer(0, self.levels - 1, name="level"),
                Integer(1, self.max_batch, name="batch")]
        self.opt = Optimizer(dims, base_estimator="GP", acq_func="EI",
                             acq_optimizer="sampling",
                             n_initial_points=min(self.initial, self.evaluations),
                             initial_point_generator="lhs",
                             random_state=self.seed + 7919 * self.jobs)
        self.seen = {}                 # (level, batch) -> (throughput, power)
        self.bad = {}                  # probed points above the cap -> their objective
        self.probes = 0
        self.settled = None
        self.over = 0
        self.probes_per_job.append(0)
        return self._ask()

    def _ask(self):
        # Power and throughput grow with level and batch, so a point at or above (in both) one
        # whose reading broke the cap breaks it too: it is told to the optimizer with that
        # point's value instead of being probed. At most 50 tells per job in all.
        from threadpoolctl import threadpool_limits
        with warnings.catch_warnings(), threadpool_limits(1):   # BLAS threads only slow a
            warnings.simplefilter("ignore")                     # 20-point GP down
            for _ in range(50 - len(self.opt.yi)):
                x = self.opt.ask()
                key = (int(x[0]), int(x[1]))
                worse = [self.bad[k] for k in self.bad if key[0] >= k[0] and key[1] >= k[1]]
                if not worse or len(self.opt.yi) >= 49:
                    break
                self.opt.tell([key[0], key[1]], max(worse))
        self.pending = key
        return self.pending

    def _objective(self, throughput, power, cap_w):
        y = -math.log(max(throughput, 1e-9))
        if power > cap_w:
            y += self.penalty + 10 * (power / cap_w - 1)
        return y

    def _settle(self, cap_w):
        safe = cap_w * (1 - self.margin)
        feasible = [(thr, key) for key, (thr, pw) in self.seen.items() if pw <= safe]
        if feasible:
            self.settled = max(feasible)[1]
        else:                                   # nothing met the cap: the least power seen
            self.settled = min(self.seen, key=lambda key: self.seen[key][1])
            if self.seen[self.settled][1] > cap_w:
                self.settled = (0, 1)
        return self.settled

    def step(self, report, cap_w):
        if cap_w != self.job_cap:
            return self._new_job(cap_w)
        if self.settled is not None:
            # Two readings in a row above the cap: the load changed; search again.
            self.over = self.over + 1 if report.power_read_w > cap_w * (1 + self.margin) else 0
            if self.over >= 2:
                return self._new_job(cap_w)
            return self.settled
        key = self.pending
        thr, power = report.capacity_rps, report.power_read_w
        self.seen[key] = (thr, power)
        self.probes += 1
        self.probes_per_job[-1] = self.probes
        y = self._objective(thr, power, cap_w)
        if power > cap_w:
            self.bad[key] = y
        from threadpoolctl import threadpool_limits
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            self.opt.tell(list(key), y)
        # The 50 tells may run out first when a low cap makes most points worse than a bad one
        # (and _ask needs one tell left).
        if self.probes >= self.evaluations or len(self.opt.yi) >= 50:
            return self._settle(cap_w)
        return self._ask()


#: name -> factory(seed)
CONTROLLERS = {
    "batchdvfs": lambda seed: BatchDVFS(),
    "bobd": lambda seed: BOBD(seed=seed),
    "freq_b1": lambda seed: FreqOnly(1),
    "freq_bmax": lambda seed: FreqOnly("max"),
    "clipper": lambda seed: ClipperAIMD(),
    "oracle": lambda seed: Oracle(),
}


def make_controller(name, seed=0):
    """A controller by name (:data:`CONTROLLERS`)."""
    if name not in CONTROLLERS:
        import difflib
        close = difflib.get_close_matches(str(name), CONTROLLERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown controller {name!r}{hint}; known: {', '.join(CONTROLLERS)}")
    controller = CONTROLLERS[name](seed)
    if name == "freq_bmax":
        controller.name = "freq_bmax"
    return controller
