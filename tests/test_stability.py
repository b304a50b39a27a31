"""Tests of theory_checks.stability: exact numbers on quadratics, the S_B formula against
enumeration of every batch, the necessary-condition claim against the exact second-moment
operator, the Wu & Su reproductions, and bad input."""

import dataclasses
import itertools
import math

import pytest
import torch

from stochstep.theory_checks.stability import (MinimaComparison, StabilityReport,
                                               diagonal_network_minima, relu_network_minima,
                                               stability_report)

DT = torch.float64


def half_mse(out, target):
    return 0.5 * ((out - target) ** 2).mean()


def linear_problem(x):
    """A bias-free linear model at its interpolating minimum w = 0 (targets 0): the loss is
    0.5 * mean_i (w^T x_i)^2, so H = X^T X / n and H_i = x_i x_i^T exactly."""
    model = torch.nn.Linear(x.shape[1], 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.zero_()
    return model, (x, torch.zeros(x.shape[0], 1, dtype=DT))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch_hessians(per_sample, batch_size, replacement):
    """Every batch with its probability: (prob, H_B)."""
    n = len(per_sample)
    if replacement:
        combos = list(itertools.product(range(n), repeat=batch_size))
    else:
        combos = list(itertools.combinations(range(n), batch_size))
    return [(1.0 / len(combos), sum(per_sample[i] for i in c) / batch_size) for c in combos]


def batch_moments(per_sample, batch_size, replacement=True):
    """E[H_B (x) H_B] and E[H_B^2], exactly, by enumerating all batches."""
    kron = square = 0
    for prob, hb in batch_hessians(per_sample, batch_size, replacement):
        kron = kron + prob * torch.kron(hb, hb)
        square = square + prob * hb @ hb
    return kron, square


def enumerated_growth(per_sample, lr, batch_size, replacement=True, moments=None):
    """E ||I - lr H_B||_F^2 / p, exactly: summed over every batch, or from the enumerated
    moments when given (E H_B = H)."""
    p = per_sample[0].shape[0]
    if moments is None:
        eye = torch.eye(p, dtype=DT)
        return sum(prob * ((eye - lr * hb) ** 2).sum() for prob, hb in
                   batch_hessians(per_sample, batch_size, replacement)).item() / p
    h = sum(per_sample) / len(per_sample)
    return (p - 2 * lr * h.trace() + lr * lr * moments[1].trace()).item() / p


def second_moment_radius(per_sample, lr, batch_size, replacement=True, moments=None):
    """Spectral radius of M -> E[(I - lr H_B) M (I - lr H_B)], the exact mean-square
    stability operator of linearized SGD (stable iff <= 1)."""
    p = per_sample[0].shape[0]
    eye = torch.eye(p, dtype=DT)
    h = sum(per_sample) / len(per_sample)
    kron, _ = moments or batch_moments(per_sample, batch_size, replacement)
    op = torch.kron(eye, eye) - lr * (torch.kron(h, eye) + torch.kron(eye, h)) + lr * lr * kron
    return torch.linalg.eigvals(op).abs().max().item()


def exact_s_batch(per_sample, batch_size, n, replacement=True):
    h = sum(per_sample) / n
    q = 1 / batch_size if replacement else (n - batch_size) / (batch_size * (n - 1))
    num = q * sum((hi @ hi).trace() for hi in per_sample) / n + (1 - q) * (h @ h).trace()
    return (num / h.trace()).item()


# ----------------------------------------------------------------------------- exact numbers

def test_axis_aligned_samples_give_exact_numbers():
    # samples along coordinate axes: H and every H_i are diagonal, so each Hutchinson probe
    # is exact and the report must match the hand computation to rounding.
    x = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [3.0, 0, 0], [0, 0, 0.5]], dtype=DT)
    model, data = linear_problem(x)
    r = stability_report(model, half_mse, data, lr=0.1, batch_size=2, probes=8, iters=3,
                         generator=gen(), dtype=DT)  # probes: 2 sweeps over the 4 samples
    # H = diag(1 + 9, 4, 0.25) / 4
    assert r.trace == pytest.approx(14.25 / 4, abs=1e-12)
    assert r.trace_stderr == pytest.approx(0.0, abs=1e-12)
    assert r.lambda_max == pytest.approx(10 / 4, abs=1e-12)
    assert r.trace_sq == pytest.approx((100 + 16 + 0.0625) / 16, abs=1e-12)
    assert r.sample_trace_sq == pytest.approx((1 + 16 + 81 + 0.0625) / 4, abs=1e-12)
    s2 = (0.5 * r.sample_trace_sq + 0.5 * r.trace_sq) / r.trace
    assert r.s_batch == pytest.approx(s2, abs=1e-12)
    assert r.loss == 0.0 and r.n_samples == 4 and r.threshold == pytest.approx(20.0)


