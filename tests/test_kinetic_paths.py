"""Kinetic-optimal Gaussian paths (Shaul et al., arXiv 2306.06626) against values computed
independently: by hand, by scipy quadrature, by Monte Carlo with the exact empirical velocity,
and by a brute-force discretized minimization of the energy."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import minimize

from stochstep.samplers.interpolants import (DataSeparation, Interpolant, InterpolantODE,
                                             estimate_data_separation, kinetic_energy,
                                             kinetic_optimal_path)
from stochstep.samplers.targets import GaussianMixture
from stochstep.stepping import integrate, uniform

F64 = torch.float64
T_VP = 0.1 + 0.5 * 19.9  # T(1) of the VP schedule beta(u) = 0.1 + 19.9 u


def gen(seed):
    return torch.Generator().manual_seed(seed)


def separated(dim, second_moment=None):
    """lambda = 1 (well-separated data)."""
    return DataSeparation(torch.tensor([0.0, 1.0]), 1.0, dim=dim, second_moment=second_moment)


@pytest.fixture(scope="module")
def clusters():
    """64 points in two clusters at +-2 e_1 (std 0.3): lambda well below 1 in between."""
    g = gen(0)
    sign = torch.sign(torch.randn(64, 1, generator=g, dtype=F64))
    y = 0.3 * torch.randn(64, 2, generator=g, dtype=F64) + 2.0 * sign * torch.tensor([1.0, 0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sep = estimate_data_separation(y, generator=gen(1))
    torch.set_num_threads(threads)
    return y, sep


# -- paths --------------------------------------------------------------------------------------
def test_presets_boundary_values_and_snr():
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    for name in ("cond-ot", "cosine"):
        path = Interpolant(name)
        assert torch.equal(path.beta(ends), ends) and torch.equal(path.alpha(ends), 1 - ends)
    t = torch.tensor([0.0, 0.25, 0.5], dtype=F64)
    torch.testing.assert_close(Interpolant("cond-ot").snr(t), t / (1 - t))
    torch.testing.assert_close(Interpolant("cosine").snr(t), torch.tan(math.pi * t / 2))
    vp = Interpolant("vp")
    assert vp.path == "one-sided-vp" and repr(vp) == "Interpolant('one-sided-vp', 'zero')"
    # alpha_0 = exp(-T(1)/2), by hand; sigma = sqrt(1 - alpha^2); exactly (1, 0) at t = 1
    torch.testing.assert_close(vp.beta(ends), torch.tensor([math.exp(-T_VP / 2), 1], dtype=F64))
    torch.testing.assert_close(vp.alpha(ends),
                               torch.tensor([math.sqrt(1 - math.exp(-T_VP)), 0], dtype=F64))
    # alpha' = beta(1 - t) alpha / 2: beta_min / 2 at t = 1, where sigma' = -inf
    assert vp.dbeta(torch.tensor(1.0, dtype=F64)).item() == pytest.approx(0.05)
    assert vp.dalpha(torch.tensor(1.0, dtype=F64)).item() == -math.inf


@pytest.mark.parametrize("name", ["cond-ot", "cosine", "vp", "grid"])
def test_path_derivatives_match_autograd(name):
    if name == "grid":
        nodes = torch.linspace(0, 1, 9, dtype=F64)
        path = Interpolant.from_grid(nodes, nodes**2, 1 - nodes)
    else:
        path = Interpolant(name)
    t = torch.linspace(0.013, 0.987, 37, dtype=F64, requires_grad=True)
    for value, slope in ((path.alpha, path.dalpha), (path.beta, path.dbeta)):
        (grad,) = torch.autograd.grad(value(t).sum(), t)
        torch.testing.assert_close(slope(t.detach()), grad)


def test_grid_path_interpolates_and_keeps_the_snr_monotone():
    nodes = torch.linspace(0, 1, 33, dtype=F64)
    c, s = torch.cos(math.pi * nodes / 2), torch.sin(math.pi * nodes / 2)
    s[-1], c[-1] = 1.0, 0.0
    path = Interpolant.from_grid(nodes, s, c)  # the cosine path: angle = t, radius = 1
    t = torch.linspace(0, 1, 1001, dtype=F64)
    cosine = Interpolant("cosine")
    torch.testing.assert_close(path.beta(t), cosine.beta(t), atol=1e-12, rtol=0)
    torch.testing.assert_close(path.dalpha(t), cosine.dalpha(t), atol=1e-12, rtol=0)
    # a wiggly radius: the snr still increases between the nodes
    wiggly = Interpolant.from_grid(nodes, s * (1 + 0.3 * s * c), c * (1 + 0.3 * s * c))
    assert (wiggly.snr(t).diff() > 0).all()
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    assert torch.equal(wiggly.beta(ends), ends) and torch.equal(wiggly.alpha(ends), 1 - ends)


# -- kinetic energy -----------------------------------------------------------------------------
def test_kinetic_energy_closed_forms_for_separated_data():
    sep = separated(3, second_moment=5.0)  # D = 5, d = 3
    # Cond-OT: alpha' = 1, sigma' = -1, lambda = 1: KE = D + d
    assert kinetic_energy(Interpolant("cond-ot"), sep) == pytest.approx(8.0, rel=1e-12)
    # cosine: int alpha'^2 = int sigma'^2 = pi^2 / 8
    assert kinetic_energy(Interpolant("cosine"), sep) == pytest.approx(8 * math.pi**2 / 8,
                                                                       rel=1e-10)
    # VP on [0, 0.99]: D alpha'^2 + d sigma'^2 by scipy quadrature of the hand-written path
    def vp_integrand(t):
        u = 1 - t
        alpha = math.exp(-0.5 * (0.1 * u + 9.95 * u * u))
        dalpha = 0.5 * (0.1 + 19.9 * u) * alpha
        return 5 * dalpha**2 + 3 * (alpha * dalpha) ** 2 / (1 - alpha**2)
    expected = quad(vp_integrand, 0, 0.99, limit=200)[0]
    assert kinetic_energy(Interpolant("vp"), sep, t_max=0.99) == pytest.approx(expected,
                                                                               rel=1e-8)


def test_kinetic_energy_of_gaussian_data_closed_form():
    # x1 ~ N(0, I): lambda(s) = s^2 / (1 + s^2) and x_t ~ N(0, (alpha^2 + sigma^2) I), whose
    # velocity is (rho'/rho) x with rho^2 = alpha^2 + sigma^2. Cond-OT: rho^2 = 2t^2 - 2t + 1,
    # KE = d int (2t - 1)^2 / (2t^2 - 2t + 1) dt = d (2 - pi / 2).
    snr = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-3, 3, 2001, dtype=F64)])
    sep = DataSeparation(snr, snr**2 / (1 + snr**2), dim=4)
    assert kinetic_energy(Interpolant("cond-ot"), sep) == pytest.approx(4 * (2 - math.pi / 2),
                                                                        rel=1e-5)
    # the cosine path keeps rho = 1: nothing moves (up to lambda's linear interpolation; the
    # separate terms are of order d pi^2 / 4 = 10)
    assert abs(kinetic_energy(Interpolant("cosine"), sep)) < 1e-4
    # paths of constant alpha^2 + sigma^2 cost nothing: the least energy is 0, and the
    # optimal path (a jump of the snr, smoothed by the grid) gets there
    assert abs(kinetic_energy(kinetic_optimal_path(sep), sep)) < 1e-2


def test_estimate_of_two_points_matches_quadrature():
    # y = +-a: E[x1 | z] = a tanh(s a z), z = s x1 + eps; by symmetry
    # lambda(s) = E tanh^2(s a (s a + eps)), by Gauss-Hermite quadrature
    a = 1.5
    y = torch.tensor([[-a], [a]], dtype=F64)
    snr = torch.tensor([0.0, 0.3, 0.7, 1.0, 2.0], dtype=F64)
    sep = estimate_data_separation(y, snr, n_noise=20000, generator=gen(3))
    x, w = np.polynomial.hermite_e.hermegauss(80)
    exact = [float((w * np.tanh(s * a * (s * a + x)) ** 2).sum() / w.sum()) for s in snr.tolist()]
    assert sep.second_moment == a * a and sep.dim == 1
    np.testing.assert_allclose(sep.lam.numpy(), exact, atol=3e-3)


def test_kinetic_energy_matches_monte_carlo_of_the_exact_velocity(clusters, one_thread):
    # E||u_t(x_t)||^2 with u_t = E[alpha' x1 + sigma' eps | x_t] for the empirical measure:
    # the posterior over the samples is a softmax of -||x - alpha y_j||^2 / (2 sigma^2)
    y, sep = clusters
    nodes, weights = np.polynomial.legendre.leggauss(48)
    g = gen(2)
    for path in (Interpolant("cond-ot"), Interpolant("cosine"), kinetic_optimal_path(sep)):
        total = 0.0
        for t, w in zip(0.5 * (nodes + 1), 0.5 * weights):
            sigma, alpha, dsigma, dalpha = (v.item() for v in path._alpha_beta(
                torch.tensor(t, dtype=F64)))
            x1 = y[torch.randint(0, len(y), (3000,), generator=g)]
            eps = torch.randn(x1.shape, generator=g, dtype=F64)
            x = alpha * x1 + sigma * eps
            post = torch.softmax(-((x[:, None] - alpha * y) ** 2).sum(-1) / (2 * sigma**2), -1)
            mean = post @ y
            u = dalpha * mean + dsigma * (x - alpha * mean) / sigma
            total += w * (u**2).sum(-1).mean().item()
        assert kinetic_energy(path, sep) == pytest.approx(total, rel=0.01), path


# -- the kinetic-optimal path --------------------------------------------------------------------
def test_optimal_path_for_separated_data_is_cond_ot():
    sep = separated(2, second_moment=2.0)
    path = kinetic_optimal_path(sep)
    t = torch.linspace(0, 1, 501, dtype=F64)
    torch.testing.assert_close(path.beta(t), t, atol=1e-6, rtol=0)
    torch.testing.assert_close(path.alpha(t), 1 - t, atol=1e-6, rtol=0)
    assert kinetic_energy(path, sep) == pytest.approx(4.0, rel=1e-6)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # roundoff, 1e-9
def test_optimal_path_beats_the_presets_and_reaches_the_closed_form(clusters):
    _, sep = clusters
    big_d, d = sep.second_moment, sep.dim
    path = kinetic_optimal_path(sep)
    energy = kinetic_energy(path, sep)
    # Theta = int_0^inf theta'(s) ds by scipy (not the trapezoid table of the library)

    def dtheta(s):
        lam = sep(torch.tensor(s, dtype=F64)).item()
        return math.sqrt(max(big_d * (d * lam - big_d * s * s * (1 - lam)), 0)) / (
            big_d * s * s + d)
    theta = (quad(dtheta, 0, 10, limit=400, points=[0.1, 1, 3])[0]
             + quad(dtheta, 10, math.inf, limit=400)[0])
    closed = big_d + d - 2 * math.sqrt(big_d * d) * math.cos(theta)
    assert energy == pytest.approx(closed, rel=1e-5)
    presets = {name: kinetic_energy(Interpolant(name), sep) for name in ("cond-ot", "cosine")}
    presets["vp"] = kinetic_energy(Interpolant("vp"), sep, t_max=0.999)  # infinite at 1
    assert all(energy < value for value in presets.values()), (energy, presets)
    assert energy < 0.85 * presets["cond-ot"]  # measured 2.72 against 3.42


def test_brute_force_minimization_reaches_the_optimal_energy(clusters):
    # minimize the midpoint-rule energy over (alpha_i, sigma_i) at 40 interior times with
    # L-BFGS, from Cond-OT: an independent solver of the same variational problem
    _, sep = clusters
    big_d, d, n = sep.second_moment, sep.dim, 41
    h = 1.0 / n

    def energy(z):
        z = torch.as_tensor(z, dtype=F64).requires_grad_(True)
        alpha = torch.cat([torch.zeros(1, dtype=F64), z[: n - 1], torch.ones(1, dtype=F64)])
        sigma = torch.cat([torch.ones(1, dtype=F64), z[n - 1:], torch.zeros(1, dtype=F64)])
        am, sm = 0.5 * (alpha[1:] + alpha[:-1]), 0.5 * (sigma[1:] + sigma[:-1])
        da, ds = alpha.diff() / h, sigma.diff() / h
        gap = 1 - sep(am / sm)  # piecewise linear in the snr's angle: differentiable
        value = h * (big_d * da**2 + d * ds**2 - big_d * (da - am / sm * ds) ** 2 * gap).sum()
        (grad,) = torch.autograd.grad(value, z)
        return value.item(), grad.numpy()

    t = np.linspace(0, 1, n + 1)[1:-1]
    result = minimize(energy, np.concatenate([t, 1 - t]), jac=True, method="L-BFGS-B",
                      bounds=[(0, 1)] * (n - 1) + [(1e-6, 1)] * (n - 1))
    optimum = kinetic_energy(kinetic_optimal_path(sep), sep)
    # measured 2.5338 (0.12 % below, the midpoint rule's error; 2.5365 with 160 intervals)
    # against 2.5369 for the closed-form path, and 3.29 for Cond-OT
    assert result.fun == pytest.approx(optimum, rel=0.005)


def test_optimal_path_runs_in_the_interpolant_ode(one_thread):
    # the path plugs into exact_fields and InterpolantODE like the presets
    target = GaussianMixture.eight_modes_2d()
    sep = estimate_data_separation(target.sample(64, generator=gen(4)), n_noise=16,
                                   generator=gen(5))
    fields = kinetic_optimal_path(sep).exact_fields(target)
    x0 = torch.randn(1000, 2, generator=gen(6), dtype=F64)
    x1 = integrate(InterpolantODE(fields.velocity), x0, uniform(0.0, 0.999, 40))
    truth = target.sample(1000, generator=gen(7))
    gap = target.log_prob(x1).mean() - target.log_prob(truth).mean()
    assert abs(gap) < 0.1, gap


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    t = torch.linspace(0, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match="snr signal / noise must increase strictly"):
        Interpolant.from_grid(t, torch.tensor([0, 0.5, 0.3, 0.8, 1.0]), 1 - t)
    with pytest.raises(ValueError, match=r"from \(signal, noise\) = \(0, 1\)"):
        Interpolant.from_grid(t, t, 1.1 - t)
    with pytest.raises(ValueError, match=r"from \(signal, noise\) = \(0, 1\)"):
        Interpolant.from_grid(t, 0.9 * t, 1 - t)
    with pytest.raises(ValueError, match="t must increase strictly from 0 to 1"):
        Interpolant.from_grid(t.flip(0), t, 1 - t)
    with pytest.raises(ValueError, match="noise > 0"):
        Interpolant.from_grid(t, t, torch.tensor([1, 0.7, 0.0, 0.2, 0.0]))
    with pytest.raises(ValueError, match="lam must lie in"):
        DataSeparation(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 1.2]), dim=2)
    with pytest.raises(ValueError, match="lam must lie in"):
        DataSeparation(torch.tensor([0.0, 1.0]), -0.1, dim=2)
    with pytest.raises(ValueError, match="snr must be"):
        DataSeparation(torch.tensor([0.5, 1.0]), 1.0, dim=2)
    with pytest.raises(ValueError, match="snr must be"):
        DataSeparation(torch.tensor([0.0, 2.0, 1.0]), 1.0, dim=2)
    with pytest.raises(ValueError, match="dim"):
        DataSeparation(torch.tensor([0.0, 1.0]), 1.0, dim=0)
    with pytest.raises(ValueError, match="second_moment"):
        DataSeparation(torch.tensor([0.0, 1.0]), 1.0, dim=2, second_moment=-1.0)
    sep = separated(2)
    with pytest.raises(ValueError, match="infinite.*t_max < 1"):
        kinetic_energy(Interpolant("vp"), sep)
    with pytest.raises(ValueError, match="one-sided"):
        kinetic_energy(Interpolant("linear"), sep)
    with pytest.raises(ValueError, match="t_max"):
        kinetic_energy(Interpolant("cond-ot"), sep, t_max=0.0)
    with pytest.raises(ValueError, match="separation"):
        kinetic_energy(Interpolant("cond-ot"), 1.0)
    with pytest.raises(ValueError, match="data"):
        estimate_data_separation(torch.zeros(5))
    with pytest.raises(ValueError, match="data"):
        estimate_data_separation(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="n_noise"):
        estimate_data_separation(torch.ones(3, 2), n_noise=0)
    with pytest.raises(ValueError, match="snr"):
        Interpolant("linear", "brownian").snr(0.5)
    with pytest.raises(ValueError, match="degenerate"):  # lambda below its bound: Theta = 0
        kinetic_optimal_path(DataSeparation(torch.tensor([0.0, 1.0]), 0.0, dim=2))
    with pytest.raises(TypeError):
        kinetic_optimal_path(sep, n_steps=10)
    with pytest.raises(TypeError):
        estimate_data_separation(torch.ones(3, 2), noise=3)
