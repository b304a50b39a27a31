"""The torch.optim contract, for every optimizer in the registry.

Capabilities come from each record (`stepping.registry.AlgorithmInfo`); nothing here names an
algorithm. Adding an optimizer adds a record, not a test.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import re

import pytest
import torch

from stochstep import optimizers  # noqa: F401  (registers the records)
from stochstep.stepping.registry import algorithms

# Records that require "blocks" (bilevel: step(closure) passes the sampled blocks to the
# closure) are left out of the torch-contract tests; the last section runs its own on them.
RECORDS = [r for r in algorithms("optimizer") if "blocks" not in r.requires]
BLOCKS = [r for r in algorithms("optimizer") if "blocks" in r.requires]
IDS = [r.name for r in RECORDS]
# Optimizers that evaluate a closure (CBO, gradient-free; HARPG, which differentiates what it
# returns; NPGIGT, whose closure calls backward: requires "backward") declare
# requires={"closure", ...}: they get the loss from a closure and skip the tests about .grad.
GRAD = [r for r in RECORDS if "grad" in r.requires]


def make(info, params, **overrides):
    if "lr" in overrides:   # the constructor's name for the groups' lr (SSO: target_lr)
        overrides[info.lr_argument] = overrides.pop("lr")
    kwargs = {**info.default_kwargs, **overrides}
    if info.stochastic and "generator" not in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(1234)
    return info.cls(params, **kwargs)


def quadratic_grad(ps):
    """A fixed nonlinear gradient field: g = A p + sin(p) (+ a shift), tensor by tensor."""
    out = []
    for k, p in enumerate(ps):
        flat = p.reshape(-1)
        n = flat.numel()
        a = torch.linspace(0.5, 2.0, n, dtype=p.dtype) if n else flat
        out.append((a * flat + torch.sin(flat) + 0.1 * (k + 1)).reshape(p.shape))
    return out


def quadratic_loss(ps):
    """The potential whose gradient is `quadratic_grad`."""
    total = 0.0
    for k, p in enumerate(ps):
        flat = p.reshape(-1)
        n = flat.numel()
        a = torch.linspace(0.5, 2.0, n, dtype=p.dtype) if n else flat
        total = total + (0.5 * a * flat ** 2 - torch.cos(flat) + 0.1 * (k + 1) * flat).sum()
    return total


def has_lr(info) -> bool:
    """Whether the record's param groups hold torch's ``lr``, which schedulers drive."""
    return "lr" in make(info, [torch.nn.Parameter(torch.zeros(2))]).defaults


def per_group_lr(info) -> bool:
    """Whether its param groups may hold different lrs ("shared_lr": one step over every
    parameter, as SSO's target step, where they must be equal)."""
    return has_lr(info) and "shared_lr" not in info.supports


def needs_grad(opt) -> bool:
    return "grad" in next(r for r in RECORDS if r.cls is type(opt)).requires


def target_loss_of(info) -> tuple:
    """The arguments after the closure of a record that requires "target_loss" (SSO's
    ``step(closure, target_loss)``): the closure's loss value is its own one-dimensional
    target, z = loss(), and ell(z) = z; none for the others."""
    return (lambda z: z.sum(),) if "target_loss" in info.requires else ()


def step_args(opt, loss):
    """The arguments an optimizer without "grad" steps with, for the loss ``loss()``."""
    info = next(r for r in RECORDS if r.cls is type(opt))
    if "target_loss" in info.requires:
        return (loss, *target_loss_of(info))
    return (closure_of(opt, loss),)


def closure_of(opt, loss):
    """The closure an optimizer without "grad" steps with: the loss alone, or, for records
    that require "backward" (torch's convention), zero_grad, the loss and its backward."""
    if "backward" not in next(r for r in RECORDS if r.cls is type(opt)).requires:
        return loss

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value
    return closure


def set_grads(params, grad_fn=quadratic_grad):
    with torch.no_grad():
        for p, g in zip(params, grad_fn([p.detach() for p in params])):
            p.grad = g.clone()


def fresh_params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, generator=g, dtype=dtype)),
            torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=dtype))]


def run(opt, params, steps, grad_fn=quadratic_grad):
    for _ in range(steps):
        if needs_grad(opt):
            set_grads(params, grad_fn)
            opt.step()
        else:
            opt.step(*step_args(opt, lambda: quadratic_loss(params)))


def assert_same(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach())


def assert_same_tree(a, b, where="state_dict"):
    """Nested dicts, lists and tuples with equal structure and bit-equal tensors."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.device == b.device and torch.equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def saved(state_dict):
    """A deep copy made the way checkpoints are: torch.save, then torch.load(weights_only)."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def other_seed(info):
    """Arguments that make a second optimizer start from another random state."""
    return {"generator": torch.Generator().manual_seed(999)} if info.stochastic else {}


