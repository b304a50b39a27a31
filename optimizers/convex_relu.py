r"""Globally optimal two-layer ReLU networks by convex optimization (Bai, Gautam, Sojoudi,
arXiv 2201.01965, on the reformulation of Pilanci & Ergen, ICML 2020).

A network with :math:`m` ReLU neurons and weight decay :math:`\beta`,

.. math::
    \min_{u_j, a_j}\ \ell\Big(\sum_{j=1}^m (X u_j)_+\, a_j,\ y\Big)
        + \frac{\beta}{2} \sum_{j=1}^m \big(\lVert u_j\rVert_2^2 + a_j^2\big),

is trained to its global optimum (over the sampled activation patterns) by solving the convex
program over the patterns :math:`D_i = \operatorname{diag}(1[X h_i \ge 0])`, :math:`h_i \sim
N(0, I_d)`,

.. math::
    \min_{(v_i, w_i)_{i=1}^P}\ \ell\Big(\sum_{i=1}^P D_i X (v_i - w_i),\ y\Big)
        + \beta \sum_{i=1}^P \big(\lVert v_i\rVert_2 + \lVert w_i\rVert_2\big)
    \quad\text{s.t.}\quad (2D_i - I) X v_i \ge 0,\ (2D_i - I) X w_i \ge 0,

and reading the neurons off its solution: :math:`u = v_i/\sqrt{\lVert v_i\rVert}` with
:math:`a = \sqrt{\lVert v_i\rVert}`, and :math:`u = w_i/\sqrt{\lVert w_i\rVert}` with
:math:`a = -\sqrt{\lVert w_i\rVert}`. Then both objectives are equal. The hidden layer has no
bias by default (as in the authors' code); ``hidden_bias=True`` appends a column of ones to
``X``, so each neuron's last weight is its bias (penalized like the others, and never
perturbed by the robust program).

Solvers: ``"cvxpy"`` (the program as written; the ground truth), ``"admm"`` (the paper's
ADMM for the squared loss, with its fixed linear system factorized once), ``"admm_rbcd"`` (the
same ADMM with randomized block coordinate descent u-steps, for every loss) and ``"ipm"`` (a
primal-dual interior-point method for the squared loss that exploits the program's
structure).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from stochstep.optimizers.online import prox_group_l2_
from stochstep.stepping.checks import check_flag, check_int, check_nonnegative, check_positive
from stochstep.stepping.noise import make_generator

__all__ = ["CVXPY_SOLVER_OPTIONS", "ConvexReLU", "IPM_REGULARIZATION", "IPM_STEP_FRACTION",
           "LINEAR_SOLVERS", "LOSSES", "MAX_CHOLESKY_UNKNOWNS", "RHO_CONE", "SOLVERS",
           "sample_patterns"]

LOSSES = ("squared", "logistic", "hinge")
SOLVERS = ("admm", "admm_rbcd", "cvxpy", "ipm")
# Clarabel's own defaults, written out: the 1e-10 of domains.ACCURATE_SOLVER_OPTIONS ends
# 'optimal_inaccurate' at n = 2000, d = 20, 50 patterns.
LINEAR_SOLVERS = ("auto", "cholesky", "cg")
# "auto" factorizes the (2dP, 2dP) matrix up to this many unknowns (512 MiB in float64)
MAX_CHOLESKY_UNKNOWNS = 8192
RHO_CONE = 0.003
CG_TOL = 1e-10
# the interior-point method: the fraction of the step to the cone's boundary taken
IPM_STEP_FRACTION = 0.99
# the diagonal shift, relative to the largest diagonal entry, where a Newton matrix fails to
# factorize
IPM_REGULARIZATION = 1e-13
EPS = torch.finfo(torch.float64).eps
# ADMM-RBCD: the block line search (Armijo fraction, backtracking factor, smallest step)
RBCD_ARMIJO, RBCD_BACKTRACK, RBCD_MIN_STEP = 0.01, 0.5, 1e-9
CVXPY_SOLVER_OPTIONS = {"CLARABEL": dict(tol_gap_abs=1e-8, tol_gap_rel=1e-8, tol_feas=1e-8),
                        "SCS": dict(eps_abs=1e-6, eps_rel=1e-6)}


def _balance(primal: float, dual: float) -> float:
    """The factor for a penalty in residual balancing: 2 when the primal residual is over ten
    times the dual one, 1/2 in the other case, else 1."""
    return 2.0 if primal > 10 * dual else 0.5 if dual > 10 * primal else 1.0


def _as_float64(name: str, value, dims: tuple[int, ...]) -> Tensor:
    """``value`` (a numpy array, a tensor or nested lists) as a float64 CPU tensor of one of the
    ``dims`` numbers of dimensions, with only finite entries."""
    try:
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}"
                         ) from None
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)):
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, "
                         f"got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must hold only finite numbers (it has a NaN or infinity)")
    return t


def sample_patterns(X, n_patterns: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Sampled activation patterns of the data: the distinct columns of :math:`1[X H \ge 0]`.

    .. math::
        H = [h_1, \dots, h_N],\quad h_k \sim N(0, I_d)\ \text{i.i.d.},\qquad
        D = \operatorname{unique\_columns}\big(1[X H \ge 0]\big) \in \{0, 1\}^{n \times P},
        \ P \le N.

    Args:
        X: the data, ``(n, d)``.
        n_patterns: :math:`N`, the number of Gaussian directions drawn.
        generator: the ``torch.Generator`` drawing :math:`H` (``None``: a new one seeded from
            torch's global RNG).

    Returns:
        a boolean ``(n, P)`` tensor, column :math:`i` the diagonal of :math:`D_i`.

    References:
        Bai, Gautam, Sojoudi, arXiv 2201.01965, Section 2 (sampled hyperplane arrangements).

    Example:
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
        >>> sample_patterns(X, 50, torch.Generator().manual_seed(0)).shape[0]
        3
    """
    X = _as_float64("X", X, (2,))
    n_patterns = check_int("n_patterns", n_patterns)
    H = torch.randn(X.shape[1], n_patterns, generator=make_generator(generator),
                    dtype=torch.float64)
    return torch.unique(X @ H >= 0, dim=1)


def _cholesky_solve(L: Tensor, b: Tensor) -> Tensor:
    r""":math:`(LL^\top)^{-1} b` by two triangular solves (on one thread, 12 times faster than
    ``torch.cholesky_solve`` at 2100 unknowns: 1.6 ms against 20 ms)."""
    z = torch.linalg.solve_triangular(L, b[:, None], upper=False)
    return torch.linalg.solve_triangular(L.T, z, upper=True)[:, 0]


def _unit_scale(X: Tensor, y: Tensor, beta: float
                ) -> tuple[Tensor, Tensor, float, float, float]:
    """``(X', y', beta', a, b)``: the data in units where ``X`` and ``y`` have unit
    root-mean-square entries. With ``X = a X'``, ``y = b y'`` and ``v = (b/a) v'`` the objective
    is ``b^2`` times the same program in ``(X', y', v')`` with ``beta' = beta/(a b)``."""
    x_scale = float(X.pow(2).mean().sqrt()) or 1.0
    y_scale = float(y.pow(2).mean().sqrt()) or 1.0
    return X / x_scale, y / y_scale, beta / (x_scale * y_scale), x_scale, y_scale


class _Split:
    r"""The ADMM's linear maps on :math:`u = (v_1, \dots, v_P, w_1, \dots, w_P)` stored as a
    ``(2P, d)`` tensor: :math:`F = [D_1X, \dots, D_PX, -D_1X, \dots, -D_PX]` and :math:`G =
    \operatorname{blkdiag}((2D_i - I) X)` (twice), by products with ``X`` and the masks."""

    def __init__(self, X: Tensor, D: Tensor):
        self.X = X
        self.signs = torch.cat([2 * D - 1, 2 * D - 1], dim=1)    # (n, 2P): the signs of G
        self.masks = torch.cat([D, -D], dim=1)                   # (n, 2P): F's masks and signs

    def F(self, u: Tensor) -> Tensor:
        """:math:`Fu` as ``(n,)``."""
        return (self.masks * (self.X @ u.T)).sum(1)

    def F_T(self, r: Tensor) -> Tensor:
        r""":math:`F^\top r` as ``(2P, d)``."""
        return (self.masks * r[:, None]).T @ self.X

    def G(self, u: Tensor) -> Tensor:
        """:math:`Gu` as ``(n, 2P)``."""
        return self.signs * (self.X @ u.T)

    def G_T(self, q: Tensor) -> Tensor:
        r""":math:`G^\top q` as ``(2P, d)``."""
        return (self.signs * q).T @ self.X


