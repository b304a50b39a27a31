"""SEA instances, regret, and the optimistic-OMD regret claims (theory_checks.online)."""

import math

import pytest
import torch

from stochstep.theory_checks.online import (SEAInstance, ogd_does_not_adapt, play_ogd,
                                            play_optimistic_omd, regret, sea_quadratic,
                                            sea_regret_scaling)

pytestmark = pytest.mark.usefixtures("one_thread")  # many small tensor ops
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def total_loss(sea, x):
    """sum_t f_t(x) for a fixed x of shape (runs, d), from the definition (constants kept)."""
    diff = x[:, None, :] - sea.centres
    return (0.5 * diff.pow(2).sum(-1) + (sea.noise * x[:, None, :]).sum(-1)).sum(1)


def played_loss(sea, plays):
    """sum_t f_t(x_t), from the definition."""
    return (0.5 * (plays - sea.centres).pow(2).sum(-1) + (sea.noise * plays).sum(-1)).sum(1)


# ================================================================================ instances

def test_fixed_centre_instance_is_exact():
    sea = sea_quadratic(7, dim=3, runs=4, radius=2.0, noise=0.5, generator=gen(0))
    assert isinstance(sea, SEAInstance)
    assert (sea.runs, sea.horizon, sea.dim) == (4, 7, 3)
    c1 = sea.centres[:, 0]
    torch.testing.assert_close(torch.linalg.vector_norm(c1, dim=1), torch.full((4,), 1.0,
                                                                               dtype=F64))
    assert (sea.centres == c1[:, None]).all()
    assert sea.stochastic_variance == pytest.approx(7 * 3 * 0.25, rel=1e-15)
    # sup_{||x|| <= 2} ||x - c_1||^2 = (2 + 1)^2 in the first round, then nothing moves
    torch.testing.assert_close(sea.adversarial_variation, torch.full((4,), 9.0, dtype=F64))
    assert (sea.path_variation == 0).all()


def test_switching_centres_alternate_every_period():
    sea = sea_quadratic(10, dim=2, runs=3, radius=1.0, drift="switching", period=3,
                        generator=gen(1))
    c1 = sea.centres[:, 0]
    signs = [1, 1, 1, -1, -1, -1, 1, 1, 1, -1]
    for t, s in enumerate(signs):
        torch.testing.assert_close(sea.centres[:, t], s * c1, rtol=0, atol=0)
    # 3 switches of ||2 c_1||^2 = 4 (1/2)^2 = 1 each; first round (1 + 1/2)^2
    torch.testing.assert_close(sea.path_variation, torch.full((3,), 3.0, dtype=F64))
    torch.testing.assert_close(sea.adversarial_variation, torch.full((3,), 3.0 + 2.25,
                                                                     dtype=F64))
    assert sea.stochastic_variance == 0.0 and (sea.noise == 0).all()


def test_random_walk_stays_in_the_ball_and_its_variation_is_summed_exactly():
    sea = sea_quadratic(400, dim=2, runs=5, radius=1.0, drift="random_walk", walk_step=0.2,
                        generator=gen(2))
    norms = torch.linalg.vector_norm(sea.centres, dim=-1)
    assert norms.max() <= 1.0 + 1e-12 and (norms > 0.999).any()    # the walk hits the wall
    by_hand = sum(((sea.centres[:, t] - sea.centres[:, t - 1]) ** 2).sum(-1)
                  for t in range(1, 400))
    torch.testing.assert_close(sea.path_variation, by_hand)
    first = (1.0 + norms[:, 0]) ** 2
    torch.testing.assert_close(sea.adversarial_variation, first + by_hand)
    # a walk that stays clear of the wall takes N(0, delta^2 I) steps: E||step||^2 = d delta^2
    calm = sea_quadratic(400, dim=2, runs=5, drift="random_walk", walk_step=0.01,
                         generator=gen(2))
    assert torch.linalg.vector_norm(calm.centres, dim=-1).max() < 0.99
    assert calm.path_variation.mean().item() / 399 == pytest.approx(2e-4, rel=0.05)


