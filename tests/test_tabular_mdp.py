"""Exact tabular MDPs (theory_checks.tabular_mdp) and the policy-gradient estimators against them.

Three kinds of reference, each independent of the code under test:
- enumeration: on a tiny MDP every trajectory and its probability is listed, so expectations
  (the return, the GPOMDP gradient, the Hessian estimator) are exact sums, to 1e-12;
- finite differences of the exact return, for the autograd gradient and Hessian-vector product;
- Monte Carlo with 10^4 sampled trajectories, within 3 standard errors (the issue's targets).

The GPOMDP surrogate is the library's (``stochstep.optimizers.policy_gradient``). The Hessian
estimator is written here per trajectory from the spec's definition (the library's
``hessian_vector_estimate`` returns the batch mean, which a test ties to these).

Per-trajectory gradients of 10^4 trajectories in one backward pass: each trajectory i reads its
own copy ``theta_rep[i]`` of the logits (``tabular_log_probs`` accepts an ``(n, S, A)`` theta),
so the gradient of the *sum* of the per-trajectory losses with respect to ``theta_rep`` holds in
row i the gradient of loss i alone. The Hessian estimator needs two more backward passes.
"""

import itertools
import math

import pytest
import torch
from scipy.stats import chi2

from stochstep.optimizers.policy_gradient import gpomdp_surrogate, hessian_vector_estimate
from stochstep.theory_checks import (OptimalReturn, TabularMDP, exact_gradient,
                                     exact_hessian_vector, optimal_return, sample_trajectories,
                                     softmax_policy, tabular_log_probs, truncated_return)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- the library's estimator, and the Hessian estimator per trajectory ---

@pytest.fixture
def _gpomdp_pair():
    return gpomdp_surrogate


def _hessian_vector_estimate(loss_i, log_prob_i, theta, v):
    """Per-trajectory hess(loss_i) v + grad(loss_i) <grad(log_prob_i), v>, i.e. -B(tau_i) v
    for loss_i = -Phi_i (the spec's B v = grad Phi <grad log p, v> + hess Phi v).

    ``theta`` is an (N, *shape) leaf whose row i is the only parameter that loss_i and
    log_prob_i read; ``v`` has ``shape``. Returns (N, *shape)."""
    g_loss, = torch.autograd.grad(loss_i.sum(), theta, create_graph=True)
    g_logp, = torch.autograd.grad(log_prob_i.sum(), theta, retain_graph=True)
    hess_v, = torch.autograd.grad((g_loss * v).sum(), theta)
    dot = (g_logp * v).flatten(1).sum(1).view(-1, *[1] * v.ndim)
    return hess_v + g_loss.detach() * dot


def per_trajectory(gpomdp, mdp, theta, traj, v=None):
    """GPOMDP ascent gradients grad Phi_i, (n, S, A); with ``v`` also B(tau_i) v, (n, S, A)."""
    states, actions, rewards = traj
    theta_rep = theta.detach().to(F64).expand(states.shape[0], -1, -1).clone()
    theta_rep.requires_grad_(True)
    loss, log_prob = gpomdp(tabular_log_probs(theta_rep, states, actions), rewards, mdp.gamma)
    if v is None:
        return -torch.autograd.grad(loss.sum(), theta_rep)[0]
    return -_hessian_vector_estimate(loss, log_prob, theta_rep, v)


# --- independent references ---

def all_trajectories(mdp, theta, horizon):
    """Every (s_0, a_0, ..., s_{H-1}, a_{H-1}) with its exact probability under pi_theta."""
    pairs = list(itertools.product(range(mdp.n_states), range(mdp.n_actions)))
    paths = torch.tensor(list(itertools.product(pairs, repeat=horizon)))  # (M, H, 2)
    states, actions = paths[..., 0], paths[..., 1]
    pi = torch.exp(theta.to(F64))
    pi = pi / pi.sum(-1, keepdim=True)
    prob = mdp.rho[states[:, 0]] * pi[states, actions].prod(1)
    prob = prob * mdp.P[states[:, :-1], actions[:, :-1], states[:, 1:]].prod(1)
    return (states, actions, mdp.r[states, actions]), prob


