"""Imports only go downward: stepping <- {optimizers, samplers} <- theory_checks.

Inside the library every import of another part names it in full (``stochstep.stepping...``);
an import of a bare ``stepping`` or ``optimizers`` would pick up whatever a user's working
directory holds under that name, so it is refused here too.
"""

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


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            if node.module == "stochstep":  # from stochstep import optimizers
                yield from (f"stochstep.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; name the module in full")


def layer_of(module):
    parts = module.split(".")
    return parts[1] if parts[0] == "stochstep" and len(parts) > 1 else None


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_only_go_downward(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules found in {layer}/"
    imports = [(f.relative_to(ROOT), m) for f in files for m in imported_modules(f)]
    upward = [(f, m) for f, m in imports if layer_of(m) in FORBIDDEN[layer]]
    assert not upward, f"upward or sideways imports: {upward}"
    bare = [(f, m) for f, m in imports if m.split(".")[0] in LAYERS]
    assert not bare, f"imports outside the stochstep namespace: {bare}"


def test_the_layering_check_sees_both_import_forms(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from stochstep import samplers\nimport stochstep.theory_checks.hessian\n"
                      "from stochstep.optimizers.cbo import CBO\n")
    assert [layer_of(m) for m in imported_modules(module)] == [
        None, "samplers", "theory_checks", "optimizers"]
