"""Oracles: what algorithms ask of the user's function (values, gradients, HVPs, scores)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.func import grad, jvp

__all__ = ["value_and_grad", "hvp", "score_from_log_prob"]


def _scalar(value: Tensor, name: str) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must return a scalar tensor, got {shape}")
    return value.reshape(())


def value_and_grad(loss_fn: Callable[[list[Tensor]], Tensor],
                   params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """``loss_fn(params)`` and its gradient with respect to each tensor of ``params``."""
    xs = [p.detach().requires_grad_(True) for p in params]
    with torch.enable_grad():
        value = _scalar(loss_fn(xs), "loss_fn")
        grads = torch.autograd.grad(value, xs, allow_unused=True)
    return value.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]


def hvp(loss_fn: Callable[[list[Tensor]], Tensor], params: Sequence[Tensor],
        vectors: Sequence[Tensor]) -> list[Tensor]:
    """Hessian-vector product H v at ``params`` by forward-over-reverse (``jvp`` of ``grad``)."""
    params = [p.detach() for p in params]
    vectors = [v.detach() for v in vectors]
    if len(vectors) != len(params) or any(v.shape != p.shape for v, p in zip(vectors, params)):
        raise ValueError("vectors must match params in number and shapes")
    g = grad(lambda ps: _scalar(loss_fn(list(ps)), "loss_fn"))
    return list(jvp(g, (tuple(params),), (tuple(vectors),))[1])


def score_from_log_prob(log_prob: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The score grad_x log p(x) of a batched ``log_prob`` (``(..., d) -> (...)``) by autograd."""

    def score(x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            lp = log_prob(x)
            if lp.shape != x.shape[:-1]:
                raise ValueError(f"log_prob must map shape {tuple(x.shape)} to "
                                 f"{tuple(x.shape[:-1])}, got {tuple(lp.shape)}")
            return torch.autograd.grad(lp.sum(), x)[0]

    return score
