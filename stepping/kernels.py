"""Update rules as in-place functions over lists of tensors.

A kernel knows nothing of param groups, state dicts or time grids: it takes lists of tensors
(one list element per parameter, or per particle tensor) and plain numbers, and updates the
lists in place with ``torch._foreach_*`` ops. A list of one tensor is the single-tensor case.

Under ``torch.compile`` the learning rate (and what is computed from it) may be a 0-dim tensor
instead of a number, so that a scheduler changing it recompiles nothing.

Memory traffic, not arithmetic, bounds these rules on CPU. An unfused diffGrad needs about 28
passes over its arrays against Adam's 18, so the kernels run the whole rule on cache-sized
blocks (views of at most ``BLOCK_BYTES`` per array) one block at a time: the intermediate passes
then hit cache instead of memory. Elementwise rules give the same values whatever the blocking.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["BLOCK_BYTES", "blocks", "diffgrad_", "langevin_"]

# Per array, one block of this many bytes; five or six arrays of it fit in a 32 MiB L3 with room
# to spare, and blocks are large enough that per-op overhead stays a few percent.
BLOCK_BYTES = 1 << 20


def blocks(lists: Sequence[Sequence[Tensor]], scalars: Sequence[float] | None = None):
    """Yield cache-sized slices of parallel tensor lists.

    ``lists`` are lists of equally shaped tensors (parameter, gradient, state...). Each yielded
    item is ``(sublists, subscalars)``: views covering at most about ``BLOCK_BYTES`` per list,
    small tensors batched together and large contiguous ones cut into flat chunks. ``scalars``
    is one number per tensor (a per-parameter step size) carried along with its chunks.
    Non-contiguous tensors are passed whole.
    """
    if not lists[0]:
        return
    budget = max(1, BLOCK_BYTES // lists[0][0].element_size())
    scalars = list(scalars) if scalars is not None else [0.0] * len(lists[0])
    start, filled = 0, 0
    for i, t in enumerate(lists[0]):
        numel = t.numel()
        if numel > budget and all(lst[i].is_contiguous() for lst in lists):
            if start < i:
                yield [lst[start:i] for lst in lists], scalars[start:i]
            chunks = [lst[i].view(-1).split(budget) for lst in lists]
            for j in range(len(chunks[0])):
                yield [[c[j]] for c in chunks], scalars[i:i + 1]
            start, filled = i + 1, 0
            continue
        filled += numel
        if filled >= budget:
            yield [lst[start:i + 1] for lst in lists], scalars[start:i + 1]
            start, filled = i + 1, 0
    if start < len(lists[0]):
        yield [lst[start:] for lst in lists], scalars[start:]


def _mul_(tensors: list[Tensor], scalar: float | Tensor) -> None:
    """tensors *= scalar. On CPU the 0-dim-tensor overload of ``_foreach_mul_`` costs a quarter
    of the Python-scalar one per tensor; it rounds the same way for float32/float64 (the scalar
    is cast to the tensors' dtype either way), but not for half types, which keep the scalar."""
    if isinstance(scalar, Tensor):
        torch._foreach_mul_(tensors, scalar)
    elif tensors[0].dtype in (torch.float32, torch.float64):
        torch._foreach_mul_(tensors, torch.tensor(scalar, dtype=tensors[0].dtype))
    else:
        torch._foreach_mul_(tensors, scalar)


def _add_scaled_(tensors: list[Tensor], others: list[Tensor], scale: float | Tensor) -> None:
    """tensors += scale * others, for a number or (compiled) a 0-dim tensor ``scale``."""
    if isinstance(scale, Tensor):
        torch._foreach_add_(tensors, torch._foreach_mul(others, scale))
    else:
        torch._foreach_add_(tensors, others, alpha=scale)


def _sqrt(x: float | Tensor) -> float | Tensor:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def _scalar_or_list(values: list[float]):
    return values[0] if values.count(values[0]) == len(values) else values


def diffgrad_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    prev_grads: list[Tensor],
    *,
    steps: Sequence[float],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    max_exp_avg_sqs: list[Tensor] | None = None,
    maximize: bool = False,
    friction_sum: list[Tensor] | None = None,
) -> None:
    r"""One diffGrad step, in place, for every tensor in the lists.

    ``steps`` holds each tensor's step count t after the increment (per-parameter counters).
    With ``friction_sum`` (a list holding one 0-dim tensor), the sum of the friction
    coefficients xi over all elements is added to it.
    """
    if not params:
        return
    lists = [params, grads, exp_avgs, exp_avg_sqs, prev_grads]
    if max_exp_avg_sqs is not None:
        lists.append(max_exp_avg_sqs)
    size_of = {t: lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) for t in set(steps)}
    for block, block_sizes in blocks(lists, [size_of[t] for t in steps]):
        _diffgrad_block(
            *block,
            step_size=_scalar_or_list(block_sizes),
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            friction_sum=friction_sum,
        )


