r"""Consensus-based optimization (CBO) and its relatives on one interacting-particle core.

CBO moves ``N`` particles towards a Gibbs-weighted mean of themselves and shakes them with noise
that vanishes as they agree (Pinnau, Totzeck, Tse, Martin 2017). Riedl, Klock, Geldhauser and
Fornasier (arXiv 2306.09778) read it as a stochastic relaxation of gradient descent: with
``alpha`` large the consensus is a smoothed proximal step, so CBO behaves like gradient descent
on the objective without ever computing a gradient.

One step is Euler--Maruyama on the particle system, run by :func:`stepping.integrate.integrate`
with the shared :class:`stepping.noise.Brownian` noise:

- :class:`CBOStepper`: CBO (isotropic or anisotropic noise), the consensus-hopping scheme and
  polarized CBO (kernel-localised consensus, for several minima);
- :class:`CBSStepper`: consensus-based sampling (Carrillo, Hoffmann, Stuart, Vaes), in its
  sampling and optimization modes.

Users call :func:`cbo_minimize` / :func:`cbs_sample` on a function of a ``(..., d)`` tensor, or
train the parameters of an ``nn.Module`` without gradients with the :class:`CBO` optimizer.
Particles may be spread over ``torch.distributed`` ranks (``process_group=``): the consensus is
then reduced by ``all_reduce`` in log space.
"""

from __future__ import annotations

import functools
import math
import warnings
from numbers import Real
from typing import Callable, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.func import functional_call, vmap

from stochstep.stepping.checks import (check_flag, check_int, check_nonnegative, check_positive,
                                       check_real)
from stochstep.stepping.grids import uniform
from stochstep.stepping.integrate import integrate
from stochstep.stepping.noise import (Brownian, make_generator, require_noise, same_device,
                                      standard_normal_like)
from stochstep.stepping.optimizer import KernelOptimizer, check_lr, run_eagerly
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["CBO", "CBOResult", "CBOStepper", "CBSStepper", "EffectiveSampleSize",
           "GeometricAlpha", "cbo_minimize", "cbs_sample", "consensus_point", "noise_source"]

NOISES = ("anisotropic", "isotropic")
METHODS = ("cbo", "hopping", "polarized")
HISTORY = ("consensus", "best_value", "alpha", "particles", "energy")


# -- alpha schedules ---------------------------------------------------------------------------
class GeometricAlpha:
    r"""``alpha_k = min(start * factor ** k, maximum)``: CBXpy's default growth (30, 1.05, 1e5).

    Example:
        >>> GeometricAlpha(30.0)(2)
        33.075
    """

    def __init__(self, start: float, factor: float = 1.05, maximum: float = 1e5):
        self.start = check_positive("start", start)
        self.factor = check_positive("factor", factor)
        self.maximum = check_positive("maximum", maximum)

    def __call__(self, k: int) -> float:
        return min(self.start * self.factor ** k, self.maximum)

    def __repr__(self) -> str:
        return f"GeometricAlpha({self.start}, factor={self.factor}, maximum={self.maximum})"


class EffectiveSampleSize:
    r"""Per-run ``alpha`` such that the Gibbs weights keep an effective sample size ``eta N``.

    .. math::

        J(\alpha) = \frac{\big(\sum_i e^{-\alpha f_i}\big)^2}{\sum_i e^{-2\alpha f_i}}
        = \eta N,

    solved by bisection on :math:`\log\alpha \in [\log \alpha_{\min}, \log \alpha_{\max}]`
    (:math:`J` falls from :math:`N` to the number of minimisers as :math:`\alpha` grows); where
    even :math:`\alpha_{\max}` keeps :math:`J > \eta N` (all energies nearly equal) the result is
    :math:`\alpha_{\max}`, and :math:`\alpha_{\min}` where even it gives :math:`J < \eta N`.

    References:
        J. A. Carrillo, F. Hoffmann, A. M. Stuart, U. Vaes, "Consensus-based sampling",
        Stud. Appl. Math. 148 (2022), arXiv:2106.02519.

    Example:
        >>> energy = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
        >>> a = EffectiveSampleSize(0.5)(energy)
        >>> w = torch.softmax(-a[:, None] * energy, -1)
        >>> round((1 / (w ** 2).sum()).item(), 3)   # J = 0.5 * 4
        2.0
    """

    def __init__(self, eta: float = 0.5, *, minimum: float = 1e-5, maximum: float = 1e5,
                 iters: int = 60):
        self.eta = check_positive("eta", eta)
        if self.eta >= 1:
            raise ValueError(f"eta must lie in (0, 1), got {eta!r}")
        self.minimum = check_positive("minimum", minimum)
        self.maximum = check_positive("maximum", maximum)
        if self.maximum <= self.minimum:
            raise ValueError(f"maximum must exceed minimum, got {minimum!r} and {maximum!r}")
        self.iters = check_int("iters", iters)

    def __call__(self, energy: Tensor) -> Tensor:
        e = torch.where(torch.isfinite(energy), energy, torch.inf).to(torch.float64)
        n_valid = torch.isfinite(e).sum(-1)
        e = e - e.amin(-1, keepdim=True)   # J is shift invariant; keeps exp in range
        lo = torch.full(e.shape[:-1], math.log(self.minimum), dtype=torch.float64,
                        device=e.device)
        hi = torch.full_like(lo, math.log(self.maximum))

        def gap(log_a: Tensor) -> Tensor:
            a = log_a.exp().unsqueeze(-1)
            j = (2 * torch.logsumexp(-a * e, -1) - torch.logsumexp(-2 * a * e, -1)).exp()
            return j - self.eta * n_valid

        for _ in range(self.iters):
            mid = (lo + hi) / 2
            big = gap(mid) > 0          # still too many effective samples: raise alpha
            lo = torch.where(big, mid, lo)
            hi = torch.where(big, hi, mid)
        return ((lo + hi) / 2).exp()

    def __repr__(self) -> str:
        return f"EffectiveSampleSize({self.eta}, minimum={self.minimum}, maximum={self.maximum})"


def _check_alpha(alpha):
    if isinstance(alpha, (EffectiveSampleSize, GeometricAlpha)) or (
            callable(alpha) and not isinstance(alpha, Real)):
        return alpha
    return check_positive("alpha", alpha)


def _alpha_at(alpha, k: int, energy: Tensor):
    """``alpha`` for step ``k``: a float, or a (runs,) tensor from an ESS target."""
    if isinstance(alpha, EffectiveSampleSize):
        return alpha(energy).to(energy.dtype)
    if callable(alpha):
        value = alpha(k)
        if not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"alpha({k}) must return a finite number > 0, got {value!r}")
        return float(value)
    return alpha


# -- the consensus ---------------------------------------------------------------------------
def _log_weights(energy: Tensor, alpha, checked: bool = False) -> Tensor:
    """``-alpha f``; particles whose energy is not finite get weight zero (log weight -inf).
    ``checked``: the energies are finite or +inf already (the steppers' energies are)."""
    a = alpha.unsqueeze(-1) if isinstance(alpha, Tensor) else alpha
    if checked:
        return energy * -a
    return torch.where(torch.isfinite(energy), -a * energy, -torch.inf)


