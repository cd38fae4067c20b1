"""Where to start: the main job (`run`), and reading what it built (marts, sql, docs, ui)."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer

from ingestion import (
    metrics,
    post,
    reading,
    services,
    transform,
    warehouse,
)
from ingestion import stack as stack_api
from ingestion.build import build_and_publish
from ingestion.cli.app import START, FullRefreshOption, PostsOption, SeedOption, SourceOption, app, settings_of
from ingestion.cli.operating import start_services
from ingestion.cli.stages import load_objects, load_posts, post_through_api, run_sink
from ingestion.config import Settings
from ingestion.docs_site import serve_docs
from ingestion.output import console, errors, flat, rich_table


@app.command(rich_help_panel=START)
def marts(
    context: typer.Context,
    rows: Annotated[int, typer.Option(min=0, help="rows shown per mart")] = 15,
) -> None:
    """Print every mart of the local warehouse as a table."""
    print_marts(settings_of(context), rows)


@app.command(rich_help_panel=START)
def docs(
    context: typer.Context,
    port: Annotated[int, typer.Option(help="port of the docs site on 127.0.0.1")] = 8081,
    serve: Annotated[bool, typer.Option(help="serve the site after generating it")] = True,
) -> None:
    """dbt docs: generate the lineage and documentation site, then serve it.

    A copy goes into <lake>/docs."""
    settings = settings_of(context)
    console.print(f"docs site generated and copied to {transform.publish_docs(settings)}")
    if serve:
        serve_docs(transform.target_path(settings), port)


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

    settings = settings_of(context)
    if port is not None:
        settings = settings.model_copy(update={"ui_port": port})
    console.print(f"pinpipe UI on http://127.0.0.1:{settings.ui_port}  (warehouse: {data.warehouse_url(settings)})")
    app_file = Path(data.__file__).parent / "app.py"  # the Streamlit script of the ui package
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
    settings = settings_of(context)
    built_from = warehouse.built_from_lake(settings)
    if built_from not in (None, settings.lake):  # on stderr: csv and json stay clean for tools
        errors.print(
            f"note: the warehouse was built from the lake {built_from}, and its bronze views read that lake,"
            f" not {settings.lake}: `pinpipe transform` builds it from {settings.lake}",
            highlight=False,
        )
    print_result(query if len(query) <= 80 else query[:77] + "...", reading.query(settings, query), output, rows)


def print_result(title: str, result: pa.Table, output: OutputFormat, rows: int) -> None:
    """A result as a table for reading (``rows`` of it), or all of it as CSV or JSON for tools."""
    if output is OutputFormat.table:
        console.print(rich_table(title, result, rows))
    elif output is OutputFormat.csv:
        import pyarrow.csv as pa_csv

        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(flat(result), buffer)
        sys.stdout.write(buffer.getvalue().to_pybytes().decode())
    else:
        sys.stdout.write(json.dumps(result.to_pylist(), default=str, ensure_ascii=False) + "\n")


def print_marts(settings: Settings, rows: int) -> None:
    for number, mart in enumerate(reading.marts(settings), start=1):
        console.print(rich_table(f"{number}. {mart}", reading.read_mart(settings, mart), rows))


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
    settings = settings_of(context)
    transform.require_engine(settings)  # before any post is written
    if stack is Stack.embedded:
        load_posts(settings, source, posts, seed, batch_size or 100_000)
    else:
        settings = settings.with_local_s3()
        if context.find_root().params["lake"] is None:
            # the full stack's bronze lives in the local S3 server's bucket
            settings = settings.model_copy(update={"lake": f"s3://{settings.s3_bucket}/lake"})
        start_services(settings)
        # the API of this run on a port of its own: Prometheus scrapes `pinpipe api` at PINPIPE_API_PORT,
        # and would report it down for hours after this run's API stopped; its metrics are pushed instead
        with stack_api.api_server(settings.model_copy(update={"api_port": services.free_port()})) as url:
            topics = post.KafkaTopics({table: topic for topic, table in settings.topic_tables.items()})
            post_through_api(settings, url, topics, source, posts, seed, batch_size or 500, None, 4)
            metrics.push(settings, metrics.scraped_registry(stack_api.metrics_of(url, settings)), metrics.API_JOB)
        run_sink(settings, until_caught_up=True)
        load_objects(settings)
    build_and_publish(settings, full_refresh=full_refresh)
    print_marts(settings, rows)
