"""Faults on the real services (Kafka, versitygw): a request is all or nothing, the API's producer
recovers from a broker outage by itself, the posting client gives up when told, and a stage whose
S3 goes away restarts by itself. Records are counted as multisets: a duplicate counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from kafka.admin import ConfigResource, ConfigResourceType

from ingestion.api.app import create_app
from ingestion.bus import ConfluentProducer, KafkaPythonProducer, TransactionalBus
from ingestion.clients import kafka_admin, kinesis_client
from ingestion.config import Settings
from ingestion.failpoints import ENVIRONMENT_VARIABLE
from ingestion.lake import QUARANTINE, Lake
from ingestion.load import load_raw_objects
from ingestion.object_keys import object_key
from ingestion.post import ApiRejected, KafkaTopics, post_batches
from ingestion.post_sources import make_source
from ingestion.schemas import IDEMPOTENCY_KEY, KAFKA_JSON, RAW_TABLES
from ingestion.services import KafkaBroker, S3Server, free_port
from ingestion.sink import S3Sink
from ingestion.stack import api_server

from helpers import (
    KinesisServers,
    answers,
    default_kafka_client_only,
    eventually,
    generated,
    in_bronze,
    in_s3,
    in_tables,
    posted,
    record,
)

pytestmark = pytest.mark.slow


def _to_bronze(settings: Settings) -> None:
    S3Sink.from_settings(settings).run(until_caught_up=True)
    load_raw_objects(settings)


def test_a_request_with_a_refused_record_stores_nothing_and_its_retry_stores_each_record_once(
    stack: Settings,
) -> None:
    """The broker refuses the last record of a request (too large for its topic): the request is a
    4xx naming that record and none of its records is stored; sent again without it, each once."""
    pin_topic = stack.topics[0]
    admin = kafka_admin(stack)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, pin_topic, configs={"max.message.bytes": "200000"})]
        )
    finally:
        admin.close()
    pins = make_source("synthetic", 7).batch(0, 20).pin.to_pylist()
    too_large = {**pins[-1], "description": "x" * 300_000}
    with api_server(stack) as url:
        session = requests.Session()
        headers = {"Content-Type": KAFKA_JSON}
        half = session.post(
            f"{url}/topics/{pin_topic}",
            json={"records": [{"value": p} for p in [*pins[:19], too_large]]},
            headers=headers,
        )
        if stack.kafka_client == "confluent-kafka":
            assert half.status_code == 422, half.text
            assert "records[19]" in half.json()["message"]
        else:  # kafka-python's futures do not say which record the broker refused: a retryable 503
            assert half.status_code in (422, 503), half.text
        retried = session.post(
            f"{url}/topics/{pin_topic}", json={"records": [{"value": p} for p in pins[:19]]}, headers=headers
        )
        assert retried.status_code == 200, retried.text
    _to_bronze(stack)
    assert in_bronze(stack) == Counter(record(pin_topic, "pin", p) for p in pins[:19])


# the default client, the production path, away longer than its producer's transaction timeout (30 s);
# kafka-python's producer is held to the same recovery over a shorter outage
@pytest.mark.minutes
@pytest.mark.parametrize(("stack", "outage_s"), [("confluent-kafka", 40), ("kafka-python", 20)], indirect=["stack"])
def test_the_api_recovers_from_a_broker_outage_and_stores_each_acknowledged_record_once(
    stack_to_stop: tuple[Settings, KafkaBroker], outage_s: float
) -> None:
    """Kafka goes away (40 s) while the same API process keeps serving: /healthz says so, posts get
    503 (not stored), and once the broker is back the same process accepts again; every post the
    client saw acknowledged is in bronze exactly once."""
    stack, broker = stack_to_stop
    topics = KafkaTopics({table: topic for topic, table in stack.topic_tables.items()})
    with api_server(stack) as url:
        post_batches(url, make_source("synthetic", 7), 1_000, destination=topics)
        broker.down()
        stopped = time.monotonic()
        # the broker's state is watched in the background: /healthz says so within seconds, at once
        # each time (a health check with a 1 s timeout gets its 503, not a timeout)
        assert eventually(lambda: requests.get(f"{url}/healthz", timeout=1).status_code == 503, 30)
        with pytest.raises(ApiRejected, match="gave up after 5 s"):  # the client gives up when told to
            # posts of their own (seed 8): where they land is told apart from the acknowledged ones
            post_batches(url, make_source("synthetic", 8), 100, destination=topics, give_up_after=5)
        time.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))  # the rest of the outage
        broker.up()
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/healthz", timeout=1).status_code != 200:
            assert time.monotonic() < deadline, "the API did not see the broker back"
            time.sleep(0.5)
        # the same process accepts again
        post_batches(url, make_source("synthetic", 7), 2_000, destination=topics, give_up_after=60)
    _to_bronze(stack)
    acknowledged, found = posted(stack, 0, 1_000) + posted(stack, 0, 2_000), in_bronze(stack)
    assert not acknowledged - found, "acknowledged records lost"
    # the request the client gave up on mid-answer has an unknown outcome: the API may still commit
    # it once the broker is back (seen with kafka-python's producer), but never twice
    given_up = generated("synthetic", 8, 0, 100, stack.topic_tables)
    assert not (found - acknowledged) - given_up, f"stored twice: {(found - acknowledged) - given_up}"


@default_kafka_client_only  # the loader's rule: the sink's clients are held to exactly once elsewhere
def test_a_record_the_api_would_refuse_is_quarantined_by_the_loader(stack: Settings) -> None:
    """Written to Kafka past the API, keys that are not JSON integers within bigint go to quarantine
    with the reason, so staging never meets one."""
    from kafka import KafkaProducer

    geo_topic = stack.topics[1]
    geo = make_source("synthetic", 7).batch(0, 1).geo.to_pylist()[0]
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap_servers)
    bad_keys = [2**70, "5", 5.0, True, "-7", None]
    for key in [geo["ind"], *bad_keys]:
        producer.send(geo_topic, json.dumps({**geo, "ind": key}).encode())
    producer.flush()
    producer.close()
    _to_bronze(stack)
    assert in_bronze(stack) == Counter([record(geo_topic, "geo", geo)])
    quarantined = Lake.from_settings(stack).delta_table(QUARANTINE).to_pyarrow_table().to_pylist()
    assert len(quarantined) == len(bad_keys)
    assert all("must be an integer key within bigint" in q["reason"] for q in quarantined)


def test_the_posting_command_gives_up_in_one_line(tmp_path: Path) -> None:
    closed = free_port()
    env = {**os.environ, "PINPIPE_STATE_DIR": str(tmp_path / "state"), "PINPIPE_POST_GIVE_UP_SECONDS": "2"}
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    done = subprocess.run(
        [pinpipe, "emulate", "--to", "api", "--posts", "10", "--api-url", f"http://127.0.0.1:{closed}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert "gave up after 2 s" in errors[0]


@default_kafka_client_only  # the sink's S3 side: no Kafka client differs
def test_a_sink_whose_s3_is_away_restarts_by_itself_and_stores_every_record_once(
    stack: Settings, tmp_path: Path
) -> None:
    """`pinpipe sink` with its S3 down says so in a line and tries again; once S3 is up it stores
    every record, none twice."""
    s3 = S3Server(stack.model_copy(update={"state_dir": tmp_path / "state", "s3_port": free_port()}))
    stack = stack.model_copy(update={"s3_port": s3.settings.s3_port, "s3_endpoint_url": s3.endpoint_url})
    topics = KafkaTopics({table: topic for topic, table in stack.topic_tables.items()})
    with api_server(stack) as url:
        post_batches(url, make_source("synthetic", 7), 500, destination=topics)
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    said = tmp_path / "sink.out"
    sink = subprocess.Popen(
        [pinpipe, "sink", "--flush-seconds", "1"],
        env={**os.environ, **stack.environment()},
        stdout=said.open("w"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = sink.stderr.readline()  # type: ignore[union-attr]
        assert first.startswith("sink stopped:"), first
        assert "restarting in" in first
        s3.up()
        s3.ensure_bucket(stack.s3_bucket)
        deadline = time.monotonic() + 120
        while in_s3(stack).total() < 1_500:
            assert time.monotonic() < deadline, "the sink did not store the records once S3 was back"
            assert sink.poll() is None, "the sink exited"
            time.sleep(1)
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sink.kill()
    try:
        load_raw_objects(stack)
        loaded = in_bronze(stack)
    finally:
        s3.down()
    assert loaded == posted(stack, 0, 500)
    # its closing line counts what it stored across its restarts
    assert "stored 1,500 records" in said.read_text(), said.read_text()


def test_the_loader_and_the_stream_consumer_ride_out_an_outage_of_their_s3_lake(
    kinesis_servers: KinesisServers, tmp_path: Path
) -> None:
    """`pinpipe load --every` and `pinpipe stream`, both writing an s3:// lake, while its S3 server is
    stopped for 30 s (delta-rs fails inside a commit then, in its own words): each says it restarts,
    both keep running, and once S3 is back bronze holds every record once, new ones included."""
    s3 = S3Server(Settings(state_dir=tmp_path / "s3", s3_port=free_port()))
    s3.up()
    settings = kinesis_servers.settings_on(
        Settings.model_fields["kinesis_server"].default,
        "outage",
        shards=1,
        s3_port=s3.settings.s3_port,
        s3_endpoint_url=s3.endpoint_url,
        lake=f"s3://{s3.settings.s3_bucket}/lake",
        loader_metrics_port=free_port(),
        stream_metrics_port=free_port(),
    )
    posts = make_source("synthetic", 12).batch(0, 1_200)
    objects, streamed = Counter(), Counter()

    def sink_objects(first: int, count: int) -> None:  # as the sink writes them, 200 records each
        for table in RAW_TABLES:
            values = posts.table(table).to_pylist()[first : first + count]
            for start in range(first, first + count, 200):
                chunk = values[start - first : start - first + 200]
                key = object_key("raw", table, 0, start)
                s3.client().put_object(Bucket=settings.s3_bucket, Key=key, Body="\n".join(map(json.dumps, chunk)))
                objects.update(record(table, table, value) for value in chunk)

    kinesis_client_ = kinesis_client(settings)

    def put(first: int, count: int) -> None:
        for stream, table in settings.stream_tables.items():
            values = posts.table(table).to_pylist()[first : first + count]
            entries = [{"Data": json.dumps(v).encode(), "PartitionKey": str(i)} for i, v in enumerate(values)]
            assert kinesis_client_.put_records(StreamName=stream, Records=entries)["FailedRecordCount"] == 0
            streamed.update(record(f"{table}_stream", table, value) for value in values)

    def bronze() -> tuple[Counter, Counter]:
        lake = Lake.from_settings(settings)
        return in_tables(lake, settings.topic_tables), in_tables(
            lake, {f"{table}_stream": f"{table}_stream" for table in RAW_TABLES}
        )

    sink_objects(0, 400)
    put(0, 400)
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    env = {**os.environ, **settings.environment()}
    logs = {name: (tmp_path / f"{name}.log").open("w+") for name in ("load", "stream")}
    stages = {
        "load": subprocess.Popen(
            [pinpipe, "load", "--every", "1"], env=env, stdout=logs["load"], stderr=subprocess.STDOUT
        ),
        "stream": subprocess.Popen(
            [pinpipe, "stream", "--flush-seconds", "0.5"], env=env, stdout=logs["stream"], stderr=subprocess.STDOUT
        ),
    }

    def said() -> str:
        return "\n".join(f"--- {name}\n{(tmp_path / f'{name}.log').read_text()[-3000:]}" for name in stages)

    try:
        assert eventually(lambda: bronze() == (objects, streamed), 120), said()
        s3.down()
        put(400, 400)  # Kinesis is up: the consumer reads them and fails to commit them
        time.sleep(30)
        assert all(stage.poll() is None for stage in stages.values()), said()
        s3.up()
        sink_objects(400, 800)
        put(800, 400)
        assert eventually(lambda: bronze() == (objects, streamed), 180, every=2), said()
        assert all(stage.poll() is None for stage in stages.values()), said()
        for name in stages:
            assert f"{'loader' if name == 'load' else 'stream consumer'} stopped: " in said(), said()
    finally:
        for stage in stages.values():
            stage.send_signal(signal.SIGTERM)
        for stage in stages.values():
            try:
                stage.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stage.kill()
        s3.down()
    # the loader's closing line counts what it appended across its restarts
    assert "1,200 pin appended" in (tmp_path / "load.log").read_text(), said()


@default_kafka_client_only  # the API's answer, not the Kafka client, is under test
def test_a_request_whose_answer_was_lost_after_its_commit_is_stored_once_when_retried_with_its_key(
    stack: Settings, tmp_path: Path
) -> None:
    """The API dies between committing a request and answering it (failpoint api.after_commit): the
    client's retry, with the request's Idempotency-Key, gets the original offsets from the restarted
    API instead of a second copy, and bronze holds each record once."""
    pin_topic = stack.topics[0]
    pins = make_source("synthetic", 7).batch(0, 20).pin.to_pylist()
    body = {"records": [{"value": pin} for pin in pins]}
    headers = {"Content-Type": KAFKA_JSON, IDEMPOTENCY_KEY: uuid.uuid4().hex}
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    env = {
        **os.environ,
        **stack.environment(),
        "PINPIPE_STATE_DIR": str(tmp_path / "state"),
        "PINPIPE_API_WORKERS": "1",
    }
    url = f"http://127.0.0.1:{stack.api_port}"

    def api(**more: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [pinpipe, "api"], env={**env, **more}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert eventually(lambda: answers(f"{url}/healthz"), 60)
        return process

    dying = api(**{ENVIRONMENT_VARIABLE: "api.after_commit"})
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{url}/topics/{pin_topic}", json=body, headers=headers, timeout=30)
    assert dying.wait(timeout=30) == -signal.SIGKILL
    restarted = api()
    try:
        retried = requests.post(f"{url}/topics/{pin_topic}", json=body, headers=headers, timeout=30)
        assert retried.status_code == 200, retried.text
        assert (
            requests.post(f"{url}/topics/{pin_topic}", json=body, headers=headers, timeout=30).json() == retried.json()
        )
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    _to_bronze(stack)
    assert in_bronze(stack) == Counter(record(pin_topic, "pin", pin) for pin in pins)


def test_a_commit_kafka_did_not_confirm_is_refused_when_retried_with_its_key_not_stored_twice(
    stack_to_stop: tuple[Settings, KafkaBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker stalls (SIGSTOP) after a transaction's records are acknowledged and before its
    commit is answered; it may commit once it runs again. The API answers 504 "may be stored", and the
    retry with the request's Idempotency-Key is refused (409 40902) instead of storing the records a
    second time. Then the same API stores new requests: each record is in bronze once at most, the
    stalled transaction's all or none."""
    stack, broker = stack_to_stop
    pin_topic = stack.topics[0]
    producer_type = ConfluentProducer if stack.kafka_client == "confluent-kafka" else KafkaPythonProducer
    original_commit = producer_type._commit
    stalled: list[int] = []

    def commit_while_the_broker_stalls(self: object, producer: object) -> None:
        if not stalled:
            stalled.append(broker.process.pid())
            os.killpg(stalled[0], signal.SIGSTOP)
            # a stop reaches each of the JVM's threads on its own: wait until none runs, or the
            # broker may still answer the commit sent next
            assert eventually(lambda: _every_thread_stopped(stalled[0]), 10, every=0.01)
        original_commit(self, producer)

    monkeypatch.setattr(producer_type, "_commit", commit_while_the_broker_stalls)
    bus = TransactionalBus(producer_type(stack.kafka_bootstrap_servers, 3), timeout_s=3)
    pins = make_source("synthetic", 7).batch(0, 40).pin.to_pylist()
    first, later = ({"records": [{"value": pin} for pin in half]} for half in (pins[:20], pins[20:]))
    headers = {"Content-Type": KAFKA_JSON, IDEMPOTENCY_KEY: uuid.uuid4().hex}
    with TestClient(create_app(stack, bus=bus)) as api:
        try:
            unconfirmed = api.post(f"/topics/{pin_topic}", json=first, headers=headers)
        finally:
            os.killpg(stalled[0], signal.SIGCONT)
        assert unconfirmed.status_code == 504, unconfirmed.text
        assert "may be stored" in unconfirmed.json()["message"]
        retried = api.post(f"/topics/{pin_topic}", json=first, headers=headers)
        assert (retried.status_code, retried.json()["error_code"]) == (409, 40902), retried.text
        new_key = {**headers, IDEMPOTENCY_KEY: uuid.uuid4().hex}
        assert eventually(lambda: api.post(f"/topics/{pin_topic}", json=later, headers=new_key).status_code == 200, 60)
    # the broker writes the stalled transaction's markers partition by partition after it resumes:
    # read back once none is open, or a partition whose marker is still to come is read short
    assert eventually(lambda: _no_open_transaction(stack, pin_topic), 90), "a transaction stayed open"
    _to_bronze(stack.model_copy(update={"kafka_client": "confluent-kafka"}))  # the producer is under test
    stored, unconfirmed_pins = in_bronze(stack), Counter(record(pin_topic, "pin", pin) for pin in pins[:20])
    # the stalled commit's outcome is the broker's, whole either way: it commits when the commit
    # request reaches it first (librdkafka's waits for it; kafka-python's times out and closes its
    # connection, and the broker may then drop it), and aborts when the transaction's timeout (the
    # bus's 3 s) has passed by the time it runs again, which a busy machine's stall can outlast
    assert stored - unconfirmed_pins == Counter(record(pin_topic, "pin", pin) for pin in pins[20:])
    assert stored & unconfirmed_pins in (unconfirmed_pins, Counter())


def _no_open_transaction(settings: Settings, topic: str) -> bool:
    """Every partition's last stable offset is its end: no transaction is open on ``topic``."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    latest = {TopicPartition(topic, number): OffsetSpec.latest() for number in partitions}
    stable, end = (
        {tp.partition: answer.result().offset for tp, answer in admin.list_offsets(latest, isolation_level=at).items()}
        for at in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED)
    )
    return stable == end


def _every_thread_stopped(pid: int) -> bool:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return all((task / "stat").read_text().rpartition(")")[2].split()[0] == "T" for task in tasks)
