"""Random walks on graphs: the graph counterpart of a noise source (a walk draws the next node).

Graphs are converted once from networkx into CSR tensors, with their edge weights (networkx's
convention: ``weight="weight"`` names the edge attribute, ``weight=None`` ignores it). A base
chain is a reversible transition matrix P stored on the CSR pattern plus self-loops (simple
random walk P_ij = w_ij / sum_k w_ik, Metropolis-Hastings towards a target proposing from it);
the self-repellent kernel of Doshi, Hu and Eun (arXiv 2305.05097) reweights P by the walk's own
history,

    K_ij[x] = P_ij (x_j / mu_j)^(-alpha) / sum_k P_ik (x_k / mu_k)^(-alpha),

computed in log space over the current node's neighbourhood only (O(degree) per step).
Many independent walkers advance together as one batched computation; a single walker takes
a plain-Python path over the CSR arrays (no per-step tensor ops), with the same kernel, the
same draw rule and the same stream of uniforms.

The empirical measure is updated by x_{n+1} = (1 - gamma_{n+1}) x_n + gamma_{n+1} delta_{X_{n+1}}.
Since gamma is shared by all walkers, x_n = c_n y_n with one scalar c_n = prod (1 - gamma_k):
a step changes one entry of y per walker (O(1), not O(N)), and the kernel, which only uses
ratios of x, reads y directly.
"""

from __future__ import annotations

import itertools
import math
import mmap
import operator
import os
import sys
import warnings
from bisect import bisect_right
from numbers import Integral, Real
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor
from tqdm import tqdm

from stochstep.stepping.checks import check_int, check_nonnegative
from stochstep.stepping.noise import make_generator

