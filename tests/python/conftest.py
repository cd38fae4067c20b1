from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.bronze import Lake
from ingestion.config import Settings


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A lake, a warehouse and a dbt target directory of the test's own."""
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    return Settings(lake=str(tmp_path / "lake"), warehouse=str(tmp_path / "warehouse.duckdb"), target="local")
