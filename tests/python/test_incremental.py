"""Incremental staging, int_posts_enriched and int_people: builds that read only what is new end where a build
from all of bronze ends, whatever arrives between them (new posts, re-sent copies, corrections), on
DuckDB and on Spark; a staging built from another bronze, or a table of an earlier version of the
project, is caught, never merged into."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ingestion import reading, transform, warehouse
from ingestion.bronze import append
from ingestion.bronze_rows import to_bronze_rows
from ingestion.config import Settings
from ingestion.lake import Lake, table_schema
from ingestion.load import load_posts
from ingestion.post_sources import make_source
from ingestion.schemas import KEY_FIELD, RawTable

from helpers import Dbt, append_dirty_posts, assert_marts_equal_reference, pinpipe_here, plain_dbt

STAGING = ("stg_pinterest__pins", "stg_pinterest__geo", "stg_pinterest__users")
INCREMENTAL = [
    *(f"staging.{model}" for model in STAGING),
    *(f"intermediate.{model}" for model in ("int_posts_enriched", "int_people", "int_post_checks")),
]
# builds of only what a test is about: the staging models, or up to int_posts_enriched or int_people, with their
# tests (cautious: not the tests that also read a model or seed left out)
STAGING_ONLY = ("--select", "staging.pinterest", "--indirect-selection", "cautious")
UP_TO_ENRICHED = ("--select", "staging.pinterest +int_posts_enriched", "--indirect-selection", "cautious")
UP_TO_PEOPLE = ("--select", "staging.pinterest +int_people", "--indirect-selection", "cautious")


# the watermarks: which bronze version a row was read from differs by when it was read (a build from
# scratch labels every row with the version it read), not what it holds
WATERMARKS = {"_bronze_version", "_pin_version", "_geo_version", "_user_version", "_build"}


def _warehouse(settings: Settings, *, marts: bool) -> dict[str, Counter]:
    """Every incremental model (and mart) as a multiset of rows (lineage columns included, the
    watermarks left out)."""
    relations = list(INCREMENTAL)
    relations += [f"marts.{mart}" for mart in [*reading.marts(settings), "data_quality"]] if marts else []
    found = {}
    for relation in relations:
        schema, name = relation.split(".")
        if settings.target == "spark":
            from pyspark.sql import SparkSession

            table = SparkSession.builder.getOrCreate().table(relation)
            kept = [column for column in table.columns if column not in WATERMARKS]
            rows = [tuple(row) for row in table.select(*kept).collect()]
        else:
            with warehouse.connect_warehouse(settings, read_only=True) as connection:
                columns = [c[0] for c in connection.execute(f"select * from {schema}.{name} limit 0").description]
                kept = ", ".join(f'"{column}"' for column in columns if column not in WATERMARKS)
                rows = connection.execute(f"select {kept} from {schema}.{name}").fetchall()
        found[relation] = Counter(tuple(_hashable(v) for v in row) for row in rows)
    return found


def _hashable(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6)
    return tuple(value) if isinstance(value, list) else value


def _day(lake: Lake, settings: Settings, day: int) -> list[dict]:
    """One day's arrivals: 400 new real posts, the first 50 of them sent again unchanged,
    corrections of posts of every earlier day (a user corrected moves the post to another person),
    and a post whose writer stamped its records two days earlier but committed them only now;
    returns the records in ingestion order."""
    source = make_source("aicore", 21)
    load_posts(settings, source, 400 * (day + 1))
    new = list(source.batch(400 * day, 400).records())
    for table in ("pin", "geo", "user"):
        append(lake, table, [r[table] for r in new[:50]], stream=f"resent/{day}", start=0, source="test")
    corrections = []
    for earlier in range(day):  # a post of every earlier day gets its pin, another its geo, a third its user corrected
        pin, geo, user = (next(iter(source.batch(400 * earlier + day + n, 1).records())) for n in (0, 100, 200))
        renamed = {**pin["pin"], "poster_name": f"Renamed {day}", "follower_count": f"{day}k"}
        corrections += [
            {"pin": renamed, "geo": None, "user": None},
            {"pin": None, "geo": {**geo["geo"], "country": f"Moved {day}"}, "user": None},
            {"pin": None, "geo": None, "user": {**user["user"], "first_name": f"Renamed {day}"}},
        ]
    for table in ("pin", "geo", "user"):
        fixed = [correction[table] for correction in corrections if correction[table] is not None]
        if fixed:
            append(lake, table, fixed, stream=f"corrections/{day}", start=0, source="test")
    late = next(make_source("synthetic", day).batch(0, 1).records())
    late = {table: late[table] | {KEY_FIELD[table]: 900_000 + day} for table in ("pin", "geo", "user")}
    for table in ("pin", "geo", "user"):
        _append_stamped(lake, table, late[table], datetime.now(UTC) - timedelta(days=2))
    return [*new, *new[:50], *corrections, late]


def _incremental_equals_full_refresh(
    settings: Settings, dbt: Dbt, *, days: int, in_first_build: int, whole_project: bool
) -> None:
    """Days of arrivals, the first ``in_first_build`` of them in the first build and each later one
    built incrementally, then a build from scratch: the same rows. Before the last day bronze pin
    is compacted and the files it replaced deleted, so that day's build reads the compacted file.
    On Spark only the incremental models are built (the marts are rebuilt from them either way,
    and each Spark build of the whole project costs minutes)."""
    lake = Lake.from_settings(settings)
    records = [*append_dirty_posts(lake)]
    for day in range(in_first_build):
        records += _day(lake, settings, day)
    selection = [] if whole_project else list(UP_TO_PEOPLE)
    dbt.build(settings, *selection, "--full-refresh")  # the first build (a session may share Spark's)
    for day in range(in_first_build, days):
        records += _day(lake, settings, day)
        if day == days - 1:
            pin = DeltaTable(lake.uri("pin"))
            pin.optimize.compact()
            pin.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        dbt.build(settings, *selection)  # incremental: only what arrived since the last build
    incremental = _warehouse(settings, marts=whole_project)

    dbt.build(settings, *selection, "--full-refresh")
    rebuilt = _warehouse(settings, marts=whole_project)
    for relation, rows in rebuilt.items():
        assert incremental[relation] == rows, (
            f"{relation}: only incremental {incremental[relation] - rows}, only rebuilt {rows - incremental[relation]}"
        )
        assert rows, f"{relation} is empty: the comparison would prove nothing"
    if whole_project:
        assert_marts_equal_reference(settings, records)


def test_incremental_staging_equals_a_full_refresh_on_duckdb(settings: Settings, dbt: Dbt) -> None:
    # a build a day: each day's build starts where the one before left staging
    _incremental_equals_full_refresh(settings, dbt, days=3, in_first_build=0, whole_project=True)


@pytest.mark.slow
@pytest.mark.xdist_group("spark")  # one Spark session per test session: its tests share one worker
def test_incremental_staging_equals_a_full_refresh_on_spark(settings: Settings, dbt: Dbt, spark_warehouse: str) -> None:
    spark = settings.model_copy(update={"target": "spark", "spark_warehouse": spark_warehouse})
    # one incremental build, of the second day (new posts, copies sent again, corrections of posts
    # staging holds, a late commit, a compaction): Spark's log reading and merge are under test
    # here, the watermark's day-by-day steps on DuckDB
    _incremental_equals_full_refresh(spark, dbt, days=2, in_first_build=1, whole_project=False)


def _append_stamped(lake: Lake, table: RawTable, payload: dict[str, object], ingested_at: datetime) -> None:
    """``payload`` appended to bronze ``table`` as a writer that stamped it ``ingested_at`` and
    committed it only now would: `append` stamps the commit's own instant."""
    (row,) = to_bronze_rows(table, [payload])[0].to_pylist()
    schema = table_schema(table)
    row = dict.fromkeys(schema.names) | row | {"_stream": "late", "_ingested_at": ingested_at}
    write_deltalake(lake.uri(table), pa.Table.from_pylist([row], schema=schema), mode="append")


