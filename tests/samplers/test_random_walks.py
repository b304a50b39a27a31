"""Correctness of the SRRW sampler and its walks (samplers/random_walks.py, stepping/walks.py)."""

import math

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from samplers import SRRW, NonBacktrackingWalk
from stepping.walks import BaseChain, Graph, SelfRepellentWalk


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def small_graph():
    g = nx.barabasi_albert_graph(12, 2, seed=3)
    g.add_edge(0, 12)  # a leaf
    return g


def kernel_matrix(walk: SelfRepellentWalk, walker: int = 0) -> torch.Tensor:
    """K[x] of one walker as a dense (N, N) matrix, row by row from transition_probs."""
    n = walk.chain.num_nodes
    k = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        nbr, p = walk.transition_probs(i, walker)
        k[i, nbr] = p
    return k


def random_measure(walk, seed):
    x = torch.rand(walk.chain.num_nodes, dtype=torch.float64, generator=gen(seed)) + 0.05
    walk.y.copy_(x / x.sum())
    return walk.y[0].to(torch.float64)


def mhrw_by_hand(graph: nx.Graph) -> torch.Tensor:
    """P_ij = min(1/d_i, 1/d_j) on edges, the rest on the diagonal (uniform target)."""
    nodes = list(graph.nodes)
    idx = {v: i for i, v in enumerate(nodes)}
    p = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
    for u, v in graph.edges:
        w = min(1 / graph.degree[u], 1 / graph.degree[v])
        p[idx[u], idx[v]] = p[idx[v], idx[u]] = w
    p += torch.diag(1 - p.sum(1))
    return p


