"""The message bus behind the ingest API: Kafka topics and Kinesis streams.

Kafka is written with an idempotent producer that waits for every in-sync replica (``acks=all``):
librdkafka's (confluent-kafka) by default, kafka-python's with ``PINPIPE_KAFKA_CLIENT=kafka-python``.
A record is reported stored only with the partition and offset Kafka gave it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ingestion.config import Settings


class BusError(RuntimeError):
    """The bus did not acknowledge a record: the caller must not report it as stored."""


class Acknowledgement(NamedTuple):  # one per record: a tuple is the cheapest to make
    partition: int
    offset: int


Record = tuple[bytes, bytes]  # (key, value), encoded


class KafkaBus(Protocol):
    def send(self, topic: str, records: Sequence[Record]) -> list[Acknowledgement]:
        """Produce the records to ``topic``; each one's partition and offset once Kafka acknowledged it."""
        ...

    def healthy(self, topic: str) -> bool: ...

    def close(self) -> None: ...


def kafka_bus(settings: Settings, *, timeout_s: float = 30) -> KafkaBus:
    """The producer of the configured Kafka client."""
    if settings.kafka_client == "kafka-python":
        return KafkaPythonBus(settings.kafka_bootstrap_servers, timeout_s=timeout_s)
    return ConfluentBus(settings.kafka_bootstrap_servers, timeout_s=timeout_s)


@dataclass
class _Deliveries:
    """The delivery reports of one request's records, filled in by librdkafka's callbacks."""

    count: int
    acknowledgements: list[Acknowledgement | None] = field(init=False)
    errors: list[str] = field(default_factory=list)
    remaining: int = field(init=False)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.acknowledgements = [None] * self.count
        self.remaining = self.count
        if not self.count:
            self.done.set()

    def report(self, index: int, error: Any, message: Any) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(str(error))
            else:
                self.acknowledgements[index] = Acknowledgement(message.partition(), message.offset())
            self.remaining -= 1
            if not self.remaining:
                self.done.set()


class ConfluentBus:
    """librdkafka's producer, shared by every request of a process; a background thread serves its
    delivery reports, and each request waits for its own records' reports."""

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 30) -> None:
        self.bootstrap_servers, self.timeout_s = bootstrap_servers, timeout_s
        self._producer: Any = None
        self._connecting = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def _connected(self) -> Any:
        """Connected on first use: an API serving only Kinesis streams needs no broker."""
        from confluent_kafka import Producer

        with self._connecting:
            if self._producer is None:
                self._producer = Producer(
                    {
                        "bootstrap.servers": self.bootstrap_servers,
                        "enable.idempotence": True,  # with acks=all: no duplicate and no reordering on retry
                        "acks": "all",
                        "linger.ms": 5,
                        "batch.size": 1024 * 1024,
                        "batch.num.messages": 100_000,
                        "queue.buffering.max.messages": 1_000_000,
                        "queue.buffering.max.kbytes": 1024 * 1024,
                        "message.timeout.ms": int(self.timeout_s * 1000),
                    },
                    logger=logging.getLogger(
                        "librdkafka"
                    ),  # librdkafka's connection chatter: Python logging, not stderr
                )
                self._poller = threading.Thread(target=self._serve_reports, name="kafka-deliveries", daemon=True)
                self._poller.start()
            return self._producer

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send(self, topic: str, records: Sequence[Record]) -> list[Acknowledgement]:
        from confluent_kafka import KafkaException

        producer = self._connected()
        deliveries = _Deliveries(len(records))
        deadline = time.monotonic() + self.timeout_s
        for index, (key, value) in enumerate(records):
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, on_delivery=lambda e, m, i=index: deliveries.report(i, e, m)
                    )
                    break
                except BufferError:  # the local queue is full: the reports' thread is draining it
                    if time.monotonic() > deadline:
                        raise BusError(f"Kafka's producer queue stayed full for {self.timeout_s:g} s") from None
                    time.sleep(0.001)
                except KafkaException as error:
                    raise BusError(f"Kafka refused a record: {error}") from error
        if not deliveries.done.wait(max(0.0, deadline - time.monotonic())):
            raise BusError(f"Kafka did not acknowledge {deliveries.remaining} of {len(records)} records in time")
        if deliveries.errors:
            raise BusError(f"Kafka did not acknowledge the records: {deliveries.errors[0]}")
        return [a for a in deliveries.acknowledgements if a is not None]

    def healthy(self, topic: str) -> bool:
        """The broker answers metadata for the topic."""
        from confluent_kafka import KafkaException

        try:
            metadata = self._connected().list_topics(topic, timeout=5)
        except KafkaException:
            return False
        found = metadata.topics.get(topic)
        return found is not None and found.error is None and bool(found.partitions)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout_s)
            self._stop.set()


