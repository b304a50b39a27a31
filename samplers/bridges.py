r"""Light Schrödinger bridges (Korotin, Gushchin, Burnaev, ICLR 2024, arXiv 2310.01174).

The Schrödinger bridge with Brownian reference :math:`\sqrt{\epsilon}\,W` between
:math:`p_0` and :math:`p_1` has the entropic-OT plan
:math:`\pi(y \mid x) \propto \exp(\langle x, y\rangle / \epsilon)\, v(y)` for a potential
:math:`v`. :class:`LightSB` takes :math:`v` a Gaussian mixture with diagonal covariances, for
which the plan, its normalizer :math:`c(x)` and the bridge's drift are in closed form; it is
trained from samples by a loss that needs no simulation, and its trajectories run on
:func:`stepping.integrate`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stochstep.stepping.checks import check_flag, check_int, check_optional_positive, \
    check_positive
from stochstep.stepping.grids import uniform
from stochstep.stepping.integrate import Solution, integrate
from stochstep.stepping.noise import Brownian, make_generator, require_noise, \
    standard_normal_like
from stochstep.stepping.registry import AlgorithmInfo, register

__all__ = ["BridgeSDE", "LightSB", "PlanComponents"]

# Adam's learning rate per eps in the paper's mixture-benchmark runs (Appendix, and the code).
_PAPER_LR = {0.1: 1e-3, 1.0: 3e-3, 10.0: 6e-2}


def _default_lr(eps: float) -> float:
    """The paper's rate for the nearest of its eps (in log scale)."""
    nearest = min(_PAPER_LR, key=lambda e: abs(math.log(e / eps)))
    return _PAPER_LR[nearest]


class PlanComponents(tuple):
    """The conditional plan at a batch of inputs as a Gaussian mixture: ``weights`` (n, K)
    summing to 1 over K, ``means`` (n, K, D), ``variances`` (K, D) (diagonal covariances)."""

    __slots__ = ()

    def __new__(cls, weights: Tensor, means: Tensor, variances: Tensor):
        return super().__new__(cls, (weights, means, variances))

    weights = property(lambda self: self[0])
    means = property(lambda self: self[1])
    variances = property(lambda self: self[2])


class BridgeSDE:
    r"""The Schrödinger bridge's SDE :math:`dX = g(X, t)\,dt + \sqrt{\epsilon}\,dW` on
    :math:`t \in [0, 1]`, by Euler--Maruyama: with :math:`h = t_1 - t_0 > 0` and
    :math:`\xi \sim N(0, I)`,

    .. math::
        x \leftarrow x + h\, g(x, t_0) + \sqrt{\epsilon h}\;\xi .

    The noise is additive, so the strong order is 1. The drift is evaluated at each step's
    start, so never at :math:`t = 1`, where a bridge's drift is singular. Time runs forward
    only: a bridge from :math:`p_0` to :math:`p_1` has no reverse-time form here.

    Args:
        drift: ``drift(x, t) -> tensor shaped like x``, e.g. :meth:`LightSB.drift`; ``t`` is a
            float.
        eps: :math:`\epsilon > 0`, the variance of the reference Brownian motion per unit time.

    References:
        Korotin, Gushchin, Burnaev, "Light Schrödinger Bridge", ICLR 2024, arXiv 2310.01174.

    Example:
        >>> from stochstep.stepping import Brownian, integrate, uniform
        >>> # g = 0: Brownian motion, variance eps at t = 1
        >>> sde = BridgeSDE(lambda x, t: torch.zeros_like(x), eps=0.5)
        >>> x = integrate(sde, torch.zeros(4000, 1), uniform(0.0, 1.0, 20),
        ...               noise=Brownian(torch.Generator().manual_seed(0)))
        >>> bool(abs(x.var() - 0.5) < 0.05)
        True
    """

    order = 1.0
    strong_order = 1.0  # additive noise

    def __init__(self, drift, eps: float):
        if not callable(drift):
            raise ValueError(f"drift must be callable as drift(x, t), got "
                             f"{type(drift).__name__}")
        self.drift, self.eps = drift, check_positive("eps", eps)

    def step_(self, x: Tensor, t0: float, t1: float, noise) -> None:
        if not 0 <= t0 < t1 <= 1:
            raise ValueError(f"the grid must increase within [0, 1] (the bridge's time runs "
                             f"forward), got a step {t0} -> {t1}")
        h = t1 - t0
        xi = require_noise(noise, "BridgeSDE").standard_normal(x)
        g = self.drift(x, t0)
        if not isinstance(g, Tensor) or g.shape != x.shape:
            raise ValueError(f"drift must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}")
        x.add_(g.to(x.dtype), alpha=h).add_(xi, alpha=math.sqrt(self.eps * h))


