"""Policy-gradient optimizers: N-PG-IGT and (N-)HARPG (Fatkhullin et al., arXiv 2302.01734).

Both are single-loop stochastic methods with O(d) memory that evaluate the objective at a
point other than the current iterate: N-PG-IGT at an extrapolated point (implicit gradient
transport), HARPG at a random point of the last segment, where a Hessian-vector product
corrects the momentum direction. So the optimizer, not the training loop, moves the parameters
to that point, calls the closure there (which samples fresh data) and moves them back.

We minimize: for policy gradients the closure returns a surrogate *loss* whose negative
gradient is the policy-gradient estimate (e.g. minus GPOMDP's Phi). The second half of the
module has what such a closure needs: MLP policies, ``rollout`` on gymnasium vector
environments, and the REINFORCE and GPOMDP surrogates with garage's linear feature baseline.
The baselines of the paper's experiments (vanilla PG, NSGDM) are here too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from stochstep.stepping.checks import (check_flag, check_int, check_positive,
                                       check_unit_interval)
from stochstep.stepping.noise import make_generator, standard_normal_like
from stochstep.stepping.optimizer import KernelOptimizer, check_lr
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["NPGIGT", "HARPG", "NSGDM", "VanillaPG", "hessian_vector_estimate",
           "CategoricalMLPPolicy", "GaussianMLPPolicy", "LinearFeatureBaseline", "Surrogate",
           "Trajectories", "gpomdp_surrogate", "log_probs", "policy_for", "reinforce_surrogate",
           "rollout", "sample_action"]

SCHEDULES = ("decay", "constant")


def _check_schedule(value) -> str:
    if value not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {value!r}")
    return value


class _SegmentOptimizer(KernelOptimizer):
    """What N-PG-IGT and HARPG share: the state (theta_{t-1}, d_{t-1}, t), hyperparameter
    checks, evaluating the closure at another point, and the (normalized) move."""

    state_names = ("previous", "direction")

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        group["momentum"] = check_unit_interval("momentum", group["momentum"],
                                                include_zero=False)
        group["schedule"] = _check_schedule(group["schedule"])

    def _schedule(self, group: dict, t: int) -> tuple[float, float]:
        """(gamma_t, eta_t) of a group at step t = 0, 1, ... (completed steps)."""
        raise NotImplementedError

    def _begin(self, closure) -> tuple[list[dict], list[Tensor], list[dict], list[tuple]]:
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure that samples fresh "
                             "data and returns the loss: the optimizer evaluates it at points "
                             "other than the parameters")
        groups = self._checked_groups()
        params, states, rates = [], [], []
        for group in groups:
            for p in group["params"]:
                state = self._state_of(p, self.state_names)
                t = int(state["step"])
                params.append(p)
                states.append(state)
                rates.append(self._schedule(group, t))
        return groups, params, states, rates

    @staticmethod
    def _evaluate_at(params: list[Tensor], points: list[Tensor], closure: Callable):
        """closure() with the parameters set to ``points``, then set back."""
        current = [p.detach().clone() for p in params]
        for p, x in zip(params, points):
            p.copy_(x)
        try:
            with torch.enable_grad():
                return closure()
        finally:
            for p, x in zip(params, current):
                p.copy_(x)

    def _move(self, params, states, rates, directions, normalized: bool) -> None:
        """theta_{t+1} = theta_t - gamma_t d_t / ||d_t|| (the norm over every parameter the
        optimizer holds: the paper's theta is one vector), or - gamma_t d_t; no move where
        ||d_t|| = 0."""
        scale = 1.0
        if normalized:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(d, dtype=torch.float64)
                             for d in directions]))
            scale = 0.0 if norm == 0 else 1.0 / float(norm)
        for p, state, (gamma, _), d in zip(params, states, rates, directions):
            if "direction" in state:
                state["direction"].copy_(d)
            if "previous" in state:
                state["previous"].copy_(p)
            if scale:
                p.add_(d, alpha=-gamma * scale)
            state["step"] += 1


class NPGIGT(_SegmentOptimizer):
    r"""N-PG-IGT: normalized stochastic gradient with implicit gradient transport.

    With :math:`g(\cdot)` the gradient the closure's ``backward`` leaves in ``.grad`` (a fresh
    sample at each call), per step :math:`t = 0, 1, \dots`:

    .. math::
        \tilde\theta_t = \theta_t + \frac{1 - \eta_t}{\eta_t}(\theta_t - \theta_{t-1}),\qquad
        d_t = (1 - \eta_t)\, d_{t-1} + \eta_t\, g(\tilde\theta_t),\qquad
        \theta_{t+1} = \theta_t - \gamma_t \frac{d_t}{\lVert d_t\rVert}

    with :math:`\theta_{-1} = \theta_0` and :math:`d_0 = g(\theta_0)`; the norm runs over all
    parameters. ``schedule="decay"`` (the authors' code): :math:`\gamma_t = \mathrm{lr}\cdot
    2/(t+2)`, :math:`\eta_t = \mathrm{momentum}\cdot(2/(t+2))^{4/5}`; ``"constant"``:
    :math:`\gamma_t = \mathrm{lr}`, :math:`\eta_t = \mathrm{momentum}` (then torch's lr
    schedulers drive it). The extrapolation and the momentum use the same :math:`\eta_t`, as
    the paper writes them; the authors' code extrapolates with the previous step's
    :math:`\eta_{t-1}`. A zero direction moves nothing.

    ``step(closure)`` is required: the optimizer writes :math:`\tilde\theta_t` into the
    parameters, calls the closure (torch's convention: ``zero_grad()``, loss, ``backward()``,
    return the loss) and restores :math:`\theta_t`; it returns the closure's loss.

    Args:
        params: parameters or parameter groups.
        lr: :math:`\gamma_0` (>= 0).
        momentum: :math:`\eta_0 \in (0, 1]`.
        schedule: ``"decay"`` or ``"constant"``.
        check_finite: raise naming the parameter and the step on NaN/Inf.

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> theta = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = NPGIGT([theta], lr=1.0)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * (theta ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)   # a normalized step of length lr * 2 / 2 = 1
        >>> theta.detach()
        tensor([ 2.4000, -3.2000])
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 1.0, *,
                 schedule: str = "decay", check_finite: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, schedule=schedule),
                         check_finite=check_finite)

    def _schedule(self, group, t):
        if group["schedule"] == "constant":
            return group["lr"], group["momentum"]
        return group["lr"] * 2 / (t + 2), group["momentum"] * (2 / (t + 2)) ** 0.8

    def _extrapolation_eta(self, group, t: int) -> float:
        """The eta of the extrapolated point at step t: eta_t, as the paper writes it (the
        authors' code uses eta_{t-1}; benchmarks/policy_gradient.py measures both)."""
        return self._schedule(group, t)[1]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One N-PG-IGT step; see the class docstring."""
        groups, params, states, rates = self._begin(closure)
        etas = [self._extrapolation_eta(group, int(self.state[p]["step"]))
                for group in groups for p in group["params"]]
        points = [p + ((1 - eta) / eta) * (p - s["previous"]) if s["step"] > 0 else p
                  for p, s, eta in zip(params, states, etas)]
        loss = self._evaluate_at(params, points, closure)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("NPGIGT does not support sparse gradients")
        directions = [g.clone() if s["step"] == 0 else
                      s["direction"].mul(1 - eta).add_(g, alpha=eta)
                      for g, s, (_, eta) in zip(grads, states, rates)]
        self._move(params, states, rates, directions, normalized=True)
        if self.check_finite:
            self._assert_finite()
        return loss


def hessian_vector_estimate(loss: Tensor, log_prob: Tensor | None, params: list[Tensor],
                            vector: list[Tensor]) -> list[Tensor]:
    r"""HARPG's Hessian-vector estimate at the parameters where ``loss`` was computed.

    With per-sample losses :math:`\ell_i` and log-likelihoods :math:`\log p_i` of their
    samples (shape ``(N,)``, or scalars for one sample), the mean over :math:`i` of

    .. math::
        B_i v = \nabla^2 \ell_i\, v + \nabla \ell_i\, \langle \nabla \log p_i, v\rangle,

    the estimator :math:`B(\tau, \theta)` of the paper (for :math:`\ell = -\Phi`, the
    GPOMDP surrogate): unbiased for :math:`\nabla^2 J\, v` because the samples' law depends on
    :math:`\theta`. Without ``log_prob`` (data whose law does not depend on the parameters) it
    is :math:`\nabla^2 \bar\ell\, v`. Costs three backward passes (one keeping its graph,
    one through it, one plain) for all :math:`N` inner products at once.
    """
    # One backward with graph of  mean(l) + sum_i u_i log p_i  (u = 0), one double backward of
    # its inner product with v, in theta and u at once: in theta the Hessian-vector product (the
    # u-terms vanish at u = 0), in u the N products <grad log p_i, v>. Then one plain backward
    # of the losses weighted by those products.
    u = None if log_prob is None else torch.zeros_like(log_prob, requires_grad=True)
    total = loss.mean() if u is None else loss.mean() + (u * log_prob).sum()
    grads = torch.autograd.grad(total, params, create_graph=True, allow_unused=True)
    inner = [(g * v).sum() for g, v in zip(grads, vector) if g is not None and g.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if not inner:
        return out
    inputs = list(params) + ([] if u is None else [u])
    second = torch.autograd.grad(sum(inner), inputs, retain_graph=u is not None,
                                 allow_unused=True)
    out = [o if h is None else h.detach() for o, h in zip(out, second)]
    if u is None or second[-1] is None:
        return out
    score = torch.autograd.grad(loss, params, second[-1] / loss.numel(), allow_unused=True)
    return [o if s is None else o + s for o, s in zip(out, score)]


def _loss_and_log_prob(out) -> tuple[Tensor, Tensor | None]:
    if isinstance(out, Tensor) and out.numel() == 1:
        return out.reshape(()), None
    if (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(t, Tensor) for t in out) and out[0].shape == out[1].shape
            and out[0].dim() <= 1):
        return out[0], out[1]
    raise TypeError("HARPG's closure must return a scalar loss, or a pair (loss, log_prob) of "
                    "equally shaped 0- or 1-dim tensors (one entry per sampled trajectory), "
                    f"got {type(out).__name__}")


class HARPG(_SegmentOptimizer):
    r"""(N-)HARPG: Hessian-aided recursive (policy) gradient, normalized or not.

    The closure returns, without calling ``backward``, a scalar loss or a pair
    ``(loss, log_prob)`` (per-trajectory tensors for policy gradients); the optimizer
    differentiates it. Per step :math:`t \ge 1`, with :math:`q_t \sim U[0, 1]` from
    ``generator``, :math:`g` the gradient of the closure's (mean) loss and :math:`B` the
    estimate of :func:`hessian_vector_estimate`, each call sampling fresh data:

    .. math::
        \hat\theta_t = q_t\theta_t + (1 - q_t)\theta_{t-1},\qquad
        v_t = B(\hat\theta_t)(\theta_t - \theta_{t-1}),\\
        d_t = (1 - \eta_t)(d_{t-1} + v_t) + \eta_t\, g(\theta_t),\qquad
        \theta_{t+1} = \theta_t - \gamma_t \frac{d_t}{\lVert d_t\rVert}
        \ \ (\text{normalized}),\quad \theta_t - \gamma_t d_t\ \ (\text{otherwise}),

    with :math:`d_0 = g(\theta_0)`; the closure runs at :math:`\theta_t` first, then at
    :math:`\hat\theta_t`. ``schedule="decay"`` (the authors' code): :math:`\eta_t =
    \mathrm{momentum}\cdot 2/(t+2)`, :math:`\gamma_t = \mathrm{lr}\cdot 2/(t+2)` normalized,
    :math:`\mathrm{lr}\sqrt{2/(t+2)}` unnormalized; ``"constant"``: :math:`\mathrm{lr}` and
    :math:`\mathrm{momentum}`. On a deterministic quadratic :math:`v_t` is the exact gradient
    difference, so :math:`d_t = \nabla f(\theta_t)` at every step, whatever :math:`q_t`.

    With a batch of trajectories, :math:`B` is averaged per trajectory (unbiased). The authors'
    code instead multiplies the gradient of the batch loss by the inner product of ``v`` with
    the gradient of the mean per-step log-likelihood of the batch, which shrinks the
    score-function term by about the number of steps in the batch; a closure that returns
    those two scalars reproduces it.

    Args:
        params: parameters or parameter groups.
        lr: :math:`\gamma_0` (>= 0).
        momentum: :math:`\eta_0 \in (0, 1]`.
        normalized: N-HARPG (True) or HARPG.
        schedule: ``"decay"`` or ``"constant"``.
        generator: the source of :math:`q_t` (if None, one seeded from torch's global RNG);
            saved in ``state_dict``.
        check_finite: raise naming the parameter and the step on NaN/Inf.

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> theta = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = HARPG([theta], lr=1.0, generator=torch.Generator().manual_seed(0))
        >>> for _ in range(3):
        ...     _ = opt.step(lambda: 0.5 * (theta ** 2).sum())
        >>> theta.detach()   # normalized gradient steps of length 1, 2/3, 1/2
        tensor([ 1.7000, -2.2667])
    """

    stochastic = True

    def __init__(self, params, lr: float = 0.1, momentum: float = 1.0, *,
                 normalized: bool = True, schedule: str = "decay",
                 generator: torch.Generator | None = None, check_finite: bool = False):
        self.normalized = check_flag("normalized", normalized)
        super().__init__(params, dict(lr=lr, momentum=momentum, schedule=schedule),
                         generator=generator, check_finite=check_finite)

    def _schedule(self, group, t):
        if group["schedule"] == "constant":
            return group["lr"], group["momentum"]
        shrink = 2 / (t + 2)
        return (group["lr"] * (shrink if self.normalized else math.sqrt(shrink)),
                group["momentum"] * shrink)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One (N-)HARPG step; returns the (mean) loss at theta_t."""
        groups, params, states, rates = self._begin(closure)
        later = any(s["step"] > 0 for s in states)
        q = float(torch.rand((), dtype=torch.float64, generator=self.generator)) if later else 0
        with torch.enable_grad():
            loss, _ = _loss_and_log_prob(closure())
            grads = torch.autograd.grad(loss.mean(), params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        directions = [g for g in grads]
        if later:
            # theta_{-1} = theta_0: no segment yet for a parameter at its first step
            deltas = [p - s["previous"] if s["step"] > 0 else torch.zeros_like(p)
                      for p, s in zip(params, states)]
            points = [p - (1 - q) * delta for p, delta in zip(params, deltas)]

            def corrections():
                with torch.enable_grad():
                    loss_hat, log_prob = _loss_and_log_prob(closure())
                    return hessian_vector_estimate(loss_hat, log_prob, params, deltas)

            vs = self._evaluate_at(params, points, corrections)
            directions = [g if s["step"] == 0 else
                          (s["direction"] + v).mul_(1 - eta).add_(g, alpha=eta)
                          for g, v, s, (_, eta) in zip(grads, vs, states, rates)]
        self._move(params, states, rates, directions, normalized=self.normalized)
        if self.check_finite:
            self._assert_finite()
        return loss.detach().mean()


# -- the baselines of the paper's experiments, as the authors' code runs them -------------------
class _GradientBaseline(_SegmentOptimizer):
    """Steps from ``.grad`` (torch's convention: ``step(closure)`` optional); the parameters
    without a gradient are skipped."""

    normalized = False

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self._checked_groups()
        params, states, rates, directions = [], [], [], []
        for group in groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse "
                                       "gradients")
                state = self._state_of(p, self.state_names)
                t = int(state["step"])
                gamma, eta = self._schedule(group, t)
                params.append(p)
                states.append(state)
                rates.append((gamma, eta))
                directions.append(p.grad.clone() if t == 0 or "direction" not in state else
                                  state["direction"].mul(1 - eta).add_(p.grad, alpha=eta))
        if params:
            self._move(params, states, rates, directions, normalized=self.normalized)
        if self.check_finite:
            self._assert_finite()
        return loss


class VanillaPG(_GradientBaseline):
    r"""Vanilla policy gradient as run in the paper's experiments (``sgd`` in the authors'
    code): :math:`\theta_{t+1} = \theta_t - \gamma_t g_t` with
    :math:`\gamma_t = \mathrm{lr}\,(2/(t+2))^{2/3}` (``schedule="decay"``) or
    :math:`\mathrm{lr}` (``"constant"``); ``g`` is ``.grad``.

    .. math::
        \theta_{t+1} = \theta_t - \mathrm{lr}\,\Bigl(\frac{2}{t+2}\Bigr)^{2/3} g_t

    Args:
        params: parameters or parameter groups.
        lr: :math:`\gamma_0` (>= 0).
        schedule: ``"decay"`` or ``"constant"``.
        check_finite: raise naming the parameter and the step on NaN/Inf.

    References:
        Fatkhullin, Barakat, Kireeva, He, ICML 2023, arXiv:2302.01734 (the baseline of its
        experiments).

    Example:
        >>> theta = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = VanillaPG([theta], lr=0.5)
        >>> theta.grad = torch.tensor([2.0])
        >>> _ = opt.step()
        >>> theta.detach()   # 1 - 0.5 * 1 * 2
        tensor([0.])
    """

    state_names = ()

    def __init__(self, params, lr: float = 0.1, *, schedule: str = "decay",
                 check_finite: bool = False):
        super().__init__(params, dict(lr=lr, schedule=schedule), check_finite=check_finite)

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        group["schedule"] = _check_schedule(group["schedule"])

    def _schedule(self, group, t):
        if group["schedule"] == "constant":
            return group["lr"], 1.0
        return group["lr"] * (2 / (t + 2)) ** (2 / 3), 1.0


class NSGDM(_GradientBaseline):
    r"""Normalized stochastic gradient with momentum as run in the paper's experiments
    (``nsgdm`` in the authors' code): N-PG-IGT without the extrapolation.

    .. math::
        d_t = (1 - \eta_t)\, d_{t-1} + \eta_t\, g_t,\qquad
        \theta_{t+1} = \theta_t - \gamma_t\, d_t / \lVert d_t\rVert

    with :math:`d_0 = g_0`, :math:`\gamma_t = 2\,\mathrm{lr}/(t+2)` and
    :math:`\eta_t = \mathrm{momentum}\,(2/(t+2))^{2/3}` (``schedule="decay"``), or
    ``lr`` and ``momentum`` (``"constant"``); ``g`` is ``.grad`` and the norm runs over every
    parameter with a gradient.

    Args:
        params: parameters or parameter groups.
        lr: :math:`\gamma_0` (>= 0).
        momentum: :math:`\eta_0 \in (0, 1]`.
        schedule: ``"decay"`` or ``"constant"``.
        check_finite: raise naming the parameter and the step on NaN/Inf.

    References:
        Fatkhullin, Barakat, Kireeva, He, ICML 2023, arXiv:2302.01734 (a baseline of its
        experiments).

    Example:
        >>> theta = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = NSGDM([theta], lr=1.0)
        >>> theta.grad = theta.detach().clone()
        >>> _ = opt.step()
        >>> theta.detach()
        tensor([ 2.4000, -3.2000])
    """

    state_names = ("direction",)
    normalized = True

    def __init__(self, params, lr: float = 0.1, momentum: float = 1.0, *,
                 schedule: str = "decay", check_finite: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, schedule=schedule),
                         check_finite=check_finite)

    def _schedule(self, group, t):
        if group["schedule"] == "constant":
            return group["lr"], group["momentum"]
        return group["lr"] * 2 / (t + 2), group["momentum"] * (2 / (t + 2)) ** (2 / 3)


# -- policies, rollouts and estimators ------------------------------------------------------


def _check_hidden(hidden) -> tuple[int, ...]:
    if not isinstance(hidden, (tuple, list)):
        raise ValueError(f"hidden must be a tuple of layer widths, got {hidden!r}")
    return tuple(check_int("hidden", width) for width in hidden)


def _check_activation(activation) -> type[nn.Module]:
    if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
        raise ValueError(f"activation must be a torch.nn.Module class such as torch.nn.Tanh, "
                         f"got {activation!r}")
    return activation


def _mlp(sizes: tuple[int, ...], activation: type[nn.Module],
         generator: torch.Generator) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last),
    initialised as garage's MLPs: Xavier-uniform weights, zero biases."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        # skip_init: nn.Linear's own initialisation would draw from torch's global RNG
        linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
        nn.init.xavier_uniform_(linear.weight, generator=generator)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _gumbel_max(logits: Tensor, generator: torch.Generator) -> Tensor:
    """argmax_k (logits_k - log e_k), e_k ~ Exp(1): a draw of Categorical(logits=logits)."""
    # torch's exponential_ never returns 0 (it is meant for this trick), so the log is finite
    race = torch.empty_like(logits).exponential_(generator=generator).log_()
    return (logits - race).argmax(-1)


def _gaussian(loc: Tensor, scale: Tensor, generator: torch.Generator) -> Tensor:
    return loc + scale * standard_normal_like(loc, generator)


def _check_obs(obs: Tensor, obs_dim: int) -> None:
    if not isinstance(obs, Tensor) or obs.dim() < 1 or obs.shape[-1] != obs_dim:
        raise ValueError(f"obs must be a tensor whose last dimension is obs_dim = {obs_dim}, got "
                         f"{_describe(obs)}")


class CategoricalMLPPolicy(nn.Module):
    r"""Softmax policy over ``n_actions`` discrete actions, logits from an MLP of the observation.

    .. math::
        \pi_\theta(a \mid s) = \frac{\exp f_\theta(s)_a}{\sum_{b} \exp f_\theta(s)_b},
        \qquad a \in \{0, \dots, n_\text{actions} - 1\},

    where :math:`f_\theta` is the MLP (``activation`` after every hidden layer, none after the
    output), initialised as garage's: Xavier-uniform weights drawn from ``generator``, zero
    biases. ``forward(obs)`` returns a ``torch.distributions.Categorical`` batched over the
    leading dimensions of ``obs``.

    Args:
        obs_dim: length of the (flat) observation.
        n_actions: number of actions.
        hidden: widths of the hidden layers (default (32, 32), as the paper's CartPole and
            Acrobot policies); ``()`` gives a linear softmax policy.
        activation: ``torch.nn.Module`` class applied after each hidden layer (default Tanh).
        generator: the source of the initial weights (if None, one seeded from torch's global
            RNG).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> policy = CategoricalMLPPolicy(4, 2, generator=torch.Generator().manual_seed(0))
        >>> policy(torch.zeros(5, 3, 4)).probs.shape   # zero input, zero biases: uniform
        torch.Size([5, 3, 2])
        >>> policy(torch.zeros(4)).probs
        tensor([0.5000, 0.5000], grad_fn=<SoftmaxBackward0>)
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (32, 32),
                 activation: type[nn.Module] = nn.Tanh, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.obs_dim = check_int("obs_dim", obs_dim)
        self.n_actions = check_int("n_actions", n_actions)
        self.logits = _mlp((obs_dim, *_check_hidden(hidden), n_actions),
                           _check_activation(activation), make_generator(generator))

    def forward(self, obs: Tensor) -> Categorical:
        _check_obs(obs, self.obs_dim)
        return Categorical(logits=self.logits(obs))

    def sample(self, obs: Tensor, generator: torch.Generator) -> Tensor:
        """One action per observation, as :func:`sample_action` draws it from ``self(obs)``,
        without building the distribution (which costs more than the network in a rollout)."""
        _check_obs(obs, self.obs_dim)
        return _gumbel_max(self.logits(obs), generator)


class GaussianMLPPolicy(nn.Module):
    r"""Gaussian policy: mean from an MLP of the observation, a learned state-independent std.

    .. math::
        \pi_\theta(a \mid s) = \mathcal N\big(a;\ \mu_\theta(s),\ e^{2\ell} I\big),

    with :math:`\mu_\theta` the MLP (initialised as :class:`CategoricalMLPPolicy`'s) and
    :math:`\ell` one learned log-std shared by all action dimensions, starting at
    :math:`\log(\text{init\_std})`: garage's ``GaussianMLPPolicy``. Garage clamps :math:`\ell`
    at :math:`\log 10^{-6}`; here it is not clamped (a clamp would silently stop its gradient).
    ``forward(obs)`` returns ``Independent(Normal(mu, std), 1)`` batched over the leading
    dimensions of ``obs``. Actions are not clipped to the action space: the environment
    receives them as drawn, as in garage.

    Args:
        obs_dim: length of the (flat) observation.
        act_dim: length of the action.
        hidden: widths of the hidden layers of the mean (default (64, 64), as the paper's
            MuJoCo policies).
        activation: ``torch.nn.Module`` class applied after each hidden layer (default Tanh).
        init_std: initial standard deviation (> 0, default 1).
        generator: the source of the initial weights (if None, one seeded from torch's global
            RNG).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> policy = GaussianMLPPolicy(3, 2, init_std=0.5,
        ...                            generator=torch.Generator().manual_seed(0))
        >>> d = policy(torch.zeros(7, 3))
        >>> d.batch_shape, d.event_shape
        (torch.Size([7]), torch.Size([2]))
        >>> d.mean[0].tolist(), d.stddev[0].tolist()   # zero input, zero biases
        ([0.0, 0.0], [0.5, 0.5])
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64),
                 activation: type[nn.Module] = nn.Tanh, init_std: float = 1.0, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.obs_dim = check_int("obs_dim", obs_dim)
        self.act_dim = check_int("act_dim", act_dim)
        self.mean = _mlp((obs_dim, *_check_hidden(hidden), act_dim),
                         _check_activation(activation), make_generator(generator))
        self.log_std = nn.Parameter(torch.full((1,), math.log(check_positive("init_std",
                                                                             init_std))))

    def forward(self, obs: Tensor) -> Independent:
        _check_obs(obs, self.obs_dim)
        mean = self.mean(obs)
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)

    def sample(self, obs: Tensor, generator: torch.Generator) -> Tensor:
        """One action per observation, as :func:`sample_action` draws it from ``self(obs)``,
        without building the distribution."""
        _check_obs(obs, self.obs_dim)
        mean = self.mean(obs)
        return _gaussian(mean, self.log_std.exp().expand_as(mean), generator)


def _spaces(env) -> tuple[spaces.Space, spaces.Space]:
    """The observation and action space of one sub-environment (of a vector env) or of ``env``."""
    obs_space = getattr(env, "single_observation_space", None)
    act_space = getattr(env, "single_action_space", None)
    if obs_space is None or act_space is None:
        obs_space = getattr(env, "observation_space", None)
        act_space = getattr(env, "action_space", None)
    if obs_space is None or act_space is None:
        raise ValueError(f"env must be a gymnasium Env or VectorEnv, got {type(env).__name__}")
    return obs_space, act_space


def _flat_dim(space: spaces.Box) -> int:
    return int(np.prod(space.shape, dtype=np.int64))


def policy_for(env, **policy_kwargs) -> CategoricalMLPPolicy | GaussianMLPPolicy:
    r"""The MLP policy that fits ``env``'s spaces: :class:`CategoricalMLPPolicy` for a
    ``Discrete`` action space, :class:`GaussianMLPPolicy` for a ``Box`` one.

    .. math::
        \text{Discrete}(n) \mapsto \pi_\theta(\cdot \mid s) = \operatorname{softmax} f_\theta(s),
        \qquad \text{Box}(d) \mapsto \mathcal N(\mu_\theta(s), e^{2\ell} I_d)

    The observation space must be a ``Box`` (flattened to its size). For a vector env the
    spaces of one sub-environment are used.

    Args:
        env: a gymnasium ``Env`` or ``VectorEnv``.
        **policy_kwargs: passed to the policy class (``hidden``, ``activation``, ``init_std``,
            ``generator``).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> import gymnasium
        >>> env = gymnasium.make_vec("CartPole-v1", num_envs=2)
        >>> policy = policy_for(env, generator=torch.Generator().manual_seed(0))
        >>> type(policy).__name__, policy.obs_dim, policy.n_actions
        ('CategoricalMLPPolicy', 4, 2)
    """
    obs_space, act_space = _spaces(env)
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(f"env: the observation space must be a Box, got {obs_space}")
    obs_dim = _flat_dim(obs_space)
    if isinstance(act_space, spaces.Discrete):
        if int(act_space.start) != 0:
            raise ValueError(f"env: a Discrete action space must start at 0 (the policy's "
                             f"actions are 0..n-1), got {act_space}")
        return CategoricalMLPPolicy(obs_dim, int(act_space.n), **policy_kwargs)
    if isinstance(act_space, spaces.Box) and len(act_space.shape) == 1:
        return GaussianMLPPolicy(obs_dim, act_space.shape[0], **policy_kwargs)
    raise ValueError(f"env: the action space must be Discrete (CategoricalMLPPolicy) or a 1-D "
                     f"Box (GaussianMLPPolicy), got {act_space}")


def sample_action(distribution: Distribution, generator: torch.Generator) -> Tensor:
    r"""One draw from a ``Categorical``, ``Normal`` or ``Independent(Normal)`` distribution,
    taking its randomness from ``generator`` (``Distribution.sample`` takes none).

    .. math::
        a = \arg\max_k\, (\log p_k - \log e_k),\ e_k \sim \operatorname{Exp}(1)
        \quad (\text{Categorical}(p)), \qquad
        a = \mu + \sigma z,\ z \sim \mathcal N(0, I) \quad (\text{Normal})

    The categorical draw is the Gumbel-max trick (:math:`-\log e_k` is standard Gumbel):
    exact in distribution, and three tensor operations where ``torch.multinomial`` costs
    more than the policy's network at rollout sizes.

    Args:
        distribution: the policy's output, batched over its leading dimensions.
        generator: the source of randomness.

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> d = Categorical(probs=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        >>> sample_action(d, torch.Generator().manual_seed(0))
        tensor([1, 0])
    """
    if isinstance(distribution, Categorical):
        return _gumbel_max(distribution.logits, generator)
    normal = distribution.base_dist if isinstance(distribution, Independent) else distribution
    if isinstance(normal, Normal):
        return _gaussian(normal.loc, normal.scale, generator)
    raise TypeError(f"distribution must be a Categorical, Normal or Independent(Normal) to be "
                    f"sampled with a generator, got {distribution!r}")


@dataclasses.dataclass
class Trajectories:
    r"""A batch of ``N`` trajectories of horizon ``H``, padded after their ends.

    ``mask[i, t]`` is 1 while trajectory ``i`` is running at step ``t`` (its action was taken
    in a live episode, the step that ends it included) and 0 afterwards; the observations,
    actions and rewards of masked steps are 0.

    .. math::
        \tau_i = (s_0, a_0, r_0, \dots, s_{L_i - 1}, a_{L_i - 1}, r_{L_i - 1}),\qquad
        m_{i,t} = \mathbb 1[t < L_i],\ L_i \le H

    Args:
        observations: ``(N, H, obs_dim)``.
        actions: ``(N, H)`` (discrete) or ``(N, H, act_dim)``.
        rewards: ``(N, H)``.
        mask: ``(N, H)``, 0 or 1.

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> batch = Trajectories(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long),
        ...                      torch.ones(2, 3), torch.tensor([[1., 1., 0.], [1., 1., 1.]]))
        >>> batch.lengths
        tensor([2, 3])
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor

    def __post_init__(self):
        for name in ("observations", "actions", "rewards", "mask"):
            if not isinstance(getattr(self, name), Tensor):
                raise ValueError(f"{name} must be a tensor, got "
                                 f"{type(getattr(self, name)).__name__}")
        if self.rewards.dim() != 2:
            raise ValueError(f"rewards must have shape (N, H), got {tuple(self.rewards.shape)}")
        nh = self.rewards.shape
        if self.mask.shape != nh:
            raise ValueError(f"mask must have the shape of rewards {tuple(nh)}, got "
                             f"{tuple(self.mask.shape)}")
        if self.observations.dim() != 3 or self.observations.shape[:2] != nh:
            raise ValueError(f"observations must have shape {tuple(nh)} + (obs_dim,), got "
                             f"{tuple(self.observations.shape)}")
        if self.actions.shape[:2] != nh:
            raise ValueError(f"actions must have shape {tuple(nh)} + (...), got "
                             f"{tuple(self.actions.shape)}")

    @property
    def lengths(self) -> Tensor:
        """``(N,)`` number of running steps of each trajectory."""
        return self.mask.sum(1).long()


def rollout(env, policy: nn.Module, horizon: int, *,
            generator: torch.Generator | None = None) -> Trajectories:
    r"""Sample one trajectory of at most ``horizon`` steps in each sub-environment of a
    gymnasium vector env, with actions drawn from ``policy`` by ``generator``.

    .. math::
        s_0 \sim \rho \ (\text{reset, seeded from the generator}),\quad
        a_t \sim \pi_\theta(\cdot \mid s_t),\quad (s_{t+1}, r_t) \sim P(\cdot \mid s_t, a_t),
        \quad t < \min(L, H)

    where :math:`L` is the step at which the episode terminates or is truncated. The env is
    reset with ``seed`` drawn from ``generator`` (sub-environment ``k`` gets ``seed + k``), so
    the whole batch is a function of the generator's state. Steps after an episode's end are
    masked out (and zeroed), whatever the env's autoreset mode: under gymnasium's default
    next-step autoreset the step after an end is a reset, and the steps after that belong to a
    new episode, which is never mixed in. Sampling stops when every episode has ended.
    Actions are drawn under ``torch.no_grad()``, by ``policy.sample(obs, generator)`` when
    the policy has that method (both MLP policies: the same draws as
    :func:`sample_action`, without building a distribution object at every step), else by
    :func:`sample_action` on ``policy(obs)``; :func:`log_probs` recomputes
    :math:`\log\pi_\theta(a_t \mid s_t)` with grad, at the same or other parameters.

    Args:
        env: a gymnasium vector env (``gymnasium.make_vec(id, num_envs=N)``); one trajectory
            per sub-environment. The spaces must fit ``policy`` (see :func:`policy_for`).
        policy: a module mapping ``(N, obs_dim)`` observations to a ``Categorical``, ``Normal``
            or ``Independent(Normal)`` distribution.
        horizon: the number of steps :math:`H \ge 1`.
        generator: the source of the reset seed and of the actions (if None, one seeded from
            torch's global RNG).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> import gymnasium
        >>> env = gymnasium.make_vec("CartPole-v1", num_envs=3)
        >>> g = torch.Generator().manual_seed(0)
        >>> batch = rollout(env, policy_for(env, generator=g), 50, generator=g)
        >>> batch.observations.shape, batch.actions.shape, batch.rewards.shape
        (torch.Size([3, 50, 4]), torch.Size([3, 50]), torch.Size([3, 50]))
        >>> bool((batch.rewards == batch.mask).all())   # CartPole: reward 1 per running step
        True
    """
    horizon = check_int("horizon", horizon)
    generator = make_generator(generator)
    n = getattr(env, "num_envs", None)
    if not isinstance(n, int):
        raise ValueError(f"env must be a gymnasium VectorEnv (gymnasium.make_vec), got "
                         f"{type(env).__name__}")
    obs_space, act_space = _spaces(env)
    obs_dim = _flat_dim(obs_space)
    param = next(policy.parameters(), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    act_dtype = getattr(act_space, "dtype", None)
    # a policy's own sample(obs, generator) skips building the distribution at every step
    has_sample = callable(getattr(policy, "sample", None))

    # gymnasium seeds sub-environment k with seed + k, and numpy seeds must stay below 2**32
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    obs, _ = env.reset(seed=seed)
    observations = torch.zeros(n, horizon, obs_dim, dtype=dtype)
    rewards = torch.zeros(n, horizon, dtype=dtype)
    alive = np.zeros((n, horizon), dtype=bool)
    running = np.ones(n, dtype=bool)
    actions = None
    # the loop writes through numpy views: a numpy slice assignment costs a fraction of torch's
    observations_np, rewards_np = observations.numpy(), rewards.numpy()
    with torch.no_grad():
        for t in range(horizon):
            state = torch.as_tensor(obs, dtype=dtype).reshape(n, obs_dim)
            action = policy.sample(state, generator) if has_sample else \
                sample_action(policy(state), generator)
            if actions is None:
                actions = action.new_zeros((n, horizon, *action.shape[1:]))
                actions_np = actions.numpy()
            observations_np[:, t] = state.numpy()
            actions_np[:, t] = action_np = action.numpy()
            alive[:, t] = running
            obs, rewards_np[:, t], terminated, truncated, _ = env.step(
                action_np if act_dtype is None else action_np.astype(act_dtype, copy=False))
            # an episode that ended at step t contributes nothing from step t + 1 on
            running &= ~(terminated | truncated)
            if not running.any():
                break
    # steps after an end (a reset, then a new episode) are zeroed, never mixed in
    observations_np[~alive] = 0
    rewards_np[~alive] = 0
    actions_np[~alive] = 0
    return Trajectories(observations, actions, rewards, torch.from_numpy(alive).to(dtype))


def log_probs(policy: nn.Module, trajectories: Trajectories) -> Tensor:
    r"""``(N, H)`` log-probabilities of the trajectories' actions under ``policy``, with grad;
    masked steps are 0.

    .. math::
        \ell_{i,t} = m_{i,t} \log \pi_\theta(a_{i,t} \mid s_{i,t})

    Args:
        policy: the module that maps observations to action distributions.
        trajectories: the batch, e.g. from :func:`rollout` (possibly at other parameters).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> policy = CategoricalMLPPolicy(4, 2, generator=torch.Generator().manual_seed(0))
        >>> batch = Trajectories(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long),
        ...                      torch.ones(1, 2), torch.tensor([[1., 0.]]))
        >>> log_probs(policy, batch)   # uniform policy: log 1/2, then masked
        tensor([[-0.6931,  0.0000]], grad_fn=<WhereBackward0>)
    """
    if not isinstance(trajectories, Trajectories):
        raise ValueError(f"trajectories must be a Trajectories batch, got "
                         f"{type(trajectories).__name__}")
    log_prob = policy(trajectories.observations).log_prob(trajectories.actions)
    # where, not a product: a masked step must not bring a NaN or an infinity into the sum
    return torch.where(trajectories.mask > 0, log_prob, 0.0)


class Surrogate(NamedTuple):
    """Per-trajectory ``(loss, log_prob)``: ``loss.mean().backward()`` gives minus the averaged
    estimator, and ``log_prob`` is :math:`\\log p(\\tau_i \\mid \\theta)` (HARPG's pair)."""

    loss: Tensor
    log_prob: Tensor


def _describe(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)


def _constant(name: str, value, like: Tensor) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != like.shape:
        raise ValueError(f"{name} must be a tensor of the shape of log_probs "
                         f"{tuple(like.shape)}, got {_describe(value)}")
    return value.detach().to(like.dtype)


def _weighted_terms(log_probs: Tensor, rewards: Tensor, gamma, mask, baseline):
    r"""The masked log-probabilities and the constant weights
    :math:`w_t = \gamma^t (r_t - b_t) m_t` with :math:`b_t = V_t - \gamma m_{t+1} V_{t+1}`."""
    if not isinstance(log_probs, Tensor) or log_probs.dim() != 2 or \
            not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be a floating (N, H) tensor, got {_describe(log_probs)}")
    gamma = check_unit_interval("gamma", gamma)
    rewards = _constant("rewards", rewards, log_probs)
    if mask is None:
        mask = torch.ones_like(rewards)
    else:
        mask = _constant("mask", mask, log_probs)
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must hold only 0 and 1")
        log_probs = torch.where(mask > 0, log_probs, 0.0)
    advantage = rewards
    if baseline is not None:
        values = _constant("baseline", baseline, log_probs) * mask
        following = torch.cat([values[:, 1:], values.new_zeros(len(values), 1)], 1)
        advantage = rewards - values + gamma * following
    discount = gamma ** torch.arange(rewards.shape[1], dtype=rewards.dtype)
    return log_probs, discount * advantage * mask


def gpomdp_surrogate(log_probs: Tensor, rewards: Tensor, gamma: float, *,
                     mask: Tensor | None = None, baseline: Tensor | None = None) -> Surrogate:
    r"""GPOMDP surrogate of each trajectory: its gradient is minus the GPOMDP estimate.

    .. math::
        \Phi_i = \sum_{t<H} \gamma^t (r_{i,t} - b_{i,t})\, m_{i,t}
                 \sum_{t' \le t} \log \pi_\theta(a_{i,t'} \mid s_{i,t'}), \qquad
        \text{loss}_i = -\Phi_i, \qquad
        \text{log\_prob}_i = \sum_{t<H} m_{i,t} \log \pi_\theta(a_{i,t} \mid s_{i,t})

    :math:`\nabla\Phi_i` is the spec's GPOMDP estimator (with :math:`b = 0`).
    ``baseline`` is a value estimate :math:`V_{i,t}` of the discounted return-to-go from step
    :math:`t` (garage's baselines, e.g. :meth:`LinearFeatureBaseline.predict`); it enters as
    the reward baseline :math:`b_{i,t} = V_{i,t} - \gamma m_{i,t+1} V_{i,t+1}`
    (:math:`V_{i,H} = 0`), which telescopes to
    :math:`\sum_{t \ge t'} \gamma^t b_{i,t} = \gamma^{t'} V_{i,t'}`: the usual
    :math:`\sum_t \gamma^t (G_{i,t} - V_{i,t}) \nabla \log\pi_\theta(a_{i,t} \mid s_{i,t})`,
    unbiased for any :math:`V` of the state. Rewards, mask and baseline are constants.

    Args:
        log_probs: ``(N, H)`` :math:`\log\pi_\theta(a_t \mid s_t)` with grad (:func:`log_probs`).
        rewards: ``(N, H)`` rewards.
        gamma: discount in [0, 1].
        mask: ``(N, H)`` 0/1, 1 while the episode runs (default all ones).
        baseline: ``(N, H)`` value estimates :math:`V` (default none).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> lp = torch.tensor([[-1.0, -2.0]])
        >>> gpomdp_surrogate(lp, torch.tensor([[1.0, 1.0]]), 0.5)   # -(1*(-1) + 0.5*(-3))
        Surrogate(loss=tensor([2.5000]), log_prob=tensor([-3.]))
    """
    log_probs, weights = _weighted_terms(log_probs, rewards, gamma, mask, baseline)
    return Surrogate(-(weights * log_probs.cumsum(1)).sum(1), log_probs.sum(1))


def reinforce_surrogate(log_probs: Tensor, rewards: Tensor, gamma: float, *,
                        mask: Tensor | None = None,
                        baseline: Tensor | None = None) -> Surrogate:
    r"""REINFORCE surrogate of each trajectory: its gradient is minus the REINFORCE estimate.

    .. math::
        \Phi_i = \Big(\sum_{t<H} \gamma^t (r_{i,t} - b_{i,t})\, m_{i,t}\Big)
                 \sum_{t<H} m_{i,t} \log \pi_\theta(a_{i,t} \mid s_{i,t}), \qquad
        \text{loss}_i = -\Phi_i, \qquad
        \text{log\_prob}_i = \sum_{t<H} m_{i,t} \log \pi_\theta(a_{i,t} \mid s_{i,t})

    with the reward baseline :math:`b_{i,t} = V_{i,t} - \gamma m_{i,t+1} V_{i,t+1}` of
    :func:`gpomdp_surrogate`, so that the return is centred by :math:`V_{i,0}`, the value of
    the initial state.

    Args:
        log_probs: ``(N, H)`` :math:`\log\pi_\theta(a_t \mid s_t)` with grad (:func:`log_probs`).
        rewards: ``(N, H)`` rewards.
        gamma: discount in [0, 1].
        mask: ``(N, H)`` 0/1, 1 while the episode runs (default all ones).
        baseline: ``(N, H)`` value estimates :math:`V` (default none).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734.

    Example:
        >>> lp = torch.tensor([[-1.0, -2.0]])
        >>> reinforce_surrogate(lp, torch.tensor([[1.0, 1.0]]), 0.5)   # -(1.5 * (-3))
        Surrogate(loss=tensor([4.5000]), log_prob=tensor([-3.]))
    """
    log_probs, weights = _weighted_terms(log_probs, rewards, gamma, mask, baseline)
    log_prob = log_probs.sum(1)
    return Surrogate(-weights.sum(1) * log_prob, log_prob)


def _returns_to_go(rewards: Tensor, gamma: float) -> Tensor:
    r"""``(N, H)`` discounted returns-to-go :math:`G_t = \sum_{k=t}^{H-1} \gamma^{k-t} r_k`."""
    returns = torch.empty_like(rewards)
    following = rewards.new_zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        following = rewards[:, t] + gamma * following
        returns[:, t] = following
    return returns


class LinearFeatureBaseline:
    r"""garage's linear feature baseline: a ridge regression of the discounted return-to-go on
    features of the observation and the time step.

    With :math:`\bar s = \operatorname{clip}(s, -10, 10)` and :math:`u = t / 100`,

    .. math::
        \phi(s, t) = (\bar s,\ \bar s^2,\ u,\ u^2,\ u^3,\ 1), \qquad
        w = (\Phi^\top \Phi + \lambda I)^{-1} \Phi^\top G, \qquad V(s, t) = \phi(s, t)^\top w

    where the rows of :math:`\Phi` and :math:`G` are the running steps of the batch and
    :math:`G_t = \sum_{k \ge t} \gamma^{k-t} r_k` (the squares are of the clipped
    observation). As garage, the system is solved by least squares in float64 and retried
    with :math:`\lambda` ten times larger, up to five tries, while the solution is not finite
    (garage then keeps NaN coefficients; here it raises). Before the first ``fit``,
    ``predict`` gives zeros, as garage's. The authors' code predicts with the baseline fitted
    on the previous batch, then fits it on the current one.

    Args:
        reg_coeff: :math:`\lambda > 0` (default 1e-5, garage's).

    References:
        I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
        Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
        arXiv:2302.01734. Feature set and fitting: garage,
        ``garage/np/baselines/linear_feature_baseline.py``.

    Example:
        >>> obs = torch.tensor([[[3.0], [2.0], [1.0]]])   # one trajectory, the return-to-go
        >>> batch = Trajectories(obs, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3),
        ...                      torch.ones(1, 3))
        >>> baseline = LinearFeatureBaseline()
        >>> baseline.fit(batch, gamma=1.0)   # returns-to-go 3, 2, 1
        >>> baseline.predict(batch).round(decimals=3)
        tensor([[3., 2., 1.]])
    """

    def __init__(self, reg_coeff: float = 1e-5):
        self.reg_coeff = check_positive("reg_coeff", reg_coeff)
        self.coeffs: Tensor | None = None

    @staticmethod
    def features(trajectories: Trajectories) -> Tensor:
        """``(N, H, 2 obs_dim + 4)`` float64 features of every step (masked ones included)."""
        obs = trajectories.observations.double().clamp(-10.0, 10.0)
        n, horizon, _ = obs.shape
        u = (torch.arange(horizon, dtype=torch.float64) / 100).view(1, horizon, 1)
        u = u.expand(n, horizon, 1)
        return torch.cat([obs, obs ** 2, u, u ** 2, u ** 3, torch.ones_like(u)], -1)

    def fit(self, trajectories: Trajectories, gamma: float) -> None:
        """Fit the coefficients to the discounted returns-to-go of the running steps."""
        if not isinstance(trajectories, Trajectories):
            raise ValueError(f"trajectories must be a Trajectories batch, got "
                             f"{type(trajectories).__name__}")
        running = trajectories.mask > 0
        returns = _returns_to_go(trajectories.rewards.double() * running,
                                     check_unit_interval("gamma", gamma))
        phi = self.features(trajectories)[running]
        gram, target = phi.T @ phi, phi.T @ returns[running]
        reg_coeff = self.reg_coeff
        for _ in range(5):
            ridge = gram + reg_coeff * torch.eye(len(gram), dtype=gram.dtype)
            coeffs = torch.linalg.lstsq(ridge, target.unsqueeze(1)).solution.squeeze(1)
            if torch.isfinite(coeffs).all():
                self.coeffs = coeffs
                return
            reg_coeff *= 10
        raise FloatingPointError(f"LinearFeatureBaseline.fit: no finite solution with reg_coeff "
                                 f"up to {reg_coeff / 10:g}")

    def predict(self, trajectories: Trajectories) -> Tensor:
        """``(N, H)`` values :math:`V(s_t, t)` of the running steps (0 where masked), in the
        rewards' dtype; zeros before the first :meth:`fit`."""
        if not isinstance(trajectories, Trajectories):
            raise ValueError(f"trajectories must be a Trajectories batch, got "
                             f"{type(trajectories).__name__}")
        if self.coeffs is None:
            return torch.zeros_like(trajectories.rewards)
        phi = self.features(trajectories)
        if phi.shape[-1] != len(self.coeffs):
            raise ValueError(f"trajectories: observations of dimension "
                             f"{trajectories.observations.shape[-1]}, but the baseline was fit "
                             f"on dimension {(len(self.coeffs) - 4) // 2}")
        values = (phi @ self.coeffs).to(trajectories.rewards.dtype)
        return values * trajectories.mask


# -- hand-computed references for the conformance suite -----------------------------------------
def _grad(loss_fn, ps):
    ps = [p.detach().requires_grad_() for p in ps]
    return [g.detach() for g in torch.autograd.grad(loss_fn(ps), ps)]


def _normalized(ps, ds, gamma):
    norm = math.sqrt(sum(float((d * d).sum()) for d in ds))
    return [p - gamma * d / norm if norm else p.clone() for p, d in zip(ps, ds)]


def _npgigt_reference(params, loss_fn, steps, kwargs, generator):
    """The class docstring's math, literally, in float64."""
    lr, momentum = kwargs.get("lr", 0.1), kwargs.get("momentum", 1.0)
    constant = kwargs.get("schedule", "decay") == "constant"
    theta = [p.detach().double() for p in params]
    previous, d = theta, None
    for t in range(steps):
        gamma = lr if constant else lr * 2 / (t + 2)
        eta = momentum if constant else momentum * (2 / (t + 2)) ** 0.8
        point = [x + (1 - eta) / eta * (x - y) for x, y in zip(theta, previous)]
        g = _grad(loss_fn, point)
        d = g if t == 0 else [(1 - eta) * a + eta * b for a, b in zip(d, g)]
        previous, theta = theta, _normalized(theta, d, gamma)
    return theta


def _harpg_reference(params, loss_fn, steps, kwargs, generator):
    """The class docstring's math, literally, in float64, with the exact Hessian of the loss
    (the records' oracle is a deterministic loss, whose samples do not depend on theta)."""
    lr, momentum = kwargs.get("lr", 0.1), kwargs.get("momentum", 1.0)
    normalized = kwargs.get("normalized", True)
    constant = kwargs.get("schedule", "decay") == "constant"
    theta = [p.detach().double() for p in params]
    previous, d = theta, None
    for t in range(steps):
        shrink = 2 / (t + 2)
        gamma = lr if constant else lr * (shrink if normalized else math.sqrt(shrink))
        eta = momentum if constant else momentum * shrink
        g = _grad(loss_fn, theta)
        if t == 0:
            d = g
        else:
            q = float(torch.rand((), dtype=torch.float64, generator=generator))
            delta = [x - y for x, y in zip(theta, previous)]
            hat = [x.detach().requires_grad_() for x in
                   (x - (1 - q) * dx for x, dx in zip(theta, delta))]
            grads = torch.autograd.grad(loss_fn(hat), hat, create_graph=True)
            v = torch.autograd.grad(grads, hat, delta)
            d = [(1 - eta) * (a + b.detach()) + eta * c for a, b, c in zip(d, v, g)]
        step = _normalized(theta, d, gamma) if normalized else \
            [x - gamma * dx for x, dx in zip(theta, d)]
        previous, theta = theta, step
    return theta


_INVALID = (
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(momentum=0.0), ValueError, "momentum"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(schedule="cosine"), ValueError, "schedule"),
    (dict(nesterov=True), TypeError, "nesterov"),
)

register(AlgorithmInfo(
    name="NPGIGT",
    cls=NPGIGT,
    kind="optimizer",
    paper="Fatkhullin, Barakat, Kireeva & He, ICML 2023, arXiv:2302.01734",
    default_kwargs=dict(lr=1.0),   # total path sum_t 2 lr/(t+2): long enough to descend
    requires=frozenset({"closure", "backward"}),
    supports=frozenset({"global_norm",
                        "scale_invariant", "rotation_equivariant", "translation_equivariant"}),
    invalid_kwargs=_INVALID,
    reference=_npgigt_reference,
    reference_kwargs=(dict(lr=0.1), dict(lr=0.2, momentum=0.5),
                      dict(lr=0.05, momentum=0.3, schedule="constant")),
))

register(AlgorithmInfo(
    name="HARPG",
    cls=HARPG,
    kind="optimizer",
    paper="Fatkhullin, Barakat, Kireeva & He, ICML 2023, arXiv:2302.01734",
    default_kwargs=dict(lr=1.0),   # total path sum_t 2 lr/(t+2): long enough to descend
    requires=frozenset({"closure"}),
    stochastic=True,
    supports=frozenset({"global_norm"}),
    invalid_kwargs=_INVALID + ((dict(normalized="yes"), ValueError, "normalized"),),
    reference=_harpg_reference,
    reference_kwargs=(dict(lr=0.1), dict(lr=0.2, momentum=0.5),
                      dict(lr=0.05, momentum=0.3, normalized=False),
                      dict(lr=0.05, momentum=0.7, schedule="constant")),
))


def _vanilla_reference(params, grad_fn, steps, kwargs, generator):
    lr, constant = kwargs.get("lr", 0.1), kwargs.get("schedule", "decay") == "constant"
    theta = [p.detach().double() for p in params]
    for t in range(steps):
        gamma = lr if constant else lr * (2 / (t + 2)) ** (2 / 3)
        theta = [x - gamma * g.double() for x, g in zip(theta, grad_fn(theta))]
    return theta


def _nsgdm_reference(params, grad_fn, steps, kwargs, generator):
    lr, momentum = kwargs.get("lr", 0.1), kwargs.get("momentum", 1.0)
    constant = kwargs.get("schedule", "decay") == "constant"
    theta, d = [p.detach().double() for p in params], None
    for t in range(steps):
        gamma = lr if constant else lr * 2 / (t + 2)
        eta = momentum if constant else momentum * (2 / (t + 2)) ** (2 / 3)
        g = [x.double() for x in grad_fn(theta)]
        d = g if t == 0 else [(1 - eta) * a + eta * b for a, b in zip(d, g)]
        theta = _normalized(theta, d, gamma)
    return theta


register(AlgorithmInfo(
    name="VanillaPG",
    cls=VanillaPG,
    kind="optimizer",
    paper="Fatkhullin, Barakat, Kireeva & He, ICML 2023, arXiv:2302.01734 (baseline)",
    default_kwargs=dict(lr=0.2),
    supports=frozenset({"zero_grad_noop",
                        "scale_proportional", "rotation_equivariant", "translation_equivariant"}),
    invalid_kwargs=((dict(lr=-0.1), ValueError, "lr"), (dict(schedule="x"), ValueError,
                                                         "schedule"),
                    (dict(momentum=0.5), TypeError, "momentum")),
    reference=_vanilla_reference,
    reference_kwargs=(dict(lr=0.1), dict(lr=0.05, schedule="constant")),
))

register(AlgorithmInfo(
    name="NSGDM",
    cls=NSGDM,
    kind="optimizer",
    paper="Fatkhullin, Barakat, Kireeva & He, ICML 2023, arXiv:2302.01734 (baseline)",
    default_kwargs=dict(lr=1.0),
    supports=frozenset({"global_norm",
                        "scale_invariant", "rotation_equivariant", "translation_equivariant"}),
    invalid_kwargs=_INVALID,
    reference=_nsgdm_reference,
    reference_kwargs=(dict(lr=0.1), dict(lr=0.2, momentum=0.5),
                      dict(lr=0.05, momentum=0.3, schedule="constant")),
))
