"""Distributions whose score, denoiser and velocity are known in closed form at every time.

Every forward process in this package is a Gaussian path: ``x_t = b(t) x_data + c(t) eps`` with
``eps ~ N(0, I)`` independent of the data (VP/VE/sub-VP SDEs, stochastic interpolants with a
Gaussian base). For Gaussian-mixture data, component ``k`` of ``x_t`` is
``N(b mu_k, b^2 Sigma_k + c^2 I)``, so the time marginal, its score, the denoiser
``E[x_data | x_t]`` and the path velocity ``E[b' x_data + c' eps | x_t]`` are all exact. With
``Sigma_k = U_k diag(lambda_k) U_k^T`` computed once, the marginal covariance at any (b, c) is
``U_k diag(b^2 lambda_k + c^2) U_k^T``: no factorization per time or per sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stochstep.stepping.noise import make_generator
from stochstep.stepping.checks import check_int

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A mixture of Gaussians with exact time marginals along Gaussian paths.

    Args:
        means: ``(K, d)`` component means.
        covs: ``(K, d, d)`` symmetric positive definite covariances, ``(K,)`` isotropic
            variances, or None for identity.
        weights: ``(K,)`` positive weights (normalised here), or None for equal weights.
        dtype: computation dtype (default float64, so tests can be tight).

    ``b`` and ``c`` below are numbers or tensors of shape ``x.shape[:-1]`` (one time per
    sample); ``b = 1, c = 0`` is the data distribution itself.

    Example:
        >>> gm = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([0.25, 0.25]))
        >>> x = torch.zeros(1, 1, dtype=torch.float64)
        >>> gm.score(x).item()  # symmetric mixture: zero score at the middle
        0.0
    """

    def __init__(self, means: Tensor, covs: Tensor | None = None, weights: Tensor | None = None,
                 *, dtype: torch.dtype = torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim != 2 or means.shape[0] < 1:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        if covs is None:
            covs = torch.eye(d, dtype=dtype).expand(k, d, d)
        covs = torch.as_tensor(covs, dtype=dtype)
        if covs.shape == (k,):
            covs = covs[:, None, None] * torch.eye(d, dtype=dtype)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}) or ({k},), "
                             f"got {tuple(covs.shape)}")
        if not torch.allclose(covs, covs.transpose(-1, -2)):
            raise ValueError("covs must be symmetric")
        lam, u = torch.linalg.eigh(covs)
        if (lam <= 0).any():
            raise ValueError("covs must be positive definite")
        if weights is None:
            weights = torch.ones(k, dtype=dtype)
        weights = torch.as_tensor(weights, dtype=dtype)
        if weights.shape != (k,) or (weights <= 0).any() or not torch.isfinite(weights).all():
            raise ValueError(f"weights must be {k} positive finite numbers")
        self.means, self.covs, self.weights = means, covs, weights / weights.sum()
        self._lam, self._u = lam, u  # Sigma_k = u_k diag(lam_k) u_k^T
        self._chol = torch.linalg.cholesky(covs)
        self.dtype = dtype

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    # -- the benchmark mixtures -----------------------------------------------------------
    @classmethod
    def eight_modes_2d(cls, radius: float = 4.0, std: float = 0.3) -> "GaussianMixture":
        """Eight equal modes on a circle in 2-D."""
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = radius * torch.stack([angle.cos(), angle.sin()], -1)
        return cls(means, torch.full((8,), std**2, dtype=torch.float64))

    @classmethod
    def four_modes(cls, dim: int = 16, spread: float = 3.0, seed: int = 0) -> "GaussianMixture":
        """Four modes in ``dim`` dimensions with random anisotropic covariances and weights."""
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn(4, dim, generator=g, dtype=torch.float64)
        a = torch.randn(4, dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
        covs = 0.25 * (a @ a.transpose(-1, -2) + 0.5 * torch.eye(dim, dtype=torch.float64))
        weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
        return cls(means, covs, weights)

    # -- sampling -------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws from the mixture, shape ``(n, d)``."""
        return self.sample_marginal(n, 1.0, 0.0, generator=generator)

    def sample_marginal(self, n: int, b, c, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of ``b x_data + c eps``, shape ``(n, d)``."""
        check_int("n", n)
        gen = make_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        z = torch.randn(n, self.dim, generator=gen, dtype=self.dtype)
        x = self.means[k] + (self._chol[k] @ z[..., None])[..., 0]
        eps = torch.randn(n, self.dim, generator=gen, dtype=self.dtype)
        b, c = self._coeffs(b, c, x)
        return b[..., None] * x + c[..., None] * eps

    # -- exact quantities along the path --------------------------------------------------
    def _coeffs(self, b, c, x: Tensor) -> tuple[Tensor, Tensor]:
        b = torch.as_tensor(b, dtype=self.dtype).expand(x.shape[:-1])
        c = torch.as_tensor(c, dtype=self.dtype).expand(x.shape[:-1])
        return b, c

    def _components(self, x: Tensor, b, c):
        """Per component: log weight + log density, y = U^T (x - b mu), variances s."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim}, got {tuple(x.shape)}")
        x = x.to(self.dtype)
        b, c = self._coeffs(b, c, x)
        diff = x[..., None, :] - b[..., None, None] * self.means  # (..., K, d)
        y = torch.einsum("kji,...kj->...ki", self._u, diff)
        s = b[..., None, None] ** 2 * self._lam + c[..., None, None] ** 2  # (..., K, d)
        logn = -0.5 * ((y**2 / s).sum(-1) + s.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return logn + self.weights.log(), y, s, b

    def log_prob(self, x: Tensor, b=1.0, c=0.0) -> Tensor:
        """log density of ``b x_data + c eps`` at ``x``, shape ``x.shape[:-1]``."""
        logw, _, _, _ = self._components(x, b, c)
        return torch.logsumexp(logw, -1)

    def score(self, x: Tensor, b=1.0, c=0.0) -> Tensor:
        """grad_x log p of ``b x_data + c eps``, shaped like ``x``."""
        logw, y, s, _ = self._components(x, b, c)
        r = torch.softmax(logw, -1)
        per = -torch.einsum("kij,...kj->...ki", self._u, y / s)
        return (r[..., None] * per).sum(-2)

    def denoiser(self, x: Tensor, b, c) -> Tensor:
        """``E[x_data | b x_data + c eps = x]``, shaped like ``x``."""
        logw, y, s, bb = self._components(x, b, c)
        r = torch.softmax(logw, -1)
        per = self.means + bb[..., None, None] * torch.einsum(
            "kij,...kj->...ki", self._u, self._lam * y / s)
        return (r[..., None] * per).sum(-2)

    def velocity(self, x: Tensor, b, c, db, dc) -> Tensor:
        """``E[b' x_data + c' eps | x_t = x]``: the probability-flow velocity of the path.

        ``db`` and ``dc`` are the time derivatives of ``b`` and ``c``; requires ``c > 0``.
        """
        x = x.to(self.dtype)
        b, c = self._coeffs(b, c, x)
        db, dc = self._coeffs(db, dc, x)
        d = self.denoiser(x, b, c)
        return db[..., None] * d + (dc / c)[..., None] * (x - b[..., None] * d)
