"""diffGrad (Dubey et al., arXiv 1909.11015)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from stochstep.stepping.kernels import diffgrad_
from stochstep.stepping.optimizer import (KernelOptimizer, check_betas, check_flag, check_lr,
                                          check_nonnegative, check_positive)
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["DiffGrad"]


class DiffGrad(KernelOptimizer):
    r"""diffGrad: Adam whose step is damped by how little the gradient changed.

    With :math:`g_t` the gradient (plus :math:`\lambda p` for the default coupled weight decay,
    negated under ``maximize``) and a per-parameter step count :math:`t`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \xi_t &= \operatorname{sigmoid}(|g_{t-1} - g_t|), \qquad g_0 = 0 \\
        p_t &= p_{t-1} - \eta\, \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\,
               \frac{\xi_t\, m_t}{\sqrt{v_t} + \epsilon}

    This is the authors' corrected reference code (``diffGrad_v2``): ``eps`` is added to the
    uncorrected :math:`\sqrt{v_t}`, the stored previous gradient is :math:`g_t` after the weight
    decay term, and a parameter whose first gradient arrives late starts at :math:`t = 1`.
    :math:`\xi_t \in [0.5, 1)`, so on typical networks, where successive gradients differ by
    little, diffGrad moves like Adam at about half the learning rate; ``track_friction=True``
    makes the mean :math:`\xi` of each group visible as :attr:`mean_friction`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\eta` (default 1e-3), a float or a 1-element tensor.
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` (default 1e-8).
        weight_decay: :math:`\lambda` (default 0). Added to the gradient (L2), as in the paper,
            unless ``decoupled_weight_decay``; ``p.grad`` is never modified.
        decoupled_weight_decay: decay the parameter by :math:`1 - \eta\lambda` before the step
            (AdamW style) instead.
        amsgrad: use the running maximum of :math:`v_t` in the denominator.
        maximize: ascend instead of descend.
        foreach: apply the update to all tensors of a group at once (default); ``False`` updates
            one tensor at a time with the same kernel.
        fused: run the whole update as one compiled elementwise kernel per large tensor
            (``torch.compile``; the first step pays a one-time compile); tensors under
            ``FUSED_MIN_NUMEL`` elements take the eager kernel, which computes the same rule.
            As in torch, it combines with ``foreach=False`` but not with ``foreach=True``.
        check_finite: raise ``FloatingPointError`` naming the parameter and the step if a
            parameter or state becomes NaN or infinite.
        track_friction: record the mean :math:`\xi_t` of each group at every step.

    References:
        S. R. Dubey, S. Chakraborty, S. K. Roy, S. Mukherjee, S. K. Singh, B. B. Chaudhuri,
        "diffGrad: An Optimization Method for Convolutional Neural Networks", IEEE TNNLS 2020,
        arXiv:1909.11015.

    Example:
        >>> import torch
        >>> from stochstep.optimizers import DiffGrad
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = DiffGrad([w], lr=0.1, track_friction=True)
        >>> (w ** 2).sum().backward()
        >>> opt.step()
        >>> w.detach()  # first step: xi = sigmoid(|g|), m / sqrt(v) = sign(g)
        tensor([ 0.9119, -1.9018])
        >>> [round(x, 4) for x in opt.mean_friction]
        [0.9314]
    """

    state_names = ("exp_avg", "exp_avg_sq", "prev_grad")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *,
                 decoupled_weight_decay: bool = False, amsgrad: bool = False,
                 maximize: bool = False, foreach: bool | None = None, fused: bool = False,
                 check_finite: bool = False, track_friction: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, fused=fused)
        self.track_friction = check_flag("track_friction", track_friction)
        # Per group at the last step: (sum of xi, number of elements), None without gradients.
        self._friction: list[tuple[Tensor, int] | None] = []
        super().__init__(params, defaults, check_finite=check_finite)

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        group["betas"] = check_betas(group["betas"])
        group["eps"] = check_positive("eps", group["eps"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        for flag in ("decoupled_weight_decay", "amsgrad", "maximize", "fused"):
            check_flag(flag, group[flag])
        if group["foreach"] is not None:
            check_flag("foreach", group["foreach"])
        if group["fused"] and group["foreach"]:
            raise ValueError("fused=True and foreach=True cannot both be set (as in torch)")

    def _state_names(self, group):
        return self.state_names + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    @property
    def mean_friction(self) -> list[float | None]:
        """Mean friction coefficient xi of each group over its elements at the optimizer's last
        step (``track_friction``); None for a group that had no gradients then."""
        if not self.track_friction:
            raise RuntimeError("construct DiffGrad with track_friction=True to record friction")
        return [None if f is None or f[1] == 0 else float(f[0]) / f[1] for f in self._friction]

    @torch.no_grad()
    def step(self, closure=None):
        if self.track_friction:
            self._friction.clear()   # (torch 2.13's compile loses appends to a new list)
        return super().step(closure)

    def _step_group(self, group, draws=None):
        if self.track_friction:
            self._friction.append(None)  # _update adds the group's kernel calls to it
        super()._step_group(group, draws)

    def _update(self, group, params, grads, states, steps, noises):
        friction = None
        if self.track_friction:
            friction = [torch.zeros((), dtype=torch.float64, device=params[0].device)]
        beta1, beta2 = group["betas"]
        kwargs = dict(steps=steps, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                      weight_decay=group["weight_decay"],
                      decoupled_weight_decay=group["decoupled_weight_decay"],
                      max_exp_avg_sqs=states.get("max_exp_avg_sq"), maximize=group["maximize"],
                      friction_sum=friction)
        args = (params, grads, states["exp_avg"], states["exp_avg_sq"], states["prev_grad"])
        if torch.compiler.is_compiling():
            kernel = _diffgrad_traced
        else:
            kernel = _diffgrad_fused if group["fused"] else diffgrad_
        kernel(*args, **kwargs)
        if friction is not None:
            total, count = self._friction[-1] or (0.0, 0)
            self._friction[-1] = (total + friction[0].cpu(), count + sum(p.numel() for p in params))


# -- fused: one compiled elementwise kernel per tensor -----------------------------------------
# Below this many elements a compiled call's fixed cost (~30 us) outweighs its savings, so small
# tensors take the blocked eager kernel, which computes the same rule.
FUSED_MIN_NUMEL = 1 << 16
_compiled: dict[tuple, object] = {}


def _diffgrad_pointwise(p, g, m, v, prev, max_v, step_size, beta1, beta2, eps, lr, wd, *,
                        coupled: bool, decoupled: bool, maximize: bool, friction: bool):
    if maximize:
        g = -g
    if coupled:
        g = g + wd * p
    p_in = p * (1 - lr * wd) if decoupled else p
    m_new = torch.lerp(m, g, 1 - beta1)
    v_new = v * beta2 + (1 - beta2) * g * g
    if max_v is not None:
        v_den = torch.maximum(max_v, v_new)
        max_v.copy_(v_den)
    else:
        v_den = v_new
    # xi * m / (sqrt(v) + eps) with xi = 1 / (1 + exp(-|dg|)), as one division: on one CPU
    # thread this kernel is bound by arithmetic as much as by memory.
    inv_xi = 1 + torch.exp(-(prev - g).abs())
    p.copy_(p_in - step_size * m_new / (inv_xi * (v_den.sqrt() + eps)))
    m.copy_(m_new)
    v.copy_(v_new)
    prev.copy_(g)
    return (1 / inv_xi).sum(dtype=torch.float64) if friction else None


def _pointwise_flags(weight_decay, decoupled_weight_decay, maximize, friction_sum) -> dict:
    """The keyword switches of :func:`_diffgrad_pointwise` for a set of options."""
    return dict(coupled=weight_decay != 0 and not decoupled_weight_decay,
                decoupled=weight_decay != 0 and decoupled_weight_decay,
                maximize=maximize, friction=friction_sum is not None)


def _diffgrad_fused(params, grads, exp_avgs, exp_avg_sqs, prev_grads, *, steps, lr, beta1,
                    beta2, eps, weight_decay=0.0, decoupled_weight_decay=False,
                    max_exp_avg_sqs=None, maximize=False, friction_sum=None):
    lists = [params, grads, exp_avgs, exp_avg_sqs, prev_grads]
    if max_exp_avg_sqs is not None:
        lists.append(max_exp_avg_sqs)
    big = [i for i, p in enumerate(params)
           if p.numel() >= FUSED_MIN_NUMEL and all(lst[i].is_contiguous() for lst in lists)]
    options = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                   decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                   friction_sum=friction_sum)
    if len(big) < len(params):
        small = sorted(set(range(len(params))) - set(big))
        pick = lambda lst: [lst[i] for i in small]  # noqa: E731
        diffgrad_(*map(pick, lists[:5]), steps=pick(steps),
                  max_exp_avg_sqs=pick(max_exp_avg_sqs) if max_exp_avg_sqs is not None else None,
                  **options)
    if not big:
        return
    flags = _pointwise_flags(weight_decay, decoupled_weight_decay, maximize, friction_sum)
    key = tuple(flags.values())
    if key not in _compiled:  # one compiled kernel per option set; shapes stay dynamic
        _compiled[key] = torch.compile(functools.partial(_diffgrad_pointwise, **flags),
                                       dynamic=True)
    kernel = _compiled[key]
    # Numbers go in as 0-dim tensors, so changing them (the step size every step) never
    # recompiles.
    as_t = functools.partial(torch.tensor, dtype=torch.float64)
    scalars = [as_t(x) for x in (beta1, beta2, eps, lr, weight_decay)]
    size_of = {t: as_t(lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)) for t in set(steps)}
    for i in big:
        # Flat views: every parameter shares one compiled kernel, whatever its rank.
        tensors = [lst[i].view(-1) for lst in lists] + [None] * (6 - len(lists))
        total = kernel(*tensors, size_of[steps[i]], *scalars)
        if friction_sum is not None:
            friction_sum[0] += total


def _diffgrad_traced(params, grads, exp_avgs, exp_avg_sqs, prev_grads, *, steps, lr, beta1,
                     beta2, eps, weight_decay=0.0, decoupled_weight_decay=False,
                     max_exp_avg_sqs=None, maximize=False, friction_sum=None):
    """The rule inside the caller's torch.compile: the fused kernel's elementwise form, tensor
    by tensor, with 0-dim tensor steps (and lr). Inductor makes each tensor's update one loop;
    traced, the foreach kernel's ops compile to about 1.2x the eager step instead."""
    flags = _pointwise_flags(weight_decay, decoupled_weight_decay, maximize, friction_sum)
    for i, t in enumerate(steps):
        step_size = lr * (1 - beta2**t).sqrt() / (1 - beta1**t)
        total = _diffgrad_pointwise(
            params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], prev_grads[i],
            None if max_exp_avg_sqs is None else max_exp_avg_sqs[i], step_size, beta1, beta2,
            eps, lr, weight_decay, **flags)
        if friction_sum is not None:
            friction_sum[0] += total