def markov_return(mdp, policies):
    """J_H of a non-stationary Markov policy, ``policies[t]`` an (S, A) matrix of pi_t(a|s)."""
    d, value = mdp.rho, 0.0
    for t, pi in enumerate(policies):
        value += mdp.gamma ** t * float(d @ (pi * mdp.r).sum(-1))
        d = d @ torch.einsum("sa,sat->st", pi, mdp.P)
    return value


def one_hot_policy(actions, n_actions):
    return torch.nn.functional.one_hot(actions, n_actions).to(F64)


def assert_unbiased(samples, exact):
    """Each coordinate's sample mean within 3 standard errors of ``exact`` (the issue's
    target), and the whole vector by a Mahalanobis test: n (m - e)^T C^+ (m - e) is
    asymptotically chi-square with rank(C) degrees of freedom, accepted below its 0.999
    quantile. The pseudo-inverse is needed because softmax scores sum to zero over the
    actions of a state, so C is singular in those S directions."""
    x = samples.flatten(1)
    n = x.shape[0]
    diff = x.mean(0) - exact.flatten()
    se = x.std(0) / math.sqrt(n)
    assert (se > 0).all(), se
    assert (diff.abs() <= 3 * se).all(), (diff / se)
    evals, evecs = torch.linalg.eigh(torch.cov(x.T) / n)
    keep = evals > 1e-9 * evals.max()
    stat = float((((evecs[:, keep].T @ diff) ** 2) / evals[keep]).sum())
    assert stat <= chi2.ppf(0.999, int(keep.sum())), (stat, int(keep.sum()))
    return diff / se


@pytest.fixture(scope="module")
def tiny():
    """Small enough to enumerate: 3 states, 2 actions, H = 3 (216 trajectories)."""
    mdp = TabularMDP.random(3, 2, 0.9, gen(0))
    theta = torch.randn(3, 2, generator=gen(1), dtype=F64)
    return mdp, theta, 3


@pytest.fixture(scope="module")
def issue_mdp():
    """The issue's setting: 3 states, 2 actions, H = 6, gamma = 0.9."""
    mdp = TabularMDP.random(3, 2, 0.9, gen(2))
    theta = torch.randn(3, 2, generator=gen(3), dtype=F64)
    return mdp, theta, 6


# --- the MDP and its exact values ---

def test_random_mdp_is_valid_and_reproducible():
    a = TabularMDP.random(4, 3, 0.95, gen(7))
    b = TabularMDP.random(4, 3, 0.95, gen(7))
    assert torch.equal(a.P, b.P) and torch.equal(a.r, b.r) and torch.equal(a.rho, b.rho)
    assert a.P.dtype == F64 and a.P.shape == (4, 3, 4) and a.gamma == 0.95
    torch.testing.assert_close(a.P.sum(-1), torch.ones(4, 3, dtype=F64), rtol=0, atol=1e-12)
    assert (a.P > 0).all() and (a.r >= 0).all() and (a.r <= 1).all()
    assert not torch.equal(a.P, TabularMDP.random(4, 3, 0.95, gen(8)).P)


def test_random_mdp_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    mdp = TabularMDP.random(3, 2, 0.9, gen(0))
    sample_trajectories(mdp, torch.zeros(3, 2), 10, 4, gen(1))
    assert torch.equal(state, torch.random.get_rng_state())


def test_truncated_return_by_hand():
    # one state, two actions of reward 1 and 3, uniform policy: 2 per step
    mdp = TabularMDP(torch.ones(1, 2, 1), torch.tensor([[1.0, 3.0]]), torch.ones(1), 0.5)
    assert truncated_return(mdp, torch.zeros(1, 2), 3).item() == 2 + 1 + 0.5
    assert optimal_return(mdp, 3).value.item() == 3 + 1.5 + 0.75


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_truncated_return_equals_enumeration(tiny, gamma):
    mdp, theta, horizon = tiny
    mdp = TabularMDP(mdp.P, mdp.r, mdp.rho, gamma)
    (_, _, rewards), prob = all_trajectories(mdp, theta, horizon)
    torch.testing.assert_close(prob.sum(), torch.tensor(1.0, dtype=F64))
    discounted = (rewards * gamma ** torch.arange(horizon, dtype=F64)).sum(1)
    exact = (prob * discounted).sum()
    torch.testing.assert_close(truncated_return(mdp, theta, horizon), exact, rtol=1e-12,
                               atol=0)


