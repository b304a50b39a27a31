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


@pytest.mark.parametrize("info", [r for r in RECORDS if r.linear_problem is not None],
                         ids=lambda r: r.name)
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
