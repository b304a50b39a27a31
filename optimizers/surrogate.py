"""Target-based surrogates: SSO, stochastic surrogate optimization (Lavington et al., ICML 2023,
arXiv 2302.02607).

The loss is :math:`L(\\theta) = \\ell(f(\\theta))`: a model :math:`f` maps the parameters to
targets :math:`z` (predictions or logits on a batch), and :math:`\\ell`, cheap to
differentiate in :math:`z`, is expensive to query (a simulator, environment rollouts, an
external scorer). SSO queries :math:`\\ell` once per step and then takes many cheap steps on
a surrogate that only needs :math:`f`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from stochstep.stepping.checks import check_int, check_nonnegative, check_positive
from stochstep.stepping.optimizer import KernelOptimizer, check_lr
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["SSO", "SCHEDULES", "TARGET_OPTIMIZERS", "target_surrogate"]

SCHEDULES = ("constant", "inverse_sqrt", "exponential")
TARGET_OPTIMIZERS = ("sgd", "adagrad")
# Diagonal Adagrad in target space (the authors' Diag_Ada_FMDOpt): every example's squared
# target gradients are summed from this value. Their code clamps the sums to [1e-5, 1e5] after
# every update; starting at the floor keeps the metric positive without the clamp's jumps.
ADAGRAD_INITIAL = 1e-5

# The stochastic Armijo line search of the authors' inner optimizer (``LSOpt`` as
# ``SGD_FMDOpt`` sets it up in their ICML sweeps): the trial step restarts from 10 at every
# outer step, shrinks by 0.9 until the sufficient-decrease test with c = 0.1 holds (at most
# 100 tries, the last shrunk step is taken if none passes), and the inner loop stops early
# once the surrogate's gradient norm is at most 1e-6. (c = 0.1 is parser.py's default, which
# the SSO sweeps keep; the 0.5 of configs/icml is the SLS baseline's.)
ARMIJO_INITIAL_STEP = 10.0
ARMIJO_C = 0.1
ARMIJO_BACKTRACK = 0.9
ARMIJO_MAX_TRIES = 100
ARMIJO_MIN_STEP = 1e-6
INNER_GRAD_TOL = 1e-6

# Options every param group must share: the surrogate is one function of all the parameters.
# target_lr is kept as the groups' "lr", the key torch's lr schedulers drive.
_SHARED = ("lr", "inner_steps", "schedule", "total_steps")
TARGET_LR = 'target_lr (param_groups[i]["lr"])'


def target_surrogate(targets: Tensor, anchor: Tensor, anchor_grad: Tensor, target_lr: float,
                     anchor_loss: Tensor | float = 0.0, metric: Tensor | None = None) -> Tensor:
    r"""The target-based surrogate of :math:`\ell` around the anchor targets :math:`z_t`.

    .. math::
        g_t(z) = \ell(z_t) + \langle \nabla\ell(z_t),\, z - z_t \rangle
                 + \frac{1}{2\eta_t} \lVert z - z_t \rVert_D^2, \qquad
        \lVert v \rVert_D^2 = \textstyle\sum_j D_j v_j^2

    summed over every entry :math:`j` of the targets, with :math:`D = 1` unless a metric is
    given (:math:`D > 0`, e.g. Adagrad's in target space). With :math:`z = f(\theta)` it is
    the surrogate of :math:`L(\theta) = \ell(f(\theta))`: equal to it at :math:`\theta_t`,
    with the same gradient there, and above it everywhere when :math:`\ell` is
    :math:`(\min_j D_j/\eta_t)`-smooth.

    Args:
        targets: :math:`z = f(\theta)`, with its graph when gradients in :math:`\theta` are
            wanted.
        anchor: :math:`z_t`, the same shape.
        anchor_grad: :math:`\nabla\ell(z_t)`, the same shape.
        target_lr: :math:`\eta_t > 0`.
        anchor_loss: :math:`\ell(z_t)` (default 0: the constant changes no step).
        metric: :math:`D`, the targets' shape (default None: :math:`D = 1`).

    References:
        Lavington, Vaswani, Babanezhad, Schmidt, Le Roux, "Target-based Surrogates for
        Stochastic Optimization", ICML 2023, arXiv:2302.02607.

    Example:
        >>> z_t, grad = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
        >>> target_surrogate(torch.tensor([2.0, 2.0]), z_t, grad, target_lr=0.5, anchor_loss=3.0)
        tensor(4.5000)
    """
    diff = targets - anchor
    squares = diff.square() if metric is None else metric * diff.square()
    return anchor_loss + (anchor_grad * diff).sum() + squares.sum() / (2 * target_lr)


def _schedule_factor(schedule: str, t: int, total_steps: int | None) -> float:
    """eta_t / target_lr at outer step t = 1, 2, ..."""
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return 1.0 / math.sqrt(t)
    return (1.0 / total_steps) ** (t / total_steps)


def _check_target_lr(name: str, value, check: Callable) -> None:
    """``check(name, number)`` on a number or a 1-element tensor (kept as it is, as torch
    keeps a tensor lr: schedulers change it in place)."""
    if isinstance(value, Tensor) and value.numel() != 1:
        check_lr(value)   # its error: "Tensor lr must be 1-element", as everywhere
    check(name, value.item() if isinstance(value, Tensor) else value)


def _check_targets(name: str, z, shape=None, graph: bool = True) -> Tensor:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must return the targets as a tensor, got {type(z).__name__}")
    if shape is not None and z.shape != shape:
        raise ValueError(f"{name} returned targets of shape {tuple(z.shape)}, but the step "
                         f"began with shape {tuple(shape)}: it must evaluate the same batch")
    if graph and not z.requires_grad:
        raise ValueError(f"{name} must return the targets with their graph (requires_grad, "
                         "computed from the parameters), got a tensor without one: do not "
                         "detach them or compute them under torch.no_grad()")
    if not z.is_floating_point():
        raise ValueError(f"{name} must return floating-point targets, got {z.dtype}")
    return z


class SSO(KernelOptimizer):
    r"""SSO: many cheap model steps on a target-based surrogate per expensive loss gradient.

    ``step(closure, target_loss)``: ``closure()`` returns the targets :math:`z = f(\theta)`
    on the current batch, with their graph; ``target_loss(z)`` returns the expensive scalar
    loss :math:`\ell(z)` and is called exactly once per step, on :math:`z_t` detached (with
    ``requires_grad``). At outer step :math:`t = 1, 2, \dots`, with
    :math:`\theta^0 = \theta_t` (all parameters as one vector):

    .. math::
        z_t &= f(\theta_t), \qquad g_t = \nabla\ell(z_t), \qquad
            \eta_t = \eta\, s(t) \\
        \tilde g_t(\theta) &= \ell(z_t) + \langle g_t,\, f(\theta) - z_t \rangle
            + \frac{1}{2\eta_t} \lVert f(\theta) - z_t \rVert^2 \\
        \theta^{k+1} &= \theta^k - \gamma_k \nabla\tilde g_t(\theta^k),
            \qquad k = 0, \dots, m - 1, \qquad \theta_{t+1} = \theta^m

    with :math:`s(t) = 1` (``"constant"``), :math:`1/\sqrt{t}` (``"inverse_sqrt"``) or
    :math:`T^{-t/T}` (``"exponential"``, :math:`T` = ``total_steps``). Each inner step calls
    ``closure()`` again (never ``target_loss``). With ``inner_lr`` a number,
    :math:`\gamma_k` is it (per param group). With ``inner_lr=None`` (default),
    :math:`\gamma_k` is the authors' stochastic Armijo line search: the trial step
    :math:`\gamma` starts at 10 at every outer step and carries over between inner steps;
    :math:`\gamma_k` is the first of :math:`\gamma, 0.9\gamma, 0.9^2\gamma, \dots` (at most
    100 tries; the last one is taken if none passes) with

    .. math::
        \tilde g_t(\theta^k - \gamma_k \nabla\tilde g_t(\theta^k))
        \le \tilde g_t(\theta^k) - c\, \gamma_k \lVert\nabla\tilde g_t(\theta^k)\rVert^2,
        \qquad c = 0.1

    and the inner loop stops early once :math:`\lVert\nabla\tilde g_t(\theta^k)\rVert \le
    10^{-6}`. :math:`\nabla\tilde g_t(\theta_t) = \nabla L(\theta_t)`; if :math:`\ell` is
    :math:`L`-smooth and :math:`\eta_t \le 1/L`, :math:`\tilde g_t \ge L` everywhere, so any
    decrease of the surrogate decreases the (batch) loss. With a linear model and exact inner
    minimization, :math:`z_{t+1}` is the projection of :math:`z_t - \eta_t g_t` onto the
    realizable targets: projected SGD in target space.

    ``target_optimizer="adagrad"`` makes that target-space step diagonal Adagrad (the paper's
    surrogates built from other stochastic optimizers; the authors' ``Diag_Ada_FMDOpt``). The
    targets' first dimension runs over the batch's examples, ``example_ids`` (distinct, in
    :math:`0, \dots, n - 1`, :math:`n` = ``n_examples``) says which they are, and each example
    :math:`i` keeps the sum of its squared target gradients over the steps :math:`s` whose
    batch :math:`S_s` held it (entrywise over its targets):

    .. math::
        G_{t,i} &= 10^{-5} + \sum_{s \le t:\ i \in S_s} g_{s,i}^2, \qquad
            D_{t,i} = \sqrt{G_{t,i}} \\
        \tilde g_t(\theta) &= \ell(z_t) + \langle g_t,\, f(\theta) - z_t \rangle
            + \frac{1}{2\eta_t} \sum_{i \in S_t}
              \big\langle D_{t,i},\, (f(\theta)_i - z_{t,i})^2 \big\rangle

    Its value and gradient at :math:`\theta_t` are still the loss's; over unconstrained targets
    its minimizer is Adagrad's step :math:`z_{t,i} - \eta_t g_{t,i} / D_{t,i}`, and with
    exact inner minimization :math:`z_{t+1}` is that step's projection onto the realizable
    targets in the :math:`D_t`-weighted norm. (The authors clamp :math:`G` to
    :math:`[10^{-5}, 10^5]` after each update; here it starts at :math:`10^{-5}` and is not
    capped.) There is no Adam: its step :math:`\hat m / \sqrt{\hat v}` is not a positive
    rescaling of :math:`g_t` (the momentum can point against it), so no quadratic with a
    positive diagonal metric has it as minimizer.

    The surrogate follows the paper. The authors' code minimizes
    :math:`\operatorname{mean}(g_t f(\theta)/\eta' + (f(\theta) - z_t)^2)` with
    :math:`\eta'` an inverse step: a rescaling (by :math:`2\eta_t/(np)` with
    :math:`\eta' = 1/(2\eta_t)`) that changes the Armijo steps but not the minimizer. The
    code's per-epoch expansion of the inner step (a factor :math:`2^{1/\text{batches per
    epoch}}` per inner step) is left out: it needs the epoch's length, and the inner loop
    stops on a small gradient before its step rather than after it. ``target_lr`` is the
    paper's :math:`\eta`, whose natural scale is :math:`1/L` (for a mean squared error
    :math:`\frac{1}{2n}\lVert z - y\rVert^2`, :math:`\eta = n`). Each param group holds it
    as ``"lr"``, so ``torch.optim.lr_scheduler`` schedulers drive it (times ``schedule``'s
    factor); a 1-element tensor is accepted, as torch does. Every group must hold the same
    value (a scheduler scales them alike), checked again at every step. At ``lr = 0`` (where
    e.g. ``CosineAnnealingLR`` ends) a step calls ``target_loss`` and moves nothing: as
    :math:`\eta_t \to 0` the surrogate pins :math:`f(\theta)` to :math:`z_t`.

    Gradients are taken with ``torch.autograd.grad``: ``.grad`` is never read or written, and
    a parameter the targets do not depend on is not moved. Float16/bfloat16 targets and
    parameters are updated in float32 and rounded back.

    Args:
        params: parameters or parameter groups (groups may differ only in ``inner_lr``).
        target_lr: the target-space step :math:`\eta > 0` (a number or a 1-element tensor),
            kept as ``param_groups[i]["lr"]``.
        inner_steps: :math:`m \ge 1`, surrogate steps per outer step (default 10).
        inner_lr: :math:`\gamma > 0` for plain gradient steps on the surrogate, or None
            (default) for the Armijo line search.
        schedule: ``"constant"`` (default), ``"inverse_sqrt"`` or ``"exponential"``: what
            multiplies ``target_lr`` at outer step :math:`t`.
        total_steps: :math:`T`, required by (and only accepted with) ``"exponential"``.
        target_optimizer: ``"sgd"`` (default, the paper's SSO) or ``"adagrad"`` (diagonal
            Adagrad in target space, state per example).
        n_examples: :math:`n`, the number of examples ``example_ids`` index; required by (and
            only accepted with) ``"adagrad"``.
        check_finite: raise ``FloatingPointError`` naming the parameter and step if a
            parameter becomes NaN or infinite.

    References:
        Lavington, Vaswani, Babanezhad, Schmidt, Le Roux, "Target-based Surrogates for
        Stochastic Optimization", ICML 2023, arXiv:2302.02607.

    Example:
        >>> import torch
        >>> from stochstep.optimizers import SSO
        >>> X, y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]), torch.tensor([1.0, 2.0, 3.0])
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = SSO([w], target_lr=1.0, inner_steps=20)
        >>> for _ in range(10):
        ...     loss = opt.step(lambda: X @ w, lambda z: 0.5 * ((z - y) ** 2).sum())
        >>> w.detach().round(decimals=3)
        tensor([1., 1.])
    """

    def __init__(self, params, target_lr: float, *, inner_steps: int = 10,
                 inner_lr: float | None = None, schedule: str = "constant",
                 total_steps: int | None = None, target_optimizer: str = "sgd",
                 n_examples: int | None = None, check_finite: bool = False):
        _check_target_lr("target_lr", target_lr, check_positive)
        if target_optimizer not in TARGET_OPTIMIZERS:
            raise ValueError(f"target_optimizer must be one of {TARGET_OPTIMIZERS}, got "
                             f"{target_optimizer!r}")
        if target_optimizer == "adagrad":
            if n_examples is None:
                raise ValueError("target_optimizer='adagrad' keeps state per example: it "
                                 "needs n_examples (an integer >= 1), got None")
            n_examples = check_int("n_examples", n_examples, 1)
        elif n_examples is not None:
            raise ValueError("n_examples is only used by target_optimizer='adagrad', got "
                             f"n_examples={n_examples!r} with target_optimizer="
                             f"{target_optimizer!r}")
        self.target_optimizer, self.n_examples = target_optimizer, n_examples
        # Adagrad's G, one row per example (created at the first step, when the targets'
        # shape is known); it belongs to no parameter, so it rides in the state dict's extras
        self.target_sq_sum: Tensor | None = None
        defaults = dict(lr=target_lr, inner_steps=inner_steps, inner_lr=inner_lr,
                        schedule=schedule, total_steps=total_steps)
        super().__init__(params, defaults, check_finite=check_finite)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its target step is its ``"lr"`` (as torch's schedulers expect)."""
        if "target_lr" in param_group:
            raise TypeError('SSO param groups hold target_lr as "lr" (the key torch\'s lr '
                            'schedulers drive): write {"params": ..., "lr": ...}, got a group '
                            f"with target_lr={param_group['target_lr']!r}")
        super().add_param_group(param_group)

    def __setstate__(self, state: dict) -> None:
        loading = self.__dict__.get("_incoming")   # a load_state_dict's extras, if loading
        # state dicts saved while the groups held "target_lr" load with it as "lr"
        for group in state.get("param_groups", ()):
            if "target_lr" in group:
                group.setdefault("lr", group.pop("target_lr"))
        super().__setstate__(state)
        if loading is not None and "target_sq_sum" not in loading:
            self.target_sq_sum = None   # saved before any Adagrad step

    def _extra_state(self) -> dict:
        extra = super()._extra_state()
        if self.target_sq_sum is not None:
            extra["target_sq_sum"] = self.target_sq_sum
        return extra

    def _load_extra_state(self, extra: dict) -> None:
        saved = extra.get("target_sq_sum")
        if saved is not None and (self.target_optimizer != "adagrad" or saved.dim() < 1
                                  or saved.shape[0] != self.n_examples):
            raise ValueError(f"the state dict holds Adagrad target sums of shape "
                             f"{tuple(saved.shape)}; this SSO has target_optimizer="
                             f"{self.target_optimizer!r} and n_examples={self.n_examples!r}")
        super()._load_extra_state(extra)
        if saved is not None:
            self.target_sq_sum = saved.clone()

    def _check_group(self, group):
        # >= 0, as torch's lr: schedulers such as CosineAnnealingLR end at 0 (no move); the
        # constructor asks for > 0
        _check_target_lr(TARGET_LR, group["lr"], check_nonnegative)
        if not isinstance(group["lr"], Tensor):
            group["lr"] = float(group["lr"])
        group["inner_steps"] = check_int("inner_steps", group["inner_steps"], 1)
        if group["inner_lr"] is not None:
            group["inner_lr"] = check_positive("inner_lr", group["inner_lr"])
        if group["schedule"] not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {group['schedule']!r}")
        exponential = group["schedule"] == "exponential"
        if group["total_steps"] is not None:
            if not exponential:
                raise ValueError("total_steps is only used by schedule='exponential', got "
                                 f"total_steps={group['total_steps']!r} with schedule="
                                 f"{group['schedule']!r}")
            group["total_steps"] = check_int("total_steps", group["total_steps"], 1)
        elif exponential:
            raise ValueError("schedule='exponential' needs total_steps (an integer >= 1), "
                             "got None")

    def _shared_options(self, groups: list[dict]) -> dict:
        first = groups[0]
        for i, group in enumerate(groups[1:], 1):
            for key in _SHARED:
                if group[key] != first[key]:
                    name = TARGET_LR if key == "lr" else key
                    raise ValueError(f"SSO: param group {i} has {name}={group[key]!r} but group "
                                     f"0 has {first[key]!r}: the surrogate is one function of "
                                     "all parameters, so target_lr, inner_steps, schedule and "
                                     "total_steps are shared")
            if (group["inner_lr"] is None) != (first["inner_lr"] is None):
                raise ValueError("SSO: inner_lr must be None (the line search) in every param "
                                 f"group or in none; group 0 has {first['inner_lr']!r}, group "
                                 f"{i} has {group['inner_lr']!r}")
        return first

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None,
             target_loss: Callable[[Tensor], Tensor] | None = None,
             example_ids: Tensor | None = None) -> Tensor:
        """One outer step (see the class docstring); returns :math:`\\ell(z_t)` (detached).
        ``example_ids``: with ``target_optimizer="adagrad"``, which examples the targets'
        rows are (an integer tensor, one distinct id per row)."""
        if closure is None or not callable(closure):
            raise ValueError("SSO.step needs closure, a callable returning the targets "
                             f"f(theta) on the current batch with their graph, got {closure!r}")
        if target_loss is None or not callable(target_loss):
            raise ValueError("SSO.step needs target_loss, a callable mapping the targets to "
                             f"the scalar loss, got {target_loss!r}")
        groups = self._checked_groups()
        options = self._shared_options(groups)
        params, rates = [], []
        for group in groups:
            for p in group["params"]:
                if p.requires_grad:
                    params.append(p)
                    rates.append(group["inner_lr"])
        states = [self._state_of(p, ()) for p in params]
        t = int(states[0]["step"]) + 1 if states else 1
        eta = options["lr"] * _schedule_factor(options["schedule"], t, options["total_steps"])

        with torch.enable_grad():
            z = _check_targets("closure", closure())
            # the example ids are checked before the expensive call
            ids = self._checked_example_ids(example_ids, z)
            # float16/bfloat16 targets: the surrogate and its line search in float32
            work = torch.promote_types(z.dtype, torch.float32)
            anchor = z.detach().to(work).requires_grad_()
            loss = target_loss(anchor)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(f"target_loss must return a scalar (1-element) tensor, got "
                                 f"{shape}")
            if not loss.requires_grad:
                raise ValueError("target_loss must return a loss differentiable in the "
                                 "targets it is given (it got them with requires_grad)")
            (anchor_grad,) = torch.autograd.grad(loss.reshape(()), anchor)
        anchor = anchor.detach()
        anchor_loss = loss.detach().reshape(()).to(work)
        metric = None if ids is None else self._adagrad_metric(ids, anchor_grad)

        def surrogate(with_grad: bool):
            with torch.enable_grad() if with_grad else torch.no_grad():
                f = _check_targets("closure", closure(), anchor.shape, graph=with_grad)
                value = target_surrogate(f.to(work), anchor, anchor_grad, eta, anchor_loss,
                                         metric)
                if not with_grad:
                    return value, None
                grads = torch.autograd.grad(value, params, allow_unused=True)
            return value.detach(), grads

        if eta > 0:   # eta = 0 (a scheduler's end): f(theta) must stay z_t, theta_t is optimal
            self._inner_loop(params, rates, options["inner_steps"], surrogate)
        for state in states:
            state["step"] += 1
        if self.check_finite:
            self._assert_finite()
        return loss.detach().reshape(())

    def _checked_example_ids(self, example_ids, z: Tensor) -> Tensor | None:
        """The batch's example ids as a long tensor on the targets' device (None for SGD)."""
        if self.target_optimizer == "sgd":
            if example_ids is not None:
                raise ValueError("example_ids is only used by target_optimizer='adagrad' "
                                 "(this SSO has 'sgd', which keeps no state per example)")
            return None
        if example_ids is None:
            raise ValueError("target_optimizer='adagrad' keeps state per example: step needs "
                             "example_ids, an integer tensor with the id (0 to n_examples - 1)"
                             " of each row of the targets")
        rows = z.shape[0] if z.dim() else None
        if not isinstance(example_ids, Tensor) or example_ids.dtype.is_floating_point \
                or example_ids.dtype.is_complex or example_ids.dtype == torch.bool \
                or example_ids.shape != (rows,):
            shape = tuple(example_ids.shape) if isinstance(example_ids, Tensor) else \
                type(example_ids).__name__
            raise ValueError(f"example_ids must be a 1-D integer tensor with one id per row of "
                             f"the targets ({rows} rows), got {shape}"
                             + (f" of {example_ids.dtype}" if isinstance(example_ids, Tensor)
                                else ""))
        ids = example_ids.to(device=z.device, dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.n_examples):
            raise ValueError(f"example_ids must lie in 0..{self.n_examples - 1} (n_examples="
                             f"{self.n_examples}), got ids from {int(ids.min())} to "
                             f"{int(ids.max())}")
        if ids.unique().numel() != ids.numel():
            raise ValueError("example_ids must be distinct: each example is one row of the "
                             "batch's targets")
        sums = self.target_sq_sum
        if sums is not None and sums.shape[1:] != z.shape[1:]:
            raise ValueError(f"the targets' rows have shape {tuple(z.shape[1:])}, but the "
                             f"Adagrad sums were kept for rows of shape {tuple(sums.shape[1:])}")
        return ids

    def _adagrad_metric(self, ids: Tensor, anchor_grad: Tensor) -> Tensor:
        """Adagrad's D_t for the batch's rows, after adding g_t^2 to their sums."""
        sums = self.target_sq_sum
        if sums is None:   # the first step: now the rows' shape is known
            sums = torch.full((self.n_examples, *anchor_grad.shape[1:]), ADAGRAD_INITIAL,
                              dtype=anchor_grad.dtype, device=anchor_grad.device)
        sums = sums.to(device=anchor_grad.device)
        sums[ids] += anchor_grad.to(sums.dtype).square()
        self.target_sq_sum = sums
        return sums[ids].sqrt().to(anchor_grad.dtype)

    @staticmethod
    def _inner_loop(params: list[Tensor], rates: list, inner_steps: int,
                    surrogate: Callable) -> None:
        """m gradient steps on the surrogate; ``rates`` are the groups' inner_lr (all None:
        the Armijo line search)."""
        line_search = rates and rates[0] is None
        trial = ARMIJO_INITIAL_STEP
        for _ in range(inner_steps):
            value, grads = surrogate(True)
            moving = [(p, g, r) for p, g, r in zip(params, grads, rates) if g is not None]
            # the update in float32 at least: half-precision parameters are rounded once
            starts = [p.detach().to(torch.promote_types(p.dtype, torch.float32), copy=True)
                      for p, _, _ in moving]
            grads_w = [g.to(x.dtype) for x, (_, g, _) in zip(starts, moving)]

            def move(step=None):   # theta^k - step * grad; None: each group's inner_lr
                for (p, _, rate), x, g in zip(moving, starts, grads_w):
                    p.copy_(x - (rate if step is None else step) * g)

            if not line_search:
                move()
                continue
            norm_sq = sum(float(g.double().square().sum()) for g in grads_w)
            if math.sqrt(norm_sq) <= INNER_GRAD_TOL:
                break
            for _ in range(ARMIJO_MAX_TRIES):
                move(trial)
                value_next, _ = surrogate(False)
                if float(value_next) <= float(value) - ARMIJO_C * trial * norm_sq:
                    break
                trial *= ARMIJO_BACKTRACK
                if trial < ARMIJO_MIN_STEP:
                    break
            move(trial)


# -- the hand-computed reference the conformance suite checks against -------------------------
def _reference(params, loss_fn, steps, kwargs, generator):
    """The docstring's math, literally, in float64, for the conformance suite's setting: the
    targets are the loss itself, z = f(theta) (one number), and ell(z) = z, so g_t = 1 and
    grad g~_t(theta) = (1 + (f(theta) - z_t) / eta_t) grad f(theta)."""
    eta0 = kwargs["target_lr"]
    m, lr = kwargs.get("inner_steps", 10), kwargs.get("inner_lr")
    schedule, total = kwargs.get("schedule", "constant"), kwargs.get("total_steps")
    theta = [p.detach().double().clone() for p in params]

    def f_and_grad(ps):
        ps = [p.clone().requires_grad_() for p in ps]
        with torch.enable_grad():
            value = loss_fn(ps)
            return value.detach(), torch.autograd.grad(value, ps)

    for t in range(1, steps + 1):
        eta = eta0 * {"constant": 1.0, "inverse_sqrt": t ** -0.5,
                      "exponential": (1 / total) ** (t / total) if total else 0}[schedule]
        z_t = f_and_grad(theta)[0]

        def surr(f):
            return z_t + (f - z_t) + (f - z_t) ** 2 / (2 * eta)

        gamma = 10.0
        for _ in range(m):
            f, grad_f = f_and_grad(theta)
            grad = [(1 + (f - z_t) / eta) * g for g in grad_f]
            if lr is not None:
                theta = [x - lr * g for x, g in zip(theta, grad)]
                continue
            norm_sq = sum(float((g ** 2).sum()) for g in grad)
            if norm_sq ** 0.5 <= 1e-6:
                break
            for _ in range(100):
                f_next = f_and_grad([x - gamma * g for x, g in zip(theta, grad)])[0]
                if surr(f_next) <= surr(f) - 0.1 * gamma * norm_sq:
                    break
                gamma *= 0.9
                if gamma < 1e-6:
                    break
            theta = [x - gamma * g for x, g in zip(theta, grad)]
    return theta


register(AlgorithmInfo(
    name="SSO",
    cls=SSO,
    kind="optimizer",
    paper="Lavington, Vaswani, Babanezhad, Schmidt & Le Roux, ICML 2023, arXiv:2302.02607",
    default_kwargs=dict(target_lr=1.0, inner_steps=5),
    requires=frozenset({"closure", "target_loss"}),
    supports=frozenset({"shared_lr"}),
    lr_argument="target_lr",
    invalid_kwargs=(
        (dict(target_lr=0.0), ValueError, "target_lr"),
        (dict(target_lr=float("nan")), ValueError, "target_lr"),
        (dict(inner_steps=0), ValueError, "inner_steps"),
        (dict(inner_steps=2.5), ValueError, "inner_steps"),
        (dict(inner_lr=-0.1), ValueError, "inner_lr"),
        (dict(schedule="cosine"), ValueError, "schedule"),
        (dict(schedule="exponential"), ValueError, "schedule"),
        (dict(total_steps=10), ValueError, "total_steps"),
        (dict(target_lr=torch.tensor([1.0, 2.0])), ValueError, "1-element"),
        (dict(target_optimizer="adam"), ValueError, "target_optimizer"),
        (dict(target_optimizer="adagrad"), ValueError, "n_examples"),
        (dict(n_examples=10), ValueError, "n_examples"),
    ),
    reference=_reference,
    reference_kwargs=(
        dict(target_lr=1.0, inner_steps=3),
        dict(target_lr=0.5, inner_steps=4, inner_lr=0.05),
        dict(target_lr=2.0, inner_steps=2, schedule="inverse_sqrt"),
        dict(target_lr=0.3, inner_steps=2, inner_lr=0.1, schedule="exponential",
             total_steps=5),
    ),
))
