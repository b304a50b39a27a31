"""ConvexReLU: the sampled convex program (cvxpy, the oracle), its ADMM, and the network.

Reference checks: the patterns are 1[X H >= 0] for the generator's H; the constraints hold at
the solution; the convex objective equals the regularized objective of the network that
``to_module`` returns (the equivalence of the two programs, computed independently here with
torch's layers); ADMM reaches cvxpy's optimum on the same patterns.
"""

import math

import numpy as np
import pytest
import torch

from stochstep.optimizers import ConvexReLU
from stochstep.optimizers import convex_relu
from stochstep.optimizers.convex_relu import sample_patterns


def data(n=40, d=4, seed=0, labels=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.relu(X[:, 0]) - X[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, (y > 0).double() if labels else y


def network_objective(model, X, y, loss):
    """The non-convex objective of the exported network: loss + beta/2 (||U||^2 + ||a||^2)."""
    net = model.to_module().requires_grad_(False)
    out = net(X).squeeze(1)
    if loss == "squared":
        fit = 0.5 * ((out - y) ** 2).sum()
    else:
        s = 2 * y - 1 if set(y.tolist()) <= {0.0, 1.0} else y
        fit = (torch.nn.functional.softplus(-s * out) if loss == "logistic"
               else torch.relu(1 - s * out)).sum()
    weights = (net[0].weight ** 2).sum() + (net[2].weight ** 2).sum()
    return float(fit + model.beta / 2 * weights)


def constraint_violation(model, X):
    E = 2 * model.patterns_.double() - 1
    return float(torch.relu(-torch.cat([E * (X @ model.v_.T), E * (X @ model.w_.T)])).max())


# -- patterns ---------------------------------------------------------------------------------
def test_patterns_are_the_distinct_sign_patterns_of_gaussian_directions():
    X, _ = data()
    D = sample_patterns(X, 30, torch.Generator().manual_seed(5))
    H = torch.randn(4, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = {tuple(col) for col in (X @ H >= 0).T.tolist()}
    assert D.dtype == torch.bool and D.shape[0] == 40
    assert {tuple(col) for col in D.T.tolist()} == expected and D.shape[1] == len(expected)


def test_patterns_are_reused():
    X, y = data()
    first = ConvexReLU(10, solver="cvxpy", generator=torch.Generator().manual_seed(1)).fit(X, y)
    again = ConvexReLU(10, solver="cvxpy", generator=torch.Generator().manual_seed(2))
    again.fit(X, y, patterns=first.patterns_.numpy().astype(int))
    assert torch.equal(again.patterns_, first.patterns_)
    assert again.objective_ == pytest.approx(first.objective_, rel=1e-9)


# -- cvxpy: the oracle ------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_cvxpy_solution_is_feasible_and_equals_the_network_objective(loss):
    X, y = data(labels=loss != "squared")
    model = ConvexReLU(15, beta=0.05, loss=loss, solver="cvxpy",
                       generator=torch.Generator().manual_seed(3)).fit(X, y)
    assert model.history_["status"] == "optimal"
    assert constraint_violation(model, X) < 1e-7
    # the network's non-convex regularized objective equals the convex optimum
    assert network_objective(model, X, y, loss) == pytest.approx(model.objective_, rel=1e-6)
    # and the network reproduces the masked convex predictions on the training data
    masked = (model.patterns_.double() * (X @ (model.v_ - model.w_).T)).sum(1)
    torch.testing.assert_close(model.decision_function(X), masked, atol=1e-6, rtol=0)


def test_cvxpy_beats_every_feasible_point_it_is_compared_with():
    X, y = data()
    model = ConvexReLU(15, beta=0.05, solver="cvxpy",
                       generator=torch.Generator().manual_seed(3)).fit(X, y)
    D = model.patterns_.double()
    # (v, w) = (0, 0) is feasible; so is a scaled copy of the solution
    zero = model._objective(X, y, D, 0 * model.v_, 0 * model.w_)
    assert zero == pytest.approx(0.5 * float((y ** 2).sum()))
    assert model.objective_ <= zero
    for c in (0.9, 1.1):
        assert model.objective_ <= model._objective(X, y, D, c * model.v_, c * model.w_)


def test_label_encodings_give_the_same_program():
    X, y01 = data(labels=True)
    a = ConvexReLU(10, loss="logistic", solver="cvxpy",
                   generator=torch.Generator().manual_seed(4)).fit(X, y01)
    b = ConvexReLU(10, loss="logistic", solver="cvxpy",
                   generator=torch.Generator().manual_seed(4)).fit(X.numpy(), 2 * y01.numpy() - 1)
    assert a.objective_ == pytest.approx(b.objective_, rel=1e-7)
    assert set(a.predict(X).tolist()) <= {0.0, 1.0}
    assert set(b.predict(X).tolist()) <= {-1.0, 1.0}
    assert a.score(X, y01) == pytest.approx(b.score(X, 2 * y01 - 1))
    assert a.score(X, y01) > 0.8


def test_cvxpy_solvers_agree():
    X, y = data()
    clarabel = ConvexReLU(10, beta=0.05, solver="cvxpy",
                          generator=torch.Generator().manual_seed(3)).fit(X, y)
    scs = ConvexReLU(10, beta=0.05, solver="cvxpy", cvxpy_solver="scs")
    scs.fit(X, y, patterns=clarabel.patterns_)
    assert clarabel.history_["solver"] == "CLARABEL" and scs.history_["solver"] == "SCS"
    assert scs.objective_ == pytest.approx(clarabel.objective_, rel=1e-4)


def test_solver_status_is_reported(monkeypatch):
    monkeypatch.setattr(convex_relu, "CVXPY_SOLVER_OPTIONS", {"CLARABEL": dict(max_iter=1)})
    X, y = data()
    with pytest.raises(RuntimeError, match="status 'user_limit'"), \
            pytest.warns(UserWarning):
        ConvexReLU(5, solver="cvxpy", generator=torch.Generator().manual_seed(0)).fit(X, y)


# -- ADMM -------------------------------------------------------------------------------------
def test_admm_reaches_the_cvxpy_optimum_on_the_same_patterns(one_thread):
    X, y = data(n=50, d=5)
    oracle = ConvexReLU(20, beta=0.01, solver="cvxpy",
                        generator=torch.Generator().manual_seed(1)).fit(X, y)
    admm = ConvexReLU(20, beta=0.01, tol=1e-7).fit(X, y, patterns=oracle.patterns_)
    assert admm.objective_ == pytest.approx(oracle.objective_, rel=1e-4)
    assert constraint_violation(admm, X) < 1e-5
    # its network is the cvxpy network, up to the same accuracy
    assert network_objective(admm, X, y, "squared") == pytest.approx(oracle.objective_, rel=1e-4)
    torch.testing.assert_close(admm.predict(X), oracle.predict(X), atol=1e-3, rtol=0)
    h = admm.history_
    assert len(h["objective"]) == len(h["primal_residual"]) == admm.n_iter_
    assert h["objective"][-1] == pytest.approx(admm.objective_, rel=1e-12)
    assert h["primal_residual"][-1] < 1e-3 * h["primal_residual"][9]


def dense_operators(X, D):
    """F = [D_1 X, ..., D_P X, -D_1 X, ..., -D_P X] and G = blkdiag((2 D_i - I) X) (twice), as
    dense matrices acting on u = (v_1, ..., v_P, w_1, ..., w_P) flattened row by row."""
    blocks = [torch.diag(D[:, i]) @ X for i in range(D.shape[1])]
    F = torch.cat(blocks + [-b for b in blocks], dim=1)
    signs = [torch.diag(2 * D[:, i] - 1) @ X for i in range(D.shape[1])]
    return F, torch.block_diag(*(signs + signs))


def test_two_admm_iterations_by_hand():
    """The docstring's updates, written with dense F and G, in the scaled units."""
    X, y = data(n=12, d=3, seed=4)
    D = sample_patterns(X, 4, torch.Generator().manual_seed(2)).double()
    beta, rho, rho_c, alpha = 0.3, 0.5, 0.2, 1.5
    model = ConvexReLU(4, beta=beta, rho=rho, rho_cone=rho_c, relaxation=alpha, max_iter=2)
    with pytest.warns(RuntimeWarning, match="did not meet tol"):
        model.fit(X, y, patterns=D)
    a, b = float(X.pow(2).mean().sqrt()), float(y.pow(2).mean().sqrt())
    Xs, ys, beta_s = X / a, y / b, beta / (a * b)
    F, G = dense_operators(Xs, D)
    p = F.shape[1]
    A = torch.eye(p, dtype=X.dtype) + F.T @ F / rho + rho_c / rho * G.T @ G
    v, lam = torch.zeros(p, dtype=X.dtype), torch.zeros(p, dtype=X.dtype)
    s, nu = torch.zeros(G.shape[0], dtype=X.dtype), torch.zeros(G.shape[0], dtype=X.dtype)
    for _ in range(2):
        u = torch.linalg.solve(A, F.T @ ys / rho + v - lam + rho_c / rho * G.T @ (s - nu))
        u_hat, Gu_hat = alpha * u + (1 - alpha) * v, alpha * G @ u + (1 - alpha) * s
        z = (u_hat + lam).reshape(8, 3)
        shrink = torch.clamp(1 - (beta_s / rho) / z.norm(dim=1, keepdim=True), min=0)
        v = (shrink * z).reshape(-1)
        s = torch.relu(Gu_hat + nu)
        lam, nu = lam + u_hat - v, nu + Gu_hat - s
    v = v.reshape(8, 3) * b / a
    torch.testing.assert_close(model.v_, v[:4], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(model.w_, v[4:], atol=1e-12, rtol=1e-10)
    assert (v.norm(dim=1) == 0).any() and (v.norm(dim=1) > 0).any()   # both prox branches


def test_admm_is_invariant_to_the_units_of_the_data():
    """Fitting (a X, b y) with beta a b gives v b / a and the objective times b^2."""
    X, y = data(n=30, d=3, seed=1)
    D = sample_patterns(X, 8, torch.Generator().manual_seed(0))
    base = ConvexReLU(8, beta=0.05, tol=1e-6).fit(X, y, patterns=D)
    a, b = 7.0, 0.2
    scaled = ConvexReLU(8, beta=0.05 * a * b, tol=1e-6).fit(a * X, b * y, patterns=D)
    assert scaled.n_iter_ == base.n_iter_
    torch.testing.assert_close(scaled.v_, base.v_ * b / a, atol=1e-12, rtol=1e-9)
    assert scaled.objective_ == pytest.approx(base.objective_ * b ** 2, rel=1e-9)


def test_conjugate_gradients_and_cholesky_give_the_same_iterates():
    X, y = data(n=40, d=3, seed=2)
    D = sample_patterns(X, 10, torch.Generator().manual_seed(0))
    runs = {}
    for solver in ("cholesky", "cg"):
        model = ConvexReLU(10, beta=0.02, linear_solver=solver, max_iter=150)
        with pytest.warns(RuntimeWarning, match="did not meet tol"):
            runs[solver] = model.fit(X, y, patterns=D)
        assert model.linear_solver_ == solver
    chol, cg = runs["cholesky"], runs["cg"]
    assert chol.n_iter_ == cg.n_iter_
    torch.testing.assert_close(cg.v_, chol.v_, atol=1e-7, rtol=0)
    torch.testing.assert_close(torch.tensor(cg.history_["objective"], dtype=torch.float64),
                               torch.tensor(chol.history_["objective"], dtype=torch.float64),
                               atol=0, rtol=1e-6)


def test_block_grams_are_the_masked_gram_matrices():
    X, _ = data(n=30, d=4)
    D = sample_patterns(X, 6, torch.Generator().manual_seed(2)).double()
    gram = ConvexReLU._block_gram(X, D)
    for i in range(D.shape[1]):
        torch.testing.assert_close(gram[i], X.T @ torch.diag(D[:, i]) @ X)


def test_auto_linear_solver_switches_to_cg_above_the_size(monkeypatch):
    X, y = data(n=20, d=3)
    D = sample_patterns(X, 6, torch.Generator().manual_seed(0))
    small = ConvexReLU(6, max_iter=3)
    with pytest.warns(RuntimeWarning):
        small.fit(X, y, patterns=D)
    assert small.linear_solver_ == "cholesky"
    monkeypatch.setattr(convex_relu, "MAX_CHOLESKY_UNKNOWNS", 2 * 3 * D.shape[1] - 1)
    with pytest.warns(RuntimeWarning):
        small.fit(X, y, patterns=D)
    assert small.linear_solver_ == "cg"


def test_admm_warns_when_it_runs_out_of_iterations():
    X, y = data()
    with pytest.warns(RuntimeWarning, match="did not meet tol"):
        ConvexReLU(10, max_iter=5, generator=torch.Generator().manual_seed(0)).fit(X, y)


# -- ADMM-RBCD --------------------------------------------------------------------------------
def test_admm_rbcd_reaches_the_cvxpy_optimum_for_the_logistic_loss(one_thread):
    X, y = data(n=20, d=3, labels=True)
    oracle = ConvexReLU(6, beta=0.05, loss="logistic", solver="cvxpy",
                        generator=torch.Generator().manual_seed(1)).fit(X, y)
    rbcd = ConvexReLU(6, beta=0.05, loss="logistic", solver="admm_rbcd", tol=1e-5,
                      generator=torch.Generator().manual_seed(0))
    rbcd.fit(X, y, patterns=oracle.patterns_)
    assert rbcd.objective_ == pytest.approx(oracle.objective_, rel=1e-4)
    assert constraint_violation(rbcd, X) < 1e-3
    assert network_objective(rbcd, X, y, "logistic") == pytest.approx(oracle.objective_,
                                                                      rel=1e-3)
    h = rbcd.history_
    assert len(h["objective"]) == len(h["dual_residual"]) == rbcd.n_iter_ < rbcd.max_iter
    assert h["objective"][-1] == pytest.approx(rbcd.objective_, rel=1e-12)
    assert rbcd.linear_solver_ == "rbcd"


def smoothed_hinge_optimum(X, s, D, beta, mu):
    """The sampled program with the hinge's Moreau envelope, in cvxpy: the envelope of
    max(0, t) is min over r of max(0, r) + (t - r)^2 / (2 mu), minimized jointly."""
    import cvxpy as cp
    Xn, Dn = X.numpy(), D.double().numpy()
    V, W = cp.Variable((X.shape[1], Dn.shape[1])), cp.Variable((X.shape[1], Dn.shape[1]))
    r = cp.Variable(len(s))
    t = 1 - cp.multiply(s.numpy(), cp.sum(cp.multiply(Dn, Xn @ (V - W)), axis=1))
    objective = cp.sum(cp.pos(r)) + cp.sum_squares(t - r) / (2 * mu) + beta * (
        cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0)))
    E = 2 * Dn - 1
    problem = cp.Problem(cp.Minimize(objective),
                         [cp.multiply(E, Xn @ V) >= 0, cp.multiply(E, Xn @ W) >= 0])
    problem.solve(solver="CLARABEL")
    return problem.value


def test_admm_rbcd_hinge_reaches_the_smoothed_optimum_within_its_bound(one_thread):
    """With smoothing mu the answer is the smoothed program's optimum (cvxpy, written
    independently), and its hinge objective is within smoothing_bound_ of the hinge optimum."""
    X, y = data(n=20, d=3, labels=True)
    s, beta, mu = 2 * y - 1, 0.05, 1.0
    hinge = ConvexReLU(6, beta=beta, loss="hinge", solver="cvxpy",
                       generator=torch.Generator().manual_seed(1)).fit(X, y)
    rbcd = ConvexReLU(6, beta=beta, loss="hinge", solver="admm_rbcd", hinge_smoothing=mu,
                      tol=1e-6, generator=torch.Generator().manual_seed(0))
    rbcd.fit(X, y, patterns=hinge.patterns_)
    assert rbcd.n_iter_ < rbcd.max_iter
    margins = s * (hinge.patterns_.double() * (X @ (rbcd.v_ - rbcd.w_).T)).sum(1)
    penalty = beta * float(rbcd.v_.norm(dim=1).sum() + rbcd.w_.norm(dim=1).sum())
    smoothed = float(smoothed_hinge(margins, mu).sum()) + penalty
    assert smoothed == pytest.approx(smoothed_hinge_optimum(X, s, hinge.patterns_, beta, mu),
                                     rel=1e-4)
    assert rbcd.objective_ == pytest.approx(float(torch.relu(1 - margins).sum()) + penalty)
    assert rbcd.smoothing_bound_ == pytest.approx(rbcd.objective_ - smoothed, rel=1e-9)
    assert rbcd.smoothing_bound_ <= mu / 2 * int((margins < 1).sum())
    # the bound holds: hinge optimum <= hinge objective <= hinge optimum + bound
    assert hinge.objective_ * (1 - 1e-4) <= rbcd.objective_
    assert rbcd.objective_ <= hinge.objective_ + rbcd.smoothing_bound_ * (1 + 1e-4)


def smoothed_hinge(margin, mu):
    """The Moreau envelope of max(0, 1 - m) with parameter mu, through the hinge's prox."""
    t = 1 - margin
    p = torch.where(t > mu, t - mu, torch.where(t < 0, t, torch.zeros_like(t)))
    return torch.relu(p) + (t - p) ** 2 / (2 * mu)


@pytest.mark.parametrize("loss", ["logistic", "hinge", "squared"])
def test_three_rbcd_sweeps_by_hand(loss):
    """Three ADMM-RBCD iterations (beta = 0 and no relaxation, so that v = u, lambda = 0,
    s = (Gu + nu)_+, nu = min(Gu + nu, 0)), each one sweep over the blocks (u_i, z_i) in the
    generator's order: a Newton step on the dense u-subproblem (gradient and Hessian of the
    block by autograd), halved until the Armijo condition holds; and the dual residuals."""
    X, y = data(n=14, d=3, seed=6, labels=loss != "squared")
    D = sample_patterns(X, 5, torch.Generator().manual_seed(2)).double()
    P, rho, rho_c, iterations = D.shape[1], 0.01, 0.003, 3
    model = ConvexReLU(5, beta=0.0, loss=loss, solver="admm_rbcd", rho=rho, rho_cone=rho_c,
                       relaxation=1.0, max_iter=iterations, hinge_smoothing=0.3,
                       generator=torch.Generator().manual_seed(3))
    with pytest.warns(RuntimeWarning, match="ADMM-RBCD did not meet tol"):
        model.fit(X, y, patterns=D)
    a, b = float(X.pow(2).mean().sqrt()), 1.0 if loss != "squared" else float(
        y.pow(2).mean().sqrt())
    Xs, ys = X / a, (2 * y - 1 if loss != "squared" else y / b)
    F, G = dense_operators(Xs, D)
    u, nu, halvings = torch.zeros(F.shape[1], dtype=torch.float64), 0.0, 0
    s, v = torch.zeros(G.shape[0], dtype=torch.float64), torch.zeros(F.shape[1],
                                                                      dtype=torch.float64)
    order, duals = torch.Generator().manual_seed(3), []
    for _ in range(iterations):
        def subproblem(u):
            y_hat = F @ u
            fit = {"squared": lambda: 0.5 * ((y_hat - ys) ** 2).sum(),
                   "logistic": lambda: torch.log1p(torch.exp(-ys * y_hat)).sum(),
                   "hinge": lambda: smoothed_hinge(ys * y_hat, 0.3).sum()}[loss]()
            return (fit + rho / 2 * ((u - v) ** 2).sum()
                    + rho_c / 2 * ((G @ u - s + nu) ** 2).sum())

        for i in torch.randperm(P, generator=order).tolist():
            block = torch.cat([torch.arange(3 * i, 3 * i + 3),
                               torch.arange(3 * (P + i), 3 * (P + i) + 3)])
            grad = torch.func.grad(subproblem)(u)[block]
            hessian = torch.autograd.functional.hessian(subproblem, u)[block][:, block]
            direction = torch.zeros_like(u)
            direction[block] = -torch.linalg.solve(hessian, grad)
            step = 1.0
            while subproblem(u + step * direction) > subproblem(u) + 0.01 * step * float(
                    grad @ direction[block]):
                step, halvings = step / 2, halvings + 1
            u = u + step * direction
        # the dual residual carries the inexact u-step's gradient e
        error = torch.func.grad(subproblem)(u)
        v_old, s_old = v, s
        v, s, nu = u, torch.relu(G @ u + nu), torch.clamp(G @ u + nu, max=0)
        duals.append(float((rho * (v - v_old) + rho_c * G.T @ (s - s_old) - error).norm()))
    expected = u.reshape(2 * P, 3) * b / a
    torch.testing.assert_close(model.v_, expected[:P], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(model.w_, expected[P:], atol=1e-10, rtol=1e-8)
    assert model.history_["dual_residual"] == pytest.approx(duals, rel=1e-8)
    if loss == "hinge":
        assert halvings > 0          # the line search did backtrack


def test_rbcd_u_step_with_many_sweeps_is_the_exact_u_step():
    """Squared loss: sweeping until the u-subproblem is solved gives the Cholesky ADMM's
    iterates."""
    X, y = data(n=20, d=3, seed=3)
    D = sample_patterns(X, 6, torch.Generator().manual_seed(0))
    runs = {}
    for solver, sweeps in (("admm", 1), ("admm_rbcd", 60)):
        model = ConvexReLU(6, beta=0.05, solver=solver, rho=2.0, rho_cone=1.0, max_iter=4,
                           rbcd_sweeps=sweeps, balance=False,
                           generator=torch.Generator().manual_seed(0))
        with pytest.warns(RuntimeWarning, match="did not meet tol"):
            runs[solver] = model.fit(X, y, patterns=D)
    torch.testing.assert_close(runs["admm_rbcd"].v_, runs["admm"].v_, atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.tensor(runs["admm_rbcd"].history_["objective"]),
                               torch.tensor(runs["admm"].history_["objective"]), rtol=1e-9,
                               atol=0)


def test_admm_rbcd_same_seed_same_answer():
    X, y = data(n=20, d=3, labels=True)
    D = sample_patterns(X, 6, torch.Generator().manual_seed(0))
    fits = []
    for seed in (4, 4, 5):
        model = ConvexReLU(6, loss="hinge", solver="admm_rbcd", max_iter=30,
                           generator=torch.Generator().manual_seed(seed))
        with pytest.warns(RuntimeWarning):
            fits.append(model.fit(X, y, patterns=D))
    assert torch.equal(fits[0].v_, fits[1].v_) and torch.equal(fits[0].w_, fits[1].w_)
    assert fits[0].history_ == {**fits[1].history_, "time": fits[0].history_["time"]}
    assert not torch.equal(fits[0].v_, fits[2].v_)     # the block order matters


def test_admm_rbcd_bad_input():
    X, y = data(n=20, d=3)
    with pytest.raises(ValueError, match=r"labels in \{0, 1\} or \{-1, 1\} for loss='logistic'"):
        ConvexReLU(5, loss="logistic", solver="admm_rbcd").fit(X, y)
    with pytest.raises(ValueError, match="labels in"):
        ConvexReLU(5, loss="hinge", solver="admm_rbcd").fit(X, 3 * (y > 0).double())
    with pytest.raises(ValueError, match="loss must be one of"):
        ConvexReLU(5, loss="cross_entropy", solver="admm_rbcd")
    with pytest.raises(ValueError, match="rbcd_sweeps"):
        ConvexReLU(5, solver="admm_rbcd", rbcd_sweeps=0)
    with pytest.raises(ValueError, match="hinge_smoothing"):
        ConvexReLU(5, loss="hinge", solver="admm_rbcd", hinge_smoothing=0.0)
    with pytest.raises(TypeError):
        ConvexReLU(5, solver="admm_rbcd", rbcd_blocksize=3)
    with pytest.raises(NotImplementedError, match="robust_eps"):
        ConvexReLU(5, loss="hinge", solver="admm_rbcd", robust_eps=0.1)


# -- interior point ---------------------------------------------------------------------------
def test_ipm_reaches_the_clarabel_optimum_on_the_same_patterns(one_thread):
    X, y = data(n=50, d=5)
    X[7] = 0.0                            # a zero row: its constraints read 0 >= 0
    oracle = ConvexReLU(20, beta=0.01, solver="cvxpy",
                        generator=torch.Generator().manual_seed(1)).fit(X, y)
    ipm = ConvexReLU(20, beta=0.01, solver="ipm", tol=1e-9,
                     generator=torch.Generator().manual_seed(1)).fit(X, y)
    assert torch.equal(ipm.patterns_, oracle.patterns_)
    assert ipm.objective_ == pytest.approx(oracle.objective_, rel=1e-6)
    # the cone constraints hold up to the final primal residual
    assert constraint_violation(ipm, X) <= 1e-9 * float(X.abs().max() * ipm.v_.abs().max())
    assert network_objective(ipm, X, y, "squared") == pytest.approx(oracle.objective_, rel=1e-6)
    h = ipm.history_
    assert (len(h["objective"]) == len(h["gap"]) == len(h["primal_residual"])
            == len(h["dual_residual"]) == len(h["step"]) == len(h["time"]) == ipm.n_iter_)
    assert h["objective"][-1] == pytest.approx(ipm.objective_, rel=1e-12)
    assert h["gap"][-1] <= 1e-9 * ipm.objective_ < h["gap"][0]
    assert ipm.n_iter_ <= 40                              # tens of steps, not hundreds


def test_ipm_solves_a_pattern_whose_cone_has_no_interior():
    """Rows x and -x with the same sign force x^T z = 0: no strictly feasible point, which the
    infeasible start does not need; the answer is Clarabel's."""
    X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 2.0, 2.5], dtype=torch.float64)
    patterns = np.array([[1, 1], [1, 0], [1, 1], [1, 1]])
    oracle = ConvexReLU(beta=0.1, solver="cvxpy").fit(X, y, patterns=patterns)
    ipm = ConvexReLU(beta=0.1, solver="ipm", tol=1e-9).fit(X, y, patterns=patterns)
    assert ipm.objective_ == pytest.approx(oracle.objective_, rel=1e-6)


def cone_point(shape, generator, inside=True):
    """A random point strictly inside the cone: a positive (n, 2P) part and (2P, d + 1) rows
    with head ||body|| + a positive margin (last column)."""
    lin_shape, (groups, d1) = shape
    lin = 0.5 + torch.rand(*lin_shape, generator=generator, dtype=torch.float64)
    body = torch.randn(groups, d1 - 1, generator=generator, dtype=torch.float64)
    head = body.norm(dim=1) + 0.2 + torch.rand(groups, generator=generator, dtype=torch.float64)
    return lin, torch.cat([body, head[:, None]], dim=1)


def test_nesterov_todd_scaling_and_jordan_algebra():
    g = torch.Generator().manual_seed(3)
    s, z = cone_point(((6, 4), (4, 3)), g), cone_point(((6, 4), (4, 3)), g)
    qp_like = convex_relu._ConeQP.scaling(None, s, z)
    W, W_inv = qp_like["W"], qp_like["W_inv"]
    torch.testing.assert_close(W, W.transpose(1, 2))
    torch.testing.assert_close(W @ W_inv, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    lam = qp_like["lam"]
    # W z = W^{-1} s = lambda on both parts
    torch.testing.assert_close(qp_like["w_lin"] * z[0], lam[0])
    torch.testing.assert_close(s[0] / qp_like["w_lin"], lam[0])
    torch.testing.assert_close(torch.einsum("jab,jb->ja", W, z[1]), lam[1])
    torch.testing.assert_close(torch.einsum("jab,jb->ja", W_inv, s[1]), lam[1])
    # W maps the cone's identity to a point of the cone; s^T z = lambda^T lambda
    assert float(convex_relu._soc_det(lam[1]).min()) > 0 and float(lam[1][:, -1].min()) > 0
    u, v = s[1], z[1]
    product = convex_relu._soc_product(u, v)           # (u_0 v_1 + v_0 u_1, u^T v), head last
    torch.testing.assert_close(product[:, -1], (u * v).sum(1))
    torch.testing.assert_close(product[:, :-1], u[:, -1:] * v[:, :-1] + v[:, -1:] * u[:, :-1])
    torch.testing.assert_close(convex_relu._soc_divide(u, product), v)


def test_max_step_is_the_distance_to_the_cone_boundary():
    g = torch.Generator().manual_seed(4)
    s = cone_point(((5, 3), (3, 4)), g)
    ds = (torch.randn(5, 3, generator=g, dtype=torch.float64),
          torch.randn(3, 4, generator=g, dtype=torch.float64))
    alpha = convex_relu._max_step(*s, *ds)
    # independently: the largest step on a fine grid that keeps every part inside the cone
    grid = torch.linspace(0, 2 * alpha, 200_001, dtype=torch.float64)[1:]
    lin_ok = (s[0][None] + grid[:, None, None] * ds[0][None] >= 0).all(2).all(1)
    moved = s[1][None] + grid[:, None, None] * ds[1][None]
    soc_ok = (moved[..., -1] >= moved[..., :-1].norm(dim=2)).all(1)
    inside = lin_ok & soc_ok
    first_out = int((~inside).nonzero()[0])
    assert float(grid[first_out - 1]) <= alpha <= float(grid[first_out])
    assert convex_relu._max_step(s[0], s[1], torch.ones(5, 3, dtype=torch.float64),
                                 torch.eye(4, dtype=torch.float64)[-1].expand(3, 4)) == math.inf


def test_ipm_newton_direction_solves_the_dense_kkt_system():
    """The structured matrix and the two-solve direction against the unreduced linearized KKT
    system Q dx + G^T dz = -r_x, G dx + ds = -r_p, W^{-1} ds + W dz = d, written densely
    (F, the linear and second-order parts of G, W as matrices) and solved by LU."""
    X, y = data(n=9, d=3, seed=5)
    D = sample_patterns(X, 4, torch.Generator().manual_seed(0)).double()
    P, d, n = D.shape[1], 3, 9
    qp = convex_relu._ConeQP(X, y, D, 0.2)
    g = torch.Generator().manual_seed(6)
    s, z = cone_point(((n, 2 * P), (2 * P, d + 1)), g), cone_point(((n, 2 * P), (2 * P, d + 1)), g)
    scaling = qp.scaling(s, z)
    # dense operators on x = (z_j, t_j)_j flattened row by row; the linear part of the cone
    # space flattened group by group (the transpose of the code's (n, 2P) layout)
    F, G_admm = dense_operators(X, D)
    cols = torch.tensor([j * (d + 1) + a for j in range(2 * P) for a in range(d)])
    N = 2 * P * (d + 1)
    Q = torch.zeros(N, N, dtype=torch.float64)
    Q[cols[:, None], cols[None, :]] = F.T @ F
    G_lin = torch.zeros(2 * P * n, N, dtype=torch.float64)
    G_lin[:, cols] = -G_admm
    G = torch.cat([G_lin, -torch.eye(N, dtype=torch.float64)])
    W = torch.block_diag(torch.diag(scaling["w_lin"].T.reshape(-1)), *scaling["W"])
    W_inv = torch.linalg.inv(W)
    torch.testing.assert_close(qp.matrix(scaling), Q + G.T @ W_inv @ W_inv @ G)
    r_x = torch.randn(2 * P, d + 1, generator=g, dtype=torch.float64)
    r_p = (torch.randn(n, 2 * P, generator=g, dtype=torch.float64),
           torch.randn(2 * P, d + 1, generator=g, dtype=torch.float64))
    rhs_d = (torch.randn(n, 2 * P, generator=g, dtype=torch.float64),
             torch.randn(2 * P, d + 1, generator=g, dtype=torch.float64))

    def flat(u):
        return torch.cat([u[0].T.reshape(-1), u[1].reshape(-1)])
    M = len(G)
    zero, eye = torch.zeros, torch.eye(M, dtype=torch.float64)
    kkt = torch.cat([
        torch.cat([Q, zero(N, M, dtype=torch.float64), G.T], 1),
        torch.cat([G, eye, zero(M, M, dtype=torch.float64)], 1),
        torch.cat([zero(M, N, dtype=torch.float64), W_inv, W], 1)])
    solution = torch.linalg.solve(kkt, torch.cat([-r_x.reshape(-1), -flat(r_p), flat(rhs_d)]))
    dx, ds, dz = solution[:N], solution[N:N + M], solution[N + M:]
    factor = torch.linalg.cholesky(qp.matrix(scaling))
    got_dx, got_ds, got_dz = qp.direction(factor, scaling, r_x, r_p, rhs_d)
    torch.testing.assert_close(got_dx.reshape(-1), dx)
    torch.testing.assert_close(flat(got_ds), W_inv @ ds)
    torch.testing.assert_close(flat(got_dz), W @ dz)
    # and the operators themselves: G x and G^T u
    x = torch.randn(2 * P, d + 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(flat(qp.G(x)), G @ x.reshape(-1))
    torch.testing.assert_close(qp.G_T(*r_p).reshape(-1), G.T @ flat(r_p))
    torch.testing.assert_close(qp.objective_gradient(x).reshape(-1),
                               Q @ x.reshape(-1) + torch.cat(
                                   [torch.cat([F.T @ -y, torch.zeros(0, dtype=torch.float64)])
                                    .reshape(2 * P, d), torch.full((2 * P, 1), 0.2,
                                                                   dtype=torch.float64)],
                                   1).reshape(-1))


def test_ipm_reports_a_failed_factorization(monkeypatch):
    def fail(matrix):
        raise torch.linalg.LinAlgError("the leading minor of order 3 is not positive-definite")
    monkeypatch.setattr(torch.linalg, "cholesky", fail)
    X, y = data()
    with pytest.raises(RuntimeError, match="Newton matrix is not positive definite at the "
                                           "start, even shifted"):
        ConvexReLU(10, solver="ipm", generator=torch.Generator().manual_seed(0)).fit(X, y)


def test_ipm_factorization_falls_back_to_a_shifted_matrix():
    """A singular matrix factorizes once shifted by IPM_REGULARIZATION of its diagonal."""
    matrix = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    factor = convex_relu._newton_factor(matrix, "here")
    shift = convex_relu.IPM_REGULARIZATION
    expected = matrix + shift * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(factor @ factor.T, expected)


def test_ipm_warns_when_it_runs_out_of_newton_steps():
    X, y = data()
    with pytest.warns(RuntimeWarning, match="interior-point method did not meet tol"):
        ConvexReLU(10, solver="ipm", max_iter=3,
                   generator=torch.Generator().manual_seed(0)).fit(X, y)


# -- the network ------------------------------------------------------------------------------
def test_to_module_reproduces_predict():
    X, y = data()
    model = ConvexReLU(15, beta=0.05, solver="cvxpy",
                       generator=torch.Generator().manual_seed(3)).fit(X.numpy(), y.numpy())
    net = model.to_module()
    X_new = torch.randn(25, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    torch.testing.assert_close(net(X_new).squeeze(1), model.predict(X_new), atol=1e-6, rtol=0)
    m = net[0].out_features
    assert isinstance(net[1], torch.nn.ReLU) and net[2].bias is None
    norms = torch.cat([model.v_, model.w_]).norm(dim=1)
    assert m == int((norms > 0).sum()) and m >= 1
    # each neuron is balanced: ||u_j||^2 = a_j^2 (what makes the two objectives equal)
    torch.testing.assert_close(net[0].weight.norm(dim=1) ** 2, net[2].weight[0] ** 2)


# -- adversarial training (cvxpy) ------------------------------------------------------------
@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_robust_program_with_tiny_eps_is_the_standard_one(loss):
    X, y = data(labels=loss != "squared")
    standard = ConvexReLU(15, beta=0.05, loss=loss, solver="cvxpy",
                          generator=torch.Generator().manual_seed(3)).fit(X, y)
    robust = ConvexReLU(15, beta=0.05, loss=loss, solver="cvxpy", robust_eps=1e-9)
    robust.fit(X, y, patterns=standard.patterns_)
    assert robust.robust_objective_ == pytest.approx(standard.objective_, rel=1e-5)
    larger = ConvexReLU(15, beta=0.05, loss=loss, solver="cvxpy", robust_eps=0.05)
    larger.fit(X, y, patterns=standard.patterns_)
    assert larger.robust_objective_ > standard.objective_ + 0.1


def test_robust_hinge_objective_is_attained_by_an_attack_on_the_network():
    X, y = data(labels=True)
    s, eps = 2 * y - 1, 0.05
    model = ConvexReLU(15, beta=0.05, loss="hinge", solver="cvxpy", robust_eps=eps,
                       generator=torch.Generator().manual_seed(3)).fit(X, y)
    D = model.patterns_.double()
    z = D @ (model.v_ - model.w_)                    # row k: sum_i d_ik (v_i - w_i)
    attacked = X - eps * s[:, None] * torch.sign(z)  # the worst l-inf perturbation per row
    # the robust cone constraints keep every pattern under the attack ...
    E = 2 * D - 1
    for Z in (model.v_, model.w_):
        assert float((E * (attacked @ Z.T)).min()) > -1e-7
    # ... so the network's worst-case hinge loss is the robust program's loss
    out = model.decision_function(attacked)
    torch.testing.assert_close(s * out, s * (D * (X @ (model.v_ - model.w_).T)).sum(1)
                               - eps * z.abs().sum(1), atol=1e-7, rtol=0)
    penalty = model.v_.norm(dim=1).sum() + model.w_.norm(dim=1).sum()
    worst = float(torch.relu(1 - s * out).sum() + model.beta * penalty)
    assert worst == pytest.approx(model.robust_objective_, rel=1e-6)


def test_hidden_bias_is_a_ones_column_that_the_robust_program_does_not_perturb():
    X, y = data(labels=True)
    s, eps, d = 2 * y - 1, 0.05, X.shape[1]
    with_ones = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    kwargs = dict(beta=0.05, loss="hinge", solver="cvxpy")
    by_hand = ConvexReLU(15, **kwargs, generator=torch.Generator().manual_seed(3))
    by_hand.fit(with_ones, y)
    model = ConvexReLU(15, **kwargs, hidden_bias=True, generator=torch.Generator().manual_seed(3))
    model.fit(X, y)
    assert torch.equal(model.patterns_, by_hand.patterns_) and model.n_features_in_ == d
    torch.testing.assert_close(model.v_, by_hand.v_)
    net = model.to_module()
    assert net[0].in_features == d and float(net[0].bias.detach().abs().max()) > 1e-3
    X_new = torch.randn(25, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    torch.testing.assert_close(net(X_new).squeeze(1), model.decision_function(X_new),
                               atol=1e-6, rtol=0)
    # robust: the attack moves the d features only, and the program's worst case is its loss
    robust = ConvexReLU(15, **kwargs, robust_eps=eps, hidden_bias=True)
    robust.fit(X, y, patterns=model.patterns_)
    D = robust.patterns_.double()
    z = D @ (robust.v_ - robust.w_)[:, :d]
    attacked = X - eps * s[:, None] * torch.sign(z)
    E, attacked_ones = 2 * D - 1, torch.cat([attacked, with_ones[:, d:]], dim=1)
    for Z in (robust.v_, robust.w_):
        assert float((E * (attacked_ones @ Z.T)).min()) > -1e-7
    penalty = robust.v_.norm(dim=1).sum() + robust.w_.norm(dim=1).sum()
    out = robust.decision_function(attacked)
    worst = float(torch.relu(1 - s * out).sum() + robust.beta * penalty)
    assert worst == pytest.approx(robust.robust_objective_, rel=1e-6)
    # perturbing the ones column as well defends a larger set: a larger optimum
    ones_attacked = ConvexReLU(15, **kwargs, robust_eps=eps)
    ones_attacked.fit(with_ones, y, patterns=model.patterns_)
    assert ones_attacked.robust_objective_ > robust.robust_objective_ + 1e-3


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=-1.0), "beta"), (dict(robust_eps=-0.1), "robust_eps"),
    (dict(loss="cross"), "loss"), (dict(solver="sgd"), "solver"),
    (dict(loss="hinge", solver="admm"), "squared loss only"), (dict(rho=0.0), "rho"),
    (dict(loss="logistic", solver="ipm"), "solver='ipm' solves the squared loss only"),
    (dict(beta=0.0, solver="ipm"), "beta must be > 0 for solver='ipm'"),
    (dict(tol=-1.0), "tol"), (dict(max_iter=0), "max_iter"), (dict(n_patterns=0), "n_patterns"),
    (dict(progress=1), "progress"), (dict(generator=3), "generator"),
    (dict(rho_cone=-1.0), "rho_cone"), (dict(relaxation=0.0), "relaxation"),
    (dict(relaxation=2.0), r"relaxation must be a number in \(0, 2\)"),
    (dict(linear_solver="lu"), "linear_solver"), (dict(balance=None), "balance"),
    (dict(cvxpy_solver=1), "cvxpy_solver"), (dict(hidden_bias="yes"), "hidden_bias"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvexReLU(**kwargs)


def test_unknown_option_and_unimplemented_robust():
    with pytest.raises(TypeError):
        ConvexReLU(lr=0.1)
    for solver in ("admm", "ipm"):
        with pytest.raises(NotImplementedError, match="robust_eps"):
            ConvexReLU(robust_eps=0.1, solver=solver)


def test_bad_data():
    X, y = data()
    model = ConvexReLU(5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="same number of rows"):
        model.fit(X, y[:-1])
    X_bad = X.clone()
    X_bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="X must hold only finite"):
        model.fit(X_bad, y)
    with pytest.raises(ValueError, match="y must hold only finite"):
        model.fit(X, y / 0)
    with pytest.raises(ValueError, match="X must have 2"):
        model.fit(X[:, 0], y)
    with pytest.raises(ValueError, match="labels in"):
        ConvexReLU(5, loss="hinge", solver="cvxpy").fit(X, y)
    with pytest.raises(ValueError, match="patterns must have one row"):
        model.fit(X, y, patterns=np.ones((3, 2)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        model.fit(X, y, patterns=2 * np.ones((40, 2)))
    with pytest.raises(RuntimeError, match="fit"):
        ConvexReLU().predict(X)
