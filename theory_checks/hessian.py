"""Hessian spectra of any scalar loss: Hutchinson trace, Lanczos eigenvalues, SLQ density.

Every function here works on a *functional* loss, ``loss_fn(params) -> scalar``, where
``params`` is a list of tensors and ``loss_fn`` maps any list of tensors shaped like it to a
scalar tensor (the form ``torch.func`` needs). :func:`loss_from_model` builds one from a
``(model, criterion, data)`` triple with :func:`torch.func.functional_call`; a closure with a
regularizer, a physics residual or any other scalar works just as well.

``params`` are plain tensors: they are detached and differentiated afresh, so their
``requires_grad`` flag is irrelevant and nothing is written to any ``.grad``. They must be
floating point. Which of a model's parameters count is decided by :func:`loss_from_model`
(those with ``requires_grad=True``).

How the Hessian-vector products are computed (measured on one CPU thread, MLPs of 20k and
270k parameters, batch 512, see ``python -m benchmarks hessian``): the fastest way to apply
H to many vectors at one point is to build the first-order gradient graph once
(``create_graph=True``) and back-propagate through it for each vector (reverse-over-reverse,
``retain_graph=True``). ``torch.func`` forward-over-reverse (``jvp(grad)``, the
:func:`stepping.oracles.hvp` oracle) redoes the forward and backward pass on every call, and
vmapping it over probes was 1.0x--1.3x slower than the loop over the retained graph;
``torch.func.linearize`` saves the forward pass but its tracing cost (~0.2 s) did not pay off for
20--100 products. The ``method="vmap"`` option keeps the oracle route (it holds no graph
between calls and works where the loss cannot keep a create-graph graph alive).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from stochstep.stepping.checks import check_int
from stochstep.stepping.noise import make_generator
from stochstep.stepping.oracles import hvp as _oracle_hvp

__all__ = ["HessianOperator", "HessianTrace", "SpectralDensity", "hessian_trace", "loss_from_model",
           "rademacher", "spectral_density", "top_eigenvalues"]

LossFn = Callable[[list[Tensor]], Tensor]


class HessianTrace(NamedTuple):
    """A Hutchinson trace estimate and its standard error (``nan`` for a single probe)."""

    estimate: float
    stderr: float


class SpectralDensity(NamedTuple):
    """SLQ output: per-run Ritz ``nodes`` and ``weights`` (shape ``(runs, iters)``, each row of
    weights sums to 1), and the Gaussian-smoothed ``density`` on ``grid`` (integrates to 1)."""

    nodes: Tensor
    weights: Tensor
    grid: Tensor
    density: Tensor


# ----------------------------------------------------------------------------- validation

def _check_params(params, dtype: torch.dtype | None) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise ValueError("params must be a list or tuple of tensors, got a single Tensor "
                         "(wrap it: [x])")
    try:
        params = list(params)
    except TypeError:
        raise ValueError(f"params must be a list or tuple of tensors, "
                         f"got {type(params).__name__}") from None
    if not params:
        raise ValueError("params must hold at least one tensor, got an empty sequence")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"params[{i}] must be a tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise ValueError(f"params[{i}] must be floating point, got {p.dtype}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point dtype or None, got {dtype!r}")
    return [p.detach().to(dtype) if dtype is not None else p.detach() for p in params]


def _check_loss(loss_fn, params: list[Tensor]) -> None:
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    with torch.no_grad():
        value = loss_fn(list(params))
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    if not value.is_floating_point():
        raise ValueError(f"loss_fn must return a floating-point scalar, got {value.dtype}")



# ----------------------------------------------------------------------------- HVP engine

class HessianOperator:
    """Products ``H v`` at one point, with ``v`` and ``H v`` as flat vectors (``.n`` entries;
    ``.split`` turns a flat vector back into tensors shaped like the params).

    ``method="autograd"`` builds the gradient graph once and back-propagates through it for every
    vector; ``method="vmap"`` calls the :func:`stepping.oracles.hvp` oracle (``jvp(grad)``).
    """

    def __init__(self, loss_fn: LossFn, params: list[Tensor], method: str):
        if method not in ("autograd", "vmap"):
            raise ValueError(f"method must be 'autograd' or 'vmap', got {method!r}")
        self.loss_fn, self.params, self.method = loss_fn, params, method
        self.shapes = [p.shape for p in params]
        self.sizes = [p.numel() for p in params]
        self.n = sum(self.sizes)
        self.dtype, self.device = params[0].dtype, params[0].device
        if any(p.dtype != self.dtype for p in params):
            raise ValueError("params must share one dtype (pass dtype= to convert them)")
        if method == "autograd":
            self.xs = [p.clone().requires_grad_(True) for p in params]
            with torch.enable_grad():
                value = loss_fn(list(self.xs)).reshape(())
                grads = torch.autograd.grad(value, self.xs, create_graph=True, allow_unused=True)
            missing = [i for i, g in enumerate(grads) if g is None or not g.requires_grad]
            self.grads = list(grads)
            self.keep = [i for i in range(len(grads)) if i not in missing]
            if not self.keep:  # the loss is at most linear in params: H = 0
                self.grads = None

    def split(self, flat: Tensor) -> list[Tensor]:
        """Views of a flat ``(..., n)`` vector shaped like params (batch dimensions first)."""
        lead = flat.shape[:-1]
        return [c.view(*lead, *s) for c, s in zip(flat.split(self.sizes, dim=-1), self.shapes)]

    def _flat(self, parts: Sequence[Tensor | None], lead: tuple) -> Tensor:
        if all(part is not None for part in parts):  # one concatenation, no zero fill
            return torch.cat([part.reshape(*lead, -1) for part in parts], dim=-1)
        out = torch.zeros(*lead, self.n, dtype=self.dtype, device=self.device)
        for chunk, part in zip(out.split(self.sizes, dim=-1), parts):
            if part is not None:
                chunk.copy_(part.reshape(*lead, -1))
        return out

    def __call__(self, v: Tensor) -> Tensor:
        """``H v`` for a flat ``(n,)`` vector, or row-wise for a ``(b, n)`` block."""
        lead = tuple(v.shape[:-1])
        vs = self.split(v)
        if self.method == "vmap":
            def one(*parts):
                return tuple(_oracle_hvp(self.loss_fn, self.params, list(parts)))
            parts = vmap(one)(*vs) if lead else one(*vs)
            return self._flat(parts, lead)
        if self.grads is None:
            return torch.zeros_like(v)
        outs = torch.autograd.grad([self.grads[i] for i in self.keep], self.xs,
                                   grad_outputs=[vs[i] for i in self.keep], retain_graph=True,
                                   allow_unused=True, is_grads_batched=bool(lead))
        return self._flat(outs, lead)


def rademacher(shape: tuple, generator: torch.Generator, dtype, device) -> Tensor:
    """Independent +-1 entries with probability 1/2 each (Hutchinson's probes)."""
    z = torch.randint(0, 2, shape, generator=generator, device=generator.device,
                      dtype=torch.int8)
    return z.to(device=device, dtype=dtype).mul_(2).sub_(1)


# ----------------------------------------------------------------------------- trace

def hessian_trace(loss_fn: LossFn, params: Sequence[Tensor], *, probes: int = 100,
                  generator: torch.Generator | None = None, batch_size: int = 1,
                  method: str = "autograd", dtype: torch.dtype | None = None,
                  progress: bool = False) -> HessianTrace:
    r"""Hutchinson estimate of the Hessian trace of ``loss_fn`` at ``params``, with its s.e.

    .. math::

        \operatorname{tr} H \approx \frac1m \sum_{i=1}^m z_i^\top H z_i, \qquad
        z_i \in \{-1, +1\}^n \text{ i.i.d. Rademacher}, \qquad
        \mathrm{s.e.} = \frac{s_z}{\sqrt m},

    where :math:`s_z` is the sample standard deviation of the :math:`z_i^\top H z_i`. Unbiased;
    Rademacher probes give the smallest variance among i.i.d. probes,
    :math:`2\sum_{j\neq k} H_{jk}^2`. All ``probes`` are used (no early stop).

    Args:
        loss_fn: ``loss_fn(list_of_tensors) -> scalar tensor``, twice differentiable.
        params: the point, a list of floating-point tensors (detached; ``requires_grad`` is
            ignored).
        probes: number of probe vectors, >= 1 (the s.e. is ``nan`` for 1).
        generator: source of the probes (if None, one seeded from torch's global RNG).
        batch_size: probes per batched HVP call (``is_grads_batched`` / ``vmap``); 1 loops.
        method: ``"autograd"`` (reverse-over-reverse through one retained gradient graph,
            the faster one) or ``"vmap"`` (``jvp(grad)`` oracle vmapped over probes).
        dtype: convert params to this dtype first (e.g. ``torch.float64``); the loss must
            accept it (:func:`loss_from_model` casts its data to match).
        progress: show a tqdm bar over probes.

    Returns:
        ``HessianTrace(estimate, stderr)`` as Python floats.

    References:
        M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines", Comm. Stat. Simul. Comput. 18 (1989).
        Z. Yao, A. Gholami, K. Keutzer, M. Mahoney, "PyHessian: Neural networks through the
        lens of the Hessian", arXiv:1912.07145.

    Example:
        >>> loss = lambda ps: (ps[0] ** 2 * torch.tensor([1.0, 2.0, 3.0])).sum()  # H: 2, 4, 6
        >>> est, se = hessian_trace(loss, [torch.zeros(3)], probes=4,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> round(est, 6), se
        (12.0, 0.0)
    """
    params = _check_params(params, dtype)
    probes = check_int("probes", probes, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    _check_loss(loss_fn, params)
    generator = make_generator(generator)
    op = HessianOperator(loss_fn, params, method)
    samples = torch.empty(probes, dtype=torch.float64)
    bar = tqdm(total=probes, desc="hutchinson", disable=not progress)
    done = 0
    while done < probes:
        b = min(batch_size, probes - done)
        z = rademacher((b, op.n), generator, op.dtype, op.device)
        if batch_size > 1:
            samples[done:done + b] = (op(z) * z).sum(-1).to(torch.float64).cpu()
        else:
            samples[done] = torch.dot(op(z[0]), z[0]).item()
        done += b
        bar.update(b)
    bar.close()
    mean = samples.mean().item()
    stderr = (samples.std(correction=1).item() / math.sqrt(probes)) if probes > 1 else math.nan
    return HessianTrace(mean, stderr)


# ----------------------------------------------------------------------------- Lanczos

def _lanczos(op: HessianOperator, q0: Tensor, iters: int, generator: torch.Generator, bar
             ) -> tuple[Tensor, Tensor]:
    """``iters`` Lanczos steps from ``q0`` with full reorthogonalization.

    Returns the tridiagonal ``T`` (float64, ``(m, m)``) and the basis ``Q`` (``(m, n)``). On
    breakdown (an invariant subspace) the next vector is a fresh random one orthogonal to ``Q``
    and the off-diagonal entry is 0, so ``T`` stays exact block by block.
    """
    n = op.n
    m = min(iters, n)
    Q = torch.zeros(m, n, dtype=op.dtype, device=op.device)
    alpha = torch.zeros(m, dtype=torch.float64)
    beta = torch.zeros(max(m - 1, 0), dtype=torch.float64)
    q = q0 / q0.norm()
    for j in range(m):
        Q[j] = q
        w = op(q)
        alpha[j] = torch.dot(w, q).item()
        if j == m - 1:
            bar.update(1)
            break
        # full reorthogonalization, twice (classical Gram-Schmidt "twice is enough")
        basis = Q[: j + 1]
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        b = w.norm().item()
        scale = max(abs(alpha[: j + 1]).max().item(), 1.0)
        tol = (1e-10 if op.dtype == torch.float64 else 1e-5) * scale
        if b <= tol:
            b_next = 0.0
            floor = 1e-8 if op.dtype == torch.float64 else 1e-3
            while b_next <= floor:  # a Gaussian start has a component outside span(Q) a.s.
                w = torch.randn(n, generator=generator, dtype=op.dtype,
                                device=generator.device).to(op.device)
                w = w / w.norm()
                for _ in range(2):
                    w = w - basis.T @ (basis @ w)
                b_next = w.norm().item()
            beta[j] = 0.0
            q = w / b_next
        else:
            beta[j] = b
            q = w / b
        bar.update(1)
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    return T, Q


def top_eigenvalues(loss_fn: LossFn, params: Sequence[Tensor], *, k: int = 1,
                    which: str = "largest", iters: int = 20,
                    generator: torch.Generator | None = None, method: str = "autograd",
                    dtype: torch.dtype | None = None, eigenvectors: bool = False,
                    progress: bool = False):
    r"""The ``k`` largest (or smallest) algebraic Hessian eigenvalues by Lanczos.

    .. math::

        Q_m = [q_1, \dots, q_m] \text{ orthonormal basis of }
        \mathcal K_m(H, q_1) = \operatorname{span}\{q_1, Hq_1, \dots, H^{m-1}q_1\},\quad
        T_m = Q_m^\top H Q_m \text{ tridiagonal},\quad
        \lambda_i(H) \approx \theta_i = \lambda_i(T_m),

    with :math:`Q_m` reorthogonalized in full at every step (so no ghost copies of converged
    eigenvalues) and :math:`q_1` a random Rademacher vector. Extreme Ritz values converge
    first, at a rate set by the relative gap, much faster than power iteration (which also
    targets the largest *magnitude*, not the largest algebraic eigenvalue). ``iters`` is capped
    at the parameter count ``n``, where the Krylov space is all of :math:`\mathbb R^n` and the
    result is exact. Uses one HVP per iteration.

    Args:
        loss_fn: ``loss_fn(list_of_tensors) -> scalar tensor``.
        params: the point, a list of floating-point tensors (detached).
        k: number of eigenvalues, 1 <= k <= min(iters, n).
        which: ``"largest"`` (algebraic, returned in decreasing order) or ``"smallest"``
            (algebraic, increasing order).
        iters: Lanczos steps (HVPs), >= k.
        generator: source of the start vector (if None, one seeded from torch's global RNG).
        method: HVP route, ``"autograd"`` (retained graph, default) or ``"vmap"``.
        dtype: convert params first (``torch.float64`` for near machine-precision Ritz values).
        eigenvectors: also return the Ritz vectors, each a list shaped like ``params``.
        progress: tqdm bar over iterations.

    Returns:
        A float64 tensor of ``k`` eigenvalues, or ``(eigenvalues, vectors)`` with
        ``eigenvectors=True``.

    References:
        C. Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
        differential and integral operators", J. Res. Nat. Bur. Standards 45 (1950).
        Z. Yao et al., PyHessian, arXiv:1912.07145 (power iteration baseline).

    Example:
        >>> loss = lambda ps: 0.5 * (ps[0] ** 2 * torch.tensor([1.0, -4.0, 2.0])).sum()
        >>> g = torch.Generator().manual_seed(0)
        >>> top_eigenvalues(loss, [torch.zeros(3)], k=2, generator=g).round(decimals=4)
        tensor([2., 1.], dtype=torch.float64)
        >>> top_eigenvalues(loss, [torch.zeros(3)], which="smallest", generator=g).round(decimals=4)
        tensor([-4.], dtype=torch.float64)
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    params = _check_params(params, dtype)
    k = check_int("k", k, 1)
    iters = check_int("iters", iters, 1)
    n = sum(p.numel() for p in params)
    if k > n:
        raise ValueError(f"k must be <= the number of parameters ({n}), got {k}")
    if k > iters:
        raise ValueError(f"k must be <= iters ({iters}), got {k}")
    _check_loss(loss_fn, params)
    generator = make_generator(generator)
    op = HessianOperator(loss_fn, params, method)
    bar = tqdm(total=min(iters, n), desc="lanczos", disable=not progress)
    q0 = rademacher((n,), generator, op.dtype, op.device)
    T, Q = _lanczos(op, q0, iters, generator, bar)
    bar.close()
    theta, S = torch.linalg.eigh(T)
    idx = torch.arange(k) if which == "smallest" else torch.arange(len(theta) - 1,
                                                                   len(theta) - 1 - k, -1)
    values = theta[idx]
    if not eigenvectors:
        return values
    vecs = (S[:, idx].T.to(Q.dtype) @ Q)
    return values, [op.split(v) for v in vecs]


# ----------------------------------------------------------------------------- SLQ

def spectral_density(loss_fn: LossFn, params: Sequence[Tensor], *, iters: int = 100,
                     runs: int = 1, generator: torch.Generator | None = None,
                     grid_points: int = 1000, sigma: float | None = None,
                     method: str = "autograd", dtype: torch.dtype | None = None,
                     progress: bool = False) -> SpectralDensity:
    r"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    .. math::

        \phi(t) = \frac1n \sum_{i=1}^n \delta(t - \lambda_i)
        \approx \frac1{R} \sum_{r=1}^{R} \sum_{j=1}^{m}
        \tau_j^{(r)} \, g_\sigma(t - \theta_j^{(r)}),
        \qquad \tau_j^{(r)} = \big(e_1^\top s_j^{(r)}\big)^2,

    where :math:`T^{(r)} = S\,\mathrm{diag}(\theta)\,S^\top` is the Lanczos tridiagonal matrix
    started from a normalized Rademacher vector :math:`v_r/\sqrt n` (the Gauss quadrature rule
    for :math:`v_r^\top f(H) v_r / n`) and :math:`g_\sigma` a Gaussian kernel. The weights of
    each run sum to 1 and :math:`\sum_j \tau_j \theta_j = v^\top H v / n`, a Hutchinson
    estimate of :math:`\operatorname{tr} H / n`.

    Args:
        loss_fn: ``loss_fn(list_of_tensors) -> scalar tensor``.
        params: the point, a list of floating-point tensors (detached).
        iters: Lanczos steps per run (quadrature nodes), >= 1, capped at ``n``.
        runs: independent start vectors, >= 1.
        generator: source of the start vectors (if None, one seeded from torch's global RNG).
        grid_points: points of the evaluation grid, >= 2. The grid spans the nodes plus
            5 sigma on each side.
        sigma: kernel width; default 1% of the node range (or 1e-3 for a one-point spectrum).
        method: HVP route, ``"autograd"`` (default) or ``"vmap"``.
        dtype: convert params first.
        progress: tqdm bar over all Lanczos steps.

    Returns:
        ``SpectralDensity(nodes, weights, grid, density)``, float64; ``density`` is normalized
        to integrate to 1 on ``grid`` (trapezoid rule).

    References:
        S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
        quadrature", SIAM J. Matrix Anal. Appl. 38 (2017).
        Z. Yao et al., PyHessian, arXiv:1912.07145.

    Example:
        >>> loss = lambda ps: 0.5 * (ps[0] ** 2 * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum()
        >>> sd = spectral_density(loss, [torch.zeros(4)], iters=4,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> sd.nodes
        tensor([[1.0000, 2.0000, 3.0000, 4.0000]], dtype=torch.float64)
        >>> round(torch.trapezoid(sd.density, sd.grid).item(), 6)
        1.0
    """
    params = _check_params(params, dtype)
    iters = check_int("iters", iters, 1)
    runs = check_int("runs", runs, 1)
    grid_points = check_int("grid_points", grid_points, 2)
    if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number or None, got {sigma!r}")
    _check_loss(loss_fn, params)
    generator = make_generator(generator)
    op = HessianOperator(loss_fn, params, method)
    m = min(iters, op.n)
    bar = tqdm(total=runs * m, desc="slq", disable=not progress)
    nodes = torch.empty(runs, m, dtype=torch.float64)
    weights = torch.empty(runs, m, dtype=torch.float64)
    for r in range(runs):
        v = rademacher((op.n,), generator, op.dtype, op.device)
        T, _ = _lanczos(op, v, m, generator, bar)
        theta, S = torch.linalg.eigh(T)
        nodes[r], weights[r] = theta, S[0] ** 2
    bar.close()
    lo, hi = nodes.min().item(), nodes.max().item()
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_points, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((grid[:, None] - nodes.reshape(1, -1)) / sigma) ** 2)
    density = kernel @ weights.reshape(-1) / (runs * sigma * math.sqrt(2 * math.pi))
    density = density / torch.trapezoid(density, grid)
    return SpectralDensity(nodes, weights, grid, density)


# ----------------------------------------------------------------------------- model helper

def loss_from_model(model: torch.nn.Module, criterion: Callable[[Tensor, Tensor], Tensor],
                    data) -> tuple[LossFn, list[Tensor]]:
    r"""A functional ``loss_fn`` and its ``params`` from a model, a criterion and data.

    .. math::

        L(\theta) = \frac{\sum_b |B_b| \, \ell(f_\theta(x_b), y_b)}{\sum_b |B_b|},

    the mini-batch losses weighted by batch size (the full-data mean when ``criterion``
    averages over its batch), evaluated with :func:`torch.func.functional_call` so that the
    model itself is never modified.

    Args:
        model: the network. Parameters with ``requires_grad=True`` are the Hessian's variables
            (in ``model.parameters()`` order); frozen ones and buffers are held fixed. Put it in
            the mode you want (``model.eval()`` for BatchNorm/Dropout); it is not changed.
        criterion: ``criterion(model(inputs), targets) -> scalar``.
        data: one batch ``(inputs, targets)``, or an iterable of such batches (a list, or a
            ``DataLoader`` which is iterated on every evaluation: do not shuffle it).
            Floating-point tensors of the data, buffers and frozen parameters are cast to the
            dtype of the params passed in, so ``dtype=torch.float64`` works downstream.

    Returns:
        ``(loss_fn, params)``: ``params`` are detached copies of the trainable parameters.

    References:
        Z. Yao et al., PyHessian, arXiv:1912.07145 (same batch weighting for its dataloader).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 1)
        >>> loss_fn, params = loss_from_model(model, torch.nn.MSELoss(), (x, y))
        >>> [tuple(p.shape) for p in params]
        [(1, 3), (1,)]
        >>> torch.allclose(loss_fn(params), torch.nn.MSELoss()(model(x), y))
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(criterion):
        raise ValueError(f"criterion must be callable, got {type(criterion).__name__}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no parameter with requires_grad=True: nothing to "
                         "differentiate (unfreeze the parameters the Hessian is over)")
    names = [name for name, _ in named]
    constants = {name: t.detach() for name, t in model.named_parameters() if not t.requires_grad}
    constants.update({name: b for name, b in model.named_buffers()})
    single = isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, Tensor) for t in data)
    if not single:
        if isinstance(data, Tensor) or not isinstance(data, Iterable):
            raise ValueError("data must be a batch (inputs, targets) or an iterable of batches")
        if isinstance(data, (list, tuple)) and not data:
            raise ValueError("data must hold at least one batch, got an empty sequence")

    def cast(t, dtype):
        return t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t

    def batch_loss(ps: list[Tensor], inputs, targets) -> Tensor:
        dtype = ps[0].dtype
        state = {name: cast(t, dtype) for name, t in constants.items()}
        state.update(zip(names, ps))
        out = functional_call(model, state, (cast(inputs, dtype),))
        return criterion(out, cast(targets, dtype)).reshape(())

    def loss_fn(ps: list[Tensor]) -> Tensor:
        ps = list(ps)
        if single:
            return batch_loss(ps, *data)
        total, count = None, 0
        for inputs, targets in data:
            b = inputs.shape[0]
            term = batch_loss(ps, inputs, targets) * b
            total = term if total is None else total + term
            count += b
        if total is None:
            raise ValueError("data yielded no batches")
        return total / count

    return loss_fn, [p.detach().clone() for _, p in named]
