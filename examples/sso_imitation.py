"""Online imitation learning on CartPole-v1: SSO against SGD and Adam in environment interactions.

A small softmax policy network (the learner) imitates a hand-written expert, the PD rule
"push right iff theta + 0.5 theta_dot > 0" on the pole's angle and angular velocity (it
balances for the full 500 steps; ``tests/test_examples.py`` checks it). The loss is online,
DAgger-style: every expensive gradient call rolls the *current learner* out in the environment
(``--envs`` episodes of at most ``--horizon`` steps, actions drawn from the learner), labels the
visited states with the expert's actions and takes the cross-entropy

.. math::
    \\ell_t(z) = \\sum_{i=1}^{n_t} -\\log \\operatorname{softmax}(z_i)_{a^*(s_i)},
    \\qquad z_i = f_\\theta(s_i) \\ \\text{(the learner's logits: the targets)},

so each gradient of :math:`\\ell_t` costs :math:`n_t` fresh environment interactions. SGD and
Adam take one step on the mean cross-entropy per expensive call. SSO (Lavington et al., ICML
2023, arXiv 2302.02607) takes the gradient of :math:`\\ell_t` in target space once, then
m = 1, 10 or 100 cheap steps (the authors' Armijo line search) on the surrogate
:math:`\\langle \\nabla \\ell_t(z_t), f_\\theta - z_t\\rangle
+ \\|f_\\theta - z_t\\|^2 / (2\\,\\text{target\\_lr})` on the same states, with no new
interaction. ``target_lr = 2 = 1/L``: the Hessian of the cross-entropy in the logits of one
state has largest eigenvalue at most 1/2, so the surrogate majorizes :math:`\\ell_t` (the
authors' online imitation code uses the same 1/L choice for its squared loss). The sum, not
the mean, keeps that step per state whatever the number of states visited.

After every update the greedy learner (argmax of the logits) plays ``--eval-episodes`` episodes
of at most 500 steps (the same reset seeds every time, not counted as interactions). The table
gives the training interactions and expensive calls at which that average return first reaches
``--targets`` (195, CartPole-v0's "solved" bar, and 475, CartPole-v1's); the figure
``<out>/sso_imitation.png`` the return against interactions, mean over seeds with a 95% band
(t interval). Measured (5 seeds, 12,000 interactions, median seed's interactions / calls):

    method        to 195         to 475 (seeds)    final return
    SSO (m=1)     1887 / 10      3948 / 13 (4/5)   384
    SSO (m=10)     437 /  2     11994 / 17 (3/5)   450
    SSO (m=100)    285 /  2      2639 /  5 (4/5)   494
    SGD           2827 / 12      6371 / 17 (5/5)   421
    Adam           936 /  4      1530 /  6 (5/5)   483

SSO with 100 inner steps reaches 195 with 3.3x fewer interactions than Adam and 10x fewer than
SGD; to 475 Adam is faster and more reliable. Run from the repository root:

    python examples/sso_imitation.py                 # 1 min on one core (3 on a busy one)
    python examples/sso_imitation.py --quick --out /tmp/sso
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
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.optimizers import SSO  # noqa: E402
from stochstep.optimizers.policy_gradient import policy_for, rollout  # noqa: E402
from policy_gradient_cartpole import band as returns_band  # noqa: E402  (this folder)

EVAL_HORIZON = 500          # CartPole-v1's episode limit
ANGLE_GAIN = 0.5            # the expert's derivative gain on theta_dot (seconds)

# name -> (factory of the optimizer from the parameters, whether it is SSO). Step sizes from a
# sweep, 5 seeds, 12,000 interactions: interactions to return 195 / 475, mean over the seeds
# that reach it (how many reach 475). SGD lr 0.1 / 0.3 / 1: 4040 / 8089 (4), 3004 / 6180 (5),
# 2242 / 5362 (4); Adam lr 0.01 / 0.03 / 0.1 / 0.3: 1986 / 4846 (4), 993 / 3514 (5), 1026 /
# 1631 (5), 2358 / 6097 (5). SSO m = 10, target_lr 0.5 / 2 / 8: 1004 / never (0), 563 / 4925
# (3), 1608 / 4404 (4); m = 50, target_lr 1 / 2 / 4: 485 / 5772 (4), 395 / 1310 (4), 1322 /
# 5470 (5); target_lr 2, m = 100 / 200: 262 / 2155 (4), 348 / 1521 (5). The 1/sqrt(t)
# schedule was no better (m = 10: 702 / 4205 (3)).
METHODS = {
    "SSO (m=1)": (lambda ps: SSO(ps, target_lr=2.0, inner_steps=1), True),
    "SSO (m=10)": (lambda ps: SSO(ps, target_lr=2.0, inner_steps=10), True),
    "SSO (m=100)": (lambda ps: SSO(ps, target_lr=2.0, inner_steps=100), True),
    "SGD": (lambda ps: torch.optim.SGD(ps, lr=0.3), False),
    "Adam": (lambda ps: torch.optim.Adam(ps, lr=0.1), False),
}


def expert_actions(states: Tensor) -> Tensor:
    r"""The expert's action (0 = push left, 1 = push right) in each CartPole state.

    .. math::
        a^*(s) = \mathbb 1[\theta + 0.5\,\dot\theta > 0],
        \qquad s = (x, \dot x, \theta, \dot\theta)

    A PD rule on the pole alone: push the cart under the side the pole is falling to.
    """
    return (states[..., 2] + ANGLE_GAIN * states[..., 3] > 0).long()


class Expert(nn.Module):
    """:func:`expert_actions` as a policy that :func:`rollout` can run."""

    def sample(self, obs: Tensor, generator: torch.Generator) -> Tensor:
        return expert_actions(obs)


class Greedy(nn.Module):
    """The learner's most likely action, as a policy that :func:`rollout` can run."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def sample(self, obs: Tensor, generator: torch.Generator) -> Tensor:
        return self.policy.logits(obs).argmax(-1)