def test_random_linear_regression_matches_closed_form():
    g = gen(1)
    x = torch.randn(12, 5, generator=g, dtype=DT)
    model, data = linear_problem(x)
    per_sample = [xi[:, None] @ xi[None, :] for xi in x]
    h = x.T @ x / 12
    r = stability_report(model, half_mse, data, lr=0.05, batch_size=3, probes=2500, iters=5,
                         generator=gen(2))
    assert r.lambda_max == pytest.approx(torch.linalg.eigvalsh(h)[-1].item(), rel=1e-10)
    for est, se, exact in [
            (r.trace, r.trace_stderr, h.trace().item()),
            (r.trace_sq, r.trace_sq_stderr, (h @ h).trace().item()),
            (r.sample_trace_sq, r.sample_trace_sq_stderr, (x.norm(dim=1) ** 4).mean().item()),
            (r.s_batch, r.s_batch_stderr, exact_s_batch(per_sample, 3, 12))]:
        assert 0 < se < 0.1 * abs(exact)
        assert abs(est - exact) < 4 * se


def test_report_is_frozen_readable_and_reproducible():
    x = torch.randn(6, 3, generator=gen(3), dtype=DT)
    model, data = linear_problem(x)
    a = stability_report(model, half_mse, data, lr=0.1, batch_size=2, probes=10,
                         generator=gen(4))
    b = stability_report(model, half_mse, data, lr=0.1, batch_size=2, probes=10,
                         generator=gen(4))
    assert a == b
    assert isinstance(a, StabilityReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.trace = 0.0
    text = str(a)
    for piece in ("lr = 0.1", "2/lr = 20", "size 2 of 6", "tr H", "lambda_max", "S_B",
                  "stable"):
        assert piece in text
    assert a.sgd_ratio == pytest.approx(0.05 * a.trace)


def test_batches_and_dataloader_give_the_same_report():
    x = torch.randn(8, 3, generator=gen(5), dtype=DT)
    model, (x, y) = linear_problem(x)
    one = stability_report(model, half_mse, (x, y), lr=0.1, batch_size=2, probes=12,
                           generator=gen(6))
    split = stability_report(model, half_mse, [(x[:3], y[:3]), (x[3:], y[3:])], lr=0.1,
                             batch_size=2, probes=12, generator=gen(6))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    dl = stability_report(model, half_mse, loader, lr=0.1, batch_size=2, probes=12,
                          generator=gen(6))
    assert one == split == dl


def test_float32_model_with_dtype_float64():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    r = stability_report(model, half_mse, (x, torch.zeros(2, 1)), lr=0.6, batch_size=1,
                         probes=4, generator=gen(), dtype=DT)
    assert (r.trace, r.s_batch) == (2.5, 3.4) and r.lambda_max == pytest.approx(2.0, abs=1e-12)
    assert r.gd_stable and r.sgd_stable and not r.batch_stable


# ----------------------------------------------------------------------------- the S_B formula

@pytest.mark.parametrize("batch_size,replacement", [(1, True), (2, True), (3, True),
                                                    (2, False), (3, False)])
def test_s_batch_equals_enumerated_one_step_growth(batch_size, replacement):
    # E ||I - lr H_B||_F^2 = p - 2 lr tr(H) + lr^2 tr(H) S_B, exactly; axis-aligned samples
    # (two share an axis) make the report's numbers exact, so compare to rounding.
    x = torch.tensor([[1.0, 0, 0], [0, 1.5, 0], [2.0, 0, 0], [0, 0, 0.7]], dtype=DT)
    model, data = linear_problem(x)
    per_sample = [xi[:, None] @ xi[None, :] for xi in x]
    lr = 0.3
    r = stability_report(model, half_mse, data, lr=lr, batch_size=batch_size, probes=8,
                         replacement=replacement, generator=gen(), dtype=DT)
    p = 3
    growth = 1 + (lr * lr * r.trace * r.s_batch - 2 * lr * r.trace) / p
    assert growth == pytest.approx(enumerated_growth(per_sample, lr, batch_size, replacement),
                                   abs=1e-12)


def test_s_batch_estimate_agrees_with_enumeration_on_a_dense_problem():
    x = torch.randn(4, 3, generator=gen(7), dtype=DT)
    model, data = linear_problem(x)
    per_sample = [xi[:, None] @ xi[None, :] for xi in x]
    lr = 0.2
    r = stability_report(model, half_mse, data, lr=lr, batch_size=2, probes=3000,
                         generator=gen(8))
    h = sum(per_sample) / 4
    s_enum = ((enumerated_growth(per_sample, lr, 2) - 1) * 3 / lr + 2 * h.trace().item()) / (
        lr * h.trace().item())
    assert s_enum == pytest.approx(exact_s_batch(per_sample, 2, 4), rel=1e-10)
    assert abs(r.s_batch - s_enum) < 4 * r.s_batch_stderr


def test_s_batch_violation_means_mean_square_divergence():
    # The claim behind S_B: S_B > 2/lr forces the exact second-moment operator's spectral
    # radius above 1 (Rayleigh quotient at M = I). Checked on random rank-one instances, with
    # the trace condition S_1 >= tr(H) of Wu & Su alongside.
    g = gen(9)
    flagged = 0
    for trial in range(25):
        n, p = 3 + trial % 3, 2 + trial % 2
        x = torch.randn(n, p, generator=g, dtype=DT) * torch.rand(n, 1, generator=g, dtype=DT)
        per_sample = [xi[:, None] @ xi[None, :] for xi in x]
        h = sum(per_sample) / n
        assert exact_s_batch(per_sample, 1, n) >= h.trace().item() - 1e-12
        for batch_size in range(1, n + 1):
            s = exact_s_batch(per_sample, batch_size, n)
            moments = batch_moments(per_sample, batch_size)
            for lr in (1.0 / s, 1.9 / s, 2.1 / s, 3.0 / s):
                rho = second_moment_radius(per_sample, lr, batch_size, moments=moments)
                growth = enumerated_growth(per_sample, lr, batch_size, moments=moments)
                assert rho >= growth - 1e-10
                if s > 2 / lr:
                    flagged += 1
                    assert rho > 1 + 1e-9
    assert flagged > 50


def test_jensen_formula_of_the_spec_misses_an_instability():
    # (1 - 1/B) tr(H^2)/tr(H) + tr(H)/B replaces E_i tr(H_i)^2 by tr(H)^2: weaker. Here, at
    # B = 1 and lr = 0.6, it (= tr H = 2.5 <= 3.33) calls the minimum stable, yet SGD's
    # second moment diverges; the per-sample S_1 = 3.4 flags it.
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=DT)
    per_sample = [xi[:, None] @ xi[None, :] for xi in x]
    lr = 0.6
    assert second_moment_radius(per_sample, lr, 1) > 1.1
    model, data = linear_problem(x)
    r = stability_report(model, half_mse, data, lr=lr, batch_size=1, probes=4, generator=gen())
    jensen = r.trace  # the spec's formula at B = 1
    assert jensen <= r.threshold and r.sgd_stable
    assert not r.batch_stable and r.s_batch == pytest.approx(3.4)
    assert second_moment_radius(per_sample, 0.5, 1) == pytest.approx(1.0)  # exact edge


