"""Baseline search methods: uniform random sampling, exhaustive enumeration, simulated annealing.

Each takes an :class:`~gen.alloc.core.Evaluator` and a random generator, like every method of
:data:`gen.alloc.core.METHODS`.
"""

from __future__ import annotations

import numpy as np

from gen.errors import UserError

from .core import EXHAUSTIVE_LIMIT, Evaluator, mutate

__all__ = ["random_search", "exhaustive", "annealing"]


def random_search(ev: Evaluator, rng: np.random.Generator, batch: int = 256):
    while True:
        ev(ev.space.random(rng, min(batch, ev.remaining)))


def exhaustive(ev: Evaluator, rng: np.random.Generator, chunk: int = 1 << 16):
    space = ev.space
    size = space.size
    if size > EXHAUSTIVE_LIMIT:
        raise UserError(f"exhaustive search refuses {size:.3g} points (limit {EXHAUSTIVE_LIMIT:.3g}); "
                        "use method 'rl_ga' or shrink the action space")
    if size > ev.budget:
        raise UserError(f"exhaustive search needs a budget of {size} evaluations (the size of the "
                        f"space), got {ev.budget}; raise the budget or use another method")
    radices = np.asarray(space.choices, dtype=np.int64)
    # Last step varies fastest (row-major order, like np.ndindex).
    strides = np.concatenate([np.cumprod(radices[::-1])[::-1][1:], [1]]).astype(np.int64)
    for start in range(0, size, chunk):
        idx = np.arange(start, min(start + chunk, size), dtype=np.int64)
        ev((idx[:, None] // strides[None, :]) % radices[None, :])


def annealing(ev: Evaluator, rng: np.random.Generator, chains: int = 8, t_start: float = 0.05,
               t_end: float = 2e-4, moves: int = 2, reset: float = 0.1, pair: float = 0.3):
    """Parallel simulated annealing with the feasibility rule folded into the energy change.

    Value changes are relative (``(v' - v) / |v|``) so the temperatures do not depend on the
    objective's units; so are violation changes between infeasible rows, and stepping out of
    the feasible region costs one unit plus the new violation relative to the first ones seen.
    """
    space = ev.space
    choices = np.asarray(space.choices, dtype=np.int64)
    t = space.n_steps
    cur, cv, cc = ev(space.random(rng, min(chains, ev.remaining)))
    chains = len(cur)
    pos = cc[cc > 0]
    vscale = float(np.median(pos)) if len(pos) else 1.0
    total_steps = max(1, (ev.remaining) // chains)
    step = 0
    while True:
        frac = min(1.0, step / total_steps)
        temp = t_start * (t_end / t_start) ** frac
        step += 1
        # 1..moves steps change per proposal.
        rate = rng.integers(1, moves + 1, size=chains) / t
        mask = rng.random((chains, t)) < rate[:, None]
        none = ~mask.any(axis=1)
        mask[none, rng.integers(0, t, size=int(none.sum()))] = True
        cand = np.where(mask, mutate(cur, choices, rng, 1.0, reset, at_least_one=False), cur)
        if pair > 0:  # transfers on top of the plain moves, as in the GA
            cand = mutate(cand, choices, rng, 0.0, reset, at_least_one=False, pair=pair)
        cand, nv, nc = ev(cand)
        m = len(cand)
        f_old, f_new = cc[:m] <= 0, nc <= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            dv = (nv - cv[:m]) / np.maximum(np.abs(cv[:m]), 1e-300)
            dc = (nc - cc[:m]) / np.maximum(cc[:m], 1e-300)
        # Feasible -> infeasible costs its violation plus a unit; infeasible -> feasible is free.
        # Until a chain is feasible it descends the violation greedily: annealing there only
        # wanders, since every row is equally useless.
        dc = np.where(dc <= 0, dc, np.inf)
        delta = np.where(f_old & f_new, dv, np.where(f_new, -1.0, np.where(f_old, 1.0 + nc / vscale, dc)))
        delta = np.nan_to_num(delta, nan=np.inf)
        with np.errstate(over="ignore"):
            accept = (delta <= 0) | (rng.random(m) < np.exp(-np.maximum(delta, 0) / temp))
        cur[:m] = np.where(accept[:, None], cand, cur[:m])
        cv[:m] = np.where(accept, nv, cv[:m])
        cc[:m] = np.where(accept, nc, cc[:m])