__all__ = ["PowerGamma", "check_exponent", "Graph", "BaseChain", "base_chain", "BASES",
           "SelfRepellentWalk", "PeriodicChainWarning", "nonbacktracking_step",
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


class PeriodicChainWarning(UserWarning):
    """The base chain is periodic (period 2): see :attr:`BaseChain.is_periodic`."""


def _slot_weights(graph, rows_of: list, weight: str | None, count: int, edge_of) -> np.ndarray:
    """The weight of each of the ``count`` (node, neighbour) slots of ``rows_of`` (the
    neighbour dicts in node order), float64: the ``weight`` attribute (1 where absent),
    summed over a MultiGraph's parallel edges (their number when ``weight`` is None).

    Raises:
        ValueError: naming the edge ``edge_of(slot)`` of the first weight that is not a
            finite real number >= 0.
    """
    get = operator.methodcaller("get", weight, 1)
    slots = itertools.chain.from_iterable(map(operator.methodcaller("values"), rows_of))
    if not graph.is_multigraph():
        each, sizes = list(map(get, slots)), None
    elif weight is None:
        return np.fromiter(map(len, slots), dtype=np.float64, count=count)
    else:  # a slot holds a dict {key: data} of parallel edges
        keyed = list(map(operator.methodcaller("values"), slots))
        sizes = np.fromiter(map(len, keyed), dtype=np.int64, count=count)
        each = list(map(get, itertools.chain.from_iterable(keyed)))
    values = np.array(each)
    if values.dtype.kind not in "biuf" or values.shape != (len(each),):
        # A str, None, ..., or real numbers numpy keeps as objects (Fraction, ints >= 2**63).
        bad = next((i for i, w in enumerate(each) if not isinstance(w, Real)), None)
        if bad is None:
            values = np.array([float(w) for w in each])
    if values.dtype.kind in "biuf" and values.shape == (len(each),):
        values = values.astype(np.float64, copy=False)
        ok = np.isfinite(values) & (values >= 0)
        if ok.all():
            return values if sizes is None else np.add.reduceat(values, sizes.cumsum() - sizes)
        bad = int(ok.argmin())
    slot = bad if sizes is None else int(np.searchsorted(sizes.cumsum(), bad, side="right"))
    u, v = edge_of(slot)
    raise ValueError(f"edge ({u!r}, {v!r}) has weight {each[bad]!r}: edge weights (the "
                     f"{weight!r} attribute) must be finite numbers >= 0; pass weight=None to "
                     f"ignore them")


class Graph:
    """An undirected, connected graph as CSR tensors (neighbour lists without self-loops),
    with optional edge weights.

    Attributes:
        num_nodes: N.
        indptr: ``(N + 1,)`` int64 row pointers.
        indices: ``(2|E|,)`` int64 neighbour ids.
        nodes: the networkx node labels, in the order of ids 0..N-1.
        weights: ``(2|E|,)`` float64 edge weight of each CSR entry (symmetric, > 0), or None
            for an unweighted graph (every weight 1).
    """

    def __init__(self, indptr: Tensor, indices: Tensor, nodes: list | None = None,
                 weights: Tensor | None = None):
        self.indptr, self.indices = indptr.to(torch.int64), indices.to(torch.int64)
        self.num_nodes = self.indptr.numel() - 1
        self.nodes = list(range(self.num_nodes)) if nodes is None else list(nodes)
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64)
            if weights.shape != self.indices.shape or not torch.isfinite(weights).all() or \
                    (weights <= 0).any():
                raise ValueError("weights must hold one finite weight > 0 per entry of indices")
        self.weights = weights
        self._index: dict | None = None
        self._int_labels: bool | None = None

    @classmethod
    def from_networkx(cls, graph, weight: str | None = "weight") -> "Graph":
        """Convert an undirected, connected networkx graph (self-loops are ignored).

        Edge weights follow networkx's convention (as in ``nx.to_scipy_sparse_array``):
        ``weight`` names the edge attribute that holds them, an edge without it weighs 1, and
        ``weight=None`` ignores them (every edge weighs 1). A MultiGraph's parallel edges are
        collapsed into one edge whose weight is their sum (with ``weight=None``: their
        number). An edge of weight 0 is no edge (a walk never takes it); a graph whose weights
        are all 1 is unweighted (:attr:`weights` is None).

        Raises:
            ValueError: for a directed or disconnected graph, fewer than 2 nodes, a ``weight``
                that is not a str or None, an edge whose weight is not a finite number >= 0
                (naming the edge), or a node whose edges weigh 0 in total (naming the node).

        Example:
            >>> import networkx as nx
            >>> g = nx.Graph([(0, 1), (1, 2)])
            >>> g[0][1]["weight"] = 3.0  # the edge (1, 2) weighs 1
            >>> BaseChain.simple(Graph.from_networkx(g)).target.tolist()  # W_i / sum W
            [0.375, 0.5, 0.125]
            >>> BaseChain.simple(Graph.from_networkx(g, weight=None)).target.tolist()
            [0.25, 0.5, 0.25]
        """
        import networkx as nx

        if not isinstance(graph, nx.Graph):
            raise ValueError(f"graph must be a networkx graph, got {type(graph).__name__}")
        if graph.is_directed():
            raise ValueError("graph must be undirected (the base chains must be reversible)")
        if graph.number_of_nodes() < 2:
            raise ValueError("graph must have at least 2 nodes")
        if weight is not None and not isinstance(weight, str):
            raise ValueError(f"weight must be the name of an edge attribute (a str) or None "
                             f"(ignore edge weights), got {weight!r}")
        nodes = list(graph.nodes())
        n = len(nodes)
        # One CSR slot per (node, neighbour) pair: every edge twice, a self-loop once.
        adjacency = dict(graph.adjacency())
        rows_of = [adjacency[v] for v in nodes]
        counts = np.fromiter(map(len, rows_of), dtype=np.int64, count=n)
        flat = itertools.chain.from_iterable(rows_of)
        if nodes != list(range(n)):  # general labels: map them to ids 0..N-1
            index = {v: i for i, v in enumerate(nodes)}
            flat = map(index.__getitem__, flat)
        cols = np.fromiter(flat, dtype=np.int64, count=int(counts.sum()))
        rows = np.repeat(np.arange(n), counts)
        values = None
        if weight is not None or graph.is_multigraph():
            values = _slot_weights(graph, rows_of, weight, cols.size,
                                   lambda k: (nodes[rows[k]], nodes[cols[k]]))
        keep = rows != cols  # self-loops are ignored
        indptr = np.concatenate([[0], np.bincount(rows[keep], minlength=n).cumsum()])
        data = np.ones(int(keep.sum()), dtype=np.int8) if values is None else values[keep]
        adj = sp.csr_array((data, cols[keep], indptr), shape=(n, n))
        adj.sort_indices()
        weights = None
        if values is not None:
            dead = (adj.sum(axis=1) == 0) & (np.diff(adj.indptr) > 0)
            if dead.any():
                raise ValueError(f"node {nodes[int(dead.argmax())]!r}: the weights "
                                 f"({weight!r}) of its edges sum to 0, so a walk there could not "
                                 f"move; give it an edge of positive weight or remove the node")
            adj.eliminate_zeros()  # an edge of weight 0 is no edge
            if (adj.data != 1).any():
                weights = torch.from_numpy(adj.data.astype(np.float64))
        if connected_components(adj, directed=False, return_labels=False) != 1:
            raise ValueError("graph must be connected (the base chain must be irreducible)"
                             + ("" if weights is None else "; edges of weight 0 do not count"))
        indptr = torch.from_numpy(adj.indptr.astype(np.int64))
        indices = torch.from_numpy(adj.indices.astype(np.int64))
        return cls(indptr, indices, nodes, weights)

    def equals(self, other: "Graph") -> bool:
        """Same nodes (in the same order), edges and edge weights."""
        return self.nodes == other.nodes and torch.equal(self.indptr, other.indptr) and \
            torch.equal(self.indices, other.indices) and (
                self.weights is None and other.weights is None
                or self.weights is not None and other.weights is not None
                and torch.equal(self.weights, other.weights))

    def edge_weights(self) -> Tensor:
        """The weight of every CSR entry, ``(2|E|,)`` float64 (ones for an unweighted graph)."""
        if self.weights is None:
            return torch.ones(self.indices.shape, dtype=torch.float64)
        return self.weights

    @property
    def weighted_degree(self) -> Tensor:
        """W_i = sum_j w_ij, ``(N,)`` float64 (the degree for an unweighted graph)."""
        if self.weights is None:
            return self.degree.to(torch.float64)
        return torch.zeros(self.num_nodes, dtype=torch.float64).index_add_(
            0, self.row_ids(), self.weights)

    @property
    def degree(self) -> Tensor:
        return self.indptr.diff()

    def row_ids(self) -> Tensor:
        """The source node of every CSR entry."""
        return torch.repeat_interleave(torch.arange(self.num_nodes), self.degree)

    def node_ids(self, nodes, count: int, *, name: str = "start") -> Tensor:
        """Node labels -> ids 0..N-1 (the positions in :attr:`nodes`), one per walker.

        The rule: ``nodes`` that is itself a node label (an int, a string, a tuple on a grid
        graph, ...) is one node for all ``count`` walkers; otherwise it must be a list, tuple,
        1-D tensor or array of exactly ``count`` labels, one per walker. Labels go through the
        graph's node order, so on ``nx.Graph([(5, 3), (3, 0)])`` the label 5 is id 0. An int
        that is not a label is read as an id in [0, N) only when no label of the graph is an
        int (say, string or tuple labels), where it cannot be confused with a label.

        Raises:
            ValueError: naming ``name``, for an unknown label, an id out of range, or a sequence
                whose length is not ``count``.
        """
        if isinstance(nodes, Tensor):
            if nodes.dtype.is_floating_point or nodes.dtype.is_complex or \
                    nodes.dtype == torch.bool or nodes.dim() > 1:
                raise ValueError(f"{name} must be node labels; a tensor of them must be a 0-D or "
                                 f"1-D integer tensor, got dtype {nodes.dtype} and shape "
                                 f"{tuple(nodes.shape)}")
            nodes = nodes.tolist()
        elif isinstance(nodes, np.ndarray):
            nodes = nodes.tolist()
        if self._is_label(nodes) or not isinstance(nodes, (list, tuple)):
            return torch.full((count,), self._node_id(nodes, name), dtype=torch.int64)
        if len(nodes) != count:
            what = f"{name}: {nodes!r} is not a node of the graph, and as a list of nodes it" \
                if isinstance(nodes, tuple) else f"{name}"
            raise ValueError(f"{what} has {len(nodes)} entries but there are {count} walkers: "
                             f"give one node (for every walker) or a list of exactly {count} "
                             f"nodes")
        return torch.tensor([self._node_id(v, name) for v in nodes], dtype=torch.int64)

    def _is_label(self, value) -> bool:
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.nodes)}
        try:
            return value in self._index and not isinstance(value, bool)
        except TypeError:  # unhashable: a list
            return False

    def _node_id(self, value, name: str) -> int:
        if self._is_label(value):
            return self._index[value]
        if isinstance(value, bool):
            raise ValueError(f"{name} must be node labels of the graph, got {value!r}")
        if self._int_labels is None:
            self._int_labels = any(isinstance(v, Integral) and not isinstance(v, bool)
                                   for v in self.nodes)
        if isinstance(value, Integral) and not self._int_labels:
            if 0 <= value < self.num_nodes:
                return int(value)
            raise ValueError(f"{name}: {value!r} is neither a node label nor a node id in "
                             f"[0, {self.num_nodes})")
        hint = " (ints are labels here, since the graph has int labels)" \
            if isinstance(value, Integral) else ""
        raise ValueError(f"{name}: {value!r} is not a node of the graph{hint}")


