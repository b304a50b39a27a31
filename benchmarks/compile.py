"""Compiled against eager ``optimizer.step()`` for every registered optimizer, with torch's Adam
as the yardstick (CPU).

Compiled means the pattern of torch's compiled-optimizer tutorial: ``torch.compile`` of a
function that calls ``opt.step()``, the optimizer built with ``lr=torch.tensor(lr)``. Eager
contenders get a float lr. Two parameter sets: ResNet-18's parameter shapes and a 32-64-64-1 MLP;
every contender owns a copy of the parameters whose ``.grad`` holds the same fixed random
gradients (only the step is timed). CBO takes no gradient: it gets the MLP as ``model=`` and a
closure over a batch of 8.

Per optimizer and parameter set, in this order:

1. graph breaks of one step (``torch._dynamo.explain``, after one eager step built the state);
2. compiled frames over the warm-up steps with a frame-counting eager backend
   (``torch._dynamo.testing.CompileCounter``), then over a few more steps while the tensor lr
   changes in place every step, as an ``lr_scheduler`` does with a tensor lr;
3. the inductor compile: first call (compile time) and the rest of the warm-up, within a time
   budget (a frame that takes minutes to compile on this CPU would otherwise hold the whole
   run), skipped when step 2 counted more frames than the case's ``max_frames``;
4. its eager and compiled steps timed in interleaved rounds (``harness.time_interleaved``).

Dynamo's caches are reset after each probe and after each optimizer's timing, so that no
optimizer's compiled frames count against another's recompile limits.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import gc
import logging
import os
import signal
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

from benchmarks import harness
from benchmarks.diffgrad import resnet18_shapes
from stochstep import optimizers  # noqa: F401  (registers the records)
from stochstep.stepping.registry import algorithms

ADAM = "torch.optim.Adam"
ADAM_LR = 1e-3
WARMUP_STEPS = 12      # compiled steps before timing (torch's recompile limit is 8 per frame)
LR_CHANGES = 2         # further probe steps, the tensor lr changed in place before each
BATCH = 8              # CBO's closure: MSE of the MLP on a fixed batch of this size


class CompileBudgetExceeded(Exception):
    """Raised by the alarm when a probe or an inductor compile runs past its time budget."""


@dataclass(frozen=True)
class Case:
    """A parameter set with its timed rounds (``quick_rounds=0``: skipped by --quick) and the
    time budget of each contender's probe and of its inductor compile, in seconds."""

    key: str
    title: str
    shapes: Callable[[], list[tuple[int, ...]]]
    rounds: int
    quick_rounds: int
    budget_s: int
    probe_budget_s: int
    max_frames: int  # more probe frames than this: no inductor compile (each costs one)
    model: bool  # whether the shapes are a real model's, so that CBO can evaluate a loss


def mlp() -> torch.nn.Sequential:
    """The 32-64-64-1 tanh MLP whose parameter shapes are case (b)'s."""
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                               torch.nn.Tanh(), torch.nn.Linear(64, 1))


def mlp_shapes() -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in mlp().parameters()]


CASES = (
    Case("a", "ResNet-18 parameter shapes (62 tensors, 11.69M elements)", resnet18_shapes,
         20, 0, 300, 45, 16, False),
    Case("b", "32-64-64-1 MLP (6 tensors, 6,401 elements)", mlp_shapes, 300, 100, 90, 60, 40,
         True),
)


@dataclass
class Contender:
    """One optimizer on one copy of the parameters; ``call()`` runs one ``opt.step``."""

    opt: torch.optim.Optimizer
    closure: Callable | None
    lr: torch.Tensor | float

    def call(self):
        return self.opt.step(self.closure)


