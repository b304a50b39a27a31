r"""Denoising MCMC (Kim & Ye, arXiv 2209.14593): MCMC on the product space of data and time.

The chain targets the joint :math:`\pi(x, t) \propto \pi(t)\, p_t(x)` over a finite time grid
:math:`\{t_1, \dots, t_m\}` with a prior :math:`\pi(t)` on it, by Langevin--Gibbs steps
(:class:`LangevinGibbs`): a Langevin move of :math:`x` towards :math:`p_t` at the chain's
current time, then a Gibbs draw of :math:`t` from :math:`p(t \mid x)`. Chains that reach a low
time are already close to the data, so a reverse-time integrator from *each chain's own time*
to :math:`t_{end}` needs far fewer steps than one from the prior (:func:`dmcmc_sample`).

``score(x, t)`` takes ``x`` of shape ``(batch, ...)`` and ``t`` of shape ``(batch,)`` (one time
per chain) and returns a tensor shaped like ``x``; ``log_prob(x, t)`` returns ``(batch,)``,
:math:`\log p_t(x)` up to a constant *that does not depend on t*.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from stochstep.samplers.score_sde import (METHODS, _NFE_PER_STEP, _check_batch, _check_t_end,
                                          _stepper, denoise)
from stochstep.samplers.sde import SDE, VPSDE
from stochstep.stepping.grids import uniform
from stochstep.stepping.integrate import integrate
from stochstep.stepping.kernels import langevin_
from stochstep.stepping.noise import Brownian, make_generator, standard_normal_like
from stochstep.stepping.registry import AlgorithmInfo, register
from stochstep.stepping.checks import check_finite_state, check_flag, check_int

__all__ = ["LangevinGibbs", "DMCMCResult", "dmcmc_sample", "INTEGRATORS"]

INTEGRATORS = METHODS
_GIBBS = ("exact", "argmax")


def _check_time_grid(time_grid) -> Tensor:
    try:
        g = torch.as_tensor(time_grid, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"time_grid must be a 1-D sequence of times, got {time_grid!r}") from None
    if g.ndim != 1 or g.numel() < 1:
        raise ValueError(f"time_grid must be a non-empty 1-D sequence, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all() or (g <= 0).any():
        raise ValueError("time_grid must contain finite times > 0")
    if g.unique().numel() != g.numel():
        raise ValueError("time_grid must not repeat a time")
    return g


class LangevinGibbs:
    r"""One Langevin--Gibbs step of denoising MCMC on :math:`\pi(x, t) \propto \pi(t)\,p_t(x)`.

    Each chain (first dimension of ``x``) carries its own time :math:`t` on the ``time_grid``,
    kept in ``self.t`` (shape ``(batch,)``, float64) like an optimizer's state. A step of
    length :math:`h = t_1 - t_0 > 0` of the (increasing, MCMC) clock does, with
    :math:`\xi \sim N(0, I)` and :math:`u \sim U(0, 1)` from the noise source's generator,

    .. math::
        x &\leftarrow x + h\, s(x, t) + \sqrt{2h}\,\xi
            \qquad\text{(Langevin in } x \text{ at the chain's time)}, \\
        \ell_i &= \log \pi(t_i) + \log p_{t_i}(x), \qquad
        t \leftarrow t_{I}, \quad I = \begin{cases}
            \min\{i : \sum_{j \le i} \mathrm{softmax}(\ell)_j > u\} & \text{gibbs="exact"} \\
            \arg\max_i \ell_i & \text{gibbs="argmax"} \end{cases}

    The Langevin move is :func:`stepping.kernels.langevin_` (the ULA/SGLD kernel); the paper
    writes it :math:`x + \tfrac{\eta}{2} s + \sqrt{\eta}\, z`, i.e. :math:`\eta = 2h`.
    ``gibbs="exact"`` is the exact Gibbs draw from :math:`p(t \mid x)` (inverse CDF, one uniform
    per chain), so the pair is a Gibbs sampler whose only error is the unadjusted Langevin
    move. ``gibbs="argmax"`` takes the most probable time, as the authors' code does with its
    trained noise-level classifier: no longer a sampler of :math:`\pi` (it is a greedy
    "noise-level estimation"), kept as the paper's option. :math:`\ell` comes from
    ``log_prob(x, t)`` (evaluated at all :math:`m` grid times in one batched call of size
    ``m * batch``) plus ``log(time_prior)``, or directly from a classifier ``time_logits(x)``
    of shape ``(batch, m)`` (taken as :math:`\log p(t_i \mid x)` up to a per-chain constant;
    ``time_prior`` is then not added).

    A chain starts at the largest grid time (``x`` a prior draw) unless ``self.t`` was set; the
    state carries over between runs on batches of the same size and is reset by :meth:`reset`
    or a batch of another size. ``step_`` returns the grid index of each chain's new time.

    Args:
        score: ``score(x, t)``.
        time_grid: the :math:`m \ge 1` times the chain's time lives on (finite, > 0, distinct).
        log_prob: ``log_prob(x, t)``, :math:`\log p_t(x)` up to a constant independent of t.
        time_logits: ``time_logits(x) -> (batch, m)``; give exactly one of the two.
        gibbs: ``"exact"`` (default) or ``"argmax"``.
        time_prior: :math:`m` positive weights :math:`\pi(t_i)` (normalised here); default
            uniform over the grid (the paper's: uniform over the grid indices).

    References:
        B. Kim, J. C. Ye, "Denoising MCMC for Accelerating Diffusion-Based Generative Models",
        ICML 2023, arXiv 2209.14593 (Section 3, Langevin--Gibbs).

    Example:
        >>> from stochstep.stepping import Brownian, integrate
        >>> lg = LangevinGibbs(lambda x, t: -x, torch.linspace(0.1, 1.0, 10),  # N(0, I) data,
        ...                    log_prob=lambda x, t: -0.5 * (x ** 2).sum(-1))  # VP: p_t = N(0, I)
        >>> x = integrate(lg, torch.zeros(400, 2), torch.arange(31) * 0.1,
        ...               noise=Brownian(torch.Generator().manual_seed(0)))
        >>> lg.t.shape, bool((x.var(0) - 1).abs().max() < 0.25)
        (torch.Size([400]), True)
    """

    order = 1.0
    strong_order = 0.5

    def __init__(self, score: Callable[[Tensor, Tensor], Tensor], time_grid, *,
                 log_prob: Callable[[Tensor, Tensor], Tensor] | None = None,
                 time_logits: Callable[[Tensor], Tensor] | None = None,
                 gibbs: str = "exact", time_prior=None):
        if not callable(score):
            raise ValueError(f"score must be callable, got {type(score).__name__}")
        self.score = score
        self.time_grid = _check_time_grid(time_grid)
        if (log_prob is None) == (time_logits is None):
            raise ValueError("give exactly one of log_prob or time_logits (the Gibbs step of t "
                             "needs p_t(x) or a noise-level classifier)")
        for name, fn in (("log_prob", log_prob), ("time_logits", time_logits)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
        self.log_prob, self.time_logits = log_prob, time_logits
        if gibbs not in _GIBBS:
            raise ValueError(f"gibbs must be one of {_GIBBS}, got {gibbs!r}")
        self.gibbs = gibbs
        m = self.time_grid.numel()
        if time_prior is None:
            self.log_time_prior = torch.zeros(m, dtype=torch.float64)
        else:
            w = torch.as_tensor(time_prior, dtype=torch.float64).detach().cpu()
            if w.shape != (m,) or not torch.isfinite(w).all() or (w <= 0).any():
                raise ValueError(f"time_prior must be {m} positive finite weights (one per "
                                 f"time_grid entry), got {time_prior!r}")
            self.log_time_prior = (w / w.sum()).log()
        self.reset()

    def reset(self) -> None:
        """Restart every chain at the largest grid time at the next step."""
        self.t: Tensor | None = None

    def _times_for(self, x: Tensor) -> Tensor:
        t = self.t
        if isinstance(t, Tensor) and not t.is_floating_point():
            raise ValueError(f"t must be a floating-point tensor, got {t.dtype}")
        if not (isinstance(t, Tensor) and t.shape == (x.shape[0],)):
            if t is not None and not isinstance(t, Tensor):
                raise ValueError(f"t must be a tensor or None, got {type(t).__name__}")
            t = self.time_grid.max().expand(x.shape[0]).clone()
        self.t = t
        return t

    def logits(self, x: Tensor) -> Tensor:
        r""":math:`\ell_{n, i} = \log \pi(t_i) + \log p_{t_i}(x_n)`, shape ``(batch, m)``,
        float64."""
        n, m = x.shape[0], self.time_grid.numel()
        if self.time_logits is not None:
            out = self.time_logits(x)
            if not isinstance(out, Tensor) or out.shape != (n, m):
                raise ValueError(f"time_logits must return a tensor of shape ({n}, {m}), got "
                                 f"{tuple(out.shape) if isinstance(out, Tensor) else out!r}")
            return out.detach().to(torch.float64).cpu()
        xr = x.unsqueeze(0).expand(m, *x.shape).reshape(m * n, *x.shape[1:])
        tr = self.time_grid.to(dtype=x.dtype, device=x.device).repeat_interleave(n)
        lp = self.log_prob(xr, tr)
        if not isinstance(lp, Tensor) or lp.shape != (m * n,):
            raise ValueError(f"log_prob must return a tensor of shape (batch,), got "
                             f"{tuple(lp.shape) if isinstance(lp, Tensor) else lp!r}")
        return lp.detach().to(torch.float64).cpu().reshape(m, n).T + self.log_time_prior

    def gibbs_index(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Grid index of each chain's new time given ``x`` (the Gibbs or argmax update)."""
        ell = self.logits(x)
        broken = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(-1).cpu()
        if broken.any():  # a chain gone non-finite stays so: integrate's check_finite reports it
            ell = torch.where(broken[:, None], self.log_time_prior, ell)
        if not torch.isfinite(ell.max(-1).values).all():
            raise ValueError("log_prob/time_logits gave no finite value over time_grid for "
                             "some chain")
        if self.gibbs == "argmax":
            return ell.argmax(-1)
        cdf = torch.softmax(ell, -1).cumsum(-1)
        u = torch.rand(x.shape[0], generator=generator, dtype=torch.float64,
                       device=generator.device).cpu()
        return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None])[:, 0].clamp_max(cdf.shape[1] - 1)

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> Tensor:
        if t1 <= t0:
            raise ValueError(f"LangevinGibbs runs forward in (MCMC) time: the grid must "
                             f"increase, got {t0} -> {t1}")
        if not hasattr(noise, "standard_normal") or not isinstance(
                getattr(noise, "generator", None), torch.Generator):
            raise ValueError("LangevinGibbs needs a noise source with a generator: pass "
                             "noise=Brownian(generator) to integrate")
        t = self._times_for(x)
        s = self.score(x, t.to(dtype=x.dtype, device=x.device))
        if not isinstance(s, Tensor) or s.shape != x.shape:
            raise ValueError(f"score must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
        xi = noise.standard_normal(x)
        langevin_([x], [s.to(x.dtype)], [xi], lr=t1 - t0, maximize=True)
        idx = self.gibbs_index(x, noise.generator)
        self.t = self.time_grid[idx]
        return idx


class _KeepLowest:
    """Runs ``inner`` and, over steps ending after ``start``, remembers per chain the state
    with the lowest time (the latest one on ties)."""

    def __init__(self, inner: LangevinGibbs, start: float):
        self.inner, self.start = inner, start
        self.order, self.strong_order = inner.order, inner.strong_order
        self.x = self.t = None

    def step_(self, x, t0, t1, noise):
        self.inner.step_(x, t0, t1, noise)
        if t1 <= self.start:
            return
        t = self.inner.t
        if self.x is None:
            self.x, self.t = x.clone(), t.clone()
            return
        better = t <= self.t
        self.x[better.to(x.device)] = x[better.to(x.device)]
        self.t = torch.where(better, t, self.t)


class DMCMCResult(NamedTuple):
    """Samples at ``t_end`` (``x``), the time each chain's integration started from (``t``,
    float64), and score evaluations per sample (``nfe``, int64)."""

    x: Tensor
    t: Tensor
    nfe: Tensor


def dmcmc_sample(score: Callable[[Tensor, Tensor], Tensor], sde: SDE, x0: Tensor, *,
                 mcmc_steps: int, langevin_step: float, time_grid, steps: int,
                 log_prob: Callable[[Tensor, Tensor], Tensor] | None = None,
                 time_logits: Callable[[Tensor], Tensor] | None = None,
                 gibbs: str = "exact", time_prior=None, n_skip: int | None = None,
                 integrator: str = "euler_maruyama", t_end: float = 1e-3, snr: float = 0.16,
                 denoise_last: bool = False, generator: torch.Generator | None = None,
                 progress: bool = False, check_finite: bool = False) -> DMCMCResult:
    r"""Denoising MCMC: Langevin--Gibbs chains on :math:`(x, t)`, then a reverse-time
    integrator from each chain's own time down to :math:`t_{end}`.

    1. Run ``mcmc_steps`` :class:`LangevinGibbs` steps of size :math:`h` = ``langevin_step``
       from ``x0`` (a prior draw; chains start at the largest grid time), one chain per row.
    2. Per chain keep the state :math:`(x^\star, t^\star)` with the lowest time among the last
       ``n_skip`` states (the paper's "lowest noise level over n_skip steps").
    3. Integrate each chain from :math:`t^\star` to :math:`t_{end}` on its own grid of
       ``steps`` equal intervals (chains at one time are integrated together), with the
       reverse SDE or probability-flow ODE stepper named by ``integrator``:

    .. math::
        (x, t) \xrightarrow{\text{Langevin--Gibbs}^{\,n}} (x^\star, t^\star), \qquad
        x_{t_{end}} = \Phi_{t^\star \to t_{end}}(x^\star), \quad
        dx = [f - g^2 s]\,dt + g\,d\bar w \ \text{ or }\ \dot x = f - \tfrac12 g^2 s.

    Chains whose :math:`t^\star \le t_{end}` are returned as they are. ``nfe`` counts score
    calls per sample: ``mcmc_steps`` plus the integrator's (``steps`` for
    ``euler_maruyama``/``reverse_diffusion``, ``2 steps`` for ``pc``/``heun``, adaptive for
    ``rk45``); the Gibbs step's ``log_prob`` evaluations (:math:`m` per chain and step) or
    classifier calls are *not* counted.

    Differences from the authors' pipeline (all options here): the Gibbs step is exact when
    ``log_prob`` is given (the authors take the argmax of a trained classifier:
    ``gibbs="argmax"`` / ``time_logits``); each chain returns one sample (their single long
    chain emits one every ``n_skip`` steps); the final Tweedie denoising is off by default
    (``denoise_last``) so that samples follow :math:`p_{t_{end}}`, as :func:`samplers.sample`.

    Args:
        score: ``score(x, t)``.
        sde: a :class:`samplers.VPSDE`, :class:`samplers.VESDE` or :class:`samplers.SubVPSDE`.
        x0: initial states, shape ``(chains, ...)``; not modified.
        mcmc_steps: Langevin--Gibbs steps (>= 1).
        langevin_step: :math:`h > 0` (the paper's :math:`\eta = 2h`).
        time_grid: the chain's times, within :math:`[t_{end}, T]` (the paper: 1000 uniform).
        steps: integrator intervals per chain (>= 1).
        log_prob: ``log_prob(x, t)``, or ``time_logits(x)``: see :class:`LangevinGibbs`.
        gibbs: ``"exact"`` or ``"argmax"``.
        time_prior: weights over ``time_grid`` (default uniform).
        n_skip: window for the lowest-time state, ``1 <= n_skip <= mcmc_steps``; default
            ``mcmc_steps`` (the whole run); 1 keeps the last state.
        integrator: one of :data:`INTEGRATORS`.
        t_end: final time in ``(0, T)`` (default 1e-3).
        snr: the corrector's signal-to-noise ratio (``"pc"`` only).
        denoise_last: apply Tweedie's :func:`samplers.score_sde.denoise` at ``t_end``.
        generator: all randomness (Langevin noise, Gibbs uniforms, integrator noise).
        progress: progress bars.
        check_finite: raise ``FloatingPointError`` naming the phase (``dmcmc`` or the
            integrator), the step and the time as soon as a state holds a NaN or infinity.

    Returns:
        A :class:`DMCMCResult` ``(x, t, nfe)``.

    References:
        B. Kim, J. C. Ye, "Denoising MCMC for Accelerating Diffusion-Based Generative Models",
        ICML 2023, arXiv 2209.14593.

    Example:
        >>> from stochstep.samplers import VPSDE
        >>> from stochstep.samplers.targets import GaussianMixture
        >>> gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
        >>> g = torch.Generator().manual_seed(0)
        >>> out = dmcmc_sample(lambda x, t: gm.score(x, *sde.marginal(t)), sde,
        ...                    sde.prior_sample((100, 2), generator=g, dtype=torch.float64),
        ...                    mcmc_steps=5, langevin_step=0.05, steps=10,
        ...                    time_grid=torch.linspace(1e-3, 1.0, 20),
        ...                    log_prob=lambda x, t: gm.log_prob(x, *sde.marginal(t)),
        ...                    generator=g)
        >>> out.x.shape, int(out.nfe[0])
        (torch.Size([100, 2]), 15)
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a VPSDE, VESDE or SubVPSDE, got {type(sde).__name__}")
    _check_batch(x0, "x0")
    check_flag("check_finite", check_finite)
    for name, v in (("mcmc_steps", mcmc_steps), ("steps", steps)):
        check_int(name, v)
    if isinstance(langevin_step, bool) or not isinstance(langevin_step, (int, float)) \
            or not 0 < langevin_step < math.inf:
        raise ValueError(f"langevin_step must be a finite number > 0, got {langevin_step!r}")
    t_end = _check_t_end(sde, t_end)
    grid = _check_time_grid(time_grid)
    if grid.min() < t_end or grid.max() > sde.T:
        raise ValueError(f"time_grid must lie within [t_end, T] = [{t_end}, {sde.T}], got "
                         f"[{grid.min().item()}, {grid.max().item()}]")
    if n_skip is None:
        n_skip = mcmc_steps
    if isinstance(n_skip, bool) or not isinstance(n_skip, int) or not 1 <= n_skip <= mcmc_steps:
        raise ValueError(f"n_skip must be an integer in [1, mcmc_steps={mcmc_steps}], "
                         f"got {n_skip!r}")
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    gen = make_generator(generator)
    noise = Brownian(gen)

    chain = LangevinGibbs(score, grid, log_prob=log_prob, time_logits=time_logits, gibbs=gibbs,
                          time_prior=time_prior)
    h = float(langevin_step)
    keep = _KeepLowest(chain, (mcmc_steps - n_skip) * h)
    integrate(keep, x0, torch.arange(mcmc_steps + 1, dtype=torch.float64) * h, noise=noise,
              progress=progress, desc="dmcmc", check_finite=check_finite)
    x, t_star = keep.x, keep.t
    out = x.clone()
    nfe = torch.full((x.shape[0],), mcmc_steps, dtype=torch.int64)
    for t in t_star.unique(sorted=True).flip(0).tolist():  # high to low: a fixed order
        if t <= t_end or math.isclose(t, t_end, rel_tol=1e-6):  # float32 grids: 1.00000005e-3
            continue
        rows = (t_star == t).nonzero()[:, 0]
        stepper, per_step = _stepper(integrator, sde, score, snr), _NFE_PER_STEP[integrator]
        out[rows.to(x.device)] = integrate(stepper, x[rows.to(x.device)], uniform(t, t_end, steps),
                                           noise=noise, progress=progress, desc=integrator,
                                           check_finite=check_finite)
        nfe[rows] += stepper.nfe if per_step is None else per_step * steps
    if denoise_last:
        with torch.no_grad():
            out = denoise(score, sde, out, t_end)
        if check_finite:
            check_finite_state(out, f"{integrator}: the final denoising (t = {t_end})")
    return DMCMCResult(out, t_star, nfe)


# -- registry ------------------------------------------------------------------------------------
_VP = VPSDE()


def _score(x, t):  # N(1, I) data under the VP SDE: p_t = N(b(t) 1, I), never zero at x = 0
    return _VP.expand(_VP.mean_coeff(t), x) - x


def _log_prob(x, t):
    return -0.5 * (x - _VP.expand(_VP.mean_coeff(t), x)).pow(2).reshape(x.shape[0], -1).sum(-1)


def _langevin_gibbs_reference(x0, grid, kwargs, generator):
    """The docstring's step, literally, from every chain at the largest grid time: the
    Langevin move x + h s(x, t) + sqrt(2h) xi, then l_i = log pi(t_i) + log p_{t_i}(x) (one
    call per grid time; or the classifier's logits), and t = t_I with I the first index whose
    cumulative softmax exceeds u (or the argmax)."""
    score, times = kwargs["score"], torch.tensor(kwargs["time_grid"], dtype=torch.float64)
    prior = torch.as_tensor(kwargs.get("time_prior") or [1.0] * len(times), dtype=torch.float64)
    x, t = x0.clone(), torch.full((len(x0),), times.max().item(), dtype=torch.float64)
    steps = torch.as_tensor(grid, dtype=torch.float64).tolist()
    for t0, t1 in zip(steps[:-1], steps[1:]):
        h = t1 - t0
        xi = standard_normal_like(x, generator)
        x = x + h * score(x, t.to(x.dtype)) + math.sqrt(2 * h) * xi
        if "time_logits" in kwargs:
            ell = kwargs["time_logits"](x).to(torch.float64)
        else:
            ell = torch.stack([(prior[i] / prior.sum()).log() + kwargs["log_prob"](
                x, torch.full((len(x),), ti, dtype=x.dtype)).to(torch.float64)
                for i, ti in enumerate(times.tolist())], -1)
        if kwargs.get("gibbs", "exact") == "argmax":
            index = ell.argmax(-1)
        else:
            u = torch.rand(len(x), generator=generator, dtype=torch.float64)
            index = (torch.softmax(ell, -1).cumsum(-1) <= u[:, None]).sum(-1)
        t = times[index]
    return x


def _time_logits(x):  # a classifier that favours the middle times, more so far from 0
    r = x.reshape(x.shape[0], -1).norm(dim=-1, keepdim=True).to(torch.float64)
    return -(torch.tensor([-1.0, -0.3, 0.3, 1.0], dtype=torch.float64) - r.tanh() / 2) ** 2


_GRID = (0.1, 0.4, 0.7, 1.0)
register(AlgorithmInfo(
    name="dmcmc.LangevinGibbs", cls=LangevinGibbs, kind="stepper",
    paper="Kim & Ye, Denoising MCMC for Accelerating Diffusion-Based Generative Models, "
          "arXiv 2209.14593",
    default_kwargs=dict(score=_score, time_grid=_GRID, log_prob=_log_prob),
    requires=frozenset({"score", "value"}), stochastic=True,
    invalid_kwargs=(
        (dict(score=None, time_grid=_GRID, log_prob=_log_prob), ValueError, "score"),
        (dict(score=_score, time_grid=(), log_prob=_log_prob), ValueError, "time_grid"),
        (dict(score=_score, time_grid=(0.5, -1.0), log_prob=_log_prob), ValueError, "time_grid"),
        (dict(score=_score, time_grid=_GRID), ValueError, "log_prob"),
        (dict(score=_score, time_grid=_GRID, log_prob=_log_prob, gibbs="max"), ValueError,
         "gibbs"),
        (dict(score=_score, time_grid=_GRID, log_prob=_log_prob, time_prior=(1.0, 2.0)),
         ValueError, "time_prior"),
        (dict(score=_score, time_grid=_GRID, log_prob=_log_prob, step=0.1), TypeError, "step"),
    ),
    reference=_langevin_gibbs_reference,
    reference_kwargs=(dict(score=_score, time_grid=_GRID, log_prob=_log_prob),
                      dict(score=_score, time_grid=_GRID, log_prob=_log_prob,
                           time_prior=(1.0, 2.0, 3.0, 4.0)),
                      dict(score=_score, time_grid=_GRID, log_prob=_log_prob, gibbs="argmax"),
                      dict(score=_score, time_grid=_GRID, time_logits=_time_logits))))
