"""Convex two-layer ReLU networks: the ADMM, ADMM-RBCD and the interior-point method against
cvxpy (Clarabel, SCS) (CPU, one thread).

Cases:

(a) Time to the same objective: on random regression data (``X ~ N(0, I)``, ``y = relu(x_1) -
    x_2 + 0.1 N(0, 1)``, beta = 1e-3) and the same sampled patterns, Clarabel's optimum (at
    tolerance 1e-8) is the reference; each contender's time to an objective within 1e-4
    (relative) of it. Clarabel and SCS (``CVXPY_SOLVER_OPTIONS``) report their solve time and
    final objective; the ADMM (the defaults, and the paper's form: one penalty, no
    over-relaxation) and the interior-point method (``solver="ipm"``, tol 1e-8) their time
    until the objective enters the band for good (their per-iteration history), the setup
    included. SCS and the ADMM run only where ``n * P <= CVXPY_MAX_SIZE``, Clarabel where
    ``n * P <= CLARABEL_MAX_SIZE``; above it the interior-point method runs alone (its time,
    Newton steps and final duality-gap bound).
(b) The ADMM's time per iteration against n (d = 20, 50 directions drawn, no residual
    balancing, so no refactorization), after the one-time
    factorization, and the log-log slope in n; the setup (forming F^T F, factorizing) apart.
(c) Memory: the bytes the ADMM keeps (computed: the factor and F^T F, or CG's d x d blocks, and
    the iterates), and the peak resident memory a fit adds (sampled every millisecond in a
    fresh process).
(d) The target of issue 16 (``python -m benchmarks.convex_relu --big``, not part of ``run``:
    about 40 minutes): n = 5000, d = 20, 100 directions as in (a); the interior-point method to
    tol 1e-8 (T_ipm seconds), then Clarabel on the same patterns with its ``time_limit`` at
    ``BIG_CAP`` * T_ipm. If Clarabel hits the cap, fastest cvxpy / IPM > BIG_CAP; else the ratio,
    and the two objectives compared. Peak memory from ``getrusage`` (the process's high-water
    mark after each solver). SCS is not run: at n = 500 it was 10 times slower than Clarabel.
(e) The interior-point method against its earlier log-barrier version (``python -m
    benchmarks.convex_relu --ipm-versions``, not part of ``run``): that version's module read
    from git commit ``BARRIER_COMMIT``; both on the same problems and patterns as (a) (each
    sampling them itself, so the log-barrier version starts from their directions),
    interleaved (``harness.time_interleaved``, one thread); Newton steps, median seconds, their
    ratio, the median CPU seconds of the fits (``time.process_time``) and the objectives.
(f) ADMM-RBCD (``solver="admm_rbcd"``, defaults, tol 1e-9, at most ``RBCD_MAX_ITER``
    iterations; beta = 1e-3 as in (a), and 0.1) for the logistic and hinge losses on the labels ``1[y > 0]`` of (a)'s data, a
    tenth of them flipped at random (``LABEL_FLIPS``), and the same sampled patterns: Clarabel's optimum and time as in (a), ADMM-RBCD's time until
    its objective is within 1e-4 (relative) of it for good, its final gap, and for the hinge
    loss the bound ``smoothing_bound_`` on what the smoothing (``hinge_smoothing`` = 1e-2)
    costs.
"""

from __future__ import annotations

import datetime
import math
import sys
import multiprocessing
import resource
import threading
import time
import warnings

import numpy as np
import torch

from benchmarks import harness
from stochstep.optimizers import ConvexReLU
from stochstep.optimizers.convex_relu import sample_patterns

BETA = 1e-3
GAP = 1e-4
CVXPY_MAX_SIZE = 50_000          # n * P above which SCS and the ADMM are skipped (> 5 min)
CLARABEL_MAX_SIZE = 100_000      # n * P above which Clarabel is skipped
IPM_TOL = 1e-8
TIME_GRID = [(500, 10, 30), (2000, 20, 50), (5000, 20, 100)]
TIME_GRID_QUICK = [(200, 5, 20)]
ADMM_MAX_ITER = 8000
SLOPE_NS = [500, 1000, 2000, 5000, 10_000, 20_000]
SLOPE_NS_QUICK = [200, 400, 800]
SLOPE_ITERS = 20
BIG = (5000, 20, 100)
BARRIER_COMMIT = "620604a"          # the log-barrier interior-point method (case (e))
VERSIONS_GRID = [(500, 10, 30, 3), (2000, 20, 50, 2)]   # n, d, directions, rounds
BIG_CAP = 12
MEMORY_GRID = [(2000, 20, 50, "cholesky"), (10_000, 20, 50, "cholesky"),
               (10_000, 20, 50, "cg"), (20_000, 100, 200, "cg")]
