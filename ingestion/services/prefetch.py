"""Every server's download and build done ahead of its first start: Kafka's jars (Maven Central),
versitygw (the Go module proxy), kinesis-mock and kinesalite (npm). Each takes its cache lock, so a
server starting meanwhile waits for it instead of building it twice."""

from __future__ import annotations

from pathlib import Path

from ingestion.services.fetch import go_binary, maven_classpath, npm_package
from ingestion.services.kafka import KAFKA_FILES
from ingestion.services.kinesis import (
    KINESALITE_PACKAGE,
    KINESALITE_VERSION,
    KINESIS_MOCK_PACKAGE,
    KINESIS_MOCK_VERSION,
)
from ingestion.services.s3 import VERSITYGW_MODULE, VERSITYGW_VERSION


def fetch_servers(cache_dir: Path) -> list[str]:
    """Fetch and build what the local servers run, into ``cache_dir``; the servers' names."""
    maven_classpath(cache_dir, KAFKA_FILES / "pom.xml")
    go_binary(cache_dir, VERSITYGW_MODULE, VERSITYGW_VERSION)
    npm_package(cache_dir, KINESIS_MOCK_PACKAGE, KINESIS_MOCK_VERSION)
    npm_package(cache_dir, KINESALITE_PACKAGE, KINESALITE_VERSION)
    return ["kafka", "versitygw", "kinesis-mock", "kinesalite"]
