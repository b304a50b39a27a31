"""What a user writes to test an optimizer with stochstep's property checks.

The strategies (:mod:`theory_checks.strategies`) draw problems with known answers, the checks
(:mod:`theory_checks.properties`) measure rates, and the ``quadratic_problem`` fixture comes
from the pytest plugin that installing stochstep registers (:mod:`theory_checks.pytest_plugin`).
"""

import torch
from hypothesis import given, settings

from stochstep.optimizers import DiffGrad
from stochstep.theory_checks.properties import assert_converges, assert_linear_rate
from stochstep.theory_checks.strategies import quadratics


@settings(deadline=None)  # torch's first steps are slow; the example count is the profile's
@given(quadratics(dims=(2, 6), conditions=(1.0, 50.0)))
def test_sgd_converges_linearly(problem):
    assert_linear_rate(lambda params: torch.optim.SGD(params, lr=1 / problem.L), problem,
                       rate=1 - problem.mu / problem.L, steps=50)


def test_diffgrad_converges(quadratic_problem):
    assert_converges(lambda params: DiffGrad(params, lr=0.1), quadratic_problem, steps=300,
                     tol=1e-2)