def test_a_row_committed_late_is_read_by_the_next_build_however_old_its_stamp(settings: Settings, dbt: Dbt) -> None:
    """The watermark is bronze's Delta version, not a time: rows a writer stamped long before
    staging's newest row but committed after the last build are read by the next build, and only
    once; a late copy of a held post still loses to the newer copy staging holds."""
    lake = Lake.from_settings(settings)
    load_posts(settings, make_source("aicore", 2), 300)
    dbt.build(settings, *STAGING_ONLY)
    post = next(make_source("aicore", 2).batch(300, 1).records())
    held = next(make_source("aicore", 2).batch(0, 1).records())
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    for table in ("pin", "geo", "user"):
        _append_stamped(lake, table, post[table] | {KEY_FIELD[table]: 999002}, two_days_ago)
    _append_stamped(lake, "geo", held["geo"] | {"country": "Late copy"}, two_days_ago)
    dbt.build(settings, *STAGING_ONLY)
    dbt.build(settings, *STAGING_ONLY)  # nothing new: nothing read again
    with warehouse.connect_warehouse(settings, read_only=True) as connection:
        for model in STAGING:
            assert connection.execute(f"select count(*) from staging.{model} where ind = 999002").fetchone() == (1,), (
                f"{model} missed the late row"
            )
        assert connection.execute(
            "select country from staging.stg_pinterest__geo where ind = ?", [held["geo"]["ind"]]
        ).fetchone() != ("Late copy",)


