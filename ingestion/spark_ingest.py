"""Ingestion on Spark: PySpark Structured Streaming jobs that write the bronze pinpipe's Python
loaders write, for a team past one machine (docs/spark-ingestion.md).

Two jobs, each one streaming query into bronze pin, geo, user and the quarantine:
- ``kafka``: the topics straight into bronze (``spark-sql-kafka-0-10``), read committed;
- ``objects``: the sink's raw objects, in S3 (``s3a://``, hadoop-aws) or a folder, with Spark's file
  source: the open-source twin of Databricks' Auto Loader.

Each micro-batch is turned into bronze rows by the same Spark SQL the Databricks bronze models run
(macros/bronze/bronze_from_lines.sql, compiled by dbt when the job starts), so the key rule, the
quarantine reasons and the lineage columns are one definition on every engine.

Exactly once, as Delta documents it for ``foreachBatch``: the streaming checkpoint records which
records each batch holds before the batch runs, and every table's write carries the batch as an
idempotent transaction (``txnAppId`` = the job, ``txnVersion`` = the batch id). A driver killed
after its writes and before the checkpoint's commit replays the batch on restart, and Delta skips
each table that already has it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from ingestion import clients
from ingestion.bronze import ForeignBronze, SparkJob, refuse_foreign_bronze, spark_app_id
from ingestion.config import Settings
from ingestion.errors import EngineNotInstalled
from ingestion.failpoints import failpoint
from ingestion.lake import QUARANTINE, Lake, ensure_tables
from ingestion.load import NoRawObjects, RawObjectStore, raw_object_store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Maven Central coordinates, for Spark 4.2 / Scala 2.13 and its Hadoop 3.5 (pyspark's own jars)
DELTA = "io.delta:delta-spark_4.2_2.13:4.4.0"
KAFKA = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"
HADOOP_AWS = "org.apache.hadoop:hadoop-aws:3.5.0"  # with the AWS SDK's bundle: about 700 MB, once

# a micro-batch's bound by default: what the driver holds while it splits the batch into four tables
BATCH_LIMITS: dict[SparkJob, int] = {"kafka": 500_000, "objects": 12}

# the view each micro-batch is registered as, which the compiled statements read
_BATCH_VIEW = "pinpipe_batch"


@dataclass(frozen=True)
class BatchWritten:
    """One micro-batch: its id and the rows it appended to each table (quarantine included)."""

    batch_id: int
    rows: dict[str, int]
    replayed: bool  # a table already held it: a batch replayed after a crash


@dataclass
class SparkIngestion:
    """One Spark ingestion job over the settings' lake; ``run`` streams until the source is drained
    (``every`` None: ``trigger(availableNow=True)``, the daily batch) or, with ``every``, a
    micro-batch every so many seconds until stopped."""

    settings: Settings
    job: SparkJob
    source: str | None = None  # objects: an s3:// prefix or a folder; default the sink's objects
    master: str = "local[*]"
    max_per_batch: int | None = None  # Kafka records or objects per micro-batch (default: BATCH_LIMITS)
    written: list[BatchWritten] = field(default_factory=list)

    def run(self, every: float | None = None, on_batch: Callable[[BatchWritten], None] | None = None) -> None:
        require_spark()
        lake = Lake.from_settings(self.settings)
        started = _read_job_file(self.settings, self.job, "checkpoint/metadata") is not None
        refuse_foreign_bronze(lake, self.job, started=started)
        self._require_source(started)
        ensure_tables(lake)  # every table dbt reads exists, the quarantine too when nothing was quarantined
        statements = bronze_statements(self.settings, self.job)
        spark = self._session()
        try:
            writer = (
                self._records(spark)
                .writeStream.foreachBatch(self._batch_writer(lake, statements, on_batch))
                .option("checkpointLocation", self.checkpoint_location())
            )
            writer = (
                writer.trigger(availableNow=True)
                if every is None
                else writer.trigger(processingTime=f"{every:g} seconds")
            )
            with _stop_requested() as stop:
                query = writer.start()
                try:
                    while not stop.is_set() and not query.awaitTermination(1):
                        pass
                finally:
                    if stop.is_set():  # py4j would log the interrupted batch's error, which the next run replays
                        logging.getLogger("py4j").setLevel(logging.CRITICAL)
                    query.stop()
            if stop.is_set():
                raise KeyboardInterrupt
        finally:
            spark.stop()

    def _require_source(self, started: bool) -> None:
        """The source answers and holds the sink's layout, and an objects job reads what it read
        before: Spark's file source knows objects by their path, so a copy elsewhere is new to it."""
        if self.job == "kafka":
            clients.require_kafka(self.settings)
            return
        location = self.objects_location
        if not _holds_objects(self._objects):
            raise NoRawObjects(
                f"no raw objects under {location}/topics/: give the folder or s3:// prefix that holds topics/, "
                "as the sink lays it out (run `pinpipe sink` first)"
            )
        recorded = _read_job_file(self.settings, self.job, "source")
        if started and recorded not in (None, location):
            raise ForeignBronze(
                f"this lake's Spark objects job reads {recorded}: reading {location} too would load the same "
                f"records again (Spark knows objects by their path); keep --from {recorded}, or give it a lake "
                "of its own (PINPIPE_LAKE)"
            )
        if recorded is None:
            _write_job_file(self.settings, self.job, "source", location)

    def checkpoint_location(self) -> str:
        return _spark_uri(_job_file(self.settings, self.job, "checkpoint"))

    def _records(self, spark: SparkSession) -> DataFrame:
        """The job's source as a streaming DataFrame with the columns its line reader takes."""
        if self.job == "kafka":
            reader = (
                spark.readStream.format("kafka")
                .option("kafka.bootstrap.servers", self.settings.kafka_bootstrap_servers)
                .option("subscribe", ",".join(self.settings.topics))
                .option("startingOffsets", "earliest")
                # the API writes in transactions: an aborted record is not a post
                .option("kafka.isolation.level", "read_committed")
            )
            reader = reader.option("maxOffsetsPerTrigger", self.max_per_batch or BATCH_LIMITS["kafka"])
            return reader.load().selectExpr("topic", "partition", "offset", "value")
        reader = (
            spark.readStream.format("text")
            .option("wholetext", "true")
            # the sink's layout, partition=<p> folders included, read as files, not as a partitioned table
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", "*+*+*.json")
        )
        reader = reader.option("maxFilesPerTrigger", self.max_per_batch or BATCH_LIMITS["objects"])
        return reader.load(f"{_spark_uri(self.objects_location)}/topics").selectExpr(
            "value", "_metadata.file_path as file_path"
        )

    @cached_property
    def _objects(self) -> RawObjectStore:
        """What the objects job reads: the Python loader's store for the same ``--from``."""
        return raw_object_store(self.settings, self.source)

    @property
    def objects_location(self) -> str:
        return self._objects.where

    def _batch_writer(
        self, lake: Lake, statements: dict[str, str], on_batch: Callable[[BatchWritten], None] | None
    ) -> Callable[[DataFrame, int], None]:
        app_id = spark_app_id(self.job)
        lake_uri = _spark_uri(self.settings.lake).rstrip("/")

        def write(batch: DataFrame, batch_id: int) -> None:
            if self.job == "objects":  # one row per object, packed into one task by the file source
                batch = batch.repartition(batch.sparkSession.sparkContext.defaultParallelism)
            batch.persist()  # read once from Kafka or storage, split into four tables
            try:
                batch.createOrReplaceTempView(_BATCH_VIEW)
                rows: dict[str, int] = {}
                replayed = False
                for table, statement in statements.items():
                    selected = batch.sparkSession.sql(statement)
                    appended = _append_once(lake, table, selected, f"{lake_uri}/bronze/{table}", app_id, batch_id)
                    replayed = replayed or appended is None
                    rows[table] = appended or 0
            finally:
                batch.unpersist()
            # between the tables' commits and the checkpoint's: the kill tests' moment
            failpoint("spark.after_bronze_write")
            written = BatchWritten(batch_id, rows, replayed)
            self.written.append(written)
            if on_batch is not None:
                on_batch(written)

        return write

    def _session(self) -> SparkSession:
        from pyspark.sql import SparkSession

        settings = self.settings
        packages = [DELTA, *([KAFKA] if self.job == "kafka" else [])]
        reads_s3 = self.job == "objects" and self.objects_location.startswith("s3://")
        uses_s3 = settings.lake.startswith("s3://") or reads_s3
        if uses_s3:
            packages.append(HADOOP_AWS)
        builder = (
            _with_jars(SparkSession.builder.appName(f"pinpipe-ingest-{self.job}"), settings, packages)
            .master(self.master)
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.databricks.delta.snapshotPartitions", "2")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", settings.spark_driver_memory)
            # the driver's Derby metastore and scratch stay in the state folder, not the working one
            .config("spark.sql.warehouse.dir", str(settings.state_dir / "spark-ingest" / "warehouse"))
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={settings.state_dir / 'spark-ingest'}")
        )
        if uses_s3:
            endpoint = settings.s3_endpoint_url or ""
            builder = (
                builder.config("spark.hadoop.fs.s3a.endpoint", endpoint)
                .config("spark.hadoop.fs.s3a.endpoint.region", settings.s3_region)
                .config("spark.hadoop.fs.s3a.access.key", settings.s3_access_key_id)
                .config("spark.hadoop.fs.s3a.secret.key", settings.s3_secret_access_key.get_secret_value())
                .config("spark.hadoop.fs.s3a.path.style.access", "true")
                .config("spark.hadoop.fs.s3a.connection.ssl.enabled", str(endpoint.startswith("https")).lower())
            )
        log = settings.state_dir / "spark-ingest" / f"{self.job}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with _stderr_to(log):  # the JVM keeps it: Ivy's resolution report and Spark's logs go to the file
            spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        return spark


