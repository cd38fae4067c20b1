"""Retries that never produce twice (`ingestion/api/idempotency.py`): a request's Idempotency-Key
makes its retries get the first answer, from any worker process and after a restart of the API;
the key of another request is refused. The bus here counts sends (unit tests); the failpoint test
on the real Kafka is in test_reliability.py."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ingestion.api.app import create_app
from ingestion.api.idempotency import IdempotencyStore
from ingestion.bus import Acknowledgement, BusError, CommitUnknown, Record, TransactionalBus
from ingestion.config import Settings
from ingestion.post_sources import make_source
from ingestion.schemas import IDEMPOTENCY_KEY

from helpers import eventually


class CountingBus:
    """A Kafka bus acknowledging every record at the next offset, counting what it was sent; it
    fails the requests it is told to."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.failing = 0
        self.unconfirmed = 0  # sends stored without a confirmation

    def send(self, topic: str, records: Sequence[Record]) -> list[Acknowledgement]:
        if self.failing:
            self.failing -= 1
            raise BusError("Kafka did not commit the records in 30 s")
        if self.unconfirmed:
            self.unconfirmed -= 1
            self.sent.append(len(records))
            raise CommitUnknown("Kafka did not confirm the commit of the records: timed out")
        first = sum(self.sent)
        self.sent.append(len(records))
        return [Acknowledgement(0, first + i) for i in range(len(records))]

    def healthy(self, topic: str) -> bool:
        return True

    def close(self) -> None:
        pass


def _client(settings: Settings, bus: CountingBus) -> TestClient:
    return TestClient(create_app(settings, bus=bus))


def test_a_retry_with_the_same_key_gets_the_first_answer_from_any_worker_and_after_a_restart(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    pins = make_source("synthetic", 3).batch(0, 5).pin.to_pylist()
    body = {"records": [{"value": pin} for pin in pins]}
    bus = CountingBus()
    with _client(settings, bus) as first_worker, _client(settings, bus) as second_worker:
        sent = first_worker.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k1"})
        assert sent.status_code == 200
        again = second_worker.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k1"})
        assert again.json() == sent.json()
        assert bus.sent == [5]
        # the key of another request: refused, nothing sent
        other = first_worker.post("/topics/pin", json={"records": body["records"][:2]}, headers={IDEMPOTENCY_KEY: "k1"})
        assert other.status_code == 422
        assert "was sent with another request" in other.json()["message"]
        # no key, no memory: sent again
        assert first_worker.post("/topics/pin", json=body).status_code == 200
        assert bus.sent == [5, 5]
        # a request the bus failed is not remembered: its retry is sent
        bus.failing = 1
        assert first_worker.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k2"}).status_code == 503
        assert first_worker.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k2"}).status_code == 200
        assert bus.sent == [5, 5, 5]
    with _client(settings, bus) as restarted:  # the API started again: the keys are still known
        assert restarted.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k1"}).json() == sent.json()
    assert bus.sent == [5, 5, 5]


def test_a_request_whose_commit_kafka_did_not_confirm_is_refused_when_retried_with_its_key(tmp_path: Path) -> None:
    pins = make_source("synthetic", 3).batch(0, 5).pin.to_pylist()
    body = {"records": [{"value": pin} for pin in pins]}
    bus = CountingBus()
    bus.unconfirmed = 1
    with _client(Settings(state_dir=tmp_path), bus) as api:
        unconfirmed = api.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k1"})
        assert (unconfirmed.status_code, unconfirmed.json()["error_code"]) == (504, 50401)
        assert "may be stored" in unconfirmed.json()["message"]
        retried = api.post("/topics/pin", json=body, headers={IDEMPOTENCY_KEY: "k1"})
        assert (retried.status_code, retried.json()["error_code"]) == (409, 40902)
        assert "Kafka did not confirm its commit" in retried.json()["message"]
    assert bus.sent == [5]


def test_keys_are_forgotten_after_their_time_and_beyond_the_newest(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "keys.sqlite3", hours=24, keys=3)
    for number in range(1_000):  # the store prunes every thousand claims
        assert store.claim(f"key-{number}", b"request") is None
    remembered = IdempotencyStore(tmp_path / "keys.sqlite3", hours=24, keys=3)
    kept = [number for number in range(1_000) if _known(remembered, f"key-{number}")]
    assert kept == [997, 998, 999]
    expired = IdempotencyStore(tmp_path / "keys.sqlite3", hours=0.000_001, keys=3)
    assert not _known(expired, "key-999")


def _known(store: IdempotencyStore, key: str) -> bool:
    """``key`` is held (a claim of it by another request is refused)."""
    try:
        return store.claim(key, b"another request") is not None
    except Exception:  # noqa: BLE001 - refused: the key is known
        return True


class StalledProducer:
    """A transactional producer that takes its first group and never finishes it, as one stuck on a
    broker that stalled; it records every group it is given."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = threading.Event()

    def publish(self, requests: Sequence[Any]) -> None:
        self.groups.append([len(request.records) for request in requests])
        self.release.wait(30)
        raise BusError("stalled")

    def healthy(self, topic: str) -> bool:
        return True

    def close(self) -> None:
        self.release.set()


def test_a_caller_that_gives_up_learns_whether_its_records_may_be_stored() -> None:
    """Given up while its transaction is under way: the outcome is unknown. Given up while still
    queued behind it: not stored, and the producer never takes it afterwards."""
    producer = StalledProducer()
    bus = TransactionalBus(producer, timeout_s=0.3)
    outcomes: dict[str, BaseException] = {}

    def send(name: str, size: int) -> None:
        try:
            bus.send("pin", [(b"k", b"{}")] * size)
        except BusError as error:
            outcomes[name] = error

    under_way = threading.Thread(target=send, args=("under way", 1))
    under_way.start()
    assert eventually(lambda: producer.groups == [[1]], 5)
    send("queued", 2)
    under_way.join(5)
    producer.release.set()
    bus.close()
    assert isinstance(outcomes["under way"], CommitUnknown)
    assert type(outcomes["queued"]) is BusError
    assert "not stored" in str(outcomes["queued"])
    assert producer.groups == [[1]]