class Setup:
    """Builds fresh contenders of every optimizer on one parameter set."""

    def __init__(self, shapes: list[tuple[int, ...]], model: bool):
        gen = torch.Generator().manual_seed(0)
        self.values = [torch.randn(s, generator=gen) for s in shapes]
        self.grads = [torch.randn(s, generator=gen) for s in shapes]
        self.model = None
        if model:
            self.model = mlp()
            with torch.no_grad():
                for p, v in zip(self.model.parameters(), self.values):
                    p.copy_(v * 0.2)
            self.x = torch.randn(BATCH, 32, generator=gen)
            self.y = torch.randn(BATCH, 1, generator=gen)

    def params(self) -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(v.clone()) for v in self.values]
        for p, g in zip(params, self.grads):
            p.grad = g.clone()
        return params

    def make(self, name: str, compiled: bool) -> Contender:
        """A fresh contender; ``compiled``: with a tensor lr (the compile tutorial's pattern)."""
        if name == ADAM:
            if compiled:  # the tutorial's construction (foreach=True refuses a tensor lr)
                lr = torch.tensor(ADAM_LR)
                return Contender(torch.optim.Adam(self.params(), lr=lr), None, lr)
            return Contender(torch.optim.Adam(self.params(), lr=ADAM_LR, foreach=True), None,
                             ADAM_LR)
        info = next(r for r in algorithms("optimizer") if r.name == name)
        kwargs = dict(info.default_kwargs)
        kwargs["lr"] = torch.tensor(float(kwargs["lr"])) if compiled else float(kwargs["lr"])
        if info.stochastic:
            kwargs["generator"] = torch.Generator().manual_seed(1)
        if "grad" in info.requires:
            return Contender(info.cls(self.params(), **kwargs), None, kwargs["lr"])
        model = copy.deepcopy(self.model)
        x, y = self.x, self.y

        def closure():
            return torch.nn.functional.mse_loss(model(x), y)

        return Contender(info.cls(model.parameters(), model=model, **kwargs), closure,
                         kwargs["lr"])


def names() -> list[str]:
    return [ADAM] + [r.name for r in algorithms("optimizer")]


def skip_reason(name: str, case: Case) -> str | None:
    """Why an optimizer is left out of a parameter set (None: it is not)."""
    info = next((r for r in algorithms("optimizer") if r.name == name), None)
    if info is not None and "blocks" in info.requires:
        return (f"{name} steps a bilevel problem (its closure takes the sampled blocks); "
                "benchmarks/bilevel.py times it")
    if info is not None and "grad" not in info.requires and not case.model:
        return (f"{name} evaluates a loss per particle, which needs the model's forward pass; "
                "these are only a model's parameter shapes (and its particles would hold "
                f"{info.default_kwargs.get('n_particles', 'n_particles')} copies of them)")
    return None


def compiled_step(contender: Contender, backend) -> Callable[[], None]:
    """``torch.compile`` of a function that calls ``opt.step()`` (torch's tutorial pattern)."""
    opt, closure = contender.opt, contender.closure

    def train_step():
        opt.step(closure)

    return torch.compile(train_step, backend=backend)


def first_line(reason: str) -> str:
    return reason.strip().splitlines()[0][:90]


def probe(make: Callable[[], Contender], budget_s: int) -> dict:
    """Graph breaks of one step (explain) and compiled frames over the warm-up (eager backend,
    torch's recompile limits lifted so that every recompile counts), within ``budget_s``;
    ``make()`` builds a fresh contender with a tensor lr."""
    contender = make()
    contender.call()  # the state exists: explain sees a step as every later one
    opt, closure = contender.opt, contender.closure
    with unlimited_recompiles():  # a break per parameter must not stop the count at 8
        explained = torch._dynamo.explain(lambda: opt.step(closure))()  # resets dynamo
    reasons = sorted({first_line(r.reason) for r in explained.break_reasons})
    contender = make()
    counter = CompileCounter()
    step = compiled_step(contender, counter)
    frames, lr_frames, stopped = [], None, False
    try:
        with alarm(budget_s), unlimited_recompiles():
            for _ in range(WARMUP_STEPS):
                step()
                frames.append(counter.frame_count)
            for _ in range(LR_CHANGES):
                contender.lr.mul_(0.9)  # what a scheduler does to a tensor lr
                step()
            lr_frames = counter.frame_count - frames[-1]
    except Exception as exc:
        if not over_budget(exc):
            raise
        stopped = True
    torch._dynamo.reset()
    late = frames[-1] - frames[-3] if len(frames) == WARMUP_STEPS else None
    return {"breaks": explained.graph_break_count, "graphs": explained.graph_count,
            "reasons": reasons, "frames": counter.frame_count if stopped else frames[-1],
            "late": late, "lr_frames": lr_frames, "stopped": stopped, "probe_steps": len(frames)}


