"""The posting client against a stand-in API (a local HTTP server answering like the REST Proxy):
what it sends, request by request. The real API and Kafka are in test_batch_path.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from ingestion.post import ApiRejected, KinesisStreams, post_batches
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, list[dict]]]  # (path, record values), set per server

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        values = [record["value"] for record in body["records"]]
        self.received.append((self.path, values))
        answer = orjson.dumps({"offsets": [{"partition": 0, "offset": n} for n in range(len(values))]})
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.kafka.v2+json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, list[tuple[str, list[dict]]]]]:
    received: list[tuple[str, list[dict]]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_every_post_is_sent_once_a_request_per_table_and_batch(api: tuple[str, list]) -> None:
    """Posts are made 5,000 at a time but sent ``batch_size`` a request: 12,345 posts in batches of
    500 are 25 requests per table (24 of 500, one of 345), and each record is sent once, to its topic."""
    url, received = api
    source = make_source("synthetic", 11)
    result = post_batches(url, source, 12_345, batch_size=500, concurrency=3)
    assert (result.posts, result.records) == (12_345, 3 * 12_345)
    posts = list(source.batch(0, 12_345).records())
    for table in RAW_TABLES:
        requests = [values for path, values in received if path == f"/topics/{table}"]
        assert Counter(len(values) for values in requests) == {500: 24, 345: 1}, table
        sent = Counter(orjson.dumps(value) for values in requests for value in values)
        assert sent == Counter(orjson.dumps(post[table]) for post in posts), table


def test_the_environments_proxy_is_used(api: tuple[str, list], monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads the proxy settings once, at its start, instead of on every request."""
    proxy, received = api
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    post_batches("http://api.invalid:9", make_source("synthetic", 11), 10, batch_size=10)
    assert sorted(path for path, _ in received) == [
        f"http://api.invalid:9/topics/{table}" for table in sorted(RAW_TABLES)
    ]


class _ThrottlingClient:
    """Answers PutRecords like Kinesis with a throttled shard: the records named in ``refused`` fail
    the first ``times`` times they are sent."""

    def __init__(self, refused: set[int], times: int) -> None:
        self.refused, self.times, self.sent = refused, times, Counter[int]()
        self.requests: list[list[int]] = []

    def call(self, method: str, path: str, body: dict, content_type: str) -> dict:
        keys = [record["Data"]["ind"] for record in body["Records"]]
        self.requests.append(keys)
        self.sent.update(keys)
        failed = [key in self.refused and self.sent[key] <= self.times for key in keys]
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException"} if f else {"SequenceNumber": "1"} for f in failed
        ]
        return {"FailedRecordCount": sum(failed), "Records": results}


def test_records_a_throttled_shard_refused_are_sent_again_alone_until_taken() -> None:
    client = _ThrottlingClient(refused={3, 7}, times=2)
    KinesisStreams({"geo": "s-geo"}).send(client, "geo", [{"ind": key} for key in range(10)])  # type: ignore[arg-type]
    assert client.requests == [list(range(10)), [3, 7], [3, 7]]
    assert client.sent == Counter({key: 3 if key in (3, 7) else 1 for key in range(10)})


def test_records_still_refused_after_the_retries_end_the_post_with_a_message() -> None:
    client = _ThrottlingClient(refused={5}, times=100)
    with pytest.raises(ApiRejected, match="1 records still failed on s-geo after 2 retries"):
        KinesisStreams({"geo": "s-geo"}, retries=2).send(client, "geo", [{"ind": k} for k in range(8)])  # type: ignore[arg-type]
    assert client.sent[5] == 3


def test_a_client_gives_up_on_an_api_that_never_answers_when_it_said_it_would() -> None:
    """An API that holds a request (as one waiting on a broker that is away) is waited for until the
    client gives up, not for the whole 60 s an answer may take."""
    answer = threading.Event()

    class Silent(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            answer.wait(60)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(ApiRejected, match="gave up after 1 s"):
            post_batches(
                f"http://127.0.0.1:{server.server_address[1]}", make_source("synthetic", 1), 1, give_up_after=1
            )
        assert time.monotonic() - started < 30  # its word kept: not the 60 s of one unanswered request
    finally:
        answer.set()
        server.shutdown()
