"""Policies, rollouts on gymnasium vector envs, the REINFORCE/GPOMDP surrogates and garage's
linear feature baseline (optimizers/policy_gradient.py, second half)."""

import types

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical, Independent, Normal, Poisson

from stochstep.optimizers.policy_gradient import (CategoricalMLPPolicy, GaussianMLPPolicy,
                                                  LinearFeatureBaseline, Trajectories,
                                                  gpomdp_surrogate, log_probs, policy_for,
                                                  reinforce_surrogate, rollout, sample_action)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cartpole(n, mode="sync", **kwargs):
    return gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode=mode, **kwargs)


# -- policies -----------------------------------------------------------------------------


def test_policies_are_distributions_batched_over_leading_dims():
    cat = CategoricalMLPPolicy(4, 3, hidden=(8,), generator=gen())
    d = cat(torch.randn(5, 2, 4, generator=gen(1)))
    assert isinstance(d, Categorical) and d.batch_shape == (5, 2) and d.probs.shape == (5, 2, 3)
    gauss = GaussianMLPPolicy(3, 2, hidden=(8, 8), init_std=0.3, generator=gen())
    d = gauss(torch.randn(5, 2, 3, generator=gen(1)))
    assert isinstance(d, Independent) and isinstance(d.base_dist, Normal)
    assert d.batch_shape == (5, 2) and d.event_shape == (2,)
    assert torch.allclose(d.stddev, torch.full((5, 2, 2), 0.3))
    # garage's: one learned log-std shared by the action dimensions, Xavier weights, zero biases
    assert gauss.log_std.shape == (1,) and gauss.log_std.requires_grad
    assert all(not layer.bias.any() for layer in gauss.mean if isinstance(layer, torch.nn.Linear))


def test_policy_initialisation_comes_from_the_generator_only():
    state = torch.get_rng_state()
    a = CategoricalMLPPolicy(4, 2, generator=gen(3))
    b = CategoricalMLPPolicy(4, 2, generator=gen(3))
    c = CategoricalMLPPolicy(4, 2, generator=gen(4))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.logits[0].weight, c.logits[0].weight)
    # Xavier-uniform: |w| <= sqrt(6 / (fan_in + fan_out))
    assert a.logits[0].weight.abs().max() <= (6 / (4 + 32)) ** 0.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(obs_dim=0, n_actions=2), "obs_dim"),
    (dict(obs_dim=4, n_actions=0), "n_actions"),
    (dict(obs_dim=4, n_actions=2, hidden=(32, 0)), "hidden"),
    (dict(obs_dim=4, n_actions=2, hidden=32), "hidden"),
    (dict(obs_dim=4, n_actions=2, activation=torch.tanh), "activation"),
])
def test_categorical_policy_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CategoricalMLPPolicy(**kwargs)


def test_gaussian_policy_bad_arguments_and_unknown_kwargs():
    with pytest.raises(ValueError, match="init_std"):
        GaussianMLPPolicy(3, 1, init_std=0.0)
    with pytest.raises(TypeError):
        GaussianMLPPolicy(3, 1, min_std=1e-6)
    with pytest.raises(ValueError, match="obs_dim = 3"):
        GaussianMLPPolicy(3, 1, generator=gen())(torch.zeros(2, 4))


def test_policy_for_picks_the_policy_from_the_spaces():
    policy = policy_for(cartpole(2), hidden=(16,), generator=gen())
    assert isinstance(policy, CategoricalMLPPolicy) and (policy.obs_dim, policy.n_actions) == (4, 2)
    policy = policy_for(gymnasium.make_vec("Pendulum-v1", num_envs=2), generator=gen())
    assert isinstance(policy, GaussianMLPPolicy) and (policy.obs_dim, policy.act_dim) == (3, 1)
    policy = policy_for(gymnasium.make("CartPole-v1"), generator=gen())  # a plain Env too
    assert isinstance(policy, CategoricalMLPPolicy)


