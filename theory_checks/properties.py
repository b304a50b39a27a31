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
                                         # (unless called under no_grad)

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

from stochstep.stepping.checks import check_int, check_positive

__all__ = ["Run", "RateResult", "StabilityResult", "MonotoneResult", "InvarianceResult",
           "run_optimizer", "step_budget", "assert_linear_rate", "assert_converges",
           "assert_diverges_above", "assert_monotone_loss", "assert_same_trajectory",
           "assert_invariant"]

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
        if loss.requires_grad:  # gradient-free optimizers (CBO) call closures under no_grad
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


def step_budget(problem, tol: float = 1e-3) -> int:
    r"""The default number of steps of :func:`assert_converges`: enough for gradient descent.

    GD with ``lr = 1/L`` contracts the distance to the minimizer by ``1 - 1/kappa`` per step
    (``kappa = L / mu``), so it needs :math:`\ln(1/\mathrm{tol}) / -\ln(1 - 1/\kappa) \le
    \kappa \ln(1/\mathrm{tol})` steps; the budget doubles that for methods with a smaller
    step or a slower start:

    .. math::
        T = \lceil 2\, \kappa \ln(1/\mathrm{tol}) \rceil + 20.

    Args:
        problem: a problem with strong-convexity and smoothness constants ``mu > 0`` and
            ``L``.
        tol: the relative error reduction asked for, in ``(0, 1)``.

    Example:
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> step_budget(quadratic_problem(dim=3, condition=100.0), tol=1e-3)
        1402
    """
    check_positive("tol", tol)
    if not tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    mu, L = getattr(problem, "mu", None), getattr(problem, "L", None)
    if mu is None or L is None:
        raise ValueError(f"{problem!r} has no strong-convexity and smoothness constants "
                         "(attributes mu and L) to size the budget from: pass steps=")
    if not mu > 0:
        raise ValueError(f"{problem!r} is not strongly convex (mu = {mu}): no linear rate "
                         "sizes the budget; pass steps=")
    return math.ceil(2 * (L / mu) * math.log(1 / tol)) + 20


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


def assert_linear_rate(make_optimizer: MakeOptimizer, problem, rate: float, *,
                       steps: int | None = None, constant: float = 1.0,
                       measure: str | None = None, floor: float = 1e-10) -> RateResult:
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
        steps: number of steps ``T``; None (the default) takes the steps the claimed bound
            needs to fall to ``1e-6 e_0``, :math:`\lceil \ln(10^6) / -\ln(\mathrm{rate})
            \rceil` (``kappa ln(10^6)`` for ``rate = 1 - 1/kappa``).
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
    if steps is None:
        steps = 1 if rate == 0 else max(1, math.ceil(math.log(1e6) / -math.log(rate)))
    check_int("steps", steps)
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


