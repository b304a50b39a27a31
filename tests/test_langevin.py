"""SGLD (an optimizer) and ULA (a sampler) are one Langevin kernel: same generator, same bits."""


import pytest
import torch

from stochstep.optimizers import SGLD
from stochstep.samplers import ULA
from stochstep.stepping import Brownian, integrate


def grad_u(x):
    """Gradient of the banana potential U(a, b) = a^2 / 2 + (b - a^2)^2 / 2."""
    a, b = x[..., 0], x[..., 1]
    return torch.stack([a - 2 * a * (b - a**2), b - a**2], dim=-1)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_sgld_and_ula_trajectories_are_bitwise_identical(temperature):
    h, steps = 2.0**-5, 40  # a power of two: the grid's differences are exactly h
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))

    theta = torch.nn.Parameter(x0.clone())
    opt = SGLD([theta], lr=h, temperature=temperature,
               generator=torch.Generator().manual_seed(42))
    sgld_path = []
    for _ in range(steps):
        theta.grad = grad_u(theta.detach())
        opt.step()
        sgld_path.append(theta.detach().clone())

    ula = ULA(score=lambda x: -grad_u(x), temperature=temperature)
    sol = integrate(ula, x0, torch.arange(steps + 1, dtype=torch.float64) * h,
                    noise=Brownian(torch.Generator().manual_seed(42)), save_every=1)
    assert torch.equal(sol.path[1:], torch.stack(sgld_path))


def test_ula_samples_a_gaussian_with_the_discretisation_bias_theory_predicts():
    # For the target N(0, 1), ULA with step h is the AR(1) chain x <- (1 - h) x + sqrt(2h) xi,
    # whose stationary variance is 2h / (1 - (1 - h)^2) = 1 / (1 - h/2).
    h = 0.2
    x = ULA(score=lambda x: -x).sample(torch.zeros(20000, 1), step_size=h, steps=100,
                                       generator=torch.Generator().manual_seed(0))
    assert x.var().item() == pytest.approx(1 / (1 - h / 2), rel=0.03)
    assert abs(x.mean().item()) < 0.03


def test_ula_from_log_prob_matches_score():
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    grid = torch.arange(11, dtype=torch.float64) * 0.125
    a = integrate(ULA(score=lambda x: -x), x0, grid,
                  noise=Brownian(torch.Generator().manual_seed(2)))
    b = integrate(ULA(log_prob=lambda x: -0.5 * (x**2).sum(-1)), x0, grid,
                  noise=Brownian(torch.Generator().manual_seed(2)))
    assert torch.equal(a, b)


def test_ula_rejects_bad_scores_and_grids():
    with pytest.raises(ValueError, match="score"):
        integrate(ULA(score=lambda x: x.sum(-1)), torch.zeros(3, 2), [0.0, 0.1],
                  noise=Brownian(torch.Generator()))
    with pytest.raises(ValueError, match="grid"):
        integrate(ULA(score=lambda x: -x), torch.zeros(3, 2), [0.1, 0.0],
                  noise=Brownian(torch.Generator()))
    with pytest.raises(ValueError, match="step_size"):
        ULA(score=lambda x: -x).sample(torch.zeros(2), step_size=-1.0, steps=3)
