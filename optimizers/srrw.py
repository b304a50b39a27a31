"""SA-SRRW: a token optimizer driven by a self-repellent random walk on a graph (Hu, Doshi, Eun,
arXiv 2401.09665), on the walk of `stepping/walks.py` (Doshi, Hu, Eun, arXiv 2305.05097).

Three ways to run the same recursion, sharing one walk construction and one update formula:

- :class:`SASRRW`, a ``torch.optim.Optimizer`` whose token node the training loop reads;
- :func:`simulate_token`, R independent runs advanced in lockstep on tensors (for the MSE curves
  the paper plots);
- :func:`run_token_ring`, one process per agent on ``torch.distributed``, which moves the
  token (parameters plus the walk state of :func:`token_state`) between agents
  (``examples/srrw_distributed.py`` runs it).

The standard problem, distributed L2-regularised logistic regression with its exact optimum,
is :class:`LogisticProblem`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from stochstep.stepping.noise import make_generator, set_generator_state
from stochstep.stepping.optimizer import (KernelOptimizer, check_flag, check_lr, check_nonnegative,
                                         run_eagerly)
from stochstep.stepping.registry import AlgorithmInfo, register
from stochstep.stepping.walks import (BaseChain, Graph, PowerGamma, SelfRepellentWalk, base_chain,
                                      check_exponent)
from stochstep.stepping.checks import check_int

__all__ = ["SASRRW", "simulate_token", "TokenRun", "LogisticProblem", "logistic_grad",
           "logistic_shard", "make_token_walk", "token_state", "load_token_state",
           "run_token_ring", "TokenRingError", "check_exponent"]

# -- shared pieces: validation, the walk, its state ------------------------------------------
def _graph(graph, weight: str | None = "weight") -> Graph:
    """``graph`` as a :class:`Graph`, its edge weights read from the attribute ``weight``."""
    if not isinstance(graph, Graph):
        return Graph.from_networkx(graph, weight)  # ValueError: directed, disconnected, ...
    if weight is None and graph.weights is not None:
        raise ValueError("weight=None asks to ignore edge weights, but this Graph has them: "
                         "build it with Graph.from_networkx(graph, weight=None)")
    return graph


def _chain(graph, base, weight: str | None = "weight") -> BaseChain:
    if isinstance(base, BaseChain) and graph is None:
        return base
    return base_chain(_graph(graph, weight), base)


def make_token_walk(graph, *, alpha, gamma_exponent, base="mhrw", walkers: int = 1, start=None,
                    generator: torch.Generator | None = None,
                    weight: str | None = "weight") -> tuple[SelfRepellentWalk, Tensor]:
    """The token's walk after its first move, and the importance weights.

    Builds the SRRW on ``base`` (``"mhrw"``: Metropolis-Hastings towards uniform; ``"srw"``:
    simple random walk; both on the edge weights named by ``weight``, see
    :meth:`stepping.walks.Graph.from_networkx`) with ``gamma_n = (n+1)^(-gamma_exponent)``,
    starting at ``start`` (drawn from mu when None), and draws X_1 ~ K[x_0](X_0, .). Returns
    the walk and ``1 / (N mu)`` (float64, ``(N,)``). :class:`SASRRW`, :func:`simulate_token`
    and the distributed example all build their walk here, so equal seeds give equal node
    sequences.
    """
    alpha = check_nonnegative("alpha", alpha)
    a = check_exponent("gamma_exponent", gamma_exponent)
    chain = _chain(graph, base, weight)
    walk = SelfRepellentWalk(chain, alpha, walkers=walkers, gamma=PowerGamma(a), start=start,
                             generator=generator)
    walk.step()  # X_1: the first SA update uses H(theta_0, X_1)
    weights = 1.0 / (chain.num_nodes * chain.target)
    return walk, weights


def _gamma_exponent(walk: SelfRepellentWalk) -> float | None:
    """a in gamma_n = (n+1)^-a for the walk's gamma (None: a custom callable)."""
    if walk.gamma is None:
        return 1.0
    return float(walk.gamma.exponent) if isinstance(walk.gamma, PowerGamma) else None


def token_state(walk: SelfRepellentWalk, *, lr: float | None = None,
                lr_exponent: float | None = None) -> dict:
    """Everything that determines the walk's future, ``weights_only``-loadable: current
    node(s), the unnormalised measure ``y`` (in its own dtype) and its ``scale``, the move
    count and the generator state; and the settings it was made with, which
    :func:`load_token_state` checks: ``alpha``, ``base`` (the base chain's name, e.g.
    ``"mhrw"``), ``gamma_exponent`` (absent for a custom gamma callable) and, when given, the
    SA step sizes ``lr`` and ``lr_exponent`` of the token's owner."""
    state = {"current": walk.current.clone(), "y": walk.y.clone(),
             "scale": torch.tensor(walk.scale, dtype=torch.float64),
             "steps": torch.tensor(walk.steps, dtype=torch.int64),
             "generator": walk.generator.get_state(),
             "alpha": torch.tensor(walk.alpha, dtype=torch.float64),
             "base": walk.chain.name}
    a = _gamma_exponent(walk)
    if a is not None:
        state["gamma_exponent"] = torch.tensor(a, dtype=torch.float64)
    for name, value in (("lr", lr), ("lr_exponent", lr_exponent)):
        if value is not None:
            state[name] = torch.tensor(float(value), dtype=torch.float64)
    return state


