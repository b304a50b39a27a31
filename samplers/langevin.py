"""Langevin samplers as steppers for `stepping.integrate`, on the kernel `optimizers.SGLD` uses."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from stepping.kernels import langevin_
from stepping.noise import Brownian, make_generator
from stepping.optimizer import check_nonnegative
from stepping.oracles import score_from_log_prob
from stepping.integrate import integrate
from stepping.registry import AlgorithmInfo, register

__all__ = ["ULA"]


class ULA:
    r"""Unadjusted Langevin algorithm: Euler--Maruyama on
    :math:`dX = \nabla \log p(X)\,dt + \sqrt{2T}\,dW`.

    On an increasing grid, the step from :math:`t_0` to :math:`t_1` with
    :math:`h = t_1 - t_0` and :math:`\xi \sim N(0, I)` from the noise source is

    .. math::
        x \leftarrow x + h\, s(x) + \sqrt{2 T h}\,\xi

    with :math:`s` the score. It is :func:`stepping.kernels.langevin_` with the gradient
    :math:`-s(x)`: the very update of :class:`optimizers.SGLD`.

    Args:
        score: ``score(x)`` of the target, for a batch ``x`` of shape ``(..., d)``; or give
            ``log_prob`` instead and the score is taken by autograd.
        log_prob: ``log_prob(x)`` of shape ``(...)``.
        temperature: :math:`T \ge 0` (default 1).

    References:
        G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions and
        their discrete approximations", Bernoulli 1996.

    Example:
        >>> import torch
        >>> from samplers import ULA
        >>> ula = ULA(score=lambda x: -x)  # standard normal target
        >>> x = ula.sample(torch.zeros(1000, 2), step_size=0.1, steps=200,
        ...                generator=torch.Generator().manual_seed(0))
        >>> bool((x.var(0) - 1).abs().max() < 0.2)
        True
    """

    order = 1.0
    strong_order = 0.5

    def __init__(self, score: Callable[[Tensor], Tensor] | None = None, *,
                 log_prob: Callable[[Tensor], Tensor] | None = None, temperature: float = 1.0):
        if (score is None) == (log_prob is None):
            raise ValueError("give exactly one of score or log_prob")
        for name, fn in (("score", score), ("log_prob", log_prob)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
        self.score = score if score is not None else score_from_log_prob(log_prob)
        self.temperature = check_nonnegative("temperature", temperature)

    def step_(self, x: Tensor, t0: float, t1: float, noise: Brownian) -> None:
        if t1 <= t0:
            raise ValueError(f"ULA runs forward in time: the grid must increase, got {t0} -> {t1}")
        if not hasattr(noise, "standard_normal"):
            raise ValueError("ULA needs a noise source: pass noise=Brownian(generator) to integrate")
        s = self.score(x)
        if not isinstance(s, Tensor) or s.shape != x.shape:
            raise ValueError(f"score must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}")
        xi = noise.standard_normal(x)
        langevin_([x], [s], [xi], lr=t1 - t0, temperature=self.temperature, maximize=True)

    def sample(self, x0: Tensor, *, step_size: float, steps: int,
               generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
        """Run ``steps`` steps of size ``step_size`` from ``x0`` (not modified)."""
        h = check_nonnegative("step_size", step_size)
        if h == 0:
            raise ValueError("step_size must be > 0")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        grid = torch.arange(steps + 1, dtype=torch.float64) * h
        return integrate(self, x0, grid, noise=Brownian(make_generator(generator)),
                         progress=progress)


register(AlgorithmInfo(
    name="ULA",
    cls=ULA,
    kind="stepper",
    paper="Roberts & Tweedie, Bernoulli 1996",
    default_kwargs=dict(score=lambda x: -x),
    requires=frozenset({"score"}),
    stochastic=True,
    invalid_kwargs=(
        (dict(score=lambda x: -x, temperature=-1.0), ValueError, "temperature"),
        (dict(), ValueError, "score"),
        (dict(score=lambda x: -x, step=0.1), TypeError, "step"),
    ),
))
