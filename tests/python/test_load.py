"""Loading raw JSON-lines objects from a local folder: the sink's layout and backfill files, exactly
once, through the same loader as the bucket."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from unittest.mock import patch

import pytest
from prometheus_client import CollectorRegistry

from ingestion.bronze import ForeignBronze, append, refuse_foreign_bronze, spark_app_id
from ingestion.config import Settings
from ingestion.lake import QUARANTINE, Lake
from ingestion.load import GapError, NoRawObjects, RawObjectLoader, load_raw_objects
from ingestion.metrics import BronzeMetrics
from ingestion.object_keys import object_key
from ingestion.post_sources import make_source

from helpers import in_tables, one_line_error, pinpipe_here, record


def _write(folder: Path, key: str, records: list[object]) -> None:
    path = folder / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _rows(settings: Settings, table: str) -> Counter[tuple[str, int]]:
    """(stream, offset) of every row, as a multiset: a duplicate counts twice."""
    delta = Lake.from_settings(settings).delta_table(table)
    rows = delta.to_pyarrow_table(columns=["_stream", "_offset"]).to_pylist() if delta is not None else []
    return Counter((r["_stream"], r["_offset"]) for r in rows)


def test_sink_objects_and_backfill_files_in_a_folder_load_exactly_once(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    posts = make_source("synthetic", 4).batch(0, 300)
    pins = posts.table("pin").to_pylist()
    # two overlapping objects of partition 0 (a restarted sink), one of partition 1
    _write(folder, object_key("", "pin", 0, 0).lstrip("/"), pins[:100])
    _write(folder, object_key("", "pin", 0, 50).lstrip("/"), pins[50:150])
    _write(folder, object_key("", "pin", 1, 0).lstrip("/"), pins[150:200])
    # a backfill file, not in the sink's layout, with one line no loader can identify
    _write(folder, "geo/backfill/2020.jsonl", [*posts.table("geo").to_pylist()[:40], "not json"])

    load_raw_objects(settings, source=str(folder))
    load_raw_objects(settings, source=str(folder))  # a rerun finds nothing new

    pin_rows = _rows(settings, "pin")
    assert pin_rows == Counter(
        {**{("kafka/pin/0", o): 1 for o in range(150)}, **{("kafka/pin/1", o): 1 for o in range(50)}}
    )
    assert _rows(settings, "geo") == Counter({("file/geo/backfill/2020.jsonl", o): 1 for o in range(40)})
    assert _rows(settings, QUARANTINE) == Counter({("file/geo/backfill/2020.jsonl", 40): 1})
    lake = Lake.from_settings(settings)
    assert in_tables(lake, {"pin": "pin"}) == Counter(record("pin", "pin", pin) for pin in pins[:200])
    assert in_tables(lake, {"geo": "geo"}) == Counter(record("geo", "geo", geo) for geo in posts.geo.to_pylist()[:40])

    # the backfill file grows: only its new lines load
    _write(
        folder,
        "geo/backfill/2020.jsonl",
        [*posts.table("geo").to_pylist()[:40], "not json", *posts.table("geo").to_pylist()[40:45]],
    )
    load_raw_objects(settings, source=str(folder))
    assert _rows(settings, "geo") == Counter(
        {("file/geo/backfill/2020.jsonl", o): 1 for o in (*range(40), *range(41, 46))}
    )


def test_a_missing_range_of_offsets_stops_the_load_instead_of_being_skipped(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    pins = make_source("synthetic", 4).batch(0, 30).table("pin").to_pylist()
    _write(folder, object_key("", "pin", 0, 0).lstrip("/"), pins[:10])
    _write(folder, object_key("", "pin", 0, 20).lstrip("/"), pins[20:30])  # offsets 10 .. 19 never stored
    with pytest.raises(GapError, match=r"kafka/pin/0: bronze holds offsets below 10, the next object .* starts at 20"):
        load_raw_objects(settings, source=str(folder))
    assert _rows(settings, "pin") == Counter({("kafka/pin/0", o): 1 for o in range(10)})


def test_a_source_that_is_not_a_folder_is_refused_with_what_to_give(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(NoRawObjects, match="is not a folder"):
        load_raw_objects(settings, source=str(tmp_path / "missing"))


def test_the_loader_counts_appends_and_quarantine_and_knows_each_tables_newest_row(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "raw"
    pins = make_source("synthetic", 4).batch(0, 30).table("pin").to_pylist()
    _write(folder, object_key("", "pin", 0, 0).lstrip("/"), [*pins, "not json", {"no": "key"}])
    observed = BronzeMetrics(CollectorRegistry())
    load_raw_objects(settings, source=str(folder), metrics=observed)

    def sample(name: str, table: str) -> float | None:
        return observed.registry.get_sample_value(name, {"table": table})

    assert sample("pinpipe_bronze_records_appended_total", "pin") == 30
    assert sample("pinpipe_bronze_records_quarantined_total", "pin") == 2
    assert sample("pinpipe_bronze_commit_seconds_count", "pin") == 1
    newest = Lake.from_settings(settings).delta_table("pin").to_pyarrow_table(columns=["_ingested_at"])
    assert (
        sample("pinpipe_bronze_newest_ingested_timestamp_seconds", "pin")
        == max(row["_ingested_at"] for row in newest.to_pylist()).timestamp()
    )
    assert sample("pinpipe_bronze_newest_ingested_timestamp_seconds", "geo") is None  # nothing there yet

    # a loader started later knows the newest row from the Delta log (its statistics hold
    # milliseconds) before it loads anything
    later = BronzeMetrics(CollectorRegistry())
    RawObjectLoader(settings, str(folder), later)
    assert later.registry.get_sample_value(
        "pinpipe_bronze_newest_ingested_timestamp_seconds", {"table": "pin"}
    ) == pytest.approx(sample("pinpipe_bronze_newest_ingested_timestamp_seconds", "pin"), abs=0.001)


# --- the ingestion engines keep to their own bronze (the Spark jobs themselves: test_spark_ingest.py) --


def _spark_loaded(lake: Lake) -> None:
    """A bronze pin table as the Spark objects job leaves it: its batch's transaction in the log."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    from ingestion.lake import table_schema

    write_deltalake(
        lake.uri("pin"),
        table_schema("pin").empty_table(),
        mode="append",
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id=spark_app_id("objects"), version=0)]),
    )