def fetch_jars(settings: Settings) -> None:
    """Every jar the jobs use (Delta, the Kafka source, hadoop-aws with the AWS SDK: about 1.5 GB)
    from Maven Central into the Ivy cache, so that no job's first start downloads them."""
    from pyspark.sql import SparkSession

    log = settings.state_dir / "spark-ingest" / "fetch-jars.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    builder = _with_jars(SparkSession.builder.appName("pinpipe-fetch-jars"), settings, [DELTA, KAFKA, HADOOP_AWS])
    builder = builder.master("local[1]").config("spark.ui.enabled", "false")
    with _stderr_to(log):
        builder.getOrCreate().stop()


def _with_jars(builder: SparkSession.Builder, settings: Settings, packages: list[str]) -> SparkSession.Builder:
    """``builder`` with ``packages`` from Maven Central, cached in the project's Ivy folder."""
    return builder.config("spark.jars.packages", ",".join(packages)).config(
        "spark.jars.ivy", str(settings.cache_dir / "ivy")
    )


@contextmanager
def _stderr_to(log: Path) -> Iterator[None]:
    """File descriptor 2 pointed at ``log`` for a child process started meanwhile (Spark's JVM)."""
    saved = os.dup(2)
    with log.open("ab") as file:
        os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def spark_installed() -> bool:
    """The Spark target's packages (pyspark, delta-spark) are installed: `make spark`."""
    return find_spec("pyspark") is not None and find_spec("delta") is not None


