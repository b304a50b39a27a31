"""Installing adds one top-level package, ``stochstep``, and nothing in a user's working
directory can shadow its parts."""

import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
LIBRARY_FOLDERS = ("stepping", "optimizers", "samplers", "theory_checks")


def test_a_fresh_install_adds_only_stochstep(tmp_path):
    # Installed from a copy without earlier build output: setuptools would pack stale files
    # left in build/lib into the wheel, and the test would not see what a fresh clone gives.
    source, target = tmp_path / "source", tmp_path / "site-packages"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "_build", "runs", ".hypothesis"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    added = sorted(p.name for p in target.iterdir())
    assert added[0] == "stochstep" and len(added) == 2, added
    assert added[1].startswith("stochstep-") and added[1].endswith(".dist-info"), added
    package = target / "stochstep"
    assert {p.name for p in package.iterdir() if p.is_dir()} >= set(LIBRARY_FOLDERS)
    # The installed copy imports on its own, from a directory that is not the repository.
    probe = ("import stochstep, stochstep.optimizers, stochstep.samplers, "
             "stochstep.theory_checks; print(stochstep.optimizers.__file__)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(run.stdout.strip()).is_relative_to(package), run.stdout


def test_stray_modules_in_the_working_directory_change_nothing(tmp_path):
    for name in (*LIBRARY_FOLDERS, "package"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the stray {name}.py')\n")
    probe = """
import torch
from stochstep.optimizers import DiffGrad
from stochstep.samplers import ULA
from stochstep.stepping import integrate
from stochstep.theory_checks import hessian_trace
p = torch.nn.Parameter(torch.ones(3))
p.grad = torch.ones(3)
DiffGrad([p], lr=0.1).step()
print(round(p.sum().item(), 4))
"""
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    # Adam's first step is lr * sign(grad); diffGrad scales it by xi = sigmoid(abs(0 - 1)).
    assert run.stdout.split() == ["2.7807"], run.stdout
