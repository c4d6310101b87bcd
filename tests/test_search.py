"""Tests of the hardware-agnostic searches in gen.alloc (determinism, budgets, constraints, optimality)."""

import itertools

import numpy as np
import pytest
import torch

from gen.alloc import ActionSpace, Problem, search
from gen.alloc.core import METHODS, Evaluator
from gen.errors import UserError

PE = np.array([1, 2, 3, 4, 6, 8, 12, 16])
BUF = np.array([1, 2, 4, 8])


def pipeline(n_layers=3, seed=0, cap_per_layer=5.0):
    """A small layer-pipelined sizing problem: slowest stage latency under a PE and buffer budget."""
    rng = np.random.default_rng(seed)
    work = rng.lognormal(0, 1, n_layers)
    press = rng.lognormal(0, 1, n_layers)

    def objective(a):
        return (work / PE[a[:, 0::2]] * (1 + press / BUF[a[:, 1::2]]) + 0.01).max(axis=1)

    def constraint(a):
        return np.maximum(PE[a[:, 0::2]].sum(1) / (cap_per_layer * n_layers) - 1,
                          BUF[a[:, 1::2]].sum(1) / (3.0 * n_layers) - 1)

    feats = np.repeat(np.stack([np.log(work), np.log(press)], 1), 2, axis=0)
    space = ActionSpace((len(PE), len(BUF)) * n_layers, features=feats)
    return Problem(space, objective, constraint)


def brute_force(problem):
    """Reference optimum by plain enumeration, independent of the exhaustive method."""
    rows = np.array(list(itertools.product(*[range(c) for c in problem.space.choices])))
    v, c = problem.objective(rows), problem.constraint(rows)
    v = np.where(c <= 0, v, np.inf)
    return rows[np.argmin(v)], v.min()


class Counting:
    def __init__(self, fn):
        self.fn, self.rows, self.calls = fn, 0, 0

    def __call__(self, a):
        assert a.dtype == np.int64 and a.ndim == 2
        self.rows += len(a)
        self.calls += 1
        return self.fn(a)


FAST = {"rl": {"batch": 16, "hidden": 16}, "rl_ga": {"batch": 16, "hidden": 16}}


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_budget_exact(method):
    prob = pipeline(2)  # 1024 points: small enough for exhaustive
    budget = 1024 if method == "exhaustive" else 301
    runs = []
    for _ in range(2):
        obj = Counting(prob.objective)
        p = Problem(prob.space, obj, prob.constraint)
        r = search(p, method, budget, seed=7, **FAST.get(method, {}))
        assert r.evaluations <= budget and r.evaluations == obj.rows
        assert r.history.shape[1] == 2 and r.history[-1, 0] == r.evaluations
        best = r.history[:, 1]
        assert np.array_equal(best, np.minimum.accumulate(best)), "best-so-far must never get worse"
        assert prob.space.contains(r.best_actions)
        assert r.best_value == pytest.approx(float(prob.objective(r.best_actions[None])[0]))
        runs.append(r)
    a, b = runs
    assert np.array_equal(a.best_actions, b.best_actions)
    assert a.best_value == b.best_value and a.evaluations == b.evaluations
    assert np.array_equal(a.history, b.history)
    if method != "exhaustive":  # the budget is used up exactly
        assert a.evaluations == budget


def test_no_global_rng_leak():
    prob = pipeline(2)
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    threads = torch.get_num_threads()
    search(prob, "rl_ga", 200, seed=1, **FAST["rl_ga"])
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert torch.get_num_threads() == threads


def test_exhaustive_finds_known_optimum():
    # Planted optimum: a sum of squared distances to a target with an odd radix per step.
    target = np.array([3, 0, 6, 2, 4])
    space = ActionSpace((5, 2, 7, 3, 6))
    prob = Problem(space, lambda a: ((a - target) ** 2).sum(axis=1).astype(float) + 1.5)
    r = search(prob, "exhaustive", space.size, seed=0)
    assert np.array_equal(r.best_actions, target) and r.best_value == 1.5
    assert r.evaluations == space.size == 5 * 2 * 7 * 3 * 6

    prob = pipeline(3)
    ref_actions, ref_value = brute_force(prob)
    r = search(prob, "exhaustive", prob.space.size, seed=0)
    assert r.feasible and r.best_value == ref_value
    assert np.array_equal(r.best_actions, ref_actions)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rl_ga_within_one_percent_of_exhaustive(seed):
    prob = pipeline(3, seed=seed)  # 32768 points, tightly constrained
    _, ref_value = brute_force(prob)
    r = search(prob, "rl_ga", 3000, seed=seed)
    assert r.feasible
    assert r.best_value <= ref_value * 1.01, (r.best_value, ref_value)


