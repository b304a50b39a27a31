"""Correctness of the SRRW sampler and its walks (samplers/random_walks.py, stepping/walks.py)."""

import math
import re

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from stochstep.samplers import SRRW, NonBacktrackingWalk
from stochstep.stepping import walks
from stochstep.stepping.walks import (BaseChain, Graph, PeriodicChainWarning, PowerGamma,
                                      SelfRepellentWalk)

pytestmark = pytest.mark.usefixtures("one_thread")  # many small tensor ops


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


@pytest.mark.filterwarnings("ignore::stochstep.stepping.walks.PeriodicChainWarning")  # trees, SRW
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
    # no label is an int here, so an int is unambiguously a node id
    assert SRRW(graph, 1.0, walkers=2, start=4, generator=gen()).current.tolist() == [4, 4]
    with pytest.raises(ValueError, match="start: 10 is neither a node label nor a node id"):
        SRRW(graph, 1.0, start=10)


def test_tuple_labels_are_nodes_not_sequences():
    grid = nx.grid_2d_graph(3, 4)  # labels (i, j)
    order = list(grid.nodes)
    s = SRRW(grid, 1.0, walkers=3, start=(1, 2), generator=gen())
    assert s.current.tolist() == [order.index((1, 2))] * 3
    s = SRRW(grid, 1.0, walkers=2, start=[(0, 0), (2, 3)], generator=gen())
    assert s.current.tolist() == [order.index((0, 0)), order.index((2, 3))]
    with pytest.raises(ValueError, match=r"start: \(5, 5\) is not a node"):
        SRRW(grid, 1.0, start=(5, 5))
    with pytest.raises(ValueError, match="start has 2 entries but there are 3 walkers"):
        SRRW(grid, 1.0, walkers=3, start=[(0, 0), (2, 3)])


def test_int_labels_go_through_the_node_order():
    graph = nx.Graph([(5, 3), (3, 0), (0, 5), (0, 7)])  # node order 5, 3, 0, 7
    s = SRRW(graph, 1.0, walkers=2, start=[0, 7], generator=gen())
    assert s.current.tolist() == [2, 3] and [s.nodes[i] for i in s.current] == [0, 7]
    assert SRRW(graph, 1.0, walkers=2, start=torch.tensor(5), generator=gen()).current.tolist() \
        == [0, 0]
    with pytest.raises(ValueError, match="start: 1 is not a node of the graph .ints are labels"):
        SRRW(graph, 1.0, start=1)  # an id 1 would be ambiguous with the int labels
    for bad in ([5, 3, 0], torch.tensor([5, 3, 0]), True, 2.5, torch.tensor([0.0, 1.0])):
        with pytest.raises(ValueError, match="start"):
            SRRW(graph, 1.0, walkers=2, start=bad)


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
    for bad in (-half, half * math.nan, half[:3]):
        with pytest.raises(ValueError, match="weights must hold one finite weight > 0"):
            Graph(g.indptr, g.indices, weights=bad)


# -- periodic base chains -------------------------------------------------------------------
@pytest.mark.parametrize("graph, base, periodic", [
    (nx.cycle_graph(6), "srw", True), (nx.cycle_graph(6), "mhrw", True),  # regular: no loops
    (nx.grid_2d_graph(3, 4), "srw", True), (nx.cycle_graph(5), "srw", False),
    (nx.grid_2d_graph(3, 4), "mhrw", False),  # degrees differ: MH keeps self-loops
    (small_graph(), "srw", False)])
def test_periodic_base_chains_are_flagged(graph, base, periodic):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = SRRW(graph, 2.0, base=base, generator=gen())
    flagged = [w for w in caught if issubclass(w.category, PeriodicChainWarning)]
    assert s.chain.is_periodic == periodic and len(flagged) == int(periodic)
    if periodic:
        assert "aperiodic" in str(flagged[0].message) and "lazy" in str(flagged[0].message)


