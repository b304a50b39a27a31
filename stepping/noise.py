"""Noise sources. Everything random takes an explicit `torch.Generator`; the global RNG is read
only to seed the generator that replaces ``generator=None`` (`make_generator`, one draw)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from stochstep.stepping.checks import check_int, check_positive

__all__ = ["NoNoise", "require_noise", "Brownian", "FBMState", "FractionalBrownian",
           "box_muller_normal", "fbm_covariance", "fbm_path", "ma_fbm_weights", "make_generator",
           "same_device", "set_generator_state", "standard_normal_like"]


def make_generator(generator: torch.Generator | None = None, *,
                   name: str = "generator") -> torch.Generator:
    """Return ``generator``, or when it is None a new CPU generator seeded from torch's global
    RNG by one draw, ``torch.randint(2**63 - 1, (), device="cpu")`` (the CPU stream whatever the
    default device): ``torch.manual_seed`` at the top of a script then makes the whole run
    reproducible, and nothing here draws from the global RNG afterwards. Every
    ``generator=None`` in the package comes here."""
    if generator is None:
        return torch.Generator().manual_seed(int(torch.randint(2**63 - 1, (), device="cpu")))
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, "
                         f"got {type(generator).__name__}")
    return generator


def standard_normal_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws shaped like ``x`` (its real view if complex), from ``generator``.

    Drawn on the generator's device, then moved to ``x``'s: the same generator state gives the
    same numbers wherever ``x`` lives. Every Gaussian draw in the package goes through here.
    """
    real = torch.view_as_real(x) if x.is_complex() else x
    z = torch.randn(real.shape, generator=generator, dtype=real.dtype, device=generator.device)
    return z.to(real.device)


def box_muller_normal(shape, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                      device=None, *, block: int = 1 << 16, out: Tensor | None = None) -> Tensor:
    r"""Standard normal draws by the Box--Muller transform of ``generator``'s uniforms.

    .. math::

        z_1 = \sqrt{-2 \log(1 - u_1)} \cos(2\pi u_2), \qquad
        z_2 = \sqrt{-2 \log(1 - u_1)} \sin(2\pi u_2), \qquad u_1, u_2 \sim U[0, 1),

    exact in distribution (independent N(0, 1) pairs). Why it exists: on the CPU torch draws
    float64 normals with a scalar loop (it vectorizes its own Box--Muller for float32 only);
    this vectorized form costs about 0.6x of ``torch.randn`` in float64 (RESULTS.md, cbo).
    It works in blocks of at most ``block`` pairs, so that every pass stays in cache: a block
    of ``h`` pairs takes the numbers of ``torch.rand(2, h)`` (``u_1`` then ``u_2``) and
    leaves its ``h`` values of ``z_1`` followed by its ``h`` values of ``z_2``, in place.
    ``out`` (contiguous, ``shape`` and ``dtype``, on the generator's device) receives the
    draw; for an even count it is computed there without any other particle-sized
    allocation (an odd count needs one spare slot, so it goes through a temporary). Not the
    same numbers as ``torch.randn`` from the same generator state.

    Example:
        >>> z = box_muller_normal((4, 3), torch.Generator().manual_seed(0))
        >>> z.shape, z.dtype
        (torch.Size([4, 3]), torch.float64)
    """
    shape = torch.Size(shape)
    n = shape.numel()
    check_int("block", block)
    if out is not None:
        _check_out(out, shape, dtype, generator.device)
    z = out.view(-1) if out is not None and n % 2 == 0 else \
        torch.empty(n + (n & 1), dtype=dtype, device=generator.device)
    pairs = z.numel() // 2
    for lo in range(0, pairs, block):
        h = min(block, pairs - lo)
        u = z[2 * lo:2 * (lo + h)]
        torch.rand(2 * h, generator=generator, dtype=dtype, device=generator.device, out=u)
        r, theta = u[:h], u[h:]
        r.neg_().log1p_().mul_(-2.0).sqrt_()
        cos = theta.mul_(2 * math.pi).cos()
        theta.sin_().mul_(r)
        r.mul_(cos)
    if out is None:
        out = z[:n].reshape(shape)
    elif z.data_ptr() != out.data_ptr():
        out.view(-1).copy_(z[:n])
    return out.to(device if device is not None else generator.device)


