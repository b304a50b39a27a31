"""BSVRB (v2): one step with batched per-block oracles against a per-block Python loop
computing the same quantities (as the authors' numpy code does), CPU.

The problem: m separable blocks with a shared upper variable x (dim_x = 10),

    g_i(x, y) = 0.5 sum_k a_ik y_k^2 + sum_k log cosh(y_k) - y . (W x),
    f_i(x, y) = 0.5 ||y - c_i||^2,

a_ik in [1, 2] (strongly convex), W shared, per-block data O(m dim_y). Contenders, interleaved:

- ``BSVRB.step``: the whole step (oracles at the current and previous points, the MSVR and
  STORM updates, y, v and x moved);
- ``per-block loop``: only the oracles of the same step, block by block: for each sampled block,
  ``block_oracles`` on that block alone at both points and its two products (the quantities
  ``step`` gets in one call each; the test checks they agree).

The target: the loop at least 10x slower than the whole batched step at m = 1000, I = 100.
Memory: the optimizer's per-block state in bytes (exact), and the process's peak resident
size after the case (``ru_maxrss``, monotone over the run).
"""

from __future__ import annotations

import datetime
import resource

import torch

from benchmarks import harness
from stochstep.optimizers.bilevel import BSVRB, block_oracles

DIM_X = 10
WARMUP = 2
TARGET = 10.0   # the loop / the batched step, at m = 1000, I = 100
# (m, dim_y, I, timed rounds, rounds with --quick: 0 skips the case there)
GRID = [(100, 10, 10, 20, 3), (100, 100, 10, 20, 0), (1000, 10, 100, 10, 3),
        (1000, 100, 100, 10, 0), (1000, 1000, 100, 5, 0), (10_000, 10, 100, 10, 0),
        (10_000, 100, 100, 5, 0), (10_000, 1000, 100, 3, 0)]


def make_problem(m: int, dim_y: int, seed: int = 0, dtype=torch.float32):
    """The benchmark's blocks: ``closure(blocks) -> (f, g)`` and the data."""
    gen = torch.Generator().manual_seed(seed)
    a = 1 + torch.rand(m, dim_y, generator=gen, dtype=dtype)
    c = torch.randn(m, dim_y, generator=gen, dtype=dtype)
    W = torch.randn(dim_y, DIM_X, generator=gen, dtype=dtype) / DIM_X ** 0.5

    def closure(blocks):
        ab, cb = a[blocks], c[blocks]

        def g(x, y):
            return (0.5 * ab * y ** 2 + torch.log(torch.cosh(y))).sum(1) - y @ (W @ x[0])

        def f(x, y):
            return 0.5 * ((y - cb) ** 2).sum(1)
        return f, g
    return closure


def build(m: int, dim_y: int, count: int, seed: int = 0):
    """A BSVRB (v2) on the benchmark problem after two steps (so it has a previous point)."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.nn.Parameter(torch.randn(DIM_X, generator=gen))
    y = torch.randn(m, dim_y, generator=gen).requires_grad_()
    opt = BSVRB([x], y, lr=1e-3, lower_lr=0.1, blocks_per_step=count,
                generator=torch.Generator().manual_seed(seed))
    closure = make_problem(m, dim_y, seed)
    for _ in range(2):
        opt.step(closure)
    return opt, closure


def looped_oracles(opt: BSVRB, closure, blocks: torch.Tensor):
    """The oracles of one step, block by block: grad_y g at both points, the v2 residual
    hess_yy g v - grad_y f at both points, and G at both points."""
    state, x = opt.block_state, opt.param_groups[0]["params"]
    x_prev = [opt.state[p]["previous"] for p in x]
    rows = {"grad_y_g": [], "grad_y_g_prev": [], "residual": [], "residual_prev": []}
    G, G_prev = [torch.zeros_like(p) for p in x], [torch.zeros_like(p) for p in x]
    for i in blocks.tolist():
        f, g = closure(torch.tensor([i]))
        for point, y, v, total, suffix in [(x, opt.lower[i:i + 1], state["v"][i:i + 1], G, ""),
                                           (x_prev, state["previous"][i:i + 1],
                                            state["previous_v"][i:i + 1], G_prev, "_prev")]:
            o = block_oracles(f, g, point, y)
            hvp, G_i = o.products(v)
            rows["grad_y_g" + suffix].append(o.grad_y_g)
            rows["residual" + suffix].append(hvp - o.grad_y_f)
            for t, G_p in zip(total, G_i):
                t.add_(G_p / len(blocks))
    return {k: torch.cat(v) for k, v in rows.items()}, G, G_prev


def state_bytes(opt: BSVRB) -> int:
    return sum(t.numel() * t.element_size() for t in opt.block_state.values())


def time_case(m: int, dim_y: int, count: int, rounds: int, warmup: int) -> tuple[list, float]:
    opt, closure = build(m, dim_y, count)
    blocks = torch.randperm(m, generator=torch.Generator().manual_seed(7))[:count]
    with torch.no_grad():
        times = harness.time_interleaved({
            "step": lambda: opt.step(closure),
            "loop": lambda: looped_oracles(opt, closure, blocks)}, rounds, warmup)
    ratio = 1 / harness.median_ratio(times, "step", "loop")
    ms = {k: 1e3 * sorted(v)[len(v) // 2] for k, v in times.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = [str(m), str(dim_y), str(count), f"{ms['step']:.2f}", f"{ms['loop']:.1f}",
           f"{ratio:.1f}x", f"{state_bytes(opt) / 2**20:.1f}", f"{peak:.0f}"]
    print("  " + " | ".join(row), flush=True)
    return row, ratio


def run(rounds: int | None, quick: bool) -> str:
    """Time the grid, print the table and the target, and return the RESULTS.md section."""
    warmup = 1 if quick else WARMUP
    out = ["## bilevel\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- method: the two contenders interleaved in one process (order shuffled each "
           f"round, seed 0), {warmup} warm-up round(s) discarded; times are medians, the "
           "speedup the median of per-round ratios; float32, dim_x = 10, BSVRB v2",
           "- contenders: `BSVRB.step` (the whole step, batched oracles) against the "
           "per-block loop of the same step's oracles only (`benchmarks/bilevel.py`)"]
    rows, target = [], None
    for m, dim_y, count, case_rounds, quick_rounds in GRID:
        if quick and not quick_rounds:
            continue
        n = rounds or (quick_rounds if quick else case_rounds)
        row, ratio = time_case(m, dim_y, count, n, warmup)
        rows.append(row)
        if (m, count) == (1000, 100) and dim_y == 10:
            target = ratio
    out += ["", harness.markdown_table(
        ["m", "dim_y", "I", "step (ms)", "loop (ms)", "loop / step", "state (MiB)",
         "peak RSS so far (MiB)"], rows)]
    if quick:
        out.append("\n--quick: the cases with m = 100 and m = 1000 at dim_y = 10 only")
    if target is not None:
        verdict = "PASS" if target >= TARGET else "MISS"
        line = (f"per-block loop / batched step at m = 1000, I = 100, dim_y = 10: "
                f"{target:.1f}x (target >= {TARGET:.0f}x) {verdict}")
        print(line, flush=True)
        out += ["\n### targets\n", f"- {line}"]
    command = harness.rerun_command("bilevel", rounds, quick)
    out.append(f"\nRerun from the repository root: `{command}`")
    return "\n".join(out)