def test_truncated_return_matches_monte_carlo(issue_mdp):
    mdp, theta, horizon = issue_mdp
    _, _, rewards = sample_trajectories(mdp, theta, 10_000, horizon, gen(4))
    returns = (rewards * mdp.gamma ** torch.arange(horizon, dtype=F64)).sum(1)
    se = returns.std() / 100
    assert abs(returns.mean() - truncated_return(mdp, theta, horizon)) <= 3 * se


def test_exact_gradient_matches_finite_differences(issue_mdp):
    mdp, theta, horizon = issue_mdp
    eps, fd = 1e-5, torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta).view(-1)
        e[i] = eps
        e = e.view_as(theta)
        fd.view(-1)[i] = (truncated_return(mdp, theta + e, horizon)
                          - truncated_return(mdp, theta - e, horizon)) / (2 * eps)
    grad = exact_gradient(mdp, theta, horizon)
    assert grad.dtype == F64 and grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, fd, rtol=0, atol=1e-9)


def test_exact_hessian_vector_matches_finite_differences(issue_mdp):
    mdp, theta, horizon = issue_mdp
    v = torch.randn(theta.shape, generator=gen(5), dtype=F64)
    hv = exact_hessian_vector(mdp, theta, v, horizon)
    eps = 1e-5
    fd = (exact_gradient(mdp, theta + eps * v, horizon)
          - exact_gradient(mdp, theta - eps * v, horizon)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=0, atol=1e-8)
    # the quadratic form from the return alone, with no gradient code involved
    eps = 1e-4
    second = (truncated_return(mdp, theta + eps * v, horizon) - 2 * truncated_return(
        mdp, theta, horizon) + truncated_return(mdp, theta - eps * v, horizon)) / eps ** 2
    assert abs(float(v.flatten() @ hv.flatten()) - float(second)) <= 1e-6
    # symmetry of the Hessian: u^T H v = v^T H u
    u = torch.randn(theta.shape, generator=gen(6), dtype=F64)
    hu = exact_hessian_vector(mdp, theta, u, horizon)
    assert abs(float((u * hv).sum() - (v * hu).sum())) <= 1e-12


def test_float32_logits_give_the_float64_values(issue_mdp):
    mdp, theta, horizon = issue_mdp
    theta32 = theta.float()
    exact = theta32.double()
    assert truncated_return(mdp, theta32, horizon).dtype == F64
    torch.testing.assert_close(exact_gradient(mdp, theta32, horizon),
                               exact_gradient(mdp, exact, horizon), rtol=0, atol=0)


# --- sampling and log-probabilities ---

def test_sample_trajectories_shapes_and_reproducibility(issue_mdp):
    mdp, theta, horizon = issue_mdp
    s, a, r = sample_trajectories(mdp, theta, 50, horizon, gen(9))
    s2, a2, r2 = sample_trajectories(mdp, theta, 50, horizon, gen(9))
    assert s.shape == a.shape == r.shape == (50, horizon)
    assert s.dtype == a.dtype == torch.long and r.dtype == F64
    assert torch.equal(s, s2) and torch.equal(a, a2) and torch.equal(r, r2)
    assert torch.equal(r, mdp.r[s, a])
    assert 0 <= s.min() and s.max() < 3 and 0 <= a.min() and a.max() < 2


def test_sampled_first_steps_follow_rho_and_pi(issue_mdp):
    mdp, theta, horizon = issue_mdp
    s, a, _ = sample_trajectories(mdp, theta, 10_000, 2, gen(10))
    joint = mdp.rho[:, None] * softmax_policy(theta)  # P(s_0 = s, a_0 = a)
    freq = torch.zeros(3, 2, dtype=F64).index_put_((s[:, 0], a[:, 0]),
                                                    torch.ones(10_000, dtype=F64), True) / 1e4
    se = (joint * (1 - joint) / 1e4).sqrt()
    assert ((freq - joint).abs() <= 3 * se).all(), (freq - joint) / se


