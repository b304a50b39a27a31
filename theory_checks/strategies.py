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

The stochastic problems (:func:`noisy_quadratic_problem`, :func:`minibatch_least_squares_problem`,
:func:`minibatch_logistic_problem`, the strategy :func:`noisy_quadratics`) add an oracle on
their own ``torch.Generator``: ``stochastic_loss(x)`` makes a fresh draw (noise or minibatch)
per row of ``x``, so a ``(runs, dim)`` parameter holds independent runs, and
``problem.closure(x, optimizer)`` is the closure to pass to ``optimizer.step``, one draw per
call (an optimizer that calls it several times per step sees a different sample each time).
They also carry the exact ``H`` and gradient-noise covariance ``noise_cov`` at ``x_star`` that
:mod:`theory_checks.stochastic` needs.

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
    "NoisyQuadraticProblem", "MinibatchLeastSquaresProblem", "MinibatchLogisticProblem",
    "noisy_quadratic_problem", "minibatch_least_squares_problem", "minibatch_logistic_problem",
    "noisy_quadratics", "oracle_seed",
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


# -- stochastic problems: an oracle that draws from the problem's own generator -----------------
def oracle_seed(seed: int) -> int:
    """The seed of a stochastic problem's oracle: ``(seed * 0x9E3779B1 + 0x632BE5AB) mod
    2**32``, a bijection of 32-bit seeds that moves small seeds far away. (Not ``seed +
    2**32``: torch's CPU generator keeps only the low 32 bits of a seed, so that would replay
    the stream of ``seed``, and an optimizer seeded with the same small number would draw the
    very noise of the oracle.)"""
    return (int(seed) * 0x9E3779B1 + 0x632BE5AB) % 2 ** 32


def _oracle_generator(seed: int) -> torch.Generator:
    return _generator(oracle_seed(seed))