def _weighted_mean(x: Tensor, logw: Tensor, group=None) -> Tensor:
    """``sum_i w_i x_i / sum_i w_i`` over the particle axis (-2), stabilised by the largest log
    weight; over the ranks of ``group`` when given (max all-reduced first, then the sums).

    Weights below ``e * tiny`` of the largest (``tiny``: the dtype's smallest normal number) are
    set to zero rather than computed: ``exp`` of such arguments takes a subnormal slow path
    (5-20x slower on the CPU), and weights that small cannot move a sum holding the weight 1."""
    top = logw.amax(-1, keepdim=True)
    if group is not None:
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
    # one scalar check; the elementwise one only when the sum is not finite
    if not math.isfinite(float(top.sum())) and not bool(torch.isfinite(top).all()):
        if (top == torch.inf).any():
            raise ValueError("alpha * f overflows for some particle (energies below "
                             "-1e308 / alpha): lower alpha or shift the objective")
        raise ValueError("the objective returned no finite value for every particle of some "
                         "run: the consensus is undefined")
    d = logw - top
    floor = _log_floor(d.dtype)
    w = d.clamp_min(floor).exp_().masked_fill_(d < floor, 0.0)
    total = w.sum(-1, keepdim=True)
    # bmm for the steppers' (M, N) x (M, N, d) case: matmul's broadcasting costs a few us
    same = x.ndim == 3 and w.ndim == 2 and w.shape[0] == x.shape[0]
    num = (torch.bmm(w.unsqueeze(1), x) if same else w.unsqueeze(-2) @ x).squeeze(-2)
    if group is not None:
        both = torch.cat([total, num], -1)
        dist.all_reduce(both, group=group)
        total, num = both[..., :1], both[..., 1:]
    return num / total


