"""The pytest plugin outside this repository: a fresh project, no conftest, no profile chosen.

Each subprocess runs pytest in ``tmp_path`` (outside the repository, so neither of its
conftest files loads) with hypothesis's CI detection switched off, as on a user's laptop.
"""

import os
import re
import subprocess
import sys

import hypothesis._settings
import pytest
from hypothesis import settings

from stochstep.theory_checks import pytest_plugin
from test_readme import README

# hypothesis loads its "ci" profile by itself where one of these is set (hypothesis 6)
CI_VARIABLES = set(getattr(hypothesis._settings, "_CI_VARS", {})) | {"CI", "GITHUB_ACTIONS"}
EXAMPLE = next(block for block in re.findall(r"```python\n(.*?)```", README, re.S)
               if "test_sgd_converges_linearly" in block)
THREE_LINES = '''
import torch
from hypothesis import given, settings
from stochstep.theory_checks.properties import assert_converges
from stochstep.theory_checks.strategies import quadratics

@given(quadratics(conditions=(1.0, 10.0)))
def test_sgd_converges(problem):
    assert_converges(lambda ps: torch.optim.SGD(ps, lr=1 / problem.L), problem)

def test_the_plugin_chose_a_profile_without_deadline():
    assert settings.get_current_profile_name() == "stochstep-default"
    assert settings.default.deadline is None
'''


def pytest_in(tmp_path, *args, **env):
    clean = {k: v for k, v in os.environ.items()
             if k not in CI_VARIABLES and k not in (pytest_plugin.PROFILE_ENV, "PYTEST_ADDOPTS",
                                                    "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    clean.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=300)


@pytest.mark.slow   # a fresh interpreter imports torch: ~8 s on an idle 2-core machine
def test_readme_example_and_a_three_line_test_pass_in_a_fresh_project(tmp_path):
    (tmp_path / "test_readme_example.py").write_text(EXAMPLE)
    (tmp_path / "test_three_lines.py").write_text(THREE_LINES)
    done = pytest_in(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stochstep: hypothesis profile 'stochstep-default'" in done.stdout
    assert f"{EXAMPLE.count('def test_') + 2} passed" in done.stdout


@pytest.mark.parametrize("option, env, current, loaded", [
    (None, None, "default", "stochstep-default"),   # nobody chose: ours, without deadline
    (None, None, "ci", None),     # hypothesis's CI profile (loaded where CI is set) stays
    (None, None, "mine", None),                      # a profile the user loaded stays
    ("mine", None, "mine", None),                    # --hypothesis-profile wins
    ("mine", "stochstep-dev", "mine", None),
    (None, "stochstep-dev", "default", "stochstep-dev"),
])
def test_which_profile_the_plugin_loads(option, env, current, loaded):
    assert pytest_plugin._profile_to_load(option, env, current) == loaded
    assert settings.get_profile("stochstep-default").deadline is None
