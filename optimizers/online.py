"""Online and composite mirror descent as torch optimizers: optimistic online mirror descent for
the stochastically extended adversarial (SEA) model (Chen et al., arXiv 2302.04552) and
composite stochastic mirror descent, whose last iterate is the answer (Liu & Zhou,
arXiv 2312.08531); the prox operators of the composite terms.

Both act on one vector per param group: :math:`x` is the concatenation of the group's parameters
that have a gradient, so norms run over them jointly and a domain (``stochstep.optimizers.
domains``) bounds the joint vector. The domain and the mirror map are constructor options
that hold for every group (a domain is an object, which ``torch.load(weights_only=True)`` does
not read back from a state dict: construct the resumed optimizer with the same domain).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from stochstep.optimizers.domains import Ball, Domain, check_domain, get_mirror
from stochstep.stepping.checks import check_int, check_optional_positive
from stochstep.stepping.kernels import _mul_, blocks
from stochstep.stepping.optimizer import (KernelOptimizer, check_flag, check_lr,
                                          check_nonnegative, check_positive)
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["CSMD", "MAX_ONS_DIM", "OptimisticOMD", "PROXES", "SCHEDULES", "prox_group_l2_",
           "prox_l1_"]

# The exp-concave variant keeps a d x d matrix and solves with it (and, on a ball, takes its
# eigendecomposition) every step: O(d^2) memory and O(d^3) time, for small d only.
MAX_ONS_DIM = 1024


# -- prox operators --------------------------------------------------------------------------
def prox_l1_(tensors: list[Tensor], threshold: float) -> None:
    r"""Soft-thresholding in place: the prox of :math:`\tau \lVert x \rVert_1`, entrywise.

    .. math::
        \operatorname{prox}_{\tau\lVert\cdot\rVert_1}(y)_i
        = \operatorname*{argmin}_x\ \tau\lvert x\rvert + \tfrac12 (x - y_i)^2
        = \operatorname{sign}(y_i)\,\max(\lvert y_i\rvert - \tau,\ 0)

    Args:
        tensors: the tensors of :math:`y`, overwritten with the result.
        threshold: :math:`\tau \ge 0`.

    References:
        Liu, Zhou, "Revisiting the Last-Iterate Convergence of Stochastic Gradient Methods",
        ICLR 2024, arXiv:2312.08531 (the composite term :math:`h`).

    Example:
        >>> x = torch.tensor([3.0, 0.5, -2.0])
        >>> prox_l1_([x], 1.0)
        >>> x
        tensor([ 2.,  0., -1.])
    """
    threshold = check_nonnegative("threshold", threshold)
    for t in tensors:
        t.copy_(F.softshrink(t, threshold))


def prox_group_l2_(tensors: list[Tensor], threshold: float) -> None:
    r"""Group shrinkage in place: the prox of :math:`\tau \sum_G \lVert x_G \rVert_2`.

    The groups :math:`G`: each row ``t[i]`` of a tensor with two or more dimensions (a Linear
    layer's weights into output unit ``i``, a convolution's filter ``i``), and the whole
    tensor for a 0- or 1-D one (a bias vector is one group).

    .. math::
        \operatorname{prox}(y)_G = \max\Bigl(1 - \frac{\tau}{\lVert y_G \rVert_2},\ 0\Bigr)\, y_G

    Args:
        tensors: the tensors of :math:`y`, overwritten with the result.
        threshold: :math:`\tau \ge 0`.

    References:
        Liu, Zhou, ICLR 2024, arXiv:2312.08531 (the composite term :math:`h`).

    Example:
        >>> w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> prox_group_l2_([w], 1.0)   # row norms 5 and 0.5
        >>> w
        tensor([[2.4000, 3.2000],
                [0.0000, 0.0000]])
    """
    threshold = check_nonnegative("threshold", threshold)
    for t in tensors:
        if t.dim() >= 2:
            norms = torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)
            norms = norms.view(-1, *[1] * (t.dim() - 1))
        else:
            norms = torch.linalg.vector_norm(t)
        # norms > threshold >= 0 where the first branch is taken: no division by zero there
        t.mul_(torch.where(norms > threshold, 1 - threshold / norms, 0.0))


PROXES = {"l1": prox_l1_, "group_l2": prox_group_l2_}


# -- shared: one vector per group, a domain, a mirror map --------------------------------------
def _check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def _sum_of(scalars: list[Tensor]) -> float:
    """The sum of 0-dim tensors, as a Python number (one stack, one read)."""
    return torch.stack(scalars).sum().item()


def _rounding(dtype: torch.dtype, domain: Domain) -> float:
    """How far outside the set a projected point can lie by rounding alone: a few units in the
    last place of the set's scale."""
    scale = domain.diameter if math.isfinite(domain.diameter) else 1.0
    return 16 * torch.finfo(dtype).eps * max(1.0, scale)


