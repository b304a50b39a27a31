"""Blockwise stochastic variance-reduced multi-block bilevel optimization (BSVRB; Hu, Qiu, Guo,
Zhang, Yang, ICML 2023) as a torch optimizer, and the batched per-block oracles it runs on.

The problem has one upper variable :math:`x` (the optimizer's parameters) and :math:`m`
lower-level problems, one row :math:`y_i` of a leaf tensor ``lower`` each:

.. math::
    \\min_x F(x) = \\frac1m \\sum_{i=1}^m f_i(x, y_i(x)), \\qquad
    y_i(x) = \\operatorname*{argmin}_y g_i(x, y),

with every :math:`g_i(x, \\cdot)` strongly convex. The blocks are separable (block :math:`i`'s
objectives read row :math:`i` only), so the gradient of :math:`\\sum_i g_i` with respect to the
rows is every block's gradient at once, and one Hessian-vector product of the sum is every
block's product: each oracle below is one autograd call for all sampled blocks, where the
authors' numpy code loops over the blocks in Python.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from stochstep.stepping.checks import (_is_real, check_int, check_optional_positive,
                                       check_positive, check_unit_interval)
from stochstep.stepping.optimizer import KernelOptimizer
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["BSVRB", "BlockOracles", "block_oracles", "VERSIONS"]

VERSIONS = ("v1", "v2", "rsvrb")


def _check_values(name: str, value, blocks: int) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (blocks,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"the closure's {name}(x, y) must return one value per sampled block, "
                         f"a tensor of shape ({blocks},), got {shape}")
    return value


def _grads(output: Tensor, inputs: list[Tensor], **kwargs) -> list[Tensor]:
    """d output / d inputs, zeros for the inputs that ``output`` does not depend on."""
    if not output.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


class BlockOracles:
    """The first- and second-order quantities of the sampled blocks at one point
    :math:`(x, y_{I})`; made by :func:`block_oracles`.

    Attributes:
        f: the upper objectives :math:`f_i(x, y_i)`, shape (I,).
        grad_y_f: :math:`\\nabla_y f_i`, shape (I, dim_y).
        grad_y_g: :math:`\\nabla_y g_i`, shape (I, dim_y).
        hess_yy_g: :math:`\\nabla^2_{yy} g_i`, shape (I, dim_y, dim_y), or None when not asked.
        grad_x_f: :math:`\\sum_{i \\in I} \\nabla_x f_i`, one tensor per upper parameter.
        per_block_x: None, or (when asked) the pair :math:`(\\nabla_x f_i,\\
            \\partial_x \\nabla_y g_i)` of every block, shapes (I, n) and (I, dim_y, n), ``n``
            the number of upper entries (the parameters flattened and concatenated).
    """

    def __init__(self, f, grad_y_f, grad_y_g, hess_yy_g, grad_x_f, graph, per_block_x=None):
        self.f, self.grad_y_f, self.grad_y_g = f, grad_y_f, grad_y_g
        self.hess_yy_g, self.grad_x_f, self.per_block_x = hess_yy_g, grad_x_f, per_block_x
        self._graph = graph  # (grad_y g with its graph, the leaves x, the leaf y)

    def products(self, v: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Both second-order products with one vector :math:`v_i` per block, in one autograd
        call of :math:`\\sum_i \\langle \\nabla_y g_i, v_i \\rangle`:

        .. math::
            \\bigl(\\nabla^2_{yy} g_i\\, v_i\\bigr)_{i \\in I}, \\qquad
            \\frac1{|I|} \\sum_{i \\in I} \\bigl[\\nabla_x f_i - \\nabla^2_{xy} g_i\\, v_i\\bigr]

        (the second is the hypergradient estimate :math:`G`; with
        :math:`v_i = [\\nabla^2_{yy} g_i]^{-1} \\nabla_y f_i` it is the blocks' exact mean
        hypergradient). Can be called once per point.
        """
        grad_y_g, xs, y = self._graph
        with torch.enable_grad():
            hvp, *jvp = _grads((grad_y_g * v.detach()).sum(), [y, *xs])
        blocks = v.shape[0]
        return hvp, [(gf - j) / blocks for gf, j in zip(self.grad_x_f, jvp)]