RBCD_GRID = [(500, 10, 30, BETA), (500, 10, 30, 0.1)]
RBCD_GRID_QUICK = [(100, 4, 10, 0.1)]
RBCD_MAX_ITER = 4000
LABEL_FLIPS = 0.1


def problem(n: int, d: int, directions: int, seed: int = 0):
    """Random regression data and its sampled patterns."""
    X, y, gen = _data(n, d, seed)
    return X, y, sample_patterns(X, directions, gen)


def _data(n: int, d: int, seed: int):
    """The data of :func:`problem` and the generator that then draws its patterns."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.relu(X[:, 0]) - X[:, 1] + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return X, y, gen


def fit_ipm(n: int, d: int, directions: int, seed: int = 0) -> ConvexReLU:
    """The interior-point method on :func:`problem`'s program, sampling the same patterns
    itself."""
    X, y, gen = _data(n, d, seed)
    model = ConvexReLU(directions, beta=BETA, solver="ipm", tol=IPM_TOL, generator=gen)
    return model.fit(X, y)


def time_to_band(model: ConvexReLU, reference: float) -> float:
    """Seconds until the ADMM's objective is within GAP of ``reference`` for good (inf if not)."""
    objective, times = model.history_["objective"], model.history_["time"]
    inside = [abs(f - reference) <= GAP * abs(reference) for f in objective]
    if not inside[-1]:
        return math.inf
    k = len(inside) - 1
    while k > 0 and inside[k - 1]:
        k -= 1
    return times[k]


def fmt(seconds: float) -> str:
    return "not reached" if math.isinf(seconds) else f"{seconds:.2f}"