def load_token_state(walk: SelfRepellentWalk, state: dict, *, lr: float | None = None,
                     lr_exponent: float | None = None) -> None:
    """Inverse of :func:`token_state` (in place; ``walk.y`` keeps its tensor and dtype).

    Raises:
        ValueError: naming the setting, when the state was made with another ``alpha``,
            ``base``, ``gamma_exponent``, ``lr`` or ``lr_exponent`` than this walk (and the
            ``lr``/``lr_exponent`` given here), or for a measure of another shape or dtype.
            Settings absent from ``state`` (older states, minimal wire formats) are not
            checked.
    """
    mine = {"alpha": walk.alpha, "base": walk.chain.name, "gamma_exponent": _gamma_exponent(walk),
            "lr": lr, "lr_exponent": lr_exponent}
    for name, value in mine.items():
        if name not in state or (value is None and name in ("lr", "lr_exponent")):
            continue
        saved = state[name] if name == "base" else float(state[name])
        if saved != value:
            raise ValueError(f"token state was made with {name}={saved!r}, but this walk has "
                             f"{name}={value!r}: refusing to continue another run's token")
    y = state["y"]
    if y.shape != walk.y.shape:
        raise ValueError(f"token state is for a measure of shape {tuple(y.shape)}, this walk "
                         f"has {tuple(walk.y.shape)} (a different graph or number of walkers)")
    if y.dtype != walk.y.dtype:
        raise ValueError(f"token state has a {y.dtype} measure, this walk keeps {walk.y.dtype} "
                         f"(make the walk with dtype={y.dtype})")
    current = torch.as_tensor(state["current"]).to("cpu", torch.int64)  # walks run on the CPU
    if current.shape != (walk.walkers,) or (current < 0).any() or \
            (current >= walk.chain.num_nodes).any():
        raise ValueError(f"token state's current must be {walk.walkers} node id(s) in "
                         f"[0, {walk.chain.num_nodes})")
    walk.y.copy_(y)
    walk.current = current.clone()
    walk.scale = float(state["scale"])
    walk.steps = int(state["steps"])
    set_generator_state(walk.generator, state["generator"], name="token state's generator")


def _step_size(lr: float, k: int, exponent: float) -> float:
    """beta_k = lr (k+1)^(-b), a Python float (the same number in every code path)."""
    return lr * (k + 1.0) ** -exponent


