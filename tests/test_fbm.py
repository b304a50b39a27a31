"""Markov-approximate fractional Brownian motion (Daems et al., arXiv 2310.12975) and the exact
fBM covariances / path sampler used to check it."""

import math
import warnings

import pytest
import torch
from scipy import integrate as quadpack
from scipy.special import gamma as gamma_fn

from stochstep.stepping.integrate import integrate
from stochstep.stepping.noise import (FractionalBrownian, fbm_covariance, fbm_path,
                                      ma_fbm_weights)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def simulate(fbm, times, n_paths, dtype=torch.float64):
    """Paths of the approximate fBM at ``times`` (starting at times[0] = 0), from increments."""
    x = torch.zeros(n_paths, dtype=dtype)
    vals = [torch.zeros_like(x)]
    for t0, t1 in zip(times[:-1], times[1:]):
        vals.append(vals[-1] + fbm.increment(x, t0, t1))
    return torch.stack(vals, 1)


def empirical_check(paths, cov):
    """Max |empirical - exact| second moment, in standard errors (zero-mean Gaussian paths)."""
    n = paths.shape[0]
    emp = paths.T @ paths / n
    d = cov.diagonal()
    se = ((d[:, None] * d[None, :] + cov ** 2) / n).sqrt().clamp_min(1e-300)
    keep = d > 0
    z = ((emp - cov).abs() / se)[keep][:, keep]
    return float(z.max()), emp


# ----------------------------------------------------------------------------------- weights

@pytest.mark.parametrize("hurst, expected", [(0.2, 4.7e-2), (0.7, 1.3e-4)])
def test_optimal_weights_reproduce_reported_relative_error(hurst, expected):
    fbm = FractionalBrownian(hurst, K=5, gamma_max=20.0, T=1.0, generator=gen())
    assert fbm.relative_error == pytest.approx(expected, rel=0.05)
    assert fbm.weights.dtype == torch.float64 and fbm.weights.shape == (5,)


def test_gamma_grid_and_condition_numbers():
    fbm = FractionalBrownian(0.3, K=5, gamma_max=20.0, generator=gen())
    assert torch.allclose(fbm.gammas[[0, -1]], torch.tensor([1 / 20, 20.0], dtype=torch.float64))
    assert torch.allclose(fbm.gammas[2], torch.tensor(1.0, dtype=torch.float64))
    # the spec's cond(A) at gamma_max 20: 2e4 (K 4), 8e6 (K 5), 5e9 (K 6)
    for K, cond in [(4, 2e4), (5, 8e6), (6, 5e9)]:
        c = FractionalBrownian(0.3, K=K, generator=gen()).condition_number
        assert 0.5 < math.log10(c) - math.log10(cond) + 0.5 < 1.0
    one = FractionalBrownian(0.3, K=1, generator=gen())
    assert one.gammas.tolist() == [1.0]


