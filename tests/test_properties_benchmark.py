"""Smoke run of ``python -m benchmarks properties --quick`` (one round of each property)."""

from benchmarks import properties
from benchmarks.__main__ import SUITES


def test_properties_suite_is_registered_and_times_every_property(one_thread):
    assert SUITES["properties"] == "benchmarks.properties"
    body = properties.run(1, quick=True)
    rows = [line for line in body.splitlines() if line.startswith("| assert_")]
    assert len(rows) == len(properties.cases()) == 11
    assert all(float(row.split("|")[2]) > 0 for row in rows)
    assert "Rerun: `python -m benchmarks properties --rounds 1 --quick`" in body