# -- the optimizer ----------------------------------------------------------------------------
class SASRRW(KernelOptimizer):
    r"""SA-SRRW: stochastic approximation driven by a self-repellent random walk (token algorithm).

    Agents are the nodes of an undirected, connected graph; agent :math:`i` holds a local loss
    :math:`f_i` and the objective is :math:`f = \frac1N\sum_i f_i`. A token carrying
    :math:`\theta` walks the graph with the SRRW kernel of the base chain :math:`P` (stationary
    :math:`\mu`), :math:`K_{ij}[x] \propto P_{ij} (x_j/\mu_j)^{-\alpha}`. For :math:`n \ge 0`:

    .. math::
        X_{n+1} &\sim K_{X_n,\cdot}[x_n] \\
        x_{n+1} &= x_n + \gamma_{n+1} (\delta_{X_{n+1}} - x_n),
            \qquad \gamma_n = (n+1)^{-a} \\
        \theta_{n+1} &= \theta_n - \beta_{n+1}\,
            \frac{\nabla f_{X_{n+1}}(\theta_n)}{N \mu_{X_{n+1}}},
            \qquad \beta_n = \mathrm{lr}\,(n+1)^{-b}

    with :math:`a` = ``gamma_exponent``, :math:`b` = ``lr_exponent`` and :math:`x_0 = \mu`.
    The regimes of the paper: :math:`a < b` (:math:`\beta_n = o(\gamma_n)`, the recommended one,
    asymptotic covariance :math:`O(1/\alpha^2)`), :math:`a = b` and :math:`a > b`.

    **Order of operations.** The walk is always one move ahead: the constructor draws
    :math:`X_0` (or takes ``start``) and moves the token to :math:`X_1`; :attr:`node` is
    :math:`X_{n+1}`, the agent holding the token. The loop computes that agent's loss at the
    current parameters :math:`\theta_n` and calls ``backward``; ``step()`` then applies the
    :math:`\theta` update above with :math:`\beta_{n+1}` and moves the token to
    :math:`X_{n+2}` (updating :math:`x`). So every gradient is taken at the node the token just
    moved to, as in the spec, and each ``step()`` moves the token exactly once (also when no
    parameter has a gradient). :math:`n` is the token's count, shared by all parameters;
    ``lr`` and ``lr_exponent`` may differ between param groups, the walk is shared.

    Args:
        params: parameters or parameter groups.
        graph: an undirected, connected ``networkx`` graph (or a ``stepping.walks.Graph``).
        lr: scale of :math:`\beta_n` (>= 0).
        alpha: repellence strength :math:`\alpha \ge 0` (0: the base chain).
        gamma_exponent: :math:`a \in (0.5, 1]`.
        lr_exponent: :math:`b \in (0.5, 1]`.
        base: ``"mhrw"`` (Metropolis-Hastings to uniform :math:`\mu`, importance weights
            :math:`1/(N\mu_i) = 1`) or ``"srw"`` (simple random walk
            :math:`P_{ij} = w_{ij}/W_i`, :math:`\mu_i = W_i / \sum_k W_k` with the weighted
            degree :math:`W_i = \sum_k w_{ik}`; unweighted :math:`\mu_i = d_i/2|E|` and
            importance weights :math:`2|E|/(N d_i)`), or a ``stepping.walks.BaseChain``.
        start: the first node :math:`X_0` as a node label of ``graph`` (an int that is not a
            label is a node id only when no label is an int, see
            ``stepping.walks.Graph.node_ids``; default: drawn from :math:`\mu`).
        maximize: ascend (use :math:`+\nabla`).
        foreach: update all tensors of a group at once (default) or one at a time.
        generator: the ``torch.Generator`` the walk draws from (if None, one seeded from
            torch's global RNG). The token node, the measure, the move count and this
            generator's state are saved in ``state_dict``, so a resumed run continues
            bit-identically.
        check_finite: raise ``FloatingPointError`` naming the parameter and the step on NaN/Inf.
        weight: the edge attribute of ``graph`` holding the edge weights :math:`w_{ij}` (an
            edge without it weighs 1), or None to ignore them, as in networkx; a MultiGraph's
            parallel edges count as one edge with the sum of their weights. The Metropolis-
            Hastings walk proposes from the weighted simple walk (its target stays uniform).
            See ``stepping.walks.Graph.from_networkx``.

    References:
        J. Hu, V. Doshi, D. Y. Eun, "Accelerating Distributed Stochastic Optimization via
        Self-Repellent Random Walks", ICLR 2024, arXiv:2401.09665.
        V. Doshi, J. Hu, D. Y. Eun, "Self-Repellent Random Walks on General Graphs -- Achieving
        Minimal Sampling Variance via Nonlinear Markov Chains", ICML 2023, arXiv:2305.05097.

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.optimizers import SASRRW
        >>> targets = torch.arange(5.0)[:, None]  # f_i = (theta - c_i)^2 / 2, c_i = i
        >>> theta = torch.nn.Parameter(torch.zeros(1))
        >>> opt = SASRRW([theta], nx.cycle_graph(5), lr=1.0, alpha=5.0, gamma_exponent=0.6,
        ...              lr_exponent=0.9, generator=torch.Generator().manual_seed(0))
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     (0.5 * (theta - targets[opt.node]) ** 2).sum().backward()  # at the token's node
        ...     _ = opt.step()
        >>> abs(theta.item() - 2.0) < 0.1  # the minimiser of (1/N) sum_i f_i
        True
    """

    def __init__(self, params, graph, *, lr: float, alpha: float, gamma_exponent: float,
                 lr_exponent: float, base="mhrw", start=None, maximize: bool = False,
                 foreach: bool | None = None, generator: torch.Generator | None = None,
                 check_finite: bool = False, weight: str | None = "weight"):
        generator = make_generator(generator)
        # Validate the walk's arguments before touching params (clear errors, no draws yet).
        check_nonnegative("alpha", alpha)
        check_exponent("gamma_exponent", gamma_exponent)
        chain = _chain(graph, base, weight)
        defaults = dict(lr=lr, lr_exponent=lr_exponent, maximize=maximize, foreach=foreach)
        # The walk's generator is the KernelOptimizer's: one stream, saved once. The class does
        # not set ``stochastic`` (that would draw Gaussian noise from it every step).
        super().__init__(params, defaults, generator=generator, check_finite=check_finite)
        self.alpha, self.gamma_exponent = float(alpha), float(gamma_exponent)
        self._walk, self._weights = make_token_walk(
            chain.graph, alpha=alpha, gamma_exponent=gamma_exponent, base=chain, start=start,
            generator=self.generator)

    def _check_group(self, group):
        group["lr"] = check_lr(group["lr"])
        group["lr_exponent"] = check_exponent("lr_exponent", group["lr_exponent"])
        check_flag("maximize", group["maximize"])
        if group["foreach"] is not None:
            check_flag("foreach", group["foreach"])

    # -- the token ---------------------------------------------------------------------------
    @property
    def node_index(self) -> int:
        """Id (0..N-1) of the node holding the token, :math:`X_{n+1}`."""
        return self._walk.current_id()

    @property
    def node(self):
        """The agent holding the token, :math:`X_{n+1}`, as its networkx label: compute the loss
        on this node's data before the next ``step()``."""
        return self._walk.chain.graph.nodes[self.node_index]

    @property
    def num_steps(self) -> int:
        """n: the number of ``step()`` calls so far."""
        return self._walk.steps - 1

    @property
    def empirical_measure(self) -> Tensor:
        """x_{n+1}, ``(N,)`` float64 (it includes the visit of :attr:`node`)."""
        return self._walk.empirical_measure[0]

    @property
    def importance_weights(self) -> Tensor:
        """``1 / (N mu)``, ``(N,)`` float64."""
        return self._weights

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """Update with the gradient at :attr:`node` (see the class docstring), then move the
        token once; ``closure`` must evaluate the loss at :attr:`node`."""
        groups = self._checked_groups()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        coefs = run_eagerly(self._take_turn, groups, torch.compiler.is_compiling())
        for group, coef in zip(groups, coefs):
            self._step_group({**group, "coef": coef})
        if self.check_finite:
            self._assert_finite()
        return loss

    def _take_turn(self, groups: list[dict], as_tensors: bool) -> list:
        """Each group's beta_{n+1} / (N mu_{X_{n+1}}), as Python floats (0-dim float64 tensors
        for a compiled step, so that its changes recompile nothing); then the token moves.
        The step's one eager part under torch.compile: the walk is Python code."""
        k, w = self._walk.steps, float(self._weights[self.node_index])
        coefs = [_step_size(float(g["lr"]), k, g["lr_exponent"]) * w for g in groups]
        self._walk.advance()
        return [torch.tensor(c, dtype=torch.float64) for c in coefs] if as_tensors else coefs

    def _update(self, group, params, grads, states, steps, noises):
        scaled = torch._foreach_mul(grads, group["coef"])  # product, then difference: two
        if group["maximize"]:                              # roundings, as simulate_token's
            torch._foreach_add_(params, scaled)
        else:
            torch._foreach_sub_(params, scaled)

    # -- state ---------------------------------------------------------------------------------
    def _extra_state(self):
        # the generator (shared with the walk) is saved once, as "generator_state"
        token = {k: v for k, v in token_state(self._walk).items() if k != "generator"}
        return {**super()._extra_state(), "token": token}

    def _load_extra_state(self, extra):
        if extra.get("token") is None:
            return super()._load_extra_state(extra)
        # checks the token's settings before it writes anything, the shared generator included
        generator = extra.get("generator_state", self.generator.get_state())
        load_token_state(self._walk, {**extra["token"], "generator": generator})


