"""entropic_ot: optimality (KKT), an independent convex solver, one Newton step by hand, the
gauge (null space) of the Newton system, batches, bad input and the max_iter warning."""

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from stochstep.samplers import OTResult, entropic_ot
from stochstep.samplers import ot as ot_module

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small problems, many small ops


def cloud(n, m, d, seed, uniform=False):
    """Marginals and the squared Euclidean cost (scaled to max 1) of two random clouds."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=DT)
    y = torch.rand(m, d, generator=gen, dtype=DT)
    C = torch.cdist(x, y) ** 2
    C = C / C.max()
    if uniform:
        return torch.full((n,), 1 / n, dtype=DT), torch.full((m,), 1 / m, dtype=DT), C
    a = torch.rand(n, generator=gen, dtype=DT) + 0.5
    b = torch.rand(m, generator=gen, dtype=DT) + 0.5
    return a / a.sum(), b / b.sum(), C


def marginal_error(P, a, b):
    return ((P.sum(1) - a).abs().sum() + (P.sum(0) - b).abs().sum()).item()


@pytest.mark.parametrize("method", ["sinkhorn", "sns", "auto"])
def test_kkt_plan_is_the_exponential_of_the_potentials_and_has_the_marginals(method):
    a, b, C = cloud(30, 20, 3, seed=0)
    reg, tol = 0.05, 1e-11
    res = entropic_ot(a, b, C, reg, method=method, tol=tol, warm_start=5)
    assert isinstance(res, OTResult) and res.log.converged
    assert torch.allclose(res.plan, torch.exp((res.f[:, None] + res.g[None] - C) / reg),
                          rtol=1e-12, atol=0)
    assert marginal_error(res.plan, a, b) <= tol
    assert res.error.item() == pytest.approx(marginal_error(res.plan, a, b), rel=1e-6, abs=1e-15)
    assert res.log.marginal_error[-1] <= tol
    assert len(res.log.marginal_error) == len(res.log.time)
    assert len(res.log.marginal_error) == sum(res.log.stages.values()) + 1
    if method == "sns":
        assert res.log.stages == {"sinkhorn": 5, "newton": res.log.stages["newton"]}
        assert res.log.stages["newton"] >= 1


def test_agrees_with_an_exponential_cone_solver():
    """The primal problem solved by cvxpy (Clarabel), written from its definition."""
    a, b, C = cloud(5, 4, 2, seed=1)
    reg = 0.1
    P = cp.Variable((5, 4), nonneg=True)
    # <C, P> + reg sum P (log P - 1), entr(P) = -P log P
    objective = cp.sum(cp.multiply(C.numpy(), P)) - reg * cp.sum(cp.entr(P)) - reg * cp.sum(P)
    problem = cp.Problem(cp.Minimize(objective),
                         [cp.sum(P, axis=1) == a.numpy(), cp.sum(P, axis=0) == b.numpy()])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    for method in ("sinkhorn", "sns"):
        res = entropic_ot(a, b, C, reg, method=method, tol=1e-12, warm_start=3)
        np.testing.assert_allclose(res.plan.numpy(), P.value, atol=1e-7)
        # strong duality: the dual value D(f, g) equals the primal optimum
        dual = (a @ res.f + b @ res.g - reg * res.plan.sum()).item()
        assert dual == pytest.approx(problem.value, abs=1e-7)


def test_long_sinkhorn_and_sns_reach_the_same_potentials_up_to_the_gauge():
    a, b, C = cloud(40, 40, 10, seed=2, uniform=True)
    reg = 0.01
    long = entropic_ot(a, b, C, reg, method="sinkhorn", tol=1e-13)
    sns = entropic_ot(a, b, C, reg, method="sns", tol=1e-13, warm_start=20)
    assert sns.log.stages["newton"] >= 1
    shift = (long.f - sns.f).mean()
    torch.testing.assert_close(sns.f + shift, long.f, rtol=0, atol=1e-9)
    torch.testing.assert_close(sns.g - shift, long.g, rtol=0, atol=1e-9)
    torch.testing.assert_close(sns.plan, long.plan, rtol=0, atol=1e-12)


def hand_newton_step(a, b, C, reg, f, g, damp):
    """The docstring's damped Newton system, assembled densely and solved by numpy with its
    last equation removed and delta g_m = 0."""
    P = np.exp((f[:, None] + g[None] - C) / reg)
    r, c = P.sum(1), P.sum(0)
    n, m = P.shape
    M = np.block([[(1 + damp) * np.diag(r), P], [P.T, (1 + damp) * np.diag(c)]])
    rhs = reg * np.concatenate([a - r, b - c])
    delta = np.zeros(n + m)
    delta[:-1] = np.linalg.solve(M[:-1, :-1], rhs[:-1])
    return delta[:n], delta[n:], M, rhs


def test_one_newton_step_by_hand_on_a_3x3_problem():
    a = torch.tensor([0.2, 0.3, 0.5], dtype=DT)
    b = torch.tensor([0.4, 0.4, 0.2], dtype=DT)
    C = torch.tensor([[0.0, 0.5, 1.0], [0.5, 0.0, 0.5], [1.0, 0.5, 0.0]], dtype=DT)
    reg, warm = 0.2, 2
    with pytest.warns(RuntimeWarning, match="max_iter=2"):
        start = entropic_ot(a, b, C, reg, method="sinkhorn", max_iter=warm)
    with pytest.warns(RuntimeWarning, match="max_iter=3"):
        res = entropic_ot(a, b, C, reg, method="sns", warm_start=warm, max_iter=warm + 1)
    assert res.log.stages == {"sinkhorn": warm, "newton": 1}
    f0, g0 = start.f.numpy(), start.g.numpy()
    df, dg, _, _ = hand_newton_step(a.numpy(), b.numpy(), C.numpy(), reg, f0, g0, damp=1e-4)
    # the full step is taken here: it raises D (checked) and is the first tried
    dual = lambda f, g: a.numpy() @ f + b.numpy() @ g - reg * np.exp(
        (f[:, None] + g[None] - C.numpy()) / reg).sum()
    assert dual(f0 + df, g0 + dg) > dual(f0, g0)
    np.testing.assert_allclose(res.f.numpy(), f0 + df, rtol=0, atol=1e-13)
    np.testing.assert_allclose(res.g.numpy(), g0 + dg, rtol=0, atol=1e-13)


def test_newton_direction_fixes_the_null_space_and_solves_every_equation():
    """Undamped, the matrix is singular along (1, -1); the direction has delta g_m = 0 and
    satisfies all n + m equations, the dropped one included."""
    a, b, C = cloud(7, 5, 2, seed=3)
    reg = 0.1
    f = torch.linspace(-0.1, 0.1, 7, dtype=DT)
    g = torch.linspace(0.05, -0.05, 5, dtype=DT)
    P, r, c = ot_module._SparsePlan(C, reg, a > 0)(f, g)
    np.testing.assert_allclose(P.toarray(), torch.exp((f[:, None] + g[None] - C) / reg).numpy(),
                               rtol=1e-14, atol=0)
    solve = ot_module._sparse_schur_solver(P, r, c, k=2)  # a sparse (inexact) preconditioner
    a, b = a.numpy(), b.numpy()
    df, dg, iterations, solved = ot_module._newton_direction(P, r, c, a - r, b - c, reg, solve,
                                                             rtol=1e-14)
    assert solved and iterations >= 1 and dg[-1] == 0
    _, _, M, rhs = hand_newton_step(a, b, C.numpy(), reg, f.numpy(), g.numpy(), damp=0.0)
    assert abs(np.linalg.det(M)) < 1e-12 * np.abs(M).max() ** M.shape[0]
    np.testing.assert_allclose(M @ np.concatenate([df, dg]), rhs, atol=1e-14)
    # moving along the null direction leaves the plan unchanged
    df, dg = torch.from_numpy(df), torch.from_numpy(dg)
    shifted = torch.exp(((f + df + 0.3)[:, None] + (g + dg - 0.3)[None] - C) / reg)
    torch.testing.assert_close(shifted, torch.exp(((f + df)[:, None] + (g + dg)[None] - C) / reg))


def hard_potentials(n, seed):
    """A hard problem (reg 1e-3, 10-D) and the potentials after 30 Sinkhorn iterations."""
    a, b, C = cloud(n, n, 10, seed=seed, uniform=True)
    with pytest.warns(RuntimeWarning, match="max_iter=30"):
        start = entropic_ot(a, b, C, 1e-3, method="sinkhorn", max_iter=30)
    return a, b, C, start.f, start.g


def test_sparse_plan_has_the_exact_marginals_and_leaves_out_only_entries_below_rounding(
        monkeypatch):
    """Row blocks of 6 rows (10 blocks): the marginals count every entry, the kept entries are
    the plan's, and each entry left out is at most u r_i / n (u = 2^-53); the support found
    by the first call serves potentials that moved less than its margin (no second pass over
    C) and not those that moved more."""
    n, reg = 60, 1e-3
    a, b, C, f, g = hard_potentials(n, seed=10)
    monkeypatch.setattr(ot_module, "_BLOCK_ELEMENTS", 6 * n)
    plan = ot_module._SparsePlan(C, reg, a > 0)
    gen = torch.Generator().manual_seed(1)
    moves = [(0.0, 1), (2.0, 1), (-3.0, 1), (30.0, 2)]  # (size in units of reg, passes after)
    for size, passes in moves:
        dg = size * reg * torch.rand(n, dtype=DT, generator=gen)
        P, r, c = plan(f, g + dg)
        assert plan.passes == passes
        dense = torch.exp((f[:, None] + (g + dg)[None] - C) / reg).numpy()
        np.testing.assert_allclose(r, dense.sum(1), rtol=1e-13, atol=0)
        np.testing.assert_allclose(c, dense.sum(0), rtol=1e-13, atol=0)
        kept = P.toarray() != 0
        np.testing.assert_allclose(P.toarray()[kept], dense[kept], rtol=1e-13, atol=0)
        bound = np.broadcast_to(2.0 ** -53 * r[:, None] / n, dense.shape)
        assert (dense[~kept] <= bound[~kept]).all()
        assert 0.3 < (~kept).mean() < 1  # most entries are negligible: the test leaves some out


@pytest.mark.parametrize("damp", [0.0, 0.05])
def test_newton_direction_solves_the_exact_system_with_a_stale_preconditioner(damp):
    """Hard problem: the direction from the sparse products and a preconditioner factorized at
    other potentials (as when a factorization is reused across Newton steps) solves the dense
    system of the docstring (without its last equation, delta g_m = 0) to CG's tolerance."""
    n, reg = 50, 1e-3
    a, b, C, f, g = hard_potentials(n, seed=11)
    a, b = a.numpy(), b.numpy()
    P, r, c = ot_module._SparsePlan(C, reg, torch.from_numpy(a) > 0)(f, g)
    moved = f + 0.5 * reg * torch.rand(n, dtype=DT, generator=torch.Generator().manual_seed(0))
    stale_P, stale_r, stale_c = ot_module._SparsePlan(C, reg, torch.from_numpy(a) > 0)(moved, g)
    stale = ot_module._sparse_schur_solver(stale_P, (1 + damp) * stale_r, (1 + damp) * stale_c,
                                           k=3)
    df, dg, iterations, solved = ot_module._newton_direction(
        P, (1 + damp) * r, (1 + damp) * c, a - r, b - c, reg, stale, rtol=1e-12)
    assert solved and iterations >= 2 and dg[-1] == 0
    _, _, M, rhs = hand_newton_step(a, b, C.numpy(), reg, f.numpy(), g.numpy(), damp=damp)
    residual = (M @ np.concatenate([df, dg]) - rhs)[:-1]
    assert np.linalg.norm(residual) <= 1e-10 * np.linalg.norm(rhs)


