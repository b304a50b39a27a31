r"""Hypothesis strategies for optimization problems whose answers are known.

Each strategy draws a few small *knobs* (dimension, condition number, number of points, a
seed) and hands them to a deterministic builder (:func:`quadratic_problem`,
:func:`logistic_problem`, :func:`laplacian_problem`, :func:`gaussian_mixture`) through
``st.builds``. All randomness inside a builder comes from a ``torch.Generator`` seeded with the
drawn seed, so a failing example shrinks (hypothesis shrinks the knobs) and replays: the
falsifying example is printed as the builder call, e.g. ``quadratic_problem(dim=2,
condition=1.0, mu=1.0, seed=0)``, which can be pasted into a unit test as is.

Every problem is float64 and exposes the same small protocol, which the checks in
:mod:`theory_checks.properties` rely on:

- ``dim``, ``x0`` (the starting point), ``loss(x)`` (differentiable, ``x`` of shape
  ``(dim,)``), ``grad(x)`` (closed form);
- ``x_star`` (the minimizer, or None where there is none), ``f_star`` (the optimal value, or
  the infimum), ``gap(x) = loss(x) - f_star`` and ``distance(x) = ||x - x_star||``;
- ``mu`` and ``L``: strong-convexity and smoothness constants (exact extreme Hessian
  eigenvalues for quadratics, bounds for logistic regression).

This module needs ``hypothesis`` (the ``test`` extra); the builders themselves only need torch
and networkx. Fixed instances are also ``pytest`` fixtures (:mod:`theory_checks.pytest_plugin`);
``tests/test_user_example.py`` shows a user's test written with both.

Example:
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=5, derandomize=True, database=None)
    ... @given(quadratics(dims=(2, 4), conditions=(1.0, 50.0)))
    ... def check(problem):
    ...     assert problem.gap(problem.x_star) == 0.0
    ...     assert problem.L / problem.mu <= 50.0 + 1e-9
    >>> check()
"""

from __future__ import annotations

import math

import networkx as nx
import torch
from hypothesis import strategies as st
from torch import Tensor

from stochstep.samplers.targets import GaussianMixture

__all__ = [
    "QuadraticProblem", "LogisticProblem", "LaplacianProblem",
    "quadratic_problem", "logistic_problem", "laplacian_problem", "gaussian_mixture",
    "quadratics", "logistic_problems", "laplacian_problems", "gaussian_mixtures", "seeds",
]

DTYPE = torch.float64
MAX_SEED = 2 ** 32 - 1
MIN_REG = 1e-6  # smallest nonzero logistic penalty


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _random_rotation(dim: int, gen: torch.Generator) -> Tensor:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DTYPE))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def _start_point(x_star: Tensor, radius: float, gen: torch.Generator) -> Tensor:
    """``x_star`` plus a uniformly random direction of length ``radius``."""
    u = torch.randn(x_star.shape, generator=gen, dtype=DTYPE)
    return x_star + radius * u / u.norm()


def _check_range(name: str, value, *, low: float, integer: bool = False):
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if integer and not (isinstance(lo, int) and isinstance(hi, int)):
        raise ValueError(f"{name} must be an int or a (low, high) pair of ints, got {value!r}")
    if not (low <= lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"{name} must satisfy {low} <= low <= high < inf, got {value!r}")
    return lo, hi


