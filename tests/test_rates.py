"""Tests of theory_checks.rates: log-log fits, the SGD-temperature perceptron experiment of
Sclocchi, Geiger & Wyart (arXiv 2301.13703), and last-iterate rates (Liu & Zhou, 2312.08531).

The numbers the claim tests assert were measured here first (see the report / RESULTS.md);
each tolerance says where it comes from.
"""

import math

import pytest
import torch

from stochstep.theory_checks.rates import (STEP_SCHEDULES, LastIterateGaps, PowerLawFit,
                                           StochasticProblem, l1_problem, last_iterate_gap,
                                           least_squares_problem, loglog_slope,
                                           perceptron_temperature)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ================================================================================ loglog_slope

def test_loglog_slope_recovers_an_exact_power_law():
    x = torch.tensor([2.0, 5.0, 30.0, 1e3], dtype=F64)
    fit = loglog_slope(x, 3.0 * x ** -0.7)
    assert isinstance(fit, PowerLawFit)
    slope, intercept = fit                                   # unpacks as a pair
    assert slope == pytest.approx(-0.7, abs=1e-12)
    assert intercept == pytest.approx(math.log(3.0), abs=1e-12)


def test_loglog_slope_is_the_least_squares_line_on_logs():
    g = gen(0)
    x = torch.logspace(0, 3, 9, dtype=F64)
    y = 2.0 * x ** 1.3 * torch.exp(0.2 * torch.randn(9, generator=g, dtype=F64))
    u, v = x.log(), y.log()
    A = torch.stack([u, torch.ones_like(u)], 1)
    ref = torch.linalg.lstsq(A, v[:, None]).solution[:, 0]
    fit = loglog_slope(x.tolist(), y.numpy())                # lists and numpy arrays work too
    assert fit.slope == pytest.approx(ref[0].item(), abs=1e-12)
    assert fit.intercept == pytest.approx(ref[1].item(), abs=1e-12)


@pytest.mark.parametrize("x, y, match", [
    ([1.0, 2.0], [1.0, -1.0], "y must hold finite numbers > 0"),
    ([0.0, 2.0], [1.0, 1.0], "x must hold finite numbers > 0"),
    ([1.0, float("nan")], [1.0, 1.0], "x must hold finite numbers > 0"),
    ([1.0, float("inf")], [1.0, 1.0], "x must hold finite numbers > 0"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], "same length"),
    ([1.0], [1.0], "at least 2 points"),
    ([2.0, 2.0], [1.0, 3.0], "two distinct values"),
    ("abc", [1.0, 2.0], "x must be a sequence"),
])
def test_loglog_slope_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        loglog_slope(x, y)


def test_loglog_slope_rejects_unknown_keywords():
    with pytest.raises(TypeError):
        loglog_slope([1.0, 2.0], [1.0, 2.0], weights=[1.0, 1.0])


# ===================================================================== perceptron: mechanics

def _plain_sgd(X, y, lr, batch, runs, generator, margin=1.0, max_steps=100_000):
    """Step-by-step minibatch SGD on the hinge loss, ``runs`` realisations on one data set
    (the reference the event-driven simulator must match in distribution)."""
    P, d = X.shape
    w = torch.zeros(runs, d, dtype=F64)
    steps = torch.zeros(runs, dtype=F64)
    done = torch.zeros(runs, dtype=torch.bool)
    for _ in range(max_steps):
        m = y * (w @ X.T) / math.sqrt(d)
        done |= (m >= margin).all(1)
        if done.all():
            break
        idx = torch.rand(runs, P, generator=generator, dtype=F64).argsort(1)[:, :batch]
        active = (m.gather(1, idx) < margin) & ~done[:, None]
        w += (lr / batch) * torch.einsum("rb,rbi->ri", active * y[idx], X[idx]) / math.sqrt(d)
        steps += ~done
    assert done.all()
    return lr * steps, w.norm(dim=1)


def test_full_batch_run_is_plain_gradient_descent():
    sweep = perceptron_temperature([3.0], [24], train_size=24, dim=5, runs=2, generator=gen(3))
    for r in range(2):
        X, y = sweep.inputs[r], sweep.labels[r]
        w, steps = torch.zeros(5, dtype=F64), 0
        while (y * (X @ w) / math.sqrt(5) < 1.0).any():
            active = y * (X @ w) / math.sqrt(5) < 1.0
            w += 3.0 / 24 * ((active * y) @ X) / math.sqrt(5)
            steps += 1
        assert sweep.steps[0, r].item() == steps
        torch.testing.assert_close(sweep.weights[0, r], w, rtol=1e-10, atol=1e-10)


