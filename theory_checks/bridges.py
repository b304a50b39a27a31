r"""The Gaussian-mixture benchmark of entropic OT / Schrödinger bridges with a known solution
(Gushchin et al., NeurIPS 2023, arXiv 2306.10161) and its metric, cBW2-UVP.

The construction: any plan of the form
:math:`\pi^*(y \mid x) \propto N(y \mid x, \epsilon I)\, \varphi(y)` is the entropic-OT plan
(cost :math:`\tfrac12\|x - y\|^2`, regularization :math:`\epsilon`) between :math:`p_0` and
its own second marginal :math:`p_1`, whatever :math:`p_0`. With
:math:`\varphi = \sum_k p_k N(\mu_k, \Sigma_k)` the product of Gaussians gives, in closed form,

.. math::

    \pi^*(y \mid x) = \sum_k w_k(x)\, N\big(y \mid \tilde\Sigma_k(\Sigma_k^{-1}\mu_k + x/\epsilon),
    \tilde\Sigma_k\big), \quad \tilde\Sigma_k = (I/\epsilon + \Sigma_k^{-1})^{-1}, \quad
    w_k(x) \propto p_k N(x \mid \mu_k, \Sigma_k + \epsilon I).

This is the construction of the authors' ``ConditionalPlan`` (repository
``ngushchin/EntropicOTBenchmark``, ``benchmark/gaussian_mixture_benchmark.py``). Their parameter
files are downloaded from a file host, unreachable here, so :class:`MixtureBenchmark` draws its
own seeded instance by the authors' recipe (their notebook ``GaussianMixtureDraft.ipynb``, which
wrote those files): :math:`p_0` a mixture of 3 isotropic Gaussians, the potential one of 5.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stochstep.samplers.bridges import LightSB, PlanComponents
from stochstep.stepping.checks import check_int, check_optional_positive, check_positive
from stochstep.stepping.noise import make_generator, standard_normal_like

__all__ = ["MixtureBenchmark", "bures_wasserstein", "cbw2_uvp"]

# The authors' potential scale per eps and D: each component's standard deviation is half of it
# (GaussianMixtureDraft.ipynb, commit 438dcb9 of ngushchin/EntropicOTBenchmark).
_SCALE_EPS_SMALL = {2: 0.5, 4: 0.5, 8: 1.0, 16: 1.0, 32: 4.0, 64: 8.0, 128: 8.0}
_SCALE_EPS_LARGE = {2: 0.5, 4: 0.5, 8: 1.0, 16: 1.0, 32: 2.0, 64: 2.0, 128: 2.0}
_POTENTIAL_SCALE = {0.1: _SCALE_EPS_SMALL, 1.0: _SCALE_EPS_LARGE, 10.0: _SCALE_EPS_LARGE}


def _log_normal(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x_i | mean_k, cov_k), shape (n, K), by Cholesky factors."""
    chol = torch.linalg.cholesky(cov)  # (K, D, D)
    dev = x.T[None] - mean[..., None]  # (K, D, n): one triangular solve per component
    z = torch.linalg.solve_triangular(chol, dev, upper=False)
    half_logdet = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
    return (-0.5 * z.square().sum(1) - half_logdet[:, None]
            - 0.5 * x.shape[1] * math.log(2 * math.pi)).T


def _random_probs(k: int, g: torch.Generator) -> Tensor:
    """K mixture weights: uniform draws on [0, 1], normalized (the authors' draw)."""
    u = torch.rand(k, generator=g, dtype=torch.float64)
    return u / u.sum()


def _grid_means(k: int, dim: int, spacing: float, g: torch.Generator) -> Tensor:
    """K means (K, D) whose every coordinate is its own random permutation of the K points
    ``spacing * (0, 1, ..., K - 1)`` shifted to be centred at 0 (the authors' centres)."""
    grid = spacing * (torch.arange(k, dtype=torch.float64) - (k - 1) / 2)
    return torch.stack([grid[torch.randperm(k, generator=g)] for _ in range(dim)], 1)


