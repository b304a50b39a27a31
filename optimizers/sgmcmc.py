"""Stochastic-gradient MCMC as torch optimizers, on the Langevin kernel that
`samplers.ULA` also uses."""

from __future__ import annotations

import math

import torch

from stepping.kernels import langevin_
from stepping.noise import standard_normal_like
from stepping.optimizer import KernelOptimizer, check_flag, check_lr, check_nonnegative
from stepping.registry import AlgorithmInfo, register

__all__ = ["SGLD"]


class SGLD(KernelOptimizer):
    r"""Stochastic gradient Langevin dynamics.

    With :math:`g` the (mini-batch) gradient of the potential
    :math:`U(\theta) = -\log p(\theta) - \frac{N}{n}\sum_{i \in B} \log p(x_i \mid \theta)`,
    step size :math:`h` (``lr``), temperature :math:`T` and standard normal :math:`\xi` drawn
    from ``generator``, one tensor after another in parameter order:

    .. math::
        \theta \leftarrow \theta - h\,(g + \lambda \theta) + \sqrt{2 T h}\,\xi

    The noise scale uses the Euler--Maruyama convention :math:`\sqrt{2h}` (Welling and Teh
    write the step as :math:`\epsilon/2`, which is the same rule with :math:`h = \epsilon/2`).
    ``T < 1`` gives a cold posterior, ``T = 0`` plain SGD. Step-size schedules come from
    ``torch.optim.lr_scheduler`` (e.g. ``LambdaLR`` with ``a * (b + n) ** -0.33``).

    Args:
        params: parameters or parameter groups.
        lr: step size :math:`h` (default 1e-3).
        temperature: :math:`T \ge 0` (default 1).
        weight_decay: :math:`\lambda`, a Gaussian prior's precision folded into the drift.
        maximize: treat the gradient as that of :math:`\log p` (ascend) instead of :math:`U`.
        foreach: update all tensors of a group at once (default) or one at a time.
        generator: the ``torch.Generator`` the noise comes from (a fresh OS-seeded one if None);
            its state is saved in ``state_dict``.
        check_finite: raise ``FloatingPointError`` with the step number on NaN/Inf.

    References:
        M. Welling, Y. W. Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics",
        ICML 2011.

    Example:
        >>> import torch
        >>> from optimizers import SGLD
        >>> theta = torch.nn.Parameter(torch.zeros(2))
        >>> opt = SGLD([theta], lr=0.01, generator=torch.Generator().manual_seed(0))
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     (0.5 * theta ** 2).sum().backward()
        ...     _ = opt.step()
        >>> theta.shape
        torch.Size([2])
    """

    stochastic = True

    def __init__(self, params, lr: float = 1e-3, temperature: float = 1.0,
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None,
                 generator: torch.Generator | None = None, check_finite: bool = False):
        defaults = dict(lr=lr, temperature=temperature, weight_decay=weight_decay,
                        maximize=maximize, foreach=foreach)
        super().__init__(params, defaults, generator=generator, check_finite=check_finite)

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        group["temperature"] = check_nonnegative("temperature", group["temperature"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        check_flag("maximize", group["maximize"])
        if group["foreach"] is not None:
            check_flag("foreach", group["foreach"])

    def _update(self, group, params, grads, states, steps, noises):
        langevin_(params, grads, noises, lr=group["lr"], temperature=group["temperature"],
                  weight_decay=group["weight_decay"], maximize=group["maximize"])


def _reference(params, grad_fn, steps, kwargs, generator):
    """theta - h (g + wd theta) + sqrt(2 T h) xi, literally, with draws in parameter order."""
    lr = kwargs.get("lr", 1e-3)
    temp = kwargs.get("temperature", 1.0)
    wd = kwargs.get("weight_decay", 0.0)
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    ps = [p.detach().clone() for p in params]
    for _ in range(steps):
        grads = grad_fn([p.clone() for p in ps])
        xis = [standard_normal_like(p, generator).view_as(torch.view_as_real(p) if p.is_complex() else p)
               for p in ps]
        new = []
        for p, g, xi in zip(ps, grads, xis):
            real = torch.view_as_real(p) if p.is_complex() else p
            g = torch.view_as_real(g) if g.is_complex() else g
            out = real - lr * (sign * g + wd * real) + math.sqrt(2 * temp * lr) * xi
            new.append(torch.view_as_complex(out.contiguous()) if p.is_complex() else out)
        ps = new
    return ps


register(AlgorithmInfo(
    name="SGLD",
    cls=SGLD,
    kind="optimizer",
    paper="Welling & Teh, ICML 2011",
    # A small temperature keeps the generic "descends a quadratic" check meaningful.
    default_kwargs=dict(lr=1e-2, temperature=1e-6),
    stochastic=True,
    supports=frozenset({"maximize", "weight_decay", "complex", "foreach"}),
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay"),
        (dict(generator=0), ValueError, "generator"),
        (dict(betas=(0.9, 0.99)), TypeError, "betas"),
    ),
    reference=_reference,
    reference_kwargs=(dict(lr=0.05), dict(lr=0.05, temperature=0.5, weight_decay=0.1),
                      dict(lr=0.05, maximize=True)),
))
