"""SSO (target-based surrogates): reference steps computed by hand, the oracle-call contract,
the surrogate's first-order agreement with the loss, the projected-GD view of an exact inner
solve, monotone descent for target_lr <= 1/L, bad input and resuming."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stochstep.optimizers import SSO
from stochstep.optimizers.surrogate import target_surrogate


def linear_problem(seed=0, n=6, d=3, p=2):
    """Least squares with a linear multi-output model: f(W) = X W, ell(z) = ||z - Y||^2 / 2."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.randn(n, p, generator=g, dtype=torch.float64)
    W = torch.nn.Parameter(torch.randn(d, p, generator=g, dtype=torch.float64))
    return X, Y, W


def squared(Y):
    return lambda z: 0.5 * ((z - Y) ** 2).sum()


# -- the docstring's math, by hand (numpy, closed-form gradients) ---------------------------
def hand_steps(X, Y, W0, steps, target_lr, inner_steps, inner_lr=None, schedule="constant",
               total_steps=None):
    """For f(W) = X W and ell(z) = ||z - Y||^2 / 2: g_t = z_t - Y and
    grad g~_t(W) = X^T (g_t + (X W - z_t) / eta_t)."""
    X, Y, W = X.numpy(), Y.numpy(), W0.detach().numpy().copy()
    for t in range(1, steps + 1):
        eta = target_lr * {"constant": 1.0, "inverse_sqrt": 1 / math.sqrt(t),
                           "exponential": (1 / (total_steps or 1)) ** (t / (total_steps or 1))
                           }[schedule]
        z_t = X @ W
        g_t = z_t - Y
        W = hand_inner_loop(X, W, z_t, g_t, 1.0, eta, inner_steps, inner_lr)
    return torch.from_numpy(W)


def hand_inner_loop(X, W, z_t, g_t, D, eta, inner_steps, inner_lr):
    """The inner loop on g~_t(W) = ||g_t||^2 / 2 + <g_t, X W - z_t> + <D, (X W - z_t)^2> / (2 eta)
    (metric D = 1: the SGD form): plain steps of inner_lr, or the Armijo search (trial 10,
    shrink 0.9, c = 0.1, at most 100 tries, stop at a gradient norm <= 1e-6)."""

    def surrogate(V):
        diff = X @ V - z_t
        return 0.5 * (g_t ** 2).sum() + (g_t * diff).sum() + (D * diff ** 2).sum() / (2 * eta)

    gamma = 10.0
    for _ in range(inner_steps):
        grad = X.T @ (g_t + D * (X @ W - z_t) / eta)
        if inner_lr is not None:
            W = W - inner_lr * grad
            continue
        norm_sq = (grad ** 2).sum()
        if math.sqrt(norm_sq) <= 1e-6:
            break
        for _ in range(100):
            if surrogate(W - gamma * grad) <= surrogate(W) - 0.1 * gamma * norm_sq:
                break
            gamma *= 0.9
        W = W - gamma * grad
    return W


@pytest.mark.parametrize("kwargs", [
    dict(target_lr=0.5, inner_steps=3, inner_lr=0.05),
    dict(target_lr=0.8, inner_steps=4),                      # the Armijo line search
    dict(target_lr=2.0, inner_steps=3, schedule="inverse_sqrt"),
    dict(target_lr=1.5, inner_steps=2, inner_lr=0.02, schedule="exponential", total_steps=4),
])
def test_two_steps_match_the_docstring_math_by_hand(kwargs):
    X, Y, W = linear_problem()
    expected = hand_steps(X, Y, W, 2, **kwargs)
    opt = SSO([W], **kwargs)
    for _ in range(2):
        opt.step(lambda: X @ W, squared(Y))
    torch.testing.assert_close(W.detach(), expected, rtol=1e-12, atol=1e-12)


def test_the_line_search_backtracks_in_the_reference_case():
    """The Armijo case above is only a check of the line search if it backtracks: the first
    trial step (10) must fail there."""
    X, Y, W = linear_problem()
    z_t = (X @ W).detach()
    g = X.T @ (z_t - Y)
    trial = W.detach() - 10 * g
    surrogate = target_surrogate(X @ trial, z_t, z_t - Y, 0.8)
    assert surrogate > target_surrogate(z_t, z_t, z_t - Y, 0.8) - 0.1 * 10 * (g ** 2).sum()


