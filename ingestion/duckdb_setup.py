"""DuckDB as the project opens it everywhere (dbt's profile, the CLI, the DAG, the UI): its
extensions installed from PyPI wheels into the project's cache, and its configuration."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from ingestion.config import Settings

# DuckDB extensions shipped as PyPI wheels: installing them from the wheel's file means no download
# from DuckDB's extension site, which this project must not depend on.
_EXTENSION_WHEELS = {"delta": "duckdb_extension_delta", "httpfs": "duckdb_extension_httpfs"}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_config(
    extension_directory: Path, spill_directory: str | None = None
) -> dict[str, str | bool | int | float | list[str]]:
    """The configuration every DuckDB connection of the project opens with (dbt's profile's
    `config_options` too: DuckDB shares a file's instance only with the same configuration)."""
    config: dict[str, str | bool | int | float | list[str]] = {"extension_directory": str(extension_directory)}
    if spill_directory is not None:
        config["temp_directory"] = spill_directory
    return config


def ensure_duckdb_extensions(extension_directory: Path) -> list[str]:
    """Install the delta and httpfs extensions into ``extension_directory`` from their wheels, once;
    returns the ones installed now.

    A DuckDB of this version opened with that ``extension_directory`` autoloads them: dbt (the
    profile sets it), the CLI, and an analyst's own session (README).
    """
    with duckdb.connect(config=duckdb_config(extension_directory)) as connection:
        installed = {
            name
            for (name,) in connection.execute(
                "select extension_name from duckdb_extensions() where installed"
            ).fetchall()
        }
        missing = [extension for extension in _EXTENSION_WHEELS if extension not in installed]
        for extension in missing:
            wheel = Path(str(import_module(_EXTENSION_WHEELS[extension]).__file__)).parent
            binary = wheel / "extensions" / f"v{duckdb.__version__}" / f"{extension}.duckdb_extension"
            # INSTALL takes no prepared parameter: the path is a quoted literal
            connection.execute(f"install {_sql_string(str(binary))}")
    return missing


def lake_secret_sql(settings: Settings) -> str:
    """The statement giving a DuckDB session the S3 secret of an ``s3://`` lake, as dbt's profile
    (`secrets:` of the local target) gives it to dbt's: a reader opened outside dbt needs its own."""
    endpoint = settings.s3_endpoint_url or ""
    options = {
        "type": "s3",
        "key_id": _sql_string(settings.s3_access_key_id),
        "secret": _sql_string(settings.s3_secret_access_key.get_secret_value()),
        "region": _sql_string(settings.s3_region),
        "endpoint": _sql_string(endpoint.removeprefix("https://").removeprefix("http://") or "s3.amazonaws.com"),
        "use_ssl": "false" if endpoint.startswith("http://") else "true",
        "url_style": _sql_string("path" if endpoint else "vhost"),
    }
    return "create or replace temporary secret pinpipe_lake (" + ", ".join(f"{k} {v}" for k, v in options.items()) + ")"
