r"""Learning rates as a function of batch size: mini-batch Hessian extremes, stable learning rates.

Granziol, Zohren and Roberts model the Hessian of a mini-batch of size :math:`B` as the
full-data (empirical) Hessian plus a random-matrix perturbation whose size shrinks as
:math:`B` grows. Two consequences are checked here on any ``(model, loss_fn, data)``:

- the extreme eigenvalues of the mini-batch Hessian :math:`H_B` lie *outside* those of the full
  Hessian :math:`H` and approach them as :math:`B \to N`
  (:func:`minibatch_hessian_extremes`);
- the largest learning rate at which training stays stable grows linearly in :math:`B` for SGD
  and as :math:`\sqrt B` for Adam, in the small-batch (noise-dominated) regime
  (:func:`largest_stable_lr` measures it by bisection against a strict divergence criterion,
  :func:`lr_batch_scaling` fits the log-log slope).

:func:`suggest_lr` turns the measured scaling into a learning rate for a given batch size.

Every function evaluates ``loss_fn(model(x), y)`` for a criterion such as
``torch.nn.CrossEntropyLoss()`` and one in-memory batch ``data = (x, y)`` (the whole data set);
``model`` is never modified (training runs use deep copies). Randomness (mini-batches, Lanczos
start vectors) comes only from the explicit ``generator`` (a model with dropout in training mode
still draws its masks from the global RNG).

References:
    D. Granziol, S. Zohren, S. Roberts, "Learning Rates as a Function of Batch Size: A Random
    Matrix Theory Approach to Neural Network Training", JMLR 23 (2022), arXiv:2006.09092.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> ext = minibatch_hessian_extremes(model, torch.nn.CrossEntropyLoss(), (x, y), [4, 64],
    ...                                  samples=4, generator=g)
    >>> bool(ext.lambda_max_mean[0] > ext.full_lambda_max)  # small batches look sharper
    True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochstep.stepping.checks import check_int, check_positive
from stochstep.stepping.noise import make_generator
from stochstep.theory_checks.hessian import loss_from_model, top_eigenvalues
from stochstep.theory_checks.rates import loglog_slope
from stochstep.theory_checks.stability import batch_mixing

__all__ = ["MinibatchHessianExtremes", "StabilityTrial", "StableLR", "LRScaling",
           "SuggestedLR", "minibatch_hessian_extremes", "stability_trial", "largest_stable_lr",
           "lr_batch_scaling", "suggest_lr"]

Criterion = Callable[[Tensor, Tensor], Tensor]
MakeOptimizer = Callable[[list, float], torch.optim.Optimizer]

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
_EXPONENTS = {"sgd": 1.0, "adam": 0.5}


# ----------------------------------------------------------------------------- validation

def _check_model(model) -> None:
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_loss_fn(loss_fn) -> None:
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable criterion loss_fn(model(x), y), "
                         f"got {type(loss_fn).__name__}")


def _check_data(data) -> tuple[Tensor, Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, Tensor) for t in data)):
        raise ValueError("data must be a pair of tensors (x, y) holding the whole data set, "
                         f"got {type(data).__name__}")
    x, y = data
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"data (x, y) must share their first (sample) dimension, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 1:
        raise ValueError("data must hold at least one sample")
    return x, y


def _check_batch_size(name: str, value, n: int) -> int:
    value = check_int(name, value, 1)
    if value > n:
        raise ValueError(f"{name} must be <= the number of samples in data ({n}), got {value}")
    return value


def _check_batch_sizes(batch_sizes, n: int) -> tuple[int, ...]:
    if isinstance(batch_sizes, (int, Tensor)) or not isinstance(batch_sizes, Sequence):
        raise ValueError("batch_sizes must be a list or tuple of integers, "
                         f"got {type(batch_sizes).__name__}")
    if not batch_sizes:
        raise ValueError("batch_sizes must hold at least one batch size, got an empty sequence")
    return tuple(_check_batch_size(f"batch_sizes[{i}]", b, n) for i, b in enumerate(batch_sizes))


def _resolve_optimizer(make_optimizer) -> tuple[MakeOptimizer, str | None]:
    """``(params, lr) -> optimizer`` from a callable or the name ``"sgd"`` / ``"adam"``."""
    if isinstance(make_optimizer, str):
        if make_optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be 'sgd' or 'adam' (or a callable "
                             f"(params, lr) -> optimizer), got {make_optimizer!r}")
        cls = _OPTIMIZERS[make_optimizer]
        return (lambda params, lr: cls(params, lr=lr)), make_optimizer
    if not callable(make_optimizer):
        raise ValueError("make_optimizer must be a callable (params, lr) -> optimizer or one of "
                         f"'sgd', 'adam', got {type(make_optimizer).__name__}")
    return make_optimizer, None


def _check_bracket(lo, hi, tol) -> tuple[float, float, float]:
    lo, hi, tol = check_positive("lo", lo), check_positive("hi", hi), check_positive("tol", tol)
    if not hi > lo:
        raise ValueError(f"hi must be > lo, got lo={lo!r}, hi={hi!r}")
    return lo, hi, tol


def _check_criterion(steps, blowup, margin) -> tuple[int, float, float]:
    steps = check_int("steps", steps, 1)
    blowup = check_positive("blowup", blowup)
    if not blowup > 1:
        raise ValueError(f"blowup must be a finite number > 1, got {blowup!r}")
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool)
            and 0 <= margin < 1):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    return steps, blowup, float(margin)


# ----------------------------------------------------------------------------- Hessian extremes

@dataclass(frozen=True)
class MinibatchHessianExtremes:
    """Extreme eigenvalues of mini-batch Hessians, one row per batch size.

    ``lambda_max[i, s]`` / ``lambda_min[i, s]`` are the largest / smallest eigenvalue of the
    Hessian of the loss on the ``s``-th random mini-batch of size ``batch_sizes[i]``
    (float64, shape ``(len(batch_sizes), samples)``); ``full_lambda_max`` /
    ``full_lambda_min`` those of the full-data Hessian.
    """

    batch_sizes: tuple[int, ...]
    lambda_max: Tensor
    lambda_min: Tensor
    full_lambda_max: float
    full_lambda_min: float

    @property
    def lambda_max_mean(self) -> Tensor:
        """Mean of ``lambda_max`` over the mini-batches, per batch size."""
        return self.lambda_max.mean(dim=1)

    @property
    def lambda_max_std(self) -> Tensor:
        """Sample standard deviation of ``lambda_max`` (``nan`` for one sample), per batch size."""
        return _std(self.lambda_max)

    @property
    def lambda_min_mean(self) -> Tensor:
        """Mean of ``lambda_min`` over the mini-batches, per batch size."""
        return self.lambda_min.mean(dim=1)

    @property
    def lambda_min_std(self) -> Tensor:
        """Sample standard deviation of ``lambda_min`` (``nan`` for one sample), per batch size."""
        return _std(self.lambda_min)


def _std(t: Tensor) -> Tensor:
    if t.shape[1] < 2:
        return torch.full(t.shape[:1], math.nan, dtype=t.dtype)
    return t.std(dim=1, correction=1)


def _extremes(model, loss_fn, batch, iters, generator, dtype) -> tuple[float, float]:
    """Largest and smallest Ritz value of one Lanczos run on the Hessian of the batch loss."""
    fn, params = loss_from_model(model, loss_fn, batch)
    n = sum(p.numel() for p in params)
    m = min(iters, n)
    ritz = top_eigenvalues(fn, params, k=m, iters=m, generator=generator, dtype=dtype)
    return ritz[0].item(), ritz[-1].item()


def minibatch_hessian_extremes(model: torch.nn.Module, loss_fn: Criterion, data,
                               batch_sizes: Sequence[int], *, samples: int = 8,
                               iters: int = 20, generator: torch.Generator | None = None,
                               dtype: torch.dtype | None = None,
                               progress: bool = False) -> MinibatchHessianExtremes:
    r"""Largest and smallest eigenvalues of mini-batch Hessians, per batch size.

    .. math::

        H_B = \nabla^2_\theta \frac1B \sum_{i \in S} \ell(f_\theta(x_i), y_i),
        \qquad S \subset \{1, \dots, N\},\ |S| = B \text{ drawn uniformly without replacement},

    and for each batch size the ``samples`` values of :math:`\lambda_{\max}(H_B)` and
    :math:`\lambda_{\min}(H_B)` over independent draws of :math:`S`, next to
    :math:`\lambda_{\max}(H)`, :math:`\lambda_{\min}(H)` of the full-data Hessian
    :math:`H = H_N`. Both ends come from one Lanczos run of ``iters`` steps
    (:func:`theory_checks.hessian.top_eigenvalues` asked for all its Ritz values: the first and
    last are the extreme ones). Granziol et al. predict
    :math:`\mathbb E\,\lambda_{\max}(H_B) > \lambda_{\max}(H)` and
    :math:`\mathbb E\,\lambda_{\min}(H_B) < \lambda_{\min}(H)`, the gap closing as :math:`B`
    grows.

    Args:
        model: the network, evaluated at its current parameters (left unchanged; put it in the
            mode you want, ``model.eval()`` for BatchNorm/Dropout).
        loss_fn: criterion ``loss_fn(model(x), y) -> scalar``, a mean over the batch.
        data: ``(x, y)``, the whole data set.
        batch_sizes: batch sizes, each in ``[1, N]``.
        samples: random mini-batches per batch size, >= 1.
        iters: Lanczos steps (Hessian-vector products) per Hessian, >= 1 (capped at the
            parameter count, where the result is exact).
        generator: source of the mini-batches and Lanczos start vectors (if None, one
            seeded from torch's global RNG).
        dtype: cast parameters and data first (``torch.float64`` for tight Ritz values).
        progress: tqdm bar over the Hessians.

    Returns:
        :class:`MinibatchHessianExtremes` (raw values plus ``lambda_max_mean``/``_std``,
        ``lambda_min_mean``/``_std`` per batch size, and the full-batch values).

    References:
        D. Granziol, S. Zohren, S. Roberts, arXiv:2006.09092 (mini-batch Hessian extremal
        eigenvalues exceed the empirical Hessian's in magnitude).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)
        >>> ext = minibatch_hessian_extremes(torch.nn.Linear(3, 1), torch.nn.MSELoss(), (x, y),
        ...                                  [2, 32], samples=3, generator=g)
        >>> ext.lambda_max.shape
        torch.Size([2, 3])
        >>> abs(ext.lambda_max[1, 0].item() - ext.full_lambda_max) < 1e-4  # B = N: the full Hessian
        True
    """
    _check_model(model)
    _check_loss_fn(loss_fn)
    x, y = _check_data(data)
    n = x.shape[0]
    batch_sizes = _check_batch_sizes(batch_sizes, n)
    samples = check_int("samples", samples, 1)
    iters = check_int("iters", iters, 1)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point dtype or None, got {dtype!r}")
    generator = make_generator(generator)
    lam_max = torch.empty(len(batch_sizes), samples, dtype=torch.float64)
    lam_min = torch.empty_like(lam_max)
    bar = tqdm(total=len(batch_sizes) * samples + 1, desc="mini-batch Hessians",
               disable=not progress)
    for i, b in enumerate(batch_sizes):
        for s in range(samples):
            idx = torch.randperm(n, generator=generator)[:b].to(x.device)
            lam_max[i, s], lam_min[i, s] = _extremes(model, loss_fn, (x[idx], y[idx]), iters,
                                                     generator, dtype)
            bar.update(1)
    full_max, full_min = _extremes(model, loss_fn, (x, y), iters, generator, dtype)
    bar.update(1)
    bar.close()
    return MinibatchHessianExtremes(batch_sizes, lam_max, lam_min, full_max, full_min)


# ----------------------------------------------------------------------------- stable lr

@dataclass(frozen=True)
class StabilityTrial:
    """One training run against the stability criterion: the learning rate, the verdict, the
    peak and final full-data loss relative to the start, and how many steps ran (fewer when it
    stopped at the first violation)."""

    lr: float
    stable: bool
    peak_ratio: float
    final_ratio: float
    steps_run: int


@dataclass(frozen=True)
class StableLR:
    """Result of :func:`largest_stable_lr`: the largest learning rate found stable, the smallest
    found unstable (``unstable_lr / lr <= 1 + tol``), and every trial in the order run."""

    lr: float
    unstable_lr: float
    batch_size: int
    trials: tuple[StabilityTrial, ...]


def _batch_schedule(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Tensor:
    """``(steps, batch_size)`` sample indices: epochs of random permutations cut into
    consecutive batches, an incomplete last batch dropped."""
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    rows = [torch.randperm(n, generator=generator)[: per_epoch * batch_size]
            .view(per_epoch, batch_size) for _ in range(epochs)]
    return torch.cat(rows)[:steps]


def _full_loss(model, loss_fn, x, y) -> float:
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def _trial(make_optimizer, model, loss_fn, x, y, schedule, lr, blowup, margin) -> StabilityTrial:
    net = copy.deepcopy(model)
    opt = make_optimizer([p for p in net.parameters() if p.requires_grad], lr)
    start = _full_loss(net, loss_fn, x, y)
    if not (math.isfinite(start) and start > 0):
        raise ValueError(f"the full-data loss at the model's parameters must be finite and > 0 "
                         f"(the criterion is relative to it), got {start!r}")
    peak, ratio = 1.0, 1.0
    for t, idx in enumerate(schedule):
        def closure():
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            return loss
        try:
            opt.step(closure)
        except FloatingPointError:  # optimizers with check_finite=True
            return StabilityTrial(lr, False, math.inf, math.inf, t + 1)
        ratio = _full_loss(net, loss_fn, x, y) / start
        peak = max(peak, ratio) if math.isfinite(ratio) else math.inf
        if not ratio <= blowup:  # nan fails too
            return StabilityTrial(lr, False, peak, ratio, t + 1)
    return StabilityTrial(lr, ratio <= 1.0 - margin, peak, ratio, len(schedule))


def _setup(make_optimizer, model, loss_fn, data, batch_size, steps, blowup, margin):
    make_optimizer, _ = _resolve_optimizer(make_optimizer)
    _check_model(model)
    _check_loss_fn(loss_fn)
    x, y = _check_data(data)
    batch_size = _check_batch_size("batch_size", batch_size, x.shape[0])
    steps, blowup, margin = _check_criterion(steps, blowup, margin)
    return make_optimizer, x, y, batch_size, steps, blowup, margin


def stability_trial(make_optimizer, model: torch.nn.Module, loss_fn: Criterion, data,
                    batch_size: int, lr: float, *, steps: int = 200, blowup: float = 2.0,
                    margin: float = 0.0,
                    generator: torch.Generator | None = None) -> StabilityTrial:
    r"""Train a copy of ``model`` for ``steps`` mini-batch steps at ``lr`` and judge stability.

    With :math:`L` the full-data loss and :math:`\theta_t` the parameters after ``t``
    optimizer steps on the mini-batches :math:`S_1, \dots, S_T` (epochs of random
    permutations of the data drawn from ``generator``, an incomplete last batch dropped),

    .. math::

        \operatorname{stable}(\eta) \iff
        \max_{1 \le t \le T} \frac{L(\theta_t)}{L(\theta_0)} \le \rho
        \ \text{ and } \
        \frac{L(\theta_T)}{L(\theta_0)} \le 1 - \delta ,

    with :math:`\rho` = ``blowup`` and :math:`\delta` = ``margin``; a non-finite loss or a
    ``FloatingPointError`` from the optimizer fails. The run stops at the first step over
    :math:`\rho`. The peak condition is what makes the criterion strict: with saturating units
    (tanh) and cross-entropy a run can shoot up, saturate and still end below its start,
    which "finite and lower after T steps" would call stable (measured on the tanh MLP of
    ``tests/test_batch_size.py``, full batch: every lr up to 100, 10x the largest stable one,
    ended near zero loss after peaks of up to 30x the start). The peak bound measures the
    onset of the instability, which is what the curvature bound :math:`\eta < 2/\lambda`
    describes, not whether training recovers from it afterwards.

    Args:
        make_optimizer: ``(params, lr) -> optimizer`` (``params`` a list of the trainable
            parameters of a copy of ``model``), or ``"sgd"`` / ``"adam"`` for
            ``torch.optim.SGD`` / ``torch.optim.Adam`` with default settings.
        model: the network, trained from its current parameters in a deep copy (the model
            itself is not modified).
        loss_fn: criterion ``loss_fn(model(x), y) -> scalar``, a mean over the batch.
        data: ``(x, y)``, the whole data set; :math:`L` is evaluated on all of it after every
            step (pass a subset to make that cheaper).
        batch_size: mini-batch size, in ``[1, N]``.
        lr: the learning rate, > 0.
        steps: optimizer steps ``T``, >= 1.
        blowup: :math:`\rho`, the largest allowed loss ratio at any step, > 1.
        margin: :math:`\delta` in ``[0, 1)``, the required relative decrease at the end.
        generator: source of the mini-batch sequence (if None, one seeded from torch's global RNG).

    Returns:
        :class:`StabilityTrial`.

    References:
        D. Granziol, S. Zohren, S. Roberts, arXiv:2006.09092.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(32, 2, generator=g)
        >>> y = x @ torch.tensor([[1.0], [-1.0]])
        >>> model = torch.nn.Linear(2, 1)
        >>> stability_trial("sgd", model, torch.nn.MSELoss(), (x, y), 8, 0.1, steps=20,
        ...                 generator=g).stable
        True
        >>> stability_trial("sgd", model, torch.nn.MSELoss(), (x, y), 8, 10.0, steps=20,
        ...                 generator=g).stable
        False
    """
    make_optimizer, x, y, batch_size, steps, blowup, margin = _setup(
        make_optimizer, model, loss_fn, data, batch_size, steps, blowup, margin)
    lr = check_positive("lr", lr)
    generator = make_generator(generator)
    schedule = _batch_schedule(x.shape[0], batch_size, steps, generator).to(x.device)
    return _trial(make_optimizer, model, loss_fn, x, y, schedule, lr, blowup, margin)


def largest_stable_lr(make_optimizer, model: torch.nn.Module, loss_fn: Criterion, data,
                      batch_size: int, *, steps: int = 200, lo: float = 1e-4, hi: float = 1e2,
                      tol: float = 0.05, blowup: float = 2.0, margin: float = 0.0,
                      generator: torch.Generator | None = None,
                      progress: bool = False) -> StableLR:
    r"""The largest learning rate at which mini-batch training stays stable, by bisection.

    One sequence of ``steps`` mini-batches is drawn from ``generator`` and reused for every
    trial, so :math:`\operatorname{stable}(\eta)` (the strict criterion of
    :func:`stability_trial`: the full-data loss never above :math:`\rho` times its start and
    finally at most :math:`1 - \delta` times it) is a deterministic function of the learning
    rate. Starting from a stable ``lo`` and an unstable ``hi`` (both checked), the bracket is
    halved in log scale,

    .. math::

        \eta = \sqrt{\eta_{lo}\,\eta_{hi}}:\quad
        \eta_{lo} \leftarrow \eta \text{ if } \operatorname{stable}(\eta)
        \text{ else } \eta_{hi} \leftarrow \eta,
        \qquad \text{until } \eta_{hi} / \eta_{lo} \le 1 + \mathrm{tol},

    which takes :math:`\lceil \log_2(\ln(hi/lo) / \ln(1 + tol)) \rceil` trials after the two
    end checks, and returns :math:`\eta_{lo}`.

    Args:
        make_optimizer: ``(params, lr) -> optimizer``, or ``"sgd"`` / ``"adam"`` (see
            :func:`stability_trial`).
        model: the network, trained from its current parameters (a deep copy per trial).
        loss_fn: criterion ``loss_fn(model(x), y) -> scalar``, a mean over the batch.
        data: ``(x, y)``, the whole data set (evaluated in full after every step).
        batch_size: mini-batch size, in ``[1, N]``.
        steps: optimizer steps per trial, >= 1.
        lo: a learning rate expected to be stable, > 0.
        hi: a learning rate expected to be unstable, > lo.
        tol: relative width of the final bracket, > 0.
        blowup: :math:`\rho` > 1 of the criterion.
        margin: :math:`\delta` in ``[0, 1)`` of the criterion.
        generator: source of the mini-batch sequence (if None, one seeded from torch's global RNG).
        progress: tqdm bar over trials.

    Returns:
        :class:`StableLR` (``lr``, ``unstable_lr``, ``batch_size`` and every
        :class:`StabilityTrial`).

    Raises:
        ValueError: bad arguments, a ``lo`` that is already unstable or a ``hi`` that is
            stable (the message says which way to move the bracket).

    References:
        D. Granziol, S. Zohren, S. Roberts, arXiv:2006.09092 (largest stable learning rate
        against batch size).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 3, generator=g)
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> model = torch.nn.Linear(3, 1)
        >>> res = largest_stable_lr("sgd", model, torch.nn.MSELoss(), (x, y), 64, steps=50,
        ...                         lo=1e-3, hi=10.0, tol=0.01, generator=g)
        >>> lam = minibatch_hessian_extremes(model, torch.nn.MSELoss(), (x, y), [64], samples=1,
        ...                                  generator=g).full_lambda_max
        >>> abs(res.lr * lam / 2 - 1) < 0.05  # full-batch GD on a quadratic: 2 / lambda_max
        True
    """
    make_optimizer, x, y, batch_size, steps, blowup, margin = _setup(
        make_optimizer, model, loss_fn, data, batch_size, steps, blowup, margin)
    lo, hi, tol = _check_bracket(lo, hi, tol)
    generator = make_generator(generator)
    return _bisect(make_optimizer, model, loss_fn, x, y, batch_size, steps, lo, hi, tol, blowup,
                   margin, generator, progress)


def _bisect(make_optimizer, model, loss_fn, x, y, batch_size, steps, lo, hi, tol, blowup, margin,
            generator, progress) -> StableLR:
    schedule = _batch_schedule(x.shape[0], batch_size, steps, generator).to(x.device)
    n_bisect = max(0, math.ceil(math.log2(math.log(hi / lo) / math.log1p(tol))))
    trials = []
    with tqdm(total=2 + n_bisect, desc=f"stable lr B={batch_size}", leave=False,
              disable=not progress) as bar:
        def run(lr):
            trial = _trial(make_optimizer, model, loss_fn, x, y, schedule, lr, blowup, margin)
            trials.append(trial)
            bar.update(1)
            return trial

        first = run(lo)
        if not first.stable:
            raise ValueError(f"lo={lo:g} is already unstable at batch_size={batch_size} (peak "
                             f"loss ratio {first.peak_ratio:.3g}, final {first.final_ratio:.3g}"
                             f"): lower lo")
        last = run(hi)
        if last.stable:
            raise ValueError(f"hi={hi:g} is still stable at batch_size={batch_size} (peak loss "
                             f"ratio {last.peak_ratio:.3g}, final {last.final_ratio:.3g}): "
                             f"raise hi")
        while hi / lo > 1 + tol:
            mid = math.sqrt(lo * hi)
            if run(mid).stable:
                lo = mid
            else:
                hi = mid
    return StableLR(lo, hi, batch_size, tuple(trials))


# ----------------------------------------------------------------------------- scaling fit

@dataclass(frozen=True)
class LRScaling:
    """Result of :func:`lr_batch_scaling`: batch sizes, their largest stable learning rates
    (float64), the least-squares fit ``log lr = slope * log B + intercept``, and the
    per-batch-size :class:`StableLR` records."""

    batch_sizes: tuple[int, ...]
    lrs: Tensor
    slope: float
    intercept: float
    results: tuple[StableLR, ...]


def lr_batch_scaling(make_optimizer, model: torch.nn.Module, loss_fn: Criterion, data,
                     batch_sizes: Sequence[int], *, steps: int = 200, lo: float = 1e-4,
                     hi: float = 1e2, tol: float = 0.05, blowup: float = 2.0,
                     margin: float = 0.0, generator: torch.Generator | None = None,
                     progress: bool = False) -> LRScaling:
    r"""Largest stable learning rate per batch size and its log-log slope.

    For each batch size :math:`B_k`, :math:`\eta^*(B_k)` by :func:`largest_stable_lr` (each
    with its own mini-batch sequence from ``generator``), then the least-squares fit

    .. math::

        \log \eta^*(B_k) \approx a \log B_k + b .

    Granziol et al. predict :math:`a = 1` for SGD (linear scaling) and :math:`a = 1/2` for
    Adam (square-root scaling) while :math:`B` is well below the batch size where the
    mini-batch noise stops dominating; beyond it :math:`\eta^*` levels off at the full-batch
    value and the slope falls. Measured on a tanh MLP 32-64-10, 256 points, cross-entropy,
    200 steps, :math:`B \in \{1, 2, 4, 8, 16\}`, ``tol=0.1``, data seeds 0--7 (see
    ``tests/test_batch_size.py``): SGD 0.976--1.069, Adam 0.509--0.644.

    Args:
        make_optimizer: ``(params, lr) -> optimizer``, or ``"sgd"`` / ``"adam"``.
        model: the network, trained from its current parameters (never modified).
        loss_fn: criterion ``loss_fn(model(x), y) -> scalar``, a mean over the batch.
        data: ``(x, y)``, the whole data set.
        batch_sizes: at least two distinct batch sizes, each in ``[1, N]``.
        steps, lo, hi, tol, blowup, margin: as in :func:`largest_stable_lr` (one bracket for
            all batch sizes: it must hold every :math:`\eta^*(B_k)`).
        generator: source of the mini-batch sequences (if None, one seeded from torch's global RNG).
        progress: tqdm bar over batch sizes.

    Returns:
        :class:`LRScaling`.

    References:
        D. Granziol, S. Zohren, S. Roberts, arXiv:2006.09092 (linear scaling for SGD,
        square-root scaling for Adam).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 3, generator=g)
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> fit = lr_batch_scaling("sgd", torch.nn.Linear(3, 1), torch.nn.MSELoss(), (x, y),
        ...                        [2, 8], steps=30, lo=1e-3, hi=10.0, tol=0.1, generator=g)
        >>> fit.lrs.shape, fit.slope > 0
        (torch.Size([2]), True)
    """
    make_optimizer, _ = _resolve_optimizer(make_optimizer)
    _check_model(model)
    _check_loss_fn(loss_fn)
    x, y = _check_data(data)
    batch_sizes = _check_batch_sizes(batch_sizes, x.shape[0])
    if len(set(batch_sizes)) < 2:
        raise ValueError(f"batch_sizes must hold at least two distinct sizes to fit a slope, "
                         f"got {list(batch_sizes)}")
    steps, blowup, margin = _check_criterion(steps, blowup, margin)
    lo, hi, tol = _check_bracket(lo, hi, tol)
    generator = make_generator(generator)
    results = tuple(
        _bisect(make_optimizer, model, loss_fn, x, y, b, steps, lo, hi, tol, blowup, margin,
                generator, False)
        for b in tqdm(batch_sizes, desc="batch sizes", disable=not progress))
    lrs = torch.tensor([r.lr for r in results], dtype=torch.float64)
    slope, intercept = loglog_slope(batch_sizes, lrs)
    return LRScaling(batch_sizes, lrs, slope, intercept, results)


# ----------------------------------------------------------------------------- suggestion

@dataclass(frozen=True)
class SuggestedLR:
    """Result of :func:`suggest_lr`. ``lr`` is the suggestion (``safety`` times
    ``predicted_max_lr``); the measured anchors are ``reference_lr`` at
    ``reference_batch_size`` and ``full_batch_lr`` at the full data set (``None`` where not
    needed). ``float(result)`` is ``result.lr``."""

    lr: float
    batch_size: int
    optimizer: str
    exponent: float
    predicted_max_lr: float
    reference_batch_size: int | None
    reference_lr: float | None
    full_batch_lr: float | None

    def __float__(self) -> float:
        return self.lr


def _noise_factor(b: int, n: int) -> float:
    """phi(B) = (N - B) / (B (N - 1)): variance of a mean over B of N samples drawn without
    replacement, relative to one sample (1 at B = 1, 0 at B = N)."""
    return batch_mixing(b, n, replacement=False)


def _interpolate(b: int, n: int, b0: int, lr0: float, lr_full: float, kappa: float) -> float:
    a = lr_full ** (-1 / kappa)
    c = (lr0 ** (-1 / kappa) - a) / _noise_factor(b0, n)
    if c <= 0:  # no noise effect resolved at b0: flat above it, the scaling law below it
        return min(lr0, lr_full) * min(1.0, b / b0) ** kappa
    return (a + c * _noise_factor(b, n)) ** (-kappa)


def suggest_lr(model: torch.nn.Module, loss_fn: Criterion, data, batch_size: int,
               optimizer: str = "sgd", *, reference_batch_size: int | None = None,
               safety: float = 0.5, optimizer_kwargs: dict | None = None, steps: int = 200,
               lo: float = 1e-4, hi: float = 1e2, tol: float = 0.05, blowup: float = 2.0,
               margin: float = 0.0, generator: torch.Generator | None = None,
               progress: bool = False) -> SuggestedLR:
    r"""A learning rate for SGD or Adam at a given batch size, from Granziol et al.'s scaling law.

    In the spiked random-matrix picture of Granziol et al., the mini-batch Hessian is the full
    one plus a random perturbation whose variance falls as :math:`1/B` (here
    :math:`\varphi(B)`, which adds the finite-population factor of sampling without
    replacement), and the perturbation moves an outlying eigenvalue :math:`\lambda` to about
    :math:`\lambda' = \lambda + \sigma^2 \varphi(B)/\lambda`. The largest stable SGD learning
    rate :math:`2/\lambda'` is then linear in :math:`B` while the noise term dominates, and
    levels off at the full-batch value :math:`2/\lambda`. For Adam the paper's law is
    :math:`\sqrt B`; we give :math:`1/\eta^2` the same form, the simplest curve with that law
    at small :math:`B` and the same full-batch plateau. With :math:`\kappa = 1` for SGD and
    :math:`\kappa = 1/2` for Adam, this function measures the largest stable learning rate
    :math:`\eta^*` (:func:`largest_stable_lr`) at a small reference batch size :math:`B_0`
    and at the full batch :math:`N`, and interpolates

    .. math::

        \eta^*(B)^{-1/\kappa} \approx \eta^*(N)^{-1/\kappa} + c\,\varphi(B),\qquad
        c = \frac{\eta^*(B_0)^{-1/\kappa} - \eta^*(N)^{-1/\kappa}}{\varphi(B_0)},\qquad
        \varphi(B) = \frac{N - B}{B\,(N - 1)},

    returning :math:`\eta(B) = s\,\eta^*(B)` with :math:`s` = ``safety``. The curve passes
    through both measurements, grows as :math:`B^{\kappa}` for :math:`B_0 \le B \ll B_c`
    (the batch size where the noise term equals the full-batch one) and is flat beyond it.
    Where the measured :math:`\eta^*(B_0)` is not below :math:`\eta^*(N)` (no noise effect
    resolved) it falls back to :math:`\min(\eta^*(B_0), \eta^*(N))\,\min(1, B/B_0)^\kappa`.
    For :math:`B = B_0` or :math:`B = N` only that one bisection runs, and the suggestion is
    :math:`s\,\eta^*(B)` itself.

    Why measured anchors and not :math:`2/\lambda_{\max}(H_B)` straight from the mini-batch
    Hessian: on the MLP below, :math:`\mathbb E\,\lambda_{\max}(H_B)` falls only about as
    :math:`B^{-0.6}` and :math:`\eta^*(B)\,\mathbb E\,\lambda_{\max}(H_B)/2` ranged from 0.6
    (:math:`B = 1`) to 1.5 (:math:`B = N`), while the interpolation stayed within
    0.69--1.11 of :math:`\eta^*(B)` (below).

    Measured (tanh MLP 32-64-10, 256 points, cross-entropy, 200 steps, ``tol=0.1``,
    :math:`B_0 = 8`, data seeds 0--4, :math:`B = 32, 64`, SGD and Adam; see
    ``tests/test_batch_size.py``): the interpolated :math:`\eta^*(B)` was 0.69--1.11 times
    the bisected one, so with ``safety=0.5`` the suggestion was 0.34--0.55 of the bisected
    largest stable learning rate, and stable on a fresh batch sequence every time.

    Args:
        model: the network, at the parameters training starts from (never modified).
        loss_fn: criterion ``loss_fn(model(x), y) -> scalar``, a mean over the batch.
        data: ``(x, y)``, the whole data set (evaluated in full after every step; pass a
            subset to make the bisections cheaper).
        batch_size: the batch size to suggest a learning rate for, in ``[1, N]``.
        optimizer: ``"sgd"`` (``torch.optim.SGD``) or ``"adam"`` (``torch.optim.Adam``).
        reference_batch_size: :math:`B_0`, in ``[1, N - 1]``; default ``min(batch_size, 8)``
            (or ``N // 2`` when ``N <= 8``). Take it small (noise-dominated) but not 1, whose
            measurement is the noisiest.
        safety: :math:`s`, in ``(0, 1]``; the default 0.5 keeps the suggestion away from the
            edge of stability.
        optimizer_kwargs: extra keyword arguments of the optimizer (``momentum``, ``betas``,
            ...; not ``lr``).
        steps, lo, hi, tol, blowup, margin: as in :func:`largest_stable_lr`.
        generator: source of the mini-batch sequences (if None, one seeded from torch's global RNG).
        progress: tqdm bar per bisection.

    Returns:
        :class:`SuggestedLR` (``.lr``; ``float()`` of it also gives the learning rate).

    References:
        D. Granziol, S. Zohren, S. Roberts, "Learning Rates as a Function of Batch Size: A
        Random Matrix Theory Approach to Neural Network Training", arXiv:2006.09092.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 3, generator=g)
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> s = suggest_lr(torch.nn.Linear(3, 1), torch.nn.MSELoss(), (x, y), 16, "sgd",
        ...                steps=30, lo=1e-3, hi=10.0, tol=0.1, generator=g)
        >>> s.reference_batch_size, 0 < float(s) < s.full_batch_lr
        (8, True)
    """
    if not isinstance(optimizer, str) or optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    kwargs = {} if optimizer_kwargs is None else optimizer_kwargs
    if not isinstance(kwargs, dict):
        raise ValueError(f"optimizer_kwargs must be a dict or None, got {type(kwargs).__name__}")
    if "lr" in kwargs:
        raise ValueError("optimizer_kwargs must not hold 'lr': the learning rate is what "
                         "suggest_lr searches")
    cls = _OPTIMIZERS[optimizer]
    cls([torch.zeros(1, requires_grad=True)], lr=1.0, **kwargs)  # bad kwargs raise here

    def make_optimizer(params, lr):
        return cls(params, lr=lr, **kwargs)

    make_optimizer, x, y, batch_size, steps, blowup, margin = _setup(
        make_optimizer, model, loss_fn, data, batch_size, steps, blowup, margin)
    n = x.shape[0]
    if reference_batch_size is None:
        reference_batch_size = min(batch_size, 8) if n > 8 else max(1, n // 2)
    elif n > 1:
        reference_batch_size = check_int("reference_batch_size", reference_batch_size, 1)
        if reference_batch_size >= n:
            raise ValueError(f"reference_batch_size must be < the number of samples in data "
                             f"({n}), got {reference_batch_size}")
    safety = check_positive("safety", safety)
    if safety > 1:
        raise ValueError(f"safety must be in (0, 1], got {safety!r}")
    lo, hi, tol = _check_bracket(lo, hi, tol)
    generator = make_generator(generator)
    kappa = _EXPONENTS[optimizer]

    def measure(b):
        return _bisect(make_optimizer, model, loss_fn, x, y, b, steps, lo, hi, tol, blowup,
                       margin, generator, progress).lr

    lr0 = lr_full = None
    if batch_size == n:
        b0, predicted = None, None
        lr_full = predicted = measure(n)
    else:
        b0 = reference_batch_size
        lr0 = measure(b0)
        if batch_size == b0:
            predicted = lr0
        else:
            lr_full = measure(n)
            predicted = _interpolate(batch_size, n, b0, lr0, lr_full, kappa)
    return SuggestedLR(safety * predicted, batch_size, optimizer, kappa, predicted, b0, lr0,
                       lr_full)