# -- lockstep simulation ----------------------------------------------------------------------
@dataclass
class TokenRun:
    """Result of :func:`simulate_token`.

    Attributes:
        recorded: the iteration numbers n that were recorded, ``(T,)`` int64 (0 is theta_0).
        theta: theta_n at those iterations, ``(T, R, D)``.
        nodes: X_1..X_steps, the node each update used, ``(steps, R)`` int64.
        final: theta after the last step, ``(R, D)``.
        mse: mean over runs of ||theta_n - theta*||^2, ``(T,)`` (None without ``theta_star``).
        measure: the walks' final empirical measures, ``(R, N)``.
    """

    recorded: Tensor
    theta: Tensor
    nodes: Tensor
    final: Tensor
    mse: Tensor | None
    measure: Tensor


def simulate_token(graph, grad_fn: Callable[[Tensor, Tensor], Tensor], theta0, *, runs: int,
                   steps: int, lr: float, alpha: float, gamma_exponent: float,
                   lr_exponent: float, base="mhrw", start=None, theta_star=None,
                   record_every: int = 1, generator: torch.Generator | None = None,
                   weight: str | None = "weight") -> TokenRun:
    r"""Run SA-SRRW (the recursion of :class:`SASRRW`) ``runs`` times in lockstep.

    One :class:`~stepping.walks.SelfRepellentWalk` with ``walkers=runs`` moves all tokens;
    ``grad_fn(theta, nodes)`` maps ``(R, D)`` parameters and ``(R,)`` node ids to the
    ``(R, D)`` local gradients :math:`\nabla f_{X_{n+1}}(\theta_n)`, and

    .. math::
        \theta_{n+1} = \theta_n - \beta_{n+1} \nabla f_{X_{n+1}}(\theta_n) / (N\mu_{X_{n+1}})

    in float64, the same operations as the optimizer (so ``runs=1`` reproduces it bit for bit
    from the same seed). With ``theta_star`` the mean squared error over runs is recorded.

    Args:
        graph, lr, alpha, gamma_exponent, lr_exponent, base, start, weight: as for
            :class:`SASRRW`.
        grad_fn: batched local gradient oracle.
        theta0: ``(D,)`` (shared by all runs) or ``(R, D)``.
        runs: R >= 1 independent runs.
        steps: number of updates.
        theta_star: the optimum, ``(D,)``, for the MSE curve.
        record_every: keep theta_n for n = 0, k, 2k, ... and the last step.
        generator: the ``torch.Generator`` every draw comes from.

    References:
        J. Hu, V. Doshi, D. Y. Eun, ICLR 2024, arXiv:2401.09665.

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.optimizers.srrw import LogisticProblem, simulate_token
        >>> prob = LogisticProblem.generate(6, samples=20, dim=3, seed=0)
        >>> star = prob.solve()
        >>> out = simulate_token(nx.wheel_graph(6), prob.grad, torch.zeros(3), runs=4,
        ...                      steps=200, lr=1.0, alpha=2.0, gamma_exponent=0.6,
        ...                      lr_exponent=0.8, theta_star=star, record_every=100,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> out.theta.shape, out.recorded.tolist()
        (torch.Size([3, 4, 3]), [0, 100, 200])
        >>> bool(out.mse[-1] < 0.1 * out.mse[0])
        True
    """
    check_int("runs", runs)
    check_int("steps", steps, 0)
    check_int("record_every", record_every)
    lr = check_lr(lr)
    b = check_exponent("lr_exponent", lr_exponent)
    generator = make_generator(generator)
    theta = torch.as_tensor(theta0, dtype=torch.float64)
    if theta.dim() == 1:
        theta = theta.expand(runs, -1)
    if theta.dim() != 2 or theta.shape[0] != runs:
        raise ValueError(f"theta0 must be (D,) or (runs, D), got {tuple(theta.shape)}")
    theta = theta.clone()
    star = None if theta_star is None else torch.as_tensor(theta_star, dtype=torch.float64)
    walk, weights = make_token_walk(graph, alpha=alpha, gamma_exponent=gamma_exponent,
                                    base=base, walkers=runs, start=start, generator=generator,
                                    weight=weight)
    recorded, traj = [0], [theta.clone()]
    nodes = torch.empty(steps, runs, dtype=torch.int64)
    for k in range(1, steps + 1):
        cur = walk.current
        nodes[k - 1] = cur
        g = grad_fn(theta, cur)
        if g.shape != theta.shape:
            raise ValueError(f"grad_fn must return {tuple(theta.shape)}, got {tuple(g.shape)}")
        coef = _step_size(lr, k, b) * weights[cur]
        theta = theta - g.to(torch.float64) * coef[:, None]
        walk.step()
        if k % record_every == 0 or k == steps:
            recorded.append(k)
            traj.append(theta.clone())
    thetas = torch.stack(traj)
    mse = None if star is None else ((thetas - star) ** 2).sum(-1).mean(-1)
    return TokenRun(torch.tensor(recorded), thetas, nodes, theta, mse, walk.empirical_measure)


