"""The streaming models kept fresh every second or so: dbt runs them once, then compiles them, and
each refresh after that runs their compiled SQL (the incremental models' new rows appended, the
metrics' tables made again) on the warehouse's private copy and publishes it. The copy is attached
to one DuckDB instance kept for the process, so the Delta extension and the lake's secret are set
up once, not every refresh.

A warm dbt invocation costs about 1.5 s on two cores before any model runs (its set-up, its
relation checks, a temporary table per incremental model); the statements themselves take tens of
milliseconds on a stream's new rows. The SQL is still dbt's: compiled by dbt from the models, with
their incremental filters (`is_incremental()` true, the tables made by the first run), so the
models stay the one definition. Materializations other than an appending incremental model and a
table, and the targets other than DuckDB, are refreshed by dbt every time.

Only the new rows: an incremental model reads its bronze table as the Parquet files Delta added
since the last refresh instead of the whole table, so a refresh costs what arrived, not what the
stream holds. Its incremental filter still applies, so files that hold older rows again (the
consumer's compaction) add nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import duckdb

from ingestion.artifacts import Invocation, NodeResult
from ingestion.config import Settings
from ingestion.lake import Lake
from ingestion.transform import WarmDbt
from ingestion.warehouse import building, connect_warehouse


@dataclass(frozen=True)
class CompiledModel:
    name: str
    statement: str  # what one refresh runs for it
    # an incremental model over one bronze table and nothing else: that table's relation in the
    # statement and its name, read as its new files only (None: the statement is run as it is)
    bronze: tuple[str, str] | None


class StreamingRefresh:
    """`dbt run --select <select>`, fast after the first: see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        select: str = "streaming",
        on_wait: Callable[[str], None] | None = None,
        dbt_vars: str | None = None,
    ) -> None:
        self.settings, self.on_wait = settings, on_wait
        self._selection = ["--quiet", "--select", select, *(["--vars", dbt_vars] if dbt_vars else [])]
        self._dbt = WarmDbt(settings, on_wait)
        self._lake = Lake.from_settings(settings)
        self._models: list[CompiledModel] | None = None  # None: the next refresh is dbt's
        self._read_files: dict[str, set[str]] = {}  # each bronze table's files the models have read
        self._engine: duckdb.DuckDBPyConnection | None = None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def run(self) -> Invocation:
        """One refresh; what each model did. A compiled statement that fails (a build in between
        dropped a table or made it again with other columns) hands the refresh back to dbt, which
        runs the models and compiles them anew, or says what is wrong."""
        if self._models is not None:
            try:
                return self._run_compiled(self._models)
            except duckdb.Error:
                self._models = None
                self.close()
        return self._run_dbt()

    def _run_compiled(self, models: list[CompiledModel]) -> Invocation:
        started, nodes = time.monotonic(), []
        files = self._bronze_files({model.bronze[1] for model in models if model.bronze is not None})
        engine = self._engine_ready()
        with building(self.settings, self.on_wait) as private:
            # attached under the catalog name the compiled SQL uses: DuckDB names it after the file
            catalog = Path(private.warehouse).stem
            engine.execute(f"attach '{private.warehouse}' as \"{catalog}\"")
            try:
                engine.begin()
                for model in models:
                    model_started, statement = time.monotonic(), self._reading_new_files(model, files)
                    written = engine.execute(statement).fetchone() if statement is not None else (0,)
                    seconds, rows = time.monotonic() - model_started, int(written[0]) if written else None
                    nodes.append(NodeResult(model.name, "model", "success", seconds, rows, None, None, None))
                engine.commit()
            except BaseException:
                engine.rollback()  # the copy is discarded (`building` publishes only a block that ends well)
                raise
            finally:
                engine.execute(f'detach "{catalog}"')
        self._read_files.update(files)
        return Invocation(datetime.now(UTC), time.monotonic() - started, nodes)

    def _bronze_files(self, tables: set[str]) -> dict[str, set[str]]:
        """Each table's data files now (none for a table not written yet)."""
        found = {}
        for table in tables:
            delta = self._lake.delta_table(table)
            found[table] = set(delta.file_uris()) if delta is not None else set()
        return found

    def _reading_new_files(self, model: CompiledModel, files: dict[str, set[str]]) -> str | None:
        """The model's statement with its bronze table read as the files added since the last
        refresh; None when nothing was added. A table whose files this process has not listed yet
        (the first refresh after dbt's) is read whole."""
        if model.bronze is None or model.bronze[1] not in self._read_files:
            return model.statement
        relation, table = model.bronze
        added = sorted(files[table] - self._read_files[table])
        if not added:
            return None
        listed = ", ".join("'" + uri.replace("'", "''") + "'" for uri in added)
        return model.statement.replace(relation, f"read_parquet([{listed}], union_by_name = true)")

    def _engine_ready(self) -> duckdb.DuckDBPyConnection:
        if self._engine is None:  # opened as the warehouse is (extensions, lake secret, spill folder), in memory
            spill = Path(self.settings.duckdb_spill_directory)
            in_memory = self.settings.model_copy(update={"warehouse": ":memory:", "duckdb_temp_directory": spill})
            self._engine = connect_warehouse(in_memory)
        return self._engine

    def _run_dbt(self) -> Invocation:
        started = time.monotonic()
        ran = self._dbt.run(["run", *self._selection])
        nodes = [
            NodeResult(
                r.node.name,
                str(r.node.resource_type),
                str(r.status),
                r.execution_time or 0.0,
                _rows(r),
                None,
                None,
                None,
            )
            for r in ran.results
        ]
        self._read_files = {}
        if self.settings.target == "local":
            self._models = self._compile()
        return Invocation(datetime.now(UTC), time.monotonic() - started, nodes)

    def _compile(self) -> list[CompiledModel] | None:
        """The selection's statements in the order of its lineage; None when a model's
        materialization is not one a statement can refresh."""
        ran = self._dbt.run(["compile", *self._selection]).results
        compiled = {r.node.unique_id: r.node for r in ran if r.node.resource_type == "model"}
        sources = self._dbt.manifest.sources
        order = TopologicalSorter(
            {key: [parent for parent in node.depends_on.nodes if parent in compiled] for key, node in compiled.items()}
        ).static_order()
        models = []
        for key in order:
            node = compiled[key]
            statement = _statement(node)
            if statement is None:
                return None
            parents = node.depends_on.nodes
            # new rows in, new rows out only for a model that reads one table and appends: a join
            # or a table is made from all of its input
            appends_one = len(parents) == 1 and node.config.materialized == "incremental"
            source = sources.get(parents[0]) if appends_one else None
            bronze = (str(source.relation_name), source.identifier) if source is not None else None
            models.append(CompiledModel(node.name, statement, bronze))
        return models


def _statement(node: Any) -> str | None:
    """What refreshes one compiled model as dbt would: an appending incremental model's new rows
    inserted, a table made again; None for anything else (views need no refresh, but other
    materializations are dbt's to run)."""
    materialized, sql = node.config.materialized, node.compiled_code
    if materialized == "incremental" and node.config.incremental_strategy in {None, "append"}:
        return f"insert into {node.relation_name} by name ({sql})"
    if materialized == "table":
        return f"create or replace table {node.relation_name} as ({sql})"
    return None


def _rows(result: Any) -> int | None:
    affected = (getattr(result, "adapter_response", None) or {}).get("rows_affected")
    return affected if isinstance(affected, int) and affected >= 0 else None
