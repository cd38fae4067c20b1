"""Bronze: raw records appended to Delta tables ``<lake>/bronze/<table>``, each record exactly once.

Every writer is a *stream* of records with offsets (an emulator run, a Kafka partition, a Kinesis
shard). The next offset to load is stored in the Delta log as a ``txn`` application transaction
(app id = stream, version = next offset) in the same commit as the rows, as kafka-delta-ingest
does: a crash before the commit leaves nothing, a crash after it leaves the offset recorded, and a
retry resumes from the recorded offset. No side file can disagree with the table.

Payload values are kept as the text they arrived as. A record that cannot be identified at all (not
JSON, not an object, no integer key) goes to ``<lake>/bronze/quarantine`` with the reason.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import yaml
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from ingestion.clients import require_lake_bucket
from ingestion.config import PROJECT_DIR, Settings
from ingestion.failpoints import failpoint
from ingestion.schemas import (
    KEY_FIELD,
    QUARANTINE_SCHEMA,
    RAW_ARROW_SCHEMAS,
    RawTable,
    bronze_schema,
    is_key,
    payload_fields,
    stream_bronze_schema,
)

# The bronze tables are listed once, in the dbt sources (dbt registers them from there too); each
# table's meta says which path writes it and which raw record it carries.
SOURCES_FILE = PROJECT_DIR / "models" / "staging" / "pinterest" / "_pinterest__sources.yml"


@dataclass(frozen=True)
class BronzeTable:
    name: str
    kind: Literal["batch", "stream", "quarantine"]
    carries: RawTable | None  # the raw record its rows hold (none for the quarantine)


def _bronze_tables() -> dict[str, BronzeTable]:
    (source,) = [s for s in yaml.safe_load(SOURCES_FILE.read_text())["sources"] if s["name"] == "bronze"]
    tables = {}
    for table in source["tables"]:
        meta = table["config"]["meta"]
        tables[table["name"]] = BronzeTable(table["name"], meta["kind"], meta.get("carries"))
    return tables


TABLES = _bronze_tables()
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
class AppendResult:
    table: RawTable
    appended: int
    quarantined: int
    already_loaded: int
    ingested_at: datetime  # the rows' _ingested_at
    commit_seconds: float = 0.0  # the Delta commits' time (quarantine and data)


def committed_offset(lake: Lake, table: str, stream: str) -> int:
    """The next offset of ``stream`` to load into ``table``: 0 when the stream never wrote there."""
    return _next_offset(lake.delta_table(table), stream)


def committed_offsets(lake: Lake, table: str) -> Callable[[str], int]:
    """``committed_offset`` of any stream, read from one look at the table's log."""
    return partial(_next_offset, lake.delta_table(table))


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


def _quarantine_stream(table: RawTable, stream: str) -> str:
    return f"{table}:{stream}"


@dataclass(frozen=True)
class StreamSlice:
    """Records of one stream, read from ``source``, covering offsets ``start .. end - 1``.

    Record ``i`` is at offset ``start + i``, or at ``start + positions[i]`` where some offsets hold no
    record (``span`` offsets in all: a Kafka partition's commit markers). ``columns`` are per-record
    metadata aligned with ``records`` (a Kinesis record's sequence number and arrival time), kept on
    the rows whose table has those columns.
    """

    stream: str
    start: int
    records: pa.Table | Sequence[object]
    source: str
    columns: dict[str, pa.Array] = field(default_factory=dict)
    positions: Sequence[int] | None = None
    span: int | None = None

    @property
    def end(self) -> int:
        return self.start + (self.span if self.span is not None else len(self.records))


def append(
    lake: Lake,
    table: RawTable,
    records: pa.Table | Sequence[object],
    *,
    stream: str,
    start: int,
    source: str,
    positions: Sequence[int] | None = None,
    span: int | None = None,
) -> AppendResult:
    """Append records ``start .. start + len - 1`` of ``stream`` to ``bronze/<table>`` exactly once
    (``positions`` and ``span`` as in ``StreamSlice``).

    ``records`` is an Arrow table of raw rows, or a sequence of raw records (dicts, or JSON text
    lines). Offsets already committed by an earlier attempt are skipped; unidentifiable records go to
    quarantine.
    """
    return append_slices(lake, table, [StreamSlice(stream, start, records, source, positions=positions, span=span)])


