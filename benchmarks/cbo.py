"""Consensus-based optimization against CBXpy: success rate and time per step (CPU, one thread).

Ours: ``optimizers.cbo.CBOStepper`` (what :func:`optimizers.cbo.cbo_minimize` runs), stepped on
the same time grid ``cbo_minimize`` uses, in float32 and float64. Baseline: ``cbx.dynamics.CBO``
(CBXpy, numpy float64). Both run CBXpy's documented benchmark configuration: ``x0 ~ U(-3, 3)``,
anisotropic noise, ``sigma = 10.1``, ``dt = 0.01``, ``lambda = 1``, ``alpha = 30`` multiplied by
1.05 after every step up to 1e5, ``M = 20`` independent runs of ``N`` particles in ``d = 20``.
CBXpy is configured to do only the work its step needs: ``verbosity=0``, no tracked history
(``track_args={"names": []}``), the objective given as a whole ``(M, N, d)`` array function
(``f_dim="3D"``); each of its steps is ``dyn.step()`` followed by the alpha scheduler's
``update`` (the body of its ``optimize()`` loop, without the termination check). The objectives
are the same expressions written once in torch and once in numpy. Run through
``python -m benchmarks``, glibc's allocator is pinned (``harness.pin_allocator``) for both.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import statistics
import time

import numpy as np
import torch

from benchmarks import harness
from stochstep.optimizers.cbo import CBOStepper, GeometricAlpha, cbo_minimize, noise_source
from stochstep.stepping.grids import uniform
from stochstep.stepping.noise import box_muller_normal

# CBXpy's documented benchmark configuration
CONFIG = dict(dt=0.01, lam=1.0, sigma=10.1, alpha0=30.0, factor=1.05, alpha_max=1e5, box=3.0)
M, D = 20, 20
NS = (50, 100, 500)
SHIFTS = (0.0, 1.0)
STEPS = 3000
CHUNK = 100          # steps per contender per interleaved round of the success runs
TOL = 0.25           # success: final consensus within TOL of the minimizer (infinity norm)
SWEEP_N = (100, 300, 1000, 3000, 10_000)   # at d = 20
SWEEP_D = (2, 5, 20, 50, 200)              # at N = 100
SWEEP_WORK = 400_000   # sweep rounds: about this many particle coordinates (M N d x steps)
TARGET_F32, TARGET_F64, TARGET_SIZE = 0.5, 0.7, 2000   # time ratios for N d >= TARGET_SIZE
CBX, F32, F64 = "CBXpy (numpy f64)", "ours f32", "ours f64"
F64N = "ours f64, f32 noise"   # cbo_minimize(..., noise_dtype=torch.float32)


# -- the objectives, once in torch and once in numpy (same operations in the same order) ------
# numpy reuses a temporary operand of `a * b - c` in place ("temporary elision"); torch does not,
# so the torch Rastrigin writes in place what numpy elides. Both then allocate the same four
# particle-sized temporaries (written plainly, the torch version allocates six: at N = 500 that
# doubled its page faults under glibc's default allocator, 1531 against numpy's 749 per call).
def rastrigin_torch(x, shift=0.0):
    y = x - shift if shift else x
    return (y * y).sub_(torch.cos(2 * math.pi * y).mul_(10.0)).sum(-1) + 10.0 * x.shape[-1]


def rastrigin_numpy(x, shift=0.0):
    y = x - shift if shift else x
    return (y * y - 10.0 * np.cos(2 * math.pi * y)).sum(-1) + 10.0 * x.shape[-1]


def ackley_torch(x, shift=0.0):
    y = x - shift if shift else x
    return (-20.0 * torch.exp(-0.2 * torch.sqrt((y * y).mean(-1)))
            - torch.exp(torch.cos(2 * math.pi * y).mean(-1)) + 20.0 + math.e)


def ackley_numpy(x, shift=0.0):
    y = x - shift if shift else x
    return (-20.0 * np.exp(-0.2 * np.sqrt((y * y).mean(-1)))
            - np.exp(np.cos(2 * math.pi * y).mean(-1)) + 20.0 + math.e)


FUNCTIONS = {"rastrigin": (rastrigin_torch, rastrigin_numpy),
             "ackley": (ackley_torch, ackley_numpy)}


def threads_one():
    """Pin numpy's BLAS/OpenMP pools to one thread too (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


