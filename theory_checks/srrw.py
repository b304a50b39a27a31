"""Closed-form asymptotic covariances of SRRW and SA-SRRW, and simulations that check them.

For a reversible base chain P with stationary distribution mu, let D = diag(mu). The matrix
S = D^{1/2} P D^{-1/2} is symmetric; with its orthonormal eigenvectors phi_i and eigenvalues
1 = l_1 > l_2 >= ... >= l_N > -1, the mu-weighted vectors u_i = D^{1/2} phi_i are the left
eigenvectors of P (u_1 = mu). The self-repellent random walk (SRRW) of Doshi, Hu and Eun with
repellence alpha has the central limit theorem (x_n - mu) / sqrt(gamma_n) -> N(0, V(alpha)),

.. math::

    V(\\alpha) = \\sum_{i \\ge 2} \\frac{1}{2\\alpha(1 + l_i) + 2 - 1\\{a = 1\\}}
                 \\frac{1 + l_i}{1 - l_i} \\, u_i u_i^\\top ,

for the generalised measure x_{n+1} = x_n + gamma_{n+1} (delta_{X_{n+1}} - x_n) with
gamma_n = (n + 1)^{-a}; a = 1 is the ordinary empirical measure, where the denominator is
2 alpha (1 + l_i) + 1 and V(0) is the base chain's own asymptotic covariance
Sigma = D Z + Z^T D - D - mu mu^T, Z = (I - P + 1 mu^T)^{-1}.

For SA-SRRW, theta_{n+1} = theta_n + beta_{n+1} H(theta_n, X_{n+1}) with beta_n = (n+1)^{-b},
in regime (i) (a < b) the covariance of (theta_n - theta*) / sqrt(beta_n) solves the Lyapunov
equation J_b V + V J_b^T + U(alpha) = 0 with J_b = J + 1{b=1} I / 2 and

.. math::

    U(\\alpha) = \\sum_{i \\ge 2} \\frac{1}{(\\alpha(1 + l_i) + 1)^2}
                 \\frac{1 + l_i}{1 - l_i} \\, H^\\top u_i u_i^\\top H ,

where the rows of H are H(theta*, i). Regime (iii) (a > b) does not improve with alpha; its
covariance is taken to be the alpha = 0 value (the specification marks this as unverified;
:func:`measure_sa_srrw_covariance` measures it).

References:
    Doshi, Hu, Eun. "Self-Repellent Random Walks on General Graphs: Achieving Minimal Sampling
    Variance via Nonlinear Markov Chains." ICML 2023, arXiv 2305.05097.
    Hu, Doshi, Eun. "Accelerating Distributed Stochastic Optimization via Self-Repellent Random
    Walks." ICLR 2024, arXiv 2401.09665.

Example:
    >>> import networkx as nx, torch
    >>> from stochstep.stepping.walks import Graph, BaseChain
    >>> chain = BaseChain.metropolis_hastings(Graph.from_networkx(nx.cycle_graph(5)))
    >>> V0 = srrw_asymptotic_covariance(chain, None, 0.0)
    >>> torch.allclose(V0, base_chain_asymptotic_covariance(chain), atol=1e-12)
    True
    >>> bool(srrw_asymptotic_covariance(chain, None, 5.0).trace() < V0.trace() / 5)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochstep.stepping.checks import check_int, check_nonnegative
from stochstep.stepping.noise import make_generator
from stochstep.stepping.walks import BaseChain, PowerGamma, SelfRepellentWalk, check_exponent

__all__ = [
    "reversible_eigenpairs",
    "base_chain_asymptotic_covariance",
    "srrw_asymptotic_covariance",
    "sa_srrw_asymptotic_covariance",
    "VarianceCheck",
    "measure_srrw_variance",
    "measure_sa_srrw_covariance",
]


def _dense_chain(chain_or_P, mu) -> tuple[Tensor, Tensor]:
    """(P, mu) as float64 tensors, checked: stochastic, mu stationary, reversible."""
    if isinstance(chain_or_P, BaseChain):
        P = chain_or_P.dense()
        if mu is None:
            mu = chain_or_P.target
    else:
        P = torch.as_tensor(chain_or_P, dtype=torch.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise ValueError(f"chain_or_P must be a BaseChain or a square (N, N) matrix with N >= 2, "
                         f"got shape {tuple(P.shape)}")
    n = P.shape[0]
    if not torch.isfinite(P).all() or (P < 0).any() or not torch.allclose(
            P.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-10):
        raise ValueError("chain_or_P must be a stochastic matrix (entries >= 0, rows sum to 1)")
    if mu is None:
        raise ValueError("mu is required when chain_or_P is a matrix")
    mu = torch.as_tensor(mu, dtype=torch.float64).flatten()
    if mu.shape != (n,) or not torch.isfinite(mu).all() or (mu <= 0).any():
        raise ValueError(f"mu must have {n} finite entries > 0")
    mu = mu / mu.sum()
    if not torch.allclose(mu @ P, mu, atol=1e-10, rtol=0):
        raise ValueError("mu must be stationary for P (mu P = mu)")
    flow = mu[:, None] * P
    if not torch.allclose(flow, flow.T, atol=1e-12, rtol=1e-8):
        raise ValueError("the base chain must be reversible (mu_i P_ij = mu_j P_ji)")
    return P, mu


def reversible_eigenpairs(chain_or_P, mu: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``l`` (descending, ``l[0] = 1``) and mu-weighted eigenvectors of a
    reversible P, as the columns of ``U`` with ``U[:, i] = D^{1/2} phi_i``, where phi_i are
    the orthonormal eigenvectors of ``S = D^{1/2} P D^{-1/2}`` and ``D = diag(mu)``.

    Then ``P = D^{-1} U diag(l) U^T`` and ``U[:, 0] = mu`` (up to sign, fixed positive here).

    Args:
        chain_or_P: a :class:`stepping.walks.BaseChain` or a dense ``(N, N)`` matrix.
        mu: the stationary distribution (taken from the chain's ``target`` when None).
    """
    P, mu = _dense_chain(chain_or_P, mu)
    d = mu.sqrt()
    S = d[:, None] * P / d[None, :]
    lam, phi = torch.linalg.eigh(0.5 * (S + S.T))
    lam, phi = lam.flip(0), phi.flip(1)
    if lam[1] > 1 - 1e-12:
        raise ValueError("the base chain must be irreducible (eigenvalue 1 is repeated)")
    U = d[:, None] * phi
    if U[:, 0].sum() < 0:
        U[:, 0] = -U[:, 0]
    return lam, U