def append_slices(
    lake: Lake, table: RawTable, slices: Sequence[StreamSlice], *, target: str | None = None
) -> AppendResult:
    """Append several streams' records to ``bronze/<target>`` (default ``table``) in one commit that
    also records each stream's next offset; see ``append``.

    The quarantine commit comes first: if the process dies between the two commits, the retry finds
    the quarantine rows recorded and writes only the data.
    """
    target = target or table
    schema = table_schema(target)
    delta = lake.delta_table(target)
    quarantine: DeltaTable | None = None  # read only when something is quarantined
    good_parts, bad_parts, offsets, bad_offsets = [], [], [], []
    appended = quarantined = already = 0
    ingested_at = datetime.now(UTC)
    for piece in slices:
        end = piece.end
        done = _next_offset(delta, piece.stream)
        if done >= end:
            already += len(piece.records)
            continue
        already += max(0, done - piece.start)
        good, bad = to_bronze_rows(table, piece.records, start=piece.start, positions=piece.positions)
        metadata = {
            "_stream": piece.stream,
            "_source": piece.source,
            "_batch_id": f"{piece.stream}@{piece.start}",
            "_ingested_at": ingested_at,
        }
        if bad.num_rows:
            quarantine = quarantine or lake.delta_table(QUARANTINE)
            quarantine_stream = _quarantine_stream(table, piece.stream)
            bad = bad.filter(pc.greater_equal(bad["_offset"], _next_offset(quarantine, quarantine_stream)))
            if bad.num_rows:
                bad_parts.append(_with_metadata(bad, metadata, QUARANTINE_SCHEMA))
                bad_offsets.append(Transaction(app_id=quarantine_stream, version=end))
                quarantined += bad.num_rows
        good = good.filter(pc.greater_equal(good["_offset"], done))
        positions = pc.subtract(good["_offset"], piece.start)
        for name, values in piece.columns.items():
            good = good.append_column(name, values.take(positions))
        good_parts.append(_with_metadata(good, metadata, schema))
        offsets.append(Transaction(app_id=piece.stream, version=end))
        appended += good.num_rows
    started = time.perf_counter()
    if bad_parts:
        _commit(lake, quarantine or lake.uri(QUARANTINE), pa.concat_tables(bad_parts), bad_offsets)
        failpoint("bronze.after_quarantine_commit")
    if offsets:
        # committed even when empty, so the recorded offsets move past quarantined records
        _commit(lake, delta or lake.uri(target), pa.concat_tables(good_parts), offsets)
    return AppendResult(table, appended, quarantined, already, ingested_at, time.perf_counter() - started)


def _next_offset(delta: DeltaTable | None, stream: str) -> int:
    return (delta.transaction_version(stream) or 0) if delta is not None else 0


