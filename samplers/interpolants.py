"""Stochastic interpolants (Albergo, Boffi, Vanden-Eijnden, arXiv 2303.08797).

An interpolant ``x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z`` bridges a base ``rho0`` and a
target ``rho1``; its time marginals are transported by the velocity ``b`` (probability-flow
ODE) and, for any ``epsilon(t) >= 0``, by the SDEs with drift ``b +- epsilon s``. This module
holds the paths, the quadratic objectives whose minimizers are ``b``, ``v``, ``s`` and
``eta_z``, the ODE/SDE samplers as steppers for :func:`stepping.integrate`, the likelihood
through the ODE, and for the Gaussian (one-sided) paths their kinetic energy and the
kinetic-optimal path (Shaul et al., arXiv 2306.06626). Fields are called as ``field(x, t)``
with ``x`` of shape ``(..., d)`` and ``t`` of shape ``x.shape[:-1]``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator
from torch import Tensor

from stochstep.stepping.integrate import integrate
from stochstep.stepping.noise import make_generator, require_noise
from stochstep.stepping.registry import AlgorithmInfo, register
from stochstep.stepping.checks import check_int, check_positive, check_unit_interval

__all__ = ["DataSeparation", "Interpolant", "InterpolantFields", "InterpolantODE",
           "InterpolantSDE", "estimate_data_separation", "interpolant_log_likelihood",
           "kinetic_energy", "kinetic_optimal_path"]

Field = Callable[[Tensor, Tensor], Tensor]

PATHS = ("linear", "trig", "encoder-decoder", "one-sided-linear", "one-sided-trig", "mirror")
# Gaussian paths that miss the interpolant's exact ends: VP starts at alpha_0 = 6.6e-3, not 0
_INEXACT_PATHS = ("one-sided-vp",)
GAMMAS = ("brownian", "bsquared", "sinesquared", "sigmoid", "zero")
_DEFAULT_GAMMA = {"linear": "brownian", "trig": "brownian", "encoder-decoder": "sinesquared",
                  "one-sided-linear": "zero", "one-sided-trig": "zero", "one-sided-vp": "zero",
                  "mirror": "brownian"}
# the Gaussian-path names of Lipman et al. and Shaul et al. for the one-sided paths
_PATH_ALIASES = {"one-sided": "one-sided-linear", "encoding-decoding": "encoder-decoder",
                 "trigonometric": "trig", "cond-ot": "one-sided-linear",
                 "cosine": "one-sided-trig", "vp": "one-sided-vp"}
_SIGMOID_F = 10.0  # steepness of the reference code's sigmoid gamma
_VP_BETA_MIN, _VP_BETA_MAX = 0.1, 20.0  # the usual VP schedule (Song et al., Lipman et al.)


def _described(obj) -> str:
    return str(tuple(obj.shape)) if isinstance(obj, Tensor) else type(obj).__name__


def _sig(u: Tensor) -> Tensor:
    return torch.sigmoid(u)


def _quarter_cos_sin(t: Tensor) -> tuple[Tensor, Tensor]:
    """cos(pi t / 2), sin(pi t / 2), each exactly 0 at its zero (t = 1, t = 0)."""
    return torch.sin(0.5 * math.pi * (1 - t)), torch.sin(0.5 * math.pi * t)


def _vp_noise_signal(t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """VP path ``(sigma, alpha, sigma', alpha')``: alpha = exp(-T(1 - t)/2), sigma =
    sqrt(1 - alpha^2), T(u) = beta_min u + (beta_max - beta_min) u^2 / 2."""
    u = 1 - t
    big_t = _VP_BETA_MIN * u + 0.5 * (_VP_BETA_MAX - _VP_BETA_MIN) * u**2
    signal = torch.exp(-0.5 * big_t)
    dsignal = 0.5 * (_VP_BETA_MIN + (_VP_BETA_MAX - _VP_BETA_MIN) * u) * signal
    noise = torch.sqrt(-torch.expm1(-big_t))  # exactly 0 at t = 1
    return noise, signal, -signal * dsignal / noise, dsignal  # sigma' = -inf at t = 1


class _PchipCurves:
    """Curves through ``values`` (k, n) at increasing ``nodes`` (n,): cubic Hermite pieces
    with the monotone (Fritsch--Carlson) slopes of scipy's PCHIP, evaluated in torch."""

    def __init__(self, nodes: np.ndarray, values: np.ndarray):
        slopes = PchipInterpolator(nodes, values, axis=1).derivative()(nodes)
        self.nodes, self.values, self.slopes = (torch.as_tensor(a, dtype=torch.float64)
                                                for a in (nodes, values, slopes))

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Values and t-derivatives, each of shape ``(k, *t.shape)``."""
        tt = t.to(torch.float64)
        nodes, values, slopes = (a.to(tt.device) for a in (self.nodes, self.values, self.slopes))
        i = (torch.searchsorted(nodes, tt.detach().contiguous(), right=True) - 1).clamp(
            0, len(nodes) - 2)
        h = nodes[i + 1] - nodes[i]
        u = (tt - nodes[i]) / h
        y0, y1, m0, m1 = values[:, i], values[:, i + 1], slopes[:, i] * h, slopes[:, i + 1] * h
        u2, u3 = u * u, u * u * u
        value = ((2 * u3 - 3 * u2 + 1) * y0 + (u3 - 2 * u2 + u) * m0
                 + (3 * u2 - 2 * u3) * y1 + (u3 - u2) * m1)
        slope = ((6 * u2 - 6 * u) * (y0 - y1) + (3 * u2 - 4 * u + 1) * m0
                 + (3 * u2 - 2 * u) * m1) / h
        return value.to(t.dtype), slope.to(t.dtype)


class InterpolantFields(NamedTuple):
    """Callables ``f(x, t)``: the drift ``velocity`` (b), ``v = E[d_t I | x_t]``, the
    ``score`` (s) and the denoiser ``eta`` (``E[z | x_t]``; ``E[x0 | x_t]`` one-sided)."""

    velocity: Field
    v: Field
    score: Field
    eta: Field


class Interpolant:
    r"""A stochastic interpolant between a base :math:`\rho_0` and a target :math:`\rho_1`.

    .. math::
        x_t = \alpha(t)\,x_0 + \beta(t)\,x_1 + \gamma(t)\,z, \qquad z \sim N(0, I)
        \perp (x_0, x_1),

        b(x, t) = E[\dot\alpha x_0 + \dot\beta x_1 + \dot\gamma z \mid x_t = x],\quad
        v = E[\dot\alpha x_0 + \dot\beta x_1 \mid x_t = x],\quad
        \eta_z = E[z \mid x_t = x],\quad s = \nabla\log\rho_t = -\eta_z / \gamma,\quad
        b = v - \gamma\dot\gamma\, s.

    Paths (``alpha(0) = beta(1) = 1``, ``alpha(1) = beta(0) = gamma(0) = gamma(1) = 0``, but
    for ``"vp"``):

    - ``"linear"``: :math:`\alpha = 1 - t,\ \beta = t`.
    - ``"trig"``: :math:`\alpha = \sqrt{1-\gamma^2}\cos(\pi t/2),\ \beta = \sqrt{1-\gamma^2}
      \sin(\pi t/2)` (needs :math:`\gamma < 1`).
    - ``"encoder-decoder"``: :math:`\alpha = \cos^2(\pi t)\,1[t \le 1/2],\ \beta = \cos^2(\pi t)
      \,1[t > 1/2]`, default :math:`\gamma = \sin^2(\pi t)`.
    - ``"one-sided-linear"`` (alias ``"one-sided"``) and ``"one-sided-trig"``: Gaussian base
      :math:`x_0 \sim N(0, I)`, :math:`\gamma = 0`, :math:`(\alpha, \beta) = (1 - t, t)` or
      :math:`(\cos(\pi t/2), \sin(\pi t/2))`; here :math:`x_0` plays the role of the latent,
      :math:`\eta = E[x_0 \mid x_t]` and :math:`s = -\eta/\alpha`.
    - Gaussian paths :math:`x_t = \sigma_t x_0 + \alpha_t x_1` (Lipman et al.; Shaul et al.,
      whose :math:`\alpha_t` is this class's :math:`\beta` and :math:`\sigma_t` its
      :math:`\alpha`) are the one-sided paths: ``"cond-ot"`` is ``"one-sided-linear"``,
      ``"cosine"`` is ``"one-sided-trig"``, and ``"vp"`` (``"one-sided-vp"``) is
      :math:`\alpha_t = e^{-T(1-t)/2},\ \sigma_t = \sqrt{1-\alpha_t^2},\ T(u) =
      \beta_{\min} u + (\beta_{\max} - \beta_{\min}) u^2/2` with the usual
      :math:`\beta_{\min} = 0.1,\ \beta_{\max} = 20` (so :math:`\alpha_0 = e^{-T(1)/2}
      \approx 6.6\cdot 10^{-3}`, and :math:`\dot\sigma_1 = -\infty`); :meth:`from_grid`
      builds one from values on a grid, :meth:`snr` is :math:`\alpha_t/\sigma_t`.
    - ``"mirror"``: :math:`x_0 = x_1`, :math:`x_t = x_1 + \gamma z` (:math:`\alpha = 0,\ \beta =
      1`), so :math:`b = \dot\gamma\,\eta_z = -\gamma\dot\gamma\,s`.

    gamma choices: ``"brownian"`` :math:`\sqrt{a\,t(1-t)}` (``a = gamma_scale``),
    ``"bsquared"`` :math:`t(1-t)`, ``"sinesquared"`` :math:`\sin^2(\pi t)`, ``"sigmoid"`` (the
    reference code's difference of sigmoids with steepness 10), ``"zero"``. The product
    :math:`\gamma\dot\gamma` is computed in closed form (``gamma_dgamma``), finite at the ends
    even where :math:`\dot\gamma` is not.

    Args:
        path: one of ``"linear"``, ``"trig"``, ``"encoder-decoder"``, ``"one-sided-linear"``
            (``"cond-ot"``), ``"one-sided-trig"`` (``"cosine"``), ``"one-sided-vp"``
            (``"vp"``), ``"mirror"``.
        gamma: a gamma name, or None for the path's default (``"brownian"``; ``"sinesquared"``
            for encoder-decoder; ``"zero"`` for one-sided paths).
        gamma_scale: :math:`a > 0` of the ``"brownian"`` gamma (default 1).

    References:
        M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden, "Stochastic Interpolants: A Unifying
        Framework for Flows and Diffusions", arXiv 2303.08797. Gaussian paths: N. Shaul,
        R. T. Q. Chen, M. Nickel, M. Le, Y. Lipman, "On Kinetic Optimal Probability Paths for
        Generative Models", arXiv 2306.06626.

    Example:
        >>> import torch
        >>> it = Interpolant("linear", "brownian")
        >>> x0, x1, z = torch.zeros(4, 2), torch.ones(4, 2), torch.ones(4, 2)
        >>> it.interpolate(x0, x1, torch.full((4,), 0.5), z)[0]  # 0.5 * 1 + sqrt(1/4) * 1
        tensor([1., 1.])
        >>> it.gamma_dgamma(torch.tensor([0.0, 1.0]))  # finite where gamma' is not
        tensor([ 0.5000, -0.5000])
        >>> Interpolant("cosine").snr(torch.tensor([0.0, 0.5]))  # tan(pi t / 2)
        tensor([0., 1.])
    """

    def __init__(self, path: str = "linear", gamma: str | None = None, *,
                 gamma_scale: float = 1.0):
        if (not isinstance(path, str)
                or _PATH_ALIASES.get(path, path) not in PATHS + _INEXACT_PATHS):
            raise ValueError(f"path must be one of {PATHS + _INEXACT_PATHS} or an alias "
                             f"{tuple(_PATH_ALIASES)}, got {path!r}")
        path = _PATH_ALIASES.get(path, path)
        if gamma is None:
            gamma = _DEFAULT_GAMMA[path]
        if not isinstance(gamma, str) or gamma not in GAMMAS:
            raise ValueError(f"gamma must be one of {GAMMAS} or None, got {gamma!r}")
        if (isinstance(gamma_scale, bool) or not isinstance(gamma_scale, (int, float))
                or not math.isfinite(gamma_scale) or gamma_scale <= 0):
            raise ValueError(f"gamma_scale must be a finite number > 0, got {gamma_scale!r}")
        if gamma_scale != 1.0 and gamma != "brownian":
            raise ValueError(f"gamma_scale applies to gamma='brownian' only, got gamma={gamma!r}")
        if path.startswith("one-sided") and gamma != "zero":
            raise ValueError(f"gamma must be 'zero' for the {path!r} path (its base is the "
                             f"Gaussian latent), got {gamma!r}")
        if path == "mirror" and gamma == "zero":
            raise ValueError("gamma must be nonzero for the mirror path")
        self.path, self.gamma_name, self.gamma_scale = path, gamma, float(gamma_scale)
        if path == "trig":
            tt = torch.linspace(0, 1, 2001, dtype=torch.float64)
            if self.gamma(tt).max() >= 1:
                raise ValueError(f"gamma={gamma!r} reaches 1, where the trig path's "
                                 f"sqrt(1 - gamma^2) vanishes; pick a gamma below 1")

    @classmethod
    def from_grid(cls, t, signal, noise) -> "Interpolant":
        r"""The Gaussian path :math:`x_t = \sigma_t x_0 + \alpha_t x_1` through values on a grid.

        With :math:`\vartheta = \tfrac2\pi \arctan(\alpha/\sigma)` (the snr's angle) and
        :math:`r = \sqrt{\alpha^2 + \sigma^2}` interpolated by monotone cubic (PCHIP) pieces,

        .. math::
            \alpha_t = r(t) \sin(\pi\vartheta(t)/2), \qquad
            \sigma_t = r(t) \cos(\pi\vartheta(t)/2),

        so the snr :math:`\alpha/\sigma = \tan(\pi\vartheta/2)` increases between the nodes
        too, and the path ends exactly at :math:`(\alpha, \sigma) = (0, 1)` and :math:`(1, 0)`.

        Args:
            t: increasing times, from exactly 0 to exactly 1 (at least 2).
            signal: :math:`\alpha_t` at ``t`` (the weight of the data :math:`x_1`), from 0 to 1.
            noise: :math:`\sigma_t` at ``t`` (the weight of the latent :math:`x_0`), from 1 to 0,
                positive before ``t = 1``; the snr ``signal / noise`` must increase strictly.

        Example:
            >>> import torch
            >>> t = torch.linspace(0, 1, 5, dtype=torch.float64)
            >>> path = Interpolant.from_grid(t, t, 1 - t)  # Cond-OT on a grid
            >>> path.beta(torch.tensor(0.6, dtype=torch.float64)).item()  # close to 0.6
            0.6016...
        """
        arrays = []
        for name, value in (("t", t), ("signal", signal), ("noise", noise)):
            a = torch.as_tensor(value, dtype=torch.float64).detach().cpu().numpy()
            if a.ndim != 1 or not np.isfinite(a).all():
                raise ValueError(f"{name} must be a 1-D array of finite numbers, got shape "
                                 f"{a.shape}")
            arrays.append(a)
        t, signal, noise = arrays
        if len(t) < 2 or signal.shape != t.shape or noise.shape != t.shape:
            raise ValueError(f"t, signal and noise must have one shape with at least 2 entries, "
                             f"got {t.shape}, {signal.shape}, {noise.shape}")
        if t[0] != 0 or t[-1] != 1 or not (np.diff(t) > 0).all():
            raise ValueError(f"t must increase strictly from 0 to 1, got {t[0]} ... {t[-1]}")
        ends = (signal[0], noise[0], signal[-1], noise[-1])
        if not np.allclose(ends, (0, 1, 1, 0), rtol=0, atol=1e-9):
            raise ValueError(f"the path must go from (signal, noise) = (0, 1) at t = 0 to (1, 0) "
                             f"at t = 1, got ({ends[0]}, {ends[1]}) and ({ends[2]}, {ends[3]})")
        if (signal[:-1] < 0).any() or (noise[:-1] <= 0).any():
            raise ValueError("signal must be >= 0 and noise > 0 before t = 1")
        theta = np.arctan2(signal, noise) * (2 / math.pi)
        theta[0], theta[-1] = 0.0, 1.0
        if not (np.diff(theta) > 0).all():
            i = int(np.argmin(np.diff(theta)))
            raise ValueError(f"the snr signal / noise must increase strictly along t; it does "
                             f"not between t = {t[i]} and t = {t[i + 1]}")
        radius = np.hypot(signal, noise)
        radius[0] = radius[-1] = 1.0
        path = cls("one-sided-linear")
        path.path, path._spline = "one-sided-spline", _PchipCurves(t, np.stack([theta, radius]))
        return path

    def snr(self, t) -> Tensor:
        r"""Signal-to-noise ratio :math:`\beta(t)/\alpha(t)` of a one-sided path (the Gaussian
        path's :math:`\alpha_t/\sigma_t`; infinite at t = 1)."""
        if not self.one_sided:
            raise ValueError(f"snr is defined for the one-sided (Gaussian) paths, not "
                             f"{self.path!r}")
        noise, signal, _, _ = self._alpha_beta(self._time(t))
        return signal / noise

    def __repr__(self) -> str:
        if self.path == "one-sided-spline":
            return f"Interpolant.from_grid(<{len(self._spline.nodes)} nodes>)"
        scale = f", gamma_scale={self.gamma_scale}" if self.gamma_scale != 1 else ""
        return f"Interpolant({self.path!r}, {self.gamma_name!r}{scale})"

    @property
    def one_sided(self) -> bool:
        return self.path.startswith("one-sided")

    # -- coefficients ---------------------------------------------------------------------
    @staticmethod
    def _time(t, name: str = "t") -> Tensor:
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        if torch.isnan(t).any() or (t < 0).any() or (t > 1).any():
            raise ValueError(f"{name} must lie in [0, 1], got values in "
                             f"[{t.min().item()}, {t.max().item()}]")
        return t

    def gamma(self, t) -> Tensor:
        """:math:`\\gamma(t)`."""
        t = self._time(t)
        g = self.gamma_name
        if g == "brownian":
            return torch.sqrt(self.gamma_scale * t * (1 - t))
        if g == "bsquared":
            return t * (1 - t)
        if g == "sinesquared":  # sin^2(pi t) = sin^2(pi (1 - t)): exactly 0 at both ends
            return torch.sin(math.pi * torch.minimum(t, 1 - t)) ** 2
        if g == "sigmoid":
            f, u = _SIGMOID_F, _SIGMOID_F * (t - 0.5)
            return (_sig(u + 1) - _sig(u - 1)
                    - _sig(torch.as_tensor(-f / 2 + 1, dtype=t.dtype))
                    + _sig(torch.as_tensor(-f / 2 - 1, dtype=t.dtype)))
        return torch.zeros_like(t)

    def dgamma(self, t) -> Tensor:
        """:math:`\\dot\\gamma(t)` (infinite at t = 0, 1 for ``"brownian"``)."""
        t = self._time(t)
        g = self.gamma_name
        if g == "brownian":
            return self.gamma_dgamma(t) / self.gamma(t)
        if g == "bsquared":
            return 1 - 2 * t
        if g == "sinesquared":
            return math.pi * torch.sin(2 * math.pi * t)
        if g == "sigmoid":
            f, u = _SIGMOID_F, _SIGMOID_F * (t - 0.5)
            dsig = lambda w: _sig(w) * (1 - _sig(w))  # noqa: E731
            return f * (dsig(u + 1) - dsig(u - 1))
        return torch.zeros_like(t)

    def gamma_dgamma(self, t) -> Tensor:
        """:math:`\\gamma(t)\\dot\\gamma(t)` in closed form (finite on all of [0, 1])."""
        t = self._time(t)
        if self.gamma_name == "brownian":
            return 0.5 * self.gamma_scale * (1 - 2 * t)
        return self.gamma(t) * self.dgamma(t)

    def alpha(self, t) -> Tensor:
        """:math:`\\alpha(t)`, the weight of ``x0``."""
        return self._alpha_beta(self._time(t))[0]

    def beta(self, t) -> Tensor:
        """:math:`\\beta(t)`, the weight of ``x1``."""
        return self._alpha_beta(self._time(t))[1]

    def dalpha(self, t) -> Tensor:
        return self._alpha_beta(self._time(t))[2]

    def dbeta(self, t) -> Tensor:
        return self._alpha_beta(self._time(t))[3]

    def _alpha_beta(self, t: Tensor):
        p = self.path
        if p in ("linear", "one-sided-linear"):
            one = torch.ones_like(t)
            return 1 - t, t.clone(), -one, one
        if p == "one-sided-trig":
            c, s = _quarter_cos_sin(t)
            return c, s, -0.5 * math.pi * s, 0.5 * math.pi * c
        if p == "one-sided-vp":
            return _vp_noise_signal(t)
        if p == "one-sided-spline":  # angle theta = (2/pi) atan(snr) and radius, by PCHIP
            (theta, radius), (dtheta, dradius) = self._spline(t)
            c, s = _quarter_cos_sin(theta)
            w = 0.5 * math.pi * dtheta * radius
            return radius * c, radius * s, dradius * c - w * s, dradius * s + w * c
        if p == "trig":
            r = torch.sqrt(1 - self.gamma(t) ** 2)
            dr = -self.gamma_dgamma(t) / r
            c, s = _quarter_cos_sin(t)
            return (r * c, r * s, dr * c - 0.5 * math.pi * r * s, dr * s + 0.5 * math.pi * r * c)
        if p == "encoder-decoder":
            c2, dc2 = torch.cos(math.pi * t) ** 2, -math.pi * torch.sin(2 * math.pi * t)
            first = t <= 0.5
            zero = torch.zeros_like(t)
            return (torch.where(first, c2, zero), torch.where(first, zero, c2),
                    torch.where(first, dc2, zero), torch.where(first, zero, dc2))
        zero = 0 * t  # mirror: constants, kept in t's autograd graph
        return zero, zero + 1, zero.clone(), zero.clone()

    def marginal_coefficients(self, t) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``(B, C, B', C C')`` with :math:`x_t \overset{d}{=} B x_1 + C\,\epsilon`.

        For a Gaussian base :math:`x_0 \sim N(0, I)`: :math:`B = \beta`, :math:`C^2 = \alpha^2 +
        \gamma^2`; for the mirror path :math:`B = 1`, :math:`C = \gamma`.
        """
        t = self._time(t)
        a, b, da, db = self._alpha_beta(t)
        g, ggd = self.gamma(t), self.gamma_dgamma(t)
        if self.path == "mirror":
            return b, g, db, ggd
        return b, torch.sqrt(a**2 + g**2), db, a * da + ggd

    # -- the interpolant ------------------------------------------------------------------
    def _batch(self, x0, x1, t, z):
        if not isinstance(x1, Tensor) or x1.ndim < 1:
            raise ValueError("x1 must be a tensor of shape (..., d)")
        if self.path == "mirror":
            if x0 is not None and not (isinstance(x0, Tensor) and torch.equal(x0, x1)):
                raise ValueError("x0 must be None (or x1 itself) for the mirror path: x0 = x1")
            x0 = torch.zeros_like(x1)
        elif not isinstance(x0, Tensor) or x0.shape != x1.shape:
            raise ValueError(f"x0 must be a tensor shaped like x1 {tuple(x1.shape)}, got "
                             f"{_described(x0)}")
        if self.one_sided:
            if z is not None:
                raise ValueError(f"z must be None for the {self.path!r} path (gamma = 0; x0 is "
                                 f"the Gaussian latent)")
            z = torch.zeros_like(x1)
        elif not isinstance(z, Tensor) or z.shape != x1.shape:
            raise ValueError(f"z must be a tensor shaped like x1 {tuple(x1.shape)}, got "
                             f"{_described(z)}")
        t = self._time(t)
        if t.ndim != 0 and t.shape != x1.shape[:-1]:
            raise ValueError(f"t must be a scalar or have shape {tuple(x1.shape[:-1])} "
                             f"(x1.shape[:-1]), got {tuple(t.shape)}")
        t = t.to(device=x1.device, dtype=x1.dtype).expand(x1.shape[:-1])
        return x0, x1, t, z

    def interpolate(self, x0: Tensor | None, x1: Tensor, t, z: Tensor | None = None) -> Tensor:
        """:math:`x_t = \\alpha x_0 + \\beta x_1 + \\gamma z` (``z`` None on one-sided paths,
        ``x0`` None on the mirror path); ``t`` a scalar or of shape ``x1.shape[:-1]``."""
        x0, x1, t, z = self._batch(x0, x1, t, z)
        a, b, _, _ = self._alpha_beta(t)
        return a[..., None] * x0 + b[..., None] * x1 + self.gamma(t)[..., None] * z

    def time_derivative(self, x0: Tensor | None, x1: Tensor, t) -> Tensor:
        """:math:`\\partial_t I = \\dot\\alpha x_0 + \\dot\\beta x_1` (without the noise)."""
        z = None if self.one_sided else torch.zeros_like(x1)
        x0, x1, t, _ = self._batch(x0, x1, t, z)
        _, _, da, db = self._alpha_beta(t)
        return da[..., None] * x0 + db[..., None] * x1

    # -- objectives -----------------------------------------------------------------------
    @staticmethod
    def _eval(model: Field, x: Tensor, t: Tensor, name: str = "model") -> Tensor:
        out = model(x, t)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(f"{name} must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{_described(out)}")
        return out

    @staticmethod
    def _reduce(per: Tensor, reduction: str) -> Tensor:
        if reduction == "mean":
            return per.mean()
        if reduction == "none":
            return per
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")

    def _objective(self, model, x0, x1, t, z, target_fn, reduction, antithetic):
        """Mean of 1/2 |f|^2 - target . f, with target = target_fn(t, x0, x1, latent, sign)."""
        x0, x1, t, z = self._batch(x0, x1, t, z)
        a, b, _, _ = self._alpha_beta(t)
        base = a[..., None] * x0 + b[..., None] * x1
        noise = self.gamma(t)[..., None] * z
        signs = (1.0, -1.0) if antithetic else (1.0,)
        per = 0
        for sign in signs:
            f = self._eval(model, base + sign * noise, t)
            per = per + (0.5 * (f**2).sum(-1) - (target_fn(t, x0, x1, z, sign) * f).sum(-1))
        return self._reduce(per / len(signs), reduction)

    def loss_b(self, model: Field, x0: Tensor | None, x1: Tensor, t, z: Tensor | None = None,
               *, reduction: str = "mean", antithetic: bool = False) -> Tensor:
        r"""Objective of the drift, minimized by :math:`b`:

        .. math::
            L_b(\hat b) = E\big[\tfrac12 |\hat b(x_t, t)|^2
            - (\dot\alpha x_0 + \dot\beta x_1 + \dot\gamma z) \cdot \hat b(x_t, t)\big].

        Args:
            model: ``model(x, t)`` shaped like ``x``.
            x0, x1, z: batches of shape ``(..., d)`` (``z`` None on one-sided paths, ``x0``
                None on the mirror path).
            t: a scalar or times of shape ``x1.shape[:-1]`` in [0, 1] (open interval where
                :math:`\dot\gamma` is infinite, as for ``"brownian"`` at 0 and 1).
            reduction: ``"mean"`` (a scalar) or ``"none"`` (per sample).
            antithetic: average the terms at :math:`I \pm \gamma z` (the reference code's
                variance reduction; same minimizer).
        """
        dg = self.dgamma(self._time(t))
        if not torch.isfinite(dg).all():
            raise ValueError(f"t must avoid the times where gamma' is infinite (t = 0, 1 for "
                             f"gamma={self.gamma_name!r})")

        def target(tt, x0_, x1_, z_, sign):
            _, _, da, db = self._alpha_beta(tt)
            dg_z = sign * self.dgamma(tt)[..., None] * z_
            return da[..., None] * x0_ + db[..., None] * x1_ + dg_z

        return self._objective(model, x0, x1, t, z, target, reduction, antithetic)

    def loss_v(self, model: Field, x0: Tensor | None, x1: Tensor, t, z: Tensor | None = None,
               *, reduction: str = "mean", antithetic: bool = False) -> Tensor:
        r"""Objective of :math:`v = E[\partial_t I \mid x_t]`:

        .. math::
            L_v(\hat v) = E\big[\tfrac12 |\hat v(x_t, t)|^2 - (\dot\alpha x_0 + \dot\beta x_1)
            \cdot \hat v(x_t, t)\big].

        Arguments as in :meth:`loss_b`; :math:`b = v - \gamma\dot\gamma\, s`.
        """
        def target(tt, x0_, x1_, z_, sign):
            _, _, da, db = self._alpha_beta(tt)
            return da[..., None] * x0_ + db[..., None] * x1_

        return self._objective(model, x0, x1, t, z, target, reduction, antithetic)

    def _latent_scale(self, t: Tensor) -> Tensor:
        """gamma(t), or alpha(t) on one-sided paths (the scale of the Gaussian latent)."""
        return self._alpha_beta(t)[0] if self.one_sided else self.gamma(t)

    def loss_s(self, model: Field, x0: Tensor | None, x1: Tensor, t, z: Tensor | None = None,
               *, reduction: str = "mean", antithetic: bool = False) -> Tensor:
        r"""Objective of the score :math:`s = \nabla \log \rho_t`:

        .. math::
            L_s(\hat s) = E\big[\tfrac12 |\hat s(x_t, t)|^2 + \gamma^{-1} z \cdot \hat s(x_t, t)
            \big]

        (one-sided paths: :math:`\alpha^{-1} x_0` in place of :math:`\gamma^{-1} z`). ``t``
        must avoid times where :math:`\gamma` (:math:`\alpha`) vanishes; other arguments as in
        :meth:`loss_b`.
        """
        tt = self._time(t)
        if (self._latent_scale(tt) == 0).any():
            raise ValueError("t must avoid the times where gamma(t) = 0 (alpha(t) = 0 on "
                             "one-sided paths): the score objective divides by it")

        def target(tt_, x0_, x1_, z_, sign):
            lat = x0_ if self.one_sided else sign * z_
            return -lat / self._latent_scale(tt_)[..., None]

        return self._objective(model, x0, x1, t, z, target, reduction, antithetic)

    def loss_eta(self, model: Field, x0: Tensor | None, x1: Tensor, t, z: Tensor | None = None,
                 *, reduction: str = "mean", antithetic: bool = False) -> Tensor:
        r"""Objective of the denoiser :math:`\eta_z = E[z \mid x_t]`:

        .. math::
            L_\eta(\hat\eta) = E\big[\tfrac12 |\hat\eta(x_t, t)|^2 - z \cdot \hat\eta(x_t, t)\big]

        (one-sided paths: :math:`x_0` in place of :math:`z`); :math:`s = -\eta_z/\gamma`.
        The reference code uses the opposite sign, learning :math:`-\eta_z`.
        """
        def target(tt, x0_, x1_, z_, sign):
            return x0_ if self.one_sided else sign * z_

        return self._objective(model, x0, x1, t, z, target, reduction, antithetic)

    # -- conversions and exact fields -----------------------------------------------------
    def drift_from(self, v: Field, score: Field) -> Field:
        """``b = v - gamma gamma' s`` from a learned ``v`` and score."""
        def velocity(x, t):
            ggd = self.gamma_dgamma(self._time(t)).to(x)
            return self._eval(v, x, t, "v") - ggd[..., None] * self._eval(score, x, t, "score")
        return velocity

    def score_from_eta(self, eta: Field) -> Field:
        """``s = -eta / gamma`` (``-eta / alpha`` one-sided); singular where that scale is 0."""
        def score(x, t):
            scale = self._latent_scale(self._time(t)).to(x)
            return -self._eval(eta, x, t, "eta") / scale[..., None]
        return score

    def exact_fields(self, target) -> InterpolantFields:
        r"""Exact ``b``, ``v``, ``s``, ``eta`` when :math:`x_0 \sim N(0, I)` (or the mirror path)
        and :math:`\rho_1` is ``target``, any object with ``score(x, b, c)`` and
        ``denoiser(x, b, c)`` for the path :math:`b x_1 + c\,\epsilon` (e.g.
        :class:`samplers.targets.GaussianMixture`). With :math:`x - BD = -C^2 s`,

        .. math::
            b = \dot B\, D - C\dot C\, s,\quad D = E[x_1 \mid x_t],

        finite at both ends for a target with a smooth density.
        """
        for name in ("score", "denoiser"):
            if not callable(getattr(target, name, None)):
                raise ValueError(f"target must have a {name}(x, b, c) method")

        def coeffs(x, t):
            t = self._time(t)
            if t.ndim != 0 and t.shape != x.shape[:-1]:
                raise ValueError(f"t must be a scalar or have shape {tuple(x.shape[:-1])}, "
                                 f"got {tuple(t.shape)}")
            t = t.to(torch.float64).expand(x.shape[:-1])
            return t, self.marginal_coefficients(t)

        def score(x, t):
            _, (B, C, _, _) = coeffs(x, t)
            return target.score(x, B, C).to(x.dtype)

        def velocity(x, t):
            _, (B, C, dB, CdC) = coeffs(x, t)
            d, s = target.denoiser(x, B, C), target.score(x, B, C)
            return (dB[..., None] * d - CdC[..., None] * s).to(x.dtype)

        def v(x, t):
            tt, _ = coeffs(x, t)
            return (velocity(x, t) + self.gamma_dgamma(tt)[..., None].to(x.dtype) * score(x, t))

        def eta(x, t):
            tt, _ = coeffs(x, t)
            return -self._latent_scale(tt)[..., None].to(x.dtype) * score(x, t)

        return InterpolantFields(velocity, v, score, eta)


# -- samplers -------------------------------------------------------------------------------
_ORDERS = {"euler": 1.0, "heun": 2.0, "rk4": 4.0}


def _check_field(name: str, fn) -> Field:
    if not callable(fn):
        raise ValueError(f"{name} must be callable as {name}(x, t), got {type(fn).__name__}")
    return fn


def _check_times(t0: float, t1: float) -> None:
    if not (0 <= t0 <= 1 and 0 <= t1 <= 1):
        raise ValueError(f"grid times must lie in [0, 1] (the interpolant's time), got "
                         f"{t0} -> {t1}")


def _field_at(fn: Field, name: str, x: Tensor, t: float) -> Tensor:
    tt = torch.full(x.shape[:-1], t, dtype=x.dtype, device=x.device)
    out = fn(x, tt)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise ValueError(f"{name} must return a tensor shaped like x {tuple(x.shape)}, got "
                         f"{_described(out)}")
    return out.to(x.dtype)


class InterpolantODE:
    r"""Probability-flow ODE of an interpolant, :math:`\dot X_t = b(X_t, t)`, one explicit
    Runge--Kutta step per grid interval (increasing grid: :math:`\rho_0 \to \rho_1`;
    decreasing: back). With :math:`h = t_1 - t_0` and ``method="heun"``:

    .. math::
        k_1 = b(x, t_0),\quad k_2 = b(x + h k_1, t_1),\quad x \leftarrow x + \tfrac h2 (k_1 + k_2).

    Args:
        velocity: ``velocity(x, t)``, the drift :math:`b` (``x`` of shape ``(..., d)``, ``t`` of
            shape ``x.shape[:-1]``).
        method: ``"euler"`` (order 1), ``"heun"`` (order 2, default) or ``"rk4"`` (order 4).

    References:
        M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden, arXiv 2303.08797, Sec. 2.

    Example:
        >>> import torch
        >>> from stochstep.stepping import integrate, uniform
        >>> ode = InterpolantODE(lambda x, t: torch.ones_like(x))  # b = 1: a translation
        >>> integrate(ode, torch.zeros(2, 1), uniform(0.0, 1.0, 4))
        tensor([[1.],
                [1.]])
    """

    def __init__(self, velocity: Field, *, method: str = "heun"):
        self.velocity = _check_field("velocity", velocity)
        if method not in _ORDERS:
            raise ValueError(f"method must be one of {tuple(_ORDERS)}, got {method!r}")
        self.method = method
        self.order = _ORDERS[method]

    def increment(self, x: Tensor, t0: float, t1: float) -> Tensor:
        """The step's displacement (x is not modified)."""
        f = lambda y, t: _field_at(self.velocity, "velocity", y, t)  # noqa: E731
        h = t1 - t0
        k1 = f(x, t0)
        if self.method == "euler":
            return h * k1
        if self.method == "heun":
            return 0.5 * h * (k1 + f(x + h * k1, t1))
        tm = t0 + 0.5 * h
        k2 = f(x + 0.5 * h * k1, tm)
        k3 = f(x + 0.5 * h * k2, tm)
        k4 = f(x + h * k3, t1)
        return (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)

    def step_(self, x: Tensor, t0: float, t1: float, noise=None) -> None:
        _check_times(t0, t1)
        x.add_(self.increment(x, t0, t1))


class InterpolantSDE:
    r"""Forward and backward SDEs of an interpolant, by Euler--Maruyama. For any
    :math:`\epsilon(t) \ge 0` both keep the interpolant's marginals :math:`\rho_t`:

    .. math::
        dX = (b + \epsilon s)\,dt + \sqrt{2\epsilon}\,dW \ \ (\text{forward, from } \rho_0),
        \qquad dX = (b - \epsilon s)\,dt + \sqrt{2\epsilon}\,d\bar W\ \ (\text{backward, from }
        \rho_1).

    An increasing grid runs the forward SDE, a decreasing grid the backward one; with
    :math:`h = t_1 - t_0` (negative backward) and :math:`\xi \sim N(0, I)` both read

    .. math::
        x \leftarrow x + h\, b(x, t_0) + |h|\,\epsilon(t_0)\, s(x, t_0)
        + \sqrt{2\epsilon(t_0)|h|}\;\xi.

    The noise is additive, so Euler--Maruyama has strong order 1 here.

    Args:
        velocity: ``velocity(x, t)``, the drift :math:`b`.
        score: ``score(x, t)``, :math:`s = \nabla\log\rho_t`.
        epsilon: :math:`\epsilon \ge 0`, a number or a callable ``epsilon(t) -> float``
            (default 1). Larger values damp errors in :math:`b` but amplify errors in :math:`s`
            where :math:`\gamma \to 0`.

    References:
        M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden, arXiv 2303.08797, Sec. 2.3.

    Example:
        >>> import torch
        >>> from stochstep.stepping import Brownian, integrate, uniform
        >>> # rho_t = N(0, I) at every t: b = 0, s = -x; the SDE keeps it for any epsilon
        >>> sde = InterpolantSDE(lambda x, t: 0 * x, lambda x, t: -x, epsilon=2.0)
        >>> x = integrate(sde, torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)),
        ...               uniform(0.0, 1.0, 50), noise=Brownian(torch.Generator().manual_seed(1)))
        >>> bool((x.var(0) - 1).abs().max() < 0.1)
        True
    """

    order = 1.0
    strong_order = 1.0

    def __init__(self, velocity: Field, score: Field, *, epsilon=1.0):
        self.velocity = _check_field("velocity", velocity)
        self.score = _check_field("score", score)
        if not callable(epsilon):
            epsilon = self._check_epsilon(epsilon)
        self.epsilon = epsilon

    @staticmethod
    def _check_epsilon(value, t=None) -> float:
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            at = "" if t is None else f" at t={t}"
            raise ValueError(f"epsilon must be a finite number >= 0 (or a callable returning "
                             f"one), got {value!r}{at}")
        return float(value)

    def epsilon_at(self, t: float) -> float:
        eps = self.epsilon
        return self._check_epsilon(eps(t), t) if callable(eps) else eps

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        _check_times(t0, t1)
        require_noise(noise, "InterpolantSDE")
        h, eps = t1 - t0, self.epsilon_at(t0)
        b = _field_at(self.velocity, "velocity", x, t0)
        s = _field_at(self.score, "score", x, t0) if eps > 0 else None
        xi = noise.standard_normal(x)
        x.add_(b, alpha=h)
        if s is not None:
            x.add_(s, alpha=abs(h) * eps)
            x.add_(xi, alpha=math.sqrt(2 * eps * abs(h)))


# -- likelihood -----------------------------------------------------------------------------
def _standard_normal_log_prob(x: Tensor) -> Tensor:
    return -0.5 * (x**2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


class _DivergenceField:
    """[b(x, t), div b(x, t)] on the state [x, l] of shape (..., d + 1)."""

    def __init__(self, velocity: Field, probes: Tensor | None):
        self.velocity, self.probes = velocity, probes

    def __call__(self, y: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            x = y[..., :-1].detach().requires_grad_(True)
            b = Interpolant._eval(self.velocity, x, t, "velocity")
            if not b.requires_grad:
                raise ValueError("velocity must be differentiable in x for the likelihood: its "
                                 "output does not require grad (no_grad or detach inside?)")
            if self.probes is None:  # exact trace, one backward pass per dimension
                d = x.shape[-1]
                div = sum(torch.autograd.grad(b[..., i].sum(), x, retain_graph=i < d - 1)[0]
                          [..., i] for i in range(d))
            else:  # Hutchinson: E[v^T (db/dx) v]
                k = self.probes.shape[0]
                div = sum((torch.autograd.grad((b * v).sum(), x, retain_graph=j < k - 1)[0]
                           * v).sum(-1) for j, v in enumerate(self.probes)) / k
        return torch.cat([b.detach(), div.detach()[..., None].to(y.dtype)], -1)


def interpolant_log_likelihood(velocity: Field, x: Tensor, grid, *, base_log_prob=None,
                               method: str = "rk4", divergence: str = "exact",
                               n_probes: int = 1, probe: str = "rademacher",
                               generator: torch.Generator | None = None,
                               progress: bool = False) -> Tensor:
    r"""Log-density of ``x`` at time ``grid[0]`` through the probability-flow ODE.

    Solves :math:`\dot X = b(X, t)` from :math:`X_{t_a} = x` (``t_a = grid[0]``, usually 1)
    to ``t_b = grid[-1]`` (usually 0) together with the divergence integral:

    .. math::
        \log\rho_{t_a}(x) = \log\rho_{t_b}(X_{t_b}) + \int_{t_a}^{t_b} \nabla\cdot b(X_t, t)\,dt,
        \qquad \text{e.g.}\ \log\rho_1(x) = \log\rho_0(X_0) - \int_0^1 \nabla\cdot b\,dt.

    Args:
        velocity: ``velocity(x, t)``, differentiable in ``x``.
        x: points of shape ``(..., d)``.
        grid: the times, from ``x``'s time to the base's (see :func:`stepping.integrate`).
        base_log_prob: ``log rho(x)`` at ``grid[-1]``; default :math:`N(0, I)`.
        method: ``"euler"``, ``"heun"`` or ``"rk4"`` (default) for the joint ODE.
        divergence: ``"exact"`` (d backward passes; small d) or ``"hutchinson"``
            (:math:`v^\top (\partial b/\partial x) v` averaged over ``n_probes`` probes drawn
            once per point from ``generator`` and kept along the path).
        probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probes.

    Returns:
        ``log rho(x)`` of shape ``x.shape[:-1]``.

    References:
        M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden, arXiv 2303.08797, Sec. 2.2.

    Example:
        >>> import torch
        >>> from stochstep.stepping import uniform
        >>> # rho_t = N(0, (1 + t)^2 I): b(x, t) = x / (1 + t)
        >>> x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
        >>> lp = interpolant_log_likelihood(lambda x, t: x / (1 + t[..., None]), x,
        ...                                 uniform(1.0, 0.0, 20))
        >>> exact = -0.5 * (x**2).sum() / 4 - 2 * torch.log(torch.tensor(2.0)) - torch.log(
        ...     torch.tensor(2 * torch.pi))
        >>> bool(torch.allclose(lp, exact, atol=1e-6))
        True
    """
    _check_field("velocity", velocity)
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor of shape (..., d), got {_described(x)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    if base_log_prob is None:
        base_log_prob = _standard_normal_log_prob
    elif not callable(base_log_prob):
        raise ValueError(f"base_log_prob must be callable, got {type(base_log_prob).__name__}")
    if divergence == "exact":
        probes = None
    elif divergence == "hutchinson":
        check_int("n_probes", n_probes)
        gen = make_generator(generator)
        shape = (n_probes, *x.shape)
        if probe == "rademacher":
            probes = torch.randint(0, 2, shape, generator=gen, device=gen.device) * 2.0 - 1
        elif probe == "gaussian":
            probes = torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float64)
        else:
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        probes = probes.to(device=x.device, dtype=x.dtype)
    else:
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    stepper = InterpolantODE(_DivergenceField(velocity, probes), method=method)
    y0 = torch.cat([x.detach(), torch.zeros_like(x[..., :1])], -1)
    y = integrate(stepper, y0, grid, progress=progress, desc="likelihood")
    with torch.no_grad():
        base = base_log_prob(y[..., :-1])
    if not isinstance(base, Tensor) or base.shape != x.shape[:-1]:
        raise ValueError(f"base_log_prob must map (..., d) to (...), got "
                         f"{_described(base)}")
    return base.to(x.dtype) + y[..., -1]


# -- kinetic energy of Gaussian paths ---------------------------------------------------------
_NOISE_ROWS = 1 << 20  # posterior-mean work per chunk: rows x data points


def _snr_angle(snr: Tensor) -> Tensor:
    """(2/pi) atan(s): the snr on [0, 1] (1 at s = inf), the variable lambda is linear in."""
    return torch.atan(snr) * (2 / math.pi)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing, x within its range)."""
    i = (torch.searchsorted(xp, x.contiguous(), right=True) - 1).clamp(0, len(xp) - 2)
    w = (x - xp[i]) / (xp[i + 1] - xp[i])
    return fp[i] + w * (fp[i + 1] - fp[i])


class DataSeparation:
    r"""The data separation function :math:`\lambda(s)` of a data distribution, tabulated.

    For :math:`x_t = \alpha_t x_1 + \sigma_t \epsilon` with signal-to-noise ratio
    :math:`s = \alpha_t/\sigma_t`,

    .. math::
        \lambda(s) = \frac{E\,\|E[x_1 \mid x_t]\|^2}{E\,\|x_1\|^2} \in [0, 1],

    from :math:`\|E x_1\|^2 / E\|x_1\|^2` at :math:`s = 0` up to 1 as :math:`s \to \infty`. It is
    interpolated linearly in :math:`\vartheta = \tfrac2\pi\arctan s` between the grid points and
    beyond the last one, :math:`s_m`, continued by the tail of a distribution with a density,
    :math:`1 - \lambda(s) = (1 - \lambda(s_m))\,s_m^2/s^2` (exactly 1 when
    :math:`\lambda(s_m) = 1`, as for well-separated samples).

    Args:
        snr: increasing grid of signal-to-noise ratios, from 0.
        lam: :math:`\lambda` on ``snr`` (a tensor shaped like it, or one number), in [0, 1].
        dim: the data dimension :math:`d`.
        second_moment: :math:`D = E\|x_1\|^2` (default ``dim``: normalised data).

    References:
        N. Shaul, R. T. Q. Chen, M. Nickel, M. Le, Y. Lipman, "On Kinetic Optimal Probability
        Paths for Generative Models", arXiv 2306.06626.

    Example:
        >>> import torch
        >>> sep = DataSeparation(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5]), dim=2)
        >>> sep(torch.tensor([0.5, 2.0]))  # halfway in (2/pi) atan s; then the 1/s^2 tail
        tensor([0.2952, 0.8750], dtype=torch.float64)
    """

    def __init__(self, snr, lam, *, dim: int, second_moment: float | None = None):
        snr = torch.as_tensor(snr, dtype=torch.float64).detach().cpu()
        if (snr.ndim != 1 or len(snr) < 2 or not torch.isfinite(snr).all() or snr[0] != 0
                or not (snr.diff() > 0).all()):
            raise ValueError(f"snr must be a 1-D grid of finite numbers increasing strictly from "
                             f"0, with at least 2 points, got {snr.tolist()[:6]}")
        lam = torch.as_tensor(lam, dtype=torch.float64).detach().cpu()
        if lam.ndim == 0:
            lam = lam.expand(snr.shape).clone()
        if lam.shape != snr.shape:
            raise ValueError(f"lam must be a number or shaped like snr {tuple(snr.shape)}, got "
                             f"{tuple(lam.shape)}")
        if torch.isnan(lam).any() or (lam < 0).any() or (lam > 1).any():
            raise ValueError(f"lam must lie in [0, 1], got values in [{lam.min().item()}, "
                             f"{lam.max().item()}]")
        self.snr, self.lam = snr, lam
        self.dim = check_int("dim", dim)
        self.second_moment = (float(dim) if second_moment is None
                              else check_positive("second_moment", second_moment))
        self._angle = _snr_angle(snr)

    def __repr__(self) -> str:
        return (f"DataSeparation(<{len(self.snr)} snr values>, dim={self.dim}, "
                f"second_moment={self.second_moment:.6g})")

    def __call__(self, snr) -> Tensor:
        r""":math:`\lambda(s)` at ``snr`` (float64; ``inf`` allowed)."""
        s, inside, within = self._interpolate(snr)
        return torch.where(within, inside, 1 - (1 - self.lam[-1].item()) * self.snr[-1]**2 / s**2)

    def _snr_sq_gap(self, snr) -> Tensor:
        r""":math:`s^2 (1 - \lambda(s))`, finite at :math:`s = \infty` (the tail's constant)."""
        s, inside, within = self._interpolate(snr)
        return torch.where(within, s**2 * (1 - inside),
                           (1 - self.lam[-1].item()) * self.snr[-1].item() ** 2)

    def _interpolate(self, snr) -> tuple[Tensor, Tensor, Tensor]:
        s = torch.as_tensor(snr, dtype=torch.float64)
        if torch.isnan(s).any() or (s < 0).any():
            raise ValueError("snr must be >= 0")
        angle = self._angle.to(s.device)
        inside = _interp(_snr_angle(s).clamp(max=angle[-1].item()), angle,
                         self.lam.to(s.device))
        return s, inside, s <= self.snr[-1].item()


def estimate_data_separation(data: Tensor, snr_grid=None, *, n_noise: int = 32,
                             generator: torch.Generator | None = None) -> DataSeparation:
    r"""The data separation function of the empirical distribution of ``data``.

    With :math:`x_1` uniform on the samples :math:`y_1..y_n` and :math:`z = x_t/\sigma_t = s x_1
    + \epsilon`, the posterior mean is a softmax-weighted average of the samples,

    .. math::
        E[x_1 \mid z] = \sum_j w_j(z)\, y_j, \qquad
        w(z) = \mathrm{softmax}_j\big(s\, z\cdot y_j - \tfrac{s^2}{2}\|y_j\|^2\big), \qquad
        \lambda(s) \approx \frac{1}{n K D}\sum_{i=1}^n \sum_{k=1}^K
        \big\|E[x_1 \mid s y_i + \epsilon_{ik}]\big\|^2,

    exact for the empirical measure (no learned denoiser); only the average over the noise is
    Monte Carlo, with the same :math:`\epsilon_{ik}` at every :math:`s` so the estimate is smooth
    in :math:`s`. :math:`D = \frac1n\sum_j\|y_j\|^2` exactly. The Monte Carlo error is
    reduced with the control variate :math:`b = E[\|x_1\|^2 \mid z] = \sum_j w_j\|y_j\|^2`,
    whose mean :math:`D` is known: with :math:`a = \|E[x_1 \mid z]\|^2`,
    :math:`\hat\lambda = (\bar a - c\,(\bar b - D))/D`, :math:`c = \widehat{\mathrm{Cov}}(a, b)
    /\widehat{\mathrm{Var}}(b)`. As the posterior concentrates, :math:`c \to 1` and the error
    is that of the posterior variance :math:`D(1 - \lambda) = E\,\mathrm{tr}\,\mathrm{Cov}(x_1
    \mid z)` itself, small relative to :math:`1 - \lambda`, which the kinetic energy weighs by
    :math:`\sigma^2\dot s^2` (large there).

    Args:
        data: samples of shape ``(n, d)``.
        snr_grid: increasing snr values from 0 (default 0 and 141 values from 1e-2 to 1e5,
            log-spaced); it must reach the snr where the samples separate (:math:`\lambda = 1`).
        n_noise: noise draws :math:`K` per sample.
        generator: the ``torch.Generator`` of the noise (None: one seeded from torch's global
            RNG, see :func:`stepping.noise.make_generator`).

    Returns:
        A :class:`DataSeparation` with ``dim = d`` and ``second_moment = D``.

    References:
        N. Shaul et al., arXiv 2306.06626 (the data separation function).

    Example:
        >>> import torch
        >>> y = torch.tensor([[-3.0], [3.0]], dtype=torch.float64)  # two points, far apart
        >>> sep = estimate_data_separation(y, torch.tensor([0.0, 10.0]))
        >>> sep.lam  # the mean (0) at s = 0; the point itself at s = 10
        tensor([0., 1.], dtype=torch.float64)
    """
    if not isinstance(data, Tensor) or data.ndim != 2 or len(data) < 1:
        raise ValueError(f"data must be a tensor of shape (n, d), got {_described(data)}")
    if not data.is_floating_point() or not torch.isfinite(data).all():
        raise ValueError("data must hold finite floating-point numbers")
    check_int("n_noise", n_noise)
    y = data.detach().to(torch.float64)
    if snr_grid is None:
        snr_grid = torch.cat([torch.zeros(1, dtype=torch.float64),
                              torch.logspace(-2, 5, 141, dtype=torch.float64)])
    snr = torch.as_tensor(snr_grid, dtype=torch.float64)
    DataSeparation(snr, 1.0, dim=y.shape[1])  # checks the grid before the work
    gen = make_generator(generator)
    eps = torch.randn((n_noise, *y.shape), generator=gen, device=gen.device,
                      dtype=torch.float64).to(y.device).reshape(-1, y.shape[1])
    x1 = y.repeat(n_noise, 1)
    half_sq = 0.5 * (y**2).sum(-1)
    second_moment = 2 * half_sq.mean().item()
    if second_moment == 0:
        raise ValueError("data must not be all zeros (E||x1||^2 = 0)")
    rows = max(1, _NOISE_ROWS // len(y))
    lam = torch.empty_like(snr)
    for k, s in enumerate(snr.tolist()):
        mean_sq, posterior_sq = [], []  # ||E[x1 | z]||^2 and E[||x1||^2 | z], per draw
        for lo in range(0, len(x1), rows):
            z = s * x1[lo:lo + rows] + eps[lo:lo + rows]
            w = torch.softmax(s * (z @ y.T) - s * s * half_sq, dim=-1)
            mean_sq.append(((w @ y) ** 2).sum(-1))
            posterior_sq.append(w @ (2 * half_sq))
        a, b = torch.cat(mean_sq), torch.cat(posterior_sq)
        var_b = b.var(correction=0)
        coef = ((a - a.mean()) * (b - b.mean())).mean() / var_b if var_b > 0 else 0.0
        lam[k] = (a.mean() - coef * (b.mean() - second_moment)) / second_moment
    lam = lam.clamp(0, 1)  # the sampling error can cross an end by a hair
    return DataSeparation(snr, lam, dim=y.shape[1],
                          second_moment=second_moment)


def _gauss_legendre(t_max: float, n_panels: int, order: int = 8) -> tuple[Tensor, Tensor]:
    """Nodes and weights of composite Gauss--Legendre on [0, t_max] (interior nodes only)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, t_max, n_panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    nodes = (edges[:-1, None] + half * (x + 1)).ravel()
    return torch.as_tensor(nodes), torch.as_tensor((half * w).ravel())


def _check_gaussian_path(path) -> None:
    if not isinstance(path, Interpolant) or not path.one_sided:
        raise ValueError(f"path must be a one-sided (Gaussian) Interpolant such as "
                         f"Interpolant('cond-ot'), got {path!r}")


def kinetic_energy(path: Interpolant, separation, *, t_max: float = 1.0, n_panels: int = 256,
                   generator: torch.Generator | None = None) -> float:
    r"""Kinetic energy :math:`\int_0^1 E\|u_t(x_t)\|^2 dt` of a Gaussian path, from
    :math:`\lambda`.

    For :math:`x_t = \alpha_t x_1 + \sigma_t \epsilon` (``path.beta`` is :math:`\alpha_t`,
    ``path.alpha`` is :math:`\sigma_t`), :math:`s = \alpha/\sigma` and :math:`m = E[x_1 \mid
    x_t]`, the marginal velocity is :math:`u_t(x) = E[\dot\alpha x_1 + \dot\sigma\epsilon \mid
    x_t = x] = \tfrac{\dot\sigma}{\sigma} x + \sigma\dot s\, m`. With :math:`E\|x_t\|^2 =
    \alpha^2 D + \sigma^2 d`, :math:`E[x_t\cdot m] = E[x_t\cdot x_1] = \alpha D`, :math:`E\|m\|^2
    = \lambda(s) D` and :math:`\dot\alpha = \dot s\sigma + s\dot\sigma`,

    .. math::
        E\|u_t\|^2 = \frac{\dot\sigma^2}{\sigma^2}(\alpha^2 D + \sigma^2 d)
        + 2\dot\sigma\dot s\,\alpha D + \sigma^2\dot s^2\lambda D
        = \dot\alpha^2 D + \dot\sigma^2 d - \sigma^2\dot s^2 D\,(1 - \lambda(s)),

        KE = \int_0^{t_{\max}} \big[\dot\alpha^2 D + \dot\sigma^2 d
        - \sigma^2\dot s^2 D\,(1 - \lambda(s))\big]\,dt,

    with :math:`D = E\|x_1\|^2`; the data enter only through :math:`\lambda` (Shaul et al.).
    For :math:`\lambda = 1`, Cond-OT has :math:`KE = D + d` (:math:`2d` for normalised data).
    The integral is composite Gauss--Legendre (8 nodes on each of ``n_panels`` panels).

    Args:
        path: a one-sided :class:`Interpolant` (``"cond-ot"``, ``"cosine"``, ``"vp"``,
            :meth:`Interpolant.from_grid`, :func:`kinetic_optimal_path`).
        separation: a :class:`DataSeparation`, or samples ``(n, d)`` whose empirical
            distribution's :math:`\lambda` is estimated (:func:`estimate_data_separation`).
        t_max: upper end of the time integral, in (0, 1]. The VP path's noise vanishes like
            :math:`\sqrt{1-t}`, so its energy diverges logarithmically at 1: compare it on
            :math:`[0, t_{\max}]`, :math:`t_{\max} < 1`.
        n_panels: Gauss--Legendre panels.
        generator: the noise of the estimate when ``separation`` is samples.

    References:
        N. Shaul et al., arXiv 2306.06626.

    Example:
        >>> import torch
        >>> separated = DataSeparation(torch.tensor([0.0, 1.0]), 1.0, dim=3)  # lambda = 1
        >>> round(kinetic_energy(Interpolant("cond-ot"), separated), 10)  # D + d = 2 d
        6.0
    """
    _check_gaussian_path(path)
    if isinstance(separation, Tensor):
        separation = estimate_data_separation(separation, generator=generator)
    elif not isinstance(separation, DataSeparation):
        raise ValueError(f"separation must be a DataSeparation or a tensor of samples (n, d), "
                         f"got {type(separation).__name__}")
    t_max = check_unit_interval("t_max", t_max, include_zero=False)
    check_int("n_panels", n_panels)
    if t_max == 1:
        ends = torch.stack(path._alpha_beta(torch.tensor([0.0, 1.0], dtype=torch.float64))[2:])
        if not torch.isfinite(ends).all():
            raise ValueError(f"the kinetic energy of {path!r} is infinite: a coefficient has an "
                             f"infinite derivative at t = 0 or 1 (the VP path's noise vanishes "
                             f"like sqrt(1 - t)); pass t_max < 1")
    t, w = _gauss_legendre(float(t_max), n_panels)
    noise, signal, dnoise, dsignal = path._alpha_beta(t)
    noise_dsnr = (dsignal * noise - signal * dnoise) / noise  # sigma s' = alpha' - s sigma'
    big_d, d = separation.second_moment, separation.dim
    gap = 1 - separation(signal / noise)
    integrand = big_d * dsignal**2 + d * dnoise**2 - big_d * noise_dsnr**2 * gap
    return float((w * integrand).sum())


def kinetic_optimal_path(separation: DataSeparation, *, n_nodes: int = 257,
                         n_angles: int = 4097) -> Interpolant:
    r"""The Gaussian path of least kinetic energy for a data separation function.

    Write the energy's integrand (see :func:`kinetic_energy`) in :math:`\phi = \sqrt{E\|x_t\|^2}
    = \sqrt{\alpha^2 D + \sigma^2 d}` and :math:`s`: since :math:`\sigma^2(Ds^2 + d) = \phi^2`,
    completing the square in :math:`\dot\sigma` gives

    .. math::
        \dot\alpha^2 D + \dot\sigma^2 d - \sigma^2\dot s^2 D (1 - \lambda)
        = \dot\phi^2 + \phi^2\,\dot\theta^2, \qquad
        \frac{d\theta}{ds} = \frac{\sqrt{D\,(d\lambda(s) - D s^2 (1 - \lambda(s)))}}{Ds^2 + d},

    the Euclidean metric in polar coordinates :math:`(\phi, \theta)` (the square root is real
    for the exact :math:`\lambda`: :math:`E\|u_t\|^2 \ge 0` for every velocity). Kinetic-optimal
    paths are therefore straight lines, run at constant speed, from :math:`\sqrt d\,(1, 0)`
    (:math:`t = 0`: :math:`s = 0, \sigma = 1`) to :math:`\sqrt D(\cos\Theta, \sin\Theta)`
    (:math:`t = 1`: :math:`s = \infty, \alpha = 1`), :math:`\Theta = \int_0^\infty \theta'(s)\,ds
    \le \pi/2`:

    .. math::
        KE_{\min} = D + d - 2\sqrt{Dd}\cos\Theta,\qquad
        \sigma_t = \frac{\phi_t}{\sqrt{D s_t^2 + d}},\quad \alpha_t = s_t\sigma_t,

    with :math:`s_t = \theta^{-1}(\theta_t)`. For :math:`\lambda = 1`, :math:`\theta = \arctan(s
    \sqrt{D/d})`, :math:`\Theta = \pi/2` and the line is :math:`((1-t)\sqrt d, t\sqrt D)`: Cond-OT,
    with :math:`KE = D + d`. Where an estimated :math:`\lambda` crosses the bound
    :math:`D s^2/(D s^2 + d)` by its sampling error the square root is taken as 0.
    :math:`\theta(s)` is tabulated by the trapezoid rule on ``n_angles`` values of
    :math:`\vartheta = \tfrac2\pi\arctan s`; the path is sampled at ``n_nodes`` uniform times
    and interpolated by :meth:`Interpolant.from_grid`.

    Args:
        separation: the :class:`DataSeparation` (e.g. from :func:`estimate_data_separation`).
        n_nodes: times at which the path is computed (at least 2).
        n_angles: points of the :math:`\theta(s)` table (at least 2).

    Returns:
        A one-sided :class:`Interpolant` (usable by :meth:`Interpolant.exact_fields`,
        :class:`InterpolantODE` and :class:`InterpolantSDE`).

    References:
        N. Shaul et al., arXiv 2306.06626 (kinetic-optimal Gaussian paths; their
        characterization by a 1-D ODE and data-dependent paths by minimizing the energy).

    Example:
        >>> import torch
        >>> separated = DataSeparation(torch.tensor([0.0, 1.0]), 1.0, dim=2)  # lambda = 1
        >>> path = kinetic_optimal_path(separated)
        >>> t = torch.tensor([0.25, 0.5], dtype=torch.float64)
        >>> torch.allclose(path.beta(t), t, atol=1e-6)  # Cond-OT: alpha_t = t
        True
    """
    if not isinstance(separation, DataSeparation):
        raise ValueError(f"separation must be a DataSeparation, got "
                         f"{type(separation).__name__}")
    check_int("n_nodes", n_nodes, 2)
    check_int("n_angles", n_angles, 2)
    big_d, d = separation.second_moment, float(separation.dim)
    angle = torch.linspace(0, 1, n_angles, dtype=torch.float64)
    c, s = _quarter_cos_sin(angle)
    snr = torch.where(c > 0, s / c, torch.inf)
    lam = separation(snr)
    # h = d lambda - D s^2 (1 - lambda); with ds = (pi/2)(1 + s^2) d angle and (1 + s^2) /
    # (D s^2 + d) = 1 / (D sin^2 + d cos^2), d theta / d angle stays finite up to s = inf
    h = (d * lam - big_d * separation._snr_sq_gap(snr)).clamp(min=0)
    dtheta = 0.5 * math.pi * torch.sqrt(big_d * h) / (big_d * s**2 + d * c**2)
    theta = torch.cat([torch.zeros(1, dtype=torch.float64),
                       torch.cumsum(0.5 * (dtheta[1:] + dtheta[:-1]) * angle.diff(), 0)])
    big_theta = theta[-1].item()
    if big_theta <= 0:
        raise ValueError("separation gives Theta = 0 (lambda on or below its lower bound "
                         "D s^2 / (D s^2 + d) everywhere): the optimum is degenerate")
    t = torch.linspace(0, 1, n_nodes, dtype=torch.float64)
    px = (1 - t) * math.sqrt(d) + t * math.sqrt(big_d) * math.cos(big_theta)
    py = t * math.sqrt(big_d) * math.sin(big_theta)
    phi, theta_t = torch.hypot(px, py), torch.atan2(py, px).clamp(0, big_theta)
    a = torch.as_tensor(np.interp(theta_t.numpy(), theta.numpy(), angle.numpy()))
    a[0], a[-1] = 0.0, 1.0
    ca, sa = _quarter_cos_sin(a)
    scale = phi / torch.sqrt(big_d * sa**2 + d * ca**2)
    return Interpolant.from_grid(t, scale * sa, scale * ca)


# -- registry -------------------------------------------------------------------------------
_PAPER = "Albergo, Boffi & Vanden-Eijnden, arXiv 2303.08797"

register(AlgorithmInfo(
    name="InterpolantODE",
    cls=InterpolantODE,
    kind="stepper",
    paper=_PAPER,
    default_kwargs=dict(velocity=lambda x, t: -x),
    supports=frozenset({"reverse_time"}),
    linear_problem=lambda: (InterpolantODE(lambda x, t: -x), torch.ones(3, dtype=torch.float64),
                            0.0, 1.0, torch.full((3,), math.exp(-1.0), dtype=torch.float64)),
    requires=frozenset({"velocity"}),
    stochastic=False,
    invalid_kwargs=(
        (dict(velocity=lambda x, t: -x, method="rk45"), ValueError, "method"),
        (dict(velocity=None), ValueError, "velocity"),
        (dict(velocity=lambda x, t: -x, epsilon=1.0), TypeError, "epsilon"),
    ),
))

register(AlgorithmInfo(
    name="InterpolantSDE",
    cls=InterpolantSDE,
    kind="stepper",
    paper=_PAPER,
    default_kwargs=dict(velocity=lambda x, t: -x, score=lambda x, t: -x, epsilon=1.0),
    supports=frozenset({"reverse_time"}),
    # Noise-free, the forward drift b + eps s is -2x here.
    linear_problem=lambda: (InterpolantSDE(lambda x, t: -x, lambda x, t: -x, epsilon=1.0),
                            torch.ones(3, dtype=torch.float64), 0.0, 1.0,
                            torch.full((3,), math.exp(-2.0), dtype=torch.float64)),
    requires=frozenset({"velocity", "score"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(velocity=lambda x, t: -x, score=lambda x, t: -x, epsilon=-1.0), ValueError,
         "epsilon"),
        (dict(velocity=lambda x, t: -x, score=None), ValueError, "score"),
        (dict(velocity=lambda x, t: -x, score=lambda x, t: -x, step=0.1), TypeError, "step"),
    ),
))