def base_chain_asymptotic_covariance(chain_or_P, mu: Tensor | None = None) -> Tensor:
    """Asymptotic covariance of sqrt(n)(x_n - mu) for the base chain's empirical measure,
    from the fundamental matrix, independently of any eigen-decomposition:

    .. math::

        \\Sigma = D Z + Z^\\top D - D - \\mu \\mu^\\top, \\qquad Z = (I - P + 1 \\mu^\\top)^{-1}.

    Args:
        chain_or_P: a :class:`stepping.walks.BaseChain` or a dense ``(N, N)`` matrix.
        mu: the stationary distribution (taken from the chain when None).
    """
    P, mu = _dense_chain(chain_or_P, mu)
    n = P.shape[0]
    Z = torch.linalg.inv(torch.eye(n, dtype=torch.float64) - P + mu[None, :].expand(n, n))
    D = torch.diag(mu)
    return D @ Z + Z.T @ D - D - torch.outer(mu, mu)


def srrw_asymptotic_covariance(chain_or_P, mu: Tensor | None, alpha: float,
                               gamma_exponent: float = 1.0) -> Tensor:
    """Closed-form asymptotic covariance V(alpha) of (x_n - mu)/sqrt(gamma_n) for SRRW.

    .. math::

        V(\\alpha) = \\sum_{i \\ge 2} \\frac{1}{2\\alpha(1 + l_i) + 2 - 1\\{a = 1\\}}
                     \\frac{1 + l_i}{1 - l_i} \\, u_i u_i^\\top

    Args:
        chain_or_P: the reversible base chain: a :class:`stepping.walks.BaseChain` or a dense
            ``(N, N)`` transition matrix.
        mu: its stationary distribution (None: the chain's ``target``).
        alpha: repellence strength >= 0.
        gamma_exponent: a in (0.5, 1] of gamma_n = (n + 1)^{-a}; 1 (default) is the ordinary
            empirical measure, whose normalisation sqrt(gamma_n) is 1/sqrt(n) asymptotically.

    Returns:
        ``(N, N)`` float64 symmetric positive semi-definite matrix with ``V @ 1 = 0``.

    References:
        Doshi, Hu, Eun, arXiv 2305.05097 (a = 1); Hu, Doshi, Eun, arXiv 2401.09665 (a < 1).

    Example:
        >>> import torch
        >>> P = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
        >>> mu = torch.tensor([0.25, 0.5, 0.25])
        >>> V = srrw_asymptotic_covariance(P, mu, 1.0)
        >>> V.shape, bool(V.sum(1).abs().max() < 1e-12)
        (torch.Size([3, 3]), True)
    """
    alpha = check_nonnegative("alpha", alpha)
    a = check_exponent("gamma_exponent", gamma_exponent)
    lam, U = reversible_eigenpairs(chain_or_P, mu)
    lam, U = lam[1:], U[:, 1:]
    weight = (1 + lam) / (1 - lam) / (2 * alpha * (1 + lam) + 2 - (1.0 if a == 1 else 0.0))
    return (U * weight) @ U.T