@pytest.mark.parametrize("method", ["sinkhorn", "sns", "auto"])
def test_batched_equals_looped(method):
    problems = [cloud(12, 9, 2, seed=s) for s in range(3)]
    a = torch.stack([p[0] for p in problems])
    b = torch.stack([p[1] for p in problems])
    C = torch.stack([p[2] for p in problems])
    reg, tol = 0.02, 1e-12
    batch = entropic_ot(a, b, C, reg, method=method, tol=tol, warm_start=10)
    assert batch.plan.shape == (3, 12, 9) and batch.error.shape == (3,)
    for i, (ai, bi, Ci) in enumerate(problems):
        one = entropic_ot(ai, bi, Ci, reg, method=method, tol=tol, warm_start=10)
        assert marginal_error(batch.plan[i], ai, bi) <= tol
        # the batch runs until its worst problem converges: the same solution, within tol
        torch.testing.assert_close(batch.plan[i], one.plan, rtol=0, atol=1e-12)
    if method == "sinkhorn":  # the same iterations give the same iterates, up to rounding
        with pytest.warns(RuntimeWarning):
            batch = entropic_ot(a, b, C, reg, method=method, max_iter=7)
        for i, (ai, bi, Ci) in enumerate(problems):
            with pytest.warns(RuntimeWarning):
                one = entropic_ot(ai, bi, Ci, reg, method=method, max_iter=7)
            torch.testing.assert_close(batch.plan[i], one.plan, rtol=1e-13, atol=1e-16)
    # one cost shared by the batch
    shared = entropic_ot(a, b, C[0], reg, method=method, tol=tol, warm_start=10)
    for i in range(3):
        assert marginal_error(shared.plan[i], a[i], b[i]) <= tol


