r"""Convex domains and mirror maps for the online and mirror-descent optimizers.

A domain is a closed convex set :math:`X \subseteq \mathbb{R}^n` that acts on ONE vector: the
concatenation of all tensors it is given (the papers' :math:`x` is one vector, so a
:class:`Ball` bounds the joint norm of all parameters of a param group). Every domain has

- ``project(x)``: the Euclidean projection :math:`\Pi_X(x) = \operatorname{argmin}_{z \in X}
  \|z - x\|_2` of one tensor of any shape (treated as its flattened vector), as a new tensor;
- ``project_(tensors)``: the same projection in place on a list of tensors taken jointly, so
  ``project_`` on a list equals ``project`` on the concatenation;
- ``contains(tensors, atol)`` and ``diameter`` (:math:`\max_{x, z \in X} \|x - z\|_2`, or
  ``math.inf`` where it is unbounded or unknown).

The closed forms (:class:`Ball`, :class:`Box`, :class:`Simplex`, :class:`L1Ball`) run in the
tensors' dtype and device with no Python loop over entries; :class:`CvxpySet` projects onto any
convex set written in cvxpy. A mirror map (:data:`MIRRORS`) turns a direction into a step
:math:`\operatorname{argmin}_{x \in X} \langle d, x\rangle + D_\psi(x, y)/\eta`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor

from stochstep.stepping.checks import check_nonnegative, check_positive
from stochstep.stepping.kernels import _add_scaled_, _mul_

__all__ = ["Domain", "Ball", "Box", "Simplex", "L1Ball", "CvxpySet", "MirrorMap",
           "EuclideanMirror", "EntropyMirror", "MIRRORS", "ACCURATE_SOLVER_OPTIONS",
           "check_domain", "get_mirror"]


# -- lists of tensors as one vector -----------------------------------------------------------
def _as_list(name: str, tensors) -> list[Tensor]:
    """``tensors`` (a tensor, or a sequence of tensors) as a list of real floating tensors."""
    items = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    for i, t in enumerate(items):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            what = f"dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must hold real floating-point tensors, got {what} "
                             f"at position {i}")
    return items


def _concat(tensors: list[Tensor]) -> Tensor:
    """The tensors flattened and concatenated into one vector (no copy for a single tensor)."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([t.reshape(-1) for t in tensors])


def _write(tensors: list[Tensor], vector: Tensor) -> None:
    """Copy consecutive pieces of ``vector`` into ``tensors`` (cast to each one's dtype)."""
    pieces = vector.split([t.numel() for t in tensors])
    torch._foreach_copy_(tensors, [p.view_as(t) for p, t in zip(pieces, tensors)])


def _joint_norm(tensors: list[Tensor]) -> Tensor:
    """The Euclidean norm of the concatenation, as a 0-dim tensor (no host synchronisation)."""
    norms = torch._foreach_norm(tensors)
    dtype = norms[0].dtype
    for n in norms[1:]:
        dtype = torch.promote_types(dtype, n.dtype)
    return torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))


def _as_bound(name: str, value) -> float | Tensor:
    """A bound or centre: a float for a number (or a 1-entry tensor), else a flat float64
    tensor."""
    if isinstance(value, Tensor) and value.is_complex():
        raise ValueError(f"{name} must be real, got dtype {value.dtype}")
    try:
        t = torch.as_tensor(value, dtype=torch.float64).detach().reshape(-1).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number or a tensor of numbers, got {value!r}"
                         ) from None
    if t.numel() == 0 or torch.isnan(t).any():
        raise ValueError(f"{name} must hold at least one number and no NaN, got {value!r}")
    return float(t) if t.numel() == 1 else t


def _pieces(name: str, bound: float | Tensor, tensors: list[Tensor]) -> float | list[Tensor]:
    """``bound`` split like ``tensors`` and cast to each one's dtype and device (a number stays
    a float); a tensor bound must have as many entries as the joint vector."""
    if not isinstance(bound, Tensor):
        return bound
    n = sum(t.numel() for t in tensors)
    if bound.numel() != n:
        raise ValueError(f"{name} has {bound.numel()} entries but the vector it bounds (the "
                         f"tensors flattened and concatenated) has {n}; pass a number or a "
                         f"tensor with {n} entries")
    bound = bound.to(tensors[0].device)
    return [p.to(t.dtype).view_as(t) for p, t in
            zip(bound.split([t.numel() for t in tensors]), tensors)]