def evaluate(env, policy: nn.Module, seed: int) -> float:
    """Average return of ``policy`` over one episode per sub-environment of ``env``, with reset
    seeds drawn from ``seed`` (the same episodes at every call)."""
    batch = rollout(env, policy, EVAL_HORIZON, generator=torch.Generator().manual_seed(seed))
    return float(batch.rewards.sum(1).mean())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="the methods to run (quote the names with spaces)")
    p.add_argument("--seeds", type=int, default=5, help="runs per method, seeds 0..seeds-1")
    p.add_argument("--interactions", type=int, default=12000,
                   help="training environment steps per run (the budget on the x-axis)")
    p.add_argument("--envs", type=int, default=4,
                   help="learner episodes rolled out per expensive gradient call")
    p.add_argument("--horizon", type=int, default=200, help="steps per training episode")
    p.add_argument("--eval-episodes", type=int, default=5,
                   help="greedy evaluation episodes after each update")
    p.add_argument("--targets", type=float, nargs="+", default=[195.0, 475.0],
                   help="evaluation returns the table reports the cost of reaching")
    p.add_argument("--hidden", type=int, nargs="*", default=[32, 32],
                   help="hidden widths of the learner's MLP (tanh)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, few interactions")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.add_argument("--out", default="runs", help="folder for the figure")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.interactions, args.eval_episodes = 2, 400, 2
    return args


