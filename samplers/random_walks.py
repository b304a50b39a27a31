r"""Random walks on graphs as samplers: the self-repellent random walk (SRRW) of Doshi, Hu and
Eun (arXiv 2305.05097) and the baseline walks it is compared with, many walkers at once.

Both classes advance ``walkers`` independent walks on :mod:`stepping.walks` (many walkers as one
batched tensor computation, one SRRW walker by a plain-Python loop over the CSR arrays) and keep
each walker's empirical measure, ``(walkers, N)``, in the order of ``list(graph.nodes)``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from tqdm import tqdm

from stochstep.stepping.checks import check_int, check_nonnegative
from stochstep.stepping.noise import make_generator
from stochstep.stepping.walks import (BaseChain, Graph, PeriodicChainWarning, PowerGamma,
                                      SelfRepellentWalk, base_chain, check_exponent,
                                      nonbacktracking_step)

__all__ = ["SRRW", "NonBacktrackingWalk"]


def _check_walkers(walkers) -> int:
    check_int("walkers", walkers)
    return walkers


def _target_vector(graph: Graph, target) -> Tensor:
    """``target`` as a float64 ``(N,)`` tensor in graph order: a dict {node: weight}, or a
    sequence / tensor of N weights in the order of ``list(graph.nodes)``."""
    n = graph.num_nodes
    if isinstance(target, dict):
        missing = [v for v in graph.nodes if v not in target]
        if missing:
            raise ValueError(f"target has no weight for node(s) {missing[:5]}")
        values = [target[v] for v in graph.nodes]
    else:
        values = target
    try:
        mu = torch.as_tensor(values, dtype=torch.float64).flatten()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"target must be N = {n} positive weights: {exc}") from None
    if mu.shape != (n,) or not torch.isfinite(mu).all() or (mu <= 0).any():
        raise ValueError(f"target must be N = {n} finite weights > 0 (no zeros), one per node")
    return mu / mu.sum()


class SRRW:
    r"""Self-repellent random walk sampler: ``walkers`` independent SRRWs on a networkx graph.

    Each walker moves with the base chain :math:`P` (reversible, stationary :math:`\mu`)
    reweighted by its own history,

    .. math::

        K_{ij}[x] = \frac{P_{ij}\,(x_j/\mu_j)^{-\alpha}}{\sum_k P_{ik}\,(x_k/\mu_k)^{-\alpha}},
        \quad X_{n+1} \sim K_{X_n,\cdot}[x_n],
        \quad x_{n+1} = x_n + \gamma_{n+1}(\delta_{X_{n+1}} - x_n),
        \quad \gamma_n = (n+1)^{-a},

    starting from :math:`x_0 = \mu`. With ``gamma_exponent`` :math:`a = 1` (the default),
    :math:`x_n` is the occupation measure of :math:`X_1..X_n` plus :math:`x_0` as one
    pseudo-visit; :math:`a \in (0.5, 1)` is the generalized SRRW of SA-SRRW (arXiv
    2401.09665). :math:`x_n \to \mu` almost surely, with an asymptotic covariance that falls
    like :math:`O(1/\alpha)`. ``alpha = 0`` is the base chain itself (the MHRW or SRW
    baseline); :class:`NonBacktrackingWalk` is the non-backtracking baseline.

    A periodic base chain (an SRW on a bipartite graph: a tree, an even cycle, a grid) gives
    a :class:`~stepping.walks.PeriodicChainWarning`: see
    :class:`~stepping.walks.SelfRepellentWalk`; ``base=chain.lazy()`` is an aperiodic one.

    Args:
        graph: an undirected, connected networkx graph (self-loops are ignored).
        alpha: repellence strength, a finite number >= 0.
        base: the base chain: ``"mhrw"`` (Metropolis-Hastings towards ``target``, uniform by
            default, proposing from the simple random walk), ``"srw"`` (simple random walk
            :math:`P_{ij} = w_{ij} / W_i`, :math:`W_i = \sum_k w_{ik}`, with
            :math:`\mu_i = W_i / \sum_k W_k`; :math:`\mu_i = d_i / 2|E|` unweighted), or a
            :class:`~stepping.walks.BaseChain` built on
            ``Graph.from_networkx(graph, weight=weight)``.
        target: for ``"mhrw"`` only: the target :math:`\mu` as a dict {node: weight} or N
            weights in the order of ``list(graph.nodes)``, all > 0 (normalised here).
        walkers: number of independent walkers (advanced together, one batched computation).
        gamma_exponent: :math:`a \in (0.5, 1]`.
        start: starting node label(s): one label for every walker, or a list of ``walkers``
            labels (an int that is not a label is a node id only when no label is an int;
            see :meth:`stepping.walks.Graph.node_ids`); default: drawn from :math:`\mu`.
        generator: the ``torch.Generator`` all draws come from (if None, one seeded from
            torch's global RNG).
        dtype: dtype of the measure, see :class:`stepping.walks.SelfRepellentWalk` (default:
            float64, float32 beyond 2**27 walker-node entries).
        weight: the edge attribute holding the edge weights :math:`w_{ij}` (an edge without
            it weighs 1), or None to ignore them (every edge weighs 1), as in networkx. A
            MultiGraph's parallel edges count as one edge with the sum of their weights (with
            ``weight=None``: their number). See :meth:`stepping.walks.Graph.from_networkx`.

    References:
        V. Doshi, J. Hu, D. Y. Eun, "Self-Repellent Random Walks on General Graphs --
        Achieving Minimal Sampling Variance via Nonlinear Markov Chains", ICML 2023,
        arXiv:2305.05097.
        J. Hu, V. Doshi, D. Y. Eun, "Accelerating Distributed Stochastic Optimization via
        Self-Repellent Random Walks", ICLR 2024, arXiv:2401.09665 (the generalized SRRW).

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.samplers import SRRW
        >>> walk = SRRW(nx.petersen_graph(), alpha=5.0, walkers=4,
        ...             generator=torch.Generator().manual_seed(0))
        >>> nodes, x = walk.run(3000)
        >>> nodes.shape, x.shape
        (torch.Size([4]), torch.Size([4, 10]))
        >>> bool((x - 0.1).abs().max() < 0.01)  # close to the uniform target
        True
    """

    def __init__(self, graph, alpha: float, *, base: str = "mhrw", target=None,
                 walkers: int = 1, gamma_exponent: float = 1.0, start=None,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 weight: str | None = "weight"):
        alpha = check_nonnegative("alpha", alpha)
        gamma_exponent = check_exponent("gamma_exponent", gamma_exponent)
        walkers = _check_walkers(walkers)
        self.graph = Graph.from_networkx(graph, weight)  # ValueError: directed, disconnected, ...
        if target is not None and base == "mhrw":
            target = _target_vector(self.graph, target)
        self.chain = base_chain(self.graph, base, target)  # refuses target for other bases
        if isinstance(base, BaseChain):
            base = base.name
        self.alpha, self.base, self.gamma_exponent = float(alpha), base, float(gamma_exponent)
        gamma = None if gamma_exponent == 1.0 else PowerGamma(float(gamma_exponent))
        self.walk = SelfRepellentWalk(self.chain, self.alpha, walkers=walkers, gamma=gamma,
                                      start=start, generator=make_generator(generator),
                                      dtype=dtype)

    @property
    def nodes(self) -> list:
        """The node labels, in the order of the measure's columns."""
        return self.graph.nodes

    @property
    def target(self) -> Tensor:
        """The target :math:`\\mu` (float64, ``(N,)``)."""
        return self.chain.target

    @property
    def current(self) -> Tensor:
        """The walkers' current node ids, ``(walkers,)`` (labels: ``nodes[i]``)."""
        return self.walk.current

    @property
    def steps(self) -> int:
        return self.walk.steps

    @property
    def empirical_measure(self) -> Tensor:
        """:math:`x_n`, ``(walkers, N)``."""
        return self.walk.empirical_measure

    def step(self) -> Tensor:
        """Move every walker once; returns the new node ids."""
        return self.walk.step()

    def run(self, steps: int, *, progress: bool = False) -> tuple[Tensor, Tensor]:
        """Advance every walker ``steps`` times; returns (current node ids, empirical measures).
        The same draws as ``steps`` calls of :meth:`step` (one walker: no tensor per move)."""
        check_int("steps", steps, 0)
        self.walk.advance(steps, progress=progress)
        return self.current, self.empirical_measure


