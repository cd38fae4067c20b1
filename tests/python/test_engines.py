"""The same dbt project on DuckDB and on Spark with Delta gives the same marts, row for row; the
Databricks target compiles, with bronze written by Databricks too, whose key rule is the loaders' on Spark."""

from __future__ import annotations

import json
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


DATABRICKS = {
    "DATABRICKS_HOST": "dbc-0000.cloud.databricks.com",
    "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/0",
    "DATABRICKS_TOKEN": "not-a-token",
    "PINPIPE_LAKE": "s3://pinpipe/lake",
}


@pytest.mark.parametrize(
    ("batch", "reads"), [("objects", "stream read_files("), ("kafka", "stream read_kafka(")], ids=["objects", "kafka"]
)
def test_the_databricks_target_compiles_with_bronze_written_by_databricks(
    tmp_path: Path, batch: str, reads: str
) -> None:
    """With no workspace at hand: dbt compiles the project for Databricks (no introspection) with its
    bronze as Databricks streaming tables, and staging is built after them."""
    env = {**os.environ, **DATABRICKS, "DBT_TARGET_PATH": str(tmp_path)}
    dbt_vars = (
        f"{{databricks_bronze_batch: {batch}, databricks_bronze_streams: kinesis, kafka_bootstrap_servers: 'b:9092'}}"
    )
    compiled = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "compile",
            "--profiles-dir",
            ".",
            "--target",
            "databricks",
            "--vars",
            dbt_vars,
            "--select",
            "bronze",
            "--no-introspect",
            "--no-populate-cache",
        ],
        env=env,
        cwd=Settings().project_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "Registered adapter: databricks" in compiled.stdout
    sql = {path.stem: path.read_text() for path in tmp_path.glob("compiled/pinpipe/models/bronze/*.sql")}
    assert reads in sql["databricks_bronze__pin"]
    assert "stream read_kinesis(" in sql["databricks_bronze__user_stream"]
    assert "union all" in sql["databricks_bronze__quarantine"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    depends = manifest["nodes"]["model.pinpipe.stg_pinterest__pins"]["depends_on"]["nodes"]
    assert "model.pinpipe.databricks_bronze__pin" in depends


# Records as the loaders meet them: keyed ones with every kind of value, and each way a record
# cannot be keyed (ingestion/bronze_rows.py's rule)
PIN = {"index": 7, "unique_id": "u", "title": "t", "follower_count": 942, "downloaded": 1, "description": None}
LINES = [
    json.dumps(PIN),
    json.dumps({**PIN, "index": -(2**63), "category": "art", "downloaded": 1.5, "title": True, "extra": "x", "n": 3}),
    json.dumps({**PIN, "index": "5"}),
    json.dumps({**PIN, "index": 5.0}),
    json.dumps({**PIN, "index": 2**63}),
    json.dumps({**PIN, "index": None}),
    json.dumps({"title": "no key"}),
    json.dumps({**PIN, "index": True}),
    "[1, 2, 3]",
    '"text"',
    "42",
    "1.5",
    "true",
    "null",
    "{not json",
]


def test_the_key_rule_databricks_bronze_applies_is_the_loaders_on_spark(
    settings: Settings, dbt: Dbt, spark_warehouse: str
) -> None:
    """macros/bronze/identify_records.sql on local Spark (the VARIANT functions Databricks has too)
    quarantines what the Python loader quarantines, with its reasons, and keeps the payload of the
    rest as the same text."""
    from ingestion.bronze_rows import to_bronze_rows

    spark = settings.model_copy(update={"target": "spark", "spark_warehouse": spark_warehouse})
    values = ", ".join(f"({n}, '{line}')" for n, line in enumerate(LINES))
    sql = f"""
        with parsed as (
            select n, raw_record, try_parse_json(raw_record) as record
            from values {values} as lines(n, raw_record)
        )
        select n, {{{{ unidentified_reason('pin') }}}} as reason, {{{{ payload_as_text('pin') }}}}
        from parsed
        order by n
    """
    shown = dbt.run(spark, "show", "--inline", sql, "--limit", "100").results[0].agate_table
    on_spark = [dict(zip(shown.column_names, row, strict=True)) for row in shown.rows]
    good, bad = to_bronze_rows("pin", [line.encode() for line in LINES])
    python_reasons = dict(zip(bad.column("_offset").to_pylist(), bad.column("reason").to_pylist(), strict=True))

    for row in on_spark:
        n = int(row["n"])
        if n in python_reasons:
            expected = python_reasons[n]
            # Python's JSON error says where it failed; Spark's parser says nothing more
            expected = "not valid JSON" if expected.startswith("not valid JSON") else expected
            assert row["reason"] == expected, LINES[n]
        else:
            assert row["reason"] is None, f"{LINES[n]}: {row['reason']}"
    kept = {r["_offset"]: r for r in good.to_pylist()}
    assert set(kept) == {int(row["n"]) for row in on_spark if row["reason"] is None} == {0, 1}
    for row in on_spark:
        if row["reason"] is None:
            python = kept[int(row["n"])]
            for field in ("index", "unique_id", "title", "follower_count", "downloaded", "description", "category"):
                assert row[field] == python[field], (field, LINES[int(row["n"])])
            unknown = json.loads(row["_unknown_fields"]) if row["_unknown_fields"] else None
            expected = json.loads(python["_unknown_fields"]) if python["_unknown_fields"] else None
            # values as text on Databricks (a map of strings), as JSON values in Python
            assert unknown == ({k: str(v) for k, v in expected.items()} if expected else None)
