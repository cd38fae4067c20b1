"""The pipeline's stages as commands: emulate, api, sink, load, stream, compact, refresh, transform."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from enum import StrEnum
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry
from rich.table import Table

from ingestion import (
    batch,
    bronze,
    load,
    metrics,
    post,
    sink,
    transform,
    warehouse,
)
from ingestion.build import build_and_publish
from ingestion.cli.app import STAGES, FullRefreshOption, PostsOption, SeedOption, SourceOption, app, settings_of
from ingestion.cli.operating import load_source_database
from ingestion.config import Settings
from ingestion.emulate import PostBatch, PostSource
from ingestion.lake import BRONZE_TABLES, STREAM_TABLES, Lake, compact
from ingestion.output import console, progress_bars
from ingestion.post_sources import SourceName, make_source
from ingestion.sink import FlushPolicy
from ingestion.supervise import supervised


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
        _serve_metrics(observed.registry, settings.sink_metrics_port, "sink")
    stored, stop = sink.SinkStats(), threading.Event()  # over restarts
    if not until_caught_up:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between polls; what it buffered is read again
            signal.signal(stop_signal, lambda *_: stop.set())
    supervised(
        "sink", lambda: run_sink(settings, until_caught_up, policy, observed, stored, stop), restart=not until_caught_up
    )


def _serve_metrics(registry: CollectorRegistry, port: int, stage: str) -> None:
    url = metrics.serve(registry, port, stage)
    if url is not None:
        console.print(f"{stage} metrics for Prometheus: {url}", style="dim", highlight=False)


def _push_metrics(settings: Settings, registry: CollectorRegistry, job: str) -> None:
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
            "[default: the sink's s3://<bucket>/raw]",
        ),
    ] = None,
    every: Annotated[
        float | None, typer.Option(min=0.0, help="keep loading: look for new objects every this many seconds")
    ] = None,
) -> None:
    """Raw objects → bronze Delta: every record not yet loaded, exactly once.

    Reads the sink's objects, in S3 or copied to a folder, and backfill files under
    <folder>/<topic>/. With --every, serves its metrics on PINPIPE_LOADER_METRICS_PORT; else pushes
    them to the Pushgateway at the end."""
    settings = settings_of(context).with_local_s3()
    if every is None:
        load_objects(settings, source)
        return
    observed = metrics.BronzeMetrics(CollectorRegistry())
    _serve_metrics(observed.registry, settings.loader_metrics_port, "loader")
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


@app.command(name="stream", rich_help_panel=STAGES)
def stream_command(
    context: typer.Context,
    until_caught_up: Annotated[bool, typer.Option(help="stop once every record in the streams is in bronze")] = False,
    dbt_every: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="also run the streaming dbt models every this many seconds (`pinpipe refresh`, a process of its own)",
        ),
    ] = None,
    flush_seconds: Annotated[float, typer.Option(min=0.0, help="commit buffered records at least this often")] = 1.0,
    flush_records: Annotated[int, typer.Option(min=1, help="commit once this many records are buffered")] = 10_000,
    shards: Annotated[
        str, typer.Option(help="this consumer's part of the shards when N run: i/N (metrics on the port + i - 1)")
    ] = "1/1",
) -> None:
    """Kinesis → bronze stream tables, exactly once (with --dbt-every, the streaming models too).

    Serves its metrics on PINPIPE_STREAM_METRICS_PORT; with --until-caught-up, pushes them to the
    Pushgateway at the end."""
    from ingestion.stream import ShardPart, StreamConsumer

    try:
        part = ShardPart.parse(shards)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    settings = settings_of(context)
    observed = metrics.StreamMetrics(CollectorRegistry())
    if not until_caught_up:
        _serve_metrics(observed.registry, settings.stream_metrics_port + part.number - 1, "stream consumer")
    consumers: list[StreamConsumer] = []  # a new one on each restart: it resumes from what bronze holds
    refresher, refresh_log = None, settings.state_dir / "refresh.log"
    if dbt_every is not None:
        # dbt in a process of its own: sharing this one's interpreter would slow the consumer down;
        # a session of its own too, so Ctrl-C reaches it only through this process, after the last flush
        refresh_log.parent.mkdir(parents=True, exist_ok=True)
        with refresh_log.open("ab") as log:
            refresher = subprocess.Popen(
                [sys.executable, "-m", "ingestion", "refresh", "--every", str(dbt_every)],
                env={**os.environ, **settings.environment()},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        console.print(f"dbt refreshes the streaming models every {dbt_every:g} s; log: {refresh_log}")
    try:
        with progress_bars() as progress:
            records = progress.add_task("Kinesis → bronze streams (records)", total=None)

            def consume() -> None:
                consumers.append(
                    StreamConsumer.from_settings(
                        settings, flush_records=flush_records, flush_seconds=flush_seconds, metrics=observed, part=part
                    )
                )
                consumers[-1].run(
                    until_caught_up=until_caught_up, on_flush=lambda flushed: progress.advance(records, flushed)
                )

            supervised("stream consumer", consume, restart=not until_caught_up)
    except KeyboardInterrupt:
        if consumers:
            consumers[-1].flush()
    finally:
        if refresher is not None:
            refresher.terminate()  # it finishes the run under way, if any
            if refresher.wait() not in (0, -signal.SIGTERM):
                console.print(f"[red]the dbt refreshes failed (exit {refresher.returncode}): see {refresh_log}[/red]")
    if refresher is not None:  # the last records committed reach the models too
        with warehouse.building(settings, on_wait=console.print) as private:
            transform.run_dbt(private, ["run", "--quiet", "--select", "streaming"])
    committed = sum(c.committed for c in consumers)
    console.print(f"bronze stream tables at {settings.lake}/bronze: {committed:,} records committed")
    if until_caught_up:
        _push_metrics(settings, observed.registry, metrics.STREAM_JOB)


@app.command(name="compact", rich_help_panel=STAGES)
def compact_command(
    context: typer.Context,
    table: Annotated[
        list[str] | None, typer.Option(help="bronze table (repeatable); default the stream tables")
    ] = None,
    retention_hours: Annotated[
        int | None, typer.Option(min=0, envvar="PINPIPE_STREAM_RETENTION_HOURS", help="time travel kept [default: 1]")
    ] = None,
) -> None:
    """Compact bronze tables: few files, old files and log entries deleted, a checkpoint.

    `pinpipe stream` compacts its tables itself every PINPIPE_STREAM_COMPACT_SECONDS; run this on
    tables no process is writing.
    """
    settings = settings_of(context)
    if unknown := sorted(set(table or []) - set(BRONZE_TABLES)):
        raise typer.BadParameter(
            f"no bronze table {', '.join(unknown)}; the tables are {', '.join(BRONZE_TABLES)}",
            param_hint="--table",
        )
    bronze_lake = Lake.from_settings(settings)
    hours = settings.stream_retention_hours if retention_hours is None else retention_hours
    report = Table("table", title=f"bronze compacted (time travel kept: {hours} h)")
    for column in ("files before", "files after", "files deleted"):
        report.add_column(column, justify="right")
    for name in table or list(STREAM_TABLES.values()):
        done = compact(bronze_lake, name, retention_hours=hours)
        report.add_row(name, f"{done.files_before:,}", f"{done.files_after:,}", f"{done.files_deleted:,}")
    console.print(report)


@app.command(rich_help_panel=STAGES)
def refresh(
    context: typer.Context,
    every: Annotated[float, typer.Option(min=0.0, help="seconds between the starts of two refreshes")] = 1.0,
    select: Annotated[str, typer.Option(help="dbt node selection")] = "streaming",
    dbt_vars: Annotated[
        str | None, typer.Option("--vars", help="dbt vars (YAML), e.g. '{metrics_as_of: \"2026-01-01 12:00:00\"}'")
    ] = None,
) -> None:
    """The streaming models refreshed every second or so.

    dbt runs them once; after that their compiled SQL runs in this process (on DuckDB; on Spark and
    Databricks dbt runs every refresh)."""
    from ingestion.streaming_refresh import StreamingRefresh

    settings = settings_of(context)
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between refreshes, never mid-refresh
        signal.signal(stop_signal, lambda *_: stop.set())
    fresh = StreamingRefresh(settings, select, console.print, dbt_vars)
    with progress_bars() as progress, contextlib.closing(fresh):
        task = progress.add_task(f"{select} models (refreshes)", total=None)
        while not stop.is_set():
            started = time.monotonic()
            done = fresh.run()
            metrics.push_dbt_results(settings, done, "pinpipe_refresh")
            progress.update(task, advance=1, description=f"{select} models (refreshes, last {done.seconds:.2f} s)")
            stop.wait(max(0.0, every - (time.monotonic() - started)))


@app.command(name="transform", rich_help_panel=STAGES)
def transform_command(
    context: typer.Context,
    select: Annotated[str | None, typer.Option(help="dbt node selection")] = None,
    full_refresh: FullRefreshOption = False,
) -> None:
    """dbt build: staging, intermediate and marts with every data test.

    dbt's unit tests run too with PINPIPE_RUN_UNIT_TESTS=true."""
    build_and_publish(settings_of(context), select, full_refresh=full_refresh)
