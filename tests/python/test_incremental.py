"""Incremental staging and int_posts_enriched: builds that read only what is new end where a build
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
from deltalake import write_deltalake

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
INCREMENTAL = [*(f"staging.{model}" for model in STAGING), "intermediate.int_posts_enriched"]
# builds of only what a test is about: the staging models, or up to int_posts_enriched, with their
# tests (cautious: not the tests that also read a model or seed left out)
STAGING_ONLY = ("--select", "staging.pinterest", "--indirect-selection", "cautious")
UP_TO_ENRICHED = ("--select", "staging.pinterest +int_posts_enriched", "--indirect-selection", "cautious")


def _warehouse(settings: Settings, *, marts: bool) -> dict[str, Counter]:
    """Every incremental model (and mart) as a multiset of rows (lineage columns included)."""
    relations = list(INCREMENTAL)
    relations += [f"marts.{mart}" for mart in [*reading.marts(settings), "data_quality"]] if marts else []
    found = {}
    for relation in relations:
        schema, name = relation.split(".")
        if settings.target == "spark":
            from pyspark.sql import SparkSession

            rows = [tuple(row) for row in SparkSession.builder.getOrCreate().table(relation).collect()]
        else:
            with warehouse.connect_warehouse(settings, read_only=True) as connection:
                rows = connection.execute(f"select * from {schema}.{name}").fetchall()
        found[relation] = Counter(tuple(_hashable(v) for v in row) for row in rows)
    return found


def _hashable(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6)
    return tuple(value) if isinstance(value, list) else value


def _day(lake: Lake, settings: Settings, day: int) -> list[dict]:
    """One day's arrivals: 400 new real posts, the first 50 of them sent again unchanged, and
    corrections of posts of every earlier day; returns the records in ingestion order."""
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
    return [*new, *new[:50], *corrections]


def _incremental_equals_full_refresh(
    settings: Settings, dbt: Dbt, *, days: int, in_first_build: int, whole_project: bool
) -> None:
    """Days of arrivals, the first ``in_first_build`` of them in the first build and each later one
    built incrementally, then a build from scratch: the same rows. On Spark only the incremental
    models are built (the marts are rebuilt from them either way, and each Spark build of the whole
    project costs minutes)."""
    # no lookback: the days arrive seconds apart, and within one an increment would re-read them all
    settings = settings.model_copy(update={"staging_lookback_minutes": 0})
    lake = Lake.from_settings(settings)
    records = [*append_dirty_posts(lake)]
    for day in range(in_first_build):
        records += _day(lake, settings, day)
    selection = [] if whole_project else list(UP_TO_ENRICHED)
    dbt.build(settings, *selection, "--full-refresh")  # the first build (a session may share Spark's)
    for day in range(in_first_build, days):
        records += _day(lake, settings, day)
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
    # a build a day: the second day's build starts where the first one's left staging
    _incremental_equals_full_refresh(settings, dbt, days=2, in_first_build=0, whole_project=True)


@pytest.mark.slow
@pytest.mark.xdist_group("spark")  # one Spark session per test session: its tests share one worker
def test_incremental_staging_equals_a_full_refresh_on_spark(settings: Settings, dbt: Dbt, spark_warehouse: str) -> None:
    spark = settings.model_copy(update={"target": "spark", "spark_warehouse": spark_warehouse})
    # one incremental build, of the second day (new posts, copies sent again, corrections of posts
    # staging holds): Spark's merge is under test here, the watermark's day-by-day steps on DuckDB
    _incremental_equals_full_refresh(spark, dbt, days=2, in_first_build=1, whole_project=False)


def _append_stamped(lake: Lake, table: RawTable, payload: dict[str, object], ingested_at: datetime) -> None:
    """``payload`` appended to bronze ``table`` as a writer that stamped it ``ingested_at`` and
    committed it only now would: `append` stamps the commit's own instant."""
    (row,) = to_bronze_rows(table, [payload])[0].to_pylist()
    schema = table_schema(table)
    row = dict.fromkeys(schema.names) | row | {"_stream": "late", "_ingested_at": ingested_at}
    write_deltalake(lake.uri(table), pa.Table.from_pylist([row], schema=schema), mode="append")


