"""`pinpipe api` as a process: its health answers at once in every state (the broker's state is
watched in the background), two APIs on one state dir keep their metrics apart, and slow clients
are cut off at the header and body timeouts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests

from ingestion.services import free_port

from helpers import answers, eventually

PINPIPE = str(Path(sys.executable).parent / "pinpipe")

# API processes and hundreds of connections: the full suite's, not the quick loop's
pytestmark = pytest.mark.slow


@contextmanager
def _api(state_dir: Path, log: Path, **settings: str) -> Iterator[str]:
    """`pinpipe api` with no Kafka broker: it serves, and says the broker is away."""
    port = free_port()
    env = {**os.environ, "PINPIPE_STATE_DIR": str(state_dir), "PINPIPE_KAFKA_PORT": str(free_port()), **settings}
    with log.open("wb") as output:
        api = subprocess.Popen([PINPIPE, "api", "--port", str(port)], env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        assert eventually(lambda: answers(f"{url}/docs"), 60), log.read_text()
        yield url
    finally:
        api.terminate()
        api.wait(timeout=30)


def _healthz_requests(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('pinpipe_api_requests_total{route="/healthz"')
    )


def test_health_answers_within_a_second_with_the_broker_away_and_two_apis_keep_their_metrics_apart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with _api(state, tmp_path / "first.log") as first:
        for _ in range(10):  # each answer within 1 s, or requests raises: a 503, never a timeout
            started = time.monotonic()
            answer = requests.get(f"{first}/healthz", timeout=1)
            assert answer.status_code == 503, answer.text
            assert answer.json()["status"].startswith("kafka "), answer.text
            time.sleep(max(0.0, 0.3 - (time.monotonic() - started)))
        before = _healthz_requests(requests.get(f"{first}/metrics", timeout=5).text)
        assert before >= 10
        with _api(state, tmp_path / "second.log") as second:
            requests.get(f"{second}/healthz", timeout=1)
            # the second API's start leaves the first one's metrics where they were
            assert _healthz_requests(requests.get(f"{first}/metrics", timeout=5).text) >= before
            assert _healthz_requests(requests.get(f"{second}/metrics", timeout=5).text) == 1
    assert list((state / "api-metrics").iterdir()) == []  # each removed its own on the way out


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=5)
    connection.setblocking(False)
    return connection


def _answer(connection: socket.socket) -> bytes | None:
    """What the server sent, b"" once it closed, None while it says nothing."""
    try:
        return connection.recv(4096)
    except BlockingIOError:
        return None
    except ConnectionError:
        return b""


def test_slow_clients_are_cut_off_at_the_header_and_body_timeouts_while_others_are_served(tmp_path: Path) -> None:
    """200 connections sending their headers a byte a second each get 408 and are closed once the
    header timeout passes (a bounded loop: 12 s at most), a body that stops arriving gets 408 after
    the body timeout, and meanwhile a normal request is answered at once."""
    timeouts = {"PINPIPE_API_HEADER_TIMEOUT_SECONDS": "2", "PINPIPE_API_BODY_TIMEOUT_SECONDS": "2"}
    with _api(tmp_path / "state", tmp_path / "api.log", **timeouts) as url:
        slow = [_connect(url) for _ in range(200)]
        body = _connect(url)
        body.sendall(
            b"POST /topics/pin HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        )
        answers: dict[int, bytes] = {}
        header = b"POST /topics/pin HTTP/1.1\r\nx-slow: " + b"y" * 100
        started = time.monotonic()
        for second in range(12):
            for number, connection in enumerate(slow):
                if number in answers:
                    continue
                said = _answer(connection)
                if said is not None:
                    answers[number] = said
                    continue
                with suppress(BlockingIOError, ConnectionError):
                    connection.send(header[second : second + 1])
            if second == 1:  # the slow clients do not hold up anyone else
                assert requests.get(f"{url}/openapi.json", timeout=1).status_code == 200
            if len(answers) == len(slow):
                break
            time.sleep(max(0.0, second + 1 - (time.monotonic() - started)))
        assert len(answers) == len(slow), f"{len(slow) - len(answers)} slow connections still open after 12 s"
        assert all(said.startswith(b"HTTP/1.1 408") for said in answers.values()), set(answers.values())
        body.setblocking(True)
        body.settimeout(10)
        answered = b"".join(iter(lambda: body.recv(4096), b""))  # until the server closes it
        assert answered.startswith(b"HTTP/1.1 408"), answered
        assert b"no part of it for 2 s" in answered
        for connection in [*slow, body]:
            connection.close()