def test_noise_has_the_stated_variance_and_the_generator_decides_everything():
    sea = sea_quadratic(2000, dim=4, runs=8, noise=0.3, generator=gen(3))
    assert sea.noise.var().item() == pytest.approx(0.09, rel=0.03)
    again = sea_quadratic(2000, dim=4, runs=8, noise=0.3, generator=gen(3))
    assert torch.equal(sea.noise, again.noise) and torch.equal(sea.centres, again.centres)
    x = torch.randn(8, 4, generator=gen(4), dtype=F64)
    torch.testing.assert_close(sea.grad(5, x), x - sea.centres[:, 5] + sea.noise[:, 5])


# =================================================================================== regret

@pytest.mark.parametrize("noise, radius", [(0.0, 1.0), (2.0, 1.0), (2.0, 0.1)])
def test_regret_comparator_is_the_best_point_in_hindsight(noise, radius):
    """The closed form against the definition: regret = sum f_t(x_t) - sum f_t(x*) with every
    constant kept, and no point of the ball (random ones, the centre's projection, points
    near x*) does better than x*. radius 0.1 puts x* on the boundary."""
    sea = sea_quadratic(30, dim=3, runs=6, radius=radius, noise=noise, generator=gen(5))
    plays = 0.3 * radius * torch.randn(6, 30, 3, generator=gen(6), dtype=F64).tanh()
    r = regret(sea, plays)
    mean = (sea.centres - sea.noise).mean(1)
    best = mean * torch.clamp(radius / torch.linalg.vector_norm(mean, dim=1, keepdim=True),
                              max=1.0)
    torch.testing.assert_close(r, played_loss(sea, plays) - total_loss(sea, best))
    for k in range(200):
        y = torch.randn(6, 3, generator=gen(100 + k), dtype=F64)
        y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True) * radius * (k % 10 + 1) / 10
        assert (total_loss(sea, y) >= total_loss(sea, best) - 1e-9).all()
        near = best + 1e-3 * y
        near = near * torch.clamp(radius / torch.linalg.vector_norm(near, dim=1,
                                                                    keepdim=True), max=1.0)
        assert (total_loss(sea, near) >= total_loss(sea, best) - 1e-9).all()


def test_regret_of_the_hindsight_point_itself_is_zero_and_cumulative_matches_prefixes():
    sea = sea_quadratic(12, dim=2, runs=3, noise=0.7, drift="switching", period=4,
                        generator=gen(7))
    plays = torch.randn(3, 12, 2, generator=gen(8), dtype=F64) * 0.5
    curve = regret(sea, plays, cumulative=True)
    assert curve.shape == (3, 12)
    torch.testing.assert_close(curve[:, -1], regret(sea, plays))
    for t in (1, 5, 11):
        prefix = SEAInstance(sea.centres[:, :t], sea.noise[:, :t], sea.radius, sea.noise_std,
                             0.0, sea.adversarial_variation)
        torch.testing.assert_close(curve[:, t - 1], regret(prefix, plays[:, :t]))
    mean = (sea.centres - sea.noise).mean(1)
    best = mean * torch.clamp(1.0 / torch.linalg.vector_norm(mean, dim=1, keepdim=True),
                              max=1.0)
    zero = regret(sea, best[:, None].expand(3, 12, 2))
    torch.testing.assert_close(zero, torch.zeros(3, dtype=F64), atol=1e-12, rtol=0)


# ================================================================================ learners

def test_ogd_takes_the_stated_steps():
    sea = sea_quadratic(4, dim=2, runs=2, radius=1.0, noise=1.0, generator=gen(9))
    plays = play_ogd(sea, lr=0.7)
    x = torch.zeros(2, 2, dtype=F64)
    for t in range(4):
        torch.testing.assert_close(plays[:, t], x, rtol=0, atol=1e-15)
        g = x - sea.centres[:, t] + sea.noise[:, t]
        y = x - 0.7 / math.sqrt(t + 1) * g
        n = torch.linalg.vector_norm(y, dim=1, keepdim=True)
        x = torch.where(n > 1.0, y / n, y)
    start = torch.tensor([3.0, 4.0], dtype=F64)
    torch.testing.assert_close(play_ogd(sea, lr=0.7, start=start)[:, 0],
                               torch.tensor([[0.6, 0.8]] * 2, dtype=F64))