# -- the hand-computed reference the conformance suite checks against -------------------------
def _reference(params, grad_fn, steps, kwargs, generator):
    """Apply the docstring's math literally, elementwise, in float64."""
    lr = kwargs.get("lr", 1e-3)
    b1, b2 = kwargs.get("betas", (0.9, 0.999))
    eps = kwargs.get("eps", 1e-8)
    wd = kwargs.get("weight_decay", 0.0)
    decoupled = kwargs.get("decoupled_weight_decay", False)
    amsgrad = kwargs.get("amsgrad", False)
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    ps = [p.detach().to(torch.float64).clone() for p in params]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    vmax = [torch.zeros_like(p) for p in ps]
    prev = [torch.zeros_like(p) for p in ps]
    for t in range(1, steps + 1):
        grads = grad_fn([p.clone() for p in ps])
        for i, p in enumerate(ps):
            g = sign * grads[i].to(torch.float64)
            if wd and not decoupled:
                g = g + wd * p
            if wd and decoupled:
                p = p * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            vmax[i] = torch.maximum(vmax[i], v[i])
            xi = 1 / (1 + torch.exp(-(prev[i] - g).abs()))
            denom = (vmax[i] if amsgrad else v[i]).sqrt() + eps
            ps[i] = p - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * xi * m[i] / denom
            prev[i] = g
    return ps


