"""The posting client against a stand-in API (a local HTTP server answering like the REST Proxy):
what it sends, request by request. The real API and Kafka are in test_batch_path.py."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from ingestion.post import post_batches
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
