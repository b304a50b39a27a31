"""Entropic optimal transport: time to a marginal error against POT's ``sinkhorn_knopp`` (CPU).

Problems: two clouds of n uniform points in [0, 1]^d (seed 0), uniform marginals, squared
Euclidean cost scaled to max 1. The marginal error of a plan is
``||P 1 - a||_1 + ||P^T 1 - b||_1``.

- ``entropic_ot(method="auto")`` is run per tolerance (1e-6, 1e-9: its switch to Newton
  depends on the tolerance), timed end to end (easy cases: median of 3 runs; hard: 1), with
  its returned plan's error.
- POT 0.9.7 ``ot.sinkhorn(method="sinkhorn")`` (``sinkhorn_knopp``, POT's fastest method here)
  stops on its own criterion, the L2 norm of the column marginal's violation (checked every 10
  iterations), which is looser than the L1 error above. Easy cases: ``stopThr`` starts at the
  tolerance and is divided by 10 until the returned plan's L1 error meets it (at most 4 runs);
  then 3 rounds time ours and POT with that stopThr one after the other (interleaved, so that
  both see the same load of a shared machine) and the medians count. Hard cases (reg 1e-3):
  one run with ``stopThr=1e-9``, capped at 1e5 iterations or ``POT_TIME_CAP`` seconds
  (``numItermax`` from a 20-iteration probe); its time to 1e-6 is read off its own log (the
  first check with L2 error <= 1e-6, times the mean time per iteration): both readings favour
  POT.
- numpy (POT) and torch run on one thread.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import harness
from stochstep.samplers import entropic_ot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from entropic_ot import problem  # noqa: E402  (the example's clouds: one definition)

TOLS = (1e-6, 1e-9)
POT_ITER_CAP = 100_000
POT_TIME_CAP = 150.0  # seconds per hard POT run
EASY_REPEATS = 3  # easy cases: median of 3 runs each (a shared machine's timings jitter)
EASY_TARGET = 1.2  # auto at most 1.2x POT's time to the same tolerance (reg 1e-2)
HARD_TARGET = 20.0  # auto at least 20x faster than POT to 1e-6 (d = 10, reg 1e-3, n >= 1000)
# (n, d, reg); the hard cases stop at n = 2000: POT alone would need > 15 min beyond
CASES = [(500, 2, 1e-2), (1000, 10, 1e-2), (2000, 2, 1e-2), (4000, 2, 1e-2),
         (500, 10, 1e-3), (1000, 10, 1e-3), (2000, 10, 1e-3)]
QUICK_CASES = [(300, 2, 1e-2), (300, 10, 1e-3)]


def l1_error(P: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def ours(a, b, C, reg, tol, repeats) -> tuple[float, float, dict]:
    """Median seconds over ``repeats`` runs, returned plan's error, stages of
    ``entropic_ot(method="auto")``."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        res = entropic_ot(a, b, C, reg, method="auto", tol=tol)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), res.error.item(), res.log.stages


def pot_threshold(ot, a, b, C, reg, tol) -> tuple[float | None, float, int]:
    """The first stopThr of tol, tol/10, ... (at most 4) whose POT plan meets tol in L1, with
    that run's error and iterations; None when none does."""
    for k in range(4):
        P, log = ot.sinkhorn(a, b, C, reg, method="sinkhorn", stopThr=tol / 10 ** k,
                             numItermax=POT_ITER_CAP, log=True, warn=False)
        err = l1_error(P, a, b)
        if err <= tol:
            return tol / 10 ** k, err, log["niter"]
    return None, err, log["niter"]


def easy_pair(ot, problem_t, problem_np, reg, tol, repeats) -> tuple[tuple, tuple]:
    """Interleaved rounds of ours and POT (with its threshold for tol): ``(median seconds,
    error, stages)`` for ours and ``(median seconds or None, error, iterations)`` for POT."""
    threshold, pot_err, pot_iters = pot_threshold(ot, *problem_np, reg, tol)
    mine, theirs = [], []
    for _ in range(repeats):
        mine.append(ours(*problem_t, reg, tol, 1))
        if threshold is not None:
            start = time.perf_counter()
            ot.sinkhorn(*problem_np, reg, method="sinkhorn", stopThr=threshold,
                        numItermax=POT_ITER_CAP, warn=False)
            theirs.append(time.perf_counter() - start)
    _, err, stages = mine[-1]
    pot_sec = statistics.median(theirs) if theirs else None
    return (statistics.median(m[0] for m in mine), err, stages), (pot_sec, pot_err, pot_iters)