# -- one process per agent: the token on torch.distributed -------------------------------------
class TokenRingError(RuntimeError):
    """The token cannot go on because of *another* agent: it raised (``failed`` names it), or
    it died, hung or lost its connection (``failed`` is empty: the process-group timeout or
    the closed connection is all this agent sees). The agent whose own code failed raises
    its own error instead."""

    def __init__(self, message: str, failed: tuple = ()):
        super().__init__(message)
        self.failed = tuple(failed)


class _TokenWire:
    """The token as one fixed-size uint8 message: int64 [move count, current node, crc32 of
    the base chain's name], float64 [scale, alpha, gamma_exponent (nan: custom), lr,
    lr_exponent, y (N), theta (D)], then the generator state."""

    def __init__(self, walk: SelfRepellentWalk, dim: int, lr: float, lr_exponent: float):
        self.n, self.dim, self.lr, self.b = walk.chain.num_nodes, dim, lr, lr_exponent
        self.base = walk.chain.name
        self.size = 8 * 3 + 8 * (5 + self.n + dim) + walk.generator.get_state().numel()

    def pack(self, theta: Tensor, walk: SelfRepellentWalk) -> Tensor:
        st = token_state(walk, lr=self.lr, lr_exponent=self.b)
        ints = torch.tensor([walk.steps, walk.current_id(), zlib.crc32(self.base.encode())],
                            dtype=torch.int64)
        head = torch.tensor([walk.scale, walk.alpha, float(st.get("gamma_exponent", math.nan)),
                             self.lr, self.b], dtype=torch.float64)
        floats = torch.cat([head, st["y"].reshape(-1).to(torch.float64), theta])
        return torch.cat([ints.view(torch.uint8), floats.view(torch.uint8), st["generator"]])

    def unpack(self, buf: Tensor, walk: SelfRepellentWalk) -> Tensor:
        """Load the token into ``walk`` (checking its settings); returns theta."""
        ints = buf[:24].view(torch.int64)
        floats = buf[24:24 + 8 * (5 + self.n + self.dim)].view(torch.float64)
        crc = int(ints[2])
        state = {"steps": ints[0].clone(), "current": ints[1:2].clone(),
                 "scale": floats[0].clone(), "alpha": floats[1].clone(),
                 "lr": floats[3].clone(), "lr_exponent": floats[4].clone(),
                 "base": self.base if crc == zlib.crc32(self.base.encode())
                 else f"<another base chain (crc32 {crc})>",
                 "y": floats[5:5 + self.n].reshape(1, self.n).to(walk.y.dtype),
                 "generator": buf[24 + 8 * (5 + self.n + self.dim):].clone()}
        if not math.isnan(float(floats[2])):
            state["gamma_exponent"] = floats[2].clone()
        load_token_state(walk, state, lr=self.lr, lr_exponent=self.b)
        return floats[5 + self.n:].clone()


