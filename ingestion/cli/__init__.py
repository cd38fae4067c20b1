"""The ``pinpipe`` command: parses options, builds the settings, calls the stages, shows progress.
Each command module registers its commands on the app."""

from __future__ import annotations

import os
import sys

import typer

from ingestion.build import BuildStopped
from ingestion.cli import operating, semantic, stages, start, streaming
from ingestion.cli.app import app, global_options_first
from ingestion.config import unknown_variables
from ingestion.explain import explain
from ingestion.output import debugging, errors, quiet_client_logs

__all__ = [
    "app",
    "main",
    "operating",
    "semantic",
    "stages",
    "start",
    "streaming",
]  # the command modules register their commands


def main() -> None:
    """The `pinpipe` command: a user's mistake ends in one line saying what to do; the traceback only
    with --debug (or PINPIPE_DEBUG=1)."""
    debug = debugging(sys.argv[1:])
    quiet_client_logs(debug)
    for name in unknown_variables(os.environ):
        errors.print(f"warning: {name} is not a pinpipe setting, so it is ignored (`pinpipe settings` lists them)")
    try:
        code = app(args=global_options_first(sys.argv[1:]), standalone_mode=False)
    except BuildStopped as stopped:  # it said why
        sys.exit(stopped.exit_code)
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
