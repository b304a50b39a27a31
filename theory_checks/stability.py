r"""Dynamical (linear) stability of a minimum for GD and for SGD with batch size B.

Near an interpolating minimum :math:`\theta^*` of an average loss
:math:`L = \frac1n \sum_i \ell_i` (every :math:`\nabla \ell_i(\theta^*) = 0`), one SGD step with a
batch :math:`\mathcal B` linearizes to :math:`v_{t+1} = (I - \eta H_{\mathcal B}) v_t`, with
:math:`v = \theta - \theta^*`, :math:`H_i = \nabla^2 \ell_i(\theta^*)` and
:math:`H_{\mathcal B} = \frac1B \sum_{j \in \mathcal B} H_j`. The minimum is *linearly stable* in
mean square (Wu, Ma, E 2018) when :math:`\mathbb E \|v_t\|^2` stays bounded. GD
(:math:`H_{\mathcal B} = H`) is stable iff :math:`\lambda_{\max}(H) \le 2/\eta`. For SGD, Wu & Su
show that a stable minimum of the square loss needs :math:`\operatorname{tr} H \le 2/\eta` with
B = 1, a condition on the *trace*, much stronger than GD's when many eigenvalues are large.

**The batch-size condition used here (derived for this module).** The second moment
:math:`M_t = \mathbb E v_t v_t^\top` evolves by the linear map
:math:`\mathcal T(M) = \mathbb E[(I - \eta H_{\mathcal B}) M (I - \eta H_{\mathcal B})]`, which is
self-adjoint for the trace inner product and maps PSD matrices to PSD matrices. So its spectral
radius is at least the Rayleigh quotient at :math:`M = I`,

.. math::

    \rho(\mathcal T) \ge \frac{\mathbb E \|I - \eta H_{\mathcal B}\|_F^2}{p}
    = 1 + \frac{\eta}{p}\Big(\eta \operatorname{tr} \mathbb E[H_{\mathcal B}^2]
      - 2 \operatorname{tr} H\Big),

(:math:`p` the parameter count; equivalently the mean of :math:`\mathbb E\|(I - \eta
H_{\mathcal B}) v\|^2 / \|v\|^2` over isotropic :math:`v`), and by Krein--Rutman an eigenmatrix
of :math:`\rho(\mathcal T)` is PSD: if the bracket is positive, :math:`\mathbb E\|v_t\|^2` grows
geometrically. For i.i.d. batches drawn with replacement,
:math:`\mathbb E[H_{\mathcal B}^2] = \frac1B \mathbb E_i H_i^2 + (1 - \frac1B) H^2`; without
replacement :math:`1/B` becomes :math:`q = \frac{n - B}{B (n - 1)}` (the mixing probability of
Mulayoff & Michaeli, arXiv 2306.07850). The necessary condition is therefore

.. math::

    S_B = \frac{q \, \mathbb E_i \operatorname{tr}(H_i^2) + (1 - q) \operatorname{tr}(H^2)}
               {\operatorname{tr} H} \le \frac{2}{\eta}, \qquad q = 1/B .

For the square loss with a scalar output, :math:`H_i = \nabla f_i \nabla f_i^\top` has rank one,
:math:`\operatorname{tr}(H_i^2) = (\operatorname{tr} H_i)^2`, and by Jensen
:math:`S_1 = \mathbb E_i (\operatorname{tr} H_i)^2 / \operatorname{tr} H \ge \operatorname{tr} H`:
Wu & Su's trace condition follows from (and is weaker than) :math:`S_1 \le 2/\eta`. In the
rank-one case, replacing :math:`\mathbb E_i (\operatorname{tr} H_i)^2` by
:math:`(\operatorname{tr} H)^2` gives
:math:`(1 - \frac1B)\operatorname{tr}(H^2)/\operatorname{tr}H + \operatorname{tr}H / B`, a
lower bound on :math:`S_B`, hence a *weaker* necessary condition that is tight only when all
per-sample traces are equal (with per-sample Hessians of higher rank it is not even
necessary); this module computes the per-sample term instead. With per-sample Hessians of
rank above one (several outputs, other losses) :math:`S_B` is still a necessary condition while
the trace condition need not be.

All conditions are *necessary* for stability, none is sufficient (except GD's); they are stated
for an interpolating minimum (:attr:`StabilityReport.loss` tells how close the point is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stochstep.stepping.checks import check_flag, check_int, check_positive
from stochstep.stepping.noise import make_generator
from stochstep.theory_checks.hessian import (HessianOperator, loss_from_model, rademacher,
                                             top_eigenvalues)

__all__ = ["MinimaComparison", "StabilityReport", "diagonal_network_minima",
           "relu_network_minima", "stability_report"]


# ----------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class StabilityReport:
    """Linear-stability numbers of one point for GD and SGD (see :func:`stability_report`).

    Estimates come with their Hutchinson standard errors (``nan`` for one probe). The
    booleans compare the point estimates with ``threshold = 2 / lr``; near the boundary, look
    at the standard errors.
    """

    lr: float
    batch_size: int
    n_samples: int
    replacement: bool
    loss: float
    trace: float
    trace_stderr: float
    lambda_max: float
    trace_sq: float
    trace_sq_stderr: float
    sample_trace_sq: float
    sample_trace_sq_stderr: float
    s_batch: float
    s_batch_stderr: float

    @property
    def threshold(self) -> float:
        """``2 / lr``."""
        return 2.0 / self.lr

    @property
    def mixing(self) -> float:
        """Weight ``q`` of the per-sample term: ``1/B`` with replacement, else
        ``(n - B) / (B (n - 1))``."""
        return batch_mixing(self.batch_size, self.n_samples, self.replacement)

    @property
    def sgd_stable(self) -> bool:
        """Wu & Su's condition for B = 1: ``tr(H) <= 2/lr``."""
        return self.trace <= self.threshold

    @property
    def gd_stable(self) -> bool:
        """GD's condition: ``lambda_max(H) <= 2/lr``."""
        return self.lambda_max <= self.threshold

    @property
    def batch_stable(self) -> bool:
        """The batch-size condition ``S_B <= 2/lr``."""
        return self.s_batch <= self.threshold

    @property
    def sgd_ratio(self) -> float:
        """``lr * tr(H) / 2`` (<= 1 at an SGD-stable minimum)."""
        return self.lr * self.trace / 2

    @property
    def gd_ratio(self) -> float:
        """``lr * lambda_max(H) / 2``."""
        return self.lr * self.lambda_max / 2

    @property
    def batch_ratio(self) -> float:
        """``lr * S_B / 2``."""
        return self.lr * self.s_batch / 2

    def __str__(self) -> str:
        def row(name, value, se, ratio, ok):
            est = f"{value:.5g}" + ("" if se is None else f" +- {se:.2g}")
            return (f"  {name:<27s} {est:<20s} {ratio:<12.4f} "
                    f"{'stable' if ok else 'UNSTABLE'}")

        sampling = "with" if self.replacement else "without"
        return "\n".join([
            f"Linear stability at lr = {self.lr:.4g} (2/lr = {self.threshold:.4g}); SGD batch "
            f"size {self.batch_size} of {self.n_samples} samples, {sampling} replacement; "
            f"loss {self.loss:.3g}",
            f"  {'condition (<= 2/lr)':<27s} {'value':<20s} {'lr*value/2':<12s} verdict",
            row("SGD, B = 1 (Wu & Su): tr H", self.trace, self.trace_stderr, self.sgd_ratio,
                self.sgd_stable),
            row("GD: lambda_max(H)", self.lambda_max, None, self.gd_ratio, self.gd_stable),
            row(f"SGD, B = {self.batch_size}: S_B", self.s_batch, self.s_batch_stderr,
                self.batch_ratio, self.batch_stable),
            f"  S_B = (q E_i tr(H_i^2) + (1 - q) tr(H^2)) / tr H with q = {self.mixing:.4g}, "
            f"tr(H^2) = {self.trace_sq:.5g} +- {self.trace_sq_stderr:.2g}, "
            f"E_i tr(H_i^2) = {self.sample_trace_sq:.5g} +- {self.sample_trace_sq_stderr:.2g}",
        ])