def unlimited_recompiles():
    """Lift torch's recompile limits (8 per frame, 256 per code object), which otherwise run
    a frame eagerly once reached and so stop every count made under compile."""
    return torch._dynamo.config.patch(recompile_limit=10_000, accumulated_recompile_limit=100_000)


def over_budget(exc: BaseException) -> bool:
    """Whether ``exc`` is the alarm's (dynamo wraps exceptions raised while it compiles)."""
    return isinstance(exc, CompileBudgetExceeded) or "CompileBudgetExceeded" in repr(exc)


@contextmanager
def alarm(seconds: int):
    """Raise :class:`CompileBudgetExceeded` in the main thread after ``seconds``."""
    def ring(signum, frame):
        raise CompileBudgetExceeded

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def compile_inductor(setup: Setup, name: str, budget_s: int) -> dict:
    """A compiled contender warmed up with inductor, its first-call and warm-up seconds and its
    frame count; or the reason it is not timed."""
    contender = setup.make(name, compiled=True)
    counter = CompileCounterWithBackend("inductor")
    step = compiled_step(contender, counter)
    start = time.perf_counter()
    first = None
    try:
        with alarm(budget_s):
            step()
            first = time.perf_counter() - start
            for _ in range(WARMUP_STEPS - 1):
                step()
    except Exception as exc:  # the alarm arrives wrapped by dynamo as BackendCompilerFailed
        elapsed = time.perf_counter() - start
        if not over_budget(exc):
            raise
        done = "first call" if first is None else f"warm-up ({counter.frame_count} frames)"
        return {"error": f"inductor compile over its {budget_s} s budget during the {done}, "
                         f"stopped at {elapsed:.0f} s"}
    return {"step": step, "first": first, "warmup": time.perf_counter() - start - first,
            "inductor_frames": counter.frame_count}


def time_optimizer(setup: Setup, case: Case, name: str, row: dict, rounds: int) -> None:
    """Compile one optimizer with inductor (unless its probe rules it out) and time its eager
    and compiled steps in interleaved rounds; the results go into ``row``.

    One optimizer at a time, dynamo reset after it: the package's optimizers share the code of
    ``KernelOptimizer.step`` and of the frames resumed after its breaks, so compiled side by
    side they would count against each other's recompile limits (and fall back to eager)."""
    if row["frames"] > case.max_frames or row["stopped"]:
        row["error"] = (f"not compiled with inductor: {row['frames']} frames in the probe "
                        + (f"in {row['probe_steps']} steps before its {case.probe_budget_s} s "
                           "budget ran out" if row["stopped"] else
                           f"(more than {case.max_frames}; each costs an inductor compile)"))
    else:
        row.update(compile_inductor(setup, name, case.budget_s))
    eager = setup.make(name, compiled=False).call
    eager()  # state allocation, outside the timed rounds
    steps = {"eager": eager}
    if "error" in row:
        print(f"  {name}: {row['error']}", flush=True)
    else:
        print(f"  {name}: compiled, first call {row['first']:.1f} s, warm-up "
              f"{row['warmup']:.1f} s", flush=True)
        steps["compiled"] = row.pop("step")
    times = harness.time_interleaved(steps, rounds, 2)
    row["eager_ms"] = 1e3 * statistics.median(times["eager"])
    if "compiled" in times:
        row["compiled_ms"] = 1e3 * statistics.median(times["compiled"])
        row["ratio"] = harness.median_ratio(times, "compiled", "eager")
    del steps, times
    torch._dynamo.reset()
    gc.collect()


