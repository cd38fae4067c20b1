"""Operating commands: the local services, the source database, the DuckDB extensions, the settings."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from ingestion import (
    duckdb_setup,
    services,
)
from ingestion.cli.app import GLOBAL_OPTIONS, OPERATING, STAGES, SeedOption, app, settings_of
from ingestion.config import Settings, configuration_reference, described_settings
from ingestion.output import console, errors, progress_bars

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
    start_services(settings_of(context), with_ or [])


def start_services(settings: Settings, with_: list[OptionalService] | None = None) -> None:
    for server in _servers(settings, with_ or []):
        with console.status(f"starting {server.process.name}"):
            try:
                server.up()
            except services.ServiceError as failed:
                if not isinstance(server, services.Pushgateway | services.PrometheusServer):
                    raise
                # monitoring is optional: the pipeline runs all the same
                errors.print(f"[yellow]not monitored:[/yellow] {failed}", highlight=False)
    show_services(settings)


@services_app.command("down")
def services_down(context: typer.Context) -> None:
    """Stop every service this project started."""
    settings = settings_of(context)
    for server in _servers(settings):
        server.down()
    show_services(settings)


@services_app.command("status")
def services_status(context: typer.Context) -> None:
    """Show each service: address, pid, log; and where Prometheus' UI is."""
    show_services(settings_of(context))


def show_services(settings: Settings) -> None:
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
    settings = settings_of(context)
    load_source_database(url or settings.source_database, synthetic, seed)


def load_source_database(url: str, synthetic: int | None, seed: int) -> None:
    from ingestion import source

    engine = source.create(url)
    with progress_bars() as progress:
        what = "the AiCore rows" if synthetic is None else f"the distinct keys of {synthetic:,} synthetic posts"
        task = progress.add_task(f"source ← {what} (rows)", total=None)

        def advance(table: str, rows: int) -> None:
            progress.advance(task, rows)

        loaded = source.load_source(engine, synthetic_posts=synthetic, seed=seed, on_rows=advance)
    counts = ", ".join(f"{rows:,} {source.SOURCE_TABLES[table]}" for table, rows in loaded.items())
    console.print(f"source database {engine.url.render_as_string(hide_password=True)}: {counts}")


@app.command(rich_help_panel=OPERATING)
def setup(
    context: typer.Context,
    servers: Annotated[
        bool,
        typer.Option(
            "--servers",
            help="also fetch and build the local servers (Kafka's jars, versitygw, kinesis-mock, kinesalite)"
            " and, with the Spark target installed, the Spark jobs' jars: what their first start does otherwise",
        ),
    ] = False,
) -> None:
    """Install the DuckDB extensions the warehouse uses (delta, httpfs) from their PyPI wheels."""
    settings = settings_of(context)
    directory = settings.duckdb_extension_directory
    installed = duckdb_setup.ensure_duckdb_extensions(directory)
    done = f"installed {', '.join(installed)}" if installed else "already installed"
    console.print(f"DuckDB extensions delta and httpfs: {done} in {directory}")
    if servers:
        from ingestion.services.prefetch import fetch_servers

        with console.status("fetching and building the local servers (a few minutes the first time)"):
            fetched = fetch_servers(settings.cache_dir)
        console.print(f"servers {', '.join(fetched)}: ready in {settings.cache_dir}")
        from ingestion.spark_ingest import fetch_jars, spark_installed

        if spark_installed():
            with console.status("fetching the Spark jobs' jars from Maven Central (about 1.5 GB the first time)"):
                fetch_jars(settings)
            console.print(f"the Spark jobs' jars: ready in {settings.cache_dir / 'ivy'}")


@app.command(name="settings", rich_help_panel=OPERATING)
def settings_command(
    context: typer.Context,
    reference: Annotated[
        bool, typer.Option("--reference", help="print the configuration reference (Markdown) instead")
    ] = False,
) -> None:
    """Every setting: its PINPIPE_* variable, its value and where it came from (secrets masked)."""
    if reference:
        sys.stdout.write(configuration_reference())
        return
    root = context.find_root()
    given = {name for name in GLOBAL_OPTIONS if getattr(root.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    table = Table(title="settings (each set by its variable; the options win)", title_justify="left")
    for column in ("setting", "variable", "value", "from"):
        table.add_column(column, overflow="fold")
    for row in described_settings(settings_of(context), given):
        table.add_row(row.name, row.variable, row.value, row.origin)
    console.print(table)