# -- construction ------------------------------------------------------------------------------
@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_invalid_arguments_raise_naming_them(info):
    p = torch.nn.Parameter(torch.zeros(2))
    for kwargs, exc, text in info.invalid_kwargs:
        with pytest.raises(exc, match=re.escape(text)):
            info.cls([p], **{**info.default_kwargs, **kwargs})


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_param_group_options_are_checked_like_the_constructors(info):
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    group_options = set(make(info, [p]).defaults)
    for kwargs, exc, text in info.invalid_kwargs:
        if not set(kwargs) <= group_options:  # constructor-only or unknown: not a group option
            exc, text = TypeError, min(set(kwargs) - group_options)
        with pytest.raises(exc, match=re.escape(text)):
            make(info, [{"params": [p], **kwargs}])
        opt = make(info, [p])
        with pytest.raises(exc, match=re.escape(text)):
            opt.add_param_group({"params": [q], **kwargs})


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_unknown_keyword_is_type_error(info):
    with pytest.raises(TypeError, match="no_such_option"):
        make(info, [torch.nn.Parameter(torch.zeros(2))], no_such_option=1)
    with pytest.raises(TypeError, match="no_such_option"):
        make(info, [{"params": [torch.nn.Parameter(torch.zeros(2))], "no_such_option": 1}])


# -- direction ---------------------------------------------------------------------------------
def _quad(x):
    return 0.5 * ((x - 1.0) ** 2 * torch.tensor([1.0, 4.0, 0.5])).sum()


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_descends_a_quadratic(info):
    x = torch.nn.Parameter(torch.tensor([3.0, -2.0, 0.5]))
    opt = make(info, [x])
    start = _quad(x).item()
    for _ in range(100):
        opt.zero_grad()
        if "grad" in info.requires:
            _quad(x).backward()
            opt.step()
        else:
            opt.step(*step_args(opt, lambda: _quad(x)))
    assert _quad(x).item() < 0.5 * start


@pytest.mark.parametrize("info", [r for r in RECORDS if "maximize" in r.supports],
                         ids=lambda r: r.name)
def test_ascends_with_maximize(info):
    x = torch.nn.Parameter(torch.tensor([3.0, -2.0, 0.5]))
    opt = make(info, [x], maximize=True)
    start = -_quad(x).item()
    for _ in range(100):
        opt.zero_grad()
        (-_quad(x)).backward()
        opt.step()
    assert -_quad(x).item() > 0.5 * start


@pytest.mark.parametrize("info", [r for r in RECORDS if "maximize" in r.supports],
                         ids=lambda r: r.name)
def test_maximize_leaves_grad_untouched(info):
    params = fresh_params()
    opt = make(info, params, maximize=True, **({"weight_decay": 0.1}
                                               if "weight_decay" in info.supports else {}))
    set_grads(params)
    before = [p.grad.clone() for p in params]
    opt.step()
    assert_same([p.grad for p in params], before)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_step_with_closure_returns_loss(info):
    x = torch.nn.Parameter(torch.tensor([3.0, -2.0, 0.5]))
    opt = make(info, [x])

    def closure():
        opt.zero_grad()
        loss = _quad(x)
        if info.requires & {"grad", "backward"}:
            loss.backward()
        return loss

    loss = opt.step(closure, *target_loss_of(info))
    assert isinstance(loss, torch.Tensor) and loss.item() == pytest.approx(_quad(
        torch.tensor([3.0, -2.0, 0.5])).item())


# -- which tensors are touched -----------------------------------------------------------------
@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_parameter_without_grad_is_skipped(info):
    a, b = fresh_params()
    opt = make(info, [a, b])
    b_before = b.detach().clone()
    set_grads([a])
    opt.step()
    assert torch.equal(b.detach(), b_before)
    assert b not in opt.state or not opt.state[b]


@pytest.mark.parametrize("info", [r for r in RECORDS if "zero_grad_noop" in r.supports],
                         ids=lambda r: r.name)
def test_zero_gradient_is_a_noop(info):
    params = fresh_params()
    opt = make(info, params)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert_same(params, before)


# (with a norm over all parameters, a parameter's step depends on the others' gradients)
INDEPENDENT = [r for r in GRAD if "global_norm" not in r.supports]


@pytest.mark.parametrize("info", [r for r in INDEPENDENT if not r.stochastic],
                         ids=lambda r: r.name)
def test_late_first_gradient_starts_at_step_one(info):
    a, b = fresh_params()
    b0 = b.detach().clone()
    opt = make(info, [a, b])
    for _ in range(3):
        set_grads([a])
        opt.step()
    set_grads([a, b])
    opt.step()
    solo = torch.nn.Parameter(b0.clone())
    solo_opt = make(info, [solo])
    solo.grad = b.grad.clone()
    solo_opt.step()
    assert torch.equal(b.detach(), solo.detach())