class _MirrorOptimizer(KernelOptimizer):
    """Validates the domain and the mirror map, puts each group's starting point into the
    domain, and steps each group as one vector (one dtype and device, one round counter)."""

    def __init__(self, params, defaults, *, domain, mirror, check_finite):
        self._mirror = get_mirror(mirror)
        self._mirror.domain_for(check_domain(domain))   # raises for entropy off the simplex
        self.domain = domain
        self.mirror = mirror
        super().__init__(params, defaults, check_finite=check_finite)

    def add_param_group(self, param_group):
        """Add a group; its parameters become the first point, their projection
        :math:`x_1 = \\operatorname{argmin}_{x \\in X} D_\\psi(x, x_{\\mathrm{init}})`. A
        point already in the set (up to rounding) is left as it is, so that the parameters of a
        run being resumed keep their bits."""
        super().add_param_group(param_group)
        params = self.param_groups[-1]["params"]
        for p in params:
            if p.is_complex():
                raise ValueError(f"{type(self).__name__} works on real parameters, got one of "
                                 f"dtype {p.dtype}")
        domain = self._mirror.domain_for(self.domain)   # the simplex for mirror="entropy"
        if not params or domain is None:
            return
        with torch.no_grad():
            if not domain.contains(params, atol=_rounding(params[0].dtype, domain)):
                self._mirror.step_(params, params, [torch.zeros_like(p) for p in params], 0.0,
                                   self.domain)

    def _step_group(self, group, draws=None):
        kinds = {(p.dtype, p.device) for p in group["params"] if p.grad is not None}
        if len(kinds) > 1:
            raise ValueError(f"{type(self).__name__}: the parameters of a param group are one "
                             "vector x and must share one dtype and device; got "
                             f"{sorted(map(str, kinds))}")
        super()._step_group(group, draws)

    def _state_names(self, group):
        return self.state_names

    def _new_state(self, name: str, p: Tensor) -> Tensor:
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def _state_of(self, p, names):
        state = self.state[p]
        fresh = not state
        if fresh:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
        for name in names:
            if name not in state:   # at the first step, or an option turned on since
                state[name] = self._new_state(name, p)
        return state if fresh else super()._state_of(p, names)

    def _group_round(self, group) -> int:
        """The round t the group's next step plays: one more than the largest step count of
        its parameters with a gradient (all equal when each gets one at every step)."""
        return 1 + max((int(self.state[p]["step"]) for p in group.get("params", ())
                        if p.grad is not None and self.state.get(p)), default=0)


