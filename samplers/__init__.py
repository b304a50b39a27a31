"""Samplers on the stepping core; each is a stepper run by `stepping.integrate`."""

from samplers.langevin import ULA

__all__ = ["ULA"]