def block_oracles(f: Callable, g: Callable, upper: Sequence[Tensor], y: Tensor, *,
                  hessian: bool = False, per_block_x: bool = False) -> BlockOracles:
    """Evaluate separable per-block objectives and their derivatives at one point, every
    block in one autograd call per quantity.

    .. math::
        f_i(x, y_i),\\quad \\nabla_y f_i,\\quad \\sum_i \\nabla_x f_i,\\quad \\nabla_y g_i,
        \\quad [\\nabla^2_{yy} g_i]\\ (\\texttt{hessian=True})

    The Hessians take ``dim_y`` products of the summed gradient (one per coordinate, each
    for all blocks); the products with a vector per block come from
    :meth:`BlockOracles.products`.

    Args:
        f, g: callables ``(x, y) -> (I,)``: ``x`` a list of tensors shaped like ``upper``,
            ``y`` of shape (I, dim_y) whose row ``i`` only enters entry ``i``.
        upper: the point :math:`x` (not modified).
        y: the sampled rows, shape (I, dim_y) (not modified).
        hessian: also the blocks' Hessians :math:`\\nabla^2_{yy} g_i`.
        per_block_x: also every block's own :math:`\\nabla_x f_i` and mixed Jacobian
            :math:`\\partial_x \\nabla_y g_i` (``x`` is shared, so these cannot come from
            one product of the sum: one batched call over ``I`` and ``I * dim_y`` unit
            vectors, for the RSVRB baseline).

    References:
        Hu, Qiu, Guo, Zhang, Yang, "Blockwise Stochastic Variance-Reduced Methods with Parallel
        Speedup for Multi-Block Bilevel Optimization", ICML 2023.

    Example:
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 4.0]])           # g_i = 0.5 a_i y_i^2 - x y_i
        >>> g = lambda x, y: 0.5 * (y * A.diagonal()[:, None] * y).sum(1) - x[0] * y.sum(1)
        >>> f = lambda x, y: 0.5 * (y ** 2).sum(1)
        >>> o = block_oracles(f, g, [torch.tensor(1.0)], torch.ones(2, 1))
        >>> o.grad_y_g.flatten().tolist()
        [1.0, 3.0]
        >>> o.products(torch.ones(2, 1))[0].flatten().tolist()
        [2.0, 4.0]
    """
    xs = [t.detach().requires_grad_() for t in upper]
    y = y.detach().requires_grad_()
    blocks, dim = y.shape
    with torch.enable_grad():
        f_values = _check_values("f", f(xs, y), blocks)
        g_values = _check_values("g", g(xs, y), blocks)
        grad_y_f, *grad_x_f = _grads(f_values.sum(), [y, *xs])
        grad_y_g, = _grads(g_values.sum(), [y], create_graph=True)
        hess = None
        if hessian:
            # row k of every block's Hessian: one product of the sum per coordinate (a loop
            # over dim_y, not over blocks; is_grads_batched's vmap is ~14x slower on CPU)
            hess = torch.zeros(blocks, dim, dim, dtype=y.dtype, device=y.device)
            if grad_y_g.requires_grad:
                for k in range(dim):
                    hess[:, k] = _grads(grad_y_g[:, k].sum(), [y], retain_graph=True)[0]
        jacobians = None
        if per_block_x:
            jacobians = (_per_block_x(f_values, xs, (blocks,)),
                         _per_block_x(grad_y_g, xs, (blocks, dim)))
    return BlockOracles(f_values.detach(), grad_y_f.detach(), grad_y_g.detach(), hess,
                        [t.detach() for t in grad_x_f], (grad_y_g, xs, y), jacobians)


def _per_block_x(output: Tensor, xs: list[Tensor], shape: tuple[int, ...]) -> Tensor:
    """d output[j] / d x for every entry j of ``output`` (of ``shape``), x flattened: shape
    (*shape, n)."""
    count = output.numel()
    n = sum(t.numel() for t in xs)
    if not output.requires_grad:
        return output.new_zeros(*shape, n)
    units = torch.eye(count, dtype=output.dtype, device=output.device).reshape(count, *shape)
    grads = torch.autograd.grad(output, xs, grad_outputs=units, is_grads_batched=True,
                                retain_graph=True, allow_unused=True)
    grads = [t.new_zeros(count, *t.shape) if g is None else g for g, t in zip(grads, xs)]
    return torch.cat([g.reshape(count, -1) for g in grads], 1).reshape(*shape, n).detach()