def test_gd_condition_and_full_batch_without_replacement():
    x = torch.randn(5, 3, generator=gen(10), dtype=DT)
    model, data = linear_problem(x)
    per_sample = [xi[:, None] @ xi[None, :] for xi in x]
    h = sum(per_sample) / 5
    lam = torch.linalg.eigvalsh(h)[-1].item()
    # without replacement and B = n, SGD is GD: q = 0 and S_B = tr(H^2)/tr(H) <= lambda_max
    r = stability_report(model, half_mse, data, lr=1.9 / lam, batch_size=5, probes=2000,
                         replacement=False, generator=gen(11))
    assert r.mixing == 0.0 and r.gd_stable
    assert r.s_batch == pytest.approx((h @ h).trace().item() / h.trace().item(), rel=0.1)
    assert second_moment_radius(per_sample, 1.9 / lam, 5, replacement=False) < 1
    assert not stability_report(model, half_mse, data, lr=2.1 / lam, batch_size=5, probes=2,
                                replacement=False, generator=gen()).gd_stable


# ----------------------------------------------------------------------------- reproductions

def test_diagonal_network_sgd_minimum_is_flat_in_trace_gd_is_not(one_thread):
    c = diagonal_network_minima(0.03, runs=4, probes=200)
    assert isinstance(c, MinimaComparison)
    assert c.gd_status == "converged" and c.sgd_status == ("converged",) * 4
    assert c.gd.loss < 1e-12 and all(r.loss < 1e-12 for r in c.sgd)
    assert all(r.sgd_stable and r.batch_stable for r in c.sgd)
    assert max(c.sgd_ratios) < 0.6          # measured 0.28-0.38
    assert c.gd_ratio > 1.3                 # measured 1.40: SGD-unstable ...
    assert c.gd.gd_stable and not c.gd.sgd_stable and not c.gd.batch_stable  # ... GD-stable


