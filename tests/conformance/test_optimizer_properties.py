"""The theory properties each registry optimizer promises, run on it with its default arguments.

A record lists them in ``supports`` (see ``stepping.registry.AlgorithmInfo``):
``"scale_invariant"``, ``"scale_proportional"``, ``"rotation_equivariant"``,
``"translation_equivariant"``, ``"first_step_bounded"`` (deterministic, on fixed quadratics and
a logistic regression) and ``"noise_ball"`` (stochastic: the exact stationary second moment on
a noisy quadratic, and the exact law of the chain on a Gaussian target, which is what sees the
optimizer's own noise at the records' small default temperatures). Nothing here names an
algorithm.
"""

from __future__ import annotations

import pytest
import torch

from stochstep import optimizers  # noqa: F401  (registers the records)
from stochstep.stepping.registry import algorithms
from stochstep.theory_checks.properties import assert_invariant
from stochstep.theory_checks.stochastic import assert_noise_ball, assert_stationary_law
from stochstep.theory_checks.strategies import (logistic_problem, noisy_quadratic_problem,
                                                quadratic_problem)
from test_optimizers import make

INVARIANCES = {   # supports token -> (transform, expect)
    "scale_invariant": ("scale", "invariant"),
    "scale_proportional": ("scale", "proportional"),
    "rotation_equivariant": ("rotation", "equivariant"),
    "translation_equivariant": ("translation", "equivariant"),
    "first_step_bounded": ("first_step", "bounded"),
}
PROBLEMS = [quadratic_problem(dim=5, condition=10.0, seed=3),
            quadratic_problem(dim=3, condition=100.0, mu=0.1, seed=4),
            logistic_problem(n=20, dim=3, reg=0.1, seed=5)]
CASES = [pytest.param(info, token, id=f"{info.name}-{token}")
         for info in algorithms("optimizer") for token in sorted(info.supports)
         if token in INVARIANCES]
NOISY = [pytest.param(info, id=info.name) for info in algorithms("optimizer")
         if "noise_ball" in info.supports]


def test_records_promise_properties():
    assert len(CASES) >= 10 and len(NOISY) >= 2


@pytest.mark.parametrize("info, token", CASES)
@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_promised_invariance_holds(info, token, problem):
    transform, expect = INVARIANCES[token]
    assert_invariant(lambda params: make(info, params), problem, transform, expect=expect)


@pytest.mark.parametrize("info", NOISY)
@pytest.mark.parametrize("seed", [0, 1])
def test_noise_ball_is_the_exact_one(info, seed):
    problem = noisy_quadratic_problem(dim=3, condition=5.0, noise=0.5, seed=seed)
    # many runs: at lr 0.01 a run mixes slowly and its mean is skewed (few effective samples)
    assert_noise_ball(lambda params: make(info, params), problem, runs=400, steps=600)


@pytest.mark.parametrize("info", NOISY)
def test_stationary_law_on_a_gaussian_target_is_the_exact_one(info):
    # exact gradients: the chain's own noise alone makes its law (mean and covariance)
    problem = noisy_quadratic_problem(dim=3, condition=5.0, noise=0.0, seed=2)
    assert_stationary_law(lambda params: make(info, params), problem, runs=400, steps=600)
