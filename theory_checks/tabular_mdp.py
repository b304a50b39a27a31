r"""Exact finite-horizon tabular MDPs with softmax policies, to check policy-gradient estimators.

A tabular MDP has transitions ``P[s, a, s'] = P(s' | s, a)``, rewards ``r[s, a]``, an initial
distribution ``rho`` and a discount ``gamma``. A softmax tabular policy with logits ``theta``
(shape ``(S, A)``) plays ``pi(a | s) = softmax(theta[s])[a]``. Everything here is computed
exactly, in float64, by linear algebra over the state distribution, never by sampling:

.. math::

    d_0 = \rho, \qquad d_{t+1}(s') = \sum_{s, a} d_t(s) \pi(a | s) P(s' | s, a), \qquad
    J_H(\theta) = \sum_{t < H} \gamma^t \sum_{s, a} d_t(s) \pi(a | s) r(s, a).

Because :func:`truncated_return` is a differentiable torch function of ``theta``,
:func:`exact_gradient` and :func:`exact_hessian_vector` are automatic differentiation of an
exact value: exact up to float64 rounding, with no estimator involved. They are the reference
that the trajectory estimators (GPOMDP and the Hessian estimator of HARPG) must match in
expectation; :func:`sample_trajectories` and :func:`tabular_log_probs` feed those estimators.

References:
    Fatkhullin, Barakat, Kireeva, He. "Stochastic Policy Gradient Methods: Improved Sample
    Complexity for Fisher-non-degenerate Policies." ICML 2023, arXiv 2302.01734.

Example:
    >>> import torch
    >>> mdp = TabularMDP.random(3, 2, 0.9, torch.Generator().manual_seed(0))
    >>> theta = torch.zeros(3, 2, dtype=torch.float64)
    >>> bool(truncated_return(mdp, theta, 5) <= optimal_return(mdp, 5).value)
    True
    >>> exact_gradient(mdp, theta, 5).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochstep.optimizers.policy_gradient import HARPG, gpomdp_surrogate
from stochstep.stepping.checks import check_flag, check_int, check_unit_interval
from stochstep.stepping.noise import make_generator
from stochstep.stepping.oracles import hvp, value_and_grad
from stochstep.theory_checks.rates import PowerLawFit, loglog_slope

__all__ = ["TabularMDP", "OptimalReturn", "Trajectories", "softmax_policy", "truncated_return",
           "exact_gradient", "exact_hessian_vector", "optimal_return", "sample_trajectories",
           "tabular_log_probs", "PAPER_EXPONENTS", "RateMeasurement", "policy_gradient_rate"]

_F64 = torch.float64


def _distribution(name: str, value, shape: tuple) -> Tensor:
    """``value`` as a float64 tensor of ``shape`` whose last axis holds probability vectors."""
    x = torch.as_tensor(value, dtype=_F64)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or (x < 0).any() or \
            not torch.allclose(x.sum(-1), torch.ones((), dtype=_F64), rtol=0, atol=1e-10):
        raise ValueError(f"{name} must hold probabilities: entries >= 0 summing to 1 over the "
                         f"last axis")
    return x


@dataclass
class TabularMDP:
    r"""A finite MDP: transitions ``P`` (S, A, S), rewards ``r`` (S, A), initial distribution
    ``rho`` (S,) and discount ``gamma`` in [0, 1], all held as float64 tensors.

    .. math::

        s_0 \sim \rho, \qquad a_t \sim \pi(\cdot | s_t), \qquad
        s_{t+1} \sim P(s_t, a_t, \cdot), \qquad \text{reward } r(s_t, a_t)
        \text{ discounted by } \gamma^t.

    Args:
        P: transition probabilities, ``P[s, a, s'] = P(s' | s, a)``; each ``P[s, a]`` sums to 1.
        r: finite rewards ``r[s, a]``.
        rho: initial state distribution, summing to 1.
        gamma: discount factor in [0, 1] (1 is allowed: the horizon is finite).

    References:
        Fatkhullin, Barakat, Kireeva, He. ICML 2023, arXiv 2302.01734.

    Example:
        >>> mdp = TabularMDP.random(4, 3, 0.9, torch.Generator().manual_seed(0))
        >>> mdp.n_states, mdp.n_actions, mdp.P.shape
        (4, 3, torch.Size([4, 3, 4]))
    """

    P: Tensor
    r: Tensor
    rho: Tensor
    gamma: float

    def __post_init__(self):
        P = torch.as_tensor(self.P, dtype=_F64)
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] < 1 or P.shape[1] < 1:
            raise ValueError(f"P must have shape (S, A, S) with S, A >= 1, "
                             f"got {tuple(P.shape)}")
        n_states, n_actions = P.shape[:2]
        self.P = _distribution("P", P, tuple(P.shape))
        r = torch.as_tensor(self.r, dtype=_F64)
        if r.shape != (n_states, n_actions) or not torch.isfinite(r).all():
            raise ValueError(f"r must be a finite tensor of shape {(n_states, n_actions)}, "
                             f"got shape {tuple(r.shape)}")
        self.r = r
        self.rho = _distribution("rho", self.rho, (n_states,))
        self.gamma = check_unit_interval("gamma", self.gamma)

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @classmethod
    def random(cls, n_states: int, n_actions: int, gamma: float,
               generator: torch.Generator | None = None) -> TabularMDP:
        r"""A random dense MDP: every ``P[s, a]`` and ``rho`` uniform on the simplex, rewards
        uniform on [0, 1].

        .. math::

            P(\cdot | s, a), \rho \sim \mathrm{Dirichlet}(1, \dots, 1), \quad
            r(s, a) \sim U[0, 1], \qquad
            \mathrm{Dirichlet}(1, \dots, 1) = E / \textstyle\sum_i E_i,\ E_i \sim
            \mathrm{Exp}(1) = -\log U_i.

        Args:
            n_states: S >= 1.
            n_actions: A >= 1.
            gamma: discount factor in [0, 1].
            generator: the source of every random number (None: a new generator seeded from
                torch's global RNG, see :func:`stochstep.stepping.noise.make_generator`).

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> mdp = TabularMDP.random(2, 2, 0.5, g)
            >>> bool(torch.allclose(mdp.P.sum(-1), torch.ones(2, 2, dtype=torch.float64)))
            True
        """
        check_int("n_states", n_states)
        check_int("n_actions", n_actions)
        gamma = check_unit_interval("gamma", gamma)
        generator = make_generator(generator)

        def dirichlet(shape: tuple) -> Tensor:
            # 1 - U lies in (0, 1], so the exponential draw is finite
            e = -torch.log1p(-torch.rand(shape, generator=generator, dtype=_F64))
            return e / e.sum(-1, keepdim=True)

        P = dirichlet((n_states, n_actions, n_states))
        r = torch.rand(n_states, n_actions, generator=generator, dtype=_F64)
        return cls(P, r, dirichlet((n_states,)), gamma)


class OptimalReturn(NamedTuple):
    """The optimum of the H-step objective and a deterministic Markov policy that attains it."""

    value: Tensor
    """J*_H, a float64 scalar."""
    actions: Tensor
    """(H, S) long: the optimal action at step t in state s (ties: the lowest index)."""

    @property
    def stationary(self) -> bool:
        """True when the same actions are optimal at every step, so that a stationary
        (softmax) policy can approach ``value``."""
        return bool((self.actions == self.actions[:1]).all())


class Trajectories(NamedTuple):
    """``n`` sampled trajectories of ``H`` steps; row i is trajectory i."""

    states: Tensor
    """(n, H) long."""
    actions: Tensor
    """(n, H) long."""
    rewards: Tensor
    """(n, H) float64, undiscounted r(s_t, a_t)."""


def _check_theta(mdp: TabularMDP, theta, *, batched: bool = False) -> Tensor:
    if not isinstance(mdp, TabularMDP):
        raise ValueError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    return _check_logits(theta, (mdp.n_states, mdp.n_actions), batched=batched)


def _check_logits(theta, shape: tuple | None = None, *, batched: bool = False) -> Tensor:
    ndims = (2, 3) if batched else (2,)
    if not isinstance(theta, Tensor) or theta.ndim not in ndims or \
            not theta.is_floating_point() or \
            (shape is not None and tuple(theta.shape[-2:]) != shape):
        table = "(S, A)" if shape is None else f"(S, A) = {shape}"
        want = f"{table} or (n, S, A)" if batched else table
        got = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a floating-point tensor of logits of shape {want}, "
                         f"got {got}")
    if not torch.isfinite(theta.detach()).all():
        raise ValueError("theta must be finite")
    return theta


def softmax_policy(theta: Tensor) -> Tensor:
    r"""The tabular softmax policy, ``pi[s, a] = pi(a | s)``, in float64.

    .. math::

        \pi(a | s) = \frac{\exp \theta_{s a}}{\sum_b \exp \theta_{s b}}.

    Args:
        theta: (S, A) logits (any floating dtype; differentiable).

    Example:
        >>> softmax_policy(torch.zeros(2, 4)).sum(-1)
        tensor([1., 1.], dtype=torch.float64)
    """
    return torch.softmax(_check_logits(theta).to(_F64), -1)


def truncated_return(mdp: TabularMDP, theta: Tensor, horizon: int) -> Tensor:
    r"""The exact H-step discounted return J_H(theta) of the softmax policy, differentiable in
    ``theta`` (float64 scalar).

    .. math::

        J_H(\theta) = \mathbb{E}\Big[\sum_{t < H} \gamma^t r(s_t, a_t)\Big]
                    = \sum_{t < H} \gamma^t \, d_t^\top r_\pi, \qquad
        d_0 = \rho, \quad d_{t+1} = P_\pi^\top d_t,

    with ``r_pi(s) = sum_a pi(a|s) r(s, a)`` and ``P_pi(s, s') = sum_a pi(a|s) P(s'|s, a)``.

    Args:
        mdp: the MDP.
        theta: (S, A) logits.
        horizon: H >= 1 steps.

    References:
        Fatkhullin, Barakat, Kireeva, He. ICML 2023, arXiv 2302.01734 (the truncated objective).

    Example:
        >>> mdp = TabularMDP(torch.ones(1, 2, 1), torch.tensor([[1.0, 3.0]]), torch.ones(1), 0.5)
        >>> truncated_return(mdp, torch.zeros(1, 2), 2)   # 2 + 0.5 * 2
        tensor(3., dtype=torch.float64)
    """
    pi = torch.softmax(_check_theta(mdp, theta).to(_F64), -1)
    horizon = check_int("horizon", horizon)
    r_pi = (pi * mdp.r).sum(-1)
    P_pi = torch.einsum("sa,sat->st", pi, mdp.P)
    d, value = mdp.rho, r_pi.new_zeros(())
    for t in range(horizon):
        value = value + mdp.gamma ** t * (d @ r_pi)
        d = d @ P_pi
    return value


def exact_gradient(mdp: TabularMDP, theta: Tensor, horizon: int) -> Tensor:
    r"""grad J_H(theta), (S, A) float64: reverse-mode autograd of the exact
    :func:`truncated_return` (no sampling, exact up to rounding).

    .. math::

        \nabla_\theta J_H(\theta) = \mathbb{E}\Big[\sum_{t < H} \gamma^t r_t
        \sum_{t' \le t} \nabla_\theta \log \pi_\theta(a_{t'} | s_{t'})\Big].

    Args:
        mdp: the MDP.
        theta: (S, A) logits.
        horizon: H >= 1 steps.

    Example:
        >>> mdp = TabularMDP(torch.ones(1, 2, 1), torch.tensor([[0.0, 2.0]]), torch.ones(1), 0.0)
        >>> exact_gradient(mdp, torch.zeros(1, 2), 1)   # pi (1 - pi) * (2 - 0) per logit
        tensor([[-0.5000,  0.5000]], dtype=torch.float64)
    """
    theta = _check_theta(mdp, theta).detach().to(_F64)
    return value_and_grad(lambda ps: truncated_return(mdp, ps[0], horizon), [theta])[1][0]


def exact_hessian_vector(mdp: TabularMDP, theta: Tensor, v: Tensor, horizon: int) -> Tensor:
    r"""hess J_H(theta) v, (S, A) float64: forward-over-reverse autograd of the exact
    :func:`truncated_return` (:func:`stochstep.stepping.oracles.hvp`).

    .. math::

        \nabla^2_\theta J_H(\theta)\, v
        = \frac{d}{d\epsilon} \nabla_\theta J_H(\theta + \epsilon v) \Big|_{\epsilon = 0}.

    Args:
        mdp: the MDP.
        theta: (S, A) logits.
        v: (S, A) direction.
        horizon: H >= 1 steps.

    Example:
        >>> mdp = TabularMDP.random(2, 2, 0.9, torch.Generator().manual_seed(0))
        >>> theta, v = torch.zeros(2, 2), torch.eye(2)
        >>> exact_hessian_vector(mdp, theta, v, 4).shape
        torch.Size([2, 2])
    """
    theta = _check_theta(mdp, theta).detach().to(_F64)
    if not isinstance(v, Tensor) or v.shape != theta.shape or not v.is_floating_point():
        got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"v must be a floating-point tensor shaped like theta "
                         f"{tuple(theta.shape)}, got {got}")
    v = v.detach().to(_F64)
    return hvp(lambda ps: truncated_return(mdp, ps[0], horizon), [theta], [v])[0]


def optimal_return(mdp: TabularMDP, horizon: int) -> OptimalReturn:
    r"""J*_H = the largest H-step return over all policies, by backward induction.

    .. math::

        V_H = 0, \qquad Q_t(s, a) = r(s, a) + \gamma \sum_{s'} P(s' | s, a) V_{t+1}(s'),
        \qquad V_t = \max_a Q_t, \qquad J^*_H = \rho^\top V_0.

    Which optimum this is, and why: the maximum over *all* policies (history-dependent,
    non-stationary, randomised) of J_H, which a deterministic Markov policy with step-dependent
    actions ``actions[t, s]`` attains. It is exactly computable and an upper bound of
    J_H(theta) for every softmax policy, so ``J*_H - J_H(theta) >= 0`` always. A stationary
    policy may not reach it (near the end of the horizon the best action can change); the sup
    over stationary policies lies in ``[J*_H - gamma^H (max r - min r)/(1 - gamma), J*_H]``
    for gamma < 1 (the infinite-horizon optimal policy is stationary and already returns at
    least the lower end), a gap of the order of the truncation bias itself. When
    ``.stationary`` is True, softmax policies with large logits on ``actions[0]`` approach
    J*_H.

    Args:
        mdp: the MDP.
        horizon: H >= 1 steps.

    Example:
        >>> mdp = TabularMDP(torch.ones(1, 2, 1), torch.tensor([[1.0, 3.0]]), torch.ones(1), 0.5)
        >>> best = optimal_return(mdp, 2)
        >>> best.value, best.actions.tolist(), best.stationary   # 3 + 0.5 * 3
        (tensor(4.5000, dtype=torch.float64), [[1], [1]], True)
    """
    if not isinstance(mdp, TabularMDP):
        raise ValueError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    horizon = check_int("horizon", horizon)
    V = mdp.r.new_zeros(mdp.n_states)
    actions = []
    for _ in range(horizon):
        V, a = (mdp.r + mdp.gamma * mdp.P @ V).max(-1)
        actions.append(a)
    return OptimalReturn(mdp.rho @ V, torch.stack(actions[::-1]))


def _categorical(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One index per row of ``probs`` by inversion of its CDF with one uniform per row."""
    cdf = probs.cumsum(-1)
    cdf[..., -1] = 1.0  # rounding may leave the total a hair below a uniform draw
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, dtype=probs.dtype)
    # the first index whose CDF exceeds u; zero-probability entries repeat a CDF value and
    # are never chosen
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def sample_trajectories(mdp: TabularMDP, theta: Tensor, n: int, horizon: int,
                        generator: torch.Generator | None = None) -> Trajectories:
    r"""``n`` independent H-step trajectories of the softmax policy, all advanced together.

    .. math::

        s_0 \sim \rho, \quad a_t \sim \pi_\theta(\cdot | s_t), \quad
        s_{t+1} \sim P(\cdot | s_t, a_t), \quad r_t = r(s_t, a_t), \qquad t < H.

    Each draw inverts a CDF with one uniform from ``generator``, in the order s_0 (n uniforms),
    then for each t: a_t, then s_{t+1} (not drawn after the last step).

    Args:
        mdp: the MDP.
        theta: (S, A) logits (not differentiated through).
        n: number of trajectories >= 1.
        horizon: H >= 1 steps.
        generator: the source of every random number (None: see
            :func:`stochstep.stepping.noise.make_generator`).

    Example:
        >>> mdp = TabularMDP.random(3, 2, 0.9, torch.Generator().manual_seed(0))
        >>> s, a, r = sample_trajectories(mdp, torch.zeros(3, 2), 5, 4,
        ...                               torch.Generator().manual_seed(1))
        >>> s.shape, a.shape, r.dtype
        (torch.Size([5, 4]), torch.Size([5, 4]), torch.float64)
    """
    pi = softmax_policy(_check_theta(mdp, theta).detach())
    n = check_int("n", n)
    horizon = check_int("horizon", horizon)
    generator = make_generator(generator)
    states = torch.empty(n, horizon, dtype=torch.long)
    actions = torch.empty(n, horizon, dtype=torch.long)
    s = _categorical(mdp.rho.expand(n, -1), generator)
    for t in range(horizon):
        a = _categorical(pi[s], generator)
        states[:, t], actions[:, t] = s, a
        if t + 1 < horizon:
            s = _categorical(mdp.P[s, a], generator)
    return Trajectories(states, actions, mdp.r[states, actions])


def tabular_log_probs(theta: Tensor, states: Tensor, actions: Tensor) -> Tensor:
    r"""log pi_theta(a_t | s_t) for every step of every trajectory, (n, H), differentiable in
    ``theta``.

    .. math::

        \log \pi_\theta(a | s) = \theta_{s a} - \log \sum_b \exp \theta_{s b}, \qquad
        \nabla_\theta \log \pi_\theta(a | s) = e_s (e_a - \pi_\theta(\cdot | s))^\top.

    ``theta`` may also be ``(n, S, A)``, one copy of the logits per trajectory (all equal, as
    ``theta.expand(n, S, A).clone()``): trajectory i then reads only ``theta[i]``, so one
    backward pass of a sum over trajectories gives every per-trajectory gradient at once.

    Args:
        theta: (S, A) or (n, S, A) logits.
        states: (n, H) long state indices in [0, S).
        actions: (n, H) long action indices in [0, A).

    Example:
        >>> tabular_log_probs(torch.zeros(2, 4), torch.tensor([[0, 1]]), torch.tensor([[3, 0]]))
        tensor([[-1.3863, -1.3863]])
    """
    theta = _check_logits(theta, batched=True)
    n_states, n_actions = theta.shape[-2:]
    for name, idx, size in (("states", states, n_states), ("actions", actions, n_actions)):
        if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.ndim != 2:
            raise ValueError(f"{name} must be an (n, H) long tensor, got "
                             f"{idx.dtype if isinstance(idx, Tensor) else type(idx).__name__}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(f"{name} must lie in [0, {size}), got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
    if states.shape != actions.shape:
        raise ValueError(f"states and actions must have the same shape, got "
                         f"{tuple(states.shape)} and {tuple(actions.shape)}")
    log_pi = torch.log_softmax(theta, -1)
    if theta.ndim == 2:
        return log_pi[states, actions]
    if theta.shape[0] != states.shape[0]:
        raise ValueError(f"a batched theta must have one (S, A) table per trajectory: "
                         f"{states.shape[0]}, got {theta.shape[0]}")
    rows = torch.arange(states.shape[0])[:, None]
    return log_pi[rows, states, actions]


# ============================================================================ rates

#: The paper's exponents of the global gap against the number of trajectories T:
#: J* - J(theta_T) = O~(T^s), from the sample complexities O~(eps^-2.5) (N-PG-IGT) and
#: O~(eps^-2) (N-HARPG) under Fisher-non-degenerate policies.
PAPER_EXPONENTS = {"N-PG-IGT": -0.4, "N-HARPG": -0.5}


class RateMeasurement(NamedTuple):
    """Gaps ``J*_H - J_H(theta)`` of a policy-gradient optimizer along its run."""

    trajectories: Tensor
    """(K,) trajectories sampled up to each checkpoint (the same for every seed)."""
    gaps: Tensor
    """(seeds, K) float64 gaps, exact (linear algebra), at each checkpoint of each seed."""
    fit: PowerLawFit
    """Log-log fit of the mean gap over seeds against ``trajectories``."""


def policy_gradient_rate(mdp: TabularMDP, make_optimizer: Callable, horizon: int,
                         checkpoints, *, seeds: int = 4, batch: int = 1,
                         generator: torch.Generator | None = None,
                         progress: bool = False) -> RateMeasurement:
    r"""Run a policy-gradient optimizer on a tabular softmax policy and measure its global gap
    ``J*_H - J_H(theta)`` exactly at given steps, with the log-log slope against trajectories.

    .. math::

        \mathrm{gap}(T) = J^*_H - J_H(\theta_T) \approx C\, T^{s}, \qquad
        s_{\text{paper}} = -0.4 \ (\text{N-PG-IGT}), \quad -0.5\ (\text{N-HARPG})

    where :math:`T` counts sampled trajectories (HARPG samples two batches per step after the
    first). The logits start at 0 (the uniform policy); every closure call samples ``batch``
    fresh trajectories by :func:`sample_trajectories` and builds the GPOMDP surrogate. An
    optimizer that is a :class:`~stochstep.optimizers.HARPG` gets the ``(loss, log_prob)``
    pair; any other gets torch's closure (``zero_grad``, ``backward``, return the loss), so
    ``torch.optim`` optimizers work too. The paper's rates assume a Fisher-non-degenerate
    policy, which a tabular softmax is not (its Fisher information vanishes as the policy
    becomes deterministic): compare the measured slope with :data:`PAPER_EXPONENTS` knowing
    that. The gap stops falling at ``J*_H`` minus the best stationary return when
    ``optimal_return(mdp, horizon).stationary`` is False.

    Args:
        mdp: the MDP.
        make_optimizer: ``params -> optimizer`` for a list holding the one ``(S, A)`` float64
            logit parameter.
        horizon: H >= 1 steps per trajectory.
        checkpoints: increasing step counts >= 1 at which the gap is measured (at least 2).
        seeds: independent runs >= 1 (the fit uses the mean gap over them).
        batch: trajectories per closure call >= 1.
        generator: the source of every sampled trajectory (None: see
            :func:`stochstep.stepping.noise.make_generator`).
        progress: show a tqdm bar over the runs.

    Example:
        >>> from stochstep.optimizers import NPGIGT
        >>> mdp = TabularMDP.random(3, 2, 0.9, torch.Generator().manual_seed(0))
        >>> out = policy_gradient_rate(mdp, lambda ps: NPGIGT(ps, lr=1.0), 10, [8, 64],
        ...                            seeds=2, generator=torch.Generator().manual_seed(0))
        >>> out.trajectories.tolist(), bool((out.gaps[:, 1] < out.gaps[:, 0]).all())
        ([8, 64], True)
    """
    if not isinstance(mdp, TabularMDP):
        raise ValueError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    if not callable(make_optimizer):
        raise ValueError(f"make_optimizer must be a callable params -> optimizer, got "
                         f"{type(make_optimizer).__name__}")
    horizon, seeds, batch = (check_int(name, value) for name, value in
                             (("horizon", horizon), ("seeds", seeds), ("batch", batch)))
    steps = [check_int("checkpoints", c) for c in checkpoints]
    if len(steps) < 2 or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"checkpoints must be at least 2 increasing step counts, got {steps}")
    progress = check_flag("progress", progress)
    generator = make_generator(generator)
    best = optimal_return(mdp, horizon).value
    gaps = torch.empty(seeds, len(steps), dtype=_F64)
    used = []
    for seed in tqdm(range(seeds), desc="policy-gradient runs", disable=not progress):
        theta = torch.nn.Parameter(torch.zeros(mdp.n_states, mdp.n_actions, dtype=_F64))
        opt = make_optimizer([theta])
        pair = isinstance(opt, HARPG)
        used = []
        count = 0

        def closure():
            nonlocal count
            sample = sample_trajectories(mdp, theta.detach(), batch, horizon, generator)
            count += batch
            surrogate = gpomdp_surrogate(tabular_log_probs(theta, sample.states,
                                                           sample.actions),
                                         sample.rewards, mdp.gamma)
            if pair:
                return surrogate
            opt.zero_grad()
            loss = surrogate.loss.mean()
            loss.backward()
            return loss

        done = 0
        for k, target in enumerate(steps):
            for _ in range(target - done):
                opt.step(closure)
            done = target
            used.append(count)
            gaps[seed, k] = best - truncated_return(mdp, theta.detach(), horizon)
    trajectories = torch.tensor(used)
    return RateMeasurement(trajectories, gaps,
                           loglog_slope(trajectories, gaps.mean(0).clamp_min(1e-300)))


def _report() -> None:  # pragma: no cover - `python -m stochstep.theory_checks.tabular_mdp`
    """Print the rates quoted in the docs: N-PG-IGT, N-HARPG and vanilla PG on a random MDP."""
    import time

    from stochstep.optimizers import NPGIGT, VanillaPG

    torch.set_num_threads(1)
    start = time.perf_counter()
    mdp = TabularMDP.random(3, 2, 0.9, torch.Generator().manual_seed(0))
    horizon, checkpoints, seeds = 20, [2 ** k for k in range(4, 12)], 8
    print(f"## J*_H - J_H(theta) on a random MDP (S = 3, A = 2, gamma = 0.9, H = {horizon}, "
          f"stationary optimum: {optimal_return(mdp, horizon).stationary}), 1 trajectory per "
          f"closure call, mean over {seeds} seeds\n")
    print("| method | gap at " + " / ".join(map(str, checkpoints))
          + " steps | slope against trajectories | paper |\n|---|---|---|---|")
    methods = {"N-PG-IGT": lambda ps: NPGIGT(ps, lr=1.0),
               "N-HARPG": lambda ps: HARPG(ps, lr=1.0, generator=torch.Generator().manual_seed(0)),
               "vanilla PG": lambda ps: VanillaPG(ps, lr=1.0)}
    for name, make in methods.items():
        out = policy_gradient_rate(mdp, make, horizon, checkpoints, seeds=seeds,
                                   generator=torch.Generator().manual_seed(1))
        paper = PAPER_EXPONENTS.get(name)
        print(f"| {name} | " + " / ".join(f"{g:.3g}" for g in out.gaps.mean(0).tolist())
              + f" | {out.fit.slope:.2f} | {'-' if paper is None else paper} |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":  # pragma: no cover
    _report()
