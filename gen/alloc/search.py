"""Searches over a discrete, step-wise action space; they know nothing of hardware.

A :class:`Problem` is an :class:`ActionSpace` (a number of choices per step), a vectorized
objective (lower is better) and an optional vectorized constraint (violation, ``<= 0`` means
feasible). :func:`search` runs one method under a budget of evaluated rows and returns a
:class:`SearchResult`.

Methods
-------
``rl_ga``
    REINFORCE with a recurrent policy that walks the steps, then a genetic algorithm seeded
    from the policy's best solutions (ConfuciuX: Kao, Jeong, Krishna, MICRO 2020).
``rl``
    The REINFORCE stage alone.
``ga``
    The genetic algorithm alone, from a random population: tournament selection, uniform or
    one-point crossover, per-step mutation to neighbouring levels (+/- 1..2) or a random reset,
    "transfer" mutations (one step up a level, another down), elitism, and a partial restart
    around the elite when the best has not improved for ``stall`` generations.
``annealing``
    Simulated annealing, several chains in parallel, the GA's neighbour moves, geometric cooling
    of relative value changes; an infeasible chain descends its violation greedily.
``random``
    Uniform random sampling.
``exhaustive``
    Every point of the space, in chunks; exact, refused above :data:`EXHAUSTIVE_LIMIT` points.

The methods are registered in :data:`gen.alloc.core.METHODS`; the shared machinery (evaluator,
budget, genetic operators) is in :mod:`gen.alloc.core`.
"""

from __future__ import annotations

import operator

import numpy as np

from gen.errors import UserError

from .core import (EXHAUSTIVE_LIMIT, METHODS, OPTION_RANGES, ActionSpace, BudgetSpent, Evaluator,
                   Problem, SearchResult)

__all__ = ["ActionSpace", "Problem", "SearchResult", "search", "METHODS", "EXHAUSTIVE_LIMIT"]


def _check_options(method, options):
    unknown = set(options) - METHODS[method].options
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))} for method {method!r}; "
                        f"known: {', '.join(sorted(METHODS[method].options)) or 'none'}")
    for name, value in options.items():
        if name not in OPTION_RANGES or isinstance(value, bool):
            continue
        low, high = OPTION_RANGES[name]
        if not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
            span = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise UserError(f"option {name}={value!r} for method {method!r} must be a number {span}")


def search(problem: Problem, method: str, budget: int, seed: int, progress=None, **options) -> SearchResult:
    """Search ``problem`` with ``method`` using at most ``budget`` evaluated rows.

    Parameters
    ----------
    problem : Problem
    method : str
        One of :data:`METHODS`.
    budget : int
        Maximum number of rows scored (each row of each objective call counts).
    seed : int
        Same seed, same result: all randomness comes from generators built from it.
    progress : callable or None
        ``progress(method, evaluations, best_value)``, called at most every 0.5 s.
    **options
        Method tuning knobs (see the method functions); unknown names are refused.
    """
    if not isinstance(problem, Problem):
        raise UserError(f"search() needs a Problem, got {type(problem).__name__}")
    if not isinstance(problem.space, ActionSpace):
        raise UserError("Problem.space must be an ActionSpace")
    if method not in METHODS:
        raise UserError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
    try:
        budget = operator.index(budget)
        seed = operator.index(seed)
    except TypeError:
        raise UserError("search budget and seed must be integers") from None
    if budget < 1:
        raise UserError(f"search budget must be at least 1 evaluation, got {budget}")
    _check_options(method, options)
    rng = np.random.default_rng(np.random.SeedSequence([seed, list(METHODS).index(method)]))
    ev = Evaluator(problem, budget, method, progress)
    run = METHODS[method].load()
    try:
        run(ev, rng, **options)
    except BudgetSpent:
        pass
    if progress is not None and ev.evaluations:
        progress(method, ev.evaluations, ev.best_feasible_value)
    return ev.result()