@pytest.mark.parametrize("info", [r for r in RECORDS if "grad" not in r.requires],
                         ids=lambda r: r.name)
def test_gradient_free_optimizers_never_read_grad(info):
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 2)
    twin = copy.deepcopy({"params": params, "opt": opt})
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    run(opt, params, 2)
    run(twin["opt"], twin["params"], 2)
    assert_same(params, twin["params"])
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_sparse_gradients_raise(info):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = make(info, emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# -- groups, foreach, dtypes, complex ----------------------------------------------------------
@pytest.mark.parametrize("info", INDEPENDENT, ids=lambda r: r.name)
def test_param_groups_keep_their_own_hyperparameters(info):
    a, b = fresh_params()
    a2, b2 = (torch.nn.Parameter(t.detach().clone()) for t in (a, b))
    lr = info.default_kwargs.get("lr", 1e-3)
    opt = make(info, [{"params": [a]}, {"params": [b], "lr": lr * 3}])
    opt_a = make(info, [a2])
    opt_b = make(info, [b2], lr=lr * 3)
    for _ in range(3):
        set_grads([a, b])
        set_grads([a2, b2])
        opt.step()
        opt_a.step()
        if info.stochastic:  # continue b's noise stream where a's draws leave it
            opt_b.generator.set_state(opt_a.generator.get_state())
        opt_b.step()
        if info.stochastic:
            opt_a.generator.set_state(opt_b.generator.get_state())
    assert_same([a, b], [a2, b2])


@pytest.mark.parametrize("info", [r for r in RECORDS if "foreach" in r.supports],
                         ids=lambda r: r.name)
def test_foreach_equals_per_tensor_path(info):
    def build(foreach):
        g = torch.Generator().manual_seed(3)
        params = [torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64)),
                  torch.nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64).t()),
                  torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)),
                  torch.nn.Parameter(torch.randn(2, 2, generator=g, dtype=torch.float64))]
        return params, make(info, params, foreach=foreach)

    (pa, oa), (pb, ob) = build(True), build(False)
    for k in range(7):
        use = pa if k != 3 else pa[:2]  # one step where two parameters have no gradient
        use_b = pb if k != 3 else pb[:2]
        for p in pa + pb:
            p.grad = None
        set_grads(use)
        set_grads(use_b)
        oa.step()
        ob.step()
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtype_is_kept(info, dtype):
    params = fresh_params(dtype)
    opt = make(info, params)
    run(opt, params, 3)
    for p in params:
        assert p.dtype == dtype and torch.isfinite(p).all()
        for name, t in opt.state[p].items():
            if name != "step":
                assert t.dtype == dtype


@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_update_in_float32(info, dtype):
    """Rounded once per step from a float32 update: within the half format's rounding of a
    float32 run, and finite where float16 arithmetic is not (1 / eps overflows, eps = 1e-8
    rounds to 0, and a gradient with zeros makes 0 / 0). (The records' default noise is
    small beside that rounding; a half run draws other numbers than a float32 one.)"""
    def zero_some(ps):
        return [g * (torch.arange(g.numel()).reshape(g.shape) % 3 != 0)
                for g in quadratic_grad(ps)]

    half = fresh_params(torch.float32)
    wide = [torch.nn.Parameter(p.detach().clone()) for p in half]
    half = [torch.nn.Parameter(p.detach().to(dtype)) for p in half]
    opt_half, opt_wide = make(info, half, check_finite=True), make(info, wide)
    for _ in range(3):   # one rounding per step: the runs part by a few half-format ulps
        run(opt_half, half, 1, zero_some)
        run(opt_wide, wide, 1, zero_some)
        with torch.no_grad():
            for a, b in zip(half, wide):
                torch.testing.assert_close(a.float(), b, rtol=0, atol=4 * b.abs().max().item()
                                           * torch.finfo(dtype).eps)
                b.copy_(a.float())   # restart the float32 run from the rounded parameters


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_state_follows_a_parameter_cast_to_another_dtype(info):
    """After model.to(torch.float64) mid-run the state is cast as load_state_dict casts it,
    and the run continues as from a state dict loaded into the cast parameters."""
    params = fresh_params(torch.float32)
    opt = make(info, params)
    run(opt, params, 2)
    for p in params:
        p.data = p.data.double()   # what Module.to does with a parameter
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin = make(info, twins)
    twin.load_state_dict(saved(opt.state_dict()))   # a live one would share the step tensors
    run(opt, params, 2)
    run(twin, twins, 2)
    assert_same(params, twins)
    assert_same_tree(opt.state_dict(), twin.state_dict())
    for p in params:
        for name, t in opt.state[p].items():
            if name != "step" and isinstance(t, torch.Tensor) and t.is_floating_point():
                assert t.dtype == torch.float64, name


