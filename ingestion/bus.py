"""The message bus behind the ingest API: Kafka topics and Kinesis streams.

Kafka is written with a transactional producer (idempotent, ``acks=all``): librdkafka's
(confluent-kafka) by default, kafka-python's with ``PINPIPE_KAFKA_CLIENT=kafka-python``. A record
is reported stored only once the transaction holding it is committed, with the partition and
offset Kafka gave it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Protocol

from ingestion.config import Settings


class BusError(RuntimeError):
    """The bus did not acknowledge a record: the caller must not report it as stored."""


class RecordRefused(BusError):
    """Kafka refused a record for what it is (too large for the topic, say): retrying cannot help.
    ``request`` is the caller's place in a group commit, ``index`` the record's in its request."""

    def __init__(self, request: int, index: int, reason: str) -> None:
        super().__init__(f"record {index}: {reason}")
        self.request, self.index = request, index


class CommitUnknown(BusError):
    """Kafka did not confirm the commit of a transaction it may have committed (the broker went away
    or stalled after the commit was sent): the records may be stored, so a retry could store them
    twice. The producer is dropped; the next one, under the same transactional id, makes the
    coordinator finish or abort the transaction."""


class Acknowledgement(NamedTuple):  # one per record: a tuple is the cheapest to make
    partition: int
    offset: int


Record = tuple[bytes, bytes]  # (key, value), encoded


class KafkaBus(Protocol):
    def send(self, topic: str, records: Sequence[Record]) -> list[Acknowledgement]:
        """Produce the records to ``topic`` all or none; each one's partition and offset once the
        transaction holding them is committed."""
        ...

    def healthy(self, topic: str) -> bool: ...

    def close(self) -> None: ...


def kafka_bus(settings: Settings, *, timeout_s: float = 30) -> KafkaBus:
    """The transactional producer of the configured Kafka client, one per process."""
    producer = KafkaPythonProducer if settings.kafka_client == "kafka-python" else ConfluentProducer
    return TransactionalBus(producer(settings.kafka_bootstrap_servers, timeout_s), timeout_s=timeout_s)


@dataclass
class _Request:
    """One caller's records, waiting for the transaction that holds them to commit or abort."""

    topic: str
    records: Sequence[Record]
    acknowledgements: list[Acknowledgement] = field(default_factory=list)
    error: BusError | None = None
    done: threading.Event = field(default_factory=threading.Event)
    # set under the bus's lock: a request its caller gave up on before the producer took it is
    # never produced, so the caller's "not stored" stays true
    taken: bool = False
    abandoned: bool = False


class Producer(Protocol):
    """A Kafka client's transactional producer, used from one thread."""

    def publish(self, requests: Sequence[_Request]) -> None:
        """Produce every request's records in one transaction and commit it; on failure abort it,
        recreate the producer if it cannot go on, and raise ``BusError`` (``RecordRefused`` when a
        record itself was refused)."""
        ...

    def healthy(self, topic: str) -> bool: ...

    def close(self) -> None: ...


class TransactionalBus:
    """Every request is all or nothing: its records are produced in a Kafka transaction, which the
    sink's ``read_committed`` consumer sees whole or not at all, so a failed request retried by its
    client is stored once. Requests that arrive together share a transaction (group commit: one
    commit round trip for many requests); a thread of their own produces them, and each caller waits
    for its own. When one request's record is refused, the others of its transaction fail with a
    retryable error and none of them is stored."""

    MAX_GROUP_RECORDS = 100_000

    def __init__(self, producer: Producer, *, timeout_s: float = 30) -> None:
        self.producer, self.timeout_s = producer, timeout_s
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._taking = threading.Lock()

    def send(self, topic: str, records: Sequence[Record]) -> list[Acknowledgement]:
        if not records:
            return []
        with self._starting:  # started on first use: an API serving only Kinesis streams needs no broker
            if self._thread is None:
                self._thread = threading.Thread(target=self._commit_groups, name="kafka-transactions", daemon=True)
                self._thread.start()
        request = _Request(topic, records)
        self._queue.put(request)
        waited = self.timeout_s * 3  # acknowledgements, then the commit, then an abort
        if not request.done.wait(waited):
            with self._taking:
                request.abandoned = not request.taken
            if request.abandoned:
                raise BusError(f"Kafka did not take the records in {waited:g} s (not stored)")
            raise CommitUnknown(f"Kafka did not confirm the transaction of the records in {waited:g} s")
        if request.error is not None:
            raise request.error
        return request.acknowledgements

    def _commit_groups(self) -> None:
        while not self._stop.is_set():
            try:
                group = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            size = len(group[0].records)
            while size < self.MAX_GROUP_RECORDS:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                size += len(group[-1].records)
            with self._taking:
                group = [request for request in group if not request.abandoned]
                for request in group:
                    request.taken = True
            if not group:
                continue
            try:
                self.producer.publish(group)
            except RecordRefused as error:
                shared = BusError("Kafka aborted the transaction this request shared with a refused record; retry it")
                for number, request in enumerate(group):
                    request.error = error if number == error.request else shared
            except BusError as error:
                for request in group:
                    request.error = error
            except Exception as error:  # noqa: BLE001 - never leave a caller waiting on this thread
                for request in group:
                    request.error = BusError(f"Kafka producer failed: {error}")
            for request in group:
                request.done.set()

    def healthy(self, topic: str) -> bool:
        return self.producer.healthy(topic)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s)
        self.producer.close()


