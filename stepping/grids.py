"""Time grids. A grid is a strictly monotone 1-D float64 tensor; a decreasing grid runs time
backwards (reverse-time samplers). Learning-rate schedules stay with torch.optim.lr_scheduler."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stochstep.stepping.checks import check_int

__all__ = ["as_grid", "uniform", "geometric", "edm"]


def as_grid(grid) -> Tensor:
    """Validate ``grid`` (a sequence or 1-D tensor of at least two finite, strictly monotone
    times) and return it as a float64 CPU tensor."""
    g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    if g.ndim != 1 or g.numel() < 2:
        raise ValueError(f"grid must be 1-D with at least 2 times, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ValueError("grid must contain only finite times")
    d = g.diff()
    if not ((d > 0).all() or (d < 0).all()):
        raise ValueError("grid must be strictly increasing or strictly decreasing")
    return g



def uniform(t0: float, t1: float, steps: int) -> Tensor:
    """``steps`` equal intervals from ``t0`` to ``t1`` (``t1 < t0`` runs backwards)."""
    check_int("steps", steps)
    if t0 == t1:
        raise ValueError("t0 and t1 must differ")
    return as_grid(torch.linspace(t0, t1, steps + 1, dtype=torch.float64))


def geometric(t0: float, t1: float, steps: int) -> Tensor:
    """Times equally spaced in log between ``t0`` and ``t1`` (both > 0)."""
    check_int("steps", steps)
    if not (t0 > 0 and t1 > 0) or t0 == t1:
        raise ValueError(f"geometric grid needs distinct t0, t1 > 0, got {t0}, {t1}")
    return as_grid(torch.logspace(math.log10(t0), math.log10(t1), steps + 1, dtype=torch.float64))


def edm(sigma_max: float, sigma_min: float, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (arXiv 2206.00364) noise levels, from ``sigma_max`` down to ``sigma_min``:
    ``(smax^(1/rho) + i/steps (smin^(1/rho) - smax^(1/rho)))^rho``."""
    check_int("steps", steps)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"edm grid needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return as_grid((a + i * (b - a)) ** rho)