def test_event_driven_sgd_matches_step_by_step_sgd_in_distribution(one_thread):
    """Skipping idle steps by a geometric draw and drawing the number of positive-loss points
    from the conditioned hypergeometric law is exact in distribution: the mean training time
    and final norm agree with plain SGD on the same data within 4 standard errors, and a
    two-sample KS test does not reject (the comparison is able to fail: with the idle steps
    not counted, t* drops from ~357 to ~136, while ||w|| is unchanged)."""
    from scipy.stats import ks_2samp

    runs, lr, batch = 400, 1.0, 3
    sweep = perceptron_temperature([lr] * runs, [batch] * runs, train_size=16, dim=4, runs=1,
                                   generator=gen(11))
    fast_t, fast_w = sweep.train_time[:, 0], sweep.weight_norm[:, 0]
    slow_t, slow_w = _plain_sgd(sweep.inputs[0], sweep.labels[0], lr, batch, runs, gen(12))
    for a, b in ((fast_t, slow_t), (fast_w, slow_w)):
        se = math.sqrt(a.var() / runs + b.var() / runs)
        assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)
    assert ks_2samp(fast_t.numpy(), slow_t.numpy()).pvalue > 1e-3
    assert ks_2samp(fast_w.numpy(), slow_w.numpy()).pvalue > 1e-3


def test_perceptron_fits_the_data_and_is_reproducible():
    kw = dict(train_size=40, dim=6, runs=3)
    a = perceptron_temperature([0.5, 2.0, 8.0], [1, 4, 40], generator=gen(5), **kw)
    b = perceptron_temperature([0.5, 2.0, 8.0], [1, 4, 40], generator=gen(5), **kw)
    assert a.converged.all()
    torch.testing.assert_close(a.train_time, b.train_time, rtol=0, atol=0)
    margins = torch.einsum("kri,rpi->krp", a.weights, a.inputs) * a.labels / math.sqrt(6)
    assert (margins.min(-1).values >= 1.0).all()              # zero hinge loss at t*
    assert a.temperature.tolist() == [0.5, 0.5, 0.2]
    torch.testing.assert_close(a.alignment, a.weights[..., 0] / a.weight_norm)


def test_perceptron_margin_is_a_change_of_units(one_thread):
    """t*(T, kappa) = kappa t*(T / kappa, 1) and w scales with kappa, draw for draw (the
    random draws depend only on which points have positive loss, which the rescaling keeps)."""
    kw = dict(train_size=30, dim=5, runs=2)
    a = perceptron_temperature([3.0, 4.0], [2, 30], margin=2.0, generator=gen(4), **kw)
    b = perceptron_temperature([1.5, 2.0], [2, 30], margin=1.0, generator=gen(4), progress=True,
                               **kw)
    torch.testing.assert_close(a.steps, b.steps, rtol=0, atol=0)
    torch.testing.assert_close(a.train_time, 2 * b.train_time)
    torch.testing.assert_close(a.weights, 2 * b.weights)


def test_perceptron_budget_reports_unconverged_runs():
    s = perceptron_temperature([0.01], [1], train_size=64, dim=4, runs=2, max_steps=50,
                               generator=gen(0))
    assert not s.converged.any() and s.train_time.isnan().all()


