"""SASRRW and simulate_token: hand-computed steps, order of operations, importance weights,
step-size regimes, resumption, and convergence to theta* on distributed logistic regression."""

from __future__ import annotations

import datetime
import io
import os
import socket

import networkx as nx
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stochstep.optimizers import SASRRW
from stochstep.optimizers.srrw import (LogisticProblem, load_token_state, logistic_grad,
                                       make_token_walk, run_token_ring, simulate_token,
                                       token_state)
from stochstep.stepping.walks import BaseChain, Graph, PowerGamma, SelfRepellentWalk


pytestmark = pytest.mark.usefixtures("one_thread")  # many small tensor ops


def _graph():
    g = nx.path_graph(4)
    g.add_edge(1, 3)  # degrees 1, 3, 2, 2; |E| = 4
    return g


KW = dict(lr=0.5, alpha=2.0, gamma_exponent=0.7, lr_exponent=0.9)


def _run_quadratic(opt, theta, centers, steps):
    nodes = []
    for _ in range(steps):
        nodes.append(opt.node)
        opt.zero_grad()
        (0.5 * (theta - centers[opt.node]) ** 2).sum().backward()
        opt.step()
    return nodes


def test_steps_by_hand_gradient_at_the_node_the_token_moved_to():
    centers = torch.tensor([[0.0], [1.0], [-2.0], [4.0]], dtype=torch.float64)
    theta = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
    opt = SASRRW([theta], _graph(), base="srw", generator=torch.Generator().manual_seed(3), **KW)
    # The constructor already moved the token once: node is X_1 of the shared walk construction.
    walk, w = make_token_walk(_graph(), alpha=2.0, gamma_exponent=0.7, base="srw",
                              generator=torch.Generator().manual_seed(3))
    assert opt.node == int(walk.current[0]) and opt.num_steps == 0
    deg = torch.tensor([1.0, 3.0, 2.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(opt.importance_weights, 2 * 4 / (4 * deg), rtol=0, atol=0)

    t, x = 0.3, torch.full((4,), 0.0, dtype=torch.float64)
    x = deg / deg.sum()  # x_0 = mu
    x = x + 2.0 ** -0.7 * (torch.eye(4, dtype=torch.float64)[opt.node] - x)  # x_1
    adjacency = nx.to_numpy_array(_graph(), nodelist=range(4)) + torch.eye(4).numpy()
    for k in range(1, 8):
        i = opt.node
        torch.testing.assert_close(opt.empirical_measure, x)
        opt.zero_grad()
        (0.5 * (theta - centers[i]) ** 2).sum().backward()
        opt.step()
        t = t - KW["lr"] * (k + 1) ** -0.9 * (t - float(centers[i])) * 8 / (4 * float(deg[i]))
        assert theta.item() == pytest.approx(t, rel=1e-14, abs=1e-15)
        j = opt.node
        assert adjacency[i, j] > 0 and j != i  # SRW has no self-loops: the token moved
        x = x + (k + 2.0) ** -0.7 * (torch.eye(4, dtype=torch.float64)[j] - x)
    assert opt.num_steps == 7


@pytest.mark.filterwarnings(  # an SRW on a star
    "ignore::stochstep.stepping.walks.PeriodicChainWarning")
def test_importance_weights_under_mhrw_are_one_and_srw_corrects_degree():
    star = nx.star_graph(4)  # centre degree 4, leaves 1; |E| = 4, N = 5
    p = torch.nn.Parameter(torch.zeros(1))
    mh = SASRRW([p], star, generator=torch.Generator().manual_seed(0), **KW)
    torch.testing.assert_close(mh.importance_weights, torch.ones(5, dtype=torch.float64))
    srw = SASRRW([p], star, base="srw", generator=torch.Generator().manual_seed(0), **KW)
    expected = torch.tensor([8 / 20] + [8 / 5] * 4, dtype=torch.float64)
    torch.testing.assert_close(srw.importance_weights, expected)


@pytest.mark.parametrize("a,b", [(0.6, 0.9), (0.8, 0.8), (0.9, 0.6), (1.0, 1.0)],
                         ids=["beta=o(gamma)", "beta=gamma", "gamma=o(beta)", "a=b=1"])
def test_every_regime_is_reachable_and_converges(a, b):
    centers = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    theta = torch.nn.Parameter(torch.zeros(1))
    opt = SASRRW([theta], _graph(), lr=0.5, alpha=3.0, gamma_exponent=a, lr_exponent=b,
                 base="srw", generator=torch.Generator().manual_seed(1))
    _run_quadratic(opt, theta, centers, 600)
    assert abs(theta.item() - 1.5) < 0.2  # minimiser of (1/N) sum_i f_i despite SRW's bias


@pytest.mark.parametrize("name", ["gamma_exponent", "lr_exponent"])
@pytest.mark.parametrize("value", [0.5, 0.2, 1.01, 0.0, float("nan"), "0.7"])
def test_exponents_outside_the_range_are_rejected(name, value):
    with pytest.raises(ValueError, match=name):
        SASRRW([torch.nn.Parameter(torch.zeros(1))], _graph(), **{**KW, name: value})


@pytest.mark.parametrize("kwargs,text", [
    (dict(alpha=-0.5), "alpha"),
    (dict(graph=nx.Graph([(0, 1), (2, 3)])), "connected"),
    (dict(graph=nx.DiGraph([(0, 1), (1, 0)])), "undirected"),
    (dict(base="nbrw"), "base"),
    (dict(lr=-1.0), "lr"),
])
def test_invalid_walk_arguments(kwargs, text):
    kw = {"graph": _graph(), **KW, **kwargs}
    with pytest.raises(ValueError, match=text):
        SASRRW([torch.nn.Parameter(torch.zeros(1))], **kw)


def _optimizer_run(prob, graph, steps, seed, **kw):
    theta = torch.nn.Parameter(torch.zeros(prob.dim, dtype=torch.float64))
    opt = SASRRW([theta], graph, generator=torch.Generator().manual_seed(seed), **kw)
    traj, nodes = [], []
    for _ in range(steps):
        i = opt.node
        nodes.append(i)
        # The agent's gradient with the same batched function simulate_token calls (R = 1).
        theta.grad = logistic_grad(theta.detach()[None], prob.features[i][None],
                                   prob.labels[i][None], prob.reg)[0]
        opt.step()
        traj.append(theta.detach().clone())
    return torch.stack(traj), torch.tensor(nodes), opt


@pytest.mark.parametrize("base", ["mhrw", "srw"])
def test_optimizer_reproduces_simulate_token_bit_for_bit(base):
    graph = nx.connected_watts_strogatz_graph(6, 2, 0.5, seed=2)
    prob = LogisticProblem.generate(6, samples=10, dim=3, seed=1)
    kw = dict(lr=1.5, alpha=4.0, gamma_exponent=0.6, lr_exponent=0.85, base=base)
    traj, nodes, _ = _optimizer_run(prob, graph, 40, seed=5, **kw)
    sim = simulate_token(graph, prob.grad, torch.zeros(3), runs=1, steps=40,
                         generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(sim.nodes[:, 0], nodes)
    assert torch.equal(sim.theta[1:, 0], traj)


def test_state_dict_resume_is_bit_identical():
    graph = nx.cycle_graph(5)
    prob = LogisticProblem.generate(5, samples=8, dim=2, seed=2)
    kw = dict(lr=1.0, alpha=2.0, gamma_exponent=0.7, lr_exponent=0.9, base="srw")
    theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = SASRRW([theta], graph, generator=torch.Generator().manual_seed(0), **kw)

    def advance(opt, theta, steps):
        out = []
        for _ in range(steps):
            i = opt.node
            theta.grad = prob.grad(theta.detach()[None], torch.tensor([i]))[0]
            opt.step()
            out.append((i, theta.detach().clone()))
        return out

    advance(opt, theta, 12)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved = theta.detach().clone()
    ahead = advance(opt, theta, 15)

    theta2 = torch.nn.Parameter(saved.clone())
    opt2 = SASRRW([theta2], graph, generator=torch.Generator().manual_seed(99), **kw)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    resumed = advance(opt2, theta2, 15)
    assert [i for i, _ in ahead] == [i for i, _ in resumed]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(ahead, resumed))
    assert torch.equal(opt.empirical_measure, opt2.empirical_measure)


def test_same_seed_same_run_other_seed_other_walk():
    prob = LogisticProblem.generate(6, samples=8, dim=2, seed=0)
    graph = nx.wheel_graph(6)
    kw = dict(lr=1.0, alpha=1.0, gamma_exponent=0.8, lr_exponent=0.9)
    a = _optimizer_run(prob, graph, 30, seed=1, **kw)
    b = _optimizer_run(prob, graph, 30, seed=1, **kw)
    c = _optimizer_run(prob, graph, 30, seed=2, **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_logistic_optimum_is_exact():
    prob = LogisticProblem.generate(8, samples=20, dim=4, seed=3)
    star = prob.solve()
    assert float(prob.full_grad(star).abs().max()) < 1e-13
    # and it minimises f: any small perturbation increases the loss
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        d = 1e-3 * torch.randn(4, generator=gen, dtype=torch.float64)
        assert prob.loss(star + d) > prob.loss(star)


def test_converges_to_theta_star_and_repellence_helps_in_regime_one():
    """Hu, Doshi, Eun: with beta = o(gamma), larger alpha lowers the error of theta_n."""
    graph = nx.connected_watts_strogatz_graph(10, 4, 0.3, seed=1)
    prob = LogisticProblem.generate(10, samples=30, dim=4, seed=0)
    star = prob.solve()
    mse = {}
    for alpha in (0.0, 5.0):
        out = simulate_token(graph, prob.grad, torch.zeros(4), runs=20, steps=1500, lr=2.0,
                             alpha=alpha, gamma_exponent=0.6, lr_exponent=0.9, theta_star=star,
                             record_every=500, generator=torch.Generator().manual_seed(0))
        assert out.recorded.tolist() == [0, 500, 1000, 1500]
        mse[alpha] = out.mse
    assert mse[0.0][-1] < 1e-3 * mse[0.0][0]  # theta_n -> theta*
    assert mse[5.0][-1] < 0.3 * mse[0.0][-1]  # about 10x lower at alpha = 5


def test_simulate_token_validates_its_arguments():
    prob = LogisticProblem.generate(4, samples=5, dim=2, seed=0)
    kw = dict(lr=1.0, alpha=1.0, gamma_exponent=0.7, lr_exponent=0.9)
    with pytest.raises(ValueError, match="lr_exponent"):
        simulate_token(_graph(), prob.grad, torch.zeros(2), runs=2, steps=3,
                       **{**kw, "lr_exponent": 0.5})
    with pytest.raises(ValueError, match="runs"):
        simulate_token(_graph(), prob.grad, torch.zeros(2), runs=0, steps=3, **kw)
    with pytest.raises(ValueError, match="grad_fn"):
        simulate_token(_graph(), lambda t, n: t[:, :1], torch.zeros(2), runs=2,
                       steps=3, **kw)


# -- the token state: dtype and the settings it was made with --------------------------------
def _walk(alpha=2.0, a=0.7, base="mhrw", dtype=torch.float64, seed=0, graph=None):
    graph = Graph.from_networkx(graph if graph is not None else _graph())
    chain = BaseChain.metropolis_hastings(graph) if base == "mhrw" else BaseChain.simple(graph)
    return SelfRepellentWalk(chain, alpha, walkers=3, gamma=PowerGamma(a), dtype=dtype,
                             generator=torch.Generator().manual_seed(seed))


def test_load_token_state_keeps_a_float32_walk_float32_and_continues_bit_identically():
    walk = _walk(dtype=torch.float32)
    walk.advance(40)
    buf = io.BytesIO()
    torch.save(token_state(walk), buf)
    ahead = [walk.step().clone() for _ in range(30)]
    other = _walk(dtype=torch.float32, seed=9)
    y = other.y
    buf.seek(0)
    load_token_state(other, torch.load(buf, weights_only=True))
    assert other.y is y and other.y.dtype == torch.float32  # in place, in its dtype
    assert all(torch.equal(a, other.step()) for a in ahead)
    assert torch.equal(walk.y, other.y) and walk.steps == other.steps
    with pytest.raises(ValueError, match="dtype"):  # no silent float64 <-> float32 cast
        load_token_state(_walk(), token_state(other))


@pytest.mark.parametrize("kwargs, name", [(dict(alpha=3.0), "alpha"),
                                          (dict(a=0.8), "gamma_exponent"),
                                          (dict(base="srw"), "base")])
def test_load_token_state_refuses_a_token_made_with_other_settings(kwargs, name):
    state = token_state(_walk())
    assert float(state["alpha"]) == 2.0 and state["base"] == "mhrw"
    assert float(state["gamma_exponent"]) == 0.7
    with pytest.raises(ValueError, match=f"made with {name}="):
        load_token_state(_walk(**kwargs), state)
    load_token_state(_walk(seed=5), state)  # the same settings: fine


def test_token_state_records_the_sa_step_sizes_when_given():
    state = token_state(_walk(), lr=0.5, lr_exponent=0.9)
    load_token_state(_walk(), state, lr=0.5, lr_exponent=0.9)
    with pytest.raises(ValueError, match="made with lr_exponent=0.9"):
        load_token_state(_walk(), state, lr=0.5, lr_exponent=0.8)
    with pytest.raises(ValueError, match="made with lr=0.5"):
        load_token_state(_walk(), state, lr=1.0)
    old = {k: v for k, v in state.items()
           if k not in ("alpha", "base", "gamma_exponent", "lr", "lr_exponent")}
    load_token_state(_walk(alpha=7.0), old)  # an older state without settings: not checked


def test_sasrrw_refuses_a_state_dict_made_with_another_alpha():
    graph = nx.cycle_graph(5)
    opt = SASRRW([torch.nn.Parameter(torch.zeros(1))], graph,
                 generator=torch.Generator().manual_seed(0), **KW)
    other = SASRRW([torch.nn.Parameter(torch.zeros(1))], graph,
                   generator=torch.Generator().manual_seed(0), **{**KW, "alpha": 1.0})
    with pytest.raises(ValueError, match="alpha"):
        other.load_state_dict(opt.state_dict())


def test_sasrrw_start_takes_node_labels():
    grid = nx.grid_2d_graph(3, 3)  # tuple labels; MHRW on it is aperiodic (degrees differ)
    walk, _ = make_token_walk(grid, alpha=1.0, gamma_exponent=0.7, start=(1, 1),
                              generator=torch.Generator().manual_seed(0))
    opt = SASRRW([torch.nn.Parameter(torch.zeros(1))], grid, start=(1, 1),
                 generator=torch.Generator().manual_seed(0), **KW)
    assert opt.node == list(grid.nodes)[walk.current_id()]  # X_1, from X_0 = (1, 1)
    assert opt.node in list(grid.neighbors((1, 1))) + [(1, 1)]
    with pytest.raises(ValueError, match="start"):
        SASRRW([torch.nn.Parameter(torch.zeros(1))], grid, start=(3, 3), **KW)


# -- edge weights -----------------------------------------------------------------------------
def _weighted():
    g = _graph()  # degrees 1, 3, 2, 2
    for (u, v), w in zip([(0, 1), (1, 2), (2, 3), (1, 3)], [4.0, 0.5, 1.0, 2.5]):
        g[u][v]["w"] = w
    return g  # weighted degrees 4, 7, 1.5, 3.5


@pytest.mark.parametrize("base", ["mhrw", "srw"])
def test_weights_reach_the_optimizer_and_simulate_token_alike(base):
    """SRW importance weights 1/(N mu_i) = sum W / (N W_i) from the weighted degrees; the
    optimizer and simulate_token on the weighted graph agree bit for bit and differ from
    weight=None."""
    graph = _weighted()
    opt = SASRRW([torch.nn.Parameter(torch.zeros(1))], graph, base=base, weight="w",
                 generator=torch.Generator().manual_seed(0), **KW)
    total = torch.tensor([4.0, 7.0, 1.5, 3.5], dtype=torch.float64)
    expected = total.sum() / (4 * total) if base == "srw" else torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(opt.importance_weights, expected, rtol=1e-15, atol=0)
    assert opt._walk.chain.name == f"weighted {base}"
    prob = LogisticProblem.generate(4, samples=10, dim=3, seed=1)
    kw = dict(lr=1.5, alpha=4.0, gamma_exponent=0.6, lr_exponent=0.85, base=base)
    runs = {}
    for weight in ("w", None):
        traj, nodes, _ = _optimizer_run(prob, graph, 40, seed=5, weight=weight, **kw)
        sim = simulate_token(graph, prob.grad, torch.zeros(3), runs=1, steps=40,
                             generator=torch.Generator().manual_seed(5), weight=weight, **kw)
        assert torch.equal(sim.nodes[:, 0], nodes) and torch.equal(sim.theta[1:, 0], traj)
        runs[weight] = nodes
    assert not torch.equal(runs["w"], runs[None])
    bare = _optimizer_run(prob, _graph(), 40, seed=5, **kw)[1]
    assert torch.equal(runs[None], bare)


def test_a_graph_with_weights_is_not_silently_read_without_them():
    g = Graph.from_networkx(_weighted(), weight="w")
    with pytest.raises(ValueError, match="weight=None asks to ignore edge weights"):
        SASRRW([torch.nn.Parameter(torch.zeros(1))], g, weight=None, **KW)
    with pytest.raises(ValueError, match="base: this BaseChain is built on another graph"):
        SASRRW([torch.nn.Parameter(torch.zeros(1))], _weighted(), weight="w",
               base=BaseChain.simple(Graph.from_networkx(_weighted(), weight=None)), **KW)
    with pytest.raises(ValueError, match=r"edge \(1, 2\) has weight -0.5"):
        bad = _weighted()
        bad[1][2]["w"] = -0.5
        simulate_token(bad, None, torch.zeros(1), runs=1, steps=1, lr=1.0, alpha=1.0,
                       gamma_exponent=0.7, lr_exponent=0.9, weight="w")


def _triangle():
    g = nx.Graph()
    g.add_weighted_edges_from([(0, 1, 6.0), (1, 2, 0.5), (2, 0, 1.0)], weight="w")
    return g


RING_KW = dict(steps=40, lr=1.5, alpha=3.0, gamma_exponent=0.6, lr_exponent=0.85, base="srw")


def _ring_agent(rank, port, out, weight):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=3, timeout=datetime.timedelta(seconds=60))
    try:
        prob = LogisticProblem.generate(3, samples=10, dim=2, seed=1)
        res = run_token_ring(_triangle(), lambda theta, n: prob.grad(theta[None],
                                                                    torch.tensor([rank]))[0],
                             torch.zeros(2), weight=weight,
                             generator=torch.Generator().manual_seed(3), **RING_KW)
        if rank == 0:
            torch.save(res, os.path.join(out, f"{weight}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three agent processes importing torch
def test_the_token_ring_walks_the_weighted_graph_as_simulate_token_does(tmp_path):
    mp.spawn(_ring_agent, args=(_free_port(), str(tmp_path), "w"), nprocs=3, join=True)
    got = torch.load(tmp_path / "w.pt")
    prob = LogisticProblem.generate(3, samples=10, dim=2, seed=1)
    sim = {weight: simulate_token(_triangle(), prob.grad, torch.zeros(2), runs=1, weight=weight,
                                  generator=torch.Generator().manual_seed(3), **RING_KW)
           for weight in ("w", None)}
    assert torch.equal(got["nodes"], sim["w"].nodes[:, 0])
    assert torch.equal(got["theta"], sim["w"].theta[1:, 0])
    assert not torch.equal(got["nodes"], sim[None].nodes[:, 0])  # the weights were used


# -- the registry's reference must catch a wrong walk -------------------------------------------
class _FlippedExponent(SelfRepellentWalk):
    """K_ij proportional to P_ij (x_j / mu_j)^(+alpha): the self-repellent exponent's sign
    flipped (a self-attracting walk)."""

    def __init__(self, chain, alpha, **kwargs):
        super().__init__(chain, alpha, **kwargs)
        self.alpha = -self.alpha
        self._log_c = chain.log_probs + self.alpha * self._log_mu[chain.indices]


class _LateMeasure(SelfRepellentWalk):
    """x_{n+1} updated with gamma_{n+2} instead of gamma_{n+1}."""

    def __init__(self, chain, alpha, *, gamma, **kwargs):
        super().__init__(chain, alpha, gamma=lambda n: gamma(n + 1), **kwargs)


@pytest.mark.parametrize("bug", [_FlippedExponent, _LateMeasure])
def test_the_reference_refuses_a_walk_with_a_bug(monkeypatch, bug):
    """The SASRRW reference recomputes the kernel rows, the draws (from the same uniforms)
    and the measure by hand: a walk with a flipped exponent or a late measure step fails
    it, in every reference case with alpha > 0 (the first case passes unpatched)."""
    from stochstep.optimizers import srrw
    from stochstep.stepping.registry import get

    info = get("SASRRW")
    params = [torch.tensor([0.5, -1.0], dtype=torch.float64)]

    def grad_fn(ps):
        return [2 * p for p in ps]

    cases = [kw for kw in info.reference_kwargs if kw["alpha"] > 0]
    assert len(cases) >= 3
    info.reference(params, grad_fn, 2, cases[0], torch.Generator().manual_seed(7))
    monkeypatch.setattr(srrw, "SelfRepellentWalk", bug)
    for kwargs in cases:
        with pytest.raises(AssertionError):
            info.reference(params, grad_fn, 2, kwargs, torch.Generator().manual_seed(7))