@pytest.mark.parametrize("info", [r for r in RECORDS if "complex" in r.supports],
                         ids=lambda r: r.name)
def test_complex_parameter_behaves_as_its_real_view(info):
    g = torch.Generator().manual_seed(5)
    z = torch.nn.Parameter(torch.randn(4, dtype=torch.complex128, generator=g))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    oz, orr = make(info, [z]), make(info, [r])
    for k in range(4):
        gr = torch.randn(4, 2, dtype=torch.float64, generator=g)
        z.grad = torch.view_as_complex(gr.clone())
        r.grad = gr.clone()
        oz.step()
        orr.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=0, atol=0)


# -- state: save, load, copy -------------------------------------------------------------------
@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_state_dict_roundtrip_continues_bit_identically(info):
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved_params = [p.detach().clone() for p in params]

    run(opt, params, 3)  # the uninterrupted run

    resumed = [torch.nn.Parameter(t.clone()) for t in saved_params]
    opt2 = make(info, resumed, **({"generator": torch.Generator().manual_seed(999)}
                                  if info.stochastic else {}))
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    run(opt2, resumed, 3)
    assert_same(params, resumed)


def noncontiguous(obj):
    """``obj`` with every tensor of 1 or more dimensions replaced by a non-contiguous view of
    the same values: how a state dict can arrive (sliced, or moved by map_location/accelerate
    to a device, where it is not the contiguous CPU tensor it was saved as)."""
    if isinstance(obj, torch.Tensor):
        return torch.stack([obj, obj], -1)[..., 0] if obj.dim() else obj
    if isinstance(obj, dict):
        return {k: noncontiguous(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(noncontiguous(v) for v in obj)
    return obj


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_a_state_dict_of_noncontiguous_tensors_resumes_bit_identically(info):
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 2)
    saved = noncontiguous(copy.deepcopy(opt.state_dict()))
    assert not saved.get("generator_state", torch.zeros(2, 2).t()).is_contiguous()
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = make(info, resumed)
    opt2.load_state_dict(saved)
    run(opt, params, 2)
    run(opt2, resumed, 2)
    assert_same(params, resumed)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_deepcopy_continues_identically(info):
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 2)
    twin = copy.deepcopy({"params": params, "opt": opt})
    run(opt, params, 3)
    run(twin["opt"], twin["params"], 3)
    assert_same(params, twin["params"])


def _resume(info, sd, saved_params, steps, transform=lambda sd: sd):
    """Load ``transform(sd)`` into a fresh optimizer over copies of ``saved_params`` (built
    with another seed, so only the loaded state can make it agree) and run ``steps`` steps."""
    resumed = [torch.nn.Parameter(t.clone()) for t in saved_params]
    opt = make(info, resumed, **other_seed(info))
    opt.load_state_dict(transform(saved(sd)))
    run(opt, resumed, steps)
    return resumed, opt


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_state_dict_with_number_steps_loads_and_continues(info):
    """Older checkpoints (and hand-edited ones) hold "step" as a Python number: it loads as
    torch.optim.Adam loads it and the run continues bit-identically."""
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 3)
    sd, at_save = saved(opt.state_dict()), [p.detach().clone() for p in params]
    run(opt, params, 3)

    def number_steps(sd):
        for state in sd["state"].values():
            state["step"] = int(state["step"])
        return sd

    resumed, opt2 = _resume(info, sd, at_save, 3, number_steps)
    assert_same(params, resumed)
    steps = [s["step"] for s in opt2.state.values()]
    assert steps and all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in steps)


