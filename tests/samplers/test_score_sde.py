"""Score SDEs (Song et al., arXiv 2011.13456) against exact Gaussian-mixture marginals."""

from __future__ import annotations

import math

import pytest
import torch

from stochstep.samplers import SubVPSDE, VESDE, VPSDE, dsm_loss, log_likelihood, sample
from stochstep.samplers.score_sde import (RK45, EulerMaruyama, Heun, LangevinCorrector,
                                          ReverseDiffusion, denoise, probability_flow)
from stochstep.samplers.targets import GaussianMixture
from stochstep.stepping import Brownian, integrate, uniform

SDES = [VPSDE(), SubVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]
T_END = 1e-3


def gen(seed):
    return torch.Generator().manual_seed(seed)


def exact_score(gm, sde):
    return lambda x, t: gm.score(x, *sde.marginal(t))


def loglik_gap(gm, sde, y, n_true=200_000, seed=99):
    """Mean exact log p_{t_end} of ``y`` minus that of true draws (many: their noise is small)."""
    b, c = sde.marginal(T_END)
    true = gm.sample_marginal(n_true, b, c, generator=gen(seed))
    ref = torch.cat([gm.log_prob(x, b, c) for x in true.split(50_000)]).mean()
    lp = gm.log_prob(y, b, c)
    return (lp.mean() - ref).item(), (lp.std() / math.sqrt(len(y))).item()


# -- the SDEs themselves ---------------------------------------------------------------------
def test_closed_forms():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    big_b = 0.1 * t + 19.9 * t ** 2 / 2
    b, c = VPSDE().marginal(t)
    assert torch.allclose(b, (-big_b / 2).exp()) and torch.allclose(c, (1 - (-big_b).exp()).sqrt())
    b, c = SubVPSDE().marginal(t)
    assert torch.allclose(b, (-big_b / 2).exp()) and torch.allclose(c, 1 - (-big_b).exp())
    b, c = VESDE().marginal(t)
    assert torch.allclose(b, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(c, 0.01 * 5000 ** t)
    assert torch.allclose(VESDE().diffusion(t), 0.01 * 5000 ** t * math.sqrt(2 * math.log(5000)))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_coefficients_solve_the_moment_equations(sde):
    # For dx = a(t) x dt + g dw: b' = a b and (c^2)' = 2 a c^2 + g^2.
    t, h = torch.linspace(0.05, 0.95, 7, dtype=torch.float64), 1e-6
    (bp, cp), (bm, cm) = sde.marginal(t + h), sde.marginal(t - h)
    b, c = sde.marginal(t)
    a, g = sde.drift_coeff(t), sde.diffusion(t)
    assert torch.allclose((bp - bm) / (2 * h), a * b, rtol=1e-6)
    assert torch.allclose((cp ** 2 - cm ** 2) / (2 * h), 2 * a * c ** 2 + g ** 2, rtol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_simulated_forward_sde_matches_the_marginal(sde):
    gm = GaussianMixture.eight_modes_2d()
    t0, t1 = 0.05, 0.5
    x0 = gm.sample_marginal(20_000, *sde.marginal(t0), generator=gen(0))
    x = integrate(EulerMaruyama(sde, exact_score(gm, sde)), x0, uniform(t0, t1, 200),
                  noise=Brownian(gen(1)))
    b, c = sde.marginal(t1)
    # moments of the exact marginal b x_data + c eps
    mean = gm.weights @ gm.means
    outer = gm.means[:, :, None] * gm.means[:, None]
    second = (gm.weights[:, None, None] * (gm.covs + outer)).sum(0)
    cov = b ** 2 * (second - mean[:, None] * mean) + c ** 2 * torch.eye(2, dtype=torch.float64)
    scale = cov.diagonal().sqrt().max()
    assert (x.mean(0) - b * mean).abs().max() < 4 * scale / math.sqrt(len(x))
    assert (torch.cov(x.T) - cov).abs().max() < 0.03 * cov.diagonal().max()
    # and the exact log-likelihood of the simulated points is that of true draws
    b1, c1 = sde.marginal(t1)
    true = gm.sample_marginal(20_000, b1, c1, generator=gen(2))
    assert abs(gm.log_prob(x, b1, c1).mean() - gm.log_prob(true, b1, c1).mean()) < 0.05


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior(sde):
    z = sde.prior_sample((50_000, 2), generator=gen(0), dtype=torch.float64)
    assert abs(z.std().item() / sde.prior_std - 1) < 0.01
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z[:5]).sum(-1)
    assert torch.allclose(sde.prior_log_prob(z[:5]), ref)


def test_tweedie_denoiser_is_the_exact_posterior_mean():
    gm = GaussianMixture.eight_modes_2d()
    for sde in SDES:
        b, c = sde.marginal(0.05)
        x = gm.sample_marginal(100, b, c, generator=gen(0))
        d = denoise(exact_score(gm, sde), sde, x, 0.05)
        assert torch.allclose(d, gm.denoiser(x, b, c), atol=1e-10)


# -- reverse-time samplers with the exact score ---------------------------------------------
@pytest.mark.parametrize("method, steps", [("euler_maruyama", 500), ("pc", 250)])
def test_sde_samplers_nfe500_match_true_loglik_2d(method, steps):
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    x = sde.prior_sample((8000, 2), generator=gen(0), dtype=torch.float64)
    y = sample(exact_score(gm, sde), sde, x, steps=steps, method=method, generator=gen(1))
    gap, se = loglik_gap(gm, sde, y)
    assert se < 0.02 and abs(gap) < 0.05, (gap, se)


@pytest.mark.slow
@pytest.mark.parametrize("method, steps", [("euler_maruyama", 500), ("pc", 250)])
def test_sde_samplers_nfe500_match_true_loglik_16d(method, steps):
    gm, sde = GaussianMixture.four_modes(16), VPSDE()
    x = sde.prior_sample((20_000, 16), generator=gen(0), dtype=torch.float64)
    # At the reference's snr = 0.16 the corrector's fixed-snr bias (about -snr^2 d / 2) costs
    # PC about 0.2 nats in 16-D; 0.05 meets the target.
    y = sample(exact_score(gm, sde), sde, x, steps=steps, method=method, generator=gen(1),
               **({"snr": 0.05} if method == "pc" else {}))
    gap, se = loglik_gap(gm, sde, y)
    assert se < 0.025 and abs(gap) < 0.05, (gap, se)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10])