def sa_srrw_asymptotic_covariance(chain_or_P, mu: Tensor | None, alpha: float, H: Tensor,
                                  J: Tensor | None = None, *, beta_exponent: float = 0.8,
                                  regime: str = "i") -> Tensor:
    """Asymptotic covariance of (theta_n - theta*)/sqrt(beta_n) for SA-SRRW.

    .. math::

        J_b V + V J_b^\\top + U = 0, \\quad J_b = J + \\tfrac12 1\\{b = 1\\} I, \\quad
        U = \\sum_{i \\ge 2} c_i(\\alpha) \\frac{1 + l_i}{1 - l_i}
            H^\\top u_i u_i^\\top H,

    with c_i(alpha) = 1 / (alpha (1 + l_i) + 1)^2 in regime (i) (gamma decays slower than
    beta) and c_i = 1 (the alpha = 0 value) in regime (iii).

    Args:
        chain_or_P: the reversible base chain (BaseChain or dense matrix).
        mu: its stationary distribution (None: the chain's ``target``).
        alpha: repellence strength >= 0.
        H: ``(N, D)`` matrix whose row i is H(theta*, i).
        J: ``(D, D)`` Jacobian of the mean field h at theta* (default ``-I``); J_b must be
            Hurwitz.
        beta_exponent: b in (0.5, 1] of beta_n = (n + 1)^{-b}.
        regime: ``"i"`` (a < b) or ``"iii"`` (a > b). Regime (ii) is not implemented.

    References:
        Hu, Doshi, Eun, arXiv 2401.09665.

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.stepping.walks import Graph, BaseChain
        >>> chain = BaseChain.metropolis_hastings(Graph.from_networkx(nx.path_graph(4)))
        >>> H = torch.tensor([[1.0], [0.0], [0.0], [-1.0]])
        >>> v1 = sa_srrw_asymptotic_covariance(chain, None, 1.0, H).item()
        >>> v0 = sa_srrw_asymptotic_covariance(chain, None, 0.0, H).item()
        >>> v1 < v0
        True
    """
    from scipy.linalg import solve_continuous_lyapunov

    alpha = check_nonnegative("alpha", alpha)
    b = check_exponent("beta_exponent", beta_exponent)
    if regime not in ("i", "iii"):
        raise ValueError(f"regime must be 'i' or 'iii', got {regime!r}")
    lam, U = reversible_eigenpairs(chain_or_P, mu)
    lam, U = lam[1:], U[:, 1:]
    H = torch.as_tensor(H, dtype=torch.float64)
    if H.ndim != 2 or H.shape[0] != U.shape[0]:
        raise ValueError(f"H must have shape (N, D) with N = {U.shape[0]}, got {tuple(H.shape)}")
    dim = H.shape[1]
    J = -torch.eye(dim, dtype=torch.float64) if J is None else torch.as_tensor(
        J, dtype=torch.float64)
    if J.shape != (dim, dim):
        raise ValueError(f"J must have shape ({dim}, {dim}), got {tuple(J.shape)}")
    Jb = J + (0.5 if b == 1 else 0.0) * torch.eye(dim, dtype=torch.float64)
    if torch.linalg.eigvals(Jb).real.max() >= 0:
        raise ValueError("J + 1{b=1} I/2 must be Hurwitz (all eigenvalues with real part < 0)")
    c = 1.0 / (alpha * (1 + lam) + 1) ** 2 if regime == "i" else torch.ones_like(lam)
    HU = H.T @ U  # (D, N-1): column i is H^T u_i
    Umat = (HU * (c * (1 + lam) / (1 - lam))) @ HU.T
    V = solve_continuous_lyapunov(Jb.numpy(), -Umat.numpy())
    V = torch.as_tensor(V, dtype=torch.float64)
    return 0.5 * (V + V.T)


