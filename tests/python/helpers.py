"""Assertions shared by the end-to-end suites."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

from ingestion import transform
from ingestion.bronze import Lake
from ingestion.config import Settings

import reference


def _comparable(value: object) -> object:
    return round(value, 6) if isinstance(value, float) else value


def assert_marts_equal_reference(settings: Settings, records: list[dict]) -> None:
    """Every mart of the warehouse equals the plain-Python computation, row for row, in any order."""
    expected = reference.marts(records)
    marts = transform.marts(settings)
    assert set(expected) == set(marts)
    for mart in marts:
        want = Counter(tuple(_comparable(v) for v in row) for row in expected[mart])
        rows = transform.read_mart(settings, mart).to_pylist()
        got = Counter(tuple(_comparable(v) for v in row.values()) for row in rows)
        assert got == want, f"{mart}: only in dbt {got - want}, only in reference {want - got}"
        assert got, f"{mart} is empty: the comparison would prove nothing"


def kill_once_committed(process: subprocess.Popen, lake: Lake, table: str, version: int, timeout: float) -> None:
    """SIGKILL ``process`` as soon as ``bronze/<table>`` reaches Delta ``version``, while it still
    runs: a process that finished first would prove nothing."""
    deadline = time.monotonic() + timeout
    try:
        while (
            lake.delta_table(table) is None or lake.delta_table(table).version() < version
        ) and process.poll() is None:
            assert time.monotonic() < deadline, f"{table} did not reach version {version} in {timeout:.0f} s"
            time.sleep(0.02)
        assert process.poll() is None, "the process finished before it could be killed"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