# -- the contenders ------------------------------------------------------------------------------
def initial(n: int, d: int, seed: int, box: float = CONFIG["box"]) -> torch.Tensor:
    """``x0 ~ U(-box, box)``, ``(M, n, d)`` float64, from an explicit generator."""
    g = torch.Generator().manual_seed(seed)
    return 2 * box * torch.rand(M, n, d, generator=g, dtype=torch.float64) - box


class Ours:
    """``CBOStepper`` advanced ``k`` steps at a time over the grid ``cbo_minimize`` builds."""

    def __init__(self, f, x0: torch.Tensor, dtype: torch.dtype, seed: int, steps: int,
                 config: dict = CONFIG, noise_dtype: torch.dtype | None = None):
        self.gen = torch.Generator().manual_seed(seed)
        self.stepper = CBOStepper(f, lam=config["lam"], sigma=config["sigma"],
                                  alpha=GeometricAlpha(config["alpha0"], config["factor"],
                                                       config["alpha_max"]),
                                  noise="anisotropic", generator=self.gen,
                                  noise_dtype=noise_dtype)
        self.stepper.n_total = x0.shape[1]
        self.noise = noise_source(self.gen, noise_dtype or dtype)
        self.times = uniform(0.0, steps * config["dt"], steps).tolist()
        self.x = x0.to(dtype).clone()
        self.k = 0

    def advance(self, k: int) -> None:
        step, x, times, noise = self.stepper.step_, self.x, self.times, self.noise
        with torch.no_grad():
            for i in range(self.k, self.k + k):
                step(x, times[i], times[i + 1], noise)
        self.k += k

    def consensus(self) -> np.ndarray:
        return self.stepper.consensus.double().numpy()


class CBXpy:
    """``cbx.dynamics.CBO`` with the same configuration, advanced ``k`` steps at a time."""

    def __init__(self, f, x0: torch.Tensor, seed: int, steps: int, config: dict = CONFIG):
        from cbx.dynamics import CBO
        from cbx.scheduler import multiply, scheduler
        self.dyn = CBO(f, f_dim="3D", x=x0.numpy().copy(), noise="anisotropic",
                       sigma=config["sigma"], dt=config["dt"], lamda=config["lam"],
                       alpha=config["alpha0"], max_it=steps, verbosity=0,
                       track_args={"names": []}, seed=seed)
        self.sched = scheduler([multiply(name="alpha", factor=config["factor"],
                                         maximum=config["alpha_max"])])

    def advance(self, k: int) -> None:
        dyn, sched = self.dyn, self.sched
        for _ in range(k):
            dyn.step()
            sched.update(dyn)

    def consensus(self) -> np.ndarray:
        return np.asarray(self.dyn.consensus)[:, 0, :]


def make_contenders(name: str, shift: float, n: int, d: int, seed: int, steps: int,
                    config: dict = CONFIG) -> dict:
    """CBXpy, ours in float64 and ours in float32 on the same ``x0`` (one ``M`` x ``n`` x ``d``
    draw from ``seed``) and the same objective."""
    f_torch, f_numpy = FUNCTIONS[name]
    ft = (lambda x: f_torch(x, shift)) if shift else f_torch
    fn = (lambda x: f_numpy(x, shift)) if shift else f_numpy
    x0 = initial(n, d, seed, config["box"])
    return {CBX: CBXpy(fn, x0, seed, steps, config),
            F64: Ours(ft, x0, torch.float64, seed, steps, config),
            F32: Ours(ft, x0, torch.float32, seed, steps, config),
            F64N: Ours(ft, x0, torch.float64, seed, steps, config, torch.float32)}


