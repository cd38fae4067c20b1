"""The ``pinpipe`` command: parses options, builds the settings, calls the stages, shows progress."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_never
from typer.core import TyperGroup

from ingestion import (
    artifacts,
    bronze,
    duckdb_setup,
    load,
    metrics,
    post,
    reading,
    services,
    sink,
    transform,
    warehouse,
)
from ingestion import stack as stack_api
from ingestion.bus import BusError
from ingestion.config import Settings, described_settings
from ingestion.emulate import PostBatch, PostSource
from ingestion.errors import PinpipeError, ServiceDown
from ingestion.lake import BRONZE_TABLES, STREAM_TABLES, Lake, compact
from ingestion.post_sources import SourceName, make_source
from ingestion.sink import FlushPolicy

START, STAGES, OPERATING = "Start here", "The pipeline's stages", "Operating"
COMMAND_ORDER = [
    *("run", "ui", "sql", "marts", "docs"),
    *("emulate", "source", "api", "sink", "load", "stream", "compact", "refresh", "transform"),
    *("services", "setup", "settings"),
]


class _InOrder(TyperGroup):
    """`pinpipe --help` lists the main command first, then the stages in the data's order."""

    def list_commands(self, ctx: Any) -> list[str]:  # typer's own click Context
        return sorted(super().list_commands(ctx), key=COMMAND_ORDER.index)


app = typer.Typer(
    cls=_InOrder,
    help="pinpipe: Pinterest-style posts → bronze Delta → dbt marts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader stopped reading (`pinpipe marts | head`): done, not failed (rich exits 1)."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        raise SystemExit(0)


console = _Console(soft_wrap=True)  # a message is one line in a log or a pipe, not cut at 80 columns
errors = Console(stderr=True, soft_wrap=True)

FullRefreshOption = Annotated[
    bool,
    typer.Option(
        "--full-refresh",
        help="rebuild the incremental models (staging, int_posts_enriched) from all of bronze, not only its new rows",
    ),
]
SourceOption = Annotated[
    SourceName,
    typer.Option(
        help="aicore replays the real rows; synthetic generates posts; db reads the source database "
        "(PINPIPE_SOURCE_URL, default an SQLite file `pinpipe source load` fills)"
    ),
]
PostsOption = Annotated[int, typer.Option(min=1, help="new posts to emulate (after those bronze already holds)")]
SeedOption = Annotated[int, typer.Option(help="emulator seed: same seed, same posts")]
BatchOption = Annotated[int, typer.Option(min=1, help="posts per bronze commit")]


@app.callback()
def options(
    context: typer.Context,
    lake: Annotated[str | None, typer.Option(envvar="PINPIPE_LAKE", help="lake root, a path or s3:// URI")] = None,
    warehouse: Annotated[str | None, typer.Option(envvar="PINPIPE_WAREHOUSE", help="DuckDB warehouse file")] = None,
    target: Annotated[
        str | None, typer.Option(envvar="PINPIPE_TARGET", help="dbt target: local, spark, databricks")
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="PINPIPE_DEBUG", help="on an error, the whole traceback, not one line")
    ] = False,
) -> None:
    """pinpipe: Pinterest-style posts → bronze Delta → dbt marts. Every setting is also a PINPIPE_*
    variable (the options here win)."""
    given: dict[str, Any] = {"lake": lake, "warehouse": warehouse, "target": target}
    context.obj = Settings(**{name: value for name, value in given.items() if value is not None})


def _settings(context: typer.Context) -> Settings:
    settings: Settings = context.find_root().obj
    return settings


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


services_app = typer.Typer(
    help="The full stack's local services: S3, Kafka, Kinesis, Prometheus, Pushgateway.",
    no_args_is_help=True,
)
app.add_typer(services_app, name="services", rich_help_panel=OPERATING)

Server = (
    services.S3Server
    | services.KafkaBroker
    | services.KinesisServer
    | services.Pushgateway
    | services.PrometheusServer
    | services.PostgresServer
)


class OptionalService(StrEnum):
    postgres = "postgres"


