"""The same dbt project on DuckDB and on Spark with Delta gives the same marts, row for row; the
Databricks target parses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ingestion import reading
from ingestion.config import Settings
from ingestion.lake import Lake
from ingestion.load import load_posts
from ingestion.post_sources import make_source
from ingestion.semantic import SemanticLayer

from helpers import Dbt, append_dirty_posts

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]


def _rows(settings: Settings, mart: str) -> Counter:
    # doubles are compared to 6 decimals: the engines' medians may differ in the last bits
    return Counter(
        tuple(round(v, 6) if isinstance(v, float) else v for v in row.values())
        for row in reading.read_mart(settings, mart).to_pylist()
    )


def test_every_mart_is_equal_on_duckdb_and_on_spark(
    settings: Settings, dbt: Dbt, spark_warehouse: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real AiCore rows, synthetic posts and every kind of dirt in one bronze; keys shared by both are
    deduplicated by the same rule on both engines, and dirt is cleaned, flagged and counted alike."""
    load_posts(settings, make_source("aicore", 3), 2_000)
    load_posts(settings, make_source("synthetic", 3), 2_000)
    append_dirty_posts(Lake.from_settings(settings))

    dbt.build(settings)
    spark = settings.model_copy(update={"target": "spark", "spark_warehouse": spark_warehouse})
    # every model, data test and unit test, on Spark (whose warehouse other tests of the session built):
    # the one run of the unit tests on Spark
    dbt.build(spark, "--full-refresh", unit_tests=True)

    for mart in [*reading.marts(settings), "data_quality"]:
        on_duckdb, on_spark = _rows(settings, mart), _rows(spark, mart)
        assert on_duckdb == on_spark, (
            f"{mart}: only on duckdb {on_duckdb - on_spark}, only on spark {on_spark - on_duckdb}"
        )
        assert on_duckdb

    # the semantic layer on Spark (MetricFlow's Databricks dialect, run through `dbt show`, a parse each:
    # one question, the one whose median each engine computes its own way) equals its mart
    question = "median_follower_count_by_age_group_and_join_year"
    rows = SemanticLayer(spark).answer(question).table.to_pylist()
    answered = Counter(tuple(round(v, 6) if isinstance(v, float) else v for v in row.values()) for row in rows)
    assert answered == _rows(spark, question)

    # a query on Spark goes through `dbt show`, which prints nothing of its own: `pinpipe --target
    # spark sql --format json` is piped into other tools
    capsys.readouterr()
    answer = reading.query(spark, "select count(*) as n from marts.users_joined_by_year")
    assert capsys.readouterr().out == ""
    assert answer.column("n").to_pylist() == [sum(_rows(settings, "users_joined_by_year").values())]


def test_the_databricks_target_parses(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABRICKS_HOST": "dbc-0000.cloud.databricks.com",
        "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/0",
        "DATABRICKS_TOKEN": "not-a-token",
        "PINPIPE_LAKE": "s3://pinpipe/lake",
        "DBT_TARGET_PATH": str(tmp_path),
    }
    dbt = str(Path(sys.executable).parent / "dbt")
    parsed = subprocess.run(
        [dbt, "parse", "--profiles-dir", ".", "--target", "databricks"],
        env=env,
        cwd=Settings().project_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    assert "Registered adapter: databricks" in parsed.stdout