def _project_ball(v: Tensor, radius: float | None) -> Tensor:
    """Each row onto the ball of radius ``radius`` (None: unchanged)."""
    if radius is None:
        return v
    norms = v.norm(dim=-1, keepdim=True)
    return torch.where(norms > radius, v * (radius / norms), v)


def _floor_frobenius(h: Tensor, bound: float | None) -> Tensor:
    """Each matrix whose Frobenius norm is below ``bound`` scaled up to norm ``bound``."""
    if bound is None:
        return h
    norms = torch.linalg.matrix_norm(h)[:, None, None]
    return torch.where(norms < bound, h * (bound / norms), h)


class BSVRB(KernelOptimizer):
    r"""Blockwise stochastic variance-reduced bilevel optimizer (BSVRB-v1/v2) for
    :math:`\min_x \frac1m \sum_i f_i(x, y_i(x))`, :math:`y_i(x) = \operatorname{argmin}_y
    g_i(x, y)`; ``version="rsvrb"`` is the authors' RSVRB baseline.

    At step :math:`t` it draws :math:`I` blocks :math:`I_t` without replacement and evaluates
    the closure's :math:`f, g` (one minibatch) at the current point :math:`(x_t, y_t, v_t)` and
    at the previous :math:`(x_{t-1}, y_{t-1}, v_{t-1})`. With
    :math:`\mathrm{MSVR}(u, h, h') = (1-\alpha) u + (\alpha + \gamma) h - \gamma h'` (a block's
    estimator starts at :math:`h` on its first visit), for :math:`i \in I_t`:

    .. math::
        s_i &\leftarrow \mathrm{MSVR}(s_i, \nabla_y g_i(x_t, y_{i,t}),
              \nabla_y g_i(x_{t-1}, y_{i,t-1})) \\
        \text{v2:}\ w_i &\leftarrow \mathrm{MSVR}(w_i, r_i(x_t, y_{i,t}, v_{i,t}),
              r_i(x_{t-1}, y_{i,t-1}, v_{i,t-1})),\quad
              r_i = \nabla^2_{yy} g_i\, v - \nabla_y f_i \\
        \text{v1:}\ H_i &\leftarrow P_H\bigl(\mathrm{MSVR}(H_i, \nabla^2_{yy} g_i(x_t, y_{i,t}),
              \nabla^2_{yy} g_i(x_{t-1}, y_{i,t-1}))\bigr),\quad
              v_{i,\cdot} = H_i^{-1} \nabla_y f_i(\cdot) \\
        G(x, y, v) &= \frac1I \sum_{i \in I_t} \bigl[\nabla_x f_i(x, y_i)
              - \nabla^2_{xy} g_i(x, y_i)\, v_i\bigr] \\
        z_t &= G(x_t, y_t, v_t) + (1 - \beta)\bigl(z_{t-1} - G(x_{t-1}, y_{t-1}, v_{t-1})\bigr)
              \qquad (z_1 = G(x_1, y_1, v_1)) \\
        \text{v2:}\ y_i &\leftarrow y_i - \tau\, d_i\, s_i,\quad
              v_i \leftarrow P_{C_v}(v_i - \tau_v\, d_i\, w_i) \quad (i \in I_t) \\
        \text{v1:}\ y_i &\leftarrow y_i - \tau\, s_i \quad (\text{every } i;\ s_i = 0
              \text{ before its first visit}) \\
        x_{t+1} &= x_t - \eta\, z_t

    :math:`d_i` is the number of steps since block :math:`i` was last sampled (since the
    start on its first visit), the authors' catch-up for the steps a block missed;
    :math:`P_{C_v}` projects each :math:`v_i` onto the ball of radius ``v_bound``;
    :math:`P_H` scales a matrix whose Frobenius norm is below ``hessian_bound`` up to that
    norm (the authors' ``proj_mat``); ``gamma="auto"`` is
    :math:`\gamma = (m - I) / (I (1 - \alpha))`, 0 when :math:`\alpha = 1` or :math:`I = m`.
    v1 solves one ``dim_y`` system per sampled block (for small ``dim_y``); v2 only takes
    Hessian-vector products. Both use, in :math:`G` at both points, the estimator as it is
    after this step's update (the authors' v1 uses the one before).

    ``version="rsvrb"``, the RSVRB baseline as the authors' code runs it: STORM estimators of
    every block's :math:`\nabla_y g_i, \nabla_y f_i, \nabla_x f_i, \nabla^2_{yx} g_i` (a
    ``dim_y`` by ``n`` matrix, ``n`` the number of upper entries) and :math:`\nabla^2_{yy} g_i`
    (:math:`H_i` starts at the identity), with :math:`k = m/I`:

    .. math::
        E_i &\leftarrow (1 - \beta)\bigl(E_i - k\, h_i(x_{t-1}, y_{i,t-1})\bigr)
              + k\, h_i(x_t, y_{i,t}) \quad (i \in I_t;\ P_H \text{ on } H_i), \qquad
              E_i \leftarrow (1 - \beta) E_i \quad (i \notin I_t) \\
        G &= \frac1I \sum_{i \in I'_t} \bigl[q_i - V_i^\top H_i^{-1} u_i\bigr],\quad
              z_t = G^{\text{new}} + (1 - \beta)(z_{t-1} - G^{\text{old}}),\quad
              y_i \leftarrow y_i - \tau s_i\ (\text{every } i)

    where :math:`s, u, q, V` estimate :math:`\nabla_y g, \nabla_y f, \nabla_x f,
    \nabla^2_{yx} g` (:math:`q`, absent from the authors' task where :math:`\nabla_x f = 0`,
    is added here), the estimators start at zero (the authors' at random), :math:`I'_t` is a
    second, independent sample of :math:`I` blocks, and
    :math:`G^{\text{old}}, G^{\text{new}}` are :math:`G` before and after the update (at
    :math:`t = 1` the previous point is the current one). Its per-block Jacobians cost
    ``I * dim_y`` products per point and :math:`O(m\, d_y\, n)` memory: a baseline.
    ``alpha``, ``gamma``, ``v_lr`` and ``v_bound`` do not enter it.

    ``step(closure)``: ``closure(blocks)`` receives the sampled block indices (a sorted
    LongTensor of length :math:`I`) and returns two callables ``f(x, y)`` and ``g(x, y)``:
    ``x`` a list of tensors shaped like the upper parameters (in the order given), ``y`` of
    shape (I, dim_y) holding the sampled rows; each returns one value per block, shape (I,),
    on one minibatch that stays the same for every call within the step. ``step`` returns the
    mean of :math:`f_i(x_t, y_{i,t})` over the sampled blocks. Per-block state:
    :math:`s, w, v` (v2), :math:`s, H` (v1) or :math:`s, u, q, V, H` (rsvrb), and the
    previous :math:`y, v`; global:
    :math:`x_{t-1}, z`.

    Args:
        upper_params: the upper-level parameters :math:`x` (tensors; one param group).
        lower: :math:`y`, a 2-D floating leaf tensor (m, dim_y), row :math:`i` the
            lower-level variable of block :math:`i`; updated in place.
        lr: :math:`\eta > 0`, the step of :math:`x`.
        lower_lr: :math:`\tau > 0`, the step of :math:`y`.
        v_lr: :math:`\tau_v > 0`, the step of :math:`v` (v2); None: ``lower_lr``.
        alpha: MSVR weight :math:`\alpha \in (0, 1]` (1: no memory).
        beta: STORM weight :math:`\beta \in (0, 1]` (1: no memory).
        gamma: MSVR correction :math:`\gamma \ge 0`, or ``"auto"`` (the theory's value).
        blocks_per_step: :math:`I \in \{1, \dots, m\}`.
        version: ``"v2"`` (tracked Hessian-vector products), ``"v1"`` (tracked Hessians) or
            ``"rsvrb"`` (the baseline).
        v_bound: :math:`C_v > 0` (v2), or None for no projection.
        hessian_bound: the Frobenius floor of :math:`P_H` (v1, rsvrb), or None for none.
        generator: the ``torch.Generator`` that samples the blocks (None: one seeded from
            torch's global RNG).

    References:
        Hu, Qiu, Guo, Zhang, Yang, "Blockwise Stochastic Variance-Reduced Methods with
        Parallel Speedup for Multi-Block Bilevel Optimization", ICML 2023 (code
        ``quanqihu/BSVRB_ICML2023``, ``HO/main.py``: defaults, the catch-up :math:`d_i`,
        :math:`P_H`). Guo, Hu, Zhang, Yang, RSVRB, arXiv:2105.02266.

    Example:
        >>> x = torch.nn.Parameter(torch.tensor([1.0]))
        >>> y = torch.zeros(4, 1, requires_grad=True)           # y_i(x) = x, F = (x - 2)^2 / 2
        >>> opt = BSVRB([x], y, lr=0.1, lower_lr=0.1, blocks_per_step=2,
        ...             generator=torch.Generator().manual_seed(0))
        >>> problem = lambda blocks: (lambda x, y: 0.5 * (y[:, 0] - 2) ** 2,
        ...                           lambda x, y: 0.5 * (y[:, 0] - x[0]) ** 2)
        >>> for _ in range(200):
        ...     _ = opt.step(problem)
        >>> round(x.item(), 2)
        2.0
    """

    stochastic = True

    def __init__(self, upper_params, lower: Tensor, *, lr: float, lower_lr: float,
                 v_lr: float | None = None, alpha: float = 0.9, beta: float = 0.9,
                 gamma: float | str = "auto", blocks_per_step: int = 1, version: str = "v2",
                 v_bound: float | None = 10.0, hessian_bound: float | None = 10.0,
                 generator: torch.Generator | None = None):
        if not isinstance(lower, Tensor) or lower.dim() != 2 or not lower.is_leaf \
                or not lower.is_floating_point():
            what = (f"a tensor with {lower.dim()} dimensions, leaf={lower.is_leaf}, "
                    f"dtype {lower.dtype}") if isinstance(lower, Tensor) else type(lower).__name__
            raise ValueError("lower must be a 2-D floating leaf tensor (m, dim_y), one row per "
                             f"lower-level problem, got {what}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if isinstance(upper_params, Tensor):
            upper_params = [upper_params]
        upper_params = list(upper_params)
        if not upper_params or not all(isinstance(p, Tensor) for p in upper_params):
            raise ValueError("upper_params must be a non-empty iterable of tensors")
        if any(p is lower for p in upper_params):
            raise ValueError("lower must not be one of upper_params")
        self.lower = lower
        self.version = version
        defaults = dict(lr=lr, lower_lr=lower_lr, v_lr=v_lr, alpha=alpha, beta=beta,
                        gamma=gamma, blocks_per_step=blocks_per_step, v_bound=v_bound,
                        hessian_bound=hessian_bound)
        # per block: the step of its last visit (0: never), and the blocks of the last step
        self._visits = {"last_visit": torch.zeros(lower.shape[0], dtype=torch.long),
                        "last_blocks": torch.zeros(0, dtype=torch.long)}
        self.block_state: dict[str, Tensor] = {}  # s, w, v or H, the previous y and v, step
        super().__init__(upper_params, defaults, generator=generator)

    def add_param_group(self, param_group: dict) -> None:
        """The upper parameters form the only group (BSVRB's update couples them)."""
        if self.param_groups:
            raise ValueError("BSVRB takes one param group, the upper_params")
        super().add_param_group(param_group)

    def _check_group(self, group: dict) -> None:
        m = self.lower.shape[0]
        group["lr"] = check_positive("lr", group["lr"])
        group["lower_lr"] = check_positive("lower_lr", group["lower_lr"])
        if group["v_lr"] is not None:
            group["v_lr"] = check_positive("v_lr", group["v_lr"])
        group["alpha"] = check_unit_interval("alpha", group["alpha"], include_zero=False)
        group["beta"] = check_unit_interval("beta", group["beta"], include_zero=False)
        if group["gamma"] != "auto":
            if not _is_real(group["gamma"]) or not math.isfinite(group["gamma"]) \
                    or group["gamma"] < 0:
                raise ValueError(f"gamma must be 'auto' or a finite number >= 0, "
                                 f"got {group['gamma']!r}")
            group["gamma"] = float(group["gamma"])
        check_int("blocks_per_step", group["blocks_per_step"])
        if group["blocks_per_step"] > m:
            raise ValueError(f"blocks_per_step must be an integer in 1..m = 1..{m}, "
                             f"got {group['blocks_per_step']!r}")
        group["v_bound"] = check_optional_positive("v_bound", group["v_bound"])
        group["hessian_bound"] = check_optional_positive("hessian_bound",
                                                         group["hessian_bound"])

    @staticmethod
    def msvr_gamma(alpha: float, blocks_per_step: int, m: int) -> float:
        r"""The theory's MSVR correction :math:`\gamma = (m - I) / (I (1 - \alpha))`, 0 when
        :math:`\alpha = 1` or :math:`I = m`."""
        if alpha == 1.0 or blocks_per_step == m:
            return 0.0
        return (m - blocks_per_step) / (blocks_per_step * (1.0 - alpha))

    # -- state dicts: the per-block state lives beside torch's (lower is not a param of the
    # group, and the visit counts are integers, which torch's loading would cast) -----------
    def _extra_state(self) -> dict:
        return {**super()._extra_state(),
                "blocks": {k: v.clone() for k, v in {**self._visits, **self.block_state}.items()}}

    def _load_extra_state(self, extra: dict) -> None:
        blocks = extra.get("blocks")
        if blocks is not None and tuple(blocks["last_visit"].shape) != (self.lower.shape[0],):
            raise ValueError(f"the state dict's blocks state has {blocks['last_visit'].shape[0]} "
                             f"blocks, lower has {self.lower.shape[0]}")
        super()._load_extra_state(extra)
        if blocks is not None:
            y = self.lower
            self._visits = {k: blocks[k].clone() for k in ("last_visit", "last_blocks")}
            self.block_state = {k: v.to(device=y.device, dtype=torch.float32 if k == "step"
                                        else y.dtype, copy=True)
                                for k, v in blocks.items() if k not in self._visits}

    def _lower_state(self) -> dict:
        state = self.block_state
        if not state:
            y = self.lower.detach()
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["previous"] = y.clone()
            state["s"] = torch.zeros_like(y)
            if self.version == "v2":
                state["v"] = torch.zeros_like(y)
                state["previous_v"] = torch.zeros_like(y)
                state["w"] = torch.zeros_like(y)
            elif self.version == "v1":
                state["H"] = y.new_zeros(*y.shape, y.shape[1])
            else:   # RSVRB: every block's estimators, H starting at the identity
                n = sum(p.numel() for p in self.param_groups[0]["params"])
                state["u"] = torch.zeros_like(y)
                state["q"] = y.new_zeros(y.shape[0], n)
                state["V"] = y.new_zeros(*y.shape, n)
                state["H"] = torch.eye(y.shape[1], dtype=y.dtype, device=y.device).repeat(
                    y.shape[0], 1, 1)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[Tensor], tuple[Callable, Callable]]) -> Tensor:
        """One BSVRB step; ``closure(blocks)`` returns the callables ``(f, g)`` of the sampled
        blocks (see the class docstring). Returns the mean upper objective of those blocks at
        the current point."""
        if not callable(closure):
            raise TypeError("BSVRB.step needs a closure: closure(blocks) -> (f, g)")
        group = self._checked_groups()[0]
        m, lower, v2 = self.lower.shape[0], self.lower, self.version == "v2"
        count = group["blocks_per_step"]
        alpha, beta = group["alpha"], group["beta"]
        gamma = self.msvr_gamma(alpha, count, m) if group["gamma"] == "auto" else group["gamma"]
        blocks = torch.randperm(m, generator=self.generator)[:count].sort().values
        pair = closure(blocks)
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(map(callable, pair))):
            raise TypeError("the closure must return a pair of callables (f, g), got "
                            f"{type(pair).__name__}")
        f, g = pair
        if self.version == "rsvrb":
            return self._rsvrb_step(group, blocks, f, g)
        state = self._lower_state()
        t = int(state["step"]) + 1  # counted once the oracles have run: bad f or g change nothing
        params = self.param_groups[0]["params"]
        uppers = [self.state[p] for p in params]
        index = blocks.to(lower.device)
        last_visit = self._visits["last_visit"][blocks]
        first = (last_visit == 0).to(lower.device)[:, None]

        def msvr(old: Tensor, new: Tensor, previous: Tensor | None) -> Tensor:
            if previous is None:
                return new
            mixed = (1 - alpha) * old + (alpha + gamma) * new - gamma * previous
            return torch.where(first.view(-1, *[1] * (new.dim() - 1)), new, mixed)

        now = block_oracles(f, g, params, lower[index], hessian=not v2)
        before = None
        if t > 1:
            before = block_oracles(f, g, [u["previous"] for u in uppers],
                                   state["previous"][index], hessian=not v2)
        state["step"] += 1
        s = msvr(state["s"][index], now.grad_y_g, None if before is None else before.grad_y_g)
        if v2:
            v_now = state["v"][index]
            hvp, G = now.products(v_now)
            residual = hvp - now.grad_y_f
            if before is not None:
                hvp_b, G_before = before.products(state["previous_v"][index])
                w = msvr(state["w"][index], residual, hvp_b - before.grad_y_f)
            else:
                w = residual
        else:
            H = _floor_frobenius(msvr(state["H"][index], now.hess_yy_g,
                                      None if before is None else before.hess_yy_g),
                                 group["hessian_bound"])
            # one factorization for both points (torch.linalg.solve is ~1000x slower on tiny
            # batched systems on CPU)
            factors = torch.linalg.lu_factor(H)

            def solve(b: Tensor) -> Tensor:
                return torch.linalg.lu_solve(*factors, b[..., None])[..., 0]
            _, G = now.products(solve(now.grad_y_f))
            if before is not None:
                _, G_before = before.products(solve(before.grad_y_f))
            state["H"][index] = H
        state["s"][index] = s

        # the previous point of the next step: the rows that moved in the last step catch up
        if v2:
            moved = self._visits["last_blocks"].to(lower.device)
            state["previous"][moved] = lower.detach()[moved]
            state["previous_v"][moved] = state["v"][moved]
        else:
            state["previous"].copy_(lower.detach())
        catch_up = (t - last_visit).to(lower.dtype).to(lower.device)[:, None]
        self._visits["last_visit"][blocks] = t
        self._visits["last_blocks"] = blocks
        if v2:
            v_lr = group["v_lr"] if group["v_lr"] is not None else group["lower_lr"]
            state["w"][index] = w
            lower[index] = lower[index] - group["lower_lr"] * catch_up * s
            state["v"][index] = _project_ball(v_now - v_lr * catch_up * w, group["v_bound"])
        else:
            lower.sub_(group["lower_lr"] * state["s"])
        for i, (p, u, G_p) in enumerate(zip(params, uppers, G)):
            if not u:
                u["z"] = G_p.clone()
            else:
                u["z"] = G_p + (1 - beta) * (u["z"] - G_before[i])
            u["previous"] = p.detach().clone()
            p.sub_(group["lr"] * u["z"])
        return now.f.mean()

    def _rsvrb_step(self, group: dict, blocks: Tensor, f: Callable, g: Callable) -> Tensor:
        """One step of the RSVRB baseline (see BSVRB's docstring, ``version="rsvrb"``)."""
        lower, m = self.lower, self.lower.shape[0]
        count, beta = group["blocks_per_step"], group["beta"]
        # the blocks whose estimators G reads: a second, independent sample (the authors' task_bat2)
        readers = torch.randperm(m, generator=self.generator)[:count].sort().values.to(lower.device)
        state = self._lower_state()
        t = int(state["step"]) + 1
        params = self.param_groups[0]["params"]
        uppers = [self.state[p] for p in params]
        index = blocks.to(lower.device)
        now = block_oracles(f, g, params, lower[index], hessian=True, per_block_x=True)
        before = now if t == 1 else block_oracles(
            f, g, [u["previous"] for u in uppers], state["previous"][index], hessian=True,
            per_block_x=True)
        state["step"] += 1
        scale = m / count

        def hypergradient() -> Tensor:
            H, V, u, q = (state[k][readers] for k in ("H", "V", "u", "q"))
            solved = torch.linalg.lu_solve(*torch.linalg.lu_factor(H), u[..., None])
            return (q - (V.transpose(1, 2) @ solved)[..., 0]).mean(0)

        G_before = hypergradient()
        pairs = {"s": (now.grad_y_g, before.grad_y_g), "u": (now.grad_y_f, before.grad_y_f),
                 "q": (now.per_block_x[0], before.per_block_x[0]),
                 "V": (now.per_block_x[1], before.per_block_x[1]),
                 "H": (now.hess_yy_g, before.hess_yy_g)}
        for name, (new, old) in pairs.items():
            sampled = (1 - beta) * (state[name][index] - scale * old) + scale * new
            if name == "H":
                sampled = _floor_frobenius(sampled, group["hessian_bound"])
            state[name].mul_(1 - beta)
            state[name][index] = sampled
        G = hypergradient()
        state["previous"].copy_(lower.detach())
        lower.sub_(group["lower_lr"] * state["s"])
        offset = 0
        for p, u in zip(params, uppers):
            n = p.numel()
            G_p, G_b = G[offset:offset + n].view_as(p), G_before[offset:offset + n].view_as(p)
            offset += n
            u["z"] = G_p.clone() if not u else G_p + (1 - beta) * (u["z"] - G_b)
            u["previous"] = p.detach().clone()
            p.sub_(group["lr"] * u["z"])
        return now.f.mean()


