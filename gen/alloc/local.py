"""Local search over ordered levels: probe every one-step move, combine the ones that pay.

The space's steps hold ordered levels (:class:`~gen.alloc.core.ActionSpace`: neighbouring
indices are neighbouring levels), so the natural neighbours of a row are the rows one level
away at one step. A *probe* scores all of them at once (one vectorized call, about two rows per
step, plus two levels up where one level up made things worse: a level that pays only two steps
up, such as a two-wide array for a one-column layer) and classifies each move as better, equal
or worse than the incumbent under the feasibility rule. The probe then proposes the moves that
a single-step search cannot see:

- the improving moves together, best first (several prefix lengths; also ordered by gain per
  unit of added violation, so that a budget is spent where it buys the most);
- *exchanges*: a raise that would pay but breaks the budget, with the lowerings that cost the
  least value, or free the most violation per unit of value lost;
- *compression*: lowering the steps whose lowering leaves the value alone (it frees budget),
  all of them or the prefixes that free the most;
- when at most two single moves pay, *plateau* moves. Under a slowest-stage objective (``max``)
  many steps tie: no single raise improves, only raising all the tied ones together does. So:
  the *critical* steps (those whose lowering hurts) raised together, by one or two levels,
  with their neighbours, cheapest first or most-hurting first (prefixes; the slowest stages'
  steps are the ones whose lowering hurts most); and random subsets of the steps whose raise
  is neutral (ties among steps at their lowest level, which no lowering can reveal).

An accepted move is repeated while it pays (a pattern move, as in Hooke and Jeeves' pattern
search), and the other moves that improved on the old incumbent are replayed on the new one.
The next round does not probe afresh: the old probe is *moved* along (only the steps that
changed and their neighbours are probed again, every other move keeps its old change of value
and violation: exact for a sum of per-layer terms under an additive budget), and only when a
round on a moved probe finds nothing does a full probe run. When that finds nothing either, a
wider probe runs: two levels at every step, and *trades* between neighbouring steps (one up,
the other down by one or two; in a layer sequence a layer's array and its buffer trade against
each other). When that fails too, the row is a local optimum, and the search kicks it (2 to
``kick * n_steps`` random steps moved by one or two levels) and descends again (iterated local
search). A kicked descent that ends no worse than the best replaces it, so equal rows drift
across plateaus; when kicks keep leading to rows seen before, it restarts from random rows.

Every row goes through the evaluator's memory (``Evaluator(remember=True)``): a row scored
before costs no evaluation, so re-probing after a kick that led back is free.

Measured on the eight layer-pipelined problems of ``benchmarks/bench_alloc.py`` (docs/DESIGN.md,
section 1): from the lowest row this comes within 5% of the best value any method finds at
20,000 evaluations after 160 to 2,554 evaluations (median of 5 seeds).
"""

from __future__ import annotations

import numpy as np

from .core import BudgetSpent, Evaluator, better

__all__ = ["local_search", "descend", "score", "lowest_row"]

