"""Score SDE on two moons: train a small score network with denoising score matching, sample.

A 4-layer MLP with a Fourier time embedding learns the score of scikit-learn's two-moons data
under the variance-preserving SDE (``stochstep.samplers.VPSDE``) with
``stochstep.samplers.dsm_loss``; the network predicts the noise,
``s(x, t) = -net(x, t) / c(t)``, with ``c(t)`` the kernel's standard deviation. It then draws
samples with ``stochstep.samplers.sample`` by Euler--Maruyama on the reverse SDE and by Heun on the
probability-flow ODE, prints an energy distance of each sample set to fresh data (next to that
of two fresh data sets, the noise floor) and saves a figure (data with the learned score field,
both sample sets, probability-flow trajectories) to ``<out>/score_sde_2d.png``.

Run from the repository root (needs matplotlib and scikit-learn, no download):

    python examples/score_sde_2d.py                  # 6000 iterations, under 1 min on 2 cores
    python examples/score_sde_2d.py --iters 50 --steps 10 --samples 200 --out /tmp/sde
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep import samplers  # noqa: E402
from stochstep.samplers.score_sde import Heun, probability_flow  # noqa: E402
from stochstep.stepping import integrate, uniform  # noqa: E402

T_END = 1e-3
BATCH = 1024
LR = 3e-3


class ScoreNet(nn.Module):
    """``s(x, t) = -net([x, emb(t)]) / c(t)``: a noise predictor turned into a score."""

    def __init__(self, sde: samplers.VPSDE, hidden: int = 128, n_freq: int = 8):
        super().__init__()
        self.sde = sde
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(2 + 2 * n_freq, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angle = t[:, None].float() * self.freqs
        eps = self.net(torch.cat([x, angle.sin(), angle.cos()], -1))
        c = self.sde.std(t).to(x.dtype)[:, None]
        return -eps / c


def moons(n: int, seed: int) -> torch.Tensor:
    """Two moons (noise 0.06), centred and scaled to about unit variance."""
    x, _ = make_moons(n, noise=0.06, random_state=seed)
    x = (x - np.array([0.5, 0.25])) / 0.7
    return torch.tensor(x, dtype=torch.float32)


def train(score: ScoreNet, sde, iters: int, seed: int = 0) -> list[float]:
    data = moons(20_000, seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(score.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=max(iters, 1),
                                                pct_start=0.05)
    losses = []
    bar = tqdm(range(iters), desc="training", unit="it")
    for i in bar:
        idx = torch.randint(len(data), (BATCH,), generator=gen)
        loss = samplers.dsm_loss(score, sde, data[idx], generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if i % 50 == 0 or i == iters - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-200:]):.3f}")
    return losses


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``2 E|A - B| - E|A - A'| - E|B - B'|`` (V-statistic); 0 iff the laws agree."""
    a, b = a.double(), b.double()
    return (2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean()
            - torch.cdist(b, b).mean()).item()


