"""A Light Schrödinger bridge in 2-D between two Gaussian mixtures.

The source p0 is a mixture of 3 Gaussians, the target p1 one of 8 on a ring. A LightSB
(``stochstep.samplers.LightSB``, 20 components, eps = 0.1) is fitted from unpaired samples by
its simulation-free loss, then (1) draws endpoints by its closed-form plan, (2) simulates the
bridge dX = g(X, t) dt + sqrt(eps) dW with ``stochstep.stepping.integrate``. It prints the
energy distance of each endpoint set to fresh target data, next to that of two fresh target sets
(the noise floor), and saves ``<out>/light_sb.png``: the two mixtures, the plan's draws, the
simulated trajectories and the training loss.

Run from the repository root (needs matplotlib):

    python examples/light_sb.py            # 3000 Adam steps: about 40 s of training on one core
    python examples/light_sb.py --quick    # a smoke run of a few seconds
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

from stochstep.samplers import LightSB  # noqa: E402

EPS = 0.1


def mixture(n: int, centers: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """n draws of the equal-weight mixture of N(center, std^2 I)."""
    k = torch.randint(len(centers), (n,), generator=gen)
    return centers[k] + std * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def source(n: int, gen: torch.Generator) -> torch.Tensor:
    centers = torch.tensor([[-1.0, -0.6], [0.0, 1.1], [1.0, -0.6]], dtype=torch.float64)
    return mixture(n, centers, 0.25, gen)


def target(n: int, gen: torch.Generator) -> torch.Tensor:
    angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return mixture(n, 2.5 * torch.stack([angle.cos(), angle.sin()], 1), 0.15, gen)


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``2 E|A - B| - E|A - A'| - E|B - B'|`` (V-statistic); 0 iff the laws agree."""
    return (2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean()
            - torch.cdist(b, b).mean()).item()


def plot(x0, x1, y_plan, paths, n_steps, losses, path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(20, 5), constrained_layout=True)
    style = dict(s=3, alpha=0.5, lw=0)
    ax = axes[0]
    ax.scatter(*x0.T, color="tab:blue", label="source p0", **style)
    ax.scatter(*x1.T, color="tab:orange", label="target p1", **style)
    ax.set_title("the two mixtures")
    ax = axes[1]
    ax.scatter(*x1.T, color="0.8", label="target p1", **style)
    ax.scatter(*y_plan.T, color="tab:red", label="LightSB plan draws", **style)
    ax.set_title("endpoints drawn from the closed-form plan")
    ax = axes[2]
    ax.scatter(*x1.T, color="0.85", **style)
    for i in range(paths.shape[1]):
        ax.plot(paths[:, i, 0], paths[:, i, 1], color="tab:green", lw=0.6, alpha=0.6)
    ax.scatter(*paths[0].T, color="tab:blue", s=8, label="x(0)")
    ax.scatter(*paths[-1].T, color="tab:red", s=8, label="x(1)")
    ax.set_title(f"SDE trajectories ({n_steps} Euler-Maruyama steps)")
    for ax in axes[:3]:
        ax.set_xlabel("x_1")
        ax.set_ylabel("x_2")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=3)
    ax = axes[3]
    ax.plot(losses, color="0.75", lw=0.5, label="per minibatch")
    window = min(100, len(losses))
    smooth = torch.nn.functional.avg_pool1d(losses[None, None], window, 1)[0, 0]
    ax.plot(range(window - 1, len(losses)), smooth, color="tab:blue", label=f"mean of {window}")
    ax.legend()
    ax.set_xlabel("Adam step")
    ax.set_ylabel("loss  E log c(x0) - E log v(x1)")
    ax.set_title("training loss")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps")
    parser.add_argument("--quick", action="store_true", help="smoke run (200 steps)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="output folder")
    args = parser.parse_args(argv)
    steps = 200 if args.quick else args.steps
    n_eval = 500 if args.quick else 2000
    torch.set_num_threads(1)  # small tensors: one thread is the fastest here
    gen = torch.Generator().manual_seed(0)
    x0, x1 = source(20_000, gen), target(20_000, gen)
    model = LightSB(2, n_components=20, eps=EPS, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    losses = model.fit(x0, x1, steps, lr=1e-2)
    print(f"trained {steps} steps in {time.perf_counter() - start:.1f} s, "
          f"final loss {losses[-100:].mean():.3f}")
    starts = source(n_eval, gen)
    y_plan = model.sample(starts)
    n_steps = 100
    sol = model.trajectories(starts, n_steps=n_steps, save_every=5)
    fresh, floor_set = target(n_eval, gen), target(n_eval, gen)
    print(f"energy distance to target data: plan draws {energy_distance(y_plan, fresh):.4f}, "
          f"SDE endpoints {energy_distance(sol.x, fresh):.4f}, "
          f"noise floor (two target sets) {energy_distance(floor_set, fresh):.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "light_sb.png"
    plot(x0[:n_eval], x1[:n_eval], y_plan, sol.path[:, :60], n_steps, losses, png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
