"""Policy gradients: sample efficiency of the paper's five methods, rollout throughput, and the
cost of a HARPG step.

1. Sample efficiency: trajectories until the average return of a batch first reaches a
   threshold (CartPole-v1: 150 of at most 200; Acrobot-v1: -150), median over seeds, for vanilla
   PG, NSGDM, N-PG-IGT, HARPG and N-HARPG, trained by ``examples/policy_gradient_cartpole.py``'s
   ``train`` (its settings). A run that does not reach it within the budget counts as infinite.
   Beside them, N-PG-IGT with the authors' extrapolation (eta_{t-1} in the point, as their code
   does) to measure whether that difference from the paper's rule matters.
2. Throughput: env steps per second of ``rollout`` (policy forward, sampling with the
   generator, masks) against gymnasium's raw vector env stepped with random actions
   (``action_space.sample``), the same env count and horizon, interleaved rounds.
3. One HARPG step (two closure calls, the Hessian-vector estimate) against one GPOMDP gradient
   (surrogate and backward) on the same fixed batch (no sampling inside the timed calls), with
   the parts of a step timed alone: the surrogate's forward pass, and forward plus
   ``hessian_vector_estimate`` (three backward passes, one of them building a graph).
4. HalfCheetah-v5 (MuJoCo, when ``gymnasium[mujoco]`` is installed: the bench extra): the
   five methods with a Gaussian MLP policy, trajectories to a batch return of -100.
"""

from __future__ import annotations

import datetime
import statistics
import sys
from pathlib import Path

import gymnasium
import torch

from benchmarks import harness
from stochstep.optimizers import HARPG, NPGIGT, NSGDM, VanillaPG
from stochstep.optimizers.policy_gradient import (gpomdp_surrogate, hessian_vector_estimate,
                                                  log_probs, policy_for, rollout)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from policy_gradient_cartpole import ENVS, METHODS, train  # noqa: E402

THRESHOLDS = {"CartPole-v1": 150.0, "Acrobot-v1": -150.0}
MUJOCO_THRESHOLD = -100.0
HEADER = ["env", "method", "threshold", "median trajectories", "per seed",
          "mean return of the last 10 batches"]


class _CodeExtrapolation(NPGIGT):
    """N-PG-IGT as the authors' code runs it: the extrapolated point of step t uses the
    previous step's eta_{t-1} (there is none at t = 0, where no point is extrapolated)."""

    def _extrapolation_eta(self, group, t):
        return self._schedule(group, max(t - 1, 0))[1]


# the variant beside the paper's rule, with the example's N-PG-IGT step sizes
VARIANTS = {"N-PG-IGT, eta_{t-1} (authors' code)":
            (lambda ps, g: _CodeExtrapolation(ps, lr=0.3, momentum=1.0), True)}

# HalfCheetah-v5 as the paper runs MuJoCo (Gaussian MLP 64-64, horizon 500, actions clipped to
# the box as garage's normalized env does). gamma_0 per method from a sweep of 1,000
# trajectories, one seed (return of the last batch; a random policy gets about -190):
# N-PG-IGT 0.3 / 1: -137 / 47; NSGDM 1: -109; vanilla PG 1e-2 / 1e-3 / 1e-4: -302 / -233 /
# -146; N-HARPG 0.3 / 1: -188 / -301; HARPG 1e-3 / 1e-4: diverged (NaN parameters), 1e-5:
# -153 after 300 trajectories.
MUJOCO = ("HalfCheetah-v5", 500, {
    "vanilla PG": (lambda ps, g: VanillaPG(ps, lr=1e-4), True),
    "NSGDM": (lambda ps, g: NSGDM(ps, lr=1.0, momentum=1.0), True),
    "N-PG-IGT": (lambda ps, g: NPGIGT(ps, lr=1.0, momentum=1.0), True),
    "HARPG": (lambda ps, g: HARPG(ps, lr=1e-5, normalized=False, generator=g), False),
    "N-HARPG": (lambda ps, g: HARPG(ps, lr=0.3, generator=g), False),
})


def _reached(curve, threshold) -> float:
    hits = [n for n, ret in curve if ret >= threshold]
    return hits[0] if hits else float("inf")


def _row(env_id, method, threshold, curves, budget) -> list[str]:
    """A table row; a run whose curve ends before the budget diverged (non-finite weights)."""
    reached = [_reached(c, threshold) for c in curves]
    diverged = sum(c[-1][0] < budget for c in curves)
    median = statistics.median(reached)
    return [env_id, method, f"{threshold:g}",
            "not reached" if median == float("inf") else f"{median:.0f}",
            " ".join("-" if r == float("inf") else f"{r:.0f}" for r in reached),
            f"{statistics.mean(ret for c in curves for _, ret in c[-10:]):.1f}"
            + (f" ({diverged} diverged)" if diverged else "")]


def sample_efficiency(seeds: int, budget: int, batch: int, quick: bool) -> list[str]:
    envs = ["CartPole-v1"] if quick else list(ENVS)
    methods = {**METHODS, **VARIANTS}
    rows = []
    for env_id in envs:
        for method in methods:
            curves = [train(env_id, method, seed, budget, batch, 0.99, methods=methods)
                      for seed in range(seeds)]
            rows.append(_row(env_id, method, THRESHOLDS[env_id], curves, budget))
            print(" | ".join(rows[-1]), flush=True)
    return [f"\n### (a) trajectories to a batch return of at least the threshold "
            f"({seeds} seeds, budget {budget} trajectories, {batch} per closure call)\n",
            harness.markdown_table(HEADER, rows)]


def mujoco(seeds: int, budget: int, batch: int) -> list[str]:
    env_id, horizon, methods = MUJOCO
    try:
        from gymnasium.wrappers import ClipAction
        gymnasium.make(env_id).close()
    except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
        return [f"\n### (d) {env_id}: not run ({type(exc).__name__}: {exc}; "
                "`pip install '.[bench]'` brings gymnasium[mujoco])\n"]
    rows = []
    for method in methods:
        curves = [train(env_id, method, seed, budget, batch, 0.99, horizon=horizon,
                        hidden=(64, 64), wrappers=[ClipAction], methods=methods)
                  for seed in range(seeds)]
        rows.append(_row(env_id, method, MUJOCO_THRESHOLD, curves, budget))
        print(" | ".join(rows[-1]), flush=True)
    return [f"\n### (d) {env_id} (Gaussian MLP 64-64, horizon {horizon}, {seeds} seeds, "
            f"budget {budget} trajectories, {batch} per closure call)\n",
            harness.markdown_table(HEADER, rows)]


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

    def estimate():
        loss, log_prob = surrogate()
        hessian_vector_estimate(loss, log_prob, params, vector)

    # the parts of a step: the forward pass (surrogate) alone, and the Hessian estimate
    vector = [torch.randn_like(p) for p in params]
    times = harness.time_interleaved({"HARPG step": lambda: opt.step(surrogate),
                                      "GPOMDP gradient": gradient,
                                      "surrogate forward": surrogate,
                                      "surrogate + Hessian-vector estimate": estimate},
                                     rounds, 2)
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
    if not quick:
        out += mujoco(3, 1000, 10)
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
