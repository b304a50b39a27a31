r"""Convergence properties as assertions, for any ``torch.optim``-compatible optimizer.

Each check runs the optimizer on a problem with a known answer (see
:mod:`theory_checks.strategies`: anything with ``x0``, ``loss(x)`` and, by measure, ``x_star``
and ``distance(x)`` or ``f_star`` and ``gap(x)``; ``L`` for the stability check) and raises
``AssertionError`` with the measured numbers in the message, or returns them in a small
record. The run is deterministic full-batch optimization in float64:

.. code-block:: python

    x = torch.nn.Parameter(problem.x0.clone())
    opt = make_optimizer([x])            # or make_optimizer([x], lr) for the stability check
    for t in range(steps):
        opt.step(closure)                # closure: zero_grad, loss = problem.loss(x), backward

The *error* ``e_t`` after ``t`` steps is ``||x_t - x_star||`` (``measure="distance"``, the
default where the minimizer is known) or ``f(x_t) - f_star`` (``measure="gap"``).

Example:
    >>> import torch
    >>> from stochstep.theory_checks.strategies import quadratic_problem
    >>> p = quadratic_problem(dim=4, condition=10.0, seed=0)
    >>> res = assert_linear_rate(lambda ps: torch.optim.SGD(ps, lr=1 / p.L), p,
    ...                          rate=1 - p.mu / p.L, steps=50)
    >>> res.worst_constant <= 1.0
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Run", "RateResult", "StabilityResult", "MonotoneResult", "run_optimizer",
           "assert_linear_rate", "assert_converges", "assert_diverges_above",
           "assert_monotone_loss", "assert_same_trajectory"]

MakeOptimizer = Callable[..., torch.optim.Optimizer]


@dataclass
class Run:
    """One optimizer run: the error ``e_t`` and loss ``f(x_t)`` for ``t = 0..`` (index 0 is the
    start), the iterates, and whether it blew up (non-finite values or ``FloatingPointError``)."""

    errors: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    iterates: list[torch.Tensor] = field(default_factory=list)
    blew_up: bool = False
    note: str = ""

    @property
    def ratio(self) -> float:
        """``e_T / e_0`` (``inf`` after a blow-up)."""
        return math.inf if self.blew_up else self.errors[-1] / self.errors[0]

    @property
    def measured_rate(self) -> float:
        """Geometric-mean contraction per step, ``(e_T / e_0)^(1/T)``."""
        t = len(self.errors) - 1
        return math.inf if self.blew_up else self.ratio ** (1 / max(t, 1))


def _measure(problem, measure: str | None) -> tuple[str, Callable[[torch.Tensor], float]]:
    if measure is None:
        measure = "distance" if getattr(problem, "x_star", None) is not None else "gap"
    if measure == "distance":
        if getattr(problem, "x_star", None) is None:
            raise ValueError(f"measure='distance' needs a minimizer; {problem!r} has none")
        return measure, problem.distance
    if measure == "gap":
        return measure, problem.gap
    raise ValueError(f"measure must be 'distance', 'gap' or None, got {measure!r}")


def run_optimizer(make_optimizer: MakeOptimizer, problem, *, steps: int,
                  measure: str | None = None, lr: float | None = None,
                  keep_iterates: bool = False) -> Run:
    """Run ``steps`` optimizer steps from ``problem.x0`` and record errors and losses.

    Args:
        make_optimizer: ``params -> optimizer`` (or ``(params, lr) -> optimizer`` when ``lr``
            is given); ``params`` is a list holding one float64 ``Parameter``.
        problem: a problem from :mod:`theory_checks.strategies` (or anything alike).
        steps: number of ``step`` calls.
        measure: ``"distance"``, ``"gap"`` or None (distance where the minimizer is known).
        lr: passed as the second argument of ``make_optimizer`` when not None.
        keep_iterates: store a copy of every iterate.

    Stops early, with ``blew_up=True``, at the first non-finite loss, error or iterate, or when
    the optimizer raises ``FloatingPointError`` (``check_finite=True``).

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=2, condition=1.0, seed=0)
        >>> run = run_optimizer(lambda ps: torch.optim.SGD(ps, lr=1.0), p, steps=1)
        >>> [round(e, 12) for e in run.errors]  # lr = 1/L = 1/mu: one step to the minimizer
        [1.0, 0.0]
    """
    _, error = _measure(problem, measure)
    x = torch.nn.Parameter(problem.x0.detach().clone().to(torch.float64))
    opt = make_optimizer([x]) if lr is None else make_optimizer([x], lr)

    def closure():
        opt.zero_grad()
        loss = problem.loss(x)
        loss.backward()
        return loss

    run = Run()

    def record() -> bool:
        e, f = error(x), float(problem.loss(x.detach()))
        run.errors.append(e)
        run.losses.append(f)
        if keep_iterates:
            run.iterates.append(x.detach().clone())
        return math.isfinite(e) and math.isfinite(f) and bool(torch.isfinite(x).all())

    record()
    for t in range(steps):
        try:
            opt.step(closure)
        except FloatingPointError as exc:
            run.blew_up, run.note = True, f"FloatingPointError at step {t + 1}: {exc}"
            break
        if not record():
            run.blew_up, run.note = True, f"non-finite at step {t + 1}"
            break
    return run


@dataclass
class RateResult:
    """Measured numbers of :func:`assert_linear_rate` / :func:`assert_converges`."""

    rate: float
    measured_rate: float
    worst_constant: float
    worst_step: int
    checked_steps: int
    initial_error: float
    final_error: float
    run: Run


def assert_linear_rate(make_optimizer: MakeOptimizer, problem, rate: float, *, steps: int = 100,
                       constant: float = 1.0, measure: str | None = None,
                       floor: float = 1e-10) -> RateResult:
    r"""Assert linear convergence: ``e_t <= constant * rate^t * e_0`` for every checked ``t``.

    Precisely: with ``e_t`` the error after ``t`` steps (see the module docstring), the check
    passes iff

    .. math::
        \max_{t \le T'} \frac{e_t}{\mathrm{rate}^t\, e_0} \le \mathrm{constant}\,(1 + 10^{-9}),

    where ``T'`` is the last step with ``e_t > floor * e_0``: below that relative floor the
    error is at rounding level and no longer checked. A bound on the *distance* with rate
    ``q`` implies one on the gap with rate ``q^2`` for quadratics (``constant = kappa``); GD with
    ``lr = 1/L`` on an ``mu``-strongly convex, ``L``-smooth quadratic satisfies the distance
    bound with ``rate = 1 - mu/L`` and ``constant = 1``.

    Args:
        make_optimizer: ``params -> optimizer``.
        problem: the problem (``x0``, ``loss``, and ``x_star``/``f_star`` by measure).
        rate: the claimed contraction factor per step, in ``[0, 1)`` (``0``: the error must
            reach the floor in one step).
        steps: number of steps ``T``.
        constant: the claimed constant ``C > 0``.
        measure: ``"distance"``, ``"gap"`` or None (distance where the minimizer is known).
        floor: relative error below which steps are not checked.

    Returns:
        :class:`RateResult` with the worst constant ``max_t e_t / (rate^t e_0)``, the step it
        occurs at, and the measured rate ``(e_T' / e_0)^(1/T')``.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=3, condition=100.0, seed=1)
        >>> assert_linear_rate(lambda ps: torch.optim.SGD(ps, lr=1 / p.L), p, rate=0.9,
        ...                    steps=20)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        AssertionError: error did not fall as fast as 0.9^t ... measured rate 0.97...
    """
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if not constant > 0:
        raise ValueError(f"constant must be > 0, got {constant}")
    name, _ = _measure(problem, measure)
    run = run_optimizer(make_optimizer, problem, steps=steps, measure=measure)
    e0 = run.errors[0]
    if e0 == 0:
        raise ValueError(f"{problem!r} starts at the optimum: nothing to measure")
    if run.blew_up:
        raise AssertionError(f"expected linear convergence at rate {rate:.6g} on {problem!r}; "
                             f"the run blew up ({run.note}); errors {_tail(run.errors)}")
    checked = [t for t, e in enumerate(run.errors) if e > floor * e0]
    last = checked[-1] if checked else 0
    ratios = [run.errors[t] / (e0 * rate ** t) if rate ** t > 0 else math.inf
              for t in range(last + 1)]
    worst_t = max(range(len(ratios)), key=ratios.__getitem__)
    measured = (run.errors[last] / e0) ** (1 / last) if last else 0.0
    res = RateResult(rate, measured, ratios[worst_t], worst_t, last, e0, run.errors[-1], run)
    if res.worst_constant > constant * (1 + 1e-9):
        raise AssertionError(
            f"error did not fall as fast as {rate:.6g}^t (x constant {constant:.4g}) on "
            f"{problem!r}: {name} e_{worst_t} = {run.errors[worst_t]:.6g} is "
            f"{res.worst_constant:.6g} x rate^t e_0 (e_0 = {e0:.6g}); measured rate "
            f"{measured:.6g} over {last} steps; final error {run.errors[-1]:.6g}")
    return res


def assert_converges(make_optimizer: MakeOptimizer, problem, *, steps: int = 200,
                     tol: float = 1e-3, measure: str | None = None) -> RateResult:
    """Assert ``e_T <= tol * e_0`` after ``steps`` steps.

    Args:
        make_optimizer: ``params -> optimizer``.
        problem: the problem.
        steps: number of steps ``T``.
        tol: required relative error reduction.
        measure: ``"distance"``, ``"gap"`` or None.

    Returns:
        :class:`RateResult` (``rate`` is the rate ``tol^(1/T)`` that ``tol`` amounts to).

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=3, condition=10.0, seed=0)
        >>> res = assert_converges(lambda ps: torch.optim.SGD(ps, lr=1 / p.L), p, steps=100)
        >>> res.final_error < 1e-3 * res.initial_error
        True
    """
    name, _ = _measure(problem, measure)
    run = run_optimizer(make_optimizer, problem, steps=steps, measure=measure)
    e0, eT = run.errors[0], run.errors[-1]
    t = len(run.errors) - 1
    res = RateResult(tol ** (1 / max(steps, 1)), run.measured_rate, run.ratio, t, t, e0, eT, run)
    if run.blew_up or not eT <= tol * e0:
        raise AssertionError(
            f"did not converge on {problem!r}: {name} went from {e0:.6g} to {eT:.6g} "
            f"(ratio {run.ratio:.6g}, wanted <= {tol:.3g}) in {t} steps; measured rate "
            f"{run.measured_rate:.6g}; best {min(run.errors):.6g}{_note(run)}")
    return res


@dataclass
class StabilityResult:
    """Measured numbers of :func:`assert_diverges_above`."""

    limit: float
    lr_above: float
    lr_below: float
    ratio_above: float
    ratio_below: float
    above: Run
    below: Run


def assert_diverges_above(make_optimizer: MakeOptimizer, problem, lr_factor: float = 1.1, *,
                          steps: int = 300, limit: float | None = None, blowup: float = 1e6,
                          shrink: float = 1e-2,
                          measure: str | None = None) -> StabilityResult:
    r"""Assert a stability limit on the learning rate: diverge just above it, converge below.

    With ``limit`` (default ``2 / problem.L``, the limit of GD and of plain SGD on a quadratic
    whose largest Hessian eigenvalue is ``L``), runs ``make_optimizer(params, lr)`` twice:

    - ``lr = lr_factor * limit`` must *diverge*: the run blows up, or ``e_T >= blowup * e_0``;
    - ``lr = limit / lr_factor`` must *converge*: ``e_T <= shrink * e_0``.

    For GD on a quadratic the error along the top eigenvector is multiplied by
    ``|1 - lr L|`` per step: ``2 lr_factor - 1 > 1`` above and ``max(1 - 2/(lr_factor
    kappa), 2/lr_factor - 1) < 1`` below, so ``steps`` of about ``lr_factor * kappa *
    log(1/shrink) / 2`` suffice. Where ``L`` is only an upper bound (logistic regression) the
    divergence half need not hold.

    Args:
        make_optimizer: ``(params, lr) -> optimizer``.
        problem: the problem (needs ``L`` unless ``limit`` is given).
        lr_factor: how far above/below the limit, ``> 1``.
        steps: number of steps of each run.
        limit: the stability limit (default ``2 / problem.L``).
        blowup: relative error growth that counts as divergence.
        shrink: relative error reduction that counts as convergence.
        measure: ``"distance"``, ``"gap"`` or None.

    Returns:
        :class:`StabilityResult` with both learning rates and both ``e_T / e_0``.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=3, condition=10.0, seed=0)
        >>> res = assert_diverges_above(lambda ps, lr: torch.optim.SGD(ps, lr=lr), p, 1.1)
        >>> res.ratio_above > 1e6 > 1e-2 > res.ratio_below
        True
    """
    if not lr_factor > 1:
        raise ValueError(f"lr_factor must be > 1, got {lr_factor}")
    if limit is None:
        limit = 2.0 / problem.L
    above = run_optimizer(make_optimizer, problem, steps=steps, measure=measure,
                          lr=lr_factor * limit)
    below = run_optimizer(make_optimizer, problem, steps=steps, measure=measure,
                          lr=limit / lr_factor)
    res = StabilityResult(limit, lr_factor * limit, limit / lr_factor, above.ratio,
                          below.ratio, above, below)
    diverged = above.blew_up or above.ratio >= blowup
    converged = not below.blew_up and below.ratio <= shrink
    if not (diverged and converged):
        what = " and ".join(
            s for s, bad in (("did not diverge above", not diverged),
                             ("did not converge below", not converged)) if bad)
        raise AssertionError(
            f"stability limit {limit:.6g}: {what} it on {problem!r}. lr {res.lr_above:.6g} "
            f"(x{lr_factor:g}): e_T/e_0 = {above.ratio:.6g} (wanted >= {blowup:.3g}), "
            f"rate {above.measured_rate:.6g}{_note(above)}; lr {res.lr_below:.6g} "
            f"(/{lr_factor:g}): e_T/e_0 = {below.ratio:.6g} (wanted <= {shrink:.3g}), "
            f"rate {below.measured_rate:.6g}{_note(below)}; {steps} steps")
    return res


@dataclass
class MonotoneResult:
    """Measured numbers of :func:`assert_monotone_loss`."""

    increases: int
    largest_increase: float
    largest_increase_step: int
    initial_loss: float
    final_loss: float
    run: Run


def assert_monotone_loss(make_optimizer: MakeOptimizer, problem, *, steps: int = 100,
                         atol: float = 1e-12) -> MonotoneResult:
    """Assert the loss never increases: ``f(x_{t+1}) <= f(x_t) + atol * max(1, |f(x_t)|)``.

    GD with ``lr <= 1/L`` (in fact ``lr < 2/L``) on an ``L``-smooth function satisfies it by
    the descent lemma; ``atol`` absorbs rounding once the loss has settled.

    Args:
        make_optimizer: ``params -> optimizer``.
        problem: the problem (``x0``, ``loss``).
        steps: number of steps.
        atol: allowed increase, relative to ``max(1, |f|)``.

    Returns:
        :class:`MonotoneResult` with the number and largest size of increases.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import logistic_problem
        >>> p = logistic_problem(n=20, dim=3, reg=0.1, seed=0)
        >>> assert_monotone_loss(lambda ps: torch.optim.SGD(ps, lr=1 / p.L), p).increases
        0
    """
    run = run_optimizer(make_optimizer, problem, steps=steps, measure="gap")
    f = run.losses
    diffs = [f[t + 1] - f[t] for t in range(len(f) - 1)]
    bad = [t for t, d in enumerate(diffs) if d > atol * max(1.0, abs(f[t]))]
    worst = max(range(len(diffs)), key=diffs.__getitem__) if diffs else 0
    res = MonotoneResult(len(bad), max(diffs, default=0.0), worst + 1, f[0], f[-1], run)
    if bad or run.blew_up:
        raise AssertionError(
            f"loss increased at {len(bad)} of {len(diffs)} steps on {problem!r}: first at step "
            f"{bad[0] + 1 if bad else '-'}, largest increase {res.largest_increase:.6g} at step "
            f"{res.largest_increase_step}; loss {f[0]:.6g} -> {f[-1]:.6g}{_note(run)}")
    return res


def assert_same_trajectory(make_a: MakeOptimizer, make_b: MakeOptimizer, problem, *,
                           steps: int = 20, rtol: float = 0.0, atol: float = 0.0) -> float:
    """Assert two optimizers produce the same iterates (``torch.allclose`` at every step).

    Args:
        make_a: ``params -> optimizer``.
        make_b: ``params -> optimizer``.
        problem: the problem.
        steps: number of steps.
        rtol: relative tolerance (0: bitwise equal up to ``atol``).
        atol: absolute tolerance.

    Returns:
        The largest absolute difference between the iterates.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=3, condition=10.0, seed=0)
        >>> sgd = lambda ps: torch.optim.SGD(ps, lr=0.05)
        >>> assert_same_trajectory(sgd, sgd, p)
        0.0
    """
    ra = run_optimizer(make_a, problem, steps=steps, measure="gap", keep_iterates=True)
    rb = run_optimizer(make_b, problem, steps=steps, measure="gap", keep_iterates=True)
    n = min(len(ra.iterates), len(rb.iterates))
    diffs = [float((a - b).abs().max()) for a, b in zip(ra.iterates[:n], rb.iterates[:n])]
    differ = [t for t in range(n)
              if not torch.allclose(ra.iterates[t], rb.iterates[t], rtol=rtol, atol=atol)]
    if differ or len(ra.iterates) != len(rb.iterates):
        t = differ[0] if differ else n
        raise AssertionError(
            f"trajectories differ on {problem!r}: first at step {t}, largest difference "
            f"{max(diffs):.6g} (rtol {rtol:g}, atol {atol:g}); lengths {len(ra.iterates)} and "
            f"{len(rb.iterates)}")
    return max(diffs)


def _tail(values: Sequence[float], k: int = 4) -> str:
    return ", ".join(f"{v:.4g}" for v in values[-k:])


def _note(run: Run) -> str:
    return f" ({run.note})" if run.note else ""