def _servers(settings: Settings, with_: list[OptionalService] | None = None) -> list[Server]:
    """The stack's services; with ``with_`` (or, for status and down, those ever started) the optional ones."""
    postgres = services.PostgresServer(settings)
    wanted = OptionalService.postgres in (with_ or []) or (with_ is None and postgres.process.home.exists())
    return [
        services.S3Server(settings),
        services.KafkaBroker(settings),
        services.KinesisServer(settings),
        services.Pushgateway(settings),
        services.PrometheusServer(settings),
        *([postgres] if wanted else []),
    ]


@services_app.command("up")
def services_up(
    context: typer.Context,
    with_: Annotated[
        list[OptionalService] | None,
        typer.Option("--with", help="also start an optional service: postgres (the source database)"),
    ] = None,
) -> None:
    """Fetch (once, cached), start and wait for every service; idempotent. Prometheus and the
    Pushgateway are Debian's packages: without them the stack runs unmonitored."""
    _services_up(_settings(context), with_ or [])


def _services_up(settings: Settings, with_: list[OptionalService] | None = None) -> None:
    for server in _servers(settings, with_ or []):
        with console.status(f"starting {server.process.name}"):
            try:
                server.up()
            except services.ServiceError as failed:
                if not isinstance(server, services.Pushgateway | services.PrometheusServer):
                    raise
                # monitoring is optional: the pipeline runs all the same
                errors.print(f"[yellow]not monitored:[/yellow] {failed}", highlight=False)
    _services_status(settings)


@services_app.command("down")
def services_down(context: typer.Context) -> None:
    """Stop every service this project started."""
    settings = _settings(context)
    for server in _servers(settings):
        server.down()
    _services_status(settings)


@services_app.command("status")
def services_status(context: typer.Context) -> None:
    """Show each service: address, pid, log; and where Prometheus' UI is."""
    _services_status(_settings(context))


def _services_status(settings: Settings) -> None:
    table = Table("service", "state", "address", "pid", "log")
    for server in _servers(settings):
        status = server.process.status()
        state = "[green]up[/green]" if status.running else "[red]down[/red]"
        table.add_row(status.name, state, status.address, str(status.pid or ""), str(status.log))
    console.print(table)
    prometheus = services.PrometheusServer(settings)
    if prometheus.process.status().running:
        console.print(f"Prometheus: {prometheus.url} (alerts at /alerts, scrape targets at /targets)", highlight=False)


source_app = typer.Typer(
    help="The source database `--source db` reads (SQLite by default; PostgreSQL, MySQL by URL).",
    no_args_is_help=True,
)
app.add_typer(source_app, name="source", rich_help_panel=STAGES)


@source_app.command("load")
def source_load(
    context: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(envvar="PINPIPE_SOURCE_URL", help="SQLAlchemy URL [default: sqlite:///<state dir>/source.db]"),
    ] = None,
    synthetic: Annotated[
        int | None, typer.Option(min=1, help="load the distinct keys of this many synthetic posts, not the AiCore rows")
    ] = None,
    seed: SeedOption = 100,
) -> None:
    """(Re)create the source tables (pinterest_data, geolocation_data, user_data) and fill them."""
    settings = _settings(context)
    _load_source(url or settings.source_database, synthetic, seed)


def _load_source(url: str, synthetic: int | None, seed: int) -> None:
    from ingestion import source

    engine = source.create(url)
    with _progress() as progress:
        what = "the AiCore rows" if synthetic is None else f"the distinct keys of {synthetic:,} synthetic posts"
        task = progress.add_task(f"source ← {what} (rows)", total=None)

        def advance(table: str, rows: int) -> None:
            progress.advance(task, rows)

        loaded = source.load_source(engine, synthetic_posts=synthetic, seed=seed, on_rows=advance)
    counts = ", ".join(f"{rows:,} {source.SOURCE_TABLES[table]}" for table, rows in loaded.items())
    console.print(f"source database {engine.url.render_as_string(hide_password=True)}: {counts}")


@app.command(rich_help_panel=OPERATING)
def setup(context: typer.Context) -> None:
    """Install the DuckDB extensions the warehouse uses (delta, httpfs) from their PyPI wheels."""
    directory = _settings(context).duckdb_extension_directory
    installed = duckdb_setup.ensure_duckdb_extensions(directory)
    done = f"installed {', '.join(installed)}" if installed else "already installed"
    console.print(f"DuckDB extensions delta and httpfs: {done} in {directory}")


