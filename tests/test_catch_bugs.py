"""The properties catch bugs: a catalogue of broken optimizers, each failed by at least one
property, while torch's SGD, Adam and AdamW pass every property that applies to them.

Each broken optimizer is a few lines, one bug each, written as the bug would be written. The
problems are drawn by hypothesis under this repository's ``stochstep-ci`` profile (30
examples, derandomized); a broken optimizer must be caught on *every* drawn problem. The
registry's optimizers are checked in tests/conformance/test_optimizer_properties.py.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stochstep.stepping.noise import standard_normal_like
from stochstep.theory_checks.properties import (assert_converges, assert_diverges_above,
                                                assert_invariant, assert_linear_rate,
                                                assert_monotone_loss, assert_same_trajectory)
from stochstep.theory_checks.stochastic import assert_noise_ball, assert_stationary_law
from stochstep.theory_checks.strategies import (QuadraticProblem, noisy_quadratic_problem,
                                                quadratics)

FEW = settings(max_examples=5)   # stochastic checks: a few hundred batched steps each
PROBLEMS = quadratics(dims=(2, 6), conditions=(10.0, 100.0))
EASY = quadratics(dims=(2, 6), conditions=(1.0, 30.0))   # budgets grow with the condition
OFFSET = 2 ** 20   # optimizer seeds: the problems' oracles draw from seed itself


class Rule(torch.optim.Optimizer):
    """A plain per-tensor update rule: subclasses write ``update(p, grad, state, group)``."""

    def __init__(self, params, **defaults):
        super().__init__(params, defaults)
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.t += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, p.grad, self.state[p], group)
        return loss


# -- the catalogue ------------------------------------------------------------------------------
class InvertedBiasAdam(Rule):
    """Adam whose bias corrections are swapped: lr (1 - b1^t) / sqrt(1 - b2^t) instead of
    lr sqrt(1 - b2^t) / (1 - b1^t); it only overshoots early (10 lr on step 1)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr=lr, betas=betas, eps=eps)

    def update(self, p, g, state, group):
        (b1, b2), t = group["betas"], self.t
        m = state.setdefault("m", torch.zeros_like(p)).mul_(b1).add_(g, alpha=1 - b1)
        v = state.setdefault("v", torch.zeros_like(p)).mul_(b2).addcmul_(g, g, value=1 - b2)
        bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
        p.addcdiv_(m, v.sqrt() * math.sqrt(bias2) + group["eps"], value=-group["lr"] * bias1)


class CoupledAdamW(torch.optim.Adam):
    """'AdamW' that adds the decay to the gradient (Adam + L2) instead of decoupling it."""

    def __init__(self, params, lr, weight_decay=0.01):
        super().__init__(params, lr=lr, weight_decay=weight_decay)


class NoisySGLD(Rule):
    """SGLD x <- x - lr g + scale sqrt(2 lr T) xi: scale 2 (noise doubled) or 1/sqrt(2) (the
    2 under the root forgotten) are the bugs."""

    def __init__(self, params, lr, temperature, scale, generator):
        super().__init__(params, lr=lr, temperature=temperature)
        self.scale, self.generator = scale, generator

    def update(self, p, g, state, group):
        noise = standard_normal_like(p, self.generator)
        p.add_(g, alpha=-group["lr"]).add_(
            noise, alpha=self.scale * math.sqrt(2 * group["lr"] * group["temperature"]))


class StaleMomentumSGD(Rule):
    """Heavy ball whose buffer lives on the class, keyed by shape: it is never reset, so a
    new optimizer (a new run, a restarted job) starts with the last run's momentum."""

    buffers: dict = {}

    def __init__(self, params, lr, momentum):
        super().__init__(params, lr=lr, momentum=momentum)

    def update(self, p, g, state, group):
        buf = self.buffers.get(p.shape)
        buf = g.clone() if buf is None else buf.mul_(group["momentum"]).add_(g)
        self.buffers[p.shape] = buf
        p.add_(buf, alpha=-group["lr"])


class ForgetfulMomentumSGD(Rule):
    """Heavy ball whose buffer is re-created at every step: plain SGD that claims momentum."""

    def __init__(self, params, lr, momentum):
        super().__init__(params, lr=lr, momentum=momentum)

    def update(self, p, g, state, group):
        state["momentum_buffer"] = g.clone()   # should be mu * buffer + g after step 1
        p.add_(state["momentum_buffer"], alpha=-group["lr"])


