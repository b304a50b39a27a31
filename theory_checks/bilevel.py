r"""BSVRB's parallel speedup on multi-block quadratic bilevel problems, as a runnable check.

Quadratic blocks with closed-form solutions, :math:`i = 1, \dots, m`:

.. math::
    g_i(x, y) = \tfrac12 y^\top A_i y - y^\top B_i x, \qquad
    f_i(x, y) = \tfrac12 \lVert y - c_i \rVert^2, \qquad y_i(x) = A_i^{-1} B_i x,

    \nabla F(x) = \frac1m \sum_i B_i^\top A_i^{-1} \bigl(A_i^{-1} B_i x - c_i\bigr).

The stochastic oracles add, per step and sampled block, the mean of :math:`B` standard normal
samples times :math:`\sigma` to :math:`\nabla_y g_i` and :math:`\nabla_y f_i` (the terms
:math:`y^\top \bar\xi`), the same at both points of the step: a minibatch of size :math:`B`.
The paper's claim (b): BSVRB's iteration complexity falls with the number :math:`I` of blocks
sampled per step and the batch size :math:`B`. :func:`parallel_speedup` measures the
stationarity :math:`\lVert \nabla F(x_t) \rVert^2` after a fixed number of steps over a grid
of :math:`(I, B)`; ``python -m stochstep.theory_checks.bilevel`` prints it.

References:
    Hu, Qiu, Guo, Zhang, Yang, "Blockwise Stochastic Variance-Reduced Methods with Parallel
    Speedup for Multi-Block Bilevel Optimization", ICML 2023.

Example:
    >>> import torch
    >>> blocks = quadratic_blocks(4, dim_x=2, dim_y=2)
    >>> x = torch.zeros(2, dtype=torch.float64)
    >>> bool(torch.allclose(blocks.hypergradient(x), -blocks.B.transpose(1, 2).matmul(
    ...     torch.linalg.solve(blocks.A, blocks.c)[..., None])[..., 0].mean(0)))
    True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from stochstep.optimizers.bilevel import BSVRB
from stochstep.stepping.checks import check_int, check_nonnegative

__all__ = ["QuadraticBlocks", "SpeedupGrid", "parallel_speedup", "quadratic_blocks"]


@dataclass(frozen=True)
class QuadraticBlocks:
    """m quadratic bilevel blocks (see the module docstring): ``A`` (m, dim_y, dim_y) positive
    definite, ``B`` (m, dim_y, dim_x), ``c`` (m, dim_y)."""

    A: Tensor
    B: Tensor
    c: Tensor

    def lower_solution(self, x: Tensor) -> Tensor:
        """:math:`y_i(x) = A_i^{-1} B_i x`, shape (m, dim_y)."""
        return torch.linalg.solve(self.A, self.B @ x)

    def hypergradient(self, x: Tensor) -> Tensor:
        r""":math:`\nabla F(x)`, exactly, by linear algebra."""
        residual = torch.linalg.solve(self.A, self.lower_solution(x) - self.c)
        return (self.B.transpose(1, 2) @ residual[..., None])[..., 0].mean(0)

    def closure(self, *, noise: float = 0.0, batch_size: int = 1,
                generator: torch.Generator | None = None):
        """A BSVRB closure: ``closure(blocks) -> (f, g)`` with the minibatch noise of the
        module docstring drawn once per call from ``generator``."""
        scale = check_nonnegative("noise", noise) / check_int("batch_size", batch_size) ** 0.5

        def closure(blocks: Tensor):
            a, b, c = self.A[blocks], self.B[blocks], self.c[blocks]
            shape = (2, len(blocks), self.A.shape[1])
            xi = scale * torch.randn(shape, generator=generator, dtype=a.dtype) if noise else \
                torch.zeros(shape, dtype=a.dtype)

            def g(x, y):
                return (0.5 * torch.einsum("ij,ijk,ik->i", y, a, y)
                        - torch.einsum("ij,ijk,k->i", y, b, x[0]) + (y * xi[0]).sum(1))

            def f(x, y):
                return 0.5 * ((y - c) ** 2).sum(1) + (y * xi[1]).sum(1)
            return f, g
        return closure


def quadratic_blocks(m: int, *, dim_x: int = 3, dim_y: int = 2, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> QuadraticBlocks:
    """Random blocks: :math:`A_i = Q_i Q_i^\\top / d_y + I`, :math:`B_i, c_i` standard
    normal, from a generator seeded with ``seed``."""
    check_int("m", m)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(m, dim_y, dim_y, generator=gen, dtype=dtype)
    A = q @ q.transpose(1, 2) / dim_y + torch.eye(dim_y, dtype=dtype)
    return QuadraticBlocks(A, torch.randn(m, dim_y, dim_x, generator=gen, dtype=dtype),
                           torch.randn(m, dim_y, generator=gen, dtype=dtype))


@dataclass(frozen=True)
class SpeedupGrid:
    """``stationarity[(I, B)]``: the mean over runs and over the last quarter of the steps of
    :math:`\\lVert \\nabla F(x_t) \\rVert^2`, after ``steps`` steps (``I * B * steps`` samples
    per block draw); ``start``: its value at the start."""

    steps: int
    start: float
    stationarity: dict[tuple[int, int], float]

    def table(self) -> str:
        rows = [f"{'I':>4} {'B':>4} {'samples':>9} {'||grad F||^2':>14}"]
        rows += [f"{i:>4} {b:>4} {i * b * self.steps:>9} {v:>14.3e}"
                 for (i, b), v in self.stationarity.items()]
        return "\n".join(rows)


def parallel_speedup(blocks_per_step=(1, 2, 8), batch_sizes=(1, 4, 16), *, m: int = 8,
                     steps: int = 800, runs: int = 3, noise: float = 1.0, lr: float = 0.01,
                     lower_lr: float = 0.05, alpha: float = 0.5, beta: float = 0.1,
                     gamma: float = 1.0, seed: int = 0) -> SpeedupGrid:
    """BSVRB (v2) on :func:`quadratic_blocks` for every ``(I, B)`` of the grid, the same
    steps, start and seeds: the stationarity reached (see :class:`SpeedupGrid`). The steps
    are the same for every :math:`I`, so ``lower_lr`` must be stable for the smallest: v2
    moves a block by about :math:`m/I` steps at once when it is sampled (the authors'
    catch-up)."""
    blocks = quadratic_blocks(m, seed=seed)
    x0 = torch.ones(blocks.B.shape[2], dtype=torch.float64)
    result = {}
    for count, batch in itertools.product(blocks_per_step, batch_sizes):
        values = []
        for run in range(runs):
            x = torch.nn.Parameter(x0.clone())
            y = torch.zeros(m, blocks.A.shape[1], dtype=torch.float64, requires_grad=True)
            opt = BSVRB([x], y, lr=lr, lower_lr=lower_lr, alpha=alpha, beta=beta, gamma=gamma,
                        blocks_per_step=count,
                        generator=torch.Generator().manual_seed(seed + run))
            closure = blocks.closure(noise=noise, batch_size=batch,
                                     generator=torch.Generator().manual_seed(10_000 + run))
            for t in range(steps):
                opt.step(closure)
                if t >= steps - steps // 4:
                    values.append(blocks.hypergradient(x.detach()).pow(2).sum().item())
        result[(count, batch)] = sum(values) / len(values)
    return SpeedupGrid(steps, blocks.hypergradient(x0).pow(2).sum().item(), result)


def _report() -> None:  # pragma: no cover - `python -m stochstep.theory_checks.bilevel`
    grid = parallel_speedup()
    print(f"BSVRB v2, m = 8 quadratic blocks, noise 1, {grid.steps} steps, 3 runs; "
          f"||grad F(x_0)||^2 = {grid.start:.3e}")
    print(grid.table())


if __name__ == "__main__":  # pragma: no cover
    _report()
