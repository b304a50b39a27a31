"""Sphinx configuration. The API reference is read from the installed ``stochstep`` package
(``pip install -e ".[docs]"``); the build needs no network."""

import importlib
import pkgutil
import sys

from docutils.statemachine import StringList
from sphinx.ext.autosummary import Autosummary

import stochstep

project = "stochstep"
author = "the stochstep developers"
copyright = "2026, the stochstep developers, MIT license"
release = stochstep.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",  # the page loads MathJax in the browser: nothing to fetch at build time
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
default_role = "py:obj"  # `name` in a docstring is a cross-reference, shown as code

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_inherit_docstrings = False  # else a class without one shows typing.Protocol's
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "alabaster"
html_title = f"stochstep {release}"
html_theme_options = {
    "description": "Optimizers and samplers from recent papers, on one PyTorch stepping core",
    "page_width": "1200px", "sidebar_width": "260px", "fixed_sidebar": True,
}


def documented_name(name: str) -> str | None:
    """Where the object ``name`` (``samplers.VPSDE``, ``stochstep.optimizers.DiffGrad``) is
    documented: docstrings name objects from the package root or through a subpackage's
    re-export, the reference documents each one in the module that defines it."""
    if name.split(".")[0] in stochstep.SUBPACKAGES:
        name = f"stochstep.{name}"
    if not name.startswith("stochstep."):
        return None
    try:
        obj = pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError):
        return None
    if hasattr(obj, "__qualname__") and getattr(obj, "__module__", "").startswith("stochstep."):
        return f"{obj.__module__}.{obj.__qualname__}"
    if hasattr(obj, "__path__") or type(obj) is type(stochstep):
        return obj.__name__
    # Data: the deepest module that lists it in its __all__.
    last = name.rsplit(".", 1)[-1]
    owners = [m.__name__ for m in list(sys.modules.values())
              if m.__name__.startswith("stochstep.") and last in getattr(m, "__all__", ())
              and getattr(m, last, None) is obj]
    return f"{max(owners, key=len)}.{last}" if owners else name


def link_to_documented_name(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target, module = node["reftarget"], node.get("py:module")
    # A bare name is relative to the module it is written in (a subpackage's exports table
    # shows its members' summaries on the subpackage's page).
    for name in ([f"{module}.{target}"] if module else []) + [target]:
        documented = documented_name(name)
        found = documented and env.domains["py"].resolve_xref(
            env, node["refdoc"], app.builder, "obj", documented, node, contnode)
        if found:
            return found
    return None


class Exports(Autosummary):
    """``.. exports:: stochstep.optimizers``: a table of the names in a subpackage's ``__all__``
    (what ``from stochstep.optimizers import *`` gives), each linked to its documentation."""

    required_arguments = 1
    has_content = False

    def run(self):
        module = importlib.import_module(self.arguments[0])
        names = [documented_name(f"{module.__name__}.{name}") for name in module.__all__]
        # autosummary wants names relative to the module the page is in (automodule sets it).
        current = self.env.ref_context.get("py:module")
        if current:
            names = [name.removeprefix(f"{current}.") for name in names]
        self.content = StringList([f"~{name}" for name in names], source=module.__name__)
        self.options["nosignatures"] = True
        return super().run()


def drop_namedtuple_field_aliases(app, what, name, obj, skip, options):
    # The class docstring's Attributes describe the fields; these are "Alias for field number k".
    doc = getattr(obj, "__doc__", None) or ""
    return True if doc.startswith("Alias for field number") else None


def prose_first_attribute_docstrings(app, what, name, obj, options, lines):
    # The package's property docstrings open with prose ("GD's condition: lambda_max <= 2/lr");
    # napoleon would take the text before the colon for the type. An empty comment (it skips
    # blank lines) in the first line stops it.
    if what in ("attribute", "data", "property") and lines:
        lines[:0] = ["..", ""]


def setup(app):
    app.add_directive("exports", Exports)
    app.connect("missing-reference", link_to_documented_name)
    app.connect("autodoc-skip-member", drop_namedtuple_field_aliases)
    app.connect("autodoc-process-docstring", prose_first_attribute_docstrings, priority=400)
