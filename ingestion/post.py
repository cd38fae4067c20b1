"""Posting emulated records through the ingest API, like the seeds' user_posting_emulation.py:
to Kafka topics (``POST /topics/{topic}``) or to Kinesis streams (``PUT /streams/{stream}/records``)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count as forever
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ingestion.emulate import PostBatch, PostSource, batches
from ingestion.schemas import KAFKA_JSON, KEY_FIELD, RAW_TABLES, RawTable


@dataclass(frozen=True)
class PostResult:
    posts: int
    records: int


def _session(retries: int, api_key: str | None) -> requests.Session:
    session = requests.Session()
    # 5xx and lost connections are retried with exponential backoff; 4xx never are
    retry = Retry(
        total=retries,
        backoff_factor=0.2,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=None,
        raise_on_status=False,
    )
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    if api_key:
        session.headers["X-API-Key"] = api_key
    return session


class ApiRejected(RuntimeError):
    """The API refused a request (4xx) or kept failing after the retries."""


def _checked(response: requests.Response) -> Any:
    if response.status_code != 200:
        raise ApiRejected(
            f"{response.request.method} {response.request.path_url} answered {response.status_code}: {response.text}"
        )
    return response.json()


@dataclass(frozen=True)
class KafkaTopics:
    """Each raw table's records as one REST Proxy request to its topic."""

    names: dict[RawTable, str]

    def send(self, session: requests.Session, api_url: str, table: RawTable, values: list[dict[str, Any]]) -> None:
        body: dict[str, Any] = {"records": [{"value": value} for value in values]}
        _checked(
            session.post(
                f"{api_url}/topics/{self.names[table]}",
                data=orjson.dumps(body),
                headers={"Content-Type": KAFKA_JSON},
                timeout=60,
            )
        )


@dataclass(frozen=True)
class KinesisStreams:
    """Each raw table's records as PutRecords batches (at most 500) to its stream, partitioned by the
    post's key; records Kinesis could not take (throttled shards) are sent again with backoff."""

    names: dict[RawTable, str]
    retries: int = 8

    def send(self, session: requests.Session, api_url: str, table: RawTable, values: list[dict[str, Any]]) -> None:
        stream = self.names[table]
        for first in range(0, len(values), 500):
            pending: list[dict[str, Any]] = [
                {"Data": value, "PartitionKey": str(value[KEY_FIELD[table]])} for value in values[first : first + 500]
            ]
            for attempt in range(self.retries + 1):
                answer = _checked(
                    session.put(
                        f"{api_url}/streams/{stream}/records",
                        data=orjson.dumps({"StreamName": stream, "Records": pending}),
                        headers={"Content-Type": "application/json"},
                        timeout=60,
                    )
                )
                if not answer["FailedRecordCount"]:
                    break
                pending = [
                    record for record, result in zip(pending, answer["Records"], strict=True) if "ErrorCode" in result
                ]
                if attempt == self.retries:
                    raise ApiRejected(f"{len(pending)} records still failed on {stream} after {self.retries} retries")
                time.sleep(0.1 * 2**attempt)


Destination = KafkaTopics | KinesisStreams


class _RateLimiter:
    """At most ``per_second`` posts per second across threads (None: as fast as the API answers)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1 / per_second if per_second else 0.0
        self.next_at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, posts: int) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(self.next_at, now)
            self.next_at = start + posts * self.interval
        time.sleep(max(0.0, start - now))


def post_batches(
    api_url: str,
    source: PostSource,
    count: int | None,
    *,
    batch_size: int = 500,
    concurrency: int = 4,
    rate: float | None = None,
    destination: Destination | None = None,
    api_key: str | None = None,
    retries: int = 8,
    on_batch: Callable[[PostBatch], None] | None = None,
) -> PostResult:
    """Send posts ``0 .. count - 1`` (or forever when ``count`` is None) to ``destination`` (default:
    the Kafka topics pin, geo, user): each batch of posts is one request per table. Raises on a 4xx
    or on a 5xx that outlasts the retries."""
    destination = destination or KafkaTopics({table: table for table in RAW_TABLES})
    session = _session(retries, api_key)
    limiter = _RateLimiter(rate)

    def send(batch: PostBatch) -> PostBatch:
        limiter.wait(len(batch))
        for table in RAW_TABLES:
            destination.send(session, api_url, table, batch.table(table).to_pylist())
        return batch

    def stream() -> Iterator[PostBatch]:
        if count is not None:
            yield from batches(source, count, batch_size=batch_size)
        else:
            for start in forever(0, batch_size):
                yield source.batch(start, batch_size)

    posted = 0

    def collect(future: Future[PostBatch]) -> None:
        nonlocal posted
        done = future.result()
        posted += len(done)
        if on_batch:
            on_batch(done)

    with ThreadPoolExecutor(concurrency) as pool:
        pending: deque[Future[PostBatch]] = deque()
        for batch in stream():
            pending.append(pool.submit(send, batch))
            if len(pending) >= 2 * concurrency:  # bounded read-ahead: constant memory, even forever
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    return PostResult(posted, posted * len(RAW_TABLES))