class _StochasticOracle:
    r"""What the stochastic problems share: the oracle and how an optimizer runs it.

    The oracle acts on ``x`` of shape ``(dim,)`` or on a batch ``(R, dim)`` of ``R`` independent
    runs: :meth:`stochastic_loss` makes one fresh draw per row (noise, or a minibatch) from
    :attr:`generator` and returns the *sum* over rows of a loss whose gradient in row ``r`` is
    that row's stochastic gradient, so one optimizer instance on one ``(R, dim)`` parameter
    advances ``R`` independent runs (valid for optimizers that act coordinate by coordinate:
    SGD, momentum, Adam, SGLD, ...; not for ones that use norms of the whole parameter).
    :meth:`closure` wraps it for ``optimizer.step(closure)``; every call of the closure makes a
    new draw, so an optimizer that calls it several times per step (line searches, L-BFGS,
    extragradient) sees a different sample each time.

    Exact quantities for the properties of :mod:`theory_checks.stochastic`: ``H`` (the Hessian
    at ``x_star``), ``noise_cov`` (the covariance of one stochastic gradient at ``x_star``),
    and :meth:`noise_covariance_given` (the covariance of the gradient noise at ``x_star + e``
    averaged over a zero-mean ``e`` with second moment ``S`` drawn independently of the
    oracle), where it is known in closed form.
    """

    generator: torch.Generator
    H: Tensor
    noise_cov: Tensor

    def reseed(self, seed: int):
        """Restart the oracle's generator at :func:`oracle_seed` ``(seed)`` (the problem itself
        is unchanged); returns the problem."""
        self.generator = _oracle_generator(seed)
        return self

    def stochastic_loss(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def closure(self, x: Tensor, optimizer: torch.optim.Optimizer):
        """``optimizer.step``'s closure on the parameter ``x``: zero the gradients, draw a fresh
        :meth:`stochastic_loss`, backpropagate, return the loss."""

        def closure():
            optimizer.zero_grad()
            loss = self.stochastic_loss(x)
            loss.backward()
            return loss

        return closure

    def noise_covariance_given(self, S: Tensor) -> Tensor:
        raise ValueError(f"{self!r}: its gradient noise depends on x nonlinearly, so it has no "
                         "closed-form noise covariance away from x_star")


def _psd_root(name: str, cov: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semidefinite matrix (ValueError if not)."""
    cov = torch.as_tensor(cov, dtype=DTYPE)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not torch.isfinite(cov).all():
        raise ValueError(f"{name} must be a finite square matrix, got shape {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.T, rtol=1e-12, atol=1e-14):
        raise ValueError(f"{name} must be symmetric")
    lam, q = torch.linalg.eigh(cov)
    if lam[0] < -1e-12 * max(float(lam[-1]), 1.0):
        raise ValueError(f"{name} must be positive semidefinite, smallest eigenvalue "
                         f"{float(lam[0]):.3g}")
    return (q * lam.clamp(min=0).sqrt()) @ q.T


class NoisyQuadraticProblem(_StochasticOracle, QuadraticProblem):
    r"""A quadratic with additive Gaussian gradient noise of known covariance :math:`\Sigma`:

    .. math::
        f(x) = \tfrac12 (x - x^\star)^\top H (x - x^\star) + f^\star, \qquad
        g(x) = H (x - x^\star) + \xi, \quad \xi \sim N(0, \Sigma),

    with :math:`\xi` drawn from ``generator`` (fresh at each oracle call). The stochastic loss
    whose gradient is :math:`g` is :math:`f(x) + \xi^\top (x - x^\star)` (unbiased for
    :math:`f`). ``noise_cov`` is :math:`\Sigma` everywhere (the noise does not depend on
    :math:`x`).

    Args:
        A: ``H``, ``(d, d)`` symmetric positive definite.
        x_star: ``(d,)`` minimizer.
        f_star: optimal value.
        x0: ``(d,)`` starting point.
        noise_cov: :math:`\Sigma`, ``(d, d)`` symmetric positive semidefinite.
        generator: the oracle's ``torch.Generator``.
    """

    def __init__(self, A: Tensor, x_star: Tensor, f_star: float, x0: Tensor, noise_cov: Tensor,
                 generator: torch.Generator):
        super().__init__(A, x_star, f_star, x0)
        self.noise_root = _psd_root("noise_cov", noise_cov)
        if self.noise_root.shape != self.A.shape:
            raise ValueError(f"noise_cov must be {tuple(self.A.shape)}, got "
                             f"{tuple(self.noise_root.shape)}")
        self.noise_cov = torch.as_tensor(noise_cov, dtype=DTYPE)
        self.generator = generator

    #: the gradient noise is Gaussian (the property checks then know the law of the run exactly)
    gaussian_noise = True

    @property
    def H(self) -> Tensor:
        return self.A

    def _noise(self, x: Tensor) -> Tensor:
        z = torch.randn(x.shape, generator=self.generator, dtype=DTYPE)
        return (z @ self.noise_root).to(x.dtype)  # noise_root is symmetric

    def stochastic_grad(self, x: Tensor) -> Tensor:
        """One draw of :math:`g(x)` per row of ``x`` (no autograd)."""
        e = x.detach() - self.x_star.to(x.dtype)
        return e @ self.A.to(x.dtype) + self._noise(x)  # A is symmetric

    def stochastic_loss(self, x: Tensor) -> Tensor:
        e = x - self.x_star.to(x.dtype)
        curvature = 0.5 * ((e @ self.A.to(x.dtype)) * e).sum()
        return curvature + (self._noise(x) * e).sum() + self.f_star * (x.numel() // self.dim)

    def noise_covariance_given(self, S: Tensor) -> Tensor:
        return self.noise_cov


def noisy_quadratic_problem(dim: int, condition: float, noise: float | Tensor = 1.0,
                            seed: int = 0, mu: float = 1.0,
                            radius: float = 1.0) -> NoisyQuadraticProblem:
    r"""A :func:`quadratic_problem` with additive Gaussian gradient noise, covariance
    :math:`\Sigma` = ``noise * I`` (``noise`` is the variance per coordinate) or a given matrix.

    .. math::
        g(x) = H (x - x^\star) + \xi, \qquad \xi \sim N(0, \Sigma).

    The quadratic is exactly ``quadratic_problem(dim, condition, mu, seed, radius)``; the
    oracle's generator is seeded with :func:`oracle_seed` ``(seed)`` (a stream apart from the
    one the problem was drawn from, and the whole run replays from ``seed``; ``reseed``
    restarts it).

    Args:
        dim: dimension ``>= 2`` (``>= 1`` when ``condition == 1``).
        condition: ``L / mu >= 1``.
        noise: the variance ``>= 0`` of each coordinate of :math:`\xi`, or :math:`\Sigma`
            itself, a ``(dim, dim)`` symmetric positive semidefinite matrix.
        seed: seed of the generator everything is drawn from.
        mu: the smallest eigenvalue ``> 0``.
        radius: ``||x0 - x_star||``.

    Example:
        >>> import torch
        >>> p = noisy_quadratic_problem(dim=3, condition=10.0, noise=0.25, seed=0)
        >>> g = p.stochastic_grad(p.x_star.expand(20000, 3))
        >>> torch.allclose(g.T.cov(), 0.25 * torch.eye(3, dtype=torch.float64), atol=0.02)
        True
    """
    q = quadratic_problem(dim, condition, mu=mu, seed=seed, radius=radius)
    if isinstance(noise, Tensor):
        cov = noise.to(DTYPE)
    else:
        if not (isinstance(noise, (int, float)) and not isinstance(noise, bool)
                and 0 <= noise < math.inf):
            raise ValueError(f"noise must be a finite variance >= 0 or a (dim, dim) covariance "
                             f"matrix, got {noise!r}")
        cov = float(noise) * torch.eye(dim, dtype=DTYPE)
    p = NoisyQuadraticProblem(q.A, q.x_star, q.f_star, q.x0, cov, _oracle_generator(seed))
    p.mu, p.L = q.mu, q.L
    shown = f"{float(noise)!r}" if not isinstance(noise, Tensor) else "<matrix>"
    p._repr = (f"noisy_quadratic_problem(dim={dim}, condition={condition!r}, noise={shown}, "
               f"seed={seed}, mu={mu!r}, radius={radius!r})")
    return p


def _minibatch_indices(n: int, runs: int, batch_size: int, replacement: bool,
                       generator: torch.Generator) -> Tensor:
    """``(runs, batch_size)`` indices into ``range(n)``: uniform with replacement, or a
    uniformly random subset per run (the first ``batch_size`` of a random permutation)."""
    if replacement:
        return torch.randint(n, (runs, batch_size), generator=generator)
    return torch.rand(runs, n, generator=generator).argsort(dim=1)[:, :batch_size]


def _minibatch_factor(n: int, batch_size: int, replacement: bool) -> float:
    """Covariance of a minibatch mean over the population covariance: ``1/b`` with
    replacement, ``(n - b) / (b (n - 1))`` without (the finite-population correction)."""
    if replacement:
        return 1.0 / batch_size
    return (n - batch_size) / (batch_size * (n - 1)) if n > 1 else 0.0


class _Minibatch(_StochasticOracle):
    """Minibatch sampling shared by the finite-sum problems: ``batch_size`` points per draw,
    with or without replacement, from :attr:`generator`."""

    X: Tensor
    y: Tensor
    reg: float
    batch_size: int
    replacement: bool

    def _setup_sampling(self, batch_size: int, replacement: bool, generator: torch.Generator):
        n = self.X.shape[0]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1 \
                or (not replacement and batch_size > n):
            raise ValueError(f"batch_size must be an integer in [1, n = {n}] (any integer >= 1 "
                             f"with replacement), got {batch_size!r}")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement must be True or False, got {replacement!r}")
        self.batch_size, self.replacement, self.generator = batch_size, replacement, generator

    def _batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The rows ``x`` as ``(R, d)`` and each row's minibatch ``(R, b, d)``, ``(R, b)``."""
        rows = x.reshape(-1, self.dim)
        idx = _minibatch_indices(self.X.shape[0], rows.shape[0], self.batch_size,
                                 self.replacement, self.generator)
        return rows, self.X.to(x.dtype)[idx], self.y.to(x.dtype)[idx]

    def per_sample_grads(self, x: Tensor) -> Tensor:
        """``(n, d)``: the gradient of each summand at ``x`` (penalty included)."""
        raise NotImplementedError

    def gradient_noise_covariance(self, batch_size: int | None = None,
                                  replacement: bool | None = None) -> Tensor:
        r"""Covariance of the minibatch gradient at ``x_star``: with per-sample gradients
        :math:`g_i` (mean zero there), :math:`C = \frac1n \sum_i g_i g_i^\top` times ``1/b``
        (with replacement) or :math:`(n - b) / (b (n - 1))` (without). Defaults: the problem's
        own ``batch_size`` and ``replacement``."""
        b = self.batch_size if batch_size is None else batch_size
        rep = self.replacement if replacement is None else replacement
        g = self.per_sample_grads(self.x_star)
        g = g - g.mean(0)  # exactly zero mean at x_star, up to rounding
        return _minibatch_factor(self.X.shape[0], b, rep) * (g.T @ g) / g.shape[0]


class MinibatchLeastSquaresProblem(_Minibatch, QuadraticProblem):
    r"""Finite-sum least squares with minibatch gradients:

    .. math::
        f(x) = \frac{1}{2n} \sum_{i=1}^n (a_i^\top x - y_i)^2 + \frac{\lambda}{2}\|x\|^2
             = \tfrac12 (x - x^\star)^\top H (x - x^\star) + f^\star,
        \qquad H = \tfrac1n A^\top A + \lambda I,

    and the oracle :math:`g_B(x) = \frac1b \sum_{i \in B} a_i (a_i^\top x - y_i) + \lambda x`
    on a minibatch :math:`B` of ``batch_size`` points drawn from ``generator`` (with or
    without replacement). Its noise :math:`g_B(x) - \nabla f(x) = (H_B - H_0)\,e +
    (g_B(x^\star) - 0)` with :math:`e = x - x^\star`, :math:`H_B` the batch mean of
    :math:`h_i = a_i a_i^\top` and :math:`H_0 = \frac1n A^\top A`, grows with :math:`e`; for a
    zero-mean :math:`e` with second moment :math:`S` independent of the batch its covariance
    is

    .. math::
        \Sigma(S) = \Sigma^\star + c_b\, \frac1n \sum_i (h_i - H_0)\, S\, (h_i - H_0),

    with :math:`\Sigma^\star` = ``noise_cov`` and :math:`c_b` the minibatch factor (``1/b``, or
    :math:`(n - b)/(b (n - 1))` without replacement); the cross terms vanish because
    :math:`E e = 0`. It is a :class:`QuadraticProblem` (``A`` is :math:`H`).

    Args:
        X: ``(n, d)`` rows :math:`a_i`.
        y: ``(n,)`` targets.
        reg: :math:`\lambda \ge 0` (``X`` must have rank ``d`` when it is 0).
        batch_size: ``b``.
        replacement: sample with replacement or not.
        x0: ``(d,)`` starting point.
        generator: the oracle's ``torch.Generator``.
    """

    def __init__(self, X: Tensor, y: Tensor, reg: float, batch_size: int, replacement: bool,
                 x0: Tensor, generator: torch.Generator):
        self.X, self.y = torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
        self.reg = float(reg)
        n, d = self.X.shape
        self.gram = self.X.T @ self.X / n
        H = self.gram + self.reg * torch.eye(d, dtype=DTYPE)
        x_star = torch.linalg.solve(H, self.X.T @ self.y / n)
        r = self.X @ x_star - self.y
        f_star = float(0.5 * (r @ r) / n + 0.5 * self.reg * (x_star @ x_star))
        super().__init__(H, x_star, f_star, x0)
        self._setup_sampling(batch_size, replacement, generator)
        self.noise_cov = self.gradient_noise_covariance()

    @property
    def H(self) -> Tensor:
        return self.A

    def per_sample_grads(self, x: Tensor) -> Tensor:
        return self.X * (self.X @ x - self.y)[:, None] + self.reg * x

    def stochastic_loss(self, x: Tensor) -> Tensor:
        rows, a, y = self._batch(x)
        r = torch.einsum("rbd,rd->rb", a, rows) - y
        return 0.5 * (r * r).mean(1).sum() + 0.5 * self.reg * (rows * rows).sum()

    def noise_covariance_given(self, S: Tensor) -> Tensor:
        S = torch.as_tensor(S, dtype=DTYPE)
        dev = self.X[:, :, None] * self.X[:, None, :] - self.gram  # h_i - H_0, (n, d, d)
        spread = (dev @ S @ dev).mean(0)
        factor = _minibatch_factor(self.X.shape[0], self.batch_size, self.replacement)
        return self.noise_cov + factor * spread


class MinibatchLogisticProblem(_Minibatch, LogisticProblem):
    r"""Logistic regression (:class:`LogisticProblem`) with minibatch gradients of
    ``batch_size`` points drawn from ``generator``, with or without replacement:

    .. math::
        g_B(w) = \frac1b \sum_{i \in B} \big(-y_i x_i\, \sigma(-y_i x_i^\top w)\big)
                 + \lambda w.

    Exact at the minimizer: ``H`` (the Hessian at ``x_star``) and ``noise_cov`` (the
    minibatch gradient's covariance there, :meth:`gradient_noise_covariance`). Away from
    ``x_star`` the noise depends on ``w`` nonlinearly: no closed-form noise ball.

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` labels in ``{-1, +1}``.
        reg: :math:`\lambda \ge 0`; a minimizer must exist.
        batch_size: ``b``.
        replacement: sample with replacement or not.
        x0: ``(d,)`` starting point.
        generator: the oracle's ``torch.Generator``.
        separable: whether the data is linearly separable.
    """

    def __init__(self, X: Tensor, y: Tensor, reg: float, batch_size: int, replacement: bool,
                 x0: Tensor, generator: torch.Generator, *, separable: bool):
        super().__init__(X, y, reg, x0, separable=separable)
        if self.x_star is None:
            raise ValueError("a minibatch logistic problem needs a minimizer: reg > 0 or "
                             "non-separable data")
        self._setup_sampling(batch_size, replacement, generator)
        self.H = self.hessian(self.x_star)
        self.noise_cov = self.gradient_noise_covariance()

    def per_sample_grads(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(-self.y * (self.X @ x))
        return -self.X * (self.y * s)[:, None] + self.reg * x

    def stochastic_loss(self, x: Tensor) -> Tensor:
        rows, a, y = self._batch(x)
        margins = y * torch.einsum("rbd,rd->rb", a, rows)
        return (torch.nn.functional.softplus(-margins).mean(1).sum()
                + 0.5 * self.reg * (rows * rows).sum())


def minibatch_least_squares_problem(n: int, dim: int, batch_size: int, *,
                                    replacement: bool = True, label_noise: float = 1.0,
                                    reg: float = 0.0, seed: int = 0,
                                    radius: float = 1.0) -> MinibatchLeastSquaresProblem:
    r"""Least squares on Gaussian data with minibatch gradients (see
    :class:`MinibatchLeastSquaresProblem`).

    Rows :math:`a_i \sim N(0, I_d)`, targets :math:`y_i = a_i^\top w + \sigma \epsilon_i` with
    :math:`w, \epsilon_i` standard normal and :math:`\sigma` = ``label_noise`` (so the
    residuals at :math:`x^\star`, and :math:`\Sigma^\star`, are nonzero unless it is 0); drawn
    from ``torch.Generator().manual_seed(seed)``, the oracle from :func:`oracle_seed`
    ``(seed)``.

    Args:
        n: number of points ``>= dim``.
        dim: ``d >= 1``.
        batch_size: minibatch size ``b`` (``<= n`` without replacement).
        replacement: sample minibatches with replacement.
        label_noise: :math:`\sigma \ge 0`.
        reg: :math:`\lambda \ge 0`.
        seed: seed of the data.
        radius: ``||x0 - x_star||``.

    Example:
        >>> p = minibatch_least_squares_problem(n=50, dim=3, batch_size=5, seed=0)
        >>> float(p.grad(p.x_star).norm()) < 1e-12, tuple(p.noise_cov.shape)
        (True, (3, 3))
    """
    if isinstance(n, bool) or isinstance(dim, bool) or dim < 1 or n < dim:
        raise ValueError(f"need dim >= 1 and n >= dim, got n={n!r}, dim={dim!r}")
    if not 0 <= label_noise < math.inf or not 0 <= reg < math.inf:
        raise ValueError(f"label_noise and reg must be finite numbers >= 0, got "
                         f"{label_noise!r}, {reg!r}")
    gen = _generator(seed)
    X = torch.randn(n, dim, generator=gen, dtype=DTYPE)
    w = torch.randn(dim, generator=gen, dtype=DTYPE)
    y = X @ w + label_noise * torch.randn(n, generator=gen, dtype=DTYPE)
    p = MinibatchLeastSquaresProblem(X, y, reg, batch_size, replacement,
                                     torch.zeros(dim, dtype=DTYPE), _oracle_generator(seed))
    p.x0 = _start_point(p.x_star, radius, gen)
    p._repr = (f"minibatch_least_squares_problem(n={n}, dim={dim}, batch_size={batch_size}, "
               f"replacement={replacement}, label_noise={label_noise!r}, reg={reg!r}, "
               f"seed={seed}, radius={radius!r})")
    return p


def minibatch_logistic_problem(n: int, dim: int, batch_size: int, *, replacement: bool = True,
                               reg: float = 0.1, separable: bool = False, seed: int = 0,
                               radius: float = 1.0) -> MinibatchLogisticProblem:
    """The data of :func:`logistic_problem` with minibatch gradients (see
    :class:`MinibatchLogisticProblem`); the oracle's generator is seeded with
    :func:`oracle_seed` ``(seed)``.

    Args:
        n: number of random points ``>= dim``.
        dim: number of features.
        batch_size: minibatch size ``b`` (``<=`` the number of points without replacement).
        replacement: sample minibatches with replacement.
        reg: L2 penalty (a minimizer must exist: ``reg > 0`` or non-separable data).
        separable: build linearly separable data.
        seed: seed of the data.
        radius: ``||x0 - x_star||``.

    Example:
        >>> p = minibatch_logistic_problem(n=30, dim=2, batch_size=4, seed=0)
        >>> bool(torch.linalg.eigvalsh(p.H)[0] >= p.mu), tuple(p.noise_cov.shape)
        (True, (2, 2))
    """
    base = logistic_problem(n, dim, reg=reg, separable=separable, seed=seed, radius=radius)
    p = MinibatchLogisticProblem(base.X, base.y, base.reg, batch_size, replacement, base.x0,
                                 _oracle_generator(seed), separable=base.separable)
    p._repr = (f"minibatch_logistic_problem(n={n}, dim={dim}, batch_size={batch_size}, "
               f"replacement={replacement}, reg={reg!r}, separable={separable}, seed={seed}, "
               f"radius={radius!r})")
    return p


def noisy_quadratics(dims: int | tuple[int, int] = (2, 6),
                     conditions: float | tuple[float, float] = (1.0, 30.0),
                     noises: float | tuple[float, float] = (0.01, 1.0),
                     mu: float | tuple[float, float] = 1.0,
                     radius: float = 1.0) -> st.SearchStrategy[NoisyQuadraticProblem]:
    """Noisy quadratics (see :func:`noisy_quadratic_problem`), isotropic noise.

    Args:
        dims: dimension, or an inclusive ``(low, high)`` range (``low >= 2``).
        conditions: condition number ``L / mu``, or a range; drawn log-uniformly.
        noises: the noise variance per coordinate, or a range ``> 0``; drawn log-uniformly.
        mu: smallest eigenvalue, or a range; drawn log-uniformly.
        radius: ``||x0 - x_star||``.

    Example:
        >>> from hypothesis import given, settings
        >>> @settings(max_examples=3, derandomize=True, database=None)
        ... @given(noisy_quadratics(dims=3, noises=0.5))
        ... def check(problem):
        ...     assert float(problem.noise_cov[0, 0]) == 0.5
        >>> check()
    """
    d_lo, d_hi = _check_range("dims", dims, low=1, integer=True)
    c_lo, c_hi = _check_range("conditions", conditions, low=1.0)
    n_lo, n_hi = _check_range("noises", noises, low=1e-300)
    m_lo, m_hi = _check_range("mu", mu, low=1e-300)
    if d_lo < 2 and c_hi > 1.0:
        raise ValueError("dims must start at 2 unless conditions is 1")
    return st.builds(noisy_quadratic_problem, dim=st.integers(d_lo, d_hi),
                     condition=_floats(c_lo, c_hi, log=True),
                     noise=_floats(n_lo, n_hi, log=True), seed=seeds(),
                     mu=_floats(m_lo, m_hi, log=True), radius=st.just(float(radius)))