# -- registry record ---------------------------------------------------------------------------
def _quadratic_problem(dtype=torch.float64, m=3, dim_x=2, dim_y=2, seed=0):
    """Quadratic blocks g_i = 0.5 y^T A_i y - y^T B_i x, f_i = 0.5 ||y - c_i||^2."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(m, dim_y, dim_y, generator=gen, dtype=dtype)
    A = q @ q.transpose(1, 2) / dim_y + torch.eye(dim_y, dtype=dtype)
    B = torch.randn(m, dim_y, dim_x, generator=gen, dtype=dtype)
    c = torch.randn(m, dim_y, generator=gen, dtype=dtype)

    def closure(blocks):
        a, b, cc = A[blocks], B[blocks], c[blocks]

        def g(x, y):
            return 0.5 * torch.einsum("ij,ijk,ik->i", y, a, y) - torch.einsum(
                "ij,ijk,k->i", y, b, x[0])

        def f(x, y):
            return 0.5 * ((y - cc) ** 2).sum(1)
        return f, g
    return A, B, c, closure


def _conformance_problem():
    """(upper, lower) and a closure for the conformance suite: 3 quadratic blocks."""
    *_, closure = _quadratic_problem()
    upper = [torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))]
    lower = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    return (upper, lower), closure


register(AlgorithmInfo(
    name="BSVRB",
    cls=BSVRB,
    kind="optimizer",
    paper="Hu, Qiu, Guo, Zhang, Yang, ICML 2023 (BSVRB; code quanqihu/BSVRB_ICML2023)",
    default_kwargs=dict(lr=0.1, lower_lr=0.2, blocks_per_step=2),
    requires=frozenset({"blocks"}),
    problem=_conformance_problem,
    stochastic=True,
    invalid_kwargs=(
        (dict(lr=0.0), ValueError, "lr"),
        (dict(lower_lr=-1.0), ValueError, "lower_lr"),
        (dict(v_lr=0.0), ValueError, "v_lr"),
        (dict(alpha=0.0), ValueError, "alpha"),
        (dict(beta=1.5), ValueError, "beta"),
        (dict(gamma=-1.0), ValueError, "gamma"),
        (dict(blocks_per_step=0), ValueError, "blocks_per_step"),
        (dict(blocks_per_step=99), ValueError, "blocks_per_step"),
        (dict(version="v3"), ValueError, "version"),
        (dict(v_bound=0.0), ValueError, "v_bound"),
        (dict(hessian_bound=-1.0), ValueError, "hessian_bound"),
        (dict(momentum=0.9), TypeError, "momentum"),
    ),
))
register(AlgorithmInfo(
    name="BSVRB-v1",
    cls=BSVRB,
    kind="optimizer",
    paper="Hu, Qiu, Guo, Zhang, Yang, ICML 2023 (BSVRB-v1; code quanqihu/BSVRB_ICML2023)",
    default_kwargs=dict(lr=0.1, lower_lr=0.2, blocks_per_step=2, version="v1"),
    requires=frozenset({"blocks"}),
    problem=_conformance_problem,
    stochastic=True,
    invalid_kwargs=((dict(hessian_bound=0.0), ValueError, "hessian_bound"),),
))
register(AlgorithmInfo(
    name="RSVRB",
    cls=BSVRB,
    kind="optimizer",
    paper="Guo, Hu, Zhang, Yang, arXiv:2105.02266 (RSVRB, as in quanqihu/BSVRB_ICML2023)",
    default_kwargs=dict(lr=0.1, lower_lr=0.2, blocks_per_step=2, version="rsvrb"),
    requires=frozenset({"blocks"}),
    problem=_conformance_problem,
    stochastic=True,
    invalid_kwargs=((dict(beta=0.0), ValueError, "beta"),),
))

