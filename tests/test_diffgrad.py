"""DiffGrad specifics beyond the registry's generic contract."""

import pytest
import torch

from stochstep.optimizers import DiffGrad


def mlp(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    model = model.to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return model


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    return x, torch.randn(32, 2, generator=g, dtype=torch.float64)


def train(opt_cls, steps=20, set_to_none=True, **kwargs):
    model, (x, y) = mlp(), data()
    opt = opt_cls(model.parameters(), **kwargs)
    for k in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        idx = slice(k % 4 * 8, k % 4 * 8 + 8)  # mini-batches, so gradients change step to step
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("kwargs", [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1)])
def test_matches_torch_optimizer_port_of_the_authors_code(kwargs):
    """torch-optimizer's DiffGrad is a port of the authors' diffGrad_v2: an independent
    implementation of the same rule. (It writes the decay into p.grad; ours never does.)"""
    import torch_optimizer  # in the test extra
    ours, _ = train(DiffGrad, **kwargs)
    theirs, _ = train(torch_optimizer.DiffGrad, **kwargs)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_previous_gradient_is_a_copy_not_an_alias():
    """The authors' v1 kept an alias of p.grad, so in-place zero_grad made xi 0.5 forever."""
    a, _ = train(DiffGrad, lr=1e-2, set_to_none=True)
    b, _ = train(DiffGrad, lr=1e-2, set_to_none=False)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("fused", [False, True])
def test_mean_friction_is_the_mean_of_sigmoid_of_gradient_change(fused):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
    opt = DiffGrad([{"params": [w]}, {"params": [b]}], lr=0.1, track_friction=True, fused=fused)
    grads = [torch.tensor([2.0, -4.0, 1.0], dtype=torch.float64),
             torch.tensor([1.0, -3.0, 3.0], dtype=torch.float64)]
    prev = torch.zeros(3, dtype=torch.float64)
    for g in grads:
        w.grad, b.grad = g.clone(), None
        opt.step()
        want = torch.sigmoid((prev - g).abs()).mean().item()
        assert opt.mean_friction == [pytest.approx(want, rel=1e-12), None]
        prev = g


def test_mean_friction_needs_tracking():
    opt = DiffGrad([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(RuntimeError, match="track_friction"):
        opt.mean_friction


def test_friction_stays_near_one_half_on_a_small_network():
    """What users should know: xi ~ 0.5 makes diffGrad Adam at about half the rate."""
    _, opt = train(DiffGrad, steps=50, lr=1e-3, track_friction=True)
    assert 0.5 <= opt.mean_friction[0] < 0.6


FUSED_OPTIONS = [dict(), dict(weight_decay=0.1, maximize=True, amsgrad=True),
                 dict(weight_decay=0.1, decoupled_weight_decay=True)]


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", FUSED_OPTIONS, ids=["default", "l2-max-ams", "decoupled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_compiled_kernel_matches_the_eager_kernel(monkeypatch, kwargs, dtype):
    """The fused path sends tensors of FUSED_MIN_NUMEL elements or more to a compiled kernel;
    here every tensor goes there."""
    from stochstep.optimizers import diffgrad

    monkeypatch.setattr(diffgrad, "FUSED_MIN_NUMEL", 1)
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in [(7, 5), (3,)]]
    grads = [[torch.randn(s.shape, generator=g, dtype=torch.float64).to(dtype) for s in start]
             for _ in range(4)]
    runs = []
    for fused in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = DiffGrad(params, lr=0.05, fused=fused, track_friction=True, **kwargs)
        for step_grads in grads:
            for p, gr in zip(params, step_grads):
                p.grad = gr.clone()
            opt.step()
        runs.append((params, opt.mean_friction[0], opt.state[params[0]]))
    (eager, f_eager, s_eager), (fused, f_fused, s_fused) = runs
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for name in s_eager:
        torch.testing.assert_close(s_eager[name], s_fused[name], rtol=tol, atol=tol)
    # The eager kernel stores xi in the parameter's dtype before averaging; the compiled one
    # keeps it in float32 registers: in bfloat16 the means differ in the fourth digit.
    assert f_fused == pytest.approx(f_eager, rel=1e-3 if dtype == torch.bfloat16 else 1e-6)