def test_perceptron_chi_moves_data_away_from_the_boundary():
    kw = dict(train_size=4000, dim=2, max_steps=1, generator=gen(1))   # only the data matter
    s0 = perceptron_temperature([1.0], [64], **kw)
    s2 = perceptron_temperature([1.0], [64], chi=2.0, **{**kw, "generator": gen(1)})
    near = [(s.inputs[0, :, 0].abs() < 0.1).float().mean().item() for s in (s0, s2)]
    # P(|x_1| < 0.1) is 0.080 for chi = 0 and ~0.0003 for chi = 2 (density ~ x^2 e^{-x^2/2}).
    assert near[0] == pytest.approx(0.080, abs=0.015) and near[1] < 0.003
    assert s2.inputs[0, :, 0].pow(2).mean().item() == pytest.approx(3.0, rel=0.1)  # E x^2 = 1+chi


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(lrs=[1.0, 2.0], batch_sizes=[1]), ValueError, "same length"),
    (dict(lrs=[], batch_sizes=[]), ValueError, "non-empty"),
    (dict(lrs=[-1.0], batch_sizes=[1]), ValueError, r"lrs\[0\] must be a finite number > 0"),
    (dict(lrs=[1.0], batch_sizes=[0]), ValueError, r"batch_sizes\[0\] must be an integer"),
    (dict(lrs=[1.0], batch_sizes=[33]), ValueError, "batch_sizes must be <= train_size"),
    (dict(lrs=[1.0], batch_sizes=[1], chi=-1.0), ValueError, "chi must be a finite number > -1"),
    (dict(lrs=[1.0], batch_sizes=[1], margin=0.0), ValueError, "margin must be"),
    (dict(lrs=[1.0], batch_sizes=[1], runs=0), ValueError, "runs must be an integer >= 1"),
    (dict(lrs=[1.0], batch_sizes=[1], generator=3), ValueError, "generator must be"),
    (dict(lrs=[1.0], batch_sizes=[1], temperature=1.0), TypeError, "temperature"),
])
def test_perceptron_rejects_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        perceptron_temperature(train_size=32, dim=4, **kwargs)


# ============================================================= perceptron: the paper's claims

def test_only_the_temperature_lr_over_b_matters(one_thread):
    """Sclocchi, Geiger & Wyart: in the noise-dominated regime SGD depends on (lr, B) only
    through T = lr / B. Pairs with the same T but lr and B varied 4x apart give the same mean
    t* (within 12 %) and final norm (within 4 %), while the same lr at a 4x different B (a 4x
    different T) changes t* by > 50 %. B <= P/16 keeps the without-replacement correction
    (1 - (B-1)/(P-1)) to the noise under 5 %. Measured (P 64, d 16, 128 data sets, seeds 0-3):
    same-T spreads of t* 1.01-1.04 at T = 1 and 1.01-1.11 at T = 10, of ||w|| <= 1.034."""
    pairs = [(1.0, 1), (2.0, 2), (4.0, 4), (4.0, 1), (10.0, 1), (20.0, 2), (40.0, 4)]
    s = perceptron_temperature([p[0] for p in pairs], [p[1] for p in pairs], train_size=64,
                               dim=16, runs=256, generator=gen(1))
    assert s.converged.all()
    t, w = s.mean("train_time"), s.mean("weight_norm")
    for group in ([0, 1, 2], [4, 5, 6]):                      # T = 1 and T = 10
        assert t[group].max() / t[group].min() < 1.12, t[group]
        assert w[group].max() / w[group].min() < 1.04, w[group]
    assert t[3] / t[2] > 1.5                                  # same lr 4, B 1 vs 4
    assert t[4:].min() / t[:3].max() > 2.5                    # T = 10 vs T = 1
    assert w[4:].min() / w[:3].max() > 2.5


def test_training_time_grows_linearly_with_temperature_above_the_crossover(one_thread):
    """t* ~ T P^b (2301.13703) and ||w|| ~ T P^gamma (2309.10688). Far below the crossover
    t* is the gradient-descent time (T = 0.1: within 10 % of full batch), both grow
    monotonically with T, and what the noise adds on top of gradient descent is linear in T:
    over T = 10..100 the log-log slopes of t* - t*_GD and ||w|| - ||w||_GD are 1 (measured
    0.92-1.02 and 1.00-1.02 over 4 seeds, P 64, d 16, 64 data sets; asserted 1 +- 0.12 and
    1 +- 0.05). The direction reached (cosine with the teacher) does not depend on T."""
    Ts = [0.1, 1.0, 10.0, 30.0, 100.0]
    P, B = 64, 2
    s = perceptron_temperature([T * B for T in Ts] + [0.05 * P], [B] * len(Ts) + [P],
                               train_size=P, dim=16, runs=64, generator=gen(64))
    assert s.converged.all()
    t, w = s.mean("train_time"), s.mean("weight_norm")
    gd_t, gd_w = t[-1], w[-1]
    assert 1.0 < t[0] / gd_t < 1.10 and 1.0 < w[0] / gd_w < 1.03
    assert (t[:-1].diff() > 0).all() and (w[:-1].diff() > 0).all()
    hot = [10.0, 30.0, 100.0]
    assert loglog_slope(hot, t[2:5] - gd_t).slope == pytest.approx(1.0, abs=0.12)
    assert loglog_slope(hot, w[2:5] - gd_w).slope == pytest.approx(1.0, abs=0.05)
    assert s.mean("alignment")[:-1].std() < 0.01


