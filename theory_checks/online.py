r"""Regret checks for online convex optimization in the SEA model, as runnable experiments.

The *stochastically extended adversarial* (SEA) model sits between stochastic and adversarial
online learning: in round ``t`` nature picks a distribution ``D_t``, a loss ``f_t ~ D_t`` is
drawn, and the learner, who played ``x_t`` in a convex set ``X``, suffers ``f_t(x_t)`` and sees
``grad f_t(x_t)``. With ``F_t = E f_t``, Chen, Tu, Zhao and Zhang bound the expected regret of
two-step optimistic online mirror descent (hint ``M_t = g_{t-1}``) on smooth convex losses by
``O(sqrt(sigma^2_{1:T}) + sqrt(Sigma^2_{1:T}))``, where

.. math::

    \sigma^2_{1:T} = \mathbb E \sum_{t=1}^T \sup_{x \in X}
        \mathbb E_{f_t} \|\nabla f_t(x) - \nabla F_t(x)\|^2, \qquad
    \Sigma^2_{1:T} = \mathbb E \sum_{t=1}^T \sup_{x \in X}
        \|\nabla F_t(x) - \nabla F_{t-1}(x)\|^2, \quad \nabla F_0 = 0.

* :func:`sea_quadratic` builds instances where both are known exactly: ``F_t(x) =
  ||x - c_t||^2 / 2`` on a ball, Gaussian gradient noise, and centres that stay, drift or
  switch adversarially; many independent runs in one tensor.
* :func:`regret` is the regret against the best fixed point in hindsight, in closed form.
* :func:`play_optimistic_omd` drives :class:`stochstep.optimizers.online.OptimisticOMD`
  through its optimizer API; :func:`play_ogd` is online gradient descent with
  ``eta_t = lr / sqrt(t)``, the baseline.
* :func:`sea_regret_scaling` and :func:`ogd_does_not_adapt` are the paper's claims as checks;
  ``python -m stochstep.theory_checks.online`` prints their numbers.

References:
    Chen, Tu, Zhao, Zhang. "Optimistic Online Mirror Descent for Bridging Stochastic and
    Adversarial Online Convex Optimization." ICML 2023, arXiv 2302.04552.
    Sachs, Hadiji, van Erven, Guzmán. "Between Stochastic and Adversarial Online Convex
    Optimization: Improved Regret Bounds via Smoothness." NeurIPS 2022 (the SEA model).

Example:
    >>> import torch
    >>> sea = sea_quadratic(200, dim=3, runs=4, noise=0.1,
    ...                     generator=torch.Generator().manual_seed(0))
    >>> sea.stochastic_variance                      # T d s^2, exactly
    6.000000000000001
    >>> r = regret(sea, play_ogd(sea, lr=1.0))
    >>> r.shape, bool((r > -1).all())
    (torch.Size([4]), True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochstep.optimizers.domains import Ball
from stochstep.optimizers.online import OptimisticOMD
from stochstep.stepping.checks import check_flag, check_int, check_nonnegative, check_positive
from stochstep.stepping.noise import make_generator
from stochstep.theory_checks.rates import loglog_slope

__all__ = ["SEAInstance", "sea_quadratic", "SEA_DRIFTS", "regret", "play_ogd",
           "play_optimistic_omd", "RegretScaling", "SEA_SWEEP", "sea_regret_scaling",
           "AdaptivityCheck", "ogd_does_not_adapt"]

_F64 = torch.float64

#: How the centres ``c_t`` move: they stay, walk at random, or switch between two points.
SEA_DRIFTS = ("fixed", "random_walk", "switching")


def _project_ball(x: Tensor, radius: float) -> Tensor:
    """Euclidean projection of each row (last dimension) onto the ball of ``radius`` at 0."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * (radius / norm.clamp(min=radius))


# ================================================================================ instances

