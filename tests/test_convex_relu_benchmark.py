"""The convex-ReLU benchmark's pieces: the time-to-objective rule and the slope case."""

import math
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
    assert row[3:7] == ["-"] * 4 and "steps, gap bound" in row[7]
    assert "interior-point method alone" in lines[1]
    assert targets[-1].startswith("target (issue 16)")
