"""Two-layer ReLU networks trained to a global optimum by convex optimization, against Adam.

On scikit-learn's bundled breast-cancer data and the digits 3 against 8 (standardized with the
training rows' statistics, a seeded stratified 70/30 split, labels -1/+1), a network
``Linear(d, m) + ReLU + Linear(m, 1, bias=False)`` is trained on the regularized objective

    sum_k 0.5 (f(x_k) - y_k)^2 + beta/2 (||W||^2 + ||b||^2 + ||a||^2)

in two ways:

* ``stochstep.optimizers.ConvexReLU(solver="cvxpy")`` solves the sampled convex program (group
  lasso plus cone constraints over the patterns of ``--patterns`` Gaussian directions) on the
  data with a column of ones appended, so the hidden bias is the last weight of each neuron and
  is penalized like the others. ``to_module()`` returns its network; the example checks that
  the network's regularized objective equals the convex optimum (the identity of the two
  programs at the recovered weights).
* Adam (full batch, cosine-decayed step) from ``--inits`` random initializations of the same
  width (the convex solution's neurons above 1e-4 of the largest), all run as one batch of
  independent problems (Adam is elementwise, so one Adam on the stacked weights is ``--inits``
  separate Adams).

The convex optimum is a lower bound for every network only over all activation patterns; the
program is exact over the sampled ones. The example reports that gap as it is: Adam's best
objective minus the convex optimum, and how many of the best Adam network's neurons have a
training pattern 1[X u >= 0] outside the sampled set. It then solves the convex program over
the best Adam network's own patterns. That network is a feasible point of this program with an
objective no smaller (its neurons give v_i or w_i = |a_j| u_j, and ||u_j|| |a_j| <= (||u_j||^2
+ a_j^2)/2), so its optimum certifies a lower bound below all the Adam runs, and it improves on
them.

It also runs ``ConvexReLU(solver="admm")`` on the breast-cancer program (same patterns) and
plots its primal and dual residuals per iteration against cvxpy's optimum, and compares, under
an l-infinity PGD attack written here, the convex adversarially trained network (hinge loss,
``robust_eps=--train-eps``, cvxpy) with PGD adversarial training by Adam of the same width and
the standard convex hinge network. These two fit with ``hidden_bias=True``, so the robust
program perturbs the features only, as the attack does.

One run of the defaults (152 s of CPU, 6 min wall on a loaded 2-core machine): the identity
holds to 5e-11 (relative); the sampled program is far from the global optimum in these
dimensions (d = 30 and 64): the best of 20 Adam runs reaches 7.58 against the convex 22.32 on
breast cancer, and 2.03 against 4.80 on digits, and all of the best Adam network's neurons have
patterns outside the 50 sampled ones; on those patterns the convex optimum is 7.559 and 2.022,
below every Adam run (test accuracy 0.965 and 1.000). The ADMM's primal residual falls like
k^-1.03 over 300 iterations, not geometrically, and its objective is still 20 % below cvxpy's
(constraints not yet met). Convex adversarial training holds PGD accuracy better than the
standard convex network (0.77 against 0.41 at radius 0.2 on breast cancer, 0.88 against 0.82
on digits) but stays below PGD training by Adam (0.84 and 0.97), which may use any pattern,
while the convex program is held to 20 sampled patterns that the perturbation may not change.
(With the ones column perturbed too, before ``hidden_bias``, the robust network scored 0.78 and
0.89: the more conservative program was no worse.)

Files: ``<out>/convex_relu_objective.png`` (Adam's objective curves against the convex optima),
``<out>/convex_relu_admm.png`` (ADMM's residuals), ``<out>/convex_relu_robust.png`` (clean and
PGD accuracy against the attack radius) and ``<out>/convex_relu.json`` (the printed numbers).
Run from the repository root:

    python examples/convex_relu.py                  # a few minutes on one core
    python examples/convex_relu.py --quick --out /tmp/crelu
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.optimizers import ConvexReLU  # noqa: E402

DATASETS = ("breast_cancer", "digits_3_vs_8")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                   help="datasets (the first one also runs the ADMM)")
    p.add_argument("--patterns", type=int, default=50, help="Gaussian directions sampled")
    p.add_argument("--beta", type=float, default=1.0, help="weight decay of the summed loss")
    p.add_argument("--inits", type=int, default=20, help="Adam's random initializations")
    p.add_argument("--adam-steps", type=int, default=2000, help="full-batch Adam steps")
    p.add_argument("--adam-lr", type=float, default=1e-2, help="Adam's initial step")
    p.add_argument("--admm-iters", type=int, default=300, help="ADMM iterations at most")
    p.add_argument("--robust-patterns", type=int, default=20,
                   help="Gaussian directions of the hinge programs (the robust one costs "
                        "O(n d P) extra terms)")
    p.add_argument("--train-eps", type=float, default=0.1,
                   help="l-inf radius of both adversarial trainings (standardized units)")
    p.add_argument("--attack-eps", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2],
                   help="l-inf radii of the PGD attack on the test set")
    p.add_argument("--pgd-steps", type=int, default=20, help="PGD steps of the attack")
    p.add_argument("--at-steps", type=int, default=500, help="Adam steps of PGD training")
    p.add_argument("--max-train", type=int, default=0,
                   help="use at most this many training rows (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.patterns, args.inits, args.adam_steps, args.admm_iters = 8, 4, 200, 20
        args.pgd_steps, args.at_steps, args.max_train = 5, 30, 60
        args.robust_patterns = 8
        args.attack_eps, args.datasets = [0.0, 0.1], ["breast_cancer"]
    return args


def load(name: str, seed: int, max_train: int):
    """Standardized train/test rows with a column of ones appended, labels -1/+1 (float64)."""
    if name == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
    else:
        x, y = load_digits(return_X_y=True)
        keep = (y == 3) | (y == 8)
        x, y = x[keep], (y[keep] == 8).astype(int)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    if max_train:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    scaler = StandardScaler().fit(xtr)     # a constant pixel keeps scale 1 (sklearn's rule)

    def rows(z):
        return torch.from_numpy(np.hstack([scaler.transform(z), np.ones((len(z), 1))]))

    def labels(t):
        return torch.from_numpy(2.0 * t - 1)

    return rows(xtr), rows(xte), labels(ytr), labels(yte)


# -- the network ------------------------------------------------------------------------------
def network(U: torch.Tensor, a: torch.Tensor) -> torch.nn.Sequential:
    """``Linear(d, m) + ReLU + Linear(m, 1, bias=False)`` from weights on the data with the
    ones column: ``U`` is ``(m, d + 1)``, its last column the hidden bias; ``a`` is ``(m,)``."""
    m, d = U.shape[0], U.shape[1] - 1
    net = torch.nn.Sequential(torch.nn.Linear(d, m), torch.nn.ReLU(),
                              torch.nn.Linear(m, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(U[:, :d])
        net[0].bias.copy_(U[:, d])
        net[2].weight.copy_(a[None])
    return net.requires_grad_(False)


def from_convex(model: ConvexReLU) -> torch.nn.Sequential:
    net = model.to_module()      # Linear(d + 1, m) with a zero bias: move the last column over
    return network(net[0].weight.detach(), net[2].weight.detach()[0])


def regularized_objective(net, X, y, beta: float, loss: str = "squared") -> float:
    """loss(f(X), y) + beta/2 (||W||^2 + ||b||^2 + ||a||^2) of a network on raw rows ``X``."""
    out = net(X).squeeze(1)
    fit = 0.5 * ((out - y) ** 2).sum() if loss == "squared" else torch.relu(1 - y * out).sum()
    weights = sum((p ** 2).sum() for p in net.parameters())
    return float(fit + beta / 2 * weights)


def accuracy(net, X, y) -> float:
    return float((torch.where(net(X).squeeze(1) >= 0, 1.0, -1.0) == y).double().mean())


def width(model: ConvexReLU, rel: float = 1e-4) -> int:
    """Neurons of the convex solution above ``rel`` of the largest (the solver leaves the
    others at its tolerance, not at zero)."""
    norms = torch.cat([model.v_, model.w_]).norm(dim=1)
    return int((norms > rel * norms.max()).sum())


def adam_runs(X, y, m, args, gen, progress_label, hinge_eps=None):
    """Adam on ``R = args.inits`` networks at once (``hinge_eps=None``: squared loss and full
    data; else hinge loss on PGD points of radius ``hinge_eps``, one network). Weights start as
    ``nn.Linear``'s default: uniform in +-1/sqrt(fan_in). Returns U (R, m, d+1), a (R, m) and
    the objective per step (steps, R)."""
    runs = args.inits if hinge_eps is None else 1
    steps = args.adam_steps if hinge_eps is None else args.at_steps
    n, d1 = X.shape
    U = (torch.rand(runs, m, d1, generator=gen, dtype=X.dtype) * 2 - 1) / math.sqrt(d1 - 1)
    a = (torch.rand(runs, m, generator=gen, dtype=X.dtype) * 2 - 1) / math.sqrt(m)
    U.requires_grad_(True)
    a.requires_grad_(True)
    opt = torch.optim.Adam([U, a], lr=args.adam_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    curve = torch.empty(steps, runs, dtype=X.dtype)
    for k in tqdm(range(steps), desc=progress_label, disable=args.no_progress, leave=False):
        inputs = X
        if hinge_eps:
            net = network(U[0].detach(), a[0].detach())
            shift = pgd(net, X[:, :-1], y, hinge_eps, 7, gen)
            inputs = torch.cat([X[:, :-1] + shift, X[:, -1:]], dim=1)
        out = (inputs @ U.transpose(1, 2)).relu() @ a[:, :, None]      # (R, n, 1)
        if hinge_eps is None:
            fit = 0.5 * ((out[..., 0] - y) ** 2).sum(1)
        else:
            fit = torch.relu(1 - y * out[..., 0]).sum(1)
        objective = fit + args.beta / 2 * ((U ** 2).sum((1, 2)) + (a ** 2).sum(1))
        opt.zero_grad(set_to_none=True)
        objective.sum().backward()      # the runs share no weights: independent gradients
        opt.step()
        schedule.step()
        curve[k] = objective.detach()
    return U.detach(), a.detach(), curve


# -- the attack -------------------------------------------------------------------------------
def pgd(net, X, y, eps: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """An l-inf PGD perturbation (``|delta| <= eps`` entrywise) lowering the margin y f(x):
    a uniform random start, ``steps`` signed-gradient steps of 2.5 eps / steps, each projected
    on the box; per row it keeps the point of smallest margin among them and ``delta = 0`` (so
    no attack scores above the clean accuracy)."""
    best = torch.zeros_like(X)
    if eps == 0:
        return best
    with torch.no_grad():
        best_margin = y * net(X).squeeze(1)
    delta = (torch.rand(X.shape, generator=gen, dtype=X.dtype) * 2 - 1) * eps
    for _ in range(steps + 1):
        delta.requires_grad_(True)
        margin = y * net(X + delta).squeeze(1)
        (grad,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            better = margin < best_margin
            best[better], best_margin[better] = delta[better], margin[better]
            delta = (delta - 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
    return best.detach()


def robust_accuracy(net, X, y, eps, args, gen) -> float:
    return accuracy(net, X + pgd(net, X, y, eps, args.pgd_steps, gen), y)


# -- the experiments --------------------------------------------------------------------------
def compare_with_adam(name, Xtr, Xte, ytr, yte, args):
    """The convex optimum on the sampled patterns, the identity, Adam from random starts, the
    pattern-sampling gap and the convex program on the best Adam network's patterns."""
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    convex = ConvexReLU(args.patterns, args.beta, solver="cvxpy", generator=gen).fit(Xtr, ytr)
    convex_seconds = time.perf_counter() - start
    net = from_convex(convex)
    identity = regularized_objective(net, Xtr[:, :-1], ytr, args.beta)
    m = width(convex)

    start = time.perf_counter()
    U, a, curve = adam_runs(Xtr, ytr, m, args, gen, f"Adam x{args.inits} ({name})")
    adam_seconds = time.perf_counter() - start
    nets = [network(U[r], a[r]) for r in range(args.inits)]
    objectives = [regularized_objective(n, Xtr[:, :-1], ytr, args.beta) for n in nets]
    best = int(np.argmin(objectives))

    # the best Adam network's neurons (those carrying 1e-4 of the largest |a_j| ||u_j||) and
    # their training patterns, against the sampled set
    strength = U[best].norm(dim=1) * a[best].abs()
    active = strength > 1e-4 * strength.max()
    own = Xtr @ U[best][active].T >= 0
    sampled = {tuple(col) for col in convex.patterns_.T.tolist()}
    outside = sum(tuple(col) not in sampled for col in own.T.tolist())
    own = torch.unique(own, dim=1)
    start = time.perf_counter()
    polished = ConvexReLU(own.shape[1], args.beta, solver="cvxpy").fit(Xtr, ytr, patterns=own)
    polished_seconds = time.perf_counter() - start
    polished_net = from_convex(polished)
    return dict(
        dataset=name, n_train=len(Xtr), n_test=len(Xte), d=Xtr.shape[1] - 1,
        sampled_patterns=convex.patterns_.shape[1], width=m,
        convex_objective=convex.objective_,
        network_objective=identity,
        identity_relative_difference=abs(identity - convex.objective_) / convex.objective_,
        convex_test_accuracy=accuracy(net, Xte[:, :-1], yte), convex_seconds=convex_seconds,
        adam_objectives=objectives,
        adam_test_accuracies=[accuracy(n, Xte[:, :-1], yte) for n in nets],
        adam_seconds=adam_seconds,
        adam_best_minus_convex=objectives[best] - convex.objective_,
        adam_best_active_neurons=int(active.sum()), adam_best_patterns_outside=outside,
        adam_patterns_objective=polished.objective_,
        adam_patterns_network_objective=regularized_objective(polished_net, Xtr[:, :-1], ytr,
                                                              args.beta),
        adam_patterns_test_accuracy=accuracy(polished_net, Xte[:, :-1], yte),
        adam_patterns_seconds=polished_seconds,
        curve=curve.tolist(), patterns=convex.patterns_)


