"""The documentation stays true: its Python examples run, and its API reference has every module.

The Sphinx build itself (warnings are errors) runs in CI (``.ci/run``), after the test suite.
"""

import importlib
import pathlib
import pkgutil
import re
import textwrap

import pytest
import torch

import stochstep

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
# An rst code block: the directive, a blank line, then indented (or blank) lines.
PYTHON_BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:(?: {3,}.*)?\n)+)", re.M)


def python_blocks():
    for page in sorted(DOCS.rglob("*.rst")):
        for i, block in enumerate(PYTHON_BLOCK.findall(page.read_text())):
            yield pytest.param(textwrap.dedent(block), id=f"{page.relative_to(DOCS)}-{i}")


def test_docs_have_python_examples():
    assert len(list(python_blocks())) >= 20


@pytest.mark.parametrize("code", list(python_blocks()))
def test_docs_python_example_runs(code, one_thread):
    with torch.random.fork_rng():
        exec(compile(code, "docs", "exec"), {})


def library_modules():
    for sub in stochstep.SUBPACKAGES:
        package = importlib.import_module(f"stochstep.{sub}")
        yield package.__name__
        yield from (info.name for info in pkgutil.walk_packages(package.__path__,
                                                                f"{package.__name__}."))


def test_api_reference_has_every_module_and_no_other():
    pages = "".join(page.read_text() for page in sorted((DOCS / "api").glob("*.rst")))
    documented = re.findall(r"^\.\. automodule:: (\S+)", pages, re.M)
    assert sorted(documented) == sorted(library_modules())
