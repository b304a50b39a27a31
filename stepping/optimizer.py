"""`KernelOptimizer`: the torch.optim contract written once, for every kernel.

A subclass declares its defaults (validated with the ``check_*`` helpers below), the names of
its per-parameter state tensors, and an ``_update`` that calls its kernel on lists of tensors
of one device and dtype. Everything a training loop relies on lives here: the closure under
``enable_grad``, ``no_grad`` around the update, lazy state, skipping parameters without a
gradient, rejecting sparse gradients, complex parameters as their real view, per-parameter
tensor step counters, the explicit generator saved in ``state_dict``, and the optional check
that the state stays finite.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from stochstep.stepping.checks import _is_real, check_flag, check_nonnegative, check_positive
from stochstep.stepping.noise import make_generator, standard_normal_like

_ONE = torch.ones((), dtype=torch.float32)
# Keys torch itself (named parameters, lr schedulers) puts into param groups.
_TORCH_GROUP_KEYS = {"params", "param_names", "initial_lr", "max_lr", "min_lr", "base_momentum",
                     "max_momentum"}

__all__ = [
    "KernelOptimizer",
    "check_lr",
    "check_beta",
    "check_betas",
    "check_nonnegative",
    "check_positive",
    "check_flag",
]


def check_lr(value) -> float:
    return check_nonnegative("lr", value)


def check_beta(name: str, value) -> float:
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_betas(value) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1), got {value!r}")
    return check_beta("betas[0]", value[0]), check_beta("betas[1]", value[1])



class KernelOptimizer(torch.optim.Optimizer):
    """Base class of the package's optimizers (see the module docstring).

    Subclasses set ``state_names`` (zero-initialised tensors shaped like the parameter), may
    set ``stochastic = True`` to receive standard normal draws from ``self.generator`` (drawn
    per parameter, in parameter order), and implement ``_update``.
    """

    state_names: tuple[str, ...] = ()
    stochastic: bool = False

    def __init__(self, params, defaults: dict[str, Any], *,
                 generator: torch.Generator | None = None, check_finite: bool = False):
        if generator is not None or self.stochastic:
            # None becomes a fresh OS-seeded generator, never the global RNG. Its state goes
            # into state_dict, so a resumed run continues the same stream.
            generator = make_generator(generator)
        self.generator = generator
        self.check_finite = check_flag("check_finite", check_finite)
        self._check_group(dict(defaults))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its own hyperparameters are checked like the constructor's."""
        unknown = set(param_group) - set(self.defaults) - _TORCH_GROUP_KEYS
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown param group option(s) "
                            f"{sorted(unknown)}; accepted: {sorted(self.defaults)}")
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        gen_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        for state in self.state.values():
            # torch moves "step" to the parameter's device for groups with fused=True; the
            # counters live on the CPU here (they are read as Python numbers every step).
            step = state.get("step")
            if isinstance(step, Tensor):
                state["step"] = step.to("cpu", torch.float32)  # a no-op when already there
        if gen_state is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(gen_state)

    # -- hooks for subclasses -------------------------------------------------------------
    def _check_group(self, group: dict) -> None:
        """Validate (and normalise in place) one group's hyperparameters; raise ValueError
        naming the offending one."""
        raise NotImplementedError

    def _state_names(self, group: dict) -> tuple[str, ...]:
        return self.state_names

    def _update(self, group: dict, params: list[Tensor], grads: list[Tensor],
                states: dict[str, list[Tensor]], steps: list[float],
                noises: list[Tensor] | None) -> None:
        raise NotImplementedError

    # -- the step --------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        if self.check_finite:
            self._assert_finite()
        return loss

    def _step_group(self, group: dict) -> None:
        names = self._state_names(group)
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                for name in names:
                    state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        step_tensors = [state["step"] for state in states]
        # The tensor-list overload: on CPU several times cheaper per tensor than the scalar one.
        torch._foreach_add_(step_tensors, [_ONE] * len(step_tensors))
        steps = torch.stack(step_tensors).tolist()
        noises = None
        if self.stochastic:
            noises = [standard_normal_like(p, self.generator) for p in params]
        lists = {"params": params, "grads": grads, "noises": noises,
                 **{n: [state[n] for state in states] for n in names}}

        # One kernel call per (device, dtype): the kernels' foreach ops need uniform lists.
        first = params[0]
        if all(p.dtype == first.dtype and p.device == first.device for p in params):
            parts = [(first.dtype, lists, steps)]
        else:
            by_key: dict[tuple, list[int]] = {}
            for i, p in enumerate(params):
                by_key.setdefault((p.device, p.dtype), []).append(i)
            parts = [(params[idx[0]].dtype,
                      {k: v if v is None else [v[i] for i in idx] for k, v in lists.items()},
                      [steps[i] for i in idx]) for idx in by_key.values()]
        foreach = group.get("foreach", True) is not False
        for dtype, part, part_steps in parts:
            if dtype.is_complex:  # complex tensors update as their real views
                part = {k: v if v is None or k == "noises" else [torch.view_as_real(t) for t in v]
                        for k, v in part.items()}
            p, g, z = part.pop("params"), part.pop("grads"), part.pop("noises")
            if foreach:
                self._update(group, p, g, part, part_steps, z)
                continue
            for j in range(len(p)):
                self._update(group, p[j:j + 1], g[j:j + 1],
                             {n: v[j:j + 1] for n, v in part.items()}, part_steps[j:j + 1],
                             None if z is None else z[j:j + 1])

    def _assert_finite(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                for name, t in [("param", p), *state.items()]:
                    if name != "step" and isinstance(t, Tensor) and not torch.isfinite(t).all():
                        step = int(state["step"]) if "step" in state else 0
                        raise FloatingPointError(
                            f"{type(self).__name__}: non-finite value in {name} at step {step}")

    def __getstate__(self) -> dict[str, Any]:
        # torch keeps only defaults, state and param groups (and drops hooks); the generator
        # and the subclasses' own settings must survive deepcopy and pickling too.
        extra = {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}
        return {**extra, **super().__getstate__()}

    # -- generator in the state dict ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        if self.generator is not None:
            sd["generator_state"] = self.generator.get_state()
        return sd
