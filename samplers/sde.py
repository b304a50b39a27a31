r"""The forward SDEs of score-based generative modelling (Song et al., arXiv 2011.13456).

Each SDE :math:`dx = f(x, t)\,dt + g(t)\,dw` on :math:`t \in [0, T]` has a Gaussian transition
kernel :math:`x_t = b(t)\,x_0 + c(t)\,\varepsilon`, so :class:`samplers.targets.GaussianMixture`
gives its exact marginal score with ``gm.score(x, *sde.marginal(t))``. Given a score
:math:`s(x, t) \approx \nabla_x \log p_t(x)`, time runs backwards along the reverse SDE and the
probability-flow ODE

.. math::
    dx = [f - g^2 s]\,dt + g\,d\bar w, \qquad \frac{dx}{dt} = f - \tfrac12 g^2 s.

Times are floats or tensors of shape ``(batch,)`` (one per sample); coefficients come back as
float64 tensors of the same shape, and :meth:`SDE.expand` broadcasts one against a batch ``x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stochstep.stepping.checks import check_positive
from stochstep.stepping.noise import make_generator, standard_normal_like

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE"]



def _time(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64).detach().cpu()


class SDE:
    """Base class: a forward SDE with a Gaussian kernel ``x_t = b(t) x_0 + c(t) eps``.

    Subclasses define :meth:`drift_coeff` (``f(x, t) = drift_coeff(t) * x``), :meth:`diffusion`,
    :meth:`marginal`, the prior's standard deviation ``prior_std`` and, optionally,
    :meth:`discretize` and :meth:`corrector_alpha`.
    """

    T: float = 1.0
    prior_std: float = 1.0

    # -- coefficients (float64 tensors shaped like t) ------------------------------------
    def drift_coeff(self, t) -> Tensor:
        raise NotImplementedError

    def diffusion(self, t) -> Tensor:
        """:math:`g(t)`."""
        raise NotImplementedError

    def marginal(self, t) -> tuple[Tensor, Tensor]:
        """``(b(t), c(t))``: the kernel's mean coefficient and standard deviation."""
        raise NotImplementedError

    def mean_coeff(self, t) -> Tensor:
        return self.marginal(t)[0]

    def std(self, t) -> Tensor:
        return self.marginal(t)[1]

    # -- on a batch ----------------------------------------------------------------------
    @staticmethod
    def expand(coeff: Tensor, x: Tensor) -> Tensor:
        """``coeff`` (shape ``()`` or ``(batch,)``) cast to ``x`` and broadcastable against it."""
        coeff = torch.as_tensor(coeff).to(dtype=x.dtype, device=x.device)
        return coeff.reshape(-1, *[1] * (x.ndim - 1)) if coeff.ndim == 1 else coeff

    def drift(self, x: Tensor, t) -> Tensor:
        """:math:`f(x, t)`."""
        return self.expand(self.drift_coeff(t), x) * x

    def reverse_drift(self, x: Tensor, t, s: Tensor) -> Tensor:
        """Drift of the reverse SDE, :math:`f - g^2 s`, given the score value ``s``."""
        return self.drift(x, t) - self.expand(self.diffusion(t) ** 2, x) * s

    def probability_flow(self, x: Tensor, t, s: Tensor) -> Tensor:
        """Velocity of the probability-flow ODE, :math:`f - g^2 s / 2`."""
        return self.drift(x, t) - self.expand(self.diffusion(t) ** 2 / 2, x) * s

    def check_time(self, t, name: str = "t") -> None:
        tt = _time(t)
        if not torch.isfinite(tt).all() or (tt < 0).any() or (tt > self.T).any():
            raise ValueError(f"{name} must lie in the SDE's domain [0, {self.T}], got {t!r}")

    # -- discretisations used by the reverse-diffusion predictor and the corrector --------
    def discretize(self, x: Tensor, t0: float, t1: float) -> tuple[Tensor, Tensor]:
        r"""``(f_i, G_i)`` of the forward chain :math:`x_{hi} = x_{lo} + f_i + G_i z` over the
        interval between ``t0`` (the current time) and ``t1``; here Euler--Maruyama at ``t0``:
        :math:`f_i = f(x, t_0) |\Delta t|`, :math:`G_i = g(t_0) \sqrt{|\Delta t|}`."""
        dt = abs(t1 - t0)
        return self.drift(x, t0) * dt, self.expand(self.diffusion(t0) * math.sqrt(dt), x)

    def corrector_alpha(self, t0: float, t1: float) -> float:
        """The factor :math:`a_i` of the Langevin corrector's step size (1 unless VP-type)."""
        return 1.0

    # -- prior ---------------------------------------------------------------------------
    def prior_sample(self, shape, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> Tensor:
        """A draw from the prior :math:`N(0, \\sigma_T^2 I)` of the given shape."""
        z = standard_normal_like(torch.empty(shape, dtype=dtype), make_generator(generator))
        return z.mul_(self.prior_std)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of the prior at a batch ``z``, summed over all but the first dimension."""
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(-1) / self.prior_std ** 2
        return -0.5 * (sq + d * math.log(2 * math.pi * self.prior_std ** 2))


class VPSDE(SDE):
    r"""Variance-preserving SDE (the continuous limit of DDPM).

    .. math::
        \beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min}),\quad
        B(t) = \int_0^t \beta,\quad dx = -\tfrac12 \beta x\,dt + \sqrt{\beta}\,dw,\quad
        b = e^{-B/2},\ c = \sqrt{1 - e^{-B}}.

    Prior :math:`N(0, I)`. The reverse-diffusion predictor uses the DDPM chain
    :math:`x \mapsto \sqrt{1 - \beta_i}\,x + \sqrt{\beta_i}\,z` and the corrector
    :math:`a_i = 1 - \beta_i`, with :math:`\beta_i = 1 - e^{-\beta(t_0)|\Delta t|}` at the current
    time :math:`t_0`. The reference's :math:`\beta_i = \beta(t_0)|\Delta t|` agrees up to
    :math:`O((\beta \Delta t)^2)` but exceeds 1 when :math:`\beta \Delta t > 1` (5--10 steps),
    making :math:`\sqrt{1 - \beta_i}` and :math:`a_i < 0` NaN; this form stays in (0, 1).
    (The exact-kernel :math:`1 - e^{-(B(t_0) - B(t_1))}` pairs worse with a score taken at
    :math:`t_0`: its weak error was 3--4 times larger in tests on Gaussian data.)

    Args:
        beta_min: :math:`\beta_{min} > 0` (default 0.1).
        beta_max: :math:`\beta_{max} \ge \beta_{min}` (default 20).

    References:
        Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
        Equations", ICLR 2021, arXiv 2011.13456.

    Example:
        >>> b, c = VPSDE().marginal(torch.tensor([0.0, 0.5, 1.0]))
        >>> bool(torch.allclose(b**2 + c**2, torch.ones(3, dtype=torch.float64)))
        True
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got {beta_max} < {beta_min}")

    def beta(self, t) -> Tensor:
        return self.beta_min + _time(t) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t) -> Tensor:
        t = _time(t)
        return self.beta_min * t + (self.beta_max - self.beta_min) * t ** 2 / 2

    def drift_coeff(self, t) -> Tensor:
        return -self.beta(t) / 2

    def diffusion(self, t) -> Tensor:
        return self.beta(t).sqrt()

    def marginal(self, t) -> tuple[Tensor, Tensor]:
        big_b = self.integrated_beta(t)
        return (-big_b / 2).exp(), (-torch.expm1(-big_b)).sqrt()

    def _step_beta(self, t0: float, t1: float) -> Tensor:
        return -torch.expm1(-self.beta(t0) * abs(t1 - t0))

    def discretize(self, x, t0, t1):
        beta_i = self._step_beta(t0, t1)
        return ((1 - beta_i).sqrt() - 1).to(x.dtype) * x, self.expand(beta_i.sqrt(), x)

    def corrector_alpha(self, t0, t1):
        return float(1 - self._step_beta(t0, t1))

    def __repr__(self):
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class SubVPSDE(VPSDE):
    r"""Sub-VP SDE: the VP drift with a smaller diffusion.

    .. math::
        dx = -\tfrac12 \beta x\,dt + \sqrt{\beta (1 - e^{-2B})}\,dw,\quad
        b = e^{-B/2},\ c = 1 - e^{-B}\ \text{(no square root)}.

    Prior :math:`N(0, I)`. The reverse-diffusion predictor is Euler--Maruyama (as in the
    reference code); the corrector uses the VP factor :math:`a_i`.

    Args:
        beta_min: :math:`\beta_{min} > 0` (default 0.1).
        beta_max: :math:`\beta_{max} \ge \beta_{min}` (default 20).

    References:
        Y. Song et al., arXiv 2011.13456 (Section 3.4).

    Example:
        >>> b, c = SubVPSDE().marginal(torch.tensor([0.5]))
        >>> bool((b**2 + c**2 < 1).all())
        True
    """

    def diffusion(self, t) -> Tensor:
        return (self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t))).sqrt()

    def marginal(self, t) -> tuple[Tensor, Tensor]:
        big_b = self.integrated_beta(t)
        return (-big_b / 2).exp(), -torch.expm1(-big_b)

    discretize = SDE.discretize

    def __repr__(self):
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VESDE(SDE):
    r"""Variance-exploding SDE (the continuous limit of SMLD / NCSN).

    .. math::
        \sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t,\quad
        dx = \sigma(t)\sqrt{2 \ln(\sigma_{max}/\sigma_{min})}\,dw,\quad b = 1,\ c = \sigma(t).

    As in the reference code the kernel's variance is :math:`\sigma(t)^2` (the exact
    :math:`\sigma(t)^2 - \sigma_{min}^2` is dropped: the data are taken as already smoothed by
    :math:`\sigma_{min}`); prior :math:`N(0, \sigma_{max}^2 I)`. The reverse-diffusion predictor
    is the SMLD chain :math:`G_i^2 = \sigma(t_{hi})^2 - \sigma(t_{lo})^2`; :math:`a_i = 1`.

    Args:
        sigma_min: default 0.01.
        sigma_max: default 50 (> ``sigma_min``).

    References:
        Y. Song et al., arXiv 2011.13456.

    Example:
        >>> round(VESDE().std(1.0).item(), 6)
        50.0
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got {sigma_max} <= {sigma_min}")
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t) -> Tensor:
        return self.sigma_min * (_time(t) * self._log_ratio).exp()

    def drift_coeff(self, t) -> Tensor:
        return torch.zeros_like(_time(t))

    def diffusion(self, t) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal(self, t) -> tuple[Tensor, Tensor]:
        s = self.sigma(t)
        return torch.ones_like(s), s

    def discretize(self, x, t0, t1):
        g2 = (self.sigma(t0) ** 2 - self.sigma(t1) ** 2).abs()
        return torch.zeros_like(x), self.expand(g2.sqrt(), x)

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"
