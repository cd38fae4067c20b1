"""The pipeline's batch stages as commands: emulate, api, sink, load, transform (the streaming ones: streaming.py)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from enum import StrEnum
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry

from ingestion import (
    batch,
    bronze,
    load,
    metrics,
    post,
    sink,
)
from ingestion.build import build_and_publish
from ingestion.cli.app import STAGES, FullRefreshOption, PostsOption, SeedOption, SourceOption, app, settings_of
from ingestion.cli.operating import load_source_database
from ingestion.config import Settings
from ingestion.emulate import PostBatch, PostSource
from ingestion.errors import PinpipeError
from ingestion.output import console, progress_bars
from ingestion.post_sources import SourceName, make_source
from ingestion.sink import FlushPolicy
from ingestion.supervise import supervised


class IngestEngine(StrEnum):
    python = "python"
    spark = "spark"


class Destination(StrEnum):
    lake = "lake"
    api = "api"
    kinesis = "kinesis"


@app.command(rich_help_panel=STAGES)
def emulate(
    context: typer.Context,
    source: SourceOption = "synthetic",
    posts: PostsOption = 5_000,
    forever: Annotated[bool, typer.Option(help="with --to api or kinesis: keep posting until interrupted")] = False,
    seed: SeedOption = 100,
    to: Annotated[
        Destination,
        typer.Option(
            help="lake: straight into bronze; api: through the ingest API to Kafka; kinesis: through the API to Kinesis"
        ),
    ] = Destination.lake,
    batch_size: Annotated[int | None, typer.Option(min=1, help="posts per bronze commit or per request")] = None,
    api_url: Annotated[str | None, typer.Option(help="ingest API base URL [default: the local API]")] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="posts per second (default: as fast as accepted)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 4,
) -> None:
    """Emulate posts: straight into bronze (embedded path), or through the ingest API (full stack)."""
    settings = settings_of(context)
    if to is Destination.lake:
        load_posts(settings, source, posts, seed, batch_size or 100_000)
        return
    url = api_url or f"http://127.0.0.1:{settings.api_port}"
    if to is Destination.kinesis:
        streams = {table: stream for stream, table in settings.stream_tables.items()}
        destination: post.Destination = post.KinesisStreams(streams)
    else:
        destination = post.KafkaTopics({table: topic for topic, table in settings.topic_tables.items()})
    post_through_api(
        settings, url, destination, source, None if forever else posts, seed, batch_size or 500, rate, concurrency
    )


def post_through_api(
    settings: Settings,
    url: str,
    destination: post.Destination,
    source: SourceName,
    posts: int | None,
    seed: int,
    batch_size: int,
    rate: float | None,
    concurrency: int,
) -> None:
    with progress_bars() as progress:
        task = progress.add_task(f"{url} ← {source}", total=posts)
        result = post.post_batches(
            url,
            _source(settings, source, seed),
            posts,
            batch_size=batch_size,
            concurrency=concurrency,
            rate=rate,
            destination=destination,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            give_up_after=settings.post_give_up_seconds,
            on_batch=lambda batch: progress.advance(task, len(batch)),
        )
    console.print(f"posted {result.posts:,} posts ({result.records:,} records) to {url}")


class _BronzeTally:
    """Rows appended per table and rows quarantined, summed over appends, for the closing line."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()

    def add(self, result: bronze.AppendResult) -> None:
        self.totals[f"{result.table} appended"] += result.appended
        self.totals["quarantined"] += result.quarantined

    def report(self, settings: Settings) -> None:
        summary = ", ".join(f"{count:,} {what}" for what, count in self.totals.items()) or "nothing new: already loaded"
        console.print(f"bronze at {settings.lake}/bronze: {summary}")


def _source(settings: Settings, source: SourceName, seed: int) -> PostSource:
    """The posts of ``source``; the embedded source database is filled with the AiCore rows the
    first time it is asked for."""
    if source == "db" and settings.source_url is None and not settings.embedded_source.exists():
        console.print(f"no source database yet: loading the AiCore rows into {settings.source_database}")
        load_source_database(settings.source_database, None, seed)
    return make_source(source, seed, settings.source_database)


def load_posts(settings: Settings, source: SourceName, posts: int, seed: int, batch_size: int) -> None:
    """``posts`` new posts of the source into bronze, after those it already holds."""
    tally = _BronzeTally()
    with progress_bars() as progress:
        task = progress.add_task(f"bronze ← {posts:,} new {source} posts", total=posts)

        def advance(batch: PostBatch, results: list[bronze.AppendResult]) -> None:
            for result in results:
                tally.add(result)
            progress.advance(task, len(batch))

        load.load_new_posts(settings, _source(settings, source, seed), posts, batch_size=batch_size, on_batch=advance)
    tally.report(settings)


