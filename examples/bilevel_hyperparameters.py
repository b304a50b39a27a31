"""Multi-task hyperparameter optimization: per-example weights shared by 100 logistic regressions.

The authors' HO experiment (Hu, Qiu, Guo, Zhang, Yang, ICML 2023; ``quanqihu/BSVRB_ICML2023``,
``Hyperparameter_Optimization/HO``) on a scikit-learn bundled dataset. The upper variable
``p`` holds one logit per training example; example ``j`` weighs ``sigmoid(p_j)`` in every
task's training loss. Task ``i`` (``i = 1..m``, ``m = 100``) is an L2-regularized logistic
regression whose loss is scaled by its own ``sigma_i`` (drawn uniformly from [1, 11], the range
of the authors' ``sig_list.p``):

.. math::

    \\min_p F(p) = \\frac1m \\sum_{i=1}^m \\frac{1}{n_v} \\sum_{k \\in \\text{val}}
        \\ell\\Big(\\frac{y_k}{\\sigma_i} w_i(p)^\\top x_k\\Big), \\qquad
    w_i(p) = \\arg\\min_w \\frac{1}{n_t} \\sum_{j \\in \\text{train}} \\mathrm{sigmoid}(p_j)\\,
        \\ell\\Big(\\frac{y_j}{\\sigma_i} w^\\top x_j\\Big) + \\frac{\\lambda}{2} \\|w\\|^2,

with ``l(z) = log(1 + exp(-z))`` and a bias feature in ``x``. A fraction of the training labels
is flipped (``--label-noise``, 0.1 by default as in the authors' distribution-shift variant;
0 gives their plain HO setting), so that good weights have something to find: the flipped
examples.

BSVRB v1 (tracked Hessians) and v2 (tracked Hessian-vector products) sample I = 10 tasks and
B = 32 training and validation examples per task and step; the RSVRB baseline is the
optimizer's one-task-per-step regime (v1 with I = 1). Lower steps, ``alpha``, ``beta``,
``gamma`` and the projection bounds are the authors' (``run_BSVRBv1.sh``, ``run_BSVRBv2.sh``,
``run_RSVRB.sh``); the upper step is not: their ``eta = 0.001`` leaves ``p`` where it starts
in a run of this length (``--lr 0.001``: F(p) 0.2125 -> 0.2122 in 1000 epochs), so ``--lr``
is 100. Their bounds are small for
this data: the Hessians' Frobenius norms (0.004 to 0.4) lie below v1's floor of 10, which
shrinks v1's hypergradient, and ``||v_i||`` (about 85) lies outside v2's ball of radius 10
(``--hessian-bound``, ``--v-bound``).

The upper objective is reported two ways: at the tracked lower iterates ``w_i`` (what the
authors log) and at the exact ``w_i(p)`` (batched Newton), against epochs (passes of the sampled
training examples over the training set) and wall time. For reference, full-batch hypergradient
descent with exact lower solves and the exact hypergradient
``grad F(p) = -(1/m) sum_i grad^2_pw g_i [grad^2_ww g_i]^{-1} grad_w f_i`` runs from the same
start; it overfits the validation set (its test loss rises), while in the default run the
stochastic methods, which move ``p`` less far, lower the test loss too. Everything is seeded.
Run from the repository root:

    python examples/bilevel_hyperparameters.py                 # about 3 minutes on one core
    python examples/bilevel_hyperparameters.py --quick --out /tmp/ho
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as tf  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.optimizers import BSVRB  # noqa: E402

F64 = torch.float64
DATASETS = ("breast_cancer", "digits")
# name -> the optimizer's keywords beyond the shared ones (the authors' run_*.sh scripts)
METHODS = {
    "BSVRB v1": dict(version="v1", lower_lr=0.5, gamma=1.0),
    "BSVRB v2": dict(version="v2", lower_lr=1.0, v_lr=1.0, gamma=1.0),
    # the optimizer's RSVRB regime: v1 with one task per step; the authors' RSVRB is STORM on
    # every tracked quantity, which is MSVR with alpha = beta and gamma = 1 - beta
    "RSVRB": dict(version="v1", lower_lr=0.5, one_block=True, gamma=0.1),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="breast_cancer",
                   help="scikit-learn bundled data (digits: digit < 5 against the rest)")
    p.add_argument("--tasks", type=int, default=100, help="m, the number of lower-level tasks")
    p.add_argument("--blocks", type=int, default=10, help="I, tasks sampled per step")
    p.add_argument("--batch", type=int, default=32, help="B, examples per sampled task")
    p.add_argument("--epochs", type=float, default=1000.0,
                   help="passes of the sampled training examples over the training set")
    p.add_argument("--lr", type=float, default=100.0,
                   help="eta, the upper step size (the authors' 0.001 leaves p where it starts "
                        "here)")
    p.add_argument("--v-bound", type=float, default=10.0,
                   help="BSVRB v2's radius of each v_i (the authors' 10)")
    p.add_argument("--hessian-bound", type=float, default=10.0,
                   help="BSVRB v1 and RSVRB: the Frobenius floor of each tracked Hessian "
                        "(the authors' 10)")
    p.add_argument("--lam", type=float, default=1e-5, help="lambda, the lower L2 weight")
    p.add_argument("--label-noise", type=float, default=0.1,
                   help="fraction of training labels flipped")
    p.add_argument("--reference-steps", type=int, default=100,
                   help="steps of full-batch exact hypergradient descent (the reference)")
    p.add_argument("--ref-lr", type=float, default=1000.0, help="the reference's step size")
    p.add_argument("--evals", type=int, default=40, help="evaluations along each run")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for the figure")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.epochs, args.reference_steps, args.evals = 20, 10.0, 3, 4
    if not 1 <= args.blocks <= args.tasks:
        p.error(f"--blocks must be in 1..--tasks ({args.tasks}), got {args.blocks}")
    if not 0 <= args.label_noise < 0.5:
        p.error(f"--label-noise must be in [0, 0.5), got {args.label_noise}")
    return args


# ---------------------------------------------------------------- data and objectives


@dataclass
class Problem:
    """Standardized features with a bias column, labels in {-1, +1}, the task scalings."""
    x_train: torch.Tensor     # (n_t, d)
    y_train: torch.Tensor     # (n_t,)
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    sigma: torch.Tensor       # (m,)
    flipped: torch.Tensor     # (n_t,) bool, the training labels the noise flipped
    lam: float


def make_problem(args, gen) -> Problem:
    if args.dataset == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
    else:
        x, y = load_digits(return_X_y=True)
        y = y < 5
    x, y = torch.as_tensor(x, dtype=F64), torch.as_tensor(y, dtype=F64) * 2 - 1
    order = torch.randperm(len(y), generator=gen)
    n_t, n_v = len(y) // 2, len(y) // 4
    parts = order[:n_t], order[n_t:n_t + n_v], order[n_t + n_v:]
    mean, std = x[parts[0]].mean(0), x[parts[0]].std(0)
    std = torch.where(std > 0, std, 1.0)     # digits has pixels that are always blank
    x = torch.cat([torch.ones(len(y), 1, dtype=F64), (x - mean) / std], 1)
    flipped = torch.rand(n_t, generator=gen) < args.label_noise
    y_train = torch.where(flipped, -y[parts[0]], y[parts[0]])
    sigma = 1 + 10 * torch.rand(args.tasks, generator=gen, dtype=F64)
    return Problem(x[parts[0]], y_train, x[parts[1]], y[parts[1]], x[parts[2]], y[parts[2]],
                   sigma, flipped, args.lam)


def task_losses(w, x, y, sigma, weights=None):
    """Per-task mean of ``weights * l((y / sigma_i) w_i^T x)``: w (m, d), x (..., n, d) -> (m,).

    ``x`` and ``y`` are shared by all tasks (n examples) or given per task (m, n)."""
    margins = (x @ w.unsqueeze(-1)).squeeze(-1) if x.dim() == 3 else w @ x.T
    losses = tf.softplus(-margins * y / sigma[:, None])
    return (losses if weights is None else weights * losses).mean(-1)


def lower_objectives(problem, p, w):
    """g_i(p, w_i) on the whole training set, (m,)."""
    return (task_losses(w, problem.x_train, problem.y_train, problem.sigma, p.sigmoid())
            + problem.lam / 2 * w.pow(2).sum(-1))


def upper_objective(problem, w, split="val"):
    """F at lower iterates w: the mean over tasks of the validation (or test) loss."""
    x, y = (problem.x_val, problem.y_val) if split == "val" else (problem.x_test, problem.y_test)
    return task_losses(w, x, y, problem.sigma).mean()


def lower_gradient_and_hessian(problem, p, w):
    """grad_w g_i and grad^2_ww g_i for every task in closed form, differentiable in p.

    With c_ij = y_j / sigma_i, s_j = sigmoid(p_j), l'(z) = -sigmoid(-z), l''(z) = sigmoid(z)
    sigmoid(-z): grad = mean_j s_j l'(c_ij w_i.x_j) c_ij x_j + lam w_i and
    hess = mean_j s_j l''(c_ij w_i.x_j) c_ij^2 x_j x_j^T + lam I."""
    x, n, d = problem.x_train, len(problem.y_train), problem.x_train.shape[1]
    c = problem.y_train / problem.sigma[:, None]                                 # (m, n)
    z, weights = c * (w @ x.T), p.sigmoid()
    grad = (weights * -torch.sigmoid(-z) * c) @ x / n + problem.lam * w
    curv = weights * torch.sigmoid(z) * torch.sigmoid(-z) * c ** 2 / n
    hess = torch.einsum("mn,nd,ne->mde", curv, x, x) + problem.lam * torch.eye(d, dtype=F64)
    return grad, hess


def solve_lower(problem, p, w=None, tol=1e-12, max_iter=100):
    """w_i(p) for every task by damped Newton, batched over tasks (each g_i is strongly convex),
    to a largest gradient entry below ``tol``; ``w`` warm-starts it."""
    p = p.detach()
    w = torch.zeros(len(problem.sigma), problem.x_train.shape[1], dtype=F64) if w is None \
        else w.detach().clone()
    for _ in range(max_iter):
        grad, hess = lower_gradient_and_hessian(problem, p, w)
        if grad.abs().max() < tol:
            return w
        step = torch.linalg.solve(hess, grad)
        decrement = (grad * step).sum(-1)                                        # (m,)
        value, t = lower_objectives(problem, p, w), torch.ones(len(w), 1, dtype=F64)
        while True:     # Armijo backtracking per task, all tasks at once
            trial = lower_objectives(problem, p, w - t * step)
            # a decrement this small is the quadratic-convergence region, where the full step
            # is right and the decrease is below what the objective's rounding can show
            bad = (trial > value - 0.25 * t.squeeze(1) * decrement) & (decrement > 1e-12)
            if not bad.any() or t.min() < 1e-12:
                break
            t = torch.where(bad[:, None], t / 2, t)
        w = w - t * step
    raise RuntimeError(f"Newton did not reach a gradient of {tol} in {max_iter} steps")


def exact_hypergradient(problem, p, w=None):
    """F(p), grad F(p) and the w_i(p), by implicit differentiation at the exact lower solutions:
    grad F = -grad_p sum_i v_i^T grad_w g_i(p, w_i(p)) with v_i = [grad^2_ww g_i]^{-1} grad_w_i F.
    ``w`` warm-starts Newton."""
    w = solve_lower(problem, p, w).requires_grad_()
    upper = upper_objective(problem, w)
    (grad_w_f,) = torch.autograd.grad(upper, w)
    p = p.detach().requires_grad_()
    grad, hess = lower_gradient_and_hessian(problem, p, w.detach())
    v = torch.linalg.solve(hess.detach(), grad_w_f)
    (grad_p,) = torch.autograd.grad(grad, p, grad_outputs=v)
    return upper.detach(), -grad_p, w.detach()


def reference_descent(problem, p0, steps, lr, progress):
    """Full-batch hypergradient descent p <- p - lr grad F(p) with exact lower solves: the values
    F(p_k), the lower solutions at p0 and the test loss at the last p."""
    p, w, values = p0.clone(), None, []
    for k in tqdm(range(steps + 1), desc="reference", disable=not progress, leave=False):
        value, grad, w = exact_hypergradient(problem, p, w)
        values.append(value.item())
        start_w = w if k == 0 else start_w
        p = p - lr * grad
    return values, start_w, upper_objective(problem, w, "test").item()


# ---------------------------------------------------------------- the stochastic runs


class BatchStream:
    """Consecutive slices of a stream of seeded permutations of range(n): every example is used
    once per pass (the authors' epochs), and a step's batch may straddle two passes."""

    def __init__(self, n, gen):
        self.n, self.gen, self.order, self.drawn = n, gen, torch.zeros(0, dtype=torch.long), 0

    def take(self, count):
        while len(self.order) < count:
            self.order = torch.cat([self.order, torch.randperm(self.n, generator=self.gen)])
        batch, self.order = self.order[:count], self.order[count:]
        self.drawn += count
        return batch

    @property
    def epochs(self):
        return self.drawn / self.n


def make_closure(problem, train, val, batch):
    """closure(blocks) -> (f, g) on B fresh training and validation examples per sampled task."""

    def closure(blocks):
        count = len(blocks)
        tr, va = train.take(count * batch).view(count, batch), val.take(count * batch).view(
            count, batch)
        sigma = problem.sigma[blocks]
        x_tr, y_tr, x_va, y_va = (problem.x_train[tr], problem.y_train[tr], problem.x_val[va],
                                  problem.y_val[va])

        def f(x, y):
            return task_losses(y, x_va, y_va, sigma)

        def g(x, y):
            return (task_losses(y, x_tr, y_tr, sigma, x[0][tr].sigmoid())
                    + problem.lam / 2 * y.pow(2).sum(-1))

        return f, g

    return closure


def run_method(name, problem, args, progress, start_w):
    """One seeded run; returns the history at ``args.evals`` evenly spaced epochs.
    ``start_w`` (the exact lower solutions at the start) warm-starts the exact solves."""
    kwargs = dict(METHODS[name])
    blocks = 1 if kwargs.pop("one_block", False) else args.blocks
    gen = torch.Generator().manual_seed(args.seed + 1)       # the same stream for every method
    p = torch.nn.Parameter(torch.zeros(len(problem.y_train), dtype=F64))
    lower = torch.zeros(len(problem.sigma), problem.x_train.shape[1], dtype=F64,
                        requires_grad=True)
    opt = BSVRB([p], lower, lr=args.lr, blocks_per_step=blocks, v_bound=args.v_bound,
                hessian_bound=args.hessian_bound, generator=gen, **kwargs)
    train, val = BatchStream(len(problem.y_train), gen), BatchStream(len(problem.y_val), gen)
    closure = make_closure(problem, train, val, args.batch)
    history = dict(epoch=[], seconds=[], tracked=[], exact=[], test=[])
    marks = [args.epochs * k / args.evals for k in range(args.evals + 1)]
    exact_w, seconds, steps = start_w, 0.0, 0
    bar = tqdm(total=args.epochs, desc=name, disable=not progress, leave=False,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} epochs [{elapsed}]")
    for mark in marks:
        while train.epochs < mark:
            start = time.perf_counter()
            opt.step(closure)
            seconds += time.perf_counter() - start
            steps += 1
        bar.update(min(train.epochs, args.epochs) - bar.n)
        with torch.no_grad():
            exact_w = solve_lower(problem, p, exact_w)
            history["epoch"].append(train.epochs)
            history["seconds"].append(seconds)
            history["tracked"].append(upper_objective(problem, lower).item())
            history["exact"].append(upper_objective(problem, exact_w).item())
            history["test"].append(upper_objective(problem, exact_w, "test").item())
        if not all(torch.isfinite(torch.tensor(v[-1])) for k, v in history.items()):
            raise RuntimeError(f"{name} diverged at epoch {train.epochs:.1f}")
    bar.close()
    weights = p.detach().sigmoid()
    history.update(steps=steps, flipped_weight=weights[problem.flipped].mean().item(),
                   clean_weight=weights[~problem.flipped].mean().item())
    return history


def plot(histories, reference, args, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for (name, h), color in zip(histories.items(), ("tab:blue", "tab:orange", "tab:green")):
        for ax, key in zip(axes, ("epoch", "seconds")):
            ax.plot(h[key], h["exact"], color=color, label=f"{name}: F(p) at exact w(p)")
            ax.plot(h[key], h["tracked"], color=color, ls="--", label=f"{name}: at tracked w")
    ref_epochs = range(len(reference))
    axes[0].plot(ref_epochs, reference, color="k", lw=1,
                 label=f"full-batch exact hypergradient, lr {args.ref_lr:g} (epoch = step)")
    axes[0].set_xlabel("epochs (training examples drawn / training set size)")
    axes[1].set_xlabel("wall time of the optimizer steps (s)")
    for ax in axes:
        ax.set_ylabel("upper objective: mean validation loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, frameon=False,
               fontsize=8)
    fig.suptitle(f"{args.dataset}: m = {args.tasks} tasks, I = {args.blocks}, B = {args.batch}, "
                 f"eta = {args.lr:g}, label noise {args.label_noise:g}", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    progress = not args.no_progress
    problem = make_problem(args, torch.Generator().manual_seed(args.seed))
    print(f"{args.dataset}: {len(problem.y_train)} training examples "
          f"({int(problem.flipped.sum())} labels flipped), {len(problem.y_val)} validation, "
          f"{len(problem.y_test)} test; {args.tasks} tasks, dim_y = {problem.x_train.shape[1]}")
    p0 = torch.zeros(len(problem.y_train), dtype=F64)
    reference, start_w, reference_test = reference_descent(problem, p0, args.reference_steps,
                                                           args.ref_lr, progress)
    histories = {name: run_method(name, problem, args, progress, start_w) for name in METHODS}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bilevel_hyperparameters.png"
    plot(histories, reference, args, path)
    print(f"\nupper objective F(p) = mean validation loss, after {args.epochs:g} epochs "
          f"(start {reference[0]:.4f})")
    print(f"{'method':<10} {'steps':>6} {'seconds':>8} {'F at tracked w':>15} "
          f"{'F at exact w(p)':>16} {'test at w(p)':>13} {'weight flipped/clean':>21}")
    for name, h in histories.items():
        print(f"{name:<10} {h['steps']:6d} {h['seconds'][-1]:8.2f} {h['tracked'][-1]:15.4f} "
              f"{h['exact'][-1]:16.4f} {h['test'][-1]:13.4f} "
              f"{h['flipped_weight']:10.3f}/{h['clean_weight']:.3f}")
    print(f"{'reference':<10} {args.reference_steps:6d} {'':>8} {'':>15} {reference[-1]:16.4f} "
          f"{reference_test:13.4f}   (full-batch exact hypergradient descent, "
          f"lr {args.ref_lr:g})")
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