def _piece(name: str, bound: float | Tensor, v: Tensor) -> float | Tensor:
    """``bound`` for the single flat vector ``v`` (see :func:`_pieces`)."""
    pieces = _pieces(name, bound, [v])
    return pieces[0] if isinstance(pieces, list) else pieces


def _simplex_threshold(v: Tensor, total: float) -> Tensor:
    r"""The :math:`\theta` with :math:`\sum_i \max(v_i - \theta, 0) = ` ``total`` (> 0), by
    sorting (Held, Wolfe and Crowder 1974; Duchi et al. 2008, Fig. 1): with :math:`u` sorted
    decreasingly and :math:`\rho = \max\{j : u_j - (\sum_{i \le j} u_i - z)/j > 0\}`,
    :math:`\theta = (\sum_{i \le \rho} u_i - z)/\rho`. The condition holds exactly for
    :math:`j \le \rho`, so :math:`\rho` is a count: no loop and no host synchronisation."""
    u = torch.sort(v, descending=True).values
    excess = u.cumsum(0) - total
    j = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    rho = (u * j > excess).sum()  # >= 1: j = 1 always qualifies, as total > 0
    return excess.gather(0, (rho - 1).view(1)).squeeze(0) / rho


# -- domains --------------------------------------------------------------------------------
class Domain:
    r"""A closed convex set :math:`X \subseteq \mathbb{R}^n`, acting on one (flattened,
    concatenated) vector; subclasses give ``_project_vector`` and ``_contains_vector``.

    .. math::
        \Pi_X(x) = \operatorname*{argmin}_{z \in X} \|z - x\|_2

    Attributes:
        diameter: :math:`\max_{x, z \in X}\|x - z\|_2`; ``math.inf`` if unbounded or unknown.
    """

    diameter: float = math.inf

    def project(self, x: Tensor) -> Tensor:
        """The projection of ``x`` (any shape, taken as its flattened vector): a new tensor of
        the same shape, dtype and device."""
        (x,) = _as_list("x", [x])
        return self._project_vector(x.reshape(-1)).reshape(x.shape)

    @torch.no_grad()  # an update of the values, as in an optimizer step (parameters too)
    def project_(self, tensors: Sequence[Tensor] | Tensor) -> None:
        """Project, in place, the vector made of all ``tensors`` flattened and concatenated."""
        tensors = _as_list("tensors", tensors)
        if tensors:
            self._project_list_(tensors)

    def contains(self, tensors: Sequence[Tensor] | Tensor, atol: float = 1e-6) -> bool:
        """Whether the joint vector of ``tensors`` lies in the set, up to ``atol`` (absolute,
        on each constraint)."""
        tensors = _as_list("tensors", tensors)
        return bool(self._contains_vector(_concat(tensors), check_nonnegative("atol", atol)))

    def _project_vector(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _project_list_(self, tensors: list[Tensor]) -> None:
        _write(tensors, self._project_vector(_concat(tensors)))

    def _contains_vector(self, v: Tensor, atol: float) -> bool:
        raise NotImplementedError


class Ball(Domain):
    r"""The Euclidean ball :math:`\{x : \|x - c\|_2 \le r\}`, projected by scaling.

    .. math::
        \Pi(x) = c + \frac{r}{\max(r, \|x - c\|_2)}\,(x - c)

    The norm is joint over all tensors of the vector (one param group).

    Args:
        radius: :math:`r > 0`.
        center: :math:`c`: None (the origin), a number (every entry), or a tensor with as many
            entries as the vector.

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import Ball
        >>> Ball(1.0).project(torch.tensor([3.0, 4.0]))
        tensor([0.6000, 0.8000])
        >>> Ball(2.0).diameter
        4.0
    """

    def __init__(self, radius: float, center=None):
        self.radius = check_positive("radius", radius)
        self.center = None if center is None else _as_bound("center", center)
        self.diameter = 2 * self.radius

    def __repr__(self):
        return f"Ball(radius={self.radius}" + (
            ")" if self.center is None else f", center={self.center})")

    def _project_vector(self, v):
        c = 0.0 if self.center is None else _piece("center", self.center, v)
        diff = v - c
        return c + diff * (self.radius / torch.linalg.vector_norm(diff).clamp_min(self.radius))

    def _project_list_(self, tensors):
        centers = None if self.center is None else _pieces("center", self.center, tensors)
        diffs = tensors if centers is None else torch._foreach_sub(tensors, centers)
        norm = _joint_norm(diffs)
        if self._inside(norm):
            return
        _mul_(diffs, self.radius / norm.clamp_min(self.radius))
        if centers is not None:
            torch._foreach_add_(diffs, centers)
            torch._foreach_copy_(tensors, diffs)

    def _inside(self, norm: Tensor) -> bool:
        """Whether the point is known to be inside, so that scaling by exactly 1 can be skipped
        (half the time of a projection of ResNet-18's parameters). Only read on CPU, where it
        costs nothing: elsewhere reading the norm would wait for the device, and the scale
        stays on it."""
        return (norm.device.type == "cpu" and not torch.compiler.is_compiling()
                and float(norm) <= self.radius)

    def _contains_vector(self, v, atol):
        c = 0.0 if self.center is None else _piece("center", self.center, v)
        return torch.linalg.vector_norm(v - c) <= self.radius + atol


class Box(Domain):
    r"""The box :math:`\{x : l \le x \le h\}` (entrywise), projected by clamping.

    .. math::
        \Pi(x)_i = \min(\max(x_i, l_i), h_i)

    Args:
        low: :math:`l`: a number (every entry, ``-math.inf`` allowed) or a tensor with as many
            entries as the vector.
        high: :math:`h`, likewise; :math:`l \le h` entrywise.

    ``diameter`` is :math:`\|h - l\|_2` when a bound is a tensor (so the dimension is known);
    with two scalar bounds the dimension is not known and it is ``math.inf``, unless
    :math:`l = h`.

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import Box
        >>> Box(-1.0, torch.tensor([0.5, 2.0, 2.0])).project(torch.tensor([0.7, -3.0, 2.5]))
        tensor([ 0.5000, -1.0000,  2.0000])
    """

    def __init__(self, low, high):
        self.low, self.high = _as_bound("low", low), _as_bound("high", high)
        lo, hi = (torch.as_tensor(b, dtype=torch.float64) for b in (self.low, self.high))
        if lo.numel() > 1 and hi.numel() > 1 and lo.numel() != hi.numel():
            raise ValueError(f"low and high must have the same number of entries (or one be a "
                             f"number), got {lo.numel()} and {hi.numel()}")
        lo, hi = torch.broadcast_tensors(lo, hi)
        if (lo == math.inf).any() or (hi == -math.inf).any():
            raise ValueError("low must be < inf and high > -inf in every entry (the box must "
                             "hold a finite point)")
        bad = (lo > hi).nonzero()
        if len(bad):
            i = tuple(bad[0].tolist())
            raise ValueError(f"low must be <= high entrywise, got low = {float(lo[i])} > "
                             f"high = {float(hi[i])}" + (f" at entry {i[0]}" if i else ""))
        # The dimension is known once a bound is a tensor; with two numbers only a flat box
        # (low == high) has a diameter independent of it.
        if lo.numel() > 1 or bool((lo == hi).all()):
            self.diameter = float(torch.linalg.vector_norm(hi - lo))

    def __repr__(self):
        return f"Box(low={self.low}, high={self.high})"

    def _project_vector(self, v):
        return v.clamp_min(_piece("low", self.low, v)).clamp_max(_piece("high", self.high, v))

    def _project_list_(self, tensors):
        torch._foreach_clamp_min_(tensors, _pieces("low", self.low, tensors))
        torch._foreach_clamp_max_(tensors, _pieces("high", self.high, tensors))

    def _contains_vector(self, v, atol):
        low, high = _piece("low", self.low, v), _piece("high", self.high, v)
        return bool((v >= low - atol).all() and (v <= high + atol).all())


class Simplex(Domain):
    r"""The probability simplex :math:`\Delta = \{x : x_i \ge 0, \sum_i x_i = 1\}`, projected
    by the sort-based algorithm in :math:`O(n \log n)`.

    .. math::
        \Pi(x)_i = \max(x_i - \theta, 0), \qquad \theta:\ \sum_i \max(x_i - \theta, 0) = 1

    with :math:`\theta` found from the sorted entries (Held, Wolfe and Crowder 1974; Duchi et
    al. 2008). Its diameter is :math:`\sqrt 2` (two vertices).

    References:
        J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient projections onto the
        l1-ball for learning in high dimensions", ICML 2008 (Fig. 1). M. Held, P. Wolfe,
        H. Crowder, "Validation of subgradient optimization", Math. Programming 6, 1974.

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import Simplex
        >>> Simplex().project(torch.tensor([0.5, 1.0, -1.0]))
        tensor([0.2500, 0.7500, 0.0000])
    """

    diameter = math.sqrt(2.0)

    def __repr__(self):
        return "Simplex()"

    def _project_vector(self, v):
        if v.numel() == 0:
            raise ValueError("the simplex of an empty vector is empty: nothing to project on")
        return (v - _simplex_threshold(v, 1.0)).clamp_min(0.0)

    def _contains_vector(self, v, atol):
        return v.numel() > 0 and bool((v >= -atol).all()) and abs(float(v.sum()) - 1) <= atol


class L1Ball(Domain):
    r"""The :math:`\ell_1` ball :math:`\{x : \|x\|_1 \le r\}`, projected by soft-thresholding
    at the sort-based threshold (Duchi et al. 2008, Sec. 4).

    .. math::
        \Pi(x)_i = \operatorname{sign}(x_i)\max(|x_i| - \theta, 0), \qquad
        \theta = \max\bigl(0,\ \theta_\Delta\bigr):\
        \textstyle\sum_i \max(|x_i| - \theta_\Delta, 0) = r

    (:math:`\theta = 0`, no change, inside the ball). Its diameter is :math:`2r`.

    Args:
        radius: :math:`r > 0`.

    References:
        J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient projections onto the
        l1-ball for learning in high dimensions", ICML 2008.

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import L1Ball
        >>> L1Ball(1.5).project(torch.tensor([2.0, -1.5, 0.2]))  # theta = 1
        tensor([ 1.0000, -0.5000,  0.0000])
    """

    def __init__(self, radius: float):
        self.radius = check_positive("radius", radius)
        self.diameter = 2 * self.radius

    def __repr__(self):
        return f"L1Ball(radius={self.radius})"

    def _project_vector(self, v):
        if v.numel() == 0:
            return v.clone()
        size = v.abs()
        theta = _simplex_threshold(size, self.radius).clamp_min(0.0)
        return v.sign() * (size - theta).clamp_min(0.0)

    def _contains_vector(self, v, atol):
        return float(v.abs().sum()) <= self.radius + atol


# Solver options for a projection (measured on random polytopes in d = 20 and 100 against the
# exact active-set solution). OSQP's polishing solves the system of the constraints its answer
# finds active, exact to 1e-13; where polishing does not succeed the answer is only as good as
# eps, and it is solved again, warm started, with OSQP_RETRY_OPTIONS. Clarabel (interior point)
# ends within about sqrt(gap) of the projection: 1e-7 typically, 2e-5 at worst. With their
# defaults (and no polishing, which cvxpy turns off on warm starts) both stop 1e-4 away.
ACCURATE_SOLVER_OPTIONS = {
    "OSQP": dict(eps_abs=1e-5, eps_rel=1e-5, polishing=True, max_iter=100_000),
    "CLARABEL": dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10),
    "SCS": dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=100_000),
}
OSQP_RETRY_OPTIONS = dict(eps_abs=1e-9, eps_rel=1e-9)
OSQP_POLISHED, OSQP_NO_ACTIVE_SET = 1, 2  # OSQP's info.status_polish


