"""The surrogate benchmark's quick path runs, and its contenders count what they should."""

import pytest
import torch

pytest.importorskip("sklearn")

from benchmarks import surrogate as bench  # noqa: E402


def test_minibatches_cover_each_epoch_without_replacement():
    batches = bench.minibatches(10, 3, 7, seed=0)
    assert len(batches) == 7 and all(len(b) == 3 for b in batches)
    epoch = sorted(int(i) for b in batches[:3] for i in b)
    assert len(set(epoch)) == 9        # three batches of one epoch: nine distinct examples


def test_runs_count_expensive_calls_and_model_evaluations():
    problem = bench.problems()[1]
    batches = bench.minibatches(len(problem.X), 125, 5, seed=0)
    curve, model_evals = bench.run_sso(problem, dict(target_lr=12.5, inner_steps=10), batches)
    assert len(curve) == 6 and curve[-1] < curve[0]
    assert model_evals > 5 * 11        # the line search evaluates the model more than once
    sgd_curve, gradients = bench.run_torch(problem, lambda ps: torch.optim.SGD(ps, lr=0.1),
                                           batches)
    assert gradients == 5 and len(sgd_curve) == 6


def test_calls_to_reach():
    assert bench.calls_to_reach([3.0, 2.0, 1.0], 2.0) == 1
    assert bench.calls_to_reach([3.0, 2.0], 1.0) is None


def test_quick_run_reports_every_problem_and_its_target(one_thread):
    section = bench.run(rounds=None, quick=True)
    assert section.startswith("## surrogate")
    for name in ("logistic, breast_cancer, batch 25", "least squares, diabetes, batch 25"):
        assert f"- {name}: SSO" in section
    assert "| SGD lr=0.1" in section and "| SSO target_lr=0.1/L m=10" in section
    assert "python -m benchmarks surrogate --quick" in section


def test_benchmark_cli_knows_surrogate():
    from benchmarks.__main__ import SUITES
    assert SUITES["surrogate"] == "benchmarks.surrogate"
