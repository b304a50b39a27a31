"""Policy-gradient optimizers: N-PG-IGT and (N-)HARPG (Fatkhullin et al., arXiv 2302.01734).

Both are single-loop stochastic methods with O(d) memory that evaluate the objective at a
point other than the current iterate: N-PG-IGT at an extrapolated point (implicit gradient
transport), HARPG at a random point of the last segment, where a Hessian-vector product
corrects the momentum direction. So the optimizer, not the training loop, moves the parameters
to that point, calls the closure there (which samples fresh data) and moves them back.

We minimize: for policy gradients the closure returns a surrogate *loss* whose negative
gradient is the policy-gradient estimate (e.g. minus GPOMDP's Phi).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from stochstep.stepping.checks import _is_real
from stochstep.stepping.optimizer import KernelOptimizer, check_lr
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["NPGIGT", "HARPG", "NSGDM", "VanillaPG", "hessian_vector_estimate"]

SCHEDULES = ("decay", "constant")


def _check_momentum(value) -> float:
    if not _is_real(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"momentum must be a number in (0, 1], got {value!r}")
    return float(value)


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
        group["momentum"] = _check_momentum(group["momentum"])
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

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One N-PG-IGT step; see the class docstring."""
        groups, params, states, rates = self._begin(closure)
        points = [p + ((1 - eta) / eta) * (p - s["previous"]) if s["step"] > 0 else p
                  for p, s, (_, eta) in zip(params, states, rates)]
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
    is :math:`\nabla^2 \bar\ell\, v`. Costs one double backward and one backward of
    ``log_prob`` with a double-backward trick for the :math:`N` inner products.
    """
    mean = loss.mean()
    grads = torch.autograd.grad(mean, params, create_graph=True, allow_unused=True)
    pairs = [(g, v) for g, v in zip(grads, vector) if g is not None and g.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if pairs:
        hvp = torch.autograd.grad([g for g, _ in pairs], params, [v for _, v in pairs],
                                  retain_graph=log_prob is not None, allow_unused=True)
        out = [o if h is None else h for o, h in zip(out, hvp)]
    if log_prob is None:
        return [o.detach() for o in out]
    # <grad log p_i, v> for every i at once: the gradient of sum_i u_i log p_i is linear in u,
    # and its inner product with v, differentiated in u, is the vector of the N products.
    u = torch.zeros_like(log_prob, requires_grad=True)
    weighted = torch.autograd.grad(log_prob, params, u, create_graph=True, allow_unused=True)
    pairs = [(w, v) for w, v in zip(weighted, vector) if w is not None]
    if not pairs:
        return [o.detach() for o in out]
    (products,) = torch.autograd.grad([w for w, _ in pairs], u, [v for _, v in pairs])
    score = torch.autograd.grad(loss, params, products / loss.numel(), allow_unused=True)
    return [(o + s if s is not None else o).detach() for o, s in zip(out, score)]


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
        if not isinstance(normalized, bool):
            raise ValueError(f"normalized must be True or False, got {normalized!r}")
        self.normalized = normalized
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
    code): :math:`	heta_{t+1} = 	heta_t - \gamma_t g_t` with
    :math:`\gamma_t = \mathrm{lr}\,(2/(t+2))^{2/3}` (``schedule="decay"``) or
    :math:`\mathrm{lr}` (``"constant"``); ``g`` is ``.grad``.

    .. math::
        	heta_{t+1} = 	heta_t - \mathrm{lr}\,\Bigl(rac{2}{t+2}\Bigr)^{2/3} g_t

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
        	heta_{t+1} = 	heta_t - \gamma_t\, d_t / \lVert d_t
Vert

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
    supports=frozenset({"global_norm"}),
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
    supports=frozenset({"zero_grad_noop"}),
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
    supports=frozenset({"global_norm"}),
    invalid_kwargs=_INVALID,
    reference=_nsgdm_reference,
    reference_kwargs=(dict(lr=0.1), dict(lr=0.2, momentum=0.5),
                      dict(lr=0.05, momentum=0.3, schedule="constant")),
))