def test_constraint_handling():
    # Only rows whose step sum is <= 1 are feasible: 1 + 6 of 4**6 = 4096 points.
    space = ActionSpace((4,) * 6)
    prob = Problem(space, lambda a: -a.sum(axis=1).astype(float) - 0.1 * a[:, 2],
                   lambda a: a.sum(axis=1) - 1.0)
    for method in ("rl_ga", "local", "rl", "ga", "annealing", "random", "exhaustive"):
        r = search(prob, method, 4096 if method == "exhaustive" else 800, seed=3, **FAST.get(method, {}))
        assert r.feasible, method
        assert prob.constraint(r.best_actions[None])[0] <= 0
    r = search(prob, "exhaustive", 4096, seed=0)
    assert r.best_actions.tolist() == [0, 0, 1, 0, 0, 0] and r.best_value == pytest.approx(-1.1)

    # Nothing feasible: the result says so and holds the least-violating row.
    never = Problem(space, lambda a: a.sum(axis=1).astype(float), lambda a: 1.0 + a[:, 0] + a[:, 5])
    for method in ("rl_ga", "local", "ga", "annealing", "random", "exhaustive"):
        r = search(never, method, 4096 if method == "exhaustive" else 600, seed=0, **FAST.get(method, {}))
        assert not r.feasible and np.isinf(r.history[:, 1]).all(), method
        assert r.best_violation == 1.0 and r.best_actions[0] == 0 and r.best_actions[5] == 0


def test_unconstrained_and_nan_values():
    space = ActionSpace((3, 3, 3))
    prob = Problem(space, lambda a: np.where(a[:, 0] == 2, np.nan, a.sum(axis=1).astype(float)))
    r = search(prob, "exhaustive", 27, seed=0)
    assert r.feasible and r.best_value == 0.0
    r = search(prob, "ga", 100, seed=0)
    assert r.feasible and np.isfinite(r.best_value)


def test_user_errors():
    with pytest.raises(UserError, match="empty action space"):
        ActionSpace(())
    with pytest.raises(UserError, match="empty action space"):
        ActionSpace((3, 0, 2))
    with pytest.raises(UserError, match="features"):
        ActionSpace((3, 2), features=np.zeros((3, 1)))
    big = Problem(ActionSpace((10,) * 7), lambda a: a.sum(axis=1).astype(float))
    assert big.space.size == 10**7 and big.space.log10_size == pytest.approx(7.0)
    with pytest.raises(UserError, match="exhaustive"):
        search(big, "exhaustive", 10**8, seed=0)
    small = Problem(ActionSpace((4, 4)), lambda a: a.sum(axis=1).astype(float))
    with pytest.raises(UserError, match="budget"):
        search(small, "exhaustive", 10, seed=0)
    with pytest.raises(UserError, match="unknown search method"):
        search(small, "bayes", 10, seed=0)
    with pytest.raises(UserError, match="at least 1"):
        search(small, "random", 0, seed=0)
    with pytest.raises(UserError, match="unknown option"):
        search(small, "ga", 10, seed=0, populaton=8)
    with pytest.raises(UserError, match="one number per row"):
        search(Problem(small.space, lambda a: np.zeros(3)), "random", 10, seed=0)


@pytest.mark.parametrize("with_features", [False, True])
def test_features_optional(with_features):
    prob = pipeline(3)
    space = prob.space if with_features else ActionSpace(prob.space.choices)
    assert (space.features is not None) == with_features
    r = search(Problem(space, prob.objective, prob.constraint), "rl", 256, seed=0, **FAST["rl"])
    assert r.evaluations == 256 and r.feasible


def test_single_choice_steps_and_progress():
    # Steps with one choice must not break mutation, the local search or the policy's masking.
    space = ActionSpace((1, 5, 1, 5), names=("a", "b", "c", "d"))
    prob = Problem(space, lambda a: np.abs(a[:, 1] - a[:, 3] - 2).astype(float) + a[:, 3])
    seen = []
    for method in ("rl_ga", "local", "ga", "annealing"):
        r = search(prob, method, 400, seed=0, progress=lambda m, n, v: seen.append((m, n, v)),
                   **FAST.get(method, {}))
        assert r.best_value == 0.0 and r.best_actions[0] == 0 and r.best_actions[2] == 0, method
        # A method that remembers rows pays for each of the 25 points once, then stops.
        spent = space.size if METHODS[method].remember else 400
        assert r.evaluations == spent and seen[-1] == (method, spent, 0.0), method