def test_training_size_exponents_depend_on_the_data_near_the_boundary(one_thread):
    """At T = 100 (noise dominated), t* ~ P^b and ||w|| ~ P^gamma over P = 32..128 (d 16,
    128 data sets). Measured here (4 seeds): chi = 0: b = 2.14-2.21, gamma = 0.70-0.74;
    chi = 1: b = 1.44-1.47, gamma = 0.30-0.33. The papers: the exponents depend on the data
    density near the boundary (exponent chi), gamma = 1/(1 + chi) in 2309.10688's analysis.
    Asserted: the measured values +- 0.12, and gamma(chi=1)/gamma(chi=0) = 1/2 +- 0.12 (the
    ratio the formula predicts; gamma itself is below 1 at these sizes)."""
    Ps, T, B = [32, 64, 128], 100.0, 2
    expo = {}
    for chi in (0.0, 1.0):
        t, w = [], []
        for P in Ps:
            s = perceptron_temperature([T * B], [B], train_size=P, dim=16, runs=128, chi=chi,
                                       generator=gen(P))
            t.append(s.mean("train_time").item())
            w.append(s.mean("weight_norm").item())
        expo[chi] = (loglog_slope(Ps, t).slope, loglog_slope(Ps, w).slope)
    assert expo[0.0][0] == pytest.approx(2.17, abs=0.12)
    assert expo[0.0][1] == pytest.approx(0.72, abs=0.12)
    assert expo[1.0][0] == pytest.approx(1.45, abs=0.12)
    assert expo[1.0][1] == pytest.approx(0.31, abs=0.12)
    assert expo[1.0][1] / expo[0.0][1] == pytest.approx(0.5, abs=0.12)


# ============================================================================ last iterate

HORIZONS = [100, 1000, 10000]


def _band(schedule_rate):
    """Fitted log-log slope of a rate function over HORIZONS (a bound's slope on this range)."""
    T = torch.tensor(HORIZONS, dtype=F64)
    return loglog_slope(T, schedule_rate(T)).slope


@pytest.mark.parametrize("schedule", ["constant", "sqrt"])
def test_last_iterate_l1_is_within_the_lipschitz_rate(schedule, one_thread):
    """Liu & Zhou: E f(x_T) - f* = O(log T / sqrt T) for Lipschitz convex f on an unbounded
    domain with unbounded (Gaussian) noise. On f = ||x||_1 the fitted slope lies between
    -1/2 (the noise floor of a final step ~ 1/sqrt T) and the bound's own slope over
    1e2..1e4 (-0.35), with 4 standard errors: measured -0.497 for both (spec: gaps
    0.70 / 0.22 / 0.071, slope -0.497; here 0.97 / 0.31 / 0.099 with d = 10, sigma = 1)."""
    res = last_iterate_gap("l1", schedule, HORIZONS, runs=200, generator=gen(0))
    upper = _band(lambda T: T.log() / T.sqrt())
    assert upper == pytest.approx(-0.349, abs=0.01)
    assert -0.5 - 4 * res.slope_stderr - 0.01 < res.slope < upper + 4 * res.slope_stderr
    assert res.slope == pytest.approx(-0.5, abs=0.03)
    assert (res.gaps.diff() < 0).all()


@pytest.mark.parametrize("schedule, final_step_exponent", [("linear", -1.5), ("inverse", -1.0)])
def test_last_iterate_on_a_sharp_minimum_tracks_the_final_step(schedule, final_step_exponent,
                                                             one_thread):
    """Faster than the bound, as allowed: on the sharp minimum of ||x||_1 the iterate stays
    within O(step) of 0, so the gap follows the final step size, lr/T^1.5 for the linear decay
    and lr/T for 1/t (measured slopes -1.500 and -1.005; asserted within 0.05)."""
    res = last_iterate_gap("l1", schedule, HORIZONS, runs=200, generator=gen(0))
    assert res.slope == pytest.approx(final_step_exponent, abs=0.05)


@pytest.mark.parametrize("schedule, measured", [("constant", -0.416), ("sqrt", -0.511),
                                                ("linear", -0.465)])
