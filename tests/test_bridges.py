"""LightSB (samplers.bridges) and the mixture benchmark with cBW2-UVP (theory_checks.bridges):
closed forms against quadrature, autograd, hand computations and independent libraries."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from stochstep.samplers.bridges import BridgeSDE, LightSB
from stochstep.stepping import Brownian, integrate
from stochstep.theory_checks.bridges import MixtureBenchmark, bures_wasserstein, cbw2_uvp

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors: on a loaded 2-core machine a second thread makes each op 5-20x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_model(dim=2, k=3, eps=0.7, seed=0):
    """A LightSB with spread-out random parameters (variances in [0.2, 0.8])."""
    g = torch.Generator().manual_seed(seed)
    sb = LightSB(dim, k, eps, generator=g)
    with torch.no_grad():
        sb.means.copy_(2 * torch.randn(k, dim, generator=g, dtype=F64))
        sb.log_variance.copy_((0.2 + 0.6 * torch.rand(k, dim, generator=g, dtype=F64)).log())
        sb.log_weight_raw.copy_(eps * torch.randn(k, generator=g, dtype=F64))
    return sb


def _trapezoid_1d(values, grid):
    return torch.trapezoid(values, grid, dim=-1)


def _log_h(sb, x, t, grid):
    r"""log h(x, t), h = \int N(y | x, eps (1 - t) I) exp(|y|^2 / (2 eps)) v(y) dy, by
    quadrature: each component of v factorizes over coordinates (diagonal S_k)."""
    eps, a, r, s = sb.eps, sb.log_weights.exp(), sb.means, sb.variances
    y = grid  # (G,)
    yk = y[None, None, :]
    log_v = (-(yk - r[..., None]) ** 2 / (2 * eps * s[..., None])
             - 0.5 * torch.log(2 * math.pi * eps * s[..., None]))  # (K, D, G)
    log_kernel = (-(y[None, None, :] - x[:, :, None]) ** 2 / (2 * eps * (1 - t))
                  - 0.5 * math.log(2 * math.pi * eps * (1 - t)))  # (n, D, G)
    integrand = torch.exp(log_v[None] + log_kernel[:, None] + y ** 2 / (2 * eps))
    per_dim = _trapezoid_1d(integrand, y)  # (n, K, D)
    return torch.log((a * per_dim.prod(-1)).sum(-1))


@pytest.mark.parametrize("t", [0.0, 0.3, 0.8])
def test_drift_is_eps_grad_log_h_transform(t):
    sb = _random_model()
    x = torch.tensor([[0.3, -0.5], [1.2, 0.7], [-1.0, 2.0]], dtype=F64, requires_grad=True)
    grid = torch.linspace(-16, 16, 40001, dtype=F64)
    log_h = _log_h(sb, x, t, grid)
    expected = sb.eps * torch.autograd.grad(log_h.sum(), x)[0]
    torch.testing.assert_close(sb.drift(x, t).detach(), expected, rtol=1e-6, atol=1e-6)
    # and the spec's form, -x/(1-t) + eps grad logsumexp l_k, by autograd
    logits, _, _ = sb._drift_terms(x, torch.tensor(t, dtype=F64))
    grad = torch.autograd.grad(torch.logsumexp(logits, -1).sum(), x)[0]
    torch.testing.assert_close(sb.drift(x, t).detach(), -x.detach() / (1 - t) + sb.eps * grad)
    # one t per row takes the general (n, K, D) path: the same drift
    per_row = sb.drift(x.detach(), torch.full((3,), t, dtype=F64))
    torch.testing.assert_close(per_row, sb.drift(x.detach(), t).detach(), rtol=1e-12, atol=1e-12)


def test_plan_normalization_and_log_c_by_quadrature():
    sb = _random_model(eps=0.9, seed=1)
    x = torch.tensor([[0.4, -0.2], [-1.1, 0.9]], dtype=F64)
    w = sb.conditional_plan(x).weights
    torch.testing.assert_close(w.sum(1), torch.ones(2, dtype=F64))
    axis = torch.linspace(-14, 14, 801, dtype=F64)
    yy = torch.cartesian_prod(axis, axis)
    for i in range(2):
        dens = sb.plan_log_prob(yy, x[i].expand_as(yy)).exp().detach().reshape(801, 801)
        mass = torch.trapezoid(torch.trapezoid(dens, axis, dim=1), axis)
        assert abs(mass.item() - 1) < 1e-6
        # c(x) = \int exp(<x, y>/eps) v(y) dy
        integrand = (yy @ x[i] / sb.eps + sb.log_potential(yy)).exp().detach().reshape(801, 801)
        c = torch.trapezoid(torch.trapezoid(integrand, axis, dim=1), axis)
        assert abs(sb.log_c(x[i:i + 1]).item() - c.log().item()) < 1e-6


def test_sample_moments_match_closed_form():
    sb = _random_model(seed=2)
    x = torch.tensor([[0.5, -1.0]], dtype=F64).expand(200_000, 2)
    y = sb.sample(x)
    mean, cov = sb.conditional_moments(x[:1])
    torch.testing.assert_close(y.mean(0), mean[0], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), cov[0], atol=0.03, rtol=0)


def test_single_component_by_hand():
    # K = 1, D = 1: pi(y|x) ∝ exp(x y / eps) N(y | r, eps s) = N(y | r + s x, eps s);
    # at eps = 2, r = 1, s = 0.5, x = 0.5, t = 0.5: E[Y | X_t = x] has precision
    # 1/(eps(1-t)) - 1/eps + 1/(eps s) = 1.5 and linear term x/(eps(1-t)) + r/(eps s) = 1.5,
    # so E = 1 and g = (E - x) / (1 - t) = 1; log c = (s x^2 + 2 r x) / (2 eps) = 0.28125.
    sb = LightSB(1, 1, 2.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sb.means.fill_(1.0)
        sb.log_variance.fill_(math.log(0.5))
        sb.log_weight_raw.fill_(0.0)
    x = torch.tensor([[0.5]], dtype=F64)
    assert sb.drift(x, 0.5).item() == pytest.approx(1.0, abs=1e-12)
    assert sb.log_c(x).item() == pytest.approx(0.28125, abs=1e-12)
    y = torch.tensor([[0.3]], dtype=F64)
    expected = scipy.stats.norm.logpdf(0.3, 1 + 0.5 * 0.5, 1.0)
    assert sb.plan_log_prob(y, x).item() == pytest.approx(expected, abs=1e-12)
    assert sb.log_potential(y).item() == pytest.approx(
        scipy.stats.norm.logpdf(0.3, 1.0, 1.0), abs=1e-12)


def test_trajectories_end_and_midpoint_laws():
    sb = _random_model(eps=0.5, seed=3)
    n = 20_000
    x0 = torch.tensor([[0.2, -0.4]], dtype=F64).expand(n, 2)
    sol = sb.trajectories(x0, 400, save_every=200)
    assert sol.path.shape == (3, n, 2) and sol.times.tolist() == [0.0, 0.5, 1.0]
    mean, cov = (m[0] for m in sb.conditional_moments(x0[:1]))
    torch.testing.assert_close(sol.x.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(sol.x.T), cov, atol=0.08, rtol=0)
    # at t = 1/2 the bridge law: mean (x0 + E y)/2, covariance Cov(y)/4 + eps/4 I
    torch.testing.assert_close(sol.path[1].mean(0), (x0[0] + mean) / 2, atol=0.03, rtol=0)
    mid_cov = cov / 4 + sb.eps / 4 * torch.eye(2, dtype=F64)
    torch.testing.assert_close(torch.cov(sol.path[1].T), mid_cov, atol=0.03, rtol=0)


def test_bridge_sample_marginal_moments():
    sb = _random_model(eps=0.8, seed=4)
    n, t = 100_000, 0.3
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64).expand(n, 2)
    x1 = torch.tensor([[-1.0, 0.5]], dtype=F64).expand(n, 2)
    xt = sb.bridge_sample(x0, x1, t)
    torch.testing.assert_close(xt.mean(0), t * x1[0] + (1 - t) * x0[0], atol=0.01, rtol=0)
    torch.testing.assert_close(xt.var(0), torch.full((2,), 0.8 * t * (1 - t), dtype=F64),
                               atol=0.01, rtol=0)
    per_row = sb.bridge_sample(x0[:4], x1[:4], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(per_row, torch.stack([x0[0], x1[0], x0[0], x1[0]]))


def _ground_truth_lightsb(bench):
    """The LightSB whose plan is the benchmark's (diagonal covariances): S = St / eps,
    r = St Sigma^-1 mu, a_k = p_k N(0 | mu_k, Sigma_k + eps I)."""
    k, d, eps = len(bench.probs), bench.dim, bench.eps
    sb = LightSB(d, k, eps, generator=torch.Generator().manual_seed(0))
    cov = bench.sigmas + eps * torch.eye(d, dtype=F64)
    log_a = bench.probs.log() + torch.stack([
        torch.distributions.MultivariateNormal(bench.mus[i], cov[i]).log_prob(torch.zeros(d))
        for i in range(k)])
    with torch.no_grad():
        sb.log_variance.copy_(torch.diagonal(bench.plan_covs, dim1=-2, dim2=-1).log()
                              - math.log(eps))
        sb.means.copy_(bench.plan_bias)
        sb.log_weight_raw.copy_(eps * log_a)
    return sb


@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_lightsb_holding_the_ground_truth_scores_zero(eps):
    bench = MixtureBenchmark(4, eps, seed=5)
    sb = _ground_truth_lightsb(bench)
    x = bench.sample_input(50, torch.Generator().manual_seed(1))
    for mine, truth in zip(sb.conditional_moments(x), bench.conditional_moments(x)):
        torch.testing.assert_close(mine.detach(), truth)
    assert cbw2_uvp(sb, bench, 200, None) < 1e-8
    # the benchmark's own LightSB: the same plan (its weights up to a common factor)
    own = bench.as_light_sb()
    for name in ("means", "log_variance"):
        torch.testing.assert_close(getattr(own, name), getattr(sb, name))
    torch.testing.assert_close(own.log_weights - own.log_weights[0],
                               sb.log_weights - sb.log_weights[0])


def test_loss_gap_to_the_truth_is_the_plan_kl():
    # as_light_sb's plan density is the benchmark's (mixture by torch.distributions), and
    # L(model) - L(truth) = E_x KL(pi*(.|x) || pi(.|x)) sample by sample (log pi(y|x) =
    # <x, y>/eps + log v(y) - log c(x)), which makes the loss gap a KL estimate
    bench = MixtureBenchmark(2, 1.0, seed=4)
    truth, model = bench.as_light_sb(), bench.as_light_sb()
    with torch.no_grad():
        model.means.add_(0.3)
        model.log_variance.add_(0.2)
    x, y = bench.sample_pair(2000, torch.Generator().manual_seed(0))
    w, m, covs = bench.conditional_plan(x)
    comps = torch.distributions.MultivariateNormal(m, covs)   # batch (n, K)
    log_star = torch.logsumexp(w.log() + comps.log_prob(y[:, None, :]), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(truth.plan_log_prob(y, x), log_star)
        gap = model.loss(x, y) - truth.loss(x, y)
        kl = (log_star - model.plan_log_prob(y, x)).mean()
    assert gap.item() == pytest.approx(kl.item(), rel=1e-9)
    assert kl.item() > 0.5


def test_cbw2_uvp_zero_for_truth_positive_when_perturbed():
    bench = MixtureBenchmark(4, 1.0, seed=6)
    g = torch.Generator().manual_seed(2)
    assert cbw2_uvp(bench, bench, 300, None, generator=g) < 1e-9
    sampled = cbw2_uvp(lambda x: bench.sample(x, g), bench, 100, 4000)
    assert 0 < sampled < 0.5   # sampling noise of the moments only

    class Shifted:  # the true moments, means shifted by delta: BW^2 = |delta|^2 exactly
        def conditional_moments(self, x):
            mean, cov = bench.conditional_moments(x)
            return mean + torch.tensor([0.1, -0.2, 0.0, 0.2], dtype=F64), cov
    expected = 100 * 0.5 * 0.09 / (0.5 * bench.target_variance)
    assert cbw2_uvp(Shifted(), bench, 50, None) == pytest.approx(expected, rel=1e-9)


def test_bures_wasserstein_against_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=(2, 5))
    r1 = scipy.linalg.sqrtm(c1)
    expected = (np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2)
                - 2 * np.trace(scipy.linalg.sqrtm(r1 @ c2 @ r1)).real)
    got = bures_wasserstein(*(torch.tensor(v) for v in (m1, c1, m2, c2)))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_benchmark_plan_against_bayes_rule_by_quadrature():
    # pi*(y|x) ∝ N(y | x, eps I) phi(y): normalize the product on a grid (D = 1)
    bench = MixtureBenchmark(1, 0.5, potential_std=0.6, seed=7)
    x = torch.tensor([[0.7]], dtype=F64)
    y = torch.linspace(-12, 12, 24001, dtype=F64)
    phi = sum(p * torch.distributions.Normal(m[0], s[0, 0].sqrt()).log_prob(y).exp()
              for p, m, s in zip(bench.probs, bench.mus, bench.sigmas))
    kernel = torch.distributions.Normal(torch.tensor(0.7, dtype=F64), math.sqrt(0.5))
    dens = phi * kernel.log_prob(y).exp()
    dens = dens / torch.trapezoid(dens, y)
    mean = torch.trapezoid(y * dens, y)
    var = torch.trapezoid((y - mean) ** 2 * dens, y)
    m, c = bench.conditional_moments(x)
    assert m.item() == pytest.approx(mean.item(), abs=1e-9)
    assert c.item() == pytest.approx(var.item(), abs=1e-9)


@pytest.mark.parametrize("dim, eps, std", [(2, 10.0, 0.25), (16, 1.0, 0.5), (64, 0.1, 4.0)])
def test_benchmark_follows_the_authors_recipe(dim, eps, std):
    # the authors' GaussianMixtureDraft.ipynb: p0 = 3 components N(m_j, 0.5^2 I) with every
    # coordinate of the m_j a permutation of (-2, 0, 2); the potential 5 components
    # N(mu_k, s^2 I), coordinates permutations of (-2, ..., 2), s = half their scale table
    bench = MixtureBenchmark(dim, eps, seed=3)
    assert bench.potential_std == std
    torch.testing.assert_close(bench.sigmas, std ** 2 * torch.eye(dim, dtype=F64).expand(5, -1, -1))
    assert bench.input_std == 0.5
    for mus, grid in ((bench.input_mus, [-2.0, 0.0, 2.0]), (bench.mus, [-2.0, -1, 0, 1, 2])):
        torch.testing.assert_close(mus.sort(0).values, torch.tensor(grid, dtype=F64)[:, None]
                                   .expand(-1, dim))
    for probs in (bench.input_probs, bench.probs):
        assert (probs > 0).all() and probs.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_benchmark_input_law_and_target_variance_by_sampling():
    bench = MixtureBenchmark(4, 1.0, seed=2)
    g = torch.Generator().manual_seed(0)
    x, y = bench.sample_pair(200_000, g)
    q, m = bench.input_probs, bench.input_mus
    mean = q @ m   # the mixture's moments by hand
    cov = 0.25 * torch.eye(4, dtype=F64) + (m - mean).T @ (q[:, None] * (m - mean))
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03, rtol=0)
    # Var(p1) = E tr Cov(y): the estimate by the law of total variance against plain sampling
    assert bench.target_variance == pytest.approx(float(y.var(0).sum()), rel=0.01)


def test_fit_reaches_small_cbw2_uvp_on_the_benchmark():
    bench = MixtureBenchmark(2, 1.0, seed=0)
    g = torch.Generator().manual_seed(0)
    x0, x1 = bench.sample_input(4096, g), bench.sample_pair(4096, g)[1]
    sb = LightSB(2, 10, 1.0, generator=torch.Generator().manual_seed(1))
    before = cbw2_uvp(sb, bench, 300, None)
    sb.fit(x0, x1, steps=400, lr=0.02)
    after = cbw2_uvp(sb, bench, 300, None)
    assert after < 1.0 < before


def test_bad_inputs():
    with pytest.raises(ValueError, match="eps"):
        LightSB(2, 3, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        LightSB(2, 3, eps=float("nan"))
    with pytest.raises(ValueError, match="n_components"):
        LightSB(2, 0)
    with pytest.raises(ValueError, match="dim"):
        LightSB(2.5)
    with pytest.raises(ValueError, match="dtype"):
        LightSB(2, dtype=torch.int64)
    with pytest.raises(TypeError):
        LightSB(2, 3, 1.0, n_potentials=3)
    sb = LightSB(2, 3, 1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 2\)"):
        sb.sample(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        sb.drift(torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="y must be a floating-point"):
        sb.log_potential(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\)"):
        sb.drift(torch.zeros(4, 2), 1.0)
    with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\]"):
        sb.bridge_sample(torch.zeros(4, 2), torch.zeros(4, 2), 1.5)
    with pytest.raises(ValueError, match="x1 must have x0's shape"):
        sb.bridge_sample(torch.zeros(4, 2), torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="lr"):
        sb.fit(torch.zeros(4, 2), torch.zeros(4, 2), 1, lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        sb.fit(torch.zeros(4, 2), torch.zeros(4, 2), 0)
    with pytest.raises(ValueError, match="n_steps"):
        sb.trajectories(torch.zeros(4, 2), 0)
    bench = MixtureBenchmark(2, 1.0)
    with pytest.raises(ValueError, match="eps"):
        MixtureBenchmark(2, -1.0)
    with pytest.raises(ValueError, match=r"potential_std must be given .* dim=3, eps=1"):
        MixtureBenchmark(3, 1.0)
    with pytest.raises(ValueError, match=r"potential_std must be given .* dim=2, eps=0.5"):
        MixtureBenchmark(2, 0.5)
    with pytest.raises(ValueError, match="potential_std must be a finite number > 0"):
        MixtureBenchmark(2, 1.0, potential_std=0.0)
    with pytest.raises(ValueError, match="conditional_moments"):
        cbw2_uvp(lambda x: x, bench, 10, None)
    with pytest.raises(ValueError, match="n_samples"):
        cbw2_uvp(lambda x: x, bench, 10, 1)
    with pytest.raises(ValueError, match="x must be a tensor of shape"):
        bench.sample(torch.zeros(3, 5))


def test_bridge_sde_refuses_a_bad_drift_and_times_outside_the_bridge():
    noise = Brownian(torch.Generator().manual_seed(0))
    bad = BridgeSDE(lambda x, t: x[:, :1], eps=1.0)
    with pytest.raises(ValueError, match=r"drift must return a tensor shaped like x \(4, 2\)"):
        integrate(bad, torch.zeros(4, 2), [0.0, 0.5], noise=noise)
    sde = BridgeSDE(lambda x, t: -x, eps=1.0)
    with pytest.raises(ValueError, match=r"grid must increase within \[0, 1\]"):
        integrate(sde, torch.zeros(4, 2), [0.5, 1.5], noise=noise)
