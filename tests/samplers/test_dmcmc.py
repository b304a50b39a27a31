"""Denoising MCMC (Kim & Ye, arXiv 2209.14593) against exact Gaussian-mixture marginals."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chi2

from stochstep.samplers import VESDE, VPSDE, sample
from stochstep.samplers.dmcmc import LangevinGibbs, dmcmc_sample
from stochstep.samplers.targets import GaussianMixture
from stochstep.stepping import Brownian, integrate

T_END = 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # many small tensor ops


def gen(seed):
    return torch.Generator().manual_seed(seed)


def exact(gm, sde):
    return (lambda x, t: gm.score(x, *sde.marginal(t)),
            lambda x, t: gm.log_prob(x, *sde.marginal(t)))


# -- the Gibbs step of t ------------------------------------------------------------------------
def test_exact_gibbs_draw_matches_the_hand_computed_conditional():
    # 1-D data N(mu, s^2) under VP: p_t = N(b mu, b^2 s^2 + c^2); prior weights w_i.
    sde, mu, s2 = VPSDE(), 1.5, 0.2
    grid = [0.05, 0.2, 0.4, 0.7, 1.0]
    w = [1.0, 2.0, 1.0, 0.5, 1.0]
    gm = GaussianMixture(torch.tensor([[mu]]), torch.tensor([s2]))
    score, log_prob = exact(gm, sde)
    lg = LangevinGibbs(score, grid, log_prob=log_prob, time_prior=w)
    lg_max = LangevinGibbs(score, grid, log_prob=log_prob, time_prior=w, gibbs="argmax")
    n = 20_000
    for point in (0.3, 1.4):
        probs = []
        for ti, wi in zip(grid, w):
            b, c = (v.item() for v in sde.marginal(ti))
            var = b * b * s2 + c * c
            probs.append(wi * math.exp(-(point - b * mu) ** 2 / (2 * var)) / math.sqrt(var))
        probs = torch.tensor(probs, dtype=torch.float64) / sum(probs)
        idx = lg.gibbs_index(torch.full((n, 1), point, dtype=torch.float64), gen(7))
        counts = torch.bincount(idx, minlength=len(grid)).double()
        stat = ((counts - n * probs) ** 2 / (n * probs)).sum().item()
        assert stat < chi2.ppf(0.999, len(grid) - 1), (point, counts / n, probs)
        # the argmax option picks the mode of the same conditional
        assert lg_max.gibbs_index(torch.tensor([[point]], dtype=torch.float64), gen(0)).item() \
            == probs.argmax().item()


def test_langevin_gibbs_keeps_the_joint_law_and_its_time_marginal():
    # Start from exact draws of pi(x, t) = w(t) p_t(x) (1-D data N(mu, s^2) under VP). The
    # Langevin move keeps p_t up to ULA's O(h) bias and the exact Gibbs draw keeps the joint,
    # so after 20 steps, in which most chains change time, t still follows the prior w.
    sde, mu, s2, n = VPSDE(), 1.5, 0.2, 20_000
    grid = torch.tensor([0.05, 0.2, 0.4, 0.7, 1.0], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0], dtype=torch.float64) / 5.5
    score, log_prob = exact(GaussianMixture(torch.tensor([[mu]]), torch.tensor([s2])), sde)
    t0 = grid[torch.multinomial(w, n, replacement=True, generator=gen(0))]
    b, c = sde.marginal(t0)
    x0 = (b * mu + (b**2 * s2 + c**2).sqrt() * torch.randn(n, generator=gen(1),
                                                          dtype=torch.float64))[:, None]
    lg = LangevinGibbs(score, grid, log_prob=log_prob, time_prior=w)
    lg.t = t0.clone()
    x = integrate(lg, x0, torch.arange(21, dtype=torch.float64) * 0.01, noise=Brownian(gen(2)))
    assert (lg.t != t0).double().mean() > 0.6  # the chains did move in time
    counts = torch.stack([(lg.t == ti).sum() for ti in grid]).double()
    stat = ((counts - n * w) ** 2 / (n * w)).sum().item()
    assert stat < chi2.ppf(0.999, len(grid) - 1), (counts / n, w)
    b, c = sde.marginal(grid)
    mean = (w * b * mu).sum()
    var = (w * (b**2 * s2 + c**2 + (b * mu) ** 2)).sum() - mean**2
    assert abs(x.mean() - mean) < 0.03 and abs(x.var() / var - 1) < 0.03, (x.mean(), x.var())


def test_time_logits_are_used_as_the_conditional():
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64))
    lg = LangevinGibbs(lambda x, t: -x, [0.2, 0.5, 0.9],
                       time_logits=lambda x: logits.expand(x.shape[0], 3))
    idx = lg.gibbs_index(torch.zeros(30_000, 2), gen(3))
    freq = torch.bincount(idx, minlength=3).double() / 30_000
    assert torch.allclose(freq, logits.exp(), atol=0.015), freq


# -- the Langevin step in x ---------------------------------------------------------------------
def test_langevin_step_at_fixed_time_keeps_p_t():
    # A one-point time grid: the Gibbs step is trivial and t stays put. At t = 0.9 (VP) the
    # 8-mode marginal is close to Gaussian; start from exact draws of p_t and check moments
    # after 30 steps of h = 0.01 (ULA's variance bias here is ~h/4 = 0.25%).
    gm, sde, t, n = GaussianMixture.eight_modes_2d(), VPSDE(), 0.9, 10_000
    b, c = sde.marginal(t)
    score, log_prob = exact(gm, sde)
    x0 = gm.sample_marginal(n, b, c, generator=gen(0))
    lg = LangevinGibbs(score, [t], log_prob=log_prob)
    x = integrate(lg, x0, torch.arange(31, dtype=torch.float64) * 0.01, noise=Brownian(gen(1)))
    assert torch.equal(lg.t, torch.full((n,), t, dtype=torch.float64))
    assert (x - x0).abs().mean() > 0.3  # it did move
    mu = gm.means.T @ gm.weights
    second = (gm.covs + gm.means[:, :, None] * gm.means[:, None, :]) \
        .mul(gm.weights[:, None, None]).sum(0)
    cov = b ** 2 * (second - torch.outer(mu, mu)) + c ** 2 * torch.eye(2, dtype=torch.float64)
    assert (x.mean(0) - b * mu).abs().max() < 0.04
    assert (torch.cov(x.T) - cov).abs().max() < 0.05, (torch.cov(x.T), cov)


# -- end to end ------------------------------------------------------------------------------
def _loglik_gap(gm, sde, y, n_true=100_000):
    b, c = sde.marginal(T_END)
    true = gm.sample_marginal(n_true, b, c, generator=gen(99))
    ref = gm.log_prob(true, b, c).mean()
    lp = gm.log_prob(y, b, c)
    return (lp.mean() - ref).item(), (lp.std() / math.sqrt(len(y))).item()


def test_end_to_end_eight_modes_against_euler_maruyama_at_equal_nfe():
    # Exact GMM score; 10 Langevin--Gibbs steps (h = 0.05, exact Gibbs on 50 times) + 20
    # Euler-Maruyama steps from each chain's own time = 30 score calls per sample, against
    # plain Euler-Maruyama from the prior with 30 steps. Mean exact log p_{t_end} minus that
    # of 1e5 true draws, measured (4000 chains, these seeds): DMCMC -0.092 (se 0.017),
    # EM -0.131. The Gibbs step's 50 log_prob calls per chain and step are not counted as NFE.
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    score, log_prob = exact(gm, sde)
    x = sde.prior_sample((4000, 2), generator=gen(0), dtype=torch.float64)
    out = dmcmc_sample(score, sde, x, mcmc_steps=10, langevin_step=0.05, steps=20,
                       time_grid=torch.linspace(T_END, 1.0, 50), log_prob=log_prob,
                       generator=gen(1))
    # Chains whose Gibbs time is the grid's lowest (t_end) need no integration: 10 calls.
    at_end = torch.isclose(out.t, torch.tensor(T_END, dtype=out.t.dtype), rtol=1e-6)
    assert torch.equal(out.nfe, torch.where(at_end, 10, 30))
    gap, se = _loglik_gap(gm, sde, out.x)
    em_gap, _ = _loglik_gap(gm, sde, sample(score, sde, x, steps=30, method="euler_maruyama",
                                            generator=gen(1)))
    print(f"DMCMC gap {gap:.3f} (se {se:.3f}), EM gap {em_gap:.3f}, NFE 30")
    assert se < 0.02 and abs(gap) < 0.12, (gap, se)
    assert gap > em_gap - 2 * se, (gap, em_gap)


@pytest.mark.parametrize("integrator", ["heun", "pc", "reverse_diffusion", "rk45"])
def test_other_integrators_and_argmax_run(integrator):
    gm, sde = GaussianMixture.eight_modes_2d(), VESDE()
    score, log_prob = exact(gm, sde)
    x = sde.prior_sample((64, 2), generator=gen(0), dtype=torch.float64)
    out = dmcmc_sample(score, sde, x, mcmc_steps=4, langevin_step=0.05, steps=5,
                       time_grid=torch.linspace(0.01, 1.0, 20), log_prob=log_prob,
                       gibbs="argmax", integrator=integrator, generator=gen(1))
    assert torch.isfinite(out.x).all() and out.x.shape == x.shape
    if integrator in ("heun", "pc"):
        assert torch.equal(out.nfe, torch.full((64,), 4 + 10))
    assert (out.nfe > 4).all()


def test_n_skip_keeps_the_lowest_time():
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    score, log_prob = exact(gm, sde)
    x = sde.prior_sample((200, 2), generator=gen(0), dtype=torch.float64)
    kw = dict(mcmc_steps=8, langevin_step=0.05, steps=3, time_grid=torch.linspace(T_END, 1, 30),
              log_prob=log_prob)
    low = dmcmc_sample(score, sde, x, n_skip=8, generator=gen(1), **kw).t
    last = dmcmc_sample(score, sde, x, n_skip=1, generator=gen(1), **kw).t
    assert (low <= last).all() and (low < last).any()


def test_reproducible_and_input_untouched():
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    score, log_prob = exact(gm, sde)
    x = sde.prior_sample((50, 2), generator=gen(0), dtype=torch.float64)
    before = x.clone()
    kw = dict(mcmc_steps=3, langevin_step=0.05, steps=4, time_grid=torch.linspace(T_END, 1, 10),
              log_prob=log_prob)
    a = dmcmc_sample(score, sde, x, generator=gen(5), **kw)
    b = dmcmc_sample(score, sde, x, generator=gen(5), **kw)
    c = dmcmc_sample(score, sde, x, generator=gen(6), **kw)
    assert torch.equal(a.x, b.x) and torch.equal(a.t, b.t) and not torch.equal(a.x, c.x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("kwargs, text", [
    (dict(mcmc_steps=0), "mcmc_steps"),
    (dict(steps=1.5), "steps"),
    (dict(langevin_step=-0.1), "langevin_step"),
    (dict(langevin_step=float("nan")), "langevin_step"),
    (dict(time_grid=[0.5, 2.0]), "time_grid"),
    (dict(time_grid=[]), "time_grid"),
    (dict(time_grid=[1e-4, 0.5]), "time_grid"),
    (dict(t_end=1.0), "t_end"),
    (dict(gibbs="sample"), "gibbs"),
    (dict(integrator="rk4"), "integrator"),
    (dict(n_skip=5), "n_skip"),
    (dict(log_prob=None), "log_prob"),
    (dict(log_prob=3), "log_prob"),
    (dict(time_prior=[1.0, 1.0]), "time_prior"),
    (dict(sde="vp"), "sde"),
    (dict(x0=torch.zeros(0, 2)), "x0"),
    (dict(x0=torch.zeros(4, 2, dtype=torch.int64)), "x0 must be a floating-point tensor, got "
                                                     "torch.int64"),
    (dict(check_finite="yes"), "check_finite"),
    (dict(score=None), "score"),
    (dict(generator=0), "generator"),
])
def test_bad_input_raises_naming_the_argument(kwargs, text):
    gm, sde = GaussianMixture.eight_modes_2d(), VPSDE()
    score, log_prob = exact(gm, sde)
    args = dict(score=score, sde=sde, x0=torch.zeros(4, 2, dtype=torch.float64), mcmc_steps=2,
                langevin_step=0.05, steps=2, time_grid=[0.1, 0.5, 1.0], log_prob=log_prob)
    args.update(kwargs)
    with pytest.raises(ValueError, match=text):
        dmcmc_sample(**args)


@pytest.mark.parametrize("nan_below, where", [(0.6, r"^dmcmc: step 2 of 3 \(t = 0.1"),
                                              (0.3, r"^euler_maruyama: step 2 of 2 \(t = ")])
def test_check_finite_names_the_phase_and_step(nan_below, where):
    # The chains start at t = 1 and are sent to t = 0.5 by the Gibbs step (a point-mass
    # conditional), so the 2nd Langevin step uses the score at 0.5; the integrator then runs
    # 0.5 -> 0.2505 -> 0.001 and its 2nd step uses the score at 0.2505.
    def score(x, t):
        return torch.where(t[:, None] < nan_below, math.nan, -x)

    x0 = torch.zeros(4, 2, dtype=torch.float64)
    to_half = torch.tensor([[0.0, -math.inf]], dtype=torch.float64)  # p(t = 0.5 | x) = 1
    kw = dict(mcmc_steps=3, langevin_step=0.05, steps=2, time_grid=[0.5, 1.0],
              time_logits=lambda x: to_half.expand(x.shape[0], 2), generator=gen(0))
    with pytest.raises(FloatingPointError, match=where):
        dmcmc_sample(score, VPSDE(), x0, check_finite=True, **kw)
    assert torch.isnan(dmcmc_sample(score, VPSDE(), x0, **kw).x).all()


def test_shape_errors_name_the_callable():
    lg = LangevinGibbs(lambda x, t: x[:, :1], [0.5], log_prob=lambda x, t: x.sum(-1))
    with pytest.raises(ValueError, match="score"):
        integrate(lg, torch.zeros(3, 2), [0.0, 0.1], noise=Brownian(gen(0)))
    lg = LangevinGibbs(lambda x, t: -x, [0.5, 1.0], log_prob=lambda x, t: x)
    with pytest.raises(ValueError, match="log_prob"):
        integrate(lg, torch.zeros(3, 2), [0.0, 0.1], noise=Brownian(gen(0)))
    with pytest.raises(ValueError, match="increase"):
        integrate(LangevinGibbs(lambda x, t: -x, [0.5], log_prob=lambda x, t: x.sum(-1)),
                  torch.zeros(3, 2), [0.1, 0.0], noise=Brownian(gen(0)))
