"""The ``pinpipe`` command: parses options, builds the settings, calls the stages, shows progress."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ingestion import bronze, services, transform
from ingestion.config import Settings
from ingestion.emulate import SourceName, make_source

app = typer.Typer(help="pinpipe: Pinterest-style posts → bronze Delta → dbt marts.", no_args_is_help=True)
console = Console()

LakeOption = Annotated[str | None, typer.Option(help="lake root, a path or s3:// URI [env: PINPIPE_LAKE]")]
WarehouseOption = Annotated[str | None, typer.Option(help="DuckDB warehouse file [env: PINPIPE_WAREHOUSE]")]
TargetOption = Annotated[str | None, typer.Option(help="dbt target: local, spark, databricks [env: PINPIPE_TARGET]")]
SourceOption = Annotated[SourceName, typer.Option(help="aicore replays the real rows; synthetic generates posts")]
PostsOption = Annotated[int, typer.Option(min=1, help="number of posts to emulate")]
SeedOption = Annotated[int, typer.Option(help="emulator seed: same seed, same posts")]
BatchOption = Annotated[int, typer.Option(min=1, help="posts per bronze commit")]


def _settings(lake: str | None = None, warehouse: str | None = None, target: str | None = None) -> Settings:
    given = {"lake": lake, "warehouse": warehouse, "target": target}
    return Settings(**{name: value for name, value in given.items() if value is not None})


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


services_app = typer.Typer(help="Local services for the full stack (S3 server, Kafka), on 127.0.0.1.", no_args_is_help=True)
app.add_typer(services_app, name="services")


def _servers(settings: Settings) -> list[services.S3Server | services.KafkaBroker]:
    return [services.S3Server(settings), services.KafkaBroker(settings)]


@services_app.command("up")
def services_up() -> None:
    """Fetch (once, cached), start and wait for every service; idempotent."""
    for server in _servers(_settings()):
        with console.status(f"starting {server.process.name}"):
            server.up()
    services_status()


@services_app.command("down")
def services_down() -> None:
    """Stop every service this project started."""
    for server in _servers(_settings()):
        server.down()
    services_status()


@services_app.command("status")
def services_status() -> None:
    """Show each service: address, pid, log."""
    table = Table("service", "state", "address", "pid", "log")
    for server in _servers(_settings()):
        status = server.process.status()
        state = "[green]up[/green]" if status.running else "[red]down[/red]"
        table.add_row(status.name, state, status.address, str(status.pid or ""), str(status.log))
    console.print(table)


@app.command()
def setup() -> None:
    """Install the DuckDB extensions the warehouse uses (delta, httpfs) from their PyPI wheels."""
    transform.ensure_duckdb_extensions()
    console.print("DuckDB extensions delta and httpfs are installed.")


@app.command()
def emulate(
    source: SourceOption = "synthetic",
    posts: PostsOption = 5_000,
    seed: SeedOption = 100,
    batch_size: BatchOption = 100_000,
    lake: LakeOption = None,
) -> None:
    """Emulate posts straight into the bronze Delta tables (the embedded path), resuming where it stopped."""
    settings = _settings(lake=lake)
    _load(settings, source, posts, seed, batch_size)


def _load(settings: Settings, source: SourceName, posts: int, seed: int, batch_size: int) -> None:
    totals: Counter[str] = Counter()
    with _progress() as progress:
        task = progress.add_task(f"bronze ← {source}", total=posts)

        def advance(batch: object, results: list[bronze.AppendResult]) -> None:
            for result in results:
                totals[f"{result.table} appended"] += result.appended
                totals["quarantined"] += result.quarantined
            progress.update(task, completed=batch.start + len(batch))

        lake = bronze.Lake.from_settings(settings)
        bronze.load_posts(lake, make_source(source, seed), posts, batch_size=batch_size, on_batch=advance)
        progress.update(task, completed=posts)
    summary = ", ".join(f"{count:,} {what}" for what, count in totals.items()) or "nothing new: already loaded"
    console.print(f"bronze at {settings.lake}/bronze: {summary}")


@app.command(name="transform")
def transform_command(
    select: Annotated[str | None, typer.Option(help="dbt node selection")] = None,
    lake: LakeOption = None,
    warehouse: WarehouseOption = None,
    target: TargetOption = None,
) -> None:
    """dbt build: staging, intermediate and marts with every data and unit test."""
    _build(_settings(lake, warehouse, target), select)


def _build(settings: Settings, select: str | None = None) -> None:
    statuses: Counter[str] = Counter()
    with _progress() as progress:
        task = progress.add_task(f"dbt build ({settings.target})", total=None)

        def on_event(event: object) -> None:
            name, data = event.info.name, event.data
            if name == "LogStartLine":
                progress.update(task, total=data.total, completed=data.index - 1, description=f"dbt {data.description[:50]}")
            elif name == "NodeFinished":
                statuses[data.node_info.node_status] += 1

        args = ["build", "--quiet", *(["--select", select] if select else [])]
        try:
            transform.run_dbt(settings, args, on_event)
        except transform.DbtFailed as failure:
            failed = failure
        else:
            failed = None
            progress.update(task, description=f"dbt build ({settings.target})", completed=progress.tasks[0].total)
    console.print("dbt build: " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
    if failed is not None:
        console.print(f"[red]{failed}[/red]")
        raise typer.Exit(1)


@app.command()
def marts(
    rows: Annotated[int, typer.Option(help="rows shown per mart")] = 15,
    warehouse: WarehouseOption = None,
) -> None:
    """Print every mart of the local warehouse as a table."""
    _print_marts(_settings(warehouse=warehouse), rows)


def _print_marts(settings: Settings, rows: int) -> None:
    for number, mart in enumerate(transform.MARTS, start=1):
        console.print(_as_rich_table(f"{number}. {mart}", transform.read_mart(settings, mart), rows))


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


@app.command()
def run(
    source: SourceOption = "synthetic",
    posts: PostsOption = 5_000,
    seed: SeedOption = 100,
    batch_size: BatchOption = 100_000,
    rows: Annotated[int, typer.Option(help="rows shown per mart")] = 15,
    lake: LakeOption = None,
    warehouse: WarehouseOption = None,
) -> None:
    """The main job on the embedded default: emulate posts → bronze → dbt build → print the marts."""
    settings = _settings(lake, warehouse, "local")
    _load(settings, source, posts, seed, batch_size)
    _build(settings)
    _print_marts(settings, rows)