class _Projection:
    r"""The projection problem onto a :class:`CvxpySet` for one vector size, built once.

    The objective is written :math:`\tfrac12\|x\|^2 - \langle y, x\rangle` (the minimizer of
    :math:`\|x - y\|^2`), so that :math:`y` enters a QP's data only as its linear term
    :math:`q = q_0 - y`. For OSQP, where that is verified (two probe points) and :math:`y` is
    the only parameter, the data cvxpy compiles once (``get_problem_data``) sets up one OSQP
    workspace, and each call only updates :math:`q` and solves, warm started: cvxpy's own
    re-solve would rebuild every matrix from the parameters and restack them for the solver,
    twice the solver's time on the benchmark's polytope. Otherwise ``problem.solve`` re-solves
    the DPP problem.
    """

    def __init__(self, problem, x, y, constraints, solver: str, options: dict):
        self.problem, self.x, self.y, self.constraints = problem, x, y, constraints
        self.solver = solver
        self.retries = 0  # OSQP solves repeated because polishing did not succeed
        self.osqp = None  # (workspace, q at y = 0)
        if solver == "OSQP" and problem.parameters() == [y]:
            self.osqp = self._osqp_workspace(options)

    def _osqp_workspace(self, options: dict):
        """An OSQP workspace set up from cvxpy's data, with its linear term at y = 0; None
        where the data is not ``q_0 - y`` in its first n entries with every other array
        fixed."""
        import numpy as np
        import osqp
        import scipy.sparse as sp

        n = self.x.size
        ramp = np.linspace(1.0, 2.0, n)
        probes = [np.zeros(n), ramp, ramp[::-1] * (-1.0) ** np.arange(n)]
        datas = []
        for probe in probes:
            self.y.value = probe
            datas.append(self.problem.get_problem_data("OSQP")[0])
        data0 = datas[0]
        for probe, data in zip(probes[1:], datas[1:]):
            shift = data["q"] - data0["q"]
            if not np.allclose(shift[:n], -probe, rtol=1e-12, atol=0) or shift[n:].any():
                return None
            for name in ("P", "A", "F"):
                if data[name].shape != data0[name].shape or (data[name] != data0[name]).nnz:
                    return None
            if not (np.array_equal(data["b"], data0["b"])
                    and np.array_equal(data["G"], data0["G"])):
                return None
        # OSQP's form: min 1/2 z'Pz + q'z, l <= Az <= u, with the equalities (A z = b) first
        csc = lambda m: sp.csc_matrix(m, dtype=np.float64)  # noqa: E731  (the class OSQP takes)
        stacked = csc(sp.vstack([data0["A"], data0["F"]], format="csc"))
        lower = np.concatenate([data0["b"], np.full(data0["G"].shape, -np.inf)])
        upper = np.concatenate([data0["b"], data0["G"]])
        workspace = osqp.OSQP()
        try:
            workspace.setup(csc(sp.triu(data0["P"], format="csc")), data0["q"], stacked,
                            lower, upper, verbose=False, **options)
        except Exception as exc:
            raise RuntimeError(f"CvxpySet: OSQP could not set up the projection ({exc})"
                               ) from exc
        return workspace, data0["q"]

    def violation(self, point) -> float:
        """The largest violation of a constraint at ``point`` (float64 numpy), evaluated by
        cvxpy from the variable's value; the last solution is put back for the warm start."""
        last, self.x.value = self.x.value, point
        try:
            return max((float(c.violation().max()) for c in self.constraints), default=0.0)
        finally:
            self.x.value = last

    def solve(self, point, options: dict, retry_options: dict):
        """The projection of ``point`` (float64 numpy), or a clear error."""
        x, polish = self._solve(point, options)
        if self.solver != "OSQP":
            return x
        if polish == OSQP_NO_ACTIVE_SET and self.violation(point) == 0:
            return point  # no constraint is active: the point is in the set, its own projection
        if polish != OSQP_POLISHED:
            self.retries += 1
            x, _ = self._solve(point, retry_options)
        return x

    def _solve(self, point, options: dict):
        """(solution, OSQP's polishing status or None) for ``y = point``."""
        if self.osqp is not None:
            return self._solve_osqp(point, options)
        import cvxpy as cp

        self.y.value = point
        try:
            with warnings.catch_warnings():  # an inaccurate solution raises below instead
                warnings.filterwarnings("ignore", "Solution may be inaccurate")
                self.problem.solve(solver=self.solver, warm_start=True, **options)
        except cp.error.SolverError as exc:
            raise RuntimeError(f"CvxpySet: the solver {self.solver} failed on the projection "
                               f"({exc}); try another solver= or looser solver_options"
                               ) from exc
        self._check_status(self.problem.status, cp.OPTIMAL,
                           (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE))
        info = getattr(self.problem.solver_stats.extra_stats, "info", None)
        return self.x.value, getattr(info, "status_polish", None)

    def _solve_osqp(self, point, options: dict):
        import osqp

        workspace, q0 = self.osqp
        q = q0.copy()
        q[:point.size] -= point
        workspace.update(q=q)
        workspace.update_settings(**{k: options[k] for k in ("eps_abs", "eps_rel", "polishing",
                                                              "max_iter") if k in options})
        result = workspace.solve(raise_error=False)
        status = osqp.SolverStatus
        self._check_status(result.info.status_val, status.OSQP_SOLVED,
                           (status.OSQP_PRIMAL_INFEASIBLE,
                            status.OSQP_PRIMAL_INFEASIBLE_INACCURATE), result.info.status)
        return result.x[:point.size], result.info.status_polish

    def _check_status(self, status, optimal, infeasible, name=None) -> None:
        name = name or status
        if status in infeasible:
            raise ValueError(f"constraints describe an empty set: the projection problem is "
                             f"{name!r} (solver {self.solver})")
        if status != optimal:
            raise RuntimeError(f"CvxpySet: the projection ended with status {name!r} "
                               f"(solver {self.solver}), not optimal; try another solver= or "
                               f"solver_options")