# -- optimistic online mirror descent ----------------------------------------------------------
class OptimisticOMD(_MirrorOptimizer):
    r"""Optimistic online mirror descent for the SEA model: a play with the last gradient as
    the hint, then an update with the new gradient, both from the same centre :math:`\hat x_t`.

    The parameters hold the played point :math:`x_t`; ``step()`` reads :math:`g_t` = ``.grad``
    at :math:`x_t` (negated under ``maximize``) and does, in this order,

    .. math::
        \hat x_{t+1} &= \operatorname*{argmin}_{x \in X}\
            \langle g_t, x\rangle + D_{\psi}(x, \hat x_t)/\eta_t
            \qquad (\text{Euclidean: } \Pi_X(\hat x_t - \eta_t g_t)) \\
        V_t &= V_{t-1} + \lVert g_t - M_t \rVert_2^2, \qquad M_{t+1} = g_t \\
        x_{t+1} &= \operatorname*{argmin}_{x \in X}\
            \langle M_{t+1}, x\rangle + D_{\psi}(x, \hat x_{t+1})/\eta_{t+1}

    with :math:`\hat x_1 = x_1 = \operatorname{argmin}_{x\in X} D_\psi(x, x_{\mathrm{init}})`
    (the parameters are projected at construction), :math:`M_1 = 0`, :math:`V_0 = 0`, norms
    over the whole param group, and the step size

    .. math::
        \eta_t = \begin{cases}
            \mathrm{lr} & \text{lr a number} \\
            D / \sqrt{\delta + 4 G^2 + V_{t-1}} & \text{lr=None (self-confident tuning)} \\
            1 / (\lambda t) & \text{strong\_convexity} = \lambda
        \end{cases}
        \qquad \eta_t \leftarrow \min(\eta_t,\ 1/(4L)) \text{ with smoothness } L.

    The exp-concave variant (``exp_concavity`` = :math:`\alpha`) replaces :math:`\psi/\eta_t`
    by :math:`\psi_t(x) = \tfrac12 \lVert x\rVert_{U_t}^2`, an online-Newton-step regularizer,

    .. math::
        U_t = \delta I + \frac{\beta}{2} \sum_{s<t} (g_s - M_s)(g_s - M_s)^\top,
        \qquad \beta = \tfrac12 \min\bigl(1/(4 G D),\ \alpha\bigr),

    so both steps become :math:`\Pi^{U_t}_X(\hat x_t - U_t^{-1} g_t)` and
    :math:`\Pi^{U_{t+1}}_X(\hat x_{t+1} - U_{t+1}^{-1} M_{t+1})`, the projections in the
    :math:`U`-norm. :math:`U_t` is a full :math:`d \times d` matrix: the variant takes param
    groups of one tensor with at most ``MAX_ONS_DIM`` entries, and ``domain`` None or a
    :class:`~stochstep.optimizers.domains.Ball`.

    What is confirmed (search over arXiv 2302.04552 and its restatements): the two-step
    update, :math:`M_t = g_{t-1}`, and :math:`\eta_t = D/\sqrt{\delta + 4G^2 + V_{t-1}}` in
    the convex case. Standard forms, not confirmed against the paper's text: the strongly
    convex :math:`1/(\lambda t)` (the paper's constant may differ), the :math:`1/(4L)` cap, the
    ONS :math:`U_t` and :math:`\beta`.

    Args:
        params: parameters or parameter groups; each group is one vector :math:`x`.
        lr: a constant :math:`\eta` (a number >= 0 or a 1-element tensor), or None for the
            self-confident tuning (which needs ``diameter`` and ``grad_bound``; schedulers
            then have no lr to change), the strongly convex or the exp-concave variant
            (the default: the paper's tuning, given ``diameter`` and ``grad_bound``).
        diameter: :math:`D`; None takes the domain's ``diameter`` when it is finite (for
            ``domain=None``, :math:`\mathbb{R}^d`, give that of a ball holding the
            comparator).
        grad_bound: :math:`G \ge \lVert g_t \rVert_2`.
        delta: :math:`\delta > 0` (default 1).
        strong_convexity: :math:`\lambda > 0`: :math:`\eta_t = 1/(\lambda t)` (lr None).
        exp_concavity: :math:`\alpha > 0`: the ONS-type variant (lr None; needs ``diameter``
            and ``grad_bound``).
        smoothness: :math:`L > 0`: caps :math:`\eta_t` at :math:`1/(4L)`.
        domain: the set :math:`X` (``stochstep.optimizers.domains``); None is
            :math:`\mathbb{R}^d` (or the simplex under ``mirror="entropy"``).
        mirror: ``"euclidean"`` (:math:`\psi = \tfrac12\lVert x\rVert^2`: projections) or
            ``"entropy"`` (negative entropy on the simplex: multiplicative updates).
        maximize: ascend (play against gains) instead of descend.
        check_finite: raise ``FloatingPointError`` naming the parameter and step on NaN/Inf.

    References:
        S. Chen, Y.-J. Zhang, W.-W. Tu, P. Zhao, L. Zhang, "Optimistic Online Mirror Descent
        for Bridging Stochastic and Adversarial Online Convex Optimization", ICML 2023,
        arXiv:2302.04552 (extended: JMLR 25(178), 2024).

    Example:
        >>> x = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
        >>> opt = OptimisticOMD([x], lr=0.5)
        >>> x.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()
        >>> x.detach()   # x_hat_2 = (-0.5, 1); x_2 = x_hat_2 - 0.5 g_1
        tensor([-1.,  2.])
    """

    state_names = ("x_hat", "hint", "sq_dev_sum")

    def __init__(self, params, lr: float | None = None, *, diameter: float | None = None,
                 grad_bound: float | None = None, delta: float = 1.0,
                 strong_convexity: float | None = None, exp_concavity: float | None = None,
                 smoothness: float | None = None, domain: Domain | None = None,
                 mirror: str = "euclidean", maximize: bool = False, check_finite: bool = False):
        defaults = dict(lr=lr, diameter=diameter, grad_bound=grad_bound, delta=delta,
                        strong_convexity=strong_convexity, exp_concavity=exp_concavity,
                        smoothness=smoothness, maximize=maximize)
        super().__init__(params, defaults, domain=domain, mirror=mirror,
                         check_finite=check_finite)

    def _check_group(self, group):
        for name in ("diameter", "grad_bound", "strong_convexity", "exp_concavity",
                     "smoothness"):
            group[name] = check_optional_positive(name, group[name])
        group["delta"] = check_positive("delta", group["delta"])
        check_flag("maximize", group["maximize"])
        variant = ("strong_convexity" if group["strong_convexity"] is not None else
                   "exp_concavity" if group["exp_concavity"] is not None else None)
        if group["lr"] is not None:
            group["lr"] = check_lr(group["lr"])
            if variant:
                raise ValueError(f"lr must be None with {variant} (the variant sets the step "
                                 f"size), got {group['lr']!r}")
        if group["strong_convexity"] is not None and group["exp_concavity"] is not None:
            raise ValueError("strong_convexity and exp_concavity are two variants: give one, "
                             f"got exp_concavity={group['exp_concavity']!r} as well")
        # (the simplex for mirror="entropy" with domain=None)
        domain_diameter = getattr(self._mirror.domain_for(self.domain), "diameter", math.inf)
        if group["diameter"] is None and math.isfinite(domain_diameter):
            group["diameter"] = float(domain_diameter)
        if group["lr"] is None and variant != "strong_convexity":
            why = ("the exp-concave variant's beta = min(1/(4 grad_bound diameter), alpha)/2"
                   if variant else "lr=None: eta_t = diameter / sqrt(delta + 4 grad_bound^2 + "
                   "V_{t-1})")
            for name in ("diameter", "grad_bound"):
                if group[name] is None:
                    raise ValueError(f"{name} is required with {why}; with domain=None (R^d) "
                                     "give the diameter of a ball holding the comparator; got "
                                     "None")
        if variant == "exp_concavity":
            self._check_ons_group(group)

    def _check_ons_group(self, group):
        if group["smoothness"] is not None:
            raise ValueError("smoothness caps eta_t, which the exp-concave variant does not "
                             f"have: leave it None, got {group['smoothness']!r}")
        if self.mirror != "euclidean":
            raise ValueError("exp_concavity needs mirror='euclidean' (its regularizer is "
                             f"0.5 ||x||_U^2), got mirror={self.mirror!r}")
        if self.domain is not None and not isinstance(self.domain, Ball):
            raise ValueError("exp_concavity projects in the U-norm, which is done for "
                             f"domain=None or a Ball only, got {self.domain!r}")
        params = group.get("params", [])
        if len(params) > 1 or any(p.numel() > MAX_ONS_DIM for p in params):
            raise ValueError("exp_concavity keeps a d x d matrix: each param group must hold "
                             f"one tensor of at most MAX_ONS_DIM = {MAX_ONS_DIM} entries, got "
                             f"{[tuple(p.shape) for p in params]}")

    def _state_names(self, group):
        return self.state_names + (("curvature",) if group["exp_concavity"] else ())

    def _new_state(self, name, p):
        if name == "x_hat":
            return p.detach().clone(memory_format=torch.preserve_format)
        if name == "sq_dev_sum":
            return p.new_zeros(())
        if name == "curvature":   # (beta / 2) sum_s (g_s - M_s)(g_s - M_s)^T
            return p.new_zeros((p.numel(), p.numel()))
        return super()._new_state(name, p)

    def _eta(self, group, t: float, sq_dev_sum: float | None) -> float:
        if group["strong_convexity"] is not None:
            eta = 1.0 / (group["strong_convexity"] * t)
        elif group["lr"] is None:
            eta = group["diameter"] / math.sqrt(group["delta"] + 4 * group["grad_bound"] ** 2
                                                + sq_dev_sum)
        else:
            eta = group["lr"]
        if group["smoothness"] is not None:
            eta = min(eta, 1.0 / (4 * group["smoothness"]))
        return eta

    def _update(self, group, params, grads, states, steps, noises):
        if group["exp_concavity"] is not None:
            if group["maximize"]:
                grads = torch._foreach_neg(grads)
            return self._ons_update(group, params[0], grads[0], states)
        t = max(steps)
        x_hats, hints, sq_dev_sums = states["x_hat"], states["hint"], states["sq_dev_sum"]
        self_confident = group["lr"] is None and group["strong_convexity"] is None
        v = _sum_of(sq_dev_sums) if self_confident else None
        eta = self._eta(group, t, v)

        def eta_next():   # eta_{t+1}, from V_t once the deviations are added
            return self._eta(group, t + 1, _sum_of(sq_dev_sums) if self_confident else None)

        radius = _blockable_radius(self.mirror, self.domain)
        if radius is not None:
            return _optimistic_step_blocked_(params, grads, x_hats, hints, sq_dev_sums, eta,
                                             eta_next, radius, group["maximize"])
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        self._mirror.step_(x_hats, x_hats, grads, eta, self.domain)
        deviations = torch._foreach_sub(grads, hints)
        norms = torch._foreach_norm(deviations)
        torch._foreach_addcmul_(sq_dev_sums, norms, norms)
        torch._foreach_copy_(hints, grads)
        self._mirror.step_(params, x_hats, hints, eta_next(), self.domain)

    def _ons_update(self, group, p, g, states):
        x_hat, hint = states["x_hat"][0], states["hint"][0]
        curvature, sq_dev_sum = states["curvature"][0], states["sq_dev_sum"][0]
        beta = 0.5 * min(1 / (4 * group["grad_bound"] * group["diameter"]),
                         group["exp_concavity"])
        eye = torch.eye(p.numel(), dtype=torch.float64, device=p.device)
        wide = lambda t: t.detach().reshape(-1).to(torch.float64)   # noqa: E731
        g64, dev = wide(g), wide(g) - wide(hint)

        u = group["delta"] * eye + curvature.to(torch.float64)
        x_hat.copy_(self._u_projection(wide(x_hat) - torch.linalg.solve(u, g64), u)
                    .view_as(x_hat))
        curvature.add_((0.5 * beta * torch.outer(dev, dev)).to(curvature.dtype))
        sq_dev_sum.add_(dev.dot(dev).to(sq_dev_sum.dtype))
        hint.copy_(g)
        u = group["delta"] * eye + curvature.to(torch.float64)
        p.copy_(self._u_projection(wide(x_hat) - torch.linalg.solve(u, wide(hint)), u)
                .view_as(p))

    def _u_projection(self, y: Tensor, u: Tensor) -> Tensor:
        r"""argmin over the domain of :math:`(x - y)^\top U (x - y)`. On a ball
        :math:`\lVert x - c\rVert \le R` with :math:`y` outside: :math:`x - c =
        (U + \nu I)^{-1} U (y - c)`, :math:`\nu > 0` found by bisection on the eigenbasis of
        :math:`U` (the norm falls monotonically in :math:`\nu`)."""
        if self.domain is None:
            return y
        radius = float(self.domain.radius)
        center = (torch.zeros_like(y) if self.domain.center is None else
                  torch.as_tensor(self.domain.center, dtype=y.dtype).reshape(-1))
        if torch.linalg.vector_norm(y - center) <= radius:
            return y
        lam, q = torch.linalg.eigh(u)
        z = q.T @ (y - center)
        lo, hi = 0.0, float(lam.max() * torch.linalg.vector_norm(z) / radius)
        for _ in range(200):   # to the last bit of float64
            nu = 0.5 * (lo + hi)
            if nu in (lo, hi):
                break
            if torch.linalg.vector_norm(lam * z / (lam + nu)) > radius:
                lo = nu
            else:
                hi = nu
        return center + q @ (lam * z / (lam + hi))


