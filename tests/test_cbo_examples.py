"""The CBO examples run end to end (briefly) and print sensible numbers; the CBO benchmark's
contenders compute the same dynamics."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, tmp_path, *extra):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--quick", "--no-progress",
         "--out", str(tmp_path), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_cbo_rastrigin_runs(tmp_path):
    out = run_example("cbo_rastrigin.py", tmp_path)
    png = tmp_path / "cbo_rastrigin.png"
    assert png.is_file() and png.stat().st_size > 10_000
    # function minimizer k/M rate err value evals ms
    rows = re.findall(r"^(rastrigin|ackley)\s+(\S+)\s+(\d+)/(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+"
                      r"([\d,]+)\s+(\S+)$", out, re.M)
    assert [(r[0], float(r[1])) for r in rows] == [
        ("rastrigin", 0.0), ("rastrigin", 1.0), ("ackley", 0.0), ("ackley", 1.0)], out
    for name, _, k, m, rate, err, value, evals, ms in rows:
        k, m = int(k), int(m)
        assert m == 4 and float(rate) == pytest.approx(k / m), out
        assert k >= 3, f"{name}: quick settings solve at least 3 of 4 runs\n{out}"
        assert float(err) < 0.25, out          # the median run succeeded
        assert 0 <= float(value) < 1e-2, out   # f* = 0 is the minimum: f(c) - f* >= 0
        assert int(evals.replace(",", "")) == 50 * 1000, out   # N x steps
        assert float(ms) > 0, out
    err2d = float(re.search(r"\|c - x\*\|inf = (\S+)", out).group(1))
    assert err2d < 0.25, out


def test_cbo_train_mlp_runs(tmp_path):
    out = run_example("cbo_train_mlp.py", tmp_path)
    png = tmp_path / "cbo_train_mlp.png"
    assert png.is_file() and png.stat().st_size > 10_000
    rows = {m.group(1).strip(): [float(v.replace(",", "")) for v in m.groups()[1:]]
            for m in re.finditer(r"^(initial network|CBO \(N = 20\)|Adam, [a-z ]+?)\s+"
                                 r"([\d,]+)\s+([\d,]+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)}
    assert set(rows) == {"initial network", "CBO (N = 20)", "Adam, same steps",
                         "Adam, same wall time", "Adam, same loss evaluations"}, out
    steps, evals, seconds, loss, acc = rows["CBO (N = 20)"]
    assert (steps, evals) == (60, 60 * 21), out          # N + 1 loss evaluations per step
    assert rows["Adam, same steps"][:2] == [60, 60], out
    assert rows["Adam, same loss evaluations"][:2] == [evals, evals], out
    assert rows["Adam, same wall time"][2] >= seconds, out
    loss0, acc0 = rows["initial network"][3:]
    for _, (_, _, _, row_loss, row_acc) in rows.items():
        assert 0 <= row_acc <= 1 and row_loss > 0, out
    # CBO learns without gradients (from ~0.11 to ~0.4 in 60 quick steps), Adam more
    assert loss < loss0 - 0.3 and acc > acc0 + 0.15, out
    assert rows["Adam, same loss evaluations"][4] > 0.9, out


def test_benchmark_objectives_agree():
    from benchmarks import cbo
    x = np.random.default_rng(0).uniform(-3, 3, (3, 5, 20))
    for name, (f_torch, f_numpy) in cbo.FUNCTIONS.items():
        for shift in (0.0, 1.0):
            a = f_torch(torch.from_numpy(x), shift).numpy()
            b = f_numpy(x, shift)
            assert a.shape == (3, 5) and np.allclose(a, b, rtol=0, atol=1e-12), name
            at_min = f_numpy(np.full((1, 20), shift), shift)
            assert abs(at_min[0]) < 1e-12 and (b > at_min[0]).all(), name


def test_benchmark_contenders_same_dynamics(one_thread):
    """Without noise (sigma = 0) CBXpy and our stepper follow the same trajectory: same
    consensus, alpha schedule and drift; the benchmark compares like with like."""
    from benchmarks import cbo
    config = {**cbo.CONFIG, "sigma": 0.0}
    for name in cbo.FUNCTIONS:
        contenders = cbo.make_contenders(name, 1.0, 30, 5, 3, 20, config)
        for c in contenders.values():
            c.advance(20)
        ref = contenders[cbo.CBX]
        assert np.abs(ref.dyn.x - contenders[cbo.F64].x.numpy()).max() < 1e-9, name
        assert np.abs(ref.consensus() - contenders[cbo.F64].consensus()).max() < 1e-9, name
        assert np.abs(ref.dyn.x - contenders[cbo.F32].x.double().numpy()).max() < 1e-3, name
        assert float(ref.dyn.alpha[0, 0]) == pytest.approx(30 * 1.05 ** 20)


def test_benchmark_success_case_and_reproducibility(one_thread):
    from benchmarks import cbo
    r = cbo.success_case("ackley", 0.0, 10, 40, seed=5, chunk=10)
    assert set(r["times"]) == {cbo.CBX, cbo.F32, cbo.F64, cbo.F64N}
    assert all(len(t) == 3 and min(t) > 0 for t in r["times"].values())   # 4 rounds, 1 warm-up
    assert all(0.0 <= r[k] <= 1.0 for k in r["times"])
    lines = cbo.reproducibility(steps=30)
    assert len(lines) == 2 and all(line.endswith("PASS") for line in lines), lines


def test_benchmark_cli_knows_cbo():
    from benchmarks.__main__ import SUITES
    assert SUITES["cbo"] == "benchmarks.cbo"


def import_example(name):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "examples"))


@pytest.fixture
def figures(monkeypatch):
    """The figures an example's plot() closes, kept open for inspection."""
    import matplotlib.pyplot as plt
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for fig in kept:
        fig.clf()


def test_cbo_train_mlp_figure_names_both_axes_and_every_marker(tmp_path, figures):
    example = import_example("cbo_train_mlp")
    args = example.parse_args(["--quick"])
    curve = [(0, 0.0, 2.3), (21, 0.01, 2.0), (42, 0.02, 1.5)]
    rows = {name: dict(evals=10 * i + 5, seconds=0.01 * i + 0.005, loss=1.0 / i)
            for i, name in enumerate(["CBO", "Adam, same steps", "Adam, same wall time",
                                      "Adam, same loss evaluations"], start=1)}
    example.plot(curve, curve, rows, args, tmp_path / "f.png")
    (fig,) = figures
    evals_ax, time_ax = fig.axes
    assert "loss evaluations" in evals_ax.get_xlabel() and "wall time" in time_ax.get_xlabel()
    assert evals_ax.get_ylabel()
    # one legend entry per curve and per marker (a row of the table), in words
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert len(labels) == 2 + len(rows) and all(len(label.split()) >= 3 for label in labels[2:])


def test_cbo_rastrigin_figure_has_axis_labels_and_shows_the_last_particles(tmp_path, figures):
    example = import_example("cbo_rastrigin")
    args = example.parse_args(["--no-progress", "--particles", "10", "--steps-2d", "20"])
    x0, res = example.picture_run(args, torch.float32, torch.Generator().manual_seed(0))
    curves = {"rastrigin, minimizer 1": torch.linspace(1, 1e-3, 30)}
    example.plot(args, x0, res, curves, tmp_path / "f.png")
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 and all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)
    picture = panels[0]
    (star,) = [line for line in picture.lines if line.get_marker() == "*"]
    last = [c for c in picture.collections if c.get_label() == "particles at step 20"]
    assert len(last) == 1 and last[0].get_zorder() > star.get_zorder()