def test_hard_problem_sinkhorn_warns_at_max_iter_and_auto_switches_to_newton():
    a, b, C = cloud(60, 60, 10, seed=4, uniform=True)
    reg = 1e-3
    with pytest.warns(RuntimeWarning, match=r"max_iter=50 reached with marginal error"):
        capped = entropic_ot(a, b, C, reg, method="sinkhorn", max_iter=50)
    assert not capped.log.converged and capped.log.stages == {"sinkhorn": 50, "newton": 0}
    assert capped.error > 1e-9 and capped.log.marginal_error[-1] == capped.error.item()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = entropic_ot(a, b, C, reg, method="auto")
    assert res.log.converged and res.log.stages["newton"] >= 1
    assert marginal_error(res.plan, a, b) <= 1e-9


def test_easy_problem_auto_stays_with_sinkhorn():
    a, b, C = cloud(50, 50, 2, seed=5)
    res = entropic_ot(a, b, C, 0.05, method="auto")
    assert res.log.stages["newton"] == 0 and res.log.converged


def test_zero_marginal_entries_get_empty_rows_and_columns():
    a, b, C = cloud(6, 5, 2, seed=6)
    a = torch.cat([a[:3], torch.zeros(3, dtype=DT)]) * 2
    b = torch.cat([torch.zeros(1, dtype=DT), b[1:]])
    b = b / b.sum()
    a = a / a.sum()
    for method in ("sinkhorn", "sns"):
        res = entropic_ot(a, b, C, 0.1, method=method, tol=1e-12, warm_start=2)
        assert (res.plan[3:] == 0).all() and (res.plan[:, 0] == 0).all()
        assert (res.f[3:] == -math.inf).all() and res.g[0] == -math.inf
        assert torch.isfinite(res.f[:3]).all() and torch.isfinite(res.g[1:]).all()
        assert marginal_error(res.plan, a, b) <= 1e-12


