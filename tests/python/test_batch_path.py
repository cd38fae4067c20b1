"""The batch path on the real services: ingest API → Kafka → S3 sink → bronze loader, exactly once.

No mocks: a real Kafka broker (KRaft) and a real S3 server (versitygw), started by the project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import SecretStr

from ingestion.api import create_app
from ingestion.clients import s3_client
from ingestion.config import Settings
from ingestion.failpoints import ENVIRONMENT_VARIABLE
from ingestion.lake import QUARANTINE, Lake
from ingestion.load import load_raw_objects
from ingestion.post import KafkaTopics, post_batches
from ingestion.post_sources import make_source
from ingestion.services import KafkaBroker, free_port
from ingestion.sink import FlushPolicy, S3Sink
from ingestion.stack import api_server

from helpers import (
    default_kafka_client_only,
    eventually,
    in_bronze,
    in_s3,
    kill_once_committed,
    posted,
    prometheus_value,
)

pytestmark = pytest.mark.slow


def _post(url: str, settings: Settings, start: int, count: int, batch: int = 250) -> list[tuple[str, int, int]]:
    """POST posts start .. start+count-1 of the synthetic source; the offsets the API acknowledged."""
    acknowledged = []
    source = make_source("synthetic", 7)
    session = requests.Session()
    for first in range(start, start + count, batch):
        posts = source.batch(first, min(batch, start + count - first))
        for topic, table in settings.topic_tables.items():
            for _attempt in range(60):
                response = session.post(
                    f"{url}/topics/{topic}", json={"records": [{"value": v} for v in posts.table(table).to_pylist()]}
                )
                if response.status_code < 500:
                    break
                time.sleep(0.5)  # the broker is away: retry, as the posting client does
            assert response.status_code == 200, response.text
            acknowledged += [(topic, o["partition"], o["offset"]) for o in response.json()["offsets"]]
    return acknowledged


def _sink(settings: Settings, policy: FlushPolicy = FlushPolicy()) -> None:
    S3Sink.from_settings(settings, policy).run(until_caught_up=True)


def _load(settings: Settings) -> None:
    load_raw_objects(settings)


def _bronze(settings: Settings, table: str) -> list[dict]:
    return Lake.from_settings(settings).delta_table(table).to_pyarrow_table().to_pylist()


def _bronze_offsets(settings: Settings) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every bronze row, from its stream kafka/<topic>/<partition>."""
    offsets = []
    for table in ("pin", "geo", "user"):
        for row in _bronze(settings, table):
            _, topic, partition = row["_stream"].split("/")
            offsets.append((topic, int(partition), row["_offset"]))
    return offsets