def train(method: str, seed: int, args) -> list[tuple[int, int, float]]:
    """One run: (interactions, expensive calls, evaluation return) after every update."""
    env = gymnasium.make_vec("CartPole-v1", num_envs=args.envs, vectorization_mode="sync",
                             max_episode_steps=args.horizon)
    eval_env = gymnasium.make_vec("CartPole-v1", num_envs=args.eval_episodes,
                                  vectorization_mode="sync")
    policy = policy_for(env, hidden=tuple(args.hidden),
                        generator=torch.Generator().manual_seed(seed))
    make, is_sso = METHODS[method]
    opt = make(list(policy.parameters()))
    sampler = torch.Generator().manual_seed(seed + 1_000)
    greedy, eval_seed = Greedy(policy), seed + 2_000
    interactions, calls = 0, 0
    curve = [(0, 0, evaluate(eval_env, greedy, eval_seed))]
    while interactions < args.interactions:
        # the expensive call: fresh interactions of the current learner, labelled by the expert
        batch = rollout(env, policy, args.horizon, generator=sampler)
        states = batch.observations[batch.mask.bool()]
        labels = expert_actions(states)
        interactions += states.shape[0]
        calls += 1
        if is_sso:
            opt.step(lambda: policy.logits(states),
                     lambda z: F.cross_entropy(z, labels, reduction="sum"))
        else:
            opt.zero_grad()
            F.cross_entropy(policy.logits(states), labels).backward()
            opt.step()
        curve.append((interactions, calls, evaluate(eval_env, greedy, eval_seed)))
    env.close()
    eval_env.close()
    return curve


def first_reaching(curve: list[tuple[int, int, float]], target: float):
    """(interactions, expensive calls) when the evaluation return first reaches ``target``, or
    None if it never does."""
    return next(((n, c) for n, c, r in curve if r >= target), None)


def band(curves: list[list[tuple[int, int, float]]], grid: Tensor):
    """Mean and 95% t-band over seeds of the returns on ``grid`` (the policy-gradient example's
    band), held inside the possible returns [0, EVAL_HORIZON]."""
    mean, low, high = returns_band([[(n, r) for n, _, r in curve] for curve in curves], grid)
    return mean, low.clamp(min=0), high.clamp(max=EVAL_HORIZON)


def summary(curves, target: float) -> str:
    """'interactions / calls (k/n)' of the median seed (the lower one for an even number of
    seeds) in interactions to reach ``target``; a seed that never reaches it counts as
    slowest, and k of the n seeds reach it."""
    costs = sorted(first_reaching(c, target) or (math.inf, math.inf) for c in curves)
    reached = sum(math.isfinite(n) for n, _ in costs)
    n, c = costs[(len(costs) - 1) // 2]
    if not math.isfinite(n):
        return f"{'never':>17} ({reached}/{len(curves)})"
    return f"{n:>9.0f} / {c:>5.0f} ({reached}/{len(curves)})"


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(m, s) for m in args.methods for s in range(args.seeds)]
    results: dict[str, list] = {}
    start = time.perf_counter()
    # The network is tiny: one thread is fastest, and stays fast on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method, seed in tqdm(runs, desc="runs", disable=args.no_progress):
            results.setdefault(method, []).append(train(method, seed, args))
    finally:
        torch.set_num_threads(threads)

    print(f"environment interactions / expensive calls to reach each greedy return (median over "
          f"{args.seeds} seeds; (k/n): seeds that reach it), and the final return (mean)")
    header = "".join(f"{f'to {t:g}':>30}" for t in args.targets)
    print(f"{'method':<12}{header}  final return")
    for method, curves in results.items():
        cells = "".join(f"{summary(curves, t):>30}" for t in args.targets)
        final = sum(c[-1][2] for c in curves) / len(curves)
        print(f"{method:<12}{cells}  {final:12.1f}")

    fig, ax = plt.subplots(figsize=(7, 4.4))
    grid = torch.linspace(0, args.interactions, 200, dtype=torch.float64)
    for method, curves in results.items():
        mean, low, high = band(curves, grid)
        ax.plot(grid, mean, label=method)
        ax.fill_between(grid, low, high, alpha=0.2)
    for target in args.targets:
        ax.axhline(target, color="grey", lw=0.8, ls="--")
    ax.set_title(f"CartPole-v1 online imitation ({args.seeds} seeds, 95% band)")
    ax.set_xlabel("environment interactions (training steps)")
    ax.set_ylabel(f"greedy return ({args.eval_episodes} episodes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sso_imitation.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out / 'sso_imitation.png'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
