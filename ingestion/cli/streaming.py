"""The streaming path's commands: stream (Kinesis → bronze), compact, refresh (the streaming models)."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry
from rich.table import Table

from ingestion import metrics, transform, warehouse
from ingestion.cli.app import STAGES, app, settings_of
from ingestion.cli.stages import push_metrics, serve_metrics
from ingestion.lake import BRONZE_TABLES, STREAM_TABLES, Lake, compact
from ingestion.output import console, progress_bars
from ingestion.supervise import supervised


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
        str,
        typer.Option(help="this consumer's part of the shards when N run: i/N (metrics on the port + 100 × (i - 1))"),
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
        # apart from the other stages' ports (the sink's, the loader's, Kafka's: 9101-9104 by default)
        port = settings.stream_metrics_port + 100 * (part.number - 1) if settings.stream_metrics_port else 0
        serve_metrics(observed.registry, port, "stream consumer")
    # SIGTERM (a service manager's stop) ends it as Ctrl-C does: the last flush, the refresher stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
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
        push_metrics(settings, observed.registry, metrics.STREAM_JOB)


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
    import yaml

    from ingestion.streaming_refresh import StreamingRefresh

    if dbt_vars is not None:
        try:
            mapping = yaml.safe_load(dbt_vars)
        except yaml.YAMLError:
            mapping = None
        if not isinstance(mapping, dict):
            raise typer.BadParameter(
                f"takes a YAML mapping, such as '{{popularity_window_minutes: 30}}', not {dbt_vars!r}"
            )
    settings = settings_of(context)
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop between refreshes, never mid-refresh
        signal.signal(stop_signal, lambda *_: stop.set())
    fresh = StreamingRefresh(settings, select, console.print, dbt_vars)
    minute: list[float] = []  # this minute's refresh times, said in one line a minute (a log shows them)
    minute_started = time.monotonic()
    with progress_bars() as progress, contextlib.closing(fresh):
        task = progress.add_task(f"{select} models (refreshes)", total=None)
        while not stop.is_set():
            started = time.monotonic()
            done = fresh.run()
            metrics.push_dbt_results(settings, done, "pinpipe_refresh")
            progress.update(task, advance=1, description=f"{select} models (refreshes, last {done.seconds:.2f} s)")
            minute.append(done.seconds)
            if time.monotonic() - minute_started >= 60:
                console.print(
                    f"{len(minute)} refreshes in the last {time.monotonic() - minute_started:.0f} s: "
                    f"median {statistics.median(minute):.2f} s, slowest {max(minute):.2f} s"
                )
                minute, minute_started = [], time.monotonic()
            stop.wait(max(0.0, every - (time.monotonic() - started)))
