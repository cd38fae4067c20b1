"""The lake: its bronze Delta tables ``<lake>/bronze/<table>`` (which there are, their schemas),
how to reach them (a path or ``s3://``), what they hold, and their upkeep (compaction)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from ingestion.clients import require_lake_bucket
from ingestion.config import Settings
from ingestion.schemas import (
    QUARANTINE_SCHEMA,
    RAW_TABLES,
    RawTable,
    bronze_schema,
    stream_bronze_schema,
)


@dataclass(frozen=True)
class BronzeTable:
    name: str
    kind: Literal["batch", "stream", "quarantine"]
    carries: RawTable | None  # the raw record its rows hold (none for the quarantine)


# The bronze tables, as dbt's sources list them too (models/staging/pinterest/_pinterest__sources.yml,
# each table's meta: which path writes it, which raw record it carries); a test holds the two equal.
TABLES: dict[str, BronzeTable] = {
    table.name: table
    for table in (
        *(BronzeTable(raw, "batch", raw) for raw in RAW_TABLES),
        *(BronzeTable(f"{raw}_stream", "stream", raw) for raw in RAW_TABLES),
        BronzeTable("quarantine", "quarantine", None),
    )
}
BRONZE_TABLES = tuple(TABLES)
(QUARANTINE,) = [t.name for t in TABLES.values() if t.kind == "quarantine"]
# the Kinesis path's bronze tables, beside the batch path's: bronze/pin_stream, ...
STREAM_TABLES: dict[RawTable, str] = {t.carries: t.name for t in TABLES.values() if t.kind == "stream" and t.carries}


def table_schema(name: str) -> pa.Schema:
    """The schema of bronze table ``name``: a raw table, its stream table, or the quarantine."""
    table = TABLES[name]
    if table.carries is None:
        return QUARANTINE_SCHEMA
    return stream_bronze_schema(table.carries) if table.kind == "stream" else bronze_schema(table.carries)


@dataclass(frozen=True)
class Lake:
    """The lake root (a path or ``s3://`` URI) and the delta-rs storage options to reach it."""

    root: str
    storage_options: dict[str, str] | None = None
    # tables opened by this Lake: reading a whole log again on every look costs the loader most of its time
    _opened: dict[str, DeltaTable] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        if settings.lake.startswith("s3://"):
            require_lake_bucket(settings)  # before delta-rs, which says only "Generic S3 error"
        return cls(settings.lake, settings.storage_options)

    def __reduce__(self) -> tuple[type[Lake], tuple[str, dict[str, str] | None]]:
        return Lake, (self.root, self.storage_options)  # a child process opens its own tables

    def uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/bronze/{table}"

    def delta_table(self, table: str) -> DeltaTable | None:
        """``bronze/<table>`` at its latest version (other writers' commits included), or None if it
        does not exist yet. Opened once, then brought up to date by reading only the newer log entries."""
        opened = self._opened.get(table)
        if opened is not None:
            try:
                opened.update_incremental()
                return opened
            except (DeltaError, OSError):  # its log entries since cleaned up, or the table gone: open it anew
                del self._opened[table]
        try:
            opened = DeltaTable(self.uri(table), storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        self._opened[table] = opened
        return opened


@dataclass(frozen=True)
class TableStats:
    rows: int
    newest_ingested_at: datetime | None


def table_stats(lake: Lake, table: str) -> TableStats:
    """``table``'s rows and newest ``_ingested_at``, from its files' statistics in the Delta log (no
    data read); none and None when the table is missing or empty."""
    delta = lake.delta_table(table)
    actions = pa.table(delta.get_add_actions(flatten=True)) if delta is not None else pa.table({})
    if not actions.num_rows:
        return TableStats(0, None)
    newest = pc.max(actions["max._ingested_at"]).as_py() if "max._ingested_at" in actions.column_names else None
    return TableStats(int(pc.sum(actions["num_records"]).as_py() or 0), newest)


def newest_ingested_at(lake: Lake, table: str) -> datetime | None:
    """The newest ``_ingested_at`` of ``table`` (``table_stats``)."""
    return table_stats(lake, table).newest_ingested_at


def ensure_tables(lake: Lake) -> None:
    """Create any missing bronze table empty, so readers (dbt) find every table before data arrives."""
    for table in BRONZE_TABLES:
        if lake.delta_table(table) is None:
            write_deltalake(
                lake.uri(table), table_schema(table).empty_table(), mode="append", storage_options=lake.storage_options
            )


@dataclass(frozen=True)
class Compaction:
    table: str
    files_before: int
    files_after: int
    files_deleted: int  # replaced files older than the retention, deleted from storage


def compact(lake: Lake, table: str, *, retention_hours: int) -> Compaction:
    """Rewrite ``bronze/<table>``'s small files into few, delete replaced files and log entries older
    than ``retention_hours`` (the time travel kept), and checkpoint.

    A stream committing every second adds a file and a log entry each time; without this, every
    read scans thousands of tiny files and every commit lists thousands of log entries. Rows and
    offsets (``txn``) are unchanged. Run it from the table's only writer, between its commits.
    """
    delta = lake.delta_table(table)
    if delta is None:
        return Compaction(table, 0, 0, 0)
    retention = f"interval {retention_hours} hours"
    wanted = {"delta.logRetentionDuration": retention, "delta.deletedFileRetentionDuration": retention}
    if any(delta.metadata().configuration.get(key) != value for key, value in wanted.items()):
        delta.alter.set_table_properties(wanted)
    files_before = len(delta.file_uris())
    delta.optimize.compact()
    deleted = delta.vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False)
    delta.create_checkpoint()
    delta.cleanup_metadata()  # log entries older than the retention, now covered by the checkpoint
    return Compaction(table, files_before, len(delta.file_uris()), len(deleted))


def compact_in_child(lake: Lake, tables: Sequence[str], *, retention_hours: int) -> list[Compaction]:
    """``compact`` each table in a child process, for a process that also scans Delta tables with
    pyarrow (the stream consumer): delta-rs' optimize and pyarrow's dataset scans in one process
    make it abort at exit ("terminate called without an active exception")."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.map(partial(compact, lake, retention_hours=retention_hours), tables)
