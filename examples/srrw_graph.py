"""Self-repellent random walks on a real-world-shaped graph: sampling variance and SA-SRRW.

Two experiments on one graph (Zachary's karate club by default, or networkx's Les Miserables
co-occurrence graph, or a power-law cluster graph; nothing is downloaded):

1. **Sampling variance versus alpha.** Many SRRWs on a Metropolis-Hastings base chain
   (uniform target) run in lockstep; the estimator f^T x_n of the mean degree (f = degree) has
   variance n Var(f^T x_n) -> f^T V(alpha) f. Measured points (with standard errors) are plotted
   against the closed-form curve of ``stochstep.theory_checks.srrw.srrw_asymptotic_covariance``
   (Doshi, Hu, Eun, arXiv 2305.05097). The CLT is asymptotic: the larger alpha, the longer the
   walk must be before the measurement reaches the curve (at 10,000 steps on the karate club,
   alpha = 20 still reads about 25 % high).
2. **Token optimization.** L2-regularised logistic regression whose data are spread over the
   nodes; a token walks the graph and applies theta += beta_{n+1} H(theta, X_{n+1}) with
   H(theta, i) = -grad f_i(theta) / (N mu_i) (Hu, Doshi, Eun, arXiv 2401.09665). The token walks
   by SRW, MHRW, NBRW (non-backtracking, importance weights with its degree-proportional
   stationary law) or SRRW (alpha in a few values, MHRW base, gamma_n = (n+1)^-a with a < b:
   regime (i)). The MSE E||theta_n - theta*||^2 over independent runs is plotted against n.

Figures go to ``<out>/srrw_variance.png`` and ``<out>/srrw_optimization.png``; a summary table
is printed. Run from the repository root:

    python examples/srrw_graph.py                 # about a minute on one core
    python examples/srrw_graph.py --quick --out /tmp/srrw
    python examples/srrw_graph.py --graph lesmis --var-steps 80000   # slow: Les Mis mixes slowly
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.stepping.walks import (BaseChain, Graph, PowerGamma, SelfRepellentWalk,  # noqa: E402
                                      nonbacktracking_step)
from stochstep.theory_checks.srrw import (measure_srrw_variance,  # noqa: E402
                                          srrw_asymptotic_covariance)

GRAPHS = {
    "karate": nx.karate_club_graph,
    "lesmis": nx.les_miserables_graph,
    "powerlaw": lambda: nx.powerlaw_cluster_graph(60, 2, 0.3, seed=0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--graph", choices=sorted(GRAPHS), default="karate")
    p.add_argument("--alphas", type=float, nargs="+", default=[0, 1, 2, 5, 10, 20],
                   help="repellence strengths for the variance experiment")
    p.add_argument("--var-steps", type=int, default=10000, help="walk length (experiment 1)")
    p.add_argument("--var-walkers", type=int, default=400, help="independent walks per alpha")
    p.add_argument("--opt-alphas", type=float, nargs="+", default=[1, 5, 10],
                   help="SRRW alphas for the optimization experiment")
    p.add_argument("--opt-steps", type=int, default=10000, help="token steps (experiment 2)")
    p.add_argument("--opt-runs", type=int, default=100, help="independent tokens per method")
    p.add_argument("--gamma-exponent", type=float, default=0.55, help="a in gamma_n=(n+1)^-a")
    p.add_argument("--beta-exponent", type=float, default=0.8, help="b in beta_n=(n+1)^-b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.alphas, args.opt_alphas = [0, 2, 10], [5]
        args.var_steps, args.var_walkers, args.opt_steps, args.opt_runs = 300, 40, 300, 10
    return args


# ---------------------------------------------------------------- experiment 1: variance


def variance_experiment(chain: BaseChain, f: torch.Tensor, args, gen: torch.Generator):
    res = measure_srrw_variance(chain, args.alphas, steps=args.var_steps,
                                walkers=args.var_walkers, f=f, generator=gen,
                                progress=not args.no_progress)
    print(f"\nestimator of the mean degree: n Var(f^T x_n), n = {args.var_steps}, "
          f"{args.var_walkers} walks")
    print(f"{'alpha':>6} {'measured':>10} {'stderr':>8} {'closed form':>12} {'ratio':>6}")
    for r in res:
        print(f"{r.alpha:6g} {r.measured:10.4g} {r.stderr:8.2g} {r.predicted:12.4g} "
              f"{r.ratio:6.3f}")
    return res


def plot_variance(chain, f, res, args, name):
    # x axis: 1 + alpha on a log scale (smooth through alpha = 0), ticks labelled by alpha
    grid = torch.logspace(0, math.log10(1 + max(args.alphas) * 1.5), 150) - 1
    curve = [(f @ srrw_asymptotic_covariance(chain, None, float(a)) @ f).item() for a in grid]
    ticks = sorted(set(float(a) for a in args.alphas))
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw=dict(width_ratios=[3, 2]))
    ax.plot(1 + grid, curve, color="tab:blue", lw=2, label=r"closed form $f^\top V(\alpha) f$")
    a = [1 + r.alpha for r in res]
    ax.errorbar(a, [r.measured for r in res], yerr=[2 * r.stderr for r in res], fmt="o",
                color="tab:red", ms=6, capsize=3, zorder=3,
                label=f"measured ({args.var_walkers} walks of {args.var_steps:,} steps, ±2 s.e.)")
    for axis in (ax, axr):
        axis.set_xscale("log")
        axis.set_xticks([1 + t for t in ticks], [f"{t:g}" for t in ticks])
        axis.minorticks_off()
        axis.set_xlabel(r"repellence $\alpha$  (log scale in $1+\alpha$)")
    ax.set_yscale("log")
    ax.set_ylabel(r"$n\,\mathrm{Var}(f^\top x_n)$, $f$ = degree")
    ax.set_title(f"SRRW estimator variance on {name} (MHRW base)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False)
    axr.axhspan(0.9, 1.1, color="tab:green", alpha=0.12, label="±10 %")
    axr.axhline(1.0, color="k", lw=1)
    axr.errorbar(a, [r.ratio for r in res], yerr=[2 * r.stderr / r.predicted for r in res],
                 fmt="o", color="tab:red", capsize=3)
    axr.set_ylim(0.5, 1.6)
    axr.set_ylabel("measured / closed form")
    axr.set_title("agreement with the CLT covariance")
    axr.grid(True, which="major", alpha=0.3)
    axr.legend(frameon=False, loc="upper right")
    fig.tight_layout()
    path = args.out / "srrw_variance.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- experiment 2: optimization


def logistic_problem(n_nodes: int, gen: torch.Generator, per_node: int = 10, dim: int = 4,
                     reg: float = 0.1):
    """Node i holds (X_i, y_i) drawn around its own shifted mean, so the local optima differ."""
    shift = 1.5 * torch.randn(n_nodes, 1, dim, generator=gen, dtype=torch.float64)
    X = torch.randn(n_nodes, per_node, dim, generator=gen, dtype=torch.float64) + shift
    w_true = torch.randn(dim, generator=gen, dtype=torch.float64)
    p = torch.sigmoid(X @ w_true)
    y = (torch.rand(p.shape, generator=gen, dtype=torch.float64) < p).to(torch.float64)
    return X, y, reg


def local_grad(theta, X, y, reg):
    """grad f_i for each row: f_i(theta) = mean BCE over node i's data + reg/2 ||theta||^2."""
    p = torch.sigmoid((X @ theta.unsqueeze(-1)).squeeze(-1))
    return ((p - y).unsqueeze(-1) * X).mean(-2) + reg * theta


