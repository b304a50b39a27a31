"""Domains and mirror maps (stochstep.optimizers.domains).

Projections are checked against independent references: the same projection solved by cvxpy
(Clarabel, tight tolerances) on random inputs, the optimality condition of a projection onto a
convex set (<y - p, z - p> <= 0 for every feasible z, here random feasible points drawn without
the code under test), idempotence, points inside unchanged, and the joint (list) form against
the concatenated one. The mirror steps are checked against their closed forms written by hand.
"""

import copy
import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stochstep.optimizers.domains import (MIRRORS, Ball, Box, CvxpySet, Domain, L1Ball,
                                          Simplex, check_domain, get_mirror)
from stochstep.theory_checks.strategies import seeds

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_box(n, g):
    low = torch.randn(n, generator=g, dtype=F64)
    return Box(low, low + torch.rand(n, generator=g, dtype=F64) * 2)


# Each domain kind: a builder (n, generator) -> domain, and its constraints in cvxpy.
KINDS = {
    "ball": (lambda n, g: Ball(1.5), lambda d, x: [cp.norm(x, 2) <= d.radius]),
    "ball_centered": (lambda n, g: Ball(0.7, center=torch.randn(n, generator=g, dtype=F64)),
                      lambda d, x: [cp.norm(x - np.asarray(d.center), 2) <= d.radius]),
    "box": (random_box, lambda d, x: [x >= np.asarray(d.low), x <= np.asarray(d.high)]),
    "box_scalar": (lambda n, g: Box(-0.5, 0.25), lambda d, x: [x >= d.low, x <= d.high]),
    "simplex": (lambda n, g: Simplex(), lambda d, x: [x >= 0, cp.sum(x) == 1]),
    "l1ball": (lambda n, g: L1Ball(2.0), lambda d, x: [cp.norm(x, 1) <= d.radius]),
}


def cvxpy_projection(kind, domain, y: torch.Tensor) -> torch.Tensor:
    """min ||x - y||^2 over the domain's constraints, solved by cvxpy (Clarabel)."""
    x = cp.Variable(y.numel())
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y.numpy())),
                         KINDS[kind][1](domain, x))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert problem.status == cp.OPTIMAL
    return torch.from_numpy(x.value)


def feasible_points(kind, domain, n, count, g) -> torch.Tensor:
    """``count`` points of the domain, drawn directly (not by projecting)."""
    if kind.startswith("ball"):
        d = torch.randn(count, n, generator=g, dtype=F64)
        r = domain.radius * torch.rand(count, 1, generator=g, dtype=F64) ** (1 / n)
        c = 0.0 if domain.center is None else domain.center
        return c + r * d / d.norm(dim=1, keepdim=True)
    if kind.startswith("box"):
        u = torch.rand(count, n, generator=g, dtype=F64)
        return domain.low + u * (torch.as_tensor(domain.high) - domain.low)
    e = -torch.rand(count, n, generator=g, dtype=F64).log()   # Dirichlet(1, ..., 1)
    w = e / e.sum(1, keepdim=True)
    if kind == "simplex":
        return w
    sign = torch.randint(0, 2, (count, n), generator=g).to(F64) * 2 - 1
    return domain.radius * torch.rand(count, 1, generator=g, dtype=F64) * sign * w


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_projection_equals_the_cvxpy_solution_and_is_optimal(kind, n):
    g = gen(n)
    domain = KINDS[kind][0](n, g)
    for _ in range(3):
        y = 2 * torch.randn(n, generator=g, dtype=F64)
        p = domain.project(y)
        torch.testing.assert_close(p, cvxpy_projection(kind, domain, y), atol=1e-6, rtol=0)
        assert domain.contains(p, atol=1e-12)
        # optimality of a projection onto a convex set: <y - p, z - p> <= 0 for z in the set
        z = feasible_points(kind, domain, n, 200, g)
        assert domain.contains(z[0])
        assert ((z - p) @ (y - p)).max() <= 1e-12