class BaseChain:
    """A reversible Markov chain on a graph's edges plus self-loops.

    Rows are stored in CSR form (``indptr``, ``indices``, ``probs``) with the self-loop, when
    it has positive probability, as an ordinary entry. Build with :meth:`simple` or
    :meth:`metropolis_hastings` (or :func:`base_chain` by name); both use the graph's edge
    weights. Make any of them aperiodic with :meth:`lazy`.
    """

    def __init__(self, graph: Graph, indptr: Tensor, indices: Tensor, probs: Tensor,
                 target: Tensor, name: str):
        self.graph, self.indptr, self.indices = graph, indptr, indices
        self.probs = torch.as_tensor(probs, dtype=torch.float64)
        self.target = torch.as_tensor(target, dtype=torch.float64)  # stationary mu, (N,)
        self.log_probs = self.probs.log()
        self.name = name
        self._periodic: bool | None = None
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

    @property
    def is_periodic(self) -> bool:
        """True when P has period 2: no self-loop and a bipartite support (an SRW on a tree,
        an even cycle or a grid; an MHRW on a regular bipartite graph). A reversible,
        irreducible chain has period 1 or 2 (every edge is a cycle i -> j -> i of length 2),
        and period 2 exactly then. Bipartiteness is read from the bipartite double cover,
        which is connected unless the graph is bipartite."""
        if self._periodic is None:
            n = self.num_nodes
            rows = torch.repeat_interleave(torch.arange(n), self.indptr.diff()).numpy()
            cols = self.indices.numpy()
            if (rows == cols).any():
                self._periodic = False
            else:
                cover = sp.csr_array((np.ones(2 * rows.size, dtype=np.int8),
                                      (np.concatenate([rows, rows + n]),
                                       np.concatenate([cols + n, cols]))), shape=(2 * n, 2 * n))
                self._periodic = connected_components(cover, directed=False,
                                                      return_labels=False) == 2
        return self._periodic

    @classmethod
    def simple(cls, graph: Graph) -> "BaseChain":
        """Simple random walk P_ij = w_ij / W_i, W_i = sum_k w_ik, with stationary
        mu_i = W_i / sum_k W_k; on an unweighted graph (w = 1) P_ij = 1/d_i and
        mu_i = d_i / 2|E|. Reversible: mu_i P_ij = w_ij / sum_k W_k is symmetric."""
        total = graph.weighted_degree
        probs = graph.edge_weights() / total[graph.row_ids()]
        return cls(graph, graph.indptr, graph.indices, probs, total / total.sum(),
                   _chain_name("srw", graph))

    @classmethod
    def metropolis_hastings(cls, graph: Graph, target: Tensor | None = None) -> "BaseChain":
        """Metropolis-Hastings walk towards ``target`` (uniform if None), proposing from the
        simple random walk Q_ij = w_ij / W_i (see :meth:`simple`) and accepting with
        min(1, mu_j Q_ji / (mu_i Q_ij)):

            P_ij = w_ij min(1/W_i, mu_j / (mu_i W_j)) for neighbours, the rest on the self-loop;

        on an unweighted graph P_ij = min(1/d_i, mu_j / (mu_i d_j)). The stationary law is
        ``target`` whatever the weights: they only say which neighbours are proposed (how
        strongly two nodes are linked, as for the simple walk), which changes how fast the
        walk mixes, not where it goes."""
        n = graph.num_nodes
        if target is None:
            mu = torch.full((n,), 1.0 / n, dtype=torch.float64)
        else:
            mu = torch.as_tensor(target, dtype=torch.float64).flatten()
            if mu.shape != (n,) or not torch.isfinite(mu).all() or (mu <= 0).any():
                raise ValueError(f"target must have {n} finite entries > 0 (no zeros)")
            mu = mu / mu.sum()
        total = graph.weighted_degree
        src, dst = graph.row_ids(), graph.indices
        off = graph.edge_weights() * torch.minimum(1.0 / total[src],
                                                   mu[dst] / (mu[src] * total[dst]))
        stay = (1.0 - torch.zeros(n, dtype=torch.float64).index_add_(0, src, off)).clamp_min(0)
        return cls._with_loops(graph, src, dst, off, stay, mu, _chain_name("mhrw", graph))

    @classmethod
    def _with_loops(cls, graph, src, dst, off, stay, mu, name) -> "BaseChain":
        """The chain with off-diagonal entries ``off`` (rows ``src``, columns ``dst``, no
        loops) and the self-loop probabilities ``stay`` merged into the rows (kept sorted)."""
        n = graph.num_nodes
        has_loop = stay > 1e-15
        counts = torch.zeros(n, dtype=torch.int64).index_add_(
            0, src, torch.ones_like(src)) + has_loop.to(torch.int64)
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        rows = torch.cat([src, torch.arange(n)[has_loop]])
        cols = torch.cat([dst, torch.arange(n)[has_loop]])
        vals = torch.cat([off, stay[has_loop]])
        order = torch.argsort(rows * n + cols)
        return cls(graph, indptr, cols[order], vals[order], mu, name)

    def lazy(self, holding: float = 0.5) -> "BaseChain":
        """The lazy chain (1 - h) P + h I: same target, still reversible, and aperiodic (every
        node has a self-loop), at the price of staying put with probability >= h."""
        if not isinstance(holding, Real) or isinstance(holding, bool) or \
                not 0 < holding < 1:
            raise ValueError(f"holding must lie in (0, 1), got {holding!r}")
        n = self.num_nodes
        rows = torch.repeat_interleave(torch.arange(n), self.indptr.diff())
        loop = rows == self.indices
        stay = torch.zeros(n, dtype=torch.float64).index_add_(0, rows[loop], self.probs[loop])
        stay = (1 - holding) * stay + holding
        return self._with_loops(self.graph, rows[~loop], self.indices[~loop],
                                (1 - holding) * self.probs[~loop], stay, self.target,
                                f"lazy({holding:g}) {self.name}")

    def dense(self) -> Tensor:
        """The transition matrix as a dense ``(N, N)`` float64 tensor (for checks and theory)."""
        n = self.num_nodes
        rows = torch.repeat_interleave(torch.arange(n), self.indptr.diff())
        out = torch.zeros(n, n, dtype=torch.float64)
        out[rows, self.indices] = self.probs
        return out