def plot(data, results, score, paths, losses, path):
    fig, axes = plt.subplots(1, 4, figsize=(19, 5.4), constrained_layout=True)
    lim = (-2.6, 2.6)
    style = dict(s=3, alpha=0.5, lw=0)
    # (1) data and the learned score at t = 0.1: unit arrows, coloured by |s|
    ax = axes[0]
    ax.scatter(*data.T, color="0.6", **style)
    g = torch.linspace(lim[0] + 0.15, lim[1] - 0.15, 19)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    t_q = 0.1
    with torch.no_grad():
        s = score(pts, torch.full((len(pts),), t_q))
    norm = s.norm(dim=-1, keepdim=True)
    u = s / norm.clamp_min(1e-8)
    q = ax.quiver(pts[:, 0], pts[:, 1], u[:, 0], u[:, 1], norm.squeeze(-1), cmap="viridis",
                  scale=30, width=0.005, pivot="mid")
    fig.colorbar(q, ax=ax, shrink=0.7, pad=0.01, label="|s(x, t)|")
    ax.set_title(f"data + learned score at t = {t_q}\n"
                 f"({len(losses)} iterations, final DSM loss {np.mean(losses[-200:]):.3f})")
    # (2, 3) samples over the data in grey
    for ax, (name, r), color in zip(axes[1:3], results.items(), ["tab:red", "tab:blue"]):
        ax.scatter(*data.T, color="0.8", **style)
        ax.scatter(*r["x"].T, color=color, **style)
        ax.set_title(f"{name}: {len(r['x'])} samples, NFE {r['nfe']}\n"
                     f"energy distance to data {r['ed']:.4f}")
    # (4) probability-flow trajectories from the prior to the data
    ax = axes[3]
    ax.scatter(*data.T, color="0.8", **style)
    traj = paths.numpy()
    cols = plt.cm.plasma(np.linspace(0, 0.9, traj.shape[1]))
    for k in range(traj.shape[1]):
        ax.plot(traj[:, k, 0], traj[:, k, 1], color=cols[k], lw=0.8, alpha=0.8)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=10, color="k", marker="x", lw=0.8,
               label="prior draw (t = 1)")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=12, c=cols, zorder=3)
    ax.scatter([], [], s=12, color="tab:purple", label=f"end (t = {T_END:g})")
    ax.set_title(f"probability-flow ODE paths ({traj.shape[1]})")
    ax.legend(loc="lower left", frameon=False, fontsize=9)
    for ax in axes:
        ax.set(xlim=lim, ylim=lim, aspect="equal", xticks=[-2, 0, 2], yticks=[-2, 0, 2],
               xlabel="$x_1$", ylabel="$x_2$")
    fig.suptitle("Score SDE (VP) on two moons: denoising score matching, then reverse-time "
                 "sampling", fontsize=13)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=6000, help="training iterations (6000)")
    parser.add_argument("--steps", type=int, default=500,
                        help="Euler-Maruyama steps; Heun takes steps/5 (default 500)")
    parser.add_argument("--samples", type=int, default=3000, help="samples drawn (3000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs", help="output directory (default runs)")
    args = parser.parse_args(argv)

    # The network is tiny: one thread is fastest, and stays fast on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(args.seed)  # the network's initial weights
        sde = samplers.VPSDE()
        score = ScoreNet(sde)
        start = time.perf_counter()
        losses = train(score, sde, args.iters, args.seed)
        print(f"trained {args.iters} iterations in {time.perf_counter() - start:.1f} s, "
              f"final loss {np.mean(losses[-200:]):.4f}")
        score.eval()
        gen = torch.Generator().manual_seed(args.seed + 1)
        prior = sde.prior_sample((args.samples, 2), generator=gen)
        heun_steps = max(1, args.steps // 5)
        runs = {"Euler-Maruyama (reverse SDE)": ("euler_maruyama", args.steps, args.steps),
                "Heun (probability-flow ODE)": ("heun", heun_steps, 2 * heun_steps)}
        data = moons(args.samples, args.seed + 2)
        results = {}
        for name, (method, steps, nfe) in runs.items():
            start = time.perf_counter()
            x = samplers.sample(score, sde, prior, steps=steps, method=method, t_end=T_END,
                                generator=gen, progress=True)
            secs = time.perf_counter() - start
            results[name] = dict(x=x, nfe=nfe, ed=energy_distance(x, data))
            print(f"{name:<30} {steps:>4} steps, NFE {nfe:>4}, {secs:5.1f} s, "
                  f"energy distance to data {results[name]['ed']:.4f}")
        floor = energy_distance(moons(args.samples, args.seed + 3), data)
        print(f"{'two fresh data sets':<30} {'':>30} energy distance to data {floor:.4f}")
        # a few probability-flow paths, every step kept
        sol = integrate(Heun(probability_flow(sde, score)), prior[:40],
                        uniform(sde.T, T_END, heun_steps), save_every=1)
    finally:
        torch.set_num_threads(threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(moons(args.samples, args.seed + 4), results, score, sol.path, losses,
         out / "score_sde_2d.png")
    print(f"Figure saved to {out / 'score_sde_2d.png'}")
    return results


if __name__ == "__main__":
    main()
