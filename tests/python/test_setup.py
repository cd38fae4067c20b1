"""Set-up on a fresh machine: nothing may depend on what the user's home already holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ingestion.duckdb_setup import duckdb_config, ensure_duckdb_extensions
from ingestion.lake import Lake, ensure_tables

from helpers import pinpipe_here, plain_dbt


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    return home


def test_extensions_install_into_an_empty_directory_and_read_delta_from_there(tmp_path: Path, empty_home: Path) -> None:
    directory = tmp_path / "extensions"
    assert ensure_duckdb_extensions(directory) == ["delta", "httpfs"]
    assert ensure_duckdb_extensions(directory) == []  # once

    lake = Lake(str(tmp_path / "lake"))
    ensure_tables(lake)
    with duckdb.connect(config=duckdb_config(directory)) as connection:
        # autoloaded from the directory: no `load`, no download
        assert connection.execute(f"select count(*) from delta_scan('{lake.uri('pin')}')").fetchone() == (0,)
        paths = dict(
            connection.execute("select extension_name, install_path from duckdb_extensions() where loaded").fetchall()
        )
    assert Path(paths["delta"]).is_relative_to(directory)
    assert not (empty_home / ".duckdb").exists()


def test_pinpipe_setup_works_with_an_empty_home(tmp_path: Path, empty_home: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PINPIPE_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "ingestion", "setup"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed delta, httpfs" in " ".join(done.stdout.split())
    assert sorted(p.name for p in (cache / "duckdb-extensions").rglob("*.duckdb_extension")) == [
        "delta.duckdb_extension",
        "httpfs.duckdb_extension",
    ]
    assert list(empty_home.iterdir()) == []


def test_plain_dbt_makes_the_warehouses_folder_on_a_fresh_clone(tmp_path: Path) -> None:
    # a fresh clone has no warehouse/ folder, and DuckDB does not make one: the profile's plugin does
    warehouse = tmp_path / "not" / "yet" / "pinpipe.duckdb"
    env = {**os.environ, "PINPIPE_WAREHOUSE": str(warehouse)}
    done = plain_dbt("debug", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert warehouse.exists()


@pytest.mark.parametrize("spark", [True, False])
def test_setup_servers_fetches_every_local_server_and_the_spark_jars_when_spark_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spark: bool
) -> None:
    """`pinpipe setup --servers`, which CI runs beside `make lint`, fetches what each server's start
    would (each server module's own fetcher) and the Spark jobs' jars only with the Spark target."""
    from ingestion import duckdb_setup, spark_ingest
    from ingestion.services import prefetch

    fetched: list[str] = []
    for name in ("kafka_libs", "versitygw_binary", "kinesis_mock_package", "kinesalite_package"):
        monkeypatch.setattr(prefetch, name, lambda cache, name=name: fetched.append(f"{name} {cache}"))
    monkeypatch.setattr(spark_ingest, "fetch_jars", lambda settings: fetched.append("spark jars"))
    monkeypatch.setattr(spark_ingest, "spark_installed", lambda: spark)
    monkeypatch.setattr(duckdb_setup, "ensure_duckdb_extensions", lambda directory: [])

    done = pinpipe_here(None, "setup", "--servers", PINPIPE_CACHE_DIR=str(tmp_path / "cache"))
    assert done.code == 0, done.out + done.err
    cache = tmp_path / "cache"
    servers = [
        f"{name} {cache}" for name in ("kafka_libs", "versitygw_binary", "kinesis_mock_package", "kinesalite_package")
    ]
    assert fetched == [*servers, *(["spark jars"] if spark else [])]
    assert f"servers kafka, versitygw, kinesis-mock, kinesalite: ready in {cache}" in done.out
    assert ("the Spark jobs' jars: ready" in done.out) is spark
