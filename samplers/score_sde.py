r"""Sampling, likelihood and training for score SDEs (Song et al., arXiv 2011.13456).

Every sampler is a stepper for :func:`stepping.integrate` on a decreasing time grid from
``sde.T`` to ``t_end``; predictor--corrector is the composition :class:`PredictorCorrector`.
The SDE steppers follow the grid's direction: on a decreasing grid they integrate the reverse
SDE with the score, on an increasing grid the forward (noising) SDE, where the score is unused.
The ODE steppers :class:`Heun` and :class:`RK45` integrate any field ``field(x, t)`` in either
direction; :func:`probability_flow` builds the PF-ODE field of a score.

``score(x, t)`` takes a batch ``x`` of shape ``(batch, ...)`` and ``t`` of shape ``(batch,)``
and returns a tensor shaped like ``x``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import Tensor

from stochstep.samplers.sde import SDE, SubVPSDE, VESDE, VPSDE
from stochstep.stepping.grids import uniform
from stochstep.stepping.integrate import integrate
from stochstep.stepping.noise import Brownian, make_generator, require_noise, standard_normal_like
from stochstep.stepping.registry import AlgorithmInfo, register
from stochstep.stepping.checks import check_finite_state, check_int

__all__ = [
    "EulerMaruyama", "ReverseDiffusion", "LangevinCorrector", "PredictorCorrector", "Heun",
    "RK45", "probability_flow", "sample", "denoise", "log_likelihood", "bits_per_dim",
    "dsm_loss", "METHODS",
]

Score = Callable[[Tensor, Tensor], Tensor]
METHODS = ("euler_maruyama", "reverse_diffusion", "pc", "heun", "rk45")
# Score evaluations per step of each method (RK45 counts its own, in ``RK45.nfe``).
_NFE_PER_STEP = {"euler_maruyama": 1, "reverse_diffusion": 1, "pc": 2, "heun": 2, "rk45": None}


# -- checks ------------------------------------------------------------------------------
def _check_sde(sde) -> SDE:
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a VPSDE, VESDE or SubVPSDE, got {type(sde).__name__}")
    return sde


def _check_callable(name: str, fn) -> Callable:
    if not callable(fn):
        raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def _check_batch(x, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (batch, ...), got {got}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def score_at(score: Score, x: Tensor, t) -> Tensor:
    """``score(x, t)`` with ``t`` a float or a ``(batch,)`` tensor; checks the output's shape."""
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
    s = score(x, tt)
    if not isinstance(s, Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(f"score must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return s.to(x.dtype)


def probability_flow(sde: SDE, score: Score) -> Callable[[Tensor, float], Tensor]:
    r"""The PF-ODE field :math:`v(x, t) = f(x, t) - \tfrac12 g(t)^2 s(x, t)` of ``score``."""
    _check_sde(sde), _check_callable("score", score)

    def field(x: Tensor, t: float) -> Tensor:
        return sde.probability_flow(x, t, score_at(score, x, t))

    return field


class _ScoreStepper:
    def __init__(self, sde: SDE, score: Score):
        self.sde = _check_sde(sde)
        self.score = _check_callable("score", score)

    def _times(self, t0: float, t1: float) -> None:
        self.sde.check_time(t0, "t0"), self.sde.check_time(t1, "t1")


# -- predictors and corrector ------------------------------------------------------------
class EulerMaruyama(_ScoreStepper):
    r"""Euler--Maruyama predictor: one step of the reverse SDE (forward SDE on an increasing grid).

    With :math:`h = t_1 - t_0 < 0` and :math:`z \sim N(0, I)`,

    .. math::
        x \leftarrow x + [f(x, t_0) - g(t_0)^2 s(x, t_0)]\,h + g(t_0)\sqrt{|h|}\,z;

    with :math:`h > 0`, :math:`x \leftarrow x + f h + g \sqrt{h} z`. The noise is additive, so
    the strong order is 1. The reference code uses :math:`|h| = 1/N`, slightly off its own grid;
    here :math:`h` is the grid's.

    Args:
        sde: a :class:`samplers.VPSDE`, :class:`samplers.VESDE` or :class:`samplers.SubVPSDE`.
        score: ``score(x, t)``.

    References:
        Y. Song et al., arXiv 2011.13456 (Section 4.1, Appendix D).

    Example:
        >>> from stochstep.samplers import VPSDE
        >>> from stochstep.stepping import Brownian, integrate, uniform
        >>> x = integrate(EulerMaruyama(VPSDE(), lambda x, t: -x), torch.zeros(4, 2),
        ...               uniform(1.0, 1e-3, 10), noise=Brownian(torch.Generator().manual_seed(0)))
        >>> x.shape
        torch.Size([4, 2])
    """

    order = 1.0
    strong_order = 1.0

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        self._times(t0, t1)
        # The noise source's own increment over [t0, t1]: Brownian, or e.g. the Markov-
        # approximate fractional Brownian motion of stepping.noise.FractionalBrownian.
        dw = require_noise(noise, "EulerMaruyama").increment(x, t0, t1)
        h = t1 - t0
        drift = self.sde.drift(x, t0) if h > 0 else \
            self.sde.reverse_drift(x, t0, score_at(self.score, x, t0))
        g = self.sde.expand(self.sde.diffusion(t0), x)
        x.add_(drift * h).add_(g * dw)


class ReverseDiffusion(_ScoreStepper):
    r"""Reverse-diffusion predictor: the forward chain's discretisation run backwards.

    With the SDE's discretisation :math:`x_{hi} = x_{lo} + f_i(x_{lo}) + G_i z` over the step
    (:meth:`samplers.sde.SDE.discretize`: DDPM for VP, SMLD for VE, Euler for sub-VP),

    .. math::
        x \leftarrow x - f_i(x) + G_i^2\, s(x, t_0) + G_i z

    on a decreasing grid, and the forward chain :math:`x \leftarrow x + f_i(x) + G_i z` on an
    increasing one (the exact noising kernel for VE).

    Args:
        sde: the SDE.
        score: ``score(x, t)``.

    References:
        Y. Song et al., arXiv 2011.13456 (Section 4.2, Appendix E).

    Example:
        >>> from stochstep.samplers import VESDE
        >>> from stochstep.stepping import Brownian, integrate, uniform
        >>> x = integrate(ReverseDiffusion(VESDE(), lambda x, t: -x / (1 + t[:, None])),
        ...               torch.zeros(4, 2), uniform(1.0, 1e-3, 5),
        ...               noise=Brownian(torch.Generator().manual_seed(0)))
        >>> bool(torch.isfinite(x).all())
        True
    """

    order = 1.0
    strong_order = 1.0

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        self._times(t0, t1)
        z = require_noise(noise, "ReverseDiffusion").standard_normal(x)
        f, g = self.sde.discretize(x, t0, t1)
        if t1 > t0:
            x.add_(f).add_(g * z)
        else:
            s = score_at(self.score, x, t0)
            x.sub_(f).add_(g ** 2 * s).add_(g * z)


class LangevinCorrector(_ScoreStepper):
    r"""Langevin corrector: ``n_steps`` Langevin moves towards :math:`p_{t_0}` (time stays put).

    With :math:`z \sim N(0, I)` and norms per sample averaged over the batch,

    .. math::
        \epsilon = 2 a_i \left(r\, \frac{\overline{\|z\|}}{\overline{\|s(x, t_0)\|}}\right)^2,
        \qquad x \leftarrow x + \epsilon\, s(x, t_0) + \sqrt{2 \epsilon}\, z,

    :math:`r` the signal-to-noise ratio ``snr`` and :math:`a_i` =
    ``sde.corrector_alpha(t0, t1)``: :math:`e^{-\beta(t_0)|t_1 - t_0|} \in (0, 1]` for VP/sub-VP
    (the reference's :math:`1 - \beta(t_0)\Delta t` up to :math:`O((\beta\Delta t)^2)`; that
    one turns negative when :math:`\beta \Delta t > 1`, i.e. NaN at 5--10 steps), 1 for VE.
    A batch whose scores are all zero has no scale for :math:`\epsilon`; the move is skipped.
    ``order`` is that of the Langevin step (Euler--Maruyama on Langevin dynamics).

    Args:
        sde: the SDE.
        score: ``score(x, t)``.
        snr: :math:`r > 0` (default 0.16, the reference's).
        n_steps: moves per call (default 1).

    References:
        Y. Song et al., arXiv 2011.13456 (Algorithms 2--5).

    Example:
        >>> from stochstep.samplers import VPSDE
        >>> from stochstep.stepping import Brownian, integrate, uniform
        >>> pc = PredictorCorrector(ReverseDiffusion(VPSDE(), lambda x, t: -x),
        ...                         LangevinCorrector(VPSDE(), lambda x, t: -x, snr=0.1))
        >>> x = integrate(pc, torch.randn(500, 2, generator=torch.Generator().manual_seed(0)),
        ...               uniform(1.0, 1e-3, 50), noise=Brownian(torch.Generator().manual_seed(1)))
        >>> bool((x.var(0) - 1).abs().max() < 0.25)
        True
    """

    order = 1.0
    strong_order = 0.5

    def __init__(self, sde: SDE, score: Score, *, snr: float = 0.16, n_steps: int = 1):
        super().__init__(sde, score)
        if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not 0 < snr < math.inf:
            raise ValueError(f"snr must be a finite number > 0, got {snr!r}")
        check_int("n_steps", n_steps)
        self.snr, self.n_steps = float(snr), n_steps

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        self._times(t0, t1)
        noise = require_noise(noise, "LangevinCorrector")
        alpha = self.sde.corrector_alpha(t0, t1)
        for _ in range(self.n_steps):
            s = score_at(self.score, x, t0)
            z = noise.standard_normal(x)
            s_norm = s.reshape(len(s), -1).norm(dim=-1).mean()
            if s_norm == 0:
                continue
            z_norm = z.reshape(len(z), -1).norm(dim=-1).mean()
            eps = 2 * alpha * (self.snr * z_norm / s_norm) ** 2
            x.add_(eps * s).add_(torch.sqrt(2 * eps) * z)


class PredictorCorrector:
    r"""Predictor--corrector: at each step the corrector at :math:`t_0`, then the predictor
    :math:`t_0 \to t_1` (the reference's order). Orders are the predictor's.

    .. math::
        x \leftarrow P_{t_0 \to t_1}\big(C_{t_0}(x)\big)

    Args:
        predictor: a stepper, e.g. :class:`ReverseDiffusion` or :class:`EulerMaruyama`.
        corrector: a stepper, e.g. :class:`LangevinCorrector`.

    References:
        Y. Song et al., arXiv 2011.13456 (Algorithm 1).

    Example:
        >>> from stochstep.samplers import VESDE
        >>> sde, s = VESDE(), lambda x, t: -x
        >>> PredictorCorrector(ReverseDiffusion(sde, s), LangevinCorrector(sde, s)).order
        1.0
    """

    def __init__(self, predictor, corrector):
        for name, st in (("predictor", predictor), ("corrector", corrector)):
            if not callable(getattr(st, "step_", None)):
                raise ValueError(f"{name} must be a stepper with step_(x, t0, t1, noise)")
        self.predictor, self.corrector = predictor, corrector
        self.order = predictor.order
        self.strong_order = getattr(predictor, "strong_order", predictor.order)

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        self.corrector.step_(x, t0, t1, noise)
        self.predictor.step_(x, t0, t1, noise)


# -- ODE solvers ---------------------------------------------------------------------------
class Heun:
    r"""Heun's method (explicit trapezoidal rule, order 2) for :math:`dx/dt = v(x, t)`.

    .. math::
        \tilde x = x + h\,v(x, t_0), \qquad
        x \leftarrow x + \tfrac h2\,[v(x, t_0) + v(\tilde x, t_1)]

    with :math:`h = t_1 - t_0` of either sign; two field evaluations per step.

    Args:
        field: ``field(x, t)`` with ``t`` a float, returning a tensor shaped like ``x``
            (e.g. :func:`probability_flow`).

    References:
        T. Karras et al., arXiv 2206.00364 (Heun for diffusion ODEs); Y. Song et al.,
        arXiv 2011.13456 (probability-flow ODE).

    Example:
        >>> from stochstep.stepping import integrate
        >>> x = integrate(Heun(lambda x, t: -x), torch.ones(1), torch.linspace(0, 1, 11))
        >>> abs(x.item() - math.exp(-1)) < 1e-3
        True
    """

    order = 2.0

    def __init__(self, field: Callable[[Tensor, float], Tensor]):
        self.field = _check_callable("field", field)

    def _f(self, x, t):
        v = self.field(x, t)
        if not isinstance(v, Tensor) or v.shape != x.shape:
            raise ValueError(f"field must return a tensor shaped like x {tuple(x.shape)}")
        return v.to(x.dtype)

    def step_(self, x: Tensor, t0: float, t1: float, noise=None) -> None:
        h = t1 - t0
        v0 = self._f(x, t0)
        v1 = self._f(x + h * v0, t1)
        x.add_((v0 + v1) * (h / 2))


# Dormand--Prince 5(4) tableau.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


class RK45(Heun):
    r"""Adaptive Dormand--Prince 5(4) for :math:`dx/dt = v(x, t)`, error-controlled inside one
    grid step (so :func:`stepping.integrate` stays the only outer loop).

    Within :math:`[t_0, t_1]` it takes steps of the 5th-order solution and accepts one when

    .. math::
        \mathrm{err} = \Big\| \frac{x_5 - x_4}{\mathrm{atol} + \mathrm{rtol}\max(|x|, |x_5|)}
        \Big\|_{rms} < 1,

    the RMS norm taken over the whole flattened batch (as the reference's scipy call); the next
    step is scaled by :math:`0.9\,\mathrm{err}^{-1/5}` within [0.2, 10] (and by at most 1 right
    after a rejection), the first one chosen as in scipy's ``solve_ivp``: step for step the
    same solver as ``scipy.integrate.solve_ivp(method="RK45")`` over each grid interval.
    ``nfe`` counts field evaluations.

    Args:
        field: ``field(x, t)``.
        rtol, atol: tolerances (default 1e-5 each, the reference's).
        max_steps: steps allowed per grid interval before a RuntimeError.

    References:
        J. R. Dormand, P. J. Prince, J. Comput. Appl. Math. 6 (1980); Y. Song et al.,
        arXiv 2011.13456 (Section 4.3).

    Example:
        >>> from stochstep.stepping import integrate
        >>> x = integrate(RK45(lambda x, t: -x, rtol=1e-8, atol=1e-8),
        ...               torch.ones(1, dtype=torch.float64), [0.0, 1.0])
        >>> abs(x.item() - math.exp(-1)) < 1e-7
        True
    """

    order = 5.0

    def __init__(self, field, *, rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int = 100_000):
        super().__init__(field)
        for name, v in (("rtol", rtol), ("atol", atol)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        check_int("max_steps", max_steps)
        self.rtol, self.atol, self.max_steps = float(rtol), float(atol), max_steps
        self.nfe = 0

    def _f(self, x, t):
        self.nfe += 1
        return super()._f(x, t)

    def _rms(self, e: Tensor, scale: Tensor) -> float:
        return (e / scale).pow(2).mean().sqrt().item()

    def step_(self, x: Tensor, t0: float, t1: float, noise=None) -> None:
        direction = 1.0 if t1 > t0 else -1.0
        t, y = t0, x.clone()
        k1 = self._f(y, t)
        if not torch.isfinite(k1).all():  # no step size helps; later k1 are accepted, finite
            raise FloatingPointError(f"RK45: the field is not finite at the start t={t0}")
        scale = self.atol + self.rtol * y.abs()
        d0, d1 = self._rms(y, scale), self._rms(k1, scale)
        h = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, abs(t1 - t0))
        d2 = self._rms(self._f(y + direction * h * k1, t + direction * h) - k1, scale) / h
        h1 = max(1e-6, h * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
        h = min(100 * h, h1, abs(t1 - t0))
        norm, rejected = 0.0, False
        for _ in range(self.max_steps):
            if direction * (t1 - t) <= 0:
                x.copy_(y)
                return
            h = min(h, abs(t1 - t))
            if h < 1e-14 * max(1.0, abs(t)):
                why = "" if math.isfinite(norm) else ": the field is not finite near there"
                raise RuntimeError(f"RK45 step size underflow at t={t}{why}")
            hs = direction * h
            ks = [k1]
            for c, a in zip(_DP_C[1:], _DP_A[1:]):
                yi = y + hs * sum(ai * ki for ai, ki in zip(a, ks))
                ks.append(self._f(yi, t + c * hs))
            y_new = y + hs * sum(b * k for b, k in zip(_DP_B, ks))
            k7 = self._f(y_new, t + hs)
            err = hs * sum(e * k for e, k in zip(_DP_E, ks + [k7]) if e != 0)
            norm = self._rms(err, self.atol + self.rtol * torch.maximum(y.abs(), y_new.abs()))
            if norm < 1:
                t = t1 if h == abs(t1 - t) else t + hs
                y, k1 = y_new, k7
                grow = 10.0 if norm == 0 else min(10.0, 0.9 * norm ** -0.2)
                h *= min(1.0, grow) if rejected else grow  # no growth right after a rejection
                rejected = False
            else:  # a NaN norm lands here too: max(0.2, nan) is 0.2, as in scipy
                h *= max(0.2, 0.9 * norm ** -0.2)
                rejected = True
        raise RuntimeError(f"RK45 took more than max_steps={self.max_steps} steps in one interval")


# -- public entry points --------------------------------------------------------------------
def _check_t_end(sde: SDE, t_end) -> float:
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)) \
            or not 0 < t_end < sde.T:
        raise ValueError(f"t_end must lie in (0, {sde.T}) (the SDE's domain), got {t_end!r}")
    return float(t_end)


def denoise(score: Score, sde: SDE, x: Tensor, t: float) -> Tensor:
    r"""Tweedie's posterior mean :math:`E[x_0 \mid x_t = x] = (x + c(t)^2 s(x, t)) / b(t)`.

    The reference code's final ``noise_removal`` step is :math:`x + c^2 s` up to
    :math:`b(t) = 1 - O(t)`; this is the exact posterior mean for the Gaussian kernel.

    Example:
        >>> from stochstep.samplers import VESDE
        >>> denoise(lambda x, t: -x, VESDE(), torch.ones(2, 1), 0.0)  # N(0, 1) data, c = 0.01
        tensor([[0.9999],
                [0.9999]])
    """
    _check_sde(sde), _check_callable("score", score), _check_batch(x)
    sde.check_time(t)
    b, c = sde.marginal(t)
    s = score_at(score, x, t)
    return (x + sde.expand(c ** 2, x) * s) / sde.expand(b, x)


def _stepper(method: str, sde: SDE, score: Score, snr: float):
    if method == "euler_maruyama":
        return EulerMaruyama(sde, score)
    if method == "reverse_diffusion":
        return ReverseDiffusion(sde, score)
    if method == "pc":
        return PredictorCorrector(ReverseDiffusion(sde, score),
                                  LangevinCorrector(sde, score, snr=snr))
    if method == "heun":
        return Heun(probability_flow(sde, score))
    if method == "rk45":
        return RK45(probability_flow(sde, score))
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def sample(score: Score, sde: SDE, x: Tensor, *, steps: int, method: str, t_end: float = 1e-3,
           generator: torch.Generator | None = None, progress: bool = False,
           snr: float | None = None, denoise_last: bool = False,
           check_finite: bool = False) -> Tensor:
    r"""Draw samples of :math:`p_{t_{end}}` by integrating from ``sde.T`` down to ``t_end``.

    The grid is ``steps`` equal intervals from :math:`T` to :math:`t_{end}`. Methods:

    - ``"euler_maruyama"``: :class:`EulerMaruyama` on the reverse SDE (``steps`` score calls);
    - ``"reverse_diffusion"``: :class:`ReverseDiffusion` (``steps`` calls);
    - ``"pc"``: reverse diffusion + :class:`LangevinCorrector` with ``snr`` (``2 steps`` calls);
    - ``"heun"``: :class:`Heun` on the probability-flow ODE (``2 steps`` calls);
    - ``"rk45"``: :class:`RK45` on the PF-ODE, rtol = atol = 1e-5, error-controlled within each
      of the ``steps`` intervals (``steps=1`` is the reference's single adaptive solve).

    .. math::
        dx = [f - g^2 s]\,dt + g\,d\bar w \quad\text{or}\quad \frac{dx}{dt} = f - \tfrac12 g^2 s

    Args:
        score: ``score(x, t)`` (see the module docstring).
        sde: a :class:`samplers.VPSDE`, :class:`samplers.VESDE` or :class:`samplers.SubVPSDE`.
        x: the prior draw at time ``sde.T``, shape ``(batch, ...)``; not modified.
        steps: number of grid intervals (>= 1).
        method: one of the names above.
        t_end: last time, in ``(0, T)`` (default 1e-3).
        generator: randomness of the SDE methods.
        progress: show a progress bar.
        snr: the corrector's signal-to-noise ratio (``"pc"`` only; default 0.16, the
            reference's).
        denoise_last: apply :func:`denoise` at ``t_end`` (the reference's ``noise_removal``);
            off by default so that the samples follow :math:`p_{t_{end}}`.
        check_finite: raise ``FloatingPointError`` with the step number and time as soon as
            the state holds a NaN or infinity (see :func:`stepping.integrate`).

    Returns:
        Samples shaped like ``x``.

    References:
        Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
        Equations", ICLR 2021, arXiv 2011.13456.

    Example:
        >>> from stochstep.samplers import VPSDE
        >>> g = torch.Generator().manual_seed(0)
        >>> x = VPSDE().prior_sample((2000, 2), generator=g)
        >>> y = sample(lambda x, t: -x, VPSDE(), x, steps=100, method="euler_maruyama",
        ...            generator=g)  # N(0, I) data: the score is -x at every t
        >>> bool((y.var(0) - 1).abs().max() < 0.1)
        True
    """
    _check_sde(sde), _check_callable("score", score), _check_batch(x)
    check_int("steps", steps)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t_end = _check_t_end(sde, t_end)
    if snr is not None and method != "pc":
        raise ValueError(f"snr sets the corrector of method='pc' only, got method={method!r}")
    stepper = _stepper(method, sde, score, 0.16 if snr is None else snr)
    noise = Brownian(make_generator(generator)) if method not in ("heun", "rk45") else None
    out = integrate(stepper, x, uniform(sde.T, t_end, steps), noise=noise, progress=progress,
                    desc=method, check_finite=check_finite)
    if denoise_last:
        with torch.no_grad():
            out = denoise(score, sde, out, t_end)
        if check_finite:
            check_finite_state(out, f"{method}: the final denoising (t = {t_end})")
    return out


def log_likelihood(score: Score, sde: SDE, x: Tensor, *, t_end: float = 1e-3,
                   exact_trace: bool = False, probes: int = 1,
                   generator: torch.Generator | None = None, probe: str = "rademacher",
                   rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    r"""Log-density of :math:`p_{t_{end}}` at ``x`` by the instantaneous change of variables.

    Integrating the probability-flow ODE :math:`\dot x = \tilde f(x, t) = f - g^2 s / 2` from
    :math:`t_{end}` to :math:`T` with :class:`RK45`,

    .. math::
        \log p_{t_{end}}(x) = \log p_T(x(T)) + \int_{t_{end}}^T \nabla\cdot \tilde f(x(t), t)\,dt,
        \qquad \nabla\cdot\tilde f \approx \frac1K \sum_{k} v_k^\top \nabla(\tilde f \cdot v_k),

    with :math:`K` = ``probes`` Rademacher or Gaussian vectors fixed per datum (Hutchinson), or
    the exact trace (one backward pass per dimension; for small dimensions). :math:`p_T` is the
    SDE's prior.

    Args:
        score: ``score(x, t)``, differentiable in ``x``.
        sde: the SDE.
        x: data, shape ``(batch, ...)``.
        t_end: start time in ``(0, T)`` (default 1e-3).
        exact_trace: use the exact divergence.
        probes: number of Hutchinson vectors (>= 1).
        generator: randomness of the probes.
        probe: ``"rademacher"`` or ``"gaussian"``.
        rtol, atol: ODE tolerances (default 1e-5, the reference's).

    Returns:
        Log-likelihood in nats, shape ``(batch,)`` (see :func:`bits_per_dim`).

    References:
        Y. Song et al., arXiv 2011.13456 (Section 4.3, Appendix D.2); W. Grathwohl et al.,
        FFJORD, arXiv 1810.01367.

    Example:
        >>> from stochstep.samplers import VPSDE
        >>> x = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
        >>> ll = log_likelihood(lambda x, t: -x, VPSDE(), x, exact_trace=True)  # N(0, I) data
        >>> bool(torch.allclose(ll, -0.5 * (x**2).sum(1) - math.log(2 * math.pi), atol=1e-4))
        True
    """
    _check_sde(sde), _check_callable("score", score), _check_batch(x)
    t_end = _check_t_end(sde, t_end)
    check_int("probes", probes)
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    n, d = x.shape[0], x[0].numel()
    if not exact_trace:
        gen = make_generator(generator)
        v = standard_normal_like(x.new_empty(probes, n, d), gen)
        if probe == "rademacher":
            v = v.sign().masked_fill_(v == 0, 1.0)

    def field(y: Tensor, t: float) -> Tensor:
        with torch.enable_grad():
            xt = y[:, :d].reshape(x.shape).detach().requires_grad_(True)
            vel = sde.probability_flow(xt, t, score_at(score, xt, t)).reshape(n, d)
            if exact_trace:
                div = sum(torch.autograd.grad(vel[:, i].sum(), xt, retain_graph=True)[0]
                          .reshape(n, d)[:, i] for i in range(d))
            else:
                div = sum((torch.autograd.grad((vel * vk).sum(), xt, retain_graph=True)[0]
                           .reshape(n, d) * vk).sum(-1) for vk in v) / probes
        return torch.cat([vel.detach(), div.detach()[:, None]], 1)

    y0 = torch.cat([x.detach().reshape(n, d), x.new_zeros(n, 1)], 1)
    y = integrate(RK45(field, rtol=rtol, atol=atol), y0, [t_end, sde.T])
    return sde.prior_log_prob(y[:, :d].reshape(x.shape)) + y[:, d]


def bits_per_dim(log_likelihood: Tensor, dim: int) -> Tensor:
    r"""Convert nats per sample to bits per dimension: :math:`-\log p / (d \ln 2)`.

    Example:
        >>> bits_per_dim(torch.tensor([-2 * math.log(2)]), 2)
        tensor([1.])
    """
    return -log_likelihood / (dim * math.log(2))


def dsm_loss(score: Score, sde: SDE, x: Tensor, *, t_min: float = 1e-5,
             likelihood_weighting: bool = False, reduce_mean: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    r"""Denoising score-matching loss for training ``score`` on data ``x``.

    With :math:`t \sim U(t_{min}, T)` and :math:`\varepsilon \sim N(0, I)` per sample and
    :math:`x_t = b(t) x + c(t) \varepsilon`,

    .. math::
        L = \tfrac12 E\,\|c(t)\,s(x_t, t) + \varepsilon\|^2 \quad\text{or, with likelihood
        weighting,}\quad L = \tfrac12 E\,g(t)^2 \|s(x_t, t) + \varepsilon / c(t)\|^2,

    half the squared norm summed over dimensions, or (``reduce_mean``) the squared norm
    averaged over them, exactly as the reference's continuous-time loss reduces. Its minimiser
    is the marginal score.

    Args:
        score: the model ``score(x, t)``.
        sde: the SDE.
        x: a data batch ``(batch, ...)``.
        t_min: smallest time (default 1e-5, the reference's).
        likelihood_weighting: weight by :math:`g^2` (a bound on the negative log-likelihood).
        reduce_mean: average instead of sum over dimensions.
        generator: randomness of ``t`` and :math:`\varepsilon`.

    References:
        Y. Song et al., arXiv 2011.13456 (Eq. 7); Y. Song et al., "Maximum Likelihood
        Training of Score-Based Diffusion Models", arXiv 2101.09258.

    Example:
        >>> from stochstep.samplers import VPSDE
        >>> x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
        >>> loss = dsm_loss(lambda x, t: -x, VPSDE(), x, generator=torch.Generator().manual_seed(1))
        >>> loss.shape
        torch.Size([])
    """
    _check_sde(sde), _check_callable("score", score), _check_batch(x)
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0 < t_min < sde.T:
        raise ValueError(f"t_min must lie in (0, {sde.T}), got {t_min!r}")
    gen = make_generator(generator)
    u = torch.rand(x.shape[0], generator=gen, dtype=torch.float64, device=gen.device)
    t = (t_min + (sde.T - t_min) * u).to(x.device)
    z = standard_normal_like(x, gen)
    b, c = sde.marginal(t)
    xt = sde.expand(b, x) * x + sde.expand(c, x) * z
    s = score_at(score, xt, t.to(x.dtype))
    if likelihood_weighting:
        per = (s + z / sde.expand(c, x)) ** 2 * sde.expand(sde.diffusion(t) ** 2, x)
    else:
        per = (sde.expand(c, x) * s + z) ** 2
    per = per.reshape(x.shape[0], -1)
    return (per.mean(-1) if reduce_mean else 0.5 * per.sum(-1)).mean()


# -- registry --------------------------------------------------------------------------------
def _score(x, t):  # the score of N(1, I) data under a VP-type SDE: never zero at x = 0
    return 1.0 - x


def _reverse_vp_linear(make):
    """The reverse VP SDE for standard normal data (score -x, marginal variance 1) run from
    x(1) = 1 to t = 1e-3 without noise: the mean obeys x' = beta x / 2, so
    x(1e-3) = exp(-(B(1) - B(1e-3)) / 2)."""
    sde, ones = VPSDE(), torch.ones(3, dtype=torch.float64)
    drop = float(sde.integrated_beta(torch.tensor(1.0)) - sde.integrated_beta(torch.tensor(1e-3)))
    return make(sde), ones, 1.0, 1e-3, ones * math.exp(-drop / 2)


def _decay_linear(make):
    """x' = -x from 1 over [0, 1]."""
    ones = torch.ones(3, dtype=torch.float64)
    return make(lambda x, t: -x), ones, 0.0, 1.0, ones * math.exp(-1.0)


def _corrector_reference(x0, grid, kwargs, generator):
    """The corrector's docstring math, literally: at each grid time t0, ``n_steps`` moves
    eps = 2 a (r mean|z| / mean|s|)^2, x <- x + eps s + sqrt(2 eps) z, where
    a = exp(-beta(t0) |t1 - t0|) for VP/sub-VP (beta by hand) and 1 for VE."""
    sde, score = kwargs["sde"], kwargs["score"]
    snr, n_steps = kwargs.get("snr", 0.16), kwargs.get("n_steps", 1)
    x = x0.clone()
    times = torch.as_tensor(grid, dtype=torch.float64).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        a = 1.0
        if isinstance(sde, VPSDE):  # sub-VP included
            a = math.exp(-(sde.beta_min + t0 * (sde.beta_max - sde.beta_min)) * abs(t1 - t0))
        for _ in range(n_steps):
            s = score(x, torch.full((len(x),), t0, dtype=x.dtype))
            z = standard_normal_like(x, generator)
            ratio = z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean()
            eps = 2 * a * (snr * ratio) ** 2
            x = x + eps * s + torch.sqrt(2 * eps) * z
    return x


def _rk45_reference(x0, grid, kwargs, generator):
    """``scipy.integrate.solve_ivp(method="RK45")`` over each grid interval on the flattened
    batch, with RK45's tolerances: the reference code's own solver."""
    from scipy.integrate import solve_ivp

    field, rtol, atol = kwargs["field"], kwargs.get("rtol", 1e-5), kwargs.get("atol", 1e-5)

    def fun(t, y):
        return field(torch.from_numpy(y).reshape(x0.shape), t).reshape(-1).numpy()

    y = x0.to(torch.float64).reshape(-1).numpy()
    times = torch.as_tensor(grid, dtype=torch.float64).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        sol = solve_ivp(fun, (t0, t1), y, method="RK45", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"scipy's RK45 failed on [{t0}, {t1}]: {sol.message}")
        y = sol.y[:, -1]
    return torch.from_numpy(y).reshape(x0.shape).to(x0.dtype)


def _switching_field(x, t):
    """A field whose rate flips sign fast around t = 0.7: RK45 rejects steps there."""
    return math.tanh(40 * (t - 0.7)) * x + torch.sin(x)


_PAPER = "Song et al., Score-Based Generative Modeling through SDEs, arXiv 2011.13456"
_STEPPER_KW = dict(sde=VPSDE(), score=_score)
_SCORE_STEPPER_INVALID = (
    (dict(sde="vp", score=_score), ValueError, "sde"),
    (dict(sde=VESDE(), score=None), ValueError, "score"),
    (dict(sde=SubVPSDE(), score=_score, step=0.1), TypeError, "step"),
)
for _cls in (EulerMaruyama, ReverseDiffusion):
    register(AlgorithmInfo(
        name=f"score_sde.{_cls.__name__}", cls=_cls, kind="stepper", paper=_PAPER,
        default_kwargs=_STEPPER_KW, requires=frozenset({"score"}), stochastic=True,
        supports=frozenset({"reverse_time"}),
        linear_problem=functools.partial(
            _reverse_vp_linear, functools.partial(_cls, score=lambda x, t: -x)),
        invalid_kwargs=_SCORE_STEPPER_INVALID))
register(AlgorithmInfo(
    name="score_sde.LangevinCorrector", cls=LangevinCorrector, kind="stepper", paper=_PAPER,
    default_kwargs=_STEPPER_KW, requires=frozenset({"score"}), stochastic=True,
    supports=frozenset({"reverse_time"}),
    # A Langevin move at one time, not a time integrator: no order to measure (noise-free it
    # does not move); tests/samplers/test_score_sde.py checks its stationary law instead.
    invalid_kwargs=_SCORE_STEPPER_INVALID + (
        (dict(sde=VESDE(), score=_score, snr=0.0), ValueError, "snr"),
        (dict(sde=VESDE(), score=_score, n_steps=0), ValueError, "n_steps")),
    reference=_corrector_reference,
    reference_kwargs=(dict(sde=VPSDE(), score=_score),
                      dict(sde=VESDE(), score=lambda x, t: -x / (1 + t[:, None]), snr=0.3,
                           n_steps=2),
                      dict(sde=SubVPSDE(beta_max=5.0), score=_score, snr=0.05))))
register(AlgorithmInfo(
    name="score_sde.PredictorCorrector", cls=PredictorCorrector, kind="stepper", paper=_PAPER,
    default_kwargs=dict(predictor=EulerMaruyama(**_STEPPER_KW),
                        corrector=LangevinCorrector(**_STEPPER_KW)),
    requires=frozenset({"score"}), stochastic=True, supports=frozenset({"reverse_time"}),
    invalid_kwargs=((dict(predictor=None, corrector=None), ValueError, "predictor"),),
    linear_problem=functools.partial(_reverse_vp_linear, lambda sde: PredictorCorrector(
        EulerMaruyama(sde, lambda x, t: -x), LangevinCorrector(sde, lambda x, t: -x)))))
_ODE_INVALID = ((dict(field=3), ValueError, "field"),
                (dict(field=lambda x, t: x, tol=1), TypeError, "tol"))
register(AlgorithmInfo(
    name="score_sde.Heun", cls=Heun, kind="stepper", paper=_PAPER,
    default_kwargs=dict(field=lambda x, t: -x), requires=frozenset({"score"}),
    supports=frozenset({"reverse_time"}), linear_problem=functools.partial(_decay_linear, Heun),
    invalid_kwargs=_ODE_INVALID))
register(AlgorithmInfo(
    name="score_sde.RK45", cls=RK45, kind="stepper", paper=_PAPER,
    default_kwargs=dict(field=lambda x, t: -x), requires=frozenset({"score"}),
    # Adaptive: refining the grid measures its tolerance, not its order 5.
    supports=frozenset({"reverse_time", "adaptive"}),
    linear_problem=functools.partial(_decay_linear, RK45),
    invalid_kwargs=_ODE_INVALID + ((dict(field=lambda x, t: x, rtol=0.0), ValueError, "rtol"),
                                   (dict(field=lambda x, t: x, atol=-1.0), ValueError, "atol")),
    reference=_rk45_reference,
    reference_kwargs=(dict(field=_switching_field),
                      dict(field=_switching_field, rtol=1e-3, atol=1e-6),
                      dict(field=lambda x, t: torch.sin(3 * x) * (1 + t) - x, rtol=1e-8,
                           atol=1e-10))))