# -- the measurements ----------------------------------------------------------------------------
def success_case(name: str, shift: float, n: int, steps: int, seed: int,
                 chunk: int = CHUNK) -> dict:
    """Run all contenders ``steps`` steps in interleaved rounds of ``chunk`` steps (the first
    round untimed); return success rates and per-round times per step."""
    chunk = max(1, min(chunk, steps // 2))
    rounds = steps // chunk
    contenders = make_contenders(name, shift, n, D, seed, steps)
    calls = {key: (lambda c=c: c.advance(chunk)) for key, c in contenders.items()}
    times = harness.time_interleaved(calls, rounds - 1, 1, seed=seed)
    rest = steps - rounds * chunk
    for c in contenders.values():
        c.advance(rest)
    out = {"times": {k: [t / chunk for t in v] for k, v in times.items()}}
    for key, c in contenders.items():
        err = np.abs(c.consensus() - shift).max(-1)
        out[key] = float((err < TOL).mean())
    return out


def sweep_case(n: int, d: int, rounds: int, seed: int) -> dict:
    """Per-step times of all contenders on Rastrigin (minimum at 0), interleaved rounds of
    ``k`` steps with ``k M n d`` about ``SWEEP_WORK``."""
    k = max(1, min(20, SWEEP_WORK // (M * n * d)))
    contenders = make_contenders("rastrigin", 0.0, n, d, seed, k * (rounds + 1))
    calls = {key: (lambda c=c: c.advance(k)) for key, c in contenders.items()}
    times = harness.time_interleaved(calls, rounds, 1, seed=seed)
    return {"times": {key: [t / k for t in v] for key, v in times.items()}, "k": k}


def reproducibility(steps: int = 200) -> list[str]:
    """Two ``cbo_minimize`` runs from the same seed are bitwise identical (float32 and float64),
    and the benchmark's stepped contender is bitwise the same computation as ``cbo_minimize``."""
    lines = []
    alpha = GeometricAlpha(CONFIG["alpha0"], CONFIG["factor"], CONFIG["alpha_max"])
    for dtype in (torch.float32, torch.float64):
        x0 = initial(50, D, 7).to(dtype)[:4]
        runs = [cbo_minimize(rastrigin_torch, x0, steps=steps, dt=CONFIG["dt"],
                             lam=CONFIG["lam"], sigma=CONFIG["sigma"], alpha=alpha,
                             noise="anisotropic", generator=torch.Generator().manual_seed(3))
                for _ in range(2)]
        same = all(torch.equal(a, b) for a, b in
                   [(runs[0].particles, runs[1].particles),
                    (runs[0].consensus, runs[1].consensus),
                    (runs[0].best_value, runs[1].best_value)])
        stepped = Ours(rastrigin_torch, x0, dtype, 3, steps)
        stepped.advance(steps)
        equal = torch.equal(stepped.x, runs[0].particles)
        tag = str(dtype).replace("torch.", "")
        lines.append(f"bitwise reproducibility ({tag}, M=4, N=50, d={D}, {steps} steps, seed 3): "
                     f"two `cbo_minimize` runs {'identical' if same else 'DIFFER'}, "
                     f"benchmark stepper {'identical to' if equal else 'DIFFERS from'} "
                     f"`cbo_minimize` {'PASS' if same and equal else 'MISS'}")
    return lines


def noise_cost(shape=(M, 100, D), rounds: int = 15) -> dict[str, float]:
    """ns per element of a Gaussian draw: Box--Muller in float64 (what a float64 step draws),
    ``torch.randn`` in float64, float32 (and cast to float64), and numpy's ``standard_normal``
    (what CBXpy draws)."""
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    calls = {"box-muller f64": lambda: box_muller_normal(shape, g),
             "torch f64": lambda: torch.randn(shape, generator=g, dtype=torch.float64),
             "torch f32": lambda: torch.randn(shape, generator=g, dtype=torch.float32),
             "torch f32 -> f64": lambda: torch.randn(shape, generator=g,
                                                     dtype=torch.float32).double(),
             "numpy f64": lambda: rng.standard_normal(size=shape)}
    times = harness.time_interleaved(calls, rounds, 2)
    return {k: 1e9 * statistics.median(v) / math.prod(shape) for k, v in times.items()}


def fmt_ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f}" if seconds < 1 else f"{1e3 * seconds:.0f}"


def ratio_cells(times: dict) -> tuple[float, float, float]:
    return tuple(harness.median_ratio(times, key, CBX) for key in (F32, F64, F64N))


def run(rounds: int | None, quick: bool) -> str:
    """Success table, timing sweeps, reproducibility; print them and return the section."""
    start = time.perf_counter()
    steps = 1000 if quick else STEPS
    ns = (100,) if quick else NS
    shifts = (0.0,) if quick else SHIFTS
    sweep_rounds = rounds or (3 if quick else 12)
    sweep_n = (100, 1000, 10_000) if quick else SWEEP_N
    sweep_d = (2, 20, 200) if quick else SWEEP_D
    timed: list[tuple] = []   # (label, N, d, f32 ratio, f64 ratio, f64 with f32 noise ratio)
    success_rows, success_checks = [], []
    with threads_one():
        seed = 0
        for name in FUNCTIONS:
            for shift in shifts:
                for n in ns:
                    seed += 1
                    r = success_case(name, shift, n, steps, seed)
                    t = r["times"]
                    q32, q64, q64n = ratio_cells(t)
                    label = f"{name}, min at {shift:g}, N={n}"
                    timed.append((label, n, D, q32, q64, q64n))
                    for key in (F32, F64, F64N):
                        success_checks.append((label, key, r[key], r[CBX]))
                    row = [name, f"{shift:g}", str(n), f"{r[CBX]:.2f}", f"{r[F64]:.2f}",
                           f"{r[F32]:.2f}", f"{r[F64N]:.2f}", fmt_ms(statistics.median(t[CBX])),
                           fmt_ms(statistics.median(t[F64])), fmt_ms(statistics.median(t[F32])),
                           f"{q64:.2f}x", f"{q32:.2f}x", f"{q64n:.2f}x"]
                    success_rows.append(row)
                    print(" | ".join(row), f"({time.perf_counter() - start:.0f}s)", flush=True)
        headers = ["function", "minimizer", "N", "success CBXpy", "success f64", "success f32",
                   "success f64 (f32 noise)", "CBXpy ms/step", "f64 ms/step", "f32 ms/step",
                   "f64 / CBXpy", "f32 / CBXpy", "f64 (f32 noise) / CBXpy"]
        success_table = harness.markdown_table(headers, success_rows)
        print(success_table, flush=True)

        sweep_tables, step_ns = [], {}
        for axis, values in (("N", sweep_n), ("d", sweep_d)):
            rows = []
            for v in values:
                n, d = (v, D) if axis == "N" else (100, v)
                seed += 1
                r = sweep_case(n, d, sweep_rounds, seed)
                t = r["times"]
                q32, q64, q64n = ratio_cells(t)
                timed.append((f"sweep N={n}, d={d}", n, d, q32, q64, q64n))
                step_ns[n, d] = tuple(1e9 * statistics.median(t[key]) / (M * n * d)
                                      for key in (F64, CBX))
                row = [str(n), str(d), f"{M * n * d:,}", str(r["k"]),
                       fmt_ms(statistics.median(t[CBX])), fmt_ms(statistics.median(t[F64])),
                       fmt_ms(statistics.median(t[F32])), f"{q64:.2f}x", f"{q32:.2f}x",
                       f"{q64n:.2f}x",
                       f"{1e9 * statistics.median(t[CBX]) / (M * n * d):.0f}",
                       f"{1e9 * statistics.median(t[F64]) / (M * n * d):.0f}",
                       f"{1e9 * statistics.median(t[F32]) / (M * n * d):.0f}"]
                rows.append(row)
                print(" | ".join(row), f"({time.perf_counter() - start:.0f}s)", flush=True)
            table = harness.markdown_table(
                ["N", "d", "M N d", "steps/round", "CBXpy ms/step", "f64 ms/step",
                 "f32 ms/step", "f64 / CBXpy", "f32 / CBXpy", "f64 (f32 noise) / CBXpy",
                 "CBXpy ns/elem", "f64 ns/elem",
                 "f32 ns/elem"], rows)
            print(table, flush=True)
            sweep_tables.append((axis, table))
        repro = reproducibility()

    targets = []
    for key in (F64, F32, F64N):
        gaps = [(mine - base, label) for label, k, mine, base in success_checks if k == key]
        low = min(gaps)
        ok = low[0] >= 0
        targets.append(f"success rate of {key} >= CBXpy's in every configuration "
                       f"({len(gaps)} configurations): {'PASS' if ok else 'MISS'}; "
                       f"smallest difference {low[0]:+.2f}"
                       + ("" if ok else f" ({low[1]})"))
    big = [row for row in timed if row[1] * row[2] >= TARGET_SIZE]
    for key, idx, limit in ((F32, 3, TARGET_F32), (F64, 4, TARGET_F64), (F64N, 5, TARGET_F64)):
        ratio, label = max((row[idx], row[0]) for row in big)
        targets.append(harness.target_line(
            f"time per step {key} / CBXpy, worst of {len(big)} cases with N d >= "
            f"{TARGET_SIZE} ({label})", ratio, limit))
    targets += repro
    with threads_one():
        cost = noise_cost()
    why = (f"where the float64 step's time goes: its Gaussian draw. On one thread, shape "
           f"({M}, 100, {D}), `torch.randn` costs {cost['torch f64']:.1f} ns per element in "
           f"float64 against {cost['torch f32']:.1f} in float32 "
           f"({cost['torch f32 -> f64']:.1f} cast to float64): torch vectorizes its Box-Muller "
           "(AVX2) for float32 only, float64 goes through a scalar loop. The float64 step "
           f"therefore draws with `stepping.noise.box_muller_normal`: {cost['box-muller f64']:.1f} "
           f"ns per element, against {cost['numpy f64']:.1f} for numpy's `standard_normal` "
           "(CBXpy's draw)")
    if (100, D) in step_ns:
        f64_ns, cbx_ns = step_ns[100, D]
        why += (f". The whole float64 step costs {f64_ns:.1f} ns per element there (CBXpy's "
                f"{cbx_ns:.1f}): the draw is {cost['box-muller f64'] / f64_ns:.0%} of it")
    elapsed = time.perf_counter() - start
    print("\n".join(targets) + "\n" + why, flush=True)
    print(f"suite time: {elapsed:.0f}s", flush=True)

    command = harness.rerun_command("cbo", rounds, quick)
    chunk = max(1, min(CHUNK, steps // 2))
    out = ["## cbo\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}; numpy {np.__version__}, CBXpy {cbx_version()}",
           "- configuration (CBXpy's documented benchmark setting, both libraries): x0 ~ "
           f"U(-3, 3), anisotropic noise, sigma = {CONFIG['sigma']}, dt = {CONFIG['dt']}, "
           f"lambda = {CONFIG['lam']}, alpha = {CONFIG['alpha0']:g} x {CONFIG['factor']} per "
           f"step up to {CONFIG['alpha_max']:g}; M = {M} runs batched in one call; Rastrigin "
           "sum((x-s)^2 - 10 cos(2 pi (x-s))) + 10 d and Ackley (a = 20, b = 0.2, c = 2 pi) "
           "with minimizer s (0 or 1 in every coordinate), the same expressions in torch and "
           "numpy; success = final consensus within "
           f"{TOL} of the minimizer in the infinity norm",
           "- ours: `optimizers.cbo.CBOStepper` (what `cbo_minimize` runs; checked bitwise "
           "equal below) in float32 and float64, and float64 with its Gaussian noise drawn in "
           "float32 and cast (`noise_dtype=torch.float32`); CBXpy: "
           "`cbx.dynamics.CBO(f, f_dim='3D', noise='anisotropic', verbosity=0, "
           "track_args={'names': []})`, each step "
           "`dyn.step()` + the `multiply(factor=1.05)` scheduler update; the same x0 for all; "
           "numpy pinned to one thread (threadpoolctl)",
           f"- method: contenders interleaved in one process, one thread; success runs: "
           f"{steps} steps in rounds of {chunk} steps per contender (first round discarded "
           f"from timing); sweeps: Rastrigin, rounds of k steps (k M N d ~ {SWEEP_WORK:,}), "
           f"{sweep_rounds} timed rounds after 1 warm-up; ms/step are medians over rounds, "
           "ratios are medians of per-round ratios",
           f"\n### success rate over {M} runs and time per step, d = {D}, {steps} steps\n",
           success_table]
    for axis, table in sweep_tables:
        fixed = f"d = {D}" if axis == "N" else "N = 100"
        out += [f"\n### time per step versus {axis} ({fixed}, M = {M}, Rastrigin)\n", table]
    out += ["\n### targets\n", *[f"- {t}" for t in targets], f"\n{why}.",
            f"\nSuite time: {elapsed / 60:.1f} min. "
            f"Rerun from the repository root: `{command}`"]
    return "\n".join(out)


def cbx_version() -> str:
    try:
        from importlib.metadata import version
        return version("cbx")
    except Exception:  # noqa: BLE001 - a version string only
        return "unknown"