def require_spark() -> None:
    if not spark_installed():
        raise EngineNotInstalled(
            "the spark ingestion engine needs pyspark and delta-spark, which the default install leaves out: "
            "run `make spark` (or `.venv/bin/pip install -r requirements-spark.txt`)"
        )


def bronze_statements(settings: Settings, job: SparkJob) -> dict[str, str]:
    """The Spark SQL that turns one micro-batch (the view ``pinpipe_batch``) into each bronze table's
    rows: macros/bronze/bronze_from_lines.sql, compiled by dbt, and kept under the cache folder until
    the project's macros or models change (dbt's start costs a job 5-10 s). The topics' names are
    put in after compiling, so every set of topics shares what is kept."""
    marker = "-- pinpipe-statement:"
    reader = "kafka_lines" if job == "kafka" else "object_lines"
    parts = []
    for table in settings.topic_tables.values():
        lines = f"{reader}('select * from {_BATCH_VIEW}', '{_topic_placeholder(table)}')"
        parts += [
            f"{marker}{table}\n{{{{ bronze_rows('{table}', {lines}) }}}}",
            f"{marker}{QUARANTINE}\n{{{{ quarantine_rows('{table}', {lines}) }}}}",
        ]
    inline = "\n".join(parts)
    kept = settings.cache_dir / "spark-ingest" / f"statements-{_project_hash(settings, inline)}.sql"
    if kept.exists():
        code = kept.read_text()
    else:
        code = _compiled(settings, inline)
        kept.parent.mkdir(parents=True, exist_ok=True)
        written = kept.with_name(f"{kept.name}.{os.getpid()}")  # whole or absent: jobs may start together
        written.write_text(code)
        written.replace(kept)
    for topic, table in settings.topic_tables.items():
        code = code.replace(_topic_placeholder(table), topic)  # a topic's name is [a-zA-Z0-9._-]: a plain literal
    statements: dict[str, list[str]] = {}
    for chunk in code.split(marker)[1:]:
        name, _, sql = chunk.partition("\n")
        statements.setdefault(name.strip(), []).append(sql.strip())
    return {table: "\nunion all\n".join(f"({sql})" for sql in sqls) for table, sqls in statements.items()}


