"""Assertions shared by the end-to-end suites."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import requests
from typer.testing import CliRunner

from ingestion import cli, output, reading, transform
from ingestion.bronze import append
from ingestion.clients import s3_client
from ingestion.config import PROJECT_DIR, Settings
from ingestion.lake import TABLES, Lake
from ingestion.object_keys import parse_object_key
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES, payload_fields
from ingestion.services import KinesisServer, free_port

import reference


@dataclass
class Dbt:
    """dbt for the tests that build: the project is parsed once per session and the manifest handed
    to every invocation, and dbt's unit tests run only where a test asks for them (one test runs them
    all: test_end_to_end's quick check). A parse is kept per warehouse file name, which DuckDB takes
    as the database every relation of the manifest is named in."""

    manifests: dict[tuple[str, str], Any] = field(default_factory=dict)

    def manifest(self, settings: Settings) -> Any:
        key = (settings.target, Path(settings.warehouse).stem if settings.target == "local" else "")
        if key not in self.manifests:
            self.manifests[key] = transform.run_dbt(settings, ["parse", "--quiet"])
        return self.manifests[key]

    def run(self, settings: Settings, *args: str) -> Any:
        """``dbt <args>`` in this process on the parsed project; raises when it fails."""
        return transform.run_dbt(settings, list(args), manifest=self.manifest(settings))

    def build(self, settings: Settings, *args: str, unit_tests: bool = False) -> Any:
        """``dbt build``: every model and data test, and the unit tests only with ``unit_tests``."""
        skip = () if unit_tests else ("--exclude-resource-type", "unit_test")
        return self.run(settings, "build", *skip, *args)


# The Kafka clients' matrix belongs to the adapters' contract tests (the API's producer, the sink's
# consumer, exactly once across kills and outages), which take both clients (the `stack` fixture's
# parameters); whole flows, and what no Kafka client changes, run on the default client only.
default_kafka_client_only = pytest.mark.parametrize(
    "stack", [Settings.model_fields["kafka_client"].default], indirect=True
)


@dataclass
class KinesisServers:
    """Each real local Kinesis, started once for the session (on a free port) by the first test that
    needs it."""

    state_dir: Path
    running: dict[str, KinesisServer] = field(default_factory=dict)

    def get(self, name: str) -> KinesisServer:
        if name not in self.running:
            settings = Settings(
                state_dir=self.state_dir / name, kinesis_server=name, kinesis_port=free_port(), streams=()
            )
            self.running[name] = KinesisServer(settings)
            self.running[name].up()
        return self.running[name]

    def settings_on(self, name: str, prefix: str, shards: int, **more: Any) -> Settings:
        """Settings for one test on server ``name``: streams of its own (``<prefix>-<run>-<table>``,
        created with ``shards`` shards each), and ``more``."""
        server, run = self.get(name), uuid.uuid4().hex[:8]
        settings = Settings(
            state_dir=server.settings.state_dir,
            kinesis_server=server.settings.kinesis_server,
            kinesis_port=server.settings.kinesis_port,
            kinesis_shards=shards,
            streams=tuple(f"{prefix}-{run}-{table}" for table in RAW_TABLES),
            **more,
        )
        KinesisServer(settings).ensure_streams()
        return settings


def plain_dbt(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """dbt as its users run it: its own command, the repository's project and profile."""
    dbt = str(Path(sys.executable).parent / "dbt")
    command = [dbt, *args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


# --- records counted as multisets: a record stored twice counts twice ----------------------------


def _text(value: object) -> str | None:
    """A payload value as bronze keeps it (strings unchanged, anything else as its JSON), numbers
    in one spelling: bronze may hold the double 121.0 as "121" or "121.0"."""
    text = value if isinstance(value, str) or value is None else json.dumps(value)
    try:
        return repr(float(text)) if text is not None else None
    except ValueError:
        return text


def record(label: str, table: str, values: dict) -> tuple:
    """A record's identity for counting: a label (its topic, or its table) and every payload field
    of ``table`` as bronze holds it."""
    return (label, *(_text(values.get(field)) for field in payload_fields(table)))


def generated(source: str, seed: int, start: int, count: int, tables: dict[str, str]) -> Counter:
    """The multiset of records in posts start .. start+count-1 of an emulator source, labelled by
    ``tables`` ({label: table}: a topic, or the table itself)."""
    posts = make_source(source, seed).batch(start, count)
    return Counter(
        record(label, table, values) for label, table in tables.items() for values in posts.table(table).to_pylist()
    )


def in_tables(lake: Lake, tables: dict[str, str]) -> Counter:
    """The multiset of records in bronze ``tables`` ({label: bronze table}, a batch or a stream
    table): a record loaded twice counts twice."""
    found: Counter = Counter()
    for label, table in tables.items():
        delta, carries = lake.delta_table(table), TABLES[table].carries
        assert carries is not None, f"{table} holds no raw records"
        for row in delta.to_pyarrow_table().to_pylist() if delta is not None else []:
            found[record(label, carries, row)] += 1
    return found


def posted(settings: Settings, start: int, count: int) -> Counter:
    """The multiset of records in posts start .. start+count-1 of the synthetic source the tests post."""
    return generated("synthetic", 7, start, count, settings.topic_tables)


def in_bronze(settings: Settings) -> Counter:
    """The multiset of records in the batch path's bronze tables."""
    return in_tables(Lake.from_settings(settings), settings.topic_tables)


def in_s3(settings: Settings) -> Counter:
    """The multiset of records in the sink's objects (an empty line is an offset without a record)."""
    client, found = s3_client(settings), Counter()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket, Prefix="raw/"):
        for item in page.get("Contents", []):
            raw = parse_object_key(item["Key"])
            lines = client.get_object(Bucket=settings.s3_bucket, Key=raw.key)["Body"].read().splitlines()
            table = settings.topic_tables[raw.topic]
            found.update(record(raw.topic, table, json.loads(line)) for line in lines if line)
    return found


