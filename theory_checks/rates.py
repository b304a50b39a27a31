r"""Rate fits and two of the papers' rate claims as runnable experiments.

* :func:`loglog_slope` fits ``y = C x^s`` by least squares on ``(log x, log y)``.
* :func:`perceptron_temperature` trains a teacher-student perceptron with the hinge loss by
  SGD at several ``(lr, batch_size)`` pairs, many runs at once, and measures the training time
  ``t* = lr x steps`` to zero training loss and the final weights. It is the perceptron
  experiment of Sclocchi, Geiger and Wyart: SGD noise acts through the temperature
  ``T = lr / B`` alone, and above a crossover ``T_c`` it lengthens training, ``t* ~ T P^b``,
  and grows the weights, ``||w|| ~ T P^gamma``, with exponents set by the density of data near
  the decision boundary. (Their ``T_c ~ P^-a`` is a deep-network finding; in this perceptron
  at fixed ``d`` the measured ``T_c`` grows slowly with ``P``: ``python -m theory_checks.rates``
  prints the numbers.)
* :func:`last_iterate_gap` measures ``E f(x_T) - f*`` of the *last* SGD iterate against the
  horizon ``T`` for the step-size schedules of Liu and Zhou's last-iterate analysis, on
  unconstrained problems with Gaussian (unbounded) gradient noise, and fits the log-log slope;
  the iterates are :class:`~stochstep.optimizers.online.CSMD` steps.

References:
    Sclocchi, Geiger, Wyart. "Dissecting the Effects of SGD Noise in Distinct Regimes of Deep
    Learning." ICML 2023, arXiv 2301.13703.
    Sclocchi, Wyart. "On the different regimes of stochastic gradient descent." PNAS 2024,
    arXiv 2309.10688.
    Liu, Zhou. "Revisiting the Last-Iterate Convergence of Stochastic Gradient Methods."
    ICLR 2024, arXiv 2312.08531.

Example:
    >>> import torch
    >>> fit = loglog_slope([1.0, 10.0, 100.0], [3.0, 0.3, 0.03])
    >>> round(fit.slope, 6), round(fit.intercept, 6)
    (-1.0, 1.098612)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochstep.optimizers.online import CSMD
from stochstep.stepping.checks import (check_flag, check_int, check_nonnegative, check_positive,
                                       check_real)
from stochstep.stepping.noise import make_generator

__all__ = ["PowerLawFit", "loglog_slope", "TemperatureSweep", "perceptron_temperature",
           "StochasticProblem", "l1_problem", "least_squares_problem", "LastIterateGaps",
           "last_iterate_gap", "STEP_SCHEDULES"]

_F64 = torch.float64


# ============================================================================ log-log fits

class PowerLawFit(NamedTuple):
    """``log y = slope * log x + intercept`` (so ``y = exp(intercept) x^slope``)."""

    slope: float
    intercept: float


def _positive_vector(name: str, values) -> Tensor:
    try:
        t = torch.as_tensor(values, dtype=_F64).detach().flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a sequence of finite numbers > 0, "
                         f"got {type(values).__name__}") from None
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must hold finite numbers > 0, got {t.tolist()}")
    return t


def loglog_slope(x, y) -> PowerLawFit:
    r"""Least-squares fit of a power law ``y = C x^s`` on logarithmic axes.

    .. math::

        (s, b) = \arg\min_{s, b} \sum_i (\log y_i - s \log x_i - b)^2, \qquad
        s = \frac{\sum_i (u_i - \bar u)(v_i - \bar v)}{\sum_i (u_i - \bar u)^2},
        \quad b = \bar v - s \bar u,

    with ``u = log x``, ``v = log y`` (natural logarithms, so ``C = exp(b)``).

    Args:
        x: the abscissae, finite and > 0 (a sequence or a tensor); at least two distinct values.
        y: the ordinates, finite and > 0, as many as ``x``.

    Returns:
        :class:`PowerLawFit` ``(slope, intercept)``; it unpacks as a pair.

    Example:
        >>> s, b = loglog_slope([1e2, 1e3, 1e4], [0.70, 0.22, 0.071])
        >>> round(s, 3)
        -0.497
    """
    u, v = _positive_vector("x", x), _positive_vector("y", y)
    if u.numel() != v.numel():
        raise ValueError(f"x and y must have the same length, got {u.numel()} and {v.numel()}")
    if u.numel() < 2:
        raise ValueError(f"x and y need at least 2 points, got {u.numel()}")
    u, v = u.log(), v.log()
    du = u - u.mean()
    sxx = (du * du).sum()
    if sxx <= 0:
        raise ValueError("x must hold at least two distinct values")
    slope = (du * (v - v.mean())).sum() / sxx
    return PowerLawFit(slope.item(), (v.mean() - slope * u.mean()).item())


def _slope_stderr(x: Tensor, rel_err: Tensor) -> float:
    """Delta-method standard error of the log-log slope when log y_i has standard error
    ``rel_err_i`` (independent points)."""
    u = x.log()
    du = u - u.mean()
    w = du / (du * du).sum()
    return (w.pow(2) * rel_err.pow(2)).sum().sqrt().item()


# ============================================================ SGD temperature: perceptron

@dataclass(frozen=True)
class TemperatureSweep:
    """Perceptron runs of :func:`perceptron_temperature`.

    Per-run tensors have shape ``(pairs, runs)``: row ``k`` is the pair
    ``(lrs[k], batch_sizes[k])``, column ``j`` the ``j``-th data set (all pairs of a column see
    the same training set). A run that did not reach zero loss within ``max_steps`` has
    ``converged`` False and ``nan`` in ``train_time``, ``steps``, ``weight_norm`` and
    ``alignment`` (its ``weights`` are where it stopped).

    Attributes:
        lrs: the pairs' learning rates, ``(pairs,)``.
        batch_sizes: the pairs' batch sizes, ``(pairs,)``.
        train_time: ``t* = lr x steps`` to zero hinge loss.
        steps: SGD steps to zero hinge loss.
        weight_norm: ``||w||`` at ``t*``.
        alignment: ``w . w* / ||w|| = w_1 / ||w||`` at ``t*`` (cosine with the teacher).
        converged: bool.
        weights: the final ``w``, ``(pairs, runs, dim)``.
        inputs: the training sets' points, ``(runs, P, dim)``.
        labels: the training sets' labels, ``(runs, P)``.
    """

    lrs: Tensor
    batch_sizes: Tensor
    train_time: Tensor
    steps: Tensor
    weight_norm: Tensor
    alignment: Tensor
    converged: Tensor
    weights: Tensor
    inputs: Tensor
    labels: Tensor

    @property
    def temperature(self) -> Tensor:
        """``T = lr / B`` per pair."""
        return self.lrs / self.batch_sizes

    def mean(self, name: str = "train_time") -> Tensor:
        """Mean over runs of ``name`` per pair (nan if any run of the pair did not converge)."""
        return getattr(self, name).mean(1)

    def stderr(self, name: str = "train_time") -> Tensor:
        """Standard error of :meth:`mean` (nan for a single run)."""
        v = getattr(self, name)
        return v.std(1) / math.sqrt(v.shape[1]) if v.shape[1] > 1 else torch.full_like(
            v[:, 0], math.nan)


def _perceptron_data(train_size: int, dim: int, chi: float, generator: torch.Generator):
    """x in R^dim, teacher e_1, y = sign(x_1); x_1 has density ~ |x_1|^chi exp(-x_1^2/2)."""
    x = torch.randn(train_size, dim, generator=generator, dtype=_F64)
    if chi != 0.0:
        from scipy.special import gammaincinv

        # |x_1|^2 / 2 ~ Gamma((1 + chi)/2): inverse-CDF transform of uniforms from `generator`.
        u = torch.rand(train_size, generator=generator, dtype=_F64).clamp_(1e-300, 1.0)
        r = torch.as_tensor(gammaincinv((1.0 + chi) / 2, u.numpy()), dtype=_F64)
        x[:, 0] = x[:, 0].sign() * (2 * r).sqrt()
    y = torch.where(x[:, 0] >= 0, 1.0, -1.0).to(_F64)
    return x, y


def _sgd_runs(gram: Tensor, data_of_run: Tensor, lr: Tensor, batch: Tensor, margin: float,
              max_steps: float, generator: torch.Generator, bar) -> tuple[Tensor, Tensor]:
    """Event-driven SGD on the hinge loss, all runs in lockstep.

    Works on the margins ``m_i = y_i w . x_i / sqrt(d) = (G c)_i`` and the coefficients ``c``
    of ``w = X^T (y * c) / sqrt(d)`` (w_0 = 0), so a step costs O(B P) per run. A batch with no
    point of positive loss leaves the state unchanged; the number of such steps before the next
    useful batch is geometric, and the number K >= 1 of positive-loss points in that batch is
    hypergeometric conditioned on K >= 1, so both are drawn directly (exact in distribution).
    With ``batch`` None the runs are full-batch gradient descent. Returns (steps, c), with
    steps = inf for runs that hit ``max_steps``.
    """
    n_runs, P = lr.numel(), gram.shape[-1]
    full = batch is None
    if not full:
        bmax = int(batch.max())
        # the hypergeometric support k = 1..bmax, and log k!
        k = torch.arange(1, bmax + 1)
        kf = k.to(_F64)
        lg_k1 = torch.lgamma(kf + 1)
        j = torch.arange(bmax, dtype=_F64)
        scale, b = lr / batch, batch.to(_F64)
    else:
        scale = lr / P
    m = torch.zeros(n_runs, P, dtype=_F64)
    c = torch.zeros(n_runs, P, dtype=_F64)
    steps = torch.zeros(n_runs, dtype=_F64)
    out_steps = torch.full((n_runs,), math.inf, dtype=_F64)
    out_c = torch.zeros(n_runs, P, dtype=_F64)
    live, data = torch.arange(n_runs), data_of_run
    gram_rows = gram.reshape(-1, P)
    while True:
        active = m < margin
        na = active.sum(1)
        finished = (na == 0) | (steps >= max_steps)
        if finished.any():
            done = live[finished]
            ok = (na[finished] == 0) & (steps[finished] <= max_steps)
            out_steps[done] = torch.where(ok, steps[finished], math.inf)
            out_c[done] = c[finished]
            bar.update(int(finished.sum()))
            keep = ~finished
            live, m, c, steps, active, na, scale, data = (
                live[keep], m[keep], c[keep], steps[keep], active[keep], na[keep], scale[keep],
                data[keep])
            if not full:
                b = b[keep]
            if not live.numel():
                break
        if full:
            upd = active * scale[:, None]
            c += upd
            for d in data.unique().tolist():
                rows = (data == d).nonzero()[:, 0]
                m[rows] += upd[rows] @ gram[d]
            steps += 1
            continue
        R = live.numel()
        # idle steps: P(batch holds no positive-loss point) = prod_{j<B} (1 - na/(P - j)).
        log_p0 = (torch.log1p(-(na[:, None] / (P - j)).clamp(max=1.0)) * (j < b[:, None])).sum(1)
        u = 1.0 - torch.rand(R, generator=generator, dtype=_F64)
        steps += torch.nan_to_num(torch.floor(u.log() / log_p0), nan=0.0, posinf=max_steps) + 1
        # K ~ Hypergeometric(P, na, B) given K >= 1: weights C(na, k) C(P - na, B - k).
        if bmax == 1:
            K = torch.ones(R, dtype=torch.long)
        else:
            n1 = na[:, None].to(_F64)
            n2, r2 = P - n1, b[:, None] - kf
            ok = (kf <= n1) & (r2 >= 0) & (r2 <= n2)
            lg = torch.lgamma
            logw = (lg(n1 + 1) - lg_k1 - lg((n1 - kf).clamp_(min=0) + 1) + lg(n2 + 1)
                    - lg(r2.clamp(min=0) + 1) - lg((n2 - r2).clamp_(min=0) + 1))
            logw = logw.masked_fill_(~ok, -math.inf)
            K = torch.multinomial((logw - logw.amax(1, keepdim=True)).exp_(), 1,
                                  generator=generator)[:, 0] + 1
        # K positive-loss points, uniformly without replacement.
        keys = torch.rand(R, P, generator=generator, dtype=_F64).masked_fill_(~active, -1.0)
        idx = keys.topk(bmax, dim=1).indices
        wgt = (k[None, :] <= K[:, None]) * scale[:, None]
        c.scatter_add_(1, idx, wgt)
        rows = gram_rows.index_select(0, (data[:, None] * P + idx).flatten())
        m += torch.bmm(wgt[:, None, :], rows.view(R, bmax, P))[:, 0]
    return out_steps, out_c


def perceptron_temperature(lrs: Sequence[float], batch_sizes: Sequence[int], *,
                           train_size: int, dim: int, runs: int = 1, margin: float = 1.0,
                           chi: float = 0.0, max_steps: int = 10**8,
                           generator: torch.Generator | None = None,
                           progress: bool = False) -> TemperatureSweep:
    r"""Train a teacher-student perceptron with the hinge loss by SGD at each ``(lr, B)`` pair
    and measure the training time and the final weights.

    Data: ``P = train_size`` points ``x`` in ``R^dim``, standard Gaussian except the teacher
    coordinate ``x_1``, whose density is proportional to ``|x_1|^chi exp(-x_1^2 / 2)``
    (``chi = 0``: Gaussian; larger ``chi`` puts fewer points near the decision boundary);
    labels ``y = sign(x_1)`` (teacher ``w* = e_1``). Model, loss and SGD (``w_0 = 0``):

    .. math::

        f(w, x) = \frac{w \cdot x}{\sqrt{d}}, \qquad
        L(w) = \frac1P \sum_{i=1}^P \max(0, \kappa - y_i f(w, x_i)),

        w_{k+1} = w_k + \frac{\eta}{B} \sum_{i \in \mathcal B_k}
                  1\{y_i f(w_k, x_i) < \kappa\} \frac{y_i x_i}{\sqrt d},
        \qquad t^* = \eta \, \min\{k : L(w_k) = 0\},

    with each batch ``B_k`` drawn uniformly without replacement, independently across steps.
    The temperature is ``T = lr / B``. The simulation is event driven (steps whose batch holds
    no point of positive loss are skipped in one geometric draw, which is exact in
    distribution), so its cost is set by the number of useful steps, not by ``t* / lr``.

    Args:
        lrs: learning rates ``eta`` (> 0), one per pair.
        batch_sizes: batch sizes ``B`` (integers in ``[1, P]``), as many as ``lrs``;
            ``B = P`` is full-batch gradient descent (no noise).
        train_size: ``P``.
        dim: ``d`` (>= 2).
        runs: independent data sets; every pair is trained on each (common random numbers
            across pairs), with its own SGD noise.
        margin: ``kappa > 0``. Results scale exactly: ``t*(T, kappa) = kappa t*(T / kappa, 1)``.
        chi: the data exponent (> -1).
        max_steps: SGD-step budget per run; a run past it is reported as not converged.
        generator: the ``torch.Generator`` for the data and the batches.
        progress: show a tqdm bar over finished runs.

    Returns:
        :class:`TemperatureSweep` with ``(pairs, runs)`` tensors.

    References:
        Sclocchi, Geiger, Wyart, arXiv 2301.13703 (t* ~ T P^b, with b set by the data
        density near the boundary; the crossover T_c ~ P^-a is their deep-network finding);
        Sclocchi, Wyart, arXiv 2309.10688 (the same perceptron, ||w|| ~ T P^(1/(1+chi))).

    Example:
        >>> import torch
        >>> sweep = perceptron_temperature([0.5, 2.0], [1, 4], train_size=32, dim=4,
        ...                                runs=2, generator=torch.Generator().manual_seed(0))
        >>> sweep.temperature.tolist(), bool(sweep.converged.all())
        ([0.5, 0.5], True)
    """
    P = check_int("train_size", train_size, 2)
    d = check_int("dim", dim, 2)
    runs = check_int("runs", runs)
    margin = check_positive("margin", margin)
    max_steps = check_int("max_steps", max_steps)
    progress = check_flag("progress", progress)
    if isinstance(chi, bool) or not isinstance(chi, (int, float)) or not math.isfinite(chi) \
            or chi <= -1:
        raise ValueError(f"chi must be a finite number > -1, got {chi!r}")
    lrs = [check_positive(f"lrs[{i}]", v) for i, v in enumerate(lrs)]
    batch_sizes = [check_int(f"batch_sizes[{i}]", b) for i, b in enumerate(batch_sizes)]
    if not lrs or len(lrs) != len(batch_sizes):
        raise ValueError(f"lrs and batch_sizes must be non-empty and of the same length, got "
                         f"{len(lrs)} and {len(batch_sizes)}")
    if max(batch_sizes) > P:
        raise ValueError(f"batch_sizes must be <= train_size = {P}, got {max(batch_sizes)}")
    generator = make_generator(generator)

    xs, ys, grams = [], [], []
    for _ in range(runs):
        x, y = _perceptron_data(P, d, float(chi), generator)
        xs.append(x)
        ys.append(y)
        grams.append((y[:, None] * y[None, :]) * (x @ x.T) / d)
    X, Y, gram = torch.stack(xs), torch.stack(ys), torch.stack(grams)

    n_pairs = len(lrs)
    steps = torch.empty(n_pairs, runs, dtype=_F64)
    coef = torch.empty(n_pairs, runs, P, dtype=_F64)
    with tqdm(total=n_pairs * runs, desc="perceptron SGD", disable=not progress) as bar:
        for full in (False, True):  # minibatch runs in lockstep, then full-batch ones
            pairs = [i for i, b in enumerate(batch_sizes) if (b == P) == full]
            if not pairs:
                continue
            lr = torch.tensor([lrs[i] for i in pairs], dtype=_F64).repeat_interleave(runs)
            batch = None if full else torch.tensor(
                [batch_sizes[i] for i in pairs]).repeat_interleave(runs)
            data = torch.arange(runs).repeat(len(pairs))
            s, c = _sgd_runs(gram, data, lr, batch, margin, float(max_steps), generator, bar)
            steps[pairs] = s.view(len(pairs), runs)
            coef[pairs] = c.view(len(pairs), runs, P)

    converged = torch.isfinite(steps)
    lr_t = torch.tensor(lrs, dtype=_F64)
    # w = X^T (y * c) / sqrt(d), the teacher is e_1.
    weights = torch.einsum("krp,rpi->kri", coef * Y, X) / math.sqrt(d)
    norm = weights.norm(dim=-1)
    nan = torch.tensor(math.nan, dtype=_F64)
    return TemperatureSweep(
        lrs=lr_t, batch_sizes=torch.tensor(batch_sizes, dtype=_F64),
        train_time=torch.where(converged, lr_t[:, None] * steps, nan),
        steps=torch.where(converged, steps, nan),
        weight_norm=torch.where(converged, norm, nan),
        alignment=torch.where(converged, weights[..., 0] / norm, nan),
        converged=converged, weights=weights, inputs=X, labels=Y)


# ========================================================= last iterate of SGD vs horizon

class StochasticProblem(NamedTuple):
    """An unconstrained convex problem with a Gaussian-noise gradient oracle.

    ``value`` and ``grad`` act on the last dimension of a batch ``(..., dim)``; the oracle
    returns ``grad(x) + noise * xi`` with ``xi ~ N(0, I)`` (unbounded noise).
    ``lipschitz``/``smoothness``/``mu`` describe ``f`` (``inf``/``0`` when they do not apply).
    """

    name: str
    x0: Tensor
    value: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]
    noise: float
    f_star: float
    lipschitz: float
    smoothness: float
    mu: float


def l1_problem(dim: int = 10, *, noise: float = 1.0, start: float = 1.0) -> StochasticProblem:
    r"""``f(x) = ||x||_1`` on ``R^dim`` (Lipschitz, not smooth, minimum 0 at 0), started at
    ``x_0 = start * 1``, with subgradient ``sign(x)`` plus ``N(0, noise^2 I)`` noise.

    .. math::

        f(x) = \sum_{k=1}^{d} |x_k|, \qquad g(x) = \mathrm{sign}(x) + \sigma \xi,
        \quad \xi \sim N(0, I_d).

    Args:
        dim: ``d``.
        noise: ``sigma >= 0``.
        start: the value of every coordinate of ``x_0``.

    Example:
        >>> import torch
        >>> p = l1_problem(3, noise=0.5)
        >>> p.value(p.x0).item(), p.f_star, p.lipschitz == 3 ** 0.5
        (3.0, 0.0, True)
    """
    dim = check_int("dim", dim)
    noise = check_nonnegative("noise", noise)
    start = check_real("start", start)
    return StochasticProblem(
        name="l1", x0=torch.full((dim,), start, dtype=_F64),
        value=lambda x: x.abs().sum(-1), grad=torch.sign, noise=noise, f_star=0.0,
        lipschitz=math.sqrt(dim), smoothness=math.inf, mu=0.0)


def least_squares_problem(dim: int = 10, *, noise: float = 1.0, mu: float = 0.0,
                          start: float = 1.0) -> StochasticProblem:
    r"""Noisy least squares ``f(x) = ||A x||^2 / 2`` with ``A = diag(sqrt(lambda))`` on
    ``R^dim`` (smooth, ``L = 1``, minimum 0 at 0), started at ``x_0 = start * 1``.

    With ``mu = 0`` the curvatures are ``lambda_k = 1/k^2`` (``k = 1..dim``), a convex problem
    whose small curvatures keep it out of the strongly convex regime over practical horizons;
    with ``mu > 0`` they are log-spaced in ``[mu, 1]`` (``mu``-strongly convex; ``dim = 1``:
    the single curvature ``mu``).

    .. math::

        f(x) = \frac12 \sum_{k=1}^{d} \lambda_k x_k^2, \qquad
        g(x) = \Lambda x + \sigma \xi, \quad \xi \sim N(0, I_d).

    Args:
        dim: ``d``.
        noise: ``sigma >= 0``.
        mu: strong-convexity constant in ``[0, 1]`` (0: the ``1/k^2`` spectrum).
        start: the value of every coordinate of ``x_0``.

    Example:
        >>> p = least_squares_problem(4, mu=0.25)
        >>> round(p.value(p.x0).item(), 4), p.mu, p.smoothness
        (1.1384, 0.25, 1.0)
    """
    dim = check_int("dim", dim)
    noise = check_nonnegative("noise", noise)
    mu = check_nonnegative("mu", mu)
    if mu > 1:
        raise ValueError(f"mu must be in [0, 1], got {mu!r}")
    start = check_real("start", start)
    if mu > 0:
        lam = torch.logspace(math.log10(mu), 0.0, dim, dtype=_F64)
        lam[0] = mu                                   # exact ends (dim = 1: just mu)
        if dim > 1:
            lam[-1] = 1.0
        mu_eff = mu
    else:
        lam = torch.arange(1, dim + 1, dtype=_F64).pow(-2.0)
        mu_eff = 0.0
    return StochasticProblem(
        name="least_squares", x0=torch.full((dim,), start, dtype=_F64),
        value=lambda x: 0.5 * (lam * x * x).sum(-1), grad=lambda x: lam * x, noise=noise,
        f_star=0.0, lipschitz=math.inf, smoothness=lam.max().item(), mu=mu_eff)


#: Built-in step-size schedules: ``rule(t, T, lr) -> eta_t`` for steps ``t = 1..T``, with ``t``
#: and ``T`` float64 tensors that broadcast against each other. :func:`last_iterate_gap` runs
#: them as CSMD's ``"constant"``, ``"sqrt_t"``, ``"linear_decay"`` and ``"inv_t"`` (mu = 1).
STEP_SCHEDULES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "constant": lambda t, T, lr: lr / T.sqrt() + 0 * t,         # lr / sqrt(T), horizon-aware
    "sqrt": lambda t, T, lr: lr / t.sqrt() + 0 * T,             # lr / sqrt(t), anytime
    "linear": lambda t, T, lr: lr * (1 - (t - 1) / T) / T.sqrt(),  # linear decay to lr/T^1.5
    "inverse": lambda t, T, lr: lr / t + 0 * T,                 # lr / t, anytime
}


# The same schedules as CSMD options (stochstep.optimizers.online.CSMD runs them).
_CSMD_SCHEDULES = {"constant": dict(schedule="constant"), "sqrt": dict(schedule="sqrt_t"),
                   "linear": dict(schedule="linear_decay"),
                   "inverse": dict(schedule="inv_t", strong_convexity=1.0)}


class LastIterateGaps(NamedTuple):
    """``gaps[h]`` = mean over runs of ``f(x_T) - f*`` at ``T = horizons[h]``, its standard
    error, and the log-log fit ``gap ~ exp(intercept) T^slope`` with the slope's delta-method
    standard error (from the per-horizon standard errors)."""

    horizons: Tensor
    gaps: Tensor
    stderr: Tensor
    slope: float
    intercept: float
    slope_stderr: float


def last_iterate_gap(problem: StochasticProblem | str,
                     schedule: str | Callable[[Tensor, Tensor], Tensor],
                     horizons: Sequence[int], *, runs: int, generator: torch.Generator | None,
                     lr: float = 1.0, progress: bool = False) -> LastIterateGaps:
    r"""Optimality gap of the last SGD (CSMD) iterate against the horizon ``T``, with a log-log
    fit.

    For each horizon ``T`` (runs of all horizons advance together), from ``x_0``:

    .. math::

        x_{t} = x_{t-1} - \eta_t \, (\nabla f(x_{t-1}) + \sigma \xi_t), \quad t = 1..T,
        \qquad \mathrm{gap}(T) = \mathbb E[f(x_T)] - f^\star,

    with the schedules ``"constant"`` ``eta_t = lr / sqrt(T)``, ``"sqrt"``
    ``eta_t = lr / sqrt(t)``, ``"linear"`` ``eta_t = lr (1 - (t - 1)/T) / sqrt(T)`` and
    ``"inverse"`` ``eta_t = lr / t``, or a callable ``schedule(t, T) -> eta_t`` (called once,
    with float64 tensors ``t`` of shape ``(1, max T)`` and ``T`` of shape ``(horizons, 1)``;
    its result is multiplied by ``lr``). The expectation is a mean over ``runs`` independent runs.
    Liu and Zhou bound the gap by ``O(log T / sqrt(T))`` for Lipschitz convex ``f``, by
    ``O(1/T + sigma log T / sqrt(T))`` for smooth convex ``f``, and by ``O(log T / T)`` for
    strongly convex ``f`` with ``eta_t ~ 1/(mu t)``, on unbounded domains with unbounded noise;
    these are upper bounds, and a given problem may do better (no log factor here).

    Args:
        problem: a :class:`StochasticProblem`, or ``"l1"`` (:func:`l1_problem`),
            ``"least_squares"`` or ``"strongly_convex_least_squares"``
            (:func:`least_squares_problem` with ``mu = 0`` / ``mu = 0.5``), default sizes.
        schedule: a name from :data:`STEP_SCHEDULES` or a callable.
        horizons: at least two distinct integers ``T >= 1``.
        runs: independent runs per horizon (>= 2).
        generator: the ``torch.Generator`` for the noise.
        lr: the step-size scale (> 0).
        progress: show a tqdm bar over the steps.

    Returns:
        :class:`LastIterateGaps`.

    References:
        Liu, Zhou. "Revisiting the Last-Iterate Convergence of Stochastic Gradient Methods."
        arXiv 2312.08531.

    Example:
        >>> import torch
        >>> res = last_iterate_gap("l1", "constant", [100, 400, 1600], runs=100,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> -0.65 < res.slope < -0.35
        True
    """
    if isinstance(problem, str):
        makers = {"l1": lambda: l1_problem(),
                  "least_squares": lambda: least_squares_problem(),
                  "strongly_convex_least_squares": lambda: least_squares_problem(mu=0.5)}
        if problem not in makers:
            raise ValueError(f"problem must be a StochasticProblem or one of {sorted(makers)}, "
                             f"got {problem!r}")
        problem = makers[problem]()
    elif not isinstance(problem, StochasticProblem):
        raise ValueError(f"problem must be a StochasticProblem or a name, "
                         f"got {type(problem).__name__}")
    if isinstance(schedule, str):
        if schedule not in STEP_SCHEDULES:
            raise ValueError(f"schedule must be a callable or one of {sorted(STEP_SCHEDULES)}, "
                             f"got {schedule!r}")
        named = _CSMD_SCHEDULES[schedule]
    elif callable(schedule):
        named = None

        def rule(t, T, lr):
            return lr * torch.as_tensor(schedule(t, T), dtype=_F64)
    else:
        raise ValueError(f"schedule must be a callable or one of {sorted(STEP_SCHEDULES)}, "
                         f"got {type(schedule).__name__}")
    horizons = [check_int(f"horizons[{i}]", h) for i, h in enumerate(horizons)]
    if len(set(horizons)) < 2:
        raise ValueError(f"horizons must hold at least 2 distinct values, got {horizons}")
    runs = check_int("runs", runs, 2)
    lr = check_positive("lr", lr)
    progress = check_flag("progress", progress)
    generator = make_generator(generator)

    T = torch.tensor(horizons, dtype=_F64)
    H, d, t_max = len(horizons), problem.x0.numel(), max(horizons)
    if named is None:
        t = torch.arange(1, t_max + 1, dtype=_F64)[None, :]
        eta = torch.broadcast_to(rule(t, T[:, None], lr), (H, t_max))
        if not torch.isfinite(eta).all() or (eta < 0).any():
            raise ValueError("schedule must give finite step sizes >= 0")
    # One CSMD param group per horizon (the known-horizon schedules differ by T); within a
    # group the runs are the rows of one parameter, which is exact because CSMD without a
    # domain or prox acts on each coordinate alone. The groups are slices of one tensor x, and
    # their gradients slices of one tensor g, so the oracle is one call per step for all.
    x = problem.x0.expand(H, runs, d).clone()
    g = torch.zeros_like(x)
    params = list(x.unbind(0))
    groups = [{"params": [p], "horizon": h} for p, h in zip(params, horizons)]
    if named is None:      # a callable: CSMD's lr / sqrt(T) with lr = eta_t sqrt(T) each step
        opt = CSMD(groups, lr=lr, schedule="constant", horizon=t_max)
    else:
        opt = CSMD(groups, lr=lr, horizon=t_max, **named)
    sigma = problem.noise
    for k in tqdm(range(t_max), desc="last iterate", disable=not progress):
        g.copy_(problem.grad(x))
        if sigma > 0:
            g.add_(torch.randn(x.shape, generator=generator, dtype=_F64), alpha=sigma)
        for h, (p, group) in enumerate(zip(params, opt.param_groups)):
            p.grad = g[h] if k < horizons[h] else None       # horizon h stops after T_h steps
            if named is None:
                group["lr"] = eta[h, k].item() * math.sqrt(horizons[h])
        opt.step()
    gap = problem.value(x) - problem.f_star                       # (H, runs)
    if not torch.isfinite(gap).all():
        raise FloatingPointError("the iterates diverged; lower lr")
    mean, err = gap.mean(1), gap.std(1) / math.sqrt(runs)
    if (mean <= 0).any():
        raise ValueError(f"a mean gap is not > 0 ({mean.tolist()}); a log-log fit needs > 0")
    fit = loglog_slope(T, mean)
    return LastIterateGaps(T, mean, err, fit.slope, fit.intercept,
                           _slope_stderr(T, err / mean))


# ============================================================================ the report

def _report() -> None:  # pragma: no cover - `python -m theory_checks.rates` prints the tables
    """Print the measurements quoted in the docs (about a minute on one CPU thread)."""
    import time

    torch.set_num_threads(1)
    start = time.perf_counter()
    gen = torch.Generator
    print("## SGD temperature (perceptron, hinge loss, d = 16)\n")
    pairs = [(1.0, 1), (2.0, 2), (4.0, 4), (4.0, 1), (10.0, 1), (20.0, 2), (40.0, 4)]
    s = perceptron_temperature([p[0] for p in pairs], [p[1] for p in pairs], train_size=64,
                               dim=16, runs=256, generator=gen().manual_seed(1))
    print("P = 64, 256 data sets:\n\n| lr | B | T | t* | ‖w‖ |\n|---|---|---|---|---|")
    for (lr, b), t, w in zip(pairs, s.mean(), s.mean("weight_norm")):
        print(f"| {lr:g} | {b} | {lr / b:g} | {t:.0f} | {w:.2f} |")
    Ts, B = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0], 2
    print("\nt* and ‖w‖ against T (B = 2; GD = full batch, lr = 0.05 P), 64 data sets:\n")
    print("| P | GD t* | GD ‖w‖ | t*/t*_GD at T = " + ", ".join(f"{T:g}" for T in Ts)
          + " | slope of t* - t*_GD, ‖w‖ - ‖w‖_GD (T 10..100) | T_c (‖w‖ = 2 ‖w‖_GD) |")
    print("|---|---|---|---|---|---|")
    for P in (32, 64, 128):
        s = perceptron_temperature([T * B for T in Ts] + [0.05 * P], [B] * len(Ts) + [P],
                                   train_size=P, dim=16, runs=64, generator=gen().manual_seed(P))
        t, w = s.mean(), s.mean("weight_norm")
        dt, dw = t[:-1] - t[-1], w[:-1] - w[-1]
        hot = slice(4, 7)
        c = (dw[hot] / torch.tensor(Ts[hot], dtype=_F64)).mean()   # ||w|| - ||w||_GD = c T
        print(f"| {P} | {t[-1]:.0f} | {w[-1]:.1f} | "
              + ", ".join(f"{v:.2f}" for v in (t[:-1] / t[-1]).tolist())
              + f" | {loglog_slope(Ts[hot], dt[hot]).slope:.2f}, "
              f"{loglog_slope(Ts[hot], dw[hot]).slope:.2f} | {(w[-1] / c).item():.2f} |")
    print("\nExponents at T = 100 (B = 2), P = 32, 64, 128, 128 data sets:\n")
    print("| chi | b (t* ~ P^b) | gamma (‖w‖ ~ P^gamma) | 1/(1+chi) |\n|---|---|---|---|")
    for chi in (0.0, 1.0):
        t, w = [], []
        for P in (32, 64, 128):
            s = perceptron_temperature([200.0], [2], train_size=P, dim=16, runs=128, chi=chi,
                                       generator=gen().manual_seed(P))
            t.append(s.mean().item())
            w.append(s.mean("weight_norm").item())
        print(f"| {chi:g} | {loglog_slope([32, 64, 128], t).slope:.2f} | "
              f"{loglog_slope([32, 64, 128], w).slope:.2f} | {1 / (1 + chi):.2f} |")
    print("\n## Last iterate (gap at T = 1e2 / 1e3 / 1e4, 200 runs, slope +- stderr)\n")
    print("| problem | schedule | gaps | slope |\n|---|---|---|---|")
    for prob in ("l1", "least_squares", "strongly_convex_least_squares"):
        for sch in ("constant", "sqrt", "linear", "inverse"):
            lr = 2.0 if prob.startswith("strongly") and sch == "inverse" else 1.0
            r = last_iterate_gap(prob, sch, [100, 1000, 10000], runs=200, lr=lr,
                                 generator=gen().manual_seed(0))
            print(f"| {prob} | {sch}{' (lr 2)' if lr != 1 else ''} | "
                  + " / ".join(f"{g:.3g}" for g in r.gaps.tolist())
                  + f" | {r.slope:.3f} +- {r.slope_stderr:.3f} |")
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":  # pragma: no cover
    _report()
