"""The device interface the run-time controllers see, and what one control period reports.

A controller knows nothing of the hardware beyond this: a list of frequency levels (MHz,
lowest first), the largest batch, the idle power, and per control period a power reading and
what was served. Backends: :class:`gen.runtime.model_device.ModelDevice` (the WHAT-IF table) and
:class:`gen.runtime.gpu_device.GpuDevice` (PyTorch + NVML, batching only).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

__all__ = ["Device", "PeriodReport"]


@dataclass
class PeriodReport:
    """What one control period did.

    ``seconds`` is the period's actual length (a batch that starts before the end is finished);
    ``served`` the requests completed; ``busy_s`` the time spent computing; ``latencies_s`` each
    completed request's arrival-to-completion time; ``batch_latency_s`` the longest service
    time of a batch; ``power_w`` the true mean power where the backend knows it (the model), else
    the measured one; ``power_read_w`` what a controller is shown (measured, noisy).
    """
    start_s: float
    seconds: float
    served: int
    busy_s: float
    batches: int
    batch_latency_s: float
    power_w: float
    power_read_w: float
    level: int
    batch: int
    latencies_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def throughput_rps(self):
        """Requests served per second of the period."""
        return self.served / self.seconds if self.seconds > 0 else 0.0

    @property
    def capacity_rps(self):
        """Requests per busy second: what the setting serves when the queue never runs dry
        (0 when nothing ran)."""
        return self.served / self.busy_s if self.busy_s > 0 else 0.0


class Device(ABC):
    """A device serving inference requests in batches, at one of a few clock levels."""

    #: A short name for messages and summaries.
    name = "device"

    def __init__(self):
        self._level = 0
        self._batch = 1
        self._last_power = None

    # -- what a controller may know ------------------------------------------------------------
    @property
    @abstractmethod
    def levels(self):
        """Frequency levels in MHz, lowest first (a single entry where clocks are not ours)."""

    @property
    @abstractmethod
    def max_batch(self):
        """The largest batch the device runs."""

    @property
    @abstractmethod
    def idle_power_w(self):
        """The lowest power the device draws while serving: idle at the lowest level."""

    @property
    def level(self):
        return self._level

    @property
    def batch(self):
        return self._batch

    # -- controls ------------------------------------------------------------------------------
    def set_level(self, level):
        """Choose frequency level ``level`` (an index into :attr:`levels`)."""
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or \
                not 0 <= level < len(self.levels):
            raise UserError(f"{self.name}: frequency level {level!r} does not exist; levels are "
                            f"0 .. {len(self.levels) - 1} "
                            f"({', '.join(f'{mhz:g}' for mhz in self.levels)} MHz)")
        self._level = int(level)

    def set_batch(self, batch):
        """Serve up to ``batch`` requests per batch (1 .. :attr:`max_batch`)."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise UserError(f"{self.name}: batch {batch!r} must be an integer >= 1")
        if batch > self.max_batch:
            raise UserError(f"{self.name}: batch {batch} does not fit; the largest batch that "
                            f"fits is {self.max_batch}{self._batch_limit_reason()}")
        self._batch = int(batch)

    def _batch_limit_reason(self):
        return ""

    def read_power_w(self):
        """The power measured over the last period (None before the first period)."""
        return self._last_power

    @abstractmethod
    def run_period(self, seconds, queue=None):
        """Serve from ``queue`` (:class:`gen.runtime.serve.RequestQueue`; None: always full)
        for ``seconds`` at the current level and batch; return a :class:`PeriodReport`."""

    def table(self):
        """``(throughput_rps, power_w)`` arrays of shape (levels, max_batch) at full load, for
        the oracle; only a table-driven device has one."""
        raise UserError(f"{self.name}: has no (level, batch) table; the oracle needs the "
                        f"table-driven model device")
