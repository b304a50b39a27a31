"""Sparse regression with composite stochastic mirror descent: the last iterate is sparse.

The lasso on generated data (Liu & Zhou, arXiv 2312.08531: composite stochastic mirror descent,
whose *last* iterate converges):

    F(x) = ||A x - b||^2 / (2 n) + lam ||x||_1,   b = A x* + noise,  x* with k nonzeros.

CSMD (``stochstep.optimizers.online.CSMD`` with ``prox="l1"``) takes a minibatch gradient of the
least-squares part and soft-thresholds, so its iterates have exact zeros; the running average
of the iterates, the classical answer of SGD analyses, mixes every iterate's support and is
dense. Both are compared on F(x) - F* (F* from cvxpy) for the anytime schedule lr/sqrt(t) and
the known-horizon linear decay lr (T - t + 1)/T^1.5, and on the support they recover.

The figure goes to ``<out>/sparse_regression.png``. Run from the repository root:

    python examples/sparse_regression.py                  # about half a minute on one core
    python examples/sparse_regression.py --quick --out /tmp/sparse
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import cvxpy as cp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.optimizers.online import CSMD  # noqa: E402

F64 = torch.float64
SCHEDULES = ("sqrt_t", "linear_decay")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=10000, help="CSMD steps T")
    p.add_argument("--samples", type=int, default=400, help="rows n of A")
    p.add_argument("--dim", type=int, default=100, help="columns d of A")
    p.add_argument("--sparsity", type=int, default=5, help="nonzeros k of x*")
    p.add_argument("--noise", type=float, default=0.05, help="std of the label noise")
    p.add_argument("--lam", type=float, default=0.1, help="weight of the l1 term")
    p.add_argument("--batch", type=int, default=32, help="rows per stochastic gradient")
    p.add_argument("--lr", type=float, default=0.5, help="scale of both schedules")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for the figure")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.samples, args.dim = 500, 100, 30
    return args


def make_data(args, gen):
    A = torch.randn(args.samples, args.dim, generator=gen, dtype=F64)
    truth = torch.zeros(args.dim, dtype=F64)
    support = torch.randperm(args.dim, generator=gen)[:args.sparsity]
    signs = torch.randint(0, 2, (args.sparsity,), generator=gen).to(F64) * 2 - 1
    truth[support] = signs * (1 + torch.rand(args.sparsity, generator=gen, dtype=F64))
    b = A @ truth + args.noise * torch.randn(args.samples, generator=gen, dtype=F64)
    return A, b, truth


def objective(A, b, lam, x):
    """F(x) for x of shape (d,) or (m, d)."""
    r = x @ A.T - b
    return 0.5 * r.pow(2).mean(-1) + lam * x.abs().sum(-1)


def lasso_optimum(A, b, lam):
    x = cp.Variable(A.shape[1])
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A.numpy() @ x - b.numpy()) / (2 * len(b))
                                     + lam * cp.norm1(x)))
    problem.solve(solver=cp.CLARABEL)
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"the lasso ended {problem.status}")
    x_star = torch.as_tensor(x.value, dtype=F64)
    return x_star, objective(A, b, lam, x_star).item()


def run(schedule, A, b, args, gen, smoothness):
    """CSMD from 0; returns the recorded steps, F of the last and of the averaged iterate,
    and both final points."""
    x = torch.zeros(A.shape[1], dtype=F64)
    opt = CSMD([x], lr=args.lr, schedule=schedule, horizon=args.steps, smoothness=smoothness,
               prox="l1", prox_weight=args.lam)
    average = torch.zeros_like(x)
    record = sorted({int(v) for v in torch.logspace(0, math.log10(args.steps), 60)})
    steps, last, averaged = [], [], []
    for t in tqdm(range(1, args.steps + 1), desc=schedule, disable=args.no_progress):
        rows = torch.randint(0, A.shape[0], (args.batch,), generator=gen)
        x.grad = A[rows].T @ (A[rows] @ x - b[rows]) / args.batch
        opt.step()
        average += (x - average) / t                   # uniform average of x_1..x_t
        if t in record:
            steps.append(t)
            last.append(objective(A, b, args.lam, x).item())
            averaged.append(objective(A, b, args.lam, average).item())
    return steps, torch.tensor(last), torch.tensor(averaged), x.clone(), average


def support_report(name, x, truth):
    found, true = x != 0, truth != 0
    print(f"  {name:<22} nonzeros {int(found.sum()):4d}   true support found "
          f"{int((found & true).sum())}/{int(true.sum())}   false nonzeros "
          f"{int((found & ~true).sum())} (largest {x[~true].abs().max().item():.1e})")


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    A, b, truth = make_data(args, gen)
    x_star, f_star = lasso_optimum(A, b, args.lam)
    # the cap 1/(2L) with L the largest smoothness of one sample's loss, ||a_i||^2, which
    # bounds that of every minibatch (the full-data L would let early minibatch steps diverge)
    smoothness = A.pow(2).sum(1).max().item()
    print(f"lasso: n = {args.samples}, d = {args.dim}, k = {args.sparsity}, lam = {args.lam}; "
          f"F* = {f_star:.6f} (cvxpy), per-sample smoothness L = {smoothness:.1f}")
    print("support of the cvxpy optimum:")
    support_report("x* of the lasso", torch.where(x_star.abs() > 1e-6, x_star, 0.0), truth)
    results = {s: run(s, A, b, args, gen, smoothness) for s in SCHEDULES}

    fig, (ax, axc) = plt.subplots(1, 2, figsize=(12, 4.2))
    for (schedule, (steps, last, averaged, x_last, x_avg)), color in zip(
            results.items(), ("tab:blue", "tab:red")):
        ax.plot(steps, (last - f_star).clamp(min=1e-12), color=color,
                label=f"{schedule}: last iterate")
        ax.plot(steps, (averaged - f_star).clamp(min=1e-12), color=color, ls="--",
                label=f"{schedule}: averaged iterate")
        print(f"\n{schedule}: F - F* at T = {args.steps}: last {last[-1] - f_star:.3g}, "
              f"averaged {averaged[-1] - f_star:.3g}")
        support_report("last iterate", x_last, truth)
        support_report("averaged iterate", x_avg, truth)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel(r"$F(x) - F^\star$")
    ax.set_title("lasso by CSMD (prox = l1)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    _, _, _, x_last, x_avg = results["linear_decay"]
    k = torch.arange(args.dim)
    axc.stem(k, truth, linefmt="k-", markerfmt="ko", basefmt=" ", label="true x")
    axc.plot(k, x_last, "s", color="tab:red", ms=4, label="last iterate (linear decay)")
    axc.plot(k, x_avg, ".", color="tab:gray", ms=4, label="averaged iterate (linear decay)")
    axc.set_xlabel("coordinate")
    axc.set_ylabel("coefficient")
    axc.set_title("recovered coefficients")
    axc.grid(alpha=0.3)
    axc.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = args.out / "sparse_regression.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
