r"""Entropic optimal transport: Sinkhorn scaling and Sinkhorn-Newton-Sparse (SNS).

:func:`entropic_ot` solves, for marginals :math:`a \in \mathbb{R}^n_{\ge 0}`,
:math:`b \in \mathbb{R}^m_{\ge 0}` of equal mass, a cost :math:`C` and a regularization
:math:`\varepsilon > 0`,

.. math::

    \min_{P \ge 0,\; P 1 = a,\; P^\top 1 = b}\; \langle C, P\rangle
        + \varepsilon \sum_{ij} P_{ij} (\log P_{ij} - 1),

through its concave dual in potentials :math:`(f, g)` (in the cost's units)

.. math::

    D(f, g) = \langle a, f\rangle + \langle b, g\rangle - \varepsilon \sum_{ij} P_{ij},
    \qquad P_{ij} = \exp\big((f_i + g_j - C_{ij}) / \varepsilon\big),

    \nabla D = (a - P 1,\; b - P^\top 1), \qquad
    \nabla^2 D = -\frac{1}{\varepsilon}
        \begin{pmatrix} \operatorname{diag}(P 1) & P \\ P^\top & \operatorname{diag}(P^\top 1)
        \end{pmatrix}.

The optimal plan is :math:`P(f^*, g^*)`; the marginal error of a plan is
:math:`\|P 1 - a\|_1 + \|P^\top 1 - b\|_1` (the L1 norm of the dual gradient).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from torch import Tensor

from stochstep.stepping.checks import check_flag, check_int, check_positive

__all__ = ["entropic_ot", "OTResult", "OTLog", "METHODS"]

METHODS = ("auto", "sinkhorn", "sns")
# Scalings u, v are absorbed into the potentials when they leave [1/_ABSORB, _ABSORB]: far from
# float64's range (1e308), so products u K v never overflow, and rarely enough (every absorption
# is one exp of the whole cost matrix) to keep Sinkhorn at two matrix-vector products per step.
_ABSORB = 1e50
_MASS_RTOL = 1e-8
# "auto": the rate is judged from iteration _AUTO_START on, every _AUTO_EVERY iterations; Newton
# takes over when Sinkhorn's predicted remaining iterations exceed _AUTO_SWITCH. A Newton run is
# ~10-16 steps costing some hundreds of Sinkhorn steps, but the early rate underestimates how
# long Sinkhorn will crawl: against 1000, 300 was 1.3-3.8x faster in 6 of 8 runs (n 500-1000,
# d 2-10, reg 1e-3-5e-3, tol 1e-6 and 1e-9), the same in 1 (no switch) and 1.2x slower in 1.
# Judging from 75 rather than 100 was 1.0-1.2x faster on the hard cases of benchmarks/ot.py
# (n 500-2000, d 10, reg 1e-3) and left the easy ones (reg 1e-2) with Sinkhorn alone.
_AUTO_START, _AUTO_EVERY, _AUTO_SWITCH = 75, 25, 300
_LINE_SEARCH_HALVINGS = 30
_CG_MAX = 50
_DAMP_START, _DAMP_MIN, _DAMP_MAX = 1e-4, 1e-6, 1e8
_CG_REFACTOR = 10
_PRECONDITIONER_DROP = 1e-2
_PRECONDITIONER_FLOOR = 1e-8
# Newton's plan passes run over blocks of this many entries (1 MiB of float64): each block's
# exponent, exponential and sums stay in cache, where a dense n x m plan would be written and
# read back from memory several times per pass
_BLOCK_ELEMENTS = 1 << 17
# Newton's plans are evaluated on a support found with this margin (in units of reg in the
# exponent, e^-20 = 2e-9), valid while the potentials move less (see _SparsePlan)
_SUPPORT_MARGIN = 20.0


@dataclass
class OTLog:
    """What a run did: ``stages`` (iterations per stage: ``{"sinkhorn": n1, "newton": n2}``),
    ``marginal_error`` (per iteration, the worst problem of a batch, before the iteration's
    update; the last entry is the returned plan's), ``time`` (seconds since the start at each
    entry of ``marginal_error``), ``converged`` (every problem within ``tol``), ``topk`` (the
    entries kept per row and column of the last Newton step's Hessian, 0 without Newton),
    ``stalled`` (Newton stopped before ``tol`` and ``max_iter``: no step along even a
    heavily damped direction lowered the error, which rounding causes near 1e-15)."""

    stages: dict = field(default_factory=lambda: {"sinkhorn": 0, "newton": 0})
    marginal_error: list = field(default_factory=list)
    time: list = field(default_factory=list)
    converged: bool = False
    topk: int = 0
    stalled: bool = False


@dataclass
class OTResult:
    """The plan (dense, or ``torch.sparse_coo`` with ``sparse=True``), the dual potentials
    ``f``, ``g`` in the cost's units (``plan = exp((f_i + g_j - C_ij) / reg)``), the final
    marginal error per problem (``error``, shape of the batch) and the :class:`OTLog`."""

    plan: Tensor
    f: Tensor
    g: Tensor
    error: Tensor
    log: OTLog


def entropic_ot(a, b, C, reg, *, method: str = "auto", tol: float = 1e-9,
                max_iter: int = 100_000, warm_start: int = 100, topk: int = 10,
                sparse: bool = False, progress: bool = False) -> OTResult:
    r"""Solve entropic optimal transport by Sinkhorn, Sinkhorn-Newton-Sparse, or both.

    .. math::

        \text{Sinkhorn (scaling form):}\quad
        u \leftarrow a \oslash (K v),\quad v \leftarrow b \oslash (K^\top u),\quad
        K = e^{(f 1^\top + 1 g^\top - C)/\varepsilon},\quad P = \operatorname{diag}(u) K
        \operatorname{diag}(v),

        \text{Newton:}\quad
        \begin{pmatrix} (1 + \lambda) \operatorname{diag}(r) & P \\ P^\top &
        (1 + \lambda) \operatorname{diag}(c) \end{pmatrix}
        \begin{pmatrix} \delta f \\ \delta g \end{pmatrix}
        = \varepsilon \begin{pmatrix} a - r \\ b - c \end{pmatrix},\quad r = P1,\; c = P^\top 1,

    then :math:`(f, g) \mathrel{+}= t\,(\delta f, \delta g)` with :math:`t = 1, 1/2, \dots`
    the first step that raises :math:`D` by :math:`10^{-4}\, t\, \langle \nabla D, \delta\rangle`
    or lowers the marginal error (which stays measurable where rounding hides changes of
    :math:`D`). With :math:`\lambda = 0` this is Newton's step
    :math:`\nabla^2 D\, \delta = -\nabla D`; the Levenberg-Marquardt damping :math:`\lambda`
    starts at :math:`10^{-4}`, is divided by 4 after each full step (0 once below
    :math:`10^{-6}`) and multiplied by 4 after a step with :math:`t < 1/2`: far from the
    solution the quadratic model of :math:`e^{(\cdot)/\varepsilon}` holds only for short steps.

    For :math:`\lambda = 0` the matrix is singular along :math:`(1, -1)` (adding a constant to
    :math:`f` and removing it from :math:`g` leaves :math:`P` unchanged): the system is solved
    without its last equation and with :math:`\delta g_m = 0`, which fixes that direction (the
    dropped equation then holds too, as the right side sums to zero over :math:`f` minus
    :math:`g`). Eliminating :math:`\delta f` leaves the Schur complement
    :math:`S = (1 + \lambda) \operatorname{diag}(c) - P^\top ((1 + \lambda)
    \operatorname{diag}(r))^{-1} P`, solved by conjugate gradients to relative residual
    :math:`\min(0.1, e)` (:math:`e` the marginal error) preconditioned by a sparse LU
    factorization (scipy) of :math:`S` with :math:`P` replaced by :math:`\tilde P`: the
    entries of :math:`P` among the ``topk`` largest of their row or of their column (the
    sparsified Hessian of SNS), less the off-diagonal entries of that matrix below
    :math:`10^{-2} \sqrt{S_{ii} S_{jj}}` (it is diagonally dominant, and stays so). A
    factorization is kept while CG needs at most 10 iterations with it, and ``topk`` doubles
    when CG fails to converge in 50 with a fresh one.

    Newton's marginals and products with :math:`P` are exact to rounding, yet cost far less
    than :math:`nm` at small ``reg``: they leave out only the entries
    :math:`P_{ij} \le u\, r_i / \max(n, m)` (:math:`u` the unit roundoff), which together move
    a marginal or a product by less than :math:`u` times its diagonal term, and which are most
    of :math:`P` when it is close to a permutation. The entries that may count are found by a
    pass over :math:`C` with a margin of :math:`e^{-20}`, and that support is reused while the
    potentials provably move less than the margin (one to three passes per run here).

    Sinkhorn's scalings are absorbed into :math:`(f, g)` whenever they leave
    :math:`[10^{-50}, 10^{50}]` (and :math:`u, v` restart at 1), so nothing over- or underflows
    at small ``reg``; entries of :math:`K` or :math:`P` below the smallest normal number times
    :math:`e` are set to 0 (subnormals slow every product by several times; together they move
    a marginal entry by less than :math:`e` times that number times :math:`\max(n, m)`).

    Methods: ``"sinkhorn"``; ``"sns"``: ``warm_start`` Sinkhorn iterations, then Newton;
    ``"auto"``: Sinkhorn, switching to Newton only when, from iteration 75 on, its measured
    linear rate :math:`\rho` predicts more than 300 further iterations to ``tol``
    (:math:`\log(\mathrm{tol}/e_t) / \log \rho`, :math:`e_t` the current error).

    A batch runs its Sinkhorn iterations together (one batched product per step; ``"auto"``
    judges the worst problem's rate) and its Newton steps one problem after another.

    Args:
        a: source marginal, shape ``(n,)`` or ``(B, n)``, entries >= 0 (rows of zero mass get
            zero rows in the plan and potential ``-inf``).
        b: target marginal, shape ``(m,)`` or ``(B, m)``, entries >= 0, the same mass as ``a``
            (relative 1e-8).
        C: cost, shape ``(n, m)`` (shared by a batch) or ``(B, n, m)``, finite. Its dtype and
            device are used (float64 unless ``C`` is another floating type); the Newton
            system is solved on the CPU (scipy), everything else where ``C`` lives.
        reg: the regularization :math:`\varepsilon > 0`, in the cost's units.
        method: ``"auto"``, ``"sinkhorn"`` or ``"sns"``.
        tol: stop when the marginal error of every problem is <= ``tol``.
        max_iter: most iterations, Sinkhorn and Newton together; hitting it without reaching
            ``tol`` warns (RuntimeWarning) and leaves ``log.converged`` False.
        warm_start: Sinkhorn iterations before Newton for ``"sns"``.
        topk: entries kept per row and per column of the sparsified Hessian at the start.
        sparse: return the plan as a sparse COO tensor of its nonzero entries (exact: only
            entries that underflow to zero are left out).
        progress: show a tqdm progress bar.

    Returns:
        :class:`OTResult` (``plan``, ``f``, ``g``, ``error``, ``log``), unbatched if the inputs
        were.

    References:
        Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013
        (arXiv 1306.0895). Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao, Ying,
        "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024
        (arXiv 2401.12253).

    Example:
        >>> import torch
        >>> from stochstep.samplers import entropic_ot
        >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)
        >>> C = (x[:, None] - x[None, :]) ** 2
        >>> a = torch.full((5,), 0.2, dtype=torch.float64)
        >>> res = entropic_ot(a, a, C, reg=0.01, tol=1e-12)
        >>> bool(res.error < 1e-12), bool(torch.allclose(res.plan.sum(1), a, atol=1e-12))
        (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    reg = check_positive("reg", reg)
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter)
    warm_start = check_int("warm_start", warm_start, low=0)
    topk = check_int("topk", topk)
    check_flag("sparse", sparse)
    check_flag("progress", progress)
    a, b, C, batched = _check_problem(a, b, C)

    log = OTLog()
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=max_iter, desc=f"entropic_ot ({method})", leave=False)
    sinkhorn_cap = max_iter if method != "sns" else min(warm_start, max_iter)
    f, g = _sinkhorn(a, b, C, reg, tol, sinkhorn_cap, method == "auto", log, start, bar)
    if method != "sinkhorn" and log.marginal_error[-1] > tol and len(log.time) <= max_iter:
        f, g = _newton(a, b, C, reg, tol, max_iter - log.stages["sinkhorn"], topk, f, g, log,
                       start, bar)
    if bar is not None:
        bar.close()

    plan = _plan(f, g, C, reg)
    error = _marginal_error(plan, a, b)
    log.marginal_error[-1] = error.max().item()  # the returned plan's, recomputed
    log.converged = bool((error <= tol).all())
    if not log.converged:
        if log.stalled:
            why = "Newton stalled"
        elif sum(log.stages.values()) >= max_iter:
            why = f"max_iter={max_iter} reached"
        else:  # the iterations met tol, the plan recomputed from (f, g) misses it by rounding
            why = "rounding in the plan exp((f + g - C) / reg)"
        warnings.warn(f"entropic_ot: {why} with marginal error {log.marginal_error[-1]:.3g} > "
                      f"tol={tol:g} (method={method!r}, reg={reg:g})", RuntimeWarning,
                      stacklevel=2)
    # the stand-in potential of rows and columns without mass is -inf
    f, g = f.masked_fill(a == 0, -math.inf), g.masked_fill(b == 0, -math.inf)
    if not batched:
        plan, f, g, error = plan[0], f[0], g[0], error[0]
    if sparse:
        plan = plan.to_sparse()
    return OTResult(plan=plan, f=f, g=g, error=error, log=log)