def test_underflowing_kernel_rows_use_the_log_domain_start():
    # exp(-C / reg) is exactly 0 on the first row (C / reg >= 800 > 745); C00 + C11 = C01 +
    # C10 makes the independent plan a b^T optimal
    C = torch.tensor([[0.8, 0.9], [0.0, 0.1]], dtype=DT)
    a = torch.tensor([0.3, 0.7], dtype=DT)
    b = torch.tensor([0.6, 0.4], dtype=DT)
    assert (torch.exp(-C[0] / 1e-3) == 0).all()
    res = entropic_ot(a, b, C, 1e-3, method="sinkhorn", tol=1e-12)
    assert torch.isfinite(res.f).all() and marginal_error(res.plan, a, b) <= 1e-12
    torch.testing.assert_close(res.plan, a[:, None] * b[None], rtol=1e-12, atol=0)


def test_sparse_plan_holds_the_nonzero_entries():
    a, b, C = cloud(20, 20, 2, seed=7, uniform=True)
    dense = entropic_ot(a, b, C, 2e-3, method="sns", tol=1e-10)
    sparse = entropic_ot(a, b, C, 2e-3, method="sns", tol=1e-10, sparse=True)
    assert sparse.plan.is_sparse
    torch.testing.assert_close(sparse.plan.to_dense(), dense.plan, rtol=0, atol=0)