def run_token_ring(graph, grad_fn: Callable[[Tensor, int], Tensor], theta0, *, steps: int,
                   lr: float, alpha: float, gamma_exponent: float, lr_exponent: float,
                   base="mhrw", generator: torch.Generator | None = None,
                   weight: str | None = "weight") -> dict | None:
    r"""SA-SRRW for real, one process per agent: call it on every rank of an initialised
    ``torch.distributed`` process group whose size is the number of nodes; rank i is node i
    (in the order of ``list(graph.nodes)``) and holds only its own data, behind ``grad_fn``.

    The token is :math:`\theta` plus the walk state (:func:`token_state`). Every iteration
    :math:`n`, the agent holding it, :math:`X_n`, applies

    .. math::
        \theta_n = \theta_{n-1} - \beta_n \nabla f_{X_n}(\theta_{n-1}) / (N \mu_{X_n}),
        \qquad \beta_n = \mathrm{lr}\,(n+1)^{-b},

    moves the walk to :math:`X_{n+1} \sim K_{X_n,\cdot}[x_n]`, and all ranks learn
    :math:`X_{n+1}` from one ``all_reduce`` of a status vector; the holder then ``send``\ s the
    packed token to :math:`X_{n+1}` (if it moves), which ``recv``\ s it and checks that it was
    made with its own ``alpha``, ``base``, ``gamma_exponent``, ``lr`` and ``lr_exponent``.
    Rank 0 creates the token (draws :math:`X_0`, moves to :math:`X_1`) as
    :func:`simulate_token` does, so from the same seed the run reproduces it bit for bit.

    Failures never hang and are reported where they belong. An agent whose own code raises
    (``grad_fn``, a token made with other settings) flags it in the next ``all_reduce`` and
    re-raises its own error; every other agent raises :class:`TokenRingError` naming it
    (``.failed``). An agent that dies or hangs breaks the collectives of the others, which
    raise :class:`TokenRingError` when the connection closes or, at the latest, after the
    process group's ``timeout``.

    Args:
        graph: the agents' undirected, connected networkx graph (N = world size).
        grad_fn: ``grad_fn(theta, n)`` -> this agent's local gradient at ``theta`` (``(D,)``
            float64; ``n`` is the iteration, for seeding a minibatch); called only on the
            agent holding the token.
        theta0: ``(D,)`` initial parameters (the same on every rank).
        steps, lr, alpha, gamma_exponent, lr_exponent, base, weight: as for
            :func:`simulate_token`.
        generator: the ``torch.Generator`` of the walk; only rank 0's creates the token.

    Returns:
        On rank 0 ``{"nodes": X_1..X_steps, "theta": theta_1..theta_steps}``, a ``(steps,)``
        int64 and a ``(steps, D)`` float64 tensor; None on the other ranks.

    References:
        J. Hu, V. Doshi, D. Y. Eun, ICLR 2024, arXiv:2401.09665.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("run_token_ring needs an initialised torch.distributed process group")
    check_int("steps", steps, 0)
    lr, b = check_lr(lr), check_exponent("lr_exponent", lr_exponent)
    if not callable(grad_fn):
        raise ValueError("grad_fn must be a callable (theta, n) -> local gradient")
    rank, world = dist.get_rank(), dist.get_world_size()
    walk, weights = make_token_walk(graph, alpha=alpha, gamma_exponent=gamma_exponent,
                                    base=base, generator=generator, weight=weight)
    if world != walk.chain.num_nodes:
        raise ValueError(f"the process group has {world} ranks but the graph has "
                         f"{walk.chain.num_nodes} nodes: rank i must be node i")
    theta = torch.as_tensor(theta0, dtype=torch.float64).flatten().clone()
    wire = _TokenWire(walk, theta.numel(), lr, b)
    records: list[tuple[int, Tensor]] = []
    status = torch.zeros(world + 1, dtype=torch.int64)  # [next holder + 1, failed flags]
    holder, error, packed = 0, None, None

    def talk(what: str, k: int, fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except RuntimeError as err:  # gloo: connection closed by peer, or the timeout
            if error is not None:
                raise error from None  # this agent's own failure comes first
            raise TokenRingError(
                f"agent {rank}: the token ring broke at iteration {k} during {what} (token "
                f"last with agent {holder}; no agent reported an error of its own: one may "
                f"have died, hung or lost its connection): {type(err).__name__}: {err}"
            ) from err

    for k in range(steps + 1):
        status.zero_()
        if rank == holder and error is None:
            try:
                if k > 0:  # theta_k from the gradient at X_k, then the move to X_{k+1}
                    g = torch.as_tensor(grad_fn(theta.clone(), k))
                    if g.shape != theta.shape:
                        raise ValueError(f"grad_fn must return shape {tuple(theta.shape)}, "
                                         f"got {tuple(g.shape)}")
                    theta = theta - g.to(torch.float64) * (_step_size(lr, k, b)
                                                           * float(weights[rank]))
                    records.append((k, theta.clone()))
                    walk.advance()
                nxt = walk.current_id()
                if k < steps and nxt != rank:
                    packed = wire.pack(theta, walk)
                status[0] = nxt + 1
            except Exception as exc:  # noqa: BLE001  (re-raised below, after telling the ring)
                error = exc
        if error is not None:
            status[0], status[1 + rank] = 0, 1
        talk("the status all_reduce", k, dist.all_reduce, status)
        if error is not None:
            raise error
        failed = status[1:].nonzero().flatten().tolist()
        if failed:
            raise TokenRingError(f"agent {rank}: agent(s) {failed} raised an error at iteration "
                                 f"{k} (see their own tracebacks); the token ring broke",
                                 failed)
        if k == steps:
            break
        new = int(status[0]) - 1
        if new != holder:
            if rank == holder:
                talk(f"the send of the token to agent {new}", k, dist.send, packed, dst=new)
            elif rank == new:
                buf = torch.empty(wire.size, dtype=torch.uint8)
                talk(f"the recv of the token from agent {holder}", k, dist.recv, buf,
                     src=holder)
                try:
                    theta = wire.unpack(buf, walk)
                except Exception as exc:  # noqa: BLE001  (announced at the next all_reduce)
                    error = exc
        holder = new
    gathered = [None] * world if rank == 0 else None
    talk("the final gather", steps, dist.gather_object, records, gathered, dst=0)
    if rank != 0:
        return None
    merged = sorted((r for part in gathered for r in part), key=lambda r: r[0])
    owner = {k: r for r, part in enumerate(gathered) for k, _ in part}
    return {"nodes": torch.tensor([owner[k] for k in sorted(owner)], dtype=torch.int64),
            "theta": torch.stack([t for _, t in merged]) if merged
            else torch.empty(0, theta.numel(), dtype=torch.float64)}


# -- the standard problem: distributed L2-regularised logistic regression ---------------------
def logistic_grad(theta: Tensor, features: Tensor, labels: Tensor, reg: float) -> Tensor:
    r"""Batched gradient of :math:`f_i(\theta) = \frac1m \sum_j \log(1 + e^{-b_j a_j^\top
    \theta}) + \frac{\lambda}{2}\|\theta\|^2`: ``theta (R, D)``, ``features (R, m, D)``,
    ``labels (R, m)`` in {-1, +1} -> ``(R, D)``. Elementwise ops and fixed-shape reductions
    only, so one agent's gradient (R = 1) is the same number in every process."""
    margin = labels * (features * theta[:, None, :]).sum(-1)
    coef = -labels * torch.sigmoid(-margin)
    return (coef[..., None] * features).mean(-2) + reg * theta