@given(st.sampled_from(list(KINDS)), st.integers(1, 30), seeds(), st.floats(0.01, 100.0))
def test_projection_properties(kind, n, seed, scale):
    g = gen(seed)
    domain = KINDS[kind][0](n, g)
    y = scale * torch.randn(n, generator=g, dtype=F64)
    p = domain.project(y)
    assert p.shape == y.shape and p.dtype == y.dtype and p is not y
    assert domain.contains(p, atol=1e-9)
    torch.testing.assert_close(domain.project(p), p, atol=1e-12, rtol=0)    # idempotent
    z = feasible_points(kind, domain, n, 50, g)
    assert ((z - p) @ (y - p)).max() <= 1e-9 * max(1.0, scale)
    # a point of the set does not move
    torch.testing.assert_close(domain.project(z[0]), z[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_project_in_place_on_a_list_equals_project_on_the_concatenation(kind):
    g = gen(3)
    shapes = [(2, 3), (4,), (1, 1, 5)]
    n = sum(math.prod(s) for s in shapes)
    domain = KINDS[kind][0](n, g)
    tensors = [2 * torch.randn(s, generator=g, dtype=F64) for s in shapes]
    joint = domain.project(torch.cat([t.reshape(-1) for t in tensors]))
    domain.project_(tensors)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in tensors]), joint,
                               atol=1e-14, rtol=1e-14)


def test_ball_bounds_the_joint_norm_and_shapes_are_kept():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([4.0])  # joint norm 5
    for inside in (Ball(5.0), Ball(7.0, center=[0.5, 0.0, 1.0])):
        inside.project_([a, b])
        assert torch.equal(a, torch.tensor([[3.0, 0.0]])) and torch.equal(b, torch.tensor([4.0]))
    Ball(1.0).project_([a, b])
    torch.testing.assert_close((a, b), (torch.tensor([[0.6, 0.0]]), torch.tensor([0.8])))
    x = torch.full((2, 2), 2.0, dtype=torch.float32)  # norm 4
    p = Ball(2.0, center=1.0).project(x)  # c + (x - c) * 2 / 2 = x: on the sphere
    assert p.dtype == torch.float32 and p.shape == (2, 2)
    torch.testing.assert_close(p, x)
    torch.testing.assert_close(Ball(1.0, center=1.0).project(x), torch.full((2, 2), 1.5))


def test_parameters_are_projected_and_stepped_in_place_outside_no_grad():
    w = [torch.nn.Parameter(torch.tensor([3.0, 0.0])), torch.nn.Parameter(torch.tensor([4.0]))]
    Ball(1.0).project_(w)
    Box(0.0, 0.5).project_(w)
    Simplex().project_(w)
    torch.testing.assert_close([p.detach() for p in w],
                               [torch.tensor([0.5, 0.0]), torch.tensor([0.5])])
    MIRRORS["entropy"].step_(w, w, [torch.zeros(2), torch.ones(1)], 1.0)
    MIRRORS["euclidean"].step_(w, w, [torch.zeros(2), torch.ones(1)], 1.0, Ball(1.0))
    assert all(p.requires_grad and p.grad is None for p in w)


def test_float32_projections_match_float64():
    g = gen(5)
    for kind, (build, _) in KINDS.items():
        domain = build(9, g)
        y = torch.randn(9, generator=g, dtype=F64)
        p32 = domain.project(y.float())
        assert p32.dtype == torch.float32
        torch.testing.assert_close(p32.double(), domain.project(y), atol=1e-6, rtol=0)


def test_points_inside_are_returned_exactly_by_ball_box_and_l1():
    x = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    for domain in (Ball(1.0), Box(-1.0, 1.0), L1Ball(1.0), Ball(1.0, center=[0.1, 0.0, 0.0])):
        assert torch.equal(domain.project(x), x)


