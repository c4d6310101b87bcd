"""Searches over a discrete, step-wise action space; they know nothing of hardware.

A :class:`Problem` is an :class:`ActionSpace` (a number of choices per step), a vectorized
objective (lower is better) and an optional vectorized constraint (violation, ``<= 0`` means
feasible). :func:`search` runs one method under a budget of evaluated rows and returns a
:class:`SearchResult`.

Methods
-------
``rl_ga``
    The default. Iterated local search from the lowest row (:mod:`gen.alloc.local`); if it finds
    nothing feasible for a fifth of the budget, REINFORCE with a recurrent policy on half of
    what is left and the local search again from the better row. With ``rl_fraction`` the
    policy runs first on that share and the local search fine-tunes its best (ConfuciuX: Kao,
    Jeong, Krishna, MICRO 2020, with the local search in place of its genetic algorithm).
    Its evaluator remembers rows: no row costs two evaluations.
``rl``
    The REINFORCE stage alone.
``local``
    The default's local search alone (the same random stream: while the local search finds
    feasible rows the two are the same run).
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
    stream = METHODS[method].stream or method
    rng = np.random.default_rng(np.random.SeedSequence([seed, list(METHODS).index(stream)]))
    ev = Evaluator(problem, budget, method, progress, remember=METHODS[method].remember)
    run = METHODS[method].load()
    try:
        run(ev, rng, **options)
    except BudgetSpent:
        pass
    if progress is not None and ev.evaluations:
        progress(method, ev.evaluations, ev.best_feasible_value)
    return ev.result()