def test_few_steps_stay_finite(sde, steps):
    gm = GaussianMixture.eight_modes_2d()
    x = sde.prior_sample((64, 2), generator=gen(0), dtype=torch.float64)
    for method in ("euler_maruyama", "reverse_diffusion", "pc", "heun"):
        y = sample(exact_score(gm, sde), sde, x, steps=steps, method=method, generator=gen(1))
        assert torch.isfinite(y).all(), method


def test_heun_nfe100_path_rmse_against_tight_rk45():
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    field = probability_flow(sde, exact_score(gm, sde))
    x = sde.prior_sample((300, 2), generator=gen(0), dtype=torch.float64)
    grid = uniform(1.0, T_END, 50)  # 50 Heun steps = 100 score calls
    ref = integrate(RK45(field, rtol=1e-9, atol=1e-9), x, grid, save_every=1).path
    path = integrate(Heun(field), x, grid, save_every=1).path
    rmse = (path - ref).pow(2).sum(-1).mean().sqrt()
    assert rmse <= 1e-2, rmse
    # the default rk45 (rtol = atol = 1e-5, one adaptive solve) is far tighter still
    y = sample(exact_score(gm, sde), sde, x, steps=1, method="rk45")
    assert (y - ref[-1]).pow(2).sum(-1).mean().sqrt() < 1e-3