def case_time(grid) -> tuple[list[str], list[str]]:
    rows, notes = [], []
    for n, d, directions in grid:
        X, y, D = problem(n, d, directions)
        P = D.shape[1]
        ipm = fit_ipm(n, d, directions)
        assert torch.equal(ipm.patterns_, D)
        if n * P > CLARABEL_MAX_SIZE:
            gap = ipm.history_["gap"][-1] / ipm.objective_
            rows.append([str(n), str(d), str(P), "-", "-", "-", "-",
                         f"{ipm.history_['time'][-1]:.2f} ({ipm.n_iter_} steps, gap "
                         f"{gap:.1e})", "-", "-"])
            notes.append(f"n = {n}, d = {d}, P = {P}: the interior-point method alone (n P = "
                         f"{n * P} > {CLARABEL_MAX_SIZE}): its time to a relative duality gap "
                         f"and residuals of {IPM_TOL:g}, no reference; see case (d)")
            print(" | ".join(rows[-1]), flush=True)
            continue
        fits = {}
        for name in ("CLARABEL", "SCS"):
            if name == "SCS" and n * P > CVXPY_MAX_SIZE:
                fits[name] = (math.nan, math.nan)
                continue
            model = ConvexReLU(directions, beta=BETA, solver="cvxpy", cvxpy_solver=name)
            try:
                model.fit(X, y, patterns=D)
                fits[name] = (model.history_["time"], model.objective_)
            except RuntimeError as err:
                fits[name] = (math.nan, math.nan)
                notes.append(f"n = {n}: {name} failed: {err}")
        reference = fits["CLARABEL"][1]
        row = [str(n), str(d), str(P)]
        for name in ("CLARABEL", "SCS"):
            seconds, objective = fits[name]
            gap = abs(objective - reference) / abs(reference)
            row.append("-" if math.isnan(seconds) else
                       f"{seconds:.2f}" + ("" if gap <= GAP else f" (gap {gap:.1e})"))
        admm_seconds = {"defaults": math.nan}
        for label, kwargs in (("defaults", {}),
                              ("paper form", dict(rho_cone=0.01, relaxation=1.0))):
            if n * P > CVXPY_MAX_SIZE:
                row.append("-")
                continue
            model = ConvexReLU(directions, beta=BETA, tol=1e-9, max_iter=ADMM_MAX_ITER,
                               **kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                model.fit(X, y, patterns=D)
            seconds = admm_seconds[label] = time_to_band(model, reference)
            times = model.history_["time"]
            iters = next((k + 1 for k in range(len(times)) if times[k] >= seconds), "-")
            final_gap = (model.objective_ - reference) / abs(reference)
            row.append(f"{fmt(seconds)} ({iters} it., final gap {final_gap:+.1e})")
        ipm_seconds = time_to_band(ipm, reference)
        times = ipm.history_["time"]
        steps = next((k + 1 for k in range(len(times)) if times[k] >= ipm_seconds), "-")
        final_gap = (ipm.objective_ - reference) / abs(reference)
        row.append(f"{fmt(ipm_seconds)} ({steps} steps, final gap {final_gap:+.1e})")
        fastest = np.nanmin([fits["CLARABEL"][0], fits["SCS"][0]])
        for seconds in (admm_seconds["defaults"], ipm_seconds):
            speedup = fastest / seconds
            row.append(f"{speedup:.2f}" if speedup > 0 else "-")
        rows.append(row)
        print(" | ".join(row), flush=True)
    targets = [f"n = {row[0]}, d = {row[1]}, P = {row[2]}: fastest cvxpy / ADMM {row[8]}, "
               f"fastest cvxpy / IPM {row[9]}" for row in rows if row[3] != "-"]
    targets.append("target (issue 16): 10x the fastest cvxpy solver at n = 5000, d = 20, "
                   "P = 100; cvxpy not run there (see the notes)")
    lines = [harness.markdown_table(
        ["n", "d", "P", "Clarabel s", "SCS s", "ADMM s (defaults)", "ADMM s (paper form)",
         "IPM s", "fastest cvxpy / ADMM", "fastest cvxpy / IPM"], rows)] + [
        f"- {note}" for note in notes]
    return lines, targets


def case_slope(ns) -> tuple[list[str], list[str]]:
    rows, per_iter = [], []
    for n in ns:
        X, y, D = problem(n, 20, 50)
        model = ConvexReLU(50, beta=BETA, max_iter=SLOPE_ITERS + 1, linear_solver="cholesky",
                           balance=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(X, y, patterns=D)
        t = model.history_["time"]
        per_iter.append((t[-1] - t[0]) / SLOPE_ITERS)
        rows.append([str(n), str(D.shape[1]), f"{t[0]:.3f}", f"{1e3 * per_iter[-1]:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    slope = float(np.polyfit(np.log(ns), np.log(per_iter), 1)[0])
    lines = [harness.markdown_table(["n", "P", "setup + 1st iteration s", "ms / iteration"],
                                    rows),
             f"\n- log-log slope of the time per iteration in n: {slope:.2f}"]
    return lines, [f"ADMM per-iteration time ~ n^{slope:.2f} (target: at most linear): "
                   f"{'met' if slope <= 1.1 else 'NOT met'}"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _memory_child(n: int, d: int, directions: int, linear_solver: str, queue) -> None:
    """Fit in a fresh process while a thread samples the resident memory every millisecond;
    put (P, peak minus the resident memory before the fit) on ``queue``."""
    torch.set_num_threads(1)
    X, y, D = problem(n, d, directions)
    before, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(1e-3)
    sampler = threading.Thread(target=sample)
    sampler.start()
    model = ConvexReLU(directions, beta=BETA, max_iter=3, linear_solver=linear_solver)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(X, y, patterns=D)
    done.set()
    sampler.join()
    queue.put((D.shape[1], max(peak[0], _rss_bytes()) - before))


def case_memory(grid) -> tuple[list[str], list[str]]:
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for n, d, directions, linear_solver in grid:
        queue = ctx.Queue()
        child = ctx.Process(target=_memory_child, args=(n, d, directions, linear_solver, queue))
        child.start()
        P, measured = queue.get()
        child.join()
        unknowns = 2 * d * P
        if linear_solver == "cholesky":   # the factor, F^T F's block K, X^T X
            kept = unknowns ** 2 + (d * P) ** 2 + d * d
        else:                             # the (d, d) blocks and their Cholesky factors
            kept = 4 * P * d * d + d * d
        # u, v, lambda (2P, d); s, nu, Gu and the two (n, 2P) sign/mask matrices
        kept += 3 * unknowns + 5 * n * 2 * P
        rows.append([str(n), str(d), str(P), linear_solver, f"{8 * kept / 2**20:.1f}",
                     f"{measured / 2**20:.1f}"])
        print(" | ".join(rows[-1]), flush=True)
    return [harness.markdown_table(
        ["n", "d", "P", "u-step", "computed MiB", "peak RSS added, MiB"], rows),
        "\n- measured: the resident memory sampled every millisecond during a 3-iteration fit "
        "in a fresh process, minus the resident memory before it (the fit's temporaries, such "
        "as the matrix before its factorization, included)"], []


def _max_rss_mib() -> float:
    """The process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_big(n: int, d: int, directions: int, cap: float = BIG_CAP) -> list[str]:
    """Case (d): the interior-point method, then Clarabel capped at ``cap`` times its time;
    markdown lines."""
    from unittest import mock

    from stochstep.optimizers import convex_relu
    torch.set_num_threads(1)
    X, y, D = problem(n, d, directions)
    rss_start = _max_rss_mib()
    ipm = fit_ipm(n, d, directions)
    assert torch.equal(ipm.patterns_, D)
    t_ipm, rss_ipm = ipm.history_["time"][-1], _max_rss_mib()
    print(f"IPM: {t_ipm:.2f} s, {ipm.n_iter_} steps, objective {ipm.objective_:.10g}, "
          f"peak RSS {rss_ipm:.0f} MiB", flush=True)
    limit = cap * t_ipm
    options = dict(convex_relu.CVXPY_SOLVER_OPTIONS["CLARABEL"], time_limit=limit)
    model = ConvexReLU(directions, beta=BETA, solver="cvxpy", cvxpy_solver="CLARABEL")
    start = time.perf_counter()
    with mock.patch.dict(convex_relu.CVXPY_SOLVER_OPTIONS, {"CLARABEL": options}):
        try:
            model.fit(X, y, patterns=D)
            error = None
        except RuntimeError as err:
            error = str(err)
    wall = time.perf_counter() - start
    rss_clarabel = _max_rss_mib()
    status = getattr(model, "history_", {}).get("status", "no status")
    print(f"Clarabel: {wall:.2f} s (status {status}; {error}), peak RSS {rss_clarabel:.0f} MiB",
          flush=True)
    lines = [f"- n = {n}, d = {d}, P = {D.shape[1]}; IPM (tol {IPM_TOL:g}): {t_ipm:.2f} s, "
             f"{ipm.n_iter_} Newton steps, objective {ipm.objective_:.10g}, final gap "
             f"{ipm.history_['gap'][-1] / ipm.objective_:.1e} relative"]
    if error is None:
        gap = (ipm.objective_ - model.objective_) / abs(model.objective_)
        ipm_band = time_to_band(ipm, model.objective_)
        lines += [f"- Clarabel (time limit {limit:.0f} s): done in {wall:.2f} s (the solve "
                  f"call, cvxpy's compile included), objective {model.objective_:.10g}; IPM "
                  f"relative to it {gap:+.1e}",
                  f"- fastest cvxpy / IPM: {wall / t_ipm:.2f} (IPM to tol {IPM_TOL:g}); "
                  f"{wall / ipm_band:.2f} (IPM to the 1e-4 band: {fmt(ipm_band)} s)"]
    else:
        lines += [f"- Clarabel (time limit {limit:.0f} s = {cap:g} T_ipm): not done after "
                  f"{wall:.0f} s (status {status!r}); fastest cvxpy / IPM > {cap:g}"]
    lines.append(f"- peak resident memory (process high-water mark): {rss_start:.0f} MiB "
                 f"with the data, {rss_ipm:.0f} MiB after the IPM, {rss_clarabel:.0f} MiB "
                 "after Clarabel")
    return lines


def _barrier_version():
    """``ConvexReLU`` of ``optimizers/convex_relu.py`` at ``BARRIER_COMMIT``, imported from
    ``git show`` as a module of its own."""
    import importlib.util
    import pathlib
    import subprocess
    import tempfile
    root = pathlib.Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{BARRIER_COMMIT}:optimizers/convex_relu.py"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "convex_relu_barrier.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("convex_relu_barrier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ConvexReLU


def case_ipm_versions(grid=VERSIONS_GRID) -> list[str]:
    """Case (e): the primal-dual method against the log-barrier one, interleaved; markdown."""
    torch.set_num_threads(1)
    versions = {"log-barrier": _barrier_version(), "primal-dual": ConvexReLU}
    rows = []
    for n, d, directions, rounds in grid:
        D = problem(n, d, directions)[2]
        fits, cpu = {}, {name: [] for name in versions}

        def step(name):
            def fit():    # each samples the patterns itself, as fit_ipm (the old one's start)
                X, y, gen = _data(n, d, 0)
                model = versions[name](directions, beta=BETA, solver="ipm", tol=IPM_TOL,
                                       generator=gen)
                start = time.process_time()
                fits[name] = model.fit(X, y)
                cpu[name].append(time.process_time() - start)
            return fit
        times = harness.time_interleaved({name: step(name) for name in versions}, rounds, 0)
        seconds = {name: float(np.median(t)) for name, t in times.items()}
        ratio = harness.median_ratio(times, "log-barrier", "primal-dual")
        old, new = fits["log-barrier"], fits["primal-dual"]
        assert torch.equal(old.patterns_, D) and torch.equal(new.patterns_, D)
        rows.append([str(n), str(d), str(D.shape[1]), str(rounds), str(old.n_iter_),
                     str(new.n_iter_), f"{seconds['log-barrier']:.2f}",
                     f"{seconds['primal-dual']:.2f}", f"{ratio:.2f}",
                     f"{np.median(cpu['log-barrier']):.2f} / {np.median(cpu['primal-dual']):.2f}",
                     f"{(new.objective_ - old.objective_) / old.objective_:+.1e}"])
        print(" | ".join(rows[-1]), flush=True)
    return [harness.markdown_table(
        ["n", "d", "P", "rounds", "log-barrier steps", "primal-dual steps", "log-barrier s",
         "primal-dual s", "log-barrier / primal-dual (median of rounds)",
         "CPU s, log-barrier / primal-dual",
         "objective, primal-dual vs log-barrier"], rows)]


def case_rbcd(grid) -> tuple[list[str], list[str]]:
    rows = []
    for n, d, directions, beta in grid:
        X, y, D = problem(n, d, directions)
        # a tenth of the labels flipped: on the clean labels the network nearly separates the
        # data, and Clarabel fails on the logistic program (exponential cones, large weights)
        flips = torch.rand(n, generator=torch.Generator().manual_seed(1)) < LABEL_FLIPS
        labels = ((y > 0) ^ flips).double()
        P = D.shape[1]
        for loss in ("logistic", "hinge"):
            oracle = ConvexReLU(directions, beta=beta, loss=loss, solver="cvxpy",
                                cvxpy_solver="CLARABEL").fit(X, labels, patterns=D)
            reference = oracle.objective_
            model = ConvexReLU(directions, beta=beta, loss=loss, solver="admm_rbcd", tol=1e-9,
                               max_iter=RBCD_MAX_ITER, generator=torch.Generator().manual_seed(0))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                model.fit(X, labels, patterns=D)
            seconds = time_to_band(model, reference)
            times = model.history_["time"]
            iters = next((k + 1 for k in range(len(times)) if times[k] >= seconds), "-")
            final_gap = (model.objective_ - reference) / abs(reference)
            bound = (f"{model.smoothing_bound_ / abs(reference):.1e}" if loss == "hinge"
                     else "-")
            rows.append([str(n), str(d), str(P), f"{beta:g}", loss,
                         f"{oracle.history_['time']:.2f}",
                         f"{fmt(seconds)} ({iters} it.)", f"{final_gap:+.1e}",
                         f"{model.n_iter_} / {times[-1]:.1f} s", bound])
            print(" | ".join(rows[-1]), flush=True)
    return [harness.markdown_table(
        ["n", "d", "P", "beta", "loss", "Clarabel s", "ADMM-RBCD s to 1e-4", "final gap",
         "iterations / time", "smoothing bound (relative)"], rows)], []


def run(rounds: int | None, quick: bool) -> str:
    """Run the cases (``rounds`` is not used: each case is one timed run) and return the
    RESULTS.md section."""
    torch.set_num_threads(1)
    out = ["## convex_relu\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- method: one run per contender (minutes-long solves), one thread; times include "
           "the ADMM's factorization and cvxpy's solve, not cvxpy's compile"]
    targets = []
    for title, case, arg in (
            ("(a) time to the reference objective (relative 1e-4)", case_time,
             TIME_GRID_QUICK if quick else TIME_GRID),
            ("(b) ADMM time per iteration against n (d = 20, 50 directions)", case_slope,
             SLOPE_NS_QUICK if quick else SLOPE_NS),
            ("(c) memory", case_memory, [] if quick else MEMORY_GRID),
            ("(f) ADMM-RBCD, logistic and hinge losses", case_rbcd,
             RBCD_GRID_QUICK if quick else RBCD_GRID)):
        if not arg:
            continue
        print(f"\n{title}", flush=True)
        lines, case_targets = case(arg)
        out += [f"\n### {title}\n", *lines]
        targets += case_targets
    out += ["\n### targets\n", *[f"- {t}" for t in targets],
            f"\nRerun from the repository root: "
            f"`{harness.rerun_command('convex_relu', rounds, quick)}`"]
    return "\n".join(out)


if __name__ == "__main__":
    cases = {"--big": lambda: case_big(*BIG), "--ipm-versions": case_ipm_versions}
    if len(sys.argv) != 2 or sys.argv[1] not in cases:
        sys.exit("usage: python -m benchmarks.convex_relu --big | --ipm-versions  (cases (d) "
                 "and (e); the others: python -m benchmarks convex_relu)")
    harness.set_threads()
    harness.pin_allocator()
    print(f"- machine: {harness.machine()}", flush=True)
    print("\n".join(cases[sys.argv[1]]()))