@functools.cache
def _log_floor(dtype: torch.dtype) -> float:
    """``log(e * tiny)``: the smallest log weight ``_weighted_mean`` exponentiates."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


def consensus_point(x: Tensor, energy: Tensor, alpha) -> Tensor:
    r"""The CBO consensus of particles ``x`` (``(..., N, d)``) with energies ``(..., N)``.

    .. math::

        c_\alpha = \frac{\sum_i x_i\, e^{-\alpha (f_i - \min_j f_j)}}
                        {\sum_i e^{-\alpha (f_i - \min_j f_j)}},

    computed in log space, so any ``alpha`` is safe; particles with a non-finite energy get
    weight zero. ``alpha`` is a float or a tensor over the leading (run) dimensions.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> consensus_point(x, torch.tensor([0.0, 1.0]), 1e6)
        tensor([0.])
    """
    return _weighted_mean(x, _log_weights(energy, alpha))


# -- the steppers ------------------------------------------------------------------------------
class _Particles:
    """What every consensus dynamics shares: evaluating the objective (shape check, non-finite
    energies counted), alpha schedules, particle mini-batches, the best value seen, history and
    stopping rules. Subclasses implement ``_move(x, energy, alpha, dt, noise)``.

    ``x`` is ``(M runs, N particles, d)``; under ``process_group`` each rank holds the slice
    ``shard`` of the particle axis out of ``n_total``.
    """

    order = 1.0
    strong_order = 0.5
    _partial_allowed = True

    def __init__(self, f: Callable[[Tensor], Tensor], *, alpha, batch_size: int | None,
                 batch_partial: bool, generator: torch.Generator | None,
                 energy_tol: float | None, diff_tol: float | None, max_evals: int | None,
                 patience: int | None, history, process_group=None, noise_dtype=None):
        if noise_dtype is not None and (not isinstance(noise_dtype, torch.dtype)
                                        or not noise_dtype.is_floating_point):
            raise ValueError(f"noise_dtype must be a floating torch.dtype or None, got "
                             f"{noise_dtype!r}")
        self.noise_dtype = noise_dtype
        if not callable(f):
            raise ValueError(f"f must be callable, got {type(f).__name__}")
        self.f = f
        self.alpha = _check_alpha(alpha)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, 2)
        self.batch_partial = check_flag("batch_partial", batch_partial)
        self.generator = make_generator(generator)
        self.energy_tol = None if energy_tol is None else check_real("energy_tol", energy_tol)
        self.diff_tol = None if diff_tol is None else check_positive("diff_tol", diff_tol)
        self.max_evals = None if max_evals is None else check_int("max_evals", max_evals)
        self.patience = None if patience is None else check_int("patience", patience)
        if history is True:
            history = ("consensus", "best_value", "alpha")
        history = () if history is False or history is None else tuple(history)
        unknown = set(history) - set(HISTORY)
        if unknown:
            raise ValueError(f"history names must come from {HISTORY}, got {sorted(unknown)}")
        self.history_names = history
        self.group = process_group
        if process_group is not None and isinstance(self.alpha, EffectiveSampleSize):
            raise ValueError("alpha=EffectiveSampleSize(...) is not supported with "
                             "process_group: it would need every rank's energies")
        if process_group is not None and self.batch_size is not None:
            raise ValueError("batch_size is not supported with process_group: mini-batches "
                             "would have to be drawn across ranks")
        self.shard: slice | None = None
        self.n_total: int | None = None
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.evaluations: Tensor | None = None
        self.invalid = 0
        self.best_value: Tensor | None = None
        self.best_particle: Tensor | None = None
        self.consensus: Tensor | None = None
        self.active: Tensor | None = None
        self.stopped_by: list[str | None] = []
        self.history: dict[str, list] = {name: [] for name in self.history_names}
        self.finished = False
        self._all_active = True      # no run has stopped: the masking below can be skipped
        self._perm: Tensor | None = None
        self._stale: Tensor | None = None
        self._per_step = 0
        self._work: dict[str, Tensor] = {}

    # -- pieces -------------------------------------------------------------------------------
    def energy(self, x: Tensor, active: Tensor | None = None) -> Tensor:
        e = self.f(x)
        if not isinstance(e, Tensor) or e.shape != x.shape[:-1]:
            raise ValueError(f"f must map particles of shape {tuple(x.shape)} to energies of "
                             f"shape {tuple(x.shape[:-1])}, got "
                             f"{tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__}")
        e = e.to(x.dtype)
        # a NaN or infinity makes the sum non-finite: one scalar check for the common case
        if math.isfinite(float(e.sum())):
            return e
        finite = torch.isfinite(e)
        if bool(finite.all()):       # finite energies whose sum overflowed
            return e
        bad = ~finite if active is None else ~finite & active.unsqueeze(-1)
        self.invalid += int(bad.sum())
        # +inf: weight zero in the consensus, never the best value
        return torch.where(finite, e, torch.inf)

    def _batch(self, m: int, n: int, x: Tensor) -> Tensor:
        """Indices (m, batch) of this step's mini-batch: epochs of per-run random permutations
        (a fresh permutation when fewer than ``batch_size`` indices remain)."""
        b = self.batch_size
        if self._perm is None or self._perm.shape[1] < b:
            keys = torch.rand(m, n, generator=self.generator, dtype=torch.float64,
                              device=self.generator.device)
            self._perm = keys.argsort(-1).to(x.device)
        idx, self._perm = self._perm[:, :b], self._perm[:, b:]
        return idx

    def _standard_normal(self, noise, like: Tensor) -> Tensor:
        """Noise for the local particles; under a process group every rank draws the whole
        ensemble's noise and keeps its slice, so the run does not depend on the world size."""
        dtype = self.noise_dtype or like.dtype
        shape = like.shape if self.shard is None else like.shape[:-2] + (self.n_total,
                                                                          like.shape[-1])
        if isinstance(noise, Brownian):    # drawn into a buffer kept across steps
            buf = self._buffer("noise", shape, dtype, noise.generator.device)
            z = noise.standard_normal(buf, out=buf)
        else:
            z = noise.standard_normal(like.new_empty(shape, dtype=dtype))
        z = z if self.shard is None else z[..., self.shard, :]
        return z.to(like.device, like.dtype)    # drawn on the generator's device

    def _weighted_mean(self, x: Tensor, logw: Tensor) -> Tensor:
        return _weighted_mean(x, logw, self.group)

    def _buffer(self, name: str, shape, dtype: torch.dtype, device) -> Tensor:
        """Scratch tensor ``name``, reused from step to step: a fresh particle-sized allocation
        every step costs page faults once the allocator hands large blocks back to the OS."""
        buf = self._work.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or \
                not same_device(buf.device, torch.device(device)):
            buf = self._work[name] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    # -- one step -------------------------------------------------------------------------------
    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        dt = t1 - t0
        if not dt > 0:
            raise ValueError(f"consensus dynamics run forward in time, got a step from {t0} "
                             f"to {t1}")
        require_noise(noise, type(self).__name__)
        if x.ndim != 3:
            raise ValueError(f"particles must have shape (M runs, N, d), got {tuple(x.shape)}")
        if self.finished:
            raise RuntimeError("every run has met a stopping rule; call reset() to run again")
        m, n, _ = x.shape
        if self.evaluations is None:
            self.evaluations = torch.zeros(m, dtype=torch.int64, device=x.device)
            self.active = torch.ones(m, dtype=torch.bool, device=x.device)
            self._stale = torch.zeros(m, dtype=torch.int64, device=x.device)
            self._rows = torch.arange(m, device=x.device)
            self.stopped_by = [None] * m
        idx = None if self.batch_size is None or self.batch_size >= n else self._batch(m, n, x)
        xb = x if idx is None else x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        # counted over all ranks, so that max_evals means the same budget however sharded
        self._per_step = xb.shape[1] if self.shard is None else self.n_total
        if self.max_evals is not None and self.steps == 0 and self._per_step > self.max_evals:
            raise ValueError(f"max_evals = {self.max_evals} is below one step's "
                             f"{self._per_step} evaluations per run")
        act = None if self._all_active else self.active.clone()
        e = self.energy(xb, act)
        self.evaluations += self._per_step if act is None else torch.where(act, self._per_step, 0)
        alpha = _alpha_at(self.alpha, self.steps, e)
        self._track_best(xb, e, act)
        before = None if act is None else x.clone()
        if idx is not None and self.batch_partial and self._partial_allowed:
            xb = xb.clone()
            c = self._move(xb, e, alpha, dt, noise)
            x.scatter_(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]), xb)
        else:
            c = self._move(x, e, alpha, dt, noise, batch=(xb, e) if idx is not None else None)
        previous = self.consensus
        if before is not None:   # stopped runs keep their particles and results
            x.copy_(torch.where(act[:, None, None], x, before))
            keep = act.reshape(-1, *[1] * (c.ndim - 1))
            c = torch.where(keep, c, previous)
        self.consensus = c
        self._record(x, e, alpha)
        self.steps += 1
        self._check_stop(previous)

    def _track_best(self, xb: Tensor, e: Tensor, act: Tensor | None) -> None:
        value, arg = e.min(-1)          # non-finite energies are +inf here
        if self.group is not None:
            # the best particle lives on one rank: reduce (value, rank) pairs
            best = value.clone()
            dist.all_reduce(best, op=dist.ReduceOp.MIN, group=self.group)
            rank = torch.where(value == best, dist.get_rank(self.group), 1 << 30)
            dist.all_reduce(rank, op=dist.ReduceOp.MIN, group=self.group)
            particle = xb[self._rows, arg]
            particle = torch.where((rank == dist.get_rank(self.group))[:, None], particle, 0)
            dist.all_reduce(particle, group=self.group)
            value = best
        else:
            particle = xb[self._rows, arg]
        if self.best_value is None:
            self.best_value, self.best_particle = value.clone(), particle.clone()
            return
        better = value < self.best_value
        if act is not None:
            better &= act
        if self.patience is not None:
            self._stale = torch.where(better, 0, self._stale + 1)
        self.best_value = torch.where(better, value, self.best_value)
        self.best_particle = torch.where(better[:, None], particle, self.best_particle)

    def _record(self, x: Tensor, e: Tensor, alpha) -> None:
        for name in self.history_names:
            if name == "consensus":
                value = self.consensus.clone()
            elif name == "best_value":
                value = self.best_value.clone()
            elif name == "alpha":
                value = alpha.clone() if isinstance(alpha, Tensor) else alpha
            elif name == "particles":
                value = x.clone()
            else:
                value = e.clone()
            self.history[name].append(value)

    def _check_stop(self, previous: Tensor | None) -> None:
        rules = []
        if self.energy_tol is not None:
            rules.append(("energy_tol", self.best_value < self.energy_tol))
        if self.diff_tol is not None and previous is not None and previous.shape == \
                self.consensus.shape:
            move = (self.consensus - previous).flatten(1).norm(dim=-1)
            rules.append(("diff_tol", move < self.diff_tol))
        if self.max_evals is not None:
            rules.append(("max_evals", self.evaluations + self._per_step > self.max_evals))
        if self.patience is not None:
            rules.append(("patience", self._stale >= self.patience))
        if not rules:
            return
        for name, hit in rules:
            for i in (hit & self.active).nonzero().flatten().tolist():
                self.stopped_by[i] = name
            self.active &= ~hit
        self._all_active = bool(self.active.all())
        self.finished = not bool(self.active.any())

    def _move(self, x, energy, alpha, dt, noise, batch=None) -> Tensor:
        raise NotImplementedError


