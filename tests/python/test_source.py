"""The source database: its tables typed and keyed, posts emulated from it the seeds' way in one
query per batch, the marts built from it equal to the independent computation; on the embedded
SQLite and on a real PostgreSQL, including one that goes away mid-run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy

from ingestion.config import Settings
from ingestion.emulate import PostSource, aicore_tables
from ingestion.lake import Lake
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES
from ingestion.services import PostgresServer, free_port
from ingestion.source import SOURCE_TABLES, DbSource, SourceUnavailable, connect, create, load_source

from helpers import assert_marts_equal_reference, eventually, in_tables, record

PINPIPE = str(Path(sys.executable).parent / "pinpipe")


def _sqlite(tmp_path: Path, synthetic: int | None = None) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    load_source(create(url), synthetic_posts=synthetic)
    return url


def _multiset(source: PostSource, count: int) -> Counter:
    posts = source.batch(0, count)
    return Counter(record(table, table, row) for table in RAW_TABLES for row in posts.table(table).to_pylist())


def test_the_source_tables_are_typed_from_the_raw_records_and_keyed_by_the_post(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    inspector = sqlalchemy.inspect(connect(url))
    assert set(inspector.get_table_names()) == set(SOURCE_TABLES.values())
    assert inspector.get_pk_constraint("pinterest_data")["constrained_columns"] == ["index"]
    assert inspector.get_pk_constraint("geolocation_data")["constrained_columns"] == ["ind"]
    types = {c["name"]: type(c["type"]).__name__ for c in inspector.get_columns("geolocation_data")}
    assert types == {
        "ind": "BIGINT",
        "timestamp": "DATETIME",
        "latitude": "FLOAT",
        "country": "TEXT",
        "longitude": "FLOAT",
    }
    with connect(url).connect() as connection:
        for table, name in SOURCE_TABLES.items():
            rows = connection.execute(sqlalchemy.text(f"select count(*) from {name}")).scalar_one()
            assert rows == aicore_tables()[table].num_rows


def test_posts_come_the_seeds_way_one_key_for_all_three_records_drawn_with_replacement(tmp_path: Path) -> None:
    source = DbSource(connect(_sqlite(tmp_path)), seed=5)
    posts = source.batch(0, 4_000)
    keys = posts.pin.column("index").to_pylist()
    assert keys == posts.geo.column("ind").to_pylist() == posts.user.column("ind").to_pylist()
    assert len(set(keys)) < len(keys)  # 4,000 draws from 1,920 keys repeat some
    # each record is the real row of its key (timestamps as the database gives them back)
    real = {row["ind"]: row for row in aicore_tables()["geo"].to_pylist()}
    for row in posts.geo.to_pylist()[:200]:
        want = real[row["ind"]]
        assert (row["country"], row["latitude"]) == (want["country"], want["latitude"])
        assert datetime.fromisoformat(row["timestamp"]) == datetime.fromisoformat(want["timestamp"])
    # deterministic and seekable: the same seed gives the same posts, batch by batch or at once
    again = DbSource(connect(_sqlite(tmp_path / "again")), seed=5)
    assert again.batch(1_000, 500).pin.equals(posts.pin.slice(1_000, 500))
    assert DbSource(connect(_sqlite(tmp_path / "other")), seed=6).batch(0, 4_000).pin != posts.pin


def test_a_batch_of_posts_is_one_query_not_one_per_post(tmp_path: Path) -> None:
    engine = connect(_sqlite(tmp_path))
    source = DbSource(engine, seed=1)
    statements: list[str] = []
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    source.batch(0, 3_000)  # at most 1,920 distinct keys: one query
    assert len([s for s in statements if "pinterest_data" in s]) == 1, statements


def test_a_missing_or_empty_source_database_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "PINPIPE_LAKE": str(tmp_path / "lake"), "PINPIPE_STATE_DIR": str(tmp_path / "state")}
    missing = subprocess.run(
        [PINPIPE, "emulate", "--source", "db", "--posts", "10"],
        env={**env, "PINPIPE_SOURCE_URL": f"sqlite:///{tmp_path / 'missing.db'}"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"Error: no source database at {tmp_path / 'missing.db'}: create it with `pinpipe source load`"
    ]
    with pytest.raises(SourceUnavailable, match="'notaurl' is not a SQLAlchemy URL: set PINPIPE_SOURCE_URL"):
        connect("notaurl")
    with pytest.raises(SourceUnavailable, match="no driver for nosuchdb"):
        connect("nosuchdb://user@127.0.0.1/db")
    url = _sqlite(tmp_path)
    with connect(url).begin() as connection:
        connection.execute(sqlalchemy.text("delete from user_data"))
    with pytest.raises(SourceUnavailable, match="holds no posts: fill it with `pinpipe source load`"):
        DbSource(connect(url))


def test_the_marts_built_from_the_embedded_source_database_equal_the_reference(tmp_path: Path) -> None:
    """`pinpipe run --source db` on a fresh state dir: the SQLite source is filled on first use."""
    env = {
        **os.environ,
        "PINPIPE_LAKE": str(tmp_path / "lake"),
        "PINPIPE_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "PINPIPE_STATE_DIR": str(tmp_path / "state"),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
    }
    env.pop("PINPIPE_SOURCE_URL", None)
    run = subprocess.run(
        [PINPIPE, "run", "--source", "db", "--posts", "3000", "--rows", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "loading the AiCore rows into" in run.stdout
    settings = Settings(lake=env["PINPIPE_LAKE"], warehouse=env["PINPIPE_WAREHOUSE"], state_dir=tmp_path / "state")
    source = make_source("db", 100, settings.source_database)
    assert in_tables(Lake.from_settings(settings), {t: t for t in RAW_TABLES}) == _multiset(source, 3_000)
    os.environ["DBT_TARGET_PATH"] = env["DBT_TARGET_PATH"]
    try:
        assert_marts_equal_reference(settings, list(source.batch(0, 3_000).records()))
    finally:
        os.environ.pop("DBT_TARGET_PATH")


def _reachable(folder: Path) -> Path:
    """``folder``, and the folders above it passable (not readable) by other users: the database
    servers run as their own users, and pytest's folders are private."""
    for above in (folder, *folder.parents):
        if above != Path("/"):
            above.chmod(above.stat().st_mode | 0o011)
    return folder


