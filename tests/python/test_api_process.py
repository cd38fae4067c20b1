"""`pinpipe api` as a process: its health answers at once in every state (the broker's state is
watched in the background), and two APIs on one state dir keep their metrics apart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from ingestion.services import free_port

from helpers import answers, eventually

PINPIPE = str(Path(sys.executable).parent / "pinpipe")


@contextmanager
def _api(state_dir: Path, log: Path) -> Iterator[str]:
    """`pinpipe api` with no Kafka broker: it serves, and says the broker is away."""
    port = free_port()
    env = {**os.environ, "PINPIPE_STATE_DIR": str(state_dir), "PINPIPE_KAFKA_PORT": str(free_port())}
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
