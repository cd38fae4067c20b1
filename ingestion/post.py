"""Posting emulated records through the ingest API, like the seeds' user_posting_emulation.py:
to Kafka topics (``POST /topics/{topic}``) or to Kinesis streams (``PUT /streams/{stream}/records``)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count as forever
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from ingestion.emulate import PostBatch, PostSource, batches
from ingestion.schemas import IDEMPOTENCY_KEY, KAFKA_JSON, KEY_FIELD, RAW_TABLES, RawTable


@dataclass(frozen=True)
class PostResult:
    posts: int
    records: int


class ApiRejected(RuntimeError):
    """The API refused a request (4xx), or kept failing (5xx, no answer) until the client gave up."""


class _Throttled(Exception):
    """Records Kinesis could not take this time (a throttled shard): sent again, with backoff."""


class _Transient(Exception):
    """A 5xx or no answer: worth sending again, the API being all or nothing per request."""


@dataclass(frozen=True)
class Client:
    """Requests to the API: 5xx answers and lost connections are sent again with exponential
    backoff until ``give_up_after`` seconds have passed since the first try; 4xx never are."""

    api_url: str
    api_key: str | None = None
    give_up_after: float = 120.0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.mount("http://", HTTPAdapter(pool_maxsize=32))
        # the environment's proxies and CA bundle read once, not on every request (with a look for
        # ~/.netrc each time: a third of the client's cost of a request); the API's key is a header
        from_environment = self.session.merge_environment_settings(self.api_url, {}, None, None, None)
        self.session.proxies, self.session.verify = from_environment["proxies"], from_environment["verify"]
        self.session.trust_env = False
        if self.api_key:
            self.session.headers["X-API-Key"] = self.api_key

    def call(self, method: str, path: str, body: object, content_type: str) -> Any:
        data = orjson.dumps(body)
        retrying = Retrying(
            stop=stop_after_delay(self.give_up_after),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        # one key per request, the same on each of its retries: the API answers a retry of a request
        # it already stored with the first answer instead of storing it again
        key = uuid.uuid4().hex
        give_up_at = time.monotonic() + self.give_up_after
        try:
            return retrying(self._once, method, path, data, content_type, key, give_up_at)
        except _Transient as error:
            raise ApiRejected(f"{method} {path}: gave up after {self.give_up_after:g} s: {error}") from None

    def _once(self, method: str, path: str, data: bytes, content_type: str, key: str, give_up_at: float) -> Any:
        headers = {"Content-Type": content_type, IDEMPOTENCY_KEY: key}
        # an answer is waited for 60 s at most, and never past the moment the client gives up
        waited = min(60.0, max(0.5, give_up_at - time.monotonic()))
        try:
            response = self.session.request(
                method, f"{self.api_url}{path}", data=data, headers=headers, timeout=(min(5.0, waited), waited)
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise _Transient(f"no answer from {self.api_url}: {type(error).__name__}") from None
        if response.status_code >= 500 or _under_way(response):
            raise _Transient(f"answered {response.status_code}: {response.text[:300]}")
        if response.status_code != 200:
            raise ApiRejected(f"{method} {path} answered {response.status_code}: {response.text}")
        return orjson.loads(response.content)


def _under_way(response: requests.Response) -> bool:
    """The API's 409 for a request whose first attempt is still being stored (``UNDER_WAY``)."""
    try:
        return response.status_code == 409 and response.json().get("error_code") == 40901
    except ValueError:
        return False


JSON = "application/json"


@dataclass(frozen=True)
class KafkaTopics:
    """Each raw table's records as one REST Proxy request to its topic."""

    names: dict[RawTable, str]

    def send(self, client: Client, table: RawTable, values: list[dict[str, Any]]) -> None:
        client.call("POST", f"/topics/{self.names[table]}", {"records": [{"value": v} for v in values]}, KAFKA_JSON)


@dataclass(frozen=True)
class KinesisStreams:
    """Each raw table's records as PutRecords batches (at most 500) to its stream, partitioned by the
    post's key; records Kinesis could not take (throttled shards) are sent again with backoff."""

    names: dict[RawTable, str]
    retries: int = 8

    def send(self, client: Client, table: RawTable, values: list[dict[str, Any]]) -> None:
        stream = self.names[table]
        for first in range(0, len(values), 500):
            records = [
                {"Data": value, "PartitionKey": str(value[KEY_FIELD[table]])} for value in values[first : first + 500]
            ]
            try:
                Retrying(
                    stop=stop_after_attempt(self.retries + 1),
                    wait=wait_exponential(multiplier=0.1),
                    retry=retry_if_exception_type(_Throttled),
                    reraise=True,
                )(self._put, client, stream, records)
            except _Throttled as throttled:
                raise ApiRejected(
                    f"{throttled} records still failed on {stream} after {self.retries} retries"
                ) from None

    @staticmethod
    def _put(client: Client, stream: str, pending: list[dict[str, Any]]) -> None:
        """One PutRecords; the records it could not take stay in ``pending`` for the next try."""
        answer = client.call("PUT", f"/streams/{stream}/records", {"StreamName": stream, "Records": pending}, JSON)
        if answer["FailedRecordCount"]:
            results = zip(pending, answer["Records"], strict=True)
            pending[:] = [record for record, result in results if "ErrorCode" in result]
            raise _Throttled(len(pending))


Destination = KafkaTopics | KinesisStreams

MADE_AT_ONCE = 5_000  # posts the client makes in one batch, then sends a request's worth at a time


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
    give_up_after: float = 120.0,
    on_batch: Callable[[PostBatch], None] | None = None,
) -> PostResult:
    """Send posts ``0 .. count - 1`` (or forever when ``count`` is None) to ``destination`` (default:
    the Kafka topics pin, geo, user): each batch of posts is one request per table. Raises
    ``ApiRejected`` on a 4xx, or when 5xx answers or silence outlast ``give_up_after`` seconds."""
    destination = destination or KafkaTopics({table: table for table in RAW_TABLES})
    client = Client(api_url, api_key, give_up_after)
    limiter = _RateLimiter(rate)

    def send(batch: PostBatch) -> PostBatch:
        limiter.wait(len(batch))
        for table in RAW_TABLES:
            destination.send(client, table, batch.table(table).to_pylist())
        return batch

    # posts are made some requests at a time, then sent a request's worth each: making them costs
    # less per post in larger batches (17 µs a synthetic post 500 at a time, 10 µs 5,000 at a time)
    made_at_once = batch_size * max(1, MADE_AT_ONCE // batch_size)

    def stream() -> Iterator[PostBatch]:
        if count is not None:
            made: Iterator[PostBatch] = batches(source, count, batch_size=made_at_once)
        else:
            made = (source.batch(start, made_at_once) for start in forever(0, made_at_once))
        for posts in made:
            yield from posts.split(batch_size)

    posted = 0

    def collect(future: Future[PostBatch]) -> None:
        nonlocal posted
        done = future.result()
        posted += len(done)
        if on_batch:
            on_batch(done)

    pool = ThreadPoolExecutor(concurrency)
    try:
        pending: deque[Future[PostBatch]] = deque()
        for batch in stream():
            pending.append(pool.submit(send, batch))
            if len(pending) >= 2 * concurrency:  # bounded read-ahead: constant memory, even forever
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    except BaseException:
        # Ctrl-C or a refusal: the requests under way finish, the queued ones are never sent
        pool.shutdown(cancel_futures=True)
        raise
    pool.shutdown()
    return PostResult(posted, posted * len(RAW_TABLES))
