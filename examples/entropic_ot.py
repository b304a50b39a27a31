"""Entropic optimal transport: marginal error against time, Sinkhorn against Sinkhorn-Newton-Sparse.

Two clouds of n uniform points in [0, 1]^d, uniform marginals, squared Euclidean cost scaled to
max 1 (seeded), in two regimes:

- **easy** (d = 2, reg = 1e-2): Sinkhorn converges in a few hundred iterations and
  ``entropic_ot(method="auto")`` never leaves it;
- **hard** (d = 10, reg = 1e-3: the plan is close to a permutation): Sinkhorn's error falls by a
  tiny factor per iteration, and "auto" switches to sparse Newton steps once its measured rate
  predicts a long run.

Each panel shows ``entropic_ot``'s log (the marginal error ``||P1 - a||_1 + ||P^T 1 - b||_1``
per iteration against seconds) for "auto" and "sinkhorn", and POT's ``sinkhorn_knopp`` (its
own stopping error, the L2 norm of the column marginal's violation, every 10 iterations, at
the run's mean time per iteration) when POT is installed. The figure goes to
``<out>/entropic_ot.png``. Run from the repository root:

    python examples/entropic_ot.py                 # about two minutes on one core
    python examples/entropic_ot.py --quick --out /tmp/ot
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from stochstep.samplers import entropic_ot  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="points per cloud")
    p.add_argument("--tol", type=float, default=1e-9, help="target marginal error")
    p.add_argument("--sinkhorn-iters", type=int, default=20000,
                   help="iteration cap of the Sinkhorn runs (ours and POT's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the point clouds")
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for the figure")
    p.add_argument("--quick", action="store_true", help="n = 100, 1000 Sinkhorn iterations")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.sinkhorn_iters = 100, 1000
    return args


def problem(n: int, d: int, seed: int):
    """Uniform marginals and the squared Euclidean cost (scaled to max 1) of two uniform clouds
    in [0, 1]^d (also the benchmark's problems)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    y = torch.rand(n, d, generator=gen, dtype=torch.float64)
    C = torch.cdist(x, y) ** 2
    a = torch.full((n,), 1 / n, dtype=torch.float64)
    return a, a.clone(), C / C.max()


def pot_curve(ot, a, b, C, reg, tol, iters):
    """POT's logged errors (every 10 iterations) against the times they were reached."""
    start = time.perf_counter()
    _, log = ot.sinkhorn(a.numpy(), b.numpy(), C.numpy(), reg, method="sinkhorn",
                         numItermax=iters, stopThr=tol, log=True, warn=False)
    seconds = time.perf_counter() - start
    errs = np.asarray(log["err"])
    times = seconds * np.minimum(10 * np.arange(1, errs.size + 1), log["niter"]) / log["niter"]
    return times, errs


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    try:
        import ot
    except ImportError:
        ot = None
        print("POT is not installed: our solver only (pip install pot for the comparison)")
    args.out.mkdir(parents=True, exist_ok=True)
    regimes = [("easy: d = 2, reg = 1e-2", 2, 1e-2), ("hard: d = 10, reg = 1e-3", 10, 1e-3)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (title, d, reg) in zip(axes, regimes):
        a, b, C = problem(args.n, d, args.seed)
        print(f"\n{title}, n = {args.n}")
        for method, cap in (("auto", 100_000), ("sinkhorn", args.sinkhorn_iters)):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the capped Sinkhorn run
                res = entropic_ot(a, b, C, reg, method=method, tol=args.tol, max_iter=cap)
            seconds = time.perf_counter() - start
            stages = res.log.stages
            print(f"  ours ({method}): marginal error {res.error.item():.2e} in {seconds:.2f} s "
                  f"({stages['sinkhorn']} Sinkhorn + {stages['newton']} Newton iterations)")
            ax.plot(res.log.time, res.log.marginal_error, label=f"entropic_ot ({method})")
        if ot is not None:
            times, errs = pot_curve(ot, a, b, C, reg, args.tol, args.sinkhorn_iters)
            print(f"  POT sinkhorn_knopp: its error {errs[-1]:.2e} in {times[-1]:.2f} s "
                  f"({min(10 * errs.size, args.sinkhorn_iters)} iterations)")
            ax.plot(times, errs, "--", label="POT sinkhorn_knopp (its L2 column error)")
        ax.axhline(args.tol, color="gray", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("marginal error")
        ax.set_title(f"{title}, n = {args.n}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = args.out / "entropic_ot.png"
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
