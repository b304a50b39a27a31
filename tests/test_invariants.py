"""assert_invariant and the problem-sized budgets of assert_converges / assert_linear_rate.

Expected values are computed here independently: closed-form gradients of the transformed
problems, Adam's first step by hand, GD's step count from its contraction factor.
"""

import math

import pytest
import torch
from hypothesis import given, settings

from stochstep.theory_checks.properties import (_AffineImage, assert_converges, assert_invariant,
                                                assert_linear_rate, step_budget)
from stochstep.theory_checks.strategies import _random_rotation, quadratic_problem, quadratics


def sgd(lr, **kw):
    return lambda params: torch.optim.SGD(params, lr=lr, **kw)


def adam(lr, **kw):
    return lambda params: torch.optim.Adam(params, lr=lr, **kw)


class SignSGD(torch.optim.Optimizer):
    """x <- x - lr sign(g): scale invariant, not rotation equivariant, no bias correction."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss


class NoLr(torch.optim.Optimizer):
    """Param groups without an lr (the check refuses it before any step)."""

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


P = quadratic_problem(dim=5, condition=30.0, seed=3)


# -- the transformed problems ---------------------------------------------------------------------
def test_affine_image_has_the_closed_form_gradient_and_minimizer():
    gen = torch.Generator().manual_seed(1)
    q = _random_rotation(5, gen)
    s = torch.randn(5, generator=gen, dtype=torch.float64)
    image = _AffineImage(P, scale=7.0, rotation=q, shift=s)
    y = torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()
    image.loss(y).backward()
    # g(y) = 7 f(Q^T (y - s)): grad = 7 Q A (Q^T (y - s) - x_star)
    expected = 7.0 * q @ (P.A @ (q.T @ (y.detach() - s) - P.x_star))
    torch.testing.assert_close(y.grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(image.x_star, q @ P.x_star + s, rtol=0, atol=0)
    assert image.gap(image.x_star) == pytest.approx(0.0, abs=1e-24)


# -- what each optimizer satisfies ----------------------------------------------------------------
@pytest.mark.parametrize("make, transform, expect", [
    (sgd(0.02), "scale", "proportional"),
    (sgd(0.02, momentum=0.9, nesterov=True), "scale", "proportional"),
    (sgd(0.02, momentum=0.5), "rotation", "equivariant"),
    (sgd(0.02, momentum=0.5), "translation", "equivariant"),
    (adam(0.05), "scale", "invariant"),
    (adam(0.05), "rotation", "not_equivariant"),
    (adam(0.05), "translation", "equivariant"),
    (adam(0.05, amsgrad=True), "first_step", "bounded"),
    (lambda ps: torch.optim.AdamW(ps, lr=0.05), "scale", "invariant"),
])
def test_correct_optimizers_get_the_expected_rule_and_pass(make, transform, expect):
    assert assert_invariant(make, P, transform).expect == expect


@pytest.mark.parametrize("make, transform, expect, message", [
    (adam(0.05), "rotation", "equivariant", "expected equivariant iterates"),
    (sgd(0.02), "rotation", "not_equivariant", "not rotation-equivariant"),
    (adam(0.05), "scale", "proportional", "retraced with lr / c"),
    (sgd(0.02), "scale", "invariant", "expected invariant iterates"),
    (adam(0.05, weight_decay=0.1), "scale", None, "ratio of moment estimates"),   # L2 decay
    (lambda ps: torch.optim.AdamW(ps, lr=0.05), "translation", None, "decay towards 0"),
    (sgd(0.02, weight_decay=0.1), "translation", None, "differ by"),
    (lambda ps: SignSGD(ps, lr=0.05), "rotation", "equivariant", "commutes with rotations"),
    (sgd(0.02), "first_step", None, "moved by"),   # lr |g| > lr for |g| > 1
])
def test_violations_fail_saying_what_was_expected_and_why(make, transform, expect, message):
    with pytest.raises(AssertionError, match=message):
        assert_invariant(make, P, transform, expect=expect)


def test_adams_first_step_is_lr_g_over_g_plus_eps():
    eps = 1e-3   # large, so |g| / (|g| + eps) is visibly below 1
    g = P.grad(P.x0)
    by_hand = float((g.abs() / (g.abs() + eps)).max())
    res = assert_invariant(adam(0.05, eps=eps), P, "first_step")
    assert res.deviation == pytest.approx(by_hand, rel=1e-12) and by_hand < 1


def test_sign_sgd_is_scale_invariant_exactly():
    assert assert_invariant(lambda ps: SignSGD(ps, lr=0.05), P, "scale",
                            expect="invariant").deviation == 0.0


def test_bad_arguments_name_what_is_accepted():
    with pytest.raises(ValueError, match="transform must be one of"):
        assert_invariant(sgd(0.1), P, "shear")
    with pytest.raises(ValueError, match="expect for transform 'scale' must be one of"):
        assert_invariant(sgd(0.1), P, "scale", expect="equivariant")
    with pytest.raises(ValueError, match="factor must differ from 1"):
        assert_invariant(sgd(0.1), P, "scale", factor=1.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        assert_invariant(sgd(0.1), P, "scale", steps=0)
    with pytest.raises(ValueError, match="shift must be a finite number > 0"):
        assert_invariant(sgd(0.1), P, "translation", shift=-1.0)
    with pytest.raises(TypeError, match="no_such"):
        assert_invariant(sgd(0.1), P, "scale", no_such=1)
    with pytest.raises(ValueError, match="lacks gap: assert_invariant needs"):
        assert_invariant(sgd(0.1), type("P", (), {"x0": P.x0, "loss": P.loss})(), "scale")
    with pytest.raises(TypeError, match="must return a torch.optim.Optimizer, got tuple"):
        assert_invariant(lambda ps: (torch.optim.SGD(ps, lr=0.1), None), P, "scale")
    with pytest.raises(ValueError, match="param groups hold no 'lr'; pass lr="):
        assert_invariant(lambda ps: NoLr(ps), P, "first_step")


# -- budgets that fit the problem -----------------------------------------------------------------
def test_step_budget_is_twice_gds_count_plus_twenty():
    p = quadratic_problem(dim=3, condition=100.0)
    assert step_budget(p, 1e-3) == math.ceil(200 * math.log(1e3)) + 20 == 1402
    with pytest.raises(ValueError, match="not strongly convex"):
        step_budget(type("P", (), {"mu": 0.0, "L": 1.0})(), 1e-3)
    with pytest.raises(ValueError, match="attributes mu and L"):
        step_budget(object(), 1e-3)
    with pytest.raises(ValueError, match="tol must be a number in"):
        step_budget(p, 2.0)


@settings(max_examples=10)
@given(quadratics())   # the default strategy draws condition numbers up to 100
def test_gd_passes_with_the_default_budget(p):
    assert_converges(sgd(1 / p.L), p)


def test_a_short_budget_is_named_as_the_limit_with_the_steps_needed():
    p = quadratic_problem(dim=2, condition=100.0, seed=0)
    # GD on a 2-D quadratic: the slow mode contracts by exactly 1 - 1/kappa per step, so the
    # steps GD needs are about what the message extrapolates from the last quarter of the run.
    with pytest.raises(AssertionError, match="the budget, not the method") as info:
        assert_converges(sgd(1 / p.L), p, steps=200)
    needed = int(info.value.args[0].split("pass steps >= ")[1].rstrip(")"))
    errors = assert_converges(sgd(1 / p.L), p, steps=needed + 5).run.errors
    first = next(t for t, e in enumerate(errors) if e <= 1e-3 * errors[0])
    assert abs(first - needed) <= 2


def test_a_stalled_method_is_named_as_the_limit():
    with pytest.raises(AssertionError, match="the method, not the budget"):
        assert_converges(sgd(0.0), P)


def test_linear_rate_default_steps_reach_a_millionth_of_the_bound():
    p = quadratic_problem(dim=3, condition=10.0, seed=0)
    res = assert_linear_rate(sgd(1 / p.L), p, rate=0.9)
    assert len(res.run.errors) - 1 == math.ceil(math.log(1e6) / -math.log(0.9)) == 132