def test_heun_is_second_order():
    # N(0, v) data under VP: the PF-ODE solution is x(t) = x(T) sqrt(var(t) / var(T)).
    sde, v = VPSDE(), 0.09
    var = lambda t: sde.marginal(t)[0] ** 2 * v + sde.marginal(t)[1] ** 2  # noqa: E731
    field = probability_flow(sde, lambda x, t: -x / var(t).to(x)[:, None])
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    exact = x * (var(T_END) / var(1.0)).sqrt()
    ns = [16, 32, 64, 128]
    errs = [(integrate(Heun(field), x, uniform(1.0, T_END, n)) - exact).abs().max() for n in ns]
    slope = -torch.tensor([math.log(e) for e in errs]).diff().mean() / math.log(2)
    assert 1.8 < slope < 2.3, (slope, errs)


# -- the Langevin corrector and PC sampling by hand --------------------------------------------
def corrector_factor(sde, t0, t1):
    """a_i of the corrector's docstring: exp(-beta(t0) |t1 - t0|) for VP, 1 for VE."""
    if isinstance(sde, VESDE):
        return 1.0
    return math.exp(-(0.1 + 19.9 * t0) * abs(t1 - t0))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("sde, t0, t1", [(VESDE(), 0.6, 0.5), (VPSDE(), 0.3, 0.25)],
                         ids=["ve", "vp"])
@pytest.mark.parametrize("snr", [0.3, 0.5])
def test_corrector_stationary_variance_on_a_gaussian(sde, t0, t1, snr):
    # On N(0, v0 I) (score -x / v0 at every t) the corrector is x <- (1 - e) x + sqrt(2 eps) z
    # with e = eps / v0 and, at variance v, eps = 2 a (r sqrt(v0^2 / v))^2 (the batch-mean
    # norms of z and s). The variance recursion v <- (1 - e)^2 v + 2 e v0 then settles at
    # v = v0 (1 + a r^2): the corrector's fixed-snr bias, exact up to the batch means' noise.
    v0, n = 4.0, 20_000
    x0 = math.sqrt(v0) * torch.randn(n, 2, dtype=torch.float64, generator=gen(0))
    corrector = LangevinCorrector(sde, lambda x, t: -x / v0, snr=snr, n_steps=50)
    x = integrate(corrector, x0, [t0, t1], noise=Brownian(gen(1)))
    expected = v0 * (1 + corrector_factor(sde, t0, t1) * snr**2)
    assert x.var().item() == pytest.approx(expected, rel=0.02)
    assert abs(x.mean().item()) < 4 * math.sqrt(expected / x.numel())


def test_pc_sample_is_the_corrector_then_reverse_diffusion_by_hand():
    # samplers.sample(method="pc") on VP over two steps, from the docstrings' math with the
    # same generator: per step the corrector's Langevin move at t0, then the reverse DDPM
    # predictor x <- x - f_i + G_i^2 s + G_i z with f_i = (sqrt(1 - beta_i) - 1) x,
    # G_i^2 = beta_i = 1 - exp(-beta(t0) dt).
    sde, snr = VPSDE(), 0.2

    def score(x, t):
        return -x / (1 + t[:, None]) + 0.5

    x0 = torch.randn(50, 2, dtype=torch.float64, generator=gen(0))
    got = sample(score, sde, x0, steps=2, method="pc", snr=snr, generator=gen(1))
    g, x = gen(1), x0.clone()
    times = uniform(1.0, T_END, 2).tolist()
    for t0, t1 in zip(times[:-1], times[1:]):
        at_t0 = torch.full((50,), t0, dtype=torch.float64)
        s, z = score(x, at_t0), torch.randn(50, 2, dtype=torch.float64, generator=g)
        eps = 2 * corrector_factor(sde, t0, t1) * (snr * z.norm(dim=1).mean()
                                                   / s.norm(dim=1).mean()) ** 2
        x = x + eps * s + torch.sqrt(2 * eps) * z
        beta_i = 1 - math.exp(-(0.1 + 19.9 * t0) * abs(t1 - t0))
        s, z = score(x, at_t0), torch.randn(50, 2, dtype=torch.float64, generator=g)
        x = x - (math.sqrt(1 - beta_i) - 1) * x + beta_i * s + math.sqrt(beta_i) * z
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-13)


