"""Online learning and mirror descent: per-call costs of the domains and optimizers (CPU).

Cases (a list: each one times its own contenders, interleaved, and names its targets):

(a) ``CvxpySet.project``, whose projection problem is compiled once and re-solved with a warm
    start, against building the same cvxpy problem and solving it anew at every call, on a
    random bounded polytope in d = 100: 50 random halfspaces ``a_i . x <= 1/2`` (unit normals)
    inside the box [-1, 1]^100 (50 halfspaces alone bound nothing in 100 dimensions). Each call
    projects the next of a fixed list of random points (``2 * N(0, I)``, independent, so the
    warm start helps little: what is measured is the compile). Both with the same solver and
    tolerances, for OSQP (the default on polyhedra) and Clarabel.
"""

from __future__ import annotations

import datetime
import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import cvxpy as cp
import torch

from benchmarks import harness
from stochstep.optimizers.domains import ACCURATE_SOLVER_OPTIONS, CvxpySet

WARMUP = 3  # discarded interleaved rounds, after each contender's untimed first call


@dataclass(frozen=True)
class Case:
    """A timed comparison: ``run(rounds, warmup) -> (section lines, target lines)``, with its
    default timed rounds (``quick_rounds=0``: skipped by --quick)."""

    key: str
    title: str
    run: Callable[[int, int], tuple[list[str], list[str]]]
    rounds: int
    quick_rounds: int


# -- (a) CvxpySet: parameterized re-solve against rebuilding -----------------------------------
DIM, HALFSPACES, POINTS = 100, 50, 64
SOLVERS = ("OSQP", "CLARABEL")
CVXPY_TARGET = 0.2  # the parameterized projection at least 5x faster than rebuilding


def polytope(dim: int = DIM, halfspaces: int = HALFSPACES, seed: int = 0):
    """``constraints(x)`` of the polytope of case (a), and ``POINTS`` points to project."""
    gen = torch.Generator().manual_seed(seed)
    normals = torch.randn(halfspaces, dim, generator=gen, dtype=torch.float64)
    normals = (normals / normals.norm(dim=1, keepdim=True)).numpy()
    points = [2 * torch.randn(dim, generator=gen, dtype=torch.float64) for _ in range(POINTS)]
    return (lambda x: [normals @ x <= 0.5, x >= -1, x <= 1]), points


def rebuilt_projection(constraints, solver: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The projection as a user writes it without :class:`CvxpySet`: a new problem per call,
    with the same solver and tolerances."""
    def project(y: torch.Tensor) -> torch.Tensor:
        x = cp.Variable(y.numel())
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y.numpy())), constraints(x))
        problem.solve(solver=solver, **ACCURATE_SOLVER_OPTIONS[solver])
        assert problem.status == cp.OPTIMAL, problem.status
        return torch.from_numpy(x.value)
    return project


def cvxpy_contenders(constraints, points) -> dict[str, Callable[[], torch.Tensor]]:
    """Per-call projections by name; each walks the same points in the same order."""
    calls = {}
    for solver in SOLVERS:
        for name, project in ((f"CvxpySet.project ({solver})",
                               CvxpySet(constraints, solver=solver).project),
                              (f"rebuilt each call ({solver})",
                               rebuilt_projection(constraints, solver))):
            walk = itertools.cycle(points)
            calls[name] = lambda project=project, walk=walk: project(next(walk))
    return calls


def cvxpy_case(rounds: int, warmup: int) -> tuple[list[str], list[str]]:
    constraints, points = polytope()
    # the contenders compute the same projections (checked on a few points, outside timing)
    ours = CvxpySet(constraints)
    gap = max(float((ours.project(y) - rebuilt_projection(constraints, "CLARABEL")(y)).abs()
                    .max()) for y in points[:4])
    calls = cvxpy_contenders(constraints, points)
    first = {}
    for name, call in calls.items():  # the first call compiles CvxpySet's problem: apart
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    times = harness.time_interleaved(calls, rounds, warmup)
    rows = []
    for name, t in times.items():
        solver = name.split("(")[1].rstrip(")")
        rows.append([name, f"{1e3 * statistics.median(t):.2f}",
                     f"{harness.median_ratio(times, name, f'rebuilt each call ({solver})'):.3f}x",
                     f"{1e3 * first[name]:.1f}"])
    table = harness.markdown_table(["projection", "median ms", "vs rebuilt, same solver",
                                    "first call ms"], rows)
    print(table, flush=True)
    # the target holds for the default solver on a polytope; Clarabel's row is for comparison
    targets = [harness.target_line(
        f"CvxpySet.project / rebuilt each call, default solver (OSQP), case (a) "
        f"(at least {1 / CVXPY_TARGET:.0f}x faster)",
        harness.median_ratio(times, "CvxpySet.project (OSQP)", "rebuilt each call (OSQP)"),
        CVXPY_TARGET)]
    lines = [table,
             f"\nCvxpySet's default on a polytope is OSQP, with its workspace set up once from "
             f"cvxpy's compiled data and only the linear term updated per call; with Clarabel it "
             f"re-solves the DPP problem through `problem.solve`, whose time is mostly the "
             f"solver's own. Largest difference between CvxpySet's default projection and the "
             f"rebuilt Clarabel one on 4 points: {gap:.1e}."]
    return lines, targets


CASES = [
    Case("a", f"CvxpySet projection onto a polytope in d = {DIM} ({HALFSPACES} halfspaces in "
         f"a box): parameterized re-solve against rebuilding", cvxpy_case, 100, 5),
]


def run(rounds: int | None, quick: bool) -> str:
    """Run every case, print its table and targets, and return the RESULTS.md section."""
    warmup = 1 if quick else WARMUP
    out = ["## online\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- method: contenders interleaved in one process (order shuffled each round, seed "
           f"0); each contender's first call and {warmup} warm-up round(s) discarded; ratios "
           "are medians of per-round ratios",
           f"- cvxpy {cp.__version__}; solver tolerances: "
           f"`stochstep.optimizers.domains.ACCURATE_SOLVER_OPTIONS`"]
    targets = []
    for case in CASES:
        n = harness.case_rounds(case, rounds, quick, out)
        if n is None:
            continue
        lines, case_targets = case.run(n, warmup)
        out += [f"\n### ({case.key}) {case.title}, {n} rounds\n", *lines]
        targets += case_targets
    print("\n".join(targets), flush=True)
    out += ["\n### targets\n", *[f"- {t}" for t in targets],
            f"\nRerun from the repository root: `{harness.rerun_command('online', rounds, quick)}`"]
    return "\n".join(out)
