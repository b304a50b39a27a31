"""`integrate`: the package's only time loop.

A stepper is any object with ``step_(x, t0, t1, noise)`` that advances ``x`` in place from time
``t0`` to ``t1`` and declares its deterministic ``order`` (and ``strong_order`` if stochastic).
A stepper that sets its attribute ``finished`` to True ends the run after that step (a stopping
rule). Predictor-corrector schemes are compositions of steppers, not new loops.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from stochstep.stepping.checks import check_finite_state, check_flag
from stochstep.stepping.grids import as_grid

__all__ = ["Stepper", "Solution", "integrate"]


class Stepper(Protocol):
    """What :func:`integrate` runs: ``step_(x, t0, t1, noise)`` advances ``x`` in place from
    time ``t0`` to ``t1``; ``order`` is its deterministic order (steppers of SDEs also declare
    ``strong_order``), and a ``finished`` attribute set to True ends the run after that step."""

    order: float

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> object: ...


class Solution(NamedTuple):
    """Final state, and the saved times and states (``path[k]`` is the state at ``times[k]``)."""

    x: Tensor
    times: Tensor
    path: Tensor


def integrate(stepper: Stepper, x0: Tensor, grid, *, noise=None, progress: bool = False,
              save_every: int | None = None, desc: str | None = None,
              check_finite: bool = False):
    """Run ``stepper`` over consecutive times of ``grid``, starting from ``x0``.

    Args:
        stepper: the update (see the module docstring).
        x0: initial state; it is not modified.
        grid: strictly monotone times (see :func:`stepping.grids.as_grid`).
        noise: passed to every step (e.g. a :class:`stepping.noise.Brownian`).
        progress: show a tqdm progress bar.
        save_every: if given, also keep the state every ``save_every`` steps (and the last).
        desc: progress-bar label (and the name in errors; default: the stepper's class).
        check_finite: raise ``FloatingPointError`` naming the step and its time as soon as the
            state holds a NaN or infinity (``x0`` is checked too). Off by default, as for the
            optimizers: the check reads one flag back from the device every step.

    Returns:
        The final state, or a :class:`Solution` when ``save_every`` is given.
    """
    if not isinstance(x0, Tensor):
        raise ValueError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor, got {x0.dtype}")
    if not callable(getattr(stepper, "step_", None)):
        raise ValueError(f"stepper must have a step_(x, t0, t1, noise) method, got {stepper!r}")
    if save_every is not None and (isinstance(save_every, bool) or not isinstance(save_every, int)
                                   or save_every < 1):
        raise ValueError(f"save_every must be an integer >= 1 or None, got {save_every!r}")
    check_flag("check_finite", check_finite)
    times = as_grid(grid).tolist()
    name = desc or type(stepper).__name__
    if check_finite:
        check_finite_state(x0, f"{name}: x0 (t = {times[0]})")
    x = x0.detach().clone()
    saved_t, saved_x = [times[0]], [x.clone()] if save_every else []
    n = len(times) - 1
    bar = tqdm(range(n), desc=name, disable=not progress, leave=False)
    # No autograd across steps: a neural score would otherwise chain one graph through the
    # whole trajectory. Steppers that need gradients (a score from a log-density) enable them
    # locally.
    with torch.no_grad():
        try:
            for k in bar:
                stepper.step_(x, times[k], times[k + 1], noise)
                if check_finite:
                    check_finite_state(x, f"{name}: step {k + 1} of {n} (t = {times[k + 1]})")
                done = getattr(stepper, "finished", False)
                if save_every and ((k + 1) % save_every == 0 or k + 1 == n or done):
                    saved_t.append(times[k + 1])
                    saved_x.append(x.clone())
                if done:
                    break
        finally:
            bar.close()
    if save_every:
        return Solution(x, torch.tensor(saved_t, dtype=torch.float64), torch.stack(saved_x))
    return x
