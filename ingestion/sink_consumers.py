"""The sink's Kafka consumers: what the sink needs of one (``Consumer``) and its two
implementations, librdkafka's (confluent-kafka) and kafka-python's. Both read only committed
records and commit offsets only when told, after the sink stored them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from ingestion import clients
from ingestion.errors import ServiceDown

_log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)


class Message(NamedTuple):  # a tuple: made once per record, where a dataclass costs 3x more
    partition: Partition
    offset: int
    value: bytes | None


class Rebalance(Protocol):
    def revoked(self, partitions: list[Partition]) -> None: ...

    def assigned(self, partitions: list[Partition]) -> None: ...


class Consumer(Protocol):
    """What the sink needs of a Kafka consumer client, whichever library implements it."""

    def poll(self, max_records: int, timeout_s: float) -> list[Message]: ...

    def commit(self, partition: Partition, next_offset: int) -> None: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    def assignment(self) -> set[Partition]: ...

    def read_to(self, partition: Partition) -> int:
        """The offset the consumer has read up to (commit markers and aborted records included)."""
        ...

    def end_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]: ...

    def committed(self, partition: Partition) -> int:
        """The group's committed offset of the partition, or its first offset when none is."""
        ...

    def close(self) -> None: ...


class ConfluentConsumer:
    """librdkafka's consumer: cooperative rebalancing (only the partitions that move are revoked),
    manual commits, committed records only."""

    def __init__(self, bootstrap_servers: str, group_id: str, topics: list[str], rebalance: Rebalance) -> None:
        from confluent_kafka import Consumer as Client
        from confluent_kafka import KafkaException

        self._consumer = Client(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                # a crashed member's partitions move to the others after 10 s instead of 45 s
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 3_000,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                "topic.metadata.refresh.interval.ms": 5_000,
                # an end-of-partition event says how far a partition was read, commit markers included
                "enable.partition.eof": True,
            },
            logger=logging.getLogger("librdkafka"),  # its connection chatter: Python logging, not stderr
        )
        self._ends: dict[Partition, int] = {}
        try:  # a broker that does not answer fails here, not silently later
            self._consumer.list_topics(timeout=10)
        except KafkaException as error:
            self._consumer.close()
            raise clients.kafka_unanswered(bootstrap_servers, error.args[0].name()) from error
        self._rebalance = rebalance
        self._consumer.subscribe(
            topics,
            on_assign=lambda _, partitions: rebalance.assigned([(p.topic, p.partition) for p in partitions]),
            on_revoke=lambda _, partitions: rebalance.revoked([(p.topic, p.partition) for p in partitions]),
            on_lost=lambda _, partitions: rebalance.revoked([(p.topic, p.partition) for p in partitions]),
        )

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        from confluent_kafka import KafkaError

        found = []
        for message in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            partition, offset, error = (
                (str(message.topic()), int(message.partition() or 0)),
                message.offset(),
                message.error(),
            )
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._ends[partition] = int(offset or 0)
                    continue
                if error.retriable() or not error.fatal():
                    continue  # librdkafka retries by itself (a broker restarting, a leader moving)
                raise ServiceDown(f"Kafka consumer failed: {error.str()}")
            found.append(Message(partition, int(offset or 0), message.value()))
        return found

    def commit(self, partition: Partition, next_offset: int) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.commit(offsets=[TopicPartition(*partition, next_offset)], asynchronous=False)

    def seek(self, partition: Partition, offset: int) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.seek(TopicPartition(*partition, offset))

    def assignment(self) -> set[Partition]:
        return {(p.topic, p.partition) for p in self._consumer.assignment()}

    def read_to(self, partition: Partition) -> int:
        from confluent_kafka import TopicPartition

        (found,) = self._consumer.position([TopicPartition(*partition)])
        return max(int(found.offset), self._ends.get(partition, -1))

    def end_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        from confluent_kafka import TopicPartition

        # the last stable offset: a read_committed consumer stops before open transactions
        return {p: int(self._consumer.get_watermark_offsets(TopicPartition(*p), timeout=10)[1]) for p in partitions}

    def committed(self, partition: Partition) -> int:
        from confluent_kafka import TopicPartition

        (found,) = self._consumer.committed([TopicPartition(*partition)], timeout=10)
        if found.offset >= 0:
            return int(found.offset)
        return int(self._consumer.get_watermark_offsets(TopicPartition(*partition), timeout=10)[0])

    def close(self) -> None:
        self._consumer.close()