@pytest.fixture
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL of its own; its folder reachable by the postgres user (pytest's are not)."""
    state = _reachable(tmp_path_factory.mktemp("postgres", numbered=True))
    server = PostgresServer(Settings(state_dir=state, postgres_port=free_port()))
    server.up()
    try:
        yield server
    finally:
        server.down()


@pytest.fixture
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MariaDB (Debian's mariadb-server) of its own, run as the mysql user: the URL of its
    database ``pinpipe``. `pinpipe` starts no MySQL: a user's URL points at theirs."""
    state = _reachable(tmp_path_factory.mktemp("mariadb", numbered=True))
    shutil.chown(state, "mysql", "mysql")
    subprocess.run(
        ["mariadb-install-db", "--user=mysql", f"--datadir={state / 'data'}", "--skip-test-db"],
        check=True,
        capture_output=True,
    )
    port, socket = free_port(), state / "mysqld.sock"
    server_program = shutil.which("mariadbd") or "/usr/sbin/mariadbd"  # sbin: not on every PATH
    command = [server_program, "--no-defaults", "--user=mysql", f"--datadir={state / 'data'}", f"--port={port}"]
    command += ["--bind-address=127.0.0.1", f"--socket={socket}", "--skip-name-resolve"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = ["mariadb", f"--socket={socket}", "-uroot", "-e"]
    try:
        assert eventually(lambda: subprocess.run([*client, "select 1"], capture_output=True).returncode == 0, 60)
        grants = "create user 'pinpipe'@'127.0.0.1'; grant all on pinpipe.* to 'pinpipe'@'127.0.0.1';"
        subprocess.run([*client, f"create database pinpipe; {grants}"], check=True)
        yield f"mysql+pymysql://pinpipe@127.0.0.1:{port}/pinpipe"
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["postgres", "mariadb"])
def test_a_database_server_holds_the_same_source_and_gives_the_same_posts_as_sqlite(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        request.getfixturevalue("postgres").settings.local_postgres_url
        if server == "postgres"
        else request.getfixturevalue("mariadb")
    )
    load_source(create(url), synthetic_posts=5_000)
    inspector = sqlalchemy.inspect(connect(url))
    types = {c["name"]: type(c["type"]).__name__ for c in inspector.get_columns("user_data")}
    assert types == {
        "ind": "BIGINT",
        "first_name": "TEXT",
        "last_name": "TEXT",
        "age": "BIGINT",
        "date_joined": "TIMESTAMP" if server == "postgres" else "DATETIME",
    }
    on_server = DbSource(connect(url), seed=9).batch(0, 8_000)
    on_sqlite = DbSource(connect(_sqlite(tmp_path, synthetic=5_000)), seed=9).batch(0, 8_000)
    for table in RAW_TABLES:
        assert on_server.table(table).equals(on_sqlite.table(table)), table


@pytest.mark.minutes
@pytest.mark.slow
def test_a_source_database_that_goes_away_mid_run_is_one_line_and_a_rerun_resumes_without_duplicates(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url, posts = postgres.settings.local_postgres_url, 60_000
    load_source(create(url), synthetic_posts=20_000)
    env = {
        **os.environ,
        "PINPIPE_LAKE": str(tmp_path / "lake"),
        "PINPIPE_STATE_DIR": str(tmp_path / "state"),
        "PINPIPE_SOURCE_URL": url,
    }
    command = [PINPIPE, "emulate", "--source", "db", "--posts", str(posts), "--batch-size", "300"]
    lake = Lake(env["PINPIPE_LAKE"])
    emulating = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the database stops once some batches are in bronze, while the emulator still runs
    while lake.delta_table("user") is None or lake.delta_table("user").version() < 5:
        assert emulating.poll() is None, emulating.stderr.read()
        time.sleep(0.05)
    postgres.down()
    _, stderr = emulating.communicate(timeout=120)
    assert emulating.returncode == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith("Error: the source database postgresql+psycopg://pinpipe@127.0.0.1:")
    assert "bronze resumes after the posts it holds" in line
    partial = {table: lake.delta_table(table).to_pyarrow_table().num_rows for table in RAW_TABLES}
    assert 0 < sum(partial.values()) < 3 * posts
    held = min(partial.values())  # posts whose three records all reached bronze

    postgres.up()
    # --posts N adds N posts after those bronze holds: the tables ahead skip what they hold
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    expected = _multiset(DbSource(connect(url)), held + posts)
    assert in_tables(Lake(env["PINPIPE_LAKE"]), {t: t for t in RAW_TABLES}) == expected