# -- composite stochastic mirror descent -------------------------------------------------------
SCHEDULES = ("sqrt_t", "constant", "linear_decay", "inv_t")


class CSMD(_MirrorOptimizer):
    r"""Composite stochastic mirror descent: a mirror step on the gradient of :math:`f` and an
    exact step on the composite term :math:`h`; the last iterate is the answer (no averaging).

    With :math:`g_t` = ``.grad`` (negated under ``maximize``) and :math:`t = 1` at the first
    step,

    .. math::
        x_{t+1} = \operatorname*{argmin}_{x \in X}\ h(x) + \langle g_t, x\rangle
                  + D_\psi(x, x_t)/\eta_t,
        \qquad \text{Euclidean: } x_{t+1} = \Pi_X\bigl(
        \operatorname{prox}_{\eta_t h}(x_t - \eta_t g_t)\bigr),

    with :math:`h = w\lVert x\rVert_1` (``prox="l1"``: :func:`prox_l1_`),
    :math:`h = w \sum_G \lVert x_G\rVert_2` (``"group_l2"``: :func:`prox_group_l2_`, rows of
    2-D and larger tensors, whole 0/1-D tensors) or :math:`h = 0`, :math:`w` = ``prox_weight``,
    and the step size

    .. math::
        \eta_t = \min\Bigl(\frac{1}{2L},\ \begin{cases}
            \mathrm{lr}/\sqrt{t} & \texttt{"sqrt\_t"} \\
            \mathrm{lr}/\sqrt{T} & \texttt{"constant"} \\
            \mathrm{lr}\,(T - t + 1)/T^{3/2} & \texttt{"linear\_decay"} \\
            \mathrm{lr}/(\mu t) & \texttt{"inv\_t"}
        \end{cases}\Bigr)

    (:math:`T` = ``horizon``, :math:`\mu` = ``strong_convexity``, :math:`L` = ``smoothness``;
    without it, no cap). "Prox then project" is the exact argmin when :math:`X` is a
    :class:`~stochstep.optimizers.domains.Box` and ``prox="l1"`` (both act coordinatewise,
    and a 1-D convex problem's minimizer over an interval is the clipped unconstrained one),
    or :math:`X` a :class:`~stochstep.optimizers.domains.Ball` centred at 0 and either prox
    (both shrink radially: the ball's multiplier is the same for every group); for other
    domains it is the composition, an approximation of the exact argmin. With
    ``mirror="entropy"`` (the simplex) the step is the multiplicative update
    :math:`x_{t+1} \propto x_t e^{-\eta_t g_t}` and ``prox`` must be None (the
    :math:`\ell_1` norm is constant on the simplex).

    Confirmed (search over arXiv 2312.08531 and reviews of it): the update, the last iterate,
    :math:`\min(1/(2L), \mathrm{lr}/\sqrt t)` and the known-horizon schedules
    :math:`\mathrm{lr}/\sqrt T` and :math:`\mathrm{lr}(T - t + 1)/T^{3/2}`. Standard form, not
    confirmed: ``"inv_t"`` (the paper uses a 1/t-type schedule with a constant of 1.5).

    Args:
        params: parameters or parameter groups; each group is one vector :math:`x`.
        lr: the scale :math:`\eta` of the schedule (a number >= 0 or a 1-element tensor).
        schedule: ``"sqrt_t"`` (default), ``"constant"``, ``"linear_decay"`` or ``"inv_t"``.
        horizon: :math:`T`, required by ``"constant"`` and ``"linear_decay"``, which refuse
            to step past it.
        smoothness: :math:`L > 0`: caps :math:`\eta_t` at :math:`1/(2L)`.
        strong_convexity: :math:`\mu > 0`, required by ``"inv_t"`` (and only used there).
        prox: None, ``"l1"`` or ``"group_l2"``.
        prox_weight: :math:`w \ge 0` (requires a prox when > 0).
        mirror: ``"euclidean"`` or ``"entropy"`` (the simplex).
        domain: the set :math:`X` (``stochstep.optimizers.domains``) or None.
        maximize: ascend instead of descend.
        check_finite: raise ``FloatingPointError`` naming the parameter and step on NaN/Inf.

    References:
        Z. Liu, Z. Zhou, "Revisiting the Last-Iterate Convergence of Stochastic Gradient
        Methods", ICLR 2024, arXiv:2312.08531.

    Example:
        >>> x = torch.nn.Parameter(torch.tensor([1.0, -0.2]))
        >>> opt = CSMD([x], lr=0.5, prox="l1", prox_weight=0.2)
        >>> x.grad = torch.tensor([1.0, 0.0])
        >>> opt.step()
        >>> x.detach()   # soft-threshold (0.5, -0.2) at 0.5 * 0.2
        tensor([ 0.4000, -0.1000])
    """

    state_names = ()

    def __init__(self, params, lr: float, *, schedule: str = "sqrt_t",
                 horizon: int | None = None, smoothness: float | None = None,
                 strong_convexity: float | None = None, prox: str | None = None,
                 prox_weight: float = 0.0, mirror: str = "euclidean",
                 domain: Domain | None = None, maximize: bool = False,
                 check_finite: bool = False):
        defaults = dict(lr=lr, schedule=schedule, horizon=horizon, smoothness=smoothness,
                        strong_convexity=strong_convexity, prox=prox, prox_weight=prox_weight,
                        maximize=maximize)
        super().__init__(params, defaults, domain=domain, mirror=mirror,
                         check_finite=check_finite)

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        schedule = _check_choice("schedule", group["schedule"], SCHEDULES)
        if group["horizon"] is not None:
            check_int("horizon", group["horizon"])
        elif schedule in ("constant", "linear_decay"):
            raise ValueError(f"horizon is required with schedule={schedule!r} (an integer >= 1, "
                             "the number of steps), got None")
        group["smoothness"] = check_optional_positive("smoothness", group["smoothness"])
        group["strong_convexity"] = check_optional_positive("strong_convexity",
                                                            group["strong_convexity"])
        if (schedule == "inv_t") != (group["strong_convexity"] is not None):
            raise ValueError("strong_convexity is required by schedule='inv_t' and used by it "
                             f"only; got strong_convexity={group['strong_convexity']!r} with "
                             f"schedule={schedule!r}")
        if group["prox"] is not None:
            _check_choice("prox", group["prox"], PROXES)
            if self.mirror != "euclidean":
                raise ValueError(f"prox must be None with mirror={self.mirror!r} (the l1 norm "
                                 f"is constant on the simplex), got {group['prox']!r}")
        group["prox_weight"] = check_nonnegative("prox_weight", group["prox_weight"])
        if group["prox_weight"] > 0 and group["prox"] is None:
            raise ValueError("prox_weight > 0 needs prox='l1' or 'group_l2', got "
                             f"prox_weight={group['prox_weight']!r} with prox=None")
        check_flag("maximize", group["maximize"])
        if schedule in ("constant", "linear_decay"):   # checked before any group steps
            t = self._group_round(group)
            if t > group["horizon"]:
                raise ValueError(f"step {t} is past horizon={group['horizon']} (schedule="
                                 f"{schedule!r} is defined for t = 1..horizon)")

    def _eta(self, group, t: float) -> float:
        lr, schedule, horizon = group["lr"], group["schedule"], group["horizon"]
        if schedule == "sqrt_t":
            eta = lr / math.sqrt(t)
        elif schedule == "constant":
            eta = lr / math.sqrt(horizon)
        elif schedule == "linear_decay":
            eta = lr * (horizon - t + 1) / horizon ** 1.5
        else:
            eta = lr / (group["strong_convexity"] * t)
        if group["smoothness"] is not None:
            eta = min(eta, 1.0 / (2 * group["smoothness"]))
        return eta

    def _update(self, group, params, grads, states, steps, noises):
        eta = self._eta(group, max(steps))
        sign = -1.0 if group["maximize"] else 1.0
        radius = _blockable_radius(self.mirror, self.domain)
        if group["prox"] is None and radius is not None:
            _ball_step_blocked_(params, grads, sign * eta, radius)
        elif group["prox"] is None:
            if group["maximize"]:
                grads = torch._foreach_neg(grads)
            self._mirror.step_(params, params, grads, eta, self.domain)
        else:
            torch._foreach_add_(params, grads, alpha=-sign * eta)
            PROXES[group["prox"]](params, eta * group["prox_weight"])
            if self.domain is not None:
                self.domain.project_(params)


