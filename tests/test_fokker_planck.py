"""Fokker--Planck residuals (theory_checks.fokker_planck) and the ODE--SDE gap check of
Deveney et al. (arXiv 2311.15996)."""

import math

import pytest
import torch
from torch.func import functional_call

from stochstep.samplers import SubVPSDE, VESDE, VPSDE
from stochstep.samplers.targets import GaussianMixture
from stochstep.theory_checks.fokker_planck import (OdeSdeGap, fp_residual_log_density,
                                                   fp_residual_score, ou_ode_sde_gap,
                                                   wasserstein2_1d)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- OU, exact

THETA, SIGMA, M0, S0 = 0.7, 1.3, 0.8, 0.6


def _ou_moments(t):
    decay = torch.exp(-THETA * t)
    return M0 * decay, S0**2 * decay**2 + SIGMA**2 / (2 * THETA) * (1 - decay**2)


def _ou_score(e=0.0):
    def score(x, t):
        mean, var = _ou_moments(t[:, None])
        return -(x - mean) / var + e * torch.sin(2 * x) * torch.exp(-t[:, None])
    return score


def _ou_log_p(e=0.0):
    def log_p(x, t):
        mean, var = _ou_moments(t)
        return (-0.5 * (x[:, 0] - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)
                - 0.5 * e * torch.cos(2 * x[:, 0]) * torch.exp(-t))
    return log_p


OU = dict(drift=lambda x, t: -THETA * x, diffusion=lambda t: SIGMA)


def _points(n=64, d=1, seed=0, t_range=(0.0, 2.0)):
    g = _gen(seed)
    t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(n, generator=g, dtype=F64)
    return 2 * torch.randn(n, d, generator=g, dtype=F64), t


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_exact_ou_score_has_zero_residual_in_both_forms(divergence):
    x, t = _points()
    kw = dict(OU, divergence=divergence, generator=_gen(1))
    r_score = fp_residual_score(_ou_score(), x, t, **kw)
    r_log = fp_residual_log_density(_ou_log_p(), x, t, **kw)
    assert r_score.shape == x.shape and r_log.shape == (x.shape[0],)
    assert r_score.abs().max() < 1e-12 and r_log.abs().max() < 1e-12
    # ... and a perturbed score does not (so the check can fail)
    assert fp_residual_score(_ou_score(0.1), x, t, **kw).abs().max() > 0.1
    assert fp_residual_log_density(_ou_log_p(0.1), x, t, **kw).abs().max() > 0.1


def test_perturbed_ou_residual_matches_hand_derivation():
    # R for s + d, d = e sin(2x) e^{-t}: dt d + d/dx[f d - g^2/2 (d' + 2 s d + d^2)]
    x, t = _points(32)
    e = 0.3
    r = fp_residual_score(_ou_score(e), x, t, **OU)
    mean, var = _ou_moments(t[:, None])
    s, ds = -(x - mean) / var, -1 / var
    d = e * torch.sin(2 * x) * torch.exp(-t[:, None])
    dd = 2 * e * torch.cos(2 * x) * torch.exp(-t[:, None])
    expected = (-d + (-THETA * d - THETA * x * dd)
                - SIGMA**2 / 2 * (-4 * d + 2 * ds * d + 2 * s * dd + 2 * d * dd))
    torch.testing.assert_close(r, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- VP / sub-VP / VE

def _path(sde, t):
    """(b(t), c(t)) of the SDE's Gaussian kernel, differentiable in t (the SDE classes detach
    their times)."""
    if isinstance(sde, VESDE):
        return torch.ones_like(t), sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    big_b = sde.beta_min * t + (sde.beta_max - sde.beta_min) * t**2 / 2
    c = -torch.expm1(-big_b)
    return torch.exp(-big_b / 2), (c if isinstance(sde, SubVPSDE) else c.sqrt())


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(0.05, 5.0)], ids=repr)
@pytest.mark.parametrize("form", ["score", "log_density"])
def test_gaussian_mixture_exact_score_has_zero_residual(sde, form):
    gm = GaussianMixture.four_modes(dim=3, spread=1.5)
    g = _gen(3)
    t = 0.05 + 0.9 * torch.rand(48, generator=g, dtype=F64)
    b, c = sde.marginal(t)
    x = gm.sample_marginal(48, b, c, generator=g)

    def model(scale):
        if form == "score":
            return lambda x, t: gm.score(x, *_path(sde, t)) * scale
        return lambda x, t: gm.log_prob(x, *_path(sde, t)) * scale

    fn = fp_residual_score if form == "score" else fp_residual_log_density
    exact = fn(model(1.0), x, t, sde=sde)
    wrong = fn(model(1.001), x, t, sde=sde)
    assert torch.isfinite(exact).all()
    assert exact.abs().max() < 1e-9 * wrong.abs().max()
    assert wrong.abs().max() > 1e-3


