"""The embedded slice with the lake on a real S3 server (versitygw): delta-rs writes, DuckDB reads,
first all of bronze, then an increment."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ingestion import warehouse
from ingestion.config import Settings
from ingestion.emulate import batches
from ingestion.load import load_posts
from ingestion.post_sources import make_source
from ingestion.services import S3Server

from helpers import Dbt, assert_marts_equal_reference

pytestmark = pytest.mark.slow


def test_bronze_and_dbt_work_on_an_s3_lake(
    s3_server: S3Server, dbt: Dbt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3_server.ensure_bucket(bucket)
    settings = Settings(
        lake=f"s3://{bucket}/pinpipe",
        warehouse=str(tmp_path / "warehouse.duckdb"),
        s3_endpoint_url=s3_server.endpoint_url,
        s3_port=s3_server.settings.s3_port,
    )
    source = make_source("aicore", 21)
    load_posts(settings, source, 3_000, batch_size=1_000)
    load_posts(settings, source, 3_000, batch_size=1_000)  # a rerun appends nothing

    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert any(k.startswith("pinpipe/bronze/pin/_delta_log/") for k in keys)

    dbt.build(settings)
    with warehouse.connect_warehouse(settings) as connection:
        assert connection.execute("select count(*), count(distinct _offset) from bronze.pin").fetchone() == (
            3_000,
            3_000,
        )
    assert_marts_equal_reference(settings, [r for b in batches(source, 3_000) for r in b.records()])

    # an incremental build reads the new commits' files from the bucket: bronze's log listed and read there
    load_posts(settings, source, 3_500, batch_size=1_000)
    dbt.build(settings)
    assert_marts_equal_reference(settings, [r for b in batches(source, 3_500) for r in b.records()])