class CBOStepper(_Particles):
    r"""One step of consensus-based optimization on ``(M, N, d)`` particles.

    With energies :math:`f_i = f(x_i)`, :math:`\alpha = \alpha_k`, step :math:`\Delta t`
    (``t1 - t0``) and :math:`\xi_i \sim N(0, I_d)`:

    .. math::

        c = \frac{\sum_j x_j e^{-\alpha f_j}}{\sum_j e^{-\alpha f_j}}, \qquad
        x_i \leftarrow x_i - \lambda \Delta t\,(x_i - c) + \sigma \sqrt{\Delta t}\; D_i \xi_i,

    with :math:`D_i \xi_i = (x_i - c) \odot \xi_i` (``noise="anisotropic"``) or
    :math:`\lVert x_i - c\rVert_2\, \xi_i` (``"isotropic"``). ``method="hopping"`` replaces the
    step by the consensus-hopping scheme :math:`x_i \leftarrow c + \sigma \xi_i` (no drift, no
    :math:`\Delta t`); ``method="polarized"`` gives every particle its own consensus
    :math:`c_i`, weighted by :math:`k(x_i, x_j) e^{-\alpha f_j}` with the Gaussian kernel
    :math:`k(x, y) = e^{-\lVert x - y\rVert^2 / (2\kappa^2)}` (O(N^2) per step).

    With a ``batch_size``, the consensus uses a random mini-batch of particles per run (epochs of
    random permutations) and only the batch moves (``batch_partial=True``, CBXpy's default) or
    every particle moves towards the batch's consensus.

    References:
        K. Riedl, T. Klock, C. Geldhauser, M. Fornasier, "Gradient is All You Need?",
        arXiv:2306.09778 (CBO as relaxed gradient descent; consensus hopping).
        R. Pinnau, C. Totzeck, O. Tse, S. Martin, "A consensus-based model for global
        optimization and its mean-field limit", M3AS 27 (2017), arXiv:1604.05648.
        S. Carrillo, Y.-P. Choi, C. Totzeck, O. Tse, "An analytical framework for consensus-based
        global optimization method", M3AS 28 (2018) (anisotropic noise: Carrillo, Jin, Li, Zhu,
        arXiv:1909.09249).
        L. Bungert, T. Roith, P. Wacker, "Polarized consensus-based dynamics for optimization and
        sampling", arXiv:2211.05238.
    """

    def __init__(self, f, *, lam: float | None = None, sigma: float = 1.0, alpha=100.0,
                 noise: str | None = None, method: str = "cbo", kappa: float | None = None,
                 batch_size: int | None = None, batch_partial: bool | None = None,
                 generator: torch.Generator | None = None, energy_tol: float | None = None,
                 diff_tol: float | None = None, max_evals: int | None = None,
                 patience: int | None = None, history=False, process_group=None,
                 noise_dtype: torch.dtype | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        # options that the chosen method would not use are refused, not ignored
        unused = {"lam": lam is not None and method == "hopping",
                  "noise": noise is not None and method == "hopping",
                  "kappa": kappa is not None and method != "polarized",
                  "batch_partial": batch_partial is not None and batch_size is None}
        for name, given in unused.items():
            if given:
                raise ValueError(f"{name} does not apply here (method={method!r}, "
                                 f"batch_size={batch_size!r}); leave it unset")
        self.lam = check_nonnegative("lam", 1.0 if lam is None else lam)
        self.sigma = check_nonnegative("sigma", sigma)
        noise = "anisotropic" if noise is None else noise
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.noise, self.method = noise, method
        self.kappa = check_positive("kappa", 1.0 if kappa is None else kappa)
        batch_partial = True if batch_partial is None else batch_partial
        if method == "polarized" and process_group is not None:
            raise ValueError("method='polarized' needs every particle's position on every rank; "
                             "it is not supported with process_group")
        super().__init__(f, alpha=alpha, batch_size=batch_size, batch_partial=batch_partial,
                         generator=generator, energy_tol=energy_tol, diff_tol=diff_tol,
                         max_evals=max_evals, patience=patience, history=history,
                         process_group=process_group, noise_dtype=noise_dtype)

    def _consensus(self, x, energy, alpha, batch) -> Tensor:
        src, e = (x, energy) if batch is None else batch
        logw = _log_weights(e, alpha, checked=True)                        # (M, B)
        if self.method != "polarized":
            return self._weighted_mean(src, logw).unsqueeze(-2)            # (M, 1, d)
        logk = torch.cdist(x, src).square_().mul_(-0.5 / self.kappa ** 2)   # (M, N, B)
        return _weighted_mean(src.unsqueeze(-3), logk + logw.unsqueeze(-2))  # (M, N, d)

    def _move(self, x, energy, alpha, dt, noise, batch=None) -> Tensor:
        c = self._consensus(x, energy, alpha, batch)
        if self.method == "hopping":
            z = self._standard_normal(noise, x)
            x.copy_(torch.add(c, z, alpha=self.sigma))
            return c.squeeze(-2)
        drift = torch.sub(x, c, out=self._buffer("drift", x.shape, x.dtype, x.device))
        z = self._standard_normal(noise, x)
        scale = drift if self.noise == "anisotropic" else drift.norm(dim=-1, keepdim=True)
        # x - lam dt (x - c) + sigma sqrt(dt) D xi, as two fused passes over the particles
        x.add_(drift, alpha=-self.lam * dt).addcmul_(scale, z, value=self.sigma * math.sqrt(dt))
        return c.squeeze(-2) if self.method != "polarized" else c


class CBSStepper(_Particles):
    r"""One step of consensus-based sampling (CBS) on ``(M, N, d)`` particles.

    With Gibbs weights :math:`w_j \propto e^{-\alpha f_j}`, the weighted mean
    :math:`m = \sum_j w_j x_j` and covariance :math:`C = \sum_j w_j (x_j - m)(x_j - m)^\top`,
    :math:`a = e^{-\Delta t}` and :math:`\xi_i \sim N(0, I_d)`, every particle takes the exact
    step of the Ornstein--Uhlenbeck process :math:`dx = -(x - m)\,dt + \sqrt{2\lambda^{-1} C}\,dW`
    with :math:`m, C` frozen over the step:

    .. math::

        x_i \leftarrow m + a\,(x_i - m) + \sqrt{(1 - a^2)\,\lambda^{-1}}\; C^{1/2} \xi_i,
        \qquad \lambda^{-1} = 1 + \alpha \ (\text{sampling}), \quad 1 \ (\text{optimization}).

    For a Gaussian target :math:`e^{-f}` the sampling mode's mean-field law is stationary
    exactly at the target, for every :math:`\alpha`. :math:`C^{1/2}` is the symmetric square
    root (eigenvalues below zero by round-off are set to zero).

    References:
        J. A. Carrillo, F. Hoffmann, A. M. Stuart, U. Vaes, "Consensus-based sampling",
        Stud. Appl. Math. 148 (2022), arXiv:2106.02519.
    """

    _partial_allowed = False

    def __init__(self, f, *, alpha=1.0, mode: str = "sampling",
                 generator: torch.Generator | None = None, history=False, process_group=None):
        if mode not in ("sampling", "optimization"):
            raise ValueError(f"mode must be 'sampling' or 'optimization', got {mode!r}")
        self.mode = mode
        super().__init__(f, alpha=alpha, batch_size=None, batch_partial=True,
                         generator=generator, energy_tol=None, diff_tol=None, max_evals=None,
                         patience=None, history=history, process_group=process_group)

    def _move(self, x, energy, alpha, dt, noise, batch=None) -> Tensor:
        logw = _log_weights(energy, alpha, checked=True)
        m = self._weighted_mean(x, logw)                                   # (M, d)
        dev = x - m.unsqueeze(-2)
        outer = dev.unsqueeze(-1) * dev.unsqueeze(-2)                      # (M, N, d, d)
        cov = self._weighted_mean(outer.flatten(-2), logw).unflatten(-1, outer.shape[-2:])
        vals, vecs = torch.linalg.eigh(cov)
        root = (vecs * vals.clamp(min=0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)
        a = math.exp(-dt)
        inv_lam = 1.0 + alpha if self.mode == "sampling" else 1.0
        if isinstance(inv_lam, Tensor):
            inv_lam = inv_lam[:, None, None]
        scale = torch.sqrt(torch.as_tensor((1 - a * a) * inv_lam, dtype=x.dtype))
        z = self._standard_normal(noise, x)
        x.mul_(a).add_(m.unsqueeze(-2), alpha=1 - a).add_(scale * (z @ root.transpose(-1, -2)))
        return m


# -- functional interfaces ---------------------------------------------------------------------
class CBOResult(NamedTuple):
    """What :func:`cbo_minimize` / :func:`cbs_sample` return (shapes without ``M`` when ``x0``
    was ``(N, d)``).

    Attributes:
        consensus: the last consensus point, ``(M, d)`` (``(M, N, d)`` for polarized CBO).
        best_value: the lowest finite energy evaluated, ``(M,)``.
        best_particle: where it was evaluated, ``(M, d)``.
        particles: the final particles, ``(M, N, d)`` (this rank's shard under a process group).
        steps: steps taken (fewer than asked when every run met a stopping rule).
        evaluations: objective evaluations per run, ``(M,)``.
        invalid: energies that were NaN or infinite (those particles got weight zero); under a
            process group, this rank's only.
        stopped_by: per run, the stopping rule that ended it, or None.
        history: per asked name, a tensor stacked over steps (empty dict when not asked).
    """

    consensus: Tensor
    best_value: Tensor
    best_particle: Tensor
    particles: Tensor
    steps: int
    evaluations: Tensor
    invalid: int
    stopped_by: list
    history: dict


def _prepare(x0: Tensor, process_group):
    if not isinstance(x0, Tensor) or x0.ndim not in (2, 3) or not x0.is_floating_point():
        raise ValueError("x0 must be a floating-point tensor of shape (N, d) or (M, N, d), got "
                         f"{tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__}")
    single = x0.ndim == 2
    x = x0.unsqueeze(0) if single else x0
    n = x.shape[1]
    if n < 2:
        raise ValueError(f"x0 must hold at least 2 particles, got N = {n}")
    shard = None
    if process_group is not None:
        rank, world = dist.get_rank(process_group), dist.get_world_size(process_group)
        if n < world:
            raise ValueError(f"N = {n} particles cannot be shared by {world} ranks")
        bounds = [n * r // world for r in range(world + 1)]
        shard = slice(bounds[rank], bounds[rank + 1])
        x = x[:, shard]
    return x, single, shard, n


def noise_source(generator: torch.Generator, dtype: torch.dtype) -> Brownian:
    """The Brownian noise the functional interfaces step with: float64 normals by the
    vectorized Box--Muller transform (torch draws float64 normals with a scalar loop, the
    largest cost of a float64 step), ``torch.randn`` otherwise."""
    return Brownian(generator, method="box_muller" if dtype == torch.float64 else "randn")


def _run(stepper: _Particles, x0: Tensor, steps: int, dt: float, progress: bool,
         process_group, desc: str) -> CBOResult:
    steps = check_int("steps", steps)
    dt = check_positive("dt", dt)
    check_flag("progress", progress)
    x, single, stepper.shard, stepper.n_total = _prepare(x0, process_group)
    if stepper.shard is None:
        stepper.n_total = x.shape[1]
    stepper.reset()
    grid = uniform(0.0, steps * dt, steps)
    noise = noise_source(stepper.generator, stepper.noise_dtype or x.dtype)
    final = integrate(stepper, x, grid, noise=noise, progress=progress, desc=desc)
    if stepper.invalid:
        warnings.warn(f"{desc}: the objective returned {stepper.invalid} non-finite energies; "
                      "those particles got weight zero", RuntimeWarning, stacklevel=3)
    hist = {name: (torch.stack(v) if v and isinstance(v[0], Tensor) else
                   torch.tensor(v, dtype=torch.float64))
            for name, v in stepper.history.items()}
    drop = (lambda t: t.squeeze(0)) if single else (lambda t: t)
    hist = {k: (v.squeeze(1) if single and v.ndim > 1 else v) for k, v in hist.items()}
    return CBOResult(drop(stepper.consensus), drop(stepper.best_value),
                     drop(stepper.best_particle), drop(final), stepper.steps,
                     drop(stepper.evaluations), stepper.invalid,
                     stepper.stopped_by[0] if single else stepper.stopped_by, hist)


def cbo_minimize(f: Callable[[Tensor], Tensor], x0: Tensor, *, steps: int = 1000,
                 dt: float = 0.01, lam: float | None = None, sigma: float = 1.0, alpha=100.0,
                 noise: str | None = None, method: str = "cbo", kappa: float | None = None,
                 batch_size: int | None = None, batch_partial: bool | None = None,
                 energy_tol: float | None = None, diff_tol: float | None = None,
                 max_evals: int | None = None, patience: int | None = None, history=False,
                 generator: torch.Generator | None = None, progress: bool = False,
                 process_group=None, noise_dtype: torch.dtype | None = None) -> CBOResult:
    r"""Minimise ``f`` without gradients by consensus-based optimization.

    Runs :class:`CBOStepper` (whose docstring has the update) for ``steps`` steps of size
    ``dt`` on :func:`stepping.integrate.integrate`, or fewer when every run met a stopping rule.

    Args:
        f: maps particles ``(..., d)`` to energies ``(...)``; NaN/Inf energies get weight zero
            and are counted in ``.invalid``.
        x0: initial particles ``(N, d)`` or ``M`` independent runs ``(M, N, d)``; its dtype and
            device are kept, and it is not modified.
        steps, dt: number and size of the Euler--Maruyama steps.
        lam, sigma: drift rate :math:`\lambda` (default 1) and noise strength :math:`\sigma`
            (>= 0).
        alpha: a float; a callable from the step index to alpha (e.g.
            :class:`GeometricAlpha` or ``lambda k: min(30 * 1.05 ** k, 1e5)``, CBXpy's default
            growth); or :class:`EffectiveSampleSize` to solve for it every step.
        noise: ``"anisotropic"`` (the default: coordinate-wise, the one that scales to high d)
            or ``"isotropic"``.
        method: ``"cbo"``, ``"hopping"`` (consensus hopping: ``lam``, ``noise`` and ``dt`` do
            not enter it) or ``"polarized"`` (``kappa``, default 1, is its kernel width; the
            consensus is then one point per particle, ``(M, N, d)``). Options a method does not
            use raise if given.
        batch_size: particles per run in each step's consensus (all when None).
        batch_partial: with ``batch_size``, move only the mini-batch (True, the default) or
            every particle.
        energy_tol: stop a run when its best value falls below this.
        diff_tol: stop a run when its consensus moves less than this (2-norm) in a step.
        max_evals: stop a run before its evaluations would exceed this budget.
        patience: stop when the best value has not improved for this many steps.
        history: True for ``("consensus", "best_value", "alpha")``, or names from
            ``("consensus", "best_value", "alpha", "particles", "energy")``; nothing is copied
            when False.
        generator: the source of all randomness (if None, one seeded from torch's global RNG).
        progress: show a tqdm bar.
        process_group: a ``torch.distributed`` group over which the particles are sharded: pass
            the same ``x0`` and generator seed on every rank; each keeps its slice of the
            particle axis and the consensus is all-reduced in log space.
        noise_dtype: draw the Gaussian noise in this dtype and cast it (default: the particles'
            dtype). Float64 noise comes from :func:`stepping.noise.box_muller_normal` (torch's
            own float64 draw is a scalar loop); ``torch.float32`` for float64 particles is
            cheaper still, at the price of the noise's last digits (RESULTS.md, cbo).

    Returns:
        :class:`CBOResult`.

    References:
        K. Riedl, T. Klock, C. Geldhauser, M. Fornasier, "Gradient is All You Need?",
        arXiv:2306.09778.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = 3 * torch.rand(50, 2, generator=g, dtype=torch.float64) - 1.5
        >>> res = cbo_minimize(lambda x: ((x - 0.5) ** 2).sum(-1), x0, steps=300, dt=0.1,
        ...                    sigma=1.0, alpha=1e4, generator=g)
        >>> (res.consensus - 0.5).abs().max() < 0.01
        tensor(True)
    """
    stepper = CBOStepper(f, lam=lam, sigma=sigma, alpha=alpha, noise=noise, method=method,
                         kappa=kappa, batch_size=batch_size, batch_partial=batch_partial,
                         generator=generator, energy_tol=energy_tol, diff_tol=diff_tol,
                         max_evals=max_evals, patience=patience, history=history,
                         process_group=process_group, noise_dtype=noise_dtype)
    return _run(stepper, x0, steps, dt, progress, process_group, "cbo")


def cbs_sample(f: Callable[[Tensor], Tensor], x0: Tensor, *, steps: int = 100, dt: float = 0.1,
               alpha=1.0, mode: str = "sampling", history=False,
               generator: torch.Generator | None = None, progress: bool = False,
               process_group=None) -> CBOResult:
    r"""Consensus-based sampling from :math:`\propto e^{-f}` (or optimization of ``f`` with
    ``mode="optimization"``); :class:`CBSStepper` has the update. Arguments as in
    :func:`cbo_minimize`; ``alpha`` may also be :class:`EffectiveSampleSize` (the paper's
    adaptive choice).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = torch.randn(4000, 1, generator=g, dtype=torch.float64) * 3
        >>> res = cbs_sample(lambda x: 0.5 * ((x - 2.0) ** 2).sum(-1) / 0.25, x0, steps=60,
        ...                  dt=0.5, generator=g)
        >>> round(res.particles.mean().item(), 1), round(res.particles.std().item(), 1)
        (2.0, 0.5)
    """
    stepper = CBSStepper(f, alpha=alpha, mode=mode, generator=generator, history=history,
                         process_group=process_group)
    return _run(stepper, x0, steps, dt, progress, process_group, "cbs")


# -- the torch.optim interface -----------------------------------------------------------------
class _Closure(torch.nn.Module):
    """Calls a loss closure as the forward of a module that owns ``model``, so that
    ``functional_call`` can swap the model's parameters for one particle's."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.closure: Callable | None = None

    def forward(self):
        return self.closure()


def _vmap_error(err: RuntimeError, model: torch.nn.Module, randomness: str):
    """What the user must change when ``vmap`` over the particles failed with ``err`` because
    of a random op (dropout) or a BatchNorm updating its running statistics; None otherwise."""
    if randomness == "error" and "random" in str(err):
        return RuntimeError(
            "the closure draws random numbers (a Dropout layer in training mode, say), which "
            "torch.func.vmap refuses unless told how: pass randomness='same' to CBO (the same "
            "draws for every particle, so their losses compare like with like) or "
            "randomness='different' (independent draws per particle), or call model.eval() "
            "while CBO steps")
    norms = [name for name, m in model.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.training
             and m.track_running_stats]
    if norms:
        return RuntimeError(
            f"model has BatchNorm layer(s) {norms} in training mode: each would update its "
            "running statistics once per particle, in place, which torch.func.vmap cannot do. "
            "Call model.eval() while CBO steps (the layers then normalise with their running "
            "statistics and leave them as they are), or make the layers normalise every batch "
            "with its own statistics and keep none: torch.func.replace_all_batch_norm_modules_"
            "(model), or build them with track_running_stats=False")
    return None


class CBO(KernelOptimizer):
    r"""Consensus-based optimization as a gradient-free ``torch.optim`` optimizer.

    Keeps ``n_particles`` copies of the parameters. ``step(closure)`` evaluates the loss
    ``closure()`` once per particle (all at once with ``vmap`` + ``functional_call`` when
    ``model`` is given, else one particle after another written into the parameters), then moves
    the particles by one CBO step and writes their consensus into the parameters. With
    :math:`f_i` the loss of particle :math:`i`, per parameter group (step :math:`\Delta t` =
    ``lr``) and :math:`\xi_i \sim N(0, I)` drawn in parameter order:

    .. math::

        c = \frac{\sum_j x_j e^{-\alpha_k f_j}}{\sum_j e^{-\alpha_k f_j}}, \qquad
        x_i \leftarrow x_i - \lambda \Delta t\,(x_i - c) + \sigma\sqrt{\Delta t}\,D_i\xi_i,
        \qquad \theta \leftarrow c,

    :math:`D_i\xi_i = (x_i - c)\odot\xi_i` (anisotropic) or :math:`\lVert x_i - c\rVert\xi_i`
    (isotropic, the norm over all parameters). Particles start at
    :math:`x_i = \theta_0 + s\,\xi_i` (``init_std`` :math:`s`). No gradient is needed: the
    closure only returns the loss (do not call ``backward``). ``step`` returns the closure's
    loss at the parameters before the step.

    Without gradients, the tools that act on them do not apply: ``torch.amp.GradScaler``
    (``scaler.step(opt)`` raises), gradient clipping (``clip_grad_norm_`` of parameters without
    ``.grad`` does nothing), and a closure that runs ``backward`` (as Lightning's automatic
    optimization does on every call) is refused; with Lightning, set
    ``automatic_optimization = False`` and call ``opt.step(closure)`` in ``training_step``. The
    particles follow their parameter when its dtype or device changes (``model.to(...)``):
    they are cast as ``load_state_dict`` casts floating state. Under ``torch.compile`` a step
    leaves the graph once (twice at the first step, which draws the particles), to draw its
    noise from ``generator`` and check its losses.

    Args:
        params: parameters or parameter groups (per-group ``lr``, ``lam``, ``sigma``).
        n_particles: N >= 2.
        lr: the step :math:`\Delta t` (scheduled by ``torch.optim.lr_scheduler``).
        lam, sigma: drift rate and noise strength.
        alpha: a float, or a callable from the step index to alpha (e.g. :class:`GeometricAlpha`).
        noise: ``"anisotropic"`` or ``"isotropic"``.
        init_std: spread of the initial particles around the parameters.
        model: the module that owns the parameters: enables the batched (vmapped) evaluation;
            the closure must then only use vmap-compatible operations (BatchNorm layers in
            training mode cannot update their running statistics per particle: use
            ``model.eval()``, or ``torch.func.replace_all_batch_norm_modules_(model)``).
        chunk_size: particles per vmapped call (all when None), to bound memory.
        randomness: ``torch.vmap``'s handling of random ops in the closure (e.g. dropout):
            ``"error"`` (default), ``"same"`` (the same draws for every particle) or
            ``"different"`` across particles; the draws come from torch's global RNG.
        generator: source of all randomness (if None, one seeded from torch's global RNG);
            saved in ``state_dict``.
        check_finite: raise naming the parameter and the step when a parameter or particle is
            non-finite.

    References:
        K. Riedl, T. Klock, C. Geldhauser, M. Fornasier, "Gradient is All You Need?",
        arXiv:2306.09778.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> _ = torch.nn.init.ones_(model.weight), torch.nn.init.zeros_(model.bias)
        >>> x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
        >>> y = x @ torch.tensor([[0.5], [-1.0]]) + 0.3
        >>> opt = CBO(model.parameters(), 50, lr=0.05, sigma=1.5, alpha=1e4, model=model,
        ...           generator=torch.Generator().manual_seed(0))
        >>> first = opt.step(lambda: ((model(x) - y) ** 2).mean())
        >>> for _ in range(100):
        ...     last = opt.step(lambda: ((model(x) - y) ** 2).mean())
        >>> bool(last < 0.01 * first)
        True
    """

    stochastic = True
    # torch.amp.GradScaler.step then hands this step its scale instead of unscaling gradients
    # (there are none, and it would fail with an assertion), so that step can refuse it clearly
    _step_supports_amp_scaling = True

    def __init__(self, params, n_particles: int = 100, *, lr: float = 0.01, lam: float = 1.0,
                 sigma: float = 1.0, alpha=100.0, noise: str = "anisotropic",
                 init_std: float = 1.0, model: torch.nn.Module | None = None,
                 chunk_size: int | None = None, randomness: str = "error",
                 generator: torch.Generator | None = None, check_finite: bool = False):
        self.n_particles = check_int("n_particles", n_particles, 2)
        if randomness not in ("error", "different", "same"):
            raise ValueError(f"randomness must be 'error', 'different' or 'same' (torch.vmap's "
                             f"options), got {randomness!r}")
        self.randomness = randomness
        self.alpha = _check_alpha(alpha)
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.noise = noise
        self.init_std = check_nonnegative("init_std", init_std)
        if model is not None and not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module or None, got "
                             f"{type(model).__name__}")
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size)
        self.model = model
        self.invalid = 0
        super().__init__(params, dict(lr=lr, lam=lam, sigma=sigma), generator=generator,
                         check_finite=check_finite)
        if any(p.is_complex() for g in self.param_groups for p in g["params"]):
            raise ValueError("CBO does not support complex parameters (optimize the real view, "
                             "torch.view_as_real, instead)")
        if model is not None:
            self._keys()   # every parameter must belong to model
            self._wrapper = _Closure(model)

    def _keys(self) -> list[str]:
        """The names under which ``functional_call`` swaps each parameter (looked up on every
        step, so that copies of the optimizer and its model stay consistent)."""
        owned = {id(p): "model." + name for name, p in self.model.named_parameters()}
        params = [p for g in self.param_groups for p in g["params"]]
        if any(id(p) not in owned for p in params):
            raise ValueError("every parameter must belong to model (the batched evaluation "
                             "swaps model's parameters); "
                             f"{sum(id(p) not in owned for p in params)} do not")
        return [owned[id(p)] for p in params]

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        group["lam"] = check_nonnegative("lam", group["lam"])
        group["sigma"] = check_nonnegative("sigma", group["sigma"])

    def _particles(self, params: list[Tensor]) -> list[Tensor]:
        """Each parameter's particles, drawn at the first step; cast to the parameter's dtype
        and device when those changed since (``model.to(...)``), as ``load_state_dict`` casts
        floating state."""
        if any("particles" not in self.state[p] for p in params):
            run_eagerly(self._draw_particles, params)
        parts = []
        for p in params:
            state = self.state[p]
            if state["particles"].dtype != p.dtype or state["particles"].device != p.device:
                state["particles"] = state["particles"].to(dtype=p.dtype, device=p.device)
            parts.append(state["particles"])
        return parts

    def _draw_particles(self, params: list[Tensor]) -> None:
        # outside the graph under torch.compile: a draw from an explicit generator
        for p in params:
            state = self.state[p]
            if "particles" not in state:
                z = standard_normal_like(p.detach().expand(self.n_particles, *p.shape),
                                         self.generator)
                state["particles"] = z.to(p.dtype).mul_(self.init_std).add_(p.detach())
                state["step"] = torch.tensor(0.0)

    @torch.no_grad()
    def respread(self, std: float | None = None) -> None:
        r"""Redraw the particles around the current parameters (the consensus),
        :math:`x_i = \theta + s\,\xi_i` with ``s = std`` (default ``init_std``).

        CBO's particles contract onto their consensus; once they agree, the noise vanishes and
        the search stops. Re-spreading them (every few hundred steps, or when the loss
        stagnates) restarts the search from the best point found, like CBXpy's resampling.
        """
        std = self.init_std if std is None else check_nonnegative("std", std)
        for p in (p for g in self.param_groups for p in g["params"]):
            if "particles" in self.state[p]:
                x = self.state[p]["particles"]
                z = standard_normal_like(x, self.generator)
                x.copy_(z.mul_(std).add_(p.detach()))

    def _energies(self, closure, params: list[Tensor], parts: list[Tensor]) -> Tensor:
        if self.model is not None:
            self._wrapper.closure = closure
            keys = self._keys()

            def one(*ts):
                return functional_call(self._wrapper, dict(zip(keys, ts)), ())

            try:
                e = vmap(one, chunk_size=self.chunk_size, randomness=self.randomness)(*parts)
            except RuntimeError as err:
                hint = _vmap_error(err, self.model, self.randomness)
                if hint is None:
                    raise
                raise hint from err
            finally:
                self._wrapper.closure = None
        else:
            saved = [p.detach().clone() for p in params]
            values = []
            for i in range(self.n_particles):
                for p, x in zip(params, parts):
                    p.copy_(x[i])
                values.append(torch.as_tensor(closure()))
            for p, s in zip(params, saved):
                p.copy_(s)
            e = torch.stack(values)
        if e.shape != (self.n_particles,):
            raise ValueError(f"the closure must return a scalar loss, got shape "
                             f"{tuple(e.shape[1:])} per particle")
        return e

    def _eager_part(self, e: Tensor, params: list[Tensor],
                    parts: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """All of a step that a compiled step must leave the graph for, in one call: the count
        of non-finite losses, the step index for ``alpha(k)``, the check that the consensus is
        defined, and every generator draw (in parameter order, the stream the math block
        states). Returns the log weights and the noise of each parameter's particles."""
        self.invalid += int((~torch.isfinite(e)).sum())
        alpha = _alpha_at(self.alpha, int(self.state[params[0]]["step"]), e.unsqueeze(0))
        logw = _log_weights(e, alpha if isinstance(alpha, float) else alpha[0])   # (N,)
        if (logw == torch.inf).any() or not torch.isfinite(logw).any():
            raise ValueError("the closure returned no finite loss for any particle (or alpha * "
                             "loss overflows): the consensus is undefined")
        noises = [standard_normal_like(x, self.generator) for x in parts]
        for p in params:
            self.state[p]["step"] += 1
        return logw, noises

    def __setstate__(self, state) -> None:
        # torch's loading step (after the user's pre-hooks; also unpickling): refuse particles
        # of another count before anything is installed.
        n_particles = state.get("n_particles", getattr(self, "n_particles", None))
        for saved in state.get("state", {}).values():
            saved = saved.get("particles") if isinstance(saved, dict) else None
            if isinstance(saved, Tensor) and saved.shape[0] != n_particles:
                raise ValueError(f"the state_dict holds {saved.shape[0]} particles per "
                                 f"parameter, but this CBO has n_particles={n_particles}: "
                                 f"build it with n_particles={saved.shape[0]} to resume")
        super().__setstate__(state)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One CBO step; ``closure()`` returns the loss of the model as it is (no backward)."""
        if hasattr(self, "found_inf"):
            # set by torch.amp.GradScaler.step right before it calls this step (it reads
            # _step_supports_amp_scaling), deleted by it only after a step that returns
            del self.grad_scale, self.found_inf
            raise RuntimeError("CBO is gradient-free: torch.amp.GradScaler scales the loss for "
                               "backward and unscales gradients, and CBO computes none. Call "
                               "opt.step(closure) itself, without the scaler")
        if closure is None:
            raise ValueError("CBO.step needs a closure that returns the loss: the particles' "
                             "losses are its only information")
        groups = self._checked_groups()
        params = [p for g in self.param_groups for p in g["params"]]
        grads = _grad_marks(params)
        try:
            loss = closure()
        except RuntimeError as err:
            if "does not require grad" not in str(err):
                raise
            raise RuntimeError("CBO needs no gradients: its closure must only compute and "
                               "return the loss; remove loss.backward() (and zero_grad()) from "
                               "the closure (it runs under torch.no_grad(), so there is no "
                               "graph to differentiate)") from err
        if _wrote_gradients(params, grads):
            raise RuntimeError(
                "CBO is gradient-free, but the closure computed gradients (a parameter's .grad "
                "was written during the call): it calls backward under its own enable_grad, "
                "as the closure of Lightning's automatic optimization does (with gradient "
                "clipping), and CBO would run it once per particle. The closure must only "
                "return the loss; with Lightning, set self.automatic_optimization = False and "
                "call self.optimizers().step(closure) in training_step")
        parts = self._particles(params)
        e = self._energies(closure, params, parts)
        e = e.to(torch.promote_types(e.dtype, torch.float32))   # weights in >= float32
        logw, noises = run_eagerly(self._eager_part, e, params, parts)
        w = torch.softmax(logw, -1)
        drifts = []
        for p, x in zip(params, parts):
            c = (w.to(x.dtype) @ x.reshape(self.n_particles, -1)).reshape(p.shape)
            p.copy_(c)
            drifts.append(x - c)
        if self.noise == "isotropic":
            norm = torch.stack([d.reshape(self.n_particles, -1).square().sum(-1).to(torch.float64)
                                for d in drifts]).sum(0).sqrt()
        i = 0
        for group in groups:
            dt, lam, sigma = group["lr"], group["lam"], group["sigma"]
            for p in group["params"]:
                x, d, z = parts[i], drifts[i], noises[i]
                if self.noise == "isotropic":
                    z.mul_(norm.to(x.dtype).reshape(-1, *[1] * p.ndim))
                else:
                    z.mul_(d)
                if isinstance(dt, Tensor):   # a tensor lr, kept as a tensor under compile
                    x.sub_(d * (lam * dt)).add_(z * (sigma * dt.sqrt()))
                else:
                    x.add_(d, alpha=-lam * dt).add_(z, alpha=sigma * math.sqrt(dt))
                i += 1
        if self.check_finite:
            self._assert_finite()
        return loss


def _grad_marks(params: list[Tensor]) -> list[tuple]:
    """Each parameter's ``.grad`` and (in eager; it cannot be traced) its version counter,
    which backward bumps when it accumulates into an existing ``.grad``."""
    if torch.compiler.is_compiling():
        return [(p.grad, None) for p in params]
    return [(p.grad, None if p.grad is None else p.grad._version) for p in params]


def _wrote_gradients(params: list[Tensor], marks: list[tuple]) -> bool:
    """Whether a gradient was written since ``marks``: a new ``.grad``, or one changed in place
    to something nonzero (``zero_grad(set_to_none=False)`` alone is no gradient)."""
    return any(p.grad is not None and (p.grad is not grad or version is not None
                                       and p.grad._version != version and bool(p.grad.any()))
               for p, (grad, version) in zip(params, marks))


def _cbo_reference(params, loss_fn, steps, kwargs, generator):
    """Two (or more) CBO optimizer steps by hand from the docstring's math block."""
    n = kwargs.get("n_particles", 100)
    lr, lam, sigma = kwargs.get("lr", 0.01), kwargs.get("lam", 1.0), kwargs.get("sigma", 1.0)
    alpha, std = kwargs.get("alpha", 100.0), kwargs.get("init_std", 1.0)
    iso = kwargs.get("noise", "anisotropic") == "isotropic"
    theta = [p.clone() for p in params]
    xs = [p + std * torch.randn((n, *p.shape), generator=generator, dtype=p.dtype)
          for p in params]
    for k in range(steps):
        a = alpha(k) if callable(alpha) else alpha
        f = torch.stack([loss_fn([x[i] for x in xs]) for i in range(n)])
        w = torch.exp(-a * (f - f.min()))
        w = w / w.sum()
        cs = [torch.einsum("i,i...->...", w, x) for x in xs]
        ds = [x - c for x, c in zip(xs, cs)]
        if iso:
            norm = torch.sqrt(sum((d.reshape(n, -1) ** 2).sum(-1) for d in ds))
        new = []
        for x, d in zip(xs, ds):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            scale = norm.reshape(-1, *[1] * (x.ndim - 1)) if iso else d
            new.append(x - lam * lr * d + sigma * math.sqrt(lr) * scale * z)
        xs, theta = new, cs
    return theta


register(AlgorithmInfo(
    name="CBO",
    cls=CBO,
    kind="optimizer",
    paper="Riedl, Klock, Geldhauser & Fornasier, arXiv:2306.09778",
    default_kwargs=dict(n_particles=20, lr=0.1, sigma=0.5, alpha=50.0),
    requires=frozenset({"closure"}),   # the loss only: no gradient
    # particles start around the parameter and move by differences: shifting the problem
    # shifts the run (the noise is drawn per coordinate, so rotations are not followed)
    supports=frozenset({"translation_equivariant"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(n_particles=1), ValueError, "n_particles"),
        (dict(sigma=-1.0), ValueError, "sigma"),
        (dict(lam=-1.0), ValueError, "lam"),
        (dict(alpha=0.0), ValueError, "alpha"),
        (dict(noise="gaussian"), ValueError, "noise"),
        (dict(init_std=-1.0), ValueError, "init_std"),
        (dict(generator=0), ValueError, "generator"),
        (dict(betas=(0.9, 0.99)), TypeError, "betas"),
    ),
    reference=_cbo_reference,
    reference_kwargs=(dict(n_particles=6, lr=0.1, alpha=5.0),
                      dict(n_particles=5, lr=0.05, lam=0.7, sigma=2.0, alpha=3.0,
                           noise="isotropic", init_std=0.5)),
))
