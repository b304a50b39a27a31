"""Step-time benchmarks; run ``python -m benchmarks SUITE`` from the repository root.

Each suite is a module with ``run(rounds: int | None, quick: bool) -> str`` that prints its
progress and returns the markdown body of its section of ``benchmarks/RESULTS.md``.
"""
