"""What the UI shows, as DataFrames: the marts and streaming metrics read through SQLAlchemy (the
URL an analyst's own tools use), bronze's health from the Delta logs, the last dbt builds from their
kept results, and Prometheus' view of the running stages when it answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import requests
import sqlalchemy
from sqlalchemy.pool import NullPool

from ingestion import artifacts
from ingestion.config import Settings
from ingestion.errors import NoWarehouse
from ingestion.lake import BRONZE_TABLES, Lake, table_stats
from ingestion.reading import check_read_only


@dataclass(frozen=True)
class Insight:
    """A mart as the Insights page shows it: its question, its chart, the column to filter on."""

    mart: str
    question: str
    kind: Literal["bar", "line"]
    x: str
    y: str
    color: str | None = None
    filter: str | None = None


# the nine questions, in the order of the insights exposure
INSIGHTS = [
    Insight(
        "most_popular_category_by_country",
        "Which category is posted most in each country?",
        "bar",
        "country",
        "category_count",
        color="category",
        filter="category",
    ),
    Insight(
        "posts_per_category_by_year",
        "How many posts did each category get each year (2018 to 2022)?",
        "line",
        "post_year",
        "category_count",
        color="category",
        filter="category",
    ),
    Insight(
        "most_followed_user_by_country",
        "Who is the most followed poster in each country?",
        "bar",
        "country",
        "follower_count",
        filter="country",
    ),
    Insight(
        "country_with_most_followed_user",
        "Which country has the most followed poster?",
        "bar",
        "country",
        "follower_count",
    ),
    Insight(
        "most_popular_category_by_age_group",
        "Which category is posted most in each age group?",
        "bar",
        "age_group",
        "category_count",
        color="category",
    ),
    Insight(
        "median_follower_count_by_age_group",
        "What is the median follower count in each age group?",
        "bar",
        "age_group",
        "median_follower_count",
    ),
    Insight(
        "users_joined_by_year",
        "How many users joined each year (2015 to 2020)?",
        "line",
        "join_year",
        "number_users_joined",
    ),
    Insight(
        "median_follower_count_by_join_year",
        "What is the median follower count of the users who joined each year?",
        "line",
        "join_year",
        "median_follower_count",
    ),
    Insight(
        "median_follower_count_by_age_group_and_join_year",
        "What is the median follower count by age group and year joined?",
        "line",
        "join_year",
        "median_follower_count",
        color="age_group",
        filter="age_group",
    ),
]


def warehouse_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the warehouse: the setting, else the DuckDB file (duckdb-engine)."""
    return settings.warehouse_url or f"duckdb:///{settings.warehouse}"


def engine(settings: Settings) -> sqlalchemy.Engine:
    """The warehouse through SQLAlchemy, read-only. No pool: each query opens the file anew, so it
    sees the build published last (a build replaces the file whole)."""
    url = warehouse_url(settings)
    if not url.startswith("duckdb:"):
        return sqlalchemy.create_engine(url)
    if not Path(settings.warehouse).exists():
        raise NoWarehouse(
            f"no warehouse at {settings.warehouse}: build it with `make run` (or `pinpipe run`), "
            "or point PINPIPE_WAREHOUSE at it"
        )
    config = {"extension_directory": str(settings.duckdb_extension_directory)}
    return sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"read_only": True, "config": config})


def query(connectable: sqlalchemy.Engine, sql: str) -> pd.DataFrame:
    """Rows of one read-only statement; anything else is refused before it runs."""
    check_read_only(sql, dialect=connectable.dialect.name)
    with connectable.connect() as connection:
        return pd.read_sql(sqlalchemy.text(sql), connection)


def mart(connectable: sqlalchemy.Engine, name: str, schema: str = "marts") -> pd.DataFrame:
    return query(connectable, f"select * from {schema}.{name} order by all")


def model_sql(settings: Settings, name: str) -> str:
    """The dbt model behind a chart, as written (Jinja and all)."""
    found = next((settings.project_dir / "models").rglob(f"{name}.sql"), None)
    return found.read_text() if found is not None else f"-- no model {name} in {settings.project_dir / 'models'}"


def bronze_health(settings: Settings, now: datetime | None = None) -> pd.DataFrame:
    """Each bronze table: its rows and newest record, read from the Delta log (no data read)."""
    lake, now = Lake.from_settings(settings), now or datetime.now(UTC)
    rows = []
    for table in BRONZE_TABLES:
        stats = table_stats(lake, table)
        newest = stats.newest_ingested_at
        rows.append(
            {
                "table": table,
                "rows": stats.rows,
                "newest record ingested": newest,
                "age (minutes)": round((now - newest).total_seconds() / 60, 1) if newest else None,
            }
        )
    return pd.DataFrame(rows)


def builds(settings: Settings) -> pd.DataFrame:
    """The last builds (newest first): when, how long, models built, tests by status."""
    rows = []
    for build in artifacts.history(settings.dbt_history_dir):
        tests = [node.status for node in build.nodes if node.tested_model is not None]
        rows.append(
            {
                "finished": build.finished_at,
                "seconds": round(build.seconds, 1),
                "models": sum(node.resource_type == "model" for node in build.nodes),
                "errors": sum(node.status == "error" for node in build.nodes),
                **{f"tests {status}": tests.count(status) for status in ("pass", "warn", "fail")},
            }
        )
    return pd.DataFrame(rows)


def last_build_models(settings: Settings) -> pd.DataFrame:
    """The newest build's models: seconds, rows, and their tests by status."""
    kept = artifacts.history(settings.dbt_history_dir)
    if not kept:
        return pd.DataFrame(
            columns=["model", "status", "seconds", "rows", "tests passed", "tests warned", "tests failed"]
        )
    nodes = kept[0].nodes
    rows = []
    for model in (node for node in nodes if node.resource_type == "model"):
        tests = [node.status for node in nodes if node.tested_model == model.name]
        rows.append(
            {
                "model": model.name,
                "status": model.status,
                "seconds": round(model.seconds, 2),
                "rows": model.rows_affected,
                "tests passed": tests.count("pass"),
                "tests warned": tests.count("warn"),
                "tests failed": tests.count("fail") + tests.count("error"),
            }
        )
    return pd.DataFrame(rows).sort_values("seconds", ascending=False)


def prometheus_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def prometheus(settings: Settings, queries: dict[str, str]) -> dict[str, float | None] | None:
    """Each query's value (summed over its series) on the Prometheus of ``settings``; None when no
    Prometheus answers."""
    values: dict[str, float | None] = {}
    for label, expression in queries.items():
        try:
            answer = requests.get(f"{prometheus_url(settings)}/api/v1/query", params={"query": expression}, timeout=3)
        except requests.RequestException:
            return None
        result = answer.json().get("data", {}).get("result", []) if answer.ok else []
        values[label] = sum(float(series["value"][1]) for series in result) if result else None
    return values