def test_policy_for_errors_name_the_space():
    box = spaces.Box(-1, 1, (3,))
    env = types.SimpleNamespace(observation_space=box, action_space=spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match=r"action space .*MultiDiscrete\(\[2 3\]\)"):
        policy_for(env)
    env = types.SimpleNamespace(observation_space=box, action_space=spaces.Discrete(3, start=1))
    with pytest.raises(ValueError, match="start at 0"):
        policy_for(env)
    with pytest.raises(ValueError, match=r"observation space must be a Box, got Discrete\(16\)"):
        policy_for(gymnasium.make_vec("FrozenLake-v1", num_envs=2))
    with pytest.raises(ValueError, match="gymnasium Env or VectorEnv"):
        policy_for(object())
    with pytest.raises(TypeError):
        policy_for(cartpole(2), init_std=1.0)  # not an argument of the categorical policy


# -- sampling -------------------------------------------------------------------------------


def test_sample_action_has_the_distribution_of_the_policy():
    n = 100_000
    probs = torch.tensor([0.1, 0.2, 0.7, 0.0])
    draws = sample_action(Categorical(probs=probs.expand(n, 4)), gen())
    freq = torch.bincount(draws, minlength=4) / n
    assert freq[3] == 0
    assert (freq - probs).abs().max() < 5 * (0.25 / n) ** 0.5
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    z = sample_action(Independent(Normal(loc.expand(n, 2), scale.expand(n, 2)), 1), gen())
    assert z.shape == (n, 2)
    assert ((z.mean(0) - loc).abs() < 5 * scale / n ** 0.5).all()
    assert ((z.std(0) / scale - 1).abs() < 0.02).all()


def test_policy_sample_equals_sample_action_on_its_distribution():
    obs = torch.randn(64, 4, generator=gen(1))
    for policy in (CategoricalMLPPolicy(4, 5, generator=gen()),
                   GaussianMLPPolicy(4, 2, generator=gen())):
        a = policy.sample(obs, gen(7))
        b = sample_action(policy(obs), gen(7))
        assert torch.equal(a, b)


def test_sample_action_rejects_other_distributions():
    with pytest.raises(TypeError, match="Categorical, Normal or Independent"):
        sample_action(Poisson(torch.ones(3)), gen())


# -- rollouts -------------------------------------------------------------------------------


def replay(seed, k, actions, length, horizon):
    """Run sub-environment k alone (SyncVectorEnv seeds it with seed + k) on the recorded
    actions: its observations and whether its episode ended exactly at ``length``."""
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=seed + k)
    observations, ended = [], False
    for t in range(length):
        observations.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(actions[t]))
        ended = terminated or truncated
        assert not ended or t == length - 1, "the episode ended before its mask did"
    assert ended or length == horizon, "the mask ended before the episode did"
    return torch.as_tensor(np.array(observations))


def test_rollout_shapes_masks_and_no_step_after_an_end_leaks_in():
    n, horizon = 6, 16
    env = cartpole(n)
    g = gen(5)
    policy = policy_for(env, generator=g)
    copy = torch.Generator().set_state(g.get_state())
    seed = int(torch.randint(2**31 - 1, (), generator=copy))  # the reset seed rollout draws
    batch = rollout(env, policy, horizon, generator=g)
    assert batch.observations.shape == (n, horizon, 4)
    assert batch.actions.shape == (n, horizon) and batch.actions.dtype == torch.long
    assert batch.rewards.shape == batch.mask.shape == (n, horizon)
    lengths = batch.lengths
    assert (lengths < horizon).any() and (lengths == horizon).any()  # some episodes end
    steps = torch.arange(horizon)
    assert torch.equal(batch.mask, (steps < lengths[:, None]).float())  # 1 then 0, no holes
    assert torch.equal(batch.rewards, batch.mask)  # CartPole pays 1 per running step
    padded = batch.mask == 0
    assert not batch.observations[padded].any() and not batch.actions[padded].any()
    for k in range(n):
        length = int(lengths[k])
        expected = replay(seed, k, batch.actions[k], length, horizon)
        assert torch.equal(batch.observations[k, :length], expected)


