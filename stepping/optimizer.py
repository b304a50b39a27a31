"""`KernelOptimizer`: the torch.optim contract written once, for every kernel.

A subclass declares its defaults (validated with the ``check_*`` helpers below), the names of
its per-parameter state tensors, and an ``_update`` that calls its kernel on lists of tensors
of one device and dtype. Everything a training loop relies on lives here: the closure under
``enable_grad``, ``no_grad`` around the update, lazy state, skipping parameters without a
gradient, rejecting sparse gradients, complex parameters as their real view, per-parameter
tensor step counters, hyperparameters checked again at every step (schedulers and users change
them), a 1-element tensor ``lr`` as in torch, the explicit generator saved in ``state_dict``
where torch's state-dict hooks see it, older state dicts (Python-number steps, options added
since), state that follows parameters moved to another dtype or device, float16/bfloat16
parameters updated in float32, and the optional check that the state stays finite.

Under ``torch.compile`` the step traces without graph breaks: step counters and a tensor ``lr``
stay tensors there (eager, they become Python numbers, which is faster on CPU), and the one part
that must run eagerly, the draws from the explicit ``torch.Generator`` of the stochastic
optimizers, is one call per step, decorated with ``torch._dynamo.disable``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from stochstep.stepping.checks import _is_real, check_flag, check_nonnegative, check_positive
from stochstep.stepping.noise import make_generator, set_generator_state, standard_normal_like

_ONE = torch.ones((), dtype=torch.float32)
# Updated in float32, as torch's fused kernels do: in float16, 1 / eps or eps itself (1e-8)
# falls outside the format, and sums of small terms round away.
_HALF = (torch.float16, torch.bfloat16)
# Keys torch itself (named parameters, lr schedulers) puts into param groups.
_TORCH_GROUP_KEYS = {"params", "param_names", "initial_lr", "max_lr", "min_lr", "base_momentum",
                     "max_momentum"}

__all__ = [
    "KernelOptimizer",
    "run_eagerly",
    "check_lr",
    "check_beta",
    "check_betas",
    "check_nonnegative",
    "check_positive",
    "check_flag",
]


def check_lr(value) -> float | Tensor:
    """Check a learning rate: a number >= 0, or a 1-element tensor holding one, which is
    returned as it is (as in torch, schedulers then change the tensor in place). Under
    ``torch.compile`` a tensor's value is checked inside the graph (``RuntimeError``), since
    reading it out would break the graph."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor lr must be 1-element, got shape {tuple(value.shape)}")
        if torch.compiler.is_compiling():
            torch._assert_async(value >= 0, "lr must be a number >= 0 (a tensor lr holds a "
                                "negative or NaN value)")
        else:
            check_nonnegative("lr", value.item())
        return value
    return check_nonnegative("lr", value)


