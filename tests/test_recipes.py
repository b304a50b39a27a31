"""The recipes of docs/training_tools.rst run and hold: every Python block of the page, with
Lightning and accelerate where a block imports them.

Those two are in the ``test`` extra; a block that imports one is skipped only where that
package is not installed at all (a broken install fails). The page's blocks all carry a
``:caption:`` (the test id), so tests/test_docs.py, which runs blocks without options, does not
run them a second time.
"""

import importlib.util
import pathlib
import re
import textwrap

import pytest
import torch

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "training_tools.rst"
# A captioned python block: the directive, its caption, a blank line, indented (or blank) lines.
RECIPE = re.compile(r"^\.\. code-block:: python\n   :caption: (.+)\n\n((?:(?: {3,}.*)?\n)+)",
                    re.M)
OPTIONAL = ("lightning", "accelerate")


def recipes():
    text = PAGE.read_text()
    for match in RECIPE.finditer(text):
        caption, code = match.groups()
        # After as many blank lines as precede it on the page: tracebacks show the page's lines.
        code = text[:match.start(2)].count("\n") * "\n" + textwrap.dedent(code)
        # compiling on a 2-core machine takes tens of seconds in a fresh process
        marks = [pytest.mark.slow] if caption.startswith("torch.compile") else []
        yield pytest.param(code, id=caption, marks=marks)


def test_every_python_block_of_the_page_is_a_recipe():
    text = PAGE.read_text()
    assert len(RECIPE.findall(text)) == text.count(".. code-block:: python") >= 6


# Lightning 2.6 calls a torch 2.13 pytree API that torch deprecates: not ours to fix.
@pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated")
@pytest.mark.parametrize("code", list(recipes()))
def test_recipe_runs(code, one_thread, tmp_path, monkeypatch):
    for package in OPTIONAL:
        imported = re.search(rf"^(import|from) {package}\b", code, re.M)
        if imported and importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install '.[test]' brings it)")
    monkeypatch.chdir(tmp_path)   # what a tool writes to the working directory lands here
    with torch.random.fork_rng():
        exec(compile(code, str(PAGE), "exec"), {})