# -- the Euclidean steps on R^d or a ball centred at 0, cache-blocked --------------------------
# A step onto a ball needs the joint norm of the new point before it can scale it: as separate
# foreach passes that is one more read of every array from memory. Here each cache-sized block
# (stepping.kernels.blocks) is updated and its norm taken while it is in cache; the scaling,
# only when the ball bites, is one more pass. Same math as the mirror map's step.
def _blockable_radius(mirror: str, domain) -> float | None:
    """The radius when the Euclidean step onto ``domain`` takes the blocked path (math.inf for
    no domain), None otherwise."""
    if mirror != "euclidean":
        return None
    if domain is None:
        return math.inf
    if type(domain) is Ball and domain.center is None:
        return domain.radius
    return None


def _scale_into_ball_(tensors: list[Tensor], block_norms: list[Tensor], radius: float) -> None:
    """Scale ``tensors`` onto the ball when the norm of their joint vector (the norm of the
    norms of its blocks) exceeds ``radius``, as :class:`Ball`'s projection does."""
    if radius == math.inf or not block_norms:
        return
    factor = radius / torch.linalg.vector_norm(torch.stack(block_norms)).clamp_min(radius)
    if factor.item() < 1:
        _mul_(tensors, factor)


def _ball_step_blocked_(params, grads, eta, radius) -> None:
    """params = Pi(params - eta grads)."""
    norms = []
    for (p, g), _ in blocks([params, grads]):
        torch._foreach_add_(p, g, alpha=-eta)
        if radius != math.inf:
            norms += torch._foreach_norm(p)
    _scale_into_ball_(params, norms, radius)