@pytest.mark.parametrize("base", ["mhrw", "srw"])
def test_alpha_zero_is_the_base_chain_exactly(base):
    graph = small_graph()
    s = SRRW(graph, 0.0, base=base, generator=gen())
    random_measure(s.walk, 1)  # any x: alpha = 0 ignores it
    expected = mhrw_by_hand(graph) if base == "mhrw" else torch.tensor(
        nx.to_numpy_array(graph, nodelist=list(graph.nodes)), dtype=torch.float64).div(
            torch.tensor([d for _, d in graph.degree], dtype=torch.float64)[:, None])
    assert torch.allclose(s.chain.dense(), expected, rtol=0, atol=1e-15)
    assert torch.allclose(kernel_matrix(s.walk), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("base", ["mhrw", "srw"])
@pytest.mark.parametrize("alpha", [0.5, 3.0, 20.0])
def test_kernel_formula_K_at_mu_and_stationarity(base, alpha):
    graph = small_graph()
    s = SRRW(graph, alpha, base=base, generator=gen())
    p, mu = s.chain.dense(), s.target
    assert torch.allclose(kernel_matrix(s.walk), p, rtol=0, atol=1e-14)  # K[mu] = P
    x = random_measure(s.walk, 2)
    k = kernel_matrix(s.walk)
    r = (x / mu) ** -alpha
    expected = p * r[None, :]
    expected /= expected.sum(1, keepdim=True)
    assert torch.allclose(k, expected, rtol=1e-12, atol=1e-15)
    pi = mu * r * (p @ r)  # pi_i[x] ∝ sum_j mu_i P_ij r_i r_j
    pi /= pi.sum()
    assert torch.allclose(pi @ k, pi, rtol=1e-12, atol=1e-15)
    assert torch.allclose(pi[:, None] * k, (pi[:, None] * k).T, rtol=1e-10, atol=1e-15)


def test_target_mhrw_stationary():
    graph = small_graph()
    weights = {v: 1.0 + (v % 3) for v in graph.nodes}
    s = SRRW(graph, 1.0, target=weights, generator=gen())
    mu = torch.tensor([weights[v] for v in s.nodes], dtype=torch.float64)
    mu /= mu.sum()
    assert torch.allclose(s.target, mu)
    p = s.chain.dense()
    assert torch.allclose(mu @ p, mu, atol=1e-15)
    assert torch.allclose(mu[:, None] * p, (mu[:, None] * p).T, atol=1e-15)  # reversible


@pytest.mark.parametrize("alpha", [0.0, 4.0])
def test_draw_frequencies_match_K(alpha):
    graph = small_graph()
    walkers = 20000
    s = SRRW(graph, alpha, walkers=walkers, start=1, generator=gen(5))
    random_measure(s.walk, 3)
    nbr, p = s.walk.transition_probs(1, 0)
    nodes = s.step()
    counts = torch.bincount(nodes, minlength=len(s.nodes))
    assert counts.sum() == counts[nbr].sum()  # only the row's nodes
    result = stats.chisquare(counts[nbr].numpy(), walkers * p.numpy())
    assert result.pvalue > 1e-3


def test_walkers_independent_and_reproducible():
    graph = small_graph()
    runs = [SRRW(graph, 2.0, walkers=4000, start=1, generator=gen(7)) for _ in range(2)]
    out = [r.run(3) for r in runs]
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    other = SRRW(graph, 2.0, walkers=4000, start=1, generator=gen(8)).run(3)
    assert not torch.equal(out[0][0], other[0])
    # Independence: the contingency table of walker pairs (2k, 2k+1) after one step.
    s = SRRW(graph, 2.0, walkers=20000, start=1, generator=gen(9))
    nodes = s.step()
    a, b = nodes[0::2], nodes[1::2]
    values = torch.unique(nodes)
    table = torch.stack([torch.stack([((a == u) & (b == v)).sum() for v in values])
                         for u in values])
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("a", [1.0, 0.7])
def test_measure_bookkeeping_matches_the_recursion(a):
    graph = small_graph()
    s = SRRW(graph, 3.0, walkers=3, gamma_exponent=a, generator=gen(11))
    x = s.target.expand(3, -1).clone()
    for n in range(200):
        nodes = s.step()
        g = (n + 2.0) ** -a
        x = (1 - g) * x
        x[torch.arange(3), nodes] += g
    assert torch.allclose(s.empirical_measure, x, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_long_generalized_run_stays_finite(dtype):
    # a = 0.55 forgets x_0 fast: the rescaling of y must be renormalised many times.
    s = SRRW(nx.cycle_graph(7), 10.0, walkers=2, gamma_exponent=0.55, dtype=dtype,
             generator=gen(1))
    _, x = s.run(4000)
    assert x.dtype == dtype and torch.isfinite(x).all()
    assert torch.allclose(x.sum(-1), torch.ones(2, dtype=dtype), atol=1e-5)
    assert (x - 1 / 7).abs().max() < 0.05


@st.composite
def connected_graphs(draw):
    n = draw(st.integers(4, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    graph = nx.random_labeled_tree(n, seed=seed)
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=8))
    graph.add_edges_from((u, v) for u, v in extra if u != v)
    return graph


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=connected_graphs(), alpha=st.sampled_from([0.0, 1.0, 5.0]),
       base=st.sampled_from(["mhrw", "srw"]), seed=st.integers(0, 1000))
def test_empirical_measure_converges_to_target(graph, alpha, base, seed):
    s = SRRW(graph, alpha, base=base, walkers=32, generator=gen(seed))
    tv = []
    for steps in (200, 1800):
        _, x = s.run(steps)
        tv.append(0.5 * (x - s.target).abs().sum(-1).mean().item())
    assert tv[1] < 0.1
    assert tv[1] < tv[0] + 0.01


def test_nbrw_never_backtracks_and_converges():
    graph = small_graph()  # has a leaf, where going back is the only move
    w = NonBacktrackingWalk(graph, walkers=64, generator=gen(2))
    deg = w.graph.degree
    prev, cur = torch.full((64,), -1), w.current.clone()
    for _ in range(300):
        nxt = w.step()
        assert ((nxt != prev) | (deg[cur] == 1)).all()
        assert w.chain.dense()[cur, nxt].gt(0).all()  # moves along edges
        prev, cur = cur, nxt
    _, x = w.run(3000)
    assert 0.5 * (x - w.target).abs().sum(-1).mean() < 0.1


def test_nbrw_reproducible():
    a = NonBacktrackingWalk(small_graph(), walkers=8, generator=gen(4)).run(50)
    b = NonBacktrackingWalk(small_graph(), walkers=8, generator=gen(4)).run(50)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_labels_and_start():
    graph = nx.relabel_nodes(nx.petersen_graph(), lambda v: f"n{v}")
    s = SRRW(graph, 1.0, walkers=2, start="n3", generator=gen())
    assert s.nodes == list(graph.nodes) and s.current.tolist() == [3, 3]
    s = SRRW(graph, 1.0, walkers=2, start=["n1", "n2"], generator=gen())
    assert s.current.tolist() == [1, 2]


@pytest.mark.parametrize("kwargs, argument", [
    (dict(graph=nx.Graph([(0, 1), (2, 3)])), "connected"),
    (dict(graph=nx.DiGraph([(0, 1), (1, 0)])), "undirected"),
    (dict(graph="not a graph"), "graph"),
    (dict(alpha=-1.0), "alpha"),
    (dict(alpha=math.inf), "alpha"),
    (dict(alpha=math.nan), "alpha"),
    (dict(target=[1.0] * 9 + [0.0]), "target"),
    (dict(target=[1.0] * 3), "target"),
    (dict(target={0: 1.0}), "target"),
    (dict(base="srw", target=[1.0] * 10), "target"),
    (dict(gamma_exponent=0.5), "gamma_exponent"),
    (dict(gamma_exponent=1.2), "gamma_exponent"),
    (dict(gamma_exponent=0.0), "gamma_exponent"),
    (dict(base="nbrw"), "NonBacktrackingWalk"),
    (dict(base="uniform"), "base"),
    (dict(walkers=0), "walkers"),
    (dict(start=99), "start"),
    (dict(dtype=torch.int32), "dtype"),
])
def test_bad_input_raises_naming_the_argument(kwargs, argument):
    args = dict(graph=nx.petersen_graph(), alpha=1.0) | kwargs
    graph, alpha = args.pop("graph"), args.pop("alpha")
    with pytest.raises(ValueError, match=argument):
        SRRW(graph, alpha, **args)


def test_run_rejects_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        SRRW(nx.petersen_graph(), 1.0).run(-1)


def test_graph_conversion_matches_networkx():
    graph = small_graph()
    graph.add_edge(4, 4)  # self-loops are ignored
    g = Graph.from_networkx(graph)
    for i, v in enumerate(g.nodes):
        row = g.indices[g.indptr[i]:g.indptr[i + 1]].tolist()
        assert row == sorted(g.nodes.index(u) for u in graph.neighbors(v) if u != v)
    assert BaseChain.simple(g).dense().sum(1).sub(1).abs().max() < 1e-15


def test_a_hand_built_base_chain_is_validated():
    g = Graph.from_networkx(nx.cycle_graph(5))
    rows, cols = g.row_ids(), g.indices
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    half = torch.full((10,), 0.5, dtype=torch.float64)
    BaseChain(g, g.indptr, g.indices, half, uniform, "symmetric")  # reversible: accepted
    drift = torch.where(cols == (rows + 1) % 5, 0.9, 0.1).to(torch.float64)
    with pytest.raises(ValueError, match="reversible"):  # stationary but not reversible
        BaseChain(g, g.indptr, g.indices, drift, uniform, "rotating")
    with pytest.raises(ValueError, match="edges"):
        BaseChain(g, g.indptr, (g.indices + 1) % 5, half, uniform, "off-graph")
    with pytest.raises(ValueError, match="sum to 1"):
        BaseChain(g, g.indptr, g.indices, half * 0.9, uniform, "leaky")
