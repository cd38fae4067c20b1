"""Ingestion on Spark Structured Streaming (ingestion/spark_ingest.py) on the real services: Kafka
straight into bronze and the sink's objects in S3 (s3a://) into bronze, each driver killed with
SIGKILL between its bronze writes and its checkpoint's commit, then rerun; what bronze holds is
compared, as a multiset, with what was sent and with what the Python path loads from the same
records, and the marts built on Spark-written bronze with the plain-Python reference."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ingestion.config import Settings
from ingestion.failpoints import ENVIRONMENT_VARIABLE
from ingestion.lake import QUARANTINE, Lake
from ingestion.load import load_raw_objects
from ingestion.post_sources import make_source
from ingestion.sink import FlushPolicy, S3Sink

from helpers import Dbt, assert_marts_equal_reference, default_kafka_client_only, eventually, in_bronze, posted

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="process groups")]

POSTS = 1_500
JUNK = [b"\x00not json at all", b'{"no": "key"}']


def _send(settings: Settings) -> None:
    """The tests' synthetic posts into the topics, two records no loader can key among the pins."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    posts = make_source("synthetic", 7).batch(0, POSTS)
    for topic, table in settings.topic_tables.items():
        for position, record in enumerate(posts.table(table).to_pylist()):
            producer.produce(topic, json.dumps(record).encode())
            if table == "pin" and position == POSTS // 2:
                for junk in JUNK:
                    producer.produce(topic, junk)
    assert producer.flush(30) == 0


def _rows(settings: Settings, table: str, *, lines: bool = True) -> Counter:
    """A bronze table's rows as a multiset, without what differs by writer and moment (the source
    path, the batch id, the time); a quarantine reason without the parser's detail, and without its
    line in an object unless ``lines`` (a record read from Kafka itself has none)."""
    delta = Lake.from_settings(settings).delta_table(table)
    differ = ["_source", "_batch_id", "_ingested_at", *([] if lines else ["line_number"])]
    rows = (
        delta.to_pyarrow_table().drop_columns([c for c in differ if c in delta.schema().to_arrow().names]).to_pylist()
    )
    for row in rows:
        if "reason" in row:
            row["reason"] = row["reason"].split(":")[0]
    return Counter(tuple(sorted(row.items())) for row in rows)


def _spark_load(
    settings: Settings, *args: str, failpoint: str | None = None, until: Callable[[], bool] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pinpipe load --engine spark` as a user runs it; the driver's JVM is killed with it (its
    process group), as a machine's crash would. A running job (--every) is stopped with Ctrl-C, as a
    terminal sends it to the whole group, once ``until`` holds. On a fresh machine the first run
    also fetches the jars (about 1.5 GB) unless `pinpipe setup --servers` did: hence the long timeout."""
    command = [str(Path(sys.executable).parent / "pinpipe"), "load", "--engine", "spark", *args]
    # a driver of a minute: the JIT's first tier only (measured: a 1,500-post objects job in 28 s
    # instead of 37); a long-running job wants the full JIT, so this is the tests' choice, not the job's
    env = {**os.environ, **settings.environment(), "COLUMNS": "200", "JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1"}
    if failpoint:
        env[ENVIRONMENT_VARIABLE] = failpoint
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        if until is not None:
            assert eventually(lambda: until() or process.poll() is not None, timeout=300), "the job never caught up"
            os.killpg(process.pid, signal.SIGINT)
        out, _ = process.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, out, "")


def _rerun_replays_one_batch(spark: Settings, python: Settings, job: str, *args: str, running: bool = False) -> None:
    """The killed job run again (``running``: with --every, stopped with Ctrl-C once bronze has every
    record): its killed batch replayed and skipped, every record in bronze once, bronze equal to the
    Python path's."""
    sent = posted(python, 0, POSTS)
    if running:
        rerun = _spark_load(spark, *args, "--every", "1", until=lambda: in_bronze(spark).total() >= sent.total())
        assert "stopped: the next run resumes" in rerun.stdout, rerun.stdout[-3000:]
    else:
        rerun = _spark_load(spark, *args)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "(1 replayed after a crash)" in rerun.stdout, rerun.stdout[-3000:]
    assert in_bronze(spark) == sent, f"{job}: records lost or loaded twice"
    lines = job == "objects"
    for table in (*python.topic_tables.values(), QUARANTINE):
        assert _rows(spark, table, lines=lines) == _rows(python, table, lines=lines), f"{job}: {table} differs"
    assert sum(_rows(spark, QUARANTINE).values()) == len(JUNK)


@pytest.mark.minutes
@default_kafka_client_only  # Spark reads Kafka with its own client
def test_spark_ingestion_killed_mid_batch_loads_every_record_once_and_equals_the_python_path(
    stack: Settings, dbt: Dbt, tmp_path: Path
) -> None:
    _send(stack)
    S3Sink.from_settings(stack, FlushPolicy(records=300)).run(until_caught_up=True)
    load_raw_objects(stack)  # the Python path, into the stack's lake
    sent = posted(stack, 0, POSTS)
    assert in_bronze(stack) == sent

    # the sink's objects, read over s3a://, in one micro-batch into a lake in a folder: killed after
    # its bronze writes and before the checkpoint's commit, so bronze holds the batch the rerun replays
    spark = stack.model_copy(update={"lake": str(tmp_path / "spark-objects")})
    killed = _spark_load(spark, "--max-per-batch", "100", failpoint="spark.after_bronze_write")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert in_bronze(spark) == sent, killed.stdout[-3000:]
    _rerun_replays_one_batch(spark, stack, "objects", "--max-per-batch", "100")

    # Kafka itself, in two micro-batches into a lake in S3: killed in the first; the rerun, a running
    # job (a micro-batch every second), replays it (skipped), reads the second and stops on Ctrl-C
    spark = stack.model_copy(update={"lake": f"s3://{stack.s3_bucket}/spark-kafka"})
    killed = _spark_load(spark, "--from", "kafka", "--max-per-batch", "2500", failpoint="spark.after_bronze_write")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert 0 < in_bronze(spark).total() < sent.total(), killed.stdout[-3000:]
    _rerun_replays_one_batch(spark, stack, "kafka", "--from", "kafka", "--max-per-batch", "2500", running=True)

    posts = make_source("synthetic", 7).batch(0, POSTS)
    records = [
        {"pin": pin, "geo": geo, "user": user}
        for pin, geo, user in zip(*(posts.table(t).to_pylist() for t in ("pin", "geo", "user")), strict=True)
    ]
    dbt.build(spark)  # the marts on bronze Spark wrote straight from Kafka
    assert_marts_equal_reference(spark, records)
