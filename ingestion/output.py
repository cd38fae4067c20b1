"""What the command prints: its consoles (stdout, and stderr for messages), progress bars, and
Arrow tables as rich tables or as flat columns for CSV."""

from __future__ import annotations

import json
import logging
import os
import sys

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def debugging(argv: list[str]) -> bool:
    """Tracebacks and client logs wanted: ``--debug`` or ``PINPIPE_DEBUG=1``."""
    return "--debug" in argv or os.environ.get("PINPIPE_DEBUG", "").lower() in {"1", "true", "yes"}


def quiet_client_logs(debug: bool) -> None:
    """Warnings as one line each; librdkafka's, which log every failed connection attempt, only with
    ``debug``: what they mean reaches the user as one line. With ``debug`` kafka-python says what
    its consumer does too (group joins, assignments, offset resets). Each process of ours calls it,
    the API's worker processes too (they do not inherit the command's logging)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s" if debug else "%(name)s: %(message)s"
    )
    logging.getLogger("librdkafka").setLevel(logging.WARNING if debug else logging.CRITICAL)
    if debug:
        for name in ("kafka.coordinator", "kafka.consumer"):
            logging.getLogger(name).setLevel(logging.INFO)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader stopped reading (`pinpipe marts | head`): done, not failed (rich exits 1)."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        raise SystemExit(0)


console = _Console(soft_wrap=True)  # a message is one line in a log or a pipe, not cut at 80 columns
errors = Console(stderr=True, soft_wrap=True)


def progress_bars() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def flat(data: pa.Table) -> pa.Table:
    """The table with its nested columns (lists, structs: ``coordinates``) as JSON text, which CSV can hold."""
    for position, column in enumerate(data.schema):
        if pa.types.is_nested(column.type):
            texts = [
                None if value is None else json.dumps(value, default=str) for value in data.column(position).to_pylist()
            ]
            data = data.set_column(position, column.name, pa.array(texts, pa.string()))
    return data


def rich_table(title: str, data: pa.Table, rows: int) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        caption=f"{data.num_rows:,} row{'' if data.num_rows == 1 else 's'}",
        caption_justify="left",
    )
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
