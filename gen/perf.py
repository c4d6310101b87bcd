"""Cycle model of the generated output-stationary engine, derived from its pipeline.

Used to predict job cycles for reports and benchmarks; the benchmark prints the prediction
beside the cycles measured in Verilator so that any drift between model and RTL shows.
"""

import math

from .hw.multiplier import MULTIPLIER_LATENCY
from .hw.requant import REQUANT_LATENCY

__all__ = ["predicted_cycles", "ideal_cycles", "padded_tail_slots"]

# Drain output register, requantizer input acceptance, two registered completion stages and
# the finishing cycle; the requantizer's latency overlaps the padding slots the drain skips
# after the last real output of the last tile (found by `python -m gen cost-report`).
_TAIL = 5


def padded_tail_slots(m, n, rows, cols):
    """Drain slots of the last tile after its last real output (row-major drain order)."""
    valid_rows, valid_cols = (m - 1) % rows + 1, (n - 1) % cols + 1
    return rows * cols - ((valid_rows - 1) * cols + valid_cols)


def ideal_cycles(m, k, n, rows, cols):
    """Every PE busy every cycle: M*K*N / (R*C)."""
    return m * k * n / (rows * cols)


def predicted_cycles(m, k, n, rows, cols):
    """Cycles from START to done with the output never stalled.

    Tile t's last beat issues at ``c_t``; the array needs ``R + C`` cycles to finish it in
    every PE (systolic skew plus the multiplier pipeline); the drain copies the tile at ``x_t`` once its chain is free and
    then needs ``R*C`` cycles; the next tile's last beat may issue only after the copy.
    """
    tiles = math.ceil(m / rows) * math.ceil(n / cols)
    latency, drain = rows + cols + MULTIPLIER_LATENCY, rows * cols
    issue = k - 1                      # c_0
    copy = issue + 2 + latency         # x_0
    for _ in range(tiles - 1):
        issue = max(issue + k, copy + 1)
        copy = max(issue + 2 + latency, copy + drain + 1)
    return copy + drain + _TAIL + max(REQUANT_LATENCY - padded_tail_slots(m, n, rows, cols), 0)