def test_simplex_and_l1_by_hand():
    # y = (1, 0.5, -1): sorted 1, 0.5, -1; rho = 2 (0.5 - (1.5 - 1)/2 = 0.25 > 0), theta = 0.25
    p = Simplex().project(torch.tensor([1.0, 0.5, -1.0], dtype=F64))
    torch.testing.assert_close(p, torch.tensor([0.75, 0.25, 0.0], dtype=F64))
    # all equal: theta = (n c - 1)/n, the uniform point
    torch.testing.assert_close(Simplex().project(torch.full((4,), 7.0, dtype=F64)),
                               torch.full((4,), 0.25, dtype=F64))
    # |y| = (3, 1, 1) with radius 2: rho = 2? 1 - (4 - 2)/2 = 0 not > 0, so rho = 1, theta = 1
    p = L1Ball(2.0).project(torch.tensor([-3.0, 1.0, 1.0], dtype=F64))
    torch.testing.assert_close(p, torch.tensor([-2.0, 0.0, 0.0], dtype=F64))


def test_contains_and_diameters():
    assert Ball(2.0).diameter == 4.0 and L1Ball(0.5).diameter == 1.0
    assert Simplex().diameter == math.sqrt(2)
    assert Box(torch.zeros(4), torch.ones(4)).diameter == pytest.approx(2.0)
    assert Box(0.0, torch.tensor([3.0, 4.0])).diameter == pytest.approx(5.0)
    assert Box(0.0, 1.0).diameter == math.inf              # the dimension is not known
    assert Box(-math.inf, torch.zeros(3)).diameter == math.inf
    assert Box(1.0, 1.0).diameter == 0.0
    assert Ball(1.0).contains([torch.tensor([0.6]), torch.tensor([0.8])])
    assert not Ball(1.0).contains([torch.tensor([0.6]), torch.tensor([0.81])])
    assert Ball(1.0).contains(torch.tensor([0.6, 0.81]), atol=0.01)
    assert Simplex().contains(torch.tensor([0.5, 0.5])) and not Simplex().contains(
        torch.tensor([0.5, 0.6]))
    assert not Simplex().contains(torch.tensor([1.5, -0.5]))
    assert Box(0.0, 1.0).contains(torch.tensor([0.0, 1.0]))
    assert not Box(0.0, 1.0).contains(torch.tensor([0.0, 1.1]))
    assert L1Ball(1.0).contains(torch.tensor([0.5, -0.5])) and not L1Ball(1.0).contains(
        torch.tensor([0.5, -0.6]))


# -- mirror maps ---------------------------------------------------------------------------------
def test_euclidean_step_is_the_projected_gradient_step():
    g = gen(1)
    src = [torch.randn(3, generator=g, dtype=F64), torch.randn(2, 2, generator=g, dtype=F64)]
    d = [torch.randn(3, generator=g, dtype=F64), torch.randn(2, 2, generator=g, dtype=F64)]
    out = [torch.empty_like(t) for t in src]
    before = [t.clone() for t in src]
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    MIRRORS["euclidean"].step_(out, src, d, 0.3, Ball(0.5))
    assert all(torch.equal(a, b) for a, b in zip(src, before))  # source untouched
    expected = flat(src) - 0.3 * flat(d)
    expected = expected * 0.5 / max(0.5, float(expected.norm()))
    torch.testing.assert_close(flat(out), expected)
    MIRRORS["euclidean"].step_(src, src, d, torch.tensor(0.3, dtype=F64), None)  # unconstrained
    torch.testing.assert_close(flat(src), flat(before) - 0.3 * flat(d))
    assert MIRRORS["euclidean"].divergence(out, before) == pytest.approx(
        0.5 * float((flat(out) - flat(before)).norm()) ** 2)


def test_entropy_step_is_the_multiplicative_update_over_the_joint_vector():
    y = [torch.tensor([0.1, 0.2], dtype=F64), torch.tensor([[0.3], [0.4]], dtype=F64)]
    d = [torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([[0.5], [0.0]], dtype=F64)]
    lr = 0.7
    # by hand: w_i = y_i exp(-lr d_i), x = w / sum(w)
    w = [0.1 * math.exp(-0.7), 0.2 * math.exp(1.4), 0.3 * math.exp(-0.35), 0.4]
    expected = torch.tensor(w, dtype=F64) / sum(w)
    out = [torch.empty_like(t) for t in y]
    MIRRORS["entropy"].step_(out, y, d, lr, Simplex())
    torch.testing.assert_close(torch.cat([out[0], out[1].reshape(-1)]), expected,
                               rtol=1e-14, atol=0)
    MIRRORS["entropy"].step_(y, y, d, torch.tensor([lr], dtype=F64), None)  # in place, tensor lr
    torch.testing.assert_close(torch.cat([y[0], y[1].reshape(-1)]), expected, rtol=1e-14, atol=0)
    # KL(x || y) by hand
    x, z = torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([0.25, 0.75], dtype=F64)
    assert float(MIRRORS["entropy"].divergence([x], [z])) == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(2 / 3))


