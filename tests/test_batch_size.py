"""Granziol et al. (arXiv 2006.09092) as small seeded experiments: mini-batch Hessian extremes,
the largest stable learning rate against batch size (linear for SGD, square root for Adam), and
the suggest_lr rule built on it. Every threshold below is from measurements recorded next to it
(python -m pytest -q tests/test_batch_size.py reruns them)."""

import math

import pytest
import torch

from stochstep.theory_checks.batch_size import (largest_stable_lr, lr_batch_scaling,
                                                minibatch_hessian_extremes, stability_trial,
                                                suggest_lr)

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny ops

CE = torch.nn.CrossEntropyLoss()
MSE = torch.nn.MSELoss()
# brackets that hold every largest stable lr of the MLP below (SGD 0.14..10, Adam 0.03..0.6)
BRACKET = {"sgd": (1e-2, 1e2), "adam": (1e-3, 10.0)}


def mlp_problem(seed=0, n=256, d=32, hidden=64, classes=10, label_noise=0.5):
    """The spec's tanh MLP 32-64-10 on a noisy linear-teacher classification task, seeded
    (PyTorch-default-like uniform init from our generator; the global RNG is left as it was)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    teacher = torch.randn(d, classes, generator=g)
    y = (x @ teacher + label_noise * torch.randn(n, classes, generator=g)).argmax(1)
    with torch.random.fork_rng():
        model = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                    torch.nn.Linear(hidden, classes))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = 1 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.uniform_(-bound, bound, generator=g)
    return model, x, y


def linear_problem(seed=0, n=64, d=3, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    with torch.random.fork_rng():
        model = torch.nn.Linear(d, 1, bias=bias)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model, x, y


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- Hessian extremes

def test_single_sample_hessians_are_exact():
    # least squares without bias: H_{i} = 2 x_i x_i^T, so lambda_max = 2 |x_i|^2, lambda_min = 0
    model, x, y = linear_problem(n=16, d=3, bias=False)
    ext = minibatch_hessian_extremes(model, MSE, (x, y), [1, 16], samples=6, generator=gen(1),
                                     dtype=torch.float64)
    per_sample = 2 * x.double().pow(2).sum(1)
    for value in ext.lambda_max[0]:
        assert (per_sample - value).abs().min() < 1e-8
    assert ext.lambda_min[0].abs().max() < 1e-8
    exact = torch.linalg.eigvalsh(2 * x.double().T @ x.double() / 16)
    assert ext.full_lambda_max == pytest.approx(exact[-1].item(), rel=1e-10)
    assert ext.full_lambda_min == pytest.approx(exact[0].item(), rel=1e-10)
    assert torch.allclose(ext.lambda_max[1], exact[-1])  # B = N is the full batch
    assert torch.equal(ext.lambda_max_std.isnan(), torch.tensor([False, False]))


def test_identical_samples_give_the_full_hessian_at_every_batch_size():
    model, x, y = mlp_problem(n=8, d=4, hidden=5, classes=3)
    x, y = x[:1].repeat(8, 1), y[:1].repeat(8)
    ext = minibatch_hessian_extremes(model, CE, (x, y), [1, 3], samples=2, iters=200,
                                     generator=gen(0), dtype=torch.float64)
    assert torch.allclose(ext.lambda_max, torch.tensor(ext.full_lambda_max, dtype=torch.float64))
    assert torch.allclose(ext.lambda_min, torch.tensor(ext.full_lambda_min, dtype=torch.float64))


def test_minibatch_extremes_exceed_full_batch_and_shrink_with_batch_size():
    # Granziol et al.: the batch Hessian's extremal eigenvalues are larger in magnitude than the
    # empirical Hessian's. Measured (this call): mean lambda_max 6.72 / 3.77 / 1.44 / 0.626 /
    # 0.385 at B = 1 / 2 / 8 / 32 / 128 against 0.330 for all 256 points (std over the 8
    # batches 0.97 ... 0.022); mean lambda_min -6.30 / -3.47 / -1.29 / -0.548 / -0.303 against
    # -0.241.
    model, x, y = mlp_problem()
    sizes = [1, 2, 8, 32, 128]
    ext = minibatch_hessian_extremes(model, CE, (x, y), sizes, samples=8, generator=gen(0))
    top, bottom = ext.lambda_max_mean, ext.lambda_min_mean
    assert (top > ext.full_lambda_max).all() and (bottom < ext.full_lambda_min).all()
    assert (top.diff() < 0).all() and (bottom.diff() > 0).all()
    assert top[0] > 10 * ext.full_lambda_max and bottom[0] < 10 * ext.full_lambda_min
    assert top[-1] < 1.6 * ext.full_lambda_max  # B = N/2: close to the full Hessian
    assert (ext.lambda_max_std[:2] > ext.lambda_max_std[-1]).all()


def test_hessian_extremes_are_reproducible_and_leave_global_rng_alone():
    model, x, y = mlp_problem(n=32, d=4, hidden=6, classes=3)
    state = torch.random.get_rng_state()
    a = minibatch_hessian_extremes(model, CE, (x, y), [2, 8], samples=3, iters=8,
                                   generator=gen(5))
    b = minibatch_hessian_extremes(model, CE, (x, y), [2, 8], samples=3, iters=8,
                                   generator=gen(5))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.lambda_max, b.lambda_max) and torch.equal(a.lambda_min, b.lambda_min)


# ----------------------------------------------------------------------------- stable lr

def test_full_batch_gd_on_least_squares_finds_two_over_lambda_max():
    # deterministic GD on a quadratic is stable iff lr < 2 / lambda_max(H); just above it the
    # top component grows by (lr lambda - 1)^2 per step, too slowly to double the loss in 200
    # steps within 1% of the limit (measured: 1.002 x 2 / lambda_max)
    model, x, y = linear_problem()
    lam = torch.linalg.eigvalsh(2 * torch.cat([x, torch.ones(64, 1)], 1).T
                                @ torch.cat([x, torch.ones(64, 1)], 1) / 64)[-1].item()
    res = largest_stable_lr("sgd", model, MSE, (x, y), 64, steps=200, lo=0.1, hi=2.0,
                            tol=0.005, generator=gen(0))
    assert 0.98 < res.lr * lam / 2 < 1.01
    assert res.unstable_lr / res.lr <= 1.005
    assert res.trials[0].lr == 0.1 and res.trials[0].stable and not res.trials[1].stable


def test_strict_criterion_rejects_a_spike_that_the_lenient_one_accepts():
    # tanh + cross-entropy, full batch, lr 25 (about 3x the largest stable lr): the loss shoots
    # up to 10x its start, then the network fits the data anyway (final loss ~1e-4 of the
    # start). "Finite and lower after T steps" calls that stable, and does so up to lr 100
    # (peak 30x); the peak bound rejects it. lr 2 passes both.
    model, x, y = mlp_problem()
    lenient = stability_trial("sgd", model, CE, (x, y), 256, 25.0, blowup=1e30, generator=gen(0))
    strict = stability_trial("sgd", model, CE, (x, y), 256, 25.0, generator=gen(0))
    assert lenient.stable and lenient.final_ratio < 0.01 and lenient.peak_ratio > 5
    assert not strict.stable and strict.peak_ratio > 2 and strict.steps_run < 200
    assert stability_trial("sgd", model, CE, (x, y), 256, 2.0, generator=gen(0)).stable


def test_margin_requires_a_decrease():
    model, x, y = linear_problem()
    tiny = stability_trial("sgd", model, MSE, (x, y), 8, 1e-5, steps=20, generator=gen(0))
    assert tiny.stable and tiny.final_ratio > 0.99
    assert not stability_trial("sgd", model, MSE, (x, y), 8, 1e-5, steps=20, margin=0.1,
                               generator=gen(0)).stable


def test_model_and_global_rng_untouched_and_result_reproducible():
    model, x, y = linear_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    a = largest_stable_lr("adam", model, MSE, (x, y), 4, steps=30, lo=1e-3, hi=100.0, tol=0.1,
                          generator=gen(3))
    b = largest_stable_lr("adam", model, MSE, (x, y), 4, steps=30, lo=1e-3, hi=100.0, tol=0.1,
                          generator=gen(3))
    assert a == b
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_custom_optimizer_factory_is_used():
    model, x, y = linear_problem()
    plain = largest_stable_lr("sgd", model, MSE, (x, y), 64, steps=100, lo=1e-3, hi=10.0,
                              tol=0.01, generator=gen(0))
    heavy = largest_stable_lr(lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.5), model,
                              MSE, (x, y), 64, steps=100, lo=1e-3, hi=10.0, tol=0.01,
                              generator=gen(0))
    # heavy ball on a quadratic: stable iff lr * lambda < 2 (1 + momentum)
    assert heavy.lr / plain.lr == pytest.approx(1.5, rel=0.03)


# ----------------------------------------------------------------------------- scaling laws

@pytest.mark.parametrize("optimizer, low, high", [("sgd", 0.85, 1.2), ("adam", 0.4, 0.75)])
def test_largest_stable_lr_scales_linearly_for_sgd_and_as_sqrt_for_adam(optimizer, low, high):
    # Granziol et al.: linear scaling for SGD, square-root scaling for Adam. Measured slopes of
    # log lr* against log B (this exact call, data/model seeds 0..7 with generator 100 + seed):
    # SGD 0.976--1.069 (mean 1.02), Adam 0.509--0.644 (mean 0.585); seed 0 gives 0.976 and
    # 0.509. With 400 steps (and one generator per batch size) Adam came closer to 1/2
    # (0.488--0.602 on seeds 0..3) at twice the cost. The bounds leave about 0.1 outside the
    # measured ranges and keep the two laws apart.
    model, x, y = mlp_problem(seed=0)
    lo, hi = BRACKET[optimizer]
    fit = lr_batch_scaling(optimizer, model, CE, (x, y), [1, 2, 4, 8, 16], steps=200, lo=lo,
                           hi=hi, tol=0.1, generator=gen(100))
    assert low <= fit.slope <= high, (fit.slope, fit.lrs)
    assert (fit.lrs.diff() >= 0).all() and fit.lrs[-1] > 3 * fit.lrs[0]
    assert all(r.unstable_lr / r.lr <= 1.1 for r in fit.results)


# ----------------------------------------------------------------------------- suggest_lr

@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_suggested_lr_is_stable_and_near_the_largest_stable_lr(optimizer):
    # Measured with this protocol on data seeds 0..4 at B = 32, 64 (B_0 = 8, full batch 256):
    # the interpolated largest stable lr was 0.69--1.11 times the bisected one, so with
    # safety 0.5 the suggestion was 0.34--0.55 of it (seed 0, B = 32: SGD 0.554, Adam 0.343),
    # always stable. Asserted: stable on a fresh batch sequence, and between 0.25 and 0.75 of
    # the bisected largest stable lr (the interpolation within a factor 1.5 either way).
    model, x, y = mlp_problem(seed=0)
    lo, hi = BRACKET[optimizer]
    s = suggest_lr(model, CE, (x, y), 32, optimizer, steps=200, lo=lo, hi=hi, tol=0.1,
                   generator=gen(0))
    assert s.reference_batch_size == 8 and s.lr == 0.5 * s.predicted_max_lr
    assert s.reference_lr < s.predicted_max_lr < s.full_batch_lr
    star = largest_stable_lr(optimizer, model, CE, (x, y), 32, steps=200, lo=lo, hi=hi,
                             tol=0.1, generator=gen(1000)).lr
    assert 0.25 <= s.lr / star <= 0.75, (s, star)
    assert stability_trial(optimizer, model, CE, (x, y), 32, s.lr, generator=gen(2000)).stable


def test_suggest_lr_at_the_anchors_is_the_measurement():
    model, x, y = linear_problem()
    kw = dict(steps=30, lo=1e-3, hi=10.0, tol=0.1)
    full = suggest_lr(model, MSE, (x, y), 64, **kw, generator=gen(0))
    assert full.reference_batch_size is None and full.lr == 0.5 * full.full_batch_lr
    star = largest_stable_lr("sgd", model, MSE, (x, y), 64, **kw, generator=gen(0)).lr
    assert full.full_batch_lr == star
    small = suggest_lr(model, MSE, (x, y), 4, "adam", safety=1.0, **kw, generator=gen(0))
    assert small.reference_batch_size == 4 and small.full_batch_lr is None
    assert small.lr == small.reference_lr and float(small) == small.lr


def test_interpolation_follows_the_scaling_law_between_anchors():
    from stochstep.theory_checks.batch_size import _interpolate
    n = 1025
    # far below the crossover the rule is the paper's power law B^kappa ...
    for kappa in (1.0, 0.5):
        lr = [_interpolate(b, n, 4, 0.01, 100.0, kappa) for b in (4, 8, 16)]
        assert lr[0] == pytest.approx(0.01)
        assert lr[1] / lr[0] == pytest.approx(2 ** kappa, rel=0.01)
        assert lr[2] / lr[1] == pytest.approx(2 ** kappa, rel=0.01)
        # ... and it meets the full-batch value at B = N
        assert _interpolate(n, n, 4, 0.01, 100.0, kappa) == pytest.approx(100.0)
    # no noise effect resolved at B_0: flat above it, power law below it
    assert _interpolate(64, n, 16, 2.0, 1.0, 1.0) == 1.0
    assert _interpolate(4, n, 16, 2.0, 1.0, 0.5) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- bad input

def test_bad_arguments_raise_clear_errors():
    model, x, y = linear_problem(n=16)
    data = (x, y)
    with pytest.raises(ValueError, match=r"batch_size must be <= the number of samples .*16"):
        suggest_lr(model, MSE, data, 17)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam', got 'rmsprop'"):
        suggest_lr(model, MSE, data, 4, "rmsprop")
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam'"):
        largest_stable_lr("lbfgs", model, MSE, data, 4)
    with pytest.raises(ValueError, match="make_optimizer must be a callable"):
        largest_stable_lr(3, model, MSE, data, 4)
    with pytest.raises(ValueError, match="hi must be > lo"):
        largest_stable_lr("sgd", model, MSE, data, 4, lo=1.0, hi=0.5)
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        largest_stable_lr("sgd", model, MSE, data, 4, tol=0)
    with pytest.raises(ValueError, match="blowup must be a finite number > 1"):
        stability_trial("sgd", model, MSE, data, 4, 0.1, blowup=1.0)
    with pytest.raises(ValueError, match=r"margin must be a number in \[0, 1\)"):
        stability_trial("sgd", model, MSE, data, 4, 0.1, margin=1.0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        stability_trial("sgd", model, MSE, data, 4, -0.1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        stability_trial("sgd", model, MSE, data, 0, 0.1)
    with pytest.raises(ValueError, match="share their first"):
        largest_stable_lr("sgd", model, MSE, (x, y[:5]), 4)
    with pytest.raises(ValueError, match="data must be a pair of tensors"):
        largest_stable_lr("sgd", model, MSE, [(x, y)], 4)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        largest_stable_lr("sgd", lambda t: t, MSE, data, 4)
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        largest_stable_lr("sgd", model, "mse", data, 4)
    with pytest.raises(ValueError, match="lo=.* is already unstable .*lower lo"):
        largest_stable_lr("sgd", model, MSE, data, 16, steps=20, lo=5.0, hi=50.0)
    with pytest.raises(ValueError, match="hi=.* is still stable .*raise hi"):
        largest_stable_lr("sgd", model, MSE, data, 16, steps=20, lo=1e-4, hi=1e-3)
    with pytest.raises(ValueError, match="at least two distinct"):
        lr_batch_scaling("sgd", model, MSE, data, [4, 4])
    with pytest.raises(ValueError, match=r"batch_sizes\[1\] must be <= the number of samples"):
        minibatch_hessian_extremes(model, MSE, data, [2, 32])
    with pytest.raises(ValueError, match="batch_sizes must be a list or tuple"):
        minibatch_hessian_extremes(model, MSE, data, 4)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        minibatch_hessian_extremes(model, MSE, data, [4], samples=0)
    with pytest.raises(ValueError, match=r"safety must be in \(0, 1\]"):
        suggest_lr(model, MSE, data, 4, safety=2.0)
    with pytest.raises(ValueError, match="reference_batch_size must be < the number"):
        suggest_lr(model, MSE, data, 4, reference_batch_size=16)
    with pytest.raises(ValueError, match="optimizer_kwargs must not hold 'lr'"):
        suggest_lr(model, MSE, data, 4, optimizer_kwargs={"lr": 0.1})
    with pytest.raises(TypeError):
        suggest_lr(model, MSE, data, 4, optimizer_kwargs={"bogus": 1})
    with pytest.raises(TypeError):
        suggest_lr(model, MSE, data, 4, learning_rate=0.1)
    with pytest.raises(TypeError):
        largest_stable_lr("sgd", model, MSE, data, 4, step=10)
