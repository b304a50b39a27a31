"""Diffusion samplers with exact scores: error against NFE, and Euler--Maruyama's per-step cost
against torchsde (CPU, one thread).

(a) Every sampler of ``samplers.sample`` on the VP SDE (Euler--Maruyama, reverse diffusion,
predictor--corrector, Heun and RK45 on the probability-flow ODE) and the linear stochastic
interpolant's ODE (Heun) and SDE (Euler--Maruyama, epsilon = 1), each given the exact fields of
a Gaussian mixture (``samplers.targets.GaussianMixture``), on the 2-D 8-mode and the 16-D
4-mode mixtures. Error = mean exact log-density of the samples under the marginal at the last
time minus that of exact draws of that marginal, so 0 for an exact sampler; negative when
samples land where the density is low (blur, missed modes), positive when they crowd the modes.

(b) Seconds per step of ``samplers.sample(method="euler_maruyama")`` against
``torchsde.sdeint(method="euler")`` on the same reverse-time VP SDE with the same drift and
diffusion functions, batch 10,000, interleaved rounds (``benchmarks.harness``).
"""

from __future__ import annotations

import cProfile
import datetime
import io
import math
import pstats
import statistics

import torch

from stochstep import samplers
from benchmarks import harness
from stochstep.samplers.interpolants import Interpolant, InterpolantODE, InterpolantSDE
from stochstep.samplers.score_sde import RK45, probability_flow, score_at
from stochstep.samplers.targets import GaussianMixture
from stochstep.stepping import Brownian, integrate, uniform

NFES = (20, 50, 100, 200, 500)
QUICK_NFES = (20, 100)
RK45_TOLS = (1e-2, 1e-3, 1e-4, 1e-5)
QUICK_RK45_TOLS = (1e-3, 1e-5)
T_END = 1e-3          # VP SDE: sample p_{T_END}
S_END = 1 - 1e-3      # interpolant: sample rho_{S_END} (the score is singular at 1)
TRUE_FACTOR = 20      # exact reference draws per sample (a small reference set biases every row)
# (key, title, mixture factory, samples, samples with --quick)
TARGETS = (
    ("2d", "2-D, 8 modes on a circle (`eight_modes_2d()`)", GaussianMixture.eight_modes_2d,
     8000, 2000),
    ("16d", "16-D, 4 anisotropic modes (`four_modes(16)`)",
     lambda: GaussianMixture.four_modes(16), 2000, 1000),
)
SDE_METHODS = (("EM (reverse SDE)", "euler_maruyama", 1),
               ("reverse diffusion", "reverse_diffusion", 1),
               ("PC (RD + Langevin, snr 0.16)", "pc", 2), ("Heun (PF-ODE)", "heun", 2))
BATCH = 10_000
EM_STEPS = 100
EM_ROUNDS, QUICK_EM_ROUNDS = 15, 4
TARGET_RATIO = 1.0


# -- (a) error against NFE ------------------------------------------------------------------
def vp_score(gm: GaussianMixture, sde):
    def score(x, t):
        return gm.score(x, *sde.marginal(t)).to(x.dtype)
    return score