class _SmoothLoss:
    r"""The loss :math:`\ell(\hat y) = \sum_k \phi(\hat y_k)` of the ADMM-RBCD u-step, entry by
    entry, with its first and second derivatives: :math:`\tfrac12(\hat y_k - y_k)^2`,
    :math:`\log(1 + e^{-y_k \hat y_k})`, or the hinge :math:`\max(0, t_k)`, :math:`t_k = 1 -
    y_k\hat y_k`, through its Moreau envelope with parameter :math:`\mu` (``smoothing``):
    :math:`0` for :math:`t_k \le 0`, :math:`t_k^2/(2\mu)` for :math:`0 < t_k \le \mu`,
    :math:`t_k - \mu/2` beyond, between the hinge minus :math:`\mu/2` and the hinge."""

    def __init__(self, loss: str, y: Tensor, smoothing: float = 0.0):
        self.loss, self.y, self.smoothing = loss, y, smoothing

    def terms(self, y_hat: Tensor) -> Tensor:
        y = self.y
        if self.loss == "squared":
            return 0.5 * (y_hat - y) ** 2
        if self.loss == "logistic":
            return torch.nn.functional.softplus(-y * y_hat)
        t, mu = 1 - y * y_hat, self.smoothing
        return torch.where(t <= 0, 0.0, torch.where(t < mu, t ** 2 / (2 * mu), t - mu / 2))

    def derivatives(self, y_hat: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\phi'(\hat y_k))_k` and :math:`(\phi''(\hat y_k))_k` (labels :math:`\pm1`)."""
        y = self.y
        if self.loss == "squared":
            return y_hat - y, torch.ones_like(y_hat)
        if self.loss == "logistic":
            margin = y * y_hat
            return -y * torch.sigmoid(-margin), torch.sigmoid(margin) * torch.sigmoid(-margin)
        t, mu = 1 - y * y_hat, self.smoothing
        return -y * (t / mu).clamp(0, 1), ((t > 0) & (t <= mu)).to(y.dtype) / mu


def _rbcd_block_step(X: Tensor, mask: Tensor, sign: Tensor, block: Tensor, shift_u: Tensor,
                     shift_c: Tensor, y_hat: Tensor, loss: _SmoothLoss, penalties) -> Tensor:
    r"""One block step of the ADMM-RBCD u-step, in place on ``block``, the ``(2, d)`` view of
    :math:`(u_i, z_i)` in :math:`u`; returns the new :math:`\hat y = Fu`. ``mask`` and ``sign``
    are the diagonals of :math:`D_i` and :math:`E_i = 2D_i - I`, ``shift_u`` ``(2, d)`` and
    ``shift_c`` ``(n, 2)`` the block's parts of :math:`\lambda - v` and :math:`\nu - s`.

    The u-subproblem :math:`L(u) = \ell(Fu) + \tfrac\rho2\lVert u + \text{shift}_u\rVert^2 +
    \tfrac{\rho_c}2\lVert Gu + \text{shift}_c\rVert^2` restricted to the block has the gradient
    :math:`g = (X^\top(D_i \ell' + \rho_c E_i c_u) + \rho r_u,\ X^\top(-D_i \ell' + \rho_c E_i
    c_z) + \rho r_z)` (:math:`r = b + \text{shift}_u`, :math:`c = E_i X b + \text{shift}_c`)
    and the Hessian :math:`\begin{pmatrix} A + H & -H\\ -H & A + H\end{pmatrix}`, :math:`A =
    \rho I + \rho_c X^\top X`, :math:`H = X^\top D_i \operatorname{diag}(\ell'') X`. The Newton
    direction solves it through :math:`\delta_u + \delta_z = -A^{-1}(g_u + g_z)` and
    :math:`\delta_u - \delta_z = -(A + 2H)^{-1}(g_u - g_z)`; the step :math:`\gamma` starts at 1
    and is halved until :math:`L(u + \gamma\delta) \le L(u) + c\,\gamma\, g^\top\delta`
    (Armijo, :math:`c` = ``RBCD_ARMIJO``); none is taken if :math:`\gamma` falls below
    ``RBCD_MIN_STEP``. Along the step the quadratic terms change by :math:`\gamma\,(\rho\,
    r^\top\delta + \rho_c c^\top E_i X\delta) + \tfrac{\gamma^2}2(\rho\lVert\delta\rVert^2 +
    \rho_c\lVert X\delta\rVert^2)`, so a trial step costs one pass over the loss terms."""
    rho, rho_cone = penalties.rho, penalties.rho_cone
    signed_cone = sign[:, None] * (sign[:, None] * (X @ block.T) + shift_c)     # (n, 2): E_i c
    residual = block + shift_u                                                 # (2, d)
    first, second = loss.derivatives(y_hat)
    first = mask * first
    weights = rho_cone * signed_cone
    weights[:, 0] += first
    weights[:, 1] -= first
    grad = (X.T @ weights).T + rho * residual
    H = X.T @ ((mask * second)[:, None] * X)
    total = -torch.cholesky_solve((grad[0] + grad[1])[:, None], penalties.A_factor)[:, 0]
    difference = -torch.linalg.solve(penalties.A + 2 * H, grad[0] - grad[1])
    delta = torch.stack([total + difference, total - difference]) / 2
    slope = float((grad * delta).sum())
    if not slope < 0:      # a zero gradient: nothing to do
        return y_hat
    X_delta = X @ delta.T                                                      # (n, 2)
    dy = mask * (X_delta[:, 0] - X_delta[:, 1])
    linear = rho * float((residual * delta).sum()) + rho_cone * float(
        (signed_cone * X_delta).sum())
    quadratic = rho * float((delta ** 2).sum()) + rho_cone * float((X_delta ** 2).sum())
    before = loss.terms(y_hat)     # term by term: the rows outside D_i add exact zeros
    step = 1.0
    while step >= RBCD_MIN_STEP:
        change = (float((loss.terms(y_hat + step * dy) - before).sum())
                  + step * linear + step ** 2 / 2 * quadratic)
        if change <= RBCD_ARMIJO * step * slope:
            block += step * delta
            return y_hat + step * dy
        step *= RBCD_BACKTRACK
    return y_hat


def _soc_det(u: Tensor) -> Tensor:
    r""":math:`u_0^2 - \lVert u_1\rVert^2` per row of ``u`` (the head :math:`u_0` last)."""
    return u[:, -1] ** 2 - (u[:, :-1] ** 2).sum(1)


def _soc_product(u: Tensor, v: Tensor) -> Tensor:
    r"""The Jordan product per row, :math:`u \circ v = (u_1 v_0 + v_1 u_0,\ u^\top v)` (head
    last)."""
    return torch.cat([u[:, :-1] * v[:, -1:] + v[:, :-1] * u[:, -1:],
                      (u * v).sum(1, keepdim=True)], dim=1)


def _soc_divide(lam: Tensor, r: Tensor) -> Tensor:
    r"""The :math:`x` with :math:`\lambda \circ x = r` per row (:math:`\lambda` inside the
    cone): :math:`x_0 = (\lambda_0 r_0 - \lambda_1^\top r_1)/(\lambda_0^2 - \lVert\lambda_1
    \rVert^2)`, :math:`x_1 = (r_1 - x_0 \lambda_1)/\lambda_0`."""
    head = (lam[:, -1] * r[:, -1] - (lam[:, :-1] * r[:, :-1]).sum(1)) / _soc_det(lam)
    return torch.cat([(r[:, :-1] - head[:, None] * lam[:, :-1]) / lam[:, -1:], head[:, None]],
                     dim=1)


def _newton_factor(matrix: Tensor, where: str) -> Tensor:
    """The Cholesky factor of the interior-point method's Newton matrix; where roundoff makes
    it fail, of the matrix plus ``IPM_REGULARIZATION`` times its largest diagonal entry (the
    next step's residuals correct the slightly different direction)."""
    try:
        return torch.linalg.cholesky(matrix)
    except torch.linalg.LinAlgError:
        pass
    shift = IPM_REGULARIZATION * float(matrix.diagonal().max())
    try:
        return torch.linalg.cholesky(matrix + shift * torch.eye(len(matrix), dtype=matrix.dtype))
    except torch.linalg.LinAlgError as err:
        raise RuntimeError(f"ConvexReLU: the interior-point method's Newton matrix is not "
                           f"positive definite at {where}, even shifted by {shift:.1e}: {err}"
                           ) from err


def _norm(u: tuple[Tensor, Tensor]) -> float:
    """The Euclidean norm of a vector of the cone's space, a ``(lin, soc)`` pair."""
    return math.hypot(float(torch.linalg.vector_norm(u[0])), float(torch.linalg.vector_norm(u[1])))


def _shift_into_cone(u: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    r"""``u`` plus :math:`(1 - \lambda_{\min})\,e` on each cone (the orthant as one cone, each
    second-order cone on its own) whose smallest eigenvalue :math:`\lambda_{\min}` (the least
    entry; :math:`u_0 - \lVert u_1\rVert`) is below machine epsilon; the others
    unchanged (Clarabel's rule)."""
    lin, soc = u
    low = float(lin.min())
    if low < EPS:
        lin = lin + (1 - low)
    low = soc[:, -1] - torch.linalg.vector_norm(soc[:, :-1], dim=1)
    soc = torch.cat([soc[:, :-1], (soc[:, -1] + torch.where(low < EPS, 1 - low, 0.0)
                                   )[:, None]], dim=1)
    return lin, soc


def _max_step(s_lin: Tensor, s_soc: Tensor, ds_lin: Tensor, ds_soc: Tensor) -> float:
    r"""The largest :math:`\alpha` (``inf`` if none) with :math:`s + \alpha\,\Delta s` in the
    cone: :math:`-s_k/\Delta s_k` over :math:`\Delta s_k < 0`, and per second-order cone the
    first positive root of :math:`\det(s + \alpha\,\Delta s) = a\alpha^2 + 2b\alpha + c`."""
    ratios = torch.where(ds_lin < 0, -s_lin / ds_lin, math.inf)
    alpha = float(ratios.min()) if ratios.numel() else math.inf
    a, c = _soc_det(ds_soc), _soc_det(s_soc)
    b = s_soc[:, -1] * ds_soc[:, -1] - (s_soc[:, :-1] * ds_soc[:, :-1]).sum(1)
    # c > 0; the roots have product c/a: with a < 0 one is positive, with a > 0 both are of
    # the sign of -b (or complex); the stable pair q/a, c/q with q = -(b + sign(b) sqrt(.))
    disc = (b ** 2 - a * c).clamp(min=0)
    q = -(b + torch.where(b >= 0, 1.0, -1.0) * disc.sqrt())
    roots = torch.stack([q / a, c / q])
    roots = torch.where((roots > 0) & torch.isfinite(roots), roots, math.inf)
    real = (b ** 2 - a * c >= 0) | (a < 0)
    cone = torch.where(real, roots.min(0).values, math.inf)
    return min(alpha, float(cone.min()) if len(cone) else math.inf)


class _ConeQP:
    r"""The squared-loss program as a cone quadratic program over :math:`x = (z_j, t_j)_{j=1}
    ^{2P}`, stored as a ``(2P, d + 1)`` tensor (:math:`z_j = v_j`, then :math:`w_j`;
    :math:`t_j` in the last column):

    .. math::
        \min_x\ \tfrac12\lVert Fz - y\rVert^2 + \beta \sum_j t_j
        \quad\text{s.t.}\quad s = -Gx \in K,\quad
        -Gx = \big((A_j z_j)_j,\ (z_j, t_j)_j\big),

    :math:`K` the nonnegative orthant of the margins :math:`A_j z_j` (:math:`A_j = (2D_j - I)
    X` on the nonzero rows of :math:`X`) times :math:`2P` second-order cones :math:`t_j \ge
    \lVert z_j\rVert`. Vectors of the cone's space are pairs ``(lin, soc)``: ``(n', 2P)`` and
    ``(2P, d + 1)``, the cone's head last."""

    def __init__(self, X: Tensor, y: Tensor, D: Tensor, beta: float):
        n, d = X.shape
        P = D.shape[1]
        self.X, self.y, self.beta, self.d = X, y, beta, d
        self.masks = torch.cat([D, -D], dim=1)                   # F's masks and signs, (n, 2P)
        nonzero = X.abs().sum(1) > 0                             # zero rows: 0 >= 0 always
        self.X_c, self.signs = X[nonzero], torch.cat([2 * D - 1, 2 * D - 1], dim=1)[nonzero]
        # the cone's degree (1 per linear constraint, 1 per second-order cone): s^T z / m is
        # the complementarity mu
        self.m = self.signs.numel() + 2 * P
        # the rows' outer products x_k x_k^T, (n', d^2): each step's blocks X^T diag(.) X are
        # then one matrix product (10 times faster than an einsum at n = 5000, d = 20)
        self.outer = (self.X_c[:, :, None] * self.X_c[:, None, :]).reshape(len(self.X_c), d * d)
        # F^T F = [[K, -K], [-K, K]], K = [D_i X]^T [D_j X], placed in the z-rows and columns of
        # the (2P (d + 1))^2 matrix once: O(n (dP)^2)
        masked = (D.T[:, :, None] * X[None]).permute(1, 0, 2).reshape(n, P * d)
        K = (masked.T @ masked).reshape(P, d, P, d)
        FtF = torch.zeros(2 * P, d + 1, 2 * P, d + 1, dtype=X.dtype)
        FtF[:P, :d, :P, :d] = FtF[P:, :d, P:, :d] = K
        FtF[:P, :d, P:, :d] = FtF[P:, :d, :P, :d] = -K
        # the Newton matrix lives in this buffer: each step rewrites only its diagonal blocks
        # (F^T F's, kept apart, plus the scaling's), not the whole (2P (d + 1))^2 matrix
        self.index = torch.arange(2 * P)
        self.FtF_blocks = FtF[self.index, :, self.index, :].clone()
        self.buffer = FtF.reshape(2 * P * (d + 1), -1)

    def predictions(self, z: Tensor) -> Tensor:
        return (self.masks * (self.X @ z.T)).sum(1)

    def margins(self, z: Tensor) -> Tensor:
        """:math:`(A_j z_j)_k` as ``(n', 2P)``."""
        return self.signs * (self.X_c @ z.T)

    def objective(self, z: Tensor) -> float:
        """The program's objective (the norms, not the epigraph variables)."""
        return 0.5 * float(((self.predictions(z) - self.y) ** 2).sum()) + self.beta * float(
            torch.linalg.vector_norm(z, dim=1).sum())

    def objective_gradient(self, x: Tensor) -> Tensor:
        r"""The gradient :math:`Qx + c` of :math:`\tfrac12\lVert Fz - y\rVert^2 + \beta\sum_j
        t_j`, shaped like ``x``."""
        grad = torch.full_like(x, self.beta)
        grad[:, :-1] = (self.masks * (self.predictions(x[:, :-1]) - self.y)[:, None]).T @ self.X
        return grad

    def G(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return -self.margins(x[:, :-1]), -x

    def G_T(self, u_lin: Tensor, u_soc: Tensor) -> Tensor:
        out = -u_soc.clone()
        out[:, :-1] -= (self.signs * u_lin).T @ self.X_c
        return out

    def scaling(self, s: tuple[Tensor, Tensor], z: tuple[Tensor, Tensor]) -> dict:
        r"""The Nesterov-Todd scaling :math:`W` of slacks :math:`s` and duals :math:`z` (here
        not the weights; symmetric, :math:`W z = W^{-1} s = \lambda`): :math:`\operatorname{diag}
        (\sqrt{s/z})` on the orthant; per second-order cone, with
        :math:`\bar s = s/\sqrt{\det s}`, :math:`\bar z = z/\sqrt{\det z}`, :math:`\gamma =
        \sqrt{(1 + \bar s^\top \bar z)/2}`, :math:`\bar w = (\bar s + J\bar z)/(2\gamma)`
        (:math:`J = \operatorname{diag}(-I, 1)`),
        :math:`\eta = (\det s/\det z)^{1/4}`: :math:`W = \eta\begin{pmatrix} I + \bar w_1
        \bar w_1^\top/(1 + \bar w_0) & \bar w_1\\ \bar w_1^\top & \bar w_0\end{pmatrix}`
        (head last; :math:`W^{-1}` flips the sign of :math:`\bar w_1` and divides by
        :math:`\eta`)."""
        (s_lin, s_soc), (z_lin, z_soc) = s, z
        det_s, det_z = _soc_det(s_soc), _soc_det(z_soc)
        s_bar, z_bar = s_soc / det_s.sqrt()[:, None], z_soc / det_z.sqrt()[:, None]
        gamma = ((1 + (s_bar * z_bar).sum(1)) / 2).sqrt()
        w = torch.cat([s_bar[:, :-1] - z_bar[:, :-1], s_bar[:, -1:] + z_bar[:, -1:]], dim=1)
        w = w / (2 * gamma[:, None])
        eta = (det_s / det_z) ** 0.25
        w1, w0 = w[:, :-1], w[:, -1]
        groups, d = w1.shape
        core = torch.eye(d + 1, dtype=w.dtype).repeat(groups, 1, 1)
        core[:, :d, :d] += w1[:, :, None] * w1[:, None, :] / (1 + w0)[:, None, None]
        core[:, -1, -1] = w0
        W, W_inv = core.clone(), core.clone()
        W[:, :d, -1] = W[:, -1, :d] = w1
        W_inv[:, :d, -1] = W_inv[:, -1, :d] = -w1
        W, W_inv = eta[:, None, None] * W, W_inv / eta[:, None, None]
        return dict(w_lin=(s_lin / z_lin).sqrt(), W=W, W_inv=W_inv,
                    lam=((s_lin * z_lin).sqrt(), torch.einsum("jab,jb->ja", W, z_soc)))

    def matrix(self, scaling: dict) -> Tensor:
        r""":math:`Q + G^\top W^{-2} G`: :math:`F^\top F` plus per group :math:`X^\top
        \operatorname{diag}(z_j/s_j) X \oplus 0 + W_j^{-2}` (:math:`z` the duals; the row signs
        square away); the returned tensor is overwritten by the next call."""
        groups, d = scaling["W_inv"].shape[0], self.d
        blocks = scaling["W_inv"] @ scaling["W_inv"]
        blocks[:, :d, :d] += (scaling["w_lin"] ** -2).T.matmul(self.outer).view(groups, d, d)
        view = self.buffer.view(groups, d + 1, groups, d + 1)
        view[self.index, :, self.index, :] = self.FtF_blocks + blocks
        return self.buffer

    def direction(self, factor: Tensor, scaling: dict, r_x: Tensor,
                  r_p: tuple[Tensor, Tensor], d: tuple[Tensor, Tensor]):
        r"""The solution of :math:`Q\Delta x + G^\top\Delta z = -r_x`, :math:`G\Delta x +
        \Delta s = -r_p`, :math:`W^{-1}\Delta s + W\Delta z = d` (``factor``: the Cholesky
        factor of :meth:`matrix`); returns :math:`\Delta x` and the scaled :math:`W^{-1}\Delta
        s`, :math:`W\Delta z` as ``(lin, soc)`` pairs."""
        w, W_inv = scaling["w_lin"], scaling["W_inv"]

        def scale_inv(u):           # W^{-1} u
            return u[0] / w, torch.einsum("jab,jb->ja", W_inv, u[1])
        inner = scale_inv(r_p)
        inner = (inner[0] + d[0], inner[1] + d[1])
        rhs = -r_x - self.G_T(*scale_inv(inner))
        dx = _cholesky_solve(factor, rhs.reshape(-1)).reshape(r_x.shape)
        G_dx = self.G(dx)
        dz_scaled = scale_inv((G_dx[0] + r_p[0], G_dx[1] + r_p[1]))
        dz_scaled = (dz_scaled[0] + d[0], dz_scaled[1] + d[1])
        ds_scaled = (d[0] - dz_scaled[0], d[1] - dz_scaled[1])
        return dx, ds_scaled, dz_scaled


class ConvexReLU:
    r"""A one-hidden-layer ReLU network trained to the global optimum of its sampled convex
    program (scikit-learn style: ``fit``, ``predict``, ``score``).

    .. math::
        \min_{v, w}\ \ell\Big(\sum_{i=1}^P D_i X (v_i - w_i),\ y\Big)
            + \beta \sum_{i=1}^P \big(\lVert v_i\rVert_2 + \lVert w_i\rVert_2\big)
        \quad\text{s.t.}\quad (2D_i - I) X v_i \ge 0,\ (2D_i - I) X w_i \ge 0,

    with the losses :math:`\ell(\hat y, y) = \tfrac12\lVert \hat y - y\rVert^2` (squared),
    :math:`\sum_k \log(1 + e^{-s_k \hat y_k})` (logistic) and :math:`\sum_k \max(0, 1 - s_k
    \hat y_k)` (hinge), where :math:`s_k \in \{-1, 1\}` are the labels (labels in
    :math:`\{0, 1\}` are read as :math:`s = 2y - 1`). The network's prediction on any input is
    :math:`f(x) = \sum_i (x^\top v_i)_+ - (x^\top w_i)_+`; on the training data, where the
    constraints hold, it equals :math:`\sum_i D_i X (v_i - w_i)`.

    The ADMM (squared loss) works in units where ``X`` and ``y`` have unit root-mean-square
    entries (:math:`X = aX'`, :math:`y = by'`, :math:`v = (b/a)v'`, :math:`\beta' = \beta/(ab)`;
    the objective is :math:`b^2` times the same program, and the answer is reported in the
    original units). It splits :math:`u = (v_i, w_i)_i` into a copy :math:`u` that carries the
    loss, :math:`v` that carries the group lasso and slacks :math:`s = Gu \ge 0`, with
    :math:`F = [D_1X, \dots, D_PX, -D_1X, \dots, -D_PX]`, :math:`G = \operatorname{blkdiag}
    ((2D_i - I) X)`, a penalty :math:`\rho` on :math:`u = v` and :math:`\rho_c` on
    :math:`Gu = s`, scaled duals :math:`\lambda, \nu` and over-relaxation :math:`\alpha`
    (:math:`\hat u = \alpha u^{k+1} + (1 - \alpha) v^k`, :math:`\widehat{Gu} = \alpha G u^{k+1}
    + (1 - \alpha) s^k`):

    .. math::
        u^{k+1} &= \big(I + F^\top F/\rho + (\rho_c/\rho)\, G^\top G\big)^{-1}
            \big(F^\top y/\rho + v^k - \lambda^k + (\rho_c/\rho)\, G^\top (s^k - \nu^k)\big),\\
        v^{k+1}_i &= \max\Big(0,\ 1 - \frac{\beta/\rho}{\lVert \hat u_i + \lambda^k_i\rVert}
            \Big)\,(\hat u_i + \lambda^k_i),\qquad
        s^{k+1} = (\widehat{Gu} + \nu^k)_+,\\
        \lambda^{k+1} &= \lambda^k + \hat u - v^{k+1},\qquad
        \nu^{k+1} = \nu^k + \widehat{Gu} - s^{k+1}.

    With :math:`\rho_c = \rho` and :math:`\alpha = 1` this is the paper's ADMM. The matrix is
    fixed: it is Cholesky-factorized once (:math:`G^\top G = I_{2P} \otimes X^\top X` since
    :math:`(2D_i - I)^2 = I`), and each iteration is two triangular solves and products with
    :math:`X` and the masks, :math:`O(ndP)`; when the matrix is too large (``linear_solver``)
    the u-step is conjugate gradients started at :math:`u^k`, preconditioned by the
    :math:`(d, d)` diagonal blocks, with products only. It stops when the primal residual
    :math:`r = (u - v, Gu - s)` and the dual residual :math:`d = \rho (v^{k+1} - v^k) + \rho_c
    G^\top(s^{k+1} - s^k)` satisfy :math:`\lVert r\rVert \le \sqrt{p}\,\epsilon + \epsilon
    \max(\lVert (u, Gu)\rVert, \lVert (v, s)\rVert)` and :math:`\lVert d\rVert \le \sqrt{q}\,
    \epsilon + \epsilon\lVert \rho\lambda + \rho_c G^\top\nu\rVert` (Boyd et al. 2011, Section
    3.3.1; :math:`\epsilon` = ``tol``, :math:`p, q` the sizes, residuals in the scaled units).
    The answer is :math:`v` (exactly group sparse); its constraints hold to the residual.

    The convergence is slow where the patterns' cones :math:`\{z : (2D_i - I) X z \ge 0\}` are
    thin (many rows in few dimensions): the residual of :math:`Gu = s` then falls roughly
    like :math:`1/k`, and :math:`\rho_c` is the penalty that matters (:math:`\rho` barely
    does). The defaults of ``rho_cone`` and ``relaxation`` and the balancing per constraint
    reach a given objective gap in 0.6 to 0.8 times the iterations of the paper's form (in
    ``python -m benchmarks convex_relu``, n = 500, d = 10, P = 30: a relative gap of 1e-4 for
    good after 5419 iterations against 6895), but the convergence is still far from geometric.

    ADMM-RBCD (``solver="admm_rbcd"``, every loss; the same scaled units, splitting, updates of
    :math:`v, s, \lambda, \nu`, balancing and stopping rule) replaces the u-step, which has no
    closed form for the logistic and hinge losses, by ``rbcd_sweeps`` sweeps of randomized
    block coordinate descent on its subproblem, started at :math:`u^k`. The blocks are the
    :math:`P` pairs :math:`b_i = (u_i, z_i)` (rows :math:`i` and :math:`P + i` of :math:`u`,
    :math:`2d` numbers); a sweep visits them once each in an order drawn by ``generator``, and
    at each takes a Newton step on the block with a backtracking step size:

    .. math::
        L_k(u) &= \ell(Fu) + \tfrac\rho2 \lVert u - v^k + \lambda^k\rVert^2
            + \tfrac{\rho_c}2 \lVert Gu - s^k + \nu^k\rVert^2,\qquad
        g = \nabla_{b_i} L_k(u),\\
        \nabla^2_{b_i} L_k &= \begin{pmatrix} A + H & -H\\ -H & A + H\end{pmatrix},\quad
            A = \rho I + \rho_c X^\top X,\quad
            H = X^\top D_i \operatorname{diag}(\ell''(Fu)) X,\\
        \delta &= -(\nabla^2_{b_i} L_k)^{-1} g:\quad \delta_u + \delta_z = -A^{-1}(g_u + g_z),
            \quad \delta_u - \delta_z = -(A + 2H)^{-1}(g_u - g_z),\\
        b_i &\leftarrow b_i + \gamma\delta,\quad \gamma = 2^{-j}\ \text{for the least}\
            j \ge 0\ \text{with}\ L_k(u + \gamma\delta) \le L_k(u)
            + 0.01\,\gamma\, g^\top\delta .

    The u-step is inexact, so its subproblem's gradient :math:`e = \nabla L_k(u^{k+1})` is
    subtracted in the dual residual, :math:`d = \rho(v^{k+1} - v^k) + \rho_c G^\top(s^{k+1} -
    s^k) - e` (with an exact u-step :math:`e = 0`). The hinge loss is not differentiable; the
    u-step uses its Moreau envelope with parameter :math:`\mu` (``hinge_smoothing``,
    :math:`t = 1 - s_k \hat y_k`): :math:`0` for :math:`t \le 0`, :math:`t^2/(2\mu)` for
    :math:`0 < t \le \mu`, :math:`t - \mu/2` beyond. The iterates then converge to the
    optimum of the smoothed program, whose hinge objective exceeds the hinge optimum by at most
    ``smoothing_bound_`` :math:`= \sum_k (\max(0, t_k) - \text{envelope}(t_k)) \le \tfrac\mu2
    \#\{k : t_k > 0\}` (the envelope lies between the hinge minus :math:`\mu/2` and the hinge);
    :math:`\mu \to 0` gives the hinge optimum, but slower (the block Hessians grow like
    :math:`1/\mu`). From the third-party ADMM-RBCD (``zachary-shah/admmNN``,
    ``utils/primal_update_utils.py``): the blocks :math:`(u_i, z_i)`, drawn at random, and a
    backtracking (Armijo) step on each; it takes gradient steps on three blocks at a time, an
    inner loop ended by a decaying threshold on the decrease, a growing :math:`\rho` and a
    decaying dual step, and has no hinge loss. The Newton direction (two :math:`d \times d`
    solves), the sweeps in random order, the error term in the dual residual and the smoothing
    are this implementation's choices. Its convergence is slower than the exact ADMM's (the
    blocks are coupled through :math:`F^\top F`; see the family page for measurements).

    The interior-point method (``solver="ipm"``, squared loss, the same scaled units) is a
    primal-dual Mehrotra predictor-corrector method with Nesterov-Todd scaling (as in CVXOPT's
    cone QP solver) on the program with epigraph variables :math:`t_j \ge \lVert z_j\rVert`,
    over :math:`x = (z_j, t_j)_{j=1}^{2P}` (:math:`z = (v_1, \dots, v_P, w_1, \dots, w_P)`,
    :math:`A_j = (2D_j - I) X`), slacks :math:`s` and duals :math:`\lambda` in the cone
    :math:`K` = the orthant of the margins times :math:`2P` second-order cones:

    .. math::
        \min_x\ \tfrac12 \lVert Fz - y\rVert^2 + \beta \sum_j t_j
        \quad\text{s.t.}\quad s = \big((A_j z_j)_j,\ (z_j, t_j)_j\big) \in K,\\
        (F^\top F \oplus 0 + G^\top W^{-2} G)\,\Delta x = \text{rhs},\qquad
        G^\top W^{-2} G = \operatorname{blkdiag}_j\Big(
            X^\top \operatorname{diag}(\lambda_j / s_j) X \oplus 0 + W_j^{-2}\Big),\\
        \text{stop when}\quad s^\top \lambda \le \epsilon\,\lvert f_0(x)\rvert,\quad
        \lVert r_p\rVert \le \epsilon \max(1, \lVert s\rVert),\quad
        \lVert r_d\rVert \le \epsilon \max(1, \lVert \nabla f_0(0)\rVert),

    :math:`W` the scaling (:math:`\operatorname{diag}(\sqrt{s/\lambda})` on the orthant, a
    :math:`(d+1)` block :math:`W_j` per second-order cone), :math:`r_p` and :math:`r_d` the
    primal and dual residuals. :math:`F^\top F` is formed once; each step adds the
    :math:`(d+1)`-blocks (:math:`O(nd^2)` per group, the row signs of :math:`A_j` square away),
    factorizes the :math:`2P(d+1)` matrix by one dense Cholesky and solves with it twice (the
    affine predictor, then the corrector aiming at :math:`\sigma\mu` with :math:`\sigma` =
    (the predictor's gap reduction)\ :sup:`3` and its second-order term), and steps
    ``IPM_STEP_FRACTION`` = 0.99 of the way to the cone's boundary. The start is Clarabel's:
    the same system with :math:`W = I`, :math:`s` and :math:`\lambda` shifted into
    :math:`K`; the iterates need not be feasible, so any patterns work (a cone without
    interior included). The answer satisfies the cone constraints up to the final primal
    residual and is not exactly group sparse: groups that vanish at the optimum are of the
    order of the gap.

    Args:
        n_patterns: Gaussian directions drawn for the patterns (the distinct ones are kept).
        beta: :math:`\beta \ge 0`, the weight decay.
        loss: ``"squared"``, ``"logistic"`` or ``"hinge"``.
        solver: ``"admm"`` or ``"ipm"`` (squared loss only), ``"admm_rbcd"`` (every loss), or
            ``"cvxpy"`` (MOSEK when installed, else Clarabel).
        robust_eps: :math:`\epsilon \ge 0`, the :math:`\ell_\infty` radius of adversarial
            training (``solver="cvxpy"`` only). With the patterns held fixed, the robust
            counterpart replaces the cone constraints by :math:`(2D_i - I) X v_i \ge \epsilon
            \lVert v_i\rVert_1` (same for :math:`w_i`) and the margin :math:`s_k \hat y_k` by
            :math:`s_k \hat y_k - \epsilon \lVert z_k\rVert_1`, :math:`z_k = \sum_i d_{ik}(v_i -
            w_i)` (for the squared loss :math:`\lvert \hat y_k - y_k\rvert` by :math:`\lvert
            \hat y_k - y_k\rvert + \epsilon\lVert z_k\rVert_1`): the exact worst case over the box
            for every loss here when the patterns stay fixed, which the constraints ensure.
        rho: the ADMM penalty :math:`\rho > 0` on :math:`u = v` (scaled units; ``None``: 0.01,
            the default of the third-party ADMM ``zachary-shah/admmNN``).
        rho_cone: the penalty :math:`\rho_c > 0` on :math:`Gu = s` (scaled units; ``None``:
            ``RHO_CONE`` = 0.003).
        relaxation: the over-relaxation :math:`\alpha \in (0, 2)` (1: none).
        linear_solver: the u-step: ``"cholesky"`` (factorize the :math:`(2dP, 2dP)` matrix
            once), ``"cg"`` (conjugate gradients, nothing of size :math:`(dP)^2` stored) or
            ``"auto"`` (Cholesky up to ``MAX_CHOLESKY_UNKNOWNS`` = 8192 unknowns).
        balance: residual balancing (Boyd et al. 2011, Section 3.4.1), each penalty on its own:
            every 10 iterations where a constraint's primal residual is 10 times its dual
            residual, or the other way round, its penalty is doubled or halved (and the matrix
            factorized again). On small problems the residual of :math:`u = v` stalls without.
        tol: the ADMM tolerance, or the interior-point method's relative gap and residuals,
            :math:`\epsilon > 0`.
        max_iter: the most ADMM iterations or Newton steps (reaching it without meeting
            ``tol`` warns).
        rbcd_sweeps: ADMM-RBCD's sweeps over the blocks per u-step, an integer >= 1.
        hinge_smoothing: ADMM-RBCD's :math:`\mu > 0` for the hinge loss (margin units).
        cvxpy_solver: the solver for ``solver="cvxpy"``, a name in ``cvxpy.installed_solvers()``
            (``None``: MOSEK when installed, else Clarabel); its options are
            ``CVXPY_SOLVER_OPTIONS[name]`` when present.
        hidden_bias: append a column of ones to ``X`` (in ``fit``, ``predict`` and the
            patterns), so that each neuron's last weight is its bias; the robust program
            perturbs only the ``d`` features.
        generator: the ``torch.Generator`` for the patterns and ADMM-RBCD's block orders
            (``None``: seeded from torch's global RNG).
        progress: print the residuals every 100 ADMM iterations (every Newton step).

    Attributes (after ``fit``): ``n_features_in_`` (``d``), ``patterns_`` (boolean ``(n, P)``),
    ``v_``, ``w_`` (``(P, d)`` float64, ``(P, d + 1)`` with ``hidden_bias``), ``objective_``
    (the convex objective at the solution; with ``robust_eps > 0`` also
    ``robust_objective_``, the robust program's optimum), ``history_`` (ADMM: a dict of
    per-iteration lists ``objective``, ``primal_residual``, ``dual_residual`` and ``time``
    (seconds since the ADMM began, the factorization included); IPM: per iteration
    ``objective``, ``gap`` (:math:`s^\top \lambda`, original units), ``primal_residual``,
    ``dual_residual`` (scaled units), ``step`` (the step length taken before it) and ``time``
    (since the fit began, the start included); cvxpy: the
    solver's status and time), ``n_iter_``, ``linear_solver_`` (ADMM: ``"cholesky"`` or
    ``"cg"``; ADMM-RBCD: ``"rbcd"``), ``smoothing_bound_`` (ADMM-RBCD, hinge loss).

    References:
        Bai, Gautam, Sojoudi, "Efficient Global Optimization of Two-layer ReLU Networks:
        Quadratic-time Algorithms and Adversarial Training", SIAM J. Math. Data Sci. 2023,
        arXiv:2201.01965. Pilanci, Ergen, "Neural Networks are Convex Regularizers", ICML 2020.
        Vandenberghe, "The CVXOPT linear and quadratic cone program solvers", 2010 (the
        Nesterov-Todd scaling and the predictor-corrector steps). Goulart, Chen, "Clarabel: An
        interior-point solver for conic programs with quadratic objectives", arXiv:2405.12762
        (the start).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(30, 3, generator=g)
        >>> y = torch.relu(X[:, 0]) - X[:, 1]
        >>> model = ConvexReLU(10, beta=1e-2, tol=1e-4, generator=g).fit(X, y)
        >>> bool(model.score(X, y) > 0.9)
        True
        >>> net = model.to_module()
        >>> bool(torch.allclose(net(X.double()).squeeze(1), model.predict(X)))
        True
        >>> ipm = ConvexReLU(beta=1e-2, solver="ipm").fit(X, y, patterns=model.patterns_)
        >>> bool(ipm.history_["gap"][-1] <= 1e-6 * ipm.objective_ <= model.objective_)
        True
    """

    def __init__(self, n_patterns: int = 100, beta: float = 1e-3, *, loss: str = "squared",
                 solver: str = "admm", robust_eps: float = 0.0, rho: float | None = None,
                 rho_cone: float | None = None, relaxation: float = 1.6,
                 linear_solver: str = "auto", balance: bool = True, tol: float = 1e-6,
                 max_iter: int = 10_000, rbcd_sweeps: int = 1, hinge_smoothing: float = 1e-2,
                 cvxpy_solver: str | None = None,
                 hidden_bias: bool = False, generator: torch.Generator | None = None,
                 progress: bool = False):
        self.n_patterns = check_int("n_patterns", n_patterns)
        self.beta = check_nonnegative("beta", beta)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if solver in ("admm", "ipm") and loss != "squared":
            raise ValueError(f"solver={solver!r} solves the squared loss only, got "
                             f"loss={loss!r}; use solver='admm_rbcd' or 'cvxpy'")
        self.loss, self.solver = loss, solver
        if solver == "ipm" and self.beta == 0:
            # without a price on the epigraph variables t_j >= ||z_j|| the barrier has no minimum
            raise ValueError("beta must be > 0 for solver='ipm', got 0.0; use solver='admm' or "
                             "'cvxpy'")
        self.robust_eps = check_nonnegative("robust_eps", robust_eps)
        if self.robust_eps > 0 and solver != "cvxpy":
            raise NotImplementedError("robust_eps > 0 (adversarial training) is implemented "
                                      "for solver='cvxpy' only")
        self.rho = 0.01 if rho is None else check_positive("rho", rho)
        self.rho_cone = (RHO_CONE if rho_cone is None else check_positive("rho_cone", rho_cone))
        self.relaxation = check_positive("relaxation", relaxation)
        if self.relaxation >= 2:
            raise ValueError(f"relaxation must be a number in (0, 2), got {relaxation!r}")
        if linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got "
                             f"{linear_solver!r}")
        self.linear_solver = linear_solver
        self.cg_tol = CG_TOL
        self.balance = check_flag("balance", balance)
        if cvxpy_solver is not None and not isinstance(cvxpy_solver, str):
            raise ValueError(f"cvxpy_solver must be None or a solver's name (a str), got "
                             f"{cvxpy_solver!r}")
        self.cvxpy_solver = None if cvxpy_solver is None else cvxpy_solver.upper()
        self.tol = check_positive("tol", tol)
        self.max_iter = check_int("max_iter", max_iter)
        self.rbcd_sweeps = check_int("rbcd_sweeps", rbcd_sweeps)
        self.hinge_smoothing = check_positive("hinge_smoothing", hinge_smoothing)
        self.generator = make_generator(generator)
        self.progress = check_flag("progress", progress)
        self.hidden_bias = check_flag("hidden_bias", hidden_bias)

    # -- data ---------------------------------------------------------------------------------
    def _check_data(self, X, y) -> tuple[Tensor, Tensor]:
        X = _as_float64("X", X, (2,))
        y = _as_float64("y", y, (1, 2))
        if y.dim() == 2:
            if y.shape[1] != 1:
                raise ValueError(f"y must have shape (n,) or (n, 1), got {tuple(y.shape)}")
            y = y[:, 0]
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X and y must have the same number of rows, got X {tuple(X.shape)}"
                             f" and y {tuple(y.shape)}")
        if X.shape[0] == 0:
            raise ValueError("X must have at least one row")
        if self.loss != "squared":
            values = set(torch.unique(y).tolist())
            if values <= {0.0, 1.0}:
                self.classes_ = (0.0, 1.0)
                y = 2 * y - 1
            elif values <= {-1.0, 1.0}:
                self.classes_ = (-1.0, 1.0)
            else:
                raise ValueError(f"y must hold labels in {{0, 1}} or {{-1, 1}} for "
                                 f"loss={self.loss!r}, got values {sorted(values)[:5]}")
        return X, y

    def _check_patterns(self, patterns, n: int) -> Tensor:
        D = _as_float64("patterns", patterns, (2,))
        if D.shape[0] != n:
            raise ValueError(f"patterns must have one row per row of X ({n}), got shape "
                             f"{tuple(D.shape)}")
        if not ((D == 0) | (D == 1)).all():
            raise ValueError("patterns must hold only 0 and 1 (or booleans)")
        return D.bool()

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X, y, patterns=None) -> "ConvexReLU":
        """Solve the sampled convex program on ``(X, y)``; ``patterns`` (an ``(n, P)`` 0/1
        array, e.g. another model's ``patterns_``) replaces the sampled ones."""
        X, y = self._check_data(X, y)
        self.n_features_in_ = X.shape[1]
        if self.hidden_bias:
            X = torch.cat([X, X.new_ones(X.shape[0], 1)], dim=1)
        if patterns is None:
            D = sample_patterns(X, self.n_patterns, self.generator)
        else:
            D = self._check_patterns(patterns, X.shape[0])
        self.patterns_ = D
        if self.solver == "cvxpy":
            self.v_, self.w_ = self._fit_cvxpy(X, y, D.double())
        elif self.solver == "ipm":
            self.v_, self.w_ = self._fit_ipm(X, y, D.double())
        elif self.solver == "admm_rbcd":
            self.v_, self.w_ = self._fit_admm_rbcd(X, y, D.double())
        else:
            self.v_, self.w_ = self._fit_admm(X, y, D.double())
        self.objective_ = self._objective(X, y, D.double(), self.v_, self.w_)
        return self

    def _loss(self, y_hat: Tensor, y: Tensor) -> float:
        if self.loss == "squared":
            return 0.5 * float(((y_hat - y) ** 2).sum())
        if self.loss == "logistic":
            return float(torch.nn.functional.softplus(-y * y_hat).sum())
        return float(torch.relu(1 - y * y_hat).sum())

    def _objective(self, X: Tensor, y: Tensor, D: Tensor, v: Tensor, w: Tensor) -> float:
        """The convex objective at ``(v, w)``: loss of the masked predictions + group lasso."""
        y_hat = (D * (X @ (v - w).T)).sum(1)
        penalty = torch.linalg.vector_norm(v, dim=1).sum() + torch.linalg.vector_norm(w, dim=1
                                                                                      ).sum()
        return self._loss(y_hat, y) + self.beta * float(penalty)

    def _fit_cvxpy(self, X: Tensor, y: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
        import cvxpy as cp
        Xn, yn, Dn = X.numpy(), y.numpy(), D.numpy()
        E = 2 * Dn - 1
        d, P = Xn.shape[1], Dn.shape[1]
        V, W = cp.Variable((d, P)), cp.Variable((d, P))
        y_hat = cp.sum(cp.multiply(Dn, Xn @ (V - W)), axis=1)
        eps = self.robust_eps
        # the worst case over ||delta_k||_inf <= eps moves y_hat_k by eps ||sum_i d_ik
        # (v_i - w_i)||_1 either way (patterns held fixed); zero when eps = 0
        features = self.n_features_in_     # with hidden_bias, the ones column is not perturbed
        spread = eps * cp.norm((V - W)[:features] @ Dn.T, 1, axis=0) if eps > 0 else 0
        margin = cp.multiply(yn, y_hat) - spread if self.loss != "squared" else None
        constraints = []
        if self.loss == "squared":
            if eps > 0:   # 0.5 (|y_hat - y| + spread)^2 through an epigraph variable (DCP)
                t = cp.Variable(len(yn))
                constraints.append(t >= cp.abs(y_hat - yn) + spread)
                loss = cp.sum_squares(t) / 2
            else:
                loss = cp.sum_squares(y_hat - yn) / 2
        elif self.loss == "logistic":
            loss = cp.sum(cp.logistic(-margin))
        else:
            loss = cp.sum(cp.pos(1 - margin))
        penalty = cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0))
        for Z in (V, W):  # (2D_i - I)(X + Delta) z_i >= 0 for every row perturbation
            cone = cp.multiply(E, Xn @ Z)
            if eps > 0:
                cone = cone - eps * np.ones((len(yn), 1)) @ cp.reshape(
                    cp.norm(Z[:features], 1, axis=0), (1, P), order="C")
            constraints.append(cone >= 0)
        problem = cp.Problem(cp.Minimize(loss + self.beta * penalty), constraints)
        name = self.cvxpy_solver or ("MOSEK" if "MOSEK" in cp.installed_solvers()
                                     else "CLARABEL")
        start = time.perf_counter()
        try:
            problem.solve(solver=name, **CVXPY_SOLVER_OPTIONS.get(name, {}))
        except cp.error.SolverError as err:
            raise RuntimeError(f"ConvexReLU: cvxpy solver {name} failed: {err}") from err
        self.history_ = {"status": problem.status, "solver": name,
                         "time": time.perf_counter() - start}
        self.n_iter_ = problem.solver_stats.num_iters
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(f"ConvexReLU: cvxpy solver {name} ended with status "
                               f"{problem.status!r}, not 'optimal'")
        self.robust_objective_ = float(problem.value)
        return torch.from_numpy(V.value.T.copy()), torch.from_numpy(W.value.T.copy())

    def _fit_admm(self, X: Tensor, y: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
        """The ADMM with the exact u-step: one linear system (Cholesky or conjugate gradients)."""
        def exact_u_step(X: Tensor, y: Tensor, D: Tensor, ops: _Split):
            use_cg = (self.linear_solver == "cg" or self.linear_solver == "auto"
                      and 2 * D.shape[1] * X.shape[1] > MAX_CHOLESKY_UNKNOWNS)
            self.linear_solver_ = "cg" if use_cg else "cholesky"
            solve = (self._cg_solver(X, D, ops.F, ops.F_T, ops.G, ops.G_T) if use_cg
                     else self._cholesky_solver(X, D))
            Fty = ops.F_T(y)

            class Step:
                def factor(self, rho: float, rho_cone: float) -> None:
                    self.rho, self.rho_cone = rho, rho_cone
                    solve.factor(rho, rho_cone)

                def __call__(self, u, v, lam, s, nu) -> tuple[Tensor, None]:
                    rho, rho_cone = self.rho, self.rho_cone
                    return solve(Fty / rho + v - lam + (rho_cone / rho) * ops.G_T(s - nu), u), None
            return Step()
        return self._admm(X, y, D, exact_u_step, "ADMM")

    def _admm(self, X: Tensor, y: Tensor, D: Tensor, make_u_step, name: str
              ) -> tuple[Tensor, Tensor]:
        """The ADMM's loop (v-, s- and dual steps, residuals, balancing, history) around the
        u-step that ``make_u_step(X, y, D, ops)`` builds in the scaled units: an object with
        ``factor(rho, rho_cone)`` and ``u_step(u, v, lam, s, nu) -> (u, error)``, ``error`` the
        gradient of the u-subproblem at the new ``u`` (``None`` when it is solved exactly)."""
        n, d = X.shape
        P = D.shape[1]
        # Solve in units where X and y have unit root-mean-square entries, so that the default
        # penalties do not depend on the data's units: with X = a X', y = b y' and v = (b/a) v'
        # the objective is b^2 times the same program in (X', y', v') with beta' = beta/(a b).
        # Labels +-1 have b = 1, and then the classification losses scale the same way.
        X, y, beta, x_scale, y_scale = _unit_scale(X, y, self.beta)
        to_original = y_scale / x_scale
        start = time.perf_counter()
        rho, rho_cone, alpha = self.rho, self.rho_cone, self.relaxation
        ops = _Split(X, D)
        G_T = ops.G_T
        u_step = make_u_step(X, y, D, ops)
        u_step.factor(rho, rho_cone)
        self.n_factorizations_ = 1
        u = torch.zeros(2 * P, d, dtype=X.dtype)
        v, lam = u.clone(), u.clone()
        s, nu = torch.zeros(n, 2 * P, dtype=X.dtype), torch.zeros(n, 2 * P, dtype=X.dtype)
        history = {"objective": [], "primal_residual": [], "dual_residual": [], "time": []}
        sqrt_p, sqrt_q = math.sqrt(u.numel() + s.numel()), math.sqrt(u.numel())
        for k in range(1, self.max_iter + 1):
            u, error = u_step(u, v, lam, s, nu)
            Gu = ops.G(u)
            # over-relaxation (Boyd et al. 2011, 3.4.3): both constraints see alpha u + ...
            u_hat = alpha * u + (1 - alpha) * v
            Gu_hat = alpha * Gu + (1 - alpha) * s
            v_old, s_old = v, s
            v = u_hat + lam
            prox_group_l2_([v], beta / rho)
            s = torch.relu(Gu_hat + nu)
            lam = lam + u_hat - v
            nu = nu + Gu_hat - s
            primal_u = float(torch.linalg.vector_norm(u - v))
            primal_c = float(torch.linalg.vector_norm(Gu - s))
            dual_u, dual_c = rho * (v - v_old), rho_cone * G_T(s - s_old)
            primal = math.hypot(primal_u, primal_c)
            # an inexact u-step leaves its subproblem's gradient in the optimality condition
            dual_vector = dual_u + dual_c if error is None else dual_u + dual_c - error
            dual = float(torch.linalg.vector_norm(dual_vector))
            objective = self._loss(ops.F(v), y) + beta * float(
                torch.linalg.vector_norm(v, dim=1).sum())
            history["objective"].append(objective * y_scale ** 2)
            history["primal_residual"].append(primal)
            history["dual_residual"].append(dual)
            history["time"].append(time.perf_counter() - start)
            if self.progress and k % 100 == 0:
                print(f"ConvexReLU {name} {k}: objective {history['objective'][-1]:.8g}, "
                      f"primal {primal:.3e}, dual {dual:.3e}")
            scale_primal = max(math.hypot(float(torch.linalg.vector_norm(u)),
                                          float(torch.linalg.vector_norm(Gu))),
                               math.hypot(float(torch.linalg.vector_norm(v)),
                                          float(torch.linalg.vector_norm(s))))
            scale_dual = float(torch.linalg.vector_norm(rho * lam + rho_cone * G_T(nu)))
            if (primal <= sqrt_p * self.tol + self.tol * scale_primal
                    and dual <= sqrt_q * self.tol + self.tol * scale_dual):
                break
            if k % 10 == 0 and self.balance:
                # residual balancing (Boyd et al. 2011, 3.4.1), for each constraint on its own;
                # the scaled duals scale by 1/penalty
                factor_u = _balance(primal_u, float(torch.linalg.vector_norm(dual_u)))
                factor_c = _balance(primal_c, float(torch.linalg.vector_norm(dual_c)))
                if factor_u != 1 or factor_c != 1:
                    rho, rho_cone = rho * factor_u, rho_cone * factor_c
                    lam, nu = lam / factor_u, nu / factor_c
                    u_step.factor(rho, rho_cone)
                    self.n_factorizations_ += 1
        else:
            warnings.warn(f"ConvexReLU: {name} did not meet tol={self.tol} in max_iter="
                          f"{self.max_iter} iterations (primal residual {primal:.3e}, "
                          f"dual {dual:.3e}); raise max_iter or tol",
                          RuntimeWarning, stacklevel=4)
        self.history_, self.n_iter_ = history, k
        return to_original * v[:P].clone(), to_original * v[P:].clone()

    def _fit_admm_rbcd(self, X: Tensor, y: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
        """The ADMM with randomized block coordinate descent u-steps (any of the losses)."""
        generator, sweeps, loss_name = self.generator, self.rbcd_sweeps, self.loss
        self.linear_solver_ = "rbcd"

        def rbcd_u_step(X: Tensor, y: Tensor, D: Tensor, ops: _Split):
            P, d = D.shape[1], X.shape[1]
            XtX, eye = X.T @ X, torch.eye(d, dtype=X.dtype)
            signs = 2 * D - 1
            loss = _SmoothLoss(loss_name, y, self.hinge_smoothing)

            class Step:
                def factor(self, rho: float, rho_cone: float) -> None:
                    # the quadratic part of a block's Hessian, the same for u_i and z_i
                    self.rho, self.rho_cone = rho, rho_cone
                    self.A = rho * eye + rho_cone * XtX
                    self.A_factor = torch.linalg.cholesky(self.A)

                def __call__(self, u, v, lam, s, nu) -> tuple[Tensor, Tensor]:
                    u, y_hat = u.clone(), ops.F(u)
                    shift_u, shift_c = lam - v, nu - s      # u + shift_u: u's ADMM residual
                    # block i is (rows i and P + i of u), as (2, d) views
                    blocks, shifts_u = u.view(2, P, d), shift_u.view(2, P, d)
                    shifts_c = shift_c.view(-1, 2, P)
                    for _ in range(sweeps):
                        for i in torch.randperm(P, generator=generator).tolist():
                            y_hat = _rbcd_block_step(X, D[:, i], signs[:, i], blocks[:, i],
                                                     shifts_u[:, i], shifts_c[:, :, i], y_hat,
                                                     loss, self)
                    error = (ops.F_T(loss.derivatives(y_hat)[0]) + self.rho * (u + shift_u)
                             + self.rho_cone * ops.G_T(ops.G(u) + shift_c))
                    return u, error
            return Step()
        v, w = self._admm(X, y, D, rbcd_u_step, "ADMM-RBCD")
        if loss_name == "hinge":
            # what the smoothing can cost: sum_k hinge - envelope at the answer's margins
            y_hat = (D * (X @ (v - w).T)).sum(1)
            envelope = _SmoothLoss("hinge", y, self.hinge_smoothing).terms(y_hat)
            self.smoothing_bound_ = float((torch.relu(1 - y * y_hat) - envelope).sum())
        return v, w

    def _fit_ipm(self, X: Tensor, y: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
        start = time.perf_counter()
        X, y, beta, x_scale, y_scale = _unit_scale(X, y, self.beta)
        P, d = D.shape[1], X.shape[1]
        qp = _ConeQP(X, y, D, beta)
        # the start (as Clarabel's for quadratic objectives): the solution of the Newton system
        # with W = I, min_x 1/2 x^T Q x + c^T x + 1/2 ||G x||^2, s = -G x and z = G x, each
        # shifted into its cones
        identity = dict(w_lin=torch.ones_like(qp.signs),
                        W_inv=torch.eye(d + 1, dtype=X.dtype).repeat(2 * P, 1, 1))
        x = torch.zeros(2 * P, d + 1, dtype=X.dtype)
        c = qp.objective_gradient(x)
        dual_scale = max(1.0, float(torch.linalg.vector_norm(c)))
        x = -_cholesky_solve(_newton_factor(qp.matrix(identity), "the start"),
                             c.reshape(-1)).reshape(x.shape)
        G_x = qp.G(x)
        s = _shift_into_cone((-G_x[0], -G_x[1]))
        dual = _shift_into_cone(G_x)
        unit = torch.zeros_like(x)
        unit[:, -1] = 1.0                                      # the identity of each cone
        history = {"objective": [], "gap": [], "primal_residual": [], "dual_residual": [],
                   "step": [], "time": []}
        alpha = math.nan
        for k in range(1, self.max_iter + 1):
            r_x = qp.objective_gradient(x) + qp.G_T(*dual)
            G_x = qp.G(x)
            r_p = (G_x[0] + s[0], G_x[1] + s[1])
            gap = float((s[0] * dual[0]).sum() + (s[1] * dual[1]).sum())
            residual = float(torch.linalg.vector_norm(r_x))
            objective, primal = qp.objective(x[:, :-1]), _norm(r_p)
            history["objective"].append(objective * y_scale ** 2)
            history["gap"].append(gap * y_scale ** 2)
            history["primal_residual"].append(primal)
            history["dual_residual"].append(residual)
            history["step"].append(alpha)
            history["time"].append(time.perf_counter() - start)
            if self.progress:
                print(f"ConvexReLU IPM {k}: objective {history['objective'][-1]:.10g}, gap "
                      f"{history['gap'][-1]:.3e}, primal residual {primal:.2e}, dual residual "
                      f"{residual:.2e}, step {alpha:.3f}")
            # the relative gap and residuals (the residuals scaled as CVXOPT does)
            if (gap <= self.tol * abs(objective) and primal <= self.tol * max(1.0, _norm(s))
                    and residual <= self.tol * dual_scale):
                break
            if k == self.max_iter:
                continue                                       # the warning below
            mu = gap / qp.m
            scaling = qp.scaling(s, dual)
            factor = _newton_factor(qp.matrix(scaling), f"step {k}")
            lam = scaling["lam"]
            # predictor (affine scaling): lambda o (W^{-1} ds + W dz) = -lambda o lambda
            _, ds_a, dz_a = qp.direction(factor, scaling, r_x, r_p, (-lam[0], -lam[1]))
            alpha_a = min(1.0, _max_step(*lam, *ds_a), _max_step(*lam, *dz_a))
            # s^T z = lambda^T lambda, in the scaled space as well after a step
            gap_a = sum(float(((l + alpha_a * a) * (l + alpha_a * b)).sum())
                        for l, a, b in zip(lam, ds_a, dz_a))
            sigma = min(1.0, max(gap_a, 0.0) / gap) ** 3
            # corrector (Mehrotra): the target sigma mu e and the predictor's second-order term
            r_lin = -lam[0] ** 2 + sigma * mu - ds_a[0] * dz_a[0]
            r_soc = (-_soc_product(lam[1], lam[1]) + sigma * mu * unit
                     - _soc_product(ds_a[1], dz_a[1]))
            dx, ds, dz = qp.direction(factor, scaling, r_x, r_p,
                                      (r_lin / lam[0], _soc_divide(lam[1], r_soc)))
            alpha = min(1.0, IPM_STEP_FRACTION * min(_max_step(*lam, *ds),
                                                       _max_step(*lam, *dz)))
            # back from the scaled space: the increments W (W^{-1} ds) and W^{-1} (W dz), added
            # to s and z (rebuilding them as W (lambda + ...) loses their small entries)
            w, W, W_inv = scaling["w_lin"], scaling["W"], scaling["W_inv"]
            x = x + alpha * dx
            s = (s[0] + alpha * w * ds[0],
                 s[1] + alpha * torch.einsum("jab,jb->ja", W, ds[1]))
            dual = (dual[0] + alpha * dz[0] / w,
                    dual[1] + alpha * torch.einsum("jab,jb->ja", W_inv, dz[1]))
        else:
            warnings.warn(f"ConvexReLU: the interior-point method did not meet tol={self.tol} "
                          f"in max_iter={self.max_iter} Newton steps (gap "
                          f"{history['gap'][-1]:.3e}, primal residual "
                          f"{history['primal_residual'][-1]:.3e}, dual residual "
                          f"{history['dual_residual'][-1]:.3e}); raise max_iter or tol",
                          RuntimeWarning, stacklevel=3)
        self.history_, self.n_iter_ = history, k
        z = x[:, :-1] * (y_scale / x_scale)
        return z[:P].clone(), z[P:].clone()

    @staticmethod
    def _block_gram(X: Tensor, D: Tensor) -> Tensor:
        r"""The ``(P, d, d)`` Gram matrices :math:`X^\top D_i X = X_{S_i}^\top X_{S_i}` (the rows
        :math:`S_i` that pattern :math:`i` keeps), one pattern at a time into a preallocated
        result: an einsum over all patterns materialized :math:`(n, P, d)` (3 GiB at n = 20000,
        d = 100, P = 200) and took 3x longer."""
        P, d = D.shape[1], X.shape[1]
        gram = X.new_empty(P, d, d)
        for i in range(P):
            rows = X[D[:, i] > 0]
            torch.mm(rows.T, rows, out=gram[i])
        return gram

    def _cholesky_solver(self, X: Tensor, D: Tensor):
        r"""``solve(rhs, u_prev)`` for :math:`(I + F^\top F/\rho + (\rho_c/\rho) G^\top G) u =
        \text{rhs}` by one Cholesky factorization (per ``factor(rho, rho_cone)`` call)."""
        n, d = X.shape
        P = D.shape[1]
        # F^T F = [[K, -K], [-K, K]] with K = [D_i X]^T [D_j X]: formed once, O(n (dP)^2);
        # G^T G = I_2P (x) X^T X since (2 D_i - I)^2 = I
        masked = (D.T[:, :, None] * X[None]).permute(1, 0, 2).reshape(n, P * d)
        K = masked.T @ masked
        XtX = X.T @ X

        class Solver:
            def factor(self, rho: float, rho_cone: float) -> None:
                A = torch.kron(torch.eye(2 * P, dtype=X.dtype), XtX * (rho_cone / rho))
                A[:P * d, :P * d] += K / rho
                A[P * d:, P * d:] += K / rho
                A[:P * d, P * d:] -= K / rho
                A[P * d:, :P * d] -= K / rho
                A.diagonal().add_(1.0)
                # torch's factorization and two triangular solves: with 2000 unknowns on one
                # thread, scipy's cho_factor took 9.3 s against 0.35 s, cho_solve 16 ms against
                # 6 ms, and torch.cholesky_solve 44 ms
                self.L = torch.linalg.cholesky(A)

            def __call__(self, rhs: Tensor, u_prev: Tensor) -> Tensor:
                z = torch.linalg.solve_triangular(self.L, rhs.reshape(-1, 1), upper=False)
                return torch.linalg.solve_triangular(self.L.T, z, upper=True).reshape(rhs.shape)
        return Solver()

    def _cg_solver(self, X: Tensor, D: Tensor, F, F_T, G, G_T):
        r"""``solve(rhs, u_prev)`` for the same system by conjugate gradients started at
        ``u_prev``, preconditioned by its ``(d, d)`` diagonal blocks :math:`I + X^\top D_i X/\rho
        + (\rho_c/\rho) X^\top X`; each product costs :math:`O(n d P)` and nothing of size
        :math:`(dP)^2` is formed."""
        gram = self._block_gram(X, D)
        gram = torch.cat([gram, gram])
        XtX = X.T @ X
        eye = torch.eye(X.shape[1], dtype=X.dtype)
        cg_tol = self.cg_tol

        class Solver:
            def factor(self, rho: float, rho_cone: float) -> None:
                self.rho, self.rho_cone, self.iterations = rho, rho_cone, 0
                self.chol = torch.linalg.cholesky(eye + gram / rho + XtX * (rho_cone / rho))

            def __call__(self, rhs: Tensor, u_prev: Tensor) -> Tensor:
                def A(u: Tensor) -> Tensor:
                    return u + F_T(F(u)) / self.rho + (self.rho_cone / self.rho) * G_T(G(u))

                def M_inv(r: Tensor) -> Tensor:
                    return torch.cholesky_solve(r[:, :, None], self.chol)[:, :, 0]
                u = u_prev.clone()
                r = rhs - A(u)
                bound = cg_tol * float(torch.linalg.vector_norm(rhs))
                z = M_inv(r)
                p, rz = z, float((r * z).sum())
                for _ in range(10 * u.numel()):
                    if float(torch.linalg.vector_norm(r)) <= bound:
                        break
                    self.iterations += 1
                    Ap = A(p)
                    step = rz / float((p * Ap).sum())
                    u = u + step * p
                    r = r - step * Ap
                    z = M_inv(r)
                    rz, rz_old = float((r * z).sum()), rz
                    p = z + (rz / rz_old) * p
                return u
        return Solver()

    # -- the network --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "v_"):
            raise RuntimeError("ConvexReLU: call fit(X, y) first")

    def decision_function(self, X) -> Tensor:
        r"""The network's output :math:`f(x) = \sum_i (x^\top v_i)_+ - (x^\top w_i)_+` per row,
        float64."""
        self._check_fitted()
        X = _as_float64("X", X, (2,))
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns, got {X.shape[1]}")
        if self.hidden_bias:
            X = torch.cat([X, X.new_ones(X.shape[0], 1)], dim=1)
        return torch.relu(X @ self.v_.T).sum(1) - torch.relu(X @ self.w_.T).sum(1)

    def predict(self, X) -> Tensor:
        """The output (squared loss) or the label, in ``fit``'s encoding (classification)."""
        out = self.decision_function(X)
        if self.loss == "squared":
            return out
        low, high = self.classes_
        return torch.where(out >= 0, high, low).to(torch.float64)

    def score(self, X, y) -> float:
        """:math:`R^2` (squared loss) or the accuracy (classification)."""
        X, y = _as_float64("X", X, (2,)), _as_float64("y", y, (1, 2)).reshape(-1)
        pred = self.predict(X)
        if pred.shape != y.shape:
            raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} "
                             f"and {y.shape[0]}")
        if self.loss != "squared":
            return float((pred == y).double().mean())
        total = float(((y - y.mean()) ** 2).sum())
        return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else math.nan

    def to_module(self) -> nn.Sequential:
        """The network as ``nn.Sequential(Linear(d, m), ReLU(), Linear(m, 1, bias=False))``
        (float64; the hidden bias is each neuron's last weight with ``hidden_bias``, else zero),
        one neuron per nonzero :math:`v_i` or :math:`w_i`; its output is
        :meth:`decision_function`'s."""
        self._check_fitted()
        blocks = torch.cat([self.v_, self.w_])
        signs = torch.cat([torch.ones(len(self.v_)), -torch.ones(len(self.w_))]).double()
        norms = torch.linalg.vector_norm(blocks, dim=1)
        keep = norms > 0
        scale = norms[keep].sqrt()
        hidden = blocks[keep] / scale[:, None]
        out = signs[keep] * scale
        d, m = self.n_features_in_, int(keep.sum())
        net = nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, 1, bias=False)).double()
        with torch.no_grad():
            net[0].weight.copy_(hidden[:, :d])
            if self.hidden_bias:
                net[0].bias.copy_(hidden[:, d])
            else:
                net[0].bias.zero_()
            net[2].weight.copy_(out[None])
        return net
