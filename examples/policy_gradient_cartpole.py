"""Policy gradients on CartPole-v1 and Acrobot-v1: vanilla PG, NSGDM, N-PG-IGT, HARPG, N-HARPG.

The setting of Fatkhullin et al. (arXiv 2302.01734): a softmax MLP policy (32, 32, tanh),
discount 0.99, GPOMDP with garage's linear feature baseline (fitted on each batch after the
step, used on the next, as garage does), horizon 200 on CartPole (the paper's maximum episode
length) and 500 on Acrobot; every method gets the same number of trajectories per closure call.
HARPG samples twice per step (at theta_t and at the random point), so the x-axis counts
trajectories, not steps.

Figure ``<out>/policy_gradient_cartpole.png``: average return of the sampled trajectories
against the number of trajectories, mean over seeds with a 95% band (t interval). Run from the
repository root:

    python examples/policy_gradient_cartpole.py              # a few minutes on one core
    python examples/policy_gradient_cartpole.py --quick --out /tmp/pg
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import gymnasium
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.optimizers import HARPG, NPGIGT, NSGDM, VanillaPG  # noqa: E402
from stochstep.optimizers.policy_gradient import (  # noqa: E402
    LinearFeatureBaseline, gpomdp_surrogate, log_probs, policy_for, rollout)

# (name, factory, whether its closure calls backward). gamma_0 picked per method (the paper tunes
# it) from a sweep on CartPole, 5 seeds, 1,000 trajectories, mean return of the last batch:
# normalized methods gamma_0 in {0.1, 0.3, 1, 3} (N-PG-IGT 94 / 200 / 93 / 16, NSGDM 90 / 184 /
# 200 / 86, N-HARPG 65 / 147 / 10 / 10); vanilla PG {0.003, 0.01, 0.03}: 191 / 133 / 95; HARPG
# {0.001, 0.003, 0.01}: 76 / 66 / 10. eta_0 = 1 throughout (the authors' default).
METHODS = {
    "vanilla PG": (lambda ps, g: VanillaPG(ps, lr=0.003), True),
    "NSGDM": (lambda ps, g: NSGDM(ps, lr=0.3, momentum=1.0), True),
    "N-PG-IGT": (lambda ps, g: NPGIGT(ps, lr=0.3, momentum=1.0), True),
    "HARPG": (lambda ps, g: HARPG(ps, lr=0.001, normalized=False, generator=g), False),
    "N-HARPG": (lambda ps, g: HARPG(ps, lr=0.3, generator=g), False),
}
ENVS = {"CartPole-v1": 200, "Acrobot-v1": 500}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trajectories", type=int, default=1000,
                   help="trajectories per run (the budget on the x-axis)")
    p.add_argument("--batch", type=int, default=10, help="trajectories per closure call")
    p.add_argument("--gamma", type=float, default=0.99, help="discount")
    p.add_argument("--quick", action="store_true", help="a smoke run: CartPole, few trajectories")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="runs")
    args = p.parse_args(argv)
    if args.quick:
        args.envs, args.seeds, args.trajectories, args.batch = ["CartPole-v1"], 2, 40, 4
    return args


def train(env_id: str, method: str, seed: int, trajectories: int, batch: int, gamma: float, *,
          horizon: int | None = None, hidden: tuple[int, ...] = (32, 32), wrappers=(),
          methods=METHODS):
    """One run; returns (trajectories sampled so far, mean return of each batch), ending
    early if a step leaves a non-finite parameter.

    The keywords serve other settings (benchmarks/policy_gradient.py's MuJoCo task):
    ``horizon`` (default ``ENVS[env_id]``), the policy's hidden sizes, gymnasium wrappers of
    each sub-environment, and the table of methods."""
    horizon = ENVS[env_id] if horizon is None else horizon
    env = gymnasium.make_vec(env_id, num_envs=batch, vectorization_mode="sync",
                             max_episode_steps=horizon, wrappers=wrappers)
    torch.manual_seed(seed)                          # the policy's initial weights
    policy = policy_for(env, hidden=hidden)
    make, backward = methods[method]
    opt = make(list(policy.parameters()), torch.Generator().manual_seed(seed + 1))
    sampler = torch.Generator().manual_seed(seed + 2)
    baseline, fitted = LinearFeatureBaseline(), False
    used, curve, last = 0, [], {}

    def closure():
        nonlocal used
        sample = rollout(env, policy, horizon, generator=sampler)
        used += sample.rewards.shape[0]
        curve.append((used, float((sample.rewards * sample.mask).sum(1).mean())))
        last["batch"] = sample
        values = baseline.predict(sample) if fitted else None
        loss, log_prob = gpomdp_surrogate(log_probs(policy, sample), sample.rewards, gamma,
                                          mask=sample.mask, baseline=values)
        if not backward:
            return loss, log_prob
        opt.zero_grad()
        loss.mean().backward()
        return loss.mean()

    while used < trajectories:
        opt.step(closure)
        if not all(bool(torch.isfinite(p).all()) for p in policy.parameters()):
            break                                    # diverged: the curve ends early
        baseline.fit(last["batch"], gamma)           # garage: fit after the step
        fitted = True
    env.close()
    return curve


def band(curves: list[list[tuple[int, float]]], grid: torch.Tensor):
    """Mean and 95% t-band over seeds of the returns, interpolated on ``grid``."""
    values = []
    for curve in curves:
        x = torch.tensor([c[0] for c in curve], dtype=torch.float64)
        y = torch.tensor([c[1] for c in curve], dtype=torch.float64)
        idx = torch.searchsorted(x, grid, right=True).clamp(1, len(x)) - 1
        values.append(y[idx])
    v = torch.stack(values)
    mean = v.mean(0)
    if len(curves) < 2:
        return mean, mean, mean
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(curves), 2.26)   # t_{0.975, n-1}
    half = t * v.std(0) / math.sqrt(len(curves))
    return mean, mean - half, mean + half


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    runs = [(e, m, s) for e in args.envs for m in args.methods for s in range(args.seeds)]
    start = time.perf_counter()
    for env_id, method, seed in tqdm(runs, desc="runs", disable=args.no_progress):
        results.setdefault((env_id, method), []).append(
            train(env_id, method, seed, args.trajectories, args.batch, args.gamma))
    fig, axes = plt.subplots(1, len(args.envs), figsize=(6 * len(args.envs), 4.2), squeeze=False)
    grid = torch.linspace(args.batch, args.trajectories, 100, dtype=torch.float64)
    print(f"{'env':<12} {'method':<11} final return (mean over {args.seeds} seeds, last batch)")
    for ax, env_id in zip(axes[0], args.envs):
        for method in args.methods:
            curves = results[(env_id, method)]
            mean, low, high = band(curves, grid)
            ax.plot(grid, mean, label=method)
            ax.fill_between(grid, low, high, alpha=0.2)
            final = sum(c[-1][1] for c in curves) / len(curves)
            print(f"{env_id:<12} {method:<11} {final:8.1f}")
        ax.set_title(f"{env_id} (horizon {ENVS[env_id]}, {args.seeds} seeds, 95% band)")
        ax.set_xlabel("trajectories sampled")
        ax.set_ylabel("average return of the batch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "policy_gradient_cartpole.png", dpi=120)
    print(f"wrote {out / 'policy_gradient_cartpole.png'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