@app.command(name="api", rich_help_panel=STAGES)
def api_command(
    context: typer.Context,
    port: Annotated[int | None, typer.Option(envvar="PINPIPE_API_PORT", help="port on 127.0.0.1")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, envvar="PINPIPE_API_WORKERS", help="worker processes [default: 2]")
    ] = None,
) -> None:
    """Serve the ingest API: Kafka REST Proxy v2 and Kinesis compatible.

    OpenAPI at /docs. Worker processes share the port, each with its own Kafka producer."""
    import uvicorn

    from ingestion.api.common import instance_metrics_dir
    from ingestion.api.slow_clients import header_deadline

    settings = settings_of(context)
    given = {"api_port": port, "api_workers": workers}
    settings = settings.model_copy(update={name: value for name, value in given.items() if value is not None})
    os.environ.update(settings.environment())  # the workers build their settings from it
    # every worker's metrics in one /metrics: prometheus-client's multiprocess mode, in a folder of this
    # API's own (another API on the same state dir has its own), removed when it stops
    metrics_dir = instance_metrics_dir(settings.state_dir / "api-metrics")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    url = f"http://127.0.0.1:{settings.api_port}"
    worker_count = f"{settings.api_workers} worker{'s' if settings.api_workers > 1 else ''}"
    console.print(
        f"ingest API on {url} ({worker_count}): OpenAPI at {url}/docs, health at {url}/healthz; Ctrl-C stops it",
        highlight=False,
    )
    try:
        uvicorn.run(
            "ingestion.api:app_from_environment",
            factory=True,
            host="127.0.0.1",
            port=settings.api_port,
            workers=settings.api_workers,
            http=header_deadline(settings),
            log_level="warning",
            # uvicorn kills a worker that misses a 5 s health ping: on a starved machine that is a busy,
            # healthy worker, and its requests in flight are cut off
            timeout_worker_healthcheck=30,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command(name="sink", rich_help_panel=STAGES)
def sink_command(
    context: typer.Context,
    until_caught_up: Annotated[bool, typer.Option(help="stop once every record present at start is stored")] = False,
    flush_records: Annotated[int, typer.Option(min=1)] = FlushPolicy.records,
    flush_bytes: Annotated[int, typer.Option(min=1)] = FlushPolicy.bytes,
    flush_seconds: Annotated[float, typer.Option(min=0.0)] = FlushPolicy.seconds,
) -> None:
    """Kafka → S3: JSON-lines objects per topic partition, exactly once.

    Offsets are committed after each object. Restarted on its own when Kafka or S3 fails (unless
    --until-caught-up). Serves its metrics on PINPIPE_SINK_METRICS_PORT; with --until-caught-up,
    pushes them to the Pushgateway at the end."""
    settings, policy = settings_of(context).with_local_s3(), FlushPolicy(flush_records, flush_bytes, flush_seconds)
    observed = metrics.SinkMetrics(CollectorRegistry())
    if not until_caught_up:
        serve_metrics(observed.registry, settings.sink_metrics_port, "sink")
    stored, stop = sink.SinkStats(), threading.Event()  # over restarts
    if not until_caught_up:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between polls; what it buffered is read again
            signal.signal(stop_signal, lambda *_: stop.set())
    supervised(
        "sink", lambda: run_sink(settings, until_caught_up, policy, observed, stored, stop), restart=not until_caught_up
    )


def serve_metrics(registry: CollectorRegistry, port: int, stage: str) -> None:
    url = metrics.serve(registry, port, stage)
    if url is not None:
        console.print(f"{stage} metrics for Prometheus: {url}", style="dim", highlight=False)


def push_metrics(settings: Settings, registry: CollectorRegistry, job: str) -> None:
    """A run that ends hands its metrics to the Pushgateway, when one answers."""
    if metrics.push(settings, registry, job):
        _said_pushed(settings, job)


def _said_pushed(settings: Settings, job: str) -> None:
    console.print(f"metrics pushed to {settings.pushgateway_address} as job {job}", style="dim", highlight=False)


def run_sink(
    settings: Settings,
    until_caught_up: bool,
    policy: FlushPolicy = FlushPolicy(),
    observed: metrics.SinkMetrics | None = None,
    stored: sink.SinkStats | None = None,
    stop: threading.Event | None = None,
) -> None:
    """The sink: until caught up (its metrics pushed at the end), or until stopped (served).
    ``stored`` sums the objects stored over the runs of one command (a restarted sink's too); ``stop``
    ends it between polls."""
    stored = stored or sink.SinkStats()
    with progress_bars() as progress:
        task = progress.add_task("Kafka → S3 objects", total=None)

        def advance(key: str, records: int) -> None:
            stored.records += records
            stored.objects += 1
            progress.advance(task, records)

        if until_caught_up:
            _, pushed = batch.sink_until_caught_up(settings, policy, advance)
        else:
            worker = sink.S3Sink.from_settings(settings, policy, observed or metrics.SinkMetrics(CollectorRegistry()))
            worker.run(on_flush=advance, stop=stop)
            pushed = False
    console.print(
        f"stored {stored.records:,} records in {stored.objects:,} objects under s3://{settings.s3_bucket}/raw/"
    )
    if pushed:
        _said_pushed(settings, metrics.SINK_JOB)


@app.command(name="load", rich_help_panel=STAGES)
def load_command(
    context: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="raw JSON-lines objects to load: an s3:// prefix or a local folder "
            "[default: the sink's s3://<bucket>/raw]; with --engine spark, `kafka` reads the topics themselves",
        ),
    ] = None,
    every: Annotated[
        float | None, typer.Option(min=0.0, help="keep loading: look for new objects every this many seconds")
    ] = None,
    engine: Annotated[
        IngestEngine | None,
        typer.Option(
            envvar="PINPIPE_INGEST_ENGINE",
            help="python (pinpipe's loader) or spark (PySpark Structured Streaming, `make spark`) [default: python]",
        ),
    ] = None,
    max_per_batch: Annotated[
        int | None, typer.Option(min=1, help="spark: Kafka records or objects per micro-batch [default: all]")
    ] = None,
) -> None:
    """Raw objects → bronze Delta: every record not yet loaded, exactly once.

    Reads the sink's objects, in S3 or copied to a folder, and backfill files under
    <folder>/<topic>/. With --every, serves its metrics on PINPIPE_LOADER_METRICS_PORT; else pushes
    them to the Pushgateway at the end. --engine spark runs the same load as a Structured Streaming
    job (and can read Kafka straight: --from kafka); see docs/spark-ingestion.md."""
    settings = settings_of(context).with_local_s3()
    if engine is not None:
        settings = settings.model_copy(update={"ingest_engine": engine.value})
    if settings.ingest_engine == "spark":
        from ingestion.cli.spark import spark_load

        spark_load(settings, source, every, max_per_batch)
        return
    if max_per_batch is not None:
        raise PinpipeError("--max-per-batch bounds the spark engine's micro-batches: add --engine spark")
    if source == "kafka":
        raise PinpipeError(
            "the python loader reads the sink's objects: run `pinpipe sink` first, or read Kafka straight with "
            "--engine spark"
        )
    if every is None:
        load_objects(settings, source)
        return
    observed = metrics.BronzeMetrics(CollectorRegistry())
    serve_metrics(observed.registry, settings.loader_metrics_port, "loader")
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between loads, never mid-load
        signal.signal(stop_signal, lambda *_: stop.set())
    tally = _BronzeTally()

    def committed(result: bronze.AppendResult, _: list[load.RawFile]) -> None:
        # told at each commit: a load cut short by a restart still counts what it committed
        tally.add(result)
        progress.advance(task, result.appended + result.quarantined)

    def keep_loading() -> None:
        loader = load.RawObjectLoader(settings, source, observed)
        while not stop.is_set():
            started = time.monotonic()
            loader.load(committed)
            stop.wait(max(0.0, every - (time.monotonic() - started)))

    with progress_bars() as progress:
        task = progress.add_task(f"{source or 'S3'} objects → bronze, every {every:g} s", total=None)
        supervised("loader", keep_loading, restart=True)
    tally.report(settings)


def load_objects(settings: Settings, source: str | None = None) -> None:
    tally = _BronzeTally()
    with progress_bars() as progress:
        task = progress.add_task(f"{source or 'S3'} objects → bronze", total=None)

        def advance(result: bronze.AppendResult, objects: list[load.RawFile]) -> None:
            tally.add(result)
            progress.advance(task, len(objects))

        _, pushed = batch.load_new_objects(settings, source, advance)
    tally.report(settings)
    if pushed:
        _said_pushed(settings, metrics.LOADER_JOB)


@app.command(name="transform", rich_help_panel=STAGES)
def transform_command(
    context: typer.Context,
    select: Annotated[str | None, typer.Option(help="dbt node selection")] = None,
    full_refresh: FullRefreshOption = False,
) -> None:
    """dbt build: staging, intermediate and marts with their data tests.

    The tests of an incremental model check the rows its build wrote (every row with
    PINPIPE_TEST_EVERY_ROW=true); dbt's unit tests run too with PINPIPE_RUN_UNIT_TESTS=true."""
    build_and_publish(settings_of(context), select, full_refresh=full_refresh)