def test_policy_samples_match_its_log_probabilities():
    # The NumPy sampler and the torch log-probabilities used for training must be one distribution.
    from gen.alloc.policy import RecurrentPolicy

    choices = (5, 1, 3, 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pol = RecurrentPolicy(choices, np.arange(8.0).reshape(4, 2), hidden=8)
        with torch.no_grad():
            pol.step_bias.normal_(0, 1)
            pol.head.weight.normal_(0, 1)
    rows = np.array(list(itertools.product(*[range(c) for c in choices])))
    with torch.no_grad():
        p = pol.log_prob_entropy(rows)[0].exp().numpy()
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    n = 40000
    a = pol.sample(n, np.random.default_rng(0))
    assert a[:, 1].max() == 0 and (a < np.array(choices)).all()
    emp = np.bincount(np.ravel_multi_index(a.T, choices), minlength=len(rows)) / n
    # 5 standard deviations of a binomial frequency, for every cell
    assert np.all(np.abs(emp - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-4)


def test_option_ranges():
    small = Problem(ActionSpace((4, 4)), lambda a: a.sum(axis=1).astype(float))
    with pytest.raises(UserError, match="rl_fraction"):
        search(small, "rl_ga", 10, seed=0, rl_fraction=1.5)
    with pytest.raises(UserError, match="population"):
        search(small, "ga", 10, seed=0, population=1)
    # rl_fraction 0 and 1 are both valid: the local search alone, the policy alone. The
    # default remembers rows, so the 16 points cost at most 16 evaluations.
    for frac in (0.0, 1.0):
        r = search(small, "rl_ga", 40, seed=0, rl_fraction=frac, batch=8, hidden=8)
        assert r.evaluations <= small.space.size and r.best_value == 0.0
    with pytest.raises(UserError, match="kick"):
        search(small, "local", 10, seed=0, kick=2.0)


# --------------------------------------------------------------------------------------------
# The default method (rl_ga): its parts, its memory, its policy stage


def test_a_row_scored_before_costs_no_evaluation():
    prob = pipeline(2)
    obj = Counting(prob.objective)
    ev = Evaluator(Problem(prob.space, obj, prob.constraint), 10, "t", remember=True)
    rows = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [1, 1, 1, 1]])
    got, values, violations = ev(rows)
    assert ev.evaluations == 2 == obj.rows and len(got) == 3 and values[0] == values[1]
    got, again, _ = ev(rows[::-1])               # all known: nothing scored
    assert ev.evaluations == 2 == obj.rows and np.array_equal(again, values[::-1])
    got, _, _ = ev(np.array([[2, 2, 2, 2]] * 5 + [[3, 3, 3, 3]] * 20))
    assert ev.evaluations == 4 and len(got) == 25
    # Rows past the budget are cut, known rows are still answered.
    got, _, _ = ev(np.concatenate([rows, prob.space.random(np.random.default_rng(0), 50)]))
    assert ev.evaluations == 10 == obj.rows and len(got) < 53 and np.array_equal(got[:3], rows)


def test_the_default_is_its_local_search_while_it_finds_feasible_rows():
    # Same random stream: rl_ga hands nothing to the policy here, so it is `local` exactly.
    prob = pipeline(6, seed=2)
    for budget in (150, 700):
        a = search(prob, "rl_ga", budget, seed=4)
        b = search(prob, "local", budget, seed=4)
        assert a.feasible and np.array_equal(a.history, b.history)
        assert np.array_equal(a.best_actions, b.best_actions)


def test_the_default_never_returns_worse_than_its_policy_stage():
    # With a fixed policy share the first rl_fraction * budget rows are the policy's alone
    # (the same stream as a run that gives the policy everything); the local search that
    # follows starts from its best and keeps it.
    prob = pipeline(5, seed=3)
    for seed in range(3):
        rl_only = search(prob, "rl_ga", 200, seed=seed, rl_fraction=1.0, **FAST["rl_ga"])
        both = search(prob, "rl_ga", 400, seed=seed, rl_fraction=0.5, **FAST["rl_ga"])
        assert np.array_equal(both.history[both.history[:, 0] <= 200],
                              rl_only.history[rl_only.history[:, 0] <= 200])
        assert both.feasible and both.best_value <= rl_only.best_value


