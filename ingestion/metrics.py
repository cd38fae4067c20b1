"""Prometheus metrics of the long-running stages (sink, loader, stream consumer) and of dbt builds.

Each process keeps its stages' metrics on a registry of its own (no global state). A stage that
runs until stopped serves them on its port for Prometheus to scrape; a run that ends (`--until-caught-up`,
`pinpipe run`, `transform`, a DAG task) pushes them to the Pushgateway under a job of the same name, so
an operator queries both the same way. Names follow Prometheus' conventions: units in the name,
``_total`` on counters (added by the client), histograms for latencies.

Bronze freshness is exported as the newest ``_ingested_at`` per table (a timestamp, as Prometheus
advises for "last time something happened": a pushed age would freeze); the recording rule
``pinpipe:bronze_freshness_seconds`` turns it into seconds since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import HTTPError

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ingestion.artifacts import Invocation, invocation
from ingestion.config import Settings

if TYPE_CHECKING:
    from ingestion.bronze import AppendResult

_log = logging.getLogger(__name__)

# latencies from a millisecond (a local put) to a minute (a stalled S3 or a large Delta commit)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Prometheus jobs: the same name whether a component is scraped or pushes at its end
SINK_JOB = "pinpipe_sink"
LOADER_JOB = "pinpipe_loader"
STREAM_JOB = "pinpipe_stream"
API_JOB = "pinpipe_api"
DBT_JOB = "pinpipe_dbt"


class SinkMetrics:
    """The S3 sink: what it read and stored, its puts, its consumer lag, its rebalances."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter("pinpipe_sink_records_consumed", "records polled from Kafka", registry=registry)
        self.stored = Counter(
            "pinpipe_sink_records_stored", "records written to S3 objects and committed", ["topic"], registry=registry
        )
        self.objects = Counter("pinpipe_sink_objects_written", "objects put to S3", ["topic"], registry=registry)
        self.bytes = Counter(
            "pinpipe_sink_written_bytes", "bytes of the objects put to S3", ["topic"], registry=registry
        )
        self.put_latency = Histogram(
            "pinpipe_sink_put_seconds", "S3 PutObject latency", ["topic"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.lag = Gauge(
            "pinpipe_sink_consumer_lag_records",
            "records in the partition not stored in S3 yet: its end offset minus the first offset not stored",
            ["topic", "partition"],
            registry=registry,
        )
        self.rebalances = Counter(
            "pinpipe_sink_rebalances",
            "partition assignment changes seen by this member (revoked, assigned)",
            ["change"],
            registry=registry,
        )

    def report_lag(self, stored: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> None:
        """The lag of the partitions this member owns (end offset minus the first offset not stored);
        the others' series are removed (their new owner reports them)."""
        for (topic, partition), end in ends.items():
            self.lag.labels(topic, str(partition)).set(max(0, end - stored[(topic, partition)]))
        owned = {(topic, str(partition)) for topic, partition in ends}
        for labels in [labels for labels in _label_values(self.lag) if labels not in owned]:
            self.lag.remove(*labels)


class BronzeMetrics:
    """Appends to bronze (the loader's and the stream consumer's): records, quarantine, commit
    latency, and the newest ``_ingested_at`` per table."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.appended = Counter(
            "pinpipe_bronze_records_appended", "records appended to a bronze table", ["table"], registry=registry
        )
        self.quarantined = Counter(
            "pinpipe_bronze_records_quarantined",
            "records sent to bronze/quarantine with their reason",
            ["table"],
            registry=registry,
        )
        self.commit_latency = Histogram(
            "pinpipe_bronze_commit_seconds",
            "a Delta commit to a bronze table (and its quarantine), offsets included",
            ["table"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.newest = Gauge(
            "pinpipe_bronze_newest_ingested_timestamp_seconds",
            "the newest _ingested_at in the table (Unix time): freshness is time() minus this",
            ["table"],
            registry=registry,
        )
        self._newest: dict[str, float] = {}

    def observe(self, table: str, result: AppendResult) -> None:
        """One append to ``table`` (a stream table's name differs from its raw table's)."""
        self.appended.labels(table).inc(result.appended)
        self.quarantined.labels(table).inc(result.quarantined)
        self.commit_latency.labels(table).observe(result.commit_seconds)
        if result.appended:
            self.saw(table, result.ingested_at)

    def saw(self, table: str, ingested_at: datetime | None) -> None:
        """``table`` holds a row ingested at ``ingested_at`` (None: nothing known)."""
        if ingested_at is not None and ingested_at.timestamp() > self._newest.get(table, 0.0):
            self._newest[table] = ingested_at.timestamp()
            self.newest.labels(table).set(self._newest[table])


class StreamMetrics:
    """The Kinesis consumer: records read, how far behind each shard's iterator is, and its appends
    to the bronze stream tables."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.bronze = BronzeMetrics(registry)
        self.read = Counter("pinpipe_stream_records_read", "records read from Kinesis", ["stream"], registry=registry)
        self.iterator_age = Gauge(
            "pinpipe_stream_iterator_age_seconds",
            "how far the shard's last GetRecords was behind the tip of the shard (MillisBehindLatest)",
            ["stream", "shard"],
            registry=registry,
        )


def _label_values(metric: Gauge) -> list[tuple[str, ...]]:
    return [tuple(sample.labels.values()) for family in metric.collect() for sample in family.samples]


def serve(registry: CollectorRegistry, port: int, what: str) -> str | None:
    """Serve ``registry`` on 127.0.0.1:``port`` for Prometheus; returns the URL, or None (with a
    warning: the stage runs all the same) when the port is taken or 0 (off)."""
    if port == 0:
        return None
    try:
        start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as error:
        _log.warning("%s metrics not served: port %d: %s (set its PINPIPE_*_METRICS_PORT)", what, port, error.strerror)
        return None
    return f"http://127.0.0.1:{port}/metrics"


def push(settings: Settings, registry: CollectorRegistry, job: str, grouping: dict[str, str] | None = None) -> bool:
    """Put ``registry``'s metrics on the Pushgateway as ``job``'s (prometheus_client's
    ``push_to_gateway``), replacing what that job and grouping pushed before; False, with nothing
    said, when no Pushgateway answers: monitoring is optional."""
    try:
        push_to_gateway(settings.pushgateway_address, job, registry, grouping_key=grouping, timeout=5)
    except HTTPError as refused:
        body = refused.read().decode(errors="replace").strip()
        _log.warning("the Pushgateway refused %s's metrics: %s %s", job, refused.code, body)
        return False
    except OSError:  # no answer: a refused connection, a timeout
        return False
    return True


class _Scraped(Collector):
    """Metrics read from another process's exposition (Prometheus' text format)."""

    def __init__(self, exposition: str) -> None:
        self.families = list(text_string_to_metric_families(exposition))

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def scraped_registry(exposition: bytes) -> CollectorRegistry:
    """A registry holding the metrics of ``exposition``, to push another process's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scraped(exposition.decode()))
    return registry


def dbt_results_registry(target: Path) -> CollectorRegistry:
    """The results of the dbt invocation whose artifacts are in ``target`` (run_results.json and the
    manifest.json it wrote) as metrics (``invocation_registry``)."""
    return invocation_registry(invocation(target / "run_results.json"))


def invocation_registry(done: Invocation) -> CollectorRegistry:
    """A dbt invocation's results as metrics: each node's duration and rows, tests by model and
    status, the data-quality counts, when it ran."""
    registry = CollectorRegistry()
    duration = Gauge(
        "pinpipe_dbt_node_duration_seconds", "how long the node took", ["node", "resource_type"], registry=registry
    )
    rows = Gauge(
        "pinpipe_dbt_model_rows_affected", "rows the model wrote (when the adapter says)", ["model"], registry=registry
    )
    nodes = Gauge("pinpipe_dbt_nodes", "nodes by type and status", ["resource_type", "status"], registry=registry)
    tests = Gauge(
        "pinpipe_dbt_tests",
        "data and unit tests by the model they test and their status (pass, warn, fail, error, skipped)",
        ["model", "status"],
        registry=registry,
    )
    dirty = Gauge(
        "pinpipe_dbt_dirty_input_records", "rows each data-quality check counted", ["check"], registry=registry
    )
    Gauge("pinpipe_dbt_last_run_timestamp_seconds", "when the invocation finished (Unix time)", registry=registry).set(
        done.finished_at.timestamp()
    )
    Gauge("pinpipe_dbt_run_seconds", "the invocation's wall time", registry=registry).set(done.seconds)
    for node in done.nodes:
        duration.labels(node.name, node.resource_type).set(node.seconds)
        nodes.labels(node.resource_type, node.status).inc()
        if node.rows_affected is not None:
            rows.labels(node.name).set(node.rows_affected)
        if node.tested_model is not None:
            tests.labels(node.tested_model, node.status).inc()
        if node.dirty_input_check is not None:
            dirty.labels(node.dirty_input_check).set(node.failures or 0)
    return registry


def push_dbt_results(settings: Settings, done: Invocation, name: str) -> bool:
    """Push a dbt invocation's results (``invocation_registry``), grouped by ``name``."""
    return push(settings, invocation_registry(done), DBT_JOB, {"invocation": name})