def _diffgrad_block(
    params, grads, exp_avgs, exp_avg_sqs, prev_grads, max_exp_avg_sqs=None, *,
    step_size, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize,
    friction_sum,
):
    # The gradient the rule sees: -grad under maximize, plus wd * p for coupled (L2) decay.
    # p.grad itself is never written; a temporary is made only when needed.
    if weight_decay != 0 and not decoupled_weight_decay:
        if maximize:
            decayed = torch._foreach_mul(params, weight_decay)
            torch._foreach_sub_(decayed, grads)
            grads = decayed
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    elif maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0 and decoupled_weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay)

    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    _mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

    # prev_grads becomes xi * m: g_{t-1} - g_t, |.|, sigmoid, times m.
    torch._foreach_sub_(prev_grads, grads)
    torch._foreach_abs_(prev_grads)
    torch._foreach_sigmoid_(prev_grads)
    if friction_sum is not None:
        friction_sum[0] += sum(torch._foreach_norm(prev_grads, 1, dtype=torch.float64))
    torch._foreach_mul_(prev_grads, exp_avgs)

    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    if isinstance(step_size, list):
        torch._foreach_addcdiv_(params, prev_grads, denom, [-s for s in step_size])
    else:
        torch._foreach_addcdiv_(params, prev_grads, denom, -step_size)
    torch._foreach_copy_(prev_grads, grads)


def langevin_(
    params: list[Tensor],
    grads: list[Tensor],
    noises: list[Tensor],
    *,
    lr: float,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""One overdamped Langevin (Euler--Maruyama) step, in place.

    .. math::
        x \leftarrow x - h\,(g + \lambda x) + \sqrt{2 T h}\,\xi

    with ``g`` the gradient of the potential (``-g`` under ``maximize``), ``xi`` the given
    standard normal draws, ``h = lr``, ``T = temperature`` and ``lambda = weight_decay``.
    """
    if not params:
        return
    if weight_decay != 0:
        _mul_(params, 1 - lr * weight_decay)
    _add_scaled_(params, grads, lr if maximize else -lr)
    if temperature != 0:
        _add_scaled_(params, noises, _sqrt(2 * temperature * lr))


# -- SG-MCMC and kinetic Langevin kernels (shared by optimizers/sgmcmc.py and
# samplers/langevin.py) -------------------------------------------------------------------------
__all__ += ["psgld_", "sghmc_", "kinetic_ou_"]


def psgld_(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    noises: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""One RMSprop-preconditioned Langevin (pSGLD) step, in place.

    .. math::
        d = g + \lambda x,\quad v \leftarrow \alpha v + (1 - \alpha)\, d^2,\quad
        G = 1 / (\epsilon + \sqrt{v}),\quad
        x \leftarrow x - h\, G d + \sqrt{2 T h G}\,\xi

    (``-g`` under ``maximize``). The position update is :func:`langevin_` applied to the
    preconditioned drift ``G d`` and noise ``sqrt(G) xi``; the divergence term
    :math:`\Gamma` of the exact preconditioned dynamics is not included.
    """
    if not params:
        return
    if maximize:
        drift = torch._foreach_neg(grads)
        if weight_decay != 0:
            torch._foreach_add_(drift, params, alpha=weight_decay)
    elif weight_decay != 0:
        drift = torch._foreach_add(grads, params, alpha=weight_decay)
    else:
        drift = [g.clone() for g in grads]
    _mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, drift, drift, 1 - alpha)
    precond = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(precond, eps)
    torch._foreach_reciprocal_(precond)
    torch._foreach_mul_(drift, precond)
    scaled_noise = noises
    if temperature != 0:
        torch._foreach_sqrt_(precond)
        scaled_noise = torch._foreach_mul(noises, precond)
    langevin_(params, drift, scaled_noise, lr=lr, temperature=temperature)


def sghmc_(
    params: list[Tensor],
    grads: list[Tensor],
    momenta: list[Tensor],
    noises: list[Tensor],
    *,
    lr: float,
    friction: float,
    mass: float = 1.0,
    noise_estimate: float = 0.0,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""One SGHMC step (Chen, Fox and Guestrin's discretisation), in place.

    .. math::
        r \leftarrow r - h\,(g + \lambda x) - h\, C M^{-1} r
            + \sqrt{2 (C - \hat B) T h}\,\xi,\qquad
        x \leftarrow x + h\, M^{-1} r

    with momentum ``r``, friction ``C``, scalar mass ``M``, gradient-noise estimate
    ``B_hat = noise_estimate`` and ``-g`` under ``maximize``. With ``g = -score``, ``C = gamma M``
    and ``B_hat = 0`` it is the semi-implicit Euler scheme for kinetic Langevin dynamics
    ``dx = M^-1 r dt, dr = -grad U dt - gamma r dt + sqrt(2 gamma M T) dW``.
    """
    if not params:
        return
    _mul_(momenta, 1 - lr * friction / mass)
    _add_scaled_(momenta, grads, lr if maximize else -lr)
    if weight_decay != 0:
        _add_scaled_(momenta, params, -lr * weight_decay)
    if (friction - noise_estimate) * temperature > 0:
        _add_scaled_(momenta, noises, _sqrt(2 * (friction - noise_estimate) * temperature * lr))
    _add_scaled_(params, momenta, lr / mass)


def kinetic_ou_(
    momenta: list[Tensor],
    noises: list[Tensor],
    *,
    lr: float,
    gamma: float,
    mass: float = 1.0,
    temperature: float = 1.0,
) -> None:
    r"""The exact Ornstein--Uhlenbeck flow of the momentum over time ``h`` (the "O" of BAOAB):

    .. math::
        r \leftarrow c\, r + \sqrt{(1 - c^2)\, M T}\,\xi,\qquad c = e^{-\gamma h}

    It solves :math:`dr = -\gamma r\,dt + \sqrt{2 \gamma M T}\,dW` exactly.
    """
    if not momenta:
        return
    c = math.exp(-gamma * lr)
    _mul_(momenta, c)
    scale = -math.expm1(-2 * gamma * lr) * mass * temperature  # (1 - c^2) M T, accurately
    if scale > 0:
        torch._foreach_add_(momenta, noises, alpha=math.sqrt(scale))
