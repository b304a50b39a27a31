"""torch.compile of a step that calls ``opt.step()``: graph breaks, recompiles, and the numbers.

The targets (issue 12): a deterministic optimizer's compiled step has no graph break and compiles
at most two graphs (the first step, which creates the state, and the rest) while a scheduler
changes a tensor lr every step; a stochastic one breaks once per step, where it draws from its
explicit generator, and recompiles nothing after its first steps. Compiling with inductor on CPU
costs seconds per optimizer: those tests are marked slow; the counting ones trace only.
"""

import pytest
import torch
import torch._dynamo.testing

from stochstep import optimizers  # noqa: F401  (registers the records)
from stochstep.optimizers import DiffGrad
from stochstep.stepping.registry import algorithms

# the records that declare it; CBO, which needs a closure, has tests/test_cbo_compile.py
GRAD = [r for r in algorithms("optimizer") if "grad" in r.requires and "compile" in r.supports]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Every test compiles KernelOptimizer.step anew; dynamo's per-code cache limit must not
    # carry over from one test to the next.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def build(info, seed=0):
    """A small MLP with fixed gradients and the record's optimizer, with a tensor lr."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
            p.grad = torch.randn(p.shape, generator=g)
    kwargs = {**info.default_kwargs, "lr": torch.tensor(float(info.default_kwargs["lr"]))}
    if info.stochastic:
        kwargs["generator"] = torch.Generator().manual_seed(1)
    return model, info.cls(model.parameters(), **kwargs)


def scheduler(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k))


def scheduled_run(sched, step, steps):
    """``steps`` calls of ``step``, the scheduler changing the tensor lr after each."""
    for _ in range(steps):
        step()
        sched.step()


@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_compiled_step_breaks_the_graph_only_where_it_draws(info):
    _, opt = build(info)
    explained = torch._dynamo.explain(opt.step)()
    assert explained.graph_break_count == (1 if info.stochastic else 0), \
        explained.break_reasons


@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_a_scheduled_tensor_lr_recompiles_nothing(info):
    model, opt = build(info)
    counter = torch._dynamo.testing.CompileCounter()

    @torch.compile(backend=counter)
    def step():
        opt.step()

    sched = scheduler(opt)
    scheduled_run(sched, step, 4)
    after_first_steps = counter.frame_count
    scheduled_run(sched, step, 8)
    assert counter.frame_count == after_first_steps
    if not info.stochastic:   # one graph that creates the state, one for every later step
        assert counter.frame_count <= 2
    # the scheduled values were used: the same run in eager gives the same parameters
    eager_model, eager = build(info)
    scheduled_run(scheduler(eager), eager.step, 12)
    for a, b in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


OPTIONS = [
    ("DiffGrad", dict(track_friction=True, amsgrad=True, weight_decay=0.1)),
    ("DiffGrad", dict(fused=True, maximize=True, weight_decay=0.1, decoupled_weight_decay=True)),
    ("SGHMC", dict(resample_every=2)),   # the momentum refresh draws too: in the same break
]


@pytest.mark.parametrize("name, options", OPTIONS, ids=[f"{n}-{sorted(o)[0]}" for n, o in OPTIONS])
def test_compiled_options_follow_eager(name, options):
    info = next(r for r in GRAD if r.name == name)
    runs = []
    for compiled in (True, False):
        model, opt = build(info)
        opt = info.cls(model.parameters(), **{**info.default_kwargs, **options,
                                              "lr": torch.tensor(0.05)},
                       **({"generator": torch.Generator().manual_seed(1)} if info.stochastic
                          else {}))
        step = torch.compile(lambda: opt.step(), backend="eager") if compiled else opt.step
        for _ in range(5):
            step()
        runs.append((model, opt))
    (model, opt), (eager_model, eager) = runs
    for a, b in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if options.get("track_friction"):
        assert opt.mean_friction == pytest.approx(eager.mean_friction, rel=1e-6)
    model, opt = build(info)
    opt = info.cls(model.parameters(), **{**info.default_kwargs, **options,
                                          "lr": torch.tensor(0.05)})
    assert torch._dynamo.explain(opt.step)().graph_break_count == int(info.stochastic)


@pytest.mark.slow
def test_a_tensor_lr_changed_to_a_negative_value_is_refused_in_the_graph():
    info = next(r for r in GRAD if not r.stochastic)
    _, opt = build(info)
    step = torch.compile(lambda: opt.step())
    step()
    opt.param_groups[0]["lr"].fill_(-1.0)
    with pytest.raises(RuntimeError, match="lr must be a number >= 0"):
        step()
    # (with backend="eager", torch 2.13 leaves grad mode off after an error in the graph)
    assert torch.is_grad_enabled()


@pytest.mark.slow
@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_inductor_compiled_step_matches_eager(info):
    """Same seeds, same draws: the compiled run follows the eager one to rounding."""
    model, opt = build(info)
    scheduled_run(scheduler(opt), torch.compile(lambda: opt.step()), 3)
    eager_model, eager = build(info)
    scheduled_run(scheduler(eager), eager.step, 3)
    for a, b in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        for name, t in opt.state[p].items():
            torch.testing.assert_close(t, eager.state[q][name], rtol=1e-5, atol=1e-6)


def build_diffgrad():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model, DiffGrad(model.parameters(), lr=1e-2)


@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(-1, keepdim=True)
    (m_eager, o_eager), (m_comp, o_comp) = build_diffgrad(), build_diffgrad()

    def train_step(model, opt):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    compiled = torch.compile(train_step)
    for _ in range(3):
        train_step(m_eager, o_eager)
        compiled(m_comp, o_comp)
    for a, b in zip(m_eager.parameters(), m_comp.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