def test_zero_probability_actions_are_never_sampled():
    mdp = TabularMDP.random(2, 3, 0.9, gen(0))
    theta = torch.tensor([[0.0, -math.inf, 0.0], [-math.inf, 0.0, 0.0]])
    with pytest.raises(ValueError, match="theta must be finite"):
        sample_trajectories(mdp, theta, 10, 3, gen(1))
    P = torch.zeros(2, 3, 2, dtype=F64)
    P[..., 1] = 1.0  # always to state 1
    mdp = TabularMDP(P, mdp.r, torch.tensor([1.0, 0.0]), 0.9)
    s, _, _ = sample_trajectories(mdp, torch.zeros(2, 3), 1000, 3, gen(2))
    assert (s[:, 0] == 0).all() and (s[:, 1:] == 1).all()


def test_tabular_log_probs_by_hand_and_batched():
    theta = torch.randn(3, 2, generator=gen(11), dtype=F64)
    states, actions = torch.tensor([[0, 2, 1], [1, 1, 0]]), torch.tensor([[1, 0, 1], [0, 0, 1]])
    expected = torch.tensor([[float(theta[s, a] - torch.logsumexp(theta[s], 0))
                              for s, a in zip(srow, arow)]
                             for srow, arow in zip(states.tolist(), actions.tolist())], dtype=F64)
    torch.testing.assert_close(tabular_log_probs(theta, states, actions), expected)
    batched = theta.expand(2, 3, 2).clone()
    batched[1] += 100.0  # a shift per state leaves the softmax unchanged
    torch.testing.assert_close(tabular_log_probs(batched, states, actions), expected)


def test_per_trajectory_gradients_match_the_closed_form(issue_mdp, _gpomdp_pair):
    # grad Phi = sum_t G_t e_{s_t} (e_{a_t} - pi(.|s_t)), G_t = sum_{t' >= t} gamma^t' r_t'
    mdp, theta, horizon = issue_mdp
    traj = sample_trajectories(mdp, theta, 20, horizon, gen(12))
    grads = per_trajectory(_gpomdp_pair, mdp, theta, traj)
    pi = softmax_policy(theta)
    disc = traj.rewards * mdp.gamma ** torch.arange(horizon, dtype=F64)
    to_go = disc.flip(1).cumsum(1).flip(1)
    expected = torch.zeros(20, 3, 2, dtype=F64)
    for i in range(20):
        for t in range(horizon):
            s, a = traj.states[i, t], traj.actions[i, t]
            expected[i, s] += to_go[i, t] * (torch.eye(2, dtype=F64)[a] - pi[s])
    torch.testing.assert_close(grads, expected, rtol=0, atol=1e-12)


# --- the estimator API ---

def test_gpomdp_surrogate_by_hand(_gpomdp_pair):
    # two steps: Phi = r0 lp0 + gamma r1 (lp0 + lp1)
    log_probs = torch.tensor([[-0.5, -2.0]], dtype=F64)
    rewards = torch.tensor([[3.0, 5.0]], dtype=F64)
    loss, log_prob = _gpomdp_pair(log_probs, rewards, 0.5)
    assert loss.shape == log_prob.shape == (1,)
    assert loss.item() == -(3.0 * -0.5 + 0.5 * 5.0 * (-0.5 - 2.0))
    assert log_prob.item() == -2.5


def test_gpomdp_is_unbiased_exactly_by_enumeration(tiny, _gpomdp_pair):
    mdp, theta, horizon = tiny
    traj, prob = all_trajectories(mdp, theta, horizon)
    grads = per_trajectory(_gpomdp_pair, mdp, theta, traj)
    mean = (prob[:, None, None] * grads).sum(0)
    torch.testing.assert_close(mean, exact_gradient(mdp, theta, horizon), rtol=0, atol=1e-12)


def test_gpomdp_mean_of_10k_within_3_standard_errors(issue_mdp, _gpomdp_pair):
    mdp, theta, horizon = issue_mdp
    traj = sample_trajectories(mdp, theta, 10_000, horizon, gen(13))
    grads = per_trajectory(_gpomdp_pair, mdp, theta, traj)
    assert_unbiased(grads, exact_gradient(mdp, theta, horizon))


def test_hessian_estimator_is_unbiased_exactly_by_enumeration(tiny, _gpomdp_pair):
    mdp, theta, horizon = tiny
    v = torch.randn(theta.shape, generator=gen(14), dtype=F64)
    traj, prob = all_trajectories(mdp, theta, horizon)
    bv = per_trajectory(_gpomdp_pair, mdp, theta, traj, v)
    mean = (prob[:, None, None] * bv).sum(0)
    torch.testing.assert_close(mean, exact_hessian_vector(mdp, theta, v, horizon), rtol=0,
                               atol=1e-12)


