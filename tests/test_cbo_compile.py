"""CBO under torch.compile: graph breaks per step, compiled frames over many steps (also while
a scheduler changes a tensor lr), and compiled steps against eager ones."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from stochstep.optimizers.cbo import CBO, GeometricAlpha


def build(batched=True, lr=0.1, **kwargs):
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    x = torch.randn(16, 3, generator=g)
    y = torch.sin(x.sum(-1, keepdim=True))
    opt = CBO(model.parameters(), 6, lr=lr, alpha=GeometricAlpha(10.0), model=model if batched
              else None, generator=torch.Generator().manual_seed(1), **kwargs)

    def train_step():
        return opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))

    return model, opt, train_step


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("batched,lr", [(True, 0.1), (False, 0.1), (True, torch.tensor(0.1))],
                         ids=["vmap", "loop", "vmap-tensor-lr"])
def test_a_step_breaks_the_graph_once_for_its_draws_and_checks(batched, lr):
    _, _, train_step = build(batched, lr)
    first = torch._dynamo.explain(train_step)()       # also draws the particles
    later = torch._dynamo.explain(train_step)()
    assert first.graph_break_count == 2
    assert later.graph_break_count == len(later.break_reasons) == 1
    assert "disable" in later.break_reasons[0].reason
    # at the step's one call of _eager_part, through run_eagerly
    assert [f.name for f in later.break_reasons[0].user_stack[-2:]] == ["step", "run_eagerly"]


@pytest.mark.parametrize("noise", ["anisotropic", "isotropic"])
def test_compiled_steps_do_not_recompile_and_equal_eager_ones(noise):
    model, _, eager_step = build(noise=noise)
    compiled_model, _, train_step = build(noise=noise)
    counter = CompileCounter()
    compiled = torch.compile(train_step, backend=counter)
    frames = []
    for _ in range(12):
        torch.testing.assert_close(compiled(), eager_step(), rtol=0, atol=0)
        frames.append(counter.frame_count)
    assert frames[2] == frames[-1]        # after the first steps, no new frames
    for a, b in zip(model.parameters(), compiled_model.parameters()):
        assert torch.equal(a, b)          # the eager backend runs the same kernels


def test_a_scheduled_tensor_lr_does_not_recompile():
    model, opt, train_step = build(lr=torch.tensor(0.05))
    eager_model, eager_opt, eager_step = build(lr=torch.tensor(0.05))
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda k: 0.9 ** k)
                  for o in (opt, eager_opt)]
    counter = CompileCounter()
    compiled = torch.compile(train_step, backend=counter)
    frames = []
    for _ in range(12):
        compiled()
        eager_step()
        for scheduler in schedulers:
            scheduler.step()
        frames.append(counter.frame_count)
    assert frames[2] == frames[-1]
    # compiled, lam * dt and sqrt(dt) are float32 tensor math; eager, Python floats
    for a, b in zip([*model.parameters(), *opt.state.values()],
                    [*eager_model.parameters(), *eager_opt.state.values()]):
        a, b = (a["particles"], b["particles"]) if isinstance(a, dict) else (a, b)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inductor_compiled_steps_match_eager_ones():
    model, _, eager_step = build()
    compiled_model, _, train_step = build()
    compiled = torch.compile(train_step)
    for _ in range(3):
        compiled()
        eager_step()
    for a, b in zip(model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
