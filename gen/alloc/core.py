"""The search core that every method shares: problems, the evaluator and its budget, the genetic
operators, and the registry of methods.

A :class:`Problem` is an :class:`ActionSpace` (a number of choices per step), a vectorized
objective (lower is better) and an optional vectorized constraint (violation, ``<= 0`` means
feasible). Methods receive an :class:`Evaluator` that scores rows, counts them against the
budget (raising :class:`BudgetSpent` when it is used up) and keeps the best row and the history.

Every comparison between two rows is constraint-aware: a feasible row beats an infeasible one,
two feasible rows compare by value, two infeasible rows by violation.

Methods are found through :data:`METHODS`, a registry of :class:`MethodSpec` (the module and
function that implement a method, and the options it takes); the function is imported only when
the method runs, so that naming the methods does not import torch.
"""

from __future__ import annotations

import importlib
import operator
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gen.errors import UserError

__all__ = ["ActionSpace", "Problem", "SearchResult", "BudgetSpent", "Evaluator", "rank_key",
           "better", "mutate", "tournament_select", "genetic", "MethodSpec", "METHODS", "GA_OPTIONS",
           "RL_OPTIONS", "OPTION_RANGES", "EXHAUSTIVE_LIMIT"]

#: Largest space the ``exhaustive`` method enumerates.
EXHAUSTIVE_LIMIT = 2_000_000