def assert_converges(make_optimizer: MakeOptimizer, problem, *, steps: int | None = None,
                     tol: float = 1e-3, measure: str | None = None) -> RateResult:
    r"""Assert ``e_T <= tol * e_0`` after ``T`` steps.

    .. math::
        e_T \le \mathrm{tol}\; e_0, \qquad
        T = \mathrm{steps} \text{ or, by default, }
        \lceil 2\, \kappa \ln(1/\mathrm{tol}) \rceil + 20

    (:func:`step_budget`: twice what gradient descent with ``lr = 1/L`` needs at condition
    number ``kappa``). When the check fails, the message says whether the budget or the method
    was the limit: it measures the rate over the last quarter of the run and, if the error was
    still falling there, how many steps that rate needs to reach ``tol``.

    Args:
        make_optimizer: ``params -> optimizer``.
        problem: the problem (``mu`` and ``L`` too when ``steps`` is None).
        steps: number of steps ``T``, or None for :func:`step_budget`.
        tol: required relative error reduction, in ``(0, 1)``.
        measure: ``"distance"``, ``"gap"`` or None.

    Returns:
        :class:`RateResult` (``rate`` is the rate ``tol^(1/T)`` that ``tol`` amounts to).

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=3, condition=100.0, seed=0)
        >>> res = assert_converges(lambda ps: torch.optim.SGD(ps, lr=1 / p.L), p)
        >>> res.checked_steps, res.final_error < 1e-3 * res.initial_error
        (1402, True)
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    name, _ = _measure(problem, measure)
    steps = step_budget(problem, tol) if steps is None else check_int("steps", steps)
    run = run_optimizer(make_optimizer, problem, steps=steps, measure=measure)
    e0, eT = run.errors[0], run.errors[-1]
    t = len(run.errors) - 1
    res = RateResult(tol ** (1 / max(steps, 1)), run.measured_rate, run.ratio, t, t, e0, eT, run)
    if run.blew_up or not eT <= tol * e0:
        raise AssertionError(
            f"did not converge on {problem!r}: {name} went from {e0:.6g} to {eT:.6g} "
            f"(ratio {run.ratio:.6g}, wanted <= {tol:.3g}) in {t} steps; measured rate "
            f"{run.measured_rate:.6g}; best {min(run.errors):.6g}{_note(run)}; "
            f"{_limit(run, tol)}")
    return res


def _limit(run: Run, tol: float) -> str:
    """Whether the budget or the method stopped ``run`` short of ``tol``: the rate over the
    last quarter of the run, and the steps it would need at that rate."""
    if run.blew_up:
        return "the method was the limit: the run blew up"
    e, T = run.errors, len(run.errors) - 1
    k = max(1, T // 4)
    if not (e[-1] > 0 and e[T - k] > 0):
        return "the method was the limit"
    tail = (e[-1] / e[T - k]) ** (1 / k)
    if tail >= 1 - 1e-12:
        return (f"the method, not the budget, was the limit: the error stopped falling over "
                f"the last {k} steps (rate {tail:.6g} per step)")
    needed = T + math.ceil(math.log(tol * e[0] / e[-1]) / math.log(tail))
    return (f"the budget, not the method, was the limit: the error was still falling at "
            f"rate {tail:.6g} per step over the last {k} steps, which reaches the tolerance "
            f"after about {needed} steps (pass steps >= {needed})")


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


TRANSFORMS = ("scale", "rotation", "translation", "first_step")
# Why each expectation holds: quoted in the failure messages.
_REASONS = {
    ("scale", "invariant"):
        "an Adam-type update is a ratio of moment estimates, m / sqrt(v), unchanged when every "
        "gradient is multiplied by c, so the iterates on c f are those on f (up to eps)",
    ("scale", "proportional"):
        "an update linear in the gradient (SGD, momentum) takes c times the step on c f, so "
        "the run on c f with every group's lr divided by c retraces the run on f",
    ("rotation", "equivariant"):
        "an update made of linear, coordinate-free operations on gradients commutes with "
        "rotations: on f(Q^T y) from Q x_0 the iterates are Q x_t",
    ("rotation", "not_equivariant"):
        "a coordinate-wise update (per-coordinate second moments) depends on the basis: on "
        "f(Q^T y) from Q x_0 the iterates are not Q x_t",
    ("translation", "equivariant"):
        "an update that sees x only through the gradient commutes with shifts: on f(y - s) "
        "from x_0 + s the iterates are x_t + s (decay towards 0, projections and proximal "
        "steps do not)",
    ("first_step", "bounded"):
        "a bias-corrected Adam-type method has m_1 / (1 - beta1) = g and v_1 / (1 - beta2) = "
        "g^2 on its first step, so each coordinate moves by lr |g| / (|g| + eps) <= lr",
}


@dataclass
class InvarianceResult:
    """Measured numbers of :func:`assert_invariant`: the largest deviation from what the
    transform predicts (for ``"first_step"``: the largest coordinate move over ``lr``), the
    step it occurs at, and the tolerance it was held to."""

    transform: str
    expect: str
    deviation: float
    worst_step: int
    tolerance: float
    reason: str


class _AffineImage:
    """``problem`` seen through ``y = Q x + s`` with its loss times ``c``:
    ``g(y) = c f(Q^T (y - s))``, so ``y_star = Q x_star + s`` and ``g_star = c f_star``."""

    def __init__(self, problem, *, scale: float = 1.0, rotation: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None):
        self.problem, self.scale, self.rotation, self.shift = problem, scale, rotation, shift
        self.x0 = self.image(problem.x0.detach().to(torch.float64))
        x_star = getattr(problem, "x_star", None)
        self.x_star = None if x_star is None else self.image(x_star.to(torch.float64))

    def image(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.rotation is None else self.rotation @ x
        return y if self.shift is None else y + self.shift

    def preimage(self, y: torch.Tensor) -> torch.Tensor:
        x = y if self.shift is None else y - self.shift
        return x if self.rotation is None else self.rotation.T @ x

    def loss(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale * self.problem.loss(self.preimage(y))

    def gap(self, y: torch.Tensor) -> float:
        return self.scale * self.problem.gap(self.preimage(y.detach()))

    def __repr__(self) -> str:
        return f"{self.problem!r} seen through y = Q x + s, loss x {self.scale:g}"


def _adam_type(opt: torch.optim.Optimizer) -> bool:
    return all("betas" in g and "eps" in g for g in opt.param_groups)


def assert_invariant(make_optimizer: MakeOptimizer, problem, transform: str, *,
                     expect: str | None = None, steps: int = 20, factor: float = 10.0,
                     shift: float = 3.0, seed: int = 0, rtol: float = 1e-6,
                     slack: float = 0.1, lr: float | None = None) -> InvarianceResult:
    r"""Assert how the iterates respond to a change of the problem that theory predicts.

    Runs ``make_optimizer`` on ``problem`` (iterates :math:`x_t`) and on its image (iterates
    :math:`y_t`), and compares :math:`y_t` with the prediction for ``steps`` steps:

    .. math::
        \begin{array}{lll}
        \texttt{"scale"}: & c f(y), & y_t = x_t \text{ (invariant) or, with lr/c, }
            y_t = x_t \text{ (proportional)} \\
        \texttt{"rotation"}: & f(Q^\top y),\ y_0 = Q x_0, & y_t = Q x_t
            \text{ (equivariant) or not (not\_equivariant)} \\
        \texttt{"translation"}: & f(y - s),\ y_0 = x_0 + s, & y_t = x_t + s \\
        \texttt{"first\_step"}: & f, & \max_i |x_{1,i} - x_{0,i}|
            \le \mathrm{lr}\,(1 + \mathrm{slack})
        \end{array}

    A prediction holds when :math:`\max_t \|y_t - \hat y_t\|_\infty \le \mathrm{rtol}
    \max(1, \max_t \|\hat y_t\|_\infty)`; ``"not_equivariant"`` asserts the opposite.
    ``Q`` is a random rotation and ``s`` a random shift of length ``shift``, both drawn from
    ``torch.Generator().manual_seed(seed)``. What to expect where ``expect`` is None: Adam-type
    optimizers (param groups with ``betas`` and ``eps``) are scale ``"invariant"`` and not
    rotation equivariant; others are scale ``"proportional"`` (the second run divides every
    group's ``lr`` by ``c``) and rotation ``"equivariant"``. Each failure message says what
    was expected and why. Stochastic optimizers satisfy these pathwise only where their noise
    does not depend on the transform (``"translation"``, with a freshly seeded generator per
    ``make_optimizer`` call).

    Args:
        make_optimizer: ``params -> optimizer``; called once per run.
        problem: the problem (``x0``, ``loss``, ``gap``).
        transform: ``"scale"``, ``"rotation"``, ``"translation"`` or ``"first_step"``.
        expect: ``"invariant"`` or ``"proportional"`` (scale), ``"equivariant"`` or
            ``"not_equivariant"`` (rotation), None for the rule above; translation and first
            step have one expectation each.
        steps: steps of each run (one for ``"first_step"``).
        factor: the loss scale ``c > 0``, ``!= 1``.
        shift: the length of ``s``, ``> 0``.
        seed: seed of ``Q`` and ``s``.
        rtol: the relative tolerance of the comparison (Adam's ``eps`` makes scale invariance
            approximate).
        slack: ``"first_step"``: allowed excess over ``lr`` (AdamW's decay adds
            ``lr * weight_decay * |x|``).
        lr: ``"first_step"``: the bound; by default the largest ``lr`` of the param groups.

    Returns:
        :class:`InvarianceResult`.

    References:
        Kingma & Ba, Adam (arXiv 1412.6980), section 2.1 (the first step is bounded by the
        step size) and section 3 (bias correction); Loshchilov & Hutter (arXiv 1711.05101):
        decoupled weight decay keeps Adam's scale invariance, L2 regularization does not.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import quadratic_problem
        >>> p = quadratic_problem(dim=4, condition=10.0, seed=0)
        >>> adam = lambda ps: torch.optim.Adam(ps, lr=0.1)
        >>> assert_invariant(adam, p, "scale").expect
        'invariant'
        >>> assert_invariant(lambda ps: torch.optim.SGD(ps, lr=0.05), p, "rotation").expect
        'equivariant'
        >>> l2 = lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.1)
        >>> assert_invariant(l2, p, "scale")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        AssertionError: scale: expected invariant iterates ...
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    check_int("steps", steps)
    factor, shift = check_positive("factor", factor), check_positive("shift", shift)
    rtol, slack = check_positive("rtol", rtol), check_positive("slack", slack)
    if factor == 1:
        raise ValueError("factor must differ from 1 (the loss scale c), got 1")
    missing = [name for name in ("x0", "loss", "gap") if getattr(problem, name, None) is None]
    if missing:
        raise ValueError(f"{problem!r} lacks {', '.join(missing)}: assert_invariant needs a "
                         "problem with a start x0, a loss(x) and a gap(x) (see "
                         "theory_checks.strategies)")
    probe = make_optimizer([torch.nn.Parameter(problem.x0.detach().clone().to(torch.float64))])
    if not isinstance(probe, torch.optim.Optimizer):
        raise TypeError(f"make_optimizer must return a torch.optim.Optimizer, got "
                        f"{type(probe).__name__}")
    adam_type = _adam_type(probe)
    allowed = {"scale": ("invariant", "proportional"),
               "rotation": ("equivariant", "not_equivariant"),
               "translation": ("equivariant",), "first_step": ("bounded",)}[transform]
    if expect is None:
        expect = {"scale": "invariant" if adam_type else "proportional",
                  "rotation": "not_equivariant" if adam_type else "equivariant"
                  }.get(transform, allowed[0])
    if expect not in allowed:
        raise ValueError(f"expect for transform {transform!r} must be one of {allowed} or "
                         f"None, got {expect!r}")
    reason = _REASONS[transform, expect]
    if transform == "first_step":
        return _first_step(make_optimizer, problem, probe, lr, slack, reason)

    gen = torch.Generator().manual_seed(seed)
    dim = problem.x0.numel()
    make_image = make_optimizer
    if transform == "scale":
        image = _AffineImage(problem, scale=factor)
        if expect == "proportional":
            make_image = _lr_divided(make_optimizer, factor)
        predict = lambda x: x  # noqa: E731
    elif transform == "rotation":
        from stochstep.theory_checks.strategies import _random_rotation
        q = _random_rotation(dim, gen)
        image = _AffineImage(problem, rotation=q)
        predict = image.image
    else:
        u = torch.randn(dim, generator=gen, dtype=torch.float64)
        image = _AffineImage(problem, shift=shift * u / u.norm())
        predict = image.image
    base = run_optimizer(make_optimizer, problem, steps=steps, measure="gap",
                         keep_iterates=True)
    seen = run_optimizer(make_image, image, steps=steps, measure="gap", keep_iterates=True)
    if base.blew_up or seen.blew_up:
        raise AssertionError(f"{transform}: a run blew up on {problem!r} ({base.note or '-'}; "
                             f"{seen.note or '-'}): nothing to compare")
    predicted = [predict(x) for x in base.iterates]
    gaps = [float((y - p).abs().max()) for y, p in zip(seen.iterates, predicted)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    tolerance = rtol * max(1.0, max(float(p.abs().max()) for p in predicted))
    res = InvarianceResult(transform, expect, gaps[worst], worst, tolerance, reason)
    what = {"scale": f"c = {factor:g}", "rotation": f"a random rotation (seed {seed})",
            "translation": f"a shift of length {shift:g} (seed {seed})"}[transform]
    if expect == "not_equivariant":
        if gaps[worst] <= tolerance:
            raise AssertionError(
                f"rotation: expected iterates that are not rotation-equivariant on "
                f"{problem!r}, because {reason}; but under {what} they stayed within "
                f"{gaps[worst]:.3g} of Q x_t (tolerance {tolerance:.3g}) for {steps} steps")
    elif gaps[worst] > tolerance:
        wanted = {"invariant": "invariant iterates", "proportional":
                  "iterates retraced with lr / c", "equivariant": "equivariant iterates"}[expect]
        raise AssertionError(
            f"{transform}: expected {wanted} on {problem!r} under {what}, because {reason}; "
            f"they differ by {gaps[worst]:.6g} at step {worst} (tolerance {tolerance:.3g}); "
            f"first differing step "
            f"{next(t for t, g in enumerate(gaps) if g > tolerance)}")
    return res


def _lr_divided(make_optimizer: MakeOptimizer, factor: float) -> MakeOptimizer:
    def make(params):
        opt = make_optimizer(params)
        for group in opt.param_groups:
            if "lr" not in group:
                raise ValueError("transform 'scale' with expect='proportional' divides the "
                                 "param groups' 'lr' by the factor; this optimizer's groups "
                                 "hold no 'lr'")
            group["lr"] = group["lr"] / factor
        return opt
    return make


def _first_step(make_optimizer, problem, probe, lr, slack, reason) -> InvarianceResult:
    if lr is None:
        lrs = [g["lr"] for g in probe.param_groups if "lr" in g]
        if not lrs:
            raise ValueError("transform 'first_step' needs lr: this optimizer's param groups "
                             "hold no 'lr'; pass lr=")
        lr = max(float(v) for v in lrs)
    lr = check_positive("lr", lr)
    run = run_optimizer(make_optimizer, problem, steps=1, measure="gap", keep_iterates=True)
    if run.blew_up:
        raise AssertionError(f"first_step: the first step blew up on {problem!r} ({run.note})")
    move = (run.iterates[1] - run.iterates[0]).abs()
    i = int(move.argmax())
    res = InvarianceResult("first_step", "bounded", float(move[i]) / lr, 1, 1 + slack, reason)
    if res.deviation > res.tolerance:
        raise AssertionError(
            f"first_step: expected every coordinate to move by at most lr = {lr:.6g} "
            f"(x {1 + slack:g}) on {problem!r}, because {reason}; coordinate {i} moved by "
            f"{float(move[i]):.6g} = {res.deviation:.4g} lr")
    return res


def _tail(values: Sequence[float], k: int = 4) -> str:
    return ", ".join(f"{v:.4g}" for v in values[-k:])


def _note(run: Run) -> str:
    return f" ({run.note})" if run.note else ""
