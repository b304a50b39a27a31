"""The README stays true: its Quickstart commands (CI runs the test one verbatim), its python
snippets, the names and files it points to, its list of examples and what they write, LICENSE."""

import configparser
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quickstart_commands():
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_a_main_job_and_a_test_command():
    main_job, tests = quickstart_commands()
    assert main_job.endswith("python examples/quickstart.py")
    assert tests.endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


# Each python block, after as many blank lines as precede it in the README: its line numbers
# are the README's, so tracebacks (and hypothesis, which reads a test's source) see its lines.
SNIPPETS = [README[:m.start(1)].count("\n") * "\n" + m.group(1)
            for m in re.finditer(r"```python\n(.*?)```", README, re.S)]


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_python_snippet_runs(code, one_thread):
    exec(compile(code, str(ROOT / "README.md"), "exec"), {})


def test_readme_names_use_the_stochstep_namespace():
    # `optimizers.DiffGrad` was the old top-level name: every dotted name starts at stochstep
    bare = re.findall(r"(?<![\w.])(?:optimizers|samplers|stepping|theory_checks)\.\w+", README)
    assert bare == []


@pytest.mark.parametrize("name", sorted(set(re.findall(r"`(stochstep(?:\.\w+)+)`", README))))
def test_readme_names_exist(name):
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[:i]))   # a submodule not imported yet
        obj = getattr(obj, part)


def test_readme_points_only_to_files_in_the_repository():
    prose = re.sub(r"```.*?```", "", README, flags=re.S)   # the Layout block names bare files
    paths = set(re.findall(r"[\w./-]+\.(?:py|md|cfg|toml|txt)\b", prose))
    paths |= {p for p in re.findall(r"\]\(([^)#]+)\)", prose) if "://" not in p}
    paths |= set(re.findall(r"`(LICENSE)`", prose))
    assert paths, "no file names found"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == [], f"README names files the repository does not have: {missing}"


def test_license_is_the_mit_license_of_setup_cfg():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the stochstep developers" in text
    assert "Permission is hereby granted, free of charge" in text


def example_rows():
    section = README.split("## Examples", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        script = re.search(r"examples/(\w+\.py)", line)
        if line.startswith("|") and script:
            rows[script.group(1)] = set(re.findall(r"`runs/([\w.-]+)`", line.split("|")[-2]))
    return rows


def test_readme_lists_every_example_with_the_files_it_writes():
    rows = example_rows()
    assert set(rows) == {p.name for p in (ROOT / "examples").glob("*.py")}
    for script, outputs in rows.items():
        source = (ROOT / "examples" / script).read_text()
        assert set(re.findall(r"\"([\w-]+\.png)\"", source)) == outputs, script
        if outputs:   # written under --out, whose default is runs/
            assert re.search(r"\"--out\".*default=(?:Path\()?\"runs\"", source), script