def test_vp_closed_form_for_scaled_gaussian_score():
    # N(0, I) data is invariant under VP; for s = -a x the residual is beta a (1 - a) x and the
    # log-density residual of u = -a |x|^2 / 2 is beta/2 [(a - 1) d + a (1 - a) |x|^2].
    sde = VPSDE()
    x, t = _points(16, d=3, t_range=(0.0, 1.0))
    beta = sde.beta(t)[:, None]
    for a in (1.0, 0.8, 1.3):
        r = fp_residual_score(lambda x, t: -a * x, x, t, sde=sde)
        torch.testing.assert_close(r, beta * a * (1 - a) * x, rtol=1e-12, atol=1e-12)
        r_log = fp_residual_log_density(lambda x, t: -a * (x**2).sum(-1) / 2, x, t, sde=sde)
        expected = beta[:, 0] / 2 * ((a - 1) * 3 + a * (1 - a) * (x**2).sum(-1))
        torch.testing.assert_close(r_log, expected, rtol=1e-12, atol=1e-12)


def test_score_form_is_gradient_of_log_density_form_with_nonlinear_drift():
    # a non-Gaussian log-density, a nonlinear drift (callable divergence and J_f^T s), 2-D
    x, t = _points(24, d=2)
    x.requires_grad_(True)
    w = torch.tensor([[0.7, -0.4], [0.2, 0.9]], dtype=F64)

    def log_p(x, t):
        return -(x**2).sum(-1) / 2 + torch.sin(x @ w).sum(-1) * torch.exp(-t) + x[:, 0] * t

    def score(x, t):
        with torch.enable_grad():
            xx = x if x.requires_grad else x.detach().requires_grad_(True)
            return torch.autograd.grad(log_p(xx, t).sum(), xx, create_graph=True)[0]

    dyn = dict(drift=lambda x, t: -x + 0.3 * torch.sin(x.flip(-1)) * (1 + t[:, None]),
               diffusion=lambda t: 0.5 + t)
    r_log = fp_residual_log_density(log_p, x, t, **dyn)
    grad_r = torch.autograd.grad(r_log.sum(), x)[0]
    r_score = fp_residual_score(score, x, t, **dyn)
    torch.testing.assert_close(r_score, grad_r, rtol=1e-10, atol=1e-10)
    assert r_score.abs().max() > 0.1