def _as_tensor(name: str, x, dtype=None, device=None) -> Tensor:
    try:
        t = torch.as_tensor(x, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}"
                         ) from None
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def _check_problem(a, b, C) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Validate and batch ``(a, b, C)``: shapes ``(B, n)``, ``(B, m)``, ``(B or 1, n, m)``."""
    C = _as_tensor("C", C)
    a = _as_tensor("a", a, C.dtype, C.device)
    b = _as_tensor("b", b, C.dtype, C.device)
    if a.ndim not in (1, 2) or b.ndim != a.ndim:
        raise ValueError(f"a and b must both have shape (n,) and (m,), or (B, n) and (B, m); "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    batched = a.ndim == 2
    if not batched:
        a, b = a[None], b[None]
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got a {tuple(a.shape)} and "
                         f"b {tuple(b.shape)}")
    n, m = a.shape[1], b.shape[1]
    if n == 0 or m == 0:
        raise ValueError("a and b must be non-empty")
    if C.shape == (n, m):
        C = C[None]
    elif not (batched and C.shape == (a.shape[0], n, m)):
        allowed = f"({n}, {m})" + (f" or ({a.shape[0]}, {n}, {m})" if batched else "")
        raise ValueError(f"C must have shape {allowed} to match a and b, got {tuple(C.shape)}")
    # a sum is finite only if every term is (one read of C, no boolean copy); an overflowing
    # sum of finite entries falls back to the entrywise test
    if not (torch.isfinite(C.sum()) or torch.isfinite(C).all()):
        raise ValueError("C must be finite (it holds a NaN or an infinity)")
    for name, x in (("a", a), ("b", b)):
        if not torch.isfinite(x).all() or (x < 0).any():
            raise ValueError(f"{name} must hold finite entries >= 0")
        if (x.sum(-1) <= 0).any():
            raise ValueError(f"{name} must have a positive mass (sum)")
    mass_a, mass_b = a.sum(-1), b.sum(-1)
    gap = ((mass_a - mass_b).abs() / mass_a).max().item()
    if gap > _MASS_RTOL:
        raise ValueError(f"a and b must have the same mass (sum) to relative {_MASS_RTOL:g}, "
                         f"got a relative gap {gap:.3g}")
    return a, b, C, batched


def _plan(f: Tensor, g: Tensor, C: Tensor, reg: float) -> Tensor:
    """``exp((f_i + g_j - C_ij) / reg)`` per problem of a batch (:func:`_plan_entries`)."""
    return _plan_entries(f[:, :, None], g[:, None, :], C, reg)


def _plan_entries(f: Tensor, g: Tensor, C: Tensor, reg: float, out: Tensor | None = None
                  ) -> Tensor:
    """``exp((f + g - C) / reg)`` elementwise (broadcast; into ``out`` when given), with the
    entries below ``e * tiny`` (``tiny`` the dtype's smallest normal number) set to 0:
    subnormal numbers make every later product with the matrix several times slower, and none
    of them moves a marginal by more than ``e * tiny * max(n, m)``. Every plan, dense or on a
    support, goes through here, so its entries round alike."""
    exponent = torch.add(f, g, out=out).sub_(C).div_(reg)
    floor = math.log(torch.finfo(exponent.dtype).tiny) + 1
    return F.threshold_(exponent, floor, -math.inf).exp_()


def _marginal_error(P: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return (P.sum(-1) - a).abs().sum(-1) + (P.sum(-2) - b).abs().sum(-1)


def _sinkhorn(a, b, C, reg, tol, max_iter, auto, log, start, bar):
    """Scaling iterations with absorption; returns the potentials with u, v absorbed."""
    # rows and columns without mass get a potential so low that their plan entries are 0
    # (finite, so that 0 * potential stays 0); their scalings stay 1
    massless_a, massless_b = a == 0, b == 0
    has_massless = bool(massless_a.any() or massless_b.any())
    no_mass = -torch.finfo(a.dtype).max / 4
    f = torch.zeros_like(a).masked_fill_(massless_a, no_mass)
    g = torch.zeros_like(b).masked_fill_(massless_b, no_mass)
    K = _plan(f, g, C, reg)
    column_mass = K.sum(1)  # also the first iteration's column marginal (u = v = 1)
    if not (((K.sum(2) > 0) | massless_a).all() and ((column_mass > 0) | massless_b).all()):
        # exp(-C / reg) underflows on a whole row or column: one exact log-domain sweep gives
        # every row, then every column, mass
        f = reg * (a.log() - torch.logsumexp(-C / reg, dim=2))
        f = f.masked_fill_(massless_a, no_mass)
        g = reg * (b.log() - torch.logsumexp((f[:, :, None] - C) / reg, dim=1))
        g = g.masked_fill_(massless_b, no_mass)
        K = _plan(f, g, C, reg)
        column_mass = K.sum(1)
    u = torch.ones_like(a)
    v = torch.ones_like(b)
    tiny = 1 / _ABSORB
    errors, times = log.marginal_error, log.time
    it = 0
    while True:
        Kv = _times_vector(K, v)
        # columns are exact after the v-update (up to rounding), rows are measured here
        err = (u * Kv).sub_(a).abs_().sum(-1).max().item() + (
            0.0 if it else (column_mass - b).abs().sum(-1).max().item())
        errors.append(err)
        times.append(time.perf_counter() - start)
        if err <= tol or it >= max_iter:
            break
        if auto and it >= _AUTO_START and it % _AUTO_EVERY == 0 and _sinkhorn_is_slow(errors,
                                                                                      tol):
            break
        u = a / Kv
        if has_massless:
            u = u.masked_fill_(massless_a, 1.0)  # 0 / 0 on an empty row
        v = b / _vector_times(u, K)
        if has_massless:
            v = v.masked_fill_(massless_b, 1.0)
        it += 1
        if bar is not None:
            bar.update()
        # one synchronisation for the four extremes (this loop is bound by per-op overhead
        # at n of a few hundred)
        u_low, u_high, v_low, v_high = torch.stack([*torch.aminmax(u), *torch.aminmax(v)]).tolist()
        if not (u_high < _ABSORB and v_high < _ABSORB and u_low > tiny and v_low > tiny):
            f, g = f + reg * u.log(), g + reg * v.log()
            K = _plan(f, g, C, reg)
            u, v = torch.ones_like(u), torch.ones_like(v)
    log.stages["sinkhorn"] = it
    return f + reg * u.log(), g + reg * v.log()


def _times_vector(K: Tensor, v: Tensor) -> Tensor:
    """``K v`` per problem of a batch; one problem by ``torch.mv`` (about 2x faster than ``bmm``
    on one thread)."""
    if K.shape[0] == 1:
        return torch.mv(K[0], v[0])[None]
    return torch.bmm(K, v[:, :, None])[:, :, 0]


def _vector_times(u: Tensor, K: Tensor) -> Tensor:
    """``u^T K`` per problem of a batch; one problem as a vector-matrix product (``bmm`` is up to
    6x slower at n = 2000 on one thread)."""
    if K.shape[0] == 1:
        return (u[0] @ K[0])[None]
    return torch.bmm(u[:, None, :], K)[:, 0, :]


def _sinkhorn_is_slow(errors: list, tol: float) -> bool:
    """Whether the linear rate over the second half of the run predicts more than
    ``_AUTO_SWITCH`` further iterations to ``tol``."""
    t = len(errors) - 1
    now, before = errors[t], errors[t // 2]
    if not 0 < now < before:
        return now > 0  # no progress over half the run: slow
    log_rate = math.log(now / before) / (t - t // 2)
    return math.log(tol / now) / log_rate > _AUTO_SWITCH


def _newton(a, b, C, reg, tol, max_iter, topk, f, g, log, start, bar):
    """Sparse Newton steps, problem by problem; updates ``log``, returns the potentials."""
    B = a.shape[0]
    histories = []
    f, g = f.clone(), g.clone()
    for i in range(B):
        Ci = C[i if C.shape[0] > 1 else 0]
        fi, gi, hist, k, stalled = _newton_one(a[i], b[i], Ci, reg, tol, max_iter, topk, f[i], g[i],
                                      bar, start)
        f[i], g[i] = fi, gi
        histories.append(hist)
        log.topk = max(log.topk, k)
        log.stalled = log.stalled or stalled
    # per Newton iteration: the worst problem's error (a finished problem keeps its last one)
    # and the latest time (problems run one after another)
    steps = max(len(h) for h in histories)
    for s in range(1, steps):
        errs, times = zip(*(h[min(s, len(h) - 1)] for h in histories))
        log.marginal_error.append(max(errs))
        log.time.append(max(times))
    log.stages["newton"] = steps - 1
    return f, g


def _newton_one(a, b, C, reg, tol, max_iter, topk, f, g, bar, start):
    n, m = C.shape
    a_np, b_np = a.cpu().numpy(), b.cpu().numpy()
    plan = _SparsePlan(C, reg, a > 0)
    P, r, c = plan(f, g)
    err = np.abs(r - a_np).sum() + np.abs(c - b_np).sum()
    dual = (a @ f + b @ g).item() - reg * r.sum()
    history = [(err, time.perf_counter() - start)]
    k = min(topk, n, m)
    damp, precondition, stalled = _DAMP_START, None, False
    while err > tol and len(history) <= max_iter:
        # the damped (Levenberg-Marquardt) system: diagonal scaled by 1 + damp
        r_damped, c_damped = (1 + damp) * r, (1 + damp) * c
        fresh = precondition is None
        if fresh:
            try:
                precondition = _sparse_schur_solver(P, r_damped, c_damped, k)
            except RuntimeError:  # singular: P splits into blocks that do not see each other
                damp, stalled = 16 * max(damp, _DAMP_MIN), damp > _DAMP_MAX
                if stalled:
                    break
                continue
        grad_f, grad_g = a_np - r, b_np - c
        df, dg, cg_iterations, solved = _newton_direction(P, r_damped, c_damped, grad_f, grad_g,
                                                          reg, precondition, min(0.1, err))
        # a factorization serves while CG converges fast with it (P changes little late on)
        if not solved or cg_iterations > _CG_REFACTOR:
            precondition = None
        if not solved and fresh and k < min(n, m):
            k = min(2 * k, n, m)  # CG hit its cap with a fresh factorization: a denser one
        slope = grad_f @ df + grad_g @ dg  # <grad D, d> > 0: an ascent direction
        df, dg = torch.as_tensor(df).to(f), torch.as_tensor(dg).to(g)
        t, accepted = 1.0, False
        for _ in range(_LINE_SEARCH_HALVINGS):
            f_new, g_new = f + t * df, g + t * dg
            P_new, r_new, c_new = plan(f_new, g_new)
            err_new = np.abs(r_new - a_np).sum() + np.abs(c_new - b_np).sum()
            dual_new = (a @ f_new + b @ g_new).item() - reg * r_new.sum()
            if math.isfinite(dual_new) and (dual_new >= dual + 1e-4 * t * slope
                                            or err_new < err):
                accepted = True
                break
            t /= 2
        if not accepted:
            # no step helps along this direction: a more damped one (towards a scaled gradient
            # step, which does help when short enough), from a fresh factorization
            damp, precondition = 16 * max(damp, _DAMP_MIN), None
            stalled = damp > _DAMP_MAX
            if stalled:
                break
            continue
        f, g, P, r, c, err, dual = f_new, g_new, P_new, r_new, c_new, err_new, dual_new
        # a full step: trust the quadratic model more; a short one: less
        if t == 1:
            damp = damp / 4 if damp > _DAMP_MIN else 0.0
        elif t < 0.5:
            damp = 4 * max(damp, _DAMP_MIN)
        history.append((float(err), time.perf_counter() - start))
        if bar is not None:
            bar.update()
    return f, g, history, k, stalled


class _SparsePlan:
    """``(f, g) -> (P, r, c)`` for Newton: the plan's marginals ``r = P1``, ``c = P^T 1`` and
    ``P`` (a scipy CSR matrix) on a support that holds every entry ``P_ij > u r_i / max(n, m)``
    (``u`` the unit roundoff). Together the entries left out move a marginal, or a product
    with ``P`` in the Newton system, by less than ``u`` times the diagonal term ``r_i x_i`` or
    ``c_j y_j``: below rounding. At small ``reg`` they are most of ``P`` (97 % for
    ``n = 1000``, ``d = 10``, ``reg = 1e-3``).

    The support is found by a pass over all of ``C`` (in blocks of rows that stay in cache)
    with a margin: at potentials ``(f0, g0)`` it keeps ``P_ij > e^{-M} u r0_i / max(n, m)``.
    At ``(f, g)`` an entry left out has
    ``P_ij <= e^{-M + (f_i - f0_i + max_j (g_j - g0_j)) / reg} u r0_i / max(n, m)``, so the
    support still holds every entry that counts while
    ``(f_i - f0_i + max_j (g_j - g0_j)) / reg - M <= log(r_i / r0_i)`` on every row with mass;
    then only the support's entries are evaluated, else the support is found again."""

    def __init__(self, C: Tensor, reg: float, has_mass: Tensor):
        self.C, self.reg, self.has_mass = C, reg, has_mass
        n, m = C.shape
        self.drop = torch.finfo(C.dtype).eps / 2 / max(n, m)
        self.support = None
        self.passes = 0  # full passes over C (for tests and profiles)

    def __call__(self, f: Tensor, g: Tensor):
        if self.support is not None:
            rows, cols, cost, indptr, f0, g0, r0 = self.support
            P = _plan_entries(f[rows], g[cols], cost, self.reg)
            r = torch.zeros_like(f).index_add_(0, rows, P)
            reach = (f - f0 + (g - g0).max()) / self.reg - _SUPPORT_MARGIN
            if bool((reach <= torch.log(r / r0))[self.has_mass].all()):
                c = torch.zeros_like(g).index_add_(0, cols, P)
                P = sp.csr_matrix((P.cpu().numpy(), cols.cpu().numpy(), indptr),
                                  shape=self.C.shape)
                return P, r.cpu().numpy(), c.cpu().numpy()
        return self._full_pass(f, g)

    def _full_pass(self, f: Tensor, g: Tensor):
        C, reg = self.C, self.reg
        n, m = C.shape
        self.passes += 1
        rows = max(1, min(n, _BLOCK_ELEMENTS // m))
        keep = self.drop * math.exp(-_SUPPORT_MARGIN)
        r, c = C.new_empty(n), C.new_zeros(m)
        block = C.new_empty(rows, m)
        kept_rows, kept_cols, kept = [], [], []
        for lo in range(0, n, rows):
            hi = min(lo + rows, n)
            P = block[: hi - lo]
            _plan_entries(f[lo:hi, None], g[None, :], C[lo:hi], reg, out=P)
            torch.sum(P, 1, out=r[lo:hi])
            c += P.sum(0)
            # one threshold for the block, its smallest row mass's (more entries kept, never
            # fewer)
            F.threshold_(P, keep * r[lo:hi].min().item(), 0.0)
            entries = P.to_sparse()
            i, j = entries.indices()
            kept_rows.append(i + lo)
            kept_cols.append(j)
            kept.append(entries.values())
        i, j, P = torch.cat(kept_rows), torch.cat(kept_cols), torch.cat(kept)
        indptr = np.concatenate([[0], torch.bincount(i, minlength=n).cumsum(0).cpu().numpy()])
        self.support = (i, j, C[i, j], indptr, f, g, r)
        P = sp.csr_matrix((P.cpu().numpy(), j.cpu().numpy(), indptr), shape=(n, m))
        return P, r.cpu().numpy(), c.cpu().numpy()


def _newton_direction(P, r, c, grad_f, grad_g, reg, solve, rtol):
    """The Newton direction of the docstring: conjugate gradients on the Schur complement in g
    of the Hessian (products with ``P``, a scipy sparse matrix holding every entry that is not
    below rounding), with the last coordinate of delta g fixed at 0, preconditioned by
    ``solve`` (a sparse LU factorization of the sparsified Schur complement). Numpy arrays in
    and out: ``(delta f, delta g, CG iterations, whether CG reached rtol)``."""
    n, m = P.shape
    # rows and columns without mass (zero marginal entries) keep their potentials
    inv_r = np.divide(1.0, r, out=np.zeros_like(r), where=r > 0)
    c_safe = np.where(c > 0, c, 1.0)
    rhs_f, rhs_g = reg * grad_f, reg * grad_g
    if m == 1:  # delta g = 0 fixes the gauge; nothing is left to solve
        return rhs_f * inv_r, np.zeros_like(c), 0, True
    rhs = (rhs_g - P.T @ (rhs_f * inv_r))[:-1]
    y = np.zeros(m, dtype=r.dtype)

    def schur(x):  # S x, S = diag(c) - P^T diag(1/r) P, x with x_m = 0
        y[:-1] = x
        return (c_safe * y - P.T @ ((P @ y) * inv_r))[:-1]

    dg = np.zeros(m - 1, dtype=r.dtype)
    res = rhs.copy()
    target = rtol * np.linalg.norm(rhs)
    z = solve(res)
    d = z.copy()
    rz = res @ z
    done, its = bool(np.linalg.norm(res) <= target), 0
    while not done and its < _CG_MAX:
        Sd = schur(d)
        step = rz / (d @ Sd)
        dg += step * d
        res -= step * Sd
        its += 1
        done = bool(np.linalg.norm(res) <= target)
        z = solve(res)
        rz, rz_old = res @ z, rz
        d = z + (rz / rz_old) * d
    dg = np.append(dg, 0.0)
    df = (rhs_f - P @ dg) * inv_r
    return df, dg, its, done


def _sparse_schur_solver(P, r, c, k):
    """``x -> S~^{-1} x`` for the sparsified Schur complement (its last row and column
    removed), ``S~ = diag(c) - P~^T diag(1/r) P~`` with ``P~`` the entries of ``P`` (a scipy
    sparse matrix) among the ``k`` largest of their row or their column, less its off-diagonal
    entries below ``_PRECONDITIONER_DROP * sqrt(S~_ii S~_jj)``; factorized once by scipy's
    sparse LU. Numpy arrays in and out."""
    n, m = P.shape
    P = P.tocoo()
    inv_r = np.divide(1.0, r, out=np.zeros_like(r), where=r > 0)
    c = np.where(c > 0, c, 1.0)
    # entries below _PRECONDITIONER_FLOOR r_i change S~ by less than that fraction, and are
    # most of the support (which holds every entry above rounding): not worth ranking
    large = P.data > _PRECONDITIONER_FLOOR * r[P.row]
    P = sp.coo_matrix((P.data[large], (P.row[large], P.col[large])), shape=(n, m))
    # rank of each entry within its row and within its column, largest first: sort by value,
    # then (stably) by row or column
    by_value = np.argsort(-P.data, kind="stable")
    keep = np.zeros(P.nnz, dtype=bool)
    for line, size in ((P.row, n), (P.col, m)):
        order = by_value[np.argsort(line[by_value], kind="stable")]
        first = np.concatenate([[0], np.bincount(line, minlength=size).cumsum()[:-1]])
        keep[order[np.arange(P.nnz) - first[line[order]] < k]] = True
    Ps = sp.csr_matrix((P.data[keep], (P.row[keep], P.col[keep])), shape=(n, m))
    S = (sp.diags(c) - Ps.T @ sp.diags(inv_r) @ Ps).tocoo()
    # S~ is diagonally dominant (P~ 1 <= r, P~^T 1 <= c), and stays so when off-diagonal
    # entries go: dropping the small ones cuts the LU's fill (in 10-D, from seconds to
    # tenths at n = 2000) and costs CG an iteration or two
    scale = np.sqrt(np.abs(S.diagonal()))
    keep = (S.row == S.col) | (np.abs(S.data) >= _PRECONDITIONER_DROP * scale[S.row]
                               * scale[S.col])
    S = sp.csc_matrix((S.data[keep], (S.row[keep], S.col[keep])), shape=S.shape)
    # S~ is symmetric and diagonally dominant: a symmetric fill-reducing ordering and no
    # pivoting (3-5x faster to factorize and solve than the default, with a third of the fill)
    return spla.splu(S[:-1, :-1], permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                     options=dict(SymmetricMode=True)).solve