def _optimistic_step_blocked_(params, grads, x_hats, hints, sq_dev_sums, eta, eta_next, radius,
                              maximize) -> None:
    """One OptimisticOMD round in two blocked passes (plus a scaling per bite): x_hat, the
    deviation and the hint in the first, the play in the second. ``eta_next()`` gives
    eta_{t+1} once the squared deviations are added to ``sq_dev_sums``."""
    sign = -1.0 if maximize else 1.0
    hat_norms, dev_norms, owners = [], [], []
    for (x_hat, g, hint), block_owners in blocks([x_hats, grads, hints], range(len(params))):
        torch._foreach_add_(x_hat, g, alpha=-sign * eta)
        if radius != math.inf:
            hat_norms += torch._foreach_norm(x_hat)
        torch._foreach_add_(hint, g, alpha=-sign)   # M_t - g_t: same norm as g_t - M_t
        dev_norms += torch._foreach_norm(hint)
        owners += block_owners
        torch._foreach_copy_(hint, g)
        if maximize:
            torch._foreach_neg_(hint)
    # a parameter cut into several blocks: the squares of its blocks' norms add up
    dev_sq = torch.zeros(len(params), dtype=dev_norms[0].dtype, device=dev_norms[0].device)
    dev_sq.index_add_(0, torch.tensor(owners, dtype=torch.long, device=dev_sq.device),
                      torch.stack(dev_norms) ** 2)
    torch._foreach_add_(sq_dev_sums, list(dev_sq.unbind()))
    hat_factor = None
    if hat_norms:
        hat_factor = radius / torch.linalg.vector_norm(torch.stack(hat_norms)).clamp_min(radius)
        hat_factor = hat_factor if hat_factor.item() < 1 else None
    step = eta_next()
    play_norms = []
    for (p, x_hat, hint), _ in blocks([params, x_hats, hints]):
        if hat_factor is not None:
            _mul_(x_hat, hat_factor)
        for out, centre, direction in zip(p, x_hat, hint):   # one pass, not copy then add
            torch.add(centre, direction, alpha=-step, out=out)
        if radius != math.inf:
            play_norms += torch._foreach_norm(p)
    _scale_into_ball_(params, play_norms, radius)