def test_last_iterate_smooth_convex_least_squares(schedule, measured, one_thread):
    """Liu & Zhou, smooth convex: O(1/T + sigma log T / sqrt T). Noisy least squares with
    curvatures 1/k^2 (k = 1..10): slopes between -1/2 - 4 se and the bound's -0.35 + 4 se
    (measured -0.416 / -0.511 / -0.465; the flattest curvature 0.01 keeps the start-up bias
    alive to T ~ 1e4, hence above -1/2 for the constant step; the spec saw -0.53)."""
    res = last_iterate_gap("least_squares", schedule, HORIZONS, runs=200, generator=gen(0))
    se = res.slope_stderr
    assert -0.5 - 4 * se - 0.02 < res.slope < _band(lambda T: T.log() / T.sqrt()) + 4 * se
    assert res.slope == pytest.approx(measured, abs=4 * se + 0.01)


def test_last_iterate_strongly_convex_with_one_over_t_steps(one_thread):
    """Strongly convex (mu = 0.5) with eta_t = 1/(mu t): Liu & Zhou give O(log T / T), whose
    slope over 1e2..1e4 is -0.85; the noise floor sigma^2/(mu T) gives -1. Measured -0.985;
    asserted in [-1 - 4 se - 0.02, -0.85 + 4 se]. Against it, the constant 1/sqrt(T) step
    stays at -1/2 on the same problem (measured -0.508)."""
    res = last_iterate_gap("strongly_convex_least_squares", "inverse", HORIZONS, runs=200,
                           lr=2.0, generator=gen(0))
    se = res.slope_stderr
    upper = _band(lambda T: T.log() / T)
    assert upper == pytest.approx(-0.85, abs=0.02)
    assert -1.0 - 4 * se - 0.02 < res.slope < upper + 4 * se
    const = last_iterate_gap("strongly_convex_least_squares", "constant", HORIZONS, runs=200,
                             generator=gen(0))
    assert const.slope == pytest.approx(-0.5, abs=0.04)


def test_last_iterate_callable_schedule_equals_the_named_one():
    a = last_iterate_gap("l1", "constant", [10, 40], runs=20, generator=gen(2), lr=0.5)
    b = last_iterate_gap("l1", lambda t, T: 1 / T.sqrt() + 0 * t, [10, 40], runs=20,
                         generator=gen(2), lr=0.5)
    assert isinstance(a, LastIterateGaps)
    torch.testing.assert_close(a.gaps, b.gaps, rtol=0, atol=0)
    assert set(STEP_SCHEDULES) == {"constant", "sqrt", "linear", "inverse"}


def test_last_iterate_without_noise_is_deterministic_gradient_descent():
    p = least_squares_problem(3, noise=0.0, mu=0.25, start=2.0)
    res = last_iterate_gap(p, "constant", [4, 9], runs=3, generator=gen(0), lr=1.0)
    lam = torch.logspace(math.log10(0.25), 0, 3, dtype=F64)
    for T, gap in zip((4, 9), res.gaps):
        x = 2.0 * (1 - lam / math.sqrt(T)) ** T
        assert gap.item() == pytest.approx(0.5 * (lam * x * x).sum().item(), rel=1e-12)
    assert (res.stderr == 0).all()


@pytest.mark.parametrize("schedule, step", [
    ("constant", lambda t, T: 1.0 / math.sqrt(T)),
    ("sqrt", lambda t, T: 1.0 / math.sqrt(t)),
    ("linear", lambda t, T: (T - t + 1) / T**1.5),
    ("inverse", lambda t, T: 1.0 / t)])
def test_last_iterate_named_schedules_are_the_stated_steps(schedule, step):
    """Without noise each coordinate of least squares contracts exactly:
    x_T = x_0 prod_{t<=T} (1 - lambda eta_t), with eta_t written out here; the runs go through
    CSMD's schedules, so a wrong mapping of a name fails here."""
    p = least_squares_problem(3, noise=0.0, mu=0.25, start=2.0)
    res = last_iterate_gap(p, schedule, [4, 9], runs=2, generator=gen(0), lr=0.8)
    lam = torch.logspace(math.log10(0.25), 0, 3, dtype=F64)
    for T, gap in zip((4, 9), res.gaps):
        x = torch.full((3,), 2.0, dtype=F64)
        for t in range(1, T + 1):
            x = x * (1 - lam * 0.8 * step(t, T))
        assert gap.item() == pytest.approx(0.5 * (lam * x * x).sum().item(), rel=1e-12)


