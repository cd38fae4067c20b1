"""Every cleaning rule, property-tested: thousands of generated values, clean and dirty, go through
the staging models' own SQL (compiled by dbt) and through the plain-Python rules of reference.py,
and must come out the same, on DuckDB and on Spark.

Each example is a batch of values, one row each, so one query checks hundreds of values.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.config import Settings
from ingestion.schemas import bronze_schema

import reference
from helpers import Dbt

STAGING = {"pin": "stg_pinterest__pins", "geo": "stg_pinterest__geo", "user": "stg_pinterest__users"}


def compile_staging(config: Settings, dbt: Dbt) -> dict[str, str]:
    """Each staging model's SQL as dbt compiles it for the target, reading its bronze table from a
    relation named ``raw_<table>``."""
    manifest = dbt.manifest(config)
    sources = {s.name: s.relation_name for s in manifest.sources.values() if s.source_name == "bronze"}
    # on Spark this also starts dbt-spark's session, configured as the profile says, for the queries
    compiled = dbt.run(config, "compile", "--quiet", "--full-refresh", "--select", "staging.pinterest")
    by_model = {result.node.name: result.node.compiled_code for result in compiled.results}
    return {table: by_model[model].replace(sources[table], f"raw_{table}") for table, model in STAGING.items()}


def _bronze_rows(table: str, values: dict[str, list[str | None]]) -> pa.Table:
    """Bronze rows (payload as text) with the given columns, every row its own key."""
    count = len(next(iter(values.values())))
    key = "index" if table == "pin" else "ind"
    columns: dict[str, Any] = {**values, key: [str(i) for i in range(count)]}
    schema = bronze_schema(table)  # type: ignore[arg-type]
    arrays = {}
    for column in schema:
        if column.name in columns:
            arrays[column.name] = pa.array(columns[column.name], column.type)
        elif column.name == "_stream":
            arrays[column.name] = pa.array(["prop"] * count)
        elif column.name == "_offset":
            arrays[column.name] = pa.array(range(count), pa.int64())
        elif column.name == "_ingested_at":
            arrays[column.name] = pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * count, column.type)
        else:
            arrays[column.name] = pa.nulls(count, column.type)
    return pa.table(arrays, schema=schema)


Runner = Callable[[str, pa.Table], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def duckdb_staging(tmp_path_factory: pytest.TempPathFactory, dbt: Dbt) -> Iterator[Runner]:
    scratch = tmp_path_factory.mktemp("properties")
    config = Settings(lake=str(scratch / "lake"), warehouse=str(scratch / "w.duckdb"))
    sql = compile_staging(config, dbt)
    connection = duckdb.connect()

    def run(table: str, rows: pa.Table) -> list[dict[str, Any]]:
        connection.register(f"raw_{table}", rows)
        return connection.execute(sql[table] + " order by ind").to_arrow_table().to_pylist()

    yield run
    connection.close()


# --- values: the clean forms, their near misses, and anything at all -------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_digits = st.text(alphabet=string.digits, min_size=1, max_size=4)
_two = st.integers(0, 99).map(lambda n: f"{n:02d}") | st.integers(0, 99).map(str)
_timestamps = st.one_of(
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S")),
    st.builds(
        lambda y, mo, d, sep, h, mi, s, tail: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{tail}",
        _digits,
        _two,
        _two,
        st.sampled_from([" ", "T", "t", "_", "  "]),
        _two,
        _two,
        _two,
        st.sampled_from(["", "", "", "Z", "+02:00", ".5", " "]),
    ),
    st.dates().map(str),
    _text,
)
_integers_as_text = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.integers(0, 120).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"\A-?[0-9]{1,12}(\.[0-9]{1,2})?\Z"),
    _text,
)
_follower_counts = st.one_of(
    st.from_regex(r"\A-?[0-9]{0,21}[kKmM]?\Z"),
    st.integers(0, 999).map(str),
    st.builds(
        lambda n, s, pad: f"{n}{s}{pad}", st.integers(0, 999), st.sampled_from(["k", "M"]), st.sampled_from(["", " "])
    ),
    st.builds(lambda pad: "User Info Error" + pad, st.sampled_from(["", " ", "  ", "\t", "\u00a0"])),
    _text,
)
_decimals = st.one_of(
    st.floats(allow_nan=False).map(repr),
    st.floats(min_value=-180, max_value=180).map(str),
    st.from_regex(r"\A-?[0-9]{1,3}(\.[0-9]{1,6})?([eE][-+]?[0-9]{1,4})?\Z"),
    st.sampled_from(["nan", "inf", "-inf", "1e999", " 1", "1 ", "+1", ".5", "5."]),
    _text,
)
_flags = st.sampled_from(["0", "1", "2", "true", "", " 1", "01"]) | _text


def _placeholder_like(column: str) -> st.SearchStrategy[str]:
    padding = st.sampled_from(["", " ", "   ", "\t", "\u00a0", " \u00a0"])
    return st.one_of(
        st.builds(lambda p, pad: p + pad, st.sampled_from(sorted(reference.PLACEHOLDERS[column])), padding),
        st.builds(lambda p, pad: pad + p, st.sampled_from(sorted(reference.PLACEHOLDERS[column])), padding),
        _text,
    )


def _batches(values: st.SearchStrategy[str | None]) -> st.SearchStrategy[list[str | None]]:
    return st.lists(values | st.none(), min_size=1, max_size=200)


def _flagged(row: dict[str, Any]) -> set[str]:
    return set((row["unparseable_fields"] or "").split(", ")) - {""}


# --- the rules, each a property over batches of generated values -----------------------------------

PROPERTIES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def check_timestamps(run: Runner, values: list[str | None]) -> None:
    rows = run("geo", _bronze_rows("geo", {"timestamp": values}))
    for value, row in zip(values, rows, strict=True):
        expected = reference.timestamp(value)
        assert row["timestamp"] == expected, value
        assert ("timestamp" in _flagged(row)) == (value is not None and expected is None), value


def check_ages(run: Runner, values: list[str | None]) -> None:
    rows = run(
        "user",
        _bronze_rows("user", {"age": values, "first_name": ["A"] * len(values), "last_name": ["B"] * len(values)}),
    )
    for value, row in zip(values, rows, strict=True):
        expected = reference.integer(value)
        assert row["age"] == expected, value
        assert ("age" in _flagged(row)) == (value is not None and expected is None), value


def check_follower_counts_and_placeholders(run: Runner, counts: list[str | None], posters: list[str | None]) -> None:
    posters = (posters * (len(counts) // len(posters) + 1))[: len(counts)]
    rows = run("pin", _bronze_rows("pin", {"follower_count": counts, "poster_name": posters, "title": posters}))
    for count, poster, row in zip(counts, posters, rows, strict=True):
        expected = reference.follower_count(count)
        assert row["follower_count"] == expected, count
        unparseable = (
            count is not None and reference.clean_text("follower_count", count) is not None and expected is None
        )
        assert ("follower_count" in _flagged(row)) == unparseable, count
        cleaned = reference.clean_text("poster_name", poster)
        assert row["poster_name"] == (cleaned.rstrip(" ") if cleaned is not None else None), poster
        assert row["title"] == reference.clean_text("title", poster), poster


def check_coordinates_and_flags(run: Runner, decimals: list[str | None], flags: list[str | None]) -> None:
    flags = (flags * (len(decimals) // len(flags) + 1))[: len(decimals)]
    rows = run("geo", _bronze_rows("geo", {"latitude": decimals, "longitude": decimals[::-1]}))
    for latitude, longitude, row in zip(decimals, decimals[::-1], rows, strict=True):
        assert list(row["coordinates"]) == [reference.decimal(latitude), reference.decimal(longitude)], (
            latitude,
            longitude,
        )
    pins = run("pin", _bronze_rows("pin", {"downloaded": flags}))
    for value, row in zip(flags, pins, strict=True):
        assert row["downloaded"] == reference.flag(value), value
        assert ("downloaded" in _flagged(row)) == (value is not None and reference.flag(value) is None), value


@PROPERTIES
@given(values=_batches(_timestamps))
def test_timestamps_parse_only_in_their_two_zero_padded_forms(duckdb_staging: Runner, values: list[str | None]) -> None:
    check_timestamps(duckdb_staging, values)


@PROPERTIES
@given(values=_batches(_integers_as_text))
def test_ages_are_integers_never_rounded(duckdb_staging: Runner, values: list[str | None]) -> None:
    check_ages(duckdb_staging, values)


@PROPERTIES
@given(counts=_batches(_follower_counts), posters=_batches(_placeholder_like("poster_name")))
def test_follower_counts_and_placeholders_follow_their_rules(
    duckdb_staging: Runner, counts: list[str | None], posters: list[str | None]
) -> None:
    check_follower_counts_and_placeholders(duckdb_staging, counts, posters)


@PROPERTIES
@given(decimals=_batches(_decimals), flags=_batches(_flags))
def test_coordinates_and_downloaded_take_only_their_forms(
    duckdb_staging: Runner, decimals: list[str | None], flags: list[str | None]
) -> None:
    check_coordinates_and_flags(duckdb_staging, decimals, flags)


# --- the same properties on Spark, fewer examples ---------------------------------------------------


@pytest.fixture(scope="module")
def spark_staging(tmp_path_factory: pytest.TempPathFactory, spark_warehouse: str, dbt: Dbt) -> Runner:
    scratch: Path = tmp_path_factory.mktemp("properties-spark")
    config = Settings(
        lake=str(scratch / "lake"),
        warehouse=str(scratch / "w.duckdb"),
        target="spark",
        spark_warehouse=spark_warehouse,
    )
    sql = compile_staging(config, dbt)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()  # the session dbt-spark started in this process

    def run(table: str, rows: pa.Table) -> list[dict[str, Any]]:
        spark.createDataFrame(rows.to_pandas()).createOrReplaceTempView(f"raw_{table}")
        return [row.asDict(recursive=True) for row in spark.sql(sql[table] + " order by ind").collect()]

    return run


SPARK_PROPERTIES = settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@pytest.mark.xdist_group("spark")  # one Spark session per test session: its tests share one worker
@SPARK_PROPERTIES
@given(
    timestamps=_batches(_timestamps),
    ages=_batches(_integers_as_text),
    counts=_batches(_follower_counts),
    posters=_batches(_placeholder_like("poster_name")),
    decimals=_batches(_decimals),
    flags=_batches(_flags),
)
def test_every_rule_agrees_on_spark(
    spark_staging: Runner,
    timestamps: list[str | None],
    ages: list[str | None],
    counts: list[str | None],
    posters: list[str | None],
    decimals: list[str | None],
    flags: list[str | None],
) -> None:
    check_timestamps(spark_staging, timestamps)
    check_ages(spark_staging, ages)
    check_follower_counts_and_placeholders(spark_staging, counts, posters)
    check_coordinates_and_flags(spark_staging, decimals, flags)