def test_bronze_rows_removed_or_a_log_cleaned_past_the_watermark_stop_plain_dbt_and_ask_for_a_rebuild(
    settings: Settings, dbt: Dbt
) -> None:
    lake = Lake.from_settings(settings)
    load_posts(settings, make_source("aicore", 4), 100)
    dbt.build(settings, *STAGING_ONLY)
    held = DeltaTable(lake.uri("geo")).version()
    DeltaTable(lake.uri("geo")).delete("_offset = 0")  # rows staging may hold are gone from bronze
    with pytest.raises(transform.DbtFailed) as failed:
        dbt.build(settings, *STAGING_ONLY)
    assert transform.rebuild_from_scratch_reason(failed.value.results) == (
        f"stg_pinterest__geo has read bronze.geo up to version {held}, and version {held + 1} removed rows from it"
    )
    dbt.build(settings, *STAGING_ONLY, "--full-refresh")

    held = DeltaTable(lake.uri("user")).version()
    load_posts(settings, make_source("aicore", 4), 150)  # a new commit, then cleaned up past a checkpoint
    user = DeltaTable(lake.uri("user"))
    user.create_checkpoint()
    (Path(lake.uri("user")) / "_delta_log" / f"{held + 1:020}.json").unlink()
    with pytest.raises(transform.DbtFailed) as failed:
        dbt.build(settings, *STAGING_ONLY)
    assert transform.rebuild_from_scratch_reason(failed.value.results) == (
        f"stg_pinterest__users has read bronze.user up to version {held}, and its Delta log no longer holds"
        f" version {held + 1} (cleaned up after a checkpoint)"
    )
    dbt.build(settings, *STAGING_ONLY, "--full-refresh")