def _chain_name(base: str, graph: Graph) -> str:
    return base if graph.weights is None else f"weighted {base}"


BASES = ("mhrw", "srw")


def base_chain(graph: Graph, base="mhrw", target: Tensor | None = None) -> BaseChain:
    """The base chain ``base`` on ``graph``: ``"mhrw"`` (:meth:`BaseChain.metropolis_hastings`
    towards ``target``, uniform if None), ``"srw"`` (:meth:`BaseChain.simple`), or a
    :class:`BaseChain` built on this very graph (same nodes, edges and edge weights), returned
    as it is. Both use ``graph``'s edge weights when it has them.

    Raises:
        ValueError: naming ``base`` for an unknown name, the non-backtracking walk or a chain
            on another graph; naming ``target`` when it is given with anything but "mhrw".
    """
    if isinstance(base, BaseChain):
        if not base.graph.equals(graph):
            raise ValueError("base: this BaseChain is built on another graph (other nodes, "
                             "edges or edge weights); build it on Graph.from_networkx(graph, "
                             "weight=...) with the weight= given here")
        if target is not None:
            raise ValueError("target applies to base='mhrw' only (a BaseChain has its own)")
        return base
    if isinstance(base, str) and base == "nbrw":
        raise ValueError("base 'nbrw' is not a reversible chain on the nodes, so SRRW is not "
                         "built on it; use samplers.NonBacktrackingWalk as the baseline")
    if not isinstance(base, str) or base not in BASES:
        raise ValueError(f"base must be one of {BASES} or a BaseChain, got {base!r}")
    if base == "srw":
        if target is not None:
            raise ValueError("target applies to base='mhrw' only (the SRW's stationary "
                             "distribution is fixed: W_i / sum_k W_k, the weighted degrees)")
        return BaseChain.simple(graph)
    return BaseChain.metropolis_hastings(graph, target)