class CvxpySet(Domain):
    r"""Any convex set written in cvxpy, projected by re-solving one parameterized problem.

    .. math::
        \Pi(y) = \operatorname*{argmin}_{x \in \mathbb{R}^n}\ \|x - y\|_2^2
        \quad \text{subject to } \texttt{constraints}(x)

    For each vector size :math:`n` the problem is built once, at its first projection, with
    :math:`y` a ``cvxpy.Parameter``; it must follow cvxpy's DCP rules (a convex set) and DPP
    rules (so that cvxpy compiles it once). Every projection then sets :math:`y` and re-solves
    with a warm start, in float64; the result comes back in the tensor's dtype and device.

    Args:
        constraints: ``constraints(x) -> list`` of cvxpy constraints on the cvxpy ``Variable``
            ``x`` of shape ``(n,)`` (the flattened, concatenated vector).
        solver: a cvxpy solver name. Default: ``"OSQP"`` when the problem is a QP (a
            polyhedral set; 4x faster than Clarabel on the polytope of
            ``benchmarks/online.py``), else ``"CLARABEL"``.
        solver_options: the solver's settings (as ``problem.solve`` takes them); they update
            :data:`ACCURATE_SOLVER_OPTIONS` (OSQP polishes its answer to the exact projection
            onto a polyhedron, or solves again at 1e-9 where polishing fails; Clarabel's is
            within about 1e-6).
        diameter: the set's Euclidean diameter, if known (``None``: ``math.inf``; the exact
            diameter maximizes a convex function over the set, which no solver does cheaply).

    With OSQP a point that satisfies every constraint is returned as it is (a copy). The
    result carries no gradient. A solve that does not end optimal raises: ``ValueError`` for an
    empty set (infeasible), ``RuntimeError`` naming the status otherwise.

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import CvxpySet
        >>> polytope = CvxpySet(lambda x: [x[0] + x[1] <= 1, x <= 0.8])
        >>> polytope.project(torch.tensor([2.0, 1.0]))  # both constraints active
        tensor([0.8000, 0.2000])
    """

    def __init__(self, constraints: Callable, *, solver: str | None = None,
                 solver_options: dict | None = None, diameter: float | None = None):
        if not callable(constraints):
            raise ValueError(f"constraints must be a callable x -> list of cvxpy constraints on "
                             f"the cvxpy Variable x, got {constraints!r}")
        if solver is not None and not isinstance(solver, str):
            raise ValueError(f"solver must be None or a cvxpy solver name, got {solver!r}")
        if solver_options is not None and not isinstance(solver_options, dict):
            raise ValueError(f"solver_options must be None or a dict, got {solver_options!r}")
        self.constraints = constraints
        self.solver = solver
        self.solver_options = dict(solver_options or {})
        self.diameter = math.inf if diameter is None else check_nonnegative("diameter", diameter)
        self._projections: dict[int, _Projection] = {}

    def __repr__(self):
        return f"CvxpySet({getattr(self.constraints, '__name__', self.constraints)})"

    def __getstate__(self):  # the compiled problems are rebuilt on demand, not copied
        return {**self.__dict__, "_projections": {}}

    def projection_problem(self, n: int) -> _Projection:
        """The projection problem for vectors of size ``n``: built and checked at its first
        use, then reused."""
        if n in self._projections:
            return self._projections[n]
        import cvxpy as cp  # a second to import: only for users of this class

        x, y = cp.Variable(n), cp.Parameter(n)
        try:
            constraints = self.constraints(x)
        except Exception as exc:  # a set written for another size, most often
            raise ValueError(f"constraints(x) failed for a cvxpy Variable of shape ({n},) (the "
                             f"vector to project): {exc}") from exc
        if isinstance(constraints, cp.constraints.constraint.Constraint):
            constraints = [constraints]
        if (not isinstance(constraints, (list, tuple)) or not all(
                isinstance(c, cp.constraints.constraint.Constraint) for c in constraints)):
            raise ValueError(f"constraints must return a list of cvxpy constraints on x, got "
                             f"{constraints!r}")
        # 0.5 ||x||^2 - <y, x>: the minimizer of ||x - y||^2, with y in the linear term only
        problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) - y @ x), list(constraints))
        bad = [c for c in constraints if not c.is_dcp()]
        if bad:
            raise ValueError(f"constraints must describe a convex set under cvxpy's DCP rules; "
                             f"not DCP: {bad[0]}")
        if not problem.is_dpp():
            raise ValueError("constraints must follow cvxpy's DPP rules (parameters enter "
                             "affinely), so that the projection compiles once")
        solver = self.solver
        if solver is None:
            solver = "OSQP" if problem.is_qp() else "CLARABEL"
        if solver not in cp.installed_solvers():
            raise ValueError(f"solver must be one of the installed cvxpy solvers "
                             f"{sorted(cp.installed_solvers())}, got {solver!r}")
        if solver == "OSQP" and not problem.is_qp():
            raise ValueError("solver='OSQP' projects onto polyhedral sets (a QP) only; these "
                             "constraints need a conic solver such as 'CLARABEL'")
        self._projections[n] = _Projection(problem, x, y, list(constraints), solver,
                                           self._options(solver))
        return self._projections[n]

    def _options(self, solver: str) -> dict:
        return {**ACCURATE_SOLVER_OPTIONS.get(solver, {}), **self.solver_options}

    def _project_vector(self, v):
        if not bool(torch.isfinite(v).all()):
            raise ValueError("CvxpySet projects finite vectors only; got a NaN or an infinity")
        proj = self.projection_problem(v.numel())
        point = v.detach().to("cpu", torch.float64).numpy()
        options = self._options(proj.solver)
        x = proj.solve(point, options, {**options, **OSQP_RETRY_OPTIONS, **self.solver_options})
        return torch.from_numpy(x).to(dtype=v.dtype, device=v.device, copy=True)

    def _contains_vector(self, v, atol):
        point = v.detach().to("cpu", torch.float64).numpy()
        return self.projection_problem(v.numel()).violation(point) <= atol