class KafkaPythonConsumer:
    """kafka-python's consumer (pure Python). Its rebalance listener runs on the network thread,
    where a blocking commit raises: revoked partitions are dropped and rewound instead of flushed.

    kafka-python 3.0.12 was seen stuck in a rebalance for good: a group leader's second join
    (right after its first assignment) never completed, with no error logged and no partitions, so
    the sink stored nothing. A member still rebalancing after ``STUCK_REBALANCE_S``, longer than
    the broker waits for any member to rejoin, is replaced by a new one; it holds no partitions,
    so no buffered record is at stake."""

    STUCK_REBALANCE_S = 90.0

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topics: list[str],
        rebalance: Rebalance,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kafka import TopicPartition

        self._partition = TopicPartition
        self._servers, self._group, self._topics, self._rebalance = bootstrap_servers, group_id, topics, rebalance
        self._clock = clock
        self._rebalancing_since: float | None = None
        self._consumer = self._member()

    def _member(self) -> Any:
        """A new member of the group, subscribed to the topics."""
        from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        rebalance = self._rebalance

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no type information
            def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                rebalance.revoked([(p.topic, p.partition) for p in revoked])

            def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                rebalance.assigned([(p.topic, p.partition) for p in assigned])

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self._servers,
                group_id=self._group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=10_000,
                # 30 s, not librdkafka's 10: this client's heartbeats come from a Python thread, which
                # a loaded machine can hold back past 10 s; a member dropped by its group that way was
                # seen to fetch nothing more (position 0 for minutes, UnknownMemberId on leaving)
                session_timeout_ms=30_000,
                heartbeat_interval_ms=3_000,
                # the rebalance timeout too: how long a rebalance waits for a member to rejoin (the
                # sink polls every fraction of a second; a flush takes seconds)
                max_poll_interval_ms=60_000,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=16 * 1024 * 1024,
                # a group leader that joined before it had the topics' metadata assigns nothing, and
                # only notices the partitions at its next metadata refresh: keep that one short
                metadata_max_age_ms=5_000,
            )
        except KafkaError as error:
            raise clients.kafka_unanswered(self._servers, type(error).__name__) from error
        for topic in self._topics:  # and fetch the metadata before joining, so the first assignment has it
            consumer.partitions_for_topic(topic)
        consumer.subscribe(self._topics, listener=Listener())
        return consumer

    def _replace_if_stuck(self) -> None:
        # the member's state is private: kafka-python has no public "rebalancing" flag
        if not self._consumer._coordinator.rebalance_in_progress():
            self._rebalancing_since = None
            return
        now = self._clock()
        if self._rebalancing_since is None:
            self._rebalancing_since = now
        elif now - self._rebalancing_since > self.STUCK_REBALANCE_S:
            _log.warning(
                "kafka-python's consumer has been rebalancing for %.0f s without partitions: it is replaced by"
                " a new member of group %s",
                now - self._rebalancing_since,
                self._group,
            )
            self._consumer.close(autocommit=False)
            self._consumer = self._member()
            self._rebalancing_since = None

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        self._replace_if_stuck()
        return [
            Message((partition.topic, partition.partition), message.offset, message.value)
            for partition, messages in polled.items()
            for message in messages
        ]

    def commit(self, partition: Partition, next_offset: int) -> None:
        from kafka.structs import OffsetAndMetadata

        self._consumer.commit({self._partition(*partition): OffsetAndMetadata(next_offset, "", -1)})

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(self._partition(*partition), offset)

    def assignment(self) -> set[Partition]:
        return {(p.topic, p.partition) for p in self._consumer.assignment()}

    def read_to(self, partition: Partition) -> int:
        return int(self._consumer.position(self._partition(*partition)))

    def committed(self, partition: Partition) -> int:
        topic_partition = self._partition(*partition)
        found = self._consumer.committed(topic_partition)
        return (
            int(found)
            if found is not None
            else int(self._consumer.beginning_offsets([topic_partition])[topic_partition])
        )

    def end_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        ends = self._consumer.end_offsets([self._partition(*p) for p in partitions])
        return {(p.topic, p.partition): int(end) for p, end in ends.items()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)
