"""Stochastic-gradient MCMC as torch optimizers, on the Langevin kernels that `samplers/langevin.py`
also uses: SGLD shares `langevin_` with `samplers.ULA`, SGHMC shares `sghmc_` with
`samplers.UnderdampedLangevin(scheme="sghmc")`, and pSGLD is `langevin_` on an RMSprop-
preconditioned drift and noise."""

from __future__ import annotations

import math

import torch

from stochstep.stepping.kernels import langevin_, psgld_, sghmc_
from stochstep.stepping.noise import standard_normal_like
from stochstep.stepping.optimizer import (KernelOptimizer, check_beta, check_flag, check_lr,
                                          check_nonnegative, check_positive)
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["SGLD", "PSGLD", "SGHMC"]


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
        lr: step size :math:`h` (default 1e-3), a float or a 1-element tensor.
        temperature: :math:`T \ge 0` (default 1).
        weight_decay: :math:`\lambda`, a Gaussian prior's precision folded into the drift.
        maximize: treat the gradient as that of :math:`\log p` (ascend) instead of :math:`U`.
        foreach: update all tensors of a group at once (default) or one at a time.
        generator: the ``torch.Generator`` the noise comes from (if None, one seeded from
            torch's global RNG at construction); its state is saved in ``state_dict``.
        check_finite: raise ``FloatingPointError`` naming the parameter and the step on
            NaN/Inf.

    References:
        M. Welling, Y. W. Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics",
        ICML 2011.

    Example:
        >>> import torch
        >>> from stochstep.optimizers import SGLD
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
        xis = [standard_normal_like(p, generator).view_as(
                   torch.view_as_real(p) if p.is_complex() else p)
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
    supports=frozenset({"maximize", "weight_decay", "complex", "foreach", "compile",
                        "translation_equivariant", "noise_ball"}),
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


# -- pSGLD -------------------------------------------------------------------------------------
def _check_common(group):
    group["lr"] = check_lr(group["lr"])
    group["temperature"] = check_nonnegative("temperature", group["temperature"])
    group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
    check_flag("maximize", group["maximize"])
    if group["foreach"] is not None:
        check_flag("foreach", group["foreach"])


class PSGLD(KernelOptimizer):
    r"""Preconditioned SGLD: SGLD with an RMSprop diagonal preconditioner (Li et al. 2016).

    With :math:`d = g + \lambda\theta` the gradient of the potential (:math:`-g + \lambda\theta`
    under ``maximize``), step size :math:`h` (``lr``), temperature :math:`T` and standard normal
    :math:`\xi`, elementwise:

    .. math::
        v &\leftarrow \alpha v + (1 - \alpha)\, d \odot d, \qquad
        G = 1 / (\epsilon + \sqrt{v}), \\
        \theta &\leftarrow \theta - h\, G \odot d + \sqrt{2 T h G} \odot \xi

    with :math:`v` starting at zero. The term :math:`h\,\Gamma(\theta)`,
    :math:`\Gamma_i = \sum_j \partial_{\theta_j} G_{ij}`, that makes the preconditioned dynamics
    exact is dropped, as in the paper's experiments and reference code: it is small when
    :math:`G` changes slowly, and the resulting bias is controlled by the step size. The paper
    writes the step as :math:`\epsilon/2` (noise :math:`N(0, \epsilon G)`); this is the same
    rule with :math:`h = \epsilon/2`. Step sizes follow ``torch.optim.lr_scheduler``.
    With exact (full-batch) gradients, a short preconditioner memory (:math:`\alpha` far from 1)
    makes :math:`G` track the current distance from the mode, which slows the chain in the tails
    and inflates the sampled variance (about 10% on a 1-D Gaussian at :math:`\alpha = 0.99`,
    5% at 0.999); mini-batch noise in :math:`v` weakens that link.

    Args:
        params: parameters or parameter groups.
        lr: step size :math:`h \ge 0` (default 1e-3), a float or a 1-element tensor.
        alpha: RMSprop decay :math:`\alpha \in [0, 1)` (default 0.99).
        eps: :math:`\epsilon > 0` (the paper's :math:`\lambda`), default 1e-5.
        temperature: :math:`T \ge 0` (default 1; ``T < 1`` a cold posterior).
        weight_decay: :math:`\lambda \ge 0`, a Gaussian prior's precision added to the gradient
            (it enters :math:`v` as part of the posterior gradient).
        maximize: the gradient is that of :math:`\log p` (ascend).
        foreach: update all tensors of a group at once (default) or one at a time.
        generator: ``torch.Generator`` of the noise (if None, one seeded from torch's global
            RNG at construction), kept in ``state_dict``.
        check_finite: raise ``FloatingPointError`` naming the parameter and the step on
            NaN/Inf.

    References:
        C. Li, C. Chen, D. Carlson, L. Carin, "Preconditioned Stochastic Gradient Langevin
        Dynamics for Deep Neural Networks", AAAI 2016, arXiv:1512.07666.
        M. Welling, Y. W. Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics",
        ICML 2011.

    Example:
        >>> import torch
        >>> from stochstep.optimizers import PSGLD
        >>> theta = torch.nn.Parameter(torch.zeros(3))
        >>> opt = PSGLD([theta], lr=1e-3, generator=torch.Generator().manual_seed(0))
        >>> for _ in range(5):
        ...     opt.zero_grad()
        ...     (0.5 * (theta - 1) ** 2).sum().backward()
        ...     _ = opt.step()
        >>> sorted(opt.state[theta])
        ['square_avg', 'step']
    """

    stochastic = True
    state_names = ("square_avg",)

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-5,
                 temperature: float = 1.0, weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, generator: torch.Generator | None = None,
                 check_finite: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, temperature=temperature,
                        weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults, generator=generator, check_finite=check_finite)

    def _check_group(self, group):
        _check_common(group)
        group["alpha"] = check_beta("alpha", group["alpha"])
        group["eps"] = check_positive("eps", group["eps"])

    def _update(self, group, params, grads, states, steps, noises):
        psgld_(params, grads, states["square_avg"], noises, lr=group["lr"], alpha=group["alpha"],
               eps=group["eps"], temperature=group["temperature"],
               weight_decay=group["weight_decay"], maximize=group["maximize"])


def _real(t):
    return torch.view_as_real(t) if t.is_complex() else t


def _unreal(out, like):
    return torch.view_as_complex(out.contiguous()) if like.is_complex() else out


def _psgld_reference(params, grad_fn, steps, kwargs, generator):
    """d = g + wd theta; v = a v + (1 - a) d^2; G = 1 / (eps + sqrt v);
    theta - h G d + sqrt(2 T h G) xi, literally."""
    lr, a = kwargs.get("lr", 1e-3), kwargs.get("alpha", 0.99)
    eps, temp = kwargs.get("eps", 1e-5), kwargs.get("temperature", 1.0)
    wd = kwargs.get("weight_decay", 0.0)
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    ps = [p.detach().clone() for p in params]
    vs = [torch.zeros_like(_real(p)) for p in ps]
    for _ in range(steps):
        grads = grad_fn([p.clone() for p in ps])
        xis = [standard_normal_like(p, generator) for p in ps]
        new = []
        for i, (p, g, xi) in enumerate(zip(ps, grads, xis)):
            x = _real(p)
            d = sign * _real(g) + wd * x
            vs[i] = a * vs[i] + (1 - a) * d * d
            G = 1 / (eps + vs[i].sqrt())
            new.append(_unreal(x - lr * G * d + (2 * temp * lr * G).sqrt() * xi, p))
        ps = new
    return ps


register(AlgorithmInfo(
    name="PSGLD",
    cls=PSGLD,
    kind="optimizer",
    paper="Li, Chen, Carlson & Carin, AAAI 2016, arXiv:1512.07666",
    default_kwargs=dict(lr=5e-2, temperature=1e-6),
    stochastic=True,
    supports=frozenset({"maximize", "weight_decay", "complex", "foreach", "compile",
                        "translation_equivariant"}),
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay"),
        (dict(alpha=1.0), ValueError, "alpha"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(generator=0), ValueError, "generator"),
        (dict(momentum=0.9), TypeError, "momentum"),
    ),
    reference=_psgld_reference,
    reference_kwargs=(dict(lr=0.05), dict(lr=0.05, alpha=0.9, eps=1e-3, temperature=0.5,
                                          weight_decay=0.1),
                      dict(lr=0.05, maximize=True, weight_decay=0.2)),
))