@pytest.mark.slow
def test_last_iterate_linear_decay_has_no_log_factor_on_a_nonsmooth_problem(one_thread):
    """Liu & Zhou: on Lipschitz (non-smooth) problems the linear decay lr (T - t + 1)/T^1.5
    gives O(1/sqrt T) with no log T, where lr/sqrt(t) carries log T / sqrt(T) in the bound.
    Measured on ||x||_1 with Gaussian noise (d = 10, sigma = 1, 200 runs), sqrt(T) x gap over
    T = 2^8, 2^10, 2^12, 2^14: linear decay 0.116, 0.0287, 0.00697, 0.00178 (falling like
    1/T: the gap tracks the final step lr/T^1.5, faster than the bound), lr/sqrt(t) 10.23,
    9.92, 9.95, 9.93: flat (lr/sqrt(T) constant: 9.94, 9.90, 10.04, 10.12). The bound's log
    factor would raise the latter by log(2^14)/log(2^8) = 1.75; it does not show on this
    problem (the iterate tracks the equilibrium of its current step, whose width
    ~ eta_T sigma^2 has no log), so the issue's "sqrt_t rises" is not observed
    here; the constructions that show it are worst cases (Harvey et al. 2019: d = T)."""
    horizons = [2**8, 2**10, 2**12, 2**14]
    scaled = {}
    for schedule in ("linear", "sqrt"):
        res = last_iterate_gap("l1", schedule, horizons, runs=200, generator=gen(0))
        scaled[schedule] = res.gaps * res.horizons.sqrt()
    assert (scaled["linear"].diff() < 0).all(), scaled               # never rises
    assert loglog_slope(horizons, scaled["linear"]).slope == pytest.approx(-1.0, abs=0.05)
    assert scaled["sqrt"].max() / scaled["sqrt"].min() < 1.05, scaled  # flat: no log visible


def test_problems():
    p = l1_problem(4, noise=0.3, start=-2.0)
    assert isinstance(p, StochasticProblem)
    assert p.value(p.x0).item() == 8.0 and p.grad(p.x0).tolist() == [-1.0] * 4
    q = least_squares_problem(5)
    assert q.mu == 0.0 and q.smoothness == 1.0
    torch.testing.assert_close(q.grad(torch.ones(5, dtype=F64)),
                               torch.arange(1, 6, dtype=F64).pow(-2.0))


@pytest.mark.parametrize("call, err, match", [
    (lambda: last_iterate_gap("nope", "constant", [1, 2], runs=2, generator=None), ValueError,
     "problem must be"),
    (lambda: last_iterate_gap(3, "constant", [1, 2], runs=2, generator=None), ValueError,
     "problem must be"),
    (lambda: last_iterate_gap("l1", "cosine", [1, 2], runs=2, generator=None), ValueError,
     "schedule must be"),
    (lambda: last_iterate_gap("l1", "constant", [5, 5], runs=2, generator=None), ValueError,
     "at least 2 distinct"),
    (lambda: last_iterate_gap("l1", "constant", [0, 5], runs=2, generator=None), ValueError,
     r"horizons\[0\] must be an integer >= 1"),
    (lambda: last_iterate_gap("l1", "constant", [1, 5], runs=1, generator=None), ValueError,
     "runs must be an integer >= 2"),
    (lambda: last_iterate_gap("l1", "constant", [1, 5], runs=2, lr=0, generator=None),
     ValueError, "lr must be"),
    (lambda: last_iterate_gap("l1", lambda t, T: -t, [1, 5], runs=2, generator=None),
     ValueError, "step sizes >= 0"),
    (lambda: last_iterate_gap("l1", "constant", [1, 5], runs=2, generator=None, seed=1),
     TypeError, "seed"),
    (lambda: last_iterate_gap("l1", "constant", [1, 5], generator=None), TypeError, "runs"),
    (lambda: least_squares_problem(3, mu=2.0), ValueError, r"mu must be in \[0, 1\]"),
    (lambda: l1_problem(0), ValueError, "dim must be an integer >= 1"),
    (lambda: l1_problem(3, noise=-1.0), ValueError, "noise must be"),
    (lambda: l1_problem(3, start=float("nan")), ValueError, "start must be a finite number"),
])
def test_last_iterate_rejects_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_last_iterate_divergence_is_reported():
    p = least_squares_problem(2, noise=0.0, mu=1.0)
    with pytest.raises(FloatingPointError, match="diverged"):
        last_iterate_gap(p, lambda t, T: 3.0 + 0 * t + 0 * T, [2000, 4000], runs=2,
                         generator=gen(0))