@dataclass
class VarianceCheck:
    """One alpha's measured against predicted (asymptotic) variance.

    ``stderr`` is the standard error of ``measured`` over the independent walks.
    """

    alpha: float
    measured: float
    predicted: float
    stderr: float

    @property
    def ratio(self) -> float:
        return self.measured / self.predicted


def measure_srrw_variance(chain: BaseChain, alphas: Sequence[float], *, steps: int,
                          walkers: int, f: Tensor | None = None,
                          gamma_exponent: float = 1.0,
                          generator: torch.Generator | None = None,
                          progress: bool = False) -> list[VarianceCheck]:
    """Measure the variance of (x_n - mu)/sqrt(gamma_n) over ``walkers`` independent SRRWs
    (advanced in lockstep) and compare it with :func:`srrw_asymptotic_covariance`.

    With a test function ``f`` the quantity is the scalar f^T (x_n - mu)/sqrt(gamma_n), the
    error of the estimator f^T x_n of E_mu f, and the prediction is f^T V f; without one it is
    the trace of the covariance, sum_j E[(x_n(j) - mu_j)^2]/gamma_n, against trace V. Walks
    start from mu (start node drawn from mu, x_0 = mu); the deviations are taken about mu.

    .. math::

        \\text{measured} = \\frac{1}{W} \\sum_{w=1}^{W}
            \\frac{(f^\\top (x_n^{(w)} - \\mu))^2}{\\gamma_n}
        \\;\\approx\\; f^\\top V(\\alpha) f

    Args:
        chain: the reversible base chain (its ``target`` is mu).
        alphas: repellence strengths to measure.
        steps: n, the walk length.
        walkers: W, the number of independent walks per alpha.
        f: optional ``(N,)`` test function.
        gamma_exponent: a of gamma_n = (n + 1)^{-a}; 1 is the empirical measure.
        generator: the ``torch.Generator`` every draw comes from.
        progress: show a tqdm bar per alpha.

    Returns:
        one :class:`VarianceCheck` per alpha (``.ratio`` is measured / predicted).

    References:
        Doshi, Hu, Eun, arXiv 2305.05097; Hu, Doshi, Eun, arXiv 2401.09665.

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.stepping.walks import Graph, BaseChain
        >>> chain = BaseChain.metropolis_hastings(Graph.from_networkx(nx.complete_graph(4)))
        >>> out = measure_srrw_variance(chain, [0.0], steps=50, walkers=20,
        ...                             generator=torch.Generator().manual_seed(0))
        >>> out[0].alpha, out[0].predicted > 0
        (0.0, True)
    """
    check_int("steps", steps)
    check_int("walkers", walkers, 2)
    a = check_exponent("gamma_exponent", gamma_exponent)
    generator = make_generator(generator)
    mu = chain.target
    if f is not None:
        f = torch.as_tensor(f, dtype=torch.float64).flatten()
        if f.shape != mu.shape:
            raise ValueError(f"f must have {mu.numel()} entries, got {f.numel()}")
    # gamma_{n+1} = (n + 2)^{-a}: the walk's callable maps n to gamma_{n+1}.
    gamma = None if a == 1 else PowerGamma(a)
    gamma_n = 1.0 / (steps + 1) if a == 1 else (steps + 1.0) ** -a
    out = []
    for alpha in alphas:
        alpha = check_nonnegative("alpha", alpha)
        walk = SelfRepellentWalk(chain, alpha, walkers=walkers, gamma=gamma,
                                 generator=generator)
        for _ in tqdm(range(steps), desc=f"SRRW alpha={alpha:g}", leave=False,
                      disable=not progress):
            walk.step()
        err = (walk.empirical_measure - mu) / math.sqrt(gamma_n)
        V = srrw_asymptotic_covariance(chain, None, alpha, a)
        if f is None:
            samples, predicted = err.pow(2).sum(-1), V.trace()
        else:
            samples, predicted = (err @ f).pow(2), f @ V @ f
        out.append(VarianceCheck(alpha, samples.mean().item(), predicted.item(),
                                 (samples.std() / math.sqrt(walkers)).item()))
    return out