def pot_hard(ot, a, b, C, reg) -> dict:
    """One capped POT run to L2 1e-9: total seconds, iterations, final L1 error, and the
    seconds to its first L2 check <= each tolerance (None: not reached)."""
    start = time.perf_counter()
    ot.sinkhorn(a, b, C, reg, method="sinkhorn", numItermax=20, stopThr=0.0, warn=False)
    per_iter = (time.perf_counter() - start) / 20
    cap = int(min(POT_ITER_CAP, POT_TIME_CAP / per_iter))
    start = time.perf_counter()
    P, log = ot.sinkhorn(a, b, C, reg, method="sinkhorn", numItermax=cap, stopThr=1e-9,
                         log=True, warn=False)
    seconds = time.perf_counter() - start
    iters = max(log["niter"], 1)
    errs = np.asarray(log["err"])  # one entry per 10 iterations
    reached = {}
    for tol in TOLS:
        hit = np.nonzero(errs <= tol)[0]
        reached[tol] = None if not hit.size else seconds * min(10 * (hit[0] + 1), iters) / iters
    return dict(seconds=seconds, iters=log["niter"], cap=cap, error=l1_error(P, a, b),
                reached=reached)


def fmt(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.3g} s"


def run(rounds: int | None, quick: bool) -> str:
    """Run every case once (long runs: ``rounds`` is not used) and return the section."""
    try:
        import ot
    except ImportError:
        ot = None
    from threadpoolctl import threadpool_limits
    out = ["## ot\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           f"- POT {ot.__version__ if ot else 'not installed: ours only'}; easy cases: median "
           f"of {EASY_REPEATS} interleaved rounds, hard ones: one run (seconds to minutes long)",
           "- method: see the docstring of `benchmarks/ot.py` (POT's own L2 stopping rule, "
           "read in its favour)"]
    rows, targets = [], []
    for n, d, reg in (QUICK_CASES if quick else CASES):
        a, b, C = problem(n, d, seed=0)
        an, bn, Cn = a.numpy(), b.numpy(), C.numpy()
        hard = reg < 1e-2
        with threadpool_limits(1):
            if ot is None or hard:
                repeats = 1 if hard else EASY_REPEATS
                mine = {tol: ours(a, b, C, reg, tol, repeats) for tol in TOLS}
            if ot is None:
                theirs = {tol: (None, float("nan"), 0) for tol in TOLS}
            elif hard:
                pot = pot_hard(ot, an, bn, Cn, reg)
                theirs = {tol: (pot["reached"][tol], pot["error"], pot["iters"]) for tol in TOLS}
            else:
                pairs = {tol: easy_pair(ot, (a, b, C), (an, bn, Cn), reg, tol, EASY_REPEATS)
                         for tol in TOLS}
                mine = {tol: pair[0] for tol, pair in pairs.items()}
                theirs = {tol: pair[1] for tol, pair in pairs.items()}
        for tol in TOLS:
            sec, err, stages = mine[tol]
            pot_sec, pot_err, pot_iters = theirs[tol]
            ratio = "-" if pot_sec is None else f"{pot_sec / sec:.1f}x"
            rows.append([f"n={n} d={d} reg={reg:g}", f"{tol:g}", f"{sec:.3g} s",
                         f"{stages['sinkhorn']}+{stages['newton']}", f"{err:.1e}",
                         fmt(pot_sec), str(pot_iters), f"{pot_err:.1e}", ratio])
            print(" | ".join(rows[-1]), flush=True)
            if pot_sec is None and ot is not None:
                if hard and err <= tol:
                    targets.append(f"n={n} d={d} reg={reg:g} tol={tol:g}: ours reaches it in "
                                   f"{sec:.3g} s, POT not within {pot_iters} iterations")
                continue
            if ot is None:
                continue
            if hard and d == 10 and n >= 1000 and tol == 1e-6:
                speedup = pot_sec / sec
                verdict = "PASS" if speedup >= HARD_TARGET else "MISS"
                targets.append(f"hard n={n} d={d} reg={reg:g} to 1e-6: {speedup:.1f}x faster "
                               f"than POT (target >= {HARD_TARGET:g}x) {verdict}")
            if not hard:
                targets.append(harness.target_line(f"easy n={n} d={d} reg={reg:g} to {tol:g}, "
                                                   "auto / POT time", sec / pot_sec,
                                                   EASY_TARGET))
    headers = ["problem", "tol", "auto time", "auto Sinkhorn+Newton iterations",
               "auto error (L1)", "POT time", "POT iterations", "POT error (L1)",
               "POT time / auto time"]
    out += ["", harness.markdown_table(headers, rows), "\n### targets\n",
            *[f"- {t}" for t in targets],
            f"\nRerun from the repository root: `{harness.rerun_command('ot', None, quick)}`"]
    return "\n".join(out)
