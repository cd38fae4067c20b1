from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from ingestion.bronze import append, committed_offset
from ingestion.config import Settings
from ingestion.lake import QUARANTINE, Lake
from ingestion.load import load_posts
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES

from helpers import generated, in_tables


def _rows(lake: Lake, table: str) -> list[dict]:
    delta = lake.delta_table(table)
    return delta.to_pyarrow_table().to_pylist() if delta is not None else []


def test_posts_land_once_per_table_with_raw_values_as_text(settings: Settings, lake: Lake) -> None:
    load_posts(settings, make_source("aicore", 1), 2_500, batch_size=1_000)
    expected = [r for b in [make_source("aicore", 1).batch(0, 2_500)] for r in b.records()]
    for table in RAW_TABLES:
        rows = sorted(_rows(lake, table), key=lambda r: r["_offset"])
        assert [r["_offset"] for r in rows] == list(range(2_500))
        assert {r["_stream"] for r in rows} == {"emulator/aicore/seed=1"}
        assert all(r["_ingested_at"] is not None and r["_batch_id"] for r in rows)
        for row, post in zip(rows, expected, strict=True):
            # text stays exactly as sent; numbers are kept as their JSON text
            assert {k: row[k] if isinstance(v, str) else json.loads(row[k]) for k, v in post[table].items()} == post[
                table
            ]


def test_loading_the_same_posts_twice_does_not_duplicate_them(settings: Settings, lake: Lake) -> None:
    source = make_source("synthetic", 5)
    load_posts(settings, source, 3_000, batch_size=1_000)
    again = load_posts(settings, source, 3_000, batch_size=1_000)
    assert again == []  # resumed at offset 3,000: nothing left to generate or append
    for table in RAW_TABLES:
        assert len(_rows(lake, table)) == 3_000


def test_a_longer_run_appends_only_the_new_posts(settings: Settings, lake: Lake) -> None:
    source = make_source("synthetic", 5)
    load_posts(settings, source, 1_234, batch_size=500)
    load_posts(settings, source, 3_000, batch_size=700)
    fresh = settings.model_copy(update={"lake": lake.root + "-fresh"})
    load_posts(fresh, source, 3_000, batch_size=1_000)
    for table in RAW_TABLES:
        key = "index" if table == "pin" else "ind"

        def content(rows: list[dict], key: str = key) -> list[tuple]:
            return sorted((r["_offset"], r[key]) for r in rows)

        assert content(_rows(lake, table)) == content(_rows(Lake.from_settings(fresh), table))
        assert len(_rows(lake, table)) == 3_000


def test_an_append_retried_after_its_commit_is_skipped_and_a_partial_overlap_is_trimmed(lake: Lake) -> None:
    records = [{"ind": i, "timestamp": "2020-01-01 00:00:00"} for i in range(10)]
    first = append(lake, "geo", records[:6], stream="s", start=0, source="test")
    retried = append(lake, "geo", records[:6], stream="s", start=0, source="test")
    overlapping = append(lake, "geo", records[4:], stream="s", start=4, source="test")
    assert (first.appended, retried.appended, retried.already_loaded) == (6, 0, 6)
    assert (overlapping.appended, overlapping.already_loaded) == (4, 2)
    assert sorted(r["_offset"] for r in _rows(lake, "geo")) == list(range(10))
    assert committed_offset(lake, "geo", "s") == 10


