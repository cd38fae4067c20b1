"""A dbt-duckdb plugin (profiles.yml, the local target): the warehouse's folder is made before DuckDB
opens the file, which it will not do itself. Plain `dbt build` on a fresh clone (no `warehouse/`
yet), or with PINPIPE_WAREHOUSE in a new folder, then builds instead of ending in a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.credentials import DuckDBCredentials
from dbt.adapters.duckdb.plugins import BasePlugin


class Plugin(BasePlugin):
    def update_connection_config(self, creds: DuckDBCredentials, config: dict[str, Any]) -> None:
        if creds.path != ":memory:" and ":" not in creds.path.split("/")[0]:  # not md:, s3:// and the like
            Path(creds.path).parent.mkdir(parents=True, exist_ok=True)
