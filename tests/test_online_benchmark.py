"""The online benchmark's quick path runs, and its contenders compute the same projections."""

import torch

from benchmarks import online as bench


def test_contenders_project_onto_the_same_points(one_thread):
    constraints, points = bench.polytope(dim=12, halfspaces=6)
    calls = bench.cvxpy_contenders(constraints, points)
    assert sorted(calls) == sorted(f"{kind} ({solver})" for solver in bench.SOLVERS
                                   for kind in ("CvxpySet.project", "rebuilt each call"))
    for _ in range(2):   # each call walks on to the next point, the same for every contender
        results = [call() for call in calls.values()]
        for r in results[1:]:
            torch.testing.assert_close(r, results[0], atol=1e-6, rtol=0)
    assert not torch.equal(results[0], bench.CvxpySet(constraints).project(points[0]))


def test_quick_run_reports_the_cvxpy_case_and_its_target(one_thread):
    section = bench.run(rounds=2, quick=True)
    assert section.startswith("## online")
    assert "| CvxpySet.project (OSQP) |" in section
    assert "| rebuilt each call (CLARABEL) |" in section
    assert "rebuilt each call, default solver (OSQP), case (a) (at least 5x faster)" in section
    assert "python -m benchmarks online --rounds 2 --quick" in section


def test_ball_step_contenders_step_inside_the_ball(one_thread):
    """Case (b)'s contenders on small shapes: each step runs, and the constrained optimizers'
    points stay in the ball that bites."""
    calls = bench.ball_step_contenders(0.5, shapes=[(6, 5), (5,), (300_000,)])
    assert bench.SGD in calls and len(calls) == 4
    for _ in range(2):
        for call in calls.values():
            call()
    for name, call in calls.items():
        opt = call.__self__
        if name != bench.SGD:
            radius = opt.domain.radius
            norm = torch.stack([p.detach().norm() for p in opt.param_groups[0]["params"]]).norm()
            assert norm <= radius * (1 + 1e-6)


def test_benchmark_cli_knows_online():
    from benchmarks.__main__ import SUITES
    assert SUITES["online"] == "benchmarks.online"
