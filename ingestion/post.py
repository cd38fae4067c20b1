"""Posting emulated records through the ingest API, like the seeds' user_posting_emulation.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count as forever

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ingestion.emulate import PostBatch, PostSource, batches
from ingestion.schemas import KAFKA_JSON, RAW_TABLES, RawTable


@dataclass(frozen=True)
class PostResult:
    posts: int
    records: int


def _session(retries: int, api_key: str | None) -> requests.Session:
    session = requests.Session()
    # 5xx and lost connections are retried with exponential backoff; 4xx never are
    retry = Retry(total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504), allowed_methods=None,
                  raise_on_status=False)  # fmt: skip
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    session.headers["Content-Type"] = KAFKA_JSON
    if api_key:
        session.headers["X-API-Key"] = api_key
    return session


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
    topics: dict[RawTable, str] | None = None,
    api_key: str | None = None,
    retries: int = 8,
    on_batch: Callable[[PostBatch], None] | None = None,
) -> PostResult:
    """POST posts ``0 .. count - 1`` (or forever when ``count`` is None): each batch of posts is one
    request per topic. Raises on a 4xx or on a 5xx that outlasts the retries."""
    topics = topics or {table: table for table in RAW_TABLES}
    session = _session(retries, api_key)
    limiter = _RateLimiter(rate)

    def send(batch: PostBatch) -> PostBatch:
        limiter.wait(len(batch))
        for table in RAW_TABLES:
            body = {"records": [{"value": value} for value in batch.table(table).to_pylist()]}
            response = session.post(f"{api_url}/topics/{topics[table]}", json=body, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"POST /topics/{topics[table]} answered {response.status_code}: {response.text}")
        return batch

    def stream() -> Iterator[PostBatch]:
        if count is not None:
            yield from batches(source, count, batch_size=batch_size)
        else:
            for start in forever(0, batch_size):
                yield source.batch(start, batch_size)

    posted = 0

    def collect(future: Future) -> None:
        nonlocal posted
        done = future.result()
        posted += len(done)
        if on_batch:
            on_batch(done)

    with ThreadPoolExecutor(concurrency) as pool:
        pending: deque[Future] = deque()
        for batch in stream():
            pending.append(pool.submit(send, batch))
            if len(pending) >= 2 * concurrency:  # bounded read-ahead: constant memory, even forever
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    return PostResult(posted, posted * len(RAW_TABLES))
