"""Every server's download and build done ahead of its first start: Kafka's jars (Maven Central),
versitygw (the Go module proxy), kinesis-mock and kinesalite (npm). Each takes its cache lock, so a
server starting meanwhile waits for it instead of building it twice."""

from __future__ import annotations

from pathlib import Path

from ingestion.services.kafka import kafka_libs
from ingestion.services.kinesis import kinesalite_package, kinesis_mock_package
from ingestion.services.s3 import versitygw_binary


def fetch_servers(cache_dir: Path) -> list[str]:
    """Fetch and build what the local servers run, into ``cache_dir``; the servers' names."""
    fetchers = {
        "kafka": kafka_libs,
        "versitygw": versitygw_binary,
        "kinesis-mock": kinesis_mock_package,
        "kinesalite": kinesalite_package,
    }
    for fetch in fetchers.values():
        fetch(cache_dir)
    return list(fetchers)
