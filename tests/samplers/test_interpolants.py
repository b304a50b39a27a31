"""Stochastic interpolants (arXiv 2303.08797) against exact Gaussian-mixture fields.

With a Gaussian base, x_t = alpha x0 + beta x1 + gamma z has the marginal of beta x1 + C eps,
C^2 = alpha^2 + gamma^2, so `GaussianMixture` gives every field exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from stochstep.samplers.interpolants import (
                                             GAMMAS,
                                             PATHS,
                                             Interpolant,
                                             InterpolantODE,
                                             InterpolantSDE,
                                             interpolant_log_likelihood,
                                             )
from stochstep.samplers.targets import GaussianMixture
from stochstep.stepping import Brownian, integrate, uniform

F64 = torch.float64
GM = GaussianMixture.eight_modes_2d()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def base_sample(it, n, seed):
    """x0 for the path: N(0, I), or the data itself for the mirror path."""
    if it.path == "mirror":
        return GM.sample(n, generator=gen(seed))
    return torch.randn(n, 2, generator=gen(seed), dtype=F64)


def batch(it, n, seed, t_lo=0.2, t_hi=0.8):
    g = gen(seed)
    x1 = GM.sample(n, generator=g)
    x0 = None if it.path == "mirror" else torch.randn(n, 2, generator=g, dtype=F64)
    z = None if it.one_sided else torch.randn(n, 2, generator=g, dtype=F64)
    t = t_lo + (t_hi - t_lo) * torch.rand(n, generator=g, dtype=F64)
    return x0, x1, t, z


# -- paths and gamma ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_boundary_conditions(path):
    it = Interpolant(path)
    x1 = torch.randn(5, 3, generator=gen(0), dtype=F64)
    x0 = x1 if path == "mirror" else torch.randn(5, 3, generator=gen(1), dtype=F64)
    z = None if it.one_sided else torch.randn(5, 3, generator=gen(2), dtype=F64)
    torch.testing.assert_close(it.interpolate(x0, x1, 0.0, z), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(it.interpolate(x0, x1, 1.0, z), x1, atol=1e-12, rtol=0)
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    assert torch.equal(it.gamma(ends), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("gamma", [g for g in GAMMAS if g != "zero"])
def test_gamma_dgamma_finite_at_ends_and_matches_autograd(gamma):
    it = Interpolant("linear", gamma, gamma_scale=2.0 if gamma == "brownian" else 1.0)
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    assert torch.isfinite(it.gamma_dgamma(ends)).all()
    t = torch.linspace(0.01, 0.99, 41, dtype=F64, requires_grad=True)
    (dg,) = torch.autograd.grad(it.gamma(t).sum(), t)
    torch.testing.assert_close(it.gamma_dgamma(t.detach()), it.gamma(t).detach() * dg)
    torch.testing.assert_close(it.dgamma(t.detach()), dg)


@pytest.mark.parametrize("path", PATHS)
def test_coefficient_derivatives_match_autograd(path):
    it = Interpolant(path)
    t = torch.linspace(0.01, 0.99, 40, dtype=F64, requires_grad=True)  # skips t = 1/2
    for f, df in ((it.alpha, it.dalpha), (it.beta, it.dbeta)):
        (d,) = torch.autograd.grad(f(t).sum(), t, allow_unused=True, materialize_grads=True)
        torch.testing.assert_close(df(t.detach()), d)
    _, c, _, cdc = it.marginal_coefficients(t)
    (dc,) = torch.autograd.grad(c.sum(), t)
    torch.testing.assert_close(cdc.detach(), (c * dc).detach())


def test_exact_velocity_agrees_with_the_targets_velocity():
    it = Interpolant("trig")
    fields = it.exact_fields(GM)
    x = GM.sample_marginal(64, 0.5, 0.8, generator=gen(0))
    t = torch.rand(64, generator=gen(1), dtype=F64) * 0.9 + 0.05
    b, c, db, cdc = it.marginal_coefficients(t)
    torch.testing.assert_close(fields.velocity(x, t), GM.velocity(x, b, c, db, cdc / c))
    # b = v - gamma gamma' s and s = -eta / gamma, through the conversion helpers
    torch.testing.assert_close(it.drift_from(fields.v, fields.score)(x, t), fields.velocity(x, t))
    torch.testing.assert_close(it.score_from_eta(fields.eta)(x, t), fields.score(x, t))


# -- objectives --------------------------------------------------------------------------------
def _smooth_perturbation(x, t):
    return torch.stack([torch.sin(x[..., 1]) + t, torch.cos(x[..., 0]) * t], -1)


def check_minimized_by_exact_field(it, which, n, seed, antithetic=False):
    fields = it.exact_fields(GM)
    exact = {"b": fields.velocity, "v": fields.v, "s": fields.score, "eta": fields.eta}[which]
    loss = getattr(it, f"loss_{which}")
    x0, x1, t, z = batch(it, n, seed)

    def per_sample(lam):
        model = lambda x, tt: exact(x, tt) + lam * _smooth_perturbation(x, tt)  # noqa: E731
        return loss(model, x0, x1, t, z, reduction="none", antithetic=antithetic)

    l0 = per_sample(0.0).mean()
    for lam in (-0.5, 0.5):  # common random numbers: L(lam) - L(0) = lam^2/2 E|delta|^2 + noise
        assert per_sample(lam).mean() > l0
    # d/dlam at the exact field vanishes: the mean is within 4 standard errors of zero
    lam = torch.zeros((), dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(per_sample(lam).mean(), lam)
    per_grad = (per_sample(1e-3) - per_sample(-1e-3)) / 2e-3  # exact: the loss is quadratic
    se = per_grad.std() / math.sqrt(per_grad.numel())
    torch.testing.assert_close(grad, per_grad.mean(), rtol=1e-6, atol=1e-9)
    assert abs(grad.item()) <= 4 * se.item() + 1e-12, (grad.item(), se.item())
    # ...while at a perturbed field (lam = 1/2) it is lam E|delta|^2, many standard errors away
    delta_sq = (_smooth_perturbation(it.interpolate(x0, x1, t, z), t) ** 2).sum(-1).mean()
    assert 0.5 * delta_sq.item() > 5 * se.item()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("which", ["b", "v", "s", "eta"])
def test_each_loss_is_minimized_by_the_exact_field(path, which):
    check_minimized_by_exact_field(Interpolant(path), which, 4000, seed=10)


@pytest.mark.parametrize("which", ["b", "s"])
def test_antithetic_loss_is_minimized_by_the_exact_field(which):
    check_minimized_by_exact_field(Interpolant("linear"), which, 2000, seed=11, antithetic=True)


# -- samplers ----------------------------------------------------------------------------------
N = 2000
TRUE_MEAN_LOGP = GM.log_prob(GM.sample(N, generator=gen(0))).mean().item()


@pytest.mark.parametrize("path", PATHS)
def test_ode_sampler_with_exact_velocity_samples_eight_modes(path):
    # measured (n = 2000, 60 Heun steps): gaps +0.005..+0.032 (MC SE ~0.03) over the paths
    it = Interpolant(path)
    x = integrate(InterpolantODE(it.exact_fields(GM).velocity), base_sample(it, N, 1),
                  uniform(0.0, 1.0, 60))
    gap = GM.log_prob(x).mean().item() - TRUE_MEAN_LOGP
    assert abs(gap) < 0.1, gap


@pytest.mark.parametrize("path", ["linear", "one-sided-trig"])
def test_forward_sde_with_exact_fields_samples_eight_modes(path):
    # measured gaps at 200 steps, eps = 1, three seeds: -0.09..0.00 (Monte Carlo SE ~0.03)
    it = Interpolant(path)
    f = it.exact_fields(GM)
    x = integrate(InterpolantSDE(f.velocity, f.score, epsilon=1.0), base_sample(it, N, 1),
                  uniform(0.0, 1.0, 200), noise=Brownian(gen(2)))
    gap = GM.log_prob(x).mean().item() - TRUE_MEAN_LOGP
    assert abs(gap) < 0.15, gap


def test_backward_sde_and_ode_map_data_to_the_gaussian_base():
    it = Interpolant("linear")
    f = it.exact_fields(GM)
    x1 = GM.sample(N, generator=gen(3))
    grid = uniform(1.0, 0.0, 100)
    sde = InterpolantSDE(f.velocity, f.score, epsilon=lambda t: 2 * t)  # eps(t) tuned
    for stepper, noise in ((sde, Brownian(gen(4))), (InterpolantODE(f.velocity), None)):
        x0 = integrate(stepper, x1, grid, noise=noise)
        assert x0.mean(0).abs().max() < 0.1
        assert (torch.cov(x0.T) - torch.eye(2, dtype=F64)).abs().max() < 0.12


def test_sde_and_ode_give_the_same_marginals():
    """Run both to t = 1/2 and compare with exact draws of rho_{1/2}."""
    it = Interpolant("linear")
    f = it.exact_fields(GM)
    x0, grid = base_sample(it, N, 5), uniform(0.0, 0.5, 50)
    ode = integrate(InterpolantODE(f.velocity), x0, grid)
    sde = integrate(InterpolantSDE(f.velocity, f.score, epsilon=2.0), x0, grid,
                    noise=Brownian(gen(6)))
    b, c, _, _ = it.marginal_coefficients(torch.tensor(0.5, dtype=F64))
    exact = GM.sample_marginal(N, b, c, generator=gen(7))
    logp = lambda x: GM.log_prob(x, b, c).mean().item()  # noqa: E731
    assert abs(logp(ode) - logp(exact)) < 0.06
    assert abs(logp(sde) - logp(exact)) < 0.06
    for x in (ode, sde):  # moments agree to Monte Carlo accuracy
        assert (x.mean(0) - exact.mean(0)).abs().max() < 0.12
        assert (torch.cov(x.T) - torch.cov(exact.T)).abs().max() < 0.25
    assert not torch.allclose(ode, sde)  # different samples, same law


def test_ode_likelihood_matches_exact_log_density():
    # measured: RK4, 40 steps: max |error| 1.6e-4 over 100 points (4.8e-3 with 20 steps)
    it = Interpolant("linear")
    f = it.exact_fields(GM)
    x1 = GM.sample(100, generator=gen(8))
    lp = interpolant_log_likelihood(f.velocity, x1, uniform(1.0, 0.0, 40))
    assert lp.shape == (100,)
    assert (lp - GM.log_prob(x1)).abs().max() < 1e-3


def test_hutchinson_likelihood_is_unbiased_and_reproducible():
    it = Interpolant("linear")
    f = it.exact_fields(GM)
    x1 = GM.sample(100, generator=gen(9))
    grid = uniform(1.0, 0.0, 20)
    exact = interpolant_log_likelihood(f.velocity, x1, grid)
    run = lambda seed: interpolant_log_likelihood(  # noqa: E731
        f.velocity, x1, grid, divergence="hutchinson", n_probes=2, generator=gen(seed))
    a = run(0)
    assert torch.equal(a, run(0)) and not torch.equal(a, run(1))
    err = a - exact
    assert abs(err.mean().item()) < 4 * err.std().item() / 10 + 1e-6


def test_sde_is_reproducible_from_a_generator():
    it = Interpolant("linear")
    f = it.exact_fields(GM)
    x0 = base_sample(it, 50, 0)
    run = lambda seed: integrate(InterpolantSDE(f.velocity, f.score), x0,  # noqa: E731
                                 uniform(0.0, 1.0, 10), noise=Brownian(gen(seed)))
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_ode_method_orders():
    """b(x, t) = x: x(1) = e x(0); the error falls at the declared order."""
    x0 = torch.ones(1, 1, dtype=F64)
    for method in ("euler", "heun", "rk4"):
        ode = InterpolantODE(lambda x, t: x, method=method)
        errs = [(integrate(ode, x0, uniform(0.0, 1.0, n)) - math.e).abs().item() for n in (8, 16)]
        assert abs(math.log2(errs[0] / errs[1]) - ode.order) < 0.3


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda s: InterpolantSDE(lambda x, t: 0 * x, s),
    lambda s: InterpolantODE(lambda x, t: s(x, t), method="euler"),
], ids=["sde", "ode"])
def test_check_finite_names_the_step(make):
    score = lambda x, t: torch.where(t[..., None] >= 0.5, math.inf, -x)  # noqa: E731
    x0 = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(FloatingPointError, match=r"step 3 of 4 \(t = 0.75\)"):
        integrate(make(score), x0, uniform(0.0, 1.0, 4), noise=Brownian(gen(0)),
                  check_finite=True)


def test_likelihood_refuses_an_integer_x_by_name():
    with pytest.raises(ValueError, match="x must be a floating-point tensor, got torch.int64"):
        interpolant_log_likelihood(lambda x, t: x, torch.zeros(4, 2, dtype=torch.int64),
                                   uniform(1.0, 0.0, 2))


def test_bad_input_raises_value_error_naming_the_argument():
    it = Interpolant("linear")
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="path"):
        Interpolant("spline")
    with pytest.raises(ValueError, match="gamma"):
        Interpolant("linear", "cubic")
    with pytest.raises(ValueError, match="gamma"):
        Interpolant("trig", "sinesquared")  # sqrt(1 - gamma^2) vanishes
    with pytest.raises(ValueError, match="gamma"):
        Interpolant("one-sided", "brownian")
    with pytest.raises(ValueError, match="gamma_scale"):
        Interpolant("linear", "brownian", gamma_scale=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        InterpolantSDE(lambda x, t: x, lambda x, t: x, epsilon=-0.1)
    with pytest.raises(ValueError, match="epsilon"):
        integrate(InterpolantSDE(lambda x, t: x, lambda x, t: x, epsilon=lambda t: t - 0.5),
                  x, uniform(0.0, 1.0, 4), noise=Brownian(gen(0)))
    with pytest.raises(ValueError, match="t must lie in"):
        it.gamma(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="t must lie in"):
        it.interpolate(x, x, -0.1, x)
    with pytest.raises(ValueError, match="grid"):
        integrate(InterpolantODE(lambda x, t: x), x, uniform(0.0, 1.5, 3))
    with pytest.raises(ValueError, match="x0"):
        it.interpolate(torch.zeros(4, 3), x, 0.5, x)
    with pytest.raises(ValueError, match="z"):
        it.interpolate(x, x, 0.5, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="z"):
        Interpolant("one-sided").interpolate(x, x, 0.5, x)
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        it.interpolate(x, x, torch.full((3,), 0.5), x)
    with pytest.raises(ValueError, match="model"):
        it.loss_v(lambda y, t: y[..., :1], x, x, torch.full((4,), 0.5), x)
    with pytest.raises(ValueError, match="t must avoid"):
        it.loss_s(lambda y, t: y, x, x, torch.tensor([0.0, 0.5, 0.5, 0.5]), x)
    with pytest.raises(ValueError, match="t must avoid"):
        it.loss_b(lambda y, t: y, x, x, torch.tensor([1.0, 0.5, 0.5, 0.5]), x)
    with pytest.raises(ValueError, match="reduction"):
        it.loss_v(lambda y, t: y, x, x, 0.5, x, reduction="sum")
    with pytest.raises(ValueError, match="method"):
        InterpolantODE(lambda x, t: x, method="dopri5")
    with pytest.raises(ValueError, match="velocity"):
        integrate(InterpolantODE(lambda x, t: x[..., :1]), x, uniform(0.0, 1.0, 2))
    with pytest.raises(ValueError, match="divergence"):
        interpolant_log_likelihood(lambda x, t: x, x, uniform(1.0, 0.0, 2), divergence="approx")
    with pytest.raises(ValueError, match="noise"):
        integrate(InterpolantSDE(lambda x, t: x, lambda x, t: x), x, uniform(0.0, 1.0, 2))