register(AlgorithmInfo(
    name="DiffGrad",
    cls=DiffGrad,
    kind="optimizer",
    paper="Dubey et al., diffGrad, IEEE TNNLS 2020, arXiv:1909.11015",
    default_kwargs=dict(lr=0.1),
    supports=frozenset({"maximize", "weight_decay", "complex", "foreach", "fused", "betas",
                        "amsgrad", "zero_grad_noop", "compile",
                        "translation_equivariant", "first_step_bounded"}),
    fused_min_numel=FUSED_MIN_NUMEL,
    invalid_kwargs=(
        (dict(lr=-1e-3), ValueError, "lr"),
        (dict(lr=float("nan")), ValueError, "lr"),
        (dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
        (dict(betas=(0.9, -0.1)), ValueError, "betas[1]"),
        (dict(betas=0.9), ValueError, "betas"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay"),
        (dict(amsgrad="yes"), ValueError, "amsgrad"),
        (dict(fused=True, foreach=True), ValueError, "fused"),
        (dict(momentum=0.9), TypeError, "momentum"),
    ),
    reference=_reference,
    reference_kwargs=(
        dict(lr=0.1),
        dict(lr=0.1, betas=(0.5, 0.6), eps=1e-3, weight_decay=0.3),
        dict(lr=0.1, weight_decay=0.3, decoupled_weight_decay=True),
        dict(lr=0.1, maximize=True, weight_decay=0.2),
        # gradients that shrink and a short memory: max(v) differs from v in these two steps
        dict(lr=0.3, betas=(0.5, 0.2), amsgrad=True),
    ),
))