def test_a_periodic_srrw_still_converges_and_lazy_fixes_the_period():
    """SRW on a bipartite grid: every move changes side (period 2), yet x_n -> mu; the lazy
    chain (1 - h) P + h I has the same target, is reversible and is not flagged."""
    grid = nx.grid_2d_graph(3, 4)
    side = torch.tensor([(i + j) % 2 for i, j in grid.nodes])
    with pytest.warns(PeriodicChainWarning):
        s = SRRW(grid, 3.0, base="srw", walkers=16, generator=gen(1))
    for _ in range(50):
        before = side[s.current]
        assert (side[s.step()] != before).all()
    _, x = s.run(3000)
    assert 0.5 * (x - s.target).abs().sum(-1).mean() < 0.05
    chain = s.chain.lazy(0.25)
    assert not chain.is_periodic and torch.equal(chain.target, s.chain.target)
    p = s.chain.dense()
    torch.testing.assert_close(chain.dense(), 0.75 * p + 0.25 * torch.eye(12, dtype=p.dtype))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", PeriodicChainWarning)
        lazy = SRRW(grid, 3.0, base=chain, walkers=16, generator=gen(1))
        NonBacktrackingWalk(grid, generator=gen())  # the NBRW is no SRRW: not flagged
    _, x = lazy.run(3000)
    assert 0.5 * (x - lazy.target).abs().sum(-1).mean() < 0.05
    with pytest.raises(ValueError, match="holding"):
        s.chain.lazy(1.0)
    with pytest.raises(ValueError, match="base"):
        SRRW(nx.cycle_graph(5), 1.0, base=chain)  # a chain on another graph


# -- the draw ---------------------------------------------------------------------------------
def _segments(lengths):
    length = torch.tensor(lengths)
    return length.cumsum(0) - length, length