@dataclass(frozen=True)
class SEAInstance:
    r"""Quadratic SEA losses, ``runs`` independent sequences of ``T`` rounds in ``R^d``.

    .. math::

        f_t(x) = \tfrac12 \|x - c_t\|^2 + \langle \xi_t, x \rangle, \qquad
        F_t(x) = \tfrac12 \|x - c_t\|^2, \qquad x \in X = \{\|x\| \le R\},

    so ``grad f_t(x) - grad F_t(x) = xi_t`` for every ``x`` and
    ``grad F_t(x) - grad F_{t-1}(x) = c_{t-1} - c_t`` for ``t >= 2``.

    Attributes:
        centres: ``c_t``, shape ``(runs, T, d)``.
        noise: ``xi_t ~ N(0, s^2 I)``, shape ``(runs, T, d)``.
        radius: ``R``.
        noise_std: ``s``.
        stochastic_variance: ``sigma^2_{1:T} = T d s^2`` (exact: ``sigma_t^2 = d s^2``).
        adversarial_variation: ``Sigma^2_{1:T}`` of each run, shape ``(runs,)``, exact given
            the centres: ``(R + ||c_1||)^2 + sum_{t>=2} ||c_t - c_{t-1}||^2``. The first term
            is the paper's convention ``grad F_0 = 0`` taken literally,
            ``sup_{x in X} ||x - c_1||^2``; it does not grow with ``T`` (it is what keeps
            ``Sigma^2_{1:T} = O(1)``, not 0, for a fixed centre).
    """

    centres: Tensor
    noise: Tensor
    radius: float
    noise_std: float
    stochastic_variance: float
    adversarial_variation: Tensor

    @property
    def runs(self) -> int:
        return self.centres.shape[0]

    @property
    def horizon(self) -> int:
        return self.centres.shape[1]

    @property
    def dim(self) -> int:
        return self.centres.shape[2]

    @property
    def path_variation(self) -> Tensor:
        """``sum_{t>=2} ||c_t - c_{t-1}||^2`` per run: ``Sigma^2_{1:T}`` without its first
        round."""
        return self.centres.diff(dim=1).pow(2).sum((1, 2))

    def grad(self, t: int, x: Tensor) -> Tensor:
        """``grad f_t(x) = x - c_t + xi_t`` at round ``t`` (0-based) for ``x`` of shape
        ``(runs, d)``."""
        return x - self.centres[:, t] + self.noise[:, t]


