"""Random walks on graphs: the graph counterpart of a noise source (a walk draws the next node).

Graphs are converted once from networkx into CSR tensors. A base chain is a reversible
transition matrix P stored on the CSR pattern plus self-loops (simple random walk, Metropolis-
Hastings towards a target); the self-repellent kernel of Doshi, Hu and Eun (arXiv 2305.05097)
reweights P by the walk's own history,

    K_ij[x] = P_ij (x_j / mu_j)^(-alpha) / sum_k P_ik (x_k / mu_k)^(-alpha),

computed in log space over the current node's neighbourhood only (O(degree) per step).
Many independent walkers advance together as one batched computation.

The empirical measure is updated by x_{n+1} = (1 - gamma_{n+1}) x_n + gamma_{n+1} delta_{X_{n+1}}.
Since gamma is shared by all walkers, x_n = c_n y_n with one scalar c_n = prod (1 - gamma_k):
a step changes one entry of y per walker (O(1), not O(N)), and the kernel, which only uses
ratios of x, reads y directly.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from stepping.noise import make_generator

__all__ = ["Graph", "BaseChain", "SelfRepellentWalk", "nonbacktracking_step"]


class Graph:
    """An undirected, connected graph as CSR tensors (neighbour lists without self-loops).

    Attributes:
        num_nodes: N.
        indptr: ``(N + 1,)`` int64 row pointers.
        indices: ``(2|E|,)`` int64 neighbour ids.
        nodes: the networkx node labels, in the order of ids 0..N-1.
    """

    def __init__(self, indptr: Tensor, indices: Tensor, nodes: list | None = None):
        self.indptr, self.indices = indptr.to(torch.int64), indices.to(torch.int64)
        self.num_nodes = self.indptr.numel() - 1
        self.nodes = list(range(self.num_nodes)) if nodes is None else list(nodes)

    @classmethod
    def from_networkx(cls, graph) -> "Graph":
        """Convert an undirected, connected networkx graph (self-loops are ignored)."""
        import networkx as nx

        if not isinstance(graph, nx.Graph):
            raise ValueError(f"graph must be a networkx graph, got {type(graph).__name__}")
        if graph.is_directed():
            raise ValueError("graph must be undirected (the base chains must be reversible)")
        if graph.number_of_nodes() < 2:
            raise ValueError("graph must have at least 2 nodes")
        if not nx.is_connected(graph):
            raise ValueError("graph must be connected")
        nodes = list(graph.nodes())
        index = {v: i for i, v in enumerate(nodes)}
        rows = [sorted(index[u] for u in graph.neighbors(v) if u != v) for v in nodes]
        indptr = torch.tensor([0] + [len(r) for r in rows], dtype=torch.int64).cumsum(0)
        indices = torch.tensor([u for r in rows for u in r], dtype=torch.int64)
        return cls(indptr, indices, nodes)

    @property
    def degree(self) -> Tensor:
        return self.indptr.diff()

    def row_ids(self) -> Tensor:
        """The source node of every CSR entry."""
        return torch.repeat_interleave(torch.arange(self.num_nodes), self.degree)


class BaseChain:
    """A reversible Markov chain on a graph's edges plus self-loops.

    Rows are stored in CSR form (``indptr``, ``indices``, ``probs``) with the self-loop, when
    it has positive probability, as an ordinary entry. Build with :meth:`simple` or
    :meth:`metropolis_hastings`.
    """

    def __init__(self, graph: Graph, indptr: Tensor, indices: Tensor, probs: Tensor,
                 target: Tensor, name: str):
        self.graph, self.indptr, self.indices, self.probs = graph, indptr, indices, probs
        self.target = target  # stationary distribution mu, float64, (N,)
        self.log_probs = probs.log()
        self.name = name

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @classmethod
    def simple(cls, graph: Graph) -> "BaseChain":
        """Simple random walk P_ij = 1/d_i, stationary mu_i = d_i / 2|E|."""
        deg = graph.degree.to(torch.float64)
        probs = (1.0 / deg)[graph.row_ids()]
        return cls(graph, graph.indptr, graph.indices, probs, deg / deg.sum(), "srw")

    @classmethod
    def metropolis_hastings(cls, graph: Graph, target: Tensor | None = None) -> "BaseChain":
        """Metropolis-Hastings walk towards ``target`` (uniform if None):
        P_ij = min(1/d_i, mu_j / (mu_i d_j)) for neighbours, the rest on the self-loop."""
        n = graph.num_nodes
        if target is None:
            mu = torch.full((n,), 1.0 / n, dtype=torch.float64)
        else:
            mu = torch.as_tensor(target, dtype=torch.float64).flatten()
            if mu.shape != (n,) or not torch.isfinite(mu).all() or (mu <= 0).any():
                raise ValueError(f"target must have {n} finite entries > 0 (no zeros)")
            mu = mu / mu.sum()
        deg = graph.degree.to(torch.float64)
        src, dst = graph.row_ids(), graph.indices
        off = torch.minimum(1.0 / deg[src], mu[dst] / (mu[src] * deg[dst]))
        stay = (1.0 - torch.zeros(n, dtype=torch.float64).index_add_(0, src, off)).clamp_min(0)
        # Merge the self-loops into the rows, keeping each row's entries together.
        has_loop = stay > 1e-15
        counts = graph.degree + has_loop.to(torch.int64)
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        rows = torch.cat([src, torch.arange(n)[has_loop]])
        cols = torch.cat([dst, torch.arange(n)[has_loop]])
        vals = torch.cat([off, stay[has_loop]])
        order = torch.argsort(rows * n + cols)
        return cls(graph, indptr, cols[order], vals[order], mu, "mhrw")

    def dense(self) -> Tensor:
        """The transition matrix as a dense ``(N, N)`` float64 tensor (for checks and theory)."""
        n = self.num_nodes
        rows = torch.repeat_interleave(torch.arange(n), self.indptr.diff())
        out = torch.zeros(n, n, dtype=torch.float64)
        out[rows, self.indices] = self.probs
        return out


def _segments(indptr: Tensor, current: Tensor):
    """Flat CSR slots of the rows ``current`` and, for each slot, which walker owns it."""
    start = indptr[current]
    length = indptr[current + 1] - start
    owner = torch.repeat_interleave(torch.arange(current.numel()), length)
    first = torch.repeat_interleave(length.cumsum(0) - length, length)
    slots = start[owner] + torch.arange(owner.numel()) - first
    return slots, owner


def _draw(log_weights: Tensor, owner: Tensor, walkers: int, generator: torch.Generator):
    """For each walker, one slot drawn with probability softmax(log_weights) over its own
    slots (Gumbel-max: argmax of log w + Gumbel noise, one exponential draw per slot)."""
    e = torch.empty(log_weights.shape, dtype=torch.float64).exponential_(generator=generator)
    key = log_weights - e.log()
    best = torch.full((walkers,), -math.inf, dtype=torch.float64).scatter_reduce(
        0, owner, key, "amax")
    winner = (key == best[owner]).nonzero().squeeze(-1)
    chosen = torch.empty(walkers, dtype=torch.int64)
    chosen[owner[winner]] = winner  # ties have probability zero in float64
    return chosen


class SelfRepellentWalk:
    """``walkers`` independent self-repellent random walks advancing together.

    Args:
        chain: the reversible base chain P with stationary mu (its ``target``).
        alpha: repellence strength >= 0 (0 is the base chain itself).
        walkers: number of independent walks.
        gamma: step sizes of the empirical measure: ``None`` for the classic 1/(n+2), or a
            callable n -> gamma_{n+1} in (0, 1) (e.g. ``lambda n: (n + 1) ** -0.8``).
        start: starting node(s): an int, a ``(walkers,)`` tensor, or None to draw from mu.
        x0: initial measure on the simplex, ``(N,)`` or ``(walkers, N)``, entries > 0
            (default mu).
        generator: the ``torch.Generator`` every draw comes from.
    """

    def __init__(self, chain: BaseChain, alpha: float, *, walkers: int = 1,
                 gamma: Callable[[int], float] | None = None, start=None,
                 x0: Tensor | None = None, generator: torch.Generator | None = None):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
                math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if isinstance(walkers, bool) or not isinstance(walkers, int) or walkers < 1:
            raise ValueError(f"walkers must be an integer >= 1, got {walkers!r}")
        if gamma is not None and not callable(gamma):
            raise ValueError("gamma must be None or a callable n -> gamma_{n+1}")
        self.chain, self.alpha, self.walkers, self.gamma = chain, float(alpha), walkers, gamma
        self.generator = make_generator(generator)
        n = chain.num_nodes
        mu = chain.target
        if x0 is None:
            y = mu.expand(walkers, n).clone()
        else:
            y = torch.as_tensor(x0, dtype=torch.float64).expand(walkers, n).clone()
            if (y <= 0).any() or not torch.isfinite(y).all():
                raise ValueError("x0 must have finite entries > 0")
            y = y / y.sum(-1, keepdim=True)
        self.y, self.scale, self.steps = y, 1.0, 0
        if start is None:
            self.current = torch.multinomial(mu, walkers, replacement=True,
                                             generator=self.generator)
        else:
            cur = torch.as_tensor(start, dtype=torch.int64).expand(walkers).clone()
            if ((cur < 0) | (cur >= n)).any():
                raise ValueError(f"start must be node ids in [0, {n})")
            self.current = cur
        self._log_mu = mu.log()

    @property
    def empirical_measure(self) -> Tensor:
        """x_n, shape ``(walkers, N)``."""
        return self.y / self.y.sum(-1, keepdim=True)

    def transition_probs(self, node: int, walker: int = 0) -> tuple[Tensor, Tensor]:
        """(neighbour ids, K[x]_{node, .}) for one walker: the kernel row it would draw from."""
        slots, _ = _segments(self.chain.indptr, torch.tensor([node]))
        nbr = self.chain.indices[slots]
        logw = self._log_weights(slots, nbr, torch.full_like(slots, walker))
        return nbr, torch.softmax(logw, 0)

    def _log_weights(self, slots: Tensor, nbr: Tensor, owner: Tensor) -> Tensor:
        logw = self.chain.log_probs[slots]
        if self.alpha:
            logw = logw - self.alpha * (self.y[owner, nbr].log() - self._log_mu[nbr])
        return logw

    def step(self) -> Tensor:
        """Move every walker once with K[x_n] and update x; returns the new nodes."""
        slots, owner = _segments(self.chain.indptr, self.current)
        nbr = self.chain.indices[slots]
        chosen = _draw(self._log_weights(slots, nbr, owner), owner, self.walkers,
                       self.generator)
        self.current = nbr[chosen]
        g = 1.0 / (self.steps + 2) if self.gamma is None else float(self.gamma(self.steps))
        if not 0 < g <= 1:
            raise ValueError(f"gamma({self.steps}) must lie in (0, 1], got {g}")
        if g == 1:  # x_{n+1} = delta: restart the representation
            self.y.zero_()
            self.scale = 1.0
            self.y[torch.arange(self.walkers), self.current] = 1.0
        else:
            self.scale *= 1 - g
            self.y[torch.arange(self.walkers), self.current] += g / self.scale
            if self.scale < 1e-200:  # renormalise before the scalar underflows
                self.y.mul_(self.scale)
                self.scale = 1.0
        self.steps += 1
        return self.current


def nonbacktracking_step(graph: Graph, current: Tensor, previous: Tensor,
                         generator: torch.Generator) -> Tensor:
    """One non-backtracking step per walker: a uniform neighbour other than ``previous``
    (the only neighbour when the degree is 1). ``previous = -1`` means no history."""
    slots, owner = _segments(graph.indptr, current)
    nbr = graph.indices[slots]
    deg = graph.degree[current]
    allowed = (nbr != previous[owner]) | (deg[owner] == 1)
    logw = torch.where(allowed, 0.0, -math.inf).to(torch.float64)
    return nbr[_draw(logw, owner, current.numel(), generator)]