def test_diagonal_network_sgd_cannot_stay_where_gd_converges(one_thread):
    # lr = 0.04: GD converges to lr tr(H)/2 = 1.86; each SGD run either diverges or escapes to
    # a minimum with lr tr(H)/2 <= 1 (measured: 2 diverge, 2 reach 0.26 and 0.18)
    c = diagonal_network_minima(0.04, runs=4, probes=50)
    assert c.gd_status == "converged" and c.gd.gd_stable and c.gd_ratio > 1.5
    assert "diverged" in c.sgd_status
    assert set(c.sgd_status) <= {"diverged", "converged"}
    assert all(r is None or r.sgd_ratio < 0.5 for r in c.sgd)
    assert all((r is None) == (s == "diverged") for r, s in zip(c.sgd, c.sgd_status))


def test_diagonal_network_batch_two_obeys_s_batch_not_trace(one_thread):
    # With B = 2 the trace condition no longer applies (SGD ends with lr tr(H)/2 > 1 at
    # lr = 0.03) but S_2 <= 2/lr still holds; at lr = 0.06 GD's minimum violates S_2 and the
    # SGD runs either diverge or find a minimum that satisfies it.
    c = diagonal_network_minima(0.03, batch_size=2, runs=3, probes=200)
    assert c.sgd_status == ("converged",) * 3
    assert min(c.sgd_ratios) > 1.2 and all(r.batch_ratio < 1 for r in c.sgd)
    c = diagonal_network_minima(0.06, batch_size=2, runs=4, probes=200)
    assert c.gd_status == "converged" and c.gd.batch_ratio > 1.3 and c.gd.gd_stable
    assert "diverged" in c.sgd_status and "converged" in c.sgd_status
    assert all(r.batch_ratio < 1 for r in c.sgd if r is not None)


