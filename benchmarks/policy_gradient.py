"""Policy gradients: sample efficiency of the paper's five methods, rollout throughput, and the
cost of a HARPG step.

1. Sample efficiency: trajectories until the average return of a batch first reaches a
   threshold (CartPole-v1: 150 of at most 200; Acrobot-v1: -150), median over seeds, for vanilla
   PG, NSGDM, N-PG-IGT, HARPG and N-HARPG, trained by ``examples/policy_gradient_cartpole.py``'s
   ``train`` (its settings). A run that does not reach it within the budget counts as infinite.
2. Throughput: env steps per second of ``rollout`` (policy forward, sampling with the
   generator, masks) against gymnasium's raw vector env stepped with random actions
   (``action_space.sample``), the same env count and horizon, interleaved rounds.
3. One HARPG step (two closure calls, the Hessian-vector estimate) against one GPOMDP gradient
   (surrogate and backward) on the same fixed batch (no sampling inside the timed calls).
"""

from __future__ import annotations

import datetime
import statistics
import sys
from pathlib import Path

import gymnasium
import torch

from benchmarks import harness
from stochstep.optimizers import HARPG
from stochstep.optimizers.policy_gradient import gpomdp_surrogate, log_probs, policy_for, rollout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from policy_gradient_cartpole import ENVS, METHODS, train  # noqa: E402

THRESHOLDS = {"CartPole-v1": 150.0, "Acrobot-v1": -150.0}


def sample_efficiency(seeds: int, budget: int, batch: int, quick: bool) -> list[str]:
    envs = ["CartPole-v1"] if quick else list(ENVS)
    rows = []
    for env_id in envs:
        for method in METHODS:
            reached = []
            for seed in range(seeds):
                curve = train(env_id, method, seed, budget, batch, 0.99)
                hits = [n for n, ret in curve if ret >= THRESHOLDS[env_id]]
                reached.append(hits[0] if hits else float("inf"))
            median = statistics.median(reached)
            rows.append([env_id, method, f"{THRESHOLDS[env_id]:g}",
                         "not reached" if median == float("inf") else f"{median:.0f}",
                         " ".join("-" if r == float("inf") else f"{r:.0f}" for r in reached)])
            print(" | ".join(rows[-1]), flush=True)
    return [f"\n### (a) trajectories to a batch return of at least the threshold "
            f"({seeds} seeds, budget {budget} trajectories, {batch} per closure call)\n",
            harness.markdown_table(["env", "method", "threshold", "median trajectories",
                                    "per seed"], rows)]


def throughput(rounds: int, n_envs: int = 256, horizon: int = 200) -> tuple[list[str], float]:
    env = gymnasium.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync")
    raw = gymnasium.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync")
    raw.action_space.seed(0)
    torch.manual_seed(0)
    policy = policy_for(env, hidden=(32, 32))
    generator = torch.Generator().manual_seed(0)
    steps = {"rollout": 0, "raw": 0}

    def ours():
        batch = rollout(env, policy, horizon, generator=generator)
        # env steps executed: every sub-env steps until the last episode ends (those that
        # ended reset and run on, masked), as the raw loop steps all of them
        steps["rollout"] += int(batch.lengths.max()) * n_envs

    def theirs():
        raw.reset(seed=0)
        for _ in range(horizon):
            raw.step(raw.action_space.sample())
        steps["raw"] += n_envs * horizon

    times = harness.time_interleaved({"rollout": ours, "raw": theirs}, rounds, 1)
    env.close()
    raw.close()
    # rollout stops when every episode has ended, the raw loop runs the whole horizon: rates
    per_round = steps["rollout"] / (rounds + 1)
    rate_ours = statistics.median(per_round / t for t in times["rollout"])
    rate_raw = statistics.median(n_envs * horizon / t for t in times["raw"])
    ratio = rate_ours / rate_raw
    lines = [f"\n### (b) sampling throughput, CartPole-v1, {n_envs} envs, horizon {horizon}, "
             f"{rounds} rounds\n",
             harness.markdown_table(["sampler", "env steps / s", "vs raw"], [
                 ["stochstep rollout (policy, masks, generator)", f"{rate_ours:,.0f}",
                  f"{ratio:.2f}x"],
                 ["gymnasium vector env, random actions", f"{rate_raw:,.0f}", "1.00x"]])]
    return lines, ratio


def harpg_cost(rounds: int, n: int = 50, horizon: int = 200) -> tuple[list[str], float]:
    env = gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync")
    torch.manual_seed(0)
    policy = policy_for(env, hidden=(32, 32))
    batch = rollout(env, policy, horizon, generator=torch.Generator().manual_seed(0))
    env.close()
    params = list(policy.parameters())

    def surrogate():
        return gpomdp_surrogate(log_probs(policy, batch), batch.rewards, 0.99, mask=batch.mask)

    opt = HARPG(params, lr=1e-4, generator=torch.Generator().manual_seed(0))
    opt.step(surrogate)                     # past t = 0: every timed step forms v_t

    def gradient():
        for p in params:
            p.grad = None
        surrogate().loss.mean().backward()

    times = harness.time_interleaved({"HARPG step": lambda: opt.step(surrogate),
                                      "GPOMDP gradient": gradient}, rounds, 2)
    ratio = harness.median_ratio(times, "HARPG step", "GPOMDP gradient")
    return [f"\n### (c) one HARPG step against one GPOMDP gradient, the same batch of {n} "
            f"CartPole trajectories (horizon {horizon}), {rounds} rounds\n",
            harness.markdown_table(["step", "median ms", "vs GPOMDP gradient"], [
                [name, f"{statistics.median(t) * 1e3:.2f}",
                 f"{harness.median_ratio(times, name, 'GPOMDP gradient'):.2f}x"]
                for name, t in times.items()])], ratio


def run(rounds: int | None, quick: bool) -> str:
    seeds, budget, batch = (2, 60, 10) if quick else (5, 1000, 10)
    out = ["## policy_gradient\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- training: `examples/policy_gradient_cartpole.py`'s `train` (softmax MLP 32-32 "
           "tanh, discount 0.99, GPOMDP with garage's linear feature baseline, horizon 200 / "
           "500, its step sizes)"]
    out += sample_efficiency(seeds, budget, batch, quick)
    lines, rollout_ratio = throughput(rounds or (3 if quick else 10))
    out += lines
    lines, harpg_ratio = harpg_cost(rounds or (5 if quick else 30))
    out += lines
    targets = [harness.target_line("time per env step, rollout / raw vector env (rollout at "
                                   "least 0.5x raw's rate)", 1 / rollout_ratio, 2.0),
               harness.target_line("HARPG step / GPOMDP gradient", harpg_ratio, 3.0)]
    print("\n".join(targets), flush=True)
    out += ["\n### targets\n", *[f"- {t}" for t in targets],
            f"\nRerun from the repository root: "
            f"`{harness.rerun_command('policy_gradient', rounds, quick)}`"]
    return "\n".join(out)