def sea_quadratic(horizon: int, *, dim: int = 5, runs: int = 1, radius: float = 1.0,
                  noise: float = 0.0, drift: str = "fixed", walk_step: float = 0.0,
                  period: int | None = None,
                  generator: torch.Generator | None = None) -> SEAInstance:
    r"""Sample quadratic SEA instances whose ``sigma^2_{1:T}`` and ``Sigma^2_{1:T}`` are exact.

    Every run starts from its own centre ``c_1 = (R/2) u`` with ``u`` uniform on the unit
    sphere, then (``z_t ~ N(0, I)``, all draws from ``generator``):

    .. math::

        \text{fixed: } c_t = c_1, \qquad
        \text{random\_walk: } c_{t+1} = \Pi_{\|c\| \le R}(c_t + \delta z_t), \qquad
        \text{switching: } c_t = (-1)^{\lfloor (t-1)/k \rfloor} c_1,

        \xi_t \sim N(0, s^2 I_d), \qquad \sigma^2_{1:T} = T d s^2, \qquad
        \Sigma^2_{1:T} = (R + \|c_1\|)^2 + \sum_{t=2}^T \|c_t - c_{t-1}\|^2.

    The walk is projected onto ``X`` so that the centres, hence the gradients on ``X``, stay
    bounded (``||grad F_t|| <= 2R``); ``Sigma^2`` is computed from the centres actually drawn.
    Switching every ``k`` rounds adds ``4 ||c_1||^2 = R^2`` per switch: the adversarial end.

    Args:
        horizon: ``T`` (>= 1).
        dim: ``d`` (>= 1).
        runs: independent instances (>= 1), the leading dimension of every tensor.
        radius: ``R`` (> 0).
        noise: ``s`` (>= 0).
        drift: one of :data:`SEA_DRIFTS`.
        walk_step: ``delta`` (>= 0) of ``"random_walk"``; only with that drift.
        period: ``k`` (integer >= 1) of ``"switching"``; required with it, refused otherwise.
        generator: the ``torch.Generator`` for every draw.

    Returns:
        :class:`SEAInstance`.

    References:
        Chen, Tu, Zhao, Zhang, arXiv 2302.04552 (the definitions of ``sigma`` and ``Sigma``).

    Example:
        >>> import torch
        >>> sea = sea_quadratic(6, dim=2, runs=1, drift="switching", period=2,
        ...                     generator=torch.Generator().manual_seed(0))
        >>> sea.path_variation.item()          # two switches of 4 ||c_1||^2 = R^2 each
        2.0
    """
    horizon = check_int("horizon", horizon)
    dim = check_int("dim", dim)
    runs = check_int("runs", runs)
    radius = check_positive("radius", radius)
    noise = check_nonnegative("noise", noise)
    walk_step = check_nonnegative("walk_step", walk_step)
    if drift not in SEA_DRIFTS:
        raise ValueError(f"drift must be one of {SEA_DRIFTS}, got {drift!r}")
    if walk_step and drift != "random_walk":
        raise ValueError(f"walk_step is for drift='random_walk' only, got drift={drift!r}")
    if drift == "switching":
        if period is None:
            raise ValueError("period is required with drift='switching' (an integer >= 1)")
        period = check_int("period", period)
    elif period is not None:
        raise ValueError(f"period is for drift='switching' only, got drift={drift!r}")
    generator = make_generator(generator)

    u = torch.randn(runs, dim, generator=generator, dtype=_F64)
    first = 0.5 * radius * u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
    if drift == "fixed":
        centres = first[:, None].expand(runs, horizon, dim).clone()
    elif drift == "switching":
        sign = 1.0 - 2.0 * ((torch.arange(horizon) // period) % 2).to(_F64)
        centres = first[:, None] * sign[None, :, None]
    else:
        steps = walk_step * torch.randn(runs, horizon - 1, dim, generator=generator, dtype=_F64)
        centres = torch.empty(runs, horizon, dim, dtype=_F64)
        centres[:, 0] = first
        for t in range(1, horizon):          # the projection makes the walk sequential
            centres[:, t] = _project_ball(centres[:, t - 1] + steps[:, t - 1], radius)
    xi = noise * torch.randn(runs, horizon, dim, generator=generator, dtype=_F64)
    first_round = (radius + torch.linalg.vector_norm(first, dim=1)).pow(2)
    variation = first_round + centres.diff(dim=1).pow(2).sum((1, 2))
    return SEAInstance(centres, xi, radius, noise, horizon * dim * noise**2, variation)


# =================================================================================== regret

def regret(instance: SEAInstance, plays: Tensor, *, cumulative: bool = False) -> Tensor:
    r"""Regret of the points ``plays`` against the best fixed point of ``X`` in hindsight.

    .. math::

        R_T = \sum_{t=1}^T f_t(x_t) - \min_{x \in X} \sum_{t=1}^T f_t(x), \qquad
        \sum_{t=1}^T f_t(x) = \tfrac T2 \|x - m_T\|^2 + \text{const}, \quad
        m_T = \frac1T \sum_{t=1}^T (c_t - \xi_t),

    since ``sum_t f_t(x) = (T/2)||x||^2 - <x, sum_t (c_t - xi_t)> + sum_t ||c_t||^2/2``. An
    isotropic quadratic is minimised over a convex set at the Euclidean projection of its
    centre, so the comparator is ``x* = Pi_X(m_T) = m_T min(1, R / ||m_T||)``. The constant
    ``sum_t ||c_t||^2 / 2`` cancels and is never computed.

    Args:
        instance: the losses, from :func:`sea_quadratic`.
        plays: the points ``x_t`` played, shape ``(runs, T, d)`` like ``instance.centres``.
        cumulative: return ``R_t`` for every prefix ``t = 1..T`` (each against its own best
            point in hindsight), shape ``(runs, T)``, instead of ``R_T``, shape ``(runs,)``.

    Returns:
        The regret per run (float64).

    References:
        Chen, Tu, Zhao, Zhang, arXiv 2302.04552 (the regret of the SEA model).

    Example:
        >>> import torch
        >>> sea = sea_quadratic(3, dim=1, generator=torch.Generator().manual_seed(1))
        >>> regret(sea, sea.centres).item()      # playing the centre: no regret, no noise
        0.0
    """
    if not isinstance(instance, SEAInstance):
        raise ValueError(f"instance must be an SEAInstance, got {type(instance).__name__}")
    if not isinstance(plays, Tensor) or plays.shape != instance.centres.shape:
        shape = tuple(plays.shape) if isinstance(plays, Tensor) else type(plays).__name__
        raise ValueError(f"plays must be a tensor of shape {tuple(instance.centres.shape)} "
                         f"(runs, T, d), got {shape}")
    if not torch.isfinite(plays).all():
        raise ValueError("plays must hold finite numbers (a learner diverged?)")
    cumulative = check_flag("cumulative", cumulative)
    x = plays.to(_F64)
    target = instance.centres - instance.noise                     # c_t - xi_t
    # f_t(x) - ||c_t||^2/2 = ||x||^2/2 - <x, c_t - xi_t>
    played = 0.5 * x.pow(2).sum(-1) - (x * target).sum(-1)
    if cumulative:
        played, sums = played.cumsum(1), target.cumsum(1)
        t = torch.arange(1, instance.horizon + 1, dtype=_F64)[None, :, None]
    else:
        played, sums = played.sum(1), target.sum(1)
        t = torch.tensor(float(instance.horizon), dtype=_F64)
    best = _project_ball(sums / t, instance.radius)
    best_value = 0.5 * t.squeeze(-1) * best.pow(2).sum(-1) - (best * sums).sum(-1)
    return played - best_value


# ================================================================================ learners

def play_ogd(instance: SEAInstance, lr: float, *, start: Tensor | None = None) -> Tensor:
    r"""Online (projected) gradient descent with ``eta_t = lr / sqrt(t)``, all runs at once.

    .. math::

        x_{t+1} = \Pi_X\big(x_t - \tfrac{\eta}{\sqrt t} \nabla f_t(x_t)\big), \qquad
        x_1 = \Pi_X(\text{start}) \ (0 \text{ by default}).

    Args:
        instance: the losses, from :func:`sea_quadratic`.
        lr: ``eta`` (> 0).
        start: ``x_1`` before projection, shape ``(runs, d)`` or ``(d,)``; default 0.

    Returns:
        The points played, ``(runs, T, d)``.

    References:
        Zinkevich. "Online Convex Programming and Generalized Infinitesimal Gradient Ascent."
        ICML 2003 (OGD, regret O(sqrt(T)) with 1/sqrt(t) steps); the baseline of
        Chen, Tu, Zhao, Zhang, arXiv 2302.04552.

    Example:
        >>> import torch
        >>> sea = sea_quadratic(2, dim=1, generator=torch.Generator().manual_seed(1))
        >>> x = play_ogd(sea, lr=0.5)
        >>> torch.allclose(x[:, 1], 0.5 * sea.centres[:, 0])   # x_2 = 0 - 0.5 (0 - c_1)
        True
    """
    lr = check_positive("lr", lr)
    x = _start(instance, start)
    plays = torch.empty_like(instance.centres)
    for t in range(instance.horizon):
        plays[:, t] = x
        x = _project_ball(x - lr / math.sqrt(t + 1) * instance.grad(t, x), instance.radius)
    return plays


def _start(instance: SEAInstance, start: Tensor | None) -> Tensor:
    if start is None:
        return torch.zeros(instance.runs, instance.dim, dtype=_F64)
    start = torch.as_tensor(start, dtype=_F64)
    if not torch.isfinite(start).all():
        raise ValueError(f"start must hold finite numbers, got {start.tolist()}")
    if start.shape not in ((instance.dim,), (instance.runs, instance.dim)):
        raise ValueError(f"start must have shape ({instance.dim},) or "
                         f"({instance.runs}, {instance.dim}), got {tuple(start.shape)}")
    return _project_ball(start.expand(instance.runs, instance.dim).clone(), instance.radius)


def play_optimistic_omd(instance: SEAInstance, *, lr: float | None = None,
                        diameter: float | None = None, grad_bound: float | None = None,
                        delta: float = 1.0, progress: bool = False) -> Tensor:
    r"""Play the losses with :class:`~stochstep.optimizers.online.OptimisticOMD` on the ball.

    Each run is its own parameter group (the optimizer's norms are joint over a group, so runs
    cannot share one), and each parameter is a row of one ``(runs, d)`` tensor, so one
    ``grad f_t`` evaluation serves every run. Per round, for every run:
    ``p.grad = grad f_t(x_t)``, then ``step()``, which plays ``x_{t+1}``:

    .. math::

        \hat x_{t+1} = \Pi_X(\hat x_t - \eta_t g_t), \qquad
        x_{t+1} = \Pi_X(\hat x_{t+1} - \eta_{t+1} g_t), \qquad
        \eta_t = \frac{D}{\sqrt{\delta + 4 G^2 + \sum_{s<t} \|g_s - g_{s-1}\|^2}},

    (``g_0 = 0``; or ``eta_t = lr``), from ``x_1 = x_hat_1 = 0``.

    Args:
        instance: the losses, from :func:`sea_quadratic`.
        lr: a constant step size; None (default) for the self-confident tuning above.
        diameter: ``D``; default ``2R``, the diameter of ``X``.
        grad_bound: ``G``; default ``2R``, the bound of ``||grad F_t||`` on ``X`` (the noise
            enters the step through the sum of squared gradient changes).
        delta: ``delta > 0``.
        progress: show a tqdm bar over the rounds.

    Returns:
        The points played, ``(runs, T, d)``.

    References:
        Chen, Tu, Zhao, Zhang, arXiv 2302.04552 (the algorithm and the step size).

    Example:
        >>> import torch
        >>> sea = sea_quadratic(50, dim=2, runs=2, generator=torch.Generator().manual_seed(0))
        >>> x = play_optimistic_omd(sea)
        >>> bool(torch.linalg.vector_norm(x, dim=-1).max() <= 1.0)
        True
    """
    progress = check_flag("progress", progress)
    bound = 2.0 * instance.radius
    diameter = bound if diameter is None else diameter
    grad_bound = bound if grad_bound is None else grad_bound
    x = torch.zeros(instance.runs, instance.dim, dtype=_F64)
    grads = torch.zeros_like(x)
    rows = list(x.unbind(0))                  # views: the optimizer writes into x
    for row, grad in zip(rows, grads.unbind(0)):
        row.grad = grad                       # views too: refilling grads refills every p.grad
    opt = OptimisticOMD([{"params": [row]} for row in rows], lr=lr, diameter=diameter,
                        grad_bound=grad_bound, delta=delta, domain=Ball(instance.radius))
    plays = torch.empty_like(instance.centres)
    for t in tqdm(range(instance.horizon), desc="optimistic OMD", disable=not progress):
        plays[:, t] = x
        torch.sub(x, instance.centres[:, t], out=grads).add_(instance.noise[:, t])
        opt.step()
    return plays


# ================================================================================== claims

#: Default sweep of :func:`sea_regret_scaling`: ``(T, noise, drift, period)`` points, from the
#: stochastic end (a fixed centre, rising noise) to the adversarial end (centres switching
#: every round, rising horizon), and one point with both. The noise starts at 0.1: below it
#: the bound is dominated by its first-round term ``(R + ||c_1||)^2``, which does not grow.
SEA_SWEEP = ((1000, 0.1, "fixed", None), (1000, 0.3, "fixed", None),
             (1000, 1.0, "fixed", None), (250, 0.0, "switching", 1),
             (1000, 0.0, "switching", 1), (4000, 0.0, "switching", 1),
             (1000, 0.3, "switching", 1))


@dataclass(frozen=True)
class RegretScaling:
    """Mean regret against the SEA bound over a sweep, with the log-log fit.

    Attributes:
        points: the ``(T, noise, drift, period)`` of each point.
        bounds: ``sqrt(sigma^2_{1:T}) + sqrt(Sigma^2_{1:T})`` (``Sigma^2`` averaged over runs).
        regrets: mean regret over runs.
        stderr: its standard error.
        slope: log-log slope of ``regrets`` against ``bounds``.
        intercept: the fit's intercept (natural log).
        seconds: wall-clock time of the learner's runs.
    """

    points: tuple
    bounds: Tensor
    regrets: Tensor
    stderr: Tensor
    slope: float
    intercept: float
    seconds: float


def sea_regret_scaling(points=SEA_SWEEP, *, learner: str = "optimistic_omd", runs: int = 16,
                       dim: int = 5, ogd_lr: float = 1.0,
                       generator: torch.Generator | None = None,
                       progress: bool = False) -> RegretScaling:
    r"""Regret of a learner against ``sqrt(sigma^2_{1:T}) + sqrt(Sigma^2_{1:T})`` over a sweep.

    Chen et al.: for smooth convex ``F_t``, optimistic OMD with the self-confident step has

    .. math::

        \mathbb E[R_T] = O\Big(\sqrt{\sigma^2_{1:T}} + \sqrt{\Sigma^2_{1:T}}\Big),

    so on instances where the bound is tight the log-log slope of the mean regret against it
    is 1. Online gradient descent with ``eta_t = lr / sqrt(t)`` does not adapt its step to the
    variances: on the noise sweep its regret grows like ``s^2 sqrt(T)``, a slope near 2.

    Args:
        points: ``(T, noise, drift, period)`` tuples (``period`` for ``"switching"``, else
            None), at least two; default :data:`SEA_SWEEP`.
        learner: ``"optimistic_omd"`` (:func:`play_optimistic_omd`, default tuning) or
            ``"ogd"`` (:func:`play_ogd` with ``ogd_lr``).
        runs: independent runs per point (>= 2).
        dim: ``d``.
        ogd_lr: OGD's ``eta`` (> 0).
        generator: the ``torch.Generator`` for the instances.
        progress: show a tqdm bar over the points.

    Returns:
        :class:`RegretScaling`.

    References:
        Chen, Tu, Zhao, Zhang, arXiv 2302.04552 (Theorem for convex and smooth functions).

    Example:
        >>> import torch
        >>> res = sea_regret_scaling([(200, 0.1, "fixed", None), (200, 1.0, "fixed", None)],
        ...                          runs=4, generator=torch.Generator().manual_seed(0))
        >>> 0.6 < res.slope < 1.4
        True
    """
    if learner not in ("optimistic_omd", "ogd"):
        raise ValueError(f"learner must be 'optimistic_omd' or 'ogd', got {learner!r}")
    runs = check_int("runs", runs, 2)
    ogd_lr = check_positive("ogd_lr", ogd_lr)
    progress = check_flag("progress", progress)
    points = tuple(tuple(p) for p in points)
    if len(points) < 2 or any(len(p) != 4 for p in points):
        raise ValueError(f"points must hold at least 2 (T, noise, drift, period) tuples, "
                         f"got {points!r}")
    generator = make_generator(generator)
    bounds, means, errs, seconds = [], [], [], 0.0
    for T, noise, drift, period in tqdm(points, desc=learner, disable=not progress):
        sea = sea_quadratic(T, dim=dim, runs=runs, noise=noise, drift=drift, period=period,
                            generator=generator)
        start = time.perf_counter()
        plays = play_optimistic_omd(sea) if learner == "optimistic_omd" else play_ogd(
            sea, ogd_lr)
        seconds += time.perf_counter() - start
        r = regret(sea, plays)
        bounds.append(math.sqrt(sea.stochastic_variance)
                      + sea.adversarial_variation.mean().sqrt().item())
        means.append(r.mean().item())
        errs.append(r.std().item() / math.sqrt(runs))
    if min(means) <= 0:
        raise ValueError(f"a mean regret is not > 0 ({means}); a log-log fit needs > 0 "
                         "(tracking drifting centres can beat the best fixed point)")
    fit = loglog_slope(bounds, means)
    return RegretScaling(points, torch.tensor(bounds, dtype=_F64),
                         torch.tensor(means, dtype=_F64), torch.tensor(errs, dtype=_F64),
                         fit.slope, fit.intercept, seconds)


@dataclass(frozen=True)
class AdaptivityCheck:
    """Optimistic OMD against OGD on the same instances (common random numbers).

    Attributes:
        omd: :class:`RegretScaling` of optimistic OMD over the noise sweep (fixed centre).
        ogd: the same for OGD.
        horizons: the horizons of the noiseless fixed-centre runs.
        omd_noiseless: OMD's mean regret at each of ``horizons`` (noise 0, fixed centre).
        ogd_noiseless: OGD's.
    """

    omd: RegretScaling
    ogd: RegretScaling
    horizons: tuple
    omd_noiseless: Tensor
    ogd_noiseless: Tensor


def ogd_does_not_adapt(noises=(0.1, 0.3, 1.0, 3.0), *, horizon: int = 1000,
                       horizons=(1000, 3000, 10000), runs: int = 8, dim: int = 5,
                       ogd_lr: float = 1.0, generator: torch.Generator | None = None,
                       progress: bool = False) -> AdaptivityCheck:
    r"""Optimistic OMD adapts to the noise level, OGD with ``eta_t = lr / sqrt(t)`` does not.

    On a fixed centre with noise ``s`` (``sigma^2_{1:T} = T d s^2``), OMD's self-confident
    step shrinks like ``1 / (s sqrt(t))`` and its regret grows like ``s sqrt(T)``, slope 1
    against the bound; OGD's step ignores ``s``, its iterates fluctuate by ``~ s^2 eta_t`` in
    loss, and

    .. math::

        \mathbb E[R_T^{\mathrm{OGD}}] \approx \tfrac{d s^2}{2} \sum_{t \le T}
        \frac{\eta}{\sqrt t} \approx \eta d s^2 \sqrt T,

    slope 2 against ``sqrt(sigma^2_{1:T})``. Without noise and with a fixed centre both regrets
    stay bounded in ``T`` (``Sigma^2_{1:T} = (R + ||c||)^2`` does not grow): the quadratic's
    curvature lets OGD's ``1/sqrt(t)`` steps converge too, so OGD's ``sqrt(T)`` worst case
    does not show on this family.

    Args:
        noises: noise levels ``s`` (> 0), at least two, at ``horizon`` rounds.
        horizon: ``T`` of the noise sweep.
        horizons: the ``T`` of the noiseless, fixed-centre runs.
        runs: independent runs per point (>= 2).
        dim: ``d``.
        ogd_lr: OGD's ``eta`` (> 0).
        generator: the ``torch.Generator`` for the instances.
        progress: show tqdm bars.

    Returns:
        :class:`AdaptivityCheck`.

    References:
        Chen, Tu, Zhao, Zhang, arXiv 2302.04552.

    Example:
        >>> import torch
        >>> res = ogd_does_not_adapt((0.1, 1.0), horizon=200, horizons=(100, 200), runs=2,
        ...                          generator=torch.Generator().manual_seed(0))
        >>> res.ogd.slope > res.omd.slope + 0.5
        True
    """
    horizon = check_int("horizon", horizon)
    runs = check_int("runs", runs, 2)
    horizons = tuple(check_int(f"horizons[{i}]", h) for i, h in enumerate(horizons))
    noises = tuple(check_positive(f"noises[{i}]", s) for i, s in enumerate(noises))
    generator = make_generator(generator)
    sweep = [(horizon, s, "fixed", None) for s in noises]
    state = generator.get_state()
    omd = sea_regret_scaling(sweep, runs=runs, dim=dim, generator=generator, progress=progress)
    generator.set_state(state)
    ogd = sea_regret_scaling(sweep, learner="ogd", runs=runs, dim=dim, ogd_lr=ogd_lr,
                             generator=generator, progress=progress)
    omd_flat, ogd_flat = [], []
    for T in horizons:
        sea = sea_quadratic(T, dim=dim, runs=runs, generator=generator)
        omd_flat.append(regret(sea, play_optimistic_omd(sea, progress=progress)).mean().item())
        ogd_flat.append(regret(sea, play_ogd(sea, ogd_lr)).mean().item())
    return AdaptivityCheck(omd, ogd, horizons, torch.tensor(omd_flat, dtype=_F64),
                           torch.tensor(ogd_flat, dtype=_F64))


# ============================================================================== the report

def _report() -> None:  # pragma: no cover - `python -m stochstep.theory_checks.online`
    """Print the measurements quoted in the docs."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    print("## Optimistic OMD on quadratic SEA instances (d = 5, R = 1, 32 runs)\n")
    res = sea_regret_scaling(runs=32, generator=gen, progress=True)
    print("| T | noise s | centres | sqrt(sigma^2) + sqrt(Sigma^2) | regret (mean +- se) |")
    print("|---|---|---|---|---|")
    for (T, s, drift, k), b, r, e in zip(res.points, res.bounds, res.regrets, res.stderr):
        what = drift if k is None else f"{drift} every {k}"
        print(f"| {T} | {s:g} | {what} | {b:.1f} | {r:.2f} +- {e:.2f} |")
    print(f"\nlog-log slope of the regret against the bound: {res.slope:.3f} "
          f"(target 0.8..1.2); OMD through the optimizer API: {res.seconds:.1f} s")
    for name, rows in (("stochastic points", [0, 1, 2]), ("adversarial points", [3, 4, 5])):
        fit = loglog_slope(res.bounds[rows], res.regrets[rows])
        print(f"  {name} alone: slope {fit.slope:.3f}")
    print()
    chk = ogd_does_not_adapt(runs=32, generator=gen, progress=True)
    print("## Optimistic OMD against OGD (eta_t = 1/sqrt(t)), fixed centre, T = 1000\n")
    print("| noise s | bound | OMD regret | OGD regret |\n|---|---|---|---|")
    for (T, s, _, _), b, r1, r2 in zip(chk.omd.points, chk.omd.bounds, chk.omd.regrets,
                                       chk.ogd.regrets):
        print(f"| {s:g} | {b:.1f} | {r1:.2f} | {r2:.2f} |")
    print(f"\nslopes against the bound: OMD {chk.omd.slope:.3f}, OGD {chk.ogd.slope:.3f}\n")
    print("Noiseless, fixed centre: T | OMD regret | OGD regret")
    for T, r1, r2 in zip(chk.horizons, chk.omd_noiseless, chk.ogd_noiseless):
        print(f"  {T} | {r1:.4f} | {r2:.4f}")
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":  # pragma: no cover
    _report()
