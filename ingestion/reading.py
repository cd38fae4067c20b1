"""Reading the marts back: which they are, a mart as Arrow, read-only SQL on the current target,
and what the last build covered."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from ingestion.config import Settings
from ingestion.errors import (
    NotReadOnly,
)
from ingestion.transform import run_dbt, target_path
from ingestion.warehouse import connect_warehouse

if TYPE_CHECKING:
    pass

# the exposure naming the marts analysts read, in the order of the business questions
INSIGHTS_EXPOSURE = "exposure.pinpipe.pinterest_insights"


def marts(settings: Settings) -> list[str]:
    """The marts, in the order of the business questions: the models the insights exposure depends
    on, read from dbt's manifest (the project is parsed first if there is none yet)."""
    manifest = target_path(settings) / "manifest.json"
    if not manifest.exists():
        run_dbt(settings, ["parse", "--quiet"])
    nodes = json.loads(manifest.read_text())["exposures"][INSIGHTS_EXPOSURE]["depends_on"]["nodes"]
    return [node.rsplit(".", 1)[-1] for node in nodes]


def coverage(settings: Settings) -> str:
    """One line on what the marts were built from: complete posts, posts waiting for a partner
    record, people (from the data_quality mart)."""
    with connect_warehouse(settings, read_only=True) as connection:
        checked = dict(
            connection.execute(
                "select check_name, [affected_rows, checked_rows] from marts.data_quality "
                "where check_name in ('posts_incomplete', 'people_without_age_group')"
            ).fetchall()
        )
    incomplete, posts = checked["posts_incomplete"]
    _, people = checked["people_without_age_group"]
    return (
        f"marts built from {posts - incomplete:,} complete posts ({incomplete:,} waiting for a partner record) "
        f"and {people:,} people"
    )


def read_mart(settings: Settings, mart: str) -> pa.Table:
    """A mart of the settings' target, rows in a stable order."""
    if settings.target == "spark":
        return _read_spark_mart(mart)
    with connect_warehouse(settings, read_only=True) as connection:
        return connection.execute(f"select * from marts.{mart} order by all").to_arrow_table()


# what a query may start with, where DuckDB's parser cannot judge the SQL (Spark's, Databricks')
_LEADING_COMMENTS = re.compile(r"^(\s*--[^\n]*(\n|$))*\s*")
_QUERY_WORDS = {"select", "with", "show", "describe", "desc", "explain", "values", "from", "table"}


def check_read_only(sql: str, *, dialect: str = "duckdb") -> None:
    """Refuse, before it runs, anything but one query: on DuckDB its own parser says what the SQL is;
    on other engines, the statement's first word."""
    if dialect == "duckdb":
        parsed = duckdb.extract_statements(sql)
        texts = [statement.query for statement in parsed]
        reading = [s.type in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN) for s in parsed]
    else:
        # a ; inside a string: refused too; comment lines before a statement (MetricFlow's) are skipped
        texts = [code for text in sql.split(";") if (code := _LEADING_COMMENTS.sub("", text)).strip()]
        reading = [text.split(maxsplit=1)[0].lower() in _QUERY_WORDS for text in texts]
    if len(texts) != 1:
        raise NotReadOnly(f"one statement at a time, not {len(texts)}")
    if not reading[0]:
        said = texts[0].split(maxsplit=1)[0].lower() if texts[0].strip() else "that"
        raise NotReadOnly(
            f"only queries run here (select, with, describe, show, explain), not {said}: "
            "the warehouse is read-only, dbt builds it"
        )


def query(settings: Settings, sql: str, *, limit: int = 10_000, wait_s: float = 30) -> pa.Table:
    """Run a SQL query on the settings' target. DuckDB is queried directly (read-only, waiting while a
    dbt run holds the file); other targets through ``dbt show --inline``, at most ``limit`` rows.
    Anything but a query is refused (``check_read_only``)."""
    check_read_only(sql, dialect="duckdb" if settings.target == "local" else settings.target)
    if settings.target != "local":
        # no log at all: with --quiet, dbt show still prints the rows, before pinpipe's own output
        result = run_dbt(settings, ["show", "--log-level", "none", "--inline", sql, "--limit", str(limit)])
        rows = result.results[0].agate_table
        return pa.Table.from_pylist([dict(zip(rows.column_names, row, strict=True)) for row in rows.rows])

    def read() -> pa.Table:
        with connect_warehouse(settings, read_only=True) as connection:
            return connection.execute(sql).to_arrow_table()

    def locked(error: BaseException) -> bool:  # another process is writing (a dbt run): its lock is brief
        return isinstance(error, duckdb.IOException) and "lock" in str(error)

    waiting = Retrying(
        stop=stop_after_delay(wait_s), wait=wait_fixed(0.2), retry=retry_if_exception(locked), reraise=True
    )
    return waiting(read)


def _read_spark_mart(mart: str) -> pa.Table:
    """A mart from the Spark session dbt ran in, in this process (dbt-spark's session method)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is None:
        raise RuntimeError("no Spark session in this process: run dbt on the spark target first")
    # dbt ran in a worker thread: take the process's default session, not this thread's active one
    rows = SparkSession.builder.getOrCreate().table(f"marts.{mart}").toArrow()
    return rows.sort_by([(name, "ascending") for name in rows.column_names])
