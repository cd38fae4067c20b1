"""Stream consumer: every shard of the Kinesis streams into the bronze stream tables, exactly once.

Each shard is a stream of records numbered from 0 in the order the shard holds them (its ordinal
offsets). Micro-batches of all shards of a stream are appended to ``bronze/<table>_stream`` in one
Delta commit that also records each shard's next ordinal as a ``txn`` (app id
``kinesis/<stream>/<shard>``), as the batch loader does for Kafka partitions. On start a shard
resumes after the sequence number of its last row in bronze; records already committed are skipped
by ordinal, so a crash anywhere neither loses nor duplicates a record.

Shards created by a split or a merge are read only once their parents are drained and committed, so
records of one partition key stay in order. Past one process, N consumers share the shards
(``ShardPart``, ``pinpipe stream --shards i/N``): each reads the shards it owns and commits to the
same tables (Delta's optimistic commits, retried on a conflict); a parent read in another process is
known to be done by the marker its consumer commits with its last rows (``closed_marker``). A record
that is neither JSON nor base64 of JSON goes to quarantine with the reason. A shard is read at most
five times a second, Kinesis' limit, and a throttled one a second later. Every few minutes the
consumer compacts its tables between commits.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry

from ingestion import clients
from ingestion.bronze import StreamSlice, append_slices, stream_closed, stream_positions
from ingestion.bronze_rows import Undecodable, parse_lines
from ingestion.config import Settings
from ingestion.failpoints import failpoint
from ingestion.lake import STREAM_TABLES, Lake, compact_in_child, ensure_tables, newest_ingested_at
from ingestion.metrics import StreamMetrics
from ingestion.schemas import RawTable


@dataclass(frozen=True)
class ShardPart:
    """The shards one of several consumers of the same streams reads: the ``number``-th of ``count``
    (``1/1``: every shard). A shard belongs to the consumer its number (``shardId-000000000004``:
    4) picks, modulo ``count``, so every consumer computes the same split from the shards' ids."""

    number: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> ShardPart:
        """``i/N`` with 1 ≤ i ≤ N; a ValueError saying what is wanted otherwise."""
        number, slash, count = text.partition("/")
        if not (slash and number.isdigit() and count.isdigit() and 1 <= int(number) <= int(count)):
            raise ValueError(f"--shards takes i/N, the i-th of N consumers with 1 ≤ i ≤ N (such as 1/2), not {text!r}")
        return cls(int(number), int(count))

    def owns(self, shard_id: str) -> bool:
        digits = shard_id.rsplit("-", 1)[-1]
        key = int(digits) if digits.isdigit() else zlib.crc32(shard_id.encode())
        return key % self.count == self.number - 1


@dataclass
class _Shard:
    stream: str
    table: RawTable
    shard_id: str
    parents: tuple[str, ...]
    next_ordinal: int  # ordinal of the next record read from the shard
    last_sequence: str | None  # sequence number of the last record read (None: read from the start)
    iterator: str | None = None
    due_at: float = 0.0  # monotonic time from which the next GetRecords may be sent
    caught_up: bool = False  # the last GetRecords found no record
    closed: bool = False  # the shard ended (split or merged) and every record of it was read
    finished: bool = False  # closed, and everything read is committed: children may start
    buffered: list[dict[str, Any]] = field(default_factory=list)
    buffer_start: int = 0

    @property
    def stream_id(self) -> str:
        return f"kinesis/{self.stream}/{self.shard_id}"


_log = logging.getLogger(__name__)

# Kinesis' own ceiling on one GetRecords
GET_RECORDS_LIMIT = 10_000
# Kinesis serves 5 GetRecords per shard per second; a shard over it (or over 2 MB/s) is throttled
GET_RECORDS_INTERVAL = 0.2
THROTTLED_BACKOFF = 1.0