def test_rollout_is_the_same_whatever_the_autoreset_mode():
    modes = [gymnasium.vector.AutoresetMode.NEXT_STEP, gymnasium.vector.AutoresetMode.SAME_STEP]
    batches = []
    for mode in modes:
        env = cartpole(5, vector_kwargs={"autoreset_mode": mode})
        batches.append(rollout(env, policy_for(env, generator=gen()), 60, generator=gen(2)))
    assert (batches[0].lengths < 60).all()
    for field in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(batches[0], field), getattr(batches[1], field))


def test_rollout_masks_truncation_and_stops_when_every_episode_ended():
    env = cartpole(3, max_episode_steps=5)
    batch = rollout(env, policy_for(env, generator=gen()), 10, generator=gen())
    assert batch.lengths.tolist() == [5, 5, 5]
    assert not batch.rewards[:, 5:].any() and not batch.observations[:, 5:].any()


def test_rollout_is_reproducible_from_the_generator():
    env = cartpole(4, mode="vector_entry_point")  # CartPole's own vectorized env
    policy = policy_for(env, generator=gen())
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a, b = (rollout(env, policy, 30, generator=gen(11)) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), torch_state)  # no global RNG is read or advanced
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert not a.observations.requires_grad and not a.actions.requires_grad
    for field in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    c = rollout(env, policy, 30, generator=gen(12))
    assert not torch.equal(a.observations[:, 0], c.observations[:, 0])  # another reset seed


def test_rollout_gaussian_policy_on_a_box_env():
    env = gymnasium.make_vec("Pendulum-v1", num_envs=3)
    policy = policy_for(env, hidden=(8,), generator=gen())
    batch = rollout(env, policy, 7, generator=gen())
    assert batch.actions.shape == (3, 7, 1) and batch.actions.dtype == torch.float32
    assert batch.mask.all() and (batch.rewards < 0).all()  # Pendulum's cost is negative
    lp = log_probs(policy, batch)
    assert lp.shape == (3, 7) and lp.requires_grad


def test_rollout_bad_arguments():
    env = cartpole(2)
    policy = policy_for(env, generator=gen())
    with pytest.raises(ValueError, match="horizon"):
        rollout(env, policy, 0, generator=gen())
    with pytest.raises(ValueError, match="VectorEnv"):
        rollout(gymnasium.make("CartPole-v1"), policy, 5, generator=gen())
    with pytest.raises(ValueError, match="generator"):
        rollout(env, policy, 5, generator=0)


def test_log_probs_are_the_policy_log_probs_of_the_running_steps():
    env = cartpole(4)
    policy = policy_for(env, hidden=(8,), generator=gen())
    batch = rollout(env, policy, 40, generator=gen(3))
    lp = log_probs(policy, batch)
    for i in range(4):
        for t in range(40):
            if batch.mask[i, t]:
                logits = policy.logits(batch.observations[i, t])
                expected = torch.log_softmax(logits, -1)[batch.actions[i, t]]
                assert torch.allclose(lp[i, t], expected, atol=1e-6)
            else:
                assert lp[i, t] == 0
    with pytest.raises(ValueError, match="Trajectories"):
        log_probs(policy, batch.observations)


def test_trajectories_check_their_shapes():
    obs, act, ones = torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="mask"):
        Trajectories(obs, act, ones, torch.ones(2, 4))
    with pytest.raises(ValueError, match="observations"):
        Trajectories(torch.zeros(2, 3), act, ones, ones)
    with pytest.raises(ValueError, match="actions"):
        Trajectories(obs, torch.zeros(3, 2), ones, ones)


# -- surrogates against a by-hand computation -----------------------------------------------
#
# Two trajectories, three steps, the second one ended after two steps. log pi(a_t|s_t) is
# linear in theta, X[i][t] . theta, so its gradient is X[i][t] and the estimators can be
# written down with loops.

X = [[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]],
     [[-1.0, 1.0], [2.0, 0.0], [5.0, 5.0]]]  # the last step of trajectory 2 is masked
R = [[1.0, 2.0, 3.0], [4.0, -1.0, 7.0]]
M = [[1, 1, 1], [1, 1, 0]]
V = [[0.5, -1.0, 2.0], [1.5, 3.0, 9.0]]
GAMMA = 0.5


def tiny_batch():
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    lp = torch.tensor(X) @ theta
    return theta, lp, torch.tensor(R), torch.tensor(M, dtype=torch.float32)