def test_hessian_estimator_mean_of_10k_within_3_standard_errors(issue_mdp, _gpomdp_pair):
    mdp, theta, horizon = issue_mdp
    v = torch.randn(theta.shape, generator=gen(15), dtype=F64)
    traj = sample_trajectories(mdp, theta, 10_000, horizon, gen(16))
    bv = per_trajectory(_gpomdp_pair, mdp, theta, traj, v)
    assert_unbiased(bv, exact_hessian_vector(mdp, theta, v, horizon))


def test_library_hessian_vector_estimate_is_the_mean_of_the_per_trajectory_estimates(
        issue_mdp, _gpomdp_pair):
    """HARPG's batch estimate equals the mean of the per-trajectory -B(tau_i) v checked above
    to be unbiased (so it is unbiased too)."""
    mdp, theta, horizon = issue_mdp
    v = torch.randn(theta.shape, generator=gen(18), dtype=F64)
    traj = sample_trajectories(mdp, theta, 500, horizon, gen(19))
    per = -per_trajectory(_gpomdp_pair, mdp, theta, traj, v)      # hess(l_i) v + ...
    states, actions, rewards = traj
    shared = theta.detach().to(F64).clone().requires_grad_(True)
    loss, log_prob = _gpomdp_pair(tabular_log_probs(shared, states, actions), rewards,
                                  mdp.gamma)
    (batch,) = hessian_vector_estimate(loss, log_prob, [shared], [v])
    torch.testing.assert_close(batch, per.mean(0), rtol=1e-10, atol=1e-12)


# --- the optimum ---

def test_optimal_return_bounds_every_softmax_policy(issue_mdp):
    mdp, _, horizon = issue_mdp
    best = optimal_return(mdp, horizon)
    assert isinstance(best, OptimalReturn) and best.actions.shape == (horizon, 3)
    thetas = 3 * torch.randn(200, 3, 2, generator=gen(17), dtype=F64)
    values = torch.stack([truncated_return(mdp, th, horizon) for th in thetas])
    assert (values <= best.value + 1e-12).all()
    # every deterministic stationary policy too (the vertices of the stationary policies)
    for choice in itertools.product(range(2), repeat=3):
        pi = one_hot_policy(torch.tensor(choice), 2)
        assert markov_return(mdp, [pi] * horizon) <= best.value + 1e-12


def test_optimal_return_equals_brute_force_over_markov_policies():
    # every deterministic non-stationary Markov policy: (A^S)^H = 4^3 = 64 of them
    mdp, horizon = TabularMDP.random(2, 2, 0.8, gen(18)), 3
    decisions = [one_hot_policy(torch.tensor(c), 2) for c in itertools.product(range(2), repeat=2)]
    brute = max(markov_return(mdp, list(ps)) for ps in itertools.product(decisions, repeat=horizon))
    best = optimal_return(mdp, horizon)
    assert abs(best.value.item() - brute) <= 1e-12
    # and the returned actions attain it
    attained = markov_return(mdp, [one_hot_policy(a, 2) for a in best.actions])
    assert abs(best.value.item() - attained) <= 1e-12


def test_large_logits_on_stationary_optimal_actions_approach_the_optimum():
    mdp, horizon = TabularMDP.random(3, 2, 0.9, gen(0)), 6
    best = optimal_return(mdp, horizon)
    assert best.stationary  # this seed's optimum plays the same actions at every step
    gaps = []
    for c in (1.0, 5.0, 10.0, 20.0, 40.0):
        theta = c * one_hot_policy(best.actions[0], 2)
        gaps.append(float(best.value - truncated_return(mdp, theta, horizon)))
    assert all(g >= -1e-12 for g in gaps)
    assert all(a > b for a, b in zip(gaps[:-2], gaps[1:-1])), gaps  # falls like exp(-c)
    assert gaps[-1] <= 1e-12 and gaps[0] > 1e-3, gaps


