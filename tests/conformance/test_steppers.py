"""The stepper contract, for every stepper in the registry."""

from __future__ import annotations

import math
import re
import statistics

import pytest
import torch

from stochstep import samplers  # noqa: F401  (registers the records)
from stochstep.stepping import Brownian, integrate, uniform
from stochstep.stepping.noise import NoNoise
from stochstep.stepping.registry import algorithms

RECORDS = algorithms("stepper")
IDS = [r.name for r in RECORDS]


def grid_(steps=20, h=2.0**-6):
    return torch.arange(steps + 1, dtype=torch.float64) * h


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_invalid_arguments_raise_naming_them(info):
    for kwargs, exc, text in info.invalid_kwargs:
        with pytest.raises(exc, match=re.escape(text)):
            info.cls(**kwargs)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_declares_its_order(info):
    stepper = info.cls(**info.default_kwargs)
    assert stepper.order > 0
    if info.stochastic:
        assert stepper.strong_order > 0


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_kept_and_input_untouched(info, dtype):
    x0 = torch.randn(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    before = x0.clone()
    x = integrate(info.cls(**info.default_kwargs), x0, grid_(),
                  noise=Brownian(torch.Generator().manual_seed(1)))
    assert x.shape == x0.shape and x.dtype == dtype and torch.isfinite(x).all()
    assert torch.equal(x0, before)


@pytest.mark.parametrize("info", [r for r in RECORDS if r.stochastic], ids=lambda r: r.name)
def test_reproducible_from_a_generator(info):
    x0 = torch.zeros(5, 2)
    run = lambda seed: integrate(info.cls(**info.default_kwargs), x0, grid_(),  # noqa: E731
                                 noise=Brownian(torch.Generator().manual_seed(seed)))
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize("info", [r for r in RECORDS if r.reference is not None],
                         ids=lambda r: r.name)
def test_steps_match_the_hand_computed_reference(info):
    """Three steps computed from the docstring's math with the same seeded noise agree to
    rounding: forward in time, and backward too for the reverse-time steppers."""
    x0 = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = torch.tensor([0.5, 0.75, 0.875, 1.0], dtype=torch.float64)
    grids = [grid, grid.flip(0)] if "reverse_time" in info.supports else [grid]
    for g in grids:
        for kwargs in info.reference_kwargs:
            got = integrate(info.cls(**kwargs), x0, g,
                            noise=Brownian(torch.Generator().manual_seed(7)))
            want = info.reference(x0, g, kwargs, torch.Generator().manual_seed(7))
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("info", [r for r in RECORDS if "adaptive" in r.supports],
                         ids=lambda r: r.name)
def test_adaptive_error_is_below_the_tolerance_and_falls_with_it(info):
    """An error-controlled stepper run over its linear problem in one grid interval: the
    error stays below rtol = atol and falls at least tenfold per hundredfold tighter
    tolerance."""
    tols, errors = (1e-4, 1e-6, 1e-8, 1e-10), []
    for tol in tols:
        stepper, x0, t_start, t_end, exact = info.linear_problem()
        stepper.rtol = stepper.atol = tol
        x = integrate(stepper, x0, [t_start, t_end], noise=NoNoise())
        errors.append((x - exact).abs().max().item())
    assert all(e < tol for e, tol in zip(errors, tols)), errors
    assert all(errors[i + 1] < errors[i] / 10 for i in range(3)), errors


@pytest.mark.parametrize("info", [r for r in RECORDS if r.linear_problem is not None
                                  and "adaptive" not in r.supports], ids=lambda r: r.name)
def test_declared_order_is_measured_on_a_linear_problem(info):
    """Noise-free (for a linear drift: the mean recursion), the error at the end of the
    problem falls as h ** order: the median log-log slope over four grid refinements."""
    errors = []
    for n in (32, 64, 128, 256, 512):
        stepper, x0, t_start, t_end, exact = info.linear_problem()
        x = integrate(stepper, x0, uniform(t_start, t_end, n), noise=NoNoise())
        errors.append((x - exact).abs().max().item())
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(4)]
    assert abs(statistics.median(slopes) - stepper.order) < 0.25, (errors, slopes)


REVERSIBLE = [r for r in RECORDS if "reverse_time" in r.supports]


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_decreasing_grids_run_or_are_refused_by_name(info):
    """A decreasing grid runs time backwards for steppers that support it (reverse-time
    samplers, ODE solvers); the others refuse it with an error that names the grid."""
    x0 = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    grid = torch.flip(grid_(), [0]) + 0.5
    run = lambda: integrate(info.cls(**info.default_kwargs), x0, grid,  # noqa: E731
                            noise=Brownian(torch.Generator().manual_seed(1)))
    if info in REVERSIBLE:
        x = run()
        assert x.shape == x0.shape and torch.isfinite(x).all()
    else:
        with pytest.raises(ValueError, match="grid"):
            run()


# -- bad states ----------------------------------------------------------------------------------
class Doubling:
    """x <- 2 x, and NaN from the ``nan_at``-th step on."""

    order = 1.0

    def __init__(self, nan_at):
        self.nan_at, self.calls = nan_at, 0

    def step_(self, x, t0, t1, noise):
        self.calls += 1
        x.mul_(2.0 if self.calls < self.nan_at else math.nan)


def test_check_finite_names_the_step_and_its_time():
    grid = [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(FloatingPointError, match=r"^Doubling: step 3 of 4 \(t = 1.5\)"):
        integrate(Doubling(3), torch.ones(2), grid, check_finite=True)
    with pytest.raises(FloatingPointError, match=r"^walk: step 1 of 4 \(t = 0.5\)"):
        integrate(Doubling(1), torch.ones(2), grid, check_finite=True, save_every=1, desc="walk")
    with pytest.raises(FloatingPointError, match="x0"):
        integrate(Doubling(9), torch.tensor([1.0, math.inf]), grid, check_finite=True)
    with pytest.raises(ValueError, match="check_finite"):
        integrate(Doubling(9), torch.ones(2), grid, check_finite=1)
    # entries near float32's limit sum to inf, yet are finite: x0 passes, step 1 overflows
    with pytest.raises(FloatingPointError, match=r"^Doubling: step 1 of 4"):
        integrate(Doubling(9), torch.full((4,), 3e38), grid, check_finite=True)
    # off by default, as for the optimizers
    assert torch.isnan(integrate(Doubling(3), torch.ones(2), grid)).all()
    assert torch.equal(integrate(Doubling(9), torch.ones(2), grid, check_finite=True),
                       torch.full((2,), 16.0))


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_check_finite_leaves_a_finite_run_unchanged(info):
    x0 = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    run = lambda check: integrate(info.cls(**info.default_kwargs), x0, grid_(),  # noqa: E731
                                  noise=Brownian(torch.Generator().manual_seed(1)),
                                  check_finite=check)
    assert torch.equal(run(True), run(False))


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_an_integer_state_is_refused_by_name(info):
    with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor, got torch.int64"):
        integrate(info.cls(**info.default_kwargs), torch.zeros(7, 3, dtype=torch.int64),
                  grid_(), noise=Brownian(torch.Generator().manual_seed(1)))