def time_case(case: Case, rounds: int) -> tuple[list[list[str]], list[str], dict]:
    """Probe, compile and time every optimizer on one parameter set."""
    setup = Setup(case.shapes(), case.model)
    info: dict[str, dict] = {}
    notes = []
    for name in names():
        why = skip_reason(name, case)
        if why:
            notes.append(f"{name} left out: {why}")
            continue
        start = time.perf_counter()
        info[name] = probe(functools.partial(setup.make, name, compiled=True),
                           case.probe_budget_s)
        print(f"  {name}: probe {time.perf_counter() - start:.1f} s, {info[name]['breaks']} "
              f"break(s), {info[name]['frames']} frame(s)"
              + (" (stopped: over budget)" if info[name]["stopped"] else ""), flush=True)
    for name, row in info.items():
        time_optimizer(setup, case, name, row, rounds)
    adam_ratio = info[ADAM].get("ratio")
    rows = []
    for name, row in info.items():
        if "ratio" in row:
            compiled, ratio = f"{row['compiled_ms']:.3f}", f"{row['ratio']:.2f}x"
            frames = row["inductor_frames"]
            first = (f"{row['first']:.1f} + {row['warmup']:.1f} "
                     f"({frames} frame{'s' if frames != 1 else ''})")
        else:
            compiled, ratio, first = "-", "-", "-"
        rows.append([name, f"{row['eager_ms']:.3f}", compiled, ratio,
                     "-" if adam_ratio is None else f"{adam_ratio:.2f}x",
                     str(row["breaks"]), str(row["graphs"]),
                     frames_cell(row), "-" if row["lr_frames"] is None else
                     f"+{row['lr_frames']}", first])
    return rows, notes, info


HEADERS = ["optimizer", "eager ms", "compiled ms", "compiled / eager", "Adam compiled / eager",
           "graph breaks per step", "graphs per step",
           f"frames over {WARMUP_STEPS} steps (+ last 2)", f"+ frames, lr changed {LR_CHANGES}x",
           "compile s: first call + rest of warm-up"]


def frames_cell(row: dict) -> str:
    """``frames (+ in the last 2 warm-up steps)``, or ``>= frames in k steps`` when stopped."""
    if row["stopped"]:
        return f">= {row['frames']} in {row['probe_steps']} steps (over budget)"
    return f"{row['frames']} (+{row['late']})"


def target_lines(key: str, info: dict[str, dict]) -> list[str]:
    """The issue's targets, per optimizer: deterministic ones 0 breaks, at most 2 frames (also
    while lr changes), compiled no slower than eager; stochastic ones at most 1 break per step
    and no new frames after the first steps (the last 2 warm-up steps, the lr changes)."""
    stochastic = {r.name for r in algorithms("optimizer") if r.stochastic}
    lines = []
    for name, row in info.items():
        if name == ADAM:
            continue
        if name in stochastic:
            checks = [("breaks per step <= 1", row["breaks"] <= 1),
                      ("no new frame after the first steps",
                       not row["stopped"] and row["late"] == 0 and row["lr_frames"] == 0)]
        else:
            ratio = row.get("ratio")
            checks = [("0 breaks", row["breaks"] == 0),
                      ("<= 2 frames, lr changing included",
                       not row["stopped"] and row["frames"] + row["lr_frames"] <= 2),
                      ("compiled <= eager", ratio is not None and ratio <= 1.0)]
        verdicts = ", ".join(f"{label} {'PASS' if ok else 'MISS'}" for label, ok in checks)
        lines.append(f"({key}) {name}: {verdicts}")
    return lines


