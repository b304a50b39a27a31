"""Noise sources. Everything random takes an explicit `torch.Generator`; nothing here reads or
advances the global RNG."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Brownian", "make_generator", "standard_normal_like"]


def make_generator(generator: torch.Generator | None = None, *, name: str = "generator") -> torch.Generator:
    """Return ``generator``, or a fresh one seeded from OS entropy when it is None."""
    if generator is None:
        generator = torch.Generator()
        generator.seed()
        return generator
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def standard_normal_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws shaped like ``x`` (its real view if complex), from ``generator``.

    Drawn on the generator's device, then moved to ``x``'s: the same generator state gives the
    same numbers wherever ``x`` lives. Every Gaussian draw in the package goes through here.
    """
    real = torch.view_as_real(x) if x.is_complex() else x
    z = torch.randn(real.shape, generator=generator, dtype=real.dtype, device=generator.device)
    return z.to(real.device)


class Brownian:
    """Brownian motion increments on an explicit generator.

    Args:
        generator: the source of randomness (a fresh OS-seeded one if None).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> dw = Brownian(g).increment(torch.zeros(3), 0.0, 0.25)
        >>> dw.shape
        torch.Size([3])
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = make_generator(generator)

    def standard_normal(self, x: Tensor) -> Tensor:
        """xi ~ N(0, I) shaped like ``x``."""
        return standard_normal_like(x, self.generator)

    def increment(self, x: Tensor, t0: float, t1: float) -> Tensor:
        """W(t1) - W(t0) ~ N(0, |t1 - t0| I) shaped like ``x``."""
        return self.standard_normal(x).mul_(math.sqrt(abs(t1 - t0)))