# -- SGHMC -------------------------------------------------------------------------------------
class SGHMC(KernelOptimizer):
    r"""Stochastic gradient Hamiltonian Monte Carlo with friction (Chen, Fox and Guestrin 2014).

    With :math:`g` the (mini-batch) gradient of the potential (:math:`-g` under ``maximize``),
    momentum :math:`r` (zero at the start), step size :math:`h` (``lr``), friction :math:`C`,
    scalar mass :math:`M`, gradient-noise estimate :math:`\hat B` and temperature :math:`T`:

    .. math::
        r &\leftarrow r - h\,(g + \lambda\theta) - h\, C M^{-1} r
            + \sqrt{2 (C - \hat B)\, T h}\;\xi, \\
        \theta &\leftarrow \theta + h\, M^{-1} r

    This is the paper's Algorithm 2 (the gradient is taken at the current :math:`\theta`,
    before the momentum update), with its noise :math:`N(0, 2(C - \hat B) h)` scaled by
    :math:`T` so that the stationary law is :math:`\propto \exp(-U/T)` (cold posteriors for
    :math:`T < 1`). With ``resample_every=L`` the momentum is redrawn from :math:`N(0, T M)` at
    steps :math:`1, L + 1, 2L + 1, \dots` (before the update, with draws taken after the step's
    :math:`\xi`), as in HMC; by default it is never resampled. The update is
    :func:`stepping.kernels.sghmc_`, the same function ``samplers.UnderdampedLangevin`` uses
    with ``scheme="sghmc"`` (there :math:`C = \gamma M`, :math:`\hat B = 0`).
    In the paper's SGD-with-momentum parametrisation, :math:`\eta = h^2/M`,
    :math:`\alpha = h C / M`.

    Args:
        params: parameters or parameter groups.
        lr: step size :math:`h \ge 0` (default 1e-2), a float or a 1-element tensor.
        friction: :math:`C \ge 0` (default 1).
        mass: :math:`M > 0` (default 1).
        noise_estimate: :math:`\hat B \in [0, C]`, the estimated gradient-noise term (default 0).
        temperature: :math:`T \ge 0` (default 1).
        weight_decay: :math:`\lambda \ge 0`, a Gaussian prior's precision.
        resample_every: ``None`` (default) or an integer :math:`L \ge 1`.
        maximize: the gradient is that of :math:`\log p` (ascend).
        foreach: update all tensors of a group at once (default) or one at a time.
        generator: ``torch.Generator`` of the noise (if None, one seeded from torch's global
            RNG at construction), kept in ``state_dict``.
        check_finite: raise ``FloatingPointError`` naming the parameter and the step on
            NaN/Inf.

    References:
        T. Chen, E. B. Fox, C. Guestrin, "Stochastic Gradient Hamiltonian Monte Carlo",
        ICML 2014, arXiv:1402.4102.

    Example:
        >>> import torch
        >>> from stochstep.optimizers import SGHMC
        >>> theta = torch.nn.Parameter(torch.zeros(2))
        >>> opt = SGHMC([theta], lr=0.05, friction=1.0,
        ...             generator=torch.Generator().manual_seed(0))
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     (0.5 * theta ** 2).sum().backward()
        ...     _ = opt.step()
        >>> opt.state[theta]["momentum"].shape
        torch.Size([2])
    """

    stochastic = True
    state_names = ("momentum",)

    def __init__(self, params, lr: float = 1e-2, friction: float = 1.0, mass: float = 1.0,
                 noise_estimate: float = 0.0, temperature: float = 1.0,
                 weight_decay: float = 0.0, *, resample_every: int | None = None,
                 maximize: bool = False, foreach: bool | None = None,
                 generator: torch.Generator | None = None, check_finite: bool = False):
        defaults = dict(lr=lr, friction=friction, mass=mass, noise_estimate=noise_estimate,
                        temperature=temperature, weight_decay=weight_decay,
                        resample_every=resample_every, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults, generator=generator, check_finite=check_finite)

    def _check_group(self, group):
        _check_common(group)
        group["friction"] = check_nonnegative("friction", group["friction"])
        group["mass"] = check_positive("mass", group["mass"])
        b = check_nonnegative("noise_estimate", group["noise_estimate"])
        if b > group["friction"]:
            raise ValueError(f"noise_estimate must be <= friction ({group['friction']}), got {b}")
        group["noise_estimate"] = b
        every = group["resample_every"]
        if every is not None and (isinstance(every, bool) or not isinstance(every, int)
                                  or every < 1):
            raise ValueError(f"resample_every must be None or an integer >= 1, got {every!r}")

    def _draws(self, group, params):
        # The momentum refresh draws too, so it happens here, where the step runs eagerly.
        noises = super()._draws(group, params)
        every = group["resample_every"]
        if every is not None:
            states = self._init_state(group, params)
            idx = [i for i, state in enumerate(states) if int(state["step"]) % every == 0]
            if idx:
                fresh = [standard_normal_like(params[i], self.generator) for i in idx]
                torch._foreach_mul_(fresh, math.sqrt(group["temperature"] * group["mass"]))
                torch._foreach_copy_([_real(states[i]["momentum"]) for i in idx], fresh)
        return noises

    def _update(self, group, params, grads, states, steps, noises):
        sghmc_(params, grads, states["momentum"], noises, lr=group["lr"],
               friction=group["friction"], mass=group["mass"],
               noise_estimate=group["noise_estimate"], temperature=group["temperature"],
               weight_decay=group["weight_decay"], maximize=group["maximize"])