def test_when_the_optimum_is_not_stationary_the_gap_is_of_order_gamma_to_the_h():
    # What is true for stationary policies: the infinite-horizon optimal policy pi* (found here
    # by policy iteration) is stationary and loses at most gamma^H (max r - min r)/(1 - gamma).
    mdp, horizon = TabularMDP.random(3, 2, 0.9, gen(1)), 6
    best = optimal_return(mdp, horizon)
    assert not best.stationary  # this seed's last step plays a greedier action in state 2
    attained = markov_return(mdp, [one_hot_policy(a, 2) for a in best.actions])
    assert abs(best.value.item() - attained) <= 1e-12  # actions[t] is the action at step t
    actions = torch.zeros(3, dtype=torch.long)
    for _ in range(50):
        pi = one_hot_policy(actions, 2)
        value = torch.linalg.solve(torch.eye(3, dtype=F64) - mdp.gamma * torch.einsum(
            "sa,sat->st", pi, mdp.P), (pi * mdp.r).sum(-1))
        actions = (mdp.r + mdp.gamma * mdp.P @ value).argmax(-1)
    stationary = markov_return(mdp, [one_hot_policy(actions, 2)] * horizon)
    bound = mdp.gamma ** horizon * float(mdp.r.max() - mdp.r.min()) / (1 - mdp.gamma)
    gap = best.value.item() - stationary
    assert 0 < gap <= bound, (gap, bound)
    # no deterministic stationary policy reaches J*_H on this MDP
    for choice in itertools.product(range(2), repeat=3):
        pi = one_hot_policy(torch.tensor(choice), 2)
        assert markov_return(mdp, [pi] * horizon) < best.value.item() - 1e-9


# --- bad input ---

def test_bad_mdps_are_rejected():
    P, r, rho = torch.full((2, 2, 2), 0.5), torch.zeros(2, 2), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"P must have shape \(S, A, S\)"):
        TabularMDP(torch.full((2, 2, 3), 1 / 3), r, rho, 0.9)
    with pytest.raises(ValueError, match="P must hold probabilities"):
        TabularMDP(P * 1.1, r, rho, 0.9)
    with pytest.raises(ValueError, match="P must hold probabilities"):
        TabularMDP(torch.tensor([[[1.5, -0.5]] * 2] * 2), r, rho, 0.9)
    with pytest.raises(ValueError, match="r must be a finite tensor of shape"):
        TabularMDP(P, torch.zeros(2, 3), rho, 0.9)
    with pytest.raises(ValueError, match="r must be a finite"):
        TabularMDP(P, torch.tensor([[0.0, math.nan], [0.0, 0.0]]), rho, 0.9)
    with pytest.raises(ValueError, match=r"rho must have shape \(2,\)"):
        TabularMDP(P, r, torch.ones(3) / 3, 0.9)
    with pytest.raises(ValueError, match="rho must hold probabilities"):
        TabularMDP(P, r, torch.tensor([0.5, 0.6]), 0.9)
    for gamma in (-0.1, 1.5, math.nan, True, "0.9"):
        with pytest.raises(ValueError, match=r"gamma must be a number in \[0, 1\]"):
            TabularMDP(P, r, rho, gamma)
    with pytest.raises(ValueError, match="n_states must be an integer >= 1"):
        TabularMDP.random(0, 2, 0.9, gen(0))
    with pytest.raises(ValueError, match="n_actions must be an integer >= 1"):
        TabularMDP.random(2, 1.5, 0.9, gen(0))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        TabularMDP.random(2, 2, 0.9, 0)
    with pytest.raises(TypeError):
        TabularMDP.random(2, 2, 0.9, gen(0), seed=0)


def test_bad_arguments_are_rejected(issue_mdp):
    mdp, theta, horizon = issue_mdp
    with pytest.raises(ValueError, match=r"theta must be a floating-point tensor of logits of "
                                         r"shape \(S, A\) = \(3, 2\), got \(2, 3\)"):
        truncated_return(mdp, theta.T, horizon)
    with pytest.raises(ValueError, match="theta must be a floating-point"):
        exact_gradient(mdp, torch.zeros(3, 2, dtype=torch.long), horizon)
    with pytest.raises(ValueError, match="theta must be finite"):
        truncated_return(mdp, torch.full((3, 2), math.nan), horizon)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        truncated_return(mdp, theta, 0)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        optimal_return(mdp, 2.0)
    with pytest.raises(ValueError, match="mdp must be a TabularMDP"):
        optimal_return("mdp", 2)
    with pytest.raises(ValueError, match=r"v must be a floating-point tensor shaped like theta"):
        exact_hessian_vector(mdp, theta, torch.zeros(6, dtype=F64), horizon)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sample_trajectories(mdp, theta, 0, horizon, gen(0))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        sample_trajectories(mdp, theta, 4, horizon, 0)
    with pytest.raises(TypeError):
        sample_trajectories(mdp, theta, 4, horizon, gen(0), seed=1)
    states = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"states must lie in \[0, 3\)"):
        tabular_log_probs(theta, states + 3, states)
    with pytest.raises(ValueError, match=r"actions must be an \(n, H\) long tensor"):
        tabular_log_probs(theta, states, states.float())
    with pytest.raises(ValueError, match="states and actions must have the same shape"):
        tabular_log_probs(theta, states, states[:, :2])
    with pytest.raises(ValueError, match="one \\(S, A\\) table per trajectory: 2, got 5"):
        tabular_log_probs(theta.expand(5, 3, 2), states, states)