@pytest.mark.parametrize("info", [r for r in RECORDS if per_group_lr(r)], ids=lambda r: r.name)
def test_param_group_added_later_round_trips(info):
    a, b = fresh_params()
    opt = make(info, [a])
    run(opt, [a], 2)
    opt.add_param_group({"params": [b], "lr": 0.5 * opt.defaults["lr"]})
    run(opt, [a, b], 2)
    sd, at_save = saved(opt.state_dict()), [a.detach().clone(), b.detach().clone()]
    run(opt, [a, b], 2)
    resumed = [torch.nn.Parameter(t.clone()) for t in at_save]
    opt2 = make(info, [resumed[0]], **other_seed(info))
    opt2.add_param_group({"params": [resumed[1]]})
    opt2.load_state_dict(saved(sd))
    assert opt2.param_groups[1]["lr"] == 0.5 * opt.defaults["lr"]
    run(opt2, resumed, 2)
    assert_same([a, b], resumed)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_state_entries_that_are_not_parameter_states_round_trip(info):
    """torch keeps entries of ``optimizer.state`` that belong to no parameter as they are
    (hooks use them); loading and stepping must not assume every entry is a dict."""
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 2)
    opt.state["note"] = 1
    sd, at_save = saved(opt.state_dict()), [p.detach().clone() for p in params]
    run(opt, params, 2)
    resumed, opt2 = _resume(info, sd, at_save, 2)
    assert opt2.state["note"] == 1
    assert_same(params, resumed)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_state_dict_missing_an_option_gets_its_default(info):
    """A state dict saved before an option existed loads with the option at its default
    (the constructor's), as torch's own ``__setstate__`` does for its optimizers."""
    signature = inspect.signature(info.cls).parameters
    params = fresh_params()
    opt = make(info, params)
    # the options the record leaves at their defaults (an option it sets, like OptimisticOMD's
    # lr, may have a default that needs others: lr=None is the self-confident tuning, which
    # needs a diameter; lr itself has been in every state dict anyway)
    optional = {k: signature[k].default for k in opt.defaults
                if k in signature and signature[k].default is not inspect.Parameter.empty
                and k not in info.default_kwargs}
    run(opt, params, 2)
    sd = saved(opt.state_dict())
    for group in sd["param_groups"]:
        for k in optional:
            del group[k]
    params2 = fresh_params()
    opt2 = make(info, params2, **other_seed(info))
    opt2.load_state_dict(sd)
    for group in opt2.param_groups:
        assert {k: group[k] for k in optional} == optional
    run(opt2, params2, 1)


# -- hooks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_state_dict_hooks_see_the_whole_state(info):
    """A state_dict post-hook sees everything the state dict will hold (the generator's state
    included), and what it returns is the state dict."""
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 2)
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: seen.append(saved(sd)))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "note": "from a hook"})
    sd = opt.state_dict()
    assert seen[0] == "pre" and sd.pop("note") == "from a hook"
    assert_same_tree(seen[1], sd)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_load_state_dict_hooks_see_the_whole_state(info):
    """Pre-hooks get the state dict as given (generator state included); post-hooks run once
    everything is loaded: the optimizer's state_dict() there is the loaded one."""
    params = fresh_params()
    opt = make(info, params)
    run(opt, params, 2)
    sd = saved(opt.state_dict())
    other = make(info, fresh_params(seed=1), **other_seed(info))
    seen = {}
    other.register_load_state_dict_pre_hook(lambda o, s: seen.update(pre=saved(s)))
    other.register_load_state_dict_post_hook(lambda o: seen.update(post=saved(o.state_dict())))
    other.load_state_dict(sd)
    assert_same_tree(seen["pre"], sd)
    assert_same_tree(seen["post"], sd)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_load_state_dict_pre_hook_decides_what_loads(info):
    """A pre-hook that returns another state dict loads that one, all of it."""
    params, twin = fresh_params(), fresh_params(seed=2)
    opt, opt_b = make(info, params), make(info, twin, **other_seed(info))
    run(opt, params, 2)
    run(opt_b, twin, 3)
    wanted = saved(opt_b.state_dict())
    target = make(info, fresh_params(seed=1), **other_seed(info))
    target.register_load_state_dict_pre_hook(lambda o, s: saved(wanted))
    target.load_state_dict(opt.state_dict())
    assert_same_tree(saved(target.state_dict()), wanted)


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_step_hooks_run(info):
    params = fresh_params()
    opt = make(info, params)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    run(opt, params, 1)
    assert calls == ["pre", "post"]


@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_check_finite_raises_with_the_step(info):
    x = torch.nn.Parameter(torch.ones(3))
    opt = make(info, [x], check_finite=True)
    x.grad = torch.ones(3)
    opt.step()
    x.grad = torch.tensor([1.0, float("nan"), 1.0])
    with pytest.raises(FloatingPointError, match="step 2"):
        opt.step()


@pytest.mark.parametrize("info", GRAD, ids=lambda r: r.name)
def test_check_finite_names_the_parameter(info):
    """By group and index, or by name when the optimizer was built from named parameters."""
    a, b = fresh_params()
    model = torch.nn.ParameterDict({"first": a, "second": b})
    for params, name in [([{"params": [a]}, {"params": [b]}], "param_groups[1]['params'][0]"),
                         (list(model.named_parameters()), "'second'")]:
        opt = make(info, params, check_finite=True)
        if "param_names" in opt.param_groups[0]:
            assert opt.state_dict()["param_groups"][0]["param_names"] == ["first", "second"]
        set_grads([a, b])
        b.grad[0] = float("inf")
        with pytest.raises(FloatingPointError, match=re.escape(name) + ".*step 1"):
            opt.step()


# -- hyperparameters changed after construction ------------------------------------------------
def _group_options(info):
    return set(make(info, [torch.nn.Parameter(torch.zeros(2))]).defaults)