def test_draw_frequencies_match_the_weights_chi_square():
    """Many rows of awkward weights (zeros first, last and inside, a 1e-3 one, unequal rows),
    drawn with independent uniforms: each row's counts against its probabilities."""
    rows = [[0.0, 1.0, 2.0], [3.0, 0.0, 1.0, 0.0], [1.0], [0.5, 0.5, 1e-3, 2.0, 0.0],
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    reps = 4000
    weights = torch.tensor([w for _ in range(reps) for row in rows for w in row],
                           dtype=torch.float64)
    first, length = _segments([len(r) for _ in range(reps) for r in rows])
    u = torch.rand(length.numel(), dtype=torch.float64, generator=gen(3))
    pos = walks._draw(weights.clone(), first, length, u)
    offset = (pos - first).view(reps, len(rows))
    for k, row in enumerate(rows):
        w = torch.tensor(row, dtype=torch.float64)
        counts = torch.bincount(offset[:, k], minlength=len(row)).to(torch.float64)
        assert counts[w == 0].sum() == 0  # never a zero weight
        keep = w > 0
        if keep.sum() > 1:
            assert stats.chisquare(counts[keep], reps * w[keep] / w.sum()).pvalue > 1e-3


def test_draw_is_exact_after_many_rows_and_never_picks_a_zero_weight():
    """The rows after 10^6 of mass: a plain running sum over all rows (the earlier draw) has
    a rounding step of ~1e-10 there, so it cannot tell 1 from 1 + 1e-12, and its clamp sent
    u -> 1 to a trailing zero-weight slot."""
    big = 100_000  # rows of 10 ones: 10^6 of mass before the rows under test
    weights = torch.cat([torch.ones(10 * big, dtype=torch.float64),
                         torch.tensor([1.0, 1e-12, 1.0, 1.0, 0.0, 0.0, 1.0],
                                      dtype=torch.float64)])
    first, length = _segments([10] * big + [3, 2, 2])
    u = torch.full((big + 3,), 0.5, dtype=torch.float64)
    u[big] = 0.5 + 1e-13  # u * total = 1 + 7e-13: past slot 0 (1), inside slot 1 (1e-12)
    u[big + 1] = 1 - 2.0 ** -53  # the largest uniform: slot 0 of [1, 0], never the zero
    u[big + 2] = 0.0  # the smallest: the first positive slot of [0, 1]
    pos = walks._draw(weights, first, length, u)
    assert (pos[big:] - first[big:]).tolist() == [1, 0, 1]
    assert walks._draw_row([1.0, 0.0, 0.0], 1 - 2.0 ** -53) == 0
    assert walks._draw_row([0.0, 2.0, 0.0], 0.0) == 1


# -- one walker: the Python path -------------------------------------------------------------
@pytest.mark.parametrize("graph, base, alpha, dtype", [
    (small_graph(), "mhrw", 3.0, torch.float64), (small_graph(), "srw", 0.0, torch.float64),
    (nx.star_graph(60), "mhrw", 5.0, torch.float64),  # a hub row longer than _LONG_ROW
    (nx.star_graph(60), "mhrw", 0.0, torch.float32),
    (nx.connected_watts_strogatz_graph(30, 4, 0.3, seed=1), "mhrw", 20.0, torch.float32)])
def test_one_walker_python_path_matches_the_batched_step(graph, base, alpha, dtype):
    chain = (BaseChain.simple if base == "srw" else BaseChain.metropolis_hastings)(
        Graph.from_networkx(graph))
    fast, batched, blocks = (SelfRepellentWalk(chain, alpha, gamma=PowerGamma(0.7), dtype=dtype,
                                               generator=gen(4)) for _ in range(3))
    nodes = [int(fast.step()) for _ in range(1500)]
    other = []
    for _ in range(1500):
        batched._step_batched()  # the lockstep computation, for one walker
        other.append(int(batched.current[0]))
    blocks.advance(1500)
    assert nodes == other and torch.equal(fast.y, batched.y) and fast.y.dtype == dtype
    assert torch.equal(blocks.y, fast.y) and blocks.current_id() == nodes[-1]
    assert torch.equal(blocks.generator.get_state(), fast.generator.get_state())
    assert blocks.steps == fast.steps == 1500 and blocks.scale == fast.scale


# -- edge weights -----------------------------------------------------------------------------
def weighted_graph(attribute="weight"):
    """small_graph() with weights 0.25, 1, 4 in turn: weighted degrees far from the degrees."""
    graph = small_graph()
    for k, (u, v) in enumerate(graph.edges):
        graph[u][v][attribute] = (0.25, 1.0, 4.0)[k % 3]
    return graph


def adjacency(graph, weight="weight"):
    """networkx's own weighted adjacency matrix, self-loops dropped."""
    a = torch.tensor(nx.to_numpy_array(graph, nodelist=list(graph.nodes), weight=weight))
    return a.fill_diagonal_(0)


@pytest.mark.parametrize("walkers", [1, 5])
@pytest.mark.parametrize("base", ["mhrw", "srw"])
def test_weight_none_is_the_unweighted_walk_bit_for_bit(base, walkers):
    """weight=None on a weighted graph, and a graph whose weights are all 1, give the chain
    of the bare graph (P = 1/d_i on edges, exactly) and the same walk, bit for bit."""
    bare = small_graph()
    ones = small_graph()
    nx.set_edge_attributes(ones, 1.0, "weight")
    runs = [SRRW(g, 3.0, base=base, walkers=walkers, gamma_exponent=0.8, weight=w,
                 generator=gen(4)) for g, w in [(bare, "weight"), (weighted_graph(), None),
                                                 (ones, "weight")]]
    deg = torch.tensor([d for _, d in bare.degree], dtype=torch.float64)
    if base == "srw":
        torch.testing.assert_close(runs[0].chain.dense(), adjacency(bare) / deg[:, None],
                                   rtol=0, atol=0)
        torch.testing.assert_close(runs[0].target, deg / deg.sum(), rtol=0, atol=0)
    else:
        torch.testing.assert_close(runs[0].chain.dense(), mhrw_by_hand(bare), rtol=0,
                                   atol=1e-15)
    out = [r.run(200) for r in runs]
    for r, (nodes, x) in zip(runs[1:], out[1:]):
        assert r.graph.weights is None and r.chain.name == base
        assert torch.equal(r.chain.probs, runs[0].chain.probs)
        assert torch.equal(nodes, out[0][0]) and torch.equal(x, out[0][1])


def test_real_weights_numpy_keeps_as_objects_are_read_as_floats():
    """A Fraction or an int beyond int64 is a weight networkx accepts; numpy holds them as
    objects, which must not be mistaken for a non-numeric weight."""
    from fractions import Fraction
    graph = nx.path_graph(3)
    graph[0][1]["weight"], graph[1][2]["weight"] = Fraction(1, 2), 2**70
    p = Graph.from_networkx(graph).weights
    assert p.tolist() == [0.5, 0.5, 2.0**70, 2.0**70]


def test_weighted_srw_is_stationary_at_the_weighted_degrees():
    """P_ij = w_ij / W_i from networkx's adjacency; mu_i = W_i / sum W, networkx's weighted
    degree: stationary and reversible, exactly; and the walk's empirical measure goes there,
    not to the unweighted d_i / 2|E|."""
    graph = weighted_graph("strength")
    s = SRRW(graph, 0.0, base="srw", weight="strength", generator=gen(6))
    a = adjacency(graph, "strength")
    total = a.sum(1)
    torch.testing.assert_close(s.chain.dense(), a / total[:, None], rtol=1e-15, atol=0)
    nx_degree = torch.tensor([d for _, d in graph.degree(weight="strength")],
                             dtype=torch.float64)
    mu = s.target
    torch.testing.assert_close(mu, nx_degree / nx_degree.sum(), rtol=1e-15, atol=0)
    p = s.chain.dense()
    torch.testing.assert_close(mu @ p, mu, rtol=1e-14, atol=0)
    torch.testing.assert_close(mu[:, None] * p, (mu[:, None] * p).T, rtol=1e-14, atol=0)
    degree_mu = SRRW(graph, 0.0, base="srw", weight=None).target
    assert 0.5 * (mu - degree_mu).abs().sum() > 0.15  # the weights matter here
    for alpha in (0.0, 3.0):
        s = SRRW(graph, alpha, base="srw", walkers=200, weight="strength", generator=gen(6))
        _, x = s.run(600)
        assert 0.5 * (x.mean(0) - mu).abs().sum() < 0.02  # 200 walks of 600 steps


def test_weighted_mhrw_proposes_from_the_weighted_walk_and_keeps_its_target():
    """P_ij = w_ij min(1/W_i, mu_j / (mu_i W_j)), the rest on the self-loop: reversible
    towards the target (uniform or given), whatever the weights."""
    graph = weighted_graph()
    a = adjacency(graph)
    total = a.sum(1)
    for target in (None, {v: 1.0 + v % 4 for v in graph.nodes}):
        s = SRRW(graph, 1.0, target=target, generator=gen())
        mu = s.target
        p = a * torch.minimum(1 / total[:, None], mu[None, :] / (mu[:, None] * total[None, :]))
        p += torch.diag(1 - p.sum(1))
        torch.testing.assert_close(s.chain.dense(), p, rtol=1e-14, atol=1e-16)
        torch.testing.assert_close(mu @ s.chain.dense(), mu, rtol=1e-14, atol=0)
        assert s.chain.name == "weighted mhrw"
    torch.testing.assert_close(SRRW(graph, 1.0).target, torch.full((13,), 1 / 13,
                                                                   dtype=torch.float64))


def test_a_multigraph_collapses_parallel_edges_summing_their_weights():
    """As nx.to_scipy_sparse_array: parallel edges are one edge weighing their sum; with
    weight=None, their number. The SRW's mu is then networkx's (multi)degree."""
    multi = nx.MultiGraph([(0, 1), (0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (0, 2), (0, 2)])
    multi.add_edge(1, 2, weight=2.5)  # the other parallel edges weigh 1 (no attribute)
    for weight in ("weight", None):
        s = SRRW(multi, 0.0, base="srw", weight=weight, generator=gen())
        a = torch.tensor(nx.to_scipy_sparse_array(multi, weight=weight).toarray(),
                         dtype=torch.float64)
        torch.testing.assert_close(s.chain.dense(), a / a.sum(1, keepdim=True), rtol=1e-15,
                                   atol=0)
        deg = torch.tensor([d for _, d in multi.degree(weight=weight)], dtype=torch.float64)
        torch.testing.assert_close(s.target, deg / deg.sum(), rtol=1e-15, atol=0)
    collapsed = nx.Graph()
    collapsed.add_weighted_edges_from([(0, 1, 2.0), (1, 2, 3.5), (2, 3, 1.0), (3, 0, 1.0),
                                       (0, 2, 3.0)])
    assert Graph.from_networkx(multi).equals(Graph.from_networkx(collapsed))


def test_zero_weight_edges_are_absent_and_self_loop_weights_ignored():
    graph = nx.cycle_graph(4)
    nx.set_edge_attributes(graph, 2.0, "weight")
    graph.add_edge(1, 1, weight=7.0)  # self-loops are ignored, with their weight
    graph[0][1]["weight"] = 0.0
    path = nx.Graph()
    path.add_nodes_from(range(4))
    path.add_weighted_edges_from([(1, 2, 2.0), (2, 3, 2.0), (3, 0, 2.0)])
    g = Graph.from_networkx(graph)
    assert g.equals(Graph.from_networkx(path)) and (g.weights == 2.0).all()
    assert not g.equals(Graph.from_networkx(path, weight=None))
    graph[2][3]["weight"] = 0.0
    with pytest.raises(ValueError, match="connected.*edges of weight 0 do not count"):
        Graph.from_networkx(graph)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf, "2", None, 1j])