def test_unidentifiable_records_are_quarantined_with_the_reason_and_the_rest_load(lake: Lake) -> None:
    records: list[object] = [
        {"index": 1, "category": "art", "follower_count": "abc"},  # loads: staging flags the value
        "{not json",
        ["a", "list"],
        {"category": "art"},
        {"index": "seven"},
        {"index": True},
        b'{"index": 2, "category": "travel", "extra": {"nested": 1}}',
    ]
    result = append(lake, "pin", records, stream="s", start=100, source="object-key.json")
    assert (result.appended, result.quarantined) == (2, 5)

    loaded = {r["index"]: r for r in _rows(lake, "pin")}
    assert loaded["1"]["follower_count"] == "abc"
    assert loaded["2"]["_unknown_fields"] == '{"extra": {"nested": 1}}'
    quarantined = sorted(_rows(lake, QUARANTINE), key=lambda r: r["_offset"])
    assert [(q["line_number"], q["_offset"]) for q in quarantined] == [(2, 101), (3, 102), (4, 103), (5, 104), (6, 105)]
    reasons = [q["reason"] for q in quarantined]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "not a JSON object but list"
    assert reasons[2:] == [
        "field 'index' must be an integer key within bigint, got null",
        "field 'index' must be an integer key within bigint, got \"seven\"",
        "field 'index' must be an integer key within bigint, got true",
    ]
    assert quarantined[0]["raw_record"] == "{not json"
    assert quarantined[0]["table_name"] == "pin"
    assert all(q["_source"] == "object-key.json" for q in quarantined)

    # a retry after both commits changes nothing
    retry = append(lake, "pin", records, stream="s", start=100, source="object-key.json")
    assert (retry.appended, retry.quarantined) == (0, 0)
    assert len(_rows(lake, QUARANTINE)) == 5


def test_only_integer_keys_within_bigint_are_keys_from_json_text_or_from_arrow(lake: Lake) -> None:
    refused = ['"²"', '"١٢"', '"12"', "12.0", "1.5", "true", "false", "null", str(2**63), str(-(2**63) - 1), "[1]"]
    accepted = ["0", "-7", str(2**63 - 1), str(-(2**63))]
    lines = [f'{{"ind": {key}, "country": "Chad"}}'.encode() for key in [*refused, *accepted]]
    result = append(lake, "geo", lines, stream="s", start=0, source="test")
    assert (result.appended, result.quarantined) == (len(accepted), len(refused))
    assert sorted(int(r["ind"]) for r in _rows(lake, "geo")) == sorted(int(k) for k in accepted)
    assert sorted(r["_offset"] for r in _rows(lake, QUARANTINE)) == list(range(len(refused)))

    # parsed by pyarrow (the sink's objects): a float or text key column is not keyed either
    for column in (pa.array([1.0, 2.0]), pa.array(["1", "²"])):
        keyed = append(lake, "user", pa.table({"ind": column}), stream=f"arrow-{column.type}", start=0, source="t")
        assert keyed.appended == 0


def test_a_batch_of_only_bad_records_still_moves_the_offset(lake: Lake) -> None:
    append(lake, "user", ["x", "y"], stream="s", start=0, source="test")
    assert committed_offset(lake, "user", "s") == 2
    assert append(lake, "user", ["x", "y"], stream="s", start=0, source="test").quarantined == 0


def test_arrow_input_with_a_null_key_takes_the_per_record_path(lake: Lake) -> None:
    table = pa.table({"ind": [1, None], "country": ["Chad", "Peru"]})
    result = append(lake, "geo", table, stream="s", start=0, source="test")
    assert (result.appended, result.quarantined) == (1, 1)


def test_a_loader_killed_mid_load_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    lake, stream = Lake(str(tmp_path / "lake")), "emulator/synthetic/seed=9"
    script = (
        "from ingestion.config import Settings; from ingestion.post_sources import make_source;"
        "from ingestion.load import load_posts;"
        f"load_posts(Settings(lake={lake.root!r}), make_source('synthetic', 9), 40_000, batch_size=2_000)"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while committed_offset(lake, "user", stream) < 8_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = {table: committed_offset(lake, table, stream) for table in RAW_TABLES}
    assert 0 < min(partial.values()) < 40_000, partial

    load_posts(Settings(lake=lake.root), make_source("synthetic", 9), 40_000, batch_size=2_000)
    tables = {table: table for table in RAW_TABLES}
    assert in_tables(Lake(lake.root), tables) == generated("synthetic", 9, 0, 40_000, tables)