def check_domain(domain) -> Domain | None:
    """Return ``domain`` if it is None (no constraint) or a :class:`Domain`, else raise a
    ValueError naming ``domain``."""
    if domain is not None and not isinstance(domain, Domain):
        raise ValueError(f"domain must be None or a Domain (Ball, Box, Simplex, L1Ball, "
                         f"CvxpySet), got {domain!r}")
    return domain


# -- mirror maps --------------------------------------------------------------------------------
def _check_step_args(out, source, direction, lr):
    out, source = _as_list("out", out), _as_list("source", source)
    direction = _as_list("direction", direction)
    if not len(out) == len(source) == len(direction):
        raise ValueError(f"out, source and direction must be lists of equal length, got "
                         f"{len(out)}, {len(source)} and {len(direction)}")
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr must be a number or a 1-element tensor, got shape "
                             f"{tuple(lr.shape)}")
        lr = lr.reshape(())  # a 1-element tensor lr is allowed, as in torch.optim
    else:
        lr = check_nonnegative("lr", lr)
    return out, source, direction, lr


class MirrorMap:
    r"""A mirror map :math:`\psi` and its step: ``step_(out, source, direction, lr, domain)``
    writes

    .. math::
        \operatorname*{argmin}_{x \in X}\ \langle d, x\rangle + \frac{1}{\eta} D_\psi(x, y),
        \qquad D_\psi(x, y) = \psi(x) - \psi(y) - \langle\nabla\psi(y), x - y\rangle

    into ``out`` (which may be ``source``), for :math:`y` = ``source``, :math:`d` =
    ``direction``, :math:`\eta` = ``lr`` (a number or a 1-element tensor) and :math:`X` the
    domain.
    """

    name: str = ""

    def domain_for(self, domain: Domain | None) -> Domain | None:
        """The domain the map works on for the user's ``domain`` (raises if it cannot)."""
        return check_domain(domain)

    def step_(self, out: list[Tensor], source: list[Tensor], direction: list[Tensor], lr,
              domain: Domain | None = None) -> None:
        raise NotImplementedError

    def divergence(self, x: Sequence[Tensor], y: Sequence[Tensor]) -> Tensor:
        r""":math:`D_\psi(x, y)` between two joint vectors, as a 0-dim tensor."""
        raise NotImplementedError

    def __repr__(self):
        return f"MIRRORS[{self.name!r}]"