class MixtureBenchmark:
    r"""A benchmark pair :math:`(p_0, p_1)` with the known entropic-OT plan :math:`\pi^*`,
    drawn by the authors' recipe.

    .. math::

        p_0 = \sum_{j=1}^{3} q_j\, N(m_j, \tfrac14 I), \qquad
        \varphi = \sum_{k=1}^{5} p_k\, N(\mu_k, s^2 I), \qquad
        \pi^*(y \mid x) \propto N(y \mid x, \epsilon I)\, \varphi(y),

    with weights :math:`q, p` uniform draws normalized, every coordinate of the :math:`m_j` a
    random permutation of (-2, 0, 2) and of the :math:`\mu_k` one of (-2, -1, 0, 1, 2), and the
    authors' :math:`s` for their grid (D in 2, 4, 8, 16, 32, 64, 128; eps in 0.1, 1, 10):
    :math:`s = 0.25` for D <= 4, 0.5 for D = 8, 16, 1 for D >= 32 (eps = 1, 10) and 2, 4, 4 for
    D = 32, 64, 128 at eps = 0.1. The covariances are isotropic, not rotated, so
    :class:`samplers.bridges.LightSB` with diagonal :math:`S_k` represents :math:`\pi^*`
    exactly (5 of its components suffice). The plan is given in the module docstring;
    :math:`p_1 = \int \pi^*(\cdot \mid x)\, dp_0(x)`.

    Args:
        dim: D.
        eps: the entropic regularization :math:`\epsilon > 0` (the bridge's noise level).
        potential_std: :math:`s`; None takes the authors' (then ``(dim, eps)`` must be on
            their grid).
        seed: seeds the instance (its parameters and the estimate of Var(p1)).

    References:
        N. Gushchin et al., "Building the Bridge of Schrödinger: A Continuous Entropic Optimal
        Transport Benchmark", NeurIPS 2023, arXiv 2306.10161.

    Example:
        >>> bench = MixtureBenchmark(2, eps=1.0)
        >>> x, y = bench.sample_pair(3, torch.Generator().manual_seed(0))
        >>> w = bench.conditional_plan(x).weights
        >>> x.shape, y.shape, bool(torch.allclose(w.sum(1), torch.ones(3, dtype=w.dtype)))
        (torch.Size([3, 2]), torch.Size([3, 2]), True)
    """

    def __init__(self, dim: int, eps: float, *, potential_std: float | None = None,
                 seed: int = 0):
        self.dim = check_int("dim", dim)
        self.eps = check_positive("eps", eps)
        std = check_optional_positive("potential_std", potential_std)
        if std is None:
            scales = next((v for e, v in _POTENTIAL_SCALE.items() if math.isclose(e, eps)), {})
            if dim not in scales:
                raise ValueError(
                    "potential_std must be given when (dim, eps) is off the authors' grid "
                    f"(dim in {sorted(_SCALE_EPS_SMALL)}, eps in {sorted(_POTENTIAL_SCALE)}), "
                    f"got dim={dim}, eps={eps}")
            std = 0.5 * scales[dim]
        self.potential_std = std
        g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
        eye = torch.eye(dim, dtype=torch.float64)
        self.input_probs, self.input_mus = _random_probs(3, g), _grid_means(3, dim, 2.0, g)
        self.input_std = 0.5
        self.probs, self.mus = _random_probs(5, g), _grid_means(5, dim, 1.0, g)
        self.sigmas = std ** 2 * eye.expand(5, dim, dim)
        self.plan_covs = torch.linalg.inv(eye / self.eps + torch.linalg.inv(self.sigmas))
        self.plan_bias = (self.plan_covs @ torch.linalg.solve(self.sigmas, self.mus[..., None])
                          )[..., 0]
        self._weight_covs = self.sigmas + self.eps * eye
        self.target_variance = self._estimate_target_variance(g)

    def _input(self, x, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be a tensor of shape (n, {self.dim}), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        return x.to(torch.float64)

    def sample_input(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""n draws of :math:`p_0` (a component j by its weight, then :math:`N(m_j, I/4)`)."""
        g = make_generator(generator)
        j = torch.multinomial(self.input_probs, check_int("n", n), replacement=True, generator=g)
        return self.input_mus[j] + self.input_std * standard_normal_like(self.input_mus[j], g)

    def conditional_plan(self, x: Tensor):
        r""":math:`\pi^*(\cdot \mid x)` as (weights (n, K), means (n, K, D), covariances
        (K, D, D)), a :class:`samplers.bridges.PlanComponents`-like triple with full
        covariances."""
        x = self._input(x)
        logits = self.probs.log() + _log_normal(x, self.mus, self._weight_covs)
        means = self.plan_bias + torch.einsum("kij,nj->nki", self.plan_covs, x) / self.eps
        return PlanComponents(torch.softmax(logits, -1), means, self.plan_covs)

    def conditional_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Exact mean (n, D) and covariance (n, D, D) of :math:`\pi^*(\cdot \mid x)`."""
        w, m, covs = self.conditional_plan(x)
        mean = (w[..., None] * m).sum(1)
        dev = m - mean[:, None, :]
        return mean, torch.einsum("nk,nki,nkj->nij", w, dev, dev) + \
            torch.einsum("nk,kij->nij", w, covs)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""One draw :math:`y_i \sim \pi^*(\cdot \mid x_i)` per row of ``x``."""
        g = make_generator(generator)
        w, m, covs = self.conditional_plan(x)
        k = torch.multinomial(w, 1, generator=g)[:, 0]
        z = standard_normal_like(m[:, 0], g)
        rows = torch.arange(m.shape[0])
        # every component's factor applied to every z (K x n x D), not one D x D per row
        noise = torch.einsum("kij,nj->nki", torch.linalg.cholesky(covs), z)[rows, k]
        return m[rows, k] + noise

    def sample_pair(self, n: int, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor]:
        r"""n pairs :math:`(x, y) \sim \pi^*`: x from :math:`p_0`, y from the plan."""
        g = make_generator(generator)
        x = self.sample_input(n, g)
        return x, self.sample(x, g)

    def as_light_sb(self, generator: torch.Generator | None = None) -> LightSB:
        r"""The :class:`samplers.bridges.LightSB` (5 components) whose plan is :math:`\pi^*`.

        .. math::

            S_k = \tilde\Sigma_k / \epsilon, \quad r_k = \tilde\Sigma_k \Sigma_k^{-1} \mu_k,
            \quad a_k = p_k\, N(0 \mid \mu_k, \Sigma_k + \epsilon I)

        (matching the plan's means, covariances and weights: the two weights' exponents differ
        by :math:`-\|x\|^2 / (2\epsilon)`, the same for every k). Its loss is the least a
        LightSB can reach, so a fitted model's loss minus this one's estimates
        :math:`\mathbb{E}_{p_0} \mathrm{KL}(\pi^*(\cdot \mid x) \,\|\, \hat\pi(\cdot \mid x))`.

        Example:
            >>> bench = MixtureBenchmark(2, eps=1.0)
            >>> cbw2_uvp(bench.as_light_sb(), bench, 100, None) < 1e-9
            True
        """
        sb = LightSB(self.dim, len(self.probs), self.eps, generator=generator)
        log_a = self.probs.log() + _log_normal(torch.zeros(1, self.dim, dtype=torch.float64),
                                               self.mus, self._weight_covs)[0]
        with torch.no_grad():
            sb.log_variance.copy_(torch.diagonal(self.plan_covs, dim1=-2, dim2=-1).log()
                                  - math.log(self.eps))
            sb.means.copy_(self.plan_bias)
            sb.log_weight_raw.copy_(self.eps * log_a)
        return sb

    def _estimate_target_variance(self, g: torch.Generator, n: int = 40_000) -> float:
        r""":math:`\mathrm{Var}(p_1) = \mathbb{E}\,\mathrm{tr\,Cov}(y \mid x)
        + \mathrm{tr\,Cov}(\mathbb{E}[y \mid x])`, the inner moments exact, the outer
        expectation over n draws of :math:`p_0` (traces only: no D x D per input)."""
        x = self.sample_input(n, g)
        tr_covs = torch.diagonal(self.plan_covs, dim1=-2, dim2=-1).sum(-1)
        within, means = 0.0, []
        for chunk in x.split(5000):
            w, m, _ = self.conditional_plan(chunk)
            mean = (w[..., None] * m).sum(1)
            within += float((w * ((m - mean[:, None]).square().sum(-1) + tr_covs)).sum())
            means.append(mean)
        return within / n + float(torch.cat(means).var(0).sum())


def bures_wasserstein(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    r"""Squared 2-Wasserstein distance between Gaussians, batched over leading dimensions:

    .. math::

        \mathrm{BW}^2 = \|m_1 - m_2\|^2 + \mathrm{tr}\,C_1 + \mathrm{tr}\,C_2
        - 2\,\mathrm{tr}\big(C_1^{1/2} C_2 C_1^{1/2}\big)^{1/2}.

    Example:
        >>> i = torch.eye(2, dtype=torch.float64)
        >>> float(bures_wasserstein(torch.zeros(2), i, torch.ones(2), 4 * i))
        4.0
    """
    mean1, mean2 = torch.as_tensor(mean1, dtype=torch.float64), torch.as_tensor(mean2).double()
    cov1, cov2 = torch.as_tensor(cov1).double(), torch.as_tensor(cov2).double()
    lam, vec = torch.linalg.eigh(cov1)
    # eigenvalues of PSD matrices come out a rounding error below 0 at worst: sqrt needs >= 0
    root1 = (vec * lam.clamp_min(0).sqrt()[..., None, :]) @ vec.transpose(-1, -2)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum(-1)
    trace = torch.diagonal(cov1, dim1=-2, dim2=-1).sum(-1) + \
        torch.diagonal(cov2, dim1=-2, dim2=-1).sum(-1)
    return (mean1 - mean2).square().sum(-1) + trace - 2 * cross


def cbw2_uvp(model, benchmark: MixtureBenchmark, n_inputs: int = 1000,
             n_samples: int | None = 1000, *, generator: torch.Generator | None = None,
             chunk: int = 100_000) -> float:
    r"""The conditional Bures--Wasserstein unexplained variance percentage of a plan.

    .. math::

        \mathrm{cBW}_2^2\text{-UVP} = \frac{100}{\tfrac12 \mathrm{Var}(p_1)}\,
        \mathbb{E}_{x \sim p_0}\Big[\tfrac12 \mathrm{BW}^2\big(\hat\pi(\cdot \mid x),
        \pi^*(\cdot \mid x)\big)\Big],

    with BW between the Gaussians of the same means and covariances (see
    :func:`bures_wasserstein`; the halves as in the authors' ``calculate_cond_bw``), the
    expectation over ``n_inputs`` draws of :math:`p_0`, the true moments exact.

    Args:
        model: a sampler ``model(x) -> y`` (or an object with ``sample(x)``), one draw per row;
            or, with ``n_samples=None``, an object with ``conditional_moments(x) -> (mean,
            cov)`` (e.g. :class:`samplers.bridges.LightSB`, the benchmark itself), whose
            exact moments are used.
        benchmark: the :class:`MixtureBenchmark`.
        n_inputs: inputs x (default 1000, the authors').
        n_samples: draws per input for the model's sample moments (default 1000), or None.
        generator: draws the inputs.
        chunk: at most this many draws of the model at once.

    Returns:
        The percentage (0 for the true plan's exact moments).

    Example:
        >>> bench = MixtureBenchmark(2, eps=1.0)
        >>> cbw2_uvp(bench, bench, 100, None) < 1e-9
        True
    """
    n_inputs = check_int("n_inputs", n_inputs)
    if n_samples is not None:
        n_samples = check_int("n_samples", n_samples, low=2)
    chunk = check_int("chunk", chunk)
    x = benchmark.sample_input(n_inputs, make_generator(generator))
    true_mean, true_cov = benchmark.conditional_moments(x)
    if n_samples is None:
        if not callable(getattr(model, "conditional_moments", None)):
            raise ValueError("model must have conditional_moments(x) when n_samples is None, "
                             f"got {type(model).__name__}")
        mean, cov = (t.detach().double() for t in model.conditional_moments(x))
    else:
        draw = model.sample if callable(getattr(model, "sample", None)) else model
        if not callable(draw):
            raise ValueError(f"model must be callable or have sample(x), got {model!r}")
        means, covs = [], []
        with torch.no_grad():
            for xs in x.split(max(1, chunk // n_samples)):
                y = draw(xs.repeat_interleave(n_samples, 0)).double()
                y = y.reshape(xs.shape[0], n_samples, -1)
                dev = y - y.mean(1, keepdim=True)
                means.append(y.mean(1))
                covs.append(dev.transpose(1, 2) @ dev / (n_samples - 1))
        mean, cov = torch.cat(means), torch.cat(covs)
    if mean.shape != true_mean.shape or cov.shape != true_cov.shape:
        raise ValueError(f"model's moments have shapes {tuple(mean.shape)}, {tuple(cov.shape)};"
                         f" expected {tuple(true_mean.shape)}, {tuple(true_cov.shape)}")
    half_bw = 0.5 * bures_wasserstein(mean, cov, true_mean, true_cov)
    return float(100 * half_bw.mean() / (0.5 * benchmark.target_variance))