@app.command(name="settings", rich_help_panel=OPERATING)
def settings_command(context: typer.Context) -> None:
    """Every setting: its PINPIPE_* variable, its value and where it came from (secrets masked)."""
    root = context.find_root()
    given = {name for name in GLOBAL_OPTIONS if getattr(root.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    table = Table(title="settings (each set by its variable; the options win)", title_justify="left")
    for column in ("setting", "variable", "value", "from"):
        table.add_column(column, overflow="fold")
    for row in described_settings(_settings(context), given):
        table.add_row(row.name, row.variable, row.value, row.origin)
    console.print(table)


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
    settings = _settings(context)
    if to is Destination.lake:
        _load(settings, source, posts, seed, batch_size or 100_000)
        return
    url = api_url or f"http://127.0.0.1:{settings.api_port}"
    if to is Destination.kinesis:
        streams = {table: stream for stream, table in settings.stream_tables.items()}
        destination: post.Destination = post.KinesisStreams(streams)
    else:
        destination = post.KafkaTopics({table: topic for topic, table in settings.topic_tables.items()})
    _post(settings, url, destination, source, None if forever else posts, seed, batch_size or 500, rate, concurrency)


def _post(
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
    with _progress() as progress:
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
        _load_source(settings.source_database, None, seed)
    return make_source(source, seed, settings.source_database)


def _load(settings: Settings, source: SourceName, posts: int, seed: int, batch_size: int) -> None:
    """``posts`` new posts of the source into bronze, after those it already holds."""
    tally = _BronzeTally()
    with _progress() as progress:
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

    settings = _settings(context)
    given = {"api_port": port, "api_workers": workers}
    settings = settings.model_copy(update={name: value for name, value in given.items() if value is not None})
    os.environ.update(settings.environment())  # the workers build their settings from it
    # every worker's metrics in one /metrics: prometheus-client's multiprocess mode, files of this run only
    metrics_dir = settings.state_dir / "api-metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "ingestion.api:app_from_environment",
        factory=True,
        host="127.0.0.1",
        port=settings.api_port,
        workers=settings.api_workers,
        log_level="warning",
    )


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
    settings, policy = _settings(context).with_local_s3(), FlushPolicy(flush_records, flush_bytes, flush_seconds)
    observed = metrics.SinkMetrics(CollectorRegistry())
    if not until_caught_up:
        _serve_metrics(observed.registry, settings.sink_metrics_port, "sink")
    _supervised("sink", lambda: _sink(settings, until_caught_up, policy, observed), restart=not until_caught_up)


def _serve_metrics(registry: CollectorRegistry, port: int, stage: str) -> None:
    url = metrics.serve(registry, port, stage)
    if url is not None:
        console.print(f"{stage} metrics for Prometheus: {url}", style="dim", highlight=False)


def _push_metrics(settings: Settings, registry: CollectorRegistry, job: str) -> None:
    """A run that ends hands its metrics to the Pushgateway, when one answers."""
    if metrics.push(settings, registry, job):
        console.print(f"metrics pushed to {settings.pushgateway_address} as job {job}", style="dim", highlight=False)


class RestartBackoff:
    """tenacity's wait between restarts: 1 s, doubling to 60 s, and 1 s again after a run of a
    minute or more (a blip after days of running is not the tenth failure in a row)."""

    def __init__(self) -> None:
        self.failures, self.attempt_started = 0, time.monotonic()

    def started(self, _: RetryCallState) -> None:
        self.attempt_started = time.monotonic()

    def __call__(self, state: RetryCallState) -> float:
        ran = (state.outcome_timestamp or time.monotonic()) - self.attempt_started
        self.failures = 1 if ran > 60 else self.failures + 1
        return min(2.0 ** (self.failures - 1), 60.0)


def _supervised(stage: str, run: Callable[[], None], *, restart: bool) -> None:
    """Run a long-running stage; when a service it needs fails (Kafka, S3, Kinesis down or erroring
    past the clients' own retries), say so in one line and run it again after a backoff
    (``RestartBackoff``). Every stage resumes from what it committed, so a restart neither loses
    nor repeats a record."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not restart:
        run()
        return
    backoff = RestartBackoff()

    def say(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        reason = explain(error)[0] if isinstance(error, Exception) else "unknown"
        delay = state.next_action.sleep if state.next_action else 0
        errors.print(f"{stage} stopped: {reason}; restarting in {delay:g} s", highlight=False)

    Retrying(
        retry=retry_if_exception_type((ServiceDown, BusError, BotoCoreError, ClientError, ConnectionError)),
        wait=backoff,
        before=backoff.started,
        before_sleep=say,
        stop=stop_never,
        reraise=True,
    )(run)


def _sink(
    settings: Settings,
    until_caught_up: bool,
    policy: FlushPolicy = FlushPolicy(),
    observed: metrics.SinkMetrics | None = None,
) -> None:
    observed = observed or metrics.SinkMetrics(CollectorRegistry())
    worker = sink.S3Sink.from_settings(settings, policy, observed)
    with _progress() as progress:
        task = progress.add_task("Kafka → S3 objects", total=None)
        stats = worker.run(until_caught_up=until_caught_up, on_flush=lambda key, n: progress.advance(task, n))
    console.print(f"stored {stats.records:,} records in {stats.objects:,} objects under s3://{settings.s3_bucket}/raw/")
    if until_caught_up:
        _push_metrics(settings, observed.registry, metrics.SINK_JOB)


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
    settings = _settings(context).with_local_s3()
    if every is None:
        _load_objects(settings, source)
        return
    observed = metrics.BronzeMetrics(CollectorRegistry())
    _serve_metrics(observed.registry, settings.loader_metrics_port, "loader")
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between loads, never mid-load
        signal.signal(stop_signal, lambda *_: stop.set())
    tally = _BronzeTally()

    def keep_loading() -> None:
        loader = load.RawObjectLoader(settings, source, observed)
        while not stop.is_set():
            started = time.monotonic()
            for result in loader.load():
                tally.add(result)
                progress.advance(task, result.appended + result.quarantined)
            stop.wait(max(0.0, every - (time.monotonic() - started)))

    with _progress() as progress:
        task = progress.add_task(f"{source or 'S3'} objects → bronze, every {every:g} s", total=None)
        _supervised("loader", keep_loading, restart=True)
    tally.report(settings)


def _load_objects(settings: Settings, source: str | None = None) -> None:
    tally, observed = _BronzeTally(), metrics.BronzeMetrics(CollectorRegistry())
    with _progress() as progress:
        task = progress.add_task(f"{source or 'S3'} objects → bronze", total=None)

        def advance(result: bronze.AppendResult, objects: list[load.RawFile]) -> None:
            tally.add(result)
            progress.advance(task, len(objects))

        load.load_raw_objects(settings, source=source, on_commit=advance, metrics=observed)
    tally.report(settings)
    _push_metrics(settings, observed.registry, metrics.LOADER_JOB)


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
) -> None:
    """Kinesis → bronze stream tables, exactly once (with --dbt-every, the streaming models too).

    Serves its metrics on PINPIPE_STREAM_METRICS_PORT; with --until-caught-up, pushes them to the
    Pushgateway at the end."""
    from ingestion.stream import StreamConsumer

    settings = _settings(context)
    observed = metrics.StreamMetrics(CollectorRegistry())
    if not until_caught_up:
        _serve_metrics(observed.registry, settings.stream_metrics_port, "stream consumer")
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
        with _progress() as progress:
            records = progress.add_task("Kinesis → bronze streams (records)", total=None)

            def consume() -> None:
                consumers.append(
                    StreamConsumer.from_settings(
                        settings, flush_records=flush_records, flush_seconds=flush_seconds, metrics=observed
                    )
                )
                consumers[-1].run(
                    until_caught_up=until_caught_up, on_flush=lambda flushed: progress.advance(records, flushed)
                )

            _supervised("stream consumer", consume, restart=not until_caught_up)
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
    settings = _settings(context)
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
    every: Annotated[float, typer.Option(min=0.0, help="seconds between the starts of two runs")] = 5.0,
    select: Annotated[str, typer.Option(help="dbt node selection")] = "streaming",
) -> None:
    """`dbt run` of the streaming models every few seconds.

    dbt is kept warm in this process (parsed once)."""
    settings = _settings(context)
    warm = transform.WarmDbt(settings, on_wait=console.print)
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between runs, never mid-run
        signal.signal(stop_signal, lambda *_: stop.set())
    with _progress() as progress:
        task = progress.add_task(f"dbt {select} (refreshes)", total=None)
        while not stop.is_set():
            started = time.monotonic()
            try:
                warm.run(["run", "--quiet", "--select", select])
            finally:
                done = artifacts.last_invocation(transform.target_path(settings))
                if done is not None:
                    metrics.push_dbt_results(settings, done, "pinpipe_refresh")
            elapsed = time.monotonic() - started
            progress.update(task, advance=1, description=f"dbt {select} (refreshes, last {elapsed:.1f} s)")
            stop.wait(max(0.0, every - elapsed))


@app.command(name="transform", rich_help_panel=STAGES)
def transform_command(
    context: typer.Context,
    select: Annotated[str | None, typer.Option(help="dbt node selection")] = None,
    full_refresh: FullRefreshOption = False,
) -> None:
    """dbt build: staging, intermediate and marts with every data test.

    dbt's unit tests run too with PINPIPE_RUN_UNIT_TESTS=true."""
    _build(_settings(context), select, full_refresh=full_refresh)


def _build(settings: Settings, select: str | None = None, *, full_refresh: bool = False) -> None:
    """`dbt source freshness` then `dbt build`, on a private copy of the warehouse published whole
    when both succeed (readers never wait, nor see a failed build); then what the build covers.

    Staging and int_posts_enriched are incremental; when what they hold cannot be merged into (rows
    of another bronze: another lake, or this one rebuilt; a table of an earlier version of the
    project), the build is run again with ``--full-refresh`` instead of failing."""
    transform.require_engine(settings)
    if settings.target != "databricks":
        warehouse.check_lake(settings)
    try:
        _build_and_report(settings, select, full_refresh=full_refresh)
    finally:  # a failed build's results too: a failing test is what an operator most needs to see
        done = artifacts.last_invocation(transform.target_path(settings))
        if done is not None:
            artifacts.keep_in_history(done, settings.dbt_history_dir)
            if metrics.push_dbt_results(settings, done, "pinpipe_build"):
                console.print(f"dbt results pushed to {settings.pushgateway_address}", style="dim", highlight=False)


def _build_and_report(settings: Settings, select: str | None, *, full_refresh: bool) -> None:
    statuses: Counter[str] = Counter()
    results: Any = None
    built_from = warehouse.built_from_lake(settings)
    if not full_refresh and built_from not in (None, settings.lake):
        # said before dbt runs: its guard would fail staging first, in red, and then be rebuilt all the same
        console.print(
            f"the warehouse was built from the lake {built_from}:"
            f" rebuilding the incremental models from {settings.lake}",
            highlight=False,
        )
        full_refresh = True
    try:
        with warehouse.building(settings, on_wait=console.print) as private, _progress() as progress:
            task = progress.add_task(f"dbt parse ({settings.target})", total=None)
            manifest = transform.run_dbt(private, ["parse", "--quiet"])  # once, for both invocations
            progress.update(task, description=f"dbt source freshness ({settings.target})")
            _print_freshness(transform.run_dbt(private, ["source", "freshness", "--quiet"], manifest=manifest))

            dbt_errors: list[str] = []  # dbt's error lines, as its quiet output prints them
            # an incremental build's errors are held back: when they only say that staging must be
            # rebuilt from scratch, pinpipe says so in one line and does it
            holding_errors = not full_refresh

            def on_event(event: Any) -> None:
                name, data = event.info.name, event.data
                if name == "LogStartLine":
                    progress.update(
                        task, total=data.total, completed=data.index - 1, description=f"dbt {data.description[:50]}"
                    )
                elif name == "NodeFinished":
                    statuses[data.node_info.node_status] += 1
                if event.info.level == "error":
                    dbt_errors.append(event.info.msg)

            args = ["build", "--quiet", *(["--select", select] if select else [])]
            try:
                try:
                    results = transform.run_dbt(
                        private,
                        # (the file log's level follows --log-level unless set: dbt.log keeps everything)
                        [
                            *args,
                            *(
                                ["--log-level", "none", "--log-level-file", "debug"]
                                if holding_errors
                                else ["--full-refresh"]
                            ),
                        ],
                        on_event,
                        manifest=manifest,
                        production=True,
                    )
                except transform.DbtFailed as failed:
                    reason = None if full_refresh else transform.rebuild_from_scratch_reason(failed.results)
                    if reason is None:
                        raise
                    console.print(f"{reason}: rebuilding from scratch", highlight=False)
                    holding_errors = False
                    statuses.clear()
                    results = transform.run_dbt(
                        private, [*args, "--full-refresh"], on_event, manifest=manifest, production=True
                    )
                progress.update(task, description=f"dbt build ({settings.target})", completed=progress.tasks[0].total)
            except KeyboardInterrupt:
                holding_errors = False  # dbt's lines about the queries it cancelled are not news
                raise
            finally:
                if holding_errors:  # the errors dbt did not print itself
                    for error in dbt_errors:
                        console.print(Text.from_ansi(error))
                console.print("dbt build: " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
            # read from the copy dbt still holds open: the published file would be opened anew (2 s at 10M)
            covered = reading.coverage(private) if settings.target == "local" else None
    except KeyboardInterrupt:
        console.print("interrupted: the warehouse keeps its last good build")
        raise typer.Exit(130) from None
    except transform.DbtFailed as failed:
        _print_dirty_input(transform.dirty_input_counts(failed.results or results))
        console.print(f"[red]{failed}[/red] (the warehouse keeps its last good build)")
        raise typer.Exit(1) from None
    warehouse.record_built_from_lake(settings)
    _print_dirty_input(transform.dirty_input_counts(results))
    if covered is not None:
        console.print(covered)


def _print_freshness(results: Any) -> None:
    """One line: how old each bronze table's newest record is, by dbt's freshness thresholds."""
    ages = [
        f"{r.node.name} {r.age / 3600:.1f} h ({r.status})" for r in results.results if r.node.resource_type == "source"
    ]
    console.print("bronze freshness: " + (", ".join(ages) or "no sources checked"))


def _print_dirty_input(counts: list[transform.DirtyInput]) -> None:
    """The data-quality summary: rows each check counted (dbt's own test results; marts.data_quality
    holds the same numbers)."""
    if not counts:
        return
    table = Table(
        title="data quality (dirty input is counted, never blocking: marts.data_quality)", title_justify="left"
    )
    table.add_column("check")
    table.add_column("rows", justify="right")
    table.add_column("status")
    colour = {"pass": "green", "warn": "yellow"}
    for counted in counts:
        style = colour.get(counted.status, "red")
        table.add_row(counted.check, f"{counted.rows:,}", f"[{style}]{counted.status}[/{style}]")
    console.print(table)


@app.command(rich_help_panel=START)
def marts(
    context: typer.Context,
    rows: Annotated[int, typer.Option(min=0, help="rows shown per mart")] = 15,
) -> None:
    """Print every mart of the local warehouse as a table."""
    _print_marts(_settings(context), rows)


@app.command(rich_help_panel=START)
def docs(
    context: typer.Context,
    port: Annotated[int, typer.Option(help="port of the docs site on 127.0.0.1")] = 8081,
    serve: Annotated[bool, typer.Option(help="serve the site after generating it")] = True,
) -> None:
    """dbt docs: generate the lineage and documentation site, then serve it.

    A copy goes into <lake>/docs."""
    settings = _settings(context)
    console.print(f"docs site generated and copied to {transform.publish_docs(settings)}")
    if serve:
        _serve_docs(transform.target_path(settings), port)


def _serve_docs(site: Path, port: int) -> None:
    """The static site (index.html reads the manifest and catalog beside it) until Ctrl-C."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the requests are not news
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a browser leaving mid-page is not news
                super().handle_error(request, client_address)

    with Server(("127.0.0.1", port), partial(QuietHandler, directory=site)) as server:
        console.print(f"serving the docs at http://127.0.0.1:{port}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("docs server stopped")


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command(rich_help_panel=START)
def ui(
    context: typer.Context,
    port: Annotated[
        int | None, typer.Option(envvar="PINPIPE_UI_PORT", help="port on 127.0.0.1 [default: 8501]")
    ] = None,
) -> None:
    """The web UI: the insights as charts, real-time metrics, the pipeline's health, SQL.

    Streamlit, on the warehouse `pinpipe run` built; read-only SQL. Ctrl-C stops it."""
    from ingestion.ui import data

    settings = _settings(context)
    if port is not None:
        settings = settings.model_copy(update={"ui_port": port})
    console.print(f"pinpipe UI on http://127.0.0.1:{settings.ui_port}  (warehouse: {data.warehouse_url(settings)})")
    app_file = Path(__file__).parent / "ui" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", "127.0.0.1"]
    command += ["--server.port", str(settings.ui_port), "--server.headless", "true"]
    command += ["--browser.gatherUsageStats", "false", "--global.developmentMode", "false"]
    if settings.warehouse_url is None and not Path(settings.warehouse).exists():
        errors.print(f"[yellow]no warehouse at {settings.warehouse} yet:[/yellow] `make run` builds it")
    sys.stdout.flush()
    # Streamlit replaces this process: stopping it (Ctrl-C, a kill of this pid) stops the server
    os.execvpe(command[0], command, {**os.environ, **settings.environment()})


@app.command(rich_help_panel=START)
def sql(
    context: typer.Context,
    query: Annotated[
        str, typer.Argument(help="SQL on the warehouse: schemas bronze, staging, intermediate, marts, streaming")
    ],
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table for reading, csv or json for tools")
    ] = OutputFormat.table,
    rows: Annotated[int, typer.Option(min=0, help="rows shown as a table")] = 50,
) -> None:
    """Run SQL against the marts of the current target and print the result."""
    settings = _settings(context)
    built_from = warehouse.built_from_lake(settings)
    if built_from not in (None, settings.lake):  # on stderr: csv and json stay clean for tools
        errors.print(
            f"note: the warehouse was built from the lake {built_from}, and its bronze views read that lake,"
            f" not {settings.lake}: `pinpipe transform` builds it from {settings.lake}",
            highlight=False,
        )
    result = reading.query(settings, query)
    if output is OutputFormat.table:
        console.print(_as_rich_table(query if len(query) <= 80 else query[:77] + "...", result, rows))
    elif output is OutputFormat.csv:
        import pyarrow.csv as pa_csv

        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(_flat(result), buffer)
        sys.stdout.write(buffer.getvalue().to_pybytes().decode())
    else:
        sys.stdout.write(json.dumps(result.to_pylist(), default=str, ensure_ascii=False) + "\n")


def _flat(data: pa.Table) -> pa.Table:
    """The table with its nested columns (lists, structs: ``coordinates``) as JSON text, which CSV can hold."""
    for position, column in enumerate(data.schema):
        if pa.types.is_nested(column.type):
            texts = [
                None if value is None else json.dumps(value, default=str) for value in data.column(position).to_pylist()
            ]
            data = data.set_column(position, column.name, pa.array(texts, pa.string()))
    return data


def _print_marts(settings: Settings, rows: int) -> None:
    for number, mart in enumerate(reading.marts(settings), start=1):
        console.print(_as_rich_table(f"{number}. {mart}", reading.read_mart(settings, mart), rows))


def _as_rich_table(title: str, data: pa.Table, rows: int) -> Table:
    table = Table(title=title, title_justify="left", caption=f"{data.num_rows:,} rows", caption_justify="left")
    for field in data.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        table.add_column(field.name, justify="right" if numeric else "left")
    for row in data.slice(0, rows).to_pylist():
        table.add_row(*(_cell(value) for value in row.values()))
    if data.num_rows > rows:
        table.add_row(*(["…"] * data.num_columns))
    return table


def _cell(value: object) -> str:
    if value is None:
        return "[dim]null[/dim]"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


class Stack(StrEnum):
    embedded = "embedded"
    full = "full"


@app.command(rich_help_panel=START)
def run(
    context: typer.Context,
    source: SourceOption = "synthetic",
    posts: PostsOption = 5_000,
    seed: SeedOption = 100,
    stack: Annotated[
        Stack, typer.Option(help="embedded: emulator → bronze; full: API → Kafka → S3 → bronze")
    ] = Stack.embedded,
    batch_size: Annotated[int | None, typer.Option(min=1, help="posts per bronze commit or per request")] = None,
    rows: Annotated[int, typer.Option(min=0, help="rows shown per mart")] = 15,
    full_refresh: FullRefreshOption = False,
) -> None:
    """The main job: posts → bronze → dbt build → the marts.

    On the embedded default, or the full stack (API → Kafka → S3 → bronze) with --stack full."""
    settings = _settings(context)
    transform.require_engine(settings)  # before any post is written
    if stack is Stack.embedded:
        _load(settings, source, posts, seed, batch_size or 100_000)
    else:
        settings = settings.with_local_s3()
        if context.find_root().params["lake"] is None:
            # the full stack's bronze lives in the local S3 server's bucket
            settings = settings.model_copy(update={"lake": f"s3://{settings.s3_bucket}/lake"})
        _services_up(settings)
        # the API of this run on a port of its own: Prometheus scrapes `pinpipe api` at PINPIPE_API_PORT,
        # and would report it down for hours after this run's API stopped; its metrics are pushed instead
        with stack_api.api_server(settings.model_copy(update={"api_port": services.free_port()})) as url:
            topics = post.KafkaTopics({table: topic for topic, table in settings.topic_tables.items()})
            _post(settings, url, topics, source, posts, seed, batch_size or 500, None, 4)
            metrics.push(settings, metrics.scraped_registry(stack_api.metrics_of(url, settings)), metrics.API_JOB)
        _sink(settings, until_caught_up=True)
        _load_objects(settings)
    _build(settings, full_refresh=full_refresh)
    _print_marts(settings, rows)


def explain(error: Exception) -> tuple[str, int]:
    """What went wrong and what to do, in one line, and the exit code: 2 for something the user can
    put right, 1 for a failure of the run."""
    import duckdb
    from pydantic import ValidationError

    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, PinpipeError):
        return first_line, 2
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"PINPIPE_{'_'.join(map(str, e['loc'])).upper()} ({'.'.join(map(str, e['loc']))}): "
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
            if e["type"] != "default_factory_not_called"  # a setting derived from one already wrong
        )
        return f"invalid setting: {problems}", 2
    if isinstance(error, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return f"the SQL does not run: {first_line}", 2
    if isinstance(error, duckdb.IOException):
        return f"{first_line} (is another program holding the warehouse open for writing?)", 1
    if isinstance(error, transform.DbtFailed | post.ApiRejected):
        return first_line, 1
    if type(error).__name__ in {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"}:
        endpoint = re.search(r"https?://[^/\"]+", first_line)
        return (
            f"{endpoint.group(0) if endpoint else 'the endpoint'} does not answer: start the local services with "
            "`pinpipe services up`, or set PINPIPE_S3_ENDPOINT_URL / PINPIPE_KINESIS_ENDPOINT_URL",
            1,
        )
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}", 2
    return f"{type(error).__name__}: {first_line} (run with --debug for the traceback)", 1


GLOBAL_OPTIONS = {"lake": True, "warehouse": True, "target": True, "debug": False}  # name: takes a value


def global_options_first(args: list[str]) -> list[str]:
    """The arguments with the global options moved before the command, so that `pinpipe run --lake X`
    means what `pinpipe --lake X run` does (click reads a group's options only before its command)."""
    hoisted: list[str] = []
    rest: list[str] = []
    position = 0
    while position < len(args):
        argument = args[position]
        if argument == "--":
            rest += args[position:]
            break
        name, _, value = argument.removeprefix("--").partition("=")
        if argument.startswith("--") and name in GLOBAL_OPTIONS:
            taken = 1 + (GLOBAL_OPTIONS[name] and not value)
            hoisted += args[position : position + taken]
            position += taken
        else:
            rest.append(argument)
            position += 1
    return hoisted + rest


def main() -> None:
    """The `pinpipe` command: a user's mistake ends in one line saying what to do; the traceback only
    with --debug (or PINPIPE_DEBUG=1)."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("PINPIPE_DEBUG", "").lower() in {"1", "true", "yes"}
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # librdkafka logs every failed connection attempt; what it means reaches the user as one line
    logging.getLogger("librdkafka").setLevel(logging.WARNING if debug else logging.CRITICAL)
    try:
        code = app(args=global_options_first(sys.argv[1:]), standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        errors.print("Aborted.")
        sys.exit(130)
    except typer.TyperException as error:  # a mistyped command or option (typer's own click): its usage line
        error.show()  # type: ignore[attr-defined]
        sys.exit(error.exit_code)
    except Exception as error:
        if debug:
            raise
        message, code = explain(error)
        errors.print(f"[red]Error:[/red] {message}", markup=True, highlight=False)
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)