def error_table(gm: GaussianMixture, n: int, nfes, tols) -> tuple[str, list[str]]:
    """Markdown table of error +- standard error for every sampler and NFE; notes."""
    sde = samplers.VPSDE()
    score = vp_score(gm, sde)
    it = Interpolant("linear")
    fields = it.exact_fields(gm)
    d = gm.dim
    prior = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b, c = (float(v) for v in sde.marginal(T_END))
    big_b, big_c, _, _ = (float(v) for v in it.marginal_coefficients(torch.tensor(S_END)))

    def reference(bb, cc):
        ref = gm.sample_marginal(TRUE_FACTOR * n, bb, cc,
                                 generator=torch.Generator().manual_seed(2))
        lp = gm.log_prob(ref, bb, cc)
        return lp.mean().item(), lp.var().item() / len(lp)

    refs = {"vp": reference(b, c), "it": reference(big_b, big_c)}

    def err(x, kind):
        bb, cc = (b, c) if kind == "vp" else (big_b, big_c)
        lp = gm.log_prob(x, bb, cc)
        mean_ref, var_ref = refs[kind]
        if not torch.isfinite(lp).all():
            return "nan"
        se = math.sqrt(lp.var().item() / len(lp) + var_ref)
        return f"{lp.mean().item() - mean_ref:+.3f} ± {se:.3f}"

    rows = []
    for label, method, per_step in SDE_METHODS:
        row = [label]
        for nfe in nfes:
            x = samplers.sample(score, sde, prior, steps=nfe // per_step, method=method,
                                t_end=T_END, generator=torch.Generator().manual_seed(3))
            row.append(err(x, "vp"))
        rows.append(row)
        print(f"  {' | '.join(row)}", flush=True)
    interp = (("interpolant ODE (Heun)", lambda: InterpolantODE(fields.velocity, method="heun"),
               None),
              ("interpolant SDE (EM, ε = 1)",
               lambda: InterpolantSDE(fields.velocity, fields.score, epsilon=1.0), 3))
    for label, make, seed in interp:
        row = [label]
        for nfe in nfes:
            noise = None if seed is None else Brownian(torch.Generator().manual_seed(seed))
            x = integrate(make(), prior, uniform(0.0, S_END, nfe // 2), noise=noise)
            row.append(err(x, "it"))
        rows.append(row)
        print(f"  {' | '.join(row)}", flush=True)
    table = harness.markdown_table(["sampler"] + [f"NFE {k}" for k in nfes], rows)
    rk_rows = []
    for tol in tols:
        stepper = RK45(probability_flow(sde, score), rtol=tol, atol=tol)
        x = integrate(stepper, prior, uniform(sde.T, T_END, 1))
        rk_rows.append([f"RK45 (PF-ODE), rtol = atol = {tol:g}", str(stepper.nfe), err(x, "vp")])
        print(f"  {' | '.join(rk_rows[-1])}", flush=True)
    rk = harness.markdown_table(["adaptive sampler", "NFE (counted)", "error ± SE"], rk_rows)
    return table + "\n\n" + rk, []


# -- (b) Euler--Maruyama per step, ours vs torchsde -----------------------------------------
class TorchsdeReverseVP:
    """The reverse-time VP SDE in torchsde's form, in time s = 1 - t (torchsde integrates
    forward): dy = -(f - g^2 s)(y, 1 - s) ds + g(1 - s) dW, with the same ``sde`` methods and
    score as ``samplers.sample`` uses."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde, score):
        self.sde, self.score, self.calls = sde, score, 0

    def f(self, s, y):
        self.calls += 1
        t = 1.0 - float(s)
        return -self.sde.reverse_drift(y, t, score_at(self.score, y, t))

    def g(self, s, y):
        return self.sde.expand(self.sde.diffusion(1.0 - float(s)), y).expand_as(y)


def em_contenders(score, x, steps: int):
    import torchsde

    sde = samplers.VPSDE()
    gen = torch.Generator().manual_seed(5)
    # float64 times: in float32, torchsde's accumulated t falls short and adds a tiny step
    ts = torch.tensor([0.0, sde.T - T_END], dtype=torch.float64)
    dt = (sde.T - T_END) / steps * (1 + 1e-9)  # exactly `steps` steps, the last one clamped
    ts_sde = TorchsdeReverseVP(sde, score)
    tt = torch.full((x.shape[0],), 0.5, dtype=x.dtype)

    def ours():
        return samplers.sample(score, sde, x, steps=steps, method="euler_maruyama",
                               t_end=T_END, generator=gen)

    def theirs():
        with torch.no_grad():
            return torchsde.sdeint(ts_sde, x, ts, method="euler", dt=dt)[-1]

    def score_only():
        with torch.no_grad():
            for _ in range(steps):
                score(x, tt)

    ts_sde.calls = 0
    theirs()
    if ts_sde.calls != steps + 1:  # + its shape check's call
        raise RuntimeError(f"torchsde took {ts_sde.calls - 1} steps, expected {steps}")
    return {"ours: samplers.sample(euler_maruyama)": ours,
            "torchsde.sdeint(method='euler')": theirs,
            "score alone (same calls)": score_only}


def profile_ours(score, x, steps: int, top: int = 8) -> str:
    """cProfile of ``samplers.sample``'s Euler--Maruyama loop: the top functions by own time."""
    sde = samplers.VPSDE()
    prof = cProfile.Profile()
    prof.enable()
    samplers.sample(score, sde, x, steps=steps, method="euler_maruyama", t_end=T_END,
                    generator=torch.Generator().manual_seed(0))
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def em_timing(rounds: int, quick: bool) -> tuple[list[str], list[str]]:
    try:
        import torchsde  # noqa: F401
    except ImportError as exc:
        return [f"skipped: torchsde is not installed ({exc}); `pip install torchsde`"], []
    gm = GaussianMixture.eight_modes_2d()
    sde = samplers.VPSDE()
    x = sde.prior_sample((BATCH, 2), generator=torch.Generator().manual_seed(4))
    cases = (("exact 2-D 8-mode GMM score", vp_score(gm, sde)),
             ("score of N(0, I) data, s = -x (solver overhead)", lambda x, t: -x))
    out, targets = [], []
    for title, score in cases:
        steps = EM_STEPS
        contenders = em_contenders(score, x, steps)
        times = harness.time_interleaved(contenders, rounds, warmup=1 if quick else 2)
        names = list(contenders)
        ref = names[1]
        rows = [[name, f"{1e3 * statistics.median(t) / steps:.3f}",
                 f"{harness.median_ratio(times, name, ref):.2f}x"] for name, t in times.items()]
        table = harness.markdown_table(["contender", "median ms per step", "vs torchsde"],
                                       rows)
        print(f"\n{title}, batch {BATCH}, {steps} steps per call, {rounds} rounds\n{table}",
              flush=True)
        ratio = harness.median_ratio(times, names[0], ref)
        line = harness.target_line(f"ours / torchsde per step, {title}", ratio, TARGET_RATIO)
        print(line, flush=True)
        targets.append(line)
        ms = {n: 1e3 * statistics.median(t) / steps for n, t in times.items()}
        over = (f"overhead beyond the score per step: ours {ms[names[0]] - ms[names[2]]:.3f} ms, "
                f"torchsde {ms[names[1]] - ms[names[2]]:.3f} ms")
        print(over, flush=True)
        out.append(f"\n#### {title}, {rounds} rounds\n\n{table}\n\n{over}")
        if ratio > TARGET_RATIO:
            prof = profile_ours(score, x, steps)
            print(prof, flush=True)
            out.append("\nprofile of ours (cProfile, top own time):\n\n```\n"
                       + prof.strip() + "\n```")
    return out, targets


def run(rounds: int | None, quick: bool) -> str:
    nfes = QUICK_NFES if quick else NFES
    tols = QUICK_RK45_TOLS if quick else RK45_TOLS
    out = ["## samplers\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- (a) samplers given the exact fields of a Gaussian mixture: the VP SDE "
           f"(beta 0.1..20) from t = 1 to {T_END:g} starting at N(0, I); the linear interpolant "
           f"(gamma = sqrt(t(1 - t)), Gaussian base) from t = 0 to {S_END:g}. Error = mean "
           "exact log-density (`GaussianMixture.log_prob` at the last time's marginal) of the "
           f"samples minus that of {TRUE_FACTOR}x as many exact draws of that marginal, "
           "± one standard error (both sample means); 0 is exact, negative means samples in "
           "low-density regions, positive means samples crowding the modes. The same prior "
           "draw and noise seed for every sampler; float64",
           "- NFE = field evaluations: EM and reverse diffusion 1 per step; PC (one corrector "
           "step) and Heun 2 per step; the interpolant ODE (Heun) 2 velocity calls per step; "
           "the interpolant SDE 1 velocity + 1 score call per step; RK45 (Dormand--Prince, "
           "one adaptive solve) counted by the solver"]
    print("(a) error against NFE", flush=True)
    for key, title, make, n, n_quick in TARGETS:
        n = n_quick if quick else n
        print(f"\n{title}: {n} samples", flush=True)
        table, _ = error_table(make(), n, nfes, tols)
        out.append(f"\n### (a) {title}: {n} samples\n\n{table}")
    n_rounds = rounds or (QUICK_EM_ROUNDS if quick else EM_ROUNDS)
    print("\n(b) Euler--Maruyama per step, ours vs torchsde", flush=True)
    body, targets = em_timing(n_rounds, quick)
    out.append(
        f"\n### (b) Euler--Maruyama per step: ours vs torchsde, batch {BATCH:,}, 2-D\n\n"
        "The same reverse-time VP SDE for both: torchsde integrates it forward in s = 1 - t "
        "with drift -(f - g^2 s)(y, 1 - s) and diagonal noise g(1 - s), both computed by the "
        "same `VPSDE` methods and the same score callable (called with a (batch,) time) as "
        f"ours; {EM_STEPS} steps from t = 1 to {T_END:g}, float32, torchsde's default "
        "`BrownianInterval`, float64 times (in float32 its accumulated time falls short of the "
        "end and adds a tiny extra step); per step = median call time / steps (a torchsde call "
        "also makes one extra drift call, its shape check: 1% of its score calls). 'score "
        "alone' calls the score as often, for the share of the step that is not the solver. "
        "Interleaved rounds (order shuffled per round), ratios are medians of per-round "
        "ratios.")
    out += body
    if targets:
        out += ["\n### targets\n", *[f"- {t}" for t in targets]]
    command = harness.rerun_command("samplers", rounds, quick)
    out.append(f"\nRerun from the repository root: `{command}`")
    return "\n".join(out)