def test_relu_network_sgd_minima_satisfy_trace_condition(one_thread):
    c = relu_network_minima(0.05, runs=4, probes=200)
    assert c.gd_status == "converged" and c.sgd_status == ("converged",) * 4
    assert all(r.loss < 1e-10 and r.sgd_stable and r.batch_stable for r in c.sgd)
    assert max(c.sgd_ratios) < 0.7          # measured 0.37-0.49
    assert c.gd_ratio > 1.1 > max(c.sgd_ratios)   # measured 1.40
    assert c.gd.gd_stable and not c.gd.sgd_stable
    assert "GD  (converged" in str(c)


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def small():
    x = torch.randn(4, 2, generator=gen(12), dtype=DT)
    return linear_problem(x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(lr=-1.0), "lr must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(batch_size=2.0), "batch_size must be an integer"),
    (dict(batch_size=5), r"batch_size must be <= the number of samples \(4\)"),
    (dict(probes=0), "probes must be an integer >= 1"),
    (dict(iters=0), "iters must be an integer >= 1"),
    (dict(replacement=1), "replacement must be True or False"),
    (dict(progress="yes"), "progress must be True or False"),
    (dict(dtype=torch.int64), "dtype must be a floating-point"),
    (dict(generator=0), "generator must be a torch.Generator"),
])
def test_bad_arguments(small, kwargs, match):
    model, data = small
    args = dict(lr=0.1, batch_size=2, probes=2, generator=gen())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        stability_report(model, half_mse, data, **args)


def test_bad_data_model_and_loss(small):
    model, (x, y) = small
    call = dict(lr=0.1, batch_size=1, probes=2, generator=gen())
    with pytest.raises(ValueError, match="data must be a batch"):
        stability_report(model, half_mse, x, **call)
    with pytest.raises(ValueError, match="at least one batch"):
        stability_report(model, half_mse, [], **call)
    with pytest.raises(ValueError, match="share their first"):
        stability_report(model, half_mse, (x, y[:3]), **call)
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        stability_report(lambda t: t, half_mse, (x, y), **call)
    with pytest.raises(ValueError, match="loss_fn must be callable"):
        stability_report(model, "mse", (x, y), **call)
    summed = torch.nn.MSELoss(reduction="sum")
    with pytest.raises(ValueError, match=r"average over the batch \(reduction='mean'\)"):
        stability_report(model, summed, (x, y), **call)
    with pytest.raises(TypeError):
        stability_report(model, half_mse, (x, y), **call, lr_scale=2)


def test_bad_reproduction_arguments():
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        diagonal_network_minima(0.03, batch_size=21)
    with pytest.raises(ValueError, match="sparsity must be <= d"):
        diagonal_network_minima(0.03, sparsity=41)
    with pytest.raises(ValueError, match="lr must be"):
        relu_network_minima(0.0)
    with pytest.raises(ValueError, match="width must be an integer"):
        relu_network_minima(0.05, width=0)
    with pytest.raises(TypeError):
        relu_network_minima(0.05, hidden=10)


def test_criterion_that_refuses_shifted_outputs_still_checked():
    # BCELoss rejects outputs above 1, so the reduction check falls back to the plain outputs
    g = gen(13)
    x = torch.randn(6, 2, generator=g, dtype=DT)
    y = (x[:, :1] > 0).to(DT)
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid()).to(DT)
    r = stability_report(model, torch.nn.BCELoss(), (x, y), lr=0.1, batch_size=2, probes=6,
                         generator=gen(), progress=True)
    assert r.trace > 0 and r.s_batch > 0 and math.isfinite(r.s_batch_stderr)
    with pytest.raises(ValueError, match="average over the batch"):
        stability_report(model, torch.nn.BCELoss(reduction="sum"), (x, y), lr=0.1,
                         batch_size=2, probes=2, generator=gen())