def _topic_placeholder(table: str) -> str:
    return f"pinpipe-topic-of-{table}"


def _compiled(settings: Settings, inline: str) -> str:
    from ingestion.transform import run_dbt

    scratch = settings.state_dir / "spark-ingest" / "dbt"
    flags = ["--no-introspect", "--no-populate-cache", "--log-level", "none", "--target-path", str(scratch)]
    spark = settings.model_copy(update={"target": "spark"})
    compiled = run_dbt(spark, ["compile", "--inline", inline, *flags])
    code: str = compiled.results[0].node.compiled_code
    return code


def _project_hash(settings: Settings, inline: str) -> str:
    """What the compiled statements depend on: the inline text, the macros and the models' YAML (the
    sources' columns are the payload fields), and dbt's version."""
    digest = hashlib.sha256(inline.encode() + version("dbt-core").encode())
    project = settings.project_dir
    for path in sorted(
        [*project.glob("macros/**/*.sql"), *project.glob("models/**/*.yml"), project / "dbt_project.yml"]
    ):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _append_once(lake: Lake, table: str, rows: DataFrame, uri: str, app_id: str, batch_id: int) -> int | None:
    """Append ``rows`` to bronze ``table`` (at ``uri`` for Spark) as batch ``batch_id`` of ``app_id``;
    the rows appended, or None when the table already holds that batch: Delta would skip the write,
    and asking first lets a replayed batch be reported as one."""
    delta = lake.delta_table(table)
    done = delta.transaction_version(app_id) if delta is not None else None
    if done is not None and done >= batch_id:
        return None
    if rows.isEmpty():  # a Delta commit costs about a second here; nothing to make idempotent
        return 0
    rows.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", batch_id).save(uri)
    written = lake.delta_table(table)
    assert written is not None  # just written
    # the commit's own count: counting the rows first would run the batch's query twice
    return int(written.history(1)[0].get("operationMetrics", {}).get("numOutputRows", 0))


def _job_file(settings: Settings, job: SparkJob, name: str) -> str:
    return f"{settings.lake.rstrip('/')}/_spark/{job}/{name}"


def _read_job_file(settings: Settings, job: SparkJob, name: str) -> str | None:
    """A file a job keeps beside bronze (its checkpoint's, or its own), None when there is none."""
    location = _job_file(settings, job, name)
    if not location.startswith("s3://"):
        path = Path(location)
        return path.read_text() if path.is_file() else None
    from botocore.exceptions import ClientError

    bucket, key = clients.bucket_and_prefix(location)
    try:
        body: bytes = clients.s3_client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise
    return body.decode()


def _write_job_file(settings: Settings, job: SparkJob, name: str, text: str) -> None:
    location = _job_file(settings, job, name)
    if location.startswith("s3://"):
        bucket, key = clients.bucket_and_prefix(location)
        clients.s3_client(settings).put_object(Bucket=bucket, Key=key, Body=text.encode())
        return
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    Path(location).write_text(text)


def _holds_objects(store: RawObjectStore) -> bool:
    """Whether ``store`` holds the sink's layout: a ``topics/`` folder."""
    from botocore.exceptions import ClientError

    try:
        return "topics/" in store.folders("")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchBucket", "404"}:
            return False
        raise


@contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event Ctrl-C or SIGTERM sets, in place of PySpark's handler: that one calls into the JVM
    from the signal handler, in the middle of the call it interrupts, and prints tracebacks."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _spark_uri(location: str) -> str:
    """A lake or objects location as Spark's Hadoop file systems name it (``s3a://`` for S3)."""
    return "s3a://" + location.removeprefix("s3://") if location.startswith("s3://") else location


def run_job(
    settings: Settings,
    job: SparkJob,
    *,
    source: str | None = None,
    every: float | None = None,
    master: str = "local[*]",
    max_per_batch: int | None = None,
    on_batch: Callable[[BatchWritten], None] | None = None,
) -> list[BatchWritten]:
    """Run one Spark ingestion job (see ``SparkIngestion``); the batches it wrote."""
    ingestion = SparkIngestion(settings, job, source, master, max_per_batch)
    ingestion.run(every, on_batch)
    return ingestion.written
