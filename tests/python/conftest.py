from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.bronze import Lake
from ingestion.config import Settings
from ingestion.services import S3Server


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A lake, a warehouse and a dbt target directory of the test's own."""
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    return Settings(lake=str(tmp_path / "lake"), warehouse=str(tmp_path / "warehouse.duckdb"), target="local")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The real S3 server (versitygw), started once for the session on a free port."""
    server = S3Server(Settings(state_dir=tmp_path_factory.mktemp("state"), s3_port=_free_port()))
    server.up()
    yield server
    server.down()