#: Prefix lengths of the combined improving moves that are tried.
_PREFIXES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def score(ev: Evaluator, rows: np.ndarray):
    """Values and violations of every row of ``rows``; BudgetSpent when not all could be scored."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    scored, values, violations = ev(rows)
    if len(scored) < len(rows):
        raise BudgetSpent
    return values, violations


def lowest_row(space) -> np.ndarray:
    """The row with every step at its first level (for a hardware space, the smallest design)."""
    return np.zeros(space.n_steps, dtype=np.int64)


def _classify(values, violations, v, c):
    """+1 better than (v, c), -1 worse, 0 neither."""
    return np.where(better(values, violations, v, c), 1,
                    np.where(better(v, c, values, violations), -1, 0))


def _prefix_combos(x, steps, deltas, order, hi):
    """Rows applying the first k moves of ``order`` (one move per step) for k in _PREFIXES."""
    out, combo, used, k = [], x.copy(), set(), 0
    for i in order:
        s = int(steps[i])
        if s in used:
            continue
        used.add(s)
        combo = combo.copy()
        combo[s] = min(max(combo[s] + deltas[i], 0), hi[s])
        k += 1
        if k in _PREFIXES:
            out.append(combo)
    if k > 1 and (not out or not np.array_equal(out[-1], combo)):
        out.append(combo)
    return out


class _Probe:
    """Single-step moves of ``x`` and their scores."""

    def __init__(self, ev, x, v, c, hi, sizes, extra_up2=False, only=None):
        steps, deltas = [], []
        for size in sizes:
            dn = np.flatnonzero((x >= size) & (True if only is None else only))
            up = np.flatnonzero((x <= hi - size) & (True if only is None else only))
            steps += [dn, up]
            deltas += [np.full(len(dn), -size), np.full(len(up), size)]
        self.steps = np.concatenate(steps).astype(np.int64)
        self.deltas = np.concatenate(deltas).astype(np.int64)
        rows = np.repeat(x[None], len(self.steps), axis=0)
        rows[np.arange(len(self.steps)), self.steps] += self.deltas
        self.values, self.violations = score(ev, rows) if len(rows) else (np.zeros(0), np.zeros(0))
        self.cls = _classify(self.values, self.violations, v, c)
        if extra_up2:
            # Two levels up where one did not help: a level that pays only two steps up (a
            # one-wide array for a one-column layer, say) is invisible to the one-level probe.
            u2 = self.steps[(self.deltas == 1) & (self.cls == -1)]
            u2 = u2[x[u2] <= hi[u2] - 2]
            if len(u2):
                rows = np.repeat(x[None], len(u2), axis=0)
                rows[np.arange(len(u2)), u2] += 2
                v2, c2 = score(ev, rows)
                self.steps = np.concatenate([self.steps, u2])
                self.deltas = np.concatenate([self.deltas, np.full(len(u2), 2)])
                self.values = np.concatenate([self.values, v2])
                self.violations = np.concatenate([self.violations, c2])
                self.cls = np.concatenate([self.cls, _classify(v2, c2, v, c)])
        self.real = np.ones(len(self.steps), dtype=bool)

    def rows(self, x, idx):
        out = np.repeat(x[None], len(idx), axis=0)
        out[np.arange(len(idx)), self.steps[idx]] += self.deltas[idx]
        return out

    @classmethod
    def moved(cls, probe, ev, old, v_old, c_old, x, v, c, hi):
        """The probe of ``x``, reached from ``old`` by a few steps, made mostly from the probe
        of ``old``: the steps that moved and their neighbours are probed again; every other
        move keeps its old change of value and violation (exact for a sum of per-layer terms
        under an additive budget, a guess otherwise, each candidate built on it is scored)."""
        changed = np.flatnonzero(x != old)
        near = np.zeros(len(hi), dtype=bool)
        near[np.clip(np.concatenate([changed - 1, changed, changed + 1]), 0, len(hi) - 1)] = True
        new = cls(ev, x, v, c, hi, (1,), extra_up2=True, only=near)
        keep = ~near[probe.steps] & (probe.deltas != 0)
        new.steps = np.concatenate([new.steps, probe.steps[keep]])
        new.deltas = np.concatenate([new.deltas, probe.deltas[keep]])
        new.values = np.concatenate([new.values, probe.values[keep] - v_old + v])
        new.violations = np.concatenate([new.violations, probe.violations[keep] - c_old + c])
        new.real = np.concatenate([new.real, np.zeros(int(keep.sum()), dtype=bool)])
        new.cls = _classify(new.values, new.violations, v, c)
        return new


def _candidates(x, v, c, probe, hi, rng, wide):
    """Combined moves proposed from a probe (see the module docstring)."""
    n = len(hi)
    cands = []
    steps, deltas, values, viol, cls = (probe.steps, probe.deltas, probe.values, probe.violations,
                                        probe.cls)
    imp = np.flatnonzero(cls == 1)
    if len(imp) > 1:
        order = imp[np.lexsort((values[imp], viol[imp] > 0))]
        cands += _prefix_combos(x, steps, deltas, order, hi)
        if c <= 0:
            gain_per_cost = (values[imp] - v) / np.maximum(viol[imp] - c, 1e-12)
            cands += _prefix_combos(x, steps, deltas, imp[np.argsort(gain_per_cost)], hi)
    down = deltas < 0
    free = np.flatnonzero(down & (cls == 0) & (viol <= c))
    comp = x.copy()
    if len(free):
        # Every lowering that alone kept the value, all at once (one probe size: one per step).
        comp[steps[free]] += deltas[free]
        cands.append(comp)
    bases = (x, comp) if len(free) else (x,)
    if c <= 0:
        # Exchanges: a raise that gains (whatever it does to the budget) with the lowerings
        # that cost the least.
        ups = np.flatnonzero(~down & (values < v))
        downs = np.flatnonzero(down & (viol <= 0))
        if len(ups) and len(downs):
            ups = ups[np.argsort(values[ups])][:12]
            downs = downs[np.argsort(values[downs])][:12]
            pairs = [(i, j) for i in ups for j in downs if steps[i] != steps[j]]
            pairs.sort(key=lambda p: values[p[0]] + values[p[1]])
            for i, j in pairs[:24]:
                if values[i] + values[j] - 2 * v >= 0:
                    break
                y = x.copy()
                y[steps[i]] += deltas[i]
                y[steps[j]] += deltas[j]
                cands.append(y)
            for i in ups[:6]:
                y = x.copy()
                y[steps[i]] += deltas[i]
                m = 0
                for j in downs[:8]:
                    if steps[j] == steps[i]:
                        continue
                    y = y.copy()
                    y[steps[j]] = max(y[steps[j]] + deltas[j], 0)
                    m += 1
                    if m in (2, 4, 8):
                        cands.append(y)
            # Budget-aware exchanges: pay for a raise that breaks the budget with the lowerings
            # that free the most violation per unit of value lost (violations taken as additive).
            over = np.flatnonzero(~down & (values < v) & (viol > 0))
            freeing = np.flatnonzero(down & (viol < c) & (values >= v))
            if len(over) and len(freeing):
                over = over[np.argsort(values[over])][:16]
                loss = values[freeing] - v
                freed = c - viol[freeing]
                freeing = freeing[np.argsort(-freed / np.maximum(loss, 1e-12 * max(abs(v), 1e-300)))]
                for i in over:
                    need = viol[i] - c
                    y, got, lost, extra = x.copy(), 0.0, 0.0, 0
                    y[steps[i]] += deltas[i]
                    for j in freeing:
                        if steps[j] == steps[i]:
                            continue
                        y = y.copy()
                        y[steps[j]] += deltas[j]
                        got += c - viol[j]
                        lost += values[j] - v
                        if lost >= v - values[i]:
                            break
                        if got >= need:
                            cands.append(y)
                            extra += 1
                            if extra == 2:
                                break
    if not wide and len(imp) <= 2:
        # Plateau moves, for when (almost) no single move pays: proposing them while single
        # moves still pay costs evaluations and, measured, gave no better rows.
        crit = np.unique(steps[down & (cls == -1)])
        crit = crit[x[crit] < hi[crit]]
        # The raises of critical (or neutral) steps, cheapest first (by the violation the
        # one-level raise alone leads to), as prefixes: the steps that tie at the slowest stage
        # are often the ones whose raise is cheap, and the prefixes find them without knowing
        # which they are.
        raise1 = np.flatnonzero(deltas == 1)
        for pool in (crit, np.unique(steps[(deltas == 1) & (cls == 0)])):
            sel = raise1[np.isin(steps[raise1], pool)]
            if len(sel) > 1:
                order = sel[np.argsort(viol[sel], kind="stable")]
                for base in bases:
                    cands += _prefix_combos(base, steps, deltas, order, hi)
        # ... and the critical steps whose lowering hurts the most first: under a slowest-stage
        # objective those are the slowest stages' steps (lowering a level doubles a stage), the
        # ones to raise together.
        hurt = np.flatnonzero(down & (cls == -1))
        hurt = hurt[np.argsort(-values[hurt], kind="stable")]
        up_of = {int(steps[i]): i for i in raise1}
        order = [up_of[int(steps[i])] for i in hurt if int(steps[i]) in up_of]
        if len(order) > 1:
            for base in bases:
                cands += _prefix_combos(base, steps, deltas, order, hi)
        if len(crit):
            near = np.unique(np.clip(np.concatenate([crit - 1, crit, crit + 1]), 0, n - 1))
            for base in bases:
                for sel, amount in ((crit, 1), (crit, 2), (near, 1)):
                    y = base.copy()
                    y[sel] = np.minimum(y[sel] + amount, hi[sel])
                    cands.append(y)
        neutral_up = np.unique(steps[(deltas == 1) & (cls == 0) & (viol <= 0)])
        if len(neutral_up) > 1:
            for frac in (1.0, 0.85, 0.7, 0.5, 0.5, 0.3):
                sel = neutral_up if frac == 1.0 else neutral_up[rng.random(len(neutral_up)) < frac]
                for amount in (1, 2):
                    for base in bases:
                        y = base.copy()
                        y[sel] = np.minimum(y[sel] + amount, hi[sel])
                        cands.append(y)
    comps = []
    if len(free) > 1:
        # The lowerings together may cost what none costs alone (two steps of one layer):
        # prefixes too, the ones that free the most budget first.
        comps = _prefix_combos(x, steps, deltas, free[np.argsort(viol[free], kind="stable")], hi)
    if len(free):
        comps.append(comp)
        cands += comps
    return cands, comps


def _trades(ev, x, v, c, hi):
    """Neighbouring steps traded against each other: (+1, -1), (+1, -2), (-1, +1), (-2, +1)."""
    n = len(hi)
    if n < 2:
        return None
    t = np.arange(n - 1)
    rows, pairs = [], []
    for da, db in ((1, -1), (1, -2), (-1, 1), (-2, 1)):
        ok = (x[t] + da >= 0) & (x[t] + da <= hi[t]) & (x[t + 1] + db >= 0) & (x[t + 1] + db <= hi[t + 1])
        for i in t[ok]:
            y = x.copy()
            y[i] += da
            y[i + 1] += db
            rows.append(y)
            pairs.append(i)
    if not rows:
        return None
    rows = np.asarray(rows)
    values, viol = score(ev, rows)
    return rows, np.asarray(pairs), values, viol, _classify(values, viol, v, c)


def _best_of(rows, vals, viol):
    order = np.lexsort((np.where(viol > 0, viol, vals), viol > 0))
    return order


def _take(ev, x, v, c, rows, vals, viol, hi, replay):
    """The best of ``rows`` if it beats ``x``, then the same step again while it pays (a
    pattern move), then the other rows that beat ``x`` replayed on top; None if none beats it."""
    order = _best_of(rows, vals, viol)
    b = order[0]
    if not better(vals[b], viol[b], v, c):
        return None
    old, old_v, old_c = x, v, c
    x, v, c = rows[b].copy(), float(vals[b]), float(viol[b])
    step = x - old
    while True:
        y = np.clip(x + step, 0, hi)
        if np.array_equal(y, x):
            break
        yv, yc = score(ev, y[None])
        if not better(yv[0], yc[0], v, c):
            break
        x, v, c = y, float(yv[0]), float(yc[0])
    fails = 0
    for i in order[1:]:
        if fails >= replay or not better(vals[i], viol[i], old_v, old_c):
            break
        y = np.clip(x + (rows[i] - old), 0, hi)
        if np.array_equal(y, x):
            continue
        yv, yc = score(ev, y[None])
        if better(yv[0], yc[0], v, c):
            x, v, c = y, float(yv[0]), float(yc[0])
            fails = 0
        else:
            fails += 1
    return x, v, c


def _round(ev, rng, x, v, c, probe, hi, wide, replay):
    """One round of candidates from ``probe``; returns ``(x, v, c, moved_by_compression)`` of
    the row it moved to, or None."""
    cands, comps = _candidates(x, v, c, probe, hi, rng, wide)
    traded = _trades(ev, x, v, c, hi) if wide else None
    if traded is not None:
        t_rows, t_pairs, t_vals, t_viol, t_cls = traded
        # Trades that keep the value and free budget, all those on disjoint steps at once.
        gain = np.flatnonzero((t_cls == 0) & (t_viol < c))
        if len(gain):
            y, used = x.copy(), set()
            for i in gain[np.argsort(t_viol[gain])]:
                a = int(t_pairs[i])
                if a in used or a + 1 in used:
                    continue
                used.update((a, a + 1))
                y[a:a + 2] = t_rows[i][a:a + 2]
            cands.append(y)
            comps = comps + [y]
        better_trades = np.flatnonzero(t_cls == 1)
        if len(better_trades):
            cands += list(t_rows[better_trades[np.argsort(t_vals[better_trades])][:16]])
    real = np.flatnonzero(probe.real)
    rows = [probe.rows(x, real)] if len(real) else []
    vals = [probe.values[real]]
    viol = [probe.violations[real]]
    guessed = np.flatnonzero(~probe.real & (probe.cls == 1))
    if len(guessed):  # the single moves a moved probe only guesses to improve: score the best
        order = guessed[np.lexsort((probe.values[guessed], probe.violations[guessed] > 0))]
        cands += list(probe.rows(x, order[:4]))
    if traded is not None:
        rows.append(traded[0])
        vals.append(traded[2])
        viol.append(traded[3])
    if cands:
        cands = np.unique(np.asarray(cands), axis=0)
        cv, cc = score(ev, cands)
        rows.append(cands)
        vals.append(cv)
        viol.append(cc)
    if not rows:
        return None
    taken = _take(ev, x, v, c, np.concatenate(rows), np.concatenate(vals), np.concatenate(viol),
                  hi, replay)
    if taken is not None:
        return taken
    comps = [y for y in comps if not np.array_equal(y, x)]
    if comps:
        comps = np.asarray(comps)
        cv, cc = score(ev, comps)
        # Same value, no less slack: take the one that frees the most (then lowers the most
        # steps), budget for the next raises. Lowerings alone (the narrow probe) end; trades
        # must free budget strictly.
        ok = (_classify(cv, cc, v, c) == 0) & (cc <= c) & ((cc < c) | (not wide))
        if ok.any():
            i = np.flatnonzero(ok)
            i = i[np.lexsort((comps[i].sum(axis=1), cc[i]))[0]]
            return comps[i].copy(), float(cv[i]), float(cc[i])
    return None


def descend(ev: Evaluator, rng: np.random.Generator, x, v, c, replay: int = 8):
    """Improve ``x`` (value ``v``, violation ``c``) until no probe finds a better row; returns
    the local optimum ``(x, v, c)``.

    After a round that moved, the next round first runs on the old probe moved along
    (:meth:`_Probe.moved`: only the steps that changed are probed again); only when that
    round finds nothing does a full probe run."""
    hi = np.asarray(ev.space.choices, dtype=np.int64) - 1
    x = np.asarray(x, dtype=np.int64).copy()
    probe = None
    while True:
        if probe is not None:
            taken = _round(ev, rng, x, v, c, probe, hi, False, replay)
            if taken is not None:
                probe = _Probe.moved(probe, ev, x, v, c, *taken, hi)
                x, v, c = taken
                continue
        moved = False
        for wide in (False, True):
            probe = _Probe(ev, x, v, c, hi, (2,) if wide else (1,), extra_up2=not wide)
            taken = _round(ev, rng, x, v, c, probe, hi, wide, replay)
            if taken is not None:
                probe = None if wide else _Probe.moved(probe, ev, x, v, c, *taken, hi)
                x, v, c = taken
                moved = True
                break
        if not moved:
            return x, v, c


def local_search(ev: Evaluator, rng: np.random.Generator, starts: np.ndarray | None = None,
                 kick: float = 0.125, patience: int | None = None, replay: int = 8,
                 stall_only_infeasible: bool = False):
    """Iterated local search: :func:`descend` from the best of ``starts`` (default: the lowest
    row), then kicks of the best row (2 to ``max(3, kick * n_steps)`` random steps moved by one
    or two levels) each followed by a descent; a descent that ends no worse than the best
    replaces it.

    Returns ``(row, value, violation)`` of the best once ``patience`` evaluations have passed
    without an improvement (never, by default: the budget ends it); with
    ``stall_only_infeasible`` only while no feasible row has been found. The evaluator should
    remember rows (``Evaluator(remember=True)``), or every re-probe costs evaluations again.
    """
    space = ev.space
    n = space.n_steps
    hi = np.asarray(space.choices, dtype=np.int64) - 1
    movable = np.flatnonzero(hi > 0)
    if starts is None:
        starts = lowest_row(space)[None]
    starts = np.atleast_2d(np.asarray(starts, dtype=np.int64))
    values, violations = score(ev, starts)
    b = int(np.lexsort((np.where(violations > 0, violations, values), violations > 0))[0])
    bx, bv, bc = descend(ev, rng, starts[b], float(values[b]), float(violations[b]), replay)
    last_gain = ev.evaluations
    if not len(movable):
        raise BudgetSpent
    kmax = max(3, int(round(kick * n)))
    idle = 0
    while (patience is None or ev.evaluations - last_gain < patience
           or (stall_only_infeasible and bc <= 0)):
        before = ev.evaluations
        k = int(rng.integers(2, kmax + 1)) if idle < 50 else len(movable)
        y = bx.copy()
        sel = rng.choice(movable, size=min(k, len(movable)), replace=False)
        y[sel] = np.clip(y[sel] + rng.choice(np.array([-2, -1, 1, 2]), size=len(sel)), 0, hi[sel])
        if idle >= 50:  # kicks lead only to rows seen before: restart from a random row
            y = space.random(rng, 1)[0]
        yv, yc = score(ev, y[None])
        x, v, c = descend(ev, rng, y, float(yv[0]), float(yc[0]), replay)
        if better(v, c, bv, bc):
            last_gain = ev.evaluations
        if not better(bv, bc, v, c):
            bx, bv, bc = x, v, c
        idle = idle + 1 if ev.evaluations == before else 0
        if ev.known is not None and len(ev.known) >= space.size:
            raise BudgetSpent  # every row has been scored: the best is the optimum
    return bx, bv, bc
