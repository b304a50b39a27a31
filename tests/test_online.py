"""OptimisticOMD and CSMD against steps written out by hand from their docstrings' math, their
step-size sequences, the prox operators against closed forms, the regret of a noise-free game,
bad input and resuming from a state dict. (The torch.optim contract: tests/conformance.)"""

import io
import math

import pytest
import torch

from stochstep.optimizers import CSMD, OptimisticOMD, prox_group_l2_, prox_l1_
from stochstep.optimizers.domains import Ball, Box
from stochstep.optimizers.online import MAX_ONS_DIM

D64 = torch.float64


def joint_params(values=((3.0,), (0.0, 4.0))):
    """Two parameters whose joint vector is (3, 0, 4): norm 5, outside the unit ball."""
    return [torch.nn.Parameter(torch.tensor(v, dtype=D64)) for v in values]


def flat(ps):
    return torch.cat([p.detach().reshape(-1) for p in ps])


def set_grad(ps, g):
    for p, part in zip(ps, torch.as_tensor(g, dtype=D64).split([p.numel() for p in ps])):
        p.grad = part.reshape(p.shape).clone()


def unit_ball(y):
    """Projection onto the unit ball centred at 0, written out."""
    return y / max(1.0, y.norm().item())


# -- reference steps by hand -------------------------------------------------------------------
def test_optimistic_omd_two_steps_by_hand_on_a_ball_that_bites():
    ps = joint_params()
    opt = OptimisticOMD(ps, lr=None, diameter=2.0, grad_bound=3.0, delta=1.0, domain=Ball(1.0))
    x1 = torch.tensor([0.6, 0.0, 0.8], dtype=D64)   # (3, 0, 4) / 5: projected at construction
    torch.testing.assert_close(flat(ps), x1, rtol=0, atol=1e-15)

    g1, g2 = torch.tensor([0.0, 2.0, -1.0], dtype=D64), torch.tensor([1.0, 1.0, 1.0], dtype=D64)
    eta1, eta2, eta3 = 2 / math.sqrt(37), 2 / math.sqrt(37 + 5), 2 / math.sqrt(37 + 5 + 6)
    x_hat2 = unit_ball(x1 - eta1 * g1)
    x2 = unit_ball(x_hat2 - eta2 * g1)
    x_hat3 = unit_ball(x_hat2 - eta2 * g2)
    x3 = unit_ball(x_hat3 - eta3 * g2)
    # the ball bites in the play steps (else the test would not check the projection there)
    assert (x_hat2 - eta2 * g1).norm() > 1 and (x_hat3 - eta3 * g2).norm() > 1

    set_grad(ps, g1)
    opt.step()
    torch.testing.assert_close(flat(ps), x2, rtol=0, atol=1e-15)
    set_grad(ps, g2)
    opt.step()
    torch.testing.assert_close(flat(ps), x3, rtol=0, atol=1e-15)
    states = [opt.state[p] for p in ps]
    torch.testing.assert_close(flat([s["x_hat"] for s in states]), x_hat3, rtol=0, atol=1e-15)
    torch.testing.assert_close(flat([s["hint"] for s in states]), g2, rtol=0, atol=0)
    assert sum(s["sq_dev_sum"].item() for s in states) == pytest.approx(5 + 6, abs=1e-13)


def test_csmd_two_steps_by_hand_l1_then_ball():
    ps = joint_params()
    opt = CSMD(ps, lr=0.5, prox="l1", prox_weight=0.4, domain=Ball(1.0))
    x = torch.tensor([0.6, 0.0, 0.8], dtype=D64)
    for t, g in enumerate(([0.0, 2.0, -1.0], [-2.0, 2.0, 2.0]), start=1):
        g = torch.tensor(g, dtype=D64)
        eta = 0.5 / math.sqrt(t)
        y = x - eta * g
        y = torch.sign(y) * torch.clamp(y.abs() - 0.4 * eta, min=0)
        assert y.norm() > 1   # the ball bites
        x = unit_ball(y)
        set_grad(ps, g)
        opt.step()
        torch.testing.assert_close(flat(ps), x, rtol=0, atol=1e-15)