# -- hand-computed references for the conformance suite ----------------------------------------
def _flat(ps: list[Tensor]) -> Tensor:
    return torch.cat([p.reshape(-1) for p in ps])


def _unflat(x: Tensor, like: list[Tensor]) -> list[Tensor]:
    return [part.reshape(p.shape) for part, p in zip(x.split([p.numel() for p in like]), like)]


def _ball(domain):
    """Euclidean projection onto ``domain`` (None or a Ball), written out."""
    if domain is None:
        return lambda y: y

    def project(y):
        c = torch.zeros_like(y) if domain.center is None else \
            torch.as_tensor(domain.center, dtype=y.dtype).reshape(-1)
        return c + (y - c) * min(1.0, domain.radius / torch.linalg.vector_norm(y - c).item())
    return project


def _omd_reference(params, grad_fn, steps, kwargs, generator):
    """The docstring's Euclidean rule on the flattened joint vector, in float64."""
    lr, sc, cap = kwargs.get("lr"), kwargs.get("strong_convexity"), kwargs.get("smoothness")
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    project = _ball(kwargs.get("domain"))
    shapes = [p.to(torch.float64) for p in params]
    x = project(_flat(shapes))
    x_hat, hint, v = x.clone(), torch.zeros_like(x), 0.0

    def eta(t):
        e = (1 / (sc * t) if sc else lr if lr is not None else
             kwargs["diameter"] / math.sqrt(kwargs.get("delta", 1.0)
                                            + 4 * kwargs["grad_bound"] ** 2 + v))
        return min(e, 1 / (4 * cap)) if cap else e

    for t in range(1, steps + 1):
        g = sign * _flat(grad_fn(_unflat(x, shapes)))
        x_hat = project(x_hat - eta(t) * g)
        v += float(((g - hint) ** 2).sum())
        hint = g
        x = project(x_hat - eta(t + 1) * hint)
    return _unflat(x, shapes)