def test_entropy_step_is_stable_for_huge_steps_and_keeps_zeros():
    # lr * d of 1e4 would overflow exp(); in log space the result is exact (a vertex)
    y = [torch.tensor([0.5, 0.25, 0.25, 0.0])]
    MIRRORS["entropy"].step_(y, y, [torch.tensor([0.0, 1.0, 2.0, -5.0])], 1e4)
    assert torch.isfinite(y[0]).all()
    torch.testing.assert_close(y[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, text", [
    (lambda: Ball(0.0), ValueError, "radius"),
    (lambda: Ball(-1.0), ValueError, "radius"),
    (lambda: Ball(float("nan")), ValueError, "radius"),
    (lambda: Ball(1.0, center="x"), ValueError, "center"),
    (lambda: L1Ball(0.0), ValueError, "radius"),
    (lambda: Box(1.0, 0.0), ValueError, "low must be <= high"),
    (lambda: Box(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0])), ValueError, "entry 1"),
    (lambda: Box(torch.zeros(3), torch.ones(2)), ValueError, "same number of entries"),
    (lambda: Box(float("nan"), 1.0), ValueError, "low"),
    (lambda: Box(math.inf, math.inf), ValueError, "finite point"),
    (lambda: Box(0.0, 1.0, size=3), TypeError, "size"),
    (lambda: Ball(1.0, centre=0.0), TypeError, "centre"),
    (lambda: Box(torch.zeros(3), 1.0).project(torch.zeros(4)), ValueError, "low has 3 entries"),
    (lambda: Ball(1.0, center=torch.zeros(2)).project_([torch.zeros(3)]), ValueError, "center"),
    (lambda: Ball(1.0).project(torch.zeros(3, dtype=torch.long)), ValueError, "floating"),
    (lambda: Ball(1.0).project_([torch.zeros(3), 1.0]), ValueError, "position 1"),
    (lambda: Ball(1.0).contains(torch.zeros(3), atol=-1.0), ValueError, "atol"),
    (lambda: check_domain("ball"), ValueError, "domain must be None or a Domain"),
    (lambda: get_mirror("kl"), ValueError, "mirror must be one of"),
    (lambda: MIRRORS["entropy"].step_([torch.ones(2)], [torch.ones(2)], [torch.ones(2)], 0.1,
                                      Ball(1.0)), ValueError, "domain must be None or Simplex"),
    (lambda: MIRRORS["entropy"].step_([torch.ones(2)] * 2, [torch.ones(2), torch.tensor(
        [0.5, -0.1])], [torch.ones(2)] * 2, 0.1), ValueError, "parameter 1 of the group"),
    (lambda: MIRRORS["entropy"].step_([torch.zeros(2)], [torch.zeros(2)], [torch.ones(2)],
                                      0.1), ValueError, "all zeros"),
    (lambda: MIRRORS["euclidean"].step_([torch.ones(2)], [torch.ones(2)], [torch.ones(2)],
                                        -0.1), ValueError, "lr"),
    (lambda: MIRRORS["euclidean"].step_([torch.ones(2)], [torch.ones(2)], [torch.ones(2)],
                                        torch.ones(2)), ValueError, "1-element"),
    (lambda: MIRRORS["euclidean"].step_([torch.ones(2)], [torch.ones(2)], [], 0.1),
     ValueError, "equal length"),
])
def test_bad_input_is_refused_naming_the_argument(make, error, text):
    with pytest.raises(error, match=text):
        make()


