"""Every docstring example in the installed package runs, one test per docstring.

The examples are collected from the installed ``stochstep`` modules (not from the source
folders) so that they run against the same objects as the rest of the suite: importing a source
file under a second module name would register its algorithms a second time.
"""

import doctest
import importlib
import pkgutil

import pytest
import torch

import stochstep


def modules():
    # Walked from each subpackage's own path: in an editable install stochstep's __path__ holds
    # only its __init__.py, the subpackages live in the repository's top-level folders.
    yield stochstep
    for sub in stochstep.SUBPACKAGES:
        package = importlib.import_module(f"stochstep.{sub}")
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            yield importlib.import_module(info.name)


FINDER = doctest.DocTestFinder(exclude_empty=True)
EXAMPLES = sorted({(t.name, t) for module in modules()
                   for t in FINDER.find(module) if t.examples},
                  key=lambda pair: pair[0])


def test_there_are_examples_in_every_subpackage():
    found = {name.split(".")[1] for name, _ in EXAMPLES}
    assert found >= set(stochstep.SUBPACKAGES), found


@pytest.mark.parametrize("test", [t for _, t in EXAMPLES], ids=[n for n, _ in EXAMPLES])
def test_docstring_example(test, one_thread):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs = dict(test.globs)
    test.globs = globs
    with torch.random.fork_rng():
        runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
    assert runner.failures == 0
