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

import itertools
import math
import mmap
from numbers import Real
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from stepping.checks import check_int, check_nonnegative
from stepping.noise import make_generator

__all__ = ["PowerGamma", "check_exponent", "Graph", "BaseChain", "SelfRepellentWalk",
           "nonbacktracking_step",
           "FLOAT64_MEASURE_LIMIT"]


def check_exponent(name: str, value) -> float:
    """A step-size exponent in (0.5, 1] (the range of the SRRW/SA-SRRW CLTs), else ValueError."""
    if not isinstance(value, Real) or isinstance(value, bool) or not 0.5 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0.5, 1], got {value!r}")
    return float(value)


class PowerGamma:
    """gamma_{n+1} = (n+2)^(-a), the spec's gamma_n = (n+1)^(-a), as the walk's ``gamma(n)``
    callable (picklable, unlike a lambda). With a = 1 it is the classic 1/(n+2): x_0 counts as
    one pseudo-visit."""

    def __init__(self, exponent: float):
        self.exponent = exponent

    def __call__(self, n: int) -> float:
        return (n + 2.0) ** -self.exponent


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
        nodes = list(graph.nodes())
        n, m = len(nodes), graph.number_of_edges()
        flat = itertools.chain.from_iterable(graph.edges())
        if nodes != list(range(n)):  # general labels: map them to ids 0..N-1
            index = {v: i for i, v in enumerate(nodes)}
            flat = map(index.__getitem__, flat)
        ends = np.fromiter(flat, dtype=np.int64, count=2 * m).reshape(m, 2)
        ends = ends[ends[:, 0] != ends[:, 1]]  # self-loops are ignored
        rows = np.concatenate([ends[:, 0], ends[:, 1]])
        cols = np.concatenate([ends[:, 1], ends[:, 0]])
        adj = sp.csr_array((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
        adj.sum_duplicates()
        adj.sort_indices()
        if connected_components(adj, directed=False, return_labels=False) != 1:
            raise ValueError("graph must be connected (the base chain must be irreducible)")
        indptr = torch.from_numpy(adj.indptr.astype(np.int64))
        indices = torch.from_numpy(adj.indices.astype(np.int64))
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
        self.graph, self.indptr, self.indices = graph, indptr, indices
        self.probs = torch.as_tensor(probs, dtype=torch.float64)
        self.target = torch.as_tensor(target, dtype=torch.float64)  # stationary mu, (N,)
        self.log_probs = probs.log()
        self.name = name
        self._validate()

    def _validate(self, tol: float = 1e-7) -> None:
        """Raise ValueError unless P is stochastic on the graph's edges plus self-loops, mu is
        a positive distribution, and mu_i P_ij = mu_j P_ji (reversible, hence mu P = mu): the
        self-repellent kernel's theory needs all of it."""
        n, mu, p = self.num_nodes, self.target, self.probs
        if self.indptr.shape != (n + 1,) or p.shape != self.indices.shape:
            raise ValueError("base chain: indptr must have N + 1 entries and probs match indices")
        if mu.shape != (n,) or not torch.isfinite(mu).all() or (mu <= 0).any() or \
                abs(float(mu.sum()) - 1) > tol:
            raise ValueError("base chain: target must be N positive numbers summing to 1")
        if not torch.isfinite(p).all() or (p <= 0).any():
            raise ValueError("base chain: transition probabilities must be finite and > 0 "
                             "(store only the positive entries)")
        rows = torch.repeat_interleave(torch.arange(n), self.indptr.diff())
        cols = self.indices
        if (torch.zeros(n, dtype=p.dtype).index_add_(0, rows, p) - 1).abs().max() > tol:
            raise ValueError("base chain: every row of P must sum to 1")
        edges = self.graph.row_ids() * n + self.graph.indices
        keys = rows * n + cols
        pos = torch.searchsorted(edges, keys).clamp_max(max(edges.numel() - 1, 0))
        if not ((rows == cols) | (edges[pos] == keys)).all():
            raise ValueError("base chain: P may move only along the graph's edges or stay put")
        order = torch.argsort(keys)
        back = order[torch.searchsorted(keys[order], cols * n + rows).clamp_max(len(keys) - 1)]
        flux = mu[rows] * p
        if not (keys[back] == cols * n + rows).all() or (flux - flux[back]).abs().max() > tol:
            raise ValueError("base chain: P must be reversible with respect to target "
                             "(mu_i P_ij = mu_j P_ji)")

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


def _segments(indptr: Tensor, current: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The CSR rows ``current``, concatenated into one flat array of slots.

    Returns ``(slots, owner, first, length)``: the CSR slot at each flat position, the walker
    that owns it, and for each walker the flat position of its first slot and its row length.
    """
    start = indptr.index_select(0, current)
    length = indptr.index_select(0, current + 1) - start
    owner = torch.repeat_interleave(length)
    first = length.cumsum(0) - length
    slots = torch.arange(owner.numel()) + (start - first).index_select(0, owner)
    return slots, owner, first, length


def _draw(weights: Tensor, owner: Tensor, first: Tensor, length: Tensor,
          uniforms: Tensor) -> Tensor:
    """For each walker, the flat position of one slot of its segment drawn with probability
    proportional to ``weights`` (float64, >= 0, at least one > 0 per segment): inverse CDF,
    i.e. the first slot whose running sum within the segment exceeds ``u * total``.

    One uniform per walker and a single pass over the slots (a global running sum; each
    segment's weights should be O(1), e.g. scaled so that their maximum is 1, so that its
    rounding error stays far below any probability of interest: ~1e-16 times the slot count).
    """
    cum = weights.new_empty(weights.numel() + 1)
    cum[0] = 0
    torch.cumsum(weights, 0, out=cum[1:])
    lo = cum.index_select(0, first)
    hi = cum.index_select(0, first + length)
    target = torch.addcmul(lo, uniforms, hi - lo)
    below = torch.empty(weights.numel() + 1, dtype=torch.int32)
    below[0] = 0
    torch.cumsum(cum[1:] <= target.index_select(0, owner), 0, dtype=torch.int32, out=below[1:])
    skipped = below.index_select(0, first + length) - below.index_select(0, first)
    return first + torch.minimum(skipped, length - 1)  # the clamp only guards rounding


# Beyond this many (walker, node) entries the measure is kept in float32 by default (1 GiB of
# float64); see ``SelfRepellentWalk(dtype=...)``.
FLOAT64_MEASURE_LIMIT = 1 << 27
_RENORMALISE_BELOW = {torch.float64: 1e-200, torch.float32: 1e-30}
_HUGE_PAGES_FROM = 1 << 28  # bytes


def _empty_measure(walkers: int, n: int, dtype: torch.dtype) -> Tensor:
    """An uninitialised ``(walkers, N)`` tensor. From 256 MiB on it is backed by an anonymous
    memory map advised to use transparent huge pages where the OS offers them (Linux): the
    step reads ``y`` at random places, and huge pages make those reads ~2x faster by sparing
    most TLB misses."""
    nbytes = walkers * n * torch.empty((), dtype=dtype).element_size()
    if nbytes >= _HUGE_PAGES_FROM and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            buf.madvise(mmap.MADV_HUGEPAGE)
            return torch.frombuffer(buf, dtype=dtype).view(walkers, n)
        except (OSError, ValueError, AttributeError):
            pass
    return torch.empty(walkers, n, dtype=dtype)


class SelfRepellentWalk:
    r"""``walkers`` independent self-repellent random walks (SRRW) advancing together.

    Every walker keeps its own empirical measure :math:`x_n` and moves with the kernel

    .. math::

        K_{ij}[x] = \frac{P_{ij}\,(x_j/\mu_j)^{-\alpha}}{\sum_k P_{ik}\,(x_k/\mu_k)^{-\alpha}},
        \qquad X_{n+1} \sim K_{X_n,\cdot}[x_n],
        \qquad x_{n+1} = x_n + \gamma_{n+1}\,(\delta_{X_{n+1}} - x_n),

    with :math:`\gamma_{n+1} = 1/(n+2)` by default (:math:`x_n` is then the occupation measure
    with :math:`x_0` counted as one pseudo-visit). The row of :math:`K` is computed in log space
    over the current node's CSR row only (O(degree) per walker and step) and drawn by inverse
    CDF with one uniform per walker from ``generator``. ``alpha = 0`` is the base chain itself.

    The measure is stored as ``y`` with :math:`x_n = y / \sum_j y_j` (one scalar rescaling shared
    by all walkers), so a step changes one entry of ``y`` per walker.

    Args:
        chain: the reversible base chain P with stationary mu (its ``target``).
        alpha: repellence strength >= 0 (0 is the base chain itself).
        walkers: number of independent walks.
        gamma: step sizes of the empirical measure: ``None`` for the classic 1/(n+2), or a
            callable n -> gamma_{n+1} in (0, 1] (e.g. ``lambda n: (n + 2) ** -0.8`` for
            gamma_n = (n+1)^(-0.8)).
        start: starting node(s): an int, a ``(walkers,)`` tensor, or None to draw from mu.
        x0: initial measure on the simplex, ``(N,)`` or ``(walkers, N)``, entries > 0
            (default mu).
        generator: the ``torch.Generator`` every draw comes from.
        dtype: dtype of the ``(walkers, N)`` measure ``y``: ``torch.float64``, or
            ``torch.float32`` to halve its memory. Default (None): float64 up to
            ``FLOAT64_MEASURE_LIMIT`` = 2**27 entries, float32 beyond (e.g. 10^4 walkers on
            10^5 nodes: 4 GB instead of 8 GB). With the default gamma and x0, float32 ``y`` is
            ``x0 + visit counts``, exact while a node's count stays below 2**24.

    References:
        Doshi, Hu, Eun. "Self-Repellent Random Walks on General Graphs -- Achieving Minimal
        Sampling Variance via Nonlinear Markov Chains." ICML 2023, arXiv 2305.05097.

    Example:
        >>> import networkx as nx, torch
        >>> from stepping.walks import BaseChain, Graph, SelfRepellentWalk
        >>> chain = BaseChain.metropolis_hastings(Graph.from_networkx(nx.cycle_graph(5)))
        >>> walk = SelfRepellentWalk(chain, 2.0, walkers=3, start=0,
        ...                          generator=torch.Generator().manual_seed(0))
        >>> for _ in range(2000):
        ...     nodes = walk.step()
        >>> walk.empirical_measure.shape
        torch.Size([3, 5])
        >>> bool((walk.empirical_measure - 0.2).abs().max() < 0.02)
        True
    """

    def __init__(self, chain: BaseChain, alpha: float, *, walkers: int = 1,
                 gamma: Callable[[int], float] | None = None, start=None,
                 x0: Tensor | None = None, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None):
        alpha = check_nonnegative("alpha", alpha)
        check_int("walkers", walkers)
        if gamma is not None and not callable(gamma):
            raise ValueError("gamma must be None or a callable n -> gamma_{n+1}")
        n = chain.num_nodes
        if dtype is None:
            dtype = torch.float64 if walkers * n <= FLOAT64_MEASURE_LIMIT else torch.float32
        if dtype not in _RENORMALISE_BELOW:
            raise ValueError(f"dtype must be torch.float32, torch.float64 or None, got {dtype!r}")
        self.chain, self.alpha, self.walkers, self.gamma = chain, float(alpha), walkers, gamma
        self.generator = make_generator(generator)
        mu = chain.target
        if x0 is None:
            x = mu
        else:
            x = torch.as_tensor(x0, dtype=torch.float64)
            if x.shape not in ((n,), (walkers, n)):
                raise ValueError(f"x0 must have shape ({n},) or ({walkers}, {n}), "
                                 f"got {tuple(x.shape)}")
            if (x <= 0).any() or not torch.isfinite(x).all():
                raise ValueError("x0 must have finite entries > 0")
            x = x / x.sum(-1, keepdim=True)
        self.y = _empty_measure(walkers, n, dtype).copy_(x)  # never a view of x0 or mu
        self.scale, self.steps = 1.0, 0
        if start is None:
            self.current = torch.multinomial(mu, walkers, replacement=True,
                                             generator=self.generator)
        else:
            cur = torch.as_tensor(start, dtype=torch.int64).expand(walkers).clone()
            if ((cur < 0) | (cur >= n)).any():
                raise ValueError(f"start must be node ids in [0, {n})")
            self.current = cur
        self._log_mu = mu.log()
        # log P_ij + alpha log mu_j per CSR slot: the part of log K's numerator that is fixed.
        self._log_c = chain.log_probs + self.alpha * self._log_mu[chain.indices]

    @property
    def empirical_measure(self) -> Tensor:
        """x_n, shape ``(walkers, N)`` (in the dtype of ``y``)."""
        return self.y / self.y.sum(-1, keepdim=True)

    def transition_probs(self, node: int, walker: int = 0) -> tuple[Tensor, Tensor]:
        """(neighbour ids, K[x]_{node, .}) for one walker: the kernel row it would draw from."""
        slots, _, _, _ = _segments(self.chain.indptr, torch.tensor([node]))
        nbr = self.chain.indices[slots]
        logw = self._log_c[slots]
        if self.alpha:
            logy = self.y[walker, nbr].to(torch.float64).clamp_min(torch.finfo(self.y.dtype).tiny)
            logw = logw - self.alpha * logy.log()
        return nbr, torch.softmax(logw, 0)

    def step(self) -> Tensor:
        """Move every walker once with K[x_n] and update x; returns the new nodes."""
        y = self.y.view(-1)
        n = self.y.shape[1]
        slots, owner, first, length = _segments(self.chain.indptr, self.current)
        nbr = self.chain.indices.index_select(0, slots)
        if self.alpha:
            seen = y.index_select(0, torch.addcmul(nbr, owner, torch.tensor(n)))  # y[owner, nbr]
            seen = seen.clamp_min_(torch.finfo(y.dtype).tiny).log_()  # y underflow -> finite
            logw = torch.sub(self._log_c.index_select(0, slots), seen, alpha=self.alpha)
            top = torch.full((self.walkers,), -math.inf, dtype=torch.float64).scatter_reduce_(
                0, owner, logw, "amax")
            weights = logw.sub_(top.index_select(0, owner)).exp_()  # each row's maximum is 1
        else:
            weights = self.chain.probs.index_select(0, slots)
        uniforms = torch.rand(self.walkers, dtype=torch.float64, generator=self.generator)
        self.current = nbr.index_select(0, _draw(weights, owner, first, length, uniforms))
        self.record(self.current)
        return self.current

    def record(self, nodes: Tensor) -> None:
        """The measure update x_{n+1} = x_n + gamma_{n+1} (delta_{nodes} - x_n), one node per
        walker, and n += 1 (:meth:`step` calls it; other walks reuse it for their bookkeeping)."""
        g = 1.0 / (self.steps + 2) if self.gamma is None else float(self.gamma(self.steps))
        # gamma = 1 would collapse x onto one node, leaving the simplex's interior where the
        # kernel lives (an easy off-by-one: gamma_{n+1} is (n+2)^-a, not (n+1)^-a).
        if not 0 < g < 1:
            raise ValueError(f"gamma({self.steps}) must lie in (0, 1), got {g}")
        y = self.y.view(-1)
        visited = torch.arange(0, y.numel(), self.y.shape[1]).add_(nodes)
        self.scale *= 1 - g
        y.index_add_(0, visited, torch.full((self.walkers,), g / self.scale, dtype=y.dtype))
        if self.scale < _RENORMALISE_BELOW[self.y.dtype]:  # before 1/scale overflows
            self.y.mul_(self.scale)
            self.scale = 1.0
        self.steps += 1


def nonbacktracking_step(graph: Graph, current: Tensor, previous: Tensor,
                         generator: torch.Generator) -> Tensor:
    """One non-backtracking step per walker: a uniform neighbour other than ``previous``
    (the only neighbour when the degree is 1). ``previous = -1`` means no history.

    Drawn by rejection: a uniform neighbour, redrawn (for the walkers concerned only) while it
    is ``previous``; at most half of the draws are rejected, since a node with ``previous`` among
    its neighbours and degree > 1 has at least one other neighbour.
    """
    start = graph.indptr.index_select(0, current)
    deg = graph.indptr.index_select(0, current + 1) - start
    out = torch.empty_like(current)
    todo = torch.arange(current.numel())
    while todo.numel():
        d = deg[todo]
        u = torch.rand(todo.numel(), dtype=torch.float64, generator=generator)
        offset = torch.minimum((u * d).to(torch.int64), d - 1)
        pick = graph.indices[start[todo] + offset]
        ok = (pick != previous[todo]) | (d == 1)
        out[todo[ok]] = pick[ok]
        todo = todo[~ok]
    return out
