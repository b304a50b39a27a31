"""The examples run end to end (briefly) and produce their outputs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"),
         "--epochs", "2", "--seeds", "1", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = tmp_path / "quickstart.png"
    assert png.is_file() and png.stat().st_size > 0
    rows = [line.split() for line in proc.stdout.splitlines()]
    names = [r[0] for r in rows if len(r) > 1 and r[1] in ("1e-03", "5e-04")]
    assert names == ["DiffGrad", "Adam", "Adam"], proc.stdout


def test_score_sde_2d_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "score_sde_2d.py"),
         "--iters", "30", "--steps", "10", "--samples", "200", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = tmp_path / "score_sde_2d.png"
    assert png.is_file() and png.stat().st_size > 0
    assert "energy distance to data" in proc.stdout, proc.stdout


def test_srrw_graph_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "srrw_graph.py"), "--quick", "--no-progress",
         "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("srrw_variance.png", "srrw_optimization.png"):
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 0
    assert "closed form" in proc.stdout and "SRRW alpha=5" in proc.stdout, proc.stdout


def test_score_sde_2d_figure_labels_every_panel(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import torch
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import score_sde_2d as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)   # keep the figure plot() closes
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(50, 2, generator=gen)
    results = {name: dict(x=torch.randn(50, 2, generator=gen), nfe=10, ed=0.01)
               for name in ("Euler-Maruyama (reverse SDE)", "Heun (probability-flow ODE)")}
    paths = torch.randn(6, 5, 2, generator=gen)
    example.plot(data, results, lambda x, t: -x, paths, [0.5] * 10, tmp_path / "f.png")
    (fig,) = kept
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    assert all(ax.get_xlabel() and ax.get_ylabel() and len(ax.get_xticks()) for ax in panels)
    fig.clf()