class SometimesAscendingSGD(Rule):
    """SGD with the sign flipped on every third step."""

    def update(self, p, g, state, group):
        p.add_(g, alpha=group["lr"] if self.t % 3 == 0 else -group["lr"])


class GrowingStepSGD(Rule):
    """SGD whose step grows like sqrt(t) (a schedule applied upside down)."""

    def update(self, p, g, state, group):
        p.add_(g, alpha=-group["lr"] * math.sqrt(self.t))


class LrTwiceSGD(Rule):
    """SGD that multiplies by lr twice (once in the 'gradient', once in the step)."""

    def update(self, p, g, state, group):
        p.add_(g * group["lr"], alpha=-group["lr"])


class DefaultsLrSGD(Rule):
    """SGD that reads the constructor's lr instead of its param group's (schedulers and
    per-group lrs are silently ignored)."""

    def update(self, p, g, state, group):
        p.add_(g, alpha=-self.defaults["lr"])


class ClippedSGD(Rule):
    """'SGD' with a per-coordinate gradient clip at 1 left on from debugging."""

    def update(self, p, g, state, group):
        p.add_(g.clamp(-1.0, 1.0), alpha=-group["lr"])


class ParameterSeededMomentumSGD(Rule):
    """Heavy ball whose buffer starts at the parameter instead of the first gradient."""

    def __init__(self, params, lr, momentum):
        super().__init__(params, lr=lr, momentum=momentum)

    def update(self, p, g, state, group):
        buf = state.setdefault("momentum_buffer", p.clone())
        buf.mul_(group["momentum"]).add_(g)
        p.add_(buf, alpha=-group["lr"])


# Each entry: the broken optimizer for a problem, the property that catches it, and what the
# failure message says.
def langevin_law(scale, confidence=0.99):
    """The stationary law of SGLD on a Gaussian target (exact gradients): mean and covariance
    of the chain against the exact ones of the discretized chain."""
    def check(p, seed):
        q = noisy_quadratic_problem(dim=p.dim, condition=min(p.L / p.mu, 10.0), noise=0.0,
                                    seed=seed)
        gen = torch.Generator().manual_seed(OFFSET + seed)   # not the problem's noise stream
        assert_stationary_law(lambda ps: NoisySGLD(ps, lr=0.05, temperature=0.5, scale=scale,
                                                   generator=gen), q, runs=200, steps=400,
                              kind="sgld", confidence=confidence)
    return check


def forgetful_noise_ball(p, seed):
    q = noisy_quadratic_problem(dim=p.dim, condition=min(p.L / p.mu, 10.0), noise=0.5, seed=seed)
    assert_noise_ball(lambda ps: ForgetfulMomentumSGD(ps, lr=0.02, momentum=0.9), q, runs=200,
                      steps=200, kind="heavy_ball")


def farther(p, factor=10.0):
    return QuadraticProblem(p.A, p.x_star, p.f_star, p.x_star + factor * (p.x0 - p.x_star))


CATALOGUE = {
    "inverted bias correction": (
        lambda p, seed: assert_invariant(lambda ps: InvertedBiasAdam(ps, lr=0.01), p,
                                         "first_step"), "moved by"),
    "coupled weight decay": (
        lambda p, seed: assert_invariant(lambda ps: CoupledAdamW(ps, lr=0.1), p, "scale"),
        "expected invariant iterates"),
    "SGLD noise doubled": (langevin_law(2.0), "standard errors off"),
    "SGLD noise without the 2": (langevin_law(2 ** -0.5), "standard errors off"),
    "momentum never reset": (
        lambda p, seed: assert_same_trajectory(
            lambda ps: StaleMomentumSGD(ps, lr=0.5 / p.L, momentum=0.5),
            lambda ps: StaleMomentumSGD(ps, lr=0.5 / p.L, momentum=0.5), p),
        "trajectories differ"),
    "momentum reset every step": (forgetful_noise_ball, "outside the 99% interval"),
    "sign flipped every third step": (
        lambda p, seed: assert_monotone_loss(lambda ps: SometimesAscendingSGD(ps, lr=1 / p.L),
                                             p), "loss increased"),
    "step size growing like sqrt(t)": (
        lambda p, seed: assert_converges(lambda ps: GrowingStepSGD(ps, lr=1 / p.L), p),
        "did not converge"),
    "lr applied twice": (
        lambda p, seed: assert_invariant(lambda ps: LrTwiceSGD(ps, lr=1 / p.L), p, "scale"),
        "retraced with lr / c"),
    "param group lr ignored": (
        lambda p, seed: assert_invariant(lambda ps: DefaultsLrSGD(ps, lr=1 / p.L), p, "scale"),
        "retraced with lr / c"),
    "per-coordinate clipping": (   # from 10 x further out, so some |g_i| > 1
        lambda p, seed: assert_invariant(lambda ps: ClippedSGD(ps, lr=0.5 / p.L), farther(p),
                                         "rotation"), "expected equivariant"),
    "momentum buffer seeded with the parameter": (
        lambda p, seed: assert_invariant(
            lambda ps: ParameterSeededMomentumSGD(ps, lr=0.5 / p.L, momentum=0.5), p,
            "translation"), "expected equivariant"),
}
STOCHASTIC = {"SGLD noise doubled", "SGLD noise without the 2", "momentum reset every step"}