@dataclass(frozen=True)
class ActionSpace:
    """A sequence of discrete decisions, walked in order.

    Attributes
    ----------
    choices : tuple of int
        Number of options at each step (each ``>= 1``). Action ``a[t]`` is in ``range(choices[t])``;
        neighbouring indices are assumed to be neighbouring levels (mutations move by +/- 1..2).
    names : tuple of str
        Optional step names, for reports (empty, or one per step).
    features : ndarray or None
        Optional ``(n_steps, F)`` float observations per step; opaque to the search, only the
        recurrent policy reads them.
    """

    choices: tuple[int, ...]
    names: tuple[str, ...] = ()
    features: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self):
        try:
            choices = tuple(operator.index(c) for c in self.choices)
        except TypeError:
            raise UserError(f"action space choices must be integers, got {self.choices!r}") from None
        if not choices:
            raise UserError("empty action space: give at least one step with at least one choice")
        bad = [i for i, c in enumerate(choices) if c < 1]
        if bad:
            raise UserError(f"empty action space: step {bad[0]} has {choices[bad[0]]} choices; "
                            "every step needs at least one")
        object.__setattr__(self, "choices", choices)
        names = tuple(str(n) for n in self.names)
        if names and len(names) != len(choices):
            raise UserError(f"action space has {len(choices)} steps but {len(names)} names; "
                            "give one name per step or none")
        object.__setattr__(self, "names", names)
        if self.features is not None:
            feats = np.asarray(self.features, dtype=np.float64)
            if feats.ndim == 1:
                feats = feats[:, None]
            if feats.ndim != 2 or feats.shape[0] != len(choices):
                raise UserError(f"action space features must have shape (n_steps={len(choices)}, F), "
                                f"got {np.shape(self.features)}")
            if not np.all(np.isfinite(feats)):
                raise UserError("action space features must be finite numbers")
            feats = feats.copy()
            feats.flags.writeable = False
            object.__setattr__(self, "features", feats)

    @property
    def n_steps(self) -> int:
        return len(self.choices)

    @property
    def size(self) -> int:
        """Number of points in the space (exact Python int)."""
        return math.prod(self.choices)

    @property
    def log10_size(self) -> float:
        return float(sum(math.log10(c) for c in self.choices))

    @property
    def max_choices(self) -> int:
        return max(self.choices)

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniform random points, int64 ``(n, n_steps)``."""
        hi = np.asarray(self.choices, dtype=np.int64)
        return (rng.random((n, self.n_steps)) * hi).astype(np.int64)

    def contains(self, actions: np.ndarray) -> bool:
        a = np.asarray(actions)
        return (a.ndim >= 1 and a.shape[-1] == self.n_steps and bool(np.all(a >= 0))
                and bool(np.all(a < np.asarray(self.choices))))


@dataclass
class Problem:
    """What to search: a space, an objective (lower is better) and an optional constraint.

    ``objective(actions)`` and ``constraint(actions)`` take int64 ``(P, n_steps)`` and return
    float ``(P,)``: one call scores a whole population. A row is feasible when its violation is
    ``<= 0`` (every row is feasible without a constraint). NaN values count as ``+inf``.
    """

    space: ActionSpace
    objective: Callable[[np.ndarray], np.ndarray]
    constraint: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass
class SearchResult:
    """The outcome of one :func:`search`.

    ``best_actions`` is the best feasible row found, or, when none was feasible, the row with the
    smallest violation (then ``feasible`` is False). ``history`` rows are
    ``(evaluations so far, best feasible value so far)``, ``inf`` before the first feasible row.
    """

    method: str
    best_actions: np.ndarray
    best_value: float
    feasible: bool
    evaluations: int
    history: np.ndarray
    seconds: float
    best_violation: float = 0.0

    def summary(self) -> str:
        state = "feasible" if self.feasible else f"INFEASIBLE (violation {self.best_violation:.4g})"
        return (f"{self.method}: best {self.best_value:.6g} {state}, "
                f"{self.evaluations} evaluations, {self.seconds:.2f} s")


# --------------------------------------------------------------------------------------------
# Bookkeeping shared by every method


class BudgetSpent(Exception):
    """Raised by the evaluator once the budget is used up; methods stop on it."""


def rank_key(values: np.ndarray, violations: np.ndarray) -> np.ndarray:
    """Indices sorting rows best first: feasible by value, then infeasible by violation."""
    infeasible = violations > 0
    secondary = np.where(infeasible, violations, values)
    return np.lexsort((secondary, infeasible))


def better(v1, c1, v2, c2) -> np.ndarray:
    """Elementwise: is row 1 strictly better than row 2 under the feasibility rule?"""
    f1, f2 = c1 <= 0, c2 <= 0
    return np.where(f1 & f2, v1 < v2, np.where(f1 | f2, f1, c1 < c2))


class Evaluator:
    """Scores rows, counts them against the budget, and keeps the best and the history.

    With ``remember=True`` every scored row is kept (``known``: row bytes -> value, violation)
    and a row scored before costs no evaluation: the call returns it with its old scores.
    A method that keeps asking only for known rows is stopped (:class:`BudgetSpent`) after
    :data:`IDLE_CALLS` such calls in a row, and once every row of the space is known.
    """

    #: Consecutive calls without a new row after which a remembering evaluator stops a method.
    IDLE_CALLS = 2000

    def __init__(self, problem: Problem, budget: int, method: str, progress=None,
                 remember: bool = False):
        self.problem = problem
        self.known = {} if remember else None
        self._idle = 0
        self.space = problem.space
        self.budget = budget
        self.method = method
        self.progress = progress
        self.evaluations = 0
        self.best_actions = None
        self.best_value = math.inf
        self.best_violation = math.inf
        self.best_feasible_value = math.inf
        self._history = []
        self._last_progress = time.monotonic()
        self.start = time.monotonic()

    @property
    def remaining(self) -> int:
        return self.budget - self.evaluations

    def __call__(self, actions: np.ndarray, truncate: bool = True):
        """Score ``actions``; returns ``(actions, values, violations)``, rows beyond the budget cut.

        Raises :class:`BudgetSpent` when nothing is left to evaluate.
        """
        if self.remaining <= 0:
            raise BudgetSpent
        actions = np.ascontiguousarray(actions, dtype=np.int64)
        if self.known is not None:
            return self._remembered(actions)
        return self._score(actions)

    def _remembered(self, actions):
        known = self.known
        keys = [row.tobytes() for row in actions]
        new, pending = [], set()
        for i, key in enumerate(keys):
            if key not in known and key not in pending:
                pending.add(key)
                new.append(i)
        if new:
            self._idle = 0
            rows, values, violations = self._score(actions[new])
            for row, value, violation in zip(rows, values.tolist(), violations.tolist()):
                known[row.tobytes()] = (value, violation)
        else:
            self._idle += 1
            if self._idle > self.IDLE_CALLS or len(known) >= self.space.size:
                raise BudgetSpent
        keep = [i for i, key in enumerate(keys) if key in known]
        if len(keep) < len(keys):
            actions = actions[keep]
            keys = [keys[i] for i in keep]
        scores = np.array([known[key] for key in keys], dtype=np.float64).reshape(-1, 2)
        return actions, scores[:, 0], scores[:, 1]

    def _score(self, actions):
        if len(actions) > self.remaining:
            actions = actions[:self.remaining]
        n = len(actions)
        if n == 0:
            return actions, np.zeros(0), np.zeros(0)
        values = self._call(self.problem.objective, actions, "objective")
        if self.problem.constraint is None:
            violations = np.zeros(n)
        else:
            violations = self._call(self.problem.constraint, actions, "constraint")
        self.evaluations += n
        order = rank_key(values, violations)
        i = order[0]
        if self.best_actions is None or better(values[i], violations[i], self.best_value, self.best_violation):
            self.best_actions = actions[i].copy()
            self.best_value = float(values[i])
            self.best_violation = float(violations[i])
            if violations[i] <= 0:
                self.best_feasible_value = float(values[i])
        self._history.append((self.evaluations, self.best_feasible_value))
        if self.progress is not None:
            now = time.monotonic()
            if now - self._last_progress >= 0.5 or self.remaining == 0:
                self._last_progress = now
                self.progress(self.method, self.evaluations, self.best_feasible_value)
        return actions, values, violations

    def _call(self, fn, actions, what):
        out = np.asarray(fn(actions), dtype=np.float64)
        if out.shape != (len(actions),):
            raise UserError(f"the {what} must return one number per row: got shape {out.shape} "
                            f"for {len(actions)} rows")
        return np.where(np.isnan(out), np.inf, out)

    def result(self) -> SearchResult:
        if self.best_actions is None:  # only possible with budget 0, which search() refuses
            raise RuntimeError("no row was evaluated")
        history = np.asarray(self._history, dtype=np.float64).reshape(-1, 2)
        return SearchResult(
            method=self.method, best_actions=self.best_actions.copy(), best_value=self.best_value,
            feasible=bool(self.best_violation <= 0), evaluations=self.evaluations,
            history=history, seconds=time.monotonic() - self.start,
            best_violation=max(self.best_violation, 0.0))


# --------------------------------------------------------------------------------------------
# Genetic operators (the ``ga`` method)


def mutate(pop: np.ndarray, choices: np.ndarray, rng: np.random.Generator, rate: float,
           reset: float = 0.2, at_least_one: bool = True, pair: float = 0.0) -> np.ndarray:
    """Per-step mutation: with probability ``rate`` a step moves to a neighbouring level
    (+/- 1 or 2) or, with probability ``reset`` of those, to a uniform random level.

    With probability ``pair`` a row also gets a transfer: one step up a level, another down.
    Under a shared budget the best rows sit on its boundary, and a transfer moves along it
    where two independent moves would rarely land together.
    """
    pop = pop.copy()
    n, t = pop.shape
    mask = rng.random((n, t)) < rate
    if at_least_one:
        # A child that equals its parent wastes an evaluation: force one change per row,
        # on a step that has more than one choice.
        none = ~mask.any(axis=1)
        movable = np.flatnonzero(choices > 1)
        if none.any() and len(movable):
            mask[np.flatnonzero(none), rng.choice(movable, size=int(none.sum()))] = True
    step = rng.choice(np.array([-2, -1, 1, 2]), size=(n, t), p=[0.15, 0.35, 0.35, 0.15])
    moved = pop + step
    # Reflect off the ends so a move is never a no-op when the step has room.
    hi = choices[None, :] - 1
    moved = np.where(moved < 0, -moved, moved)
    moved = np.where(moved > hi, 2 * hi - moved, moved)
    moved = np.clip(moved, 0, hi)
    randomised = (rng.random((n, t)) * choices[None, :]).astype(np.int64)
    new = np.where(rng.random((n, t)) < reset, randomised, moved)
    out = np.where(mask, new, pop)
    movable = np.flatnonzero(choices > 1)
    if pair > 0 and len(movable) > 1:
        rows = np.flatnonzero(rng.random(n) < pair)
        up = rng.choice(movable, size=len(rows))
        down = rng.choice(movable, size=len(rows))
        out[rows, up] = np.minimum(out[rows, up] + 1, choices[up] - 1)
        out[rows, down] = np.maximum(out[rows, down] - 1, 0)
    return out


def tournament_select(ranks: np.ndarray, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Indices of ``n`` winners of ``k``-way tournaments (lower rank wins)."""
    entrants = rng.integers(0, len(ranks), size=(n, k))
    return entrants[np.arange(n), np.argmin(ranks[entrants], axis=1)]