def omd_reference(sea, diameter, grad_bound, delta=1.0):
    """Optimistic OMD on the ball written out from the issue's update, all runs batched:
    x_hat_{t+1} = Pi(x_hat_t - eta_t g_t), V_t = V_{t-1} + ||g_t - M_t||^2, M_{t+1} = g_t,
    x_{t+1} = Pi(x_hat_{t+1} - eta_{t+1} M_{t+1}), eta_t = D / sqrt(delta + 4 G^2 + V_{t-1})."""
    def project(y):
        n = torch.linalg.vector_norm(y, dim=1, keepdim=True)
        return torch.where(n > sea.radius, y * sea.radius / n, y)

    x_hat = torch.zeros(sea.runs, sea.dim, dtype=F64)
    x, hint = x_hat.clone(), torch.zeros_like(x_hat)
    v = torch.zeros(sea.runs, 1, dtype=F64)
    plays = torch.empty_like(sea.centres)
    for t in range(sea.horizon):
        plays[:, t] = x
        g = x - sea.centres[:, t] + sea.noise[:, t]
        x_hat = project(x_hat - diameter / (delta + 4 * grad_bound**2 + v).sqrt() * g)
        v = v + (g - hint).pow(2).sum(1, keepdim=True)
        hint = g
        x = project(x_hat - diameter / (delta + 4 * grad_bound**2 + v).sqrt() * hint)
    return plays


@pytest.mark.parametrize("radius, noise, drift, period", [(1.0, 0.3, "fixed", None),
                                                          (0.3, 1.0, "switching", 2)])
def test_optimistic_omd_through_the_optimizer_api_is_the_stated_update(radius, noise, drift,
                                                                       period):
    """The optimizer (one param group per run, rows of one tensor) against the update written
    out; radius 0.3 with noise 1 keeps both projections active most rounds."""
    sea = sea_quadratic(40, dim=3, runs=3, radius=radius, noise=noise, drift=drift,
                        period=period, generator=gen(10))
    plays = play_optimistic_omd(sea)
    torch.testing.assert_close(plays, omd_reference(sea, 2 * radius, 2 * radius), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(play_optimistic_omd(sea, diameter=0.5, grad_bound=3.0,
                                                   delta=2.0),
                               omd_reference(sea, 0.5, 3.0, 2.0), rtol=0, atol=1e-12)
    assert (torch.linalg.vector_norm(plays, dim=-1) <= radius + 1e-12).all()


# ================================================================================== claims

def test_without_noise_and_drift_the_regret_stays_bounded_in_t():
    """Sigma^2_{1:T} = (R + ||c||)^2 for every T and sigma = 0: the bound is O(1), and the
    measured regret at T = 1e4 equals that at T = 1e3 (the iterates have converged to c).
    OGD with eta_1 = 1 lands on c at once, so its regret is f_1(0) - f_1(c) = ||c||^2/2 =
    R^2/8 whatever T: on this curved family OGD's sqrt(T) worst case does not show either."""
    regrets = {}
    for T in (1000, 10000):
        sea = sea_quadratic(T, dim=5, runs=1, generator=gen(11))
        regrets[T] = (regret(sea, play_optimistic_omd(sea)).item(),
                      regret(sea, play_ogd(sea, lr=1.0)).item())
    assert regrets[1000][0] == pytest.approx(regrets[10000][0], abs=1e-9)
    assert 0.1 < regrets[10000][0] < 0.2                  # measured 0.16343
    assert regrets[1000][1] == pytest.approx(0.125, abs=1e-12)
    assert regrets[10000][1] == pytest.approx(0.125, abs=1e-12)


SMALL_SWEEP = [(300, 0.1, "fixed", None), (300, 0.3, "fixed", None), (300, 1.0, "fixed", None),
               (100, 0.0, "switching", 1), (400, 0.0, "switching", 1)]


def test_regret_tracks_the_sea_bound_with_slope_one():
    """Chen et al.: E R_T = O(sqrt(sigma^2_{1:T}) + sqrt(Sigma^2_{1:T})). Over a sweep from
    noise on a fixed centre to centres that switch every round, the log-log slope of OMD's
    mean regret against the bound is 1 (measured 1.06-1.15 over seeds 0-3, 4 runs; the
    full sweep of the report: see docs), asserted in the issue's 0.8..1.2; the ratio regret /
    bound stays within a factor 3 across the sweep. OGD on the same instances: slope 1.89-2.03."""
    res = sea_regret_scaling(SMALL_SWEEP, runs=4, generator=gen(0))
    assert 0.8 < res.slope < 1.2, res
    ratio = res.regrets / res.bounds
    assert ratio.max() / ratio.min() < 3 and (ratio < 2).all()
    ogd = sea_regret_scaling(SMALL_SWEEP, learner="ogd", runs=4, generator=gen(0))
    assert ogd.slope > 1.6, ogd
    assert res.seconds > 0 and ogd.points == res.points


def test_ogd_does_not_adapt_to_the_noise_level():
    """Fixed centre, T = 300, s = 0.1..3: OMD's regret grows like s (slope 1.03-1.08 against
    the bound over seeds 0-2), OGD's like s^2 (slope 1.72-1.85), and at s = 3 OGD's regret is
    1.5-1.8x OMD's."""
    res = ogd_does_not_adapt((0.1, 0.3, 1.0, 3.0), horizon=300, horizons=(100, 300), runs=4,
                             generator=gen(0))
    assert 0.8 < res.omd.slope < 1.2 and res.ogd.slope > 1.6, (res.omd.slope, res.ogd.slope)
    assert res.ogd.regrets[-1] > 1.3 * res.omd.regrets[-1]
    assert res.ogd.regrets[0] < res.omd.regrets[0]        # at small noise OGD is ahead
    torch.testing.assert_close(res.ogd_noiseless, torch.full((2,), 0.125, dtype=F64))


# ============================================================================== bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(horizon=0), "horizon must be an integer >= 1"),
    (dict(dim=0), "dim must be an integer >= 1"),
    (dict(runs=0), "runs must be an integer >= 1"),
    (dict(radius=0.0), "radius must be a finite number > 0"),
    (dict(noise=-0.1), "noise must be a finite number >= 0"),
    (dict(noise=float("nan")), "noise must be a finite number >= 0"),
    (dict(drift="sine"), "drift must be one of"),
    (dict(drift="switching"), "period is required"),
    (dict(drift="switching", period=0), "period must be an integer >= 1"),
    (dict(period=3), "period is for drift='switching' only"),
    (dict(walk_step=0.1), "walk_step is for drift='random_walk' only"),
    (dict(drift="random_walk", walk_step=-1.0), "walk_step must be a finite number >= 0"),
    (dict(generator=1), "generator must be a torch.Generator"),
])
def test_sea_quadratic_rejects_bad_input(kwargs, match):
    args = dict(horizon=5) | kwargs
    with pytest.raises(ValueError, match=match):
        sea_quadratic(args.pop("horizon"), **args)


