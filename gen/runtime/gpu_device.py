"""The device interface over PyTorch inference on an NVIDIA GPU, power read through NVML.

Batch control and power reading only. This backend never changes the GPU's clocks or power
limits (no ``nvmlDeviceSet*`` call of any kind): the device's settings stay as they are, so it
has one frequency level (whatever the GPU runs at) and a controller manages the cap by
batching alone. Without a CUDA device or without NVML (``pip install nvidia-ml-py``) it raises a
:class:`UserError` saying so; nothing is simulated in its place.

The model is a small MLP on 8x8-digit-sized inputs (64 -> 512 -> 512 -> 10), enough to make
batching matter on a GPU; time is wall-clock; power is the mean of
``nvmlDeviceGetPowerUsage`` samples taken after each batch of the period.
"""

import time

import numpy as np

from ..errors import UserError
from .device import Device, PeriodReport

__all__ = ["GpuDevice", "gpu_unavailable_reason"]


def gpu_unavailable_reason():
    """None when a CUDA GPU and NVML are usable, else why not (one line)."""
    try:
        import pynvml
    except ImportError:
        return "the GPU backend needs NVML's Python bindings: pip install nvidia-ml-py"
    try:
        import torch
    except ImportError:
        return "the GPU backend needs PyTorch"
    if not torch.cuda.is_available():
        return (f"no CUDA GPU is available to PyTorch {torch.__version__} (a CPU-only build, "
                f"or no NVIDIA device); the GPU backend cannot run here")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        return f"NVML cannot be initialised ({exc}); the GPU backend cannot read power"
    return None


class GpuDevice(Device):
    """PyTorch inference on CUDA device ``index``; batches up to ``max_batch``."""

    name = "gpu"

    def __init__(self, max_batch=64, index=0, seed=0):
        super().__init__()
        reason = gpu_unavailable_reason()
        if reason:
            raise UserError(reason)
        import pynvml
        import torch
        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._torch = torch
        self._cuda = torch.device(f"cuda:{index}")
        torch.manual_seed(seed)
        self._model = torch.nn.Sequential(
            torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
            torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(self._cuda).eval()
        self._max_batch = int(max_batch)
        self._inputs = torch.randn(self._max_batch, 64, device=self._cuda)
        with torch.no_grad():                   # warm up (kernels, allocator)
            for b in (1, self._max_batch):
                self._model(self._inputs[:b])
        torch.cuda.synchronize(self._cuda)
        time.sleep(0.2)
        self._idle = self._power()
        self._t0 = time.monotonic()
        self._now = 0.0

    def _power(self):
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0     # mW -> W

    @property
    def levels(self):
        """One level: the GPU's clocks are left as they are (0 stands for 'unchanged')."""
        return (0.0,)

    @property
    def max_batch(self):
        return self._max_batch

    @property
    def idle_power_w(self):
        return self._idle

    def set_level(self, level):
        if level != 0:
            raise UserError("gpu: this backend leaves the GPU's clocks as they are; it has one "
                            "frequency level (0)")
        self._level = 0

    def reset_clock(self, now=0.0):
        self._t0 = time.monotonic() - now
        self._now = now

    def run_period(self, seconds, queue=None):
        torch = self._torch
        start = time.monotonic() - self._t0
        end = start + seconds
        served = batches = 0
        busy = worst = 0.0
        samples, lat = [], []
        with torch.no_grad():
            while True:
                now = time.monotonic() - self._t0
                if now >= end:
                    break
                if queue is None:
                    n, arrivals = self._batch, None
                else:
                    n, arrivals = queue.take(now, self._batch)
                    if n == 0:
                        nxt = queue.next_arrival()
                        wait = (end if nxt is None else min(nxt, end)) - now
                        time.sleep(max(wait, 0.0005))
                        continue
                t = time.monotonic()
                self._model(self._inputs[:n])
                torch.cuda.synchronize(self._cuda)
                dt = time.monotonic() - t
                busy += dt
                worst = max(worst, dt)
                served += n
                batches += 1
                samples.append(self._power())
                if arrivals is not None:
                    lat.append(time.monotonic() - self._t0 - arrivals)
        stop = time.monotonic() - self._t0
        power = float(np.mean(samples)) if samples else self._power()
        self._last_power = power
        return PeriodReport(start_s=start, seconds=stop - start, served=served, busy_s=busy,
                            batches=batches, batch_latency_s=worst, power_w=power,
                            power_read_w=power, level=0, batch=self._batch,
                            latencies_s=np.concatenate(lat) if lat else np.zeros(0))
