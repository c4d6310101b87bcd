"""Cycle models of the generated engines: one home for every cycle count the project predicts.

Each model is derived from the pipeline it describes and is checked against Verilator's count
(``verif/test_gemm_accelerator.py``, ``verif/test_attention.py``, ``python -m gen cost-report``),
never only against itself. The hardware modules own their latency constants; this module reads
them and owns the tail constants that were measured against the RTL.

GEMM engine (``gen/hw/gemm.py``, output stationary)
    :func:`gemm_cycles` is the per-tile recurrence, :func:`gemm_cycles_closed_form` its
    vectorized closed form (equal on every shape, ``tests/test_cost.py``).
"""

import math

import numpy as np

from .hw.multiplier import MULTIPLIER_LATENCY
from .hw.requant import REQUANT_LATENCY

__all__ = ["GEMM_TAIL_CYCLES", "padded_tail_slots", "ideal_gemm_cycles", "gemm_cycles",
           "gemm_cycles_closed_form"]

#: Drain output register, requantizer input acceptance, two registered completion stages and
#: the finishing cycle; the requantizer's latency overlaps the padding slots the drain skips
#: after the last real output of the last tile (found by ``python -m gen cost-report``).
GEMM_TAIL_CYCLES = 5


def _ceil_div(a, b):
    return -(-a // b)


def padded_tail_slots(m, n, rows, cols):
    """Drain slots of the last tile after its last real output (row-major drain order)."""
    valid_rows, valid_cols = (m - 1) % rows + 1, (n - 1) % cols + 1
    return rows * cols - ((valid_rows - 1) * cols + valid_cols)


def ideal_gemm_cycles(m, k, n, rows, cols):
    """Every PE busy every cycle: M*K*N / (R*C)."""
    return m * k * n / (rows * cols)


def gemm_cycles(m, k, n, rows, cols):
    """Cycles from START to done of one GEMM job with the output never stalled.

    Tile t's last beat issues at ``c_t``; the array needs ``R + C`` cycles to finish it in
    every PE (systolic skew plus the multiplier pipeline); the drain copies the tile at ``x_t``
    once its chain is free and then needs ``R*C`` cycles; the next tile's last beat may issue
    only after the copy.
    """
    tiles = math.ceil(m / rows) * math.ceil(n / cols)
    latency, drain = rows + cols + MULTIPLIER_LATENCY, rows * cols
    issue = k - 1                      # c_0
    copy = issue + 2 + latency         # x_0
    for _ in range(tiles - 1):
        issue = max(issue + k, copy + 1)
        copy = max(issue + 2 + latency, copy + drain + 1)
    return (copy + drain + GEMM_TAIL_CYCLES +
            max(REQUANT_LATENCY - padded_tail_slots(m, n, rows, cols), 0))


def gemm_cycles_closed_form(m, k, n, rows, cols):
    """Cycles of one GEMM job on the generated engine, from START to done (output never
    stalled): the closed form of :func:`gemm_cycles`.

    With tile issue times ``i_t`` and drain copy times ``c_t``, ``d_t = c_t - i_t`` obeys
    ``i_{t+1} = i_t + max(K, d_t + 1)`` and ``d_{t+1} = max(a, d_t + D + 1 - (i_{t+1} - i_t))``
    with ``a = R + C + MULTIPLIER_LATENCY + 2`` and ``D = R*C``: after at most one transient
    phase the tiles advance by a constant period, so the last copy time has a closed form.
    """
    m, k, n, rows, cols = (np.asarray(x, dtype=np.int64) for x in (m, k, n, rows, cols))
    tiles = _ceil_div(m, rows) * _ceil_div(n, cols)
    a = rows + cols + MULTIPLIER_LATENCY + 2
    d = rows * cols + 1
    i0 = k - 1
    last = tiles - 1

    # Case k <= a: first step advances a+1, then every step max(a, d-1) + 1.
    steady_b = np.maximum(a, d - 1)
    copy_b = np.where(last == 0, i0 + a, i0 + (a + 1) + (last - 1) * (steady_b + 1) + steady_b)

    # Case k > a and d <= k: every step advances k, d_t stays a.
    copy_a1 = i0 + last * k + a

    # Case k > a and d > k: d_t = a + t(d-k) grows while d_t + 1 <= k (n1 steps of k), then one
    # step of d_{n1} + 1 and d_t = d - 1 with steps of d afterwards.
    grow = np.maximum(d - k, 1)
    n1 = (k - 1 - a) // grow + 1
    delta_n1 = a + n1 * (d - k)
    early = i0 + last * k + (a + last * (d - k))
    at_n1 = i0 + n1 * k + delta_n1
    after = i0 + n1 * k + delta_n1 + 1 + (last - n1 - 1) * d + (d - 1)
    copy_a2 = np.where(last < n1, early, np.where(last == n1, at_n1, after))

    copy = np.where(k <= a, copy_b, np.where(d <= k, copy_a1, copy_a2))
    return (copy + rows * cols + GEMM_TAIL_CYCLES +
            np.maximum(REQUANT_LATENCY - padded_tail_slots(m, n, rows, cols), 0))