def _bad_group_values(info):
    """Invalid values of group options, with the text their error must contain."""
    bad = [(kwargs, text) for kwargs, exc, text in info.invalid_kwargs
           if exc is ValueError and set(kwargs) <= _group_options(info)]
    if "lr" in _group_options(info):
        bad += [({"lr": -1.0}, "lr"), ({"lr": math.nan}, "lr"), ({"lr": math.inf}, "lr")]
    return bad


@pytest.mark.parametrize("info", RECORDS, ids=IDS)
def test_options_set_out_of_range_after_construction_raise_at_the_next_step(info):
    """A scheduler or a user writing into a param group gets the constructor's checks at the
    next step: a ValueError naming the group, the option and the value, before anything is
    updated."""
    assert _bad_group_values(info)
    for kwargs, text in _bad_group_values(info):
        a, b = fresh_params()
        opt = make(info, [{"params": [a]}, {"params": [b]}])
        run(opt, [a, b], 1)
        before = saved(opt.state_dict())
        at = [a.detach().clone(), b.detach().clone()]
        opt.param_groups[1].update(kwargs)
        name, index = re.fullmatch(r"(\w+)(?:\[(\d)\])?", text).groups()
        value = kwargs[name] if index is None else kwargs[name][int(index)]
        with pytest.raises(ValueError, match=rf"group 1\b.*{re.escape(text)}") as err:
            run(opt, [a, b], 1)
        assert repr(value) in str(err.value)
        assert_same([a, b], at)
        for k in kwargs:     # restore the option: everything else is as it was
            opt.param_groups[1][k] = before["param_groups"][1][k]
        assert_same_tree(saved(opt.state_dict()), before)


# -- tensor learning rates ---------------------------------------------------------------------
def _lr(info):
    return info.default_kwargs.get("lr", make(info, fresh_params()).defaults["lr"])


@pytest.mark.parametrize("info", [r for r in RECORDS if has_lr(r)], ids=lambda r: r.name)
@pytest.mark.parametrize("shape", [(), (1,)])
def test_tensor_lr_steps_like_its_value(info, shape):
    """A 1-element tensor lr, accepted as in torch, gives the same steps as the float, also
    per group and changed in place. (Groups that must share their lr share one tensor.)"""
    lr = torch.full(shape, _lr(info), dtype=torch.float64)
    floats, tensors = fresh_params(), fresh_params()
    second = 0.5 if per_group_lr(info) else 1.0
    a = make(info, [{"params": [floats[0]]}, {"params": [floats[1]], "lr": second * _lr(info)}])
    b = make(info, [{"params": [tensors[0]]},
                    {"params": [tensors[1]], **({"lr": 0.5 * lr} if per_group_lr(info) else {})}],
             lr=lr)
    changed = a.param_groups[:1] if per_group_lr(info) else a.param_groups
    for k in range(4):
        if k == 2:
            for group in changed:
                group["lr"] = 0.25 * _lr(info)
            lr.mul_(0.25)
        run(a, floats, 1)
        run(b, tensors, 1)
    assert_same(floats, tensors)
    assert b.param_groups[0]["lr"] is lr
    assert per_group_lr(info) or b.param_groups[1]["lr"] is lr
    sd, at_save = saved(b.state_dict()), [p.detach().clone() for p in tensors]  # tensor lrs
    run(b, tensors, 1)
    resumed = [torch.nn.Parameter(t) for t in at_save]
    c = make(info, [{"params": [resumed[0]]}, {"params": [resumed[1]]}], **other_seed(info))
    c.load_state_dict(sd)
    run(c, resumed, 1)
    assert_same(resumed, tensors)


@pytest.mark.parametrize("info", [r for r in RECORDS if has_lr(r)], ids=lambda r: r.name)
def test_tensor_lr_must_have_one_element(info):
    lr = torch.tensor([_lr(info), _lr(info)])
    p, q = fresh_params()
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        make(info, [p], lr=lr)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        make(info, [{"params": [p], "lr": lr}])
    opt = make(info, [p])
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        opt.add_param_group({"params": [q], "lr": lr})
    opt.param_groups[0]["lr"] = lr
    with pytest.raises(ValueError, match="group 0.*Tensor lr must be 1-element"):
        run(opt, [p], 1)
    with pytest.raises(ValueError, match="lr"):
        make(info, [p], lr=torch.tensor(-1.0))


# -- fused and foreach -------------------------------------------------------------------------
@pytest.mark.parametrize("info", [r for r in RECORDS if "fused" in r.supports],
                         ids=lambda r: r.name)
