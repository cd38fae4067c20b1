"""The whole embedded slice: emulator → bronze Delta → dbt build on DuckDB → marts, checked against
an independent computation in plain Python (tests/python/reference.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from semantic_checks import assert_semantic_layer_agrees

from ingestion import reading, transform, warehouse
from ingestion.bronze import append
from ingestion.config import Settings
from ingestion.emulate import batches
from ingestion.lake import Lake
from ingestion.load import load_posts
from ingestion.post_sources import make_source

from helpers import Dbt, append_dirty_posts, assert_marts_equal_reference


def test_a_small_bronze_with_every_kind_of_dirt_builds_and_every_mart_equals_the_reference(
    settings: Settings, dbt: Dbt
) -> None:
    """The quick loop's check of the SQL (`make test-fast`): a few hundred real rows and the dirt. The
    one build of the suite that runs dbt's unit tests too (the others leave them out)."""
    source = make_source("aicore", 3)
    load_posts(settings, source, 400)
    dirt = append_dirty_posts(Lake.from_settings(settings))
    dbt.build(settings, unit_tests=True)  # every model, data test and unit test

    records = [record for batch in batches(source, 400) for record in batch.records()]
    assert_marts_equal_reference(settings, [*records, *dirt])
    assert_semantic_layer_agrees(settings)


@pytest.mark.slow
@pytest.mark.parametrize(("source_name", "posts"), [("aicore", 6_000), ("synthetic", 30_000)])
def test_every_mart_equals_the_independent_computation(
    settings: Settings, dbt: Dbt, source_name: str, posts: int
) -> None:
    source = make_source(source_name, 100)
    load_posts(settings, source, posts, batch_size=2_500)
    dbt.build(settings)  # raises unless every model and data test passes

    records = [record for batch in batches(source, posts) for record in batch.records()]
    assert_marts_equal_reference(settings, records)
    assert_semantic_layer_agrees(settings)
    if source_name == "aicore":  # the real rows hold ties and medians between two values: compared above
        ties = reading.query(
            settings, "select country from marts.most_popular_category_by_country group by 1 having count(*) > 1"
        )
        between = reading.query(
            settings,
            "select * from marts.median_follower_count_by_age_group_and_join_year"
            " where median_follower_count % 1e3 != 0",
        )
        assert ties.num_rows
        assert between.num_rows


@pytest.mark.slow
def test_rerunning_the_job_is_incremental_and_keeps_the_marts_right(settings: Settings, dbt: Dbt) -> None:
    source = make_source("aicore", 11)
    load_posts(settings, source, 2_000)
    dbt.build(settings)
    load_posts(settings, source, 2_000)  # the same run again: nothing new
    load_posts(settings, source, 3_000)  # a longer run: only posts 2,000 .. 2,999 are new
    dbt.build(settings)

    with warehouse.connect_warehouse(settings) as connection:
        counts = connection.execute("select count(*), count(distinct _offset) from bronze.pin").fetchone()
    assert counts == (3_000, 3_000)
    assert_marts_equal_reference(settings, [r for b in batches(source, 3_000) for r in b.records()])


@pytest.mark.slow
def test_dirty_values_are_nulled_and_flagged_and_bad_records_quarantined_not_lost(settings: Settings, dbt: Dbt) -> None:
    lake = Lake.from_settings(settings)
    load_posts(settings, make_source("aicore", 1), 1_000)
    good_user = {"first_name": "Ada", "last_name": "Byron", "age": 36, "date_joined": "2016-01-01T10:00:00"}
    append(
        lake,
        "pin",
        [{"index": 90_001, "category": "art", "follower_count": "12.5k"}, "not json"],
        stream="test",
        start=0,
        source="test",
    )
    append(
        lake,
        "geo",
        [{"ind": 90_001, "country": "Chad", "timestamp": "last tuesday", "latitude": 1, "longitude": 2}],
        stream="test",
        start=0,
        source="test",
    )
    append(lake, "user", [{"ind": 90_001, **good_user}], stream="test", start=0, source="test")

    dbt.build(settings)  # the flag tests warn; nothing fails

    with warehouse.connect_warehouse(settings) as connection:

        def one(sql: str) -> tuple:
            return connection.execute(sql).fetchone()

        assert one("select follower_count, unparseable_fields from staging.stg_pinterest__pins where ind = 90001") == (
            None,
            "follower_count",
        )
        assert one("select timestamp, unparseable_fields from staging.stg_pinterest__geo where ind = 90001") == (
            None,
            "timestamp",
        )
        # the post still counts where its clean values allow: its category in Chad
        assert one("select count(*) from intermediate.int_posts_enriched where ind = 90001") == (1,)
        assert one("select reason, raw_record from bronze.quarantine") == (
            "not valid JSON: Expecting value: line 1 column 1 (char 0)",
            "not json",
        )


def test_a_process_that_ran_dbt_leaves_the_warehouse_to_others_and_each_warm_build_publishes_its_own(
    settings: Settings,
) -> None:
    """dbt-duckdb keeps the database open after an in-process invocation: `pinpipe refresh` (warm dbt
    in a long-lived process) must neither lock readers out of the warehouse it published nor reopen
    that file for its next build instead of the build's own copy."""
    warm = transform.WarmDbt(settings)
    load_posts(settings, make_source("aicore", 3), 100)
    warm.run(["run", "--select", "stg_pinterest__geo"])
    load_posts(settings, make_source("aicore", 3), 150)  # 50 more
    warm.run(["run", "--select", "stg_pinterest__geo"])
    count = "select count(*) from staging.stg_pinterest__geo"
    opened = f"duckdb.connect({settings.warehouse!r}, read_only=True)"
    reader = f"import duckdb; print({opened}.sql({count!r}).fetchone()[0])"
    other = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr  # no lock held by this process
    geo_keys = {post["geo"]["ind"] for post in make_source("aicore", 3).batch(0, 150).records()}
    assert int(other.stdout) == len(geo_keys)  # the second build's rows were published
