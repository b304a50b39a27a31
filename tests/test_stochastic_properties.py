"""The stochastic problems and :mod:`theory_checks.stochastic`: exact quantities checked against
independent computations (Monte Carlo, series sums, closed forms), bad inputs, and broken
optimizers that the noise ball catches."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stochstep.optimizers import SGHMC, SGLD
from stochstep.theory_checks.stochastic import (assert_noise_ball, assert_rate_in_expectation,
                                                assert_stationary_law, sgd_inverse_time_constant,
                                                expected_moments, expected_second_moments,
                                                linear_chain, run_average_variance,
                                                stationary_covariance)
from stochstep.theory_checks.strategies import (minibatch_least_squares_problem,
                                                minibatch_logistic_problem,
                                                noisy_quadratic_problem, noisy_quadratics,
                                                quadratic_problem)

F64 = torch.float64


def sgd(**kw):
    return lambda params: torch.optim.SGD(params, **kw)


# -- the problems' exact quantities -------------------------------------------------------------
def _gradients(problem, x, draws):
    """``draws`` stochastic gradients at each row of ``x`` through the closure, as a user runs
    the problem."""
    xs = torch.nn.Parameter(x.expand(draws, -1).clone())
    opt = torch.optim.SGD([xs], lr=0.0)
    problem.closure(xs, opt)()
    return xs.grad


@pytest.mark.parametrize("replacement", [True, False])
def test_minibatch_noise_covariances_match_monte_carlo(replacement):
    p = minibatch_least_squares_problem(n=12, dim=2, batch_size=4, replacement=replacement,
                                        seed=1)
    g = _gradients(p, p.x_star, 100_000)
    assert g.mean(0).abs().max() < 0.005
    assert torch.allclose(g.T.cov(), p.noise_cov, atol=0.003)
    # away from x_star: e ~ N(0, S) independent of the batch, noise = g - H e
    S = torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=F64)
    e = torch.randn(100_000, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) \
        @ torch.linalg.cholesky(S).T
    xs = torch.nn.Parameter(p.x_star + e)
    p.stochastic_loss(xs).backward()
    assert torch.allclose((xs.grad - e @ p.H).T.cov(), p.noise_covariance_given(S), atol=0.006)
    q = minibatch_logistic_problem(n=30, dim=2, batch_size=4, replacement=replacement, seed=0)
    gq = _gradients(q, q.x_star, 100_000)
    assert torch.allclose(gq.T.cov(), q.noise_cov, atol=0.002)
    assert torch.allclose(q.H, torch.autograd.functional.hessian(q.loss, q.x_star), atol=1e-12)


def test_without_replacement_full_batch_is_exact():
    p = minibatch_least_squares_problem(n=10, dim=3, batch_size=10, replacement=False, seed=2)
    assert p.noise_cov.abs().max() < 1e-15
    x = p.x0.clone().requires_grad_()
    p.stochastic_loss(x).backward()
    assert torch.allclose(x.grad, p.grad(p.x0), atol=1e-12)


@settings(max_examples=10)
@given(noisy_quadratics(dims=(2, 4), conditions=(1.0, 20.0), noises=(0.1, 2.0)))
def test_noisy_quadratic_oracle(p):
    g = _gradients(p, p.x0, 20_000)
    assert torch.allclose(g.mean(0), p.grad(p.x0), atol=6 * math.sqrt(p.noise_cov[0, 0] / 2e4))
    assert torch.allclose(g.T.cov(), p.noise_cov, rtol=0.1, atol=0.1 * float(p.noise_cov[0, 0]))
    again = noisy_quadratic_problem(p.dim, p.L / p.mu, float(p.noise_cov[0, 0]), seed=0)
    a, b = again.reseed(3).stochastic_grad(p.x0), again.reseed(3).stochastic_grad(p.x0)
    assert torch.equal(a, b)


# -- the closed forms against independent computations ------------------------------------------
def _series(chain, forcing, terms=4000):
    """sum_k M^k F M^k^T, the Lyapunov solution as a series."""
    S, term = torch.zeros_like(forcing), forcing.clone()
    for _ in range(terms):
        S = S + term
        term = chain.M @ term @ chain.M.T
    return S


@pytest.mark.parametrize("kind,hyper", [
    ("sgd", dict(lr=0.1)),
    ("heavy_ball", dict(lr=0.05, momentum=0.8, dampening=0.0, nesterov=False)),
    ("heavy_ball", dict(lr=0.05, momentum=0.7, dampening=0.2, nesterov=True)),
    ("sgld", dict(lr=0.05, temperature=0.3)),
    ("sghmc", dict(lr=0.1, friction=2.0, mass=1.5, noise_estimate=0.5, temperature=0.7)),
])
def test_lyapunov_solution_equals_the_series(kind, hyper):
    p = noisy_quadratic_problem(3, 8.0, noise=torch.tensor([[1.0, 0.3, 0], [0.3, 0.5, 0],
                                                            [0, 0, 0.2]], dtype=F64), seed=4)
    chain = linear_chain(kind, hyper, p.H)
    S = stationary_covariance(chain, p.noise_covariance_given)
    F = chain.G @ p.noise_cov @ chain.G.T + chain.Q
    assert torch.allclose(S, _series(chain, F), rtol=1e-10, atol=1e-14)
    # the finite-time recursion tends to it
    far = expected_second_moments(chain, p.noise_covariance_given, 3000)[-1]
    assert math.isclose(float(far), float(torch.trace(chain.P @ S @ chain.P.T)), rel_tol=1e-9)


def test_sgld_stationary_law_in_closed_form():
    # e' = (I - h H) e + sqrt(2 T h) zeta: S = 2 T h (I - (I - h H)^2)^-1 = T H^-1 (I - h H/2)^-1
    p = noisy_quadratic_problem(4, 10.0, noise=0.0, seed=0)
    h, T = 0.05, 0.5
    S = stationary_covariance(linear_chain("sgld", dict(lr=h, temperature=T), p.H),
                              p.noise_covariance_given)
    eye = torch.eye(4, dtype=F64)
    exact = T * torch.linalg.inv(p.H) @ torch.linalg.inv(eye - h * p.H / 2)
    assert torch.allclose(S, exact, rtol=1e-10)


def test_sgd_with_multiplicative_noise_against_hand_written_runs():
    # Minibatch least squares: the noise grows with e. The vectorized generalized Lyapunov
    # solution against (a) the fixed point of the recursion and (b) SGD written out by hand
    # (its own sampling), 2000 runs, time-averaged after a burn-in of 100 steps (0.65^200).
    p = minibatch_least_squares_problem(n=8, dim=2, batch_size=2, seed=3)
    lr = 0.8
    chain = linear_chain("sgd", dict(lr=lr), p.H)
    S = stationary_covariance(chain, p.noise_covariance_given)
    far = expected_second_moments(chain, p.noise_covariance_given, 2000)[-1]
    assert math.isclose(float(torch.trace(S)), float(far), rel_tol=1e-9)
    additive = stationary_covariance(chain, lambda _: p.noise_cov)
    assert torch.trace(S) > 1.5 * torch.trace(additive)  # the feedback matters here
    gen, runs = torch.Generator().manual_seed(5), 2000
    x, total = p.x_star.expand(runs, 2).clone(), 0.0
    for t in range(200):
        i = torch.randint(8, (runs, 2), generator=gen)
        a, y = p.X[i], p.y[i]                               # (runs, 2, d), (runs, 2)
        x = x - lr * torch.einsum("rbd,rb->rd", a, torch.einsum("rbd,rd->rb", a, x) - y) / 2
        if t >= 100:
            total += float((x - p.x_star).pow(2).sum(1).mean()) / 100
    assert math.isclose(total, float(torch.trace(S)), rel_tol=0.03)


def test_run_average_variance_by_hand():
    # 1-D SGD, window t = 1, 2: e_1 = -lr xi_0, e_2 = a e_1 - lr xi_1 (a = 1 - lr h); Gaussian,
    # so Var e^2 = 2 S^2 and Cov(e_1^2, e_2^2) = 2 Cov(e_1, e_2)^2 = 2 (a S_1)^2
    lr, h, var = 0.3, 2.0, 0.7
    a = 1 - lr * h
    s1 = lr**2 * var
    s2 = a**2 * s1 + lr**2 * var
    by_hand = (2 * s1**2 + 2 * s2**2 + 2 * 2 * (a * s1) ** 2) / 4
    chain = linear_chain("sgd", dict(lr=lr), torch.tensor([[h]], dtype=F64))
    noise = lambda S: torch.tensor([[var]], dtype=F64)  # noqa: E731
    assert run_average_variance(chain, noise, 2, 0) == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_gamma_interval_uses_the_exact_spread_of_the_run_averages(momentum):
    """The exact variance of a run's window average against the spread of 3000 runs (relative
    standard error of a sample variance here about 4 %)."""
    p = noisy_quadratic_problem(3, 5.0, 0.5, seed=1)
    res = assert_noise_ball(sgd(lr=0.05, momentum=momentum), p, runs=3000, steps=120)
    assert res.interval == "gamma"
    exact = res.stderr**2 * res.runs
    assert float(res.run_means.var()) == pytest.approx(exact, rel=0.15)
    # minibatch (non-Gaussian, state-dependent) noise keeps Student's interval over runs
    q = minibatch_least_squares_problem(40, 3, 4, replacement=True, seed=0)
    assert assert_noise_ball(sgd(lr=0.02), q, runs=50, steps=100).interval == "student"


# -- the property passes correct optimizers -----------------------------------------------------
@pytest.mark.parametrize("make", [
    sgd(lr=0.1), sgd(lr=0.05, momentum=0.9), sgd(lr=0.05, momentum=0.5, nesterov=True),
    sgd(lr=0.05, momentum=0.6, dampening=0.5),
    lambda ps: SGLD(ps, lr=0.05, temperature=0.2, generator=torch.Generator().manual_seed(1)),
    lambda ps: SGHMC(ps, lr=0.1, friction=2.0, temperature=0.5,
                     generator=torch.Generator().manual_seed(2)),
], ids=["sgd", "heavy_ball", "nesterov", "dampening", "sgld", "sghmc"])
def test_correct_optimizers_pass(make):
    p = noisy_quadratic_problem(3, 10.0, noise=0.5, seed=0)
    res = assert_noise_ball(make, p)
    assert res.low <= res.measured <= res.high and abs(res.ratio - 1) < 0.1


@pytest.mark.parametrize("replacement", [True, False])
def test_sgd_on_minibatch_least_squares_passes(replacement):
    p = minibatch_least_squares_problem(n=20, dim=3, batch_size=4, replacement=replacement,
                                        seed=0)
    assert_noise_ball(sgd(lr=0.1), p)


# -- broken optimizers are caught ---------------------------------------------------------------
class BrokenSGD(torch.optim.Optimizer):
    """Claims to be SGD with ``lr`` (and heavy ball with ``momentum``), with one bug."""

    def __init__(self, params, lr, momentum=0.0, bug=None, generator=None):
        super().__init__(params, dict(lr=lr, momentum=momentum))
        self.bug, self.generator = bug, generator

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                g = p.grad
                if self.bug == "lr_twice":
                    g = 2 * g
                if mu:
                    buf = self.state[p].get("buf")
                    if buf is None:
                        buf = g.clone()
                    elif self.bug == "momentum_never_reset":
                        buf = buf + g  # the old buffer is never decayed
                    else:
                        buf = mu * buf + g
                    self.state[p]["buf"] = g = buf
                p.sub_(lr * g)
                if self.bug == "twice_the_noise":  # SGLD whose noise has 2x the variance
                    z = torch.randn(p.shape, generator=self.generator, dtype=p.dtype)
                    p.add_(math.sqrt(2 * 2 * lr) * z)
        return None


@pytest.mark.parametrize("bug,kind,momentum", [
    ("lr_twice", "sgd", 0.0), ("momentum_never_reset", "heavy_ball", 0.5),
    ("twice_the_noise", "sgld", 0.0),
])
def test_broken_optimizers_fail(bug, kind, momentum):
    p = noisy_quadratic_problem(3, 10.0, noise=0.5, seed=0)
    gen = torch.Generator().manual_seed(0)
    broken = lambda ps: BrokenSGD(ps, lr=0.05, momentum=momentum, bug=bug, generator=gen)  # noqa
    extra = dict(temperature=1.0) if kind == "sgld" else {}
    with pytest.raises(AssertionError, match="noise ball|blew up"):
        assert_noise_ball(broken, p, kind=kind, hyperparameters=extra or None)
    correct = lambda ps: BrokenSGD(ps, lr=0.05, momentum=momentum, generator=gen)  # noqa
    if kind != "sgld":  # the same class without the bug passes
        assert_noise_ball(correct, p, kind=kind)


def test_correct_custom_sgld_passes_with_explicit_kind():
    p = noisy_quadratic_problem(3, 10.0, noise=0.5, seed=0)

    class HandSGLD(BrokenSGD):
        def step(self, closure):
            super().step(closure)
            with torch.no_grad():
                for q in self.param_groups[0]["params"]:
                    q.add_(math.sqrt(2 * 0.05) * torch.randn(q.shape, generator=self.generator,
                                                              dtype=q.dtype))

    gen = torch.Generator().manual_seed(0)
    assert_noise_ball(lambda ps: HandSGLD(ps, lr=0.05, generator=gen), p, kind="sgld",
                      hyperparameters=dict(temperature=1.0))


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_is_named():
    p = noisy_quadratic_problem(3, 10.0, noise=0.5, seed=0)
    with pytest.raises(ValueError, match="runs must be an integer >= 2"):
        assert_noise_ball(sgd(lr=0.1), p, runs=1)
    with pytest.raises(ValueError, match="burn_in must be < steps"):
        assert_noise_ball(sgd(lr=0.1), p, steps=10, burn_in=10)
    with pytest.raises(ValueError, match="confidence"):
        assert_noise_ball(sgd(lr=0.1), p, confidence=1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        assert_noise_ball(sgd(lr=0.1), p, kind="adam")
    with pytest.raises(TypeError, match=r"unknown \['betas'\]"):
        assert_noise_ball(sgd(lr=0.1), p, hyperparameters=dict(betas=(0.9, 0.99)))
    with pytest.raises(ValueError, match="lacks H, noise_cov"):
        assert_noise_ball(sgd(lr=0.1), quadratic_problem(3, 10.0))
    with pytest.raises(ValueError, match="nonlinearly"):
        assert_noise_ball(sgd(lr=0.1), minibatch_logistic_problem(30, 2, 4))
    with pytest.raises(ValueError, match="weight_decay=0.1 is not supported"):
        assert_noise_ball(sgd(lr=0.1, weight_decay=0.1), p)
    with pytest.raises(ValueError, match="kind='sgd' needs momentum=0"):
        assert_noise_ball(sgd(lr=0.1, momentum=0.9), p, kind="sgd")
    with pytest.raises(ValueError, match="unstable"):
        assert_noise_ball(sgd(lr=0.25), p)  # 2 / L = 0.2
    with pytest.raises(ValueError, match="cannot tell which closed form applies to Adam"):
        assert_noise_ball(lambda ps: torch.optim.Adam(ps, lr=0.1), p)
    with pytest.raises(ValueError, match="noise must be a finite variance"):
        noisy_quadratic_problem(3, 10.0, noise=-1.0)
    with pytest.raises(ValueError, match="batch_size must be an integer in"):
        minibatch_least_squares_problem(10, 2, batch_size=11, replacement=False)


def test_a_non_constant_step_is_refused():
    p = noisy_quadratic_problem(3, 10.0, noise=0.5, seed=0)

    def scheduled(ps):
        opt = torch.optim.SGD(ps, lr=0.1)
        torch.optim.lr_scheduler.StepLR(opt, 10)
        return opt

    with pytest.raises(ValueError, match="scheduler is attached"):
        assert_noise_ball(scheduled, p)

    class Decaying(torch.optim.SGD):
        def step(self, closure=None):
            out = super().step(closure)
            self.param_groups[0]["lr"] *= 0.99
            return out

    with pytest.raises(ValueError, match=r"changed during the run at step 1 \(lr: 0.1 -> "):
        assert_noise_ball(lambda ps: Decaying(ps, lr=0.1), p)
    with pytest.raises(ValueError, match="must return a torch.optim.Optimizer"):
        assert_noise_ball(lambda ps: (torch.optim.SGD(ps, lr=0.1), None), p)


# -- the stationary law of SGLD and SGHMC -------------------------------------------------------
def _sghmc(**kw):
    return lambda ps: SGHMC(ps, generator=torch.Generator().manual_seed(7), **kw)


@pytest.mark.parametrize("make", [
    lambda ps: SGLD(ps, lr=0.05, temperature=0.5, generator=torch.Generator().manual_seed(6)),
    _sghmc(lr=0.1, friction=2.0, temperature=0.5),
    _sghmc(lr=0.1, friction=2.0, mass=2.0, noise_estimate=0.5, temperature=0.5),
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5, dampening=0.5),
], ids=["sgld", "sghmc", "sghmc-mass-noise-estimate", "heavy-ball-dampening"])
def test_samplers_have_the_exact_law(make):
    p = noisy_quadratic_problem(3, 10.0, noise=0.3, seed=2)
    res = assert_stationary_law(make, p)
    assert res.worst_z <= res.threshold


def test_sgld_law_against_independent_hand_written_chains():
    # 20000 SGLD chains written out by hand (exact gradients), 100 steps from x_star (the
    # transient is 0.81^100 of the start): their covariance against T H^-1 (I - h H / 2)^-1,
    # which assert_stationary_law's recursion tends to.
    p = noisy_quadratic_problem(2, 4.0, noise=0.0, seed=3)
    h, T = 0.1, 0.5
    gen = torch.Generator().manual_seed(0)
    e = torch.zeros(20_000, 2, dtype=F64)
    M = torch.eye(2, dtype=F64) - h * p.H
    for _ in range(100):
        e = e @ M.T + math.sqrt(2 * T * h) * torch.randn(e.shape, generator=gen, dtype=F64)
    exact = T * torch.linalg.inv(p.H) @ torch.linalg.inv(torch.eye(2, dtype=F64) - h * p.H / 2)
    assert torch.allclose(e.T.cov(), exact, atol=0.03 * float(exact.max()))
    res = assert_stationary_law(lambda ps: SGLD(ps, lr=h, temperature=T,
                                                generator=torch.Generator().manual_seed(1)), p)
    assert torch.allclose(res.stationary_covariance, exact, rtol=1e-10)


class BrokenSGHMC(SGHMC):
    """SGHMC with its friction applied twice per step (the chain cools)."""

    def step(self, closure=None):
        out = super().step(closure)
        with torch.no_grad():
            for q in self.param_groups[0]["params"]:
                r = self.state[q]["momentum"]
                r.mul_(1 - self.param_groups[0]["lr"] * self.param_groups[0]["friction"])
        return out


class BiasedSGLD(SGLD):
    """SGLD that drifts by a constant 0.02 per step on top of the correct update."""

    def step(self, closure=None):
        out = super().step(closure)
        with torch.no_grad():
            self.param_groups[0]["params"][0].add_(0.02)
        return out


@pytest.mark.parametrize("make,claimed,what", [
    (lambda ps: BrokenSGHMC(ps, lr=0.1, friction=2.0, temperature=0.5,
                            generator=torch.Generator().manual_seed(0)), None, "second_moment"),
    (lambda ps: BiasedSGLD(ps, lr=0.05, temperature=0.5,
                           generator=torch.Generator().manual_seed(0)), None, "mean"),
    (lambda ps: SGLD(ps, lr=0.05, temperature=0.5, generator=torch.Generator().manual_seed(0)),
     dict(temperature=0.7), "second_moment"),  # the right sampler, claimed hotter
], ids=["sghmc-friction-twice", "sgld-drift", "sgld-wrong-temperature"])
def test_broken_samplers_fail(make, claimed, what):
    p = noisy_quadratic_problem(3, 10.0, noise=0.3, seed=2)
    with pytest.raises(AssertionError, match=rf"law of kind=.* {what}"):
        assert_stationary_law(make, p, hyperparameters=claimed)


def test_stationary_law_refuses_state_dependent_noise():
    p = minibatch_least_squares_problem(20, 2, 4)
    with pytest.raises(ValueError, match="needs additive gradient noise"):
        assert_stationary_law(lambda ps: SGLD(ps, lr=0.05), p)


# -- rates in expectation -----------------------------------------------------------------------
def _scheduled_sgd(lr, factor):
    def make(params):
        opt = torch.optim.SGD(params, lr=lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return make


def _exact_gaps(p, schedule, horizons):
    """E f(x_T) - f* of SGD with steps schedule(t), t = 0.., by the exact time-varying
    recursion S <- (I - a H) S (I - a H) + a^2 Sigma from S = e0 e0^T."""
    e0 = p.x0 - p.x_star
    S, out, eye = torch.outer(e0, e0), [], torch.eye(p.dim, dtype=F64)
    for t in range(max(horizons)):
        M = eye - schedule(t) * p.H
        S = M @ S @ M + schedule(t) ** 2 * p.noise_cov
        if t + 1 in horizons:
            out.append(0.5 * float(torch.trace(p.H @ S)))
    return torch.tensor(out, dtype=F64)


def test_sgd_with_inverse_time_steps_meets_the_proven_1_over_T_bound():
    p = noisy_quadratic_problem(3, 4.0, noise=1.0, seed=0)
    beta = 2.0 / p.mu
    gamma = beta * p.L - 1  # the first step is 1/L
    C = sgd_inverse_time_constant(p, beta, gamma)
    # nu = max(beta^2 L M / (2 (beta mu - 1)), (gamma + 1) gap(x0)), by hand
    assert math.isclose(C, max(4 * 4.0 * 3.0 / 2, 8 * p.gap(p.x0)), rel_tol=1e-12)
    horizons = (100, 200, 400, 800)
    res = assert_rate_in_expectation(_scheduled_sgd(beta, lambda t: 1 / (gamma + t + 1)), p,
                                     rate="1/T", constant=C, horizons=horizons)
    exact = _exact_gaps(p, lambda t: beta / (gamma + t + 1), horizons)
    assert ((res.gaps - exact).abs() <= 4 * res.stderrs).all()  # the measured gaps are right
    assert (exact <= C / torch.tensor(horizons, dtype=F64)).all()  # and so is the theorem


@pytest.mark.parametrize("lr,factor", [(0.25, lambda t: 1.0),
                                       (2.0, lambda t: 1 / math.sqrt(8 + t))],
                         ids=["constant-step", "inverse-sqrt-steps"])
def test_slower_schedules_fail_the_1_over_T_claim(lr, factor):
    p = noisy_quadratic_problem(3, 4.0, noise=1.0, seed=0)
    C = sgd_inverse_time_constant(p, 2.0, 7.0)
    with pytest.raises(AssertionError, match="above 24 x 1/T"):
        assert_rate_in_expectation(_scheduled_sgd(lr, factor), p, rate="1/T", constant=C)


def test_one_over_sqrt_T_with_the_exact_constant_and_a_growing_step():
    p = noisy_quadratic_problem(2, 2.0, noise=1.0, seed=1)
    horizons = (50, 100, 200, 400)
    c = 0.3
    exact = _exact_gaps(p, lambda t: c / math.sqrt(t + 1), horizons)
    C = 1.1 * float((exact * torch.tensor(horizons, dtype=F64).sqrt()).max())
    res = assert_rate_in_expectation(_scheduled_sgd(c, lambda t: 1 / math.sqrt(t + 1)), p,
                                     rate="1/sqrt(T)", constant=C, horizons=horizons)
    assert -0.7 < res.slope < -0.3
    with pytest.raises(AssertionError, match=r"above .* x 1/sqrt\(T\)"):  # lr grows like t
        assert_rate_in_expectation(_scheduled_sgd(1e-4, lambda t: 1 + t), p,
                                   rate="1/sqrt(T)", constant=C, horizons=horizons)


def test_rate_bad_input():
    p = noisy_quadratic_problem(3, 4.0, noise=1.0, seed=0)
    make = sgd(lr=0.1)
    with pytest.raises(ValueError, match="rate must be one of"):
        assert_rate_in_expectation(make, p, rate="1/T^2", constant=1.0)
    with pytest.raises(ValueError, match="constant must be a finite number > 0"):
        assert_rate_in_expectation(make, p, constant=0.0)
    with pytest.raises(ValueError, match="horizons must be a non-empty increasing"):
        assert_rate_in_expectation(make, p, constant=1.0, horizons=(100, 50))
    with pytest.raises(ValueError, match="runs must be an integer >= 2"):
        assert_rate_in_expectation(make, p, constant=1.0, runs=1)
    with pytest.raises(ValueError, match="beta must be > 1/mu"):
        sgd_inverse_time_constant(p, 0.5, 10.0)
    with pytest.raises(ValueError, match="raise gamma"):
        sgd_inverse_time_constant(p, 2.0, 1.0)
    with pytest.raises(ValueError, match="lacks noise_cov"):
        sgd_inverse_time_constant(quadratic_problem(3, 4.0), 2.0, 10.0)


@pytest.mark.parametrize("kind,hyper,make", [
    ("heavy_ball", dict(lr=0.1, momentum=0.7, dampening=0.4, nesterov=False),
     sgd(lr=0.1, momentum=0.7, dampening=0.4)),
    ("heavy_ball", dict(lr=0.1, momentum=0.7, dampening=0.0, nesterov=True),
     sgd(lr=0.1, momentum=0.7, nesterov=True)),
    ("sghmc", dict(lr=0.1, friction=2.0, mass=1.5, noise_estimate=0.0, temperature=0.0),
     lambda ps: SGHMC(ps, lr=0.1, friction=2.0, mass=1.5, temperature=0.0)),
], ids=["dampening", "nesterov", "sghmc"])
def test_mean_recursion_is_the_deterministic_trajectory(kind, hyper, make):
    # Without any noise E e_t is the optimizer's own trajectory: M and the first step's
    # M_first checked against torch's SGD and our SGHMC, step by step, to rounding.
    p = noisy_quadratic_problem(3, 10.0, noise=0.0, seed=5)
    chain = linear_chain(kind, hyper, p.H)
    means, _ = expected_moments(chain, p.noise_cov, p.x0 - p.x_star, 15)
    x = torch.nn.Parameter(p.x0.clone())
    opt = make([x])
    for t in range(1, 16):
        opt.step(p.closure(x, opt))
        assert torch.allclose(x.detach() - p.x_star, means[t], rtol=1e-10, atol=1e-13), t


@settings(max_examples=5)
@given(noisy_quadratics(dims=(2, 5), conditions=(1.0, 20.0), noises=(0.01, 1.0)),
       st.floats(0.1, 1.5), st.sampled_from([0.0, 0.5]))
def test_sgd_noise_ball_on_drawn_problems(p, scale, momentum):
    # lr = scale / L is stable for both (heavy ball at momentum 0.5: lr L < 2 (1 + 0.5));
    # five examples: confidence 1 - 0.01 / 5 keeps a correct SGD's failure chance at 1 %.
    assert_noise_ball(sgd(lr=scale / p.L, momentum=momentum), p, confidence=1 - 0.01 / 5)