def test_fused_accepts_foreach_false_as_torch_does(info):
    """torch refuses only fused=True with foreach=True; foreach=False runs the fused kernel one
    tensor at a time."""
    runs = []
    for foreach in (None, False):
        params = fresh_params()
        opt = make(info, params, fused=True, foreach=foreach)
        run(opt, params, 3)
        runs.append(params)
    assert_same(*runs)
    with pytest.raises(ValueError, match="fused.*foreach|foreach.*fused"):
        make(info, fresh_params(), fused=True, foreach=True)


# -- seeding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("info", [r for r in RECORDS if r.stochastic], ids=lambda r: r.name)
def test_generator_none_is_seeded_once_from_torchs_global_rng(info):
    """With generator=None, torch.manual_seed at the top of a script makes the run
    reproducible: construction takes one seed from the global RNG, and the steps draw only
    from the optimizer's own generator."""
    from stochstep.stepping.noise import make_generator

    def one_run(seed):
        torch.manual_seed(seed)
        params = fresh_params()
        opt = make(info, params, generator=None)
        after_construction = torch.get_rng_state()
        run(opt, params, 3)
        assert torch.equal(torch.get_rng_state(), after_construction), "a step drew globally"
        return params, opt.generator.get_state(), after_construction

    (first, gen, state), (again, gen_again, _), (_, gen_other, _) = map(one_run, (0, 0, 1))
    assert_same(first, again)
    assert torch.equal(gen, gen_again) and not torch.equal(gen, gen_other)
    torch.manual_seed(0)
    make_generator(None)
    assert torch.equal(torch.get_rng_state(), state), "construction drew more than one seed"


# -- schedulers --------------------------------------------------------------------------------
S = torch.optim.lr_scheduler
SCHEDULERS = {
    "StepLR": lambda o: S.StepLR(o, step_size=2, gamma=0.5),
    "MultiStepLR": lambda o: S.MultiStepLR(o, milestones=[1, 3], gamma=0.3),
    "ExponentialLR": lambda o: S.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=4),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=2),
    "LinearLR": lambda o: S.LinearLR(o, start_factor=0.2, total_iters=3),
    "ConstantLR": lambda o: S.ConstantLR(o, factor=0.5, total_iters=2),
    "PolynomialLR": lambda o: S.PolynomialLR(o, total_iters=5, power=2.0),
    "LambdaLR": lambda o: S.LambdaLR(o, lambda n: (1 + n) ** -0.33),
    "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, lambda n: 0.8),
    "CyclicLR": lambda o: S.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=2,
                                     cycle_momentum=False),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=1e-2, total_steps=6,
                                         cycle_momentum="betas" in o.defaults),
    "SequentialLR": lambda o: S.SequentialLR(o, [S.ConstantLR(o, factor=0.5, total_iters=2),
                                                 S.ExponentialLR(o, gamma=0.9)], milestones=[2]),
    "ChainedScheduler": lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=2),
                                                      S.ExponentialLR(o, gamma=0.9)]),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, patience=0, factor=0.5),
}


@pytest.mark.parametrize("info", [r for r in RECORDS if has_lr(r)], ids=lambda r: r.name)
@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("lr_type", ["float", "tensor"])
def test_lr_scheduler_drives_the_step(info, name, lr_type):
    """The step uses the lr (and betas, under beta cycling) the scheduler set: replaying the
    recorded hyperparameters by hand gives the same parameters. A tensor lr is changed in
    place by the scheduler and stays the same tensor."""
    params = fresh_params()
    lr = _lr(info) if lr_type == "float" else torch.tensor(_lr(info), dtype=torch.float64)
    opt = make(info, params, lr=lr)
    sched = SCHEDULERS[name](opt)
    seen = []
    for _ in range(6):
        seen.append({k: opt.param_groups[0][k] for k in ("lr", "betas") if k in opt.defaults})
        seen[-1]["lr"] = float(seen[-1]["lr"])
        run(opt, params, 1)
        sched.step(1.0) if name == "ReduceLROnPlateau" else sched.step()
    assert len({h["lr"] for h in seen}) > 1
    assert lr_type == "float" or opt.param_groups[0]["lr"] is lr
    replay = [torch.nn.Parameter(t.detach().clone()) for t in fresh_params()]
    opt2 = make(info, replay)
    for hyper in seen:
        opt2.param_groups[0].update(hyper)
        run(opt2, replay, 1)
    assert_same(params, replay)


# -- the reference steps -----------------------------------------------------------------------
MODES = {"foreach": {}, "per_tensor": {"foreach": False}, "fused": {"fused": True}}
CASES = [pytest.param(r, kw, mode, id=f"{r.name}-{i}-{mode}",
                      marks=[pytest.mark.slow] if mode == "fused" else [])  # compiles: ~20 s
         for r in RECORDS if r.reference is not None for i, kw in enumerate(r.reference_kwargs)
         for mode in MODES if mode == "foreach" or mode in r.supports
         or (mode == "per_tensor" and "foreach" in r.supports)]


