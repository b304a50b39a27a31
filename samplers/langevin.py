"""Langevin samplers as steppers for `stepping.integrate`, on the kernels the SG-MCMC optimizers
use: `ULA` and `optimizers.SGLD` share `langevin_`, MALA proposes with it, and
`UnderdampedLangevin(scheme="sghmc")` and `optimizers.SGHMC` share `sghmc_`. Chains are batch
dimensions of ``x``; `thin` and `rhat` post-process saved states."""

from __future__ import annotations

import math
import weakref
from typing import Callable, Iterable

import torch
from torch import Tensor

from stochstep.stepping.kernels import kinetic_ou_, langevin_, sghmc_
from stochstep.stepping.noise import Brownian, make_generator, require_noise, standard_normal_like
from stochstep.stepping.optimizer import check_nonnegative, check_positive
from stochstep.stepping.oracles import score_from_log_prob
from stochstep.stepping.integrate import Solution, integrate
from stochstep.stepping.registry import AlgorithmInfo, register
from stochstep.stepping.checks import check_int

__all__ = ["ULA", "MALA", "UnderdampedLangevin", "thin", "rhat"]


class ULA:
    r"""Unadjusted Langevin algorithm: Euler--Maruyama on
    :math:`dX = \nabla \log p(X)\,dt + \sqrt{2T}\,dW`.

    On an increasing grid, the step from :math:`t_0` to :math:`t_1` with
    :math:`h = t_1 - t_0` and :math:`\xi \sim N(0, I)` from the noise source is

    .. math::
        x \leftarrow x + h\, s(x) + \sqrt{2 T h}\,\xi

    with :math:`s` the score. It is :func:`stepping.kernels.langevin_` with the gradient
    :math:`-s(x)`: the very update of :class:`optimizers.SGLD`.

    Args:
        score: ``score(x)`` of the target, for a batch ``x`` of shape ``(..., d)``; or give
            ``log_prob`` instead and the score is taken by autograd.
        log_prob: ``log_prob(x)`` of shape ``(...)``.
        temperature: :math:`T \ge 0` (default 1).

    References:
        G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions and
        their discrete approximations", Bernoulli 1996.

    Example:
        >>> import torch
        >>> from stochstep.samplers import ULA
        >>> ula = ULA(score=lambda x: -x)  # standard normal target
        >>> x = ula.sample(torch.zeros(1000, 2), step_size=0.1, steps=200,
        ...                generator=torch.Generator().manual_seed(0))
        >>> bool((x.var(0) - 1).abs().max() < 0.2)
        True
    """

    order = 1.0
    strong_order = 0.5

    def __init__(self, score: Callable[[Tensor], Tensor] | None = None, *,
                 log_prob: Callable[[Tensor], Tensor] | None = None, temperature: float = 1.0):
        if (score is None) == (log_prob is None):
            raise ValueError("give exactly one of score or log_prob")
        for name, fn in (("score", score), ("log_prob", log_prob)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
        self.score = score if score is not None else score_from_log_prob(log_prob)
        self.temperature = check_nonnegative("temperature", temperature)

    def step_(self, x: Tensor, t0: float, t1: float, noise: Brownian) -> None:
        h = _forward_step("ULA", t0, t1, noise)
        s = self.score(x)
        if not isinstance(s, Tensor) or s.shape != x.shape:
            raise ValueError(f"score must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
        xi = noise.standard_normal(x)
        langevin_([x], [s], [xi], lr=h, temperature=self.temperature, maximize=True)

    def sample(self, x0: Tensor, *, step_size: float, steps: int,
               generator: torch.Generator | None = None, progress: bool = False,
               check_finite: bool = False) -> Tensor:
        """Run ``steps`` steps of size ``step_size`` from ``x0`` (not modified);
        ``check_finite`` raises ``FloatingPointError`` with the step number when the state goes
        NaN or infinite (see :func:`stepping.integrate`)."""
        return _run(self, x0, step_size, steps, generator, progress, check_finite)


register(AlgorithmInfo(
    name="ULA",
    cls=ULA,
    kind="stepper",
    paper="Roberts & Tweedie, Bernoulli 1996",
    default_kwargs=dict(score=lambda x: -x),
    requires=frozenset({"score"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(score=lambda x: -x, temperature=-1.0), ValueError, "temperature"),
        (dict(), ValueError, "score"),
        (dict(score=lambda x: -x, step=0.1), TypeError, "step"),
    ),
    linear_problem=lambda: _ula_linear(),  # defined below, with the other records' helpers
))


# -- shared helpers ----------------------------------------------------------------------------
def _check_fns(score, log_prob, *, need_log_prob=False):
    if need_log_prob and log_prob is None:
        raise ValueError("log_prob is required (the Metropolis test needs density ratios)")
    if not need_log_prob and (score is None) == (log_prob is None):
        raise ValueError("give exactly one of score or log_prob")
    for name, fn in (("score", score), ("log_prob", log_prob)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable, got {type(fn).__name__}")


def _checked_score(score, x):
    s = score(x)
    if not isinstance(s, Tensor) or s.shape != x.shape:
        raise ValueError(f"score must return a tensor shaped like x {tuple(x.shape)}, got "
                         f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
    return s


def _forward_step(name, t0, t1, noise):
    if t1 <= t0:
        raise ValueError(f"{name} runs forward in time: the grid must increase, got {t0} -> {t1}")
    require_noise(noise, name)
    return t1 - t0


def _run(stepper, x0, step_size, steps, generator, progress, check_finite):
    h = check_nonnegative("step_size", step_size)
    if h == 0:
        raise ValueError("step_size must be > 0")
    check_int("steps", steps)
    grid = torch.arange(steps + 1, dtype=torch.float64) * h
    return integrate(stepper, x0, grid, noise=Brownian(make_generator(generator)),
                     progress=progress, check_finite=check_finite)


class _Cache:
    """Values computed by ``fn`` at the tensor ``x`` as it is now (same object, no in-place
    change since, same function: a target swapped between steps, as in tempering, misses)."""

    def __init__(self):
        self.clear()

    def clear(self):
        self._ref, self._version, self._fn, self.value = None, None, None, None

    def get(self, x, fn):
        if (self._ref is not None and self._ref() is x and x._version == self._version
                and self._fn is fn):
            return self.value
        return None

    def put(self, x, fn, value):
        self._ref, self._version, self._fn, self.value = weakref.ref(x), x._version, fn, value


# -- MALA --------------------------------------------------------------------------------------
class MALA:
    r"""Metropolis-adjusted Langevin algorithm: a ULA proposal, accepted or rejected per chain.

    For the target :math:`\pi_T \propto p^{1/T}` (``log_prob`` :math:`= \log p` up to a
    constant), with :math:`h = t_1 - t_0`, score :math:`s = \nabla \log p` and
    :math:`\xi \sim N(0, I)`, each chain (all dimensions of ``x`` but the last) does

    .. math::
        y &= x + h\, s(x) + \sqrt{2 T h}\,\xi, \qquad
        \log q(b \mid a) = -\frac{\lVert b - a - h\, s(a) \rVert^2}{4 T h}, \\
        \log \alpha &= \frac{\log p(y) - \log p(x)}{T} + \log q(x \mid y) - \log q(y \mid x),
        \qquad x \leftarrow y \ \text{ if } \log u < \log \alpha,\ u \sim U(0, 1)

    The proposal is :func:`stepping.kernels.langevin_` (the ULA/SGLD step), so an accepted
    move is bitwise ULA's. Per step the noise source gives :math:`\xi` (shaped like ``x``) and
    then :math:`u` (shaped like ``x.shape[:-1]``) from its generator. The chain leaves
    :math:`\pi_T` invariant for every :math:`h > 0`; :math:`\log p` and :math:`s` at the current
    state are reused from the previous step unless ``x`` was changed in between.
    ``step_`` returns the boolean acceptance of each chain; ``accepted`` counts acceptances per
    chain and ``acceptance_rate`` is ``accepted / proposed`` (reset by :meth:`reset` and when
    the chain shape changes).

    Args:
        log_prob: ``log_prob(x)`` of shape ``x.shape[:-1]``; ``-inf`` outside the support.
        score: optional ``score(x)`` (:math:`\nabla \log p`); by autograd from ``log_prob``
            if not given.
        temperature: :math:`T > 0` (default 1).

    References:
        G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions and
        their discrete approximations", Bernoulli 2(4), 1996.

    Example:
        >>> import torch
        >>> from stochstep.samplers import MALA
        >>> mala = MALA(log_prob=lambda x: -0.5 * (x ** 2).sum(-1))
        >>> x = mala.sample(torch.zeros(2000, 2), step_size=0.5, steps=100,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> bool((x.var(0) - 1).abs().max() < 0.1), 0.5 < mala.acceptance_rate.mean().item() < 1
        (True, True)
    """

    order = 1.0
    strong_order = 0.5

    def __init__(self, log_prob: Callable[[Tensor], Tensor] | None = None, *,
                 score: Callable[[Tensor], Tensor] | None = None, temperature: float = 1.0):
        _check_fns(score, log_prob, need_log_prob=True)
        self.log_prob = log_prob
        self.score = score
        self.temperature = check_positive("temperature", temperature)
        self._cache = _Cache()
        self.reset()

    def reset(self) -> None:
        """Forget the acceptance counts (and cached values)."""
        self.accepted: Tensor | None = None
        self.proposed = 0
        self._cache.clear()

    @property
    def acceptance_rate(self) -> Tensor | None:
        """Fraction of accepted proposals per chain (None before the first step)."""
        if self.accepted is None or self.proposed == 0:
            return None
        return self.accepted.double() / self.proposed

    def _evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.score is None:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                lp = self.log_prob(xg)
                self._check_lp(lp, x)
                s = torch.autograd.grad(lp.sum(), xg)[0]
            return lp.detach(), s
        lp = self.log_prob(x)
        self._check_lp(lp, x)
        return lp, _checked_score(self.score, x)

    @staticmethod
    def _check_lp(lp, x):
        if not isinstance(lp, Tensor) or lp.shape != x.shape[:-1]:
            got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise ValueError(f"log_prob must map shape {tuple(x.shape)} to "
                             f"{tuple(x.shape[:-1])}, got {got}")

    def step_(self, x: Tensor, t0: float, t1: float, noise: Brownian) -> Tensor:
        h = _forward_step("MALA", t0, t1, noise)
        T = self.temperature
        cached = self._cache.get(x, self.log_prob)
        lp_x, s_x = cached if cached is not None else self._evaluate(x)
        xi = noise.standard_normal(x)
        y = x.clone()
        langevin_([y], [s_x], [xi], lr=h, temperature=T, maximize=True)
        lp_y, s_y = self._evaluate(y)
        log_q_yx = -((y - x - h * s_x) ** 2).sum(-1) / (4 * T * h)
        log_q_xy = -((x - y - h * s_y) ** 2).sum(-1) / (4 * T * h)
        log_alpha = (lp_y - lp_x) / T + log_q_xy - log_q_yx
        gen = noise.generator
        u = torch.rand(x.shape[:-1], generator=gen, dtype=x.dtype, device=gen.device)
        accept = u.to(x.device).log() < log_alpha
        accept = accept & torch.isfinite(lp_y)  # never move to a point outside the support
        a = accept.unsqueeze(-1)
        x.copy_(torch.where(a, y, x))
        self._cache.put(x, self.log_prob,
                        (torch.where(accept, lp_y, lp_x), torch.where(a, s_y, s_x)))
        if self.accepted is None or self.accepted.shape != accept.shape:
            self.accepted, self.proposed = torch.zeros(accept.shape, dtype=torch.int64), 0
        self.accepted += accept.cpu()
        self.proposed += 1
        return accept

    def sample(self, x0: Tensor, *, step_size: float, steps: int,
               generator: torch.Generator | None = None, progress: bool = False,
               check_finite: bool = False) -> Tensor:
        """Run ``steps`` steps of size ``step_size`` from ``x0`` (not modified), with fresh
        acceptance counts; ``check_finite`` as in :meth:`ULA.sample`."""
        self.reset()
        return _run(self, x0, step_size, steps, generator, progress, check_finite)


def _mala_reference(x0, grid, kwargs, generator):
    """The docstring's math, literally, chain by chain (``reference(x0, grid, kwargs,
    generator)`` for steppers: the state after the whole grid)."""
    lp_fn, T = kwargs["log_prob"], kwargs.get("temperature", 1.0)

    def lp_and_score(z):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            lp = lp_fn(z)
            return lp.detach(), torch.autograd.grad(lp.sum(), z)[0]

    x = x0.clone()
    times = torch.as_tensor(grid, dtype=torch.float64).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        h = t1 - t0
        xi = standard_normal_like(x, generator)
        u = torch.rand(x.shape[:-1], generator=generator, dtype=x.dtype)
        lp_x, s_x = lp_and_score(x)
        y = x + h * s_x + math.sqrt(2 * T * h) * xi
        lp_y, s_y = lp_and_score(y)
        log_alpha = ((lp_y - lp_x) / T - ((x - y - h * s_y) ** 2).sum(-1) / (4 * T * h)
                     + ((y - x - h * s_x) ** 2).sum(-1) / (4 * T * h))
        x = torch.where((u.log() < log_alpha).unsqueeze(-1), y, x)
    return x


def _std_normal_log_prob(x):
    return -0.5 * (x ** 2).sum(-1)


register(AlgorithmInfo(
    name="MALA",
    cls=MALA,
    kind="stepper",
    paper="Roberts & Tweedie, Bernoulli 1996",
    default_kwargs=dict(log_prob=_std_normal_log_prob),
    requires=frozenset({"value", "score"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(log_prob=_std_normal_log_prob, temperature=0.0), ValueError, "temperature"),
        (dict(), ValueError, "log_prob"),
        (dict(log_prob=3.0), ValueError, "log_prob"),
        (dict(log_prob=_std_normal_log_prob, step=0.1), TypeError, "step"),
    ),
    reference=_mala_reference,
    reference_kwargs=(dict(log_prob=_std_normal_log_prob),
                      dict(log_prob=lambda x: -(x ** 4).sum(-1) / 4, temperature=0.5)),
))


# -- underdamped (kinetic) Langevin ------------------------------------------------------------
class UnderdampedLangevin:
    r"""Underdamped (kinetic) Langevin dynamics with position ``x`` and momentum ``r``:

    .. math::
        dx = M^{-1} r\,dt, \qquad
        dr = s(x)\,dt - \gamma\, r\,dt + \sqrt{2 \gamma M T}\,dW,

    with score :math:`s = \nabla \log p`, friction :math:`\gamma` (a rate), scalar mass
    :math:`M` and temperature :math:`T`; its stationary law is
    :math:`\propto p(x)^{1/T} \exp(-\lVert r \rVert^2 / (2 M T))`. With :math:`h = t_1 - t_0`,
    ``scheme="baoab"`` (default) is the BAOAB splitting of Leimkuhler and Matthews:

    .. math::
        r &\leftarrow r + \tfrac{h}{2} s(x), \quad x \leftarrow x + \tfrac{h}{2} M^{-1} r, \quad
        r \leftarrow c\, r + \sqrt{(1 - c^2) M T}\,\xi, \quad c = e^{-\gamma h}, \\
        x &\leftarrow x + \tfrac{h}{2} M^{-1} r, \quad r \leftarrow r + \tfrac{h}{2} s(x)

    (weak order 2; on a Gaussian target its stationary position law is exact for
    :math:`h \sqrt{k/M} < 2`; one score evaluation per step, the last one being reused), and
    ``scheme="sghmc"`` is the semi-implicit Euler scheme of Chen et al.,

    .. math::
        r \leftarrow r + h\, s(x) - h \gamma\, r + \sqrt{2 \gamma M T h}\,\xi, \qquad
        x \leftarrow x + h\, M^{-1} r,

    i.e. :func:`stepping.kernels.sghmc_` with :math:`C = \gamma M`, the update of
    :class:`optimizers.SGHMC` (weak order 1).

    State layout: ``x`` (passed to :func:`stepping.integrate`) is the position, of any shape,
    leading dimensions being chains; the momentum lives in ``self.momentum`` (same shape), like
    an optimizer's state. It starts at zero (or at whatever tensor you assign to
    ``self.momentum`` before the run), carries over between runs on states of the same shape,
    dtype and device (so a chain can be continued by integrating again from its last
    position), and is reset by :meth:`reset` or by a state of another shape.

    Args:
        score: ``score(x)`` of the target; or give ``log_prob`` (score by autograd).
        log_prob: ``log_prob(x)`` of shape ``x.shape[:-1]``.
        gamma: friction :math:`\gamma \ge 0` (default 1; 0 gives Hamiltonian dynamics).
        mass: :math:`M > 0` (default 1).
        temperature: :math:`T \ge 0` (default 1).
        scheme: ``"baoab"`` (default) or ``"sghmc"``.

    References:
        B. Leimkuhler, C. Matthews, "Rational construction of stochastic numerical methods for
        molecular sampling", Appl. Math. Res. Express 2013, arXiv:1203.5428 (BAOAB).
        T. Chen, E. B. Fox, C. Guestrin, "Stochastic Gradient Hamiltonian Monte Carlo",
        ICML 2014, arXiv:1402.4102 (the ``"sghmc"`` scheme).

    Example:
        >>> import torch
        >>> from stochstep.samplers import UnderdampedLangevin
        >>> uld = UnderdampedLangevin(score=lambda x: -x, gamma=2.0)
        >>> x = uld.sample(torch.zeros(2000, 2), step_size=0.2, steps=200,
        ...                generator=torch.Generator().manual_seed(0))
        >>> bool((x.var(0) - 1).abs().max() < 0.1), uld.momentum.shape
        (True, torch.Size([2000, 2]))
    """

    def __init__(self, score: Callable[[Tensor], Tensor] | None = None, *,
                 log_prob: Callable[[Tensor], Tensor] | None = None, gamma: float = 1.0,
                 mass: float = 1.0, temperature: float = 1.0, scheme: str = "baoab"):
        _check_fns(score, log_prob)
        self.score = score if score is not None else score_from_log_prob(log_prob)
        self.gamma = check_nonnegative("gamma", gamma)
        self.mass = check_positive("mass", mass)
        self.temperature = check_nonnegative("temperature", temperature)
        if scheme not in ("baoab", "sghmc"):
            raise ValueError(f"scheme must be 'baoab' or 'sghmc', got {scheme!r}")
        self.scheme = scheme
        self.order = 2.0 if scheme == "baoab" else 1.0
        self.strong_order = 1.0  # additive noise
        self._force = _Cache()
        self.reset()

    def reset(self) -> None:
        """Set the momentum back to zero at the next step."""
        self.momentum: Tensor | None = None
        self._force.clear()

    def _momentum_for(self, x: Tensor) -> Tensor:
        r = self.momentum
        if isinstance(r, Tensor) and not r.is_floating_point():
            raise ValueError(f"momentum must be a floating-point tensor, got {r.dtype}")
        if not (isinstance(r, Tensor) and r.shape == x.shape and r.dtype == x.dtype
                and r.device == x.device):
            if r is not None and not isinstance(r, Tensor):
                raise ValueError(f"momentum must be a tensor or None, got {type(r).__name__}")
            r = torch.zeros_like(x)
            self._force.clear()
        self.momentum = r
        return r

    def step_(self, x: Tensor, t0: float, t1: float, noise: Brownian) -> None:
        h = _forward_step("UnderdampedLangevin", t0, t1, noise)
        r = self._momentum_for(x)
        m, T = self.mass, self.temperature
        if self.scheme == "sghmc":
            s = _checked_score(self.score, x)
            xi = noise.standard_normal(x)
            sghmc_([x], [s], [r], [xi], lr=h, friction=self.gamma * m, mass=m,
                   temperature=T, maximize=True)
            return
        s = self._force.get(x, self.score)
        if s is None:
            s = _checked_score(self.score, x)
        torch._foreach_add_([r], [s], alpha=h / 2)           # B
        torch._foreach_add_([x], [r], alpha=h / (2 * m))     # A
        xi = noise.standard_normal(x)
        kinetic_ou_([r], [xi], lr=h, gamma=self.gamma, mass=m, temperature=T)  # O
        torch._foreach_add_([x], [r], alpha=h / (2 * m))     # A
        s = _checked_score(self.score, x)
        torch._foreach_add_([r], [s], alpha=h / 2)           # B
        self._force.put(x, self.score, s)

    def sample(self, x0: Tensor, *, step_size: float, steps: int,
               generator: torch.Generator | None = None, progress: bool = False,
               check_finite: bool = False) -> Tensor:
        """Run ``steps`` steps of size ``step_size`` from ``x0`` (not modified) and zero
        momentum; the final momentum is left in ``self.momentum``. ``check_finite`` as in
        :meth:`ULA.sample` (it checks the position)."""
        self.reset()
        return _run(self, x0, step_size, steps, generator, progress, check_finite)


def _underdamped_reference(x0, grid, kwargs, generator):
    """The docstring's BAOAB / SGHMC-Euler math, literally, from zero momentum."""
    score = kwargs["score"]
    g, m = kwargs.get("gamma", 1.0), kwargs.get("mass", 1.0)
    T, scheme = kwargs.get("temperature", 1.0), kwargs.get("scheme", "baoab")
    x, r = x0.clone(), torch.zeros_like(x0)
    times = torch.as_tensor(grid, dtype=torch.float64).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        h = t1 - t0
        xi = standard_normal_like(x, generator)
        if scheme == "sghmc":
            r = r + h * score(x) - h * g * r + math.sqrt(2 * g * m * T * h) * xi
            x = x + h * r / m
            continue
        c = math.exp(-g * h)
        r = r + h / 2 * score(x)
        x = x + h / 2 * r / m
        r = c * r + math.sqrt((1 - c * c) * m * T) * xi
        x = x + h / 2 * r / m
        r = r + h / 2 * score(x)
    return x


def _minus(x):
    return -x


def _ones():
    return torch.ones(3, dtype=torch.float64)


def _ula_linear():
    """x' = -x from 1 over [0, 1] (ULA's drift for a standard normal target)."""
    return ULA(score=_minus), _ones(), 0.0, 1.0, _ones() * math.exp(-1.0)


def _underdamped_linear():
    """x'' = -x - x' from x = 1, r = 0 over [0, 1]: the damped oscillator in closed form."""
    w = math.sqrt(0.75)
    exact = math.exp(-0.5) * (math.cos(w) + math.sin(w) / (2 * w))
    return UnderdampedLangevin(score=_minus, gamma=1.0), _ones(), 0.0, 1.0, _ones() * exact


register(AlgorithmInfo(
    name="UnderdampedLangevin",
    cls=UnderdampedLangevin,
    kind="stepper",
    paper="Leimkuhler & Matthews, AMRX 2013, arXiv:1203.5428; Chen et al., arXiv:1402.4102",
    default_kwargs=dict(score=_minus),
    requires=frozenset({"score"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(score=_minus, gamma=-1.0), ValueError, "gamma"),
        (dict(score=_minus, mass=0.0), ValueError, "mass"),
        (dict(score=_minus, temperature=-1.0), ValueError, "temperature"),
        (dict(score=_minus, scheme="leapfrog"), ValueError, "scheme"),
        (dict(), ValueError, "score"),
        (dict(score=_minus, friction=1.0), TypeError, "friction"),
    ),
    linear_problem=_underdamped_linear,
    reference=_underdamped_reference,
    reference_kwargs=(dict(score=_minus), dict(score=lambda x: -x ** 3, gamma=0.5, mass=2.0,
                                              temperature=0.3),
                      dict(score=lambda x: torch.sin(x) - x, gamma=2.0, mass=0.5,
                           scheme="sghmc")),
))


# -- chains, burn-in and thinning --------------------------------------------------------------
def thin(states: Solution | Tensor | Iterable[Tensor], *, burn_in: int = 0, every: int = 1):
    """Drop the first ``burn_in`` states and keep every ``every``-th one after that.

    ``states`` is an :class:`stepping.Solution` (its saved states; returns a ``Solution``
    with the kept times and states), a tensor whose first dimension indexes states (returns
    ``states[burn_in::every]``), or any iterable of tensors, e.g. a generator that yields the
    parameter after each optimizer step: each kept item is cloned when it is yielded (so a
    parameter updated in place is recorded as it was), and the result is their stack. Counts
    are in states as given: for a ``Solution`` saved with ``save_every=k`` entry ``i`` is
    step ``i k`` (entry 0 the initial state).

    Example:
        >>> import torch
        >>> theta = torch.zeros(2)
        >>> def chain():
        ...     for _ in range(10):
        ...         theta.add_(1.0)  # stands for opt.step()
        ...         yield theta
        >>> thin(chain(), burn_in=4, every=3)[:, 0].tolist()
        [5.0, 8.0]
    """
    check_int("burn_in", burn_in, 0)
    check_int("every", every)
    if isinstance(states, Solution):
        return Solution(states.x, states.times[burn_in::every], states.path[burn_in::every])
    if isinstance(states, Tensor):
        return states[burn_in::every]
    kept = [s.detach().clone() for k, s in enumerate(states)
            if k >= burn_in and (k - burn_in) % every == 0]
    if not kept:
        raise ValueError(f"no states left after burn_in={burn_in}")
    return torch.stack(kept)


def rhat(samples: Tensor) -> Tensor:
    r"""Gelman--Rubin potential scale reduction of ``samples`` shaped ``(draws, chains, ...)``,
    elementwise over the trailing dimensions:

    .. math::
        \hat R = \sqrt{\frac{(n - 1)/n \cdot W + B / n}{W}}

    with :math:`n` draws, :math:`W` the mean within-chain variance and :math:`B / n` the
    variance of the chain means. Values near 1 mean the chains agree.

    References:
        A. Gelman, D. B. Rubin, "Inference from iterative simulation using multiple
        sequences", Statistical Science 1992.

    Example:
        >>> import torch
        >>> z = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
        >>> bool((rhat(z) - 1).abs() < 0.02)
        True
    """
    if not isinstance(samples, Tensor) or samples.ndim < 2 or samples.shape[0] < 2 \
            or samples.shape[1] < 2:
        raise ValueError("samples must be a tensor shaped (draws >= 2, chains >= 2, ...)")
    n = samples.shape[0]
    w = samples.var(0).mean(0)
    b_over_n = samples.mean(0).var(0)
    return (((n - 1) / n * w + b_over_n) / w).sqrt()
