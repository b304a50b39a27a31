"""Optimistic online mirror descent across the stochastic-to-adversarial spectrum.

Two experiments (Chen, Tu, Zhao, Zhang, arXiv 2302.04552), everything generated and seeded:

1. **Regret curves on quadratic SEA instances.** ``f_t(x) = ||x - c_t||^2/2 + <xi_t, x>`` on
   the unit ball in R^5 (``stochstep.theory_checks.online.sea_quadratic``): from a fixed centre
   with Gaussian gradient noise (stochastic), through a centre that switches every 10 rounds
   under less noise, to one that switches every round without noise (adversarial). Optimistic OMD (the paper's
   self-confident step, driven through the optimizer API) against online gradient descent with
   ``eta_t = 1/sqrt(t)``; the mean regret against the best fixed point in hindsight, with the
   bound's shape ``sqrt(sigma^2_{1:t}) + sqrt(Sigma^2_{1:t})`` for reference.
2. **Online portfolio selection on the simplex.** Daily price relatives of a few assets (cash,
   a mean-reverting volatile asset, and drifting ones); each day the learner rebalances to
   ``b_t`` and gains ``log(r_t . b_t)``. Optimistic OMD with the entropy mirror map
   (multiplicative updates) on the loss ``-log(r_t . b)`` against exponentiated gradient (CSMD
   with the entropy mirror) and the uniform portfolio; the log-wealth regret is measured
   against the best constant rebalanced portfolio in hindsight, computed with cvxpy. The
   volatile asset alternates up and down days, so the hint ``g_{t-1}`` points the wrong way
   for that asset every day: optimism costs a little here (the adversarial end of the
   spectrum), and plain exponentiated gradient ends slightly ahead.

Figures go to ``<out>/online_sea_regret.png`` and ``<out>/online_sea_portfolio.png``. Run from
the repository root:

    python examples/online_sea.py                  # about a minute on one core
    python examples/online_sea.py --quick --out /tmp/sea
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

from stochstep.optimizers.domains import Simplex  # noqa: E402
from stochstep.optimizers.online import CSMD, OptimisticOMD  # noqa: E402
from stochstep.theory_checks.online import (play_ogd, play_optimistic_omd,  # noqa: E402
                                            regret, sea_quadratic)

F64 = torch.float64
# (title, sea_quadratic keywords) from the stochastic to the adversarial end
SETTINGS = [
    ("stochastic: fixed centre, noise s = 2", dict(noise=2.0)),
    ("intermediate: switches every 10 rounds, noise s = 0.3",
     dict(noise=0.3, drift="switching", period=10)),
    ("adversarial: centre switches every round", dict(drift="switching", period=1)),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=3000, help="T of the regret experiment")
    p.add_argument("--runs", type=int, default=16, help="independent runs per setting")
    p.add_argument("--days", type=int, default=2000, help="T of the portfolio experiment")
    p.add_argument("--assets", type=int, default=5, help="assets, cash included")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for the figures")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.runs, args.days = 200, 3, 200
    return args


# ---------------------------------------------------------------- experiment 1: SEA regret


def regret_curves(args, gen):
    rows = []
    for title, kwargs in SETTINGS:
        sea = sea_quadratic(args.rounds, dim=5, runs=args.runs, generator=gen, **kwargs)
        omd = regret(sea, play_optimistic_omd(sea, progress=not args.no_progress),
                     cumulative=True)
        ogd = regret(sea, play_ogd(sea, lr=1.0), cumulative=True)
        t = torch.arange(1, args.rounds + 1, dtype=F64)
        first = (sea.radius + sea.centres[:, 0].norm(dim=1)).pow(2)[:, None]
        variation = first + torch.cat([torch.zeros(sea.runs, 1, dtype=F64),
                                       sea.centres.diff(dim=1).pow(2).sum(-1).cumsum(1)], 1)
        bound = (t * sea.dim * sea.noise_std**2).sqrt() + variation.mean(0).sqrt()
        rows.append((title, omd, ogd, bound))
    print(f"\nregret at T = {args.rounds} (mean +- s.e. over {args.runs} runs)")
    print(f"{'setting':<52} {'sqrt(s2)+sqrt(S2)':>18} {'optimistic OMD':>16} {'OGD':>16}")
    for title, omd, ogd, bound in rows:
        se = [r[:, -1].std().item() / math.sqrt(args.runs) for r in (omd, ogd)]
        print(f"{title:<52} {bound[-1].item():18.1f} {omd[:, -1].mean().item():9.2f} +- "
              f"{se[0]:4.2f} {ogd[:, -1].mean().item():9.2f} +- {se[1]:4.2f}")
    return rows


def plot_regret(rows, args):
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4))
    t = torch.arange(1, args.rounds + 1)
    for ax, (title, omd, ogd, bound) in zip(axes, rows):
        for name, r, color in (("optimistic OMD", omd, "tab:blue"), ("OGD, 1/sqrt(t)", ogd,
                                                                     "tab:orange")):
            mean, se = r.mean(0), r.std(0) / math.sqrt(args.runs)
            ax.plot(t, mean, color=color, label=name)
            ax.fill_between(t, mean - 2 * se, mean + 2 * se, color=color, alpha=0.2)
        ax.plot(t, bound, "k--", lw=1, label=r"$\sqrt{\sigma^2_{1:t}} + \sqrt{\Sigma^2_{1:t}}$")
        ax.set_xscale("log")
        ax.set_xlabel("round t")
        ax.set_ylabel("regret against the best fixed point")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = args.out / "online_sea_regret.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------- experiment 2: portfolio


def price_relatives(days, assets, gen):
    """Cash (1), one mean-reverting volatile asset (up and down days alternate, plus noise),
    and assets with small drifts: a constant rebalanced mix beats every single asset."""
    z = torch.randn(days, assets, generator=gen, dtype=F64)
    logr = 0.0002 + 0.01 * z
    logr[:, 0] = 0.0
    swing = torch.where(torch.arange(days) % 2 == 0, 0.2, -0.2).to(F64)
    logr[:, 1] = swing + 0.01 * z[:, 1]
    return logr.exp()


def best_constant_rebalanced(relatives):
    """argmax_b sum_t log(r_t . b) over the simplex (concave: an exponential-cone problem)."""
    b = cp.Variable(relatives.shape[1], nonneg=True)
    mean_log_growth = cp.sum(cp.log(relatives.numpy() @ b)) / len(relatives)
    problem = cp.Problem(cp.Maximize(mean_log_growth), [cp.sum(b) == 1])
    problem.solve(solver=cp.CLARABEL)
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"the BCRP problem ended {problem.status}")
    return torch.as_tensor(b.value, dtype=F64).clamp(min=0)


def play_portfolio(opt_class, relatives, progress, **kwargs):
    """Play b_t, gain log(r_t . b_t), then step on the gradient of -log(r_t . b) at b_t."""
    days, n = relatives.shape
    b = torch.full((n,), 1.0 / n, dtype=F64)
    opt = opt_class([b], **kwargs)
    gains = torch.empty(days, dtype=F64)
    for t in tqdm(range(days), desc=opt_class.__name__, disable=not progress):
        r = relatives[t]
        value = r @ b
        gains[t] = value.log()
        b.grad = -r / value
        opt.step()
    return gains.cumsum(0)


def portfolio(args, gen):
    relatives = price_relatives(args.days, args.assets, gen)
    best = best_constant_rebalanced(relatives)
    wealth = {"BCRP (hindsight)": (relatives @ best).log().cumsum(0)}
    # -log(r.b) has gradient entries of size r_i / (r.b) <= max r / min r: a per-round bound
    grad_bound = (relatives.max() / relatives.min()).item()
    lr = math.sqrt(2 * math.log(args.assets) / args.days) / grad_bound
    progress = not args.no_progress
    wealth["optimistic OMD (entropy)"] = play_portfolio(
        OptimisticOMD, relatives, progress, lr=lr, domain=Simplex(), mirror="entropy")
    wealth["exponentiated gradient (CSMD)"] = play_portfolio(
        CSMD, relatives, progress, lr=lr * math.sqrt(args.days), schedule="constant",
        horizon=args.days, domain=Simplex(), mirror="entropy")
    wealth["uniform CRP"] = (relatives.mean(1)).log().cumsum(0)
    wealth["best single asset"] = relatives.log().cumsum(0)[-1].max().expand(1)
    print(f"\nportfolio, {args.days} days, {args.assets} assets: BCRP = "
          + ", ".join(f"{v:.3f}" for v in best.tolist()))
    print(f"{'strategy':<32} {'log wealth':>11} {'regret vs BCRP':>15}")
    top = wealth["BCRP (hindsight)"][-1].item()
    for name, w in wealth.items():
        print(f"{name:<32} {w[-1].item():11.3f} {top - w[-1].item():15.3f}")
    return wealth


def plot_portfolio(wealth, args):
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(11, 4))
    t = torch.arange(1, args.days + 1)
    top = wealth["BCRP (hindsight)"]
    for name, w in wealth.items():
        if w.numel() == 1:
            ax.axhline(w.item(), color="gray", ls=":", label=f"{name} (final)")
            continue
        ax.plot(t, w, label=name)
        if name != "BCRP (hindsight)":
            axr.plot(t, top - w, label=name)
    ax.set_xlabel("day t")
    ax.set_ylabel("log wealth")
    ax.set_title("online portfolio selection")
    axr.set_xlabel("day t")
    axr.set_ylabel("log-wealth regret against the final BCRP")
    axr.set_title("regret")
    for a in (ax, axr):
        a.grid(alpha=0.3)
        a.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = args.out / "online_sea_portfolio.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    paths = [plot_regret(regret_curves(args, gen), args),
             plot_portfolio(portfolio(args, gen), args)]
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