def test_get_mirror_and_check_domain_pass_good_values():
    assert get_mirror("entropy") is MIRRORS["entropy"]
    assert check_domain(None) is None and isinstance(check_domain(Simplex()), Domain)
    assert isinstance(MIRRORS["entropy"].domain_for(None), Simplex)


# -- CvxpySet ------------------------------------------------------------------------------------
def polytope(n, m, g):
    """m random halfspaces a_i.x <= 1/2 (unit normals) inside the box [-1, 1]^n."""
    a = torch.randn(m, n, generator=g, dtype=F64)
    a = (a / a.norm(dim=1, keepdim=True)).numpy()
    return a, lambda x: [a @ x <= 0.5, x >= -1, x <= 1]


def test_cvxpy_set_equals_the_closed_forms():
    g = gen(7)
    n = 12
    low = torch.randn(n, generator=g, dtype=F64)
    high = low + torch.rand(n, generator=g, dtype=F64)
    pairs = [(Box(low, high), CvxpySet(lambda x: [x >= low.numpy(), x <= high.numpy()])),
             (Ball(1.3), CvxpySet(lambda x: [cp.norm(x, 2) <= 1.3])),
             (Simplex(), CvxpySet(lambda x: [x >= 0, cp.sum(x) == 1])),
             (L1Ball(0.8), CvxpySet(lambda x: [cp.norm(x, 1) <= 0.8]))]
    for closed, general in pairs:
        for _ in range(3):
            y = 2 * torch.randn(n, generator=g, dtype=F64)
            torch.testing.assert_close(general.project(y), closed.project(y), atol=1e-6, rtol=0)
    # the default solver: OSQP for the polyhedra, Clarabel for the second-order cone
    assert [s.projection_problem(n).solver for _, s in pairs] == [
        "OSQP", "CLARABEL", "OSQP", "OSQP"]


def test_cvxpy_polytope_projection_is_optimal_and_the_problem_is_built_once():
    g = gen(8)
    n = 20
    a, constraints = polytope(n, 10, g)
    domain = CvxpySet(constraints)
    problem = domain.projection_problem(n)
    assert problem.problem.is_dpp() and domain.projection_problem(n) is problem
    for _ in range(3):
        y = 3 * torch.randn(n, generator=g, dtype=F64)
        p = domain.project(y)
        assert domain.contains(p, atol=1e-7) and not domain.contains(y)
        assert domain.projection_problem(n) is problem   # re-solved, not rebuilt
        # optimality: <y - p, z - p> <= 0 for feasible z (random points of the box, kept
        # where they satisfy the halfspaces)
        z = 2 * torch.rand(2000, n, generator=g, dtype=F64) - 1
        z = z[(z @ torch.from_numpy(a).T <= 0.5).all(1)]
        assert len(z) > 10 and ((z - p) @ (y - p)).max() <= 1e-7
        torch.testing.assert_close(domain.project(p), p, atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match=r"constraints\(x\) failed .* shape \(21,\)"):
        domain.project(torch.zeros(n + 1))   # a set written for one size
    sized = CvxpySet(lambda x: [x <= 1])
    assert sized.projection_problem(3) is not sized.projection_problem(4)  # one per size


def test_compiled_fast_path_equals_problem_solve_and_parameters_take_the_slow_path():
    g = gen(9)
    n = 30
    _, constraints = polytope(n, 15, g)
    for make in (lambda: CvxpySet(constraints),
                 lambda: CvxpySet(lambda x: [cp.sum(x) == 1, x >= -0.1, x[:5] <= 0.2])):
        fast, slow = make(), make()
        assert fast.projection_problem(n).osqp is not None
        slow.projection_problem(n).osqp = None   # problem.solve at every call
        for _ in range(3):
            y = 2 * torch.randn(n, generator=g, dtype=F64)
            torch.testing.assert_close(fast.project(y), slow.project(y), atol=1e-6, rtol=0)
    # a set with its own cvxpy Parameter: solved through problem.solve, which reads its value
    high = cp.Parameter(value=1.0)
    box = CvxpySet(lambda x: [x <= high, x >= -1])
    y = torch.tensor([3.0, 0.5], dtype=F64)
    torch.testing.assert_close(box.project(y), torch.tensor([1.0, 0.5], dtype=F64), atol=1e-8,
                               rtol=0)
    assert box.projection_problem(2).solver == "OSQP" and box.projection_problem(2).osqp is None
    high.value = 0.25
    torch.testing.assert_close(box.project(y), torch.tensor([0.25, 0.25], dtype=F64),
                               atol=1e-8, rtol=0)


