"""Consensus-based optimization on Rastrigin and Ackley in d = 20, and a 2-D picture of it.

CBO (``stochstep.optimizers.cbo.cbo_minimize``) with CBXpy's documented benchmark configuration:
particles start uniform in [-3, 3]^d, anisotropic noise, sigma = 10.1, dt = 0.01, lambda = 1,
alpha = 30 growing by 1.05 per step up to 1e5 (``GeometricAlpha(30, 1.05, 1e5)``), N = 100
particles, 3000 steps. Each function is minimized with its minimizer at 0 and shifted to
``--shift`` in every coordinate; the ``--runs`` independent runs go through one batched call (x0
of shape (M, N, d)). A run succeeds when its final consensus lies within 0.25 of the minimizer
in the infinity norm (the criterion of the CBO literature and of CBXpy's benchmarks).

Figure ``<out>/cbo_rastrigin.png``: left, a 2-D Rastrigin run (contours, particle clouds at a
few steps, the consensus path); right, the median distance of the consensus to the minimizer
over the d = 20 runs, step by step. Run from the repository root:

    python examples/cbo_rastrigin.py                    # about 25 seconds on one core
    python examples/cbo_rastrigin.py --quick --out /tmp/cbo
    python examples/cbo_rastrigin.py --dtype float64 --particles 50
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stochstep.optimizers.cbo import GeometricAlpha, cbo_minimize  # noqa: E402

TOL = 0.25


def rastrigin(x: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """sum_i (y_i^2 - 10 cos(2 pi y_i)) + 10 d with y = x - shift; minimum 0 at x = shift."""
    y = x - shift
    return (y * y - 10.0 * torch.cos(2 * math.pi * y)).sum(-1) + 10.0 * x.shape[-1]


def ackley(x: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """Ackley (a = 20, b = 0.2, c = 2 pi) with y = x - shift; minimum 0 at x = shift."""
    y = x - shift
    return (-20.0 * torch.exp(-0.2 * torch.sqrt((y * y).mean(-1)))
            - torch.exp(torch.cos(2 * math.pi * y).mean(-1)) + 20.0 + math.e)


FUNCTIONS = {"rastrigin": rastrigin, "ackley": ackley}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--d", type=int, default=20, help="dimension")
    p.add_argument("--runs", type=int, default=20, help="independent runs M (one batched call)")
    p.add_argument("--particles", type=int, default=100, help="particles N per run")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--shift", type=float, default=1.0, help="the shifted minimizer's coordinate")
    p.add_argument("--sigma", type=float, default=10.1)
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--steps-2d", type=int, default=400, help="steps of the 2-D picture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.d, args.runs, args.particles, args.steps, args.steps_2d = 10, 4, 50, 1000, 200
    return args


def minimize(f, x0, args, gen, *, history=("consensus",)):
    return cbo_minimize(f, x0, steps=args.steps, dt=args.dt, lam=1.0, sigma=args.sigma,
                        alpha=GeometricAlpha(30.0, 1.05, 1e5), noise="anisotropic",
                        history=history, generator=gen, progress=not args.no_progress)


def benchmark(args, dtype, gen):
    """All four cases: success rate, final errors, and the per-step distance curves."""
    rows, curves = [], {}
    for name, f in FUNCTIONS.items():
        for shift in (0.0, args.shift):
            x0 = (6 * torch.rand(args.runs, args.particles, args.d, generator=gen,
                                 dtype=torch.float64) - 3).to(dtype)
            start = time.perf_counter()
            res = minimize(lambda x, s=shift, f=f: f(x, s), x0, args, gen)
            seconds = time.perf_counter() - start
            err = (res.consensus.double() - shift).abs().amax(-1)             # (M,)
            value = f(res.consensus.double(), shift)                          # f* = 0
            path = (res.history["consensus"].double() - shift).abs().amax(-1)  # (steps, M)
            curves[f"{name}, minimizer {shift:g}"] = path.median(-1).values
            rows.append(dict(name=name, shift=shift, success=int((err < TOL).sum()),
                             err=err.median().item(), value=value.median().item(),
                             evals=int(res.evaluations[0]), seconds=seconds,
                             ms=1e3 * seconds / res.steps))
    return rows, curves


def picture_run(args, dtype, gen):
    """One 2-D Rastrigin run with the particle history."""
    x0 = (6 * torch.rand(args.particles, 2, generator=gen, dtype=torch.float64) - 3).to(dtype)
    small = argparse.Namespace(**{**vars(args), "steps": args.steps_2d})
    res = minimize(lambda x: rastrigin(x, args.shift), x0, small, gen,
                   history=("consensus", "particles"))
    return x0, res


def plot(args, x0, res, curves, path):
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(13, 5.6), width_ratios=(1, 1.15))
    lo, hi = -3.5, 3.5
    g = torch.linspace(lo, hi, 300, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    zz = rastrigin(torch.stack([xx, yy], -1), args.shift)
    # the colour map's top third left out: dark particles stay visible on the highest values
    cs = ax.contourf(xx, yy, zz, levels=30, cmap="Greys", vmax=1.5 * zz.max().item())
    fig.colorbar(cs, ax=ax, label="Rastrigin value", shrink=0.85)
    parts = res.history["particles"].double()          # (steps, N, 2): after each step
    steps = parts.shape[0]
    snaps = sorted({0, max(1, steps // 40), max(2, steps // 8), steps})
    colors = ["tab:blue", "tab:green", "tab:orange", "tab:purple"][-len(snaps):]
    for k, color in zip(snaps, colors):
        pts = x0.double() if k == 0 else parts[k - 1]
        # later snapshots on top, the last one above the hollow star that marks x*
        last = k == steps
        ax.scatter(pts[:, 0], pts[:, 1], s=40 if last else 18, color=color, ec="white", lw=0.5,
                   zorder=5 if last else 2, label=f"particles at step {k}")
    cons = res.history["consensus"].double()
    ax.plot(cons[:, 0], cons[:, 1], "-", color="tab:red", lw=1.4, zorder=3,
            label="consensus path")
    ax.plot([args.shift], [args.shift], "*", ms=26, mfc="none", mec="k", mew=1.2, zorder=4,
            label=f"minimizer x* = ({args.shift:g}, {args.shift:g})")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(f"CBO on 2-D Rastrigin: N = {args.particles} particles, {steps} steps")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8,
              frameon=False)
    for label, curve in curves.items():
        axr.semilogy(torch.arange(1, len(curve) + 1), curve.clamp(min=1e-12), label=label)
    axr.axhline(TOL, color="k", ls="--", lw=1, label=f"success threshold {TOL}")
    axr.set_xlabel("step")
    axr.set_ylabel(r"distance of the consensus to $x^*$, $\|c_k - x^*\|_\infty$")
    axr.set_title(f"d = {args.d}: median over {args.runs} runs of N = {args.particles} particles")
    axr.grid(True, which="major", alpha=0.3)
    axr.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")   # keeps the legend below the left panel
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CBO, d = {args.d}, M = {args.runs} runs of N = {args.particles} particles, "
          f"{args.steps} steps, dt = {args.dt}, sigma = {args.sigma}, anisotropic, "
          f"alpha = GeometricAlpha(30, 1.05, 1e5), {args.dtype}, x0 ~ U(-3, 3)")
    rows, curves = benchmark(args, dtype, gen)
    print(f"\n{'function':<10} {'minimizer':>9} {'success':>9} {'rate':>5} "
          f"{'med |c-x*|inf':>14} {'med f(c)-f*':>12} {'evals/run':>10} {'ms/step':>8}")
    for r in rows:
        print(f"{r['name']:<10} {r['shift']:>9g} {r['success']:>4d}/{args.runs:<4d} "
              f"{r['success'] / args.runs:5.2f} {r['err']:14.2e} {r['value']:12.2e} "
              f"{r['evals']:>10,} {r['ms']:8.2f}")
    x0, res = picture_run(args, dtype, gen)
    err2d = (res.consensus.double() - args.shift).abs().max().item()
    print(f"\n2-D Rastrigin (minimizer {args.shift:g}), {args.steps_2d} steps: final consensus "
          f"{[round(v, 4) for v in res.consensus.double().tolist()]}, "
          f"|c - x*|inf = {err2d:.2e}")
    path = args.out / "cbo_rastrigin.png"
    plot(args, x0, res, curves, path)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
