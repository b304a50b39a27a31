"""stochstep: optimizers and samplers from recent papers on stochastic optimization and sampling,
on one PyTorch stepping core.

The library is four subpackages, imported on first use (``import stochstep`` alone stays cheap):

- :mod:`stochstep.stepping`: the shared core (kernels, the optimizer adapter, the time loop,
  noise, grids, oracles, graph walks, the algorithm registry);
- :mod:`stochstep.optimizers`: ``torch.optim``-compatible optimizers;
- :mod:`stochstep.samplers`: samplers run by :func:`stochstep.stepping.integrate`;
- :mod:`stochstep.theory_checks`: the papers' checkable claims, hypothesis strategies and a
  pytest plugin.

In the repository the four subpackages are the top-level folders ``stepping/``,
``optimizers/``, ``samplers/`` and ``theory_checks/``, and this file is ``package/__init__.py``;
``setup.cfg`` (``package_dir``) installs them as the one package ``stochstep``.
"""

import importlib
from importlib import metadata

SUBPACKAGES = ("stepping", "optimizers", "samplers", "theory_checks")

try:
    __version__ = metadata.version("stochstep")
except metadata.PackageNotFoundError:  # imported from files that were never installed
    __version__ = "unknown"

__all__ = ["__version__", *SUBPACKAGES]


def __getattr__(name):
    # PEP 562: `stochstep.optimizers` works after a bare `import stochstep`.
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *SUBPACKAGES})
