"""Argument checks shared by every layer: each returns the normalised value or raises a
ValueError that names the argument and what it accepts; and the finiteness check of a state."""

from __future__ import annotations

import math
from numbers import Real

import torch

__all__ = ["check_finite_state", "check_flag", "check_int", "check_nonnegative",
           "check_optional_positive", "check_positive", "check_real", "check_unit_interval"]


def _is_real(x) -> bool:
    # float first: optimizers check their options at every step, and an isinstance against
    # the Real ABC costs ten times more
    return type(x) is float or (isinstance(x, Real) and not isinstance(x, bool))


def check_real(name: str, value) -> float:
    """Return ``value`` as a float, or raise ValueError naming ``name`` unless a finite number."""
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value) -> float:
    """Return ``value`` as a float, or raise ValueError naming ``name`` unless finite and >= 0."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float, or raise ValueError naming ``name`` unless finite and > 0."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_optional_positive(name: str, value) -> float | None:
    """None (the option is off), or ``value`` checked by :func:`check_positive`."""
    return None if value is None else check_positive(name, value)


def check_unit_interval(name: str, value, *, include_zero: bool = True) -> float:
    """Return ``value`` as a float, or raise ValueError naming ``name`` unless a number in
    [0, 1] (a discount factor, a probability), or in (0, 1] without ``include_zero`` (the
    weight of the newest sample in a moving average)."""
    if not _is_real(value) or not (0 <= value if include_zero else 0 < value) or value > 1:
        raise ValueError(f"{name} must be a number in {'[' if include_zero else '('}0, 1], "
                         f"got {value!r}")
    return float(value)


def check_flag(name: str, value) -> bool:
    """Check a switch: exactly True or False (not 0, 1 or None)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value, low: int = 1) -> int:
    """Return ``value``, or raise ValueError naming ``name`` unless an integer >= ``low``
    (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_finite_state(x: torch.Tensor, where: str) -> None:
    """Raise FloatingPointError saying ``where`` (e.g. ``"ULA: step 3 of 10 (t = 0.3)"``) if the
    tensor ``x`` holds a NaN or an infinity."""
    # A finite sum means every entry is finite (a NaN or infinity would spoil it), and it costs
    # a few percent of the exact test; only a non-finite sum, which may be an overflow, needs it.
    if not math.isfinite(x.sum().item()) and not torch.isfinite(x).all():
        raise FloatingPointError(f"{where}: the state holds a non-finite value")
