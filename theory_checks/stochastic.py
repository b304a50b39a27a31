r"""Stochastic properties: what constant-step stochastic optimizers do at stationarity, exactly.

On a quadratic with gradient noise (:func:`theory_checks.strategies.noisy_quadratic_problem`,
:func:`~theory_checks.strategies.minibatch_least_squares_problem`), SGD, heavy-ball momentum,
SGLD and SGHMC with constant hyperparameters are *linear* recursions driven by noise. With
:math:`e_t = x_t - x^\star`, a state :math:`z_t` (:math:`e_t`, plus the momentum buffer where
there is one) and :math:`e_t = P z_t`,

.. math::
    z_{t+1} = M z_t + G \xi_t + \eta_t, \qquad
    \operatorname{Cov} \xi_t = \Sigma(P S_t P^\top), \quad \operatorname{Cov} \eta_t = Q,

with :math:`\xi_t` the gradient noise (covariance :math:`\Sigma`, constant for additive noise,
affine in the second moment :math:`S_t = E z_t z_t^\top` for minibatch least squares) and
:math:`\eta_t` the optimizer's own noise. Started at :math:`x^\star` (:math:`z_0 = 0`, so
:math:`E z_t = 0` for all :math:`t`), the second moment follows exactly

.. math::
    S_{t+1} = M S_t M^\top + G\, \Sigma(P S_t P^\top)\, G^\top + Q,

and tends to the solution of the discrete Lyapunov equation
:math:`S = M S M^\top + G \Sigma(P S P^\top) G^\top + Q` (for SGD with additive noise
:math:`S = (I - \eta H) S (I - \eta H)^\top + \eta^2 \Sigma`). :func:`assert_noise_ball` runs
many independent runs at once and compares the measured :math:`E\|e_t\|^2` with the exact one
inside a confidence interval. The recursions, per ``kind`` (step :math:`\eta`, gradient
:math:`g_t = H e_t + \xi_t`):

- ``"sgd"``: :math:`e_{t+1} = e_t - \eta g_t`;
- ``"heavy_ball"`` (``torch.optim.SGD`` with ``momentum`` :math:`\mu`, ``dampening``
  :math:`\tau`, ``nesterov``): :math:`b_t = \mu b_{t-1} + (1 - \tau) g_t` (:math:`b_1 = g_1`),
  :math:`e_{t+1} = e_t - \eta b_t`, or :math:`e_t - \eta (g_t + \mu b_t)` with Nesterov;
  state :math:`z_t = (e_t, b_{t-1})`;
- ``"sgld"`` (:class:`~stochstep.optimizers.SGLD`, temperature :math:`T`):
  :math:`e_{t+1} = e_t - \eta g_t + \sqrt{2 T \eta}\, \zeta_t`;
- ``"sghmc"`` (:class:`~stochstep.optimizers.SGHMC`, friction :math:`C`, mass :math:`m`,
  noise estimate :math:`\hat B`): :math:`r_{t+1} = r_t - \eta g_t - \eta C r_t / m +
  \sqrt{2 (C - \hat B) T \eta}\, \zeta_t`, :math:`e_{t+1} = e_t + \eta r_{t+1} / m`; state
  :math:`z_t = (e_t, r_t)`.

References:
    Mandt, Hoffman, Blei. "Stochastic Gradient Descent as Approximate Bayesian Inference."
    JMLR 2017, arXiv 1704.04289 (the stationary covariance of constant-step SGD as the
    solution of a Lyapunov equation).

Example:
    >>> import torch
    >>> from stochstep.theory_checks.strategies import noisy_quadratic_problem
    >>> p = noisy_quadratic_problem(dim=3, condition=5.0, noise=0.5, seed=0)
    >>> res = assert_noise_ball(lambda ps: torch.optim.SGD(ps, lr=0.1), p, runs=50, steps=200)
    >>> round(res.stationary, 4)  # tr S for S = (I - lr H) S (I - lr H) + lr^2 Sigma
    0.0456
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import scipy.linalg
import scipy.stats
import torch
from torch import Tensor

from stochstep.stepping.checks import check_int, check_positive, check_unit_interval

__all__ = ["KINDS", "LinearChain", "NoiseBallResult", "StationaryLawResult", "linear_chain",
           "stationary_covariance", "expected_second_moments", "run_average_variance",
           "expected_moments",
           "assert_noise_ball", "assert_stationary_law", "noise_ball_false_failures",
           "RATES", "RateInExpectationResult", "assert_rate_in_expectation",
           "sgd_inverse_time_constant"]

DTYPE = torch.float64
KINDS = ("sgd", "heavy_ball", "sgld", "sghmc")

# The hyperparameters each kind reads (from the optimizer's param_groups, or given), with the
# defaults of the optimizers they come from; those in _MUST_BE must have that value.
_HYPERPARAMETERS = {
    "sgd": dict(lr=None, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                maximize=False),
    "sgld": dict(lr=None, temperature=1.0, weight_decay=0.0, maximize=False),
    "sghmc": dict(lr=None, friction=1.0, mass=1.0, noise_estimate=0.0, temperature=1.0,
                  weight_decay=0.0, maximize=False, resample_every=None),
}
_HYPERPARAMETERS["heavy_ball"] = _HYPERPARAMETERS["sgd"]
_MUST_BE = dict(weight_decay=0.0, maximize=False, resample_every=None)


@dataclass(frozen=True)
class LinearChain:
    r"""The recursion :math:`z_{t+1} = M z_t + G \xi_t + \eta_t` of one ``kind`` (see the
    module docstring): ``M`` ``(m, m)``, ``G`` ``(m, d)`` (``G_first`` on the first step,
    where torch's momentum buffer starts undamped), ``Q = Cov(eta)`` ``(m, m)``, and ``P``
    ``(d, m)`` with :math:`e = P z`; ``M_first`` is the first step's ``M``."""

    M: Tensor
    G: Tensor
    Q: Tensor
    P: Tensor
    G_first: Tensor
    M_first: Tensor

    @property
    def spectral_radius(self) -> float:
        """Largest modulus of an eigenvalue of ``M`` (a stationary law exists iff < 1)."""
        return float(torch.linalg.eigvals(self.M).abs().max())


def linear_chain(kind: str, hyperparameters: dict, H: Tensor) -> LinearChain:
    r"""The linear recursion of the error of ``kind`` on a quadratic with Hessian ``H``.

    .. math::
        z_{t+1} = M z_t + G \xi_t + \eta_t, \qquad e_t = P z_t.

    Args:
        kind: one of :data:`KINDS`.
        hyperparameters: the kind's hyperparameters (``lr`` and, by kind, ``momentum``,
            ``dampening``, ``nesterov``, ``temperature``, ``friction``, ``mass``,
            ``noise_estimate``).
        H: ``(d, d)`` Hessian.

    Example:
        >>> import torch
        >>> c = linear_chain("sgd", dict(lr=0.5), torch.eye(2, dtype=torch.float64))
        >>> c.M.diagonal().tolist(), c.G.diagonal().tolist()
        ([0.5, 0.5], [-0.5, -0.5])
    """
    H = torch.as_tensor(H, dtype=DTYPE)
    d = H.shape[0]
    eye, zero = torch.eye(d, dtype=DTYPE), torch.zeros(d, d, dtype=DTYPE)
    lr = hyperparameters["lr"]
    if kind in ("sgd", "sgld"):
        temperature = hyperparameters.get("temperature", 0.0) if kind == "sgld" else 0.0
        G = -lr * eye
        M = eye - lr * H
        return LinearChain(M, G, 2 * temperature * lr * eye, eye, G, M)
    if kind == "heavy_ball":
        mu, tau = hyperparameters["momentum"], hyperparameters["dampening"]

        def step(damp: float) -> tuple[Tensor, Tensor]:
            # b_t = mu b_{t-1} + w g_t with w = 1 - damp, then e_{t+1} from b_t (and g_t)
            w = 1.0 - damp
            if hyperparameters["nesterov"]:
                ee, eb, ge = eye - lr * (1 + mu * w) * H, -lr * mu * mu * eye, \
                    -lr * (1 + mu * w) * eye
            else:
                ee, eb, ge = eye - lr * w * H, -lr * mu * eye, -lr * w * eye
            return torch.cat([torch.cat([ee, eb], 1), torch.cat([w * H, mu * eye], 1)]), \
                torch.cat([ge, w * eye])

        (M, G), (M1, G1) = step(tau), step(0.0)  # torch's buffer starts undamped: b_1 = g_1
        return LinearChain(M, G, torch.zeros(2 * d, 2 * d, dtype=DTYPE),
                           torch.cat([eye, zero], 1), G1, M1)
    if kind == "sghmc":
        c, m = hyperparameters["friction"], hyperparameters["mass"]
        b, temperature = hyperparameters["noise_estimate"], hyperparameters["temperature"]
        keep = 1 - lr * c / m
        # r' = -lr H e + keep r - lr xi + zeta;  e' = e + (lr/m) r'
        M = torch.cat([torch.cat([eye - lr * lr / m * H, lr / m * keep * eye], 1),
                       torch.cat([-lr * H, keep * eye], 1)])
        G = torch.cat([-lr * lr / m * eye, -lr * eye])
        s2 = 2 * (c - b) * temperature * lr
        Q = s2 * torch.cat([torch.cat([(lr / m) ** 2 * eye, lr / m * eye], 1),
                            torch.cat([lr / m * eye, eye], 1)])
        return LinearChain(M, G, Q, torch.cat([eye, zero], 1), G, M)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


NoiseCovariance = Callable[[Tensor], Tensor]


def _forcing(chain: LinearChain, noise: NoiseCovariance, S: Tensor, G: Tensor) -> Tensor:
    return G @ noise(chain.P @ S @ chain.P.T) @ G.T + chain.Q


def stationary_covariance(chain: LinearChain, noise: NoiseCovariance) -> Tensor:
    r"""The stationary second moment ``S`` (``(m, m)``) of ``chain``:

    .. math::
        S = M S M^\top + G\, \Sigma(P S P^\top)\, G^\top + Q,

    with ``noise`` the map :math:`S_e \mapsto \Sigma(S_e)` (affine; a constant for additive
    noise, then ``scipy.linalg.solve_discrete_lyapunov``; otherwise the equation is solved as
    an ``m^2``-dimensional linear system). ValueError if the recursion is unstable
    (:math:`\rho(M) \ge 1`) or the noise feedback leaves no positive solution.

    Example:
        >>> import torch
        >>> H = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> c = linear_chain("sgd", dict(lr=0.1), H)
        >>> S = stationary_covariance(c, lambda S_e: torch.eye(2, dtype=torch.float64))
        >>> [round(v, 12) for v in S.diagonal().tolist()]  # lr / (h (2 - lr h))
        [0.052631578947, 0.015625]
    """
    if chain.spectral_radius >= 1:
        raise ValueError(f"no stationary law: the recursion is unstable (spectral radius of M "
                         f"{chain.spectral_radius:.6g} >= 1); lower the step size")
    m, d = chain.M.shape[0], chain.P.shape[0]
    base = _forcing(chain, noise, torch.zeros(m, m, dtype=DTYPE), chain.G)
    probe = torch.eye(d, dtype=DTYPE)
    if torch.equal(noise(probe), noise(torch.zeros(d, d, dtype=DTYPE))):  # additive noise
        S = scipy.linalg.solve_discrete_lyapunov(chain.M.numpy(), base.numpy())
        S = torch.as_tensor(S, dtype=DTYPE)
    else:
        basis = torch.eye(m * m, dtype=DTYPE).reshape(m * m, m, m)
        # column j of K: the linear part of the map applied to the j-th basis matrix
        K = torch.stack([(chain.M @ E @ chain.M.T + _forcing(chain, noise, E, chain.G)
                          - base).reshape(-1) for E in basis], 1)
        S = torch.linalg.solve(torch.eye(m * m, dtype=DTYPE) - K, base.reshape(-1))
        S = S.reshape(m, m)
    S = 0.5 * (S + S.T)
    if not torch.isfinite(S).all() or float(torch.linalg.eigvalsh(S)[0]) < \
            -1e-9 * float(S.abs().max()):
        raise ValueError("no stationary law: the state-dependent gradient noise makes the "
                         "second moment grow without bound at this step size")
    return S


def expected_second_moments(chain: LinearChain, noise: NoiseCovariance, steps: int) -> Tensor:
    r""":math:`E\|e_t\|^2` for ``t = 0..steps`` from :math:`z_0 = 0`, by the exact recursion
    :math:`S_{t+1} = M S_t M^\top + G \Sigma(P S_t P^\top) G^\top + Q` (``G_first`` at
    ``t = 0``).

    Example:
        >>> import torch
        >>> c = linear_chain("sgd", dict(lr=0.5), torch.eye(1, dtype=torch.float64))
        >>> expected_second_moments(c, lambda S: torch.eye(1, dtype=torch.float64), 2).tolist()
        [0.0, 0.25, 0.3125]
    """
    m = chain.M.shape[0]
    S = torch.zeros(m, m, dtype=DTYPE)
    out = [0.0]
    for t in range(steps):
        M, G = (chain.M_first, chain.G_first) if t == 0 else (chain.M, chain.G)
        S = M @ S @ M.T + _forcing(chain, noise, S, G)
        out.append(float(torch.trace(chain.P @ S @ chain.P.T)))
    return torch.tensor(out, dtype=DTYPE)


def run_average_variance(chain: LinearChain, noise: NoiseCovariance, steps: int,
                         burn_in: int) -> float:
    r"""The exact variance of one run's window average :math:`m = \frac1W \sum_{B < t \le T}
    \|e_t\|^2` (:math:`W = T - B`) when the chain is Gaussian: additive Gaussian noise and
    :math:`z_0 = 0`. Then :math:`z_t` is a zero-mean Gaussian vector with
    :math:`E[z_t z_s^\top] = M^{t-s} S_s` for :math:`t \ge s` and, by Isserlis' theorem, with
    :math:`A = P^\top P`,

    .. math::
        \operatorname{Var} m = \frac{2}{W^2} \sum_{B < s, t \le T}
            \operatorname{tr}\big(A\, C_{ts}^\top A\, C_{ts}\big),
            \qquad C_{ts} = M^{|t-s|} S_{\min(s, t)}.

    Example:
        >>> import torch
        >>> c = linear_chain("sgd", dict(lr=0.5), torch.eye(1, dtype=torch.float64))
        >>> one = lambda S: torch.eye(1, dtype=torch.float64)
        >>> run_average_variance(c, one, 1, 0)  # e_1 ~ N(0, 1/4): Var e_1^2 = 2 / 16
        0.125
    """
    m = chain.M.shape[0]
    S = torch.zeros(m, m, dtype=DTYPE)
    window = []
    for t in range(steps):
        M, G = (chain.M_first, chain.G_first) if t == 0 else (chain.M, chain.G)
        S = M @ S @ M.T + _forcing(chain, noise, S, G)
        if t + 1 > burn_in:
            window.append(S)
    C = torch.stack(window)                     # lag 0: C_ss = S_s
    A = chain.P.T @ chain.P
    total = 0.0
    for lag in range(len(window)):
        if lag:
            C = chain.M @ C[:-1]                # C_{s+lag, s} = M C_{s+lag-1, s}
        term = float(((A @ C.transpose(1, 2)) * (A @ C).transpose(1, 2)).sum())
        total += term if lag == 0 else 2 * term
        if abs(term) <= 1e-15 * total:          # the correlations have died out
            break
    return 2 * total / len(window) ** 2


def expected_moments(chain: LinearChain, noise_cov: Tensor, e0: Tensor,
                     steps: int) -> tuple[Tensor, Tensor]:
    r"""Exact :math:`E e_t` and :math:`E e_t e_t^\top` for ``t = 0..steps`` from
    :math:`z_0 = (e_0, 0)` under additive gradient noise of covariance ``noise_cov``:

    .. math::
        m_{t+1} = M m_t, \qquad C_{t+1} = M C_t M^\top + G \Sigma G^\top + Q, \qquad
        E e_t e_t^\top = P (C_t + m_t m_t^\top) P^\top,

    with ``M_first``, ``G_first`` on the first step and :math:`C_0 = 0`.

    Returns:
        ``(means, second_moments)`` of shapes ``(steps + 1, d)`` and ``(steps + 1, d, d)``.

    Example:
        >>> import torch
        >>> c = linear_chain("sgd", dict(lr=0.5), torch.eye(1, dtype=torch.float64))
        >>> m, s = expected_moments(c, torch.eye(1, dtype=torch.float64),
        ...                         torch.ones(1, dtype=torch.float64), 1)
        >>> m.flatten().tolist(), s.flatten().tolist()  # 0.5^2 + 0.5^2 * 1
        ([1.0, 0.5], [1.0, 0.5])
    """
    m_dim, d = chain.M.shape[0], chain.P.shape[0]
    z = torch.zeros(m_dim, dtype=DTYPE)
    z[:d] = e0
    C = torch.zeros(m_dim, m_dim, dtype=DTYPE)
    means, seconds = [chain.P @ z], [chain.P @ torch.outer(z, z) @ chain.P.T]
    for t in range(steps):
        M, G = (chain.M_first, chain.G_first) if t == 0 else (chain.M, chain.G)
        z, C = M @ z, M @ C @ M.T + G @ noise_cov @ G.T + chain.Q
        means.append(chain.P @ z)
        seconds.append(chain.P @ (C + torch.outer(z, z)) @ chain.P.T)
    return torch.stack(means), torch.stack(seconds)


# -- reading the optimizer ----------------------------------------------------------------------
def _infer_kind(optimizer: torch.optim.Optimizer) -> str:
    from stochstep.optimizers import SGHMC, SGLD

    if isinstance(optimizer, torch.optim.SGD):
        return "heavy_ball" if optimizer.param_groups[0].get("momentum", 0) else "sgd"
    if isinstance(optimizer, SGLD):
        return "sgld"
    if isinstance(optimizer, SGHMC):
        return "sghmc"
    raise ValueError(f"cannot tell which closed form applies to {type(optimizer).__name__}: "
                     f"pass kind= one of {KINDS}")


def _as_float(value):
    return float(value) if isinstance(value, Tensor) and value.numel() == 1 else value


def _hyperparameters(optimizer: torch.optim.Optimizer, kind: str, given: dict | None) -> dict:
    """The kind's hyperparameters: ``given`` first, then the (single) param group, then the
    defaults; errors name what is missing or unsupported."""
    spec = _HYPERPARAMETERS[kind]
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise TypeError(f"hyperparameters for kind={kind!r} take {sorted(spec)}; unknown "
                        f"{unknown}")
    groups = optimizer.param_groups
    if len(groups) != 1:
        raise ValueError(f"the optimizer must have one param group, got {len(groups)}")
    out = {}
    for name, default in spec.items():
        value = _as_float(given.get(name, groups[0].get(name, default)))
        if value is None and name == "lr":
            raise ValueError(f"kind={kind!r} needs the step size: {type(optimizer).__name__}'s "
                             "param group has no 'lr'; pass hyperparameters={'lr': ...}")
        if name in _MUST_BE and value != _MUST_BE[name] and value is not None:
            raise ValueError(f"{name}={value!r} is not supported by the closed form of "
                             f"kind={kind!r} (it needs {name}={_MUST_BE[name]!r})")
        out[name] = value
    if kind == "sgd" and out["momentum"] != 0:
        raise ValueError(f"kind='sgd' needs momentum=0, got {out['momentum']!r}; use "
                         "kind='heavy_ball'")
    return out


def _scheduled(optimizer: torch.optim.Optimizer) -> bool:
    """An ``lr_scheduler`` was attached (it stores ``initial_lr`` and wraps ``step``)."""
    return any("initial_lr" in g for g in optimizer.param_groups) or \
        hasattr(optimizer.step, "_wrapped_by_lr_sched")


def _settings(optimizer: torch.optim.Optimizer, names) -> list:
    return [_as_float(g.get(k)) for g in optimizer.param_groups for k in names]


def _make(make_optimizer, params) -> torch.optim.Optimizer:
    made = make_optimizer(params)
    if isinstance(made, tuple) or not isinstance(made, torch.optim.Optimizer):
        raise ValueError("make_optimizer must return a torch.optim.Optimizer (with a constant "
                         f"step: no scheduler), got {type(made).__name__}")
    if _scheduled(made):
        raise ValueError("a learning-rate scheduler is attached to the optimizer; "
                         "assert_noise_ball needs a constant step")
    return made


def _require(problem, *names: str) -> None:
    missing = [n for n in names if getattr(problem, n, None) is None]
    if missing:
        raise ValueError(f"{problem!r} lacks {', '.join(missing)}: the property needs a "
                         "stochastic problem with the exact Hessian at x_star (H), the "
                         "gradient-noise covariance (noise_cov, noise_covariance_given) and an "
                         "oracle (closure); see theory_checks.strategies")


def _check_run(problem, runs, steps, burn_in, confidence, kind):
    """Checked ``runs, steps, burn_in, confidence``; ValueError for a bad ``kind`` or a problem
    without what the stochastic properties need."""
    runs = check_int("runs", runs, low=2)
    steps = check_int("steps", steps)
    burn_in = steps // 2 if burn_in is None else check_int("burn_in", burn_in, low=0)
    if burn_in >= steps:
        raise ValueError(f"burn_in must be < steps ({steps}), got {burn_in}")
    confidence = check_unit_interval("confidence", confidence, include_zero=False)
    if confidence == 1:
        raise ValueError("confidence must be a number in (0, 1), got 1")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    _require(problem, "x_star", "H", "noise_cov")
    if not callable(getattr(problem, "closure", None)):
        _require(problem, "closure")
    return runs, steps, burn_in, confidence


def _run_constant(optimizer, closure, steps: int, names: list[str],
                  record: Callable[[int], None], who: str) -> None:
    """``steps`` optimizer steps, calling ``record(t)`` after step ``t``; ValueError as soon as
    one of the hyperparameters ``names`` changes (a scheduler stepped in a hook, an optimizer
    that changes its own step size)."""
    before = _settings(optimizer, names)
    for t in range(1, steps + 1):
        optimizer.step(closure)
        now = _settings(optimizer, names)
        if now != before:
            changed = ", ".join(f"{k}: {a!r} -> {b!r}"
                                for k, a, b in zip(names, before, now) if a != b)
            raise ValueError(f"the optimizer's settings changed during the run at step {t} "
                             f"({changed}): {who} needs constant hyperparameters")
        record(t)


# -- the noise ball -----------------------------------------------------------------------------
@dataclass
class NoiseBallResult:
    r"""Measured and exact numbers of :func:`assert_noise_ball`.

    ``measured`` is :math:`\overline{\|e_t\|^2}` over the window ``burn_in < t <= steps`` and
    the runs, ``stderr`` its standard error (exact for Gaussian noise, else estimated over
    runs), ``expected`` the exact expectation of the same average, ``stationary`` the exact
    :math:`\operatorname{tr} S_e` at stationarity, ``[low, high]`` the interval around
    ``expected`` that ``measured`` had to fall into (``interval``: ``"gamma"`` or
    ``"student"``), ``run_means`` each run's window average."""

    kind: str
    hyperparameters: dict
    measured: float
    stderr: float
    expected: float
    stationary: float
    low: float
    high: float
    confidence: float
    runs: int
    steps: int
    burn_in: int
    run_means: Tensor
    interval: str = "student"

    @property
    def ratio(self) -> float:
        """``measured / expected``."""
        return self.measured / self.expected if self.expected > 0 else math.nan


def assert_noise_ball(make_optimizer: Callable[..., torch.optim.Optimizer], problem, *,
                      runs: int = 100, steps: int = 400, burn_in: int | None = None,
                      confidence: float = 0.99, kind: str | None = None,
                      hyperparameters: dict | None = None) -> NoiseBallResult:
    r"""Assert that a constant-step stochastic optimizer settles in the exact noise ball.

    ``runs`` independent runs start at ``problem.x_star`` and advance together as one
    ``(runs, dim)`` parameter whose loss is the sum of the runs' stochastic losses (one
    optimizer instance steps them all: valid for optimizers that act coordinate by
    coordinate), each drawing its own noise or minibatch from the problem's generator at every
    closure call. Each run's average :math:`m_r = \frac{1}{T - B} \sum_{B < t \le T}
    \|x_t - x^\star\|^2` is one independent sample of a quantity whose expectation
    :math:`\mu` is known exactly (:func:`expected_second_moments`; close to the stationary
    :math:`\operatorname{tr} S_e` once ``burn_in`` exceeds the mixing time). Time samples
    within a run are correlated, runs are not. Where the gradient noise is Gaussian
    (``problem.gaussian_noise``, e.g. :func:`~theory_checks.strategies.noisy_quadratic_problem`)
    the whole law of :math:`\bar m` is known: a positive quadratic form in a Gaussian vector,
    with the exact variance :math:`V/R` (:func:`run_average_variance`); the interval is the
    central ``confidence`` interval of the gamma law with that mean and variance
    (Satterthwaite's two-moment approximation, which keeps the right skew of a slowly mixing
    run). Otherwise (minibatch problems) it is Student's over run means:

    .. math::
        \Big|\bar m - \mu\Big| \le t_{R-1,\,(1+c)/2}\; \frac{s_m}{\sqrt{R}},

    with :math:`\bar m`, :math:`s_m` the mean and standard deviation of the :math:`m_r` and
    :math:`c` = ``confidence``. Measured false-failure rate at the defaults on correct
    ``torch.optim.SGD(lr=0.05)`` and ``noisy_quadratic_problem(4, 10.0, 1.0, seed)``: 14 of
    1000 over seeds 0..999 and 8 of 1000 over seeds 1000..1999 (22 of 2000 = 1.1 %, nominal
    1 %, binomial standard deviation 0.22 %; Student's interval on the first 1000: 14); with
    momentum 0.9, 9 of 500 over seeds 0..499 (1.8 %, binomial standard deviation 0.45 %;
    4000-run checks of the worst seeds found no bias). Rerun with
    :func:`noise_ball_false_failures` or ``python -m stochstep.theory_checks.stochastic``
    (200 seeds). Inside a hypothesis test of ``n`` examples a
    correct optimizer fails some example with probability up to ``n (1 - c)``: pass
    ``confidence = 1 - alpha / n`` there.

    Which closed form: ``kind`` (one of :data:`KINDS`; inferred for ``torch.optim.SGD``,
    :class:`~stochstep.optimizers.SGLD` and :class:`~stochstep.optimizers.SGHMC`), with its
    hyperparameters read from the optimizer's single param group (``lr``, ``momentum``,
    ``dampening``, ``nesterov``, ``temperature``, ...), ``hyperparameters`` overriding them
    (e.g. for an optimizer of your own that claims to be SGD). Weight decay, ``maximize``
    and SGHMC momentum resampling are not covered: a ValueError says so.

    Args:
        make_optimizer: ``params -> optimizer``; ``params`` is a list holding one float64
            ``(runs, dim)`` Parameter.
        problem: a stochastic problem with ``x_star``, ``H``, ``noise_covariance_given`` and
            ``closure`` (:class:`~theory_checks.strategies.NoisyQuadraticProblem`,
            :class:`~theory_checks.strategies.MinibatchLeastSquaresProblem`).
        runs: number of independent runs ``R >= 2``.
        steps: number of steps ``T``.
        burn_in: steps not measured, ``B < T`` (default ``T // 2``).
        confidence: ``c`` in ``(0, 1)``: the probability that a correct optimizer passes.
        kind: the closed form, or None to infer it from the optimizer's class.
        hyperparameters: values that replace those read from the optimizer.

    Returns:
        :class:`NoiseBallResult`.

    Raises:
        AssertionError: the measured moment is outside the interval, or a run blew up.
        ValueError: bad arguments; a problem without the exact quantities; an unstable step;
            a scheduler attached, or the step size changed during the run.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import noisy_quadratic_problem
        >>> p = noisy_quadratic_problem(dim=2, condition=4.0, noise=1.0, seed=0)
        >>> res = assert_noise_ball(lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.5), p,
        ...                         runs=40, steps=200)
        >>> res.kind, res.low <= res.measured <= res.high
        ('heavy_ball', True)
    """
    runs, steps, burn_in, confidence = _check_run(problem, runs, steps, burn_in, confidence,
                                                  kind)
    x_star = problem.x_star.to(DTYPE)
    x = torch.nn.Parameter(x_star.expand(runs, x_star.numel()).clone())
    optimizer = _make(make_optimizer, [x])
    kind = _infer_kind(optimizer) if kind is None else kind
    hyper = _hyperparameters(optimizer, kind, hyperparameters)
    chain = linear_chain(kind, hyper, problem.H)
    noise = problem.noise_covariance_given
    stationary = float(torch.trace(chain.P @ stationary_covariance(chain, noise) @ chain.P.T))
    expected = float(expected_second_moments(chain, noise, steps)[burn_in + 1:].mean())

    squares = torch.empty(steps - burn_in, runs, dtype=DTYPE)

    def record(t: int) -> None:
        if t > burn_in:
            squares[t - burn_in - 1] = (x.detach() - x_star).pow(2).sum(1)

    _run_constant(optimizer, problem.closure(x, optimizer), steps, list(hyper), record,
                  "assert_noise_ball")
    run_means = squares.mean(0)
    measured = float(run_means.mean())
    additive = torch.equal(noise(torch.eye(x_star.numel(), dtype=DTYPE)),
                           noise(torch.zeros(x_star.numel(), x_star.numel(), dtype=DTYPE)))
    tails = ((1 - confidence) / 2, (1 + confidence) / 2)
    if getattr(problem, "gaussian_noise", False) and additive and expected > 0:
        interval = "gamma"
        variance = run_average_variance(chain, noise, steps, burn_in) / runs
        stderr = math.sqrt(variance)
        shape, scale = expected ** 2 / variance, variance / expected
        low, high = (float(q) for q in scipy.stats.gamma.ppf(tails, shape, scale=scale))
    else:
        interval = "student"
        stderr = (float(run_means.std()) / math.sqrt(runs) if math.isfinite(measured)
                  else math.inf)
        half = float(scipy.stats.t.ppf(tails[1], runs - 1)) * stderr
        half = max(half, 1e-12 * expected)  # all runs equal (no noise): rounding only
        low, high = expected - half, expected + half
    res = NoiseBallResult(kind, hyper, measured, stderr, expected, stationary, low, high,
                          confidence, runs, steps, burn_in, run_means, interval)
    if not math.isfinite(measured):
        raise AssertionError(f"a run blew up on {problem!r} (kind={kind!r}, {hyper}): "
                             f"non-finite ||x_t - x*||^2")
    if not res.low <= measured <= res.high:
        raise AssertionError(
            f"noise ball of kind={kind!r} ({_show(hyper)}) on {problem!r}: measured "
            f"E||x_t - x*||^2 = {measured:.6g} +- {stderr:.3g} (steps {burn_in + 1}..{steps}, "
            f"{runs} runs) is {res.ratio:.4g} x the exact {expected:.6g} (stationary "
            f"{stationary:.6g}), outside the {100 * confidence:g}% interval "
            f"[{res.low:.6g}, {res.high:.6g}] ({interval})")
    return res


def _show(hyper: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in hyper.items() if k not in _MUST_BE)


# -- the stationary law of Langevin-type samplers -----------------------------------------------
@dataclass
class StationaryLawResult:
    r"""Measured and exact numbers of :func:`assert_stationary_law`: window averages over
    ``burn_in < t <= steps`` and runs of :math:`e_t` (``mean``) and :math:`e_t e_t^\top`
    (``second_moment``), their exact expectations, the exact stationary covariance of
    :math:`e` (``stationary_covariance``; the stationary mean is 0), the largest
    ``|measured - exact| / stderr`` over the statistics (``worst_z``, at ``worst``), and the
    Bonferroni threshold it had to stay under."""

    kind: str
    hyperparameters: dict
    mean: Tensor
    expected_mean: Tensor
    second_moment: Tensor
    expected_second_moment: Tensor
    stationary_covariance: Tensor
    worst: str
    worst_z: float
    threshold: float
    confidence: float
    runs: int
    steps: int
    burn_in: int

    @property
    def covariance(self) -> Tensor:
        """Measured second moment minus the outer product of the measured mean."""
        return self.second_moment - torch.outer(self.mean, self.mean)


def assert_stationary_law(make_sampler: Callable[..., torch.optim.Optimizer], problem, *,
                          runs: int = 200, steps: int = 400, burn_in: int | None = None,
                          confidence: float = 0.99, kind: str | None = None,
                          hyperparameters: dict | None = None) -> StationaryLawResult:
    r"""Assert the mean and covariance of a Langevin-type sampler's chain on a Gaussian target.

    On a quadratic potential :math:`U = f` (``problem``; a noisy quadratic adds its gradient
    noise) the SGLD and SGHMC chains of :class:`~stochstep.optimizers.SGLD` and
    :class:`~stochstep.optimizers.SGHMC` are linear (module docstring), so their law at every
    step is Gaussian with exactly known mean and covariance; at stationarity the mean is
    :math:`x^\star` and the covariance of :math:`e` solves the discrete Lyapunov equation
    (for SGLD without gradient noise :math:`T H^{-1} (I - h H / 2)^{-1}`, not the target's
    :math:`T H^{-1}`: the discretization bias is part of the exact answer). ``runs`` chains
    start at ``problem.x0`` and advance together (as in :func:`assert_noise_ball`); each
    run's window averages of the ``d`` coordinates of :math:`e_t` and the
    :math:`d(d+1)/2` entries of :math:`e_t e_t^\top` are independent over runs, and each of
    those :math:`k` statistics must satisfy

    .. math::
        |\bar s - E s| \le t_{R-1,\,1 - (1-c)/(2k)}\; s_s / \sqrt{R}

    (Student intervals over run means, Bonferroni over the :math:`k` statistics, so a correct
    sampler passes with probability at least :math:`c`). Measured at the defaults over the
    seeds 0..199 of ``noisy_quadratic_problem(3, 10.0, 0.3)``: 1 failure of 200 for
    ``SGLD(lr=0.05, temperature=0.5)`` and 1 of 200 for ``SGHMC(lr=0.1, friction=2.0,
    temperature=0.5)`` (``python -m stochstep.theory_checks.stochastic``).

    Args:
        make_sampler: ``params -> optimizer`` (SGLD, SGHMC, or one of your own with ``kind``).
        problem: a quadratic with additive gradient noise
            (:class:`~theory_checks.strategies.NoisyQuadraticProblem`; ``noise=0`` for exact
            gradients).
        runs: number of independent chains ``R >= 2``.
        steps: number of steps ``T``.
        burn_in: steps not measured, ``B < T`` (default ``T // 2``).
        confidence: ``c`` in ``(0, 1)``.
        kind: the closed form (:data:`KINDS`), or None to infer it from the class.
        hyperparameters: values that replace those read from the optimizer.

    Returns:
        :class:`StationaryLawResult`.

    Raises:
        AssertionError: a statistic outside its interval, or a run blew up.
        ValueError: as :func:`assert_noise_ball`; also for gradient noise that depends on x.

    Example:
        >>> import torch
        >>> from stochstep.optimizers import SGLD
        >>> from stochstep.theory_checks.strategies import noisy_quadratic_problem
        >>> p = noisy_quadratic_problem(dim=2, condition=4.0, noise=0.0, seed=0)
        >>> g = torch.Generator().manual_seed(0)
        >>> res = assert_stationary_law(lambda ps: SGLD(ps, lr=0.05, temperature=0.5,
        ...                                             generator=g), p, runs=50, steps=200)
        >>> res.worst_z <= res.threshold
        True
    """
    runs, steps, burn_in, confidence = _check_run(problem, runs, steps, burn_in, confidence,
                                                  kind)
    noise = problem.noise_covariance_given
    d = problem.x_star.numel()
    sigma = noise(torch.zeros(d, d, dtype=DTYPE))
    if not torch.equal(noise(torch.eye(d, dtype=DTYPE)), sigma):
        raise ValueError(f"{problem!r}: assert_stationary_law needs additive gradient noise "
                         "(a NoisyQuadraticProblem); this problem's noise depends on x")
    x_star = problem.x_star.to(DTYPE)
    x = torch.nn.Parameter(problem.x0.to(DTYPE).expand(runs, d).clone())
    optimizer = _make(make_sampler, [x])
    kind = _infer_kind(optimizer) if kind is None else kind
    hyper = _hyperparameters(optimizer, kind, hyperparameters)
    chain = linear_chain(kind, hyper, problem.H)
    stationary = chain.P @ stationary_covariance(chain, noise) @ chain.P.T
    means, seconds = expected_moments(chain, sigma, problem.x0.to(DTYPE) - x_star, steps)
    rows, cols = torch.triu_indices(d, d)
    expected = torch.cat([means[burn_in + 1:].mean(0),
                          seconds[burn_in + 1:, rows, cols].mean(0)])
    sums = torch.zeros(runs, expected.numel(), dtype=DTYPE)

    def record(t: int) -> None:
        if t > burn_in:
            e = x.detach() - x_star
            sums.add_(torch.cat([e, e[:, rows] * e[:, cols]], 1))

    _run_constant(optimizer, problem.closure(x, optimizer), steps, list(hyper), record,
                  "assert_stationary_law")
    per_run = sums / (steps - burn_in)
    measured = per_run.mean(0)
    if not torch.isfinite(measured).all():
        raise AssertionError(f"a chain blew up on {problem!r} (kind={kind!r}, "
                             f"{_show(hyper)})")
    k = expected.numel()
    stderr = (per_run.std(0) / math.sqrt(runs)).clamp(min=1e-12 * float(expected.abs().max()))
    z = (measured - expected).abs() / stderr
    threshold = float(scipy.stats.t.ppf(1 - (1 - confidence) / (2 * k), runs - 1))
    names = [f"mean[{i}]" for i in range(d)] + \
        [f"second_moment[{i}, {j}]" for i, j in zip(rows.tolist(), cols.tolist())]
    worst = int(z.argmax())
    second = torch.zeros(d, d, dtype=DTYPE)
    second[rows, cols] = measured[d:]
    second[cols, rows] = measured[d:]
    exp_second = seconds[burn_in + 1:].mean(0)
    res = StationaryLawResult(kind, hyper, measured[:d], expected[:d], second, exp_second,
                              stationary, names[worst], float(z[worst]), threshold,
                              confidence, runs, steps, burn_in)
    if res.worst_z > threshold:
        raise AssertionError(
            f"law of kind={kind!r} ({_show(hyper)}) on {problem!r}: {names[worst]} of "
            f"x_t - x* averaged over steps {burn_in + 1}..{steps} and {runs} runs is "
            f"{float(measured[worst]):.6g} +- {float(stderr[worst]):.3g}, exact "
            f"{float(expected[worst]):.6g} ({res.worst_z:.3g} standard errors off; the "
            f"{100 * confidence:g}% Bonferroni limit over {k} statistics is {threshold:.3g}); "
            f"stationary covariance diagonal {stationary.diagonal().tolist()}")
    return res


# -- rates in expectation -----------------------------------------------------------------------
RATES = {"1/T": 1.0, "1/sqrt(T)": 0.5}


@dataclass
class RateInExpectationResult:
    r"""Measured numbers of :func:`assert_rate_in_expectation`: per horizon :math:`T_k`, the
    mean gap :math:`\bar g_k` over runs, its standard error, the bound :math:`C T_k^{-p}`,
    and :math:`\bar g_k T_k^p` (``constants``); ``slope``: the fitted log-log slope of
    :math:`\bar g_k` against :math:`T_k` (for information)."""

    rate: str
    constant: float
    horizons: list[int]
    gaps: Tensor
    stderrs: Tensor
    bounds: Tensor
    constants: Tensor
    slope: float
    threshold: float
    runs: int


def sgd_inverse_time_constant(problem, beta: float, gamma: float) -> float:
    r"""The constant :math:`\nu` of SGD's :math:`O(1/T)` rate in expectation with steps
    :math:`\alpha_t = \beta / (\gamma + t)` (Bottou, Curtis and Nocedal, Theorem 4.7), for a
    ``c``-strongly convex, ``L``-smooth problem whose stochastic gradient is unbiased with
    noise of total variance :math:`M = \operatorname{tr}\Sigma` (additive noise):

    .. math::
        E f(x_T) - f^\star \le \frac{\nu}{\gamma + T + 1} \le \frac{\nu}{T}, \qquad
        \nu = \max\Big(\frac{\beta^2 L M}{2 (\beta c - 1)},\;
                         (\gamma + 1)\,(f(x_0) - f^\star)\Big),

    after ``T`` steps from ``x0``, valid for :math:`\beta > 1/c` and
    :math:`\beta / (\gamma + 1) \le 1 / L`. As a scheduler: ``torch.optim.SGD(params,
    lr=beta)`` with ``LambdaLR(opt, lambda t: 1 / (gamma + t + 1))``.

    Args:
        problem: a quadratic with additive gradient noise (``mu``, ``L``, ``noise_cov``,
            ``gap``, ``x0``).
        beta: :math:`\beta > 1 / \mu`.
        gamma: :math:`\gamma > 0` with :math:`\beta / (\gamma + 1) \le 1 / L`.

    References:
        Bottou, Curtis, Nocedal. "Optimization Methods for Large-Scale Machine Learning."
        SIAM Review 2018, arXiv 1606.04838 (Theorem 4.7).

    Example:
        >>> from stochstep.theory_checks.strategies import noisy_quadratic_problem
        >>> p = noisy_quadratic_problem(dim=2, condition=1.0, noise=0.5, seed=0)
        >>> round(sgd_inverse_time_constant(p, beta=2.0, gamma=1.0), 6)  # 4 * 1 * 1 / 2
        2.0
    """
    _require(problem, "noise_cov", "mu", "L")
    beta, gamma = check_positive("beta", beta), check_positive("gamma", gamma)
    c, L = problem.mu, problem.L
    if not beta * c > 1:
        raise ValueError(f"beta must be > 1/mu = {1 / c:.6g}, got {beta!r}")
    if beta / (gamma + 1) > 1 / L * (1 + 1e-12):
        raise ValueError(f"the first step beta / (gamma + 1) = {beta / (gamma + 1):.6g} must be "
                         f"<= 1/L = {1 / L:.6g}: raise gamma")
    M = float(torch.trace(problem.noise_cov))
    return max(beta * beta * L * M / (2 * (beta * c - 1)), (gamma + 1) * problem.gap(problem.x0))


def _row_gaps(problem, X: Tensor) -> Tensor:
    if isinstance(getattr(problem, "A", None), Tensor) and problem.x_star is not None:
        E = X - problem.x_star  # quadratic: 1/2 e^T A e, no cancellation against f_star
        return 0.5 * ((E @ problem.A) * E).sum(1)
    return torch.tensor([problem.gap(row) for row in X], dtype=DTYPE)


def assert_rate_in_expectation(make_optimizer: Callable, problem, *, rate: str = "1/T",
                               constant: float, horizons=(100, 200, 400, 800),
                               runs: int = 100, confidence: float = 0.99
                               ) -> RateInExpectationResult:
    r"""Assert :math:`E f(x_T) - f^\star \le C / T^p` at several horizons, over runs.

    ``runs`` independent runs start at ``problem.x0`` and advance together (as in
    :func:`assert_noise_ball`), with the step size from a scheduler (``make_optimizer``
    returns ``(optimizer, scheduler)``; ``scheduler.step()`` follows every
    ``optimizer.step``) or from the optimizer itself. At each horizon :math:`T_k` the gaps
    :math:`f(x_{T_k}) - f^\star` of the runs are independent samples of a quantity whose
    expectation the claim bounds, so the check is one-sided, Bonferroni over the :math:`K`
    horizons: it fails when

    .. math::
        \bar g_k - t_{R-1,\,1 - (1-c)/K}\, \frac{s_k}{\sqrt R} > \frac{C}{T_k^{p}}

    for some :math:`k`, with :math:`p = 1` for ``"1/T"`` and :math:`1/2` for
    ``"1/sqrt(T)"``: an optimizer that meets the bound fails with probability at most
    :math:`1 - c`. :func:`sgd_inverse_time_constant` gives a proven ``constant`` for SGD with
    :math:`\beta / (\gamma + t)` steps.

    Args:
        make_optimizer: ``params -> optimizer`` or ``params -> (optimizer, scheduler)``.
        problem: a stochastic problem (``x0``, ``closure``, ``gap``).
        rate: ``"1/T"`` or ``"1/sqrt(T)"``.
        constant: the claimed ``C > 0``.
        horizons: increasing step counts ``T_k >= 1`` at which the gap is measured.
        runs: ``R >= 2``.
        confidence: ``c`` in ``(0, 1)``.

    Returns:
        :class:`RateInExpectationResult`.

    Raises:
        AssertionError: the gap is confidently above the bound at some horizon, or blew up.

    Example:
        >>> import torch
        >>> from stochstep.theory_checks.strategies import noisy_quadratic_problem
        >>> p = noisy_quadratic_problem(dim=2, condition=2.0, noise=0.5, seed=0)
        >>> def sgd(params):  # lr_t = beta / (gamma + t), beta = 2, gamma = 3
        ...     opt = torch.optim.SGD(params, lr=2.0)
        ...     return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (4 + t))
        >>> C = sgd_inverse_time_constant(p, beta=2.0, gamma=3.0)
        >>> res = assert_rate_in_expectation(sgd, p, rate="1/T", constant=C,
        ...                                  horizons=(50, 100), runs=20)
        >>> bool((res.gaps <= res.bounds).all())
        True
    """
    if rate not in RATES:
        raise ValueError(f"rate must be one of {sorted(RATES)}, got {rate!r}")
    p = RATES[rate]
    constant = check_positive("constant", constant)
    runs = check_int("runs", runs, low=2)
    confidence = check_unit_interval("confidence", confidence, include_zero=False)
    if confidence == 1:
        raise ValueError("confidence must be a number in (0, 1), got 1")
    horizons = [check_int("horizons", h) for h in horizons]
    if not horizons or any(a >= b for a, b in zip(horizons, horizons[1:])):
        raise ValueError(f"horizons must be a non-empty increasing sequence, got {horizons}")
    if not callable(getattr(problem, "closure", None)):
        _require(problem, "closure")
    d = problem.x0.numel()
    x = torch.nn.Parameter(problem.x0.to(DTYPE).expand(runs, d).clone())
    made = make_optimizer([x])
    optimizer, scheduler = made if isinstance(made, tuple) else (made, None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError("make_optimizer must return an optimizer or (optimizer, scheduler), "
                         f"got {type(made).__name__}")
    closure = problem.closure(x, optimizer)
    gaps = []
    for t in range(1, horizons[-1] + 1):
        optimizer.step(closure)
        if scheduler is not None:
            scheduler.step()
        if t in horizons:
            gaps.append(_row_gaps(problem, x.detach()))
    G = torch.stack(gaps)  # (K, runs)
    if not torch.isfinite(G).all():
        raise AssertionError(f"a run blew up on {problem!r}: non-finite gap")
    T = torch.tensor(horizons, dtype=DTYPE)
    mean, stderr = G.mean(1), G.std(1) / math.sqrt(runs)
    bounds = constant / T ** p
    threshold = float(scipy.stats.t.ppf(1 - (1 - confidence) / len(horizons), runs - 1))
    slope = math.nan
    if len(horizons) > 1 and bool((mean > 0).all()):
        from stochstep.theory_checks.rates import loglog_slope

        slope = loglog_slope(T, mean).slope
    res = RateInExpectationResult(rate, constant, horizons, mean, stderr, bounds,
                                  mean * T ** p, slope, threshold, runs)
    excess = mean - threshold * stderr - bounds
    if bool((excess > 0).any()):
        k = int(excess.argmax())
        raise AssertionError(
            f"E f(x_T) - f* is above {constant:.6g} x {rate} on {problem!r}: at T = "
            f"{horizons[k]} the mean gap over {runs} runs is {float(mean[k]):.6g} +- "
            f"{float(stderr[k]):.3g}, bound {float(bounds[k]):.6g} ({threshold:.3g} standard "
            f"errors allowed, {100 * confidence:g}% over {len(horizons)} horizons); gap x "
            f"T^{p:g} by horizon {[round(float(v), 4) for v in res.constants]}; log-log "
            f"slope {slope:.3g}")
    return res


def noise_ball_false_failures(seeds: int = 200, *, dim: int = 4, condition: float = 10.0,
                              noise: float = 1.0, lr: float = 0.05, momentum: float = 0.0,
                              **kwargs) -> tuple[int, int]:
    """Run :func:`assert_noise_ball` on correct ``torch.optim.SGD`` over ``seeds`` seeds of
    :func:`~theory_checks.strategies.noisy_quadratic_problem` and count the failures, a
    measurement of the property's false-failure rate (expected: ``1 - confidence``).

    Args:
        seeds: number of seeds ``0..seeds-1``.
        dim, condition, noise: the problem's knobs.
        lr, momentum: ``torch.optim.SGD``'s.
        **kwargs: passed to :func:`assert_noise_ball` (``runs``, ``steps``, ``confidence``).

    Returns:
        ``(failures, seeds)``.

    Example:
        >>> noise_ball_false_failures(2, runs=10, steps=50)
        (0, 2)
    """
    from stochstep.theory_checks.strategies import noisy_quadratic_problem

    seeds = check_int("seeds", seeds)
    failures = 0
    for seed in range(seeds):
        p = noisy_quadratic_problem(dim, condition, noise, seed=seed)
        try:
            assert_noise_ball(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum), p,
                              **kwargs)
        except AssertionError:
            failures += 1
    return failures, seeds


if __name__ == "__main__":  # python -m stochstep.theory_checks.stochastic
    import time

    torch.set_num_threads(1)
    for mom in (0.0, 0.9):
        start = time.perf_counter()
        bad, n = noise_ball_false_failures(200, momentum=mom)
        se = math.sqrt(0.01 * 0.99 / n)
        print(f"assert_noise_ball on correct torch.optim.SGD(lr=0.05, momentum={mom}), "
              f"noisy_quadratic_problem(4, 10.0, 1.0, seed=0..{n - 1}), defaults (confidence "
              f"0.99, 100 runs, 400 steps): {bad}/{n} failed = {bad / n:.3f} (nominal 0.010, "
              f"binomial sd {se:.3f}); {time.perf_counter() - start:.1f} s")
    from stochstep.optimizers import SGHMC, SGLD
    from stochstep.theory_checks.strategies import noisy_quadratic_problem

    samplers = {"SGLD(lr=0.05, temperature=0.5)": lambda g: lambda ps: SGLD(
                    ps, lr=0.05, temperature=0.5, generator=g),
                "SGHMC(lr=0.1, friction=2.0, temperature=0.5)": lambda g: lambda ps: SGHMC(
                    ps, lr=0.1, friction=2.0, temperature=0.5, generator=g)}
    for name, make in samplers.items():
        start, bad = time.perf_counter(), 0
        for seed in range(200):
            try:
                assert_stationary_law(make(torch.Generator().manual_seed(seed)),
                                      noisy_quadratic_problem(3, 10.0, 0.3, seed=seed))
            except AssertionError:
                bad += 1
        print(f"assert_stationary_law on {name}, noisy_quadratic_problem(3, 10.0, 0.3, "
              f"seed=0..199), defaults: {bad}/200 failed (nominal at most 0.010); "
              f"{time.perf_counter() - start:.1f} s")