def solve_optimum(X, y, reg, iters: int = 50):
    """Newton's method on f = (1/N) sum_i f_i."""
    Xf, yf = X.reshape(-1, X.shape[-1]), y.reshape(-1)
    theta = torch.zeros(X.shape[-1], dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(Xf @ theta)
        g = Xf.T @ (p - yf) / len(yf) + reg * theta
        Hs = (Xf * (p * (1 - p))[:, None]).T @ Xf / len(yf) + reg * torch.eye(len(theta))
        theta = theta - torch.linalg.solve(Hs, g)
    return theta


def token_run(method: str, alpha: float, graph: Graph, problem, theta_star, args,
              gen: torch.Generator):
    """MSE E||theta_n - theta*||^2 over args.opt_runs tokens in lockstep, recorded on a log grid."""
    X, y, reg = problem
    n_nodes, runs = graph.num_nodes, args.opt_runs
    a, b = args.gamma_exponent, args.beta_exponent
    if method == "SRW":
        chain = BaseChain.simple(graph)
    else:
        chain = BaseChain.metropolis_hastings(graph)
    deg_mu = graph.degree.double() / graph.degree.sum()
    mu = deg_mu if method in ("SRW", "NBRW") else chain.target
    weight = 1.0 / (n_nodes * mu)
    if method == "NBRW":
        current = torch.multinomial(deg_mu, runs, replacement=True, generator=gen)
        previous = torch.full_like(current, -1)
        walk = None
    else:
        walk = SelfRepellentWalk(chain, alpha, walkers=runs, generator=gen,
                                 gamma=PowerGamma(a))
    theta = torch.zeros(runs, X.shape[-1], dtype=torch.float64)
    record = set(torch.unique(torch.logspace(0, math.log10(args.opt_steps), 60).long()).tolist())
    ns, mse = [], []
    label = method if method != "SRRW" else f"SRRW α={alpha:g}"
    for n in tqdm(range(args.opt_steps), desc=label, leave=False, disable=args.no_progress):
        if walk is None:
            current, previous = nonbacktracking_step(graph, current, previous, gen), current
            node = current
        else:
            node = walk.step()
        beta = (n + 2.0) ** -b
        theta -= (beta * weight[node])[:, None] * local_grad(theta, X[node], y[node], reg)
        if n + 1 in record:
            ns.append(n + 1)
            mse.append((theta - theta_star).pow(2).sum(-1).mean().item())
    return ns, mse


def optimization_experiment(graph: Graph, args, gen: torch.Generator):
    # the data come from their own generator: the same problem whatever the walks consumed
    problem = logistic_problem(graph.num_nodes, torch.Generator().manual_seed(args.seed + 1))
    theta_star = solve_optimum(*problem)
    methods = [("SRW", 0.0), ("NBRW", 0.0), ("MHRW", 0.0)]
    methods += [("SRRW", float(a)) for a in args.opt_alphas]
    curves = {}
    for method, alpha in tqdm(methods, desc="token methods", disable=args.no_progress):
        curves[(method, alpha)] = token_run(method, alpha, graph, problem, theta_star, args, gen)
    print(f"\nSA token optimization: MSE E||theta_n - theta*||^2 at n = {args.opt_steps} "
          f"({args.opt_runs} runs; beta_n = (n+1)^-{args.beta_exponent}, "
          f"gamma_n = (n+1)^-{args.gamma_exponent})")
    for (method, alpha), (_, mse) in curves.items():
        label = method if method != "SRRW" else f"SRRW alpha={alpha:g}"
        print(f"{label:>16} {mse[-1]:10.3e}")
    return curves


def plot_optimization(curves, args, name):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    fixed = {"SRW": ("tab:gray", "--"), "NBRW": ("tab:brown", ":"), "MHRW": ("k", "-")}
    srrw = [k for k in curves if k[0] == "SRRW"]
    cmap = plt.get_cmap("plasma")
    for (method, alpha), (ns, mse) in curves.items():
        if method == "SRRW":
            color = cmap(0.15 + 0.7 * srrw.index((method, alpha)) / max(1, len(srrw) - 1))
            ax.plot(ns, mse, color=color, lw=2, label=rf"SRRW $\alpha$={alpha:g}")
        else:
            color, ls = fixed[method]
            ax.plot(ns, mse, color=color, ls=ls, lw=1.8, label=f"{method} (α=0)"
                    if method == "MHRW" else method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("token steps $n$")
    ax.set_ylabel(r"MSE  $E\,\|\theta_n - \theta^*\|^2$")
    ax.set_title(f"SA-SRRW token logistic regression on {name}\n"
                 rf"$\beta_n=(n+1)^{{-{args.beta_exponent}}}$, "
                 rf"$\gamma_n=(n+1)^{{-{args.gamma_exponent}}}$, {args.opt_runs} runs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(frameon=False, ncol=2)
    fig.tight_layout()
    path = args.out / "srrw_optimization.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    G = GRAPHS[args.graph]()
    # The walks here are the unweighted ones (the NBRW's and the SRW's importance weights use
    # the degrees), although the karate club and Les Miserables graphs carry edge weights.
    graph = Graph.from_networkx(G, weight=None)
    name = f"{args.graph} (N={graph.num_nodes}, |E|={G.number_of_edges()})"
    print(f"graph: {name}")
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    chain = BaseChain.metropolis_hastings(graph)
    f = graph.degree.double()
    res = variance_experiment(chain, f, args, gen)
    p1 = plot_variance(chain, f, res, args, name)
    curves = optimization_experiment(graph, args, gen)
    p2 = plot_optimization(curves, args, name)
    print(f"\nsaved {p1} and {p2} ({time.time() - t0:.0f} s)")
    return res, curves


if __name__ == "__main__":
    main()