def admm_residuals(Xtr, ytr, patterns, cvxpy_objective, args):
    """ConvexReLU's ADMM on the same program: residuals and objective per iteration."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:   # max_iter reached: say so below
        warnings.simplefilter("always")
        admm = ConvexReLU(patterns.shape[1], args.beta, solver="admm", tol=1e-6,
                          max_iter=args.admm_iters).fit(Xtr, ytr, patterns=patterns)
    seconds = time.perf_counter() - start
    h = admm.history_
    primal, dual = np.array(h["primal_residual"]), np.array(h["dual_residual"])
    k = np.arange(1, len(primal) + 1)
    half = k > len(k) // 2     # fitted on the second half of the iterations: primal residual
    log_r = np.log(np.maximum(primal[half], 1e-300))   # ~ c q^k (geometric) or ~ c k^p
    rate = float(np.exp(np.polyfit(k[half], log_r, 1)[0]))
    power = float(np.polyfit(np.log(k[half]), log_r, 1)[0])
    return dict(iterations=admm.n_iter_, seconds=seconds, converged=not caught,
                objective=admm.objective_,
                relative_gap=(admm.objective_ - cvxpy_objective) / cvxpy_objective,
                primal=primal.tolist(), dual=dual.tolist(), objectives=h["objective"],
                primal_rate_per_iteration=rate, primal_power_of_k=power)


def robustness(name, Xtr, Xte, ytr, yte, args):
    """Clean and PGD accuracy of the convex robust and standard hinge networks and of PGD
    adversarial training by Adam (the robust network's width)."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    nets, seconds = {}, {}
    for label, eps in (("convex, standard", 0.0), ("convex, robust", args.train_eps)):
        start = time.perf_counter()
        # hidden_bias: the program appends the ones column itself and never perturbs it
        model = ConvexReLU(args.robust_patterns, args.beta, loss="hinge", solver="cvxpy",
                           robust_eps=eps, hidden_bias=True,
                           generator=torch.Generator().manual_seed(args.seed)
                           ).fit(Xtr[:, :-1], ytr)
        seconds[label] = time.perf_counter() - start
        nets[label] = model.to_module().requires_grad_(False)
        m = width(model)
    start = time.perf_counter()
    U, a, _ = adam_runs(Xtr, ytr, m, args, gen, f"PGD training ({name})",
                        hinge_eps=args.train_eps)
    seconds["Adam, PGD training"] = time.perf_counter() - start
    nets["Adam, PGD training"] = network(U[0], a[0])
    table = {label: [robust_accuracy(net, Xte[:, :-1], yte, eps, args, gen)
                     for eps in args.attack_eps] for label, net in nets.items()}
    return dict(dataset=name, width=m, accuracy=table, seconds=seconds)


# -- figures ----------------------------------------------------------------------------------
def plot_objectives(results, path):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        curve = np.array(r["curve"])
        steps = np.arange(1, len(curve) + 1)
        for i in range(curve.shape[1]):
            ax.loglog(steps, curve[:, i], color="tab:blue", lw=0.8, alpha=0.5,
                      label="Adam, one initialization" if i == 0 else None)
        ax.axhline(r["convex_objective"], color="k", ls="--",
                   label=f"convex optimum, {r['sampled_patterns']} sampled patterns")
        ax.axhline(r["adam_patterns_objective"], color="tab:red", ls=":",
                   label="convex optimum on best Adam net's patterns")
        ax.set_xlabel("Adam step (full batch)")
        ax.set_ylabel("regularized objective")
        ax.set_title(f"{r['dataset']}: n = {r['n_train']}, d = {r['d']}, width {r['width']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_admm(admm, r, beta, path):
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    k = np.arange(1, len(admm["primal"]) + 1)
    ax.semilogy(k, admm["primal"], label="primal residual ||(u - v, Gu - s)||")
    ax.semilogy(k, admm["dual"], label="dual residual")
    gap = np.abs(np.array(admm["objectives"]) - r["convex_objective"]) / r["convex_objective"]
    ax.semilogy(k, gap, label="|objective - cvxpy optimum| / optimum")
    ax.set_xlabel("ADMM iteration")
    ax.set_ylabel("residual, relative objective gap")
    ax.set_title(f"ADMM on {r['dataset']}, {r['sampled_patterns']} patterns, "
                 f"beta = {beta:g}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_robust(results, attack_eps, train_eps, path):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        for label, accs in r["accuracy"].items():
            ax.plot(attack_eps, accs, "o-", label=label)
        ax.axvline(train_eps, color="gray", ls=":", label=f"training radius {train_eps:g}")
        ax.set_xlabel("l-inf attack radius (standardized features)")
        ax.set_ylabel("test accuracy under PGD")
        ax.set_title(f"{r['dataset']}: width {r['width']}, hinge loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_comparison(r):
    print(f"{r['dataset']}: the network from to_module() has objective "
          f"{r['network_objective']:.10g} against the convex optimum "
          f"{r['convex_objective']:.10g} (relative difference "
          f"{r['identity_relative_difference']:.1e}); pattern-sampling gap: Adam's best "
          f"minus the convex optimum = {r['adam_best_minus_convex']:+.4f}; "
          f"{r['adam_best_patterns_outside']} of the best Adam net's "
          f"{r['adam_best_active_neurons']} neurons have patterns outside the "
          f"{r['sampled_patterns']} sampled; on its own patterns the convex optimum is "
          f"{r['adam_patterns_objective']:.4f} <= every Adam run "
          f"(min {min(r['adam_objectives']):.4f})", flush=True)


def report_admm(admm, r):
    print(f"ADMM on {r['dataset']} (same patterns): {admm['iterations']} iterations in "
          f"{admm['seconds']:.1f} s, {'converged' if admm['converged'] else 'not converged'}, "
          f"objective {admm['objective']:.6g} (relative to cvxpy {admm['relative_gap']:+.1e}),"
          f" primal residual {admm['primal'][0]:.2e} -> {admm['primal'][-1]:.2e} "
          f"(second half: x{admm['primal_rate_per_iteration']:.4f} per iteration, or "
          f"~ k^{admm['primal_power_of_k']:.2f})",
          flush=True)


def print_tables(comparisons, robust, args):
    print(f"\nbeta = {args.beta:g}, squared loss on labels -1/+1, {args.patterns} Gaussian "
          f"directions, Adam: {args.inits} initializations x {args.adam_steps} steps, lr "
          f"{args.adam_lr:g} (cosine)")
    print(f"{'dataset':<15} {'method':<36} {'objective':>10} {'test acc':>9} {'seconds':>8}")
    for r in comparisons:
        objs, accs = np.array(r["adam_objectives"]), np.array(r["adam_test_accuracies"])
        rows = [("convex (cvxpy), sampled patterns", r["convex_objective"],
                 r["convex_test_accuracy"], r["convex_seconds"]),
                (f"Adam best of {len(objs)}", objs.min(), accs[objs.argmin()],
                 r["adam_seconds"]),
                (f"Adam median of {len(objs)}", np.median(objs), np.median(accs), math.nan),
                (f"Adam worst of {len(objs)}", objs.max(), accs[objs.argmax()], math.nan),
                ("convex on best Adam net's patterns", r["adam_patterns_objective"],
                 r["adam_patterns_test_accuracy"], r["adam_patterns_seconds"])]
        for label, obj, acc, sec in rows:
            print(f"{r['dataset']:<15} {label:<36} {obj:10.4f} {acc:9.3f} {sec:8.1f}")
    header = " ".join(f"{'eps ' + format(e, 'g'):>9}" for e in args.attack_eps)
    print(f"\nPGD ({args.pgd_steps} steps) test accuracy; training radius {args.train_eps:g}, "
          f"hinge loss, {args.robust_patterns} Gaussian directions")
    print(f"{'dataset':<15} {'network':<22} {header} {'train s':>8}")
    for r in robust:
        for label, accs in r["accuracy"].items():
            print(f"{r['dataset']:<15} {label:<22} " + " ".join(f"{x:9.3f}" for x in accs)
                  + f" {r['seconds'][label]:8.1f}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = {name: load(name, args.seed, args.max_train) for name in args.datasets}
    comparisons = []
    for name in args.datasets:
        comparisons.append(compare_with_adam(name, *data[name], args))
        report_comparison(comparisons[-1])
    first = comparisons[0]
    Xtr, ytr = data[first["dataset"]][0], data[first["dataset"]][2]
    admm = admm_residuals(Xtr, ytr, first["patterns"], first["convex_objective"], args)
    report_admm(admm, first)
    plot_objectives(comparisons, args.out / "convex_relu_objective.png")
    plot_admm(admm, first, args.beta, args.out / "convex_relu_admm.png")
    robust = [robustness(name, *data[name], args) for name in args.datasets]
    plot_robust(robust, args.attack_eps, args.train_eps, args.out / "convex_relu_robust.png")
    print_tables(comparisons, robust, args)

    for r in comparisons:
        del r["curve"], r["patterns"]
    summary = dict(args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   comparisons=comparisons, admm=admm, robust=robust,
                   seconds=time.perf_counter() - start)
    (args.out / "convex_relu.json").write_text(json.dumps(summary, indent=1))
    print(f"total {summary['seconds']:.0f} s; files: {args.out}/convex_relu_*.png, "
          f"{args.out}/convex_relu.json")
    return summary

if __name__ == "__main__":
    main()
