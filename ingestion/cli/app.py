"""The `pinpipe` Typer app: its help panels and order, the global options (accepted before or after
the command) and the settings they make, and the options several commands share."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ingestion.config import Settings
from ingestion.post_sources import SourceName

START, STAGES, OPERATING = "Start here", "The pipeline's stages", "Operating"
COMMAND_ORDER = [
    *("run", "ui", "sql", "metrics", "marts", "docs"),
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


FullRefreshOption = Annotated[
    bool,
    typer.Option(
        "--full-refresh",
        help="rebuild the incremental models (staging and the intermediate models) from all of bronze,"
        " not only its new rows",
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
        bool,
        typer.Option(
            "--debug",
            envvar="PINPIPE_DEBUG",
            help="on an error, the whole traceback, not one line; and the Kafka clients' own logs",
        ),
    ] = False,
) -> None:
    """pinpipe: Pinterest-style posts → bronze Delta → dbt marts. Every setting is also a PINPIPE_*
    variable (the options here win)."""
    given: dict[str, Any] = {"lake": lake, "warehouse": warehouse, "target": target}
    context.obj = Settings(**{name: value for name, value in given.items() if value is not None})


def settings_of(context: typer.Context) -> Settings:
    settings: Settings = context.find_root().obj
    return settings


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