def test_staging_built_from_another_lake_stops_plain_dbt_and_pinpipe_rebuilds_it(
    settings: Settings, tmp_path: Path
) -> None:
    # the other lake holds the same stream, longer: staging's newest row is there too, offset for
    # offset, but not ingested at the same instant
    other = settings.model_copy(update={"lake": str(tmp_path / "other-lake")})
    load_posts(settings, make_source("synthetic", 1), 500)
    load_posts(other, make_source("synthetic", 1), 800)
    # staging is what the guard is about: built alone, as `pinpipe transform --select` allows

    assert pinpipe_here(settings, "transform", *STAGING_ONLY[:2]).code == 0
    # dbt as its users run it, in its own process: its guard stops staging
    plain = plain_dbt("build", *STAGING_ONLY, env={**os.environ, **other.environment(), "COLUMNS": "200"})
    assert plain.returncode == 1
    assert "stg_pinterest__pins was built from another bronze" in plain.stdout
    assert "pinpipe transform --full-refresh" in plain.stdout

    # pinpipe knows which lake its last build read: it rebuilds staging at once, no dbt error first
    done = pinpipe_here(other, "transform", *STAGING_ONLY[:2])
    assert done.code == 0, done.out + done.err
    assert (
        f"the warehouse was built from the lake {settings.lake}: rebuilding the incremental models from {other.lake}"
        in done.out
    )
    assert "ERROR" not in done.out + done.err
    with warehouse.connect_warehouse(other, read_only=True) as connection:
        held = connection.execute("select count(*) from staging.stg_pinterest__pins").fetchone()
    assert held == (len({post["pin"]["index"] for post in make_source("synthetic", 1).batch(0, 800).records()}),)

    # where it does not know (a warehouse plain dbt built last), dbt's guard stops staging and pinpipe rebuilds it
    Path(f"{settings.warehouse}.lake").unlink()
    back = pinpipe_here(settings, "transform", *STAGING_ONLY[:2])
    assert back.code == 0, back.out + back.err
    assert "was built from another bronze" in back.out
    assert "rebuilding from scratch" in back.out
    # in one line: not first dbt's error for each staging model, asking for what pinpipe then does
    assert "ERROR" not in back.out + back.err
    assert "Compilation Error" not in back.out


def test_a_table_of_an_earlier_version_is_rebuilt_not_merged_into(settings: Settings, dbt: Dbt) -> None:
    load_posts(settings, make_source("aicore", 3), 200)
    dbt.build(settings, *UP_TO_ENRICHED)
    with warehouse.connect_warehouse(settings) as connection:  # as the project built it before the column
        connection.execute("alter table intermediate.int_posts_enriched drop column _pin_version")
    with pytest.raises(transform.DbtFailed) as failed:
        dbt.build(settings, *UP_TO_ENRICHED)
    assert transform.rebuild_from_scratch_reason(failed.value.results) == (
        "int_posts_enriched was built by an earlier version of this project, without `_pin_version`"
    )
    dbt.build(settings, *UP_TO_ENRICHED, "--full-refresh")


def _failed_tests(settings: Settings, dbt: Dbt, model: str) -> set[str]:
    """The data tests of ``model`` that fail, by name."""
    try:
        dbt.run(settings, "test", "--select", model)
    except transform.DbtFailed as failed:
        return {result.node.name for result in failed.results.results if result.status == "fail"}
    return set()


def test_the_tests_of_an_incremental_model_check_its_newest_build_or_every_row_when_asked(
    settings: Settings, dbt: Dbt
) -> None:
    """A key test on the rows the latest build merged proves what one on every row would; a copy of a
    key planted among the rows of an earlier build is found only when every row is tested."""
    load_posts(settings, make_source("aicore", 5), 200)
    dbt.build(settings, *STAGING_ONLY)
    load_posts(settings, make_source("aicore", 5), 250)
    dbt.build(settings, *STAGING_ONLY)
    pins = "staging.stg_pinterest__pins"
    with warehouse.connect_warehouse(settings) as connection:
        assert connection.execute(f"select distinct _build from {pins} order by 1").fetchall() == [(0,), (1,)]
        connection.execute(f"insert into {pins} select * from {pins} where _build = 0 limit 1")
    unique = "unique_stg_pinterest__pins_ind"
    assert _failed_tests(settings, dbt, "stg_pinterest__pins") == set()
    assert _failed_tests(settings.model_copy(update={"test_every_row": True}), dbt, "stg_pinterest__pins") == {unique}
    with warehouse.connect_warehouse(settings) as connection:
        connection.execute(f"insert into {pins} select * from {pins} where _build = 1 limit 1")
    assert _failed_tests(settings, dbt, "stg_pinterest__pins") == {unique}