def _transactional_id() -> str:
    # unique per live process, so a second API process never fences the first; kept for the process's
    # life, so a producer made again after a failure fences the old one and ends its open transaction
    return f"pinpipe-api-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ConfluentProducer:
    """librdkafka's transactional producer (idempotent, ``acks=all``)."""

    ABORT_TIMEOUT_S = 5.0  # an abort that cannot reach the broker is left to the broker's transaction timeout

    def __init__(self, bootstrap_servers: str, timeout_s: float) -> None:
        self.bootstrap_servers, self.timeout_s = bootstrap_servers, timeout_s
        self.transactional_id = _transactional_id()
        self._producer: Any = None
        self._making = threading.Lock()  # the health check may make it too

    def _ready(self, timeout_s: float) -> Any:
        from confluent_kafka import KafkaException, Producer

        with self._making:
            if self._producer is None:
                producer = Producer(
                    {
                        "bootstrap.servers": self.bootstrap_servers,
                        "transactional.id": self.transactional_id,
                        "transaction.timeout.ms": int(self.timeout_s * 1000),
                        "linger.ms": 5,
                        "batch.size": 1024 * 1024,
                        "batch.num.messages": 100_000,
                        "queue.buffering.max.messages": 1_000_000,
                        "queue.buffering.max.kbytes": 1024 * 1024,
                    },
                    logger=logging.getLogger("librdkafka"),  # its connection chatter: Python logging, not stderr
                )
                try:
                    producer.init_transactions(timeout_s)
                except KafkaException as error:
                    raise BusError(f"Kafka unavailable at {self.bootstrap_servers}: {error.args[0].str()}") from None
                self._producer = producer
            return self._producer

    def publish(self, requests: Sequence[_Request]) -> None:
        from confluent_kafka import KafkaError, KafkaException

        producer = self._ready(self.timeout_s)
        refused: list[tuple[int, RecordRefused]] = []  # (size, refusal)

        def acknowledge(request: int, record: int, error: Any, message: Any) -> None:
            if error is None:
                requests[request].acknowledgements[record] = Acknowledgement(message.partition(), message.offset())
            elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                refused.append((len(message), RecordRefused(request, record, error.str())))

        try:
            producer.begin_transaction()
            for r, request in enumerate(requests):
                request.acknowledgements = [Acknowledgement(-1, -1)] * len(request.records)
                for i, (key, value) in enumerate(request.records):
                    report = partial(acknowledge, r, i)
                    try:
                        producer.produce(request.topic, value=value, key=key, on_delivery=report)
                    except BufferError:  # the local queue is full: send what it holds, then once more
                        producer.flush(self.timeout_s)
                        producer.produce(request.topic, value=value, key=key, on_delivery=report)
            unacknowledged = producer.flush(self.timeout_s)  # serves the delivery reports
        except (KafkaException, BufferError) as error:
            self._abort()
            reason = error.args[0].str() if isinstance(error, KafkaException) else "the producer's queue stayed full"
            raise self._refusal(refused) or BusError(f"Kafka did not commit the records: {reason}") from None
        if unacknowledged or refused:
            self._abort()
            raise self._refusal(refused) or BusError(
                f"Kafka did not acknowledge {unacknowledged} records in {self.timeout_s:g} s"
            )
        self._commit(producer)

    @staticmethod
    def _refusal(refused: list[tuple[int, RecordRefused]]) -> RecordRefused | None:
        # a batch too large fails every record in it: the largest is the culprit
        return max(refused, key=lambda found: found[0])[1] if refused else None

    def _commit(self, producer: Any) -> None:
        """Commit the open transaction; a commit that times out may be retried (librdkafka resumes
        it) until the deadline. Past it, or on a fatal error, the outcome is unknown."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                producer.commit_transaction(max(0.1, deadline - time.monotonic()))
                return
            except KafkaException as error:
                kafka_error = error.args[0]
            if kafka_error.txn_requires_abort():  # the coordinator will not commit it
                self._abort()
                raise BusError(f"Kafka did not commit the records: {kafka_error.str()}")
            if not kafka_error.retriable() or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self._producer = None  # the next producer fences this one; the coordinator finishes or aborts its transaction
        raise CommitUnknown(f"Kafka did not confirm the commit of the records: {kafka_error.str()}")

    def _abort(self) -> None:
        """Abort the open transaction, then drop the producer: the next request makes a new one under
        the same transactional id, which fences this one and starts from a clean epoch (a producer
        that saw a refused batch may otherwise fail its next transaction on skipped sequence numbers)."""
        from confluent_kafka import KafkaException

        with contextlib.suppress(KafkaException):
            self._producer.abort_transaction(self.ABORT_TIMEOUT_S)
        self._producer = None

    def healthy(self, topic: str) -> bool:
        """The producer is ready for transactions (made again if it was dropped) and the broker
        answers metadata for the topic, each within 5 s."""
        from confluent_kafka import KafkaException

        try:
            metadata = self._ready(5).list_topics(topic, timeout=5)
        except (KafkaException, BusError):
            return False
        found = metadata.topics.get(topic)
        return found is not None and found.error is None and bool(found.partitions)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout_s)


class KafkaPythonProducer:
    """kafka-python's transactional producer (pure Python)."""

    def __init__(self, bootstrap_servers: str, timeout_s: float) -> None:
        self.bootstrap_servers, self.timeout_s = bootstrap_servers, timeout_s
        self.transactional_id = _transactional_id()
        self._producer: Any = None
        self._making = threading.Lock()  # the health check may make it too

    def _ready(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        with self._making:
            if self._producer is not None:
                return self._producer
            producer = None
            try:
                producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    transactional_id=self.transactional_id,
                    transaction_timeout_ms=int(self.timeout_s * 1000),
                    linger_ms=5,
                    # large batches: kafka-python's per-batch overhead is Python; 1 MiB lifts the rate ~30%
                    batch_size=1 << 20,
                    request_timeout_ms=int(self.timeout_s * 1000),
                    delivery_timeout_ms=int(self.timeout_s * 1000) + 5_000,
                    max_block_ms=int(self.timeout_s * 1000),
                )
                producer.init_transactions()
            except KafkaError as error:
                if producer is not None:
                    producer.close(timeout=0)
                raise BusError(f"Kafka unavailable at {self.bootstrap_servers}: {error}") from error
            self._producer = producer
        return self._producer

    def publish(self, requests: Sequence[_Request]) -> None:
        from kafka.errors import KafkaError, MessageSizeTooLargeError

        producer = self._ready()
        futures: list[list[Any]] = []
        try:
            producer.begin_transaction()
            futures = [
                [producer.send(request.topic, key=key, value=value) for key, value in request.records]
                for request in requests
            ]
            producer.flush(timeout=self.timeout_s)
            for request, sent in zip(requests, futures, strict=True):
                request.acknowledgements = [
                    Acknowledgement(m.partition, m.offset) for m in (f.get(timeout=self.timeout_s) for f in sent)
                ]
        except KafkaError as error:
            self._abort()
            failed = [
                (r, i, f.exception)
                for r, sent in enumerate(futures)
                for i, f in enumerate(sent)
                if f.is_done and isinstance(f.exception, MessageSizeTooLargeError)
            ]
            if failed:  # a batch too large fails every record in it: the largest is the culprit
                number, index, refusal = max(failed, key=lambda found: len(requests[found[0]].records[found[1]][1]))
                raise RecordRefused(number, index, str(refusal)) from None
            raise BusError(f"Kafka did not commit the records: {error}") from None
        self._commit(producer)

    def _commit(self, producer: Any) -> None:
        """Commit the open transaction. kafka-python waits for the coordinator's answer without a
        time limit; a commit it gives up on has an unknown outcome."""
        from kafka.errors import KafkaError

        try:
            producer.commit_transaction()
        except KafkaError as error:
            self._drop()
            raise CommitUnknown(f"Kafka did not confirm the commit of the records: {error}") from None

    def _abort(self) -> None:
        """Abort the open transaction, then drop the producer, as ``ConfluentProducer._abort`` does."""
        from kafka.errors import KafkaError

        with contextlib.suppress(KafkaError):
            self._producer.abort_transaction()
        self._drop()

    def _drop(self) -> None:
        """The next request makes a new producer, which fences this one."""
        self._producer.close(timeout=0)
        self._producer = None

    def healthy(self, topic: str) -> bool:
        """The producer is ready for transactions and the broker answers metadata for the topic."""
        from kafka.errors import KafkaError

        try:
            # its metadata is cached: a broker gone since still has partitions, so reach it too
            host, _, port = self.bootstrap_servers.split(",")[0].rpartition(":")
            socket.create_connection((host, int(port)), timeout=5).close()
            return bool(self._ready().partitions_for(topic))
        except (KafkaError, BusError, OSError):
            return False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self.timeout_s)


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
