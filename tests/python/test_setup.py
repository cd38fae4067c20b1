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

from helpers import plain_dbt


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