def _sghmc_reference(params, grad_fn, steps, kwargs, generator):
    """r - h (g + wd theta) - h C r / M + sqrt(2 (C - B) T h) xi, then theta + h r / M;
    momentum redrawn as sqrt(T M) rho at steps 1, L + 1, ..., literally."""
    lr, c = kwargs.get("lr", 1e-2), kwargs.get("friction", 1.0)
    m, b = kwargs.get("mass", 1.0), kwargs.get("noise_estimate", 0.0)
    temp, wd = kwargs.get("temperature", 1.0), kwargs.get("weight_decay", 0.0)
    every = kwargs.get("resample_every")
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    ps = [p.detach().clone() for p in params]
    rs = [torch.zeros_like(_real(p)) for p in ps]
    for k in range(1, steps + 1):
        grads = grad_fn([p.clone() for p in ps])
        xis = [standard_normal_like(p, generator) for p in ps]
        if every is not None and (k - 1) % every == 0:
            rs = [math.sqrt(temp * m) * standard_normal_like(p, generator) for p in ps]
        new = []
        for i, (p, g, xi) in enumerate(zip(ps, grads, xis)):
            x = _real(p)
            rs[i] = (rs[i] - lr * (sign * _real(g) + wd * x) - lr * c / m * rs[i]
                     + math.sqrt(2 * (c - b) * temp * lr) * xi)
            new.append(_unreal(x + lr / m * rs[i], p))
        ps = new
    return ps


register(AlgorithmInfo(
    name="SGHMC",
    cls=SGHMC,
    kind="optimizer",
    paper="Chen, Fox & Guestrin, ICML 2014, arXiv:1402.4102",
    default_kwargs=dict(lr=0.1, friction=1.0, temperature=1e-6),
    stochastic=True,
    supports=frozenset({"maximize", "weight_decay", "complex", "foreach", "compile",
                        "translation_equivariant", "noise_ball"}),
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(friction=-1.0), ValueError, "friction"),
        (dict(mass=0.0), ValueError, "mass"),
        (dict(noise_estimate=2.0), ValueError, "noise_estimate"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay"),
        (dict(resample_every=0), ValueError, "resample_every"),
        (dict(generator=0), ValueError, "generator"),
        (dict(betas=(0.9, 0.99)), TypeError, "betas"),
    ),
    reference=_sghmc_reference,
    reference_kwargs=(dict(lr=0.05), dict(lr=0.05, friction=2.0, mass=0.5, noise_estimate=0.5,
                                          temperature=0.3, weight_decay=0.1),
                      dict(lr=0.05, maximize=True, resample_every=1),
                      dict(lr=0.05, friction=0.5, resample_every=2)),
))