def reference_params(info, mode):
    """The reference cases' parameters; a fused case adds one tensor large enough for the
    fused kernel, next to the small ones that take the eager kernel."""
    params = [t.detach().clone() for t in fresh_params(seed=11)]
    if mode == "fused":
        g = torch.Generator().manual_seed(12)
        params.append(torch.randn(info.fused_min_numel + 3, generator=g, dtype=torch.float64))
    return params


@pytest.mark.parametrize("info,kwargs,mode", CASES)
def test_two_steps_match_the_hand_computed_reference(info, kwargs, mode):
    p0 = reference_params(info, mode)
    params = [torch.nn.Parameter(t.clone()) for t in p0]
    opt = info.cls(params, **kwargs, **MODES[mode],
                   **({"generator": torch.Generator().manual_seed(7)} if info.stochastic else {}))
    run(opt, params, 2)
    oracle = quadratic_grad if "grad" in info.requires else quadratic_loss
    expected = info.reference(p0, oracle, 2, kwargs, torch.Generator().manual_seed(7))
    for got, want in zip(params, expected):
        torch.testing.assert_close(got.detach(), want.to(got.dtype), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("info", [r for r in RECORDS if r.reference is not None],
                         ids=lambda r: r.name)
def test_reference_cases_exercise_the_flags_they_set(info):
    """A reference case that sets a flag (maximize, amsgrad, ...) must give other steps with
    the flag off; otherwise the case cannot catch a bug in what the flag does."""
    p0 = reference_params(info, "foreach")
    oracle = quadratic_grad if "grad" in info.requires else quadratic_loss
    for kwargs in info.reference_kwargs:
        for flag in [k for k, v in kwargs.items() if v is True]:
            on, off = (info.reference(p0, oracle, 2, {**kwargs, flag: value},
                                      torch.Generator().manual_seed(7)) for value in (True, False))
            assert any((a - b).abs().max() > 1e-6 for a, b in zip(on, off)), (kwargs, flag)


# -- bilevel records ("blocks"): built from their problem, stepped with its closure -----------
def make_blocks(info, **overrides):
    args, closure = info.problem()
    kwargs = {"generator": torch.Generator().manual_seed(1234), **info.default_kwargs,
              **overrides}
    return info.cls(*args, **kwargs), args, closure


def tensors_of(args):
    return [t for a in args for t in (a if isinstance(a, (list, tuple)) else [a])]


@pytest.mark.parametrize("info", BLOCKS, ids=lambda r: r.name)
def test_blocks_invalid_and_unknown_arguments_raise_naming_them(info):
    for kwargs, exc, text in (*info.invalid_kwargs, ({"no_such_option": 1}, TypeError,
                                                      "no_such_option")):
        with pytest.raises(exc, match=re.escape(text)):
            make_blocks(info, **kwargs)


@pytest.mark.parametrize("info", BLOCKS, ids=lambda r: r.name)
def test_blocks_state_dict_roundtrip_continues_bit_identically(info):
    opt, args, closure = make_blocks(info)
    for _ in range(3):
        opt.step(closure)
    sd = saved(opt.state_dict())
    snapshot = [t.detach().clone() for t in tensors_of(args)]
    for _ in range(4):
        opt.step(closure)
    other, args2, _ = make_blocks(info, generator=torch.Generator().manual_seed(999))
    with torch.no_grad():
        for t, v in zip(tensors_of(args2), snapshot):
            t.copy_(v)
    other.load_state_dict(sd)
    for _ in range(4):
        other.step(closure)
    assert_same(tensors_of(args), tensors_of(args2))
    assert_same_tree(saved(opt.state_dict()), saved(other.state_dict()))


@pytest.mark.parametrize("info", BLOCKS, ids=lambda r: r.name)
def test_blocks_deepcopy_continues_identically(info):
    opt, args, closure = make_blocks(info)
    opt.step(closure)
    twin = copy.deepcopy({"args": args, "opt": opt})
    for _ in range(3):
        opt.step(closure)
        twin["opt"].step(closure)
    assert_same(tensors_of(args), tensors_of(twin["args"]))


@pytest.mark.parametrize("info", BLOCKS, ids=lambda r: r.name)
def test_blocks_generator_none_is_seeded_once_from_torchs_global_rng(info):
    def one_run(seed):
        torch.manual_seed(seed)
        opt, args, closure = make_blocks(info, generator=None)
        for _ in range(3):
            opt.step(closure)
        return [t.detach().clone() for t in tensors_of(args)]
    assert_same(one_run(5), one_run(5))
    assert not all(torch.equal(a, b) for a, b in zip(one_run(5), one_run(6)))