def test_exp_concave_variant_two_steps_by_hand():
    x = torch.nn.Parameter(torch.tensor([0.5, -0.5], dtype=D64))
    opt = OptimisticOMD([x], lr=None, exp_concavity=0.25, diameter=2.0, grad_bound=1.0,
                        delta=2.0)
    beta = 0.5 * min(1 / (4 * 1.0 * 2.0), 0.25)
    u = 2.0 * torch.eye(2, dtype=D64)
    x_hat, hint = x.detach().clone(), torch.zeros(2, dtype=D64)
    for g in ([1.0, 0.5], [-0.5, 1.0]):
        g = torch.tensor(g, dtype=D64)
        x_hat = x_hat - torch.linalg.inv(u) @ g
        u = u + beta / 2 * torch.outer(g - hint, g - hint)
        hint = g
        want = x_hat - torch.linalg.inv(u) @ hint
        x.grad = g.clone()
        opt.step()
        torch.testing.assert_close(x.detach(), want, rtol=1e-14, atol=1e-15)


def test_exp_concave_projection_on_a_ball_is_the_u_norm_projection():
    """Against the KKT point (U + nu I)^-1 U y of min (x-y)^T U (x-y) over ||x|| <= R, whose
    nu is found here by a separate root search on ||x(nu)|| = R (scipy's brentq)."""
    from scipy.optimize import brentq

    x = torch.nn.Parameter(torch.zeros(3, dtype=D64))
    opt = OptimisticOMD([x], lr=None, exp_concavity=1.0, diameter=1.0, grad_bound=1.0,
                        delta=0.5, domain=Ball(0.5))
    u = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.7]], dtype=D64)
    y = torch.tensor([1.0, -2.0, 0.5], dtype=D64)
    got = opt._u_projection(y, u)

    def x_of(nu):
        return torch.linalg.solve(u + nu * torch.eye(3, dtype=D64), u @ y)
    nu = brentq(lambda nu: x_of(nu).norm().item() - 0.5, 0.0, 100.0, xtol=1e-15)
    torch.testing.assert_close(got, x_of(nu), rtol=1e-10, atol=1e-12)
    assert got.norm().item() == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("cls,kwargs", [
    (OptimisticOMD, dict(lr=None, diameter=2.0, grad_bound=3.0)),
    (OptimisticOMD, dict(lr=0.4, maximize=True)),
    (CSMD, dict(lr=0.5)),
    (CSMD, dict(lr=0.5, maximize=True)),
])
def test_the_blocked_ball_step_equals_the_mirror_maps(cls, kwargs):
    """A ball centred at 0 takes the cache-blocked path; given its centre explicitly, the same
    ball goes through the mirror map's step. Large tensors, so that blocks split them."""
    g = torch.Generator().manual_seed(2)
    start = [torch.randn(200_000, generator=g, dtype=D64), torch.randn(7, 3, generator=g,
                                                                      dtype=D64)]
    runs = []
    for domain in (Ball(300.0), Ball(300.0, center=torch.zeros(200_021, dtype=D64))):
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        opt = cls(ps, domain=domain, **kwargs)
        outward = 1.0 if kwargs.get("maximize") else -1.0   # so that the ball bites
        for k in range(3):
            set_grad(ps, outward * flat(ps) + 0.1 * torch.cos(flat(ps) + k))
            opt.step()
        runs.append(flat(ps))
    assert runs[0].norm() == pytest.approx(300.0, rel=1e-12)   # on the sphere: the ball bit
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)