def test_sde_object_and_equivalent_callables_agree():
    sde = VPSDE()
    x, t = _points(16, d=2, t_range=(0.0, 1.0))
    score = _ou_score(0.2)  # any smooth score model
    via_sde = fp_residual_score(score, x, t, sde=sde)
    via_fns = fp_residual_score(score, x, t, drift=sde.drift, diffusion=sde.diffusion)
    torch.testing.assert_close(via_sde, via_fns, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- Hutchinson

def _anisotropic():
    gm = GaussianMixture(torch.tensor([[0.0, 0.0, 0.0]]),
                         torch.tensor([[[1.0, 0.6, 0.2], [0.6, 1.5, -0.4], [0.2, -0.4, 0.8]]]))
    return lambda x, t: gm.score(x, torch.ones_like(t), 0.5 + t)


def test_hutchinson_is_exact_for_a_diagonal_jacobian_and_reproducible():
    x, t = _points(8, d=4, t_range=(0.0, 1.0))
    exact = fp_residual_score(lambda x, t: -x, x, t, sde=VPSDE())
    hutch = fp_residual_score(lambda x, t: -x, x, t, sde=VPSDE(), divergence="hutchinson",
                              generator=_gen(5))
    torch.testing.assert_close(hutch, exact, rtol=0, atol=1e-12)
    score = _anisotropic()  # a linear score with a full symmetric Jacobian

    def log_p(x, t):
        return (score(x, t) * x).sum(-1) / 2

    kw = dict(sde=VESDE(), divergence="hutchinson", probes=2)
    a = fp_residual_log_density(log_p, x[:, :3], t, generator=_gen(5), **kw)
    b = fp_residual_log_density(log_p, x[:, :3], t, generator=_gen(5), **kw)
    c = fp_residual_log_density(log_p, x[:, :3], t, generator=_gen(6), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the score form differentiates the estimate in x: for a linear score z^T J z is constant
    # in x, so every probe gives the exact residual
    exact = fp_residual_score(score, x[:, :3], t, sde=VESDE())
    hutch = fp_residual_score(score, x[:, :3], t, generator=_gen(5), **kw)
    torch.testing.assert_close(hutch, exact, rtol=1e-12, atol=1e-9)


def test_hutchinson_is_unbiased_for_a_full_jacobian():
    score = _anisotropic()
    x, t = _points(1, d=3, t_range=(0.2, 0.6))
    sde = VESDE()
    exact = fp_residual_log_density(lambda x, t: (score(x, t) * x).sum(-1) / 2, x, t, sde=sde)
    # the same point repeated: independent probes per row
    xs, ts = x.expand(4000, 3), t.expand(4000)
    est = fp_residual_log_density(lambda x, t: (score(x, t) * x).sum(-1) / 2, xs, ts, sde=sde,
                                  divergence="hutchinson", generator=_gen(7))
    se = est.std() / math.sqrt(est.numel())
    assert est.std() > 1e-3  # not exact: the Jacobian is not diagonal
    assert abs(est.mean() - exact[0]) < 4 * se
    # more probes per point shrink the spread
    est8 = fp_residual_log_density(lambda x, t: (score(x, t) * x).sum(-1) / 2, xs[:500],
                                   ts[:500], sde=sde, divergence="hutchinson", probes=8,
                                   generator=_gen(8))
    assert est8.std() < 0.5 * est.std()


# ----------------------------------------------------------------------------- regularizer

class _MLP(torch.nn.Module):
    def __init__(self, d=2, width=6):
        super().__init__()
        self.inp = torch.nn.Linear(d + 1, width, dtype=F64)
        self.out = torch.nn.Linear(width, d, dtype=F64)

    def forward(self, x, t):
        return self.out(torch.tanh(self.inp(torch.cat([x, t[:, None]], -1))))


def test_residual_is_differentiable_wrt_parameters():
    torch.manual_seed(0)  # parameter init only; the functions under test take no global RNG
    net = _MLP()
    x, t = _points(5, d=2, t_range=(0.1, 0.9))
    params = dict(net.named_parameters())

    def penalty(w, divergence="exact"):
        def score(x, t):
            return functional_call(net, {**params, "inp.weight": w}, (x, t))
        r = fp_residual_score(score, x, t, sde=VPSDE(), divergence=divergence,
                              generator=_gen(0))
        return r.pow(2).sum(-1).mean()

    w = params["inp.weight"].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penalty, (w,), eps=1e-6, atol=1e-6)
    # the Hutchinson penalty back-propagates into the module's own parameters too
    r = fp_residual_score(net, x, t, sde=VPSDE(), divergence="hutchinson", generator=_gen(0))
    r.pow(2).sum(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in net.parameters())


def test_gradient_of_penalty_matches_closed_form():
    # s = -a x under VP with N(0, I) data: R = beta a (1 - a) x, so
    # d/da mean |R|^2 = 2 (1 - 2a) a (1 - a) mean(beta^2 |x|^2)
    sde = VPSDE()
    x, t = _points(16, d=3, t_range=(0.0, 1.0))
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    pen = fp_residual_score(lambda x, t: -a * x, x, t, sde=sde).pow(2).sum(-1).mean()
    (g,) = torch.autograd.grad(pen, a)
    beta2 = sde.beta(t) ** 2
    expected = 2 * (1 - 2 * 0.7) * 0.7 * 0.3 * (beta2 * (x**2).sum(-1)).mean()
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- the gap check

def test_residual_is_linear_in_small_perturbations():
    eps = (1e-4, 2e-4, 1e-3, 1e-2, 1.0)
    gap = ou_ode_sde_gap(eps, n_samples=2, steps=1, n_points=512, generator=_gen(0))
    slope = gap.residual / gap.perturbation
    # R(e) = e R1 + e^2 R2: the slope is constant to O(e) and drifts at e = 1
    torch.testing.assert_close(slope[:4], slope[0].expand(4), rtol=2e-2, atol=0)
    assert abs(slope[1] / slope[0] - 1) < 1e-3
    assert abs(slope[4] / slope[0] - 1) > 1e-2


def test_ode_sde_gap_grows_with_the_residual():
    gap = ou_ode_sde_gap(generator=_gen(0))  # e = 0, 0.1, 0.3, 1 (about 3 s)
    assert isinstance(gap, OdeSdeGap)
    res, w2 = gap.residual, gap.w2
    assert res[0] < 1e-12  # exact score
    assert (res.diff() > 0).all() and (w2.diff() > 0).all()
    assert w2[0] < 0.02  # the floor: discretization and 20k samples
    assert w2[1] > 2 * w2[0] and w2[3] > 3 * w2[2]
    # past the floor the gap tracks the residual: W2 / residual within a factor 1.5
    ratio = w2[1:] / res[1:]
    assert ratio.max() < 1.5 * ratio.min()
    # the specification's measurement: residual 0.22, 0.65, 2.19; W2 0.029, 0.080 (e <= 0.3)
    torch.testing.assert_close(res[1:], torch.tensor([0.22, 0.65, 2.19], dtype=F64),
                               rtol=0.1, atol=0)
    torch.testing.assert_close(w2[1:3], torch.tensor([0.029, 0.080], dtype=F64),
                               rtol=0.25, atol=0)


def test_gap_is_deterministic_given_the_generator():
    kw = dict(perturbations=(0.0, 0.5), n_samples=500, steps=20, n_points=64)
    g = _gen(4)
    a, b = ou_ode_sde_gap(**kw, generator=g), ou_ode_sde_gap(**kw, generator=_gen(4))
    assert torch.equal(a.w2, b.w2) and torch.equal(a.residual, b.residual)
    c = ou_ode_sde_gap(**kw, generator=g)  # g has advanced
    assert not torch.equal(a.w2, c.w2)


def test_wasserstein2_1d():
    g = _gen(0)
    a = torch.randn(100, generator=g, dtype=F64)
    assert wasserstein2_1d(a, a.flip(0)) == 0.0
    assert wasserstein2_1d(a, (a + 0.25)[torch.randperm(100, generator=g)]) == pytest.approx(
        0.25, abs=1e-12)
    assert wasserstein2_1d(a[:, None], 3 * a) == pytest.approx(
        2 * float(a.pow(2).mean().sqrt()), rel=1e-12)


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors():
    x, t = _points(4, d=2, t_range=(0.1, 0.9))
    sde = VPSDE()
    with pytest.raises(ValueError, match=r"score must return a tensor shaped like x \(4, 2\)"):
        fp_residual_score(lambda x, t: x[:, :1], x, t, sde=sde)
    with pytest.raises(ValueError, match="score must return a tensor shaped like x"):
        fp_residual_score(lambda x, t: 0.0, x, t, sde=sde)
    with pytest.raises(ValueError, match=r"log_p must return a tensor of shape \(4,\)"):
        fp_residual_log_density(lambda x, t: -x**2, x, t, sde=sde)
    with pytest.raises(ValueError, match="score must be callable"):
        fp_residual_score("score", x, t, sde=sde)
    with pytest.raises(ValueError, match="divergence must be 'exact' or 'hutchinson'"):
        fp_residual_score(lambda x, t: -x, x, t, sde=sde, divergence="trace")
    with pytest.raises(ValueError, match="probes must be an integer >= 1"):
        fp_residual_score(lambda x, t: -x, x, t, sde=sde, divergence="hutchinson", probes=0)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        fp_residual_score(lambda x, t: -x, x, t, sde=sde, divergence="hutchinson",
                          generator=0)
    with pytest.raises(ValueError, match="not both"):
        fp_residual_score(lambda x, t: -x, x, t, sde=sde, drift=sde.drift)
    with pytest.raises(ValueError, match="pass sde="):
        fp_residual_score(lambda x, t: -x, x, t, drift=sde.drift)
    with pytest.raises(ValueError, match="sde must have drift"):
        fp_residual_score(lambda x, t: -x, x, t, sde="vp")
    with pytest.raises(ValueError, match="drift must return a tensor shaped like x"):
        fp_residual_score(lambda x, t: -x, x, t, drift=lambda x, t: x[:, 0],
                          diffusion=sde.diffusion)
    with pytest.raises(ValueError, match="diffusion must return"):
        fp_residual_score(lambda x, t: -x, x, t, drift=sde.drift,
                          diffusion=lambda t: torch.ones(3))
    with pytest.raises(ValueError, match=r"t must be a number or a tensor of shape \(\) or \(4,\)"):
        fp_residual_score(lambda x, t: -x, x, torch.ones(3), sde=sde)
    with pytest.raises(ValueError, match=r"t must lie in the SDE's domain"):
        fp_residual_score(lambda x, t: -x, x, 1.5, sde=sde)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        fp_residual_score(lambda x, t: -x, torch.ones(4, 2, dtype=torch.long), t, sde=sde)
    with pytest.raises(TypeError):
        fp_residual_score(lambda x, t: -x, x, t, sde=sde, hutchinson=True)
    with pytest.raises(ValueError, match="same number of samples"):
        wasserstein2_1d(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"perturbations\[1\] must be a finite number >= 0"):
        ou_ode_sde_gap((0.1, -0.1))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ou_ode_sde_gap(steps=0)
    with pytest.raises(ValueError, match="data_std must be a finite number > 0"):
        ou_ode_sde_gap(data_std=0.0)