def run(rounds: int | None, quick: bool) -> str:
    """Run every case, print the tables and target lines, and return the RESULTS.md section."""
    # Inductor compiles into a fresh cache, so that compile times do not depend on earlier runs
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="stochstep-compile-")
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    logging.getLogger("torch._inductor").setLevel(logging.ERROR)
    out = ["## compile\n",
           f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
           f"- machine: {harness.machine()}",
           "- compiled: `torch.compile(train_step)` with `def train_step(): opt.step(closure)` "
           "(torch's compiled-optimizer tutorial; default inductor backend), the optimizer built "
           "with `lr=torch.tensor(lr)`; eager: the same optimizer with a float lr. Optimizers "
           "from `stepping.registry.algorithms('optimizer')` with their records' "
           f"`default_kwargs` (stochastic ones seeded); {ADAM}(lr={ADAM_LR}): eager with "
           "foreach=True, compiled with its defaults (foreach=True refuses a tensor lr)",
           "- data: float32, each contender its own parameter copy with the same fixed random "
           "`.grad`; CBO: the MLP as `model=`, closure = MSE on a fixed batch of "
           f"{BATCH}",
           "- graph breaks and graphs per step: `torch._dynamo.explain` of one step after an "
           "eager first step; frames: `torch._dynamo.testing.CompileCounter` (eager backend) "
           f"over {WARMUP_STEPS} compiled steps from a fresh optimizer (+ those compiled during "
           f"the last 2 of them: recompiles), then {LR_CHANGES} steps with the tensor lr "
           "changed in place before each (as an `lr_scheduler` does): frames added. Both "
           "counts lift torch's recompile limits so that every break and recompile counts; "
           "with the default limit (8 per frame) torch runs a frame eagerly once it is reached",
           f"- compile s: the inductor compile's first call, then the rest of its {WARMUP_STEPS} "
           "warm-up steps (fresh inductor cache per run); a compile over its budget or with "
           "more probe frames than the case allows is not timed (compiled ms '-'); the "
           "frames in parentheses are those the inductor run compiled (torch's default "
           "recompile limit)",
           "- budgets: the probe and the inductor compile of each contender run under a "
           "SIGALRM time budget (per case below); a probe over it reports the frames so far",
           "- timing: one optimizer at a time, its eager and compiled steps interleaved in one "
           "process (order shuffled each round, seed 0), 2 warm-up rounds discarded; ms are "
           "medians, ratios medians of per-round ratios. Dynamo is reset between optimizers: "
           "ours share the code of `KernelOptimizer.step` and of the frames resumed after its "
           "breaks, and compiled side by side they count against each other's recompile "
           "limits (SGLD compiled 2 frames instead of 9 after DiffGrad's 11, on the MLP)"]
    start = time.perf_counter()
    torch.compile(lambda x: x * 2)(torch.ones(3))  # inductor's start-up, paid once per process
    startup = time.perf_counter() - start
    print(f"inductor start-up (first compile in the process): {startup:.1f} s", flush=True)
    out.append(f"- inductor start-up, paid before any contender (a trivial compile): "
               f"{startup:.1f} s")
    targets = []
    for case in CASES:
        out.append(f"- budgets of case ({case.key}): probe {case.probe_budget_s} s, inductor "
                   f"compile {case.budget_s} s, inductor only with at most {case.max_frames} "
                   "probe frames" + (" (--quick: at most 30 s and 20 s)" if quick else ""))
    for case in CASES:
        n = harness.case_rounds(case, rounds, quick, out)
        if n is None:
            continue
        start = time.perf_counter()
        if quick:
            case = dataclasses.replace(case, budget_s=min(case.budget_s, 20),
                                       probe_budget_s=min(case.probe_budget_s, 30))
        rows, notes, info = time_case(case, n)
        table = harness.markdown_table(HEADERS, rows)
        print(table, flush=True)
        out.append(f"\n### ({case.key}) {case.title}, {n} rounds "
                   f"({time.perf_counter() - start:.0f} s in all)\n\n{table}\n")
        out += [f"- {note}" for note in notes]
        out += [f"- {name}: {row['error']}" for name, row in info.items() if "error" in row]
        for name, row in info.items():
            if row["reasons"]:
                out.append(f"- {name} breaks on: " + "; ".join(f"`{r}`" for r in row["reasons"]))
        targets += target_lines(case.key, info)
    print("\n" + "\n".join(targets), flush=True)
    command = harness.rerun_command("compile", rounds, quick)
    out += ["\n### targets (issue 12)\n", *[f"- {t}" for t in targets],
            f"\nRerun from the repository root: `{command}`"]
    return "\n".join(out)