class KafkaPythonBus:
    """kafka-python's producer (pure Python): every send is waited for."""

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 30) -> None:
        self.bootstrap_servers, self.timeout_s = bootstrap_servers, timeout_s
        self._connected: Any = None
        self._connecting = threading.Lock()

    @property
    def _producer(self) -> Any:
        """Connected on first use: an API serving only Kinesis streams needs no broker."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        with self._connecting:
            if self._connected is None:
                try:
                    self._connected = KafkaProducer(
                        bootstrap_servers=self.bootstrap_servers,
                        acks="all",
                        enable_idempotence=True,
                        linger_ms=5,
                        # large batches: kafka-python's per-batch overhead is Python; 1 MiB lifts the rate ~30%
                        batch_size=1 << 20,
                        request_timeout_ms=int(self.timeout_s * 1000),
                        delivery_timeout_ms=int(self.timeout_s * 1000) + 5_000,
                        max_block_ms=int(self.timeout_s * 1000),
                    )
                except KafkaError as error:
                    raise BusError(f"Kafka unavailable at {self.bootstrap_servers}: {error}") from error
            return self._connected

    def send(self, topic: str, records: Sequence[Record]) -> list[Acknowledgement]:
        from kafka.errors import KafkaError

        try:
            futures = [self._producer.send(topic, key=key, value=value) for key, value in records]
            metadata = [future.get(timeout=self.timeout_s) for future in futures]
        except KafkaError as error:
            raise BusError(f"Kafka did not acknowledge the records: {error}") from error
        return [Acknowledgement(m.partition, m.offset) for m in metadata]

    def healthy(self, topic: str) -> bool:
        """The broker answers metadata for the topic."""
        from kafka.errors import KafkaError

        try:
            return bool(self._producer.partitions_for(topic))
        except (KafkaError, BusError):
            return False

    def close(self) -> None:
        if self._connected is not None:
            self._connected.close(timeout=self.timeout_s)


class NoSuchStream(BusError):
    """The Kinesis stream does not exist."""


class StreamRejected(BusError):
    """Kinesis refused the request as invalid (a stream that already exists, a bad shard count...)."""


class KinesisBus:
    """Kinesis streams through boto3. A record is reported stored only with the sequence number
    Kinesis gave it; a batch's per-record failures are passed back for the client to retry."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _call(self, operation: str, **parameters: object) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**parameters)
        except ClientError as error:
            code, message = error.response["Error"].get("Code", ""), error.response["Error"].get("Message", str(error))
            if code == "ResourceNotFoundException":
                raise NoSuchStream(message) from error
            if code in {
                "ResourceInUseException",
                "InvalidArgumentException",
                "ValidationException",
                "LimitExceededException",
            }:
                raise StreamRejected(f"{code}: {message}") from error
            raise BusError(f"Kinesis {operation} failed: {code}: {message}") from error
        except BotoCoreError as error:
            raise BusError(f"Kinesis unavailable: {error}") from error

    def put(self, stream: str, data: bytes, partition_key: str) -> dict[str, Any]:
        answer = self._call("put_record", StreamName=stream, Data=data, PartitionKey=partition_key)
        return {
            "SequenceNumber": answer["SequenceNumber"],
            "ShardId": answer["ShardId"],
            "EncryptionType": answer.get("EncryptionType", "NONE"),
        }

    def put_many(self, stream: str, records: Sequence[tuple[bytes, str]]) -> dict[str, Any]:
        answer = self._call(
            "put_records", StreamName=stream, Records=[{"Data": data, "PartitionKey": key} for data, key in records]
        )
        return {
            "FailedRecordCount": answer["FailedRecordCount"],
            "Records": answer["Records"],
            "EncryptionType": answer.get("EncryptionType", "NONE"),
        }

    def list_streams(self) -> list[str]:
        names, answer = [], self._call("list_streams")
        names += answer["StreamNames"]
        while answer.get("HasMoreStreams"):
            answer = self._call("list_streams", ExclusiveStartStreamName=names[-1])
            names += answer["StreamNames"]
        return names

    def create_stream(self, stream: str, shards: int) -> None:
        self._call("create_stream", StreamName=stream, ShardCount=shards)

    def describe_stream(self, stream: str) -> dict[str, Any]:
        return self._call("describe_stream", StreamName=stream)["StreamDescription"]

    def delete_stream(self, stream: str) -> None:
        self._call("delete_stream", StreamName=stream)

    def healthy(self) -> bool:
        try:
            self._call("list_streams", Limit=1)
        except BusError:
            return False
        return True