# -- likelihood ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_likelihood_exact_trace(sde):
    gm = GaussianMixture.eight_modes_2d()
    b, c = sde.marginal(T_END)
    x = gm.sample_marginal(16, b, c, generator=gen(0))
    ll = log_likelihood(exact_score(gm, sde), sde, x, exact_trace=True)
    assert ll.shape == (16,)
    assert (ll - gm.log_prob(x, b, c)).abs().max() < 1e-2


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_log_likelihood_hutchinson_is_unbiased(probe):
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    b, c = sde.marginal(T_END)
    x = gm.sample_marginal(200, b, c, generator=gen(0))
    ll = log_likelihood(exact_score(gm, sde), sde, x, probe=probe, generator=gen(1))
    err = ll - gm.log_prob(x, b, c)
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(len(x)) + 1e-2
    more = log_likelihood(exact_score(gm, sde), sde, x, probe=probe, probes=4, generator=gen(1))
    assert (more - gm.log_prob(x, b, c)).std() < err.std()


# -- training loss --------------------------------------------------------------------------
@pytest.mark.parametrize("weighting", [False, True])
def test_dsm_loss_is_minimised_by_the_exact_score(weighting):
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    x = gm.sample(20_000, generator=gen(0))
    a = torch.ones((), dtype=torch.float64, requires_grad=True)
    loss = dsm_loss(lambda y, t: a * gm.score(y, *sde.marginal(t)), sde, x, t_min=0.05,
                    likelihood_weighting=weighting, generator=gen(1))
    (grad,) = torch.autograd.grad(loss, a, create_graph=True)
    curv = torch.autograd.grad(grad, a)[0]
    assert abs(grad / curv) < 0.02  # the minimiser along a is within 2 % of the exact score


def coefficients_by_hand(sde, t):
    """b(t), c(t) and g(t)^2 of the SDEs' docstrings, at the default parameters."""
    if isinstance(sde, VESDE):
        sigma = 0.01 * 5000**t
        return torch.ones_like(t), sigma, sigma**2 * 2 * math.log(5000)
    beta, big_b = 0.1 + 19.9 * t, 0.1 * t + 19.9 * t**2 / 2
    if isinstance(sde, SubVPSDE):
        return (-big_b / 2).exp(), 1 - (-big_b).exp(), beta * (1 - (-2 * big_b).exp())
    return (-big_b / 2).exp(), (1 - (-big_b).exp()).sqrt(), beta


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("weighting", [False, True], ids=["plain", "likelihood"])
@pytest.mark.parametrize("reduce_mean", [False, True], ids=["sum", "mean"])
def test_dsm_loss_by_hand(sde, weighting, reduce_mean):
    # t = t_min + (T - t_min) u and eps drawn from the generator in that order; a score that
    # is not the minimiser, so every term counts.
    t_min, x = 1e-3, torch.randn(6, 3, dtype=torch.float64, generator=gen(0))

    def score(y, t):
        return -y * (1 + t[:, None]) + 0.3

    got = dsm_loss(score, sde, x, t_min=t_min, likelihood_weighting=weighting,
                   reduce_mean=reduce_mean, generator=gen(1))
    g = gen(1)
    t = t_min + (1 - t_min) * torch.rand(6, dtype=torch.float64, generator=g)
    eps = torch.randn(6, 3, dtype=torch.float64, generator=g)
    b, c, g2 = (v[:, None] for v in coefficients_by_hand(sde, t))
    s = score(b * x + c * eps, t)
    per = g2 * (s + eps / c) ** 2 if weighting else (c * s + eps) ** 2
    want = per.mean(1).mean() if reduce_mean else 0.5 * per.sum(1).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


# -- reproducibility and errors ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["euler_maruyama", "reverse_diffusion", "pc"])
def test_reproducible_with_a_generator_and_global_rng_untouched(method):
    sde, x = VESDE(), torch.zeros(8, 3)
    state = torch.random.get_rng_state()
    run = lambda s: sample(lambda y, t: -y, sde, x, steps=5, method=method,  # noqa: E731
                           generator=gen(s))
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(x, torch.zeros(8, 3))