def test_bad_input_elsewhere():
    sea = sea_quadratic(5, dim=2, runs=2, generator=gen(0))
    with pytest.raises(TypeError, match="seed"):
        sea_quadratic(5, seed=1)
    with pytest.raises(ValueError, match=r"plays must be a tensor of shape \(2, 5, 2\)"):
        regret(sea, torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="plays must be a tensor"):
        regret(sea, [[0.0]])
    with pytest.raises(ValueError, match="instance must be an SEAInstance"):
        regret(sea.centres, sea.centres)
    with pytest.raises(ValueError, match="plays must hold finite numbers"):
        regret(sea, torch.full((2, 5, 2), math.nan))
    with pytest.raises(ValueError, match="start must hold finite numbers"):
        play_ogd(sea, lr=1.0, start=torch.tensor([0.0, math.inf]))
    with pytest.raises(ValueError, match="cumulative must be True or False"):
        regret(sea, sea.centres, cumulative=1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        play_ogd(sea, lr=0.0)
    with pytest.raises(ValueError, match=r"start must have shape \(2,\) or \(2, 2\)"):
        play_ogd(sea, lr=1.0, start=torch.zeros(3))
    with pytest.raises(ValueError, match="learner must be"):
        sea_regret_scaling(learner="adam")
    with pytest.raises(ValueError, match="points must hold at least 2"):
        sea_regret_scaling([(10, 0.1, "fixed", None)], learner="ogd", generator=gen(0))
    with pytest.raises(ValueError, match="a mean regret is not > 0"):
        sea_regret_scaling([(400, 0.0, "switching", 100), (800, 0.0, "switching", 100)],
                           learner="ogd", runs=2, generator=gen(0))
    with pytest.raises(ValueError, match=r"noises\[1\] must be a finite number > 0"):
        ogd_does_not_adapt((0.1, 0.0))
    with pytest.raises(ValueError, match="progress must be True or False"):
        play_optimistic_omd(sea, progress=None)
