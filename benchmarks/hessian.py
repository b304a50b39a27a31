"""Hessian trace / top eigenvalue / spectral density against PyHessian (CPU, one thread).

Two tanh MLPs on a fixed class-structured batch of 512 (784 inputs, 10 classes,
cross-entropy; see :func:`make_problem`):
784-24-24-10 (19,690 parameters; the exact trace is computed from all diagonal entries of H
and the reference eigenvalue by float64 Lanczos with a residual bound) and 784-256-256-10
(269,322 parameters; float64 Lanczos reference). Every timed call includes building the
Hessian operator at the point (PyHessian's constructor: forward + create-graph backward).
"""

from __future__ import annotations

import copy
import datetime
import math
import statistics
import time

import torch

from benchmarks import harness
from stochstep.theory_checks import (hessian_trace, loss_from_model, spectral_density,
                                     top_eigenvalues)
from stochstep.theory_checks.hessian import HessianOperator

OURS_TR = "ours hessian_trace (100 probes)"
PYH_TR = "PyHessian trace (100 probes)"
OURS_EIG = "ours Lanczos (20 iters)"
PYH_EIG = "PyHessian power iteration (defaults)"


def make_problem(hidden: int, seed: int = 0):
    """A seeded tanh MLP (torch's default uniform init) and a class-structured batch of 512.

    Inputs are ``3 mu_y + noise`` with one Gaussian mean per class, so the Hessian has the
    class outliers seen on real data (Papyan 2019). With random labels instead, the top
    eigenvalue sits at the edge of the bulk with a ~1% gap, and 20 HVPs are not enough for any
    method (seen: Lanczos 1e-4 to 2e-2 relative error, PyHessian's power iteration 2e-2 or the
    wrong eigenvalue, since it targets the largest magnitude).
    """
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, 10))
    with torch.no_grad():
        for m in model:
            if isinstance(m, torch.nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                for p in (m.weight, m.bias):
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
    means = torch.randn(10, 784, generator=gen)
    y = torch.randint(0, 10, (512,), generator=gen)
    x = 3 * means[y] + torch.randn(512, 784, generator=gen)
    return model.eval(), x, y


def exact_trace(loss_fn, params, block: int = 8) -> float:
    """Sum of all diagonal entries of H, from batched HVPs with unit vectors (float64)."""
    op = HessianOperator(loss_fn, [p.double() for p in params], "autograd")
    total = 0.0
    for start in range(0, op.n, block):
        idx = torch.arange(start, min(start + block, op.n))
        e = torch.zeros(len(idx), op.n, dtype=torch.float64)
        e[torch.arange(len(idx)), idx] = 1.0
        total += op(e)[torch.arange(len(idx)), idx].sum().item()
    return total


def reference_eig(loss_fn, params, iters: int) -> tuple[float, float]:
    """Largest algebraic eigenvalue by float64 Lanczos, and its residual ||Hv - lambda v||."""
    lam, (vec,) = top_eigenvalues(loss_fn, params, iters=iters, dtype=torch.float64,
                                  eigenvectors=True, generator=torch.Generator().manual_seed(9))
    op = HessianOperator(loss_fn, [p.double() for p in params], "autograd")
    v = torch.cat([c.reshape(-1) for c in vec])
    return lam.item(), (op(v) - lam.item() * v).norm().item()


def pyhessian_maker(model, x, y):
    from pyhessian import hessian
    m = copy.deepcopy(model)
    crit = torch.nn.CrossEntropyLoss()

    def make():
        for p in m.parameters():  # PyHessian leaves a create-graph graph in p.grad
            p.grad = None
        return hessian(m, crit, data=(x, y), cuda=False)
    return make


def run_case(hidden: int, rounds: int, exact: bool, lines: list[str], results: dict) -> str:
    model, x, y = make_problem(hidden)
    loss_fn, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    n = sum(p.numel() for p in params)
    make_pyh = pyhessian_maker(model, x, y)
    title = f"784-{hidden}-{hidden}-10 MLP, {n:,} parameters, batch 512"
    print(f"\ncase {title}", flush=True)

    t0 = time.perf_counter()
    ref_lam, ref_res = reference_eig(loss_fn, params, 120 if exact else 80)
    ref_tr = exact_trace(loss_fn, params) if exact else None
    print(f"  references in {time.perf_counter() - t0:.1f} s: lambda_max {ref_lam:.8g} "
          f"(residual {ref_res:.1e})" + (f", exact trace {ref_tr:.8g}" if exact else ""),
          flush=True)

    out: dict[str, list] = {OURS_TR: [], PYH_TR: [], OURS_EIG: [], PYH_EIG: []}
    seeds = iter(range(10_000))

    def ours_tr():
        out[OURS_TR].append(hessian_trace(loss_fn, params, probes=100,
                                          generator=torch.Generator().manual_seed(next(seeds))))

    def pyh_tr():
        torch.manual_seed(next(seeds))  # PyHessian draws from the global RNG
        # tol=-inf: never stops early (its test divides by the running trace, which can be
        # negative, so a finite negative tol can still stop it)
        s = make_pyh().trace(maxIter=100, tol=-math.inf)
        assert len(s) == 100, len(s)
        out[PYH_TR].append((statistics.mean(s), statistics.stdev(s) / math.sqrt(len(s))))

    def ours_eig():
        out[OURS_EIG].append(top_eigenvalues(loss_fn, params, k=1, iters=20,
                             generator=torch.Generator().manual_seed(next(seeds))).item())

    def pyh_eig():
        torch.manual_seed(next(seeds))
        out[PYH_EIG].append(make_pyh().eigenvalues()[0][0])

    times = harness.time_interleaved({OURS_TR: ours_tr, PYH_TR: pyh_tr, OURS_EIG: ours_eig,
                                      PYH_EIG: pyh_eig}, rounds, 1)
    tr_ratio = harness.median_ratio(times, OURS_TR, PYH_TR)
    eig_ratio = harness.median_ratio(times, OURS_EIG, PYH_EIG)

    # PyHessian's default trace (tol=1e-3 stops early) for the record
    torch.manual_seed(12345)
    default_samples = make_pyh().trace()

    def tr_cell(est, se):
        if ref_tr is None:
            return f"{est:.4f} ± {se:.4f}", "n/a"
        rel = abs(est - ref_tr) / abs(ref_tr)
        return f"{est:.4f} ± {se:.4f}", f"{abs(est - ref_tr) / se:.2f} s.e. ({rel:.2%})"

    rows = []
    for name in (OURS_TR, PYH_TR):
        est, se = out[name][-1]
        cell, err = tr_cell(est, se)
        rows.append([name, f"{1e3 * statistics.median(times[name]):.0f}",
                     f"{harness.median_ratio(times, name, PYH_TR):.2f}x", cell, err])
    d_mean = statistics.mean(default_samples)
    d_se = statistics.stdev(default_samples) / math.sqrt(len(default_samples))
    cell, err = tr_cell(d_mean, d_se)
    rows.append([f"PyHessian trace (default tol, used {len(default_samples)} probes)", "-", "-",
                 cell, err])
    for name in (OURS_EIG, PYH_EIG):
        errs = [abs(v - ref_lam) / abs(ref_lam) for v in out[name]]
        rows.append([name, f"{1e3 * statistics.median(times[name]):.0f}",
                     f"{harness.median_ratio(times, name, PYH_EIG):.2f}x",
                     f"{out[name][-1]:.8g}", f"rel. err. median {statistics.median(errs):.1e}, "
                     f"max {max(errs):.1e}"])
    table = harness.markdown_table(["contender", "median ms", "vs PyHessian", "value",
                                    "error"], rows)
    ref = (f"references: lambda_max = {ref_lam:.8g} (float64 Lanczos, residual "
           f"{ref_res:.1e})" + (f"; exact trace = {ref_tr:.8g} (all diagonal entries)"
                                if exact else "; no exact trace at this size"))
    print(table + "\n" + ref, flush=True)

    ours_tr_errs = ([abs(e - ref_tr) / s for e, s in out[OURS_TR]] if exact else [])
    eig_errs = [abs(v - ref_lam) / abs(ref_lam) for v in out[OURS_EIG]]
    results[hidden] = dict(tr_ratio=tr_ratio, eig_ratio=eig_ratio, tr_se=ours_tr_errs,
                           eig_err=max(eig_errs))
    return f"\n### {title}, {rounds} rounds\n\n{table}\n\n{ref}"


def density_demo() -> list[str]:
    """PyHessian's density() on this torch vs ours on the small MLP."""
    model, x, y = make_problem(24)
    lines = []
    try:
        torch.manual_seed(0)
        pyhessian_maker(model, x, y)().density(iter=10, n_v=1)
        lines.append("PyHessian density(): ran")
    except Exception as exc:  # noqa: BLE001 - the point is to show the failure
        lines.append(f"PyHessian density() fails on torch {torch.__version__}: "
                     f"`{type(exc).__name__}: {str(exc).splitlines()[0][:120]}`")
    loss_fn, params = loss_from_model(model, torch.nn.CrossEntropyLoss(), (x, y))
    t = time.perf_counter()
    sd = spectral_density(loss_fn, params, iters=80, runs=2,
                          generator=torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - t
    lines.append(f"ours spectral_density(iters=80, runs=2) on the 19,690-parameter MLP: "
                 f"{elapsed:.2f} s, density integrates to "
                 f"{torch.trapezoid(sd.density, sd.grid).item():.6f}, nodes in "
                 f"[{sd.nodes.min().item():.4g}, {sd.nodes.max().item():.4g}], mean "
                 f"{(sd.nodes * sd.weights).sum(1).mean().item():.4g} (tr/n estimate)")
    return lines


def run(rounds: int | None, quick: bool) -> str:
    """Run both cases and the density demo; print targets; return the RESULTS.md section."""
    try:
        import pyhessian  # noqa: F401
    except ImportError as exc:
        msg = f"skipped: PyHessian not installed ({exc}); `pip install pyhessian`"
        print(msg, flush=True)
        return f"## hessian\n\n{msg}"
    out = ["## hessian\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- method: contenders interleaved in one process (order shuffled per round, seed 0), "
           "one warm-up round discarded, ratios are medians of per-round ratios; every call "
           "includes building the operator at the point (PyHessian: its constructor)",
           "- ours: `hessian_trace(probes=100)` (Rademacher, reverse-over-reverse HVPs through "
           "one retained graph), `top_eigenvalues(k=1, iters=20)` (Lanczos, full "
           "reorthogonalization), float32; PyHessian 0.1 with `cuda=False`, "
           "`trace(maxIter=100, tol=-inf)` (all 100 probes), `eigenvalues()` defaults "
           "(maxIter=100, tol=1e-3)",
           "- errors in s.e. are |estimate - exact| / (the estimate's own standard error)"]
    results: dict = {}
    lines: list[str] = []
    small_rounds = rounds or (3 if quick else 7)
    big_rounds = rounds or (2 if quick else 5)
    out.append(run_case(24, small_rounds, True, lines, results))
    out.append(run_case(256, big_rounds, False, lines, results))
    demo = density_demo()
    print("\n".join(demo), flush=True)
    out += ["\n### spectral density\n", *[f"- {d}" for d in demo]]
    worst_se = max(results[24]["tr_se"])
    targets = [
        f"trace error on the 19,690-parameter MLP (exact trace): worst of "
        f"{len(results[24]['tr_se'])} runs {worst_se:.2f} s.e. (target <= 3) "
        f"{'PASS' if worst_se <= 3 else 'MISS'}",
        harness.target_line("trace time, ours / PyHessian at 100 probes, 269,322 parameters",
                            results[256]["tr_ratio"], 0.9),
    ]
    for h in (24, 256):
        r = results[h]
        ok = r["eig_err"] <= 1e-5
        targets.append(f"Lanczos 20 iters relative error ({'19,690' if h == 24 else '269,322'}"
                       f" params): max {r['eig_err']:.1e} (target <= 1e-5) "
                       f"{'PASS' if ok else 'MISS'}")
        targets.append(harness.target_line(
            f"Lanczos time / PyHessian power iteration ({'19,690' if h == 24 else '269,322'})",
            r["eig_ratio"], 1.5))
    ours_ok = "integrates to 1.0000" in demo[-1]
    targets.append(f"spectral density on torch {torch.__version__}: ours "
                   f"{'works' if ours_ok else 'FAILED'}; {demo[0]}")
    print("\n" + "\n".join(targets), flush=True)
    command = harness.rerun_command("hessian", rounds, quick)
    out += ["\n### targets\n", *[f"- {t}" for t in targets],
            f"\nRerun from the repository root: `{command}`"]
    return "\n".join(out)