def test_errors_name_the_argument():
    sde, s, x = VPSDE(), (lambda y, t: -y), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="score"):
        sample(lambda y, t: y[:, :1], sde, x, steps=3, method="euler_maruyama")
    with pytest.raises(ValueError, match="steps"):
        sample(s, sde, x, steps=0, method="heun")
    with pytest.raises(ValueError, match="method"):
        sample(s, sde, x, steps=3, method="euler")
    for t_end in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="t_end"):
            sample(s, sde, x, steps=3, method="pc", t_end=t_end)
    with pytest.raises(ValueError, match="grid"):
        integrate(EulerMaruyama(sde, s), x, [1.0, 0.5, 0.7], noise=Brownian(gen(0)))
    with pytest.raises(ValueError, match="t0"):
        integrate(ReverseDiffusion(sde, s), x, [1.5, 0.5], noise=Brownian(gen(0)))
    with pytest.raises(ValueError, match="t1"):
        integrate(LangevinCorrector(sde, s), x, [0.5, -0.1], noise=Brownian(gen(0)))
    with pytest.raises(ValueError, match="probes"):
        log_likelihood(s, sde, x, probes=0)
    with pytest.raises(ValueError, match="sde"):
        sample(s, "vp", x, steps=3, method="pc")
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="snr"):
        LangevinCorrector(sde, s, snr=0.0)


@pytest.mark.parametrize("method, step", [("euler_maruyama", 4), ("reverse_diffusion", 4),
                                          ("pc", 4), ("heun", 3)])
def test_check_finite_names_the_step_where_the_score_went_nan(method, step):
    # NaN scores below t = 0.3: on the grid 1, 0.75, 0.50, 0.25, 0.001 the SDE steps use the
    # score at t0 (first below 0.3 in step 4), Heun at t0 and t1 (step 3).
    def score(x, t):
        return torch.where(t[:, None] < 0.3, math.nan, -x)

    x = torch.ones(4, 2)
    with pytest.raises(FloatingPointError, match=rf"^{method}: step {step} of 4 \(t = "):
        sample(score, VPSDE(), x, steps=4, method=method, generator=gen(0), check_finite=True)
    assert torch.isnan(sample(score, VPSDE(), x, steps=4, method=method, generator=gen(0))).all()


def test_rk45_reports_a_non_finite_field():
    x = torch.ones(2, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="start t=0.0"):  # at once, not max_steps
        integrate(RK45(lambda y, t: y * math.nan), x, [0.0, 1.0])
    # NaN beyond t = 0.5: the steps shrink towards it, as in scipy, until they underflow
    with pytest.raises(RuntimeError, match="underflow at t=0.4999.*not finite"):
        integrate(RK45(lambda y, t: -y if t <= 0.5 else y * math.nan), x, [0.0, 1.0])


def test_check_finite_covers_the_final_denoising():
    score = lambda x, t: torch.where(t[:, None] < 1e-2, math.inf, -x)  # noqa: E731
    x = torch.ones(4, 2)
    with pytest.raises(FloatingPointError, match="denois"):
        sample(score, VPSDE(), x, steps=4, method="euler_maruyama", denoise_last=True,
               generator=gen(0), check_finite=True)


@pytest.mark.parametrize("call", [
    lambda x: sample(lambda y, t: -y, VPSDE(), x, steps=2, method="pc"),
    lambda x: dsm_loss(lambda y, t: -y, VPSDE(), x),
    lambda x: log_likelihood(lambda y, t: -y, VPSDE(), x),
    lambda x: denoise(lambda y, t: -y, VPSDE(), x, 0.5),
], ids=["sample", "dsm_loss", "log_likelihood", "denoise"])
def test_integer_x_is_refused_by_name(call):
    with pytest.raises(ValueError, match="x must be a floating-point tensor, got torch.int64"):
        call(torch.zeros(4, 2, dtype=torch.int64))