def _commit(lake: Lake, target: DeltaTable | str, rows: pa.Table, offsets: list[Transaction]) -> None:
    """Append ``rows`` with the streams' next offsets in the same commit; ``target`` is the table
    already loaded (so its log is not read twice) or, for a new table, its URI."""
    write_deltalake(
        target,
        rows,
        mode="append",
        storage_options=lake.storage_options,
        commit_properties=CommitProperties(app_transactions=offsets),
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


def stream_positions(lake: Lake, table: str, stream_prefix: str) -> dict[str, tuple[int, str]]:
    """Per stream of ``bronze/<table>`` whose id starts with ``stream_prefix``: the offset after its
    last row, and that row's ``_sequence_number`` (a Kinesis shard's resume point)."""
    delta = lake.delta_table(table)
    if delta is None:
        return {}
    rows = delta.to_pyarrow_table(columns=["_stream", "_offset", "_sequence_number"])
    rows = rows.filter(pc.starts_with(rows["_stream"], stream_prefix))
    last = rows.group_by("_stream").aggregate([("_offset", "max")]).rename_columns(["_stream", "_offset"])
    found = rows.join(last, keys=["_stream", "_offset"], join_type="inner")
    return {
        stream: (offset + 1, sequence)
        for stream, offset, sequence in zip(
            *(found[c].to_pylist() for c in ("_stream", "_offset", "_sequence_number")), strict=True
        )
    }


def _with_metadata(rows: pa.Table, metadata: dict[str, object], schema: pa.Schema) -> pa.Table:
    columns = []
    for column in schema:
        if column.name in rows.column_names:
            columns.append(rows[column.name].cast(column.type))
        else:
            columns.append(pa.array([metadata.get(column.name)] * rows.num_rows, column.type))
    return pa.Table.from_arrays(columns, schema=schema)


# --- raw records → bronze rows ----------------------------------------------------------------------


class _Unidentifiable(ValueError):
    """A record bronze cannot key: it goes to quarantine with this message as the reason."""


@dataclass(frozen=True)
class Undecodable:
    """A record its reader could not decode (``reason``), passed on to be quarantined as it came."""

    reason: str
    data: bytes


def to_bronze_rows(
    table: RawTable, records: pa.Table | Sequence[object], *, start: int = 0, positions: Sequence[int] | None = None
) -> tuple[pa.Table, pa.Table]:
    """Split raw records into bronze payload rows (all text, plus ``_offset``) and quarantine rows;
    record ``i`` is at offset ``start + i``, or ``start + positions[i]``."""
    count = records.num_rows if isinstance(records, pa.Table) else len(records)
    offsets = [start + p for p in positions] if positions is not None else list(range(start, start + count))
    if isinstance(records, pa.Table) and records.num_rows and _arrow_rows_are_keyed(table, records):
        return _arrow_to_bronze(table, records, offsets), _empty_quarantine()
    rows = records.to_pylist() if isinstance(records, pa.Table) else records
    return _records_to_bronze(table, rows, offsets, start)


def _arrow_rows_are_keyed(table: RawTable, records: pa.Table) -> bool:
    key = KEY_FIELD[table]
    return (
        key in records.column_names
        and pa.types.is_integer(records.schema.field(key).type)
        and records[key].null_count == 0
        and set(records.column_names) <= set(payload_fields(table))
        and all(not pa.types.is_nested(f.type) for f in records.schema)
    )


def _arrow_to_bronze(table: RawTable, records: pa.Table, offsets: list[int]) -> pa.Table:
    """Fast path for well-formed Arrow input (the emulator, pyarrow's JSON reader): vectorised casts."""
    n = records.num_rows
    columns = {
        name: records[name].cast(pa.string()) if name in records.column_names else pa.nulls(n, pa.string())
        for name in payload_fields(table)
    }
    columns["_offset"] = pa.array(offsets, pa.int64())
    return pa.table(columns)


def _records_to_bronze(
    table: RawTable, records: Sequence[object], offsets: list[int], start: int
) -> tuple[pa.Table, pa.Table]:
    fields = payload_fields(table)
    good: dict[str, list[object]] = {name: [] for name in [*fields, "_unknown_fields", "_offset"]}
    bad: dict[str, list[object]] = {"table_name": [], "reason": [], "raw_record": [], "line_number": [], "_offset": []}
    for position, raw in enumerate(records):
        try:
            record = _identified(table, raw)
        except _Unidentifiable as error:
            bad["table_name"].append(table)
            bad["reason"].append(str(error))
            bad["raw_record"].append(_as_text(raw))
            bad["line_number"].append(offsets[position] - start + 1)
            bad["_offset"].append(offsets[position])
            continue
        for name in fields:
            good[name].append(_value_text(record.get(name)))
        unknown = {k: v for k, v in record.items() if k not in fields}
        good["_unknown_fields"].append(json.dumps(unknown, ensure_ascii=False) if unknown else None)
        good["_offset"].append(offsets[position])
    good_table = pa.table(
        good,
        schema=pa.schema(
            [*(pa.field(n, pa.string()) for n in fields), ("_unknown_fields", pa.string()), ("_offset", pa.int64())]
        ),
    )
    bad_table = pa.table(bad, schema=_quarantine_payload_schema())
    return good_table, bad_table


def _identified(table: RawTable, raw: object) -> dict[str, Any]:
    if isinstance(raw, Undecodable):
        raise _Unidentifiable(raw.reason)
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            raise _Unidentifiable(f"not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise _Unidentifiable(f"not a JSON object but {type(raw).__name__}")
    key = KEY_FIELD[table]
    value = raw.get(key)
    if not is_key(value):
        raise _Unidentifiable(f"field {key!r} must be an integer key within bigint, got {json.dumps(value)}")
    return raw


def _value_text(value: object) -> str | None:
    """The value as the text it arrived as: strings unchanged, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _as_text(raw: object) -> str:
    if isinstance(raw, Undecodable):
        raw = raw.data
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=repr)


def _quarantine_payload_schema() -> pa.Schema:
    return pa.schema(
        [QUARANTINE_SCHEMA.field(n) for n in ("table_name", "reason", "raw_record", "line_number", "_offset")]
    )


def _empty_quarantine() -> pa.Table:
    return _quarantine_payload_schema().empty_table()


@dataclass(frozen=True)
class Lines:
    """An object's records: an Arrow table when every record is well formed (vectorised), else the
    raw lines, for the per-record path that quarantines the bad ones. An empty line is an offset
    without a record (a commit marker): ``positions`` then says which line each record is on."""

    records: pa.Table | list[bytes]
    positions: list[int] | None
    span: int  # lines, records or not: the offsets the object covers


def parse_lines(table: RawTable, data: bytes) -> Lines:
    """The records of a JSON-lines object, one line per offset."""
    lines = data.splitlines()
    positions = [i for i, line in enumerate(lines) if line] if b"" in lines else None
    kept = lines if positions is None else [lines[i] for i in positions]
    body = data if positions is None else b"\n".join(kept)
    try:
        parsed = pa_json.read_json(
            io.BytesIO(body),
            parse_options=pa_json.ParseOptions(
                explicit_schema=RAW_ARROW_SCHEMAS[table], unexpected_field_behavior="error"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return Lines(kept, positions, len(lines))
    keyed = parsed.num_rows == len(kept) and _arrow_rows_are_keyed(table, parsed)
    return Lines(parsed if keyed else kept, positions, len(lines))