# -- step-size sequences -----------------------------------------------------------------------
def test_self_confident_step_sizes():
    """Unconstrained and 1-D: x_hat_t - x_hat_{t+1} = eta_t g_t exactly, so the sequence can be
    read from the state; eta_t = D / sqrt(delta + 4 G^2 + sum_{s<t} (g_s - g_{s-1})^2)."""
    x = torch.nn.Parameter(torch.zeros(1, dtype=D64))
    opt = OptimisticOMD([x], lr=None, diameter=3.0, grad_bound=2.0, delta=0.5)
    grads = [1.0, -1.0, 2.0, 2.0, 0.5]
    v, prev_hat, prev_g = 0.0, 0.0, 0.0
    for g in grads:
        x.grad = torch.tensor([g], dtype=D64)
        opt.step()
        x_hat = opt.state[x]["x_hat"].item()
        assert (prev_hat - x_hat) / g == pytest.approx(3.0 / math.sqrt(0.5 + 16 + v), rel=1e-13)
        v += (g - prev_g) ** 2
        prev_hat, prev_g = x_hat, g
    assert opt.state[x]["sq_dev_sum"].item() == pytest.approx(v, rel=1e-14)


def test_strongly_convex_step_sizes_with_the_smoothness_cap():
    x = torch.nn.Parameter(torch.zeros(1, dtype=D64))
    opt = OptimisticOMD([x], lr=None, strong_convexity=0.5, smoothness=0.25)
    prev = 0.0
    for t in range(1, 6):
        x.grad = torch.ones(1, dtype=D64)
        opt.step()
        x_hat = opt.state[x]["x_hat"].item()
        assert prev - x_hat == pytest.approx(min(1 / (0.5 * t), 1 / (4 * 0.25)), rel=1e-14)
        # the play x_{t+1} = x_hat_{t+1} - eta_{t+1} g_t
        assert x_hat - x.item() == pytest.approx(min(1 / (0.5 * (t + 1)), 1.0), rel=1e-14)
        prev = x_hat


@pytest.mark.parametrize("kwargs,eta", [
    (dict(schedule="sqrt_t"), lambda t: 0.6 / math.sqrt(t)),
    (dict(schedule="constant", horizon=6), lambda t: 0.6 / math.sqrt(6)),
    (dict(schedule="linear_decay", horizon=6), lambda t: 0.6 * (6 - t + 1) / 6 ** 1.5),
    (dict(schedule="inv_t", strong_convexity=1.5), lambda t: 0.6 / (1.5 * t)),
    (dict(schedule="sqrt_t", smoothness=1.0), lambda t: min(0.6 / math.sqrt(t), 0.5)),
])
def test_csmd_schedules(kwargs, eta):
    x = torch.nn.Parameter(torch.zeros(1, dtype=D64))
    opt = CSMD([x], lr=0.6, **kwargs)
    prev = 0.0
    for t in range(1, 7):
        x.grad = torch.ones(1, dtype=D64)
        opt.step()
        assert prev - x.item() == pytest.approx(eta(t), rel=1e-14)
        prev = x.item()


def test_csmd_refuses_to_step_past_its_horizon_and_changes_nothing():
    x = torch.nn.Parameter(torch.zeros(2))
    opt = CSMD([x], lr=0.1, schedule="linear_decay", horizon=2)
    for _ in range(2):
        x.grad = torch.ones(2)
        opt.step()
    before = x.detach().clone(), opt.state[x]["step"].clone()
    with pytest.raises(ValueError, match=r"group 0: step 3 is past horizon=2"):
        opt.step()
    assert torch.equal(x.detach(), before[0]) and torch.equal(opt.state[x]["step"], before[1])