class NonBacktrackingWalk:
    r"""Non-backtracking random walk (NBRW) sampler, the baseline SRRW is compared with.

    Each walker moves to a uniform neighbour other than the node it came from (back only from
    a degree-1 node). On the directed edges it is a Markov chain with uniform stationary law,
    so on the nodes :math:`\mu_i = d_i / 2|E|`, like the simple random walk's. The measure is
    kept as for :class:`SRRW` with ``gamma_exponent = 1``:

    .. math::

        x_{n+1} = x_n + \frac{1}{n+2}(\delta_{X_{n+1}} - x_n), \qquad x_0 = \mu.

    Args:
        graph: an undirected, connected networkx graph.
        walkers: number of independent walkers.
        start: starting node label(s), as for :class:`SRRW`; default: drawn from :math:`\mu`.
        generator: the ``torch.Generator`` all draws come from.
        dtype: dtype of the measure (as for :class:`SRRW`).
        weight: as for :class:`SRRW`; the walk picks a uniform neighbour, so a graph whose
            edges weigh other than 1 (or a MultiGraph with parallel edges) is refused: a
            weighted non-backtracking walk has no node law as simple as the weighted
            degrees, and ignoring the weights would be a silent choice. Pass
            ``weight=None`` (and ``nx.Graph(graph)`` for a MultiGraph) to walk on the bare
            edges.

    References:
        V. Doshi, J. Hu, D. Y. Eun, ICML 2023, arXiv:2305.05097 (NBRW as a baseline);
        N. Alon, I. Benjamini, E. Lubetzky, S. Sodin, "Non-backtracking random walks mix
        faster", 2007, arXiv:math/0610550.

    Example:
        >>> import networkx as nx, torch
        >>> from stochstep.samplers import NonBacktrackingWalk
        >>> walk = NonBacktrackingWalk(nx.petersen_graph(), walkers=2,
        ...                            generator=torch.Generator().manual_seed(0))
        >>> nodes, x = walk.run(2000)
        >>> bool((x - 0.1).abs().max() < 0.02)  # 3-regular: mu is uniform
        True
    """

    def __init__(self, graph, *, walkers: int = 1, start=None,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 weight: str | None = "weight"):
        walkers = _check_walkers(walkers)
        self.graph = Graph.from_networkx(graph, weight)
        if self.graph.weights is not None:
            what = "parallel edges or edge weights (a MultiGraph): pass nx.Graph(graph) and " \
                "weight=None to walk on its bare edges" if graph.is_multigraph() else \
                f"edge weights (attribute {weight!r}): pass weight=None to ignore them"
            raise ValueError(f"weight: the non-backtracking walk moves to a uniform neighbour "
                             f"and is not defined with {what}")
        self.chain = BaseChain.simple(self.graph)  # its target is the NBRW's node law
        # The measure bookkeeping is the SRRW's at alpha = 0; only the move differs (the NBRW is
        # no SRRW, so the SRRW theory's warning about periodic base chains does not apply).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PeriodicChainWarning)
            self.walk = SelfRepellentWalk(self.chain, 0.0, walkers=walkers, start=start,
                                          generator=make_generator(generator), dtype=dtype)
        self.previous = torch.full((walkers,), -1, dtype=torch.int64)

    nodes = SRRW.nodes
    target = SRRW.target
    current = SRRW.current
    steps = SRRW.steps
    empirical_measure = SRRW.empirical_measure

    def step(self) -> Tensor:
        """Move every walker once; returns the new node ids."""
        walk = self.walk
        nxt = nonbacktracking_step(self.graph, walk.current, self.previous, walk.generator)
        self.previous = walk.current
        walk.current = nxt
        walk.record(nxt)
        return nxt

    def run(self, steps: int, *, progress: bool = False) -> tuple[Tensor, Tensor]:
        """Advance every walker ``steps`` times; returns (current node ids, empirical measures)."""
        check_int("steps", steps, 0)
        for _ in tqdm(range(steps), desc="NBRW", disable=not progress):
            self.step()
        return self.current, self.empirical_measure