class _Problem:
    """Shared protocol: ``loss``, ``grad``, ``gap``, ``distance`` on float64 vectors."""

    x0: Tensor
    x_star: Tensor | None
    f_star: float
    mu: float
    L: float
    _repr: str

    @property
    def dim(self) -> int:
        return self.x0.shape[0]

    @property
    def condition_number(self) -> float:
        """``L / mu`` (infinite where ``mu = 0``)."""
        return self.L / self.mu if self.mu > 0 else math.inf

    def loss(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def gap(self, x: Tensor) -> float:
        """Optimality gap ``loss(x) - f_star`` as a float."""
        return float(self.loss(x.detach().to(DTYPE))) - self.f_star

    def distance(self, x: Tensor) -> float:
        """``||x - x_star||``; a ``ValueError`` where the problem has no minimizer."""
        if self.x_star is None:
            raise ValueError(f"{self!r} has no minimizer; measure the gap instead")
        return float((x.detach().to(DTYPE) - self.x_star).norm())

    def __repr__(self) -> str:
        return self._repr


class QuadraticProblem(_Problem):
    r"""``f(x) = 1/2 (x - x_star)^T A (x - x_star) + f_star`` with ``A`` symmetric positive
    definite; ``mu`` and ``L`` are its extreme eigenvalues.

    Args:
        A: ``(d, d)`` symmetric positive definite matrix.
        x_star: ``(d,)`` minimizer.
        f_star: optimal value.
        x0: ``(d,)`` starting point.
    """

    def __init__(self, A: Tensor, x_star: Tensor, f_star: float, x0: Tensor):
        self.A = torch.as_tensor(A, dtype=DTYPE)
        self.x_star = torch.as_tensor(x_star, dtype=DTYPE)
        self.f_star = float(f_star)
        self.x0 = torch.as_tensor(x0, dtype=DTYPE)
        self.A = 0.5 * (self.A + self.A.T)
        self.eigenvalues = torch.linalg.eigvalsh(self.A)
        if self.eigenvalues[0] <= 0:
            raise ValueError("A must be positive definite")
        self.mu, self.L = float(self.eigenvalues[0]), float(self.eigenvalues[-1])
        self._repr = f"QuadraticProblem(dim={self.dim}, mu={self.mu:.4g}, L={self.L:.4g})"

    def loss(self, x: Tensor) -> Tensor:
        e = x - self.x_star.to(x.dtype)
        return 0.5 * e @ (self.A.to(x.dtype) @ e) + self.f_star

    def grad(self, x: Tensor) -> Tensor:
        return self.A.to(x.dtype) @ (x - self.x_star.to(x.dtype))

    def gap(self, x: Tensor) -> float:
        # 1/2 e^T A e directly: no cancellation against f_star, accurate down to ~1e-30.
        e = x.detach().to(DTYPE) - self.x_star
        return float(0.5 * e @ (self.A @ e))


class LaplacianProblem(QuadraticProblem):
    r"""A graph Laplacian quadratic, grounded at node 0 so it is strongly convex:

    .. math::
        f(x) = \tfrac12 \sum_{(i, j) \in E} w_{ij}\big((x_i - x_j) - (x^\star_i - x^\star_j)\big)^2
               + \tfrac{a}{2} (x_0 - x^\star_0)^2 + f^\star,

    i.e. ``A = Lap(G) + a e_0 e_0^T``. ``A`` is positive definite exactly when ``G`` is
    connected, so ``mu > 0`` here is a property of the graph. ``graph`` holds the
    ``networkx.Graph`` (edge attribute ``weight``) and ``laplacian`` its Laplacian.
    """

    def __init__(self, graph: nx.Graph, anchor: float, x_star: Tensor, f_star: float,
                 x0: Tensor):
        if not nx.is_connected(graph):
            raise ValueError("graph must be connected")
        n = graph.number_of_nodes()
        lap = torch.as_tensor(nx.laplacian_matrix(graph, nodelist=range(n)).toarray(),
                              dtype=DTYPE)
        a = torch.zeros(n, n, dtype=DTYPE)
        a[0, 0] = anchor
        self.graph, self.anchor, self.laplacian = graph, float(anchor), lap
        super().__init__(lap + a, x_star, f_star, x0)


class LogisticProblem(_Problem):
    r"""Binary logistic regression with labels in ``{-1, +1}`` and an L2 penalty:

    .. math::
        f(w) = \frac1n \sum_i \log\big(1 + e^{-y_i x_i^\top w}\big) + \frac{\lambda}{2}\|w\|^2.

    ``L = ||X||_2^2 / (4n) + lambda`` bounds the Hessian (the logistic curvature is at most
    1/4); ``mu = lambda`` is the global strong-convexity constant. The minimizer is computed by
    damped Newton to rounding level when it exists (``lambda > 0``, or non-separable
    data); for separable data and ``lambda = 0`` there is none: ``x_star`` is None and
    ``f_star = 0`` is the infimum.

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` labels in ``{-1, +1}``.
        reg: ``lambda >= 0``.
        x0: ``(d,)`` starting point.
        separable: whether the data is linearly separable (as constructed).
    """

    def __init__(self, X: Tensor, y: Tensor, reg: float, x0: Tensor, *, separable: bool):
        self.X, self.y = torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
        self.reg, self.separable = float(reg), bool(separable)
        self.x0 = torch.as_tensor(x0, dtype=DTYPE)
        n = self.X.shape[0]
        self.L = float(torch.linalg.matrix_norm(self.X, ord=2) ** 2 / (4 * n)) + self.reg
        self.mu = self.reg
        if self.reg > 0 or not self.separable:
            self.x_star = self._newton()
            self.f_star = float(self.loss(self.x_star))
        else:
            self.x_star, self.f_star = None, 0.0
        self._repr = (f"LogisticProblem(n={n}, dim={self.dim}, reg={self.reg:.4g}, "
                      f"separable={self.separable})")

    def loss(self, x: Tensor) -> Tensor:
        margins = self.y.to(x.dtype) * (self.X.to(x.dtype) @ x)
        return (torch.nn.functional.softplus(-margins).mean()
                + 0.5 * self.reg * (x * x).sum())

    def grad(self, x: Tensor) -> Tensor:
        X, y = self.X.to(x.dtype), self.y.to(x.dtype)
        s = torch.sigmoid(-y * (X @ x))
        return -(X.T @ (y * s)) / X.shape[0] + self.reg * x

    def hessian(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.X @ x.to(DTYPE))
        d = p * (1 - p)
        eye = torch.eye(self.dim, dtype=DTYPE)
        return (self.X.T * d) @ self.X / self.X.shape[0] + self.reg * eye

    def _newton(self, max_iter: int = 100) -> Tensor:
        """Damped Newton (Armijo backtracking) far out, full steps once the gradient is small;
        runs until the gradient stops shrinking, i.e. to rounding level (~1e-16)."""
        w = torch.zeros(self.dim, dtype=DTYPE)
        g = self.grad(w)
        for _ in range(max_iter):
            step = torch.linalg.solve(self.hessian(w), g)
            f0, t, accepted = float(self.loss(w)), 1.0, False
            while t > 1e-10 and not accepted:
                w_new = w - t * step
                g_new = self.grad(w_new)
                if g.norm() < 1e-6:  # local regime: full steps, judged by the gradient
                    accepted = bool(g_new.norm() < g.norm())
                    break
                accepted = float(self.loss(w_new)) <= f0 - 0.25 * t * float(g @ step)
                t *= 0.5
            if not accepted:  # no more progress: the gradient is at rounding level
                break
            w, g = w_new, g_new
        if g.norm() > 1e-9:
            raise RuntimeError(f"Newton did not converge: |grad| = {float(g.norm())}")
        return w


# -- deterministic builders: knobs in, problem out ----------------------------------------------
def quadratic_problem(dim: int, condition: float, mu: float = 1.0, seed: int = 0,
                      radius: float = 1.0) -> QuadraticProblem:
    r"""A strongly convex quadratic with eigenvalues log-spaced in ``[mu, condition * mu]``.

    ``A = Q diag(lambda) Q^T`` with ``Q`` a random rotation; ``x_star`` is standard normal,
    ``f_star`` uniform in ``[-1, 1]``, and ``x0`` lies at distance ``radius`` from ``x_star``
    in a random direction; all drawn from ``torch.Generator().manual_seed(seed)``.

    Args:
        dim: dimension ``>= 2`` (``>= 1`` when ``condition == 1``).
        condition: ``kappa = L / mu >= 1``.
        mu: the smallest eigenvalue ``> 0``.
        seed: seed of the generator everything is drawn from.
        radius: ``||x0 - x_star||``.

    Example:
        >>> p = quadratic_problem(dim=3, condition=10.0, seed=0)
        >>> round(p.mu, 12), round(p.L, 12), p.gap(p.x_star), round(p.distance(p.x0), 12)
        (1.0, 10.0, 0.0, 1.0)
    """
    if dim < 1 or (dim < 2 and condition != 1.0):
        raise ValueError(f"dim must be >= 2 (or 1 with condition 1), got {dim}")
    if not (condition >= 1.0 and math.isfinite(condition)):
        raise ValueError(f"condition must be a finite number >= 1, got {condition}")
    if not mu > 0:
        raise ValueError(f"mu must be > 0, got {mu}")
    gen = _generator(seed)
    lam = torch.logspace(math.log10(mu), math.log10(mu * condition), dim, dtype=DTYPE)
    lam[0], lam[-1] = mu, mu * condition  # exact ends
    q = _random_rotation(dim, gen)
    x_star = torch.randn(dim, generator=gen, dtype=DTYPE)
    f_star = float(2 * torch.rand((), generator=gen, dtype=DTYPE) - 1)
    p = QuadraticProblem((q * lam) @ q.T, x_star, f_star, _start_point(x_star, radius, gen))
    p.mu, p.L = float(mu), float(mu * condition)  # exact by construction (eigvalsh: ~1e-15)
    p._repr = (f"quadratic_problem(dim={dim}, condition={condition!r}, mu={mu!r}, "
               f"seed={seed}, radius={radius!r})")
    return p


def logistic_problem(n: int, dim: int, reg: float = 0.0, separable: bool = False,
                     seed: int = 0, radius: float = 1.0) -> LogisticProblem:
    r"""Logistic regression on Gaussian features.

    Labels are ``sign(X w_true)``. Separable problems stop there. Non-separable ones flip each
    label with probability 0.2 and repeat the first ``dim`` points with the opposite label:
    then ``{y_i x_i}`` contains ``+-v`` for a basis ``v``, so 0 is interior to their convex
    hull and the unregularized loss is coercive and strictly convex (a unique minimizer
    exists even for ``reg = 0``). ``x0`` lies at distance ``radius`` from the minimizer (from
    the origin when there is none).

    Args:
        n: number of random points ``>= dim`` (non-separable problems add ``dim`` more).
        dim: number of features ``>= 1``.
        reg: L2 penalty: ``0`` or ``lambda >= 1e-6`` (smaller ones put the minimizer of
            separable data too far out for a float64 Newton solve to be trusted).
        separable: build linearly separable data.
        seed: seed of the generator everything is drawn from.
        radius: distance of ``x0`` from the minimizer.

    Example:
        >>> p = logistic_problem(n=20, dim=3, reg=0.1, seed=0)
        >>> float(p.grad(p.x_star).norm()) < 1e-12, p.mu, p.L >= p.mu
        (True, 0.1, True)
        >>> logistic_problem(n=20, dim=3, separable=True).x_star is None
        True
    """
    if dim < 1 or n < dim:
        raise ValueError(f"need dim >= 1 and n >= dim, got n={n}, dim={dim}")
    if not (reg == 0 or MIN_REG <= reg < math.inf):
        raise ValueError(f"reg must be 0 or a finite number >= {MIN_REG}, got {reg}")
    gen = _generator(seed)
    X = torch.randn(n, dim, generator=gen, dtype=DTYPE)
    w_true = torch.randn(dim, generator=gen, dtype=DTYPE)
    y = torch.where(X @ w_true >= 0, 1.0, -1.0).to(DTYPE)
    if not separable:
        flip = torch.rand(n, generator=gen, dtype=DTYPE) < 0.2
        y = torch.where(flip, -y, y)
        X, y = torch.cat([X, X[:dim]]), torch.cat([y, -y[:dim]])
    u = torch.randn(dim, generator=gen, dtype=DTYPE)
    p = LogisticProblem(X, y, reg, torch.zeros(dim, dtype=DTYPE), separable=separable)
    p.x0 = (p.x_star if p.x_star is not None else p.x0) + radius * u / u.norm()
    p._repr = (f"logistic_problem(n={n}, dim={dim}, reg={reg!r}, separable={separable}, "
               f"seed={seed}, radius={radius!r})")
    return p


def laplacian_problem(n_nodes: int, edge_prob: float = 0.3, anchor: float = 1.0,
                      seed: int = 0, radius: float = 1.0) -> LaplacianProblem:
    r"""A grounded-Laplacian quadratic on a random graph that is connected by construction.

    Node ``i > 0`` is joined to a uniformly chosen earlier node (a random recursive tree, so
    the graph is connected), then every other pair is joined with probability ``edge_prob``;
    edge weights are uniform in ``[0.5, 2]``. See :class:`LaplacianProblem`.

    Args:
        n_nodes: number of nodes ``>= 1`` (the dimension).
        edge_prob: probability of each extra edge, in ``[0, 1]``.
        anchor: grounding weight ``a > 0`` on node 0.
        seed: seed of the generator everything is drawn from.
        radius: ``||x0 - x_star||``.

    Example:
        >>> p = laplacian_problem(n_nodes=6, seed=1)
        >>> import networkx as nx
        >>> nx.is_connected(p.graph), p.mu > 0, p.dim
        (True, True, 6)
    """
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    if not 0.0 <= edge_prob <= 1.0:
        raise ValueError(f"edge_prob must be in [0, 1], got {edge_prob}")
    if not anchor > 0:
        raise ValueError(f"anchor must be > 0, got {anchor}")
    gen = _generator(seed)
    g = nx.Graph()
    g.add_nodes_from(range(n_nodes))

    def weight() -> float:
        return float(0.5 + 1.5 * torch.rand((), generator=gen, dtype=DTYPE))

    for i in range(1, n_nodes):
        j = int(torch.randint(i, (), generator=gen))
        g.add_edge(i, j, weight=weight())
    for i in range(n_nodes):
        for j in range(i + 1, n_nodes):
            if not g.has_edge(i, j) and float(torch.rand((), generator=gen)) < edge_prob:
                g.add_edge(i, j, weight=weight())
    x_star = torch.randn(n_nodes, generator=gen, dtype=DTYPE)
    f_star = float(2 * torch.rand((), generator=gen, dtype=DTYPE) - 1)
    p = LaplacianProblem(g, anchor, x_star, f_star, _start_point(x_star, radius, gen))
    p._repr = (f"laplacian_problem(n_nodes={n_nodes}, edge_prob={edge_prob!r}, "
               f"anchor={anchor!r}, seed={seed}, radius={radius!r})")
    return p


def gaussian_mixture(n_components: int, dim: int, spread: float = 3.0, isotropic: bool = True,
                     seed: int = 0) -> GaussianMixture:
    r"""A :class:`samplers.targets.GaussianMixture` with random means, covariances and weights.

    Means are ``N(0, spread^2 I)``; covariances are isotropic with variance uniform in
    ``[0.25, 1]``, or ``Q diag(lambda) Q^T`` with a random rotation and ``lambda`` uniform in
    ``[0.25, 1]``; weights are uniform in ``[0.5, 1.5]`` before normalisation.

    Args:
        n_components: ``K >= 1``.
        dim: ``d >= 1``.
        spread: standard deviation of the means.
        isotropic: isotropic (``(K,)`` variances) or full covariances.
        seed: seed of the generator everything is drawn from.

    Example:
        >>> gm = gaussian_mixture(n_components=3, dim=2, seed=0)
        >>> gm.n_components, gm.dim, round(float(gm.weights.sum()), 12)
        (3, 2, 1.0)
    """
    if n_components < 1 or dim < 1:
        raise ValueError(f"need n_components >= 1 and dim >= 1, got {n_components}, {dim}")
    gen = _generator(seed)
    means = spread * torch.randn(n_components, dim, generator=gen, dtype=DTYPE)
    if isotropic:
        covs = 0.25 + 0.75 * torch.rand(n_components, generator=gen, dtype=DTYPE)
    else:
        covs = torch.stack([
            (q * (0.25 + 0.75 * torch.rand(dim, generator=gen, dtype=DTYPE))) @ q.T
            for q in (_random_rotation(dim, gen) for _ in range(n_components))])
        covs = 0.5 * (covs + covs.transpose(-1, -2))
    weights = 0.5 + torch.rand(n_components, generator=gen, dtype=DTYPE)
    return GaussianMixture(means, covs, weights)


# -- strategies ----------------------------------------------------------------------------------
def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator().manual_seed``; shrink towards 0."""
    return st.integers(min_value=0, max_value=MAX_SEED)


def _floats(lo: float, hi: float, *, log: bool = False) -> st.SearchStrategy[float]:
    if lo == hi:
        return st.just(float(lo))
    if log:  # draw the exponent, so condition numbers spread over decades and shrink to lo
        return st.floats(math.log(lo), math.log(hi)).map(
            lambda t: float(min(max(math.exp(t), lo), hi)))
    return st.floats(float(lo), float(hi), allow_nan=False, allow_infinity=False)


def quadratics(dims: int | tuple[int, int] = (2, 8),
               conditions: float | tuple[float, float] = (1.0, 100.0),
               mu: float | tuple[float, float] = 1.0,
               radius: float = 1.0) -> st.SearchStrategy[QuadraticProblem]:
    """Strongly convex quadratics (see :func:`quadratic_problem`).

    Args:
        dims: dimension, or an inclusive ``(low, high)`` range (``low >= 2``).
        conditions: condition number ``L / mu``, or a range; drawn log-uniformly.
        mu: smallest eigenvalue, or a range; drawn log-uniformly.
        radius: ``||x0 - x_star||``.

    Example:
        >>> from hypothesis import given
        >>> @given(quadratics(dims=3, conditions=10.0))
        ... def check(problem):
        ...     assert abs(problem.L / problem.mu - 10.0) < 1e-9
        >>> check()
    """
    d_lo, d_hi = _check_range("dims", dims, low=1, integer=True)
    c_lo, c_hi = _check_range("conditions", conditions, low=1.0)
    m_lo, m_hi = _check_range("mu", mu, low=1e-300)
    if d_lo < 2 and c_hi > 1.0:
        raise ValueError("dims must start at 2 unless conditions is 1")
    return st.builds(quadratic_problem, dim=st.integers(d_lo, d_hi),
                     condition=_floats(c_lo, c_hi, log=True), mu=_floats(m_lo, m_hi, log=True),
                     seed=seeds(), radius=st.just(float(radius)))


def logistic_problems(n: int | tuple[int, int] = (10, 40), dims: int | tuple[int, int] = (1, 5),
                      regs: float | tuple[float, float] = (0.01, 1.0),
                      separable: bool | None = None,
                      radius: float = 1.0) -> st.SearchStrategy[LogisticProblem]:
    """Logistic regression problems (see :func:`logistic_problem`).

    Args:
        n: number of random points, or a range whose low end is at least ``dims``' high end.
        dims: number of features, or a range.
        regs: L2 penalty, or a range, drawn log-uniformly; a range from ``0`` draws either
            ``0`` or from ``[min(1e-5, high), high]``. With ``reg = 0`` and separable data
            ``x_star`` is None.
        separable: True, False, or None to draw both.
        radius: distance of ``x0`` from the minimizer.
    """
    n_lo, n_hi = _check_range("n", n, low=1, integer=True)
    d_lo, d_hi = _check_range("dims", dims, low=1, integer=True)
    r_lo, r_hi = _check_range("regs", regs, low=0.0)
    sep = st.booleans() if separable is None else st.just(bool(separable))
    if n_lo < d_hi:
        raise ValueError(f"need n >= dims: the smallest n ({n_lo}) is below the largest dim "
                         f"({d_hi})")
    if r_lo > 0:
        reg = _floats(r_lo, r_hi, log=True)
    else:  # 0 itself, or log-uniform from MIN_REG up: tiny penalties are numerically ill-posed
        reg = st.just(0.0) if r_hi == 0 else st.one_of(
            st.just(0.0), _floats(min(MIN_REG * 10, r_hi), r_hi, log=True))
    return st.builds(logistic_problem, n=st.integers(n_lo, n_hi), dim=st.integers(d_lo, d_hi),
                     reg=reg, separable=sep, seed=seeds(),
                     radius=st.just(float(radius)))


def laplacian_problems(nodes: int | tuple[int, int] = (2, 10),
                       edge_probs: float | tuple[float, float] = (0.0, 0.5),
                       anchor: float = 1.0,
                       radius: float = 1.0) -> st.SearchStrategy[LaplacianProblem]:
    """Grounded-Laplacian quadratics on connected random graphs (see
    :func:`laplacian_problem`).

    Args:
        nodes: number of nodes, or a range.
        edge_probs: probability of each extra edge, or a range.
        anchor: grounding weight on node 0.
        radius: ``||x0 - x_star||``.
    """
    n_lo, n_hi = _check_range("nodes", nodes, low=1, integer=True)
    p_lo, p_hi = _check_range("edge_probs", edge_probs, low=0.0)
    return st.builds(laplacian_problem, n_nodes=st.integers(n_lo, n_hi),
                     edge_prob=_floats(p_lo, min(p_hi, 1.0)), anchor=st.just(float(anchor)),
                     seed=seeds(), radius=st.just(float(radius)))


def gaussian_mixtures(components: int | tuple[int, int] = (1, 4),
                      dims: int | tuple[int, int] = (1, 3),
                      spread: float = 3.0,
                      isotropic: bool | None = None) -> st.SearchStrategy[GaussianMixture]:
    """Gaussian mixtures (see :func:`gaussian_mixture`).

    Args:
        components: number of components, or a range.
        dims: dimension, or a range.
        spread: standard deviation of the means.
        isotropic: True, False, or None to draw both.
    """
    k_lo, k_hi = _check_range("components", components, low=1, integer=True)
    d_lo, d_hi = _check_range("dims", dims, low=1, integer=True)
    iso = st.booleans() if isotropic is None else st.just(bool(isotropic))
    return st.builds(gaussian_mixture, n_components=st.integers(k_lo, k_hi),
                     dim=st.integers(d_lo, d_hi), spread=st.just(float(spread)),
                     isotropic=iso, seed=seeds())
