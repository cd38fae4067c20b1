"""Kill tests at exact points of the commit windows (``ingestion.failpoints``): each process dies
there by SIGKILL, a rerun finishes the job, and what bronze (or S3) holds is compared as a multiset
of records with what was sent: 0 lost, 0 duplicated.

The points are the moments a random kill almost never hits: between the three tables' commits of
one batch of posts, between the quarantine commit and the data commit, between a sink's S3 put and
its offset commit, between a stream consumer's two tables' commits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ingestion.bronze import committed_offset
from ingestion.failpoints import ENVIRONMENT_VARIABLE, POINTS
from ingestion.lake import QUARANTINE, Lake
from ingestion.object_keys import object_key
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES

from helpers import generated, in_tables, record

PINPIPE = str(Path(sys.executable).parent / "pinpipe")
BATCH_TABLES = {table: table for table in RAW_TABLES}


def _killed_at(point: str, command: list[str], env: dict[str, str]) -> None:
    """Run ``command`` with the failpoint set and check that it died there, not before or after."""
    finished = subprocess.run(
        command, env={**os.environ, **env, ENVIRONMENT_VARIABLE: point}, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == -signal.SIGKILL, (
        f"{command[1:]} was not killed at {point} (exit {finished.returncode}): {finished.stderr[-2000:]}"
    )


def test_every_failpoint_is_placed_in_the_code_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    source = "".join(path.read_text() for path in Path("ingestion").rglob("*.py"))
    for point in POINTS:
        assert f'failpoint("{point}")' in source, f"{point} is listed but placed nowhere"
    finished = subprocess.run(
        [PINPIPE, "--lake", str(tmp_path / "lake"), "emulate", "--posts", "10"],
        env={**os.environ, ENVIRONMENT_VARIABLE: "load.posts.after_tabel"},
        capture_output=True,
        text=True,
    )
    errors = [line for line in finished.stderr.splitlines() if line.strip()]
    assert finished.returncode == 2, finished.stderr
    assert len(errors) == 1, finished.stderr
    assert "no such failpoint" in errors[0]


def test_a_post_loader_killed_between_two_tables_commits_resumes_each_table_where_it_stopped(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    command = [PINPIPE, "--lake", lake.root, "emulate", "--source", "synthetic", "--seed", "4"]
    # batches of 1,000 posts, three tables each: the 4th pass is after pin's commit of the second batch
    _killed_at("load.posts.after_table@4", [*command, "--posts", "3000", "--batch-size", "1000"], {})
    stream = "emulator/synthetic/seed=4"
    assert {table: committed_offset(lake, table, stream) for table in RAW_TABLES} == {
        "pin": 2_000,
        "geo": 1_000,
        "user": 1_000,
    }, "the kill did not leave the tables out of step: the test would prove nothing"

    # the rerun loads 1,000 new posts after those all three tables hold, first filling geo and user
    subprocess.run([*command, "--posts", "1000", "--batch-size", "1000"], check=True, capture_output=True)
    assert in_tables(Lake(lake.root), BATCH_TABLES) == generated("synthetic", 4, 0, 2_000, BATCH_TABLES)


def _raw_objects(folder: Path, objects: int = 5) -> tuple[Counter, Counter]:
    """Sink objects of 200 pin records each, a few of them unidentifiable; the multisets of the good
    records and of the bad lines."""
    pins = make_source("synthetic", 8).batch(0, 200 * objects).table("pin").to_pylist()
    good: Counter = Counter()
    bad: Counter = Counter()
    lines = []
    for offset, pin in enumerate(pins):
        if offset % 97 == 13:
            line = "not json" if offset % 2 else json.dumps({**pin, "index": "seven"})
            bad[line] += 1
        else:
            line = json.dumps(pin)
            good[record("pin", "pin", pin)] += 1
        lines.append(line)
    for start in range(0, len(pins), 200):
        path = folder / object_key("", "pin", 0, start).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines[start : start + 200]) + "\n")
    return good, bad


def _quarantined(lake: Lake) -> Counter:
    delta = lake.delta_table(QUARANTINE)
    return (
        Counter(row["raw_record"] for row in delta.to_pyarrow_table().to_pylist()) if delta is not None else Counter()
    )


@pytest.mark.parametrize(
    "point",
    [
        "bronze.after_quarantine_commit",  # the bad records are in quarantine, the good ones not yet in pin
        "load.raw.after_commit@3",  # three commits of objects landed, the rest not
    ],
)
def test_a_raw_object_loader_killed_inside_its_commit_window_loads_every_record_once(
    tmp_path: Path, point: str
) -> None:
    folder, lake = tmp_path / "raw", Lake(str(tmp_path / "lake"))
    good, bad = _raw_objects(folder)
    command = [PINPIPE, "--lake", lake.root, "load", "--from", str(folder)]
    # a commit per object: 200 records, so the window between objects is hit too
    _killed_at(point, command, {"PINPIPE_LOAD_COMMIT_RECORDS": "150"})
    assert sum(_quarantined(lake).values()) > 0, "nothing was quarantined before the kill"
    assert in_tables(Lake(lake.root), {"pin": "pin"}).total() < good.total(), "everything loaded before the kill"

    subprocess.run(command, check=True, capture_output=True)
    lake = Lake(lake.root)
    assert in_tables(lake, {"pin": "pin"}) == good
    assert _quarantined(lake) == bad


def test_two_loaders_at_once_both_finish_and_load_every_record_once(tmp_path: Path) -> None:
    """Two `pinpipe load` of the same objects into the same lake: their commits conflict, and the one
    that loses reads the offsets the other committed and appends only what is still missing."""
    folder, lake = tmp_path / "raw", Lake(str(tmp_path / "lake"))
    good, bad = _raw_objects(folder, objects=30)
    command = [PINPIPE, "--lake", lake.root, "load", "--from", str(folder)]
    env = {**os.environ, "PINPIPE_LOAD_COMMIT_RECORDS": "150"}  # a commit per object: many chances to collide
    loaders = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    said = [loader.communicate(timeout=300)[0] for loader in loaders]
    assert [loader.returncode for loader in loaders] == [0, 0], said
    lake = Lake(lake.root)
    assert in_tables(lake, {"pin": "pin"}) == good
    assert _quarantined(lake) == bad