@pytest.mark.parametrize("hurst", [0.1, 0.2, 0.25, 0.5, 0.7, 0.75, 0.9])
def test_relative_error_decreases_with_K(hurst):
    errs = [FractionalBrownian(hurst, K=K, generator=gen()).relative_error for K in range(1, 7)]
    assert all(0 <= e < 1 for e in errs)
    # The geometric grids for K and K + 1 are not nested, so monotonicity is not guaranteed:
    # at H = 0.9 the error goes 5.901e-5 (K 4) -> 5.913e-5 (K 5). Allow 1% either way.
    assert all(b < 1.01 * a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.75 * errs[0] and errs[3] < errs[1]


def test_weights_match_an_independent_quadrature_of_the_normal_equations():
    """A_ij = int_0^T Cov(Y_i, Y_j) dt, b_k = int_0^T Cov(B_H, Y_k) dt, c = int_0^T Var B_H dt."""
    hurst, T, a = 0.3, 2.0, 0.8
    g = [0.1, 1.0, 10.0]
    A = torch.tensor([[quadpack.quad(lambda t, s=gi + gj: -math.expm1(-s * t) / s, 0, T)[0]
                       for gj in g] for gi in g], dtype=torch.float64)
    # Cov(B_H(t), Y_k(t)) = int_0^t u^(a-1) e^(-g u) du / Gamma(a); swap the order of integration
    b = torch.tensor([quadpack.quad(lambda u, gk=gk: math.exp(-gk * u) * (T - u), 0, T,
                                    weight="alg", wvar=(a - 1, 0))[0] / gamma_fn(a) for gk in g],
                     dtype=torch.float64)
    c = quadpack.quad(lambda t: t ** (2 * hurst), 0, T)[0] / (2 * hurst * gamma_fn(a) ** 2)
    w_ref = torch.linalg.solve(A, b)
    w, err, _ = ma_fbm_weights(hurst, torch.tensor(g), T=T)
    assert torch.allclose(w, w_ref, rtol=1e-7)
    assert err == pytest.approx(1 - float(b @ w_ref) / c, rel=1e-6)


def test_ill_conditioned_weight_system_is_guarded():
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        FractionalBrownian(0.3, K=7, generator=gen())
    with pytest.raises(ValueError, match="K"):
        FractionalBrownian(0.3, K=8, generator=gen())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FractionalBrownian(0.3, K=6, generator=gen())  # cond 5e9: no warning


# --------------------------------------------------------------------- exact fBM references

@pytest.mark.parametrize("hurst", [0.05, 0.25, 0.75, 0.95])
def test_type_two_covariance_matches_quadrature(hurst):
    a = hurst + 0.5
    times = [0.0, 0.2, 0.7, 0.71, 1.5]
    cov = fbm_covariance(hurst, times, kind="II")
    for i, s in enumerate(times):
        for j, t in enumerate(times):
            lo, hi = min(s, t), max(s, t)
            if lo == 0:
                ref = 0.0
            elif lo == hi:
                ref = lo ** (2 * hurst) / (2 * hurst)
            else:
                ref = quadpack.quad(lambda u, hi=hi: (hi - u) ** (a - 1), 0, lo, weight="alg",
                                    wvar=(0, a - 1), epsabs=1e-13, epsrel=1e-11)[0]
            assert float(cov[i, j]) == pytest.approx(ref / gamma_fn(a) ** 2, rel=1e-8, abs=1e-14)
    assert torch.equal(cov, cov.T)


def test_covariance_types_agree_only_at_one_half():
    times = [0.25, 0.5, 1.0]
    mins = torch.tensor([[min(s, t) for t in times] for s in times], dtype=torch.float64)
    assert torch.allclose(fbm_covariance(0.5, times, kind="I"), mins)
    assert torch.allclose(fbm_covariance(0.5, times, kind="II"), mins)
    for h in (0.25, 0.75):
        one, two = fbm_covariance(h, times, kind="I"), fbm_covariance(h, times, kind="II")
        assert torch.allclose(one.diagonal(), torch.tensor(times, dtype=torch.float64) ** (2 * h))
        assert (one - two).abs().max() > 0.05


@pytest.mark.parametrize("kind", ["I", "II"])
def test_exact_path_sampler_has_the_exact_covariance(kind):
    times = [0.0, 0.1, 0.3, 0.6, 1.0]
    paths = fbm_path(0.3, times, 40_000, gen(1), kind=kind)
    assert paths.shape == (40_000, 5) and paths.dtype == torch.float64
    assert torch.all(paths[:, 0] == 0)
    z, _ = empirical_check(paths, fbm_covariance(0.3, times, kind=kind))
    assert z < 5
    assert torch.equal(paths, fbm_path(0.3, times, 40_000, gen(1), kind=kind))


# ------------------------------------------------------------------------- the MA-fBM noise

def test_ma_fbm_covariance_is_exact_on_a_coarse_uneven_grid():
    """Exact OU transitions: the law at the grid times does not depend on the step sizes."""
    times = [0.0, 0.05, 0.4, 0.45, 1.0, 1.6]
    fbm = FractionalBrownian(0.25, K=5, generator=gen(2))
    paths = simulate(fbm, times, 200_000)
    z, _ = empirical_check(paths, fbm.covariance(times))
    assert z < 5


@pytest.mark.parametrize("hurst, approx_bound", [(0.25, 0.03), (0.75, 0.003)])
def test_ma_fbm_is_close_to_type_two_fbm(hurst, approx_bound):
    # Measured (K = 5, gamma_max = 20, T = 1, grid step 0.1): max |Cov_MA - Cov_II| is
    # 2.8e-2 at H = 0.25 (Var B_II(1) = 1.33) and 1.9e-3 at H = 0.75 (Var B_II(1) = 0.81).
    times = [k / 10 for k in range(11)]
    fbm = FractionalBrownian(hurst, K=5, generator=gen(3))
    exact, approx = fbm_covariance(hurst, times, kind="II"), fbm.covariance(times)
    gap = float((approx - exact).abs().max())
    assert gap < approx_bound
    paths = simulate(fbm, times, 100_000)
    z, emp = empirical_check(paths, approx)
    assert z < 5
    mc = 5 * float(exact.diagonal().max()) * math.sqrt(2 / 100_000)
    assert float((emp - exact).abs().max()) < gap + mc
    # and the approximation is far better than plain Brownian motion (H = 1/2)
    assert gap < 0.2 * float((fbm_covariance(0.5, times, kind="II") - exact).abs().max())


def test_one_half_approximates_brownian_motion():
    fbm = FractionalBrownian(0.5, K=5, generator=gen(4))
    assert fbm.relative_error < 1e-9
    times = [k / 8 for k in range(9)]
    mins = torch.tensor([[min(s, t) for t in times] for s in times], dtype=torch.float64)
    assert torch.allclose(fbm.covariance(times), mins, atol=1e-5)
    # the driving Brownian increments are drawn jointly: the path follows W itself
    x = torch.zeros(1000, dtype=torch.float64)
    b = w = torch.zeros_like(x)
    for t0, t1 in zip(times[:-1], times[1:]):
        b = b + fbm.increment(x, t0, t1)
        w = w + fbm.state(x).dw
    assert float((b - w).abs().max()) < 1e-2
    assert float(w.var()) == pytest.approx(1.0, rel=0.15)


def test_increments_sum_to_the_path_value():
    fbm = FractionalBrownian(0.3, K=4, generator=gen(5))
    x = torch.zeros(2, 3, dtype=torch.float64)
    times = torch.linspace(0, 1, 17).tolist()
    total = torch.zeros_like(x)
    for t0, t1 in zip(times[:-1], times[1:]):
        total += fbm.increment(x, t0, t1)
    st = fbm.state(x)
    assert st.t == pytest.approx(1.0) and st.ou.shape == (4, 2, 3)
    value = torch.einsum("k,k...->...", fbm.weights, st.ou)  # B_H(1) = sum_k w_k Y_k(1)
    assert torch.allclose(total, value, atol=1e-12)


def test_drives_a_stepper_through_integrate():
    class AdditiveEuler:
        """dX = -X dt + dB_H (a fractional OU process); exact in the noise."""
        order = 1.0
        strong_order = 1.0

        def step_(self, x, t0, t1, noise):
            x.add_(x * -(t1 - t0) + noise.increment(x, t0, t1))

    grid = torch.linspace(0, 1, 11)
    x0 = torch.zeros(5)
    a = integrate(AdditiveEuler(), x0, grid, noise=FractionalBrownian(0.7, generator=gen(6)))
    b = integrate(AdditiveEuler(), x0, grid, noise=FractionalBrownian(0.7, generator=gen(6)))
    assert torch.equal(a, b) and a.dtype == torch.float32
    fbm = FractionalBrownian(0.7, generator=gen(6))
    integrate(AdditiveEuler(), x0, grid, noise=fbm)
    with pytest.raises(ValueError, match="reset"):  # a second run without reset
        integrate(AdditiveEuler(), x0, grid, noise=fbm)
    fbm.reset()
    integrate(AdditiveEuler(), x0, grid.flip(0), noise=fbm)  # reverse time: clock runs |dt|
    assert fbm.state(x0).t == pytest.approx(1.0)


def test_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    x = torch.zeros(4)
    runs = []
    for seed in (7, 7, 8):
        fbm = FractionalBrownian(0.25, generator=gen(seed))
        runs.append(torch.stack([fbm.increment(x, k / 4, (k + 1) / 4) for k in range(4)]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="increment"):  # never silently white noise
        FractionalBrownian(0.25, generator=gen(7)).standard_normal(x)


def test_path_state_per_shape_contiguity_and_reset():
    fbm = FractionalBrownian(0.6, K=3, generator=gen(9))
    a, b = torch.zeros(3), torch.zeros(2, 2)
    fbm.increment(a, 0.0, 0.1)
    fbm.increment(b, 5.0, 5.5)  # another shape: its own path and clock
    assert fbm.state(a).t == pytest.approx(0.1) and fbm.state(b).t == pytest.approx(0.5)
    with pytest.raises(ValueError, match="contiguous"):
        fbm.increment(a, 0.0, 0.1)  # the same interval twice
    assert torch.equal(fbm.increment(a, 0.1, 0.1), torch.zeros(3))  # h = 0: no change
    fbm.reset(a)
    assert fbm.state(a) is None and fbm.state(b) is not None
    fbm.increment(a, 0.0, 0.1)
    fbm.reset()
    assert fbm.state(a) is None and fbm.state(b) is None
    assert fbm.increment(torch.zeros(3, dtype=torch.complex64), 0, 1).shape == (3, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hurst=0.0), "hurst"), (dict(hurst=1.0), "hurst"), (dict(hurst=-0.2), "hurst"),
    (dict(hurst=1.5), "hurst"), (dict(hurst=True), "hurst"), (dict(hurst="0.5"), "hurst"),
    (dict(hurst=0.5, K=0), "K"), (dict(hurst=0.5, K=2.0), "K"), (dict(hurst=0.5, K=True), "K"),
    (dict(hurst=0.5, gamma_max=1.0), "gamma_max"), (dict(hurst=0.5, gamma_max=-3), "gamma_max"),
    (dict(hurst=0.5, T=0.0), "T"), (dict(hurst=0.5, T=math.inf), "T"),
    (dict(hurst=0.5, generator=0), "generator"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FractionalBrownian(**kwargs)


def test_bad_arguments_of_the_exact_references():
    with pytest.raises(ValueError, match="hurst"):
        fbm_covariance(1.2, [0.5])
    with pytest.raises(ValueError, match="kind"):
        fbm_covariance(0.5, [0.5], kind="III")
    with pytest.raises(ValueError, match="times"):
        fbm_covariance(0.5, [-0.5, 1.0])
    with pytest.raises(ValueError, match="n_paths"):
        fbm_path(0.5, [0.5], 0, gen())
    fbm = FractionalBrownian(0.5, generator=gen())
    with pytest.raises(ValueError, match="x"):
        fbm.increment([0.0], 0.0, 1.0)
    with pytest.raises(ValueError, match="floating"):
        fbm.increment(torch.zeros(2, dtype=torch.long), 0.0, 1.0)


def test_euler_maruyama_is_driven_by_the_noise_sources_increments():
    """Any SDE stepper that takes noise.increment runs on fractional noise unchanged: the
    forward VE SDE (zero drift) moves by exactly g(t0) * (B_H(t1) - B_H(t0)) per step."""
    from stochstep.samplers.score_sde import EulerMaruyama
    from stochstep.samplers.sde import VESDE
    from stochstep.stepping import integrate, uniform

    sde, grid = VESDE(), uniform(0.0, 1.0, 16)
    x0 = torch.zeros(64, 3, dtype=torch.float64)
    x = integrate(EulerMaruyama(sde, lambda x, t: -x), x0, grid,
                  noise=FractionalBrownian(0.7, generator=torch.Generator().manual_seed(3)))
    twin = FractionalBrownian(0.7, generator=torch.Generator().manual_seed(3))
    times = grid.tolist()
    expected = x0.clone()
    for t0, t1 in zip(times[:-1], times[1:]):
        expected += float(sde.diffusion(t0)) * twin.increment(x0, t0, t1)
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
