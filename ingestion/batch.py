"""The batch path's catch-up steps, run the same way by `pinpipe sink --until-caught-up`,
`pinpipe load`, `pinpipe run --stack full` and the daily DAG: each ends by pushing its metrics to
the Pushgateway (False when none answers: monitoring is optional)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from ingestion import metrics
from ingestion.bronze import AppendResult
from ingestion.config import Settings
from ingestion.load import RawFile, load_raw_objects
from ingestion.sink import FlushPolicy, S3Sink, SinkStats


def sink_until_caught_up(
    settings: Settings,
    policy: FlushPolicy = FlushPolicy(),
    on_flush: Callable[[str, int], None] | None = None,
) -> tuple[SinkStats, bool]:
    """Kafka → S3 objects until every record present at the start is stored; the stats, and
    whether the metrics were pushed."""
    observed = metrics.SinkMetrics(CollectorRegistry())
    stats = S3Sink.from_settings(settings, policy, observed).run(until_caught_up=True, on_flush=on_flush)
    return stats, metrics.push(settings, observed.registry, metrics.SINK_JOB)


def load_new_objects(
    settings: Settings,
    source: str | None = None,
    on_commit: Callable[[AppendResult, list[RawFile]], None] | None = None,
) -> tuple[list[AppendResult], bool]:
    """Every raw record of ``source`` (default the sink's objects) not yet in bronze, exactly once;
    the appends, and whether the metrics were pushed."""
    observed = metrics.BronzeMetrics(CollectorRegistry())
    results = load_raw_objects(settings, source=source, on_commit=on_commit, metrics=observed)
    return results, metrics.push(settings, observed.registry, metrics.LOADER_JOB)