# -- the regret of a noise-free game with a fixed centre -----------------------------------------
def test_optimistic_omd_regret_stays_bounded_without_noise():
    """f_t(x) = ||x - c||^2 / 2 for every t with c inside the ball: the best fixed point is c,
    with loss 0, so the regret is sum_t f(x_t); with no noise and no drift it stops growing.
    One game in d = 24 (an 8 x 3 parameter), so that each round is one optimizer step."""
    g = torch.Generator().manual_seed(0)
    centre = 0.2 * torch.rand(8, 3, generator=g, dtype=D64) - 0.1   # norm < 0.5
    x = torch.nn.Parameter(torch.full((8, 3), 0.5, dtype=D64))       # norm 2.4: projected
    opt = OptimisticOMD([x], lr=None, diameter=2.0, grad_bound=2.0, domain=Ball(1.0))
    regret, at = 0.0, {}
    for t in range(1, 10_001):
        x.grad = x.detach() - centre
        regret += 0.5 * (x.grad ** 2).sum().item()
        opt.step()
        if t in (1000, 3000, 10_000):
            at[t] = regret
    assert at[1000] < 5
    assert at[10_000] == pytest.approx(at[1000], rel=1e-9)


# -- prox operators --------------------------------------------------------------------------
def test_prox_l1_is_the_entrywise_argmin():
    y = torch.tensor([-2.0, -0.3, 0.0, 0.2, 0.7, 5.0], dtype=D64)
    x = y.clone()
    prox_l1_([x], 0.5)
    torch.testing.assert_close(x, torch.tensor([-1.5, 0.0, 0.0, 0.0, 0.2, 4.5], dtype=D64),
                               rtol=0, atol=1e-15)
    # each entry minimizes 0.5 |x| + (x - y)^2 / 2: no point of a fine grid does better
    grid = torch.linspace(-6, 6, 120_001, dtype=D64)
    for xi, yi in zip(x, y):
        best = (0.5 * grid.abs() + 0.5 * (grid - yi) ** 2).min()
        assert 0.5 * xi.abs() + 0.5 * (xi - yi) ** 2 <= best + 1e-12


def test_prox_group_l2_shrinks_rows_and_whole_vectors():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=D64)
    b = torch.tensor([1.0, 2.0, 2.0], dtype=D64)   # norm 3: one group
    s = torch.tensor(-4.0, dtype=D64)               # a 0-D tensor: one group
    wt = torch.tensor([[3.0, 0.3], [4.0, 0.4]], dtype=D64).t()   # non-contiguous, = w[:2]
    prox_group_l2_([w, b, s, wt], 1.0)
    assert torch.allclose(w, torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]], dtype=D64))
    assert torch.allclose(b, torch.tensor([1.0, 2.0, 2.0], dtype=D64) * (2 / 3))
    assert s.item() == -3.0
    assert torch.allclose(wt, w[:2])


@pytest.mark.parametrize("prox", ["l1", "group_l2"])
def test_prox_then_project_is_the_exact_prox_on_a_centred_ball(prox):
    """argmin_{||x|| <= R} tau h(x) + ||x - y||^2 / 2, solved by cvxpy, equals
    Pi_ball(prox_{tau h}(y)) (the composition CSMD computes)."""
    import cvxpy as cp

    g = torch.Generator().manual_seed(1)
    y = [torch.randn(3, 2, generator=g, dtype=D64) * 2, torch.randn(4, generator=g, dtype=D64)]
    tau, radius = 0.7, 1.2
    x = [t.clone() for t in y]
    (prox_l1_ if prox == "l1" else prox_group_l2_)(x, tau)
    got = unit_ball(flat(x) / radius) * radius

    v = cp.Variable(10)
    parts = [v[0:2], v[2:4], v[4:6], v[6:10]]   # rows of the 3 x 2 tensor, the 4-vector
    h = cp.norm1(v) if prox == "l1" else sum(cp.norm(part, 2) for part in parts)
    target = flat(y).numpy()
    cp.Problem(cp.Minimize(tau * h + 0.5 * cp.sum_squares(v - target)),
               [cp.norm(v, 2) <= radius]).solve(solver=cp.CLARABEL, tol_gap_abs=1e-10,
                                                 tol_gap_rel=1e-10, tol_feas=1e-10)
    torch.testing.assert_close(got, torch.as_tensor(v.value), rtol=0, atol=1e-5)