# --- the rate check ---

def test_policy_gradient_rate_measures_the_exact_gap_of_the_run_it_describes():
    """The gaps are J* - J(theta) of the very iterates an independent loop reaches with the same
    generator, and the fit is the log-log fit of their mean."""
    from stochstep.optimizers import NPGIGT
    from stochstep.theory_checks import loglog_slope
    from stochstep.theory_checks.tabular_mdp import policy_gradient_rate

    mdp = TabularMDP.random(3, 2, 0.9, gen(0))
    out = policy_gradient_rate(mdp, lambda ps: NPGIGT(ps, lr=1.0), 6, [3, 7], seeds=2, batch=2,
                               generator=gen(5))
    g = gen(5)
    best = optimal_return(mdp, 6).value
    for seed in range(2):
        theta = torch.nn.Parameter(torch.zeros(3, 2, dtype=F64))
        opt = NPGIGT([theta], lr=1.0)

        def closure():
            s = sample_trajectories(mdp, theta.detach(), 2, 6, g)
            opt.zero_grad()
            loss = gpomdp_surrogate(tabular_log_probs(theta, s.states, s.actions), s.rewards,
                                    mdp.gamma).loss.mean()
            loss.backward()
            return loss

        for k, steps in enumerate((3, 4)):
            for _ in range(steps):
                opt.step(closure)
            assert out.gaps[seed, k] == best - truncated_return(mdp, theta.detach(), 6)
    assert out.trajectories.tolist() == [6, 14]
    assert out.fit == loglog_slope([6, 14], out.gaps.mean(0))


def test_policy_gradient_rate_counts_harpg_two_batches_and_takes_torch_optimizers():
    from stochstep.optimizers import HARPG
    from stochstep.theory_checks.tabular_mdp import policy_gradient_rate

    mdp = TabularMDP.random(3, 2, 0.9, gen(0))
    out = policy_gradient_rate(mdp, lambda ps: HARPG(ps, lr=0.5, generator=gen(1)), 5, [2, 4],
                               seeds=1, batch=3, generator=gen(2))
    assert out.trajectories.tolist() == [3 + 6, 9 + 12]     # one batch at t = 0, then two
    # torch's closure convention: SGD moves the logits (the uniform policy's gap changes)
    sgd = policy_gradient_rate(mdp, lambda ps: torch.optim.SGD(ps, lr=0.5), 5, [2, 4],
                               seeds=2, generator=gen(2))
    start = optimal_return(mdp, 5).value - truncated_return(mdp, torch.zeros(3, 2), 5)
    assert (sgd.gaps >= 0).all() and (sgd.gaps != start).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(checkpoints=[4]), "checkpoints"), (dict(checkpoints=[4, 4]), "checkpoints"),
    (dict(checkpoints=[0, 4]), "checkpoints"), (dict(seeds=0), "seeds"),
    (dict(batch=0), "batch"), (dict(make_optimizer=None), "make_optimizer"),
    (dict(mdp="mdp"), "mdp"), (dict(progress="yes"), "progress")])
def test_policy_gradient_rate_rejects_bad_arguments(kwargs, match):
    from stochstep.theory_checks.tabular_mdp import policy_gradient_rate

    args = dict(mdp=TabularMDP.random(2, 2, 0.9, gen(0)),
                make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1), horizon=3,
                checkpoints=[1, 2]) | kwargs
    with pytest.raises(ValueError, match=match):
        policy_gradient_rate(**args)