def test_an_incremental_build_reads_only_rows_newer_than_staging_less_the_lookback(
    settings: Settings, dbt: Dbt
) -> None:
    lake = Lake.from_settings(settings)
    load_posts(settings, make_source("aicore", 2), 300)
    dbt.build(settings, *STAGING_ONLY)
    # a row whose writer stamped it two hours before staging's newest row: beyond the 60-minute
    # lookback, an incremental build does not re-read it (a lookback of 3 hours would)
    _append_stamped(lake, "geo", {"ind": 999001, "country": "Chad"}, datetime.now(UTC) - timedelta(hours=2))
    dbt.build(settings, *STAGING_ONLY)
    with warehouse.connect_warehouse(settings, read_only=True) as connection:
        assert connection.execute("select count(*) from staging.stg_pinterest__geo where ind = 999001").fetchone() == (
            0,
        )
    dbt.build(settings, *STAGING_ONLY, "--full-refresh")
    with warehouse.connect_warehouse(settings, read_only=True) as connection:
        assert connection.execute("select count(*) from staging.stg_pinterest__geo where ind = 999001").fetchone() == (
            1,
        )


def test_a_row_committed_late_within_the_lookback_reaches_staging_in_the_next_build(
    settings: Settings, dbt: Dbt
) -> None:
    """A post whose rows were stamped 30 minutes before staging's newest rows, but committed after
    the last build, is in staging after the next incremental build: the lookback re-reads it."""
    lake = Lake.from_settings(settings)
    load_posts(settings, make_source("aicore", 2), 300)
    dbt.build(settings, *STAGING_ONLY)
    models = dict(zip(("pin", "geo", "user"), STAGING, strict=True))
    with warehouse.connect_warehouse(settings, read_only=True) as connection:
        newest = {
            table: connection.execute(f"select max(_ingested_at) from staging.{model}").fetchone()[0]
            for table, model in models.items()
        }
    # a key no loaded post has: a late copy of a held key would lose to the newer copy anyway
    post = next(make_source("aicore", 2).batch(300, 1).records())
    for table in models:
        payload = post[table] | {KEY_FIELD[table]: 999002}
        _append_stamped(lake, table, payload, newest[table] - timedelta(minutes=30))
    dbt.build(settings, *STAGING_ONLY)
    with warehouse.connect_warehouse(settings, read_only=True) as connection:
        for model in models.values():
            assert connection.execute(f"select count(*) from staging.{model} where ind = 999002").fetchone() == (1,), (
                f"{model} missed the late row"
            )


def test_plain_dbt_refuses_a_lookback_that_is_not_a_whole_number_of_minutes(settings: Settings, dbt: Dbt) -> None:
    # pinpipe checks its settings itself; plain dbt reads the variable in the macro, where `| int`
    # alone made "abc" 0 and "-5" a window that skipped the newest rows
    load_posts(settings, make_source("aicore", 2), 100)
    dbt.run(settings, "run", "--select", "stg_pinterest__geo")  # built: the next runs are incremental
    for lookback in ("-5", "abc"):
        env = {**os.environ, **settings.environment(), "PINPIPE_STAGING_LOOKBACK_MINUTES": lookback}
        done = plain_dbt("run", "--select", "stg_pinterest__geo", env=env)
        assert done.returncode == 1, done.stdout
        expected = f'PINPIPE_STAGING_LOOKBACK_MINUTES must be a whole number of minutes, 0 or more (it is "{lookback}")'
        assert expected in done.stdout


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
        connection.execute("alter table intermediate.int_posts_enriched drop column _ingested_at")
    with pytest.raises(transform.DbtFailed) as failed:
        dbt.build(settings, *UP_TO_ENRICHED)
    assert transform.rebuild_from_scratch_reason(failed.value.results) == (
        "int_posts_enriched was built by an earlier version of this project, without `_ingested_at`"
    )
    dbt.build(settings, *UP_TO_ENRICHED, "--full-refresh")