def test_prox_l1_then_box_is_the_exact_prox():
    """argmin over a box of tau ||x||_1 + ||x - y||^2 / 2, entry by entry on a fine grid,
    equals clip(soft-threshold(y)): both act coordinatewise."""
    y = torch.tensor([-2.0, -0.3, 0.4, 1.5, 3.0], dtype=D64)
    low = torch.tensor([-1.0, 0.1, -1.0, -1.0, 2.5], dtype=D64)   # [0.1, 1]: 0 outside
    high = torch.tensor([1.0, 1.0, 1.0, 1.2, 4.0], dtype=D64)
    x = [y.clone()]
    prox_l1_(x, 0.5)
    Box(low, high).project_(x)
    for xi, yi, lo, hi in zip(x[0], y, low, high):
        grid = torch.linspace(float(lo), float(hi), 100_001, dtype=D64)
        best = grid[(0.5 * grid.abs() + 0.5 * (grid - yi) ** 2).argmin()]
        assert xi.item() == pytest.approx(best.item(), abs=1e-4)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs,text", [
    (OptimisticOMD, dict(lr=None), "diameter is required"),
    (OptimisticOMD, dict(lr=None, diameter=1.0), "grad_bound is required"),
    (OptimisticOMD, dict(lr=None, exp_concavity=1.0, grad_bound=1.0), "diameter"),
    (OptimisticOMD, dict(lr=0.1, strong_convexity=1.0), "lr must be None"),
    (OptimisticOMD, dict(lr=None, exp_concavity=1.0, strong_convexity=1.0), "one"),
    (CSMD, dict(lr=0.1, prox="l1", prox_weight=-0.1), "prox_weight"),
    (CSMD, dict(lr=0.1, prox_weight=0.1), "prox_weight > 0 needs prox"),
    (CSMD, dict(lr=0.1, schedule="constant"), "horizon is required"),
    (CSMD, dict(lr=0.1, schedule="linear_decay", horizon=2.5), "horizon"),
    (CSMD, dict(lr=0.1, schedule="inv_t"), "strong_convexity"),
    (CSMD, dict(lr=0.1, strong_convexity=1.0), "strong_convexity"),
    (CSMD, dict(lr=0.1, mirror="entropy", prox="l1"), "prox must be None"),
    (CSMD, dict(lr=0.1, mirror="entropy", domain=Ball(1.0)), "domain"),
])
def test_bad_input_raises_naming_the_argument(cls, kwargs, text):
    with pytest.raises(ValueError, match=text):
        cls([torch.nn.Parameter(torch.ones(3))], **kwargs)


def test_lr_none_without_diameter_says_what_to_give_on_rd():
    with pytest.raises(ValueError, match=r"domain=None \(R\^d\)"):
        OptimisticOMD([torch.nn.Parameter(torch.ones(3))], lr=None, grad_bound=1.0)


def test_lr_none_takes_the_domains_diameter():
    opt = OptimisticOMD([torch.nn.Parameter(torch.ones(3))], lr=None, grad_bound=1.0,
                        domain=Ball(1.5))
    x = opt.param_groups[0]["params"][0]
    x.grad = torch.ones(3)
    opt.step()   # eta_1 = 3 / sqrt(1 + 4)
    x_hat_drop = (torch.ones(3) / math.sqrt(3) * 1.5 - opt.state[x]["x_hat"])
    torch.testing.assert_close(x_hat_drop, torch.full((3,), 3 / math.sqrt(5)))


def test_exp_concave_variant_refuses_large_or_several_tensors():
    kw = dict(lr=None, exp_concavity=1.0, diameter=1.0, grad_bound=1.0)
    with pytest.raises(ValueError, match="MAX_ONS_DIM"):
        OptimisticOMD([torch.nn.Parameter(torch.zeros(MAX_ONS_DIM + 1))], **kw)
    with pytest.raises(ValueError, match="one tensor"):
        OptimisticOMD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))],
                      **kw)