def batch_mixing(batch_size: int, n: int, replacement: bool) -> float:
    """Variance of a mean over a batch of ``batch_size`` of ``n`` samples, relative to one
    sample: ``1/B`` with replacement, ``(n - B) / (B (n - 1))`` without."""
    if replacement:
        return 1.0 / batch_size
    if n == 1:
        return 0.0
    return (n - batch_size) / (batch_size * (n - 1))


# ----------------------------------------------------------------------------- helpers

def _collect(data) -> tuple[Tensor, Tensor]:
    """The whole data set as one ``(inputs, targets)`` pair (batches concatenated)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        batches = [tuple(data)]
    else:
        if isinstance(data, Tensor):
            raise ValueError("data must be a batch (inputs, targets) or an iterable of "
                             "batches, got a single Tensor")
        try:
            batches = [tuple(b) for b in data]
        except TypeError:
            raise ValueError("data must be a batch (inputs, targets) or an iterable of "
                             f"batches, got {type(data).__name__}") from None
        if not batches:
            raise ValueError("data must hold at least one batch, got none")
    for k, b in enumerate(batches):
        if len(b) != 2 or not all(isinstance(t, Tensor) for t in b):
            raise ValueError(f"data batch {k} must be a pair of tensors (inputs, targets)")
        if b[0].dim() == 0 or b[1].dim() == 0 or b[0].shape[0] != b[1].shape[0]:
            raise ValueError(f"data batch {k}: inputs and targets must share their first "
                             f"(sample) dimension, got {tuple(b[0].shape)} and "
                             f"{tuple(b[1].shape)}")
    if len(batches) == 1:
        return batches[0]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _check_mean_reduction(model, loss_fn, params, x: Tensor, y: Tensor) -> None:
    """The loss of two samples must be the mean of their losses (``reduction='mean'``).

    Checked away from the minimum (outputs shifted by 1, where the criterion allows it), since
    at an interpolating minimum every loss is 0.
    """
    if x.shape[0] < 2:
        return

    def shifted(out, target):
        return loss_fn(out + 1.0, target)

    for crit in (shifted, loss_fn):
        try:
            with torch.no_grad():
                pair = loss_from_model(model, crit, (x[:2], y[:2]))[0](params).item()
                one = [loss_from_model(model, crit, (x[i:i + 1], y[i:i + 1]))[0](params).item()
                       for i in range(2)]
        except (RuntimeError, ValueError, IndexError):
            if crit is loss_fn:   # the plain criterion fails: a real error, not a shift issue
                raise
            continue              # the criterion refuses shifted outputs: try the plain ones
        mean = (one[0] + one[1]) / 2
        scale = max(abs(pair), abs(mean))
        if not math.isfinite(scale) or scale < 1e-12:
            continue
        if abs(pair - mean) > 1e-4 * scale:
            raise ValueError("loss_fn must average over the batch (reduction='mean'): the "
                             f"loss of two samples is {pair:.6g}, the mean of their losses "
                             f"{mean:.6g}")
        return


def _mean_se(samples: Tensor) -> tuple[float, float]:
    m = samples.numel()
    mean = samples.mean().item()
    se = samples.std(correction=1).item() / math.sqrt(m) if m > 1 else math.nan
    return mean, se


def _s_batch(mix: float, t: Tensor, q2: Tensor, s1: Tensor, w2: Tensor) -> tuple[float, float]:
    """``S_B = q * sum(w2)/sum(s1) + (1 - q) * sum(q2)/sum(t)`` and its delta-method s.e.

    Ratios on the same probes: for a rank-one ``H_i = a a^T``, ``w2/s1 = ||a||^2`` whatever the
    probe, so the probe noise of the per-sample term cancels (the plain mean of ``w2`` has a
    relative standard deviation of about sqrt(2) per probe).
    """
    parts, influence = [], torch.zeros_like(t)
    for weight, top, bottom in ((mix, w2, s1), (1 - mix, q2, t)):
        if weight == 0:
            continue
        mt, mb = top.mean().item(), bottom.mean().item()
        if mb <= 0:  # not a minimum, or H = 0
            parts.append(0.0 if mt == 0 else math.inf)
            influence = influence + math.nan
            continue
        ratio = mt / mb
        parts.append(weight * ratio)
        influence = influence + weight * (top - ratio * bottom) / mb
    m = t.numel()
    se = influence.std(correction=1).item() / math.sqrt(m) if m > 1 else math.nan
    return sum(parts), se


# ----------------------------------------------------------------------------- main entry

def stability_report(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data,
                     lr: float, batch_size: int, *, probes: int = 100, iters: int = 20,
                     replacement: bool = True, generator: torch.Generator | None = None,
                     dtype: torch.dtype | None = None, progress: bool = False
                     ) -> StabilityReport:
    r"""Check whether a minimum can be linearly stable for GD and for SGD at ``lr``.

    .. math::

        \text{GD: } \lambda_{\max}(H) \le \frac2\eta, \qquad
        \text{SGD (Wu \& Su): } \operatorname{tr} H \le \frac2\eta, \qquad
        \text{SGD, batch } B: \;
        S_B = \frac{q\,\mathbb E_i \operatorname{tr}(H_i^2) + (1-q)\operatorname{tr}(H^2)}
                   {\operatorname{tr} H} \le \frac2\eta,

    with :math:`H` the Hessian of the full loss, :math:`H_i` that of sample :math:`i`'s loss,
    :math:`q = 1/B` (batches drawn with replacement) or :math:`(n-B)/(B(n-1))` (without). The
    traces are Hutchinson estimates from the same Rademacher probes :math:`z_k`:
    :math:`\operatorname{tr} H \approx \overline{z_k^\top H z_k}`,
    :math:`\operatorname{tr} H^2 \approx \overline{\|H z_k\|^2}`,
    :math:`\mathbb E_i \operatorname{tr} H_i^2 \approx \overline{\|H_{i_k} z_k\|^2}` with the
    samples :math:`i_k` running through random permutations of the data. :math:`S_B` is
    estimated by ratios on the same probes,
    :math:`q \sum_k \|H_{i_k} z_k\|^2 / \sum_k z_k^\top H_{i_k} z_k
    + (1-q) \sum_k \|H z_k\|^2 / \sum_k z_k^\top H z_k` (consistent; for rank-one
    :math:`H_i` the per-sample ratio is free of probe noise, which cut its spread about 3x
    against the plain mean), with a delta-method standard error. Standard errors treat the
    probes as independent; cycling through the samples makes the per-sample ones conservative
    (all samples probed equally often and exact probes, e.g. a diagonal :math:`H_i`, give an
    exact estimate with a nonzero standard error). :math:`\lambda_{\max}` is from
    Lanczos (:func:`theory_checks.hessian.top_eigenvalues`). See the module docstring for the
    derivation of :math:`S_B` (necessary for mean-square stability, and implying Wu & Su's
    trace condition for rank-one per-sample Hessians, i.e. the square loss).

    Cost: ``2 * probes + iters`` Hessian-vector products and one gradient graph per distinct
    sample probed (``min(n, probes)``).

    Args:
        model: the network, at the point to test (a minimum). Parameters with
            ``requires_grad=True`` are the variables; the model is not modified.
        loss_fn: criterion ``loss_fn(model(inputs), targets) -> scalar`` that *averages* over
            the batch (the torch default ``reduction='mean'``; checked), so that a batch of one
            sample gives that sample's loss.
        data: the training set, one batch ``(inputs, targets)`` or an iterable of batches
            (concatenated: every sample is addressed on its own).
        lr: learning rate, > 0.
        batch_size: SGD batch size B, 1 <= B <= number of samples.
        probes: Rademacher probes, >= 1 (standard errors are ``nan`` for 1).
        iters: Lanczos steps for ``lambda_max``, >= 1.
        replacement: batches drawn with replacement (i.i.d. samples, the default) or without.
        generator: source of probes, sample order and the Lanczos start (if None, one
            seeded from torch's global RNG).
        dtype: compute in this dtype (e.g. ``torch.float64``); data are cast to match.
        progress: tqdm bar over probes.

    Returns:
        A frozen :class:`StabilityReport` with the estimates, ``threshold = 2/lr``, the
        booleans ``sgd_stable``, ``gd_stable``, ``batch_stable`` and a readable ``str``.

    References:
        L. Wu, W. J. Su, "The implicit regularization of dynamical stability in stochastic
        gradient descent", ICML 2023, arXiv:2305.17490.
        L. Wu, C. Ma, W. E, "How SGD selects the global minima in over-parameterized learning:
        a dynamical stability perspective", NeurIPS 2018.
        R. Mulayoff, T. Michaeli, "Exact mean square linear stability analysis for SGD",
        arXiv:2306.07850 (the with/without replacement mixing weight).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(model.weight)  # the minimum w = 0
        >>> half_mse = lambda out, t: 0.5 * ((out - t) ** 2).mean()
        >>> r = stability_report(model, half_mse, (x, y), lr=0.6, batch_size=1, probes=8,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> r.trace, round(r.lambda_max, 6), r.s_batch  # H = diag(1/2, 2), H_i = x_i x_i^T
        (2.5, 2.0, 3.4)
        >>> r.gd_stable, r.sgd_stable, r.batch_stable  # 2/lr = 3.33; SGD needs lr <= 0.5 here
        (True, True, False)
    """
    lr = check_positive("lr", lr)
    probes = check_int("probes", probes, 1)
    iters = check_int("iters", iters, 1)
    replacement = check_flag("replacement", replacement)
    progress = check_flag("progress", progress)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
    x, y = _collect(data)
    n = x.shape[0]
    if n < 1:
        raise ValueError("data must hold at least one sample, got 0")
    batch_size = check_int("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of samples ({n}), got {batch_size}")
    generator = make_generator(generator)

    full_loss, params = loss_from_model(model, loss_fn, (x, y))
    if dtype is not None:
        params = [p.to(dtype) for p in params]
    try:
        with torch.no_grad():
            value = full_loss(params)
    except RuntimeError as err:
        if "shape '[]' is invalid" not in str(err):
            raise
        raise ValueError("loss_fn must return a scalar tensor (reduce over the batch with "
                         "reduction='mean')") from None
    if not value.is_floating_point():
        raise ValueError(f"loss_fn must return a floating-point scalar, got {value.dtype}")
    _check_mean_reduction(model, loss_fn, params, x, y)

    op = HessianOperator(full_loss, params, "autograd")
    order = torch.cat([torch.randperm(n, generator=generator)
                       for _ in range(-(-probes // n))])[:probes]
    t = torch.empty(probes, dtype=torch.float64)     # z^T H z
    q2 = torch.empty(probes, dtype=torch.float64)    # ||H z||^2
    s1 = torch.empty(probes, dtype=torch.float64)    # z^T H_i z
    w2 = torch.empty(probes, dtype=torch.float64)    # ||H_i z||^2
    bar = tqdm(total=probes, desc="stability", disable=not progress)
    k = 0
    for i in torch.unique(order).tolist():  # one gradient graph per sample probed
        count = int((order == i).sum())
        sample_loss, _ = loss_from_model(model, loss_fn, (x[i:i + 1], y[i:i + 1]))
        op_i = HessianOperator(sample_loss, params, "autograd")
        for _ in range(count):
            z = rademacher((op.n,), generator, op.dtype, op.device)
            hz = op(z)
            t[k] = torch.dot(hz, z).item()
            q2[k] = torch.dot(hz, hz).item()
            hiz = op_i(z)
            s1[k] = torch.dot(hiz, z).item()
            w2[k] = torch.dot(hiz, hiz).item()
            k += 1
            bar.update(1)
    bar.close()

    trace, trace_se = _mean_se(t)
    trace_sq, trace_sq_se = _mean_se(q2)
    sample_sq, sample_sq_se = _mean_se(w2)
    mix = batch_mixing(batch_size, n, replacement)
    s_batch, s_se = _s_batch(mix, t, q2, s1, w2)
    lam = top_eigenvalues(full_loss, params, k=1, iters=iters, generator=generator)[0].item()
    return StabilityReport(
        lr=lr, batch_size=batch_size, n_samples=n, replacement=replacement,
        loss=float(value), trace=trace, trace_stderr=trace_se, lambda_max=lam,
        trace_sq=trace_sq, trace_sq_stderr=trace_sq_se, sample_trace_sq=sample_sq,
        sample_trace_sq_stderr=sample_sq_se, s_batch=s_batch, s_batch_stderr=s_se)


# ----------------------------------------------------------------------------- reproductions

class MinimaComparison(NamedTuple):
    """Minima reached by GD and by SGD (one entry per independent SGD run) at the same ``lr``.

    ``gd`` / ``sgd[r]`` are :class:`StabilityReport` s at the final points (``None`` where that
    run diverged); ``*_status`` is ``"converged"``, ``"diverged"`` or ``"max_steps"``, and
    ``*_steps`` the steps taken. All reports use the SGD batch size, so ``gd.batch_stable``
    says whether GD's minimum could be stable for that SGD.
    """

    lr: float
    batch_size: int
    gd: StabilityReport | None
    sgd: tuple
    gd_status: str
    sgd_status: tuple
    gd_steps: int
    sgd_steps: tuple

    @property
    def gd_ratio(self) -> float:
        """``lr * tr(H) / 2`` at GD's minimum (``nan`` if GD diverged)."""
        return self.gd.sgd_ratio if self.gd is not None else math.nan

    @property
    def sgd_ratios(self) -> tuple:
        """``lr * tr(H) / 2`` at each converged SGD minimum."""
        return tuple(r.sgd_ratio for r, s in zip(self.sgd, self.sgd_status)
                     if r is not None and s == "converged")

    def __str__(self) -> str:
        def fmt(r):
            return "diverged" if r is None else (
                f"lr*tr/2 = {r.sgd_ratio:.3f}, lr*S_B/2 = {r.batch_ratio:.3f}, "
                f"lr*lambda_max/2 = {r.gd_ratio:.3f}, loss {r.loss:.1e}")
        lines = [f"lr = {self.lr:g}, SGD batch size {self.batch_size}",
                 f"  GD  ({self.gd_status}, {self.gd_steps} steps): {fmt(self.gd)}"]
        for k, (r, s, st) in enumerate(zip(self.sgd, self.sgd_status, self.sgd_steps)):
            lines.append(f"  SGD run {k} ({s}, {st} steps): {fmt(r)}")
        return "\n".join(lines)


def _half_mse(out: Tensor, target: Tensor) -> Tensor:
    """``0.5 * mean((out - target)^2)``, the square loss of Wu & Su."""
    return 0.5 * (out.reshape(target.shape) - target).pow(2).mean()


def _train(grad_fn, loss_fn, params: list[Tensor], x: Tensor, y: Tensor, lr: float,
           batch_size: int | None, tol: float, max_steps: int, generator: torch.Generator,
           check_every: int, progress: bool, desc: str):
    """GD (``batch_size=None``) or SGD with batches drawn with replacement, on ``R``
    independent copies at once (params carry a leading run dimension). Stops a run when its
    full loss is below ``tol`` (checked every ``check_every`` steps) or it diverges (then its
    parameters are zeroed so that it stays finite and still)."""
    runs = params[0].shape[0]
    n = x.shape[0]
    status = ["max_steps"] * runs
    steps = [max_steps] * runs
    active = torch.ones(runs, dtype=torch.bool)
    bar = tqdm(total=max_steps, desc=desc, disable=not progress)
    done = 0
    while done < max_steps and bool(active.any()):
        chunk = min(check_every, max_steps - done)
        idx = (torch.randint(n, (chunk, runs, batch_size), generator=generator)
               if batch_size is not None else None)
        mask = active.to(x.dtype)
        for s in range(chunk):
            if idx is None:
                grads = grad_fn(params, x, y)
            else:
                grads = grad_fn(params, x[idx[s]], y[idx[s]])
            for p, g in zip(params, grads):
                p.sub_(g * (lr * mask.view(-1, *([1] * (g.dim() - 1)))))
        done += chunk
        bar.update(chunk)
        loss = loss_fn(params, x, y)
        for r in torch.nonzero(active).flatten().tolist():
            value = loss[r].item()
            if not math.isfinite(value) or value > 1e8:
                status[r], steps[r] = "diverged", done
                active[r] = False
                for p in params:
                    p[r].zero_()
            elif value < tol:
                status[r], steps[r] = "converged", done
                active[r] = False
    bar.close()
    return params, status, steps


def _compare(build, grad_fn, loss_fn, init, x, y, lr, batch_size, runs, tol, max_steps,
                  probes, seed, check_every, progress) -> MinimaComparison:
    gen = torch.Generator().manual_seed(seed + 1)
    gd_params, gd_status, gd_steps = _train(
        grad_fn, loss_fn, [p[None].clone() for p in init], x, y, lr, None, tol, max_steps,
        gen, check_every, progress, "GD")
    sgd_params, sgd_status, sgd_steps = _train(
        grad_fn, loss_fn, [p[None].repeat(runs, *([1] * p.dim())) for p in init], x, y, lr,
        batch_size, tol, max_steps, gen, check_every, progress, f"SGD B={batch_size}")
    probe_gen = torch.Generator().manual_seed(seed + 2)

    def report(ps, r, status):
        if status == "diverged":
            return None
        return stability_report(build([p[r] for p in ps]), _half_mse, (x, y), lr, batch_size,
                                probes=probes, generator=probe_gen)

    return MinimaComparison(
        lr=lr, batch_size=batch_size, gd=report(gd_params, 0, gd_status[0]),
        sgd=tuple(report(sgd_params, r, s) for r, s in enumerate(sgd_status)),
        gd_status=gd_status[0], sgd_status=tuple(sgd_status), gd_steps=gd_steps[0],
        sgd_steps=tuple(sgd_steps))


def _check_reproduction_args(lr, batch_size, n, runs, tol, max_steps, probes, seed, progress):
    lr = check_positive("lr", lr)
    n = check_int("n", n, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= n ({n}), got {batch_size}")
    check_int("runs", runs, 1)
    check_positive("tol", tol)
    check_int("max_steps", max_steps, 1)
    check_int("probes", probes, 1)
    check_int("seed", seed, 0)
    check_flag("progress", progress)
    return lr


class _DiagonalNet(nn.Module):
    """``f(x) = <u * v, x>``."""

    def __init__(self, u: Tensor, v: Tensor):
        super().__init__()
        self.u, self.v = nn.Parameter(u.clone()), nn.Parameter(v.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x @ (self.u * self.v)


def diagonal_network_minima(lr: float = 0.03, *, batch_size: int = 1, n: int = 20, d: int = 40,
                            sparsity: int = 3, init_scale: float = 1.5, runs: int = 4,
                            tol: float = 1e-12, max_steps: int = 100_000, probes: int = 100,
                            seed: int = 0, progress: bool = False) -> MinimaComparison:
    r"""Train a diagonal linear network by GD and by SGD at one ``lr``; report both minima.

    .. math::

        f(x) = \langle u \odot v, x\rangle, \quad
        L(u, v) = \frac1{2n}\sum_{i=1}^n (f(x_i) - y_i)^2, \quad
        y_i = \langle \beta^*, x_i \rangle, \quad
        \operatorname{tr} H = \frac1n \sum_i \sum_k (u_k^2 + v_k^2) x_{ik}^2

    at an interpolating minimum, with :math:`x_i \sim N(0, I_d)`, :math:`\beta^*` equal to 1 on
    its first ``sparsity`` coordinates and 0 elsewhere, :math:`n < d` (many global minima),
    and the start :math:`u = \alpha \mathbf 1`, :math:`v = 0`. GD nearly conserves
    :math:`u_k^2 - v_k^2 = \alpha^2` and ends where :math:`\operatorname{tr} H \approx d\alpha^2`
    (only :math:`\lambda_{\max} \le 2/\eta` restrains it); SGD must end where
    :math:`\operatorname{tr} H \le 2/\eta` or diverge (Wu & Su). Per-sample SGD (batches with
    replacement) runs ``runs`` independent chains at once in float64 with hand-written
    gradients; each final point goes through :func:`stability_report`. Everything runs on one
    intra-op thread (restored afterwards): tiny tensor ops only lose from more threads.

    Args:
        lr: learning rate, > 0.
        batch_size: SGD batch size, 1 <= B <= n.
        n, d, sparsity: samples, dimension, nonzeros of the target (1 <= sparsity <= d).
        init_scale: :math:`\alpha > 0`.
        runs: independent SGD runs (GD is deterministic: one run).
        tol: stop a run when its loss falls below this.
        max_steps: step budget per run.
        probes: Hutchinson probes of each report.
        seed: seeds the data (``seed``), the batches (``seed + 1``) and the probes
            (``seed + 2``).
        progress: tqdm bars over steps.

    Returns:
        :class:`MinimaComparison` (``gd_ratio`` and ``sgd_ratios`` are :math:`\eta
        \operatorname{tr} H / 2`).

    References:
        L. Wu, W. J. Su, arXiv:2305.17490 (Section 4, diagonal linear networks).

    Example:
        >>> c = diagonal_network_minima(0.03, runs=1, probes=100)
        >>> c.gd_ratio > 1 > max(c.sgd_ratios), c.gd.gd_stable
        (True, True)
    """
    lr = _check_reproduction_args(lr, batch_size, n, runs, tol, max_steps, probes, seed,
                                  progress)
    d = check_int("d", d, 1)
    sparsity = check_int("sparsity", sparsity, 1)
    if sparsity > d:
        raise ValueError(f"sparsity must be <= d ({d}), got {sparsity}")
    alpha = check_positive("init_scale", init_scale)
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    x = torch.randn(n, d, generator=g, dtype=dt)
    beta = torch.zeros(d, dtype=dt)
    beta[:sparsity] = 1.0
    y = x @ beta

    def grad_fn(ps, xb, yb):
        u, v = ps
        if xb.dim() == 2:  # full batch
            r = ((u * v) @ xb.T - yb) / xb.shape[0]
            gb = r @ xb
        else:
            r = (torch.einsum("rbd,rd->rb", xb, u * v) - yb) / xb.shape[1]
            gb = torch.einsum("rb,rbd->rd", r, xb)
        return gb * v, gb * u

    def loss_fn(ps, xb, yb):
        u, v = ps
        return 0.5 * ((u * v) @ xb.T - yb).pow(2).mean(-1)

    init = [torch.full((d,), alpha, dtype=dt), torch.zeros(d, dtype=dt)]
    return _compare(lambda ps: _DiagonalNet(*ps), grad_fn, loss_fn, init, x, y, lr,
                    batch_size, runs, tol, max_steps, probes, seed, 500, progress)


def _relu_net(ps: list[Tensor]) -> nn.Module:
    W, b, a = ps
    net = nn.Sequential(nn.Linear(W.shape[1], W.shape[0]), nn.ReLU(),
                        nn.Linear(W.shape[0], 1, bias=False)).to(W.dtype)
    with torch.no_grad():
        net[0].weight.copy_(W)
        net[0].bias.copy_(b)
        net[2].weight.copy_(a[None])
    return net


def relu_network_minima(lr: float = 0.05, *, batch_size: int = 1, n: int = 10, d: int = 3,
                        width: int = 100, init_scale: float = 1.0, runs: int = 4,
                        tol: float = 1e-10, max_steps: int = 100_000, probes: int = 100,
                        seed: int = 0, progress: bool = False) -> MinimaComparison:
    r"""Train a two-layer ReLU network by GD and by SGD at one ``lr``; report both minima.

    .. math::

        f(x) = \sum_{j=1}^m a_j \,\mathrm{relu}(w_j^\top x + b_j), \quad
        L = \frac1{2n}\sum_{i=1}^n (f(x_i) - y_i)^2, \quad
        \operatorname{tr} H = \frac1n \sum_i \|\nabla_\theta f(x_i)\|^2

    at an interpolating minimum. Data: :math:`x_i \sim N(0, I_d/d)`, targets from a random
    3-neuron ReLU teacher scaled to unit standard deviation; start :math:`w_j \sim N(0, s^2
    I_d)`, :math:`b = 0`, :math:`a_j \sim N(0, s^2/m)` (``s = init_scale``), shared by all
    runs. The network of width ``m = width`` over-parameterizes the ``n`` samples. Training
    and reporting as in :func:`diagonal_network_minima`.

    Args:
        lr: learning rate, > 0.
        batch_size: SGD batch size, 1 <= B <= n.
        n, d, width: samples, input dimension, hidden units.
        init_scale: :math:`s > 0`.
        runs, tol, max_steps, probes, seed, progress: as in :func:`diagonal_network_minima`.

    Returns:
        :class:`MinimaComparison`.

    References:
        L. Wu, W. J. Su, arXiv:2305.17490 (Section 3, two-layer ReLU networks).

    Example:
        >>> c = relu_network_minima(0.05, runs=1, probes=100)
        >>> max(c.sgd_ratios) <= 1 < c.gd_ratio
        True
    """
    lr = _check_reproduction_args(lr, batch_size, n, runs, tol, max_steps, probes, seed,
                                  progress)
    d = check_int("d", d, 1)
    m = check_int("width", width, 1)
    s = check_positive("init_scale", init_scale)
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    x = torch.randn(n, d, generator=g, dtype=dt) / math.sqrt(d)
    teacher_w = torch.randn(3, d, generator=g, dtype=dt)
    teacher_a = torch.randn(3, generator=g, dtype=dt)
    y = torch.relu(x @ teacher_w.T) @ teacher_a
    y = y / y.std() if n > 1 and y.std() > 0 else y

    # broadcast-and-sum instead of einsum/bmm: these tensors are tiny, and BLAS calls on them
    # were 4x slower with two threads than with one on a loaded 2-core machine
    def forward(ps, xb):
        W, b, a = ps
        xb = xb.expand(W.shape[0], *xb.shape[-2:])
        z = (W[:, None] * xb[:, :, None, :]).sum(-1) + b[:, None]  # (runs, batch, width)
        h = torch.relu(z)
        return (h * a[:, None]).sum(-1), z, h, xb

    def grad_fn(ps, xb, yb):
        W, b, a = ps
        f, z, h, xb = forward(ps, xb)
        r = (f - yb) / xb.shape[-2]
        dz = r[:, :, None] * (z > 0) * a[:, None]
        gW = (dz[..., None] * xb[:, :, None, :]).sum(1)
        return gW, dz.sum(1), (r[..., None] * h).sum(1)

    def loss_fn(ps, xb, yb):
        return 0.5 * (forward(ps, xb)[0] - yb).pow(2).mean(-1)

    init = [torch.randn(m, d, generator=g, dtype=dt) * s, torch.zeros(m, dtype=dt),
            torch.randn(m, generator=g, dtype=dt) * (s / math.sqrt(m))]
    return _compare(_relu_net, grad_fn, loss_fn, init, x, y, lr, batch_size, runs, tol,
                    max_steps, probes, seed, 500, progress)