def test_osqp_solves_again_where_polishing_does_not_succeed():
    g = gen(10)
    n = 20
    a, constraints = polytope(n, 10, g)
    unpolished = CvxpySet(constraints, solver_options=dict(polishing=False))
    polished = CvxpySet(constraints)
    for _ in range(3):
        y = 3 * torch.randn(n, generator=g, dtype=F64)
        torch.testing.assert_close(unpolished.project(y), polished.project(y), atol=1e-7,
                                   rtol=0)
    assert unpolished.projection_problem(n).retries == 3
    assert polished.projection_problem(n).retries == 0
    # a point of the set is returned as it is, without a solve
    inside = torch.zeros(n, dtype=F64)
    assert torch.equal(polished.project(inside), inside)


def test_cvxpy_set_keeps_dtype_shape_and_joins_lists():
    domain = CvxpySet(lambda x: [cp.sum(x) == 1, x >= 0])
    x = torch.tensor([[0.5, 1.0], [-1.0, 0.2]], dtype=torch.float32)
    p = domain.project(x)
    assert p.dtype == torch.float32 and p.shape == (2, 2)
    torch.testing.assert_close(p, Simplex().project(x), atol=1e-6, rtol=0)
    parts = [x[0].clone(), x[1].clone()]
    domain.project_(parts)
    torch.testing.assert_close(torch.cat(parts), p.reshape(-1), atol=1e-6, rtol=0)
    copied = copy.deepcopy(domain)  # the compiled problems stay behind and are rebuilt
    assert copied._projections == {} and len(domain._projections) == 1
    torch.testing.assert_close(copied.project(x), p, atol=1e-6, rtol=0)
    assert CvxpySet(lambda x: [x <= 1]).diameter == math.inf
    assert CvxpySet(lambda x: [x <= 1], diameter=2.0).diameter == 2.0


def not_dpp(x):
    q = cp.Parameter(nonneg=True, value=1.0)
    return [q * q * cp.sum(x) <= 1]  # a product of parameters: DCP, not DPP


@pytest.mark.parametrize("make, error, text", [
    (lambda: CvxpySet([]), ValueError, "constraints must be a callable"),
    (lambda: CvxpySet(lambda x: [cp.norm(x, 2) >= 1]).project(torch.ones(2)), ValueError,
     "convex set under cvxpy's DCP rules"),
    (lambda: CvxpySet(not_dpp).project(torch.ones(2)), ValueError, "DPP"),
    (lambda: CvxpySet(lambda x: [x >= 1, x <= 0]).project(torch.ones(2)), ValueError,
     "empty set.*infeasible"),
    (lambda: CvxpySet(lambda x: x.sum()).project(torch.ones(2)), ValueError,
     "list of cvxpy constraints"),
    (lambda: CvxpySet(lambda x: [x <= 0], solver="NOPE").project(torch.ones(2)), ValueError,
     "solver must be one of"),
    (lambda: CvxpySet(lambda x: [cp.norm(x, 2) <= 1], solver="SCS",
                      solver_options=dict(max_iters=2)).project(torch.ones(5)), RuntimeError,
     "status"),
    (lambda: CvxpySet(lambda x: [x <= 0]).project(torch.tensor([float("nan")])), ValueError,
     "finite"),
    (lambda: CvxpySet(lambda x: [cp.norm(x, 2) <= 1], solver="OSQP").project(torch.ones(2)),
     ValueError, "polyhedral"),
    (lambda: CvxpySet(lambda x: [x <= 0], diameter=-1.0), ValueError, "diameter"),
    (lambda: CvxpySet(lambda x: [x <= 0], tol=1e-3), TypeError, "tol"),
])
def test_cvxpy_set_bad_input(make, error, text):
    with pytest.raises(error, match=text):
        make()