def _payload(data: bytes) -> bytes | Undecodable:
    """A record's Data as JSON bytes: JSON as is, base64 of JSON decoded (what an API Gateway
    integration that encodes the body writes); anything else cannot be read."""
    stripped = data.strip()
    if stripped.startswith((b"{", b"[", b'"')):
        return data
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return Undecodable("neither JSON nor base64-encoded JSON", data)


class StreamConsumer:
    """Reads every shard of ``settings.stream_tables`` and commits micro-batches to bronze."""

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        client: Any,
        *,
        flush_records: int = 10_000,
        flush_seconds: float = 1.0,
        metrics: StreamMetrics | None = None,
        part: ShardPart = ShardPart(),
    ) -> None:
        self.settings, self.lake, self.client, self.part = settings, lake, client, part
        self.metrics = metrics or StreamMetrics(CollectorRegistry())
        self.flush_records, self.flush_seconds = flush_records, flush_seconds
        self.shards: dict[tuple[str, str], _Shard] = {}  # the shards this consumer reads
        self._listed: dict[str, set[str]] = {}  # every shard of each stream, whoever reads it
        self._done_elsewhere: set[tuple[str, str]] = set()  # parents another consumer finished
        self._first_buffered_at: float | None = None
        self._compacted_at = time.monotonic()
        self.committed = 0  # records appended to bronze or quarantined by this consumer
        ensure_tables(lake)
        for table in {STREAM_TABLES[table] for table in settings.stream_tables.values()}:
            self.metrics.bronze.saw(table, newest_ingested_at(lake, table))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        flush_records: int = 10_000,
        flush_seconds: float = 1.0,
        metrics: StreamMetrics | None = None,
        part: ShardPart = ShardPart(),
    ) -> StreamConsumer:
        """The consumer of ``settings``: its streams, its lake, its Kinesis endpoint."""
        return cls(
            settings,
            Lake.from_settings(settings),
            clients.kinesis_client(settings),
            flush_records=flush_records,
            flush_seconds=flush_seconds,
            metrics=metrics,
            part=part,
        )

    # --- shards and where each resumes ----------------------------------------------------------------

    def discover(self) -> None:
        """Add shards not known yet (new streams, children of a split or merge), each at its
        committed position."""
        for stream, table in self.settings.stream_tables.items():
            listed: list[dict[str, Any]] = []
            token: str | None = None
            while True:
                page = self.client.list_shards(**({"NextToken": token} if token else {"StreamName": stream}))
                listed += page["Shards"]
                token = page.get("NextToken")
                if not token:
                    break
            self._listed[stream] = {s["ShardId"] for s in listed}
            new = [s for s in listed if self.part.owns(s["ShardId"]) and (stream, s["ShardId"]) not in self.shards]
            if not new:
                continue
            # records after a shard's last row that went to quarantine are read again and skipped by
            # ordinal: the commit recorded the shard's next ordinal past them
            resume = stream_positions(self.lake, STREAM_TABLES[table], f"kinesis/{stream}/")
            for shard in new:
                parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
                ordinal, sequence = resume.get(f"kinesis/{stream}/{shard['ShardId']}", (0, None))
                self.shards[(stream, shard["ShardId"])] = _Shard(
                    stream, table, shard["ShardId"], parents, ordinal, sequence
                )
        for stream, table in self.settings.stream_tables.items():
            self._look_for_parents_done_elsewhere(stream, table)

    def _look_for_parents_done_elsewhere(self, stream: str, table: RawTable) -> None:
        """The parents of this consumer's shards that another consumer has finished (rarely: only
        after a split or a merge, with ``--shards``)."""
        foreign = {
            parent
            for shard in self.shards.values()
            if shard.stream == stream
            for parent in shard.parents
            if (stream, parent) not in self.shards and (stream, parent) not in self._done_elsewhere
        }
        for parent in foreign:
            if stream_closed(self.lake, STREAM_TABLES[table], f"kinesis/{stream}/{parent}"):
                self._done_elsewhere.add((stream, parent))

    def _readable(self, shard: _Shard) -> bool:
        if shard.closed:
            return False
        return all(self._parent_done(shard.stream, parent) for parent in shard.parents)

    def _parent_done(self, stream: str, parent: str) -> bool:
        mine = self.shards.get((stream, parent))
        if mine is not None:
            return mine.finished
        # expired (gone from the stream), or finished by the consumer that owns it
        return parent not in self._listed.get(stream, set()) or (stream, parent) in self._done_elsewhere

    def _iterator(self, shard: _Shard) -> str:
        """An iterator after the shard's last record in bronze, or at its start. A stream made anew
        under the same name (a local Kinesis restarted empty, a stream deleted and created again)
        refuses bronze's sequence numbers: its records are all new, so it is read from its start,
        its records numbered on after bronze's."""
        from botocore.exceptions import ClientError

        if shard.last_sequence:
            try:
                return self.client.get_shard_iterator(
                    StreamName=shard.stream,
                    ShardId=shard.shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    StartingSequenceNumber=shard.last_sequence,
                )["ShardIterator"]
            except ClientError as error:
                if "did not come from this stream" not in error.response["Error"].get("Message", ""):
                    raise
            _log.warning(
                "%s was made anew (its sequence numbers are not those in bronze): read from its start, "
                "numbered on from offset %d",
                shard.stream_id,
                shard.next_ordinal,
            )
            shard.last_sequence = None
        return self.client.get_shard_iterator(
            StreamName=shard.stream, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    # --- reading and committing -----------------------------------------------------------------------

    def poll(self) -> int:
        """One GetRecords per readable shard that is due (waiting for the first to be due, Kinesis'
        rate per shard kept); returns how many records were read."""
        from botocore.exceptions import ClientError

        readable = [shard for shard in self.shards.values() if self._readable(shard)]
        if not readable:
            time.sleep(0.05)
            return 0
        time.sleep(max(0.0, min(shard.due_at for shard in readable) - time.monotonic()))
        read = 0
        for shard in readable:
            if shard.due_at > time.monotonic():
                continue
            shard.due_at = time.monotonic() + GET_RECORDS_INTERVAL
            try:
                shard.iterator = shard.iterator or self._iterator(shard)
                # never more than a micro-batch from one call: flush_records bounds a commit's size
                answer = self.client.get_records(
                    ShardIterator=shard.iterator, Limit=min(GET_RECORDS_LIMIT, self.flush_records)
                )
            except ClientError as error:
                code = error.response["Error"].get("Code")
                if code == "ProvisionedThroughputExceededException":
                    shard.due_at = time.monotonic() + THROTTLED_BACKOFF
                elif code == "ExpiredIteratorException":
                    shard.iterator = None  # reopened after the last record read, next poll
                else:
                    raise
                continue
            records = answer["Records"]
            shard.caught_up = not records
            if "MillisBehindLatest" in answer:
                self.metrics.iterator_age.labels(shard.stream, shard.shard_id).set(answer["MillisBehindLatest"] / 1000)
            self.metrics.read.labels(shard.stream).inc(len(records))
            if records:
                if not shard.buffered:
                    shard.buffer_start = shard.next_ordinal
                shard.buffered += records
                shard.next_ordinal += len(records)
                shard.last_sequence = records[-1]["SequenceNumber"]
                read += len(records)
                self._first_buffered_at = self._first_buffered_at or time.monotonic()
            shard.iterator = answer.get("NextShardIterator")
            if shard.iterator is None:  # a parent of a split or merge, read to its end
                shard.closed = True
        return read

    def caught_up(self) -> bool:
        """Every readable shard's last GetRecords found nothing more."""
        return all(shard.caught_up for shard in self.shards.values() if self._readable(shard))

    def buffered(self) -> int:
        return sum(len(shard.buffered) for shard in self.shards.values())

    def flush_due(self) -> bool:
        if any(s.closed and not s.finished for s in self.shards.values()):
            return True
        if self._first_buffered_at is None:
            return False
        return self.buffered() >= self.flush_records or time.monotonic() - self._first_buffered_at >= self.flush_seconds

    def flush(self) -> int:
        """Commit every buffered record: one Delta commit per stream table with every shard's offset.
        Returns how many records were flushed (some may have been committed before a restart)."""
        pending = [shard for shard in self.shards.values() if shard.buffered]
        # a shard read to its end is marked closed in the same commit as its last rows (or alone)
        closing = [shard for shard in self.shards.values() if shard.closed and not shard.finished]
        for table in dict.fromkeys(shard.table for shard in pending + closing):
            slices = [self._slice(shard) for shard in pending if shard.table == table]
            closed = [shard.stream_id for shard in closing if shard.table == table]
            result = append_slices(self.lake, table, slices, target=STREAM_TABLES[table], closed=closed)
            failpoint("stream.after_table_commit")
            self.committed += result.appended + result.quarantined
            self.metrics.bronze.observe(STREAM_TABLES[table], result)
        flushed = 0
        for shard in pending:
            flushed += len(shard.buffered)
            shard.buffered = []
        for shard in self.shards.values():
            shard.finished = shard.closed
        self._first_buffered_at = None
        return flushed

    def compact(self) -> None:
        """Compact the stream tables this consumer writes, between its commits. Of several consumers
        only the first compacts; the others' appends meanwhile do not conflict with it (a
        compaction only rewrites files)."""
        self._compacted_at = time.monotonic()
        tables = sorted({STREAM_TABLES[table] for table in self.settings.stream_tables.values()})
        try:
            compact_in_child(self.lake, tables, retention_hours=self.settings.stream_retention_hours)
        except Exception as error:  # noqa: BLE001 - only a speed-up: the next one tries again, the records are safe
            _log.warning("compacting %s failed: %s: %s", ", ".join(tables), type(error).__name__, error)

    def _compaction_due(self) -> bool:
        every = self.settings.stream_compact_seconds
        return self.part.number == 1 and every > 0 and time.monotonic() - self._compacted_at >= every

    @staticmethod
    def _slice(shard: _Shard) -> StreamSlice:
        payloads = [_payload(record["Data"]) for record in shard.buffered]
        records: pa.Table | list[bytes | Undecodable] | list[bytes] = payloads
        # one record per line (an empty one would read as an offset without a record: not here)
        lines = [p for p in payloads if isinstance(p, bytes) and p.strip() and b"\n" not in p and b"\r" not in p]
        if len(lines) == len(payloads):
            records = parse_lines(shard.table, b"\n".join(lines)).records  # vectorised when all are well formed
        columns = {
            "_shard_id": pa.array([shard.shard_id] * len(payloads), pa.string()),
            "_sequence_number": pa.array([r["SequenceNumber"] for r in shard.buffered], pa.string()),
            "_arrival_time": pa.array(
                [r["ApproximateArrivalTimestamp"] for r in shard.buffered], pa.timestamp("us", tz="UTC")
            ),
        }
        return StreamSlice(
            shard.stream_id, shard.buffer_start, records, f"kinesis://{shard.stream}/{shard.shard_id}", columns
        )

    def run(
        self,
        *,
        until_caught_up: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        on_flush: Callable[[int], None] | None = None,
        rediscover_seconds: float = 5.0,
    ) -> None:
        """Poll and commit until stopped; with ``until_caught_up``, until every shard's last
        GetRecords found nothing new and everything read is committed."""
        self.discover()
        discovered_at = time.monotonic()
        while not should_stop():
            self.poll()
            closed = any(s.closed and not s.finished for s in self.shards.values())
            caught_up = until_caught_up and self.caught_up()
            if self.flush_due() or caught_up:
                flushed = self.flush()
                if on_flush is not None and flushed:
                    on_flush(flushed)
                if self._compaction_due():
                    self.compact()
            if closed or time.monotonic() - discovered_at >= rediscover_seconds:
                self.discover()  # children of a split or merge
                discovered_at = time.monotonic()
            if caught_up and not closed and self.caught_up():  # no child or new shard found meanwhile
                return
        self.flush()
