"""N-PG-IGT and (N-)HARPG beyond the conformance suite: the points where they evaluate the
closure, HARPG's exactness on a quadratic, its Hessian-vector estimate, and bad input."""

import math

import pytest
import torch

from stochstep.optimizers import HARPG, NPGIGT, hessian_vector_estimate

A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.7]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def quadratic(x):
    return 0.5 * x @ A @ x - B @ x


def recording_closure(x, opt, seen):
    """A closure that records the point it is evaluated at, then backpropagates ``quadratic``."""
    def closure():
        seen.append(x.detach().clone())
        opt.zero_grad()
        loss = quadratic(x)
        loss.backward()
        return loss
    return closure


def test_nharpg_on_a_quadratic_is_normalized_gradient_descent():
    """The Hessian correction is exact on a quadratic, whatever q: d_t = grad f(theta_t)."""
    x = torch.nn.Parameter(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64))
    opt = HARPG([x], lr=0.5, momentum=0.6, generator=torch.Generator().manual_seed(3))
    y = x.detach().clone()
    for t in range(10):
        opt.step(lambda: quadratic(x))
        g = A @ y - B
        torch.testing.assert_close(opt.state[x]["direction"], g, rtol=1e-12, atol=1e-12)
        y = y - 0.5 * 2 / (t + 2) * g / g.norm()
        torch.testing.assert_close(x.detach(), y, rtol=1e-12, atol=1e-12)


def test_npgigt_evaluates_at_the_extrapolated_point_and_restores_theta():
    x = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    opt = NPGIGT([x], lr=0.3, momentum=0.5)
    seen = []
    closure = recording_closure(x, opt, seen)

    thetas = [x.detach().clone()]
    for _ in range(3):
        opt.step(closure)
        thetas.append(x.detach().clone())
    torch.testing.assert_close(seen[0], thetas[0])          # t = 0: theta_0 itself
    for t in (1, 2):
        eta = 0.5 * (2 / (t + 2)) ** 0.8
        want = thetas[t] + (1 - eta) / eta * (thetas[t] - thetas[t - 1])
        torch.testing.assert_close(seen[t], want, rtol=1e-12, atol=1e-12)


def test_the_authors_extrapolation_variant_uses_the_previous_eta():
    """benchmarks/policy_gradient.py measures N-PG-IGT with the authors' eta_{t-1} in the
    point; that variant must differ from the default exactly there."""
    from benchmarks.policy_gradient import _CodeExtrapolation

    x = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    opt = _CodeExtrapolation([x], lr=0.3, momentum=0.5)
    seen, thetas = [], [x.detach().clone()]
    closure = recording_closure(x, opt, seen)

    for _ in range(3):
        opt.step(closure)
        thetas.append(x.detach().clone())
    for t in (1, 2):
        eta = 0.5 * (2 / (t - 1 + 2)) ** 0.8
        want = thetas[t] + (1 - eta) / eta * (thetas[t] - thetas[t - 1])
        torch.testing.assert_close(seen[t], want, rtol=1e-12, atol=1e-12)


def test_harpg_evaluates_at_theta_then_at_the_random_point():
    x = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    opt = HARPG([x], lr=0.3, generator=torch.Generator().manual_seed(11))
    draws = torch.Generator().manual_seed(11)
    seen = []

    def closure():
        seen.append(x.detach().clone())
        return quadratic(x)

    opt.step(closure)
    theta0, theta1 = seen[0], x.detach().clone()
    seen.clear()
    opt.step(closure)
    q = float(torch.rand((), dtype=torch.float64, generator=draws))
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], theta1)
    torch.testing.assert_close(seen[1], q * theta1 + (1 - q) * theta0, rtol=1e-12, atol=1e-12)


def test_hessian_vector_estimate_is_the_mean_of_the_per_sample_estimates():
    """B_i v = hess(l_i) v + grad(l_i) <grad log p_i, v>, averaged over the samples, against
    each sample's Hessian and gradients formed explicitly."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, dtype=torch.float64, generator=g)
    data = torch.randn(4, 3, dtype=torch.float64, generator=g)
    v = [torch.randn(3, dtype=torch.float64, generator=g)]

    def per_sample(theta):
        loss = torch.sin(data @ theta) * (data ** 2).sum(-1)
        log_prob = -(data @ theta) ** 2 + data[:, 0] * theta[1]
        return loss, log_prob

    theta = torch.nn.Parameter(w.clone())
    got = hessian_vector_estimate(*per_sample(theta), [theta], v)[0]
    want = torch.zeros(3, dtype=torch.float64)
    for i in range(4):
        one = lambda t, i=i: per_sample(t)[0][i]  # noqa: E731
        hess = torch.autograd.functional.hessian(one, w)
        grad_l = torch.autograd.functional.jacobian(one, w)
        grad_p = torch.autograd.functional.jacobian(lambda t, i=i: per_sample(t)[1][i], w)
        want += (hess @ v[0] + grad_l * (grad_p @ v[0])) / 4
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # without log_prob: the Hessian of the mean loss alone
    plain = hessian_vector_estimate(per_sample(theta)[0], None, [theta], v)[0]
    hess = torch.autograd.functional.hessian(lambda t: per_sample(t)[0].mean(), w)
    torch.testing.assert_close(plain, hess @ v[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [NPGIGT, HARPG])
def test_a_zero_direction_moves_nothing(cls):
    x = torch.nn.Parameter(torch.ones(3))
    opt = cls([x], lr=0.5)

    def closure():
        loss = (0 * x).sum()
        if cls is NPGIGT:
            opt.zero_grad()
            loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert torch.equal(x.detach(), torch.ones(3)) and int(opt.state[x]["step"]) == 3


def test_unnormalized_harpg_takes_the_square_root_schedule():
    x = torch.nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    opt = HARPG([x], lr=0.1, normalized=False, generator=torch.Generator().manual_seed(0))
    opt.step(lambda: 0.5 * (x ** 2).sum())
    torch.testing.assert_close(x.detach(), torch.tensor([3.0, -4.0], dtype=torch.float64)
                               * (1 - 0.1 * math.sqrt(2 / 2)))


@pytest.mark.parametrize("cls", [NPGIGT, HARPG])
def test_a_missing_closure_is_refused(cls):
    opt = cls([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match="closure"):
        opt.step()


@pytest.mark.parametrize("out", [torch.ones(3), (torch.ones(3), torch.ones(2)), "loss",
                                 (torch.ones(2, 2), torch.ones(2, 2))])
def test_harpg_refuses_a_closure_that_returns_something_else(out):
    x = torch.nn.Parameter(torch.ones(2))
    opt = HARPG([x])
    with pytest.raises(TypeError, match="closure must return a scalar loss, or a pair"):
        opt.step(lambda: out)