def genetic(ev: Evaluator, rng: np.random.Generator, seeds: np.ndarray | None = None, scores=None,
            population: int = 64, elite: int = 4, tournament: int = 3, crossover: float = 0.9,
            mutation: float | None = None, reset: float = 0.2, pair: float = 0.3, plus: bool = False,
            fresh: float = 0.5, stall: int = 20):
    """Genetic algorithm; ``seeds`` start the population (``scores = (values, violations)`` when
    they are already scored), mutated seeds or random rows fill the rest.

    ``plus=True`` keeps the best ``population`` of parents and children (mu + lambda), otherwise
    the children replace the parents except for ``elite`` survivors.
    """
    space = ev.space
    choices = np.asarray(space.choices, dtype=np.int64)
    t = space.n_steps
    rate = mutation if mutation is not None else min(1.0, 1.5 / t)
    if seeds is None or len(seeds) == 0:
        pop, vals, viol = ev(space.random(rng, population))
    else:
        seeds = np.asarray(seeds, dtype=np.int64)[:population]
        if scores is None:
            pop, vals, viol = ev(seeds)
        else:  # already scored by the caller: no need to spend budget again
            pop, vals, viol = seeds, scores[0][:population], scores[1][:population]
        fill = population - len(pop)
        if fill > 0:
            # Mutated copies of the seeds keep the fine-tuning close to what the policy found;
            # a share of random rows keeps other basins reachable when the policy collapsed
            # early (on small spaces that cost the optimum).
            n_random = int(round(fill * fresh))
            parents = pop[rng.integers(0, len(pop), size=fill - n_random)]
            kids, kv, kc = ev(np.concatenate([mutate(parents, choices, rng, rate, reset, pair=pair),
                                              space.random(rng, n_random)]))
            pop = np.concatenate([pop, kids])
            vals = np.concatenate([vals, kv])
            viol = np.concatenate([viol, kc])
    best = (math.inf, math.inf)
    stalled = 0
    while True:
        order = rank_key(vals, viol)
        pop, vals, viol = pop[order], vals[order], viol[order]
        if better(vals[0], viol[0], best[0], best[1]):
            best, stalled = (vals[0], viol[0]), 0
        else:
            stalled += 1
        if stall and stalled >= stall:
            # Converged: keep the elite, rebuild the rest from heavy mutants of the best and
            # random rows, so the remaining budget explores instead of re-scoring one basin.
            e = max(1, min(elite, len(pop)))
            n_new = population - e
            heavy = mutate(pop[rng.integers(0, e, size=n_new - n_new // 2)], choices, rng,
                           min(1.0, 4.0 / t), reset, pair=pair)
            kids, kv, kc = ev(np.concatenate([heavy, space.random(rng, n_new // 2)]))
            pop = np.concatenate([pop[:e], kids])
            vals = np.concatenate([vals[:e], kv])
            viol = np.concatenate([viol[:e], kc])
            stalled = 0
            continue
        ranks = np.arange(len(pop))
        n_children = population if plus else population - min(elite, len(pop))
        a = pop[tournament_select(ranks, rng, n_children, tournament)]
        b = pop[tournament_select(ranks, rng, n_children, tournament)]
        do_x = rng.random(n_children) < crossover
        uniform = rng.random(n_children) < 0.5
        cut = rng.integers(1, max(t, 2), size=n_children)
        take_b = np.where(uniform[:, None], rng.random((n_children, t)) < 0.5,
                          np.arange(t)[None, :] >= cut[:, None])
        children = np.where(do_x[:, None] & take_b, b, a)
        children = mutate(children, choices, rng, rate, reset, pair=pair)
        children, cv, cc = ev(children)
        if plus:
            pop = np.concatenate([pop, children])
            vals = np.concatenate([vals, cv])
            viol = np.concatenate([viol, cc])
            # Drop duplicate rows so the population keeps its diversity.
            _, first = np.unique(pop, axis=0, return_index=True)
            keep = np.sort(first)
            pop, vals, viol = pop[keep], vals[keep], viol[keep]
            order = rank_key(vals, viol)[:population]
            pop, vals, viol = pop[order], vals[order], viol[order]
        else:
            e = min(elite, len(pop))
            pop = np.concatenate([pop[:e], children])
            vals = np.concatenate([vals[:e], cv])
            viol = np.concatenate([viol[:e], cc])


# --------------------------------------------------------------------------------------------
# The registry of methods


#: Options of :func:`genetic`, and of the REINFORCE stage (``gen.alloc.policy.reinforce``).
GA_OPTIONS = frozenset({"population", "elite", "tournament", "crossover", "mutation", "reset",
                        "pair", "plus", "stall"})
RL_OPTIONS = frozenset({"batch", "hidden", "lr", "entropy", "embed", "bias_lr", "epochs", "clip",
                        "imitate", "imitate_k"})


@dataclass(frozen=True)
class MethodSpec:
    """A search method: ``module.function(evaluator, rng, **options)``, which returns when done
    or lets :class:`BudgetSpent` end it."""

    module: str
    function: str
    options: frozenset
    summary: str
    #: The method's evaluator remembers rows: a row scored before costs no evaluation.
    remember: bool = False
    #: The method whose random stream this one draws from (default: its own). ``local`` draws
    #: the default's, so that it is exactly the default's first stage alone.
    stream: str | None = None

    def load(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.function)


#: Method name -> spec. The order is part of each method's random stream (its seed sequence
#: holds the method's position), so new methods go at the end.
METHODS = {
    "rl_ga": MethodSpec("gen.alloc.policy", "rl_ga",
                        RL_OPTIONS | {"rl_fraction", "patience", "kick", "replay"},
                        "the default: local search from the lowest row; REINFORCE with a "
                        "recurrent policy, then local search, where it stalls",
                        remember=True),
    "rl": MethodSpec("gen.alloc.policy", "reinforce", RL_OPTIONS,
                     "the REINFORCE stage alone"),
    "ga": MethodSpec("gen.alloc.core", "genetic", GA_OPTIONS,
                     "genetic algorithm from a random population"),
    "annealing": MethodSpec("gen.alloc.baselines", "annealing",
                            frozenset({"chains", "t_start", "t_end", "moves", "reset", "pair"}),
                            "parallel simulated annealing"),
    "random": MethodSpec("gen.alloc.baselines", "random_search", frozenset({"batch"}),
                         "uniform random sampling"),
    "exhaustive": MethodSpec("gen.alloc.baselines", "exhaustive", frozenset({"chunk"}),
                             f"every point, refused above {EXHAUSTIVE_LIMIT:,} points"),
    "local": MethodSpec("gen.alloc.local", "local_search", frozenset({"kick", "replay"}),
                        "the default's local search alone: iterated local search from the "
                        "lowest row", remember=True, stream="rl_ga"),
}


# (low, high) inclusive ranges of the numeric options; None = unbounded.
OPTION_RANGES = {
    "batch": (1, None), "chunk": (1, None), "population": (2, None), "elite": (0, None),
    "tournament": (1, None), "crossover": (0, 1), "mutation": (0, 1), "reset": (0, 1),
    "pair": (0, 1), "chains": (1, None), "t_start": (0, None), "t_end": (0, None), "moves": (1, None),
    "hidden": (1, None), "embed": (1, None), "lr": (0, None), "entropy": (0, None),
    "bias_lr": (0, None), "epochs": (1, None), "clip": (0, None), "imitate": (0, None),
    "imitate_k": (1, None), "rl_fraction": (0, 1), "stall": (0, None), "kick": (0, 1),
    "replay": (0, None), "patience": (1, None),
}


