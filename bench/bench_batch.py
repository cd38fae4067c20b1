"""Batch path benchmark on the real services: API → Kafka → S3 → bronze, and each stage alone.

Starts Kafka and versitygw itself (state under a temporary directory, fresh topics per size), then
for each size: posts through the API (the posting client in this process, the API in a thread of
this process), drains the sink, runs the loader; and, as the ceiling, converts the same raw JSON
lines to Parquet with pyarrow alone.

    .venv/bin/python bench/bench_batch.py                    # 100k and 1M records
    .venv/bin/python bench/bench_batch.py --records 30000    # a quick look
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.json as pa_json
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from ingestion.clients import s3_client
from ingestion.config import Settings
from ingestion.emulate import make_source
from ingestion.load import load_raw_objects
from ingestion.post import KafkaTopics, post_batches
from ingestion.services import KafkaBroker, S3Server
from ingestion.sink import S3Sink
from ingestion.stack import api_server


def _timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def run_size(base: Settings, records: int, batch_size: int, concurrency: int) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "topics": (f"pin-{run}", f"geo-{run}", f"user-{run}"),
            "s3_bucket": f"bench-{run}",
            "sink_group": f"sink-{run}",
            "lake": f"s3://bench-{run}/lake",
        }
    )
    S3Server(settings).ensure_bucket(settings.s3_bucket)
    KafkaBroker(settings).ensure_topics()
    posts = records // 3
    topics = {table: topic for topic, table in settings.topic_tables.items()}
    with api_server(settings) as url:
        post_s, _ = _timed(
            lambda: post_batches(
                url,
                make_source("synthetic", 1),
                posts,
                batch_size=batch_size,
                concurrency=concurrency,
                destination=KafkaTopics(topics),
            )
        )
    client = s3_client(settings)
    sink = S3Sink.from_settings(settings)
    sink_s, _ = _timed(lambda: sink.run(until_caught_up=True))
    load_s, _ = _timed(lambda: load_raw_objects(settings))

    # the ceiling: the same raw JSON lines straight to Parquet with pyarrow, no services
    objects = [
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket, Prefix="raw/")
        for o in p.get("Contents", [])
    ]
    data = [client.get_object(Bucket=settings.s3_bucket, Key=k)["Body"].read() for k in objects]

    def to_parquet() -> None:
        for blob in data:
            pq.write_table(pa_json.read_json(io.BytesIO(blob)), io.BytesIO())

    ceiling_s, _ = _timed(to_parquet)
    total = post_s + sink_s + load_s
    return {
        "records": posts * 3,
        "posts": posts,
        "post_s": post_s,
        "sink_s": sink_s,
        "load_s": load_s,
        "total_s": total,
        "ceiling_s": ceiling_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=500, help="posts per request")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        base = Settings(
            state_dir=Path(scratch),
            kafka_port=19092,
            kafka_controller_port=19093,
            s3_port=17070,
            api_port=18080,
            s3_endpoint_url="http://127.0.0.1:17070",
        )
        servers = [S3Server(base), KafkaBroker(base)]
        for server in servers:
            server.up()
        try:
            rows = [run_size(base, n, args.batch_size, args.concurrency) for n in args.records]
        finally:
            for server in servers:
                server.down()

    table = Table(
        title=f"batch path, {platform.machine()}, 2 cores; "
        f"API batch {args.batch_size} posts, {args.concurrency} in flight"
    )
    for column in (
        "records",
        "API→Kafka rec/s",
        "sink rec/s",
        "loader rec/s",
        "end to end rec/s",
        "posts/s",
        "pyarrow JSON→Parquet rec/s",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        n = r["records"]
        table.add_row(
            f"{n:,}",
            f"{n / r['post_s']:,.0f}",
            f"{n / r['sink_s']:,.0f}",
            f"{n / r['load_s']:,.0f}",
            f"{n / r['total_s']:,.0f}",
            f"{r['posts'] / r['total_s']:,.0f}",
            f"{n / r['ceiling_s']:,.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
