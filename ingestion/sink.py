"""S3 sink: Kafka topics → JSON-lines objects in S3, every record stored once whatever crashes.

Objects are named by topic, partition and first offset, as Confluent's S3 sink names them:
``<prefix>/topics/<topic>/partition=<p>/<topic>+<p>+<start offset>.json`` (offset zero-padded to
ten digits so keys sort by offset). Line ``i`` of an object is the record at offset ``start + i``;
an offset that holds no record (a transaction's commit marker, an aborted record skipped by a
``read_committed`` consumer) is an empty line. Kafka offsets are committed only after the object is
stored; after a crash the consumer resumes at the committed offset, so a retried flush starts at the
same offset and overwrites the same key. The bronze loader reads objects by offset, so even objects
of different lengths written for the same offsets (the flush timing differs after a restart) never
load a record twice.

The consumer is librdkafka's (confluent-kafka) by default, kafka-python with
``PINPIPE_KAFKA_CLIENT=kafka-python`` (``sink_consumers``); both read only committed records.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from ingestion import clients
from ingestion.config import Settings
from ingestion.failpoints import failpoint
from ingestion.metrics import SinkMetrics
from ingestion.object_keys import object_key
from ingestion.sink_consumers import ConfluentConsumer, Consumer, KafkaPythonConsumer, Partition, Rebalance

# how often a running sink asks Kafka for the end offsets to report its lag
LAG_REPORT_SECONDS = 5.0


def as_line(value: bytes | None) -> bytes:
    """One record as one line. Values with line breaks would break the framing (line i = offset
    start + i): JSON ones are re-serialized compactly, anything else is stored as a JSON string so
    the loader quarantines it with its text. An empty value is stored as ``""`` (an empty line is
    an offset without a record)."""
    if value is None:
        return b"null"
    if not value or value.isspace():
        return json.dumps(value.decode()).encode()  # ASCII whitespace
    if b"\n" not in value and b"\r" not in value:
        return value
    text = value.decode(errors="replace")
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")).encode()
    except ValueError:
        return json.dumps(text).encode()


@dataclass(frozen=True)
class FlushPolicy:
    records: int = 50_000
    bytes: int = 32 * 1024 * 1024
    seconds: float = 5.0


@dataclass
class _Buffer:
    start: int
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    opened_at: float = field(default_factory=time.monotonic)

    @property
    def next_offset(self) -> int:
        return self.start + len(self.lines)

    def add(self, offset: int, value: bytes | None) -> None:
        if offset < self.next_offset:  # read again (a rewind): already buffered
            return
        if offset > self.next_offset:  # offsets without a record: one empty line each
            gap = offset - self.next_offset
            self.lines.extend([b""] * gap)
            self.size += gap
        line = as_line(value)
        self.lines.append(line)
        self.size += len(line) + 1

    def full(self, policy: FlushPolicy) -> bool:
        return len(self.lines) >= policy.records or self.size >= policy.bytes

    def due(self, policy: FlushPolicy, now: float) -> bool:
        return self.full(policy) or now - self.opened_at >= policy.seconds


@dataclass
class SinkStats:
    records: int = 0
    objects: int = 0


class SinkStalled(RuntimeError):
    """``until_caught_up`` made no progress for too long: the reason is in the message."""


class S3Sink:
    """A member of the sink's consumer group: buffers records per partition and flushes them to S3."""

    def __init__(
        self,
        consumer: Callable[[Rebalance], Consumer],
        s3_client: Any,
        bucket: str,
        *,
        prefix: str = "raw",
        policy: FlushPolicy = FlushPolicy(),
        flush_revoked: bool = True,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.s3, self.bucket, self.prefix, self.policy = s3_client, bucket, prefix, policy
        self.metrics = metrics or SinkMetrics(CollectorRegistry())
        self.buffers: dict[Partition, _Buffer] = {}
        self.stats = SinkStats()
        self._flush_revoked = flush_revoked
        self._rewind: dict[Partition, int] = {}
        # where each partition's next object starts: objects tile the offsets from the committed one,
        # so offsets without a record (aborted ones, transaction markers) are never a gap
        self._next: dict[Partition, int] = {}
        self._on_flush: Callable[[str, int], None] | None = None
        self.consumer = consumer(self)

    @classmethod
    def from_settings(
        cls, settings: Settings, policy: FlushPolicy = FlushPolicy(), metrics: SinkMetrics | None = None
    ) -> S3Sink:
        """The sink of ``settings``: its Kafka client, broker, topics, bucket and consumer group."""
        topics = list(settings.topics)
        kind = ConfluentConsumer if settings.kafka_client == "confluent-kafka" else KafkaPythonConsumer

        def consumer(rebalance: Rebalance) -> Consumer:
            return kind(settings.kafka_bootstrap_servers, settings.sink_group, topics, rebalance)

        return cls(
            consumer,
            clients.s3_client(settings),
            settings.s3_bucket,
            policy=policy,
            flush_revoked=settings.kafka_client == "confluent-kafka",
            metrics=metrics,
        )

    # --- rebalancing ---------------------------------------------------------------------------------

    def revoked(self, partitions: list[Partition]) -> None:
        """Partitions moving to another member: their buffers are stored and committed first
        (librdkafka allows it in the callback), so the next owner starts right after them. With
        kafka-python a blocking commit raises there: the buffers are dropped and the partitions
        rewound to their start instead, and whoever owns them next reads those records again and
        writes the same object key (the loader trims overlaps by offset)."""
        self.metrics.rebalances.labels("revoked").inc()
        for partition in partitions:
            if partition in self.buffers:
                if self._flush_revoked:
                    self._flush(partition)
                else:
                    self._rewind[partition] = self.buffers.pop(partition).start
            # forgotten after the flush: if the partition comes back, its next object starts where
            # the group committed, not over objects another member stored meanwhile
            self._next.pop(partition, None)

    def assigned(self, partitions: list[Partition]) -> None:
        # a partition assigned back to this member keeps its in-memory position unless rewound,
        # which would skip the dropped records
        self.metrics.rebalances.labels("assigned").inc()
        for partition in partitions:
            if partition in self._rewind:
                self.consumer.seek(partition, self._rewind.pop(partition))

    # --- consuming ----------------------------------------------------------------------------------

    def run(
        self,
        *,
        until_caught_up: bool = False,
        stop: threading.Event | None = None,
        on_flush: Callable[[str, int], None] | None = None,
        stall_timeout_s: float = 120.0,
    ) -> SinkStats:
        """Consume and flush until stopped, or, with ``until_caught_up``, until every partition's
        records up to the end offsets seen at start are stored and committed."""
        self._on_flush = on_flush
        targets: dict[Partition, int] | None = None
        progress_at = lag_at = time.monotonic()
        try:
            while stop is None or not stop.is_set():
                messages = self.consumer.poll(max_records=10_000, timeout_s=0.2)
                self.metrics.consumed.inc(len(messages))
                if messages:
                    progress_at = time.monotonic()
                elif until_caught_up and time.monotonic() - progress_at > stall_timeout_s:
                    raise SinkStalled(self._stall_report(targets))
                for message in messages:
                    buffer = self.buffers.get(message.partition)
                    if buffer is None:
                        start = self._next.get(message.partition)
                        if start is None:
                            start = self._next[message.partition] = self.consumer.committed(message.partition)
                        buffer = self.buffers[message.partition] = _Buffer(min(start, message.offset))
                    buffer.add(message.offset, message.value)
                    if buffer.full(self.policy):
                        self._flush(message.partition)
                now = time.monotonic()
                for partition in [p for p, b in self.buffers.items() if b.due(self.policy, now)]:
                    self._flush(partition)
                if now - lag_at >= LAG_REPORT_SECONDS:
                    self.report_lag()
                    lag_at = now
                if until_caught_up:
                    assigned = self.consumer.assignment()
                    if not assigned:
                        continue
                    if targets is None or set(targets) != assigned:
                        targets = self.consumer.end_offsets(assigned)
                    if all(self._read_through(p) >= end for p, end in targets.items()):
                        for partition in list(self.buffers):
                            self._flush(partition)
                        self.report_lag()
                        return self.stats
            return self.stats
        finally:
            self.consumer.close()

    def report_lag(self) -> None:
        """Each owned partition's lag: its end offset minus the first offset not stored yet (records
        read but still buffered are lag; a transaction marker read past is not)."""
        assigned = self.consumer.assignment()
        stored = {
            p: self.buffers[p].start
            if p in self.buffers
            else max(self._next[p] if p in self._next else self.consumer.committed(p), self.consumer.read_to(p))
            for p in assigned
        }
        self.metrics.report_lag(stored, self.consumer.end_offsets(assigned) if assigned else {})

    def _read_through(self, partition: Partition) -> int:
        buffer = self.buffers.get(partition)
        return max(buffer.next_offset if buffer is not None else -1, self.consumer.read_to(partition))

    def _stall_report(self, targets: dict[Partition, int] | None) -> str:
        assigned = self.consumer.assignment()
        behind = {
            f"{topic}/{number}": (self._read_through((topic, number)), end)
            for (topic, number), end in (targets or {}).items()
            if (topic, number) in assigned and self._read_through((topic, number)) < end
        }
        return f"sink made no progress: assigned {len(assigned)} partitions, behind (position, end): {behind or 'none'}"

    def _flush(self, partition: Partition) -> None:
        buffer = self.buffers.pop(partition)
        if not buffer.lines:
            return
        topic, number = partition
        key = object_key(self.prefix, topic, number, buffer.start)
        body = b"\n".join(buffer.lines) + b"\n"
        with self.metrics.put_latency.labels(topic).time():
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        failpoint("sink.after_put")
        self.consumer.commit(partition, buffer.next_offset)
        self._next[partition] = buffer.next_offset
        records = sum(1 for line in buffer.lines if line)
        self.stats.records += records
        self.stats.objects += 1
        self.metrics.stored.labels(topic).inc(records)
        self.metrics.objects.labels(topic).inc()
        self.metrics.bytes.labels(topic).inc(len(body))
        if self._on_flush:
            self._on_flush(key, records)