class LightSB(nn.Module):
    r"""Light Schrödinger bridge: a Gaussian-mixture potential with a closed-form plan.

    With weights :math:`a_k = e^{\ell_k}`, means :math:`r_k` and diagonal
    :math:`S_k = \mathrm{diag}(e^{\sigma_k})`, :math:`k = 1..K`:

    .. math::

        v(y) = \sum_k a_k\, N(y \mid r_k, \epsilon S_k), \qquad
        c(x) = \sum_k a_k \exp\Big(\frac{x^\top S_k x + 2 r_k^\top x}{2\epsilon}\Big),

        \pi(y \mid x) = \sum_k w_k(x)\, N(y \mid r_k + S_k x, \epsilon S_k), \qquad
        w_k(x) = \frac{a_k}{c(x)} \exp\Big(\frac{x^\top S_k x + 2 r_k^\top x}{2\epsilon}\Big),

        \mathcal{L} = \mathbb{E}_{p_0} \log c(x_0) - \mathbb{E}_{p_1} \log v(x_1)
        \;(= \mathrm{KL}(\pi^* \,\|\, \pi) + \text{const}).

    The bridge :math:`dX_t = g(X_t, t)\,dt + \sqrt{\epsilon}\,dW_t` from :math:`X_0 = x` ends
    with law :math:`\pi(\cdot \mid x)`; its drift, with
    :math:`A_k = \frac{t}{\epsilon(1 - t)} I + (\epsilon S_k)^{-1}` and
    :math:`c_k = \frac{x}{\epsilon(1 - t)} + (\epsilon S_k)^{-1} r_k`, is

    .. math::

        g(x, t) = -\frac{x}{1 - t} + \epsilon \nabla_x \log \sum_k e^{l_k(x, t)}, \quad
        l_k = \log a_k - \tfrac12 \log|S_k| - \tfrac12 \log|A_k|
        - \tfrac12 r_k^\top (\epsilon S_k)^{-1} r_k + \tfrac12 c_k^\top A_k^{-1} c_k,

    evaluated here in closed form:
    :math:`g = \big(\sum_k \gamma_k A_k^{-1} c_k - x\big)/(1 - t)`,
    :math:`\gamma = \mathrm{softmax}(l)`. Between its ends the bridge is Brownian:
    :math:`x_t = t y + (1 - t) x + \sqrt{\epsilon t (1 - t)}\,\xi`.

    Parameters (as in the authors' code): ``log_weight_raw`` :math:`= \epsilon \ell` (this
    scaling sets Adam's effective step on :math:`\ell`), ``means`` :math:`r`, ``log_variance``
    :math:`\sigma`. Initialization: :math:`\ell_k = -\log K`, :math:`S_k = 0.1 I`, :math:`r_k`
    standard normal, replaced at the start of :meth:`fit` by K target samples.

    Args:
        dim: the dimension D of the samples.
        n_components: K (default 50, the paper's).
        eps: the bridge's noise level :math:`\epsilon > 0` (default 1).
        generator: the source of every random draw (initialization, minibatches, samples).
        variance_init: the initial diagonal of :math:`S_k` (default 0.1, the authors' class
            default; their mixture-benchmark notebook passes 1.0).
        dtype: of the parameters (default float64); inputs are cast to it.

    References:
        A. Korotin, N. Gushchin, E. Burnaev, "Light Schrödinger Bridge", ICLR 2024,
        arXiv 2310.01174.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sb = LightSB(2, n_components=4, eps=0.5, generator=g)
        >>> x0 = torch.randn(256, 2, generator=g, dtype=torch.float64)
        >>> x1 = torch.randn(256, 2, generator=g, dtype=torch.float64) + 3
        >>> losses = sb.fit(x0, x1, steps=50, lr=0.05)
        >>> sb.sample(x0[:5]).shape, sb.trajectories(x0[:5], n_steps=10).path.shape
        (torch.Size([5, 2]), torch.Size([11, 5, 2]))
    """

    def __init__(self, dim: int, n_components: int = 50, eps: float = 1.0, *,
                 generator: torch.Generator | None = None, variance_init: float = 0.1,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.n_components = check_int("n_components", n_components)
        self.eps = check_positive("eps", eps)
        variance_init = check_positive("variance_init", variance_init)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.generator = make_generator(generator)
        k = self.n_components
        self.log_weight_raw = nn.Parameter(torch.full((k,), -self.eps * math.log(k), dtype=dtype))
        self.means = nn.Parameter(standard_normal_like(torch.empty(k, dim, dtype=dtype),
                                                       self.generator))
        self.log_variance = nn.Parameter(torch.full((k, dim), math.log(variance_init),
                                                    dtype=dtype))

    # -- parameters ----------------------------------------------------------------------
    @property
    def log_weights(self) -> Tensor:
        r""":math:`\log a_k` (shape (K,))."""
        return self.log_weight_raw / self.eps

    @property
    def variances(self) -> Tensor:
        """The diagonals of :math:`S_k` (shape (K, D))."""
        return self.log_variance.exp()

    def _input(self, x, name: str) -> Tensor:
        if not isinstance(x, Tensor) or not (x.is_floating_point()):
            raise ValueError(f"{name} must be a floating-point torch.Tensor of shape (n, "
                             f"{self.dim}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}) (dim={self.dim}), got "
                             f"{tuple(x.shape)}")
        return x.to(self.log_variance.dtype)

    # -- potential and plan --------------------------------------------------------------
    def _plan_logits(self, x: Tensor) -> Tensor:
        """log a_k + (x^T S_k x + 2 r_k^T x) / (2 eps), shape (n, K)."""
        quad = (x.square() @ self.variances.T + 2 * x @ self.means.T) / (2 * self.eps)
        return self.log_weights + quad

    def log_potential(self, y: Tensor) -> Tensor:
        r""":math:`\log v(y)` for a batch ``y`` of shape (n, D)."""
        y = self._input(y, "y")
        var = self.eps * self.variances
        z = (y[:, None, :] - self.means) ** 2 / var
        log_normal = -0.5 * (z.sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return torch.logsumexp(self.log_weights + log_normal, dim=-1)

    def log_c(self, x: Tensor) -> Tensor:
        r""":math:`\log c(x)` for a batch ``x`` of shape (n, D)."""
        return torch.logsumexp(self._plan_logits(self._input(x, "x")), dim=-1)

    def conditional_plan(self, x: Tensor) -> PlanComponents:
        r"""The mixture :math:`\pi(\cdot \mid x)`: weights :math:`w_k(x)`, means
        :math:`r_k + S_k x` and variances :math:`\epsilon S_k` (see :class:`PlanComponents`)."""
        x = self._input(x, "x")
        weights = torch.softmax(self._plan_logits(x), dim=-1)
        return PlanComponents(weights, self.means + self.variances * x[:, None, :],
                              self.eps * self.variances)

    def plan_log_prob(self, y: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log \pi(y_i \mid x_i)` for paired batches ``y`` and ``x`` (n, D)."""
        y = self._input(y, "y")
        w, m, var = self.conditional_plan(x)
        log_normal = -0.5 * (((y[:, None, :] - m) ** 2 / var).sum(-1) + var.log().sum(-1)
                             + self.dim * math.log(2 * math.pi))
        return torch.logsumexp(w.log() + log_normal, dim=-1)

    def conditional_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean (n, D) and covariance (n, D, D) of :math:`\pi(\cdot \mid x)` (law of total
        covariance over the components)."""
        w, m, var = self.conditional_plan(x)
        mean = (w[..., None] * m).sum(1)
        dev = m - mean[:, None, :]
        cov = torch.einsum("nk,nki,nkj->nij", w, dev, dev) + torch.diag_embed(w @ var)
        return mean, cov

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        r""":math:`\frac1n \sum \log c(x_0) - \frac1m \sum \log v(x_1)` (differentiable)."""
        return self.log_c(x0).mean() - self.log_potential(x1).mean()

    # -- training ------------------------------------------------------------------------
    def fit(self, x0: Tensor, x1: Tensor, steps: int, *, batch: int = 128,
            lr: float | None = None, init_means: bool = True, progress: bool = False) -> Tensor:
        """Minimize :meth:`loss` by Adam on minibatches drawn (with replacement) from the
        samples ``x0`` of :math:`p_0` and ``x1`` of :math:`p_1`.

        Args:
            x0, x1: samples, shapes (n0, D) and (n1, D) (not paired).
            steps: Adam steps (the paper: 10,000).
            batch: minibatch size (default 128, the paper's).
            lr: Adam's learning rate; None takes the paper's for eps 0.1 / 1 / 10
                (1e-3 / 3e-3 / 6e-2), from the nearest of those eps.
            init_means: first set the means :math:`r_k` to K distinct samples of ``x1``
                (as the authors do).
            progress: show a progress bar.

        Returns:
            The loss at every step (float64 tensor of shape (steps,)).
        """
        x0, x1 = self._input(x0, "x0").detach(), self._input(x1, "x1").detach()
        steps = check_int("steps", steps)
        batch = check_int("batch", batch)
        lr = check_optional_positive("lr", lr) or _default_lr(self.eps)
        check_flag("init_means", init_means)
        check_flag("progress", progress)
        g = self.generator
        if init_means:
            n = x1.shape[0]
            pick = (torch.randperm(n, generator=g) if n >= self.n_components
                    else torch.randint(n, (self.n_components,), generator=g))
            with torch.no_grad():
                self.means.copy_(x1[pick[:self.n_components].to(x1.device)])
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        losses = torch.empty(steps, dtype=torch.float64)
        for i in tqdm(range(steps), desc="LightSB", disable=not progress, leave=False):
            i0 = torch.randint(x0.shape[0], (batch,), generator=g).to(x0.device)
            i1 = torch.randint(x1.shape[0], (batch,), generator=g).to(x1.device)
            opt.zero_grad(set_to_none=True)
            loss = self.loss(x0[i0], x1[i1])
            loss.backward()
            opt.step()
            losses[i] = loss.detach()
        return losses

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, x0: Tensor) -> Tensor:
        r"""One draw :math:`y_i \sim \pi(\cdot \mid x_{0,i})` per row of ``x0`` (the mixture
        draw: a component k by its weight, then :math:`N(r_k + S_k x, \epsilon S_k)`)."""
        x0 = self._input(x0, "x0")
        w = torch.softmax(self._plan_logits(x0), dim=-1)
        k = torch.multinomial(w.to(self.generator.device), 1, generator=self.generator)
        k = k[:, 0].to(x0.device)
        s = self.variances[k]  # only the drawn component's (n, D), not all K of them
        z = standard_normal_like(x0, self.generator)
        return self.means[k] + s * x0 + (self.eps * s).sqrt() * z

    @torch.no_grad()
    def bridge_sample(self, x0: Tensor, x1: Tensor | None, t) -> Tensor:
        r"""The Brownian bridge at time ``t`` (a number in [0, 1] or a tensor of shape (n,)):
        :math:`x_t = t x_1 + (1 - t) x_0 + \sqrt{\epsilon t (1 - t)}\,\xi`; ``x1=None``
        draws the ends by :meth:`sample`, giving the Schrödinger bridge's marginal."""
        x0 = self._input(x0, "x0")
        x1 = self.sample(x0) if x1 is None else self._input(x1, "x1")
        if x1.shape != x0.shape:
            raise ValueError(f"x1 must have x0's shape {tuple(x0.shape)}, got {tuple(x1.shape)}")
        t = self._time(t, x0, upper_open=False)
        xi = standard_normal_like(x0, self.generator)
        return t * x1 + (1 - t) * x0 + (self.eps * t * (1 - t)).sqrt() * xi

    def _time(self, t, x: Tensor, *, upper_open: bool) -> Tensor:
        """``t`` as a column (n, 1) or scalar tensor, checked to lie in [0, 1] or [0, 1)."""
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        bad = tt.ndim > 1 or (tt.ndim == 1 and tt.shape[0] != x.shape[0])
        top = "1)" if upper_open else "1]"
        if bad or not torch.isfinite(tt).all() or (tt < 0).any() or \
                (tt >= 1 if upper_open else tt > 1).any():
            raise ValueError(f"t must be a number in [0, {top} or a tensor of shape "
                             f"({x.shape[0]},) with entries there, got {t!r}")
        return tt[:, None] if tt.ndim == 1 else tt

    def _drift_terms(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """l_k (n, K), A_k (n or 1, K, D) and c_k (n, K, D) of the drift's formula."""
        eps, s, r = self.eps, self.variances, self.means
        tk = t[..., None] if t.ndim else t  # broadcast against (n, K, D)
        a = tk / (eps * (1 - tk)) + 1 / (eps * s)
        c = (x / (eps * (1 - t)))[:, None, :] + r / (eps * s)
        logits = (self.log_weights - 0.5 * self.log_variance.sum(-1) - 0.5 * a.log().sum(-1)
                  - 0.5 * (r.square() / (eps * s)).sum(-1) + 0.5 * (c.square() / a).sum(-1))
        return logits, a, c

    def drift(self, x: Tensor, t) -> Tensor:
        r"""The bridge's drift :math:`g(x, t)` at a batch ``x`` (n, D), ``t`` in [0, 1) (a
        number or a tensor of shape (n,))."""
        x = self._input(x, "x")
        t = self._time(t, x, upper_open=True)
        if t.ndim:
            logits, a, c = self._drift_terms(x, t)
            gamma = torch.softmax(logits, dim=-1)
            return ((gamma[..., None] * c / a).sum(1) - x) / (1 - t)
        # One t for all rows: A_k does not depend on x, and with u = x / (eps (1 - t)),
        # b_k = r_k / (eps s_k), every sum over D is a matrix product (n, D) @ (D, K)
        # (the (n, K, D) form above is ten times slower on the CPU).
        eps, s, r = self.eps, self.variances, self.means
        inv_a = 1 / (t / (eps * (1 - t)) + 1 / (eps * s))
        u, b = x / (eps * (1 - t)), r / (eps * s)
        logits = (self.log_weights - 0.5 * self.log_variance.sum(-1) + 0.5 * inv_a.log().sum(-1)
                  - 0.5 * (r * b).sum(-1) + 0.5 * (b.square() * inv_a).sum(-1)
                  + 0.5 * u.square() @ inv_a.T + u @ (b * inv_a).T)
        gamma = torch.softmax(logits, dim=-1)
        return (u * (gamma @ inv_a) + gamma @ (b * inv_a) - x) / (1 - t)

    def trajectories(self, x0: Tensor, n_steps: int, *, save_every: int = 1,
                     noise: Brownian | None = None) -> Solution:
        r"""Paths of :math:`dX = g(X, t)\,dt + \sqrt{\epsilon}\,dW` from ``x0`` over
        ``n_steps`` uniform Euler--Maruyama steps on [0, 1] (by :func:`stepping.integrate`;
        the drift is evaluated at each step's start, so never at t = 1).

        Args:
            x0: starting points (n, D).
            n_steps: number of steps.
            save_every: keep the state every this many steps (and the last).
            noise: the Brownian noise (default: ``Brownian(self.generator)``).

        Returns:
            A :class:`stepping.Solution`: ``x`` the endpoints, ``path[k]`` the states at
            ``times[k]``.
        """
        x0 = self._input(x0, "x0").detach()
        n_steps = check_int("n_steps", n_steps)
        noise = Brownian(self.generator) if noise is None else noise
        stepper = BridgeSDE(self.drift, self.eps)
        with torch.no_grad():
            return integrate(stepper, x0, uniform(0.0, 1.0, n_steps), noise=noise,
                             save_every=save_every, desc="LightSB")


# -- registry -------------------------------------------------------------------------------
def _bridge_reference(x0: Tensor, grid: Tensor, kwargs: dict, generator: torch.Generator
                      ) -> Tensor:
    """Euler--Maruyama by hand from :class:`BridgeSDE`'s math block."""
    x = x0.clone()
    for t0, t1 in zip(grid[:-1].tolist(), grid[1:].tolist()):
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + (t1 - t0) * kwargs["drift"](x, t0) + math.sqrt(kwargs["eps"] * (t1 - t0)) * xi
    return x


def _minus(x: Tensor, t: float) -> Tensor:
    return -x


register(AlgorithmInfo(
    name="BridgeSDE",
    cls=BridgeSDE,
    kind="stepper",
    paper="Korotin, Gushchin, Burnaev, ICLR 2024, arXiv 2310.01174",
    default_kwargs=dict(drift=_minus, eps=1.0),
    requires=frozenset({"drift"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(drift=_minus, eps=0.0), ValueError, "eps"),
        (dict(drift=None, eps=1.0), ValueError, "drift"),
        (dict(drift=_minus, eps=1.0, sigma=1.0), TypeError, "sigma"),
    ),
    reference=_bridge_reference,
    reference_kwargs=(dict(drift=_minus, eps=1.0),
                      dict(drift=lambda x, t: torch.sin(x) * (1 - t), eps=0.1)),
    # noise-free, x' = -x from 1: e^{-1} at t = 1
    linear_problem=lambda: (BridgeSDE(_minus, 1.0), torch.ones(3, dtype=torch.float64), 0.0,
                            1.0, torch.full((3,), math.exp(-1.0), dtype=torch.float64)),
))