@pytest.mark.parametrize("change, match", [
    (dict(a=torch.tensor([0.6, -0.1, 0.5], dtype=DT)), r"^a must hold finite entries >= 0"),
    (dict(b=torch.tensor([0.5, float("nan")], dtype=DT)), r"^b must hold finite entries >= 0"),
    (dict(b=torch.tensor([0.5, 0.6], dtype=DT)), r"^a and b must have the same mass"),
    (dict(C=torch.zeros(2, 3, dtype=DT)), r"^C must have shape \(3, 2\)"),
    (dict(C=torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]], dtype=DT)),
     r"^C must be finite"),
    (dict(a=torch.zeros(3, dtype=DT), b=torch.zeros(2, dtype=DT)),
     r"^a must have a positive mass"),
    (dict(reg=0.0), r"^reg must be a finite number > 0"),
    (dict(reg=-1e-3), r"^reg must be a finite number > 0"),
    (dict(tol=float("nan")), r"^tol must be a finite number > 0"),
    (dict(method="newton"), r"^method must be one of"),
    (dict(max_iter=0), r"^max_iter must be an integer >= 1"),
    (dict(topk=1.5), r"^topk must be an integer >= 1"),
    (dict(sparse=1), r"^sparse must be True or False"),
    (dict(a=torch.ones(2, 3, dtype=DT) / 3), r"^a and b must both have shape"),
])
def test_bad_input_raises_naming_the_argument(change, match):
    args = dict(a=torch.tensor([0.2, 0.3, 0.5], dtype=DT), b=torch.tensor([0.5, 0.5], dtype=DT),
                C=torch.ones(3, 2, dtype=DT), reg=0.1)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        entropic_ot(**args)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        entropic_ot(torch.ones(2) / 2, torch.ones(2) / 2, torch.ones(2, 2), 0.1, generator=None)


def test_a_tol_below_rounding_warns_saying_so():
    """The scaled iterate met tol = 1e-14; the plan recomputed from the potentials misses it."""
    C = torch.tensor([[0.8, 0.9], [0.0, 0.1]], dtype=DT)
    a, b = torch.tensor([0.3, 0.7], dtype=DT), torch.tensor([0.6, 0.4], dtype=DT)
    with pytest.warns(RuntimeWarning, match=r"rounding in the plan"):
        res = entropic_ot(a, b, C, 1e-3, method="sinkhorn", tol=1e-14)
    assert not res.log.converged and res.log.stages["sinkhorn"] < 10


def test_masses_equal_to_relative_1e8_are_accepted():
    a = torch.tensor([0.5, 0.5], dtype=DT)
    b = torch.tensor([0.5, 0.5 + 5e-9], dtype=DT)
    res = entropic_ot(a, b, torch.eye(2, dtype=DT), 0.1, tol=1e-7)
    assert res.log.converged and math.isfinite(res.error.item())


def test_progress_bar_changes_nothing(capsys):
    a, b, C = cloud(30, 30, 10, seed=9, uniform=True)
    quiet = entropic_ot(a, b, C, 2e-3, method="sns", warm_start=20)
    shown = entropic_ot(a, b, C, 2e-3, method="sns", warm_start=20, progress=True)
    assert "entropic_ot (sns)" in capsys.readouterr().err
    torch.testing.assert_close(shown.plan, quiet.plan, rtol=0, atol=0)
    assert shown.log.stages == quiet.log.stages