def _csmd_reference(params, grad_fn, steps, kwargs, generator):
    """The docstring's Euclidean rule on the flattened joint vector, in float64."""
    lr, horizon = kwargs["lr"], kwargs.get("horizon")
    schedule = kwargs.get("schedule", "sqrt_t")
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    project = _ball(kwargs.get("domain"))
    shapes = [p.to(torch.float64) for p in params]
    x = project(_flat(shapes))
    w, prox = kwargs.get("prox_weight", 0.0), kwargs.get("prox")
    for t in range(1, steps + 1):
        eta = {"sqrt_t": lambda: lr / math.sqrt(t), "constant": lambda: lr / math.sqrt(horizon),
               "linear_decay": lambda: lr * (horizon - t + 1) / horizon ** 1.5,
               "inv_t": lambda: lr / (kwargs.get("strong_convexity", 1.0) * t)}[schedule]()
        if kwargs.get("smoothness"):
            eta = min(eta, 1 / (2 * kwargs["smoothness"]))
        y = x - eta * sign * _flat(grad_fn(_unflat(x, shapes)))
        if prox == "l1":
            y = torch.sign(y) * torch.clamp(y.abs() - eta * w, min=0)
        elif prox == "group_l2":   # the rows of the 3 x 4 tensor, the 5-vector as one group
            parts = _unflat(y, shapes)
            for k, part in enumerate(parts):
                rows = part.reshape(part.shape[0], -1) if part.dim() >= 2 else part.reshape(1, -1)
                n = rows.norm(dim=1, keepdim=True)
                parts[k] = (rows * torch.clamp(1 - eta * w / n, min=0)).reshape(part.shape)
            y = _flat(parts)
        x = project(y)
    return _unflat(x, shapes)


register(AlgorithmInfo(
    name="OptimisticOMD",
    cls=OptimisticOMD,
    kind="optimizer",
    paper="Chen, Zhang, Tu, Zhao, Zhang, ICML 2023, arXiv:2302.04552",
    default_kwargs=dict(lr=0.1),
    supports=frozenset({"maximize", "zero_grad_noop", "global_norm",
                        "scale_proportional", "rotation_equivariant", "translation_equivariant"}),
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(lr=None, diameter=None), ValueError, "diameter"),
        (dict(lr=None, diameter=1.0, grad_bound=None), ValueError, "grad_bound"),
        (dict(delta=0.0), ValueError, "delta"),
        (dict(diameter=-1.0), ValueError, "diameter"),
        (dict(lr=0.1, strong_convexity=1.0), ValueError, "lr"),
        (dict(lr=None, smoothness=-1.0, strong_convexity=1.0), ValueError, "smoothness"),
        (dict(maximize=1), ValueError, "maximize"),
        (dict(mirror="adam"), ValueError, "mirror"),
        (dict(domain="ball"), ValueError, "domain"),
        (dict(momentum=0.9), TypeError, "momentum"),
    ),
    reference=_omd_reference,
    reference_kwargs=(
        dict(lr=0.1),
        dict(lr=None, diameter=2.0, grad_bound=3.0, delta=0.5),
        dict(lr=None, strong_convexity=2.0, smoothness=0.4),
        dict(lr=0.2, maximize=True),
        dict(lr=0.3, domain=Ball(1.5)),
    ),
))

register(AlgorithmInfo(
    name="CSMD",
    cls=CSMD,
    kind="optimizer",
    paper="Liu, Zhou, ICLR 2024, arXiv:2312.08531",
    default_kwargs=dict(lr=0.3),
    supports=frozenset({"maximize", "zero_grad_noop", "global_norm",
                        "scale_proportional", "rotation_equivariant", "translation_equivariant"}),
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(schedule="cosine"), ValueError, "schedule"),
        (dict(schedule="constant", horizon=None), ValueError, "horizon"),
        (dict(schedule="linear_decay", horizon=0), ValueError, "horizon"),
        (dict(schedule="inv_t", strong_convexity=None), ValueError, "strong_convexity"),
        (dict(smoothness=0.0), ValueError, "smoothness"),
        (dict(prox="l2"), ValueError, "prox"),
        (dict(prox="l1", prox_weight=-1.0), ValueError, "prox_weight"),
        (dict(prox_weight=0.5), ValueError, "prox_weight"),
        (dict(mirror="entropy", prox="l1"), ValueError, "prox"),
        (dict(maximize="no"), ValueError, "maximize"),
        (dict(momentum=0.9), TypeError, "momentum"),
    ),
    reference=_csmd_reference,
    reference_kwargs=(
        dict(lr=0.3),
        dict(lr=0.5, schedule="constant", horizon=4, smoothness=2.0),
        dict(lr=0.5, schedule="linear_decay", horizon=3, prox="l1", prox_weight=0.3),
        dict(lr=0.5, schedule="inv_t", strong_convexity=2.0, prox="group_l2", prox_weight=0.5,
             domain=Ball(1.0)),
        dict(lr=0.4, maximize=True, prox="l1", prox_weight=0.1),
    ),
))
