"""pytest plugin: fixtures with known answers and hypothesis profiles for convergence tests.

Installed with the package, pytest loads it through the ``pytest11`` entry point ``stochstep``
(disable with ``-p no:stochstep``).

Fixtures:

- ``torch_generator``: a ``torch.Generator`` seeded from the test's node id (each test its own
  reproducible stream, independent of test order and of the global RNG).
- ``quadratic_problem``: parametrized over three fixed quadratics (``kappa`` 1, 10, 100; see
  :func:`theory_checks.strategies.quadratic_problem`).
- ``laplacian_problem``: parametrized over two grounded Laplacians (a tree and a denser graph).
- ``logistic_problem``: parametrized over regularized logistic regression, non-separable and
  separable.

Hypothesis rejects function-scoped fixtures in ``@given`` tests (health check
``function_scoped_fixture``): property tests draw problems from :mod:`theory_checks.strategies`.

Hypothesis profiles (registered on import; select with ``--hypothesis-profile=NAME`` or the
environment variable ``STOCHSTEP_HYPOTHESIS_PROFILE=NAME``, the option winning):

- ``stochstep-default``: hypothesis's defaults (100 examples, randomized) but no deadline;
- ``stochstep-dev``: 10 examples, randomized, example database on, no deadline;
- ``stochstep-ci``: 30 examples, derandomized, no database, no deadline, ``too_slow`` health
  check off, reproduction blobs printed.

Hypothesis's default deadline (200 ms per example) fails correct optimizer tests: a property
runs hundreds of optimizer steps, and torch's first calls are slow. So when nobody has chosen
a profile, the plugin loads ``stochstep-default``; nobody has chosen one when there is no
``--hypothesis-profile`` option, no ``STOCHSTEP_HYPOTHESIS_PROFILE`` variable, and the current
profile is still hypothesis's ``"default"``. A profile the user loaded (in a ``conftest.py``,
say) and the ``"ci"`` profile hypothesis 6 loads by itself where it detects a CI machine
(``CI``, ``GITHUB_ACTIONS``... set; that profile has no deadline either) are left alone, and
so is every test's own ``@settings``. The names carry the ``stochstep-`` prefix because the
plugin loads in every pytest run of an environment where the package is installed. Tests can
reuse the settings with ``@settings(parent=settings.get_profile("stochstep-ci"))``.

Example (``tests/test_user_example.py`` is a complete user test file):

.. code-block:: python

    def test_sgd_is_linear(quadratic_problem):
        p = quadratic_problem
        assert_linear_rate(lambda ps: torch.optim.SGD(ps, lr=1 / p.L), p, 1 - p.mu / p.L)
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch
from hypothesis import HealthCheck, settings

from stochstep.theory_checks import strategies

PROFILE_ENV = "STOCHSTEP_HYPOTHESIS_PROFILE"
DEFAULT, DEV, CI = "stochstep-default", "stochstep-dev", "stochstep-ci"

settings.register_profile(DEFAULT, deadline=None)
settings.register_profile(DEV, max_examples=10, deadline=None)
settings.register_profile(CI, max_examples=30, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])


def _explicit_profile(config: pytest.Config) -> str | None:
    try:
        return config.getoption("--hypothesis-profile", None)
    except ValueError:  # hypothesis's pytest plugin disabled
        return None


def _profile_to_load(option: str | None, env: str | None, current: str) -> str | None:
    """The profile the plugin loads, or None to leave the current one: the environment
    variable's unless the option chose; ours without a deadline when nothing chose one (the
    current profile is still hypothesis's ``"default"``)."""
    if option:
        return None
    if env:
        return env
    return DEFAULT if current == "default" else None


def pytest_configure(config: pytest.Config) -> None:
    name = _profile_to_load(_explicit_profile(config), os.environ.get(PROFILE_ENV),
                            settings.get_current_profile_name())
    if name:
        settings.load_profile(name)


def pytest_report_header(config: pytest.Config) -> str:
    return f"stochstep: hypothesis profile {settings.get_current_profile_name()!r}"


@pytest.fixture
def torch_generator(request: pytest.FixtureRequest) -> torch.Generator:
    """A ``torch.Generator`` seeded with the CRC32 of the test's node id."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=[dict(dim=2, condition=1.0), dict(dim=5, condition=10.0),
                        dict(dim=10, condition=100.0)],
                ids=["d2-kappa1", "d5-kappa10", "d10-kappa100"])
def quadratic_problem(request: pytest.FixtureRequest) -> strategies.QuadraticProblem:
    """A fixed strongly convex quadratic (seed 0), one per parameter."""
    return strategies.quadratic_problem(**request.param, seed=0)


@pytest.fixture(params=[dict(n_nodes=6, edge_prob=0.0), dict(n_nodes=8, edge_prob=0.5)],
                ids=["tree6", "dense8"])
def laplacian_problem(request: pytest.FixtureRequest) -> strategies.LaplacianProblem:
    """A fixed grounded-Laplacian quadratic on a connected graph (seed 0)."""
    return strategies.laplacian_problem(**request.param, seed=0)


@pytest.fixture(params=[dict(separable=False), dict(separable=True)],
                ids=["nonseparable", "separable"])
def logistic_problem(request: pytest.FixtureRequest) -> strategies.LogisticProblem:
    """A fixed regularized (``reg = 0.1``) logistic regression, 30 points in 3-D (seed 0)."""
    return strategies.logistic_problem(n=30, dim=3, reg=0.1, **request.param, seed=0)