def test_the_default_beats_every_baseline_at_equal_evaluations():
    prob = pipeline(8, seed=1)          # 32^8 points, half the budget the unconstrained optimum wants
    for budget in (300, 1000):
        median = {m: np.median([search(prob, m, budget, seed=s, **FAST.get(m, {})).best_value
                                for s in range(3)])
                  for m in ("rl_ga", "rl", "ga", "annealing", "random")}
        assert all(median["rl_ga"] <= v for v in median.values()), (budget, median)


def test_the_policy_takes_over_when_the_local_search_finds_nothing_feasible(monkeypatch):
    # Feasible only with step 0 at its top level; the violation gives no slope towards it
    # (a plateau the local search cannot descend), so after `patience` evaluations the
    # policy gets half of what is left.
    space = ActionSpace((9,) * 6)
    prob = Problem(space, lambda a: a.sum(axis=1).astype(float),
                   lambda a: np.where(a[:, 0] == 8, -1.0, 1.0))
    from gen.alloc import policy
    calls = []
    real = policy.reinforce

    def spy(ev, rng, **kw):
        calls.append((ev.evaluations, kw["budget"]))
        return real(ev, rng, **kw)

    monkeypatch.setattr(policy, "reinforce", spy)
    runs = [search(prob, "rl_ga", 1200, seed=0, patience=200, **FAST["rl_ga"]) for _ in range(2)]
    assert calls and calls[0][1] == (1200 - calls[0][0]) // 2
    assert runs[0].feasible and runs[0].best_actions[0] == 8
    assert np.array_equal(runs[0].history, runs[1].history)


def test_the_policy_run_is_a_prefix_of_a_longer_one():
    # bench_alloc.py reads the policy's value at smaller budgets off one long run.
    prob = pipeline(3)
    short = search(prob, "rl", 160, seed=5, **FAST["rl"])
    long = search(prob, "rl", 400, seed=5, **FAST["rl"])
    assert np.array_equal(short.history, long.history[long.history[:, 0] <= 160])


def test_policy_gradients_and_adam_step_match_torch():
    # The NumPy trainer is the torch module's loss, gradients and optimizer written out.
    from gen.alloc.policy import RecurrentPolicy, _Trainer

    choices = (5, 1, 3, 4, 7, 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pol = RecurrentPolicy(choices, np.random.default_rng(1).normal(size=(6, 3)), hidden=8,
                              embed=4)
        with torch.no_grad():
            pol.step_bias.normal_(0, 1)
            pol.head.weight.normal_(0, 1)
    trainer = _Trainer(pol, lr=0.01, bias_lr=5.0, dtype=np.float64)
    pol = pol.double()
    rng = np.random.default_rng(0)
    rows = trainer.sample(10, rng)
    top = rows[:3]
    adv, shift = rng.normal(size=10), rng.normal(size=10) * 0.3   # ratios in and out of the clip
    logp, ent, cache = trainer.forward(np.concatenate([rows, top]))
    torch_logp, torch_ent = pol.log_prob_entropy(rows)
    assert np.allclose(torch_logp.detach().numpy(), logp[:10], atol=1e-12)
    assert np.isclose(torch_ent.item(), ent[:10].mean(), atol=1e-12)
    ratio_t = torch.exp(torch_logp - torch.tensor(logp[:10] - shift))
    adv_t = torch.tensor(adv)
    loss = (-torch.minimum(ratio_t * adv_t, ratio_t.clamp(0.8, 1.2) * adv_t).mean()
            - 0.01 * torch_ent - pol.log_prob_entropy(top)[0].mean() / len(choices))
    pol.zero_grad()
    loss.backward()
    ratio = np.exp(shift)
    active = ((ratio > 0.8) & (ratio < 1.2)) | (ratio * adv <= np.clip(ratio, 0.8, 1.2) * adv)
    d_chosen = np.concatenate([-np.where(active, ratio * adv, 0.0) / 10,
                               np.full(3, -1.0 / (3 * len(choices)))])
    d_ent = np.zeros(ent.shape)
    d_ent[:10] = -0.01 / ent[:10].size
    grads = trainer.backward(cache, d_chosen, d_ent)
    for name, param in pol.named_parameters():
        assert np.allclose(param.grad.numpy(), grads[name], atol=1e-12), name
    # One clipped Adam step, as torch's optimizer takes it.
    shared = [q for n, q in pol.named_parameters() if n != "step_bias"]
    opt = torch.optim.Adam([{"params": shared}, {"params": [pol.step_bias], "lr": 0.05}], lr=0.01)
    torch.nn.utils.clip_grad_norm_(pol.parameters(), 1.0)
    opt.step()
    trainer.step(grads)
    for name, param in pol.named_parameters():
        assert np.allclose(param.detach().numpy(), trainer.params[name], atol=1e-12), name