@pytest.mark.parametrize("bug", sorted(CATALOGUE))
def test_every_bug_is_caught_on_every_drawn_problem(bug):
    check, message = CATALOGUE[bug]

    @given(PROBLEMS, st.integers(0, 2 ** 16))
    def caught(p, seed):
        with pytest.raises(AssertionError, match=message):
            check(p, seed)

    (FEW(caught) if bug in STOCHASTIC else caught)()


# -- correct optimizers pass every property that applies ------------------------------------------
@settings(max_examples=10)
@given(EASY)
def test_torch_sgd_passes_every_deterministic_property(p):
    sgd = lambda ps: torch.optim.SGD(ps, lr=1 / p.L)   # noqa: E731
    assert_converges(sgd, p)
    assert_linear_rate(sgd, p, rate=1 - p.mu / p.L)
    assert_monotone_loss(sgd, p)
    assert_diverges_above(lambda ps, lr: torch.optim.SGD(ps, lr=lr), p,
                          steps=100 + math.ceil(1.1 * p.L / p.mu * math.log(100)))
    assert_same_trajectory(sgd, sgd, p)
    heavy = lambda ps: torch.optim.SGD(ps, lr=0.5 / p.L, momentum=0.5,   # noqa: E731
                                       nesterov=True)
    for make in (sgd, heavy):
        for transform in ("scale", "rotation", "translation"):
            assert_invariant(make, p, transform)
    assert_converges(heavy, p)


@settings(max_examples=10)
@given(PROBLEMS)
def test_torch_adam_and_adamw_pass_every_property_that_applies(p):
    adam = lambda ps: torch.optim.Adam(ps, lr=0.1)                     # noqa: E731
    amsgrad = lambda ps: torch.optim.Adam(ps, lr=0.1, amsgrad=True)    # noqa: E731
    adamw = lambda ps: torch.optim.AdamW(ps, lr=0.1)                   # noqa: E731
    for make in (adam, amsgrad, adamw):
        for transform in ("scale", "rotation", "first_step"):
            assert_invariant(make, p, transform)
        assert_same_trajectory(make, make, p)
    for make in (adam, amsgrad):   # AdamW's decay pulls towards 0: not translation-equivariant
        assert_invariant(make, p, "translation")


@FEW
@given(PROBLEMS, st.integers(0, 2 ** 16), st.sampled_from([0.0, 0.5]))
def test_torch_sgd_passes_the_noise_ball(p, seed, momentum):
    q = noisy_quadratic_problem(dim=p.dim, condition=min(p.L / p.mu, 10.0), noise=0.5, seed=seed)
    # 5 examples at 0.1 % each: at most a 0.5 % chance (nominal) that one fails by chance
    assert_noise_ball(lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=momentum), q, runs=200,
                      steps=400, confidence=0.999)


@FEW
@given(PROBLEMS, st.integers(0, 2 ** 16))
def test_correct_twins_of_the_noisy_bugs_pass(p, seed):
    # the same code with the bug taken out passes: what fails above is the bug
    langevin_law(1.0, confidence=0.999)(p, seed)   # as above: 5 examples at 0.1 % each
