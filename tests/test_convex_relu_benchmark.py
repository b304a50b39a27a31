"""The convex-ReLU benchmark's pieces: the time-to-objective rule and the slope case."""

import math
import subprocess
from types import SimpleNamespace

import pytest

from benchmarks import convex_relu as bench


def test_time_to_band_is_when_the_objective_enters_the_band_for_good():
    history = {"objective": [2.0, 1.00005, 1.5, 1.00001, 0.99999], "time": [1, 2, 3, 4, 5]}
    assert bench.time_to_band(SimpleNamespace(history_=history), 1.0) == 4
    history["objective"][-1] = 1.001          # leaves the band at the end: never reached
    assert math.isinf(bench.time_to_band(SimpleNamespace(history_=history), 1.0))


def test_slope_case_reports_a_fitted_exponent(one_thread, monkeypatch):
    monkeypatch.setattr(bench, "SLOPE_ITERS", 3)
    lines, targets = bench.case_slope([100, 200])
    assert "| 100 |" in lines[0] and "| 200 |" in lines[0]
    assert "log-log slope of the time per iteration in n" in lines[1]
    assert targets[0].startswith("ADMM per-iteration time ~ n^")


def test_problem_is_seeded():
    X1, y1, D1 = bench.problem(30, 3, 5)
    X2, y2, D2 = bench.problem(30, 3, 5)
    assert X1.equal(X2) and y1.equal(y2) and D1.equal(D2)
    assert X1.shape == (30, 3) and D1.shape[0] == 30 and D1.shape[1] <= 5
    with pytest.raises(ValueError, match="n_patterns"):
        bench.problem(30, 3, 0)


def test_fit_ipm_solves_the_program_of_problem(one_thread):
    _, _, D = bench.problem(60, 3, 8)
    model = bench.fit_ipm(60, 3, 8)
    assert model.patterns_.equal(D) and model.solver == "ipm"


def test_time_case_runs_the_interior_point_method_alone_above_the_clarabel_size(
        one_thread, monkeypatch):
    monkeypatch.setattr(bench, "CLARABEL_MAX_SIZE", 0)
    lines, targets = bench.case_time([(60, 3, 8)])
    row = lines[0].splitlines()[2].split(" | ")
    assert row[3:7] == ["-"] * 4 and "steps, gap" in row[7]
    assert "interior-point method alone" in lines[1]
    assert targets[-1].startswith("target (issue 16)")


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")  # the capped Clarabel
def test_big_case_reports_the_ratio_or_clarabels_cap(one_thread):
    """Case (d) on a small problem: Clarabel done (the ratio, the objectives agreeing), then
    with a cap too short to finish (the lower bound)."""
    lines = bench.case_big(60, 3, 8, cap=1e4)
    assert "IPM relative to it" in lines[1] and "fastest cvxpy / IPM:" in lines[2]
    gap = float(lines[1].split("IPM relative to it ")[1])
    assert abs(gap) <= 1e-6
    assert "peak resident memory" in lines[-1]
    lines = bench.case_big(60, 3, 8, cap=1e-9)
    assert "not done after" in lines[1] and "fastest cvxpy / IPM > 1e-09" in lines[1]


def test_ipm_versions_case_compares_with_the_log_barrier_commit(one_thread):
    try:
        bench._barrier_version()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git or its commit {bench.BARRIER_COMMIT} is not available (a shallow clone)")
    lines = bench.case_ipm_versions([(60, 3, 8, 1)])
    row = lines[0].splitlines()[2].split(" | ")
    assert row[0] == "| 60" and int(row[4]) > int(row[5]) > 0    # fewer steps than before
    assert abs(float(row[-1].rstrip(" |"))) <= 1e-6                # the same objective