def test_the_python_loader_refuses_bronze_a_spark_job_writes(settings: Settings, tmp_path: Path) -> None:
    _spark_loaded(Lake.from_settings(settings))
    (tmp_path / "raw" / "topics").mkdir(parents=True)
    done = pinpipe_here(settings, "load", "--from", str(tmp_path / "raw"))
    one_line_error(done, 2, "loaded by the Spark objects job", "`pinpipe load --engine spark`")


def test_a_spark_job_refuses_bronze_another_loader_wrote_until_its_checkpoint_exists(settings: Settings) -> None:
    lake = Lake.from_settings(settings)
    append(lake, "pin", [{"index": 1, "title": "t"}], stream="kafka/pin/0", start=0, source="test")
    with pytest.raises(ForeignBronze, match="a lake of its own"):
        refuse_foreign_bronze(lake, "kafka", started=False)
    refuse_foreign_bronze(lake, "kafka", started=True)  # its own rows since its first run
    _spark_loaded(lake)
    with pytest.raises(ForeignBronze):  # the other Spark job's rows are foreign too
        refuse_foreign_bronze(lake, "kafka", started=False)


def test_the_engine_a_load_needs_is_named_in_one_line(settings: Settings) -> None:
    one_line_error(pinpipe_here(settings, "load", "--from", "kafka"), 2, "python loader", "--engine spark")
    with patch("ingestion.spark_ingest.find_spec", return_value=None):
        one_line_error(pinpipe_here(settings, "load", "--engine", "spark"), 2, "make spark")
    done = pinpipe_here(settings, "load", "--engine", "flink")
    assert done.code == 2
    assert "flink" in done.err


def test_a_spark_objects_job_reads_only_what_its_lake_was_loaded_from(settings: Settings, tmp_path: Path) -> None:
    """Spark's file source knows an object by its path: a copy elsewhere would load again. Checked
    before Spark starts (no JVM here), as are a source without the sink's layout and the batch bound
    asked of the Python loader."""
    copy = tmp_path / "copy"
    (copy / "topics").mkdir(parents=True)
    job = Path(settings.lake) / "_spark" / "objects"
    (job / "checkpoint").mkdir(parents=True)
    (job / "checkpoint" / "metadata").write_text('{"id": "a-query"}')  # as Spark leaves a started job
    (job / "source").write_text(str(tmp_path / "raw"))
    done = pinpipe_here(settings, "load", "--engine", "spark", "--from", str(copy))
    one_line_error(done, 2, f"reads {tmp_path / 'raw'}", "would load the same records again", "a lake of its own")
    done = pinpipe_here(settings, "load", "--engine", "spark", "--from", str(tmp_path))
    one_line_error(done, 2, f"no raw objects under {tmp_path}/topics/", "holds topics/")
    done = pinpipe_here(settings, "load", "--max-per-batch", "3")
    one_line_error(done, 2, "--engine spark")
