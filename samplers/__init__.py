"""Samplers on the stepping core; each is a stepper run by `stepping.integrate`."""

from samplers.langevin import MALA, ULA, UnderdampedLangevin, rhat, thin

__all__ = ["ULA", "MALA", "UnderdampedLangevin", "rhat", "thin"]
