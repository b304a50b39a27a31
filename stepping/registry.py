"""One `AlgorithmInfo` record per public algorithm; the conformance suites run over them.

Capabilities are data here, never special cases by name in tests: adding an algorithm adds a
record (registered next to its class) and no test code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["AlgorithmInfo", "register", "algorithms", "get"]


@dataclass(frozen=True)
class AlgorithmInfo:
    """What the conformance suites need to know about one algorithm.

    Attributes:
        name: public name, e.g. ``"DiffGrad"``.
        cls: the class (an optimizer or a stepper).
        kind: ``"optimizer"`` or ``"stepper"``.
        paper: citation with arXiv id.
        default_kwargs: keyword arguments the generic tests construct it with.
        requires: what it needs from the user: ``"grad"``, ``"closure"``, ``"score"``...;
            ``"blocks"``: a bilevel optimizer built from ``problem`` whose ``step(closure)``
            passes the sampled blocks to the closure (not torch's ``closure() -> loss``).
        stochastic: draws from its ``generator``.
        supports: optional capabilities tested generically: ``"maximize"``, ``"weight_decay"``,
            ``"complex"``, ``"foreach"``, ``"fused"``, ``"betas"``, ``"zero_grad_noop"``
            (a zero gradient leaves the parameter unchanged); for steppers ``"reverse_time"``
            (runs on decreasing grids; the others must refuse them naming the grid) and
            ``"adaptive"`` (error-controlled within each grid interval by its ``rtol`` and
            ``atol`` attributes: its ``linear_problem`` is held to them instead of an order).
            Also ``"compile"`` (a compiled ``opt.step()`` has no graph break, one for a
            stochastic record, and a tensor lr recompiles nothing: tests/test_compile.py) and
            ``"global_norm"`` (the update normalizes by a norm over all parameters, so
            parameters and param groups do not step independently of each other), and
            ``"shared_lr"`` (every param group must hold the same ``lr``: one step over all
            parameters; a scheduler scales the groups alike, so they stay equal).
            The properties of :func:`theory_checks.properties.assert_invariant` it satisfies
            with its default arguments (tests/conformance/test_optimizer_properties.py runs
            them):
            ``"scale_invariant"`` or ``"scale_proportional"`` (the loss times ``c``),
            ``"rotation_equivariant"``, ``"translation_equivariant"`` (pathwise, with a fresh
            generator per run), ``"first_step_bounded"`` (no coordinate moves by more than
            ``lr`` on the first step); and ``"noise_ball"``: the stationary second moment of
            :func:`theory_checks.stochastic.assert_noise_ball` is known for it.
        lr_argument: the constructor's name for the value its param groups hold as ``lr``
            (the key torch's lr schedulers drive): ``"lr"``, or e.g. SSO's ``"target_lr"``.
        fused_min_numel: with ``"fused"`` in ``supports``, the size from which a tensor takes
            the fused (compiled) kernel rather than the eager one; the conformance suite's
            fused reference cases add a tensor of this size, so that both kernels are checked.
        invalid_kwargs: ``(kwargs, exception type, text the message must contain)``.
        reference: ``reference(params, grad_fn, steps, kwargs, generator) -> params`` computing
            ``steps`` updates by hand from the docstring's math; ``generator`` is a fresh
            generator seeded like the optimizer's. For steppers ``reference(x0, grid, kwargs,
            generator) -> x``, the state after the whole grid, drawing its noise from
            ``generator`` as the stepper does from ``Brownian(generator)``.
        reference_kwargs: keyword-argument sets the reference test is run with.
        linear_problem: for steppers, ``linear_problem() -> (stepper, x0, t_start, t_end,
            exact)``: a problem with a linear drift whose exact solution at ``t_end`` is
            ``exact``; run noise-free (:class:`stepping.noise.NoNoise`), the error must fall
            as ``h ** order`` (None where grid refinement measures no order: adaptive or
            Metropolis-corrected steps, correctors).
        problem: for ``"blocks"`` records, ``problem() -> (args, closure)``: the positional
            arguments the class takes before its keyword arguments, and a closure to step
            with. The conformance suite runs its torch-contract tests (``closure() -> loss``,
            ``.grad``, param groups) on the other records only, and a few of its own on these.
    """

    name: str
    cls: type
    kind: str
    paper: str
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    requires: frozenset[str] = frozenset({"grad"})
    stochastic: bool = False
    supports: frozenset[str] = frozenset()
    lr_argument: str = "lr"
    fused_min_numel: int = 0
    invalid_kwargs: tuple[tuple[dict[str, Any], type, str], ...] = ()
    reference: Callable | None = None
    reference_kwargs: tuple[dict[str, Any], ...] = ({},)
    linear_problem: Callable | None = None
    problem: Callable | None = None


_REGISTRY: dict[str, AlgorithmInfo] = {}


def register(info: AlgorithmInfo) -> AlgorithmInfo:
    """Add ``info`` to the registry (once per name); the conformance suites then run it."""
    if info.kind not in ("optimizer", "stepper"):
        raise ValueError(f"kind must be 'optimizer' or 'stepper', got {info.kind!r}")
    if info.name in _REGISTRY and _REGISTRY[info.name].cls is not info.cls:
        raise ValueError(f"an algorithm named {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def algorithms(kind: str | None = None) -> list[AlgorithmInfo]:
    """Registered records; a record is registered when its algorithm's module is imported."""
    return [i for i in _REGISTRY.values() if kind is None or i.kind == kind]


def get(name: str) -> AlgorithmInfo:
    """The record registered under ``name``; KeyError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no algorithm named {name!r}; known: {sorted(_REGISTRY)}") from None
