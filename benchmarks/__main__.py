"""Command line: ``python -m benchmarks SUITE [SUITE ...] [--rounds N] [--quick]``."""

from __future__ import annotations

import argparse
import importlib

from benchmarks import harness

# Suite name -> module defining ``run(rounds, quick) -> str``; imported only when selected.
SUITES = {
    "diffgrad": "benchmarks.diffgrad",
    "srrw": "benchmarks.srrw",
    "samplers": "benchmarks.samplers",
    "hessian": "benchmarks.hessian",
    "cbo": "benchmarks.cbo",
    "policy_gradient": "benchmarks.policy_gradient",
    "compile": "benchmarks.compile",
    "online": "benchmarks.online",
    "surrogate": "benchmarks.surrogate",
    "bilevel": "benchmarks.bilevel",
    "convex_relu": "benchmarks.convex_relu",
    "ot": "benchmarks.ot",
    "properties": "benchmarks.properties",
    "light_sb": "benchmarks.light_sb",
}


def main(argv: list[str] | None = None) -> None:
    """Run the selected suites and rewrite their sections of ``benchmarks/RESULTS.md``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="+", choices=sorted(SUITES), metavar="SUITE",
                        help=f"one or more of: {', '.join(sorted(SUITES))}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per case (default: per-case values of the suite)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few rounds, largest cases skipped")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    harness.set_threads()
    harness.pin_allocator()
    print(f"machine: {harness.machine()}", flush=True)
    for suite in args.suites:
        print(f"\n== {suite} ==", flush=True)
        body = importlib.import_module(SUITES[suite]).run(args.rounds, args.quick)
        harness.write_section(suite, body)
        print(f"wrote section '{suite}' of {harness.RESULTS}", flush=True)


if __name__ == "__main__":
    main()
