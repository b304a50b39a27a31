"""Property tests of the package's optimizers on problems with known answers.

Problems come from :mod:`theory_checks.strategies`, checks from :mod:`theory_checks.properties`;
the number of examples comes from the hypothesis profile (``stochstep-ci`` by default here, see
the top-level ``conftest.py``). ``tests/test_user_example.py`` is the short version a user writes.
"""

import math

import networkx as nx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stochstep.optimizers import SGLD, DiffGrad
from stochstep.theory_checks.properties import (assert_converges, assert_diverges_above,
                                                assert_linear_rate, assert_monotone_loss,
                                                assert_same_trajectory)
from stochstep.theory_checks.strategies import (gaussian_mixtures, laplacian_problems,
                                                logistic_problems, quadratic_problem, quadratics,
                                                seeds)


def sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr)


# -- the strategies build what they claim -------------------------------------------------------
@given(quadratics(dims=(2, 8), conditions=(1.0, 1e3), mu=(0.1, 10.0)))
def test_quadratics_know_their_answers(p):
    assert torch.allclose(p.eigenvalues[[0, -1]], torch.tensor([p.mu, p.L], dtype=torch.float64),
                          rtol=1e-10)
    assert p.grad(p.x_star).abs().max() == 0 and p.gap(p.x_star) == 0
    assert math.isclose(p.distance(p.x0), 1.0, rel_tol=1e-12)
    x = p.x0.clone().requires_grad_()
    p.loss(x).backward()
    assert torch.allclose(x.grad, p.grad(p.x0), rtol=1e-12, atol=1e-14)


@given(laplacian_problems(nodes=(1, 10)))
def test_laplacian_problems_are_connected_and_strongly_convex(p):
    assert nx.is_connected(p.graph) and p.mu > 0
    assert torch.allclose(p.laplacian.sum(1), torch.zeros(p.dim, dtype=torch.float64),
                          atol=1e-12)


@given(logistic_problems(regs=(0.0, 1.0)))
def test_logistic_problems_minimizer_and_smoothness(p):
    hess = p.hessian(p.x0)
    assert torch.linalg.eigvalsh(hess)[-1] <= p.L * (1 + 1e-12)
    if p.x_star is None:  # separable, unregularized: the infimum 0 is not attained
        assert p.separable and p.reg == 0 and p.f_star == 0.0 < p.gap(p.x0)
    else:
        assert p.grad(p.x_star).norm() <= 1e-9
        assert p.gap(p.x0) > 0


@given(gaussian_mixtures())
def test_gaussian_mixtures_are_valid(gm):
    assert math.isclose(float(gm.weights.sum()), 1.0, rel_tol=1e-12)
    assert torch.isfinite(gm.score(gm.means)).all()


def test_builders_replay_and_reject_bad_knobs():
    a, b = quadratic_problem(4, 20.0, seed=7), quadratic_problem(4, 20.0, seed=7)
    assert torch.equal(a.A, b.A) and torch.equal(a.x0, b.x0) and repr(a) == repr(b)
    with pytest.raises(ValueError, match="condition"):
        quadratic_problem(3, 0.5)
    with pytest.raises(ValueError, match="dims"):
        quadratics(dims=(1, 3), conditions=(1.0, 10.0))


# -- gradient descent: the textbook rates and the 2/L stability limit ---------------------------
@given(st.one_of(quadratics(dims=(2, 8), conditions=(1.0, 100.0)),
                 laplacian_problems(nodes=(2, 8)),
                 logistic_problems(regs=(0.05, 1.0))))
def test_gd_contracts_at_one_minus_mu_over_L(p):
    # ||x - x* - (1/L)(grad f(x) - grad f(x*))|| <= (1 - mu/L) ||x - x*|| for mu-strongly
    # convex, L-smooth f: the distance bound holds at every step with constant 1.
    assert_linear_rate(sgd(1 / p.L), p, rate=1 - p.mu / p.L, steps=60)


@given(quadratics(dims=(2, 6), conditions=(1.0, 50.0)), st.floats(1.05, 1.5))
def test_gd_diverges_above_two_over_L(p, lr_factor):
    assert_diverges_above(lambda params, lr: torch.optim.SGD(params, lr=lr), p, lr_factor,
                          steps=300)


@given(st.one_of(logistic_problems(regs=(0.0, 1.0)), quadratics()))
def test_gd_loss_is_monotone_below_one_over_L(p):
    assert_monotone_loss(sgd(1 / p.L), p, steps=50)


# -- our optimizers -----------------------------------------------------------------------------
@given(quadratics(dims=(2, 6), conditions=(1.0, 30.0), mu=(0.1, 10.0)))
def test_diffgrad_converges_on_quadratics(p):
    assert_converges(lambda params: DiffGrad(params, lr=0.1), p, steps=300, tol=1e-2)


@given(quadratics(dims=(2, 6)), st.floats(0.05, 1.0), seeds())
def test_sgld_at_temperature_zero_is_gd(p, lr_scale, seed):
    lr = lr_scale / p.L
    gen = torch.Generator().manual_seed(seed)
    assert_same_trajectory(lambda params: SGLD(params, lr=lr, temperature=0.0, generator=gen),
                           sgd(lr), p, steps=20)


# -- the checks themselves catch what they should -----------------------------------------------
def test_checks_fail_with_measured_numbers():
    p = quadratic_problem(3, 100.0, seed=1)
    with pytest.raises(AssertionError, match=r"measured rate 0\.9"):
        assert_linear_rate(sgd(1 / p.L), p, rate=0.5, steps=20)
    above_converged = r"did not diverge above it .* \(x1\.1\): e_T/e_0 = \S+e-"
    with pytest.raises(AssertionError, match=above_converged):
        q = quadratic_problem(3, 10.0, seed=1)
        assert_diverges_above(lambda params, lr: torch.optim.SGD(params, lr=lr), q, 1.1,
                              limit=1 / q.L)  # a wrong limit: GD is still stable at 1.1/L
    with pytest.raises(AssertionError, match="loss increased at 20 of 20 steps"):
        assert_monotone_loss(sgd(2.5 / p.L), p, steps=20)
    with pytest.raises(AssertionError, match="did not converge"):
        assert_converges(sgd(1 / p.L), p, steps=10)
    with pytest.raises(AssertionError, match="first at step 1"):
        assert_same_trajectory(sgd(0.01), sgd(0.0101), p, steps=5)