def _draw(weights: Tensor, first: Tensor, length: Tensor, uniforms: Tensor,
          ends: Tensor | None = None) -> Tensor:
    r"""For each segment k (the flat positions ``first[k] .. first[k] + length[k] - 1``), the
    position of one slot drawn with probability proportional to ``weights`` (float64, >= 0,
    at least one > 0 per segment), by inverse CDF with the uniform ``uniforms[k]`` in [0, 1):

    .. math::

        j_k = \min\{j : w_{k,1} + \dots + w_{k,j} > u_k\,(w_{k,1} + \dots + w_{k,L_k})\}.

    All segments share one running sum, but it is brought back near zero at every segment
    start (the previous segment's total and this segment's target are subtracted there), so
    its rounding is that of a sum of one segment's weights: a slot's probability is right to
    float64 rounding of the segment's own numbers (~1e-16 of its total per slot; a plain
    running sum over all segments errs by ~1e-16 of *all* segments' mass, ~1e-11 for 10^5
    slots). A slot of weight 0 is never drawn. Rows that rounding leaves unsettled (the
    target at or above the total, or a first slot of weight 0 reached by the previous rows'
    rounding) are redone exactly one by one (:func:`_draw_row`); this fallback is for float
    round-off only and almost never runs.

    ``weights`` is overwritten; ``ends`` is ``first + length`` when the caller has it.
    """
    if ends is None:
        ends = first + length
    total = torch.segment_reduce(weights, "sum", lengths=length)
    shift = uniforms * total  # the target u * total of each row ...
    carry = total.sub_(shift)  # ... and what the running sum is left with at the row's end
    shift[1:] += carry[:-1]
    head = weights.index_select(0, first)
    weights.index_add_(0, first, shift, alpha=-1)
    running = weights.cumsum(0)  # within segment k: (partial sum) - target_k, up to rounding
    below = torch.empty(running.numel() + 1, dtype=torch.int32)
    below[0] = 0
    torch.cumsum(running <= 0, 0, dtype=torch.int32, out=below[1:])
    skipped = below.index_select(0, ends).sub_(below.index_select(0, first))
    unsettled = skipped == length
    if float(head.min()) <= 0:  # a first slot of weight 0 is picked only through rounding
        unsettled |= (skipped == 0) & (head <= 0)
    pos = skipped.add_(first)
    if unsettled.any():
        weights.index_copy_(0, first, head)
        for k in unsettled.nonzero().flatten().tolist():
            a, b = int(first[k]), int(ends[k])
            pos[k] = a + _draw_row(weights[a:b].tolist(), float(uniforms[k]))
    return pos