def _comparable(value: object) -> object:
    return round(value, 6) if isinstance(value, float) else value


GOOD_PIN = {
    "unique_id": "5b4a4e0c-2f3e-4b5f-9c1d-0a1b2c3d4e5f",
    "title": "Ideas",
    "description": "Nice…\u00a0",
    "poster_name": "Dirt Tester",
    "follower_count": "12k",
    "tag_list": "a,b",
    "is_image_or_video": "image",
    "image_src": "https://i.pinimg.com/x.jpg",
    "downloaded": 1,
    "save_location": "Local save in /data/art",
    "category": "art",
}
GOOD_GEO = {"timestamp": "2020-08-28 03:52:47", "latitude": -23.5, "longitude": 120.25, "country": "Chad"}
GOOD_USER = {"first_name": "Ada", "last_name": "Byron", "age": 36, "date_joined": "2016-01-01T10:00:00"}


def dirty_post(key: int, pin: dict | None = None, geo: dict | None = None, user: dict | None = None) -> dict:
    """A post whose records differ from a clean one by the given fields (None: the record is missing)."""
    return {
        "pin": None if pin is None else {"index": key, **GOOD_PIN, **pin},
        "geo": None if geo is None else {"ind": key, **GOOD_GEO, **geo},
        "user": None if user is None else {"ind": key, **GOOD_USER, **user},
    }


def dirty_posts() -> list[dict]:
    """Every kind of dirt of RAW_DATA.md, on keys of their own (90,000 and up) unless a correction."""
    same: dict = {}
    dirt = [
        # values that do not parse: nulled and flagged
        dirty_post(90_001, {"follower_count": "12.5k"}, same, same),
        dirty_post(90_002, {"follower_count": "abc", "downloaded": 2}, same, same),
        dirty_post(90_003, {"follower_count": "99999999999999999999M"}, same, same),
        dirty_post(90_004, same, {"timestamp": "2019-8-9 1:2:3"}, same),
        dirty_post(90_005, same, {"timestamp": "2019-02-30 00:00:00", "latitude": "north"}, same),
        dirty_post(90_006, same, {"timestamp": "2020-08-28"}, same),
        dirty_post(90_007, same, {"timestamp": "2020-08-28T03:52:47Z", "longitude": "1e999"}, same),
        dirty_post(90_008, same, same, {"age": 24.5}),
        dirty_post(90_009, same, same, {"age": "twenty"}),
        dirty_post(90_010, same, same, {"age": 99_999_999_999}),
        dirty_post(90_011, same, same, {"date_joined": "2016-1-1 10:00:00"}),
        # placeholders followed by trailing spaces are placeholders
        dirty_post(90_012, {"poster_name": "User Info Error   ", "follower_count": "User Info Error "}, same, same),
        dirty_post(90_013, {"title": "No Title Data Available  ", "poster_name": "Spacey Poster   "}, same, same),
        # values outside a known list: kept, counted, shown in the marts
        dirty_post(90_014, {"category": "not-a-category"}, {"country": "Nowhere"}, same),
        dirty_post(
            90_015, {"category": "not-a-category", "is_image_or_video": "hologram"}, {"country": "Nowhere"}, same
        ),
        dirty_post(90_016, {"category": None}, same, same),
        dirty_post(90_017, same, {"country": None}, same),
        # people: unknown name, age or join date leave the person marts; an age under 18 has no group
        dirty_post(90_018, same, same, {"last_name": None}),
        dirty_post(90_019, same, same, {"age": 15, "first_name": "Young"}),
        # posts missing a partner record: left out of every mart, counted
        dirty_post(90_020, same, None, same),
        dirty_post(90_021, None, same, None),
        dirty_post(90_022, same, None, None),
    ]
    # a corrected, re-sent record replaces the copy ingested before it
    correction = dirty_post(90_001, {"follower_count": "13k", "poster_name": "Corrected Poster"}, same, same)
    return [*dirt, correction]


