"""Running the ingest API in the background of another process (the full-stack run, tests, benchmarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
import uvicorn

from ingestion.api import create_app
from ingestion.api.slow_clients import header_deadline
from ingestion.config import Settings


@contextmanager
def api_server(settings: Settings, *, timeout: float = 30, health: str = "/healthz") -> Iterator[str]:
    """Serve the API on 127.0.0.1:<api_port> in a thread; yields its base URL once ``health`` (Kafka's
    by default, ``/healthz/streams`` for Kinesis) answers, stops it on exit."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.api_port,
            http=header_deadline(settings),
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="pinpipe-api", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start on {url}")
        time.sleep(0.05)
    # health is watched in the background: the first answers may say it is not known yet
    while requests.get(f"{url}{health}", timeout=timeout).status_code != 200:
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"{url}{health} did not answer 200 in {timeout:g} s")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout)


def metrics_of(url: str, settings: Settings) -> bytes:
    """The metrics the API at ``url`` serves (in Prometheus' text format)."""
    headers = {"X-API-Key": settings.api_key.get_secret_value()} if settings.api_key else {}
    answer = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    answer.raise_for_status()
    return answer.content
