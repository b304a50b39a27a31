"""Online learning and mirror descent: per-call costs of the domains and optimizers (CPU).

Cases (a list: each one times its own contenders, interleaved, and names its targets):

(a) ``CvxpySet.project``, whose projection problem is compiled once and re-solved with a warm
    start, against building the same cvxpy problem and solving it anew at every call, on a
    random bounded polytope in d = 100: 50 random halfspaces ``a_i . x <= 1/2`` (unit normals)
    inside the box [-1, 1]^100 (50 halfspaces alone bound nothing in 100 dimensions). Each call
    projects the next of a fixed list of random points (``2 * N(0, I)``, independent, so the
    warm start helps little: what is measured is the compile). Both with the same solver and
    tolerances, for OSQP (the default on polyhedra) and Clarabel.
(b) One ``step()`` of ``OptimisticOMD`` (constant and self-confident step sizes) and of
    ``CSMD`` on ResNet-18's parameter shapes with a ``Ball`` domain, against
    ``torch.optim.SGD(foreach=True)``, for a ball that bites at every step and one that never
    does.
"""

from __future__ import annotations

import datetime
import itertools
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import cvxpy as cp
import torch

from benchmarks import harness
from benchmarks.diffgrad import resnet18_shapes
from stochstep.optimizers import CSMD, OptimisticOMD
from stochstep.optimizers.domains import ACCURATE_SOLVER_OPTIONS, Ball, CvxpySet

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


# -- (b) one optimizer step on ResNet-18's parameter shapes, Ball domain, against SGD ---------
SGD = "torch.optim.SGD(foreach=True)"
STEP_TARGET = 1.5   # each optimizer step at most 1.5x SGD's


def ball_step_contenders(radius_factor: float, shapes: list[tuple[int, ...]] | None = None
                         ) -> dict[str, Callable[[], object]]:
    """``step`` of each optimizer on its own float32 copy of the parameters (ResNet-18's
    shapes by default), whose ``.grad`` hold the same fixed random gradients; one param group,
    so the Ball bounds the joint norm of all 11.7M entries. The radius is ``radius_factor``
    times the initial norm: below 1 the ball bites at every step (a random step leaves the
    sphere), above it never does."""
    gen = torch.Generator().manual_seed(0)
    shapes = resnet18_shapes() if shapes is None else shapes
    start = [0.01 * torch.randn(s, generator=gen) for s in shapes]
    grads = [1e-3 * torch.randn(s, generator=gen) for s in shapes]
    radius = radius_factor * float(torch.stack([t.norm() for t in start]).norm())

    def params():
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        return ps

    optimizers = {
        SGD: torch.optim.SGD(params(), lr=1e-3, foreach=True),
        "OptimisticOMD (lr=1e-3)": OptimisticOMD(params(), lr=1e-3, domain=Ball(radius)),
        # D / sqrt(delta + 4 G^2) = 1e-3 at the first step, like the others' lr (the ball's
        # own diameter would make steps that leave even the large ball)
        "OptimisticOMD (lr=None, self-confident)": OptimisticOMD(
            params(), lr=None, diameter=1e-3 * math.sqrt(5), grad_bound=1.0,
            domain=Ball(radius)),
        "CSMD (sqrt_t)": CSMD(params(), lr=1e-3, domain=Ball(radius)),
    }
    return {name: opt.step for name, opt in optimizers.items()}


def ball_step_case(rounds: int, warmup: int) -> tuple[list[str], list[str]]:
    rows, targets = [], []
    for label, factor in (("bites at every step", 0.5), ("never bites", 10.0)):
        calls = ball_step_contenders(factor)
        for call in calls.values():   # untimed first step: lazy state, the first projection
            call()
        times = harness.time_interleaved(calls, rounds, warmup)
        for name, t in times.items():
            rows.append([name, label, f"{1e3 * statistics.median(t):.2f}",
                         f"{harness.median_ratio(times, name, SGD):.2f}x"])
            if label.startswith("bites") and name != SGD:
                targets.append(harness.target_line(
                    f"{name} step / {SGD} step, ResNet-18 shapes, Ball that bites, case (b)",
                    harness.median_ratio(times, name, SGD), STEP_TARGET))
    table = harness.markdown_table(["step", "Ball", "median ms", f"vs {SGD}"], rows)
    print(table, flush=True)
    lines = [table,
             "\nfloat32, one param group (the Ball bounds the joint norm of 11,689,512 "
             "entries), one thread. SGD makes one pass over the arrays (p += -lr g). A CSMD "
             "step is that pass plus the joint norm (taken block by block while each block "
             "is in cache) and, when the ball bites, one scaling pass. An OptimisticOMD round "
             "must read x_hat, g and the hint M and write x_hat, the hint (the copy of g) "
             "and the played point, and take two joint norms before it can scale: at least "
             "twice SGD's traffic even fused into one pass, and about six elementwise passes "
             "as torch ops (x_hat update and norm, deviation and its norm, hint copy, play "
             "and its norm) plus a scaling per bite. On this machine an elementwise pass costs "
             "about one SGD step and a norm about half of one, so a step's time follows its "
             "number of passes; the 1.5x target leaves room for one norm, not for a second "
             "array of state."]
    return lines, targets


CASES = [
    Case("a", f"CvxpySet projection onto a polytope in d = {DIM} ({HALFSPACES} halfspaces in "
         f"a box): parameterized re-solve against rebuilding", cvxpy_case, 100, 5),
    Case("b", "one optimizer step on ResNet-18's parameter shapes with a Ball domain, against "
         "torch.optim.SGD(foreach=True)", ball_step_case, 30, 0),
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
