"""S3 sink: Kafka topics → JSON-lines objects in S3, every record stored once whatever crashes.

Objects are named by topic, partition and first offset, as Confluent's S3 sink names them:
``<prefix>/topics/<topic>/partition=<p>/<topic>+<p>+<start offset>.json`` (offset zero-padded to
ten digits so keys sort by offset). Line ``i`` of an object is the record at offset ``start + i``.
Kafka offsets are committed only after the object is stored; after a crash the consumer resumes at
the committed offset, so a retried flush starts at the same offset and overwrites the same key.
The bronze loader reads objects by offset, so even objects of different lengths written for the
same offsets (the flush timing differs after a restart) never load a record twice.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ingestion import clients
from ingestion.config import Settings
from ingestion.errors import ServiceDown

OBJECT_KEY = re.compile(
    r"topics/(?P<topic>[^/]+)/partition=(?P<partition>\d+)/(?P=topic)\+(?P=partition)\+(?P<start>\d+)\.json$"
)


def object_key(prefix: str, topic: str, partition: int, start: int) -> str:
    return f"{prefix}/topics/{topic}/partition={partition}/{topic}+{partition}+{start:010d}.json"


@dataclass(frozen=True)
class RawObject:
    key: str
    topic: str
    partition: int
    start: int


def parse_object_key(key: str) -> RawObject | None:
    match = OBJECT_KEY.search(key)
    if match is None:
        return None
    return RawObject(key, match["topic"], int(match["partition"]), int(match["start"]))


def as_line(value: bytes | None) -> bytes:
    """One record as one line. Values with line breaks would break the framing (line i = offset
    start + i): JSON ones are re-serialized compactly, anything else is stored as a JSON string so
    the loader quarantines it with its text."""
    if value is None:
        return b"null"
    if b"\n" not in value and b"\r" not in value:
        return value
    text = value.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")).encode()
    except ValueError:
        return json.dumps(text).encode()


@dataclass(frozen=True)
class FlushPolicy:
    records: int = 20_000
    bytes: int = 16 * 1024 * 1024
    seconds: float = 5.0


@dataclass
class _Buffer:
    start: int
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    opened_at: float = field(default_factory=time.monotonic)

    def due(self, policy: FlushPolicy, now: float) -> bool:
        return len(self.lines) >= policy.records or self.size >= policy.bytes or now - self.opened_at >= policy.seconds


@dataclass
class SinkStats:
    records: int = 0
    objects: int = 0


class SinkStalled(RuntimeError):
    """``until_caught_up`` made no progress for too long: the reason is in the message."""


class _DropRevoked(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no type information
    """Partitions moving drop what was read from them and not yet stored, and rewind to it: whoever
    owns a partition next reads again from its committed offset (the start of the dropped buffer)
    and writes the same object key; the loader trims overlaps by offset. Committing here instead is
    not possible: kafka-python runs this listener on its network thread, where a blocking commit
    raises. A partition assigned back to this same member keeps its in-memory position unless it is
    rewound, which would skip the dropped records."""

    def __init__(self, sink: S3Sink) -> None:
        self.sink = sink
        self.rewind: dict[TopicPartition, int] = {}

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for partition in revoked:
            buffer = self.sink.buffers.pop(partition, None)
            if buffer is not None:
                self.rewind[partition] = buffer.start

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for partition in assigned:
            if partition in self.rewind:
                self.sink.consumer.seek(partition, self.rewind[partition])
        self.rewind.clear()


class S3Sink:
    """A member of the sink's consumer group: buffers records per partition and flushes them to S3."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        s3_client: Any,
        bucket: str,
        *,
        prefix: str = "raw",
        group_id: str = "pinpipe-s3-sink",
        policy: FlushPolicy = FlushPolicy(),
    ) -> None:
        self.s3, self.bucket, self.prefix, self.policy = s3_client, bucket, prefix, policy
        self.buffers: dict[TopicPartition, _Buffer] = {}
        try:
            self.consumer = self._connect(bootstrap_servers, group_id)
        except KafkaError as error:
            raise ServiceDown(
                f"Kafka at {bootstrap_servers} does not answer ({type(error).__name__}): start it with "
                "`pinpipe services up`, or set PINPIPE_KAFKA_PORT"
            ) from error
        for topic in topics:  # and fetch the metadata before joining, so the first assignment has it
            self.consumer.partitions_for_topic(topic)
        self.consumer.subscribe(topics, listener=_DropRevoked(self))
        self.stats = SinkStats()

    @staticmethod
    def _connect(bootstrap_servers: str, group_id: str) -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=10_000,
            # a crashed member's partitions move to the others after 10 s instead of Kafka's 45 s
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            # a group leader that joined before it had the topics' metadata assigns nothing, and
            # only notices the partitions at its next metadata refresh: keep that one short
            metadata_max_age_ms=5_000,
        )

    @classmethod
    def from_settings(cls, settings: Settings, policy: FlushPolicy = FlushPolicy()) -> S3Sink:
        """The sink of ``settings``: its broker, topics, bucket and consumer group."""
        return cls(
            settings.kafka_bootstrap_servers,
            list(settings.topics),
            clients.s3_client(settings),
            settings.s3_bucket,
            group_id=settings.sink_group,
            policy=policy,
        )

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
        targets: dict[TopicPartition, int] | None = None
        progress_at, seen = time.monotonic(), -1
        try:
            while stop is None or not stop.is_set():
                polled = self.consumer.poll(timeout_ms=200)
                if until_caught_up:
                    read = sum(len(messages) for messages in polled.values()) + self.stats.records
                    if read != seen:
                        progress_at, seen = time.monotonic(), read
                    elif time.monotonic() - progress_at > stall_timeout_s:
                        raise SinkStalled(self._stall_report(targets))
                for partition, messages in polled.items():
                    for message in messages:
                        buffer = self.buffers.setdefault(partition, _Buffer(message.offset))
                        line = as_line(message.value)
                        buffer.lines.append(line)
                        buffer.size += len(line) + 1
                        if len(buffer.lines) >= self.policy.records or buffer.size >= self.policy.bytes:
                            self._flush(partition, on_flush)
                now = time.monotonic()
                for partition in [p for p, b in self.buffers.items() if b.due(self.policy, now)]:
                    self._flush(partition, on_flush)
                if until_caught_up:
                    assigned = self.consumer.assignment()
                    if not assigned:
                        continue
                    if targets is None or set(targets) != assigned:
                        targets = self.consumer.end_offsets(list(assigned))
                    if all(self.consumer.position(p) >= end for p, end in targets.items()):
                        for partition in list(self.buffers):
                            self._flush(partition, on_flush)
                        return self.stats
            return self.stats
        finally:
            self.consumer.close(autocommit=False)

    def _stall_report(self, targets: dict[TopicPartition, int] | None) -> str:
        assigned = self.consumer.assignment()
        behind = {
            f"{p.topic}/{p.partition}": (self.consumer.position(p), end)
            for p, end in (targets or {}).items()
            if p in assigned and self.consumer.position(p) < end
        }
        return f"sink made no progress: assigned {len(assigned)} partitions, behind (position, end): {behind or 'none'}"

    def _flush(self, partition: TopicPartition, on_flush: Callable[[str, int], None] | None) -> None:
        buffer = self.buffers.pop(partition)
        if not buffer.lines:
            return
        key = object_key(self.prefix, partition.topic, partition.partition, buffer.start)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"\n".join(buffer.lines) + b"\n")
        next_offset = buffer.start + len(buffer.lines)
        self.consumer.commit({partition: OffsetAndMetadata(next_offset, "", -1)})
        self.stats.records += len(buffer.lines)
        self.stats.objects += 1
        if on_flush:
            on_flush(key, len(buffer.lines))