def test_target_loss_is_called_once_per_step_and_the_closure_once_per_inner_step():
    X, Y, W = linear_problem()
    calls = {"closure": 0, "target_loss": 0}

    def closure():
        calls["closure"] += 1
        return X @ W

    def target_loss(z):
        calls["target_loss"] += 1
        assert z.requires_grad and z.grad_fn is None   # z_t detached, a leaf
        return squared(Y)(z)

    opt = SSO([W], target_lr=0.5, inner_steps=7, inner_lr=0.01)
    for step in range(1, 4):
        loss = opt.step(closure, target_loss)
        assert calls == {"closure": step * (1 + 7), "target_loss": step}
    assert not loss.requires_grad
    # the line search evaluates the closure more often, and still target_loss once a step
    opt = SSO([W], target_lr=0.5, inner_steps=7)
    opt.step(closure, target_loss)
    assert calls["target_loss"] == 4 and calls["closure"] > 3 * 8 + 8


def test_step_returns_the_loss_at_z_t():
    X, Y, W = linear_problem()
    before = squared(Y)(X @ W).item()
    loss = SSO([W], target_lr=0.5).step(lambda: X @ W, squared(Y))
    assert loss.item() == before and squared(Y)(X @ W).item() < before


def test_surrogate_value_and_gradient_at_theta_t_equal_the_losss():
    """With a nonlinear model (a small MLP) and the logistic loss."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(20, 4, generator=g, dtype=torch.float64)
    y = (torch.rand(20, generator=g) < 0.5).double()
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    model.double()

    def ell(z):
        return torch.nn.functional.binary_cross_entropy_with_logits(z.squeeze(1), y)

    z_t = model(X).detach().requires_grad_()
    loss = ell(z_t)
    (grad_z,) = torch.autograd.grad(loss, z_t)
    surrogate = target_surrogate(model(X), z_t.detach(), grad_z, target_lr=0.37,
                                 anchor_loss=loss.detach())
    surrogate_grads = torch.autograd.grad(surrogate, list(model.parameters()))
    loss_grads = torch.autograd.grad(ell(model(X)), list(model.parameters()))
    assert surrogate.item() == pytest.approx(loss.item(), rel=1e-15)
    for a, b in zip(surrogate_grads, loss_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_exact_inner_minimization_is_projected_gradient_descent_in_target_space():
    """z_{t+1} = X W_{t+1} = Pi_{range X}(z_t - eta grad ell(z_t)); the projection is computed
    independently, by least squares."""
    X, Y, W = linear_problem(n=8, d=3, p=2)
    eta = 0.7
    z_t = (X @ W).detach()
    wanted = z_t - eta * (z_t - Y)
    projection = X @ torch.linalg.lstsq(X, wanted).solution
    # plain inner steps at 1 / (largest curvature of the surrogate): a contraction; 3000 steps
    # take the error far below the tolerance
    curvature = torch.linalg.eigvalsh(X.T @ X).max().item() / eta
    SSO([W], target_lr=eta, inner_steps=3000, inner_lr=1 / curvature).step(
        lambda: X @ W, squared(Y))
    torch.testing.assert_close((X @ W).detach(), projection, rtol=1e-10, atol=1e-10)
    assert (projection - wanted).abs().max() > 0.1   # the projection is not the identity


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), fraction=st.sampled_from([1.0, 0.5, 0.1]),
       inner_steps=st.sampled_from([1, 5, 20]))
def test_full_batch_with_target_lr_at_most_one_over_l_never_increases_the_loss(
        seed, fraction, inner_steps):
    """Logistic loss ell(z) = mean(log(1 + exp(-y z))) is L-smooth with L = 1/(4n); the model
    is an MLP (nonconvex in theta). With eta <= 1/L the surrogate bounds the loss above, and
    the line search only accepts surrogate decreases."""
    g = torch.Generator().manual_seed(seed)
    n = 16
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 1)).double()

    def ell(z):
        return torch.nn.functional.softplus(-y * z.squeeze(1)).mean()

    opt = SSO(model.parameters(), target_lr=fraction * 4 * n, inner_steps=inner_steps)
    losses = [opt.step(lambda: model(X), ell).item() for _ in range(8)]
    losses.append(ell(model(X)).item())
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0]


def test_schedules_scale_target_lr():
    """After one step from the same point, inverse_sqrt equals constant (t = 1), and at the
    second step it equals a constant run at target_lr / sqrt(2) from there."""
    runs = {}
    for schedule in ("constant", "inverse_sqrt"):
        X, Y, W = linear_problem()
        opt = SSO([W], target_lr=1.0, inner_steps=3, inner_lr=0.05, schedule=schedule)
        opt.step(lambda: X @ W, squared(Y))
        runs[schedule] = W.detach().clone()
        opt.step(lambda: X @ W, squared(Y))
        runs[schedule + "2"] = W.detach().clone()
    assert torch.equal(runs["constant"], runs["inverse_sqrt"])
    X, Y, _ = linear_problem()
    V = torch.nn.Parameter(runs["inverse_sqrt"].clone())
    SSO([V], target_lr=1 / math.sqrt(2), inner_steps=3, inner_lr=0.05).step(
        lambda: X @ V, squared(Y))
    torch.testing.assert_close(V.detach(), runs["inverse_sqrt2"], rtol=1e-14, atol=1e-14)


def test_grad_is_never_touched_and_unused_parameters_stay():
    X, Y, W = linear_problem()
    unused = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    W.grad = torch.full_like(W, 7.0)
    SSO([W, unused], target_lr=0.5).step(lambda: X @ W, squared(Y))
    assert torch.equal(W.grad, torch.full_like(W, 7.0)) and unused.grad is None
    assert torch.equal(unused.detach(), torch.ones(2, dtype=torch.float64))


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_raises_naming_it():
    X, Y, W = linear_problem()
    opt = SSO([W], target_lr=0.5)
    with pytest.raises(ValueError, match="target_loss must return a scalar"):
        opt.step(lambda: X @ W, lambda z: (z - Y) ** 2)
    with pytest.raises(ValueError, match="graph"):
        opt.step(lambda: (X @ W).detach(), squared(Y))
    with pytest.raises(ValueError, match="graph"):
        def no_grad_closure():
            with torch.no_grad():
                return X @ W
        opt.step(no_grad_closure, squared(Y))
    with pytest.raises(TypeError, match="tensor"):
        opt.step(lambda: (X @ W).tolist(), squared(Y))
    with pytest.raises(ValueError, match="needs closure"):
        opt.step(None, squared(Y))
    with pytest.raises(ValueError, match="needs target_loss"):
        opt.step(lambda: X @ W)
    with pytest.raises(ValueError, match="differentiable"):
        opt.step(lambda: X @ W, lambda z: torch.tensor(1.0, dtype=torch.float64))
    shapes = iter([(6, 2), (5, 2)])

    def shrinking():
        return (X @ W)[:next(shapes)[0]]
    with pytest.raises(ValueError, match="shape"):
        opt.step(shrinking, lambda z: z.sum())
    for kwargs, name in [(dict(target_lr=0.0), "target_lr"), (dict(target_lr=-1.0), "target_lr"),
                         (dict(target_lr=0.5, inner_lr=0.0), "inner_lr"),
                         (dict(target_lr=0.5, inner_steps=0), "inner_steps"),
                         (dict(target_lr=0.5, schedule="exponential"), "total_steps"),
                         (dict(target_lr=0.5, total_steps=3), "total_steps"),
                         (dict(target_lr=0.5, schedule="1/sqrt(t)"), "schedule")]:
        with pytest.raises(ValueError, match=name):
            SSO([W], **kwargs)
    with pytest.raises(TypeError, match="momentum"):
        SSO([W], target_lr=0.5, momentum=0.9)
    with pytest.raises(TypeError, match="lr"):
        SSO([W], lr=0.5)
    with pytest.raises(ValueError, match="target_lr must be a finite number > 0"):
        SSO([W], target_lr=torch.tensor(0.0))
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        SSO([W], target_lr=torch.tensor([0.5, 0.5]))
    opt = SSO([W], target_lr=0.5)
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError, match=r'group 0: target_lr \(param_groups\[i\]\["lr"\]\) '
                                         r"must be a finite number >= 0, got -0.5"):
        opt.step(lambda: X @ W, squared(Y))


# -- torch's lr schedulers drive target_lr ------------------------------------------------------
def test_an_lr_scheduler_drives_the_target_step():
    """ExponentialLR halves target_lr after each step: the second step is the hand-computed
    step at target_lr / 2 from where the first left off."""
    X, Y, W = linear_problem()
    W0 = W.detach().clone()
    opt = SSO([W], target_lr=torch.tensor(0.8, dtype=torch.float64), inner_steps=4)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    for _ in range(2):
        opt.step(lambda: X @ W, squared(Y))
        scheduler.step()
    W1 = hand_steps(X, Y, W0, 1, target_lr=0.8, inner_steps=4)
    W2 = hand_steps(X, Y, W1, 1, target_lr=0.4, inner_steps=4)
    torch.testing.assert_close(W.detach(), W2, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(W2, hand_steps(X, Y, W1, 1, target_lr=0.8, inner_steps=4))
    assert opt.param_groups[0]["lr"].item() == 0.2 and "target_lr" not in opt.param_groups[0]


def test_a_scheduler_keeps_the_groups_equal_and_zero_lr_leaves_the_parameters():
    """Two groups under CosineAnnealingLR stay equal (the shared-step rule holds), and at its
    end, lr = 0, the step still queries target_loss once and moves nothing."""
    X, Y, W = linear_problem()
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = SSO([{"params": [W]}, {"params": [b], "inner_lr": 0.01}], target_lr=0.5,
              inner_lr=0.02, inner_steps=3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    calls = []
    for _ in range(2):
        opt.step(lambda: X @ W + b, lambda z: calls.append(1) or squared(Y)(z))
        scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    before = [W.detach().clone(), b.detach().clone()]
    loss = opt.step(lambda: X @ W + b, lambda z: calls.append(1) or squared(Y)(z))
    assert len(calls) == 3 and loss.item() == squared(Y)(X @ W + b).item()
    assert torch.equal(W.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert int(opt.state[W]["step"]) == 3


def test_a_state_dict_that_held_target_lr_loads_it_as_lr():
    X, Y, W = linear_problem()
    opt = SSO([W], target_lr=0.5, inner_steps=2)
    opt.step(lambda: X @ W, squared(Y))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["lr"] == 0.5
    sd["param_groups"][0]["target_lr"] = sd["param_groups"][0].pop("lr")   # the old layout
    V = torch.nn.Parameter(W.detach().clone())
    resumed = SSO([V], target_lr=3.0, inner_steps=2)
    resumed.load_state_dict(sd)
    assert resumed.param_groups[0]["lr"] == 0.5 and "target_lr" not in resumed.param_groups[0]
    opt.step(lambda: X @ W, squared(Y))
    resumed.step(lambda: X @ V, squared(Y))
    assert torch.equal(V.detach(), W.detach())


def test_param_groups_must_share_the_surrogates_options():
    X, Y, W = linear_problem()
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = SSO([{"params": [W]}, {"params": [b], "lr": 2.0}], target_lr=0.5)
    with pytest.raises(ValueError, match=r'group 1 has target_lr \(param_groups\[i\]\["lr"\]\)'
                       r"=2.0 but group 0 has 0.5"):
        opt.step(lambda: X @ W + b, squared(Y))
    with pytest.raises(TypeError, match='target_lr as "lr"'):
        SSO([{"params": [W]}, {"params": [b], "target_lr": 2.0}], target_lr=0.5)
    opt = SSO([{"params": [W]}, {"params": [b], "inner_lr": 0.1}], target_lr=0.5)
    with pytest.raises(ValueError, match="inner_lr"):
        opt.step(lambda: X @ W + b, squared(Y))
    # groups with their own inner_lr: each group's plain gradient step uses its own
    opt = SSO([{"params": [W], "inner_lr": 0.01}, {"params": [b], "inner_lr": 0.1}],
              target_lr=0.5, inner_steps=1)
    z_t = (X @ W + b).detach()
    gW, gb = X.T @ (z_t - Y), (z_t - Y).sum(0)    # the surrogate's gradient at theta_t
    W0, b0 = W.detach().clone(), b.detach().clone()
    opt.step(lambda: X @ W + b, squared(Y))
    torch.testing.assert_close(W.detach(), W0 - 0.01 * gW, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(b.detach(), b0 - 0.1 * gb, rtol=1e-14, atol=1e-14)


# -- resuming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [dict(schedule="inverse_sqrt"),
                                      dict(schedule="exponential", total_steps=10)])
def test_state_dict_resume_is_bit_identical(schedule):
    X, Y, W = linear_problem()
    opt = SSO([W], target_lr=1.0, inner_steps=4, **schedule)
    for _ in range(3):
        opt.step(lambda: X @ W, squared(Y))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    at_save = W.detach().clone()
    for _ in range(3):
        opt.step(lambda: X @ W, squared(Y))
    V = torch.nn.Parameter(at_save)
    resumed = SSO([V], target_lr=1.0, inner_steps=4, **schedule)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(3):
        resumed.step(lambda: X @ V, squared(Y))
    assert torch.equal(V.detach(), W.detach())
    # and the counter mattered: a fresh optimizer from the same point goes elsewhere
    fresh_point = torch.nn.Parameter(at_save.clone())
    fresh = SSO([fresh_point], target_lr=1.0, inner_steps=4, **schedule)
    for _ in range(3):
        fresh.step(lambda: X @ fresh_point, squared(Y))
    assert not torch.equal(fresh_point.detach(), W.detach())


def test_half_precision_targets_and_parameters_stay_finite_and_descend():
    X, Y, W = linear_problem()
    Xh, Yh = X.to(torch.bfloat16), Y.to(torch.bfloat16)
    Wh = torch.nn.Parameter(W.detach().to(torch.bfloat16))
    opt = SSO([Wh], target_lr=0.5)
    first = opt.step(lambda: Xh @ Wh, squared(Yh)).item()
    for _ in range(5):
        last = opt.step(lambda: Xh @ Wh, squared(Yh)).item()
    assert Wh.dtype == torch.bfloat16 and np.isfinite(last) and last < first


# -- diagonal Adagrad in target space ----------------------------------------------------------
def hand_adagrad_steps(X, Y, W0, batches, n_examples, target_lr, inner_steps, inner_lr=None):
    """For f(W) = X_S W and ell(z) = ||z - Y_S||^2 / 2 on each batch S: g_t = z_t - Y_S,
    G[S] += g_t^2 (G starts at 1e-5), D = sqrt(G[S]), and
    grad g~_t(W) = X_S^T (g_t + D (X_S W - z_t) / eta)."""
    X, Y, W = X.numpy(), Y.numpy(), W0.detach().numpy().copy()
    G = np.full((n_examples, Y.shape[1]), 1e-5)
    for ids in batches:
        Xb, Yb = X[ids], Y[ids]
        z_t = Xb @ W
        g_t = z_t - Yb
        G[ids] += g_t ** 2
        W = hand_inner_loop(Xb, W, z_t, g_t, np.sqrt(G[ids]), target_lr, inner_steps, inner_lr)
    return torch.from_numpy(W)


BATCHES = [[0, 2, 4], [4, 1, 5]]     # example 4 is in both: its sum carries over


def adagrad_run(opt, X, Y, W, batches=BATCHES):
    for ids in batches:
        opt.step(lambda: X[ids] @ W, squared(Y[ids]), example_ids=torch.tensor(ids))


@pytest.mark.parametrize("kwargs", [dict(target_lr=0.5, inner_steps=3, inner_lr=0.05),
                                    dict(target_lr=0.8, inner_steps=4)])
def test_adagrad_two_steps_match_the_docstring_math_by_hand(kwargs):
    X, Y, W = linear_problem()
    expected = hand_adagrad_steps(X, Y, W, BATCHES, 6, **kwargs)
    opt = SSO([W], target_optimizer="adagrad", n_examples=6, **kwargs)
    adagrad_run(opt, X, Y, W)
    torch.testing.assert_close(W.detach(), expected, rtol=1e-12, atol=1e-12)
    # the metric matters: SGD in target space from the same point goes elsewhere
    X, Y, V = linear_problem()
    sgd = SSO([V], **kwargs)
    for ids in BATCHES:
        sgd.step(lambda: X[ids] @ V, squared(Y[ids]))
    assert (V.detach() - expected).abs().max() > 1e-3
    assert opt.target_sq_sum.shape == (6, 2) and opt.target_sq_sum[3].tolist() == [1e-5] * 2
    assert torch.all(opt.target_sq_sum[[0, 1, 2, 4, 5]] > 1e-5)   # example 3 was never seen


def test_adagrad_exact_inner_minimization_is_the_weighted_projection_of_adagrads_step():
    """z_{t+1} = argmin over realizable z of ||z - (z_t - eta g_t / D)||_D^2, computed
    independently column by column by weighted least squares."""
    X, Y, W = linear_problem(n=8, d=3, p=2)
    ids, eta = [0, 1, 3, 4, 6, 7], 0.7
    z_t = (X[ids] @ W).detach()
    g_t = z_t - Y[ids]
    D = (1e-5 + g_t ** 2).sqrt()
    wanted = z_t - eta * g_t / D
    projection = torch.stack([X[ids] @ torch.linalg.lstsq(D[:, j, None].sqrt() * X[ids],
                                                          D[:, j].sqrt() * wanted[:, j]).solution
                              for j in range(2)], dim=1)
    curvature = max(torch.linalg.eigvalsh(X[ids].T @ (D[:, j, None] * X[ids])).max().item()
                    for j in range(2)) / eta
    opt = SSO([W], target_lr=eta, inner_steps=3000, inner_lr=1 / curvature,
              target_optimizer="adagrad", n_examples=8)
    opt.step(lambda: X[ids] @ W, squared(Y[ids]), example_ids=torch.tensor(ids))
    torch.testing.assert_close((X[ids] @ W).detach(), projection, rtol=1e-10, atol=1e-10)
    assert (projection - wanted).abs().max() > 0.1


def test_adagrad_bad_input_raises_naming_it_and_changes_nothing():
    X, Y, W = linear_problem()
    with pytest.raises(ValueError, match="n_examples"):
        SSO([W], target_lr=0.5, target_optimizer="adagrad")
    with pytest.raises(ValueError, match="n_examples is only used"):
        SSO([W], target_lr=0.5, n_examples=6)
    with pytest.raises(ValueError, match="n_examples"):
        SSO([W], target_lr=0.5, target_optimizer="adagrad", n_examples=0)
    with pytest.raises(ValueError, match="target_optimizer must be one of"):
        SSO([W], target_lr=0.5, target_optimizer="adam")
    with pytest.raises(ValueError, match="example_ids is only used"):
        SSO([W], target_lr=0.5).step(lambda: X @ W, squared(Y), example_ids=torch.arange(6))
    opt = SSO([W], target_lr=0.5, target_optimizer="adagrad", n_examples=6)
    adagrad_run(opt, X, Y, W, BATCHES[:1])
    at, sums = W.detach().clone(), opt.target_sq_sum.clone()
    ids = [0, 1, 2]
    calls = []

    def expensive(z):
        calls.append(1)
        return squared(Y[ids])(z)
    for bad, text in [(None, "needs example_ids"),
                      (torch.tensor([0, 1, 6]), r"lie in 0..5 .*got ids from 0 to 6"),
                      (torch.tensor([-1, 1, 2]), "lie in 0..5"),
                      (torch.tensor([0, 1]), r"one id per row .*\(3 rows\), got \(2,\)"),
                      (torch.tensor([0.0, 1.0, 2.0]), "integer tensor"),
                      ([0, 1, 2], "integer tensor"),
                      (torch.tensor([0, 1, 1]), "distinct")]:
        with pytest.raises(ValueError, match=text):
            opt.step(lambda: X[ids] @ W, expensive, example_ids=bad)
    with pytest.raises(ValueError, match="rows have shape"):
        opt.step(lambda: (X[ids] @ W)[:, :1], expensive, example_ids=torch.tensor(ids))
    assert torch.equal(W.detach(), at) and torch.equal(opt.target_sq_sum, sums)
    assert not calls   # refused before the expensive call


def test_adagrad_state_dict_resume_is_bit_identical():
    X, Y, W = linear_problem()
    opt = SSO([W], target_lr=1.0, inner_steps=4, target_optimizer="adagrad", n_examples=6)
    adagrad_run(opt, X, Y, W)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    at_save = W.detach().clone()
    later = [[1, 3, 0], [5, 2]]
    adagrad_run(opt, X, Y, W, later)
    V = torch.nn.Parameter(at_save)
    resumed = SSO([V], target_lr=1.0, inner_steps=4, target_optimizer="adagrad", n_examples=6)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    adagrad_run(resumed, X, Y, V, later)
    assert torch.equal(V.detach(), W.detach())
    # the sums mattered: a fresh optimizer from the same point goes elsewhere
    fresh_point = torch.nn.Parameter(at_save.clone())
    fresh = SSO([fresh_point], target_lr=1.0, inner_steps=4, target_optimizer="adagrad",
                n_examples=6)
    adagrad_run(fresh, X, Y, fresh_point, later)
    assert not torch.equal(fresh_point.detach(), W.detach())
    # and a state dict of another size or optimizer is refused before anything changes
    other = SSO([V], target_lr=1.0, target_optimizer="adagrad", n_examples=5)
    with pytest.raises(ValueError, match="n_examples"):
        other.load_state_dict(opt.state_dict())
    assert other.target_sq_sum is None
    with pytest.raises(ValueError, match="target_optimizer='sgd'"):
        SSO([V], target_lr=1.0).load_state_dict(opt.state_dict())
    # a state dict saved before any step clears the sums
    blank = SSO([V], target_lr=1.0, target_optimizer="adagrad", n_examples=6).state_dict()
    opt.load_state_dict(blank)
    assert opt.target_sq_sum is None
