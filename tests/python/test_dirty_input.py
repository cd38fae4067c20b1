"""Dirty input warns and never blocks: a bronze holding every kind of dirt RAW_DATA.md names builds
every mart (warnings counted, nothing failed), the marts equal the independent computation, and
each data-quality count equals the count computed in plain Python from the same records."""

from __future__ import annotations

import pytest

from ingestion import reading, transform, warehouse
from ingestion.bronze import append
from ingestion.config import Settings
from ingestion.lake import Lake
from ingestion.load import load_posts
from ingestion.post_sources import make_source

import reference
from helpers import Dbt, append_dirty_posts, dirty_post

pytestmark = pytest.mark.slow

POSTS = 3_000


def test_a_bronze_with_every_kind_of_dirt_builds_every_mart_and_counts_the_dirt(settings: Settings, dbt: Dbt) -> None:
    lake, source = Lake.from_settings(settings), make_source("synthetic", 100)
    load_posts(settings, source, POSTS)
    clean = list(source.batch(0, POSTS).records())
    dirty = append_dirty_posts(lake)

    results = dbt.build(settings)  # raises if anything errors: dirt must only warn

    tables = {table: [r[table] for r in [*clean, *dirty] if r[table] is not None] for table in ("pin", "geo", "user")}
    expected_marts = reference.marts_from_tables(tables["pin"], tables["geo"], tables["user"])
    for mart in reading.marts(settings):
        got = sorted(
            tuple(round(v, 6) if isinstance(v, float) else v for v in row.values())
            for row in reading.read_mart(settings, mart).to_pylist()
        )
        want = sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in expected_marts[mart])
        assert got == want, mart
    shown = reading.read_mart(settings, "most_popular_category_by_country").to_pylist()
    assert {"country": "Nowhere", "category": "not-a-category", "category_count": 2} in shown

    expected = reference.data_quality(tables["pin"], tables["geo"], tables["user"], quarantined=2)
    assert all(expected.values()), f"a check the dirt does not exercise: {expected}"
    with warehouse.connect_warehouse(settings) as connection:
        counted = dict(connection.execute("select check_name, affected_rows from marts.data_quality").fetchall())
    assert counted == expected
    reported = {c.check: c.rows for c in transform.dirty_input_counts(results)}
    assert reported == counted, "dbt's test results and the data_quality mart disagree"
    assert {c.status for c in transform.dirty_input_counts(results)} == {"warn"}


def test_a_rule_that_nulls_a_whole_column_fails_the_build(settings: Settings, dbt: Dbt) -> None:
    """Dirty input warns; a share of dirty rows far past its budget means a broken rule or loader."""
    lake = Lake.from_settings(settings)
    broken = [{**dirty_post(key, {}, {"timestamp": "28/08/2020 03:52"}, {})["geo"]} for key in range(500)]
    append(lake, "geo", broken, stream="broken", start=0, source="test")
    with pytest.raises(transform.DbtFailed) as failed:
        dbt.build(settings)
    statuses = {r.node.name: str(r.status) for r in failed.value.results.results}
    assert statuses["dirty_input_within_budget"] == "fail"
    assert statuses["dirty_input__geo_timestamp_unparseable"] == "warn"
    # the marts were still built: the budget test is a leaf
    assert statuses["most_popular_category_by_country"] == "success"
