"""MALA, underdamped Langevin, pSGLD and SGHMC: invariance, known discretisation biases, shared
kernels (bitwise), thinning, and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov

from stochstep.optimizers import PSGLD, SGHMC, SGLD
from stochstep.samplers import MALA, ULA, UnderdampedLangevin, rhat, thin
from stochstep.stepping import Brownian, integrate
from stochstep.stepping.kernels import langevin_, psgld_


def gen(seed):
    return torch.Generator().manual_seed(seed)


def banana_log_prob(x):
    """a ~ N(0, 1), b | a ~ N(a^2, 1): E b = 1, Var b = 3."""
    a, b = x[..., 0], x[..., 1]
    return -0.5 * a**2 - 0.5 * (b - a**2) ** 2


def banana_samples(n, seed):
    z = torch.randn(n, 2, dtype=torch.float64, generator=gen(seed))
    return torch.stack([z[:, 0], z[:, 0] ** 2 + z[:, 1]], -1)


# -- MALA --------------------------------------------------------------------------------------
def test_mala_accepts_and_rejects_exactly_as_computed_by_hand():
    # N(0, 1) from x = 0 with h = 1: y = sqrt(2) xi and, since y + h s(y) = 0,
    # log alpha = -y^2/2 + y^2/4 = -xi^2/2. Accept iff log u < -xi^2/2.
    n = 4000
    x = integrate(MALA(log_prob=lambda x: -0.5 * (x**2).sum(-1)),
                  torch.zeros(n, 1, dtype=torch.float64), [0.0, 1.0], noise=Brownian(gen(5)))
    g = gen(5)
    xi = torch.randn(n, 1, dtype=torch.float64, generator=g)
    u = torch.rand(n, dtype=torch.float64, generator=g)
    accept = u.log() < -0.5 * xi[:, 0] ** 2
    expected = torch.where(accept[:, None], math.sqrt(2.0) * xi, torch.zeros_like(xi))
    assert 0.2 < accept.double().mean() < 0.9  # both outcomes occur
    assert torch.equal(x, expected)


def test_mala_never_leaves_the_support_and_accepted_moves_are_ula_steps():
    # log p = -inf for b < -1: proposals there must be rejected, bitwise x unchanged.
    def log_prob(x):
        lp = banana_log_prob(x)
        return torch.where(x[..., 1] < -1, torch.full_like(lp, -math.inf), lp)

    x0 = banana_samples(3000, 1).clamp(min=-0.99)
    mala = MALA(log_prob=log_prob)
    acc = mala.step_(x := x0.clone(), 0.0, 0.8, Brownian(gen(9)))
    ula_x = integrate(ULA(log_prob=banana_log_prob), x0, [0.0, 0.8], noise=Brownian(gen(9)))
    assert torch.equal(x[acc], ula_x[acc])
    assert torch.equal(x[~acc], x0[~acc])
    assert (~acc[ula_x[:, 1] < -1]).all() and (ula_x[:, 1] < -1).any()
    assert (x[:, 1] >= -1).all()
    assert mala.acceptance_rate.shape == (3000,) and mala.proposed == 1


def test_mala_leaves_the_banana_invariant_where_ula_is_transient():
    x0 = banana_samples(20000, 2)
    h, steps = 0.3, 25
    x = MALA(log_prob=banana_log_prob).sample(x0, step_size=h, steps=steps, generator=gen(3))
    a, b = x[:, 0], x[:, 1]
    assert abs(a.mean()) < 0.03 and abs(b.mean() - 1) < 0.05
    assert a.var().item() == pytest.approx(1.0, rel=0.05)
    assert b.var().item() == pytest.approx(3.0, rel=0.07)
    # the same step without the Metropolis test blows up in the banana's tails (the
    # gradient grows like a^3): Roberts and Tweedie's transient ULA
    y = ULA(log_prob=banana_log_prob).sample(x0, step_size=h, steps=steps, generator=gen(3))
    assert not torch.isfinite(y).all()


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_mala_samples_a_correlated_gaussian_at_temperature(temperature):
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    mala = MALA(log_prob=lambda x: -0.5 * ((x - mu) @ prec * (x - mu)).sum(-1),
                score=lambda x: -(x - mu) @ prec, temperature=temperature)
    x = mala.sample(torch.zeros(4000, 2, dtype=torch.float64), step_size=0.2 * temperature,
                    steps=150, generator=gen(4))
    torch.testing.assert_close(x.mean(0), mu, atol=0.05 * math.sqrt(temperature), rtol=0)
    torch.testing.assert_close(torch.cov(x.T), temperature * cov, atol=0.08 * temperature,
                               rtol=0)
    rate = mala.acceptance_rate
    assert rate.shape == (4000,) and 0.6 < rate.mean() < 0.98
    # a larger step is accepted less often
    big = MALA(log_prob=mala.log_prob, score=mala.score, temperature=temperature)
    big.sample(x, step_size=2.0 * temperature, steps=20, generator=gen(5))
    assert big.acceptance_rate.mean() < rate.mean() - 0.2


# -- underdamped Langevin ----------------------------------------------------------------------
def stationary_cov(scheme, k, gamma, m, T, h):
    """Exact stationary covariance of (x, r) of the linear recursion each scheme is on
    U = k x^2 / 2: the integrator's discretisation bias, not the SDE's law."""
    if scheme == "baoab":
        B = np.array([[1.0, 0.0], [-h * k / 2, 1.0]])
        A = np.array([[1.0, h / (2 * m)], [0.0, 1.0]])
        c = math.exp(-gamma * h)
        O = np.diag([1.0, c])  # noqa: E741  (the "O" of BAOAB)
        M = B @ A @ O @ A @ B
        N = B @ A @ np.array([[0.0], [math.sqrt((1 - c * c) * m * T)]])
    else:
        s = math.sqrt(2 * gamma * m * T * h)
        r_row = np.array([-h * k, 1 - h * gamma])
        M = np.stack([np.array([1.0, 0.0]) + h / m * r_row, r_row])
        N = np.array([[h / m * s], [s]])
    return solve_discrete_lyapunov(M, N @ N.T)


@pytest.mark.parametrize("scheme", ["baoab", "sghmc"])
def test_underdamped_stationary_moments_match_the_integrators_exact_bias(scheme):
    k, gamma, m, T, h = 2.0, 1.5, 0.5, 0.7, 0.3
    cov = stationary_cov(scheme, k, gamma, m, T, h)
    if scheme == "baoab":  # BAOAB's position law is exact on Gaussians
        assert cov[0, 0] == pytest.approx(T / k, rel=1e-12)
    else:
        assert abs(cov[0, 0] / (T / k) - 1) > 0.1  # Euler's bias is visible at this step
    uld = UnderdampedLangevin(score=lambda x: -k * x, gamma=gamma, mass=m, temperature=T,
                              scheme=scheme)
    x = uld.sample(torch.zeros(40000, 1, dtype=torch.float64), step_size=h, steps=150,
                   generator=gen(11))
    z = torch.cat([x, uld.momentum], -1)
    emp = torch.cov(z.T).numpy()
    np.testing.assert_allclose(emp.diagonal(), cov.diagonal(), rtol=0.04)
    assert abs(emp[0, 1] - cov[0, 1]) < 0.03 * math.sqrt(cov[0, 0] * cov[1, 1])
    assert abs(z.mean(0)).max() < 0.03


def test_underdamped_chain_continues_across_integrate_calls():
    score = lambda x: torch.sin(x) - x  # noqa: E731
    grid = torch.arange(21, dtype=torch.float64) * 0.125
    x0 = torch.randn(8, 2, dtype=torch.float64, generator=gen(0))
    whole = UnderdampedLangevin(score=score, gamma=0.7)
    noise = Brownian(gen(1))
    x_whole = integrate(whole, x0, grid, noise=noise)
    parts = UnderdampedLangevin(score=score, gamma=0.7)
    noise = Brownian(gen(1))
    x_half = integrate(parts, x0, grid[:11], noise=noise)
    x_parts = integrate(parts, x_half, grid[10:], noise=noise)
    assert torch.equal(x_whole, x_parts) and torch.equal(whole.momentum, parts.momentum)
    parts.reset()
    assert parts.momentum is None


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_sghmc_and_underdamped_sghmc_scheme_are_bitwise_identical(temperature):
    def grad_u(x):
        return -torch.func.vmap(torch.func.grad(banana_log_prob))(x)

    h, steps, gamma, m = 2.0**-5, 40, 0.5, 2.0
    x0 = torch.randn(16, 2, generator=gen(0))
    theta = torch.nn.Parameter(x0.clone())
    opt = SGHMC([theta], lr=h, friction=gamma * m, mass=m, temperature=temperature,
                generator=gen(42))
    path = []
    for _ in range(steps):
        theta.grad = grad_u(theta.detach())
        opt.step()
        path.append(theta.detach().clone())
    uld = UnderdampedLangevin(score=lambda x: -grad_u(x), gamma=gamma, mass=m,
                              temperature=temperature, scheme="sghmc")
    sol = integrate(uld, x0, torch.arange(steps + 1, dtype=torch.float64) * h,
                    noise=Brownian(gen(42)), save_every=1)
    assert torch.equal(sol.path[1:], torch.stack(path))
    assert torch.equal(uld.momentum, opt.state[theta]["momentum"])


def test_psgld_kernel_is_the_langevin_kernel_on_a_preconditioned_drift():
    g = gen(0)
    p, grad, v, xi = (torch.randn(50, generator=g) for _ in range(4))
    v = v.abs()
    a, b = p.clone(), p.clone()
    v_a = v.clone()
    psgld_([a], [grad], [v_a], [xi], lr=0.01, alpha=0.9, eps=1e-3, temperature=0.5,
           weight_decay=0.2)
    d = torch.add(grad, p, alpha=0.2)
    v_b = v * 0.9
    v_b.addcmul_(d, d, value=1 - 0.9)
    G = (v_b.sqrt() + 1e-3).reciprocal()
    langevin_([b], [d * G], [xi * G.sqrt()], lr=0.01, temperature=0.5)
    assert torch.equal(v_a, v_b) and torch.equal(a, b)


# -- SG-MCMC optimizers on a Gaussian posterior ------------------------------------------------
DATA = 1.5 + torch.randn(50, dtype=torch.float64, generator=gen(123))
PRIOR_PRECISION = 0.01
POST_PRECISION = len(DATA) + PRIOR_PRECISION
POST_MEAN = DATA.sum().item() / POST_PRECISION


def posterior_draws(make_opt, temperature, burn_in=1000, keep=500, every=5):
    theta = torch.nn.Parameter(torch.zeros(2000, dtype=torch.float64))  # 2000 chains
    opt = make_opt([theta], temperature)

    def chain():
        for _ in range(burn_in + keep):
            opt.zero_grad()
            # likelihood term only; the N(0, 1/0.01) prior comes in as weight_decay
            theta.grad = len(DATA) * theta.detach() - DATA.sum()
            opt.step()
            yield theta

    return thin(chain(), burn_in=burn_in, every=every)


OPTS = {
    # alpha near 1: a short preconditioner memory ties G to the current position and inflates
    # the variance (about +10% at alpha = 0.99 here)
    "PSGLD": lambda ps, T: PSGLD(ps, lr=0.01, alpha=0.999, temperature=T,
                                 weight_decay=PRIOR_PRECISION, generator=gen(0)),
    "SGHMC": lambda ps, T: SGHMC(ps, lr=0.02, friction=10.0, temperature=T,
                                 weight_decay=PRIOR_PRECISION, generator=gen(0)),
    "SGLD": lambda ps, T: SGLD(ps, lr=1e-3, temperature=T, weight_decay=PRIOR_PRECISION,
                               generator=gen(0)),
}


@pytest.mark.parametrize("name", ["PSGLD", "SGHMC"])
def test_sgmcmc_optimizers_sample_the_posterior_and_scale_with_temperature(name):
    draws = posterior_draws(OPTS[name], 1.0)
    assert draws.shape == (100, 2000)
    assert draws.mean().item() == pytest.approx(POST_MEAN, abs=0.01)
    assert draws.var().item() == pytest.approx(1 / POST_PRECISION, rel=0.1)
    assert rhat(draws[:, :8]).item() < 1.1
    cold = posterior_draws(OPTS[name], 0.25)
    assert cold.mean().item() == pytest.approx(POST_MEAN, abs=0.01)
    assert cold.var().item() / draws.var().item() == pytest.approx(0.25, rel=0.12)


def test_sgld_posterior_as_a_baseline_for_the_same_check():
    draws = posterior_draws(OPTS["SGLD"], 1.0)
    assert draws.var().item() == pytest.approx(1 / POST_PRECISION, rel=0.1)


def test_sghmc_resamples_momentum_every_l_steps():
    theta = torch.nn.Parameter(torch.zeros(20000, dtype=torch.float64))
    opt = SGHMC([theta], lr=0.1, friction=0.0, mass=4.0, temperature=0.5, resample_every=3,
                generator=gen(0))
    momenta = []
    for _ in range(4):
        theta.grad = torch.zeros_like(theta)
        opt.step()
        momenta.append(opt.state[theta]["momentum"].clone())
    # no friction, no force, no noise (C = 0): momentum only changes when redrawn, at step 4
    assert torch.equal(momenta[0], momenta[1]) and torch.equal(momenta[1], momenta[2])
    assert not torch.equal(momenta[2], momenta[3])
    assert momenta[3].var().item() == pytest.approx(0.5 * 4.0, rel=0.05)


# -- thinning and chains -----------------------------------------------------------------------
def test_thin_on_solutions_tensors_and_optimizer_loops():
    sol = integrate(ULA(score=lambda x: -x), torch.zeros(3, 2), torch.arange(11.0) * 0.1,
                    noise=Brownian(gen(0)), save_every=2)  # states at steps 0, 2, ..., 10
    kept = thin(sol, burn_in=2, every=2)
    assert torch.equal(kept.path, sol.path[[2, 4]]) and torch.equal(kept.times, sol.times[[2, 4]])
    assert torch.equal(kept.x, sol.x)
    assert torch.equal(thin(sol.path, burn_in=1, every=3), sol.path[[1, 4]])

    theta = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([theta], lr=1.0)

    def loop():
        for _ in range(7):
            theta.grad = -torch.ones(2)
            opt.step()  # theta = k after step k
            yield theta

    out = thin(loop(), burn_in=1, every=2)  # items 1, 3, 5 = after steps 2, 4, 6
    assert out.tolist() == [[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]] and not out.requires_grad


def test_rhat_flags_chains_that_disagree():
    z = torch.randn(400, 4, generator=gen(0))
    assert rhat(z).item() == pytest.approx(1.0, abs=0.02)
    assert rhat(z + torch.tensor([0.0, 0.0, 3.0, 3.0])).item() > 1.5


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("build,name", [
    (lambda: UnderdampedLangevin(score=lambda x: -x, gamma=-1.0), "gamma"),
    (lambda: UnderdampedLangevin(score=lambda x: -x, temperature=-0.1), "temperature"),
    (lambda: UnderdampedLangevin(score=lambda x: -x, mass=-2.0), "mass"),
    (lambda: UnderdampedLangevin(score=lambda x: -x).sample(torch.zeros(2), step_size=-0.1,
                                                            steps=3), "step_size"),
    (lambda: MALA(log_prob=lambda x: -x.sum(-1), temperature=-1.0), "temperature"),
    (lambda: MALA(log_prob=lambda x: -x.sum(-1)).sample(torch.zeros(2, 1), step_size=0.0,
                                                        steps=3), "step_size"),
    (lambda: MALA(score=lambda x: -x), "log_prob"),
    (lambda: SGHMC([torch.zeros(1, requires_grad=True)], friction=-1.0), "friction"),
    (lambda: SGHMC([torch.zeros(1, requires_grad=True)], lr=-1.0), "lr"),
    (lambda: SGHMC([torch.zeros(1, requires_grad=True)], temperature=-1.0), "temperature"),
    (lambda: SGHMC([torch.zeros(1, requires_grad=True)], friction=0.1, noise_estimate=0.2),
     "noise_estimate"),
    (lambda: PSGLD([torch.zeros(1, requires_grad=True)], lr=-1.0), "lr"),
    (lambda: PSGLD([torch.zeros(1, requires_grad=True)], temperature=-1.0), "temperature"),
    (lambda: thin(torch.zeros(5), every=0), "every"),
    (lambda: thin(torch.zeros(5), burn_in=-1), "burn_in"),
])
def test_bad_input_raises_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_mala_checks_log_prob_shape():
    with pytest.raises(ValueError, match="log_prob"):
        integrate(MALA(log_prob=lambda x: x), torch.zeros(3, 2), [0.0, 0.1],
                  noise=Brownian(gen(0)))


def nan_after(calls, score):
    """``score``, but NaN from its ``calls + 1``-th call on."""
    count = iter(range(10**9))
    return lambda x: score(x) if next(count) < calls else torch.full_like(x, math.nan)


@pytest.mark.parametrize("make, nan_step", [
    # ULA: score call k is in step k.
    (lambda: ULA(score=nan_after(3, lambda x: -x)), 4),
    # BAOAB: call 0 is the first step's opening force, call k its k-th closing one; a NaN
    # closing force spoils the momentum in step k and the position in step k + 1.
    (lambda: UnderdampedLangevin(score=nan_after(3, lambda x: -x)), 4),
    (lambda: UnderdampedLangevin(score=nan_after(3, lambda x: -x), scheme="sghmc"), 4),
], ids=["ULA", "baoab", "sghmc"])
def test_sample_with_check_finite_raises_at_the_step_that_went_non_finite(make, nan_step):
    kw = dict(step_size=0.1, steps=10, generator=gen(0))
    with pytest.raises(FloatingPointError, match=f"step {nan_step} of 10"):
        make().sample(torch.ones(4, 2), check_finite=True, **kw)
    assert torch.isnan(make().sample(torch.ones(4, 2), **kw)).all()  # off by default


def test_mala_rejects_non_finite_proposals_and_check_finite_guards_x0():
    lp = lambda x: -0.5 * (x**2).sum(-1)  # noqa: E731
    mala = MALA(log_prob=lp, score=nan_after(3, lambda x: -x))
    x = mala.sample(torch.ones(4, 2), step_size=0.1, steps=10, generator=gen(0),
                    check_finite=True)
    assert torch.isfinite(x).all()  # a NaN proposal is rejected, never taken
    with pytest.raises(FloatingPointError, match="x0"):
        MALA(log_prob=lp).sample(torch.tensor([[0.0, math.inf]]), step_size=0.1, steps=2,
                                 check_finite=True)


@pytest.mark.parametrize("sampler", [ULA(score=lambda x: -x), MALA(log_prob=lambda x: -x.sum(-1)),
                                     UnderdampedLangevin(score=lambda x: -x)],
                         ids=["ULA", "MALA", "UnderdampedLangevin"])
def test_integer_x0_is_refused_by_name(sampler):
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor, got torch.int64"):
        sampler.sample(torch.zeros(4, 2, dtype=torch.int64), step_size=0.1, steps=2)


def test_integer_momentum_is_refused_by_name():
    uld = UnderdampedLangevin(score=lambda x: -x)
    uld.momentum = torch.zeros(4, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="momentum must be a floating-point tensor"):
        integrate(uld, torch.zeros(4, 2), [0.0, 0.1], noise=Brownian(gen(0)))
