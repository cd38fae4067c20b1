"""Assertions shared by the end-to-end suites."""

from __future__ import annotations

import socket
from collections import Counter

import reference
from ingestion import transform
from ingestion.config import Settings


def _comparable(value: object) -> object:
    return round(value, 6) if isinstance(value, float) else value


def assert_marts_equal_reference(settings: Settings, records: list[dict]) -> None:
    """Every mart of the warehouse equals the plain-Python computation, row for row, in any order."""
    expected = reference.marts(records)
    assert set(expected) == set(transform.MARTS)
    for mart in transform.MARTS:
        want = Counter(tuple(_comparable(v) for v in row) for row in expected[mart])
        rows = transform.read_mart(settings, mart).to_pylist()
        got = Counter(tuple(_comparable(v) for v in row.values()) for row in rows)
        assert got == want, f"{mart}: only in dbt {got - want}, only in reference {want - got}"
        assert got, f"{mart} is empty: the comparison would prove nothing"


def free_port() -> int:
    """A TCP port nobody listens on now, for a service of the test's own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