def append_dirty_posts(lake: Lake) -> list[dict]:
    """Append ``dirty_posts()`` to bronze, one append each (a later copy is ingested later), and two
    records no loader can identify; returns the posts."""
    posts = dirty_posts()
    for position, post in enumerate(posts):
        for table in ("pin", "geo", "user"):
            if post[table] is not None:
                append(lake, table, [post[table]], stream="dirt", start=position, source="test")
    append(lake, "pin", ["not json", {"index": "seven"}], stream="junk", start=0, source="test")
    return posts


def assert_marts_equal_reference(settings: Settings, records: list[dict]) -> None:
    """Every mart of the warehouse equals the plain-Python computation, row for row, in any order."""
    tables = {table: [r[table] for r in records if r[table] is not None] for table in ("pin", "geo", "user")}
    expected = reference.marts_from_tables(tables["pin"], tables["geo"], tables["user"])
    marts = reading.marts(settings)
    assert set(expected) == set(marts)
    for mart in marts:
        want = Counter(tuple(_comparable(v) for v in row) for row in expected[mart])
        rows = reading.read_mart(settings, mart).to_pylist()
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


def eventually(check: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    """Whether ``check`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def prometheus_value(prometheus_url: str, query: str) -> float | None:
    """The value of an instant query on Prometheus' HTTP API (one series, or None when there is none)."""
    answer = requests.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
    answer.raise_for_status()
    result = answer.json()["data"]["result"]
    assert len(result) <= 1, f"{query} gives several series: {result}"
    return float(result[0]["value"][1]) if result else None


def answers(url: str) -> bool:
    """Whether ``url`` answers a GET with a success."""
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def pinpipe_here(settings: Settings | None, *args: str, **env: str) -> Done:
    """`pinpipe` run in this process, as its entry point runs it (its own arguments, environment and
    streams, by click's CliRunner isolation): for its messages, where no signal, pipe or process is
    under test, without a Python start-up each."""
    environment = {"COLUMNS": "200", **(settings.environment() if settings else {}), **env}
    # the width a process started with these COLUMNS would have (the console read them at import)
    width = int(environment["COLUMNS"])
    with (
        CliRunner().isolation(env=environment) as (out, err, _),
        patch.object(sys, "argv", ["pinpipe", *args]),
        patch.object(output.console, "_width", width),
        patch.object(output.errors, "_width", width),
    ):
        try:
            cli.main()
        except SystemExit as exit:
            code = exit.code
        sys.stdout.flush()
        sys.stderr.flush()
        said, told = out.getvalue().decode(), err.getvalue().decode()  # closed when the isolation ends
    assert isinstance(code, int), code
    return Done(code, said, told)


def one_line_error(done: Done, code: int, *phrases: str) -> None:
    """The command failed with ``code`` and said so in one line holding each of ``phrases``."""
    assert done.code == code, done.out + done.err
    assert len(done.error_lines) == 1, done.err
    assert done.error_lines[0].startswith("Error: "), done.err
    assert "Traceback" not in done.out + done.err
    for phrase in phrases:
        assert phrase in done.error_lines[0], done.err