class EuclideanMirror(MirrorMap):
    r"""The Euclidean map :math:`\psi(x) = \frac12\|x\|_2^2`: a projected gradient step.

    .. math::
        x = \Pi_X(y - \eta\, d), \qquad D_\psi(x, y) = \tfrac12\|x - y\|_2^2

    ``domain=None`` means :math:`X = \mathbb{R}^n` (no projection).

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import MIRRORS, Ball
        >>> x = [torch.tensor([1.0, 0.0])]
        >>> MIRRORS["euclidean"].step_(x, x, [torch.tensor([-2.0, 0.0])], 1.0, Ball(2.0))
        >>> x[0]
        tensor([2., 0.])
    """

    name = "euclidean"

    @torch.no_grad()
    def step_(self, out, source, direction, lr, domain=None):
        out, source, direction, lr = _check_step_args(out, source, direction, lr)
        domain = self.domain_for(domain)
        if any(o is not s for o, s in zip(out, source)):
            torch._foreach_copy_(out, source)
        _add_scaled_(out, direction, -lr)
        if domain is not None:
            domain.project_(out)

    def divergence(self, x, y):
        diff = torch._foreach_sub(_as_list("x", x), _as_list("y", y))
        return 0.5 * _joint_norm(diff) ** 2


class EntropyMirror(MirrorMap):
    r"""The negative entropy :math:`\psi(x) = \sum_i x_i \log x_i` on the probability simplex:
    the multiplicative (exponentiated-gradient) step, computed in log space.

    .. math::
        x_i = \frac{y_i\, e^{-\eta d_i}}{\sum_j y_j\, e^{-\eta d_j}}
            = \operatorname{softmax}(\log y - \eta\, d)_i, \qquad
        D_\psi(x, y) = \sum_i x_i \log\frac{x_i}{y_i}

    over the joint vector of all tensors. Only on :class:`Simplex` (``domain=None`` means the
    simplex); ``source`` must be nonnegative with a positive entry (entries at 0 stay at 0).

    Example:
        >>> import torch
        >>> from stochstep.optimizers.domains import MIRRORS
        >>> x = [torch.tensor([0.5, 0.5])]
        >>> d = [torch.tensor([1.0, 3.0]).log()]
        >>> MIRRORS["entropy"].step_(x, x, d, 1.0, None)
        >>> x[0]  # weights 0.5 and 0.5 / 3, normalised
        tensor([0.7500, 0.2500])
    """

    name = "entropy"

    def domain_for(self, domain):
        if domain is None or isinstance(domain, Simplex):
            return Simplex() if domain is None else domain
        raise ValueError(f"mirror='entropy' works on the probability simplex only: domain must "
                         f"be None or Simplex(), got {domain!r}")

    @torch.no_grad()
    def step_(self, out, source, direction, lr, domain=None):
        out, source, direction, lr = _check_step_args(out, source, direction, lr)
        self.domain_for(domain)
        _check_nonnegative_point(source)
        logits = _concat(source).log() - lr * _concat(direction)
        _write(out, torch.softmax(logits, dim=0))

    def divergence(self, x, y):
        x, y = _concat(_as_list("x", x)), _concat(_as_list("y", y))
        return torch.special.xlogy(x, x).sum() - torch.special.xlogy(x, y).sum()


