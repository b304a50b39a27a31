"""DiffGrad specifics beyond the registry's generic contract."""

import pytest
import torch

from optimizers import DiffGrad


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