def _in_kafka(settings: Settings) -> int:
    """Records a read_committed consumer finds in the topics (aborted ones and markers not counted)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        partitions = [TopicPartition(t, p) for t in settings.topics for p in consumer.partitions_for_topic(t)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends, count = consumer.end_offsets(partitions), 0
        while any(consumer.position(p) < ends[p] for p in partitions):
            count += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
        return count
    finally:
        consumer.close()


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.environment()}


def test_posted_records_reach_bronze_exactly_once_with_their_content(stack: Settings) -> None:
    with api_server(stack) as url:
        acknowledged = _post(url, stack, 0, 3_000)
    _sink(stack)
    _load(stack)
    _load(stack)  # a rerun finds nothing new

    assert len(acknowledged) == 9_000
    assert len(set(acknowledged)) == 9_000
    assert sorted(_bronze_offsets(stack)) == sorted(acknowledged)
    assert in_bronze(stack) == posted(stack, 0, 3_000)  # every record with its content, once


def test_a_sink_killed_mid_stream_stores_every_record_once(stack: Settings, tmp_path: Path) -> None:
    with api_server(stack) as url:
        acknowledged = _post(url, stack, 0, 4_000)
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    command = [pinpipe, "--debug", "sink", "--flush-records", "300", "--flush-seconds", "60"]
    log = tmp_path / "sink.log"  # what the sink said, for a failure's message
    sink = subprocess.Popen(command, env=_env(stack), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    client = s3_client(stack)
    # a kafka-python member stuck rebalancing is replaced after 90 s (sink_consumers.py): time for that too
    deadline = time.monotonic() + 180
    try:
        while client.list_objects_v2(Bucket=stack.s3_bucket, Prefix="raw/").get("KeyCount", 0) < 8:
            assert time.monotonic() < deadline, f"the sink stored under 8 objects: {log.read_text()[-5000:]}"
            assert sink.poll() is None, f"the sink exited: {log.read_text()[-3000:]}"
            time.sleep(0.05)
    finally:
        os.kill(sink.pid, signal.SIGKILL)
        sink.wait()
    assert in_s3(stack).total() < 12_000  # killed mid-stream

    _sink(stack)  # restarted: resumes at the committed offsets
    assert in_s3(stack) == posted(stack, 0, 4_000)  # objects may overlap; no record is stored twice
    _load(stack)
    assert sorted(_bronze_offsets(stack)) == sorted(acknowledged)
    assert in_bronze(stack) == posted(stack, 0, 4_000)


def test_a_sink_killed_between_its_s3_put_and_its_offset_commit_stores_every_record_once(stack: Settings) -> None:
    with api_server(stack) as url:
        acknowledged = _post(url, stack, 0, 2_000)
    command = [str(Path(sys.executable).parent / "pinpipe"), "sink", "--flush-records", "300", "--flush-seconds", "60"]
    # the 3rd object is in S3 but its offsets are not committed: the restarted sink writes it again
    env = {**_env(stack), ENVIRONMENT_VARIABLE: "sink.after_put@3"}
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == -signal.SIGKILL
    assert 0 < in_s3(stack).total() < 6_000  # killed mid-stream

    _sink(stack)  # restarted: resumes at the committed offsets
    assert in_s3(stack) == posted(stack, 0, 2_000)  # the object stored twice was replaced, not added
    _load(stack)
    assert sorted(_bronze_offsets(stack)) == sorted(acknowledged)
    assert in_bronze(stack) == posted(stack, 0, 2_000)


@default_kafka_client_only  # the loader reads S3 objects: no Kafka client takes part
def test_a_loader_killed_mid_load_loads_every_object_once(stack: Settings) -> None:
    with api_server(stack) as url:
        acknowledged = _post(url, stack, 0, 4_000)
    _sink(stack, FlushPolicy(records=150))
    script = (
        "from ingestion.config import Settings; from ingestion.load import load_raw_objects;"
        "load_raw_objects(Settings())"
    )
    loader = subprocess.Popen(
        [sys.executable, "-c", script], env=_env(stack.model_copy(update={"load_commit_records": 300}))
    )
    kill_once_committed(loader, Lake.from_settings(stack), "pin", version=5, timeout=60)
    assert len(_bronze_offsets(stack)) < 12_000  # killed mid-load

    _load(stack)
    assert sorted(_bronze_offsets(stack)) == sorted(acknowledged)
    assert in_bronze(stack) == posted(stack, 0, 4_000)


def test_every_post_acknowledged_while_the_broker_restarts_reaches_bronze(
    stack_to_stop: tuple[Settings, KafkaBroker],
) -> None:
    """The emulator's client posts while Kafka stops and starts. The producer holds the records until
    the broker is back (or the API answers 503 and the client retries): either way every post
    acknowledged is in bronze afterwards."""
    stack, broker = stack_to_stop
    posts = 10_000
    topics = {table: topic for topic, table in stack.topic_tables.items()}
    with api_server(stack) as url:
        result: list = []
        poster = threading.Thread(
            target=lambda: result.append(
                post_batches(
                    url,
                    make_source("synthetic", 7),
                    posts,
                    batch_size=100,
                    concurrency=2,
                    destination=KafkaTopics(topics),
                    give_up_after=300,
                )
            )
        )
        poster.start()
        time.sleep(1.0)
        posting_when_stopped = poster.is_alive()
        broker.down()
        time.sleep(2.0)
        broker.up()
        poster.join(timeout=300)
    assert posting_when_stopped  # the restart happened mid-stream
    assert result
    assert result[0].posts == posts
    _sink(stack)
    _load(stack)
    assert in_bronze(stack) == posted(stack, 0, posts)  # retried requests were aborted, not stored twice


@default_kafka_client_only  # the API's checks: no client differs
def test_invalid_requests_get_their_status_and_nothing_reaches_kafka(stack: Settings) -> None:
    secured = stack.model_copy(update={"api_key": SecretStr("s3cret"), "api_max_body_bytes": 2_000_000})
    pin_topic, geo_topic = secured.topics[0], secured.topics[1]
    pin = make_source("aicore", 1).batch(0, 1).pin.to_pylist()[0]
    geo = make_source("aicore", 1).batch(0, 1).geo.to_pylist()[0]
    before = _in_kafka(secured)
    with TestClient(create_app(secured)) as client:
        headers = {"X-API-Key": "s3cret", "Content-Type": "application/vnd.kafka.json.v2+json"}

        def post(topic: str, body: object, **overrides: object) -> requests.Response:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return client.post(f"/topics/{topic}", content=content, headers={**headers, **overrides})

        missing_key = client.post(f"/topics/{pin_topic}", json={"records": [{"value": pin}]})
        assert missing_key.status_code == 401
        assert "X-API-Key" in missing_key.json()["message"]
        assert post(pin_topic, b"{not json").status_code == 400
        unknown = post("no-such-topic", {"records": [{"value": pin}]})
        assert unknown.status_code == 404
        assert unknown.json()["error_code"] == 40401
        oversized = post(pin_topic, {"records": [{"value": pin}] * 4_000})
        assert oversized.status_code == 413
        wrong_shape = post(pin_topic, {"rows": [pin]})
        assert wrong_shape.status_code == 422
        assert "records" in wrong_shape.json()["message"]

        no_category = {k: v for k, v in pin.items() if k != "category"}
        missing_field = post(pin_topic, {"records": [{"value": pin}, {"value": no_category}]})
        assert missing_field.status_code == 422
        assert "records[1].value.category: Field required" in missing_field.json()["message"]
        wrong_type = post(geo_topic, {"records": [{"value": {**geo, "latitude": "north"}}]})
        assert wrong_type.status_code == 422
        assert "records[0].value.latitude" in wrong_type.json()["message"]
        bad_time = post(geo_topic, {"records": [{"value": {**geo, "timestamp": "yesterday"}}]})
        assert bad_time.status_code == 422
        assert "records[0].value.timestamp" in bad_time.json()["message"]

        # one definition of a key, the loader's: a JSON integer within bigint
        for key in (5.0, True, "5.0", "-7", 2**70, None):
            not_a_key = post(geo_topic, {"records": [{"value": geo}, {"value": {**geo, "ind": key}}]})
            assert not_a_key.status_code == 422, key
            assert "records[1].value.ind" in not_a_key.json()["message"]
        # malformed input is a 4xx, never a 5xx: bare NaN, deep nesting, a lone surrogate
        nan = json.dumps({"records": [{"value": {**geo, "latitude": float("nan")}}]}).encode()
        assert post(geo_topic, nan).status_code == 400
        assert post(geo_topic, b"[" * 100_000 + b"]" * 100_000).status_code == 400
        surrogate = json.dumps({"records": [{"value": pin}, {"value": {**pin, "title": "\ud800"}}]}).encode()
        assert 400 <= post(pin_topic, surrogate).status_code < 500
        too_large = post(pin_topic, {"records": [{"value": pin}, {"value": {**pin, "description": "x" * 1_100_000}}]})
        assert too_large.status_code in (413, 422)

        assert post(pin_topic, {"records": [{"value": pin}]}, **{"Content-Type": "application/json"}).status_code == 200
        # with a key set, only /healthz is open: metrics, docs and the schema need the key too
        for closed in ("/metrics", "/docs", "/openapi.json", "/streams"):
            assert client.get(closed).status_code == 401, closed
            assert client.get(closed, headers={"X-API-Key": "s3crez"}).status_code == 401, closed
        assert eventually(lambda: client.get("/healthz").json() == {"status": "ok"}, 10)
        for name in range(50):  # made-up names do not make new metric series
            client.put(f"/streams/made-up-{name}-pin/record", json={"Data": {}}, headers={"X-API-Key": "s3cret"})
        metrics = client.get("/metrics", headers={"X-API-Key": "s3cret"}).text
        assert 'pinpipe_api_requests_total{route="/topics/{topic}",status="422"} 11.0' in metrics
        assert "made-up" not in metrics
        assert 'pinpipe_api_requests_total{route="/streams/{stream}/record",status="404"} 50.0' in metrics
    assert _in_kafka(secured) - before == 1  # only the one valid request


def test_a_non_json_message_in_a_topic_is_quarantined_and_the_rest_loads(stack: Settings) -> None:
    pin_topic = stack.topics[0]
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap_servers, acks="all")
    good = make_source("aicore", 1).batch(0, 20).pin.to_pylist()
    for record in good[:10]:
        producer.send(pin_topic, key=b"k", value=json.dumps(record).encode())
    producer.send(pin_topic, key=b"k", value=b"\x00not json at all")
    producer.send(pin_topic, key=b"k", value=b"line one\nline two")
    for record in good[10:]:
        producer.send(pin_topic, key=b"k", value=json.dumps(record).encode())
    producer.flush()
    producer.close()

    _sink(stack)
    _load(stack)
    assert len(_bronze(stack, "pin")) == 20
    quarantined = _bronze(stack, QUARANTINE)
    assert sorted(q["raw_record"] for q in quarantined) == ["\x00not json at all", '"line one\\nline two"']
    assert all(
        q["table_name"] == "pin" and q["_source"].startswith(f"s3://{stack.s3_bucket}/raw/") for q in quarantined
    )
    assert {q["_offset"] for q in quarantined} == {10, 11}


@pytest.mark.minutes
# a whole flow: it starts services of its own for one run (minutes), and the kill and exactly-once
# tests above already hold kafka-python to the same guarantees
@default_kafka_client_only
def test_the_full_stack_command_prints_the_marts(stack: Settings, tmp_path: Path) -> None:
    """`pinpipe run --stack full`, as the README gives it, on services it starts itself."""
    settings = stack.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "kafka_metrics_port": free_port(),
            "prometheus_port": free_port(),
            "pushgateway_port": free_port(),
            "scrape_interval_seconds": 1,
            "s3_port": free_port(),
            "s3_endpoint_url": None,
            "s3_bucket": "pinpipe",
            "lake": None,
        }
    )
    env = _env(settings)
    env.pop("PINPIPE_LAKE", None)
    env["PINPIPE_WAREHOUSE"] = str(tmp_path / "full.duckdb")
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    try:
        run = subprocess.run(
            [pinpipe, "run", "--stack", "full", "--posts", "1500", "--rows", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        # what the run pushed, in the Prometheus `services up` started
        prometheus = f"http://127.0.0.1:{settings.prometheus_port}"
        wanted = {
            "sum(pinpipe_api_records_accepted_total)": 4500,
            "sum(pinpipe_sink_records_stored_total)": 4500,
            "sum(pinpipe_sink_consumer_lag_records)": 0,
            'sum(pinpipe_bronze_records_appended_total{job="pinpipe_loader"})': 4500,
            'count(pinpipe:bronze_freshness_seconds{table=~"pin|geo|user"} < 600)': 3,
            'sum(pinpipe_dbt_tests{invocation="pinpipe_build", status=~"fail|error"}) or vector(0)': 0,
            'count(pinpipe_dbt_tests{invocation="pinpipe_build", status="pass"}) > bool 10': 1,
        }
        assert eventually(lambda: {q: prometheus_value(prometheus, q) for q in wanted} == wanted, 60), {
            q: prometheus_value(prometheus, q) for q in wanted
        }
    finally:
        subprocess.run([pinpipe, "services", "down"], env=env, capture_output=True, timeout=120)
    assert "posted 1,500 posts (4,500 records)" in run.stdout
    assert "stored 4,500 records" in run.stdout
    assert "1,500 pin appended" in run.stdout
    for mart in ("most_popular_category_by_country", "median_follower_count_by_age_group_and_join_year"):
        assert mart in run.stdout
