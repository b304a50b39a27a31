"""Shared timing utility: interleaved rounds, per-round ratios, machine line, RESULTS.md sections.

Contenders are timed in one process, round by round: each round calls every contender's step
once, in an order shuffled per round from a fixed seed, so slow drift of the machine (clock,
cache, other load) hits all contenders alike. Ratios are taken within a round and their median
over rounds is reported, which cancels most of that drift.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
THREADS = 1
_allocator = "default allocator"


def pin_allocator() -> None:
    """Make glibc keep freed memory mapped (``mallopt``: trim threshold 1 GiB, mmap threshold
    32 MiB, its maximum), for every contender in the process.

    By default glibc hands large freed blocks back to the OS at points that depend on the whole
    heap's history, and the next allocation of a particle-sized temporary page-faults again
    (about 1.7 us per 4 KiB page here). Interleaved contenders share one heap, so which of them
    pays those faults in a round is close to random: the same CBO case swung from 0.45x to 1.1x
    between rounds. Pinning removes that; it is what the caching allocators PyTorch's CPU
    performance guide recommends (jemalloc, tcmalloc) do. No-op off glibc."""
    global _allocator
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        # mallopt parameters -1 and -3: M_TRIM_THRESHOLD and M_MMAP_THRESHOLD
        trim, mmap = libc.mallopt(-1, 1 << 30), libc.mallopt(-3, 32 << 20)
    except (OSError, AttributeError, TypeError):
        return
    if trim == 1 and mmap == 1:
        _allocator = "glibc malloc pinned (trim threshold 1 GiB, mmap threshold 32 MiB)"


def set_threads() -> None:
    """Pin torch to ``THREADS`` intra-op threads so timings do not depend on the core count."""
    torch.set_num_threads(THREADS)


def machine() -> str:
    """One line naming the CPU model, core count, torch version and torch thread count."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model or 'unknown CPU'} ({os.cpu_count()} cores), torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), {_allocator}")


def time_interleaved(steps: dict[str, Callable[[], object]], rounds: int, warmup: int,
                     seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each step, over ``rounds`` timed rounds after ``warmup`` discarded ones.

    Every round calls each step once, in a freshly shuffled order (``random.Random(seed)``).
    The garbage collector is off while timing.
    """
    rng = random.Random(seed)
    order = list(steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for name in order:
                start = time.perf_counter()
                steps[name]()
                elapsed = time.perf_counter() - start
                if r >= warmup:
                    times[name].append(elapsed)
    finally:
        if gc_enabled:
            gc.enable()
    return times


def median_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``name``'s time divided by ``reference``'s time in the same round."""
    return statistics.median([a / b for a, b in zip(times[name], times[reference])])


def target_line(label: str, ratio: float, limit: float) -> str:
    """``label: 1.23x (target <= 1.45x) PASS by 0.22x`` (MISS by ... when over the limit)."""
    verdict = "PASS" if ratio <= limit else "MISS"
    return f"{label}: {ratio:.2f}x (target <= {limit:.2f}x) {verdict} by {abs(limit - ratio):.2f}x"


def rerun_command(suite: str, rounds: int | None, quick: bool) -> str:
    """The command line that reruns ``suite`` with the given options, for its section."""
    return (f"python -m benchmarks {suite}" + (f" --rounds {rounds}" if rounds else "")
            + (" --quick" if quick else ""))


def case_rounds(case, rounds: int | None, quick: bool, out: list[str]) -> int | None:
    """Timed rounds for ``case`` (an object with ``key``, ``title``, ``rounds`` and
    ``quick_rounds``): ``--rounds``, else its own; None where ``--quick`` skips it (said in
    ``out`` and on the console)."""
    if quick and not case.quick_rounds:
        print(f"\ncase ({case.key}) {case.title}: skipped by --quick", flush=True)
        out.append(f"\n### ({case.key}) {case.title}\n\nskipped by --quick")
        return None
    n = rounds or (case.quick_rounds if quick else case.rounds)
    print(f"\ncase ({case.key}) {case.title}: {n} timed rounds ...", flush=True)
    return n


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(suite: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``<!-- suite:NAME -->`` section of ``path``, keeping the others."""
    start, end = f"<!-- suite:{suite} -->", f"<!-- /suite:{suite} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else (
        "# Benchmark results\n\nWritten by `python -m benchmarks SUITE`; "
        "each run rewrites only its own suite's section.\n")
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
