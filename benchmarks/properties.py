"""What each theory-check property costs: one call, on one thread (docs/testing_your_optimizer.rst).

Times are absolute seconds per call (median over interleaved rounds), not ratios: the question
a user asks is how long a property makes a test.
"""

from __future__ import annotations

import statistics

import torch

from benchmarks import harness
from stochstep.optimizers import SGLD
from stochstep.theory_checks.properties import (assert_converges, assert_diverges_above,
                                                assert_invariant, assert_linear_rate,
                                                assert_monotone_loss)
from stochstep.theory_checks.stochastic import assert_noise_ball, assert_stationary_law
from stochstep.theory_checks.strategies import noisy_quadratic_problem, quadratic_problem


def cases() -> dict:
    """Label -> a call of one property on a fixed problem (10-D; 4-D for the stochastic)."""
    p100 = quadratic_problem(dim=10, condition=100.0, seed=0)
    p10 = quadratic_problem(dim=10, condition=10.0, seed=0)
    noisy = noisy_quadratic_problem(dim=4, condition=10.0, noise=1.0, seed=0)
    target = noisy_quadratic_problem(dim=4, condition=10.0, noise=0.0, seed=0)

    def gd(p):
        return lambda params: torch.optim.SGD(params, lr=1 / p.L)

    def adam(params):
        return torch.optim.Adam(params, lr=0.1)

    def sgld(params):
        return SGLD(params, lr=0.05, temperature=0.5, generator=torch.Generator().manual_seed(7))

    return {
        "assert_converges, GD, kappa 10 (default budget: 160 steps)":
            lambda: assert_converges(gd(p10), p10),
        "assert_converges, GD, kappa 100 (default budget: 1402 steps)":
            lambda: assert_converges(gd(p100), p100),
        "assert_linear_rate, GD, kappa 10 (default: 132 steps)":
            lambda: assert_linear_rate(gd(p10), p10, rate=0.9),
        "assert_monotone_loss (100 steps)": lambda: assert_monotone_loss(gd(p10), p10),
        "assert_diverges_above (2 x 300 steps)":
            lambda: assert_diverges_above(lambda ps, lr: torch.optim.SGD(ps, lr=lr), p10),
        "assert_invariant scale, Adam (2 x 20 steps)": lambda: assert_invariant(adam, p10, "scale"),
        "assert_invariant rotation, Adam (2 x 20 steps)":
            lambda: assert_invariant(adam, p10, "rotation"),
        "assert_invariant translation, Adam (2 x 20 steps)":
            lambda: assert_invariant(adam, p10, "translation"),
        "assert_invariant first_step, Adam (1 step)":
            lambda: assert_invariant(adam, p10, "first_step"),
        "assert_noise_ball, SGD (defaults: 100 runs x 400 steps)":
            lambda: assert_noise_ball(lambda ps: torch.optim.SGD(ps, lr=0.05), noisy),
        "assert_stationary_law, SGLD (defaults: 200 runs x 400 steps)":
            lambda: assert_stationary_law(sgld, target),
    }


def run(rounds: int | None, quick: bool) -> str:
    n = rounds or (1 if quick else 5)
    times = harness.time_interleaved(cases(), rounds=n, warmup=1)
    rows = [[label, f"{statistics.median(t):.4f}"] for label, t in times.items()]
    for label, t in times.items():
        print(f"{label}: {statistics.median(t):.4f} s", flush=True)
    return (f"Seconds per call, median of {n} interleaved rounds after one warm-up, one thread; "
            f"{harness.machine()}. Rerun: `{harness.rerun_command('properties', rounds, quick)}`."
            "\n\n" + harness.markdown_table(["property call", "seconds"], rows))
