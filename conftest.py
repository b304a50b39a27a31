"""Make sure the stochstep pytest plugin is loaded, and pick this repository's profile.

The tests run against the installed package (``pip install .`` or ``pip install -e .``), which
registers ``stochstep.theory_checks.pytest_plugin`` through its ``pytest11`` entry point under
the name ``stochstep``. Listing the module in ``pytest_plugins`` as well would make
pytest import it under its module name and pluggy refuse the second registration ("Plugin
already registered under a different name"), so the plugin is registered here only when it is
not registered yet (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).

This repository's tests run under the derandomized ``stochstep-ci`` hypothesis profile unless
``--hypothesis-profile`` or ``STOCHSTEP_HYPOTHESIS_PROFILE`` chooses another.
"""

import os

import pytest
from hypothesis import settings

from stochstep.theory_checks import pytest_plugin as _stochstep_plugin


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not config.pluginmanager.is_registered(_stochstep_plugin):
        config.pluginmanager.register(_stochstep_plugin, "stochstep")
    if (not _stochstep_plugin._explicit_profile(config)
            and not os.environ.get(_stochstep_plugin.PROFILE_ENV)):
        settings.load_profile(_stochstep_plugin.CI)