def _draw_row(w: list, u: float) -> int:
    """:func:`_draw` for one row of Python floats, summed in order: the first slot whose
    partial sum exceeds ``u`` times the total; if rounding leaves none, the last positive
    slot (the one an exact sum would give for u this close to 1)."""
    cum = list(itertools.accumulate(w))
    j = bisect_right(cum, u * cum[-1])
    return j if j < len(w) else max(k for k, x in enumerate(w) if x > 0)


# Beyond this many (walker, node) entries the measure is kept in float32 by default (1 GiB of
# float64); see ``SelfRepellentWalk(dtype=...)``.
FLOAT64_MEASURE_LIMIT = 1 << 27
_RENORMALISE_BELOW = {torch.float64: 1e-200, torch.float32: 1e-30}
_HUGE_PAGES_FROM = 1 << 28  # bytes
_LONG_ROW = 40  # the one-walker path uses numpy for rows longer than this, Python below
_UNIFORM_BLOCK = 1 << 16  # uniforms drawn at once by ``advance`` on the one-walker path


_PACKAGE_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   d, "") for d in ("stepping", "samplers", "optimizers",
                                                    "theory_checks"))


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside this package (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIRS):
        frame, level = frame.f_back, level + 1
    return level


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
    over the current node's CSR row only (O(degree) per walker and step), in float64, and
    drawn by inverse CDF with one uniform per walker and step from ``generator`` (see
    :func:`_draw`: exact up to float64 rounding of the row's own weights). ``alpha = 0`` is
    the base chain itself. One walker moves by a plain-Python loop over the CSR arrays, many
    by one batched tensor computation; both draw the same uniforms the same way.

    The measure is stored as ``y`` with :math:`x_n = y / \sum_j y_j` (one scalar rescaling shared
    by all walkers), so a step changes one entry of ``y`` per walker.

    A periodic base chain (:attr:`BaseChain.is_periodic`, e.g. an SRW on a bipartite graph)
    gives a :class:`PeriodicChainWarning`: the empirical measure still converges to mu, but
    the walk alternates between the two sides of the graph and the SRRW theory (its CLT and
    asymptotic covariance) assumes an aperiodic chain; :meth:`BaseChain.lazy` fixes it.

    Args:
        chain: the reversible base chain P with stationary mu (its ``target``).
        alpha: repellence strength >= 0 (0 is the base chain itself).
        walkers: number of independent walks.
        gamma: step sizes of the empirical measure: ``None`` for the classic 1/(n+2), or a
            callable n -> gamma_{n+1} in (0, 1) (e.g. ``PowerGamma(0.8)`` for
            gamma_n = (n+1)^(-0.8)).
        start: starting node(s) as labels of the chain's graph: one label for every walker,
            or a list / 1-D tensor of ``walkers`` labels (see :meth:`Graph.node_ids` for the
            rule on ints), or None to draw from mu.
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
        >>> from stochstep.stepping.walks import BaseChain, Graph, SelfRepellentWalk
        >>> chain = BaseChain.metropolis_hastings(Graph.from_networkx(nx.cycle_graph(5)))
        >>> walk = SelfRepellentWalk(chain, 2.0, walkers=3, start=0,
        ...                          generator=torch.Generator().manual_seed(0))
        >>> walk.advance(2000)
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
        self._tiny = torch.finfo(dtype).tiny
        # never a view of x0 or mu; entries >= tiny, so that log y is finite (see _renormalise)
        self.y = _empty_measure(walkers, n, dtype).copy_(x).clamp_min_(self._tiny)
        self.scale, self.steps = 1.0, 0
        if start is None:
            current = torch.multinomial(mu, walkers, replacement=True, generator=self.generator)
        else:
            current = chain.graph.node_ids(start, walkers, name="start")
        self._current, self._node = current, int(current[0])
        if chain.is_periodic:
            warnings.warn(
                f"the base chain '{chain.name}' is periodic (period 2: no self-loop on a "
                "bipartite graph). The SRRW's empirical measure still converges to the target, "
                "but the walk alternates between the two sides of the graph, and the SRRW "
                "theory (CLT, asymptotic covariance; Doshi, Hu, Eun 2023) assumes an aperiodic "
                "chain. Use chain.lazy() (or an MHRW on a non-regular graph, or a graph with "
                "an odd cycle) for an aperiodic one.", PeriodicChainWarning,
                stacklevel=_caller_stacklevel())
        self._log_mu = mu.log()
        # log P_ij + alpha log mu_j per CSR slot: the part of log K's numerator that is fixed.
        self._log_c = chain.log_probs + self.alpha * self._log_mu[chain.indices]
        self._row_start = chain.indptr[:-1]
        self._row_len = chain.indptr.diff()
        self._row_base = torch.arange(walkers) * n  # walker w's row of y starts at w * N
        self._n = torch.tensor(n)
        self._py = None  # numpy views for the one-walker path, made on first use

    # -- state ---------------------------------------------------------------------------------
    @property
    def y(self) -> Tensor:
        """The unnormalised measure, ``(walkers, N)``: :math:`x_n = y / \\sum_j y_j`."""
        return self._y

    @y.setter
    def y(self, value: Tensor) -> None:
        self._y = value
        self._y_flat = value.view(-1)
        self._py = None

    @property
    def current(self) -> Tensor:
        """The walkers' current node ids, ``(walkers,)`` int64 (a new tensor after each move)."""
        if self._current is None:
            self._current = torch.from_numpy(np.array([self._node], dtype=np.int64))
        return self._current

    @current.setter
    def current(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.int64)
        if value.shape != (self.walkers,):
            raise ValueError(f"current must have shape ({self.walkers},), got "
                             f"{tuple(value.shape)}")
        self._current, self._node = value, int(value[0])

    def current_id(self, walker: int = 0) -> int:
        """Walker ``walker``'s current node id as a Python int (no tensor is made)."""
        return self._node if self.walkers == 1 else int(self._current[walker])

    @property
    def empirical_measure(self) -> Tensor:
        """x_n, shape ``(walkers, N)`` (in the dtype of ``y``)."""
        return self.y / self.y.sum(-1, keepdim=True)

    def transition_probs(self, node: int, walker: int = 0) -> tuple[Tensor, Tensor]:
        """(neighbour ids, K[x]_{node, .}) for one walker: the kernel row it would draw from."""
        a, b = int(self.chain.indptr[node]), int(self.chain.indptr[node + 1])
        nbr = self.chain.indices[a:b]
        logw = self._log_c[a:b]
        if self.alpha:
            logy = self.y[walker, nbr].to(torch.float64).clamp_min(self._tiny)
            logw = logw - self.alpha * logy.log()
        return nbr, torch.softmax(logw, 0)

    # -- moves ---------------------------------------------------------------------------------
    def step(self) -> Tensor:
        """Move every walker once with K[x_n] and update x; returns the new nodes."""
        if self.walkers == 1:
            self._advance_single([self._uniform()])
        else:
            self._step_batched()
        return self.current

    def advance(self, steps: int = 1, *, progress: bool = False) -> None:
        """``steps`` moves: the same draws as ``steps`` calls of :meth:`step`, without a
        tensor per move. The one-walker path draws its uniforms in blocks, which leaves the
        generator where ``steps`` single draws would."""
        check_int("steps", steps, 0)
        if self.walkers == 1 and steps == 1 and not progress:
            self._advance_single([self._uniform()])
            return
        bar = tqdm(total=steps, desc="SRRW", disable=not progress)
        if self.walkers == 1:
            done = 0
            while done < steps:
                block = min(_UNIFORM_BLOCK, steps - done)
                self._advance_single(torch.rand(block, dtype=torch.float64,
                                                generator=self.generator).tolist())
                done += block
                bar.update(block)
        else:
            for _ in range(steps):
                self._step_batched()
                bar.update()
        bar.close()

    def _uniform(self) -> float:
        """One uniform, the same number as ``torch.rand(1, dtype=float64, generator=...)``."""
        if self._py is None:
            self._make_py()
        return self._py["u"].uniform_(generator=self.generator).item()

    def _make_py(self) -> None:
        chain = self.chain
        self._py = {"indptr": chain.indptr.numpy(), "indices": chain.indices.numpy(),
                    "log_c": self._log_c.numpy(), "probs": chain.probs.numpy(),
                    "y": self.y.view(-1).numpy(), "u": torch.empty(1, dtype=torch.float64)}

    def _advance_single(self, uniforms) -> None:
        """One move per uniform for the one-walker case, in Python over the CSR arrays: the
        kernel row as in :meth:`_step_batched` (in float64, maximum subtracted before exp), the
        draw of :func:`_draw_row` and the measure update of :meth:`record` (the same roundings
        as ``index_add_``), with no tensor op per move."""
        if self._py is None:
            self._make_py()
        py = self._py
        indptr, indices, log_c, probs, y = (py["indptr"], py["indices"], py["log_c"],
                                            py["probs"], py["y"])
        item, pick = indptr.item, indices.item
        cast = float if y.dtype == np.float64 else y.dtype.type  # index_add_ adds in y's dtype
        alpha, tiny, gamma = self.alpha, self._tiny, self.gamma
        limit = _RENORMALISE_BELOW[self.y.dtype]
        log, exp, accumulate, bisect = math.log, math.exp, itertools.accumulate, bisect_right
        node, steps, scale = self._node, self.steps, self.scale
        try:
            for u in uniforms:
                a, b = item(node), item(node + 1)
                if b - a > _LONG_ROW:
                    if alpha:
                        seen = y[indices[a:b]].astype(np.float64)
                        logw = log_c[a:b] - alpha * np.log(np.maximum(seen, tiny))
                        w = np.exp(logw - logw.max())
                    else:
                        w = probs[a:b]
                    cum = np.cumsum(w)
                    j = int(np.searchsorted(cum, u * cum[-1], side="right"))
                else:
                    if alpha:
                        logw = [c - alpha * log(v if v > tiny else tiny)
                                for c, v in zip(log_c[a:b].tolist(), y[indices[a:b]].tolist())]
                        top = max(logw)
                        w = [exp(v - top) for v in logw]
                    else:
                        w = probs[a:b].tolist()
                    cum = list(accumulate(w))  # the partial sums, in order
                    j = bisect(cum, u * cum[-1])  # the first one > u * total
                if j == b - a:  # float round-off only: the last positive slot
                    j = max(k for k in range(b - a) if w[k] > 0)
                node = pick(a + j)
                # the measure: record(), inlined
                g = 1.0 / (steps + 2) if gamma is None else float(gamma(steps))
                if not 0 < g < 1:
                    raise ValueError(f"gamma({steps}) must lie in (0, 1), got {g}")
                scale *= 1 - g
                y[node] += cast(g / scale)
                steps += 1
                if scale < limit:
                    self.scale = scale
                    self._renormalise()
                    scale = self.scale
        finally:
            self._node, self._current, self.steps, self.scale = node, None, steps, scale

    def _step_batched(self) -> None:
        """One lockstep move of all walkers: the rows of K[x] of every walker's current node,
        concatenated into one flat array of CSR slots, then one draw per row (:func:`_draw`)."""
        chain, cur = self.chain, self._current
        start = self._row_start.index_select(0, cur)
        length = self._row_len.index_select(0, cur)
        ends = length.cumsum(0)
        first = ends - length
        owner = torch.repeat_interleave(length)  # the walker of each flat slot
        slots = torch.arange(owner.numel()).add_((start - first).index_select(0, owner))
        nbr = chain.indices.index_select(0, slots)
        if self.alpha:
            # log y[owner, nbr] in float64; numpy's log and exp take a third of torch's time
            seen = self._y_flat.index_select(0, torch.addcmul(nbr, owner, self._n)).numpy()
            seen = seen.astype(np.float64, copy=False)
            np.log(np.maximum(seen, self._tiny, out=seen), out=seen)
            logw = self._log_c.index_select(0, slots).sub_(torch.from_numpy(seen),
                                                           alpha=self.alpha)
            top = torch.segment_reduce(logw, "max", lengths=length)
            logw.sub_(top.index_select(0, owner))
            weights = torch.from_numpy(np.exp(logw.numpy(), out=logw.numpy()))  # row max 1
        else:
            weights = chain.probs.index_select(0, slots)
        uniforms = torch.rand(self.walkers, dtype=torch.float64, generator=self.generator)
        self._current = nbr.index_select(0, _draw(weights, first, length, uniforms, ends))
        if self.walkers == 1:  # (only when called directly: one walker moves in Python)
            self._node = int(self._current[0])
        self.record(self._current)

    # -- the measure ---------------------------------------------------------------------------
    def _gamma(self) -> float:
        g = 1.0 / (self.steps + 2) if self.gamma is None else float(self.gamma(self.steps))
        # gamma = 1 would collapse x onto one node, leaving the simplex's interior where the
        # kernel lives (an easy off-by-one: gamma_{n+1} is (n+2)^-a, not (n+1)^-a).
        if not 0 < g < 1:
            raise ValueError(f"gamma({self.steps}) must lie in (0, 1), got {g}")
        return g

    def record(self, nodes: Tensor) -> None:
        """The measure update x_{n+1} = x_n + gamma_{n+1} (delta_{nodes} - x_n), one node per
        walker, and n += 1 (:meth:`step` calls it; other walks reuse it for their bookkeeping)."""
        if self.walkers == 1:
            if self._py is None:
                self._make_py()
            self._record_one(int(nodes[0]))
            return
        g = self._gamma()
        self.scale *= 1 - g
        self._y_flat.index_add_(0, self._row_base + nodes,
                                torch.full((self.walkers,), g / self.scale, dtype=self.y.dtype))
        self._renormalise()
        self.steps += 1

    def _record_one(self, node: int) -> None:
        """:meth:`record` for one walker, in Python (the same roundings as ``index_add_``)."""
        g = self._gamma()
        self.scale *= 1 - g
        y = self._py["y"]
        y[node] += y.dtype.type(g / self.scale)
        self._renormalise()
        self.steps += 1

    def _renormalise(self) -> None:
        if self.scale < _RENORMALISE_BELOW[self.y.dtype]:  # before 1/scale overflows
            self.y.mul_(self.scale).clamp_min_(self._tiny)  # never 0: log y stays finite
            self.scale = 1.0


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