def by_hand(kind, values=None):
    """Mean over trajectories of the estimator, from its definition with loops."""
    def score(i, upto):  # the gradient of sum_{s <= upto} log pi(a_s | s_s)
        return [sum(X[i][s][j] for s in range(upto + 1)) for j in range(2)]

    total = [0.0, 0.0]
    for i in range(2):
        length = sum(M[i])
        if values is None:
            if kind == "gpomdp":
                g = [sum(GAMMA ** t * R[i][t] * score(i, t)[j] for t in range(length))
                     for j in range(2)]
            else:
                ret = sum(GAMMA ** t * R[i][t] for t in range(length))
                g = [ret * score(i, length - 1)[j] for j in range(2)]
        else:  # returns-to-go minus the value, the textbook form of the baseline
            rtg = [sum(GAMMA ** (k - t) * R[i][k] for k in range(t, length)) for t in range(length)]
            if kind == "gpomdp":
                g = [sum(GAMMA ** t * (rtg[t] - values[i][t]) * X[i][t][j] for t in range(length))
                     for j in range(2)]
            else:
                g = [(rtg[0] - values[i][0]) * score(i, length - 1)[j] for j in range(2)]
        total = [total[j] + g[j] / 2 for j in range(2)]
    return torch.tensor(total)


@pytest.mark.parametrize("surrogate, kind", [(gpomdp_surrogate, "gpomdp"),
                                             (reinforce_surrogate, "reinforce")])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_surrogate_gradient_is_minus_the_estimator(surrogate, kind, with_baseline):
    theta, lp, rewards, mask = tiny_batch()
    baseline = torch.tensor(V) if with_baseline else None
    loss, log_prob = surrogate(lp, rewards, GAMMA, mask=mask, baseline=baseline)
    assert loss.shape == log_prob.shape == (2,)
    (grad,) = torch.autograd.grad(loss.mean(), theta, retain_graph=True)
    expected = by_hand(kind, V if with_baseline else None)
    assert torch.allclose(-grad, expected, atol=1e-6), (-grad, expected)
    # log p(tau_i) = sum of the running log-probabilities
    (grad_log_p,) = torch.autograd.grad(log_prob.sum(), theta)
    assert torch.allclose(grad_log_p, torch.tensor([1.0 + 0 + 1 - 1 + 2, 0 + 2 + 1 + 1 + 0]))


def test_gpomdp_surrogate_value_by_hand():
    # trajectory 1 at theta: log-probs 0.3, -0.4, 0.1; cumulative 0.3, -0.1, 0.0;
    # Phi = 1 * 0.3 + 0.5 * 2 * (-0.1) + 0.25 * 3 * 0.0 = 0.2
    _, lp, rewards, mask = tiny_batch()
    loss, log_prob = gpomdp_surrogate(lp, rewards, GAMMA, mask=mask)
    assert abs(loss[0].item() + 0.2) < 1e-6 and abs(log_prob[0].item()) < 1e-6


def test_surrogates_treat_rewards_mask_and_baseline_as_constants():
    theta, lp, rewards, mask = tiny_batch()
    rewards.requires_grad_(True)
    baseline = torch.tensor(V, requires_grad=True)
    loss, _ = gpomdp_surrogate(lp, rewards, GAMMA, mask=mask, baseline=baseline)
    loss.sum().backward()
    assert rewards.grad is None and baseline.grad is None and theta.grad is not None