def measure_sa_srrw_covariance(chain: BaseChain, alphas: Sequence[float], centers: Tensor, *,
                               steps: int, walkers: int, gamma_exponent: float = 0.6,
                               beta_exponent: float = 0.8,
                               generator: torch.Generator | None = None,
                               progress: bool = False) -> list[VarianceCheck]:
    """Measure trace Cov((theta_n - theta*)/sqrt(beta_n)) of SA-SRRW on the distributed
    quadratic f_i(theta) = ||theta - c_i||^2 / 2, f = (1/N) sum_i f_i, theta* = mean_i c_i.

    .. math::

        X_{n+1} \\sim K_{X_n,\\cdot}[x_n], \\quad
        x_{n+1} = x_n + \\gamma_{n+1}(\\delta_{X_{n+1}} - x_n), \\quad
        \\theta_{n+1} = \\theta_n + \\beta_{n+1} \\frac{c_{X_{n+1}} - \\theta_n}{N \\mu_{X_{n+1}}}

    with gamma_n = (n+1)^{-a}, beta_n = (n+1)^{-b}; ``walkers`` independent tokens run in
    lockstep from theta_0 = 0. The prediction is :func:`sa_srrw_asymptotic_covariance` with
    H(theta*, i) = (c_i - theta*)/(N mu_i) and J = -I, in regime (i) when a < b and regime
    (iii) when a > b.

    Args:
        chain: the reversible base chain (its ``target`` is mu; importance weights 1/(N mu)).
        alphas: repellence strengths.
        centers: ``(N, D)`` the c_i.
        steps: n.
        walkers: independent runs per alpha.
        gamma_exponent: a in (0.5, 1].
        beta_exponent: b in (0.5, 1], b != a.
        generator: the ``torch.Generator`` every draw comes from.
        progress: show a tqdm bar per alpha.

    References:
        Hu, Doshi, Eun, arXiv 2401.09665.

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.stepping.walks import Graph, BaseChain
        >>> chain = BaseChain.metropolis_hastings(Graph.from_networkx(nx.cycle_graph(5)))
        >>> c = torch.arange(5.0)[:, None]
        >>> out = measure_sa_srrw_covariance(chain, [0.0, 5.0], c, steps=50, walkers=20,
        ...                                  generator=torch.Generator().manual_seed(0))
        >>> [r.alpha for r in out]
        [0.0, 5.0]
    """
    check_int("steps", steps)
    check_int("walkers", walkers, 2)
    a = check_exponent("gamma_exponent", gamma_exponent)
    b = check_exponent("beta_exponent", beta_exponent)
    if a == b:
        raise ValueError("regime (ii) (gamma_exponent == beta_exponent) is not implemented")
    regime = "i" if a < b else "iii"
    generator = make_generator(generator)
    mu = chain.target
    n_nodes = mu.numel()
    centers = torch.as_tensor(centers, dtype=torch.float64)
    if centers.ndim != 2 or centers.shape[0] != n_nodes:
        raise ValueError(f"centers must have shape (N, D) with N = {n_nodes}")
    theta_star = centers.mean(0)
    weight = 1.0 / (n_nodes * mu)
    H = (centers - theta_star) * weight[:, None]
    gamma = None if a == 1 else PowerGamma(a)
    out = []
    for alpha in alphas:
        alpha = check_nonnegative("alpha", alpha)
        walk = SelfRepellentWalk(chain, alpha, walkers=walkers, gamma=gamma,
                                 generator=generator)
        theta = torch.zeros(walkers, centers.shape[1], dtype=torch.float64)
        for n in tqdm(range(steps), desc=f"SA-SRRW alpha={alpha:g}", leave=False,
                      disable=not progress):
            node = walk.step()
            beta = (n + 2.0) ** -b
            theta += (beta * weight[node])[:, None] * (centers[node] - theta)
        beta_n = (steps + 1.0) ** -b
        samples = (theta - theta_star).pow(2).sum(-1) / beta_n
        V = sa_srrw_asymptotic_covariance(chain, None, alpha, H, beta_exponent=b,
                                          regime=regime)
        out.append(VarianceCheck(alpha, samples.mean().item(), V.trace().item(),
                                 (samples.std() / math.sqrt(walkers)).item()))
    return out
