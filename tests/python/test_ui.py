"""The web UI: every page rendered by Streamlit's AppTest on a small warehouse (no exception, the
charts hold the marts' rows, the numbers shown equal the warehouse's), the SQL page's read-only
guard, the warehouse through SQLAlchemy; and each page of a running `pinpipe ui` opened in Debian's
Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy
from streamlit.testing.v1 import AppTest

from ingestion.bronze import StreamSlice, append_slices
from ingestion.config import Settings
from ingestion.lake import STREAM_TABLES, Lake
from ingestion.post_sources import make_source
from ingestion.services import free_port
from ingestion.ui import data

from browser import PAGES, open_pages
from helpers import answers, eventually

POSTS, STREAMED = 400, 120


def _append_stream_posts(lake: Lake, count: int) -> None:
    """``count`` posts into the bronze stream tables, as the stream consumer writes them, arrived now."""
    posts, now = make_source("synthetic", 3).batch(0, count), datetime.now(UTC)
    for table in ("pin", "geo", "user"):
        records = posts.table(table)
        columns = {
            "_shard_id": pa.array(["shardId-000000000000"] * records.num_rows),
            "_sequence_number": pa.array([str(i) for i in range(records.num_rows)]),
            "_arrival_time": pa.array([now] * records.num_rows, pa.timestamp("us", tz="UTC")),
        }
        piece = StreamSlice("kinesis/test/shardId-000000000000", 0, records, "kinesis://test", columns)
        append_slices(lake, table, [piece], target=STREAM_TABLES[table])


# one worker runs them all: the warehouse they read is built once
pytestmark = pytest.mark.xdist_group("ui")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A warehouse built by `pinpipe run` on POSTS synthetic posts and STREAMED streamed ones: the
    PINPIPE_* variables that point at it."""
    root = tmp_path_factory.mktemp("ui")
    env = {
        "PINPIPE_LAKE": str(root / "lake"),
        "PINPIPE_WAREHOUSE": str(root / "warehouse.duckdb"),
        "PINPIPE_STATE_DIR": str(root / "state"),
        "PINPIPE_PROMETHEUS_PORT": str(free_port()),  # none: the page says so
        "DBT_TARGET_PATH": str(root / "target"),
    }
    _append_stream_posts(Lake(env["PINPIPE_LAKE"]), STREAMED)
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    run = subprocess.run(
        [pinpipe, "run", "--posts", str(POSTS), "--rows", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return env


@pytest.fixture
def settings(warehouse: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in warehouse.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _page(name: str) -> AppTest:
    page = AppTest.from_string(f"from ingestion.ui import pages\npages.{name}()", default_timeout=120).run()
    assert not page.exception, [e.value for e in page.exception]
    return page


def _chart_rows(chart: object) -> pd.DataFrame:
    """The rows a chart draws: its dataset, as Streamlit sends it (Arrow IPC)."""
    (dataset,) = chart.proto.datasets  # type: ignore[attr-defined]
    return pa.ipc.open_stream(dataset.data.data).read_all().to_pandas()


def _metric(page: AppTest, label: str) -> str:
    return next(metric.value for metric in page.metric if metric.label == label)


@pytest.mark.parametrize("name", ["insights", "explore", "realtime", "pipeline", "sql"])
def test_every_page_renders_with_no_error(settings: Settings, name: str) -> None:
    page = _page(name)
    assert not page.error, [e.value for e in page.error]
    assert [title.value for title in page.title] == [{"realtime": "Real-time", "sql": "SQL"}.get(name, name.title())]


def test_the_insight_charts_hold_each_marts_rows_and_the_numbers_shown_are_the_marts(settings: Settings) -> None:
    page = _page("insights")
    charts = page.get("vega_lite_chart")
    assert len(charts) == len(data.INSIGHTS) == 9
    # the UI's own engine: a DuckDB file is open in one configuration per process at a time
    engine = data.engine(settings)
    for insight, chart in zip(data.INSIGHTS, charts, strict=True):
        mart = pd.read_sql(f"select * from marts.{insight.mart} order by all", engine)
        if insight.kind == "bar":  # the 30 largest, the first of equals in the table's order
            mart = mart.nlargest(30, insight.y)
        drawn = _chart_rows(chart)
        key = [column for column in (insight.x, insight.y, insight.color) if column]
        assert sorted(map(tuple, drawn[key].astype(str).values)) == sorted(map(tuple, mart[key].astype(str).values)), (
            insight.mart
        )
    countries = pd.read_sql("select count(distinct country) as n from marts.most_popular_category_by_country", engine)
    assert _metric(page, "Countries with posts") == str(countries["n"][0])
    joined = pd.read_sql("select sum(number_users_joined) as n from marts.users_joined_by_year", engine)
    assert _metric(page, "Users who joined 2015–2020") == str(joined["n"][0])
    assert len(page.get("download_button")) == 9
    assert any(f"from marts.{data.INSIGHTS[0].mart}" in code.value for code in page.code)


def test_a_filter_narrows_the_chart_to_the_chosen_values(settings: Settings) -> None:
    page = _page("insights")
    chosen = page.multiselect(key="most_popular_category_by_country")
    category = chosen.options[0]
    page = chosen.set_value([category]).run()
    drawn = _chart_rows(page.get("vega_lite_chart")[0])
    assert len(drawn) > 0
    assert set(drawn["category"]) == {category}


def test_the_realtime_page_shows_the_streaming_metrics(settings: Settings) -> None:
    page = _page("realtime")
    engine = data.engine(settings)
    popularity = data.mart(engine, "profile_popularity", schema="streaming")
    assert popularity["posts_in_window"].sum() > 0  # the streamed posts arrived now: inside the window
    assert _metric(page, "Posts in the window") == str(popularity["posts_in_window"].sum())
    assert len(_chart_rows(page.get("vega_lite_chart")[0])) == min(30, len(popularity))


def test_the_pipeline_page_shows_bronze_the_builds_data_quality_and_quarantine(settings: Settings) -> None:
    page = _page("pipeline")
    assert _metric(page, "pin rows in bronze") == f"{POSTS:,}"
    builds = page.dataframe[1].value  # after bronze's table
    assert len(builds) == 1
    assert builds["tests pass"][0] > 50
    assert builds["tests fail"][0] == 0
    assert any("No Prometheus at" in info.value for info in page.info)


def _as_rows(frame: pd.DataFrame) -> Counter:
    return Counter(
        tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in frame.itertuples(index=False)
    )


def test_the_explore_page_shows_metrics_by_the_chosen_dimensions_with_a_chart_and_the_sql(settings: Settings) -> None:
    engine = data.engine(settings)
    page = _page("explore")  # posts by category to begin with
    posts_by_category = data.query(
        engine, "select category, count(*) as posts from intermediate.int_posts_enriched group by all"
    )
    assert _as_rows(page.dataframe[0].value) == _as_rows(posts_by_category)
    assert len(_chart_rows(page.get("vega_lite_chart")[0])) == len(posts_by_category)
    assert "int_posts_enriched" in page.code[0].value  # the SQL MetricFlow generated

    page.multiselect[0].set_value(["median_follower_count"]).run()
    page = page.multiselect[1].set_value(["person__age_group"]).run()
    assert not page.exception, [e.value for e in page.exception]
    shown = page.dataframe[0].value.dropna(subset=["person__age_group"])  # people without an age group too
    assert _as_rows(shown) == _as_rows(data.mart(engine, "median_follower_count_by_age_group"))
    assert "int_people" in page.code[0].value


def test_the_sql_page_runs_a_query_and_refuses_what_would_write(settings: Settings) -> None:
    page = _page("sql")
    page.text_area[0].set_value("select join_year, number_users_joined from marts.users_joined_by_year")
    page = page.button[0].click().run()
    expected = data.query(data.engine(settings), "select * from marts.users_joined_by_year")
    assert len(page.dataframe[0].value) == len(expected)
    for statement, said in (
        ("drop table marts.users_joined_by_year", "only queries run here"),
        ("insert into marts.users_joined_by_year values (1999, 1)", "only queries run here"),
        ("select 1; select 2", "one statement at a time"),
    ):
        page.text_area[0].set_value(statement)
        page = page.button[0].click().run()
        assert said in page.error[0].value, page.error[0].value
    assert data.query(data.engine(settings), "select count(*) as n from marts.users_joined_by_year")["n"][0] == len(
        expected
    )


def test_an_analyst_reads_a_mart_with_pandas_and_the_sqlalchemy_url(settings: Settings) -> None:
    # as docs/ui-and-sql.md shows it: the URL, read-only, the extension directory for the staging views
    engine = sqlalchemy.create_engine(
        data.warehouse_url(settings),
        connect_args={"read_only": True, "config": {"extension_directory": str(settings.duckdb_extension_directory)}},
    )
    marts = pd.read_sql("select * from marts.users_joined_by_year", engine)
    assert marts["number_users_joined"].sum() > 0
    pins = pd.read_sql("select count(*) as n from staging.stg_pinterest__pins", engine)
    assert pins["n"][0] > 0
    engine.dispose()  # its pooled connection would hold the file open in this configuration


@pytest.mark.slow
def test_every_page_of_a_running_ui_opens_in_chromium_with_its_numbers(
    warehouse: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    ui = subprocess.Popen(
        [pinpipe, "ui", "--port", str(port)],
        env={**os.environ, **warehouse},
        stdout=(tmp_path / "ui.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert eventually(lambda: answers(f"{url}/_stcore/health"), 60), (tmp_path / "ui.log").read_text()
        engine = data.engine(settings)
        countries = data.query(
            engine, "select count(distinct country) as n from marts.most_popular_category_by_country"
        )
        expected = {
            "insights": ["Insights", "Countries with posts", str(countries["n"][0])],
            "explore": ["Explore", "post__category", "int_posts_enriched"],
            "realtime": ["Real-time", "Posts in the window"],
            "pipeline": ["Pipeline", "pin rows in bronze", f"{POSTS:,}"],
            "sql": ["SQL", "Read-only queries"],
        }
        shown = open_pages(url, tmp_path, expected=expected)
        for page in PAGES:
            for text in expected[page]:
                assert text in shown[page], f"{page}: {text!r} not in {shown[page][:2000]!r}"
            assert (tmp_path / f"{page}.png").stat().st_size > 10_000
    finally:
        ui.terminate()
        ui.wait(timeout=30)