def test_surrogate_ignores_what_a_mask_hides():
    theta, lp, rewards, mask = tiny_batch()
    noisy = lp.detach().clone()
    noisy[1, 2] = float("-inf")  # whatever sits under the mask
    base = gpomdp_surrogate(torch.where(mask > 0, lp, 0.0), rewards, GAMMA, mask=mask)
    other = gpomdp_surrogate(lp + (noisy - lp).detach(), rewards, GAMMA, mask=mask)
    assert torch.equal(base.loss.detach(), other.loss.detach())


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma=1.5), "gamma"),
    (dict(gamma=True), "gamma"),
    (dict(mask=torch.full((2, 3), 0.5)), "mask must hold only 0 and 1"),
    (dict(mask=torch.ones(2, 4)), "mask must be a tensor of the shape"),
    (dict(baseline=torch.ones(3)), "baseline"),
    (dict(rewards=[[1.0]]), "rewards"),
    (dict(log_probs=torch.ones(6)), "log_probs"),
])
def test_surrogate_bad_input(kwargs, match):
    _, lp, rewards, _ = tiny_batch()
    args = dict(log_probs=lp, rewards=rewards, gamma=0.9) | kwargs
    for surrogate in (gpomdp_surrogate, reinforce_surrogate):
        with pytest.raises(ValueError, match=match):
            surrogate(**args)
    with pytest.raises(TypeError):
        gpomdp_surrogate(lp, rewards, 0.9, baselines=None)


# -- the linear feature baseline --------------------------------------------------------------


def test_linear_feature_baseline_is_garages_ridge_regression():
    n, horizon, obs_dim, gamma, reg = 3, 6, 2, 0.9, 1e-3
    g = gen(4)
    obs = 8 * torch.randn(n, horizon, obs_dim, generator=g, dtype=torch.float64)  # some > 10
    rewards = torch.randn(n, horizon, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2, [1.0] * 5 + [0.0]],
                        dtype=torch.float64)
    batch = Trajectories(obs * mask[..., None], torch.zeros(n, horizon), rewards * mask, mask)
    baseline = LinearFeatureBaseline(reg_coeff=reg)
    assert not baseline.predict(batch).any()  # zeros before the first fit, as garage's
    baseline.fit(batch, gamma)
    # direct: features row by row, returns-to-go by their definition, and the ridge problem
    # min |F w - G|^2 + reg |w|^2 as an ordinary least-squares problem on [F; sqrt(reg) I]
    rows, targets = [], []
    o, r = obs.numpy(), rewards.numpy()
    for i in range(n):
        length = int(mask[i].sum())
        for t in range(length):
            s = np.clip(o[i, t], -10, 10)
            u = t / 100
            rows.append(np.concatenate([s, s ** 2, [u, u ** 2, u ** 3, 1.0]]))
            targets.append(sum(gamma ** (k - t) * r[i, k] for k in range(t, length)))
    F, G = np.array(rows), np.array(targets)
    k = F.shape[1]
    w, *_ = np.linalg.lstsq(np.vstack([F, reg ** 0.5 * np.eye(k)]),
                            np.concatenate([G, np.zeros(k)]), rcond=None)
    assert np.allclose(baseline.coeffs.numpy(), w, rtol=1e-6, atol=1e-8)
    predicted = baseline.predict(batch)
    assert predicted.dtype == torch.float64
    running = mask > 0
    assert np.allclose(predicted[running].numpy(), F @ w, rtol=1e-6, atol=1e-8)
    assert not predicted[~running].any()


def test_linear_feature_baseline_bad_input():
    with pytest.raises(ValueError, match="reg_coeff"):
        LinearFeatureBaseline(reg_coeff=0.0)
    batch = Trajectories(torch.zeros(1, 3, 2), torch.zeros(1, 3), torch.ones(1, 3),
                         torch.ones(1, 3))
    baseline = LinearFeatureBaseline()
    with pytest.raises(ValueError, match="gamma"):
        baseline.fit(batch, gamma=-0.1)
    baseline.fit(batch, gamma=0.9)
    other = Trajectories(torch.zeros(1, 3, 5), torch.zeros(1, 3), torch.ones(1, 3),
                         torch.ones(1, 3))
    with pytest.raises(ValueError, match="dimension 5.*dimension 2"):
        baseline.predict(other)


def test_baseline_from_a_rollout_feeds_the_surrogates():
    env = cartpole(4)
    policy = policy_for(env, hidden=(8,), generator=gen())
    batch = rollout(env, policy, 30, generator=gen(1))
    baseline = LinearFeatureBaseline()
    baseline.fit(batch, 0.99)
    loss, log_prob = gpomdp_surrogate(log_probs(policy, batch), batch.rewards, 0.99,
                                      mask=batch.mask, baseline=baseline.predict(batch))
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters())