def test_bad_edge_weights_raise_naming_the_edge(bad):
    graph = nx.relabel_nodes(small_graph(), lambda v: f"n{v}")
    graph["n3"]["n0"]["weight"] = bad
    edge = "('n0', 'n3')" if ("n0", "n3") in graph.edges else "('n3', 'n0')"
    with pytest.raises(ValueError, match=re.escape(f"edge {edge} has weight {bad!r}")):
        SRRW(graph, 1.0)
    SRRW(graph, 1.0, weight=None)  # ignored on request


def test_a_node_whose_edges_weigh_zero_is_named():
    graph = nx.path_graph(["a", "b", "c"])
    graph.add_edge("c", "a")
    nx.set_edge_attributes(graph, 0.0, "w")
    graph["a"]["b"]["w"] = 1.0
    with pytest.raises(ValueError, match="node 'c': the weights .'w'. of its edges sum to 0"):
        Graph.from_networkx(graph, weight="w")


@pytest.mark.parametrize("weight", [3, ("weight",), b"weight"])
def test_weight_must_name_an_attribute_or_be_none(weight):
    with pytest.raises(ValueError, match="weight must be the name of an edge attribute"):
        SRRW(small_graph(), 1.0, weight=weight)


def test_a_base_chain_must_carry_the_graphs_weights():
    graph = weighted_graph()
    bare = BaseChain.simple(Graph.from_networkx(graph, weight=None))
    with pytest.raises(ValueError, match="base: this BaseChain is built on another graph"):
        SRRW(graph, 1.0, base=bare)
    SRRW(graph, 1.0, base=bare, weight=None)
    SRRW(graph, 1.0, base=BaseChain.simple(Graph.from_networkx(graph)))


def test_nbrw_refuses_edge_weights_unless_told_to_ignore_them():
    graph = weighted_graph()
    with pytest.raises(ValueError, match="weight: .*pass weight=None"):
        NonBacktrackingWalk(graph)
    a = NonBacktrackingWalk(graph, weight=None, walkers=3, generator=gen(1)).run(50)
    b = NonBacktrackingWalk(small_graph(), walkers=3, generator=gen(1)).run(50)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    multi = nx.MultiGraph(small_graph())
    NonBacktrackingWalk(multi, generator=gen())  # no parallel edge: nothing to refuse
    multi.add_edge(0, 1)
    for weight in ("weight", None):
        with pytest.raises(ValueError, match=r"parallel edges .*nx\.Graph\(graph\)"):
            NonBacktrackingWalk(multi, weight=weight)