def logistic_shard(node: int, *, samples: int, dim: int, seed: int,
                   spread: float = 1.0) -> tuple[Tensor, Tensor]:
    """Node ``node``'s data (``(samples, dim)`` features, ``(samples,)`` labels in {-1, +1}),
    float64, drawn from its own generator: an agent generates only its own shard. The shared
    ground truth comes from ``seed``; features are shifted per node (heterogeneous agents)."""
    truth = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (node + 1))
    shift = spread * torch.randn(dim, generator=gen, dtype=torch.float64)
    features = torch.randn(samples, dim, generator=gen, dtype=torch.float64) + shift
    prob = torch.sigmoid(features @ truth)
    labels = torch.where(torch.rand(samples, generator=gen, dtype=torch.float64) < prob, 1.0, -1.0)
    return features, labels.to(torch.float64)


class LogisticProblem:
    r"""Distributed L2-regularised logistic regression: agent :math:`i` holds ``features[i]``
    and ``labels[i]``; the objective is :math:`f = \frac1N \sum_i f_i` (see
    :func:`logistic_grad`), strongly convex for ``reg > 0``, with its exact optimum from
    :meth:`solve`.

    Example:
        >>> from stochstep.optimizers.srrw import LogisticProblem
        >>> prob = LogisticProblem.generate(4, samples=10, dim=2, seed=0)
        >>> star = prob.solve()
        >>> float(prob.full_grad(star).abs().max()) < 1e-12
        True
    """

    def __init__(self, features: Tensor, labels: Tensor, reg: float):
        self.features = features.to(torch.float64)
        self.labels = labels.to(torch.float64)
        self.reg = check_nonnegative("reg", reg)
        self.num_nodes, _, self.dim = self.features.shape

    @classmethod
    def generate(cls, num_nodes: int, *, samples: int = 50, dim: int = 5, reg: float = 0.1,
                 seed: int = 0, spread: float = 1.0) -> "LogisticProblem":
        """Stack :func:`logistic_shard` for nodes 0..num_nodes-1."""
        shards = [logistic_shard(i, samples=samples, dim=dim, seed=seed, spread=spread)
                  for i in range(num_nodes)]
        return cls(torch.stack([f for f, _ in shards]), torch.stack([y for _, y in shards]),
                   reg)

    def grad(self, theta: Tensor, nodes: Tensor) -> Tensor:
        """Local gradients, ``(R, D)``, at ``theta (R, D)`` for agents ``nodes (R,)``."""
        return logistic_grad(theta, self.features[nodes], self.labels[nodes], self.reg)

    def loss(self, theta: Tensor) -> Tensor:
        """f(theta) for ``theta (D,)``."""
        margin = self.labels * (self.features @ theta)
        return torch.nn.functional.softplus(-margin).mean() + 0.5 * self.reg * theta.dot(theta)

    def full_grad(self, theta: Tensor) -> Tensor:
        """grad f(theta) = (1/N) sum_i grad f_i(theta) for ``theta (D,)``."""
        n = self.num_nodes
        return self.grad(theta.expand(n, -1), torch.arange(n)).mean(0)

    def solve(self, iterations: int = 50, tol: float = 1e-14) -> Tensor:
        """theta* by full-batch Newton steps from 0 (f is strongly convex and smooth, so this
        converges quadratically; it stops once the gradient is below ``tol``)."""
        a = self.features.reshape(-1, self.dim)
        b = self.labels.reshape(-1)
        theta = torch.zeros(self.dim, dtype=torch.float64)
        eye = torch.eye(self.dim, dtype=torch.float64)
        for _ in range(iterations):
            g = self.full_grad(theta)
            if float(g.abs().max()) < tol:
                break
            s = torch.sigmoid(b * (a @ theta))
            hess = (a.T * (s * (1 - s))) @ a / a.shape[0] + self.reg * eye
            theta = theta - torch.linalg.solve(hess, g)
        return theta


# -- the registry record ----------------------------------------------------------------------
def _default_graph():
    import networkx as nx
    g = nx.cycle_graph(5)
    g.add_edge(0, 2)  # degrees 3, 2, 3, 2, 2: the SRW weights differ between nodes
    return g


def _directed_graph():
    import networkx as nx
    return nx.DiGraph([(0, 1), (1, 2), (2, 0)])


def _disconnected_graph():
    import networkx as nx
    return nx.Graph([(0, 1), (2, 3)])


def _negative_weight_graph():
    g = _default_graph()
    g[0][1]["weight"] = -1.0
    return g


def _weighted_graph():
    """The default graph with edge weights under the attribute "strength" (weighted degrees
    5.5, 3.5, 6, 4.5, 5.5: every node has its own SRW importance weight)."""
    g = _default_graph()
    for (u, v), w in zip([(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)],
                         [1.0, 2.5, 0.5, 4.0, 1.5, 3.0]):
        g[u][v]["strength"] = w
    return g