def _check_out(out: Tensor, shape: torch.Size, dtype: torch.dtype, device) -> None:
    """Raise ValueError unless ``out`` is a contiguous ``dtype`` tensor of ``shape`` on
    ``device``: what a draw written in place needs."""
    if out.shape != shape or out.dtype != dtype or not out.is_contiguous() or \
            not same_device(out.device, torch.device(device)):
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {tuple(shape)} on "
                         f"{device}, got {out.dtype} {tuple(out.shape)} on {out.device}")


def same_device(a: torch.device, b: torch.device) -> bool:
    """``a`` and ``b`` name the same device; a device without an index (a generator made with
    ``device="cuda"``) matches any index of its type."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def set_generator_state(generator: torch.Generator, state, *,
                        name: str = "generator_state") -> torch.Generator:
    """``generator.set_state(state)`` for a saved state wherever it comes from: a state dict
    moved to a GPU (``torch.load(map_location=...)``, accelerate) or made non-contiguous holds
    the same bytes, but ``set_state`` takes only a contiguous CPU uint8 tensor.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> state = torch.stack([g.get_state()] * 2, 1)[:, 0]   # a non-contiguous copy
        >>> a = torch.rand(2, generator=g)
        >>> b = torch.rand(2, generator=set_generator_state(g, state))
        >>> torch.equal(a, b)
        True
    """
    if not isinstance(state, Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        raise ValueError(f"{name} must be a 1-D torch.uint8 tensor (Generator.get_state()), got "
                         f"{state.dtype if isinstance(state, Tensor) else type(state).__name__}")
    generator.set_state(state.to("cpu").contiguous())
    return generator


def require_noise(noise, who: str):
    """Return ``noise``, or raise ValueError if it is not a noise source (a stochastic stepper
    was run by :func:`stepping.integrate` without ``noise=``)."""
    if not hasattr(noise, "standard_normal"):
        raise ValueError(f"{who} needs a noise source: pass noise=Brownian(generator) to integrate")
    return noise


class Brownian:
    """Brownian motion increments on an explicit generator.

    Args:
        generator: the source of randomness (if None, one seeded from torch's global RNG).
        method: ``"randn"`` (``torch.randn``) or ``"box_muller"`` (:func:`box_muller_normal`,
            faster in float64 on the CPU; other numbers from the same seed).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> dw = Brownian(g).increment(torch.zeros(3), 0.0, 0.25)
        >>> dw.shape
        torch.Size([3])
    """

    def __init__(self, generator: torch.Generator | None = None, *, method: str = "randn"):
        self.generator = make_generator(generator)
        if method not in ("randn", "box_muller"):
            raise ValueError(f"method must be 'randn' or 'box_muller', got {method!r}")
        self.method = method

    def standard_normal(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """xi ~ N(0, I) shaped like ``x`` (``torch.randn``, or :func:`box_muller_normal`);
        written into ``out`` (real, contiguous, ``x``'s shape and dtype, on the generator's
        device) when given, which saves allocating a fresh tensor each step."""
        if out is not None:
            if x.is_complex():
                raise ValueError("out must be None for complex x (drawn through its real view)")
            _check_out(out, x.shape, x.dtype, self.generator.device)
        if self.method == "box_muller" and not x.is_complex():
            return box_muller_normal(x.shape, self.generator, x.dtype, x.device, out=out)
        if out is not None:
            return torch.randn(x.shape, generator=self.generator, dtype=x.dtype,
                               device=out.device, out=out).to(x.device)
        return standard_normal_like(x, self.generator)

    def increment(self, x: Tensor, t0: float, t1: float) -> Tensor:
        """W(t1) - W(t0) ~ ``N(0, |t1 - t0| I)`` shaped like ``x``."""
        return self.standard_normal(x).mul_(math.sqrt(abs(t1 - t0)))


# --------------------------------------------------------------------------------------------
# Fractional Brownian motion: exact covariances and paths (for tests), and the Markov
# approximation by Ornstein-Uhlenbeck processes (the noise source).
# --------------------------------------------------------------------------------------------

_FBM_KINDS = ("I", "II")


def _check_hurst(hurst) -> float:
    if isinstance(hurst, bool) or not isinstance(hurst, (int, float)) \
            or not 0.0 < float(hurst) < 1.0:
        raise ValueError(f"hurst must be a number in the open interval (0, 1), got {hurst!r}")
    return float(hurst)



def _check_times(times) -> Tensor:
    t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError("times must be finite and >= 0")
    return t


def fbm_covariance(hurst: float, times, *, kind: str = "I") -> Tensor:
    r"""Exact covariance matrix of fractional Brownian motion at ``times`` (float64, CPU).

    Type I (Mandelbrot--van Ness, stationary increments, :math:`\mathrm{Var}\,B_H(t) = t^{2H}`)
    and type II (Riemann--Liouville, the process that :class:`FractionalBrownian` approximates):

    .. math::

        C_I(s, t) = \tfrac12\big(s^{2H} + t^{2H} - |t - s|^{2H}\big), \qquad
        C_{II}(s, t) = \frac{1}{\Gamma(H + \frac12)^2}\int_0^{s \wedge t}
            (t - u)^{H - \frac12} (s - u)^{H - \frac12}\, du .

    For :math:`s < t` the type-II integral is evaluated in closed form,
    :math:`d^{H-\frac12} s^{H+\frac12} {}_2F_1(\tfrac12 - H, H + \tfrac12; H + \tfrac32; -s/d)
    / (H + \tfrac12)` with :math:`d = t - s` (Euler's integral), and on the diagonal it is
    :math:`t^{2H} / (2H)`. The two types agree at :math:`H = 1/2` (both :math:`s \wedge t`) and
    differ otherwise, also in scale: :math:`\mathrm{Var}\,B^{II}_H(t) = t^{2H} / (2H\,
    \Gamma(H + \frac12)^2)`.

    Args:
        hurst: Hurst index H in (0, 1).
        times: 1-D sequence of times >= 0 (t = 0 gives a zero row and column).
        kind: ``"I"`` (Mandelbrot--van Ness) or ``"II"`` (Riemann--Liouville).

    References:
        B. B. Mandelbrot, J. W. Van Ness, "Fractional Brownian motions, fractional noises and
        applications", SIAM Review 1968. S. C. Lim, "Fractional Brownian motion and
        multifractional Brownian motion of Riemann-Liouville type", J. Phys. A 2001.

    Example:
        >>> c = fbm_covariance(0.5, [0.5, 1.0], kind="II")  # H = 1/2: Brownian, min(s, t)
        >>> torch.allclose(c, torch.tensor([[0.5, 0.5], [0.5, 1.0]], dtype=torch.float64))
        True
    """
    h = _check_hurst(hurst)
    t = _check_times(times)
    if kind not in _FBM_KINDS:
        raise ValueError(f"kind must be one of {_FBM_KINDS}, got {kind!r}")
    s_, t_ = t[:, None], t[None, :]
    if kind == "I":
        return 0.5 * (s_.pow(2 * h) + t_.pow(2 * h) - (t_ - s_).abs().pow(2 * h))
    from scipy.special import hyp2f1

    a = h + 0.5
    lo = torch.minimum(s_, t_).expand(len(t), len(t)).numpy()
    d = (t_ - s_).abs().expand(len(t), len(t)).numpy()
    out = lo ** (2 * h) / (2 * h)  # the diagonal (d = 0)
    off = (d > 0) & (lo > 0)
    lo_o, d_o = lo[off], d[off]
    out[off] = d_o ** (a - 1) * lo_o ** a / a * hyp2f1(1 - a, a, a + 1, -lo_o / d_o)
    return torch.from_numpy(out) / math.gamma(a) ** 2


def _psd_sqrt(cov: Tensor) -> Tensor:
    """A factor L with L L^T = cov: Cholesky, or a clipped eigen-factor if cov is singular."""
    factor, info = torch.linalg.cholesky_ex(cov)
    if int(info) == 0:
        return factor
    vals, vecs = torch.linalg.eigh(cov)
    return vecs * vals.clamp_min(0).sqrt()


def fbm_path(hurst: float, times, n_paths: int, generator: torch.Generator | None = None, *,
             kind: str = "I") -> Tensor:
    r"""Exact samples of fractional Brownian motion at ``times``: shape ``(n_paths, len(times))``.

    Draws :math:`B = L \xi` with :math:`L L^\top = C` the exact covariance of
    :func:`fbm_covariance` (Cholesky in float64; an eigen-factor if :math:`C` is singular, e.g.
    at repeated times) and :math:`\xi` standard normal from ``generator``. Cost
    :math:`O(n^3 + n_\text{paths} n^2)`: meant for tests and small grids.

    Args:
        hurst: Hurst index H in (0, 1).
        times: 1-D sequence of times >= 0.
        n_paths: number of independent paths (>= 1).
        generator: the source of randomness (if None, one seeded from torch's global RNG).
        kind: ``"I"`` (Mandelbrot--van Ness) or ``"II"`` (Riemann--Liouville, what
            :class:`FractionalBrownian` approximates).

    Example:
        >>> b = fbm_path(0.3, [0.25, 0.5, 1.0], 4, torch.Generator().manual_seed(0))
        >>> b.shape, b.dtype
        (torch.Size([4, 3]), torch.float64)
    """
    check_int("n_paths", n_paths)
    cov = fbm_covariance(hurst, times, kind=kind)
    generator = make_generator(generator)
    z = standard_normal_like(torch.empty(n_paths, cov.shape[0], dtype=torch.float64), generator)
    return z.cpu() @ _psd_sqrt(cov).T


def ma_fbm_weights(hurst: float, gammas: Tensor, T: float = 1.0) -> tuple[Tensor, float, float]:
    r"""Optimal weights of the Markov approximation of type-II fBM on :math:`[0, T]`.

    Minimises :math:`\int_0^T \mathbb E\,(B_H(t) - \sum_k w_k Y_k(t))^2\,dt` over :math:`w`, with
    :math:`Y_k(t) = \int_0^t e^{-\gamma_k (t - s)}\,dW_s`; the minimiser solves :math:`A w = b`:

    .. math::

        A_{ij} = \frac{1}{\gamma_i + \gamma_j}\Big(T + \frac{e^{-(\gamma_i + \gamma_j) T} - 1}
            {\gamma_i + \gamma_j}\Big), \quad
        b_k = T \gamma_k^{-(H + \frac12)} P(H + \tfrac12, \gamma_k T)
            - (H + \tfrac12) \gamma_k^{-(H + \frac32)} P(H + \tfrac32, \gamma_k T),

    with :math:`P` the regularised lower incomplete gamma function. Solved in float64 by
    Cholesky. The relative error returned is the objective divided by
    :math:`c = \int_0^T \mathrm{Var}\,B_H = T^{2H+1} / (2H (2H+1) \Gamma(H+\frac12)^2)`, i.e.
    :math:`(c - 2 b^\top w + w^\top A w) / c`, which is :math:`1 - b^\top w / c` at the exact
    optimum and stays honest for a slightly inexact solve.

    Args:
        hurst: Hurst index H in (0, 1).
        gammas: the K mean-reversion speeds (1-D, > 0, distinct).
        T: horizon of the fit.

    Returns:
        ``(weights, relative_error, condition_number)``, weights in float64.

    References:
        R. Daems, M. Opper, G. Crevecoeur, T. Birdal, "Variational inference for SDEs driven by
        fractional noise", ICLR 2024, arXiv:2310.12975 (the closed-form optimal weights).

    Raises:
        ValueError: if ``cond(A)`` exceeds ``1e15`` (the solve would carry no correct digits;
            lower K or gamma_max). A ``RuntimeWarning`` is issued above ``1e12``.

    Example:
        >>> w, err, cond = ma_fbm_weights(0.7, torch.tensor([0.5, 2.0]))
        >>> w.shape, err < 0.05
        (torch.Size([2]), True)
    """
    h = _check_hurst(hurst)
    T = check_positive("T", T)
    g = torch.as_tensor(gammas, dtype=torch.float64)
    if g.ndim != 1 or g.numel() == 0 or not torch.isfinite(g).all() or (g <= 0).any():
        raise ValueError("gammas must be a non-empty 1-D sequence of finite numbers > 0")
    a = h + 0.5
    s = g[:, None] + g[None, :]
    A = (T + torch.expm1(-s * T) / s) / s
    b = (T * g.pow(-a) * torch.special.gammainc(torch.full_like(g, a), g * T)
         - a * g.pow(-a - 1) * torch.special.gammainc(torch.full_like(g, a + 1), g * T))
    c = T ** (2 * h + 1) / (2 * h * (2 * h + 1) * math.gamma(a) ** 2)
    cond = float(torch.linalg.cond(A))
    if not cond < 1e15:
        raise ValueError(f"the weight system is too ill-conditioned (cond(A) = {cond:.1e}) for a "
                         f"float64 solve with K = {g.numel()}: use fewer OU processes K (about 5) "
                         f"or a smaller gamma_max")
    if cond > 1e12:
        import warnings

        warnings.warn(f"the weight system is ill-conditioned (cond(A) = {cond:.1e}, K = "
                      f"{g.numel()}): the weights keep only ~{16 - math.log10(cond):.0f} digits; "
                      f"K around 5 or less is recommended", RuntimeWarning, stacklevel=3)
    w = torch.cholesky_solve(b[:, None], torch.linalg.cholesky(A))[:, 0]
    rel = float((c - 2 * b @ w + w @ A @ w) / c)
    return w, rel, cond


class FBMState(NamedTuple):
    """One path's state: its elapsed time, the OU states ``(K, *shape)``, the last step's dW."""

    t: float
    ou: Tensor
    dw: Tensor | None


class _Path:
    __slots__ = ("t_now", "elapsed", "ou", "dw")

    def __init__(self, ou: Tensor):
        self.t_now: float | None = None  # the time the path has reached (None: not started)
        self.elapsed = 0.0
        self.ou = ou
        self.dw: Tensor | None = None


class NoNoise:
    """A noise source that draws zeros.

    A stochastic stepper driven by it follows its drift alone; for an SDE with a linear drift
    that is exactly the stepper's recursion for the mean, so its deterministic order can be
    measured (the conformance suite does).
    """

    def standard_normal(self, x: Tensor) -> Tensor:
        return torch.zeros_like(torch.view_as_real(x) if x.is_complex() else x)

    def increment(self, x: Tensor, t0: float, t1: float) -> Tensor:
        return self.standard_normal(x)


class FractionalBrownian:
    r"""Markov-approximate type-II fractional Brownian motion: increments on an explicit generator.

    :math:`K` Ornstein--Uhlenbeck processes driven by one Brownian motion approximate the
    Riemann--Liouville fBM :math:`B_H(t) = \Gamma(H + \frac12)^{-1}\int_0^t (t - s)^{H - 1/2}
    dW_s` (Harms & Stefanovits; Daems et al.):

    .. math::

        dY_k = -\gamma_k Y_k\,dt + dW_t, \quad Y_k(0) = 0, \qquad
        \hat B_H(t) = \sum_{k=1}^K w_k Y_k(t), \qquad
        \gamma_k = r^{k - (K+1)/2},\ r = \gamma_{\max}^{2/(K-1)},

    with the optimal weights :math:`w = A^{-1} b` of :func:`ma_fbm_weights` (fitted on
    :math:`[0, T]`). A step of length :math:`h` is simulated *exactly*: with
    :math:`Z_k = \int_{t_0}^{t_1} e^{-\gamma_k (t_1 - s)} dW_s` and
    :math:`\Delta W = W(t_1) - W(t_0)`, the vector :math:`(\Delta W, Z)` is Gaussian with

    .. math::

        \mathrm{Var}\,\Delta W = h, \quad
        \mathrm{Cov}(Z_k, \Delta W) = \frac{1 - e^{-\gamma_k h}}{\gamma_k}, \quad
        \mathrm{Cov}(Z_k, Z_l) = \frac{1 - e^{-(\gamma_k + \gamma_l) h}}{\gamma_k + \gamma_l},

    and :math:`Y_k(t_1) = e^{-\gamma_k h} Y_k(t_0) + Z_k`; the increment returned is
    :math:`\sum_k w_k (Y_k(t_1) - Y_k(t_0))`. It is drawn as :math:`\Delta W = \sqrt h\,\xi_0`
    and :math:`Z = c\,\Delta W / h + S \xi_{1:K}`, with :math:`S` a square root of the conditional
    covariance (eigen-factor, so a nearly singular one at tiny :math:`h\gamma_k` is fine):
    ``K + 1`` standard normals per element per step, no time-discretisation error, so the law
    of the increments does not depend on the grid.

    **Path state.** The OU states are the memory of the path, kept per (shape, dtype, device)
    of the ``x`` passed in (the real view of a complex ``x``). A path starts lazily, at zero,
    at the ``t0`` of the first :meth:`increment` for that shape, and must then be stepped over
    contiguous intervals (each ``t0`` equal to the previous ``t1``); anything else raises, as
    does stepping the same shape twice over one interval (two noise terms of one shape need two
    ``FractionalBrownian`` objects). Call :meth:`reset` to start new paths (e.g. before
    re-running :func:`stepping.integrate.integrate`). The path's own clock advances by
    :math:`|t_1 - t_0|`, so decreasing (reverse-time) grids are accepted; the weights are
    fitted for a path of length at most ``T``.

    A stepper gets fractional noise only through :meth:`increment`; :meth:`standard_normal`
    raises, so a stepper that draws white noise cannot silently ignore the fractional one.

    Args:
        hurst: Hurst index H in (0, 1); H = 1/2 approximates Brownian motion.
        K: number of OU processes (>= 1). The weight system is ill-conditioned beyond K ~ 5
            (cond(A) ~ 8e6 at K = 5, 5e9 at K = 6 with gamma_max = 20): a ``RuntimeWarning``
            above cond 1e12, a ``ValueError`` above 1e15.
        gamma_max: largest-to-smallest speed ratio is gamma_max^2 (speeds from
            1/gamma_max to gamma_max); must be > 1. Default 20 (the setting of the reported
            errors and condition numbers).
        T: horizon on which the weights are optimal.
        generator: the source of randomness (if None, one seeded from torch's global RNG).

    Attributes:
        gammas: the K speeds, a float64 tensor of shape (K,).
        weights: the K weights, a float64 tensor of shape (K,).
        relative_error: the optimal weights' relative L2 error on [0, T] (see
            :func:`ma_fbm_weights`), e.g. 4.7e-2 for H = 0.2 and 1.3e-4 for H = 0.7 at K = 5.
        condition_number: cond(A) of the weight system.

    References:
        R. Daems, M. Opper, G. Crevecoeur, T. Birdal, "Variational inference for SDEs driven by
        fractional noise", ICLR 2024, arXiv:2310.12975.
        P. Harms, D. Stefanovits, "Affine representations of fractional processes with
        applications in mathematical finance", Stochastic Processes and their Applications
        129(4), 2019.

    Example:
        >>> fbm = FractionalBrownian(0.7, K=5, generator=torch.Generator().manual_seed(0))
        >>> x = torch.zeros(3)
        >>> db = [fbm.increment(x, k / 4, (k + 1) / 4) for k in range(4)]
        >>> db[0].shape, fbm.state(x).t
        (torch.Size([3]), 1.0)
        >>> fbm.reset()  # the next increment starts a new path
    """

    _CACHE_SIZE = 64

    def __init__(self, hurst: float, K: int = 5, *, gamma_max: float = 20.0, T: float = 1.0,
                 generator: torch.Generator | None = None):
        self.hurst = _check_hurst(hurst)
        check_int("K", K)
        self.K = K
        self.gamma_max = check_positive("gamma_max", gamma_max)
        if not self.gamma_max > 1.0:
            raise ValueError(f"gamma_max must be > 1, got {gamma_max!r}")
        self.T = check_positive("T", T)
        self.generator = make_generator(generator)
        k = torch.arange(1, K + 1, dtype=torch.float64)
        r = self.gamma_max ** (2.0 / (K - 1)) if K > 1 else 1.0
        self.gammas = torch.as_tensor(r, dtype=torch.float64).pow(k - (K + 1) / 2)
        self.weights, self.relative_error, self.condition_number = ma_fbm_weights(
            self.hurst, self.gammas, self.T)
        self._paths: dict[tuple, _Path] = {}
        self._steps: dict[tuple, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def __repr__(self) -> str:
        return (f"FractionalBrownian(hurst={self.hurst}, K={self.K}, gamma_max={self.gamma_max}, "
                f"T={self.T})")

    # -- path state -------------------------------------------------------------------------
    @staticmethod
    def _key(x: Tensor) -> tuple:
        real = torch.view_as_real(x) if x.is_complex() else x
        return tuple(real.shape), real.dtype, real.device

    def reset(self, x_like: Tensor | None = None) -> None:
        """Start new paths: all of them (``x_like=None``), or the one for ``x_like``'s shape."""
        if x_like is None:
            self._paths.clear()
        else:
            self._paths.pop(self._key(x_like), None)

    def state(self, x: Tensor) -> FBMState | None:
        """The path state for ``x``'s shape (a copy), or None if that path has not started.

        ``ou`` holds :math:`Y_k` (shape ``(K, *x.shape)``), e.g. for the augmented SDE
        :math:`dX = [b(X) - \\sigma \\sum_k w_k \\gamma_k Y_k] dt + \\sigma (\\sum_k w_k) dW`.
        """
        p = self._paths.get(self._key(x))
        if p is None:
            return None
        return FBMState(p.elapsed, p.ou.clone(), None if p.dw is None else p.dw.clone())

    # -- one step ----------------------------------------------------------------------------
    def _step_tensors(self, h: float, dtype: torch.dtype, device: torch.device):
        key = (h, dtype, device)
        if key in self._steps:
            return self._steps[key]
        g, w = self.gammas, self.weights
        decay = torch.exp(-g * h)
        c = -torch.expm1(-g * h) / g                                 # Cov(Z_k, dW)
        s = g[:, None] + g[None, :]
        cov_z = -torch.expm1(-s * h) / s                             # Cov(Z_k, Z_l)
        cond = cov_z - c[:, None] * c[None, :] / h                   # Cov(Z | dW)
        vals, vecs = torch.linalg.eigh(0.5 * (cond + cond.T))
        mix = torch.zeros(self.K + 1, self.K + 1, dtype=torch.float64)
        mix[0, 0] = math.sqrt(h)
        mix[1:, 0] = c / math.sqrt(h)
        mix[1:, 1:] = vecs * vals.clamp_min(0).sqrt()
        out = tuple(v.to(dtype=dtype, device=device)
                    for v in (decay, mix, w * (decay - 1), w @ mix[1:]))
        if len(self._steps) >= self._CACHE_SIZE:
            self._steps.pop(next(iter(self._steps)))
        self._steps[key] = out
        return out

    def standard_normal(self, x: Tensor) -> Tensor:
        """Refused: a stepper that asks for white standard normals would silently ignore the
        fractional noise. Fractional noise reaches steppers that draw :meth:`increment`."""
        raise ValueError("this stepper draws white noise (noise.standard_normal); "
                         "FractionalBrownian drives only steppers built on noise.increment, "
                         "e.g. samplers.score_sde.EulerMaruyama")

    def increment(self, x: Tensor, t0: float, t1: float) -> Tensor:
        """B_H(t1) - B_H(t0) of the approximate fBM path for ``x``'s shape, shaped like ``x``
        (its real view if complex, as :class:`Brownian`); advances that path's OU states."""
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1)):
            raise ValueError(f"t0 and t1 must be finite, got {t0}, {t1}")
        key = self._key(x)
        shape, dtype, device = key
        if not dtype.is_floating_point:
            raise ValueError(f"x must have a floating-point dtype, got {dtype}")
        path = self._paths.get(key)
        if path is None:
            path = _Path(torch.zeros((self.K, *shape), dtype=dtype, device=device))
            self._paths[key] = path
        elif path.t_now is not None and not math.isclose(t0, path.t_now, rel_tol=1e-9,
                                                         abs_tol=1e-12):
            raise ValueError(
                f"FractionalBrownian: the path for shape {shape} is at t = {path.t_now}, but an "
                f"increment from t0 = {t0} was asked. The OU states carry the path's memory, so "
                f"steps must be contiguous (t0 = previous t1); call reset() to start a new path")
        h = abs(t1 - t0)
        path.t_now = t1
        path.elapsed += h
        if h == 0.0:
            path.dw = torch.zeros(shape, dtype=dtype, device=device)
            return torch.zeros(shape, dtype=dtype, device=device)
        decay, mix, u, v = self._step_tensors(h, dtype, device)
        ou = path.ou.view(self.K, -1)
        xi = standard_normal_like(ou.new_empty(self.K + 1, ou.shape[1]), self.generator)
        inc = u @ ou + v @ xi
        ou.mul_(decay[:, None]).add_(mix[1:] @ xi)
        path.dw = (mix[0, 0] * xi[0]).view(shape)
        return inc.view(shape)

    def covariance(self, times) -> Tensor:
        r"""Exact covariance of the approximation :math:`\hat B_H` at ``times`` (float64, CPU).

        .. math::

            \mathrm{Cov}(\hat B_H(s), \hat B_H(t)) = \sum_{k,l} w_k w_l\,
                e^{-\gamma_k (t - m) - \gamma_l (s - m)}
                \frac{1 - e^{-(\gamma_k + \gamma_l) m}}{\gamma_k + \gamma_l},
                \quad m = s \wedge t,

        times measured from the start of the path.
        """
        t = _check_times(times)
        g, w = self.gammas, self.weights
        tt, ss = t[:, None, None, None], t[None, :, None, None]
        m = torch.minimum(tt, ss)
        gk, gl = g[:, None], g[None, :]
        decay = torch.exp(-gk * (tt - m) - gl * (ss - m))
        cov_kl = decay * -torch.expm1(-(gk + gl) * m) / (gk + gl)
        return torch.einsum("k,l,stkl->st", w, w, cov_kl)