def test_simplex_parameter_with_negative_entries_raises():
    with pytest.raises(ValueError, match="negative"):
        OptimisticOMD([torch.nn.Parameter(torch.tensor([0.5, -0.1, 0.6]))], lr=0.1,
                      mirror="entropy")


@pytest.mark.parametrize("cls", [OptimisticOMD, CSMD])
def test_unknown_keyword_is_a_type_error(cls):
    with pytest.raises(TypeError, match="momentum"):
        cls([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)


def test_a_group_of_mixed_dtypes_is_refused():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2, dtype=D64))
    opt = CSMD([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(2, dtype=D64)
    with pytest.raises(ValueError, match="one dtype and device"):
        opt.step()


# -- the entropy mirror map ------------------------------------------------------------------
@pytest.mark.parametrize("cls", [OptimisticOMD, CSMD])
def test_entropy_mirror_steps_multiplicatively(cls):
    p = torch.nn.Parameter(torch.tensor([2.0, 1.0, 1.0], dtype=D64))   # normalized: (.5,.25,.25)
    opt = cls([p], lr=0.5, mirror="entropy")
    x1 = torch.tensor([0.5, 0.25, 0.25], dtype=D64)
    torch.testing.assert_close(p.detach(), x1, rtol=0, atol=1e-15)
    g = torch.tensor([1.0, -1.0, 0.0], dtype=D64)
    p.grad = g.clone()
    opt.step()
    once = x1 * torch.exp(-0.5 * g)
    once /= once.sum()
    if cls is OptimisticOMD:   # the play repeats the multiplicative step with the hint g
        once = once * torch.exp(-0.5 * g)
        once /= once.sum()
    torch.testing.assert_close(p.detach(), once, rtol=1e-14, atol=1e-15)


def test_entropy_mirror_with_self_confident_steps_takes_the_simplex_diameter():
    p = torch.nn.Parameter(torch.tensor([0.5, 0.25, 0.25], dtype=D64))
    opt = OptimisticOMD([p], lr=None, grad_bound=1.0, mirror="entropy")
    g = torch.tensor([1.0, -1.0, 0.0], dtype=D64)
    p.grad = g.clone()
    opt.step()
    eta = math.sqrt(2) / math.sqrt(1 + 4)   # D = sqrt(2), the simplex's diameter
    x_hat = torch.tensor([0.5, 0.25, 0.25], dtype=D64) * torch.exp(-eta * g)
    torch.testing.assert_close(opt.state[p]["x_hat"], x_hat / x_hat.sum(), rtol=1e-14,
                               atol=1e-15)


# -- resuming ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make,values", [
    (lambda ps: OptimisticOMD(ps, lr=None, diameter=2.0, grad_bound=3.0, domain=Ball(1.0)),
     ((3.0,), (0.0, 4.0))),
    (lambda ps: OptimisticOMD(ps, lr=None, exp_concavity=0.5, diameter=2.0, grad_bound=3.0,
                              domain=Ball(1.0)),
     ((3.0, 0.0, 4.0),)),   # the exp-concave variant: one tensor per group
    (lambda ps: CSMD(ps, lr=0.5, schedule="linear_decay", horizon=8, prox="group_l2",
                     prox_weight=0.1, domain=Ball(1.0)),
     ((3.0,), (0.0, 4.0))),
], ids=["omd", "omd-ons", "csmd"])
def test_resume_from_state_dict_is_bit_identical(make, values):
    def run(opt, ps, n):
        for _ in range(n):
            set_grad(ps, torch.sin(3 * flat(ps)) + 0.1)
            opt.step()

    ps = joint_params(values)
    opt = make(ps)
    run(opt, ps, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    at = [p.detach().clone() for p in ps]
    run(opt, ps, 4)
    resumed = [torch.nn.Parameter(t) for t in at]
    opt2 = make(resumed)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    run(opt2, resumed, 4)
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(ps, resumed))
