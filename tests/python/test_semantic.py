"""The semantic layer as analysts use it: `mf validate-configs` and `mf query` on a built warehouse,
`pinpipe metrics` (a table, CSV, JSON, the SQL, the list, a question) and its one-line errors, and the
semantic manifest on the Spark and Databricks targets. Each question's answer against its mart is
checked on the end-to-end builds (semantic_checks.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion import reading
from ingestion.config import PROJECT_DIR, Settings
from ingestion.errors import NotReadOnly
from ingestion.load import load_posts
from ingestion.post_sources import make_source

from helpers import Dbt, Done, one_line_error, pinpipe_here

MF = str(Path(sys.executable).parent / "mf")
DBT_PARSE = [sys.executable, "-m", "dbt.cli.main", "parse", "--quiet"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dbt: Dbt) -> Settings:
    """A warehouse built from real rows, once for the module."""
    home = tmp_path_factory.mktemp("semantic")
    settings = Settings(lake=str(home / "lake"), warehouse=str(home / "warehouse.duckdb"), target="local")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("DBT_TARGET_PATH", str(home / "target"))  # the module's own
        load_posts(settings, make_source("aicore", 5), 1_500)
        dbt.build(settings)
    return settings


def _succeeds(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``command`` as a process of its own; it must exit 0. Its output."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _posts(built: Settings) -> int:
    return reading.query(built, "select count(*) as n from intermediate.int_posts_enriched")["n"][0].as_py()


def _pinpipe(built: Settings, *args: str) -> Done:
    """`pinpipe` in this process on the module's warehouse, with the dbt target folder it was built
    with (the project's own target/ is other tests' too)."""
    return pinpipe_here(built, *args, DBT_TARGET_PATH=str(Path(built.warehouse).parent / "target"))


@pytest.mark.slow
def test_mf_validates_the_configs_and_answers_a_saved_question_like_its_mart(built: Settings, tmp_path: Path) -> None:
    """MetricFlow's own CLI, as its docs have an analyst run it: from the project folder, after a
    parse into dbt's default target/ (where `mf` reads the semantic manifest). The folder is a copy
    of the project (its files linked) whose target/ is this test's own."""
    project = tmp_path / "project"
    project.mkdir()
    for entry in PROJECT_DIR.iterdir():
        if entry.name not in ("target", "logs"):
            (project / entry.name).symlink_to(entry)
    env = {key: value for key, value in {**os.environ, **built.environment()}.items() if key != "DBT_TARGET_PATH"}
    env["DBT_LOG_PATH"] = str(tmp_path / "logs")
    _succeeds(DBT_PARSE, project, env)
    validated = _succeeds([MF, "validate-configs"], project, env)
    assert "ERRORS: 0" in validated, validated
    assert "Breaking issues" not in validated, validated
    _succeeds(
        [MF, "query", "--saved-query", "users_joined_by_year", "--csv", str(tmp_path / "answer.csv")], project, env
    )
    answered = {
        (int(row["person__join_year"]), int(row["users_joined"]))
        for row in csv.DictReader((tmp_path / "answer.csv").open())
    }
    assert answered == {tuple(row.values()) for row in reading.read_mart(built, "users_joined_by_year").to_pylist()}
    # and any metric by any dimension, as the docs show it
    by_category = [
        MF,
        "query",
        "--metrics",
        "posts",
        "--group-by",
        "post__category",
        "--csv",
        str(tmp_path / "posts.csv"),
    ]
    _succeeds(by_category, project, env)
    assert sum(int(row["posts"]) for row in csv.DictReader((tmp_path / "posts.csv").open())) == _posts(built)


@pytest.mark.slow
def test_pinpipe_metrics_prints_a_table_csv_json_and_the_sql(built: Settings) -> None:
    table = _pinpipe(built, "metrics", "posts", "distinct_posters", "--by", "post__category", "--order", "-posts")
    assert table.code == 0, table.err
    assert "posts, distinct_posters by post__category" in table.out

    as_csv = pinpipe_here(
        built, "metrics", "posts", "--by", "post__country", "--by", "person__join_year", "--format", "csv", "--sql"
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert sum(int(row["posts"]) for row in rows) == _posts(built)
    assert "int_posts_enriched" in as_csv.err  # the SQL, on stderr
    assert "int_people" in as_csv.err

    as_json = json.loads(
        _pinpipe(built, "metrics", "--question", "most_popular_category_by_country", "--format", "json").out
    )
    mart = reading.read_mart(built, "most_popular_category_by_country").to_pylist()
    assert sorted(tuple(row.values()) for row in as_json) == sorted(tuple(row.values()) for row in mart)

    # a time dimension without a grain is by day
    by_day = _pinpipe(built, "metrics", "posts", "--by", "post__posted_at", "--format", "csv")
    assert by_day.out.splitlines()[0] == '"post__posted_at__day","posts"'

    listing = _pinpipe(built, "metrics", "--list")
    for name in (
        "posts",
        "median_follower_count",
        "users_joined",
        "post__country",
        "person__join_year",
        "users_joined_by_year",
    ):
        assert name in listing.out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (("metrics", "nope"), ("no metric 'nope'", "posts")),
        (("metrics", "posts", "--by", "country"), ("country is not a dimension of the metric posts", "post__country")),
        (("metrics", "median_follower_count", "--by", "post__country"), ("not a dimension", "person__age_group")),
        (("metrics", "--question", "nope"), ("no question 'nope'", "users_joined_by_year")),
        (("metrics", "--question", "users_joined_by_year", "--by", "person__age_group"), ("answered as saved",)),
        (("metrics",), ("name a metric",)),
        (("metrics", "posts", "--by", "post__category", "--order", "-nope"), ("--order takes a metric or a --by",)),
        (("metrics", "posts", "--where", "{{ Dimension('post__category') "), ("Error parsing where filter",)),
    ],
)
def test_a_metric_or_dimension_that_does_not_exist_is_one_line_naming_what_does(
    built: Settings, args: tuple[str, ...], phrases: tuple[str, ...]
) -> None:
    one_line_error(_pinpipe(built, *args), 2, *phrases)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["spark", "databricks"])
def test_the_semantic_manifest_parses_for_the_other_targets(target: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PINPIPE_TARGET": target,
        "DATABRICKS_HOST": "dbc-0000.cloud.databricks.com",
        "DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/0",
        "DATABRICKS_TOKEN": "not-a-token",
        "PINPIPE_LAKE": "s3://pinpipe/lake",
        "DBT_TARGET_PATH": str(tmp_path),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    _succeeds(DBT_PARSE, PROJECT_DIR, env)
    manifest = json.loads((tmp_path / "semantic_manifest.json").read_text())
    assert {m["name"] for m in manifest["metrics"]} >= {"posts", "median_follower_count", "users_joined"}
    assert len(manifest["saved_queries"]) == 9


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("-- MetricFlow's plan\n-- in comments\nSELECT 1", None),
        ("-- a comment hides nothing\ndrop table marts.users_joined_by_year", "not drop"),
        ("-- only a comment\n", "one statement at a time, not 0"),
        ("select 1; -- then\n drop table x", "one statement at a time, not 2"),
    ],
)
def test_on_spark_and_databricks_comment_lines_before_a_query_are_read_past_never_past_a_write(
    sql: str, refused: str | None
) -> None:
    """MetricFlow's SQL starts with comment lines; where the first word decides (Spark, Databricks)."""
    if refused is None:
        reading.check_read_only(sql, dialect="spark")
    else:
        with pytest.raises(NotReadOnly, match=refused):
            reading.check_read_only(sql, dialect="spark")
