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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from ingestion.bronze_rows import to_bronze_rows, with_metadata
from ingestion.errors import PinpipeError
from ingestion.failpoints import failpoint
from ingestion.lake import QUARANTINE, Lake, table_schema
from ingestion.schemas import (
    QUARANTINE_SCHEMA,
    RAW_TABLES,
    RawTable,
)


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


def closed_marker(stream: str) -> str:
    """The app id whose transaction says ``stream`` ended and all of it is committed (a Kinesis
    shard closed by a split or a merge): what a consumer of its children in another process waits for."""
    return f"{stream}#closed"


def stream_closed(lake: Lake, table: str, stream: str) -> bool:
    return committed_offset(lake, table, closed_marker(stream)) > 0


SparkJob = Literal["kafka", "objects"]
SPARK_JOBS: tuple[SparkJob, ...] = ("kafka", "objects")


def spark_app_id(job: SparkJob) -> str:
    """The app id of Spark ingestion job ``job``'s idempotent writes (ingestion/spark_ingest.py),
    whose version is its last micro-batch."""
    return f"pinpipe-spark/{job}"


class ForeignBronze(PinpipeError):
    """Bronze already written by another loader: loading the same records again would duplicate them."""


def refuse_spark_bronze(lake: Lake, tables: Sequence[str]) -> None:
    """The Python loaders keep out of bronze that a Spark ingestion job writes (offsets differ)."""
    for table in tables:
        delta = lake.delta_table(table)
        for job in SPARK_JOBS:
            if delta is not None and delta.transaction_version(spark_app_id(job)) is not None:
                again = "pinpipe load --engine spark" + (" --from kafka" if job == "kafka" else "")
                raise ForeignBronze(
                    f"{lake.uri(table)} is loaded by the Spark {job} job: keep loading it with `{again}`, "
                    "or give this loader a lake of its own (PINPIPE_LAKE)"
                )


def refuse_foreign_bronze(lake: Lake, job: SparkJob, *, started: bool) -> None:
    """A Spark job's first run needs bronze tables no one else wrote: Python-loaded rows or another
    Spark job's would be loaded again from the same records."""
    if started:
        return
    for table in (*RAW_TABLES, QUARANTINE):
        delta = lake.delta_table(table)
        if delta is not None and delta.transaction_version(spark_app_id(job)) is None and delta.file_uris():
            raise ForeignBronze(
                f"{lake.uri(table)} already holds rows another loader wrote: give the Spark {job} job a lake "
                "of its own (PINPIPE_LAKE), or keep loading this one with the loader that filled it"
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
    lake: Lake,
    table: RawTable,
    slices: Sequence[StreamSlice],
    *,
    target: str | None = None,
    closed: Sequence[str] = (),
) -> AppendResult:
    """Append several streams' records to ``bronze/<target>`` (default ``table``) in one commit that
    also records each stream's next offset, and marks the ``closed`` streams as ended (``closed_marker``,
    committed even with no row); see ``append``.

    The quarantine commit comes first: if the process dies between the two commits, the retry finds
    the quarantine rows recorded and writes only the data. When another writer's commit to a stream
    wins (Delta refuses two commits of one app id's offset), the append starts again from the table
    as that commit left it: only what is still missing is appended.
    """
    return Retrying(
        retry=retry_if_exception_type(CommitFailedError),
        wait=wait_random(0.05, 0.5),  # apart from the other writer's next attempt
        stop=stop_after_attempt(20),
        reraise=True,
    )(_append_slices_once, lake, table, slices, target, closed)


def _append_slices_once(
    lake: Lake, table: RawTable, slices: Sequence[StreamSlice], target: str | None, closed: Sequence[str]
) -> AppendResult:
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
                bad_parts.append(with_metadata(bad, metadata, QUARANTINE_SCHEMA))
                bad_offsets.append(Transaction(app_id=quarantine_stream, version=end))
                quarantined += bad.num_rows
        good = good.filter(pc.greater_equal(good["_offset"], done))
        positions = pc.subtract(good["_offset"], piece.start)
        for name, values in piece.columns.items():
            good = good.append_column(name, values.take(positions))
        good_parts.append(with_metadata(good, metadata, schema))
        offsets.append(Transaction(app_id=piece.stream, version=end))
        appended += good.num_rows
    offsets += [
        Transaction(app_id=closed_marker(s), version=1) for s in closed if not _next_offset(delta, closed_marker(s))
    ]
    started = time.perf_counter()
    if bad_parts:
        _commit(lake, quarantine or lake.uri(QUARANTINE), pa.concat_tables(bad_parts), bad_offsets)
        failpoint("bronze.after_quarantine_commit")
    if offsets:
        # committed even when empty, so the recorded offsets move past quarantined records
        rows = pa.concat_tables(good_parts) if good_parts else schema.empty_table()
        _commit(lake, delta or lake.uri(target), rows, offsets)
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