def _reference(params, grad_fn, steps, kwargs, generator):
    """The docstring's recursion by hand, in float64, from networkx's own reading of the graph.

    P comes from the weighted adjacency ``nx.to_numpy_array`` (SRW: w_ij / W_i; MHRW towards
    uniform: w_ij min(1/W_i, 1/W_j), the rest on the diagonal), every move draws X_{n+1} from
    the kernel row K[x_n] by inverse CDF with the walk's own uniform (one float64 from
    ``generator`` per move), and the measure and the importance weight follow their
    formulas. The walk under test, built as :class:`SASRRW` builds it on the same generator,
    must agree at every move: its whole kernel K[x_n] (``transition_probs``), the node it
    draws and its measure x_{n+1}; an AssertionError says where it does not."""
    import networkx as nx

    kw = {**_REF_DEFAULTS, **kwargs}
    lr, a, b, alpha = kw["lr"], kw["gamma_exponent"], kw["lr_exponent"], kw["alpha"]
    sign = -1.0 if kw["maximize"] else 1.0
    graph = kw["graph"]
    adj = torch.as_tensor(nx.to_numpy_array(graph, weight=kw["weight"]), dtype=torch.float64)
    adj.fill_diagonal_(0)  # self-loops are ignored
    total, n_nodes = adj.sum(1), adj.shape[0]
    if kw["base"] == "srw":
        P, mu = adj / total[:, None], total / total.sum()
    else:
        P = adj * torch.minimum(1 / total[:, None], 1 / total[None, :])
        P += torch.diag(1 - P.sum(1))
        mu = torch.full((n_nodes,), 1.0 / n_nodes, dtype=torch.float64)
    hand = torch.Generator().set_state(generator.get_state())
    walk, _ = make_token_walk(graph, alpha=alpha, gamma_exponent=a, base=kw["base"],
                              start=kw["start"], generator=generator, weight=kw["weight"])
    if kw["start"] is None:
        node = int(torch.multinomial(mu, 1, replacement=True, generator=hand))
    else:
        node = list(graph.nodes).index(kw["start"])
    x = mu.clone()

    def move(first: bool = False) -> int:
        nonlocal x, node
        kernel = P * (x / mu) ** -alpha
        kernel /= kernel.sum(1, keepdim=True)
        if not first:  # (the first move happens inside make_token_walk)
            for i in range(n_nodes):
                nbr, row = walk.transition_probs(i)
                torch.testing.assert_close(
                    torch.zeros(n_nodes, dtype=torch.float64).index_put_((nbr,), row),
                    kernel[i], rtol=1e-12, atol=1e-15, msg=f"kernel row {i} of K[x_n]")
            walk.step()
        cum = kernel[node].cumsum(0)
        u = float(torch.rand(1, dtype=torch.float64, generator=hand))
        node = int((cum <= u * cum[-1]).sum())  # the first j with cum_j > u * total
        assert walk.current_id() == node, f"the walk moved to {walk.current_id()}, not {node}"
        gamma = (walk.steps + 1.0) ** -a  # gamma_n for the n-th move (n = walk.steps)
        x = x + gamma * (torch.eye(n_nodes, dtype=torch.float64)[node] - x)
        torch.testing.assert_close(walk.empirical_measure[0], x, rtol=1e-10, atol=1e-12)
        return node

    node = move(first=True)  # X_1
    ps = [p.detach().to(torch.float64).clone() for p in params]
    for k in range(1, steps + 1):
        grads = grad_fn([p.clone() for p in ps])
        beta = lr * (k + 1.0) ** -b
        ps = [p - (beta / (n_nodes * float(mu[node]))) * sign * g.to(torch.float64)
              for p, g in zip(ps, grads)]
        node = move()
    return ps


_REF_DEFAULTS = dict(base="mhrw", maximize=False, start=None, weight="weight")

register(AlgorithmInfo(
    name="SASRRW",
    cls=SASRRW,
    kind="optimizer",
    paper="Hu, Doshi & Eun, ICLR 2024, arXiv:2401.09665",
    default_kwargs=dict(graph=_default_graph(), lr=0.2, alpha=1.0, gamma_exponent=0.8,
                        lr_exponent=0.9),
    requires=frozenset({"grad", "node"}),
    stochastic=True,
    supports=frozenset({"maximize", "complex", "foreach", "zero_grad_noop", "compile",
                        "scale_proportional", "rotation_equivariant", "translation_equivariant"}),
    invalid_kwargs=(
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(alpha=-1.0), ValueError, "alpha"),
        (dict(gamma_exponent=0.5), ValueError, "gamma_exponent"),
        (dict(gamma_exponent=1.2), ValueError, "gamma_exponent"),
        (dict(lr_exponent=0.3), ValueError, "lr_exponent"),
        (dict(lr_exponent=1.01), ValueError, "lr_exponent"),
        (dict(base="nbrw"), ValueError, "base"),
        (dict(graph="not a graph"), ValueError, "graph"),
        (dict(graph=_directed_graph()), ValueError, "undirected"),
        (dict(graph=_disconnected_graph()), ValueError, "connected"),
        (dict(weight=3), ValueError, "weight"),
        (dict(graph=_negative_weight_graph()), ValueError, "edge (0, 1) has weight -1.0"),
        (dict(generator=0), ValueError, "generator"),
        (dict(momentum=0.9), TypeError, "momentum"),
    ),
    reference=_reference,
    reference_kwargs=(
        dict(graph=_default_graph(), lr=0.3, alpha=2.0, gamma_exponent=0.7, lr_exponent=0.9),
        dict(graph=_default_graph(), lr=0.3, alpha=3.0, gamma_exponent=0.9, lr_exponent=0.6,
             base="srw"),
        dict(graph=_default_graph(), lr=0.2, alpha=0.0, gamma_exponent=1.0, lr_exponent=1.0,
             base="srw", maximize=True, start=3),
        dict(graph=_weighted_graph(), weight="strength", lr=0.3, alpha=4.0, gamma_exponent=0.6,
             lr_exponent=0.9, base="srw"),
        dict(graph=_weighted_graph(), weight="strength", lr=0.3, alpha=5.0, gamma_exponent=0.8,
             lr_exponent=0.7, start=1),
    ),
))