def check_beta(name: str, value) -> float:
    """Check a decay rate: a number in [0, 1), returned as a float."""
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_betas(value) -> tuple[float, float]:
    """Check ``betas``: a pair of decay rates in [0, 1), returned as a tuple of floats."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1), got {value!r}")
    return check_beta("betas[0]", value[0]), check_beta("betas[1]", value[1])


class KernelOptimizer(torch.optim.Optimizer):
    """Base class of the package's optimizers (see the module docstring).

    Subclasses set ``state_names`` (zero-initialised tensors shaped like the parameter), may
    set ``stochastic = True`` to receive standard normal draws from ``self.generator`` (drawn
    per parameter, in parameter order, by :meth:`_draws`), and implement ``_update``.

    State follows its parameter: when a parameter's dtype or device changed since the last step
    (``model.to(...)``), its floating state is cast to the parameter's dtype and device (other
    state moves to its device), as ``load_state_dict`` casts; the step counters stay CPU
    float32. Float16 and bfloat16 parameters are updated in float32 (parameter, gradient,
    state and draws upcast, the results rounded back once), as torch's fused kernels do; their
    state is kept in the parameter's dtype. (``check_finite`` reads the values, so it adds
    graph breaks to a compiled step.)
    """

    state_names: tuple[str, ...] = ()
    stochastic: bool = False

    def __init__(self, params, defaults: dict[str, Any], *,
                 generator: torch.Generator | None = None, check_finite: bool = False):
        if generator is not None or self.stochastic:
            # None: a generator seeded by one draw from torch's global RNG, which no step
            # touches. Its state goes into state_dict, so a resumed run continues the stream.
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

    # -- state dicts: torch's path, with the generator in it ------------------------------
    # torch's state_dict() packs the state, then runs the post-hooks; load_state_dict() runs
    # the pre-hooks, checks the groups, installs state and groups through __setstate__, then
    # runs the post-hooks. The generator (and a subclass's extra state) rides the same path:
    # added by a post-hook that runs first, taken by a pre-hook that runs last and installed in
    # __setstate__, so every user hook sees it and a refused state dict loads none of it. The
    # two hooks are registered per call because torch drops hooks on deepcopy and pickling.
    def state_dict(self) -> dict[str, Any]:
        handle = self.register_state_dict_post_hook(_add_extra_state, prepend=True)
        try:
            return super().state_dict()
        finally:
            handle.remove()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        handle = self.register_load_state_dict_pre_hook(_take_extra_state)
        try:
            super().load_state_dict(state_dict)
        finally:
            handle.remove()
            self.__dict__.pop("_incoming", None)

    def _extra_state(self) -> dict[str, Any]:
        """Entries of the state dict besides torch's "state" and "param_groups"."""
        return {} if self.generator is None else {"generator_state": self.generator.get_state()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        """Install what :meth:`_extra_state` saved; raise before changing anything."""
        if extra.get("generator_state") is not None:
            self.generator = set_generator_state(self.generator or torch.Generator(),
                                                 extra["generator_state"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        """torch's loading step (and unpickling): also brings older state dicts up to date, as
        torch's own optimizers do: a missing option takes the constructor's default, and a
        "step" saved as a Python number (or moved to a device) becomes the CPU float32 tensor
        the step reads."""
        incoming = self.__dict__.pop("_incoming", None)
        if incoming:
            self._load_extra_state(incoming)
        super().__setstate__(state)
        signature = inspect.signature(type(self)).parameters
        defaults = {k: signature[k].default for k in self.defaults if k in signature
                    and signature[k].default is not inspect.Parameter.empty}
        for group in self.param_groups:
            for key, value in defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                state = self.state.get(p)
                step = state.get("step") if isinstance(state, dict) else None
                if step is not None and not (isinstance(step, Tensor) and step.is_cpu
                                             and step.dtype == torch.float32):
                    state["step"] = torch.tensor(float(step), dtype=torch.float32)

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
        groups = self._checked_groups()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        draws = [None] * len(groups)
        if self.stochastic:
            draws = run_eagerly(self._draw_all, groups)
        for group, group_draws in zip(groups, draws):
            self._step_group(group, group_draws)
        if self.check_finite:
            self._assert_finite()
        return loss

    def _checked_groups(self) -> list[dict]:
        """The param groups as the update reads them: checked again as the constructor checks
        them (a scheduler or a user may have changed them since), a tensor lr as its number.
        Copies of a few plain values: negligible beside any update."""
        groups = []
        for i, group in enumerate(self.param_groups):
            group = dict(group)
            try:
                self._check_group(group)
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}: param group {i}: {err}") from None
            if isinstance(group.get("lr"), Tensor) and not torch.compiler.is_compiling():
                group["lr"] = group["lr"].item()
            groups.append(group)
        return groups

    def _draw_all(self, groups: list[dict]) -> list[list]:
        return [self._draws(group, [p for p in group["params"] if p.grad is not None])
                for group in groups]

    def _draws(self, group: dict, params: list[Tensor]) -> list[Tensor]:
        """The step's random draws for the parameters of ``group`` that have a gradient, one
        entry per parameter (runs eagerly, also under ``torch.compile``)."""
        return [standard_normal_like(p, self.generator) for p in params]

    def _init_state(self, group: dict, params: list[Tensor]) -> list[dict]:
        """The parameters' state: created at their first step, cast where they changed."""
        return [self._state_of(p, self._state_names(group)) for p in params]

    def _state_of(self, p: Tensor, names: tuple[str, ...]) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            for name in names:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif names:
            first = state[names[0]]
            if first.dtype != p.dtype or first.device != p.device:
                for name, value in state.items():
                    if name != "step" and isinstance(value, Tensor):
                        state[name] = value.to(device=p.device, dtype=p.dtype
                                               if value.is_floating_point() else None)
        return state

    def _step_group(self, group: dict, draws: list | None = None) -> None:
        names = self._state_names(group)
        # One pass over the parameters: on many small tensors its Python cost is the step's.
        params, grads, states = [], [], []
        uniform = True
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if params and uniform and (p.dtype != params[0].dtype
                                       or p.device != params[0].device):
                uniform = False
            params.append(p)
            grads.append(grad)
            states.append(self._state_of(p, names))
        if not params:
            return
        step_tensors = [state["step"] for state in states]
        # The tensor-list overload: on CPU several times cheaper per tensor than the scalar one.
        torch._foreach_add_(step_tensors, [_ONE] * len(step_tensors))
        # Eager: Python numbers, cheaper on CPU. Compiled: tensors (.tolist() breaks the graph).
        steps = step_tensors if torch.compiler.is_compiling() \
            else torch.stack(step_tensors).tolist()
        lists = {"params": params, "grads": grads, "noises": draws,
                 **{n: [state[n] for state in states] for n in names}}

        # One kernel call per (device, dtype): the kernels' foreach ops need uniform lists.
        if uniform:
            parts = [(params[0].dtype, lists, steps)]
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
            half = part["params"][0].dtype in _HALF
            if half:
                originals = [part["params"], *(part[n] for n in names)]
                part = {k: v if v is None else [t.float() for t in v] for k, v in part.items()}
            p, g, z = part["params"], part["grads"], part["noises"]
            states_part = {n: part[n] for n in names}
            if foreach:
                self._update(group, p, g, states_part, part_steps, z)
            else:
                for j in range(len(p)):
                    self._update(group, p[j:j + 1], g[j:j + 1],
                                 {n: v[j:j + 1] for n, v in states_part.items()},
                                 part_steps[j:j + 1], None if z is None else z[j:j + 1])
            if half:  # round the float32 results back, once
                for original, result in zip(originals, [p, *states_part.values()]):
                    torch._foreach_copy_(original, result)

    def _assert_finite(self) -> None:
        for i, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for j, p in enumerate(group["params"]):
                state = self.state.get(p, {})
                for name, t in [("value", p), *state.items()]:
                    if name != "step" and isinstance(t, Tensor) and not torch.isfinite(t).all():
                        where = repr(names[j]) if names else f"param_groups[{i}]['params'][{j}]"
                        step = int(state["step"]) if "step" in state else 0
                        raise FloatingPointError(
                            f"{type(self).__name__}: non-finite {name} of parameter {where} "
                            f"at step {step}")

    def __getstate__(self) -> dict[str, Any]:
        # torch keeps only defaults, state and param groups (and drops hooks); the generator
        # and the subclasses' own settings must survive deepcopy and pickling too.
        extra = {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}
        return {**extra, **super().__getstate__()}


def run_eagerly(fn: Callable, *args):
    """``fn(*args)``; under ``torch.compile``, outside the graph: one graph break, on purpose,
    for what cannot be traced (draws from an explicit ``torch.Generator``, Python-side walks).
    Eagerly a plain call (one through ``torch._dynamo.disable`` costs about 0.5 us
    more)."""
    return _outside_graph(fn, *args) if torch.compiler.is_compiling() else fn(*args)


@torch._dynamo.disable
def _outside_graph(fn: Callable, *args):
    return fn(*args)


def _add_extra_state(optimizer: KernelOptimizer, state_dict: dict[str, Any]) -> None:
    state_dict.update(optimizer._extra_state())


def _take_extra_state(optimizer: KernelOptimizer, state_dict: dict[str, Any]) -> None:
    optimizer._incoming = {k: v for k, v in state_dict.items()
                           if k not in ("state", "param_groups")}
