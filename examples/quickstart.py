"""Quickstart: diffGrad against Adam on a small CNN for scikit-learn's 8x8 digits.

diffGrad scales Adam's step by a friction coefficient xi = sigmoid(|g_{t-1} - g_t|), which lies
in [0.5, 1). When successive gradients differ by little, xi stays near 0.5 and diffGrad moves
like Adam at half the learning rate. This script trains the same CNN with DiffGrad (lr=1e-3),
Adam (lr=1e-3) and Adam (lr=5e-4) from the same seeds (same initial weights, same batch
order), then prints a table of test accuracy, test loss and diffGrad's mean xi, and saves a
figure (train loss, test accuracy, xi per step) to ``<out>/quickstart.png``.

Run from the repository root (needs matplotlib and scikit-learn, no download):

    python examples/quickstart.py                      # 30 epochs x 3 seeds, well under 2 min
    python examples/quickstart.py --epochs 2 --seeds 1 --out /tmp/qs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stochstep.optimizers import DiffGrad  # noqa: E402

# (label, optimizer class, learning rate); one colour each in the figure.
CONFIGS = [("DiffGrad", DiffGrad, 1e-3), ("Adam", torch.optim.Adam, 1e-3),
           ("Adam", torch.optim.Adam, 5e-4)]
COLORS = ["tab:red", "tab:blue", "tab:cyan"]
# DiffGrad dashed on top, so it stays visible where it lies on an Adam curve.
STYLES = [dict(lw=1.8, ls="--", zorder=3), dict(lw=2), dict(lw=4, alpha=0.7)]
BATCH = 64


def load_data(split_seed: int = 0):
    """Digits scaled to [0, 1] as (N, 1, 8, 8), with a fixed 75/25 train/test split."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_train = int(0.75 * len(y))
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[te], y[te]


def make_model(seed: int) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
    # PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from our own generator.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = m.weight[0].numel() ** -0.5
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    return model


@torch.no_grad()
def evaluate(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_run(opt_cls, lr, seed, data, epochs, bar):
    xtr, ytr, xte, yte = data
    model = make_model(seed)
    is_diffgrad = opt_cls is DiffGrad
    opt = opt_cls(model.parameters(), lr=lr, **({"track_friction": True} if is_diffgrad else {}))
    shuffle = torch.Generator().manual_seed(1000 + seed)
    hist = {"train_loss": [], "test_loss": [], "test_acc": [], "xi": []}
    for _ in range(epochs):
        model.train()
        total, seen = 0.0, 0
        batches = torch.randperm(len(ytr), generator=shuffle).split(BATCH)
        for idx in batches[:len(ytr) // BATCH]:  # drop the ragged last batch (3 samples)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
            if is_diffgrad:
                hist["xi"].append(opt.mean_friction[0])
        model.eval()
        test_loss, test_acc = evaluate(model, xte, yte)
        hist["train_loss"].append(total / seen)
        hist["test_loss"].append(test_loss)
        hist["test_acc"].append(test_acc)
        bar.update()
    return hist


def mean_std(a):
    a = np.asarray(a, dtype=float)
    return a.mean(0), a.std(0, ddof=1 if len(a) > 1 else 0)


def make_table(results):
    rows = [f"{'optimizer':<10}{'lr':>8}  {'test acc (%)':>14}  {'test loss':>16}  {'mean xi':>8}"]
    for key, r in results.items():
        acc_m, acc_s = mean_std([h[-1] * 100 for h in r["test_acc"]])
        loss_m, loss_s = mean_std([h[-1] for h in r["test_loss"]])
        xi = f"{np.mean(r['xi']):.4f}" if r["xi"] else "-"
        rows.append(f"{r['name']:<10}{r['lr']:>8.0e}  {acc_m:>6.2f} ± {acc_s:<5.2f}  "
                    f"{loss_m:>7.4f} ± {loss_s:<6.4f}  {xi:>8}")
    return "\n".join(rows)


def closest_adam(results):
    """Which Adam run's mean log train-loss curve DiffGrad's lies closest to (L1 distance)."""
    curve = {k: np.log(np.mean(r["train_loss"], 0)) for k, r in results.items()}
    dg = next(k for k in results if results[k]["name"] == "DiffGrad")
    dist = {k: float(np.abs(curve[k] - curve[dg]).mean()) for k in results if k != dg}
    return dist, min(dist, key=dist.get)


def plot(results, epochs, path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), constrained_layout=True)
    ep = np.arange(1, epochs + 1)
    for (key, r), color, style in zip(results.items(), COLORS, STYLES):
        for ax, name, scale in [(axes[0], "train_loss", 1), (axes[1], "test_acc", 100)]:
            m, s = mean_std(np.asarray(r[name]) * scale)
            ax.plot(ep, m, color=color, label=key, **style)
            ax.fill_between(ep, m - s, m + s, color=color, alpha=0.2, lw=0)
        if r["xi"]:
            m, s = mean_std(r["xi"])
            steps = np.arange(1, len(m) + 1)
            axes[2].plot(steps, m, color=color, lw=1.2, label=f"{key}: mean ξ per step")
            axes[2].fill_between(steps, m - s, m + s, color=color, alpha=0.2, lw=0)
    axes[2].axhline(0.5, color="k", ls="--", lw=1, label="ξ = 0.5 (Adam at lr/2)")
    axes[0].set(title="Training loss", xlabel="epoch", ylabel="cross-entropy (mean over epoch)",
                yscale="log")
    axes[1].set(title="Test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    axes[2].set(title="diffGrad friction ξ = sigmoid(|g_prev − g|)", xlabel="step",
                ylabel="mean ξ over all weights", ylim=(0.499, None))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    n = len(next(iter(results.values()))["test_acc"])
    fig.suptitle(f"Digits CNN: mean ± std over {n} seed{'s' * (n > 1)}", fontsize=13)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_all(epochs, seeds):
    data = load_data()
    results = {f"{name} lr={lr:g}": dict(name=name, lr=lr, train_loss=[], test_loss=[],
                                          test_acc=[], xi=[]) for name, _, lr in CONFIGS}
    with tqdm(total=len(CONFIGS) * seeds * epochs, unit="epoch") as bar:
        for (key, r), (_, opt_cls, lr) in zip(results.items(), CONFIGS):
            for seed in range(seeds):
                bar.set_description(f"{key} seed {seed}")
                hist = train_run(opt_cls, lr, seed, data, epochs, bar)
                for name, values in hist.items():
                    if values:
                        r[name].append(values)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per optimizer (default 3)")
    parser.add_argument("--out", default="runs", help="output directory (default runs)")
    args = parser.parse_args(argv)

    # The model is tiny: one thread is fastest, and stays fast on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_all(args.epochs, args.seeds)
    finally:
        torch.set_num_threads(threads)

    print(f"\nTest set after {args.epochs} epochs, mean ± std over {args.seeds} seed(s):")
    print(make_table(results))
    dist, best = closest_adam(results)
    print(f"DiffGrad's train-loss curve is closest to {best}  (mean |Δ log loss|: "
          + ", ".join(f"{k} {d:.4f}" for k, d in dist.items()) + ")")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, args.epochs, out / "quickstart.png")
    print(f"Figure saved to {out / 'quickstart.png'}")
    return results


if __name__ == "__main__":
    main()
