"""Imports only go downward: stepping <- {optimizers, samplers} <- theory_checks."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ["stepping", "optimizers", "samplers", "theory_checks"]
FORBIDDEN = {
    "stepping": {"optimizers", "samplers", "theory_checks"},
    "optimizers": {"samplers", "theory_checks"},
    "samplers": {"optimizers", "theory_checks"},
    "theory_checks": set(),
}


def imported_packages(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_only_go_downward(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules found in {layer}/"
    bad = [(f.relative_to(ROOT), pkg) for f in files for pkg in imported_packages(f)
           if pkg in FORBIDDEN[layer]]
    assert not bad, f"upward or sideways imports: {bad}"