def _check_nonnegative_point(tensors: list[Tensor]) -> None:
    """Raise ValueError naming the tensor (its position in the group) with a negative entry,
    or if no entry is positive: log-space steps would turn either into NaN."""
    extremes = torch.stack([torch.stack([t.amin(), t.amax()]).to(torch.float64)
                            for t in tensors]).tolist()  # one host synchronisation
    lows, top = [low for low, _ in extremes], max(high for _, high in extremes)
    for i, low in enumerate(lows):
        if not low >= 0:   # also NaN
            raise ValueError(f"mirror='entropy' needs nonnegative points (on the simplex): "
                             f"parameter {i} of the group (shape {tuple(tensors[i].shape)}) "
                             f"has the entry {low}")
    if top <= 0:
        raise ValueError("mirror='entropy' needs a point of the simplex (nonnegative entries "
                         "summing to 1), got all zeros")


MIRRORS: dict[str, MirrorMap] = {"euclidean": EuclideanMirror(), "entropy": EntropyMirror()}


def get_mirror(name: str) -> MirrorMap:
    """The mirror map called ``name``, or a ValueError naming ``mirror`` and the accepted
    names."""
    if not isinstance(name, str) or name not in MIRRORS:
        raise ValueError(f"mirror must be one of {sorted(MIRRORS)}, got {name!r}")
    return MIRRORS[name]
