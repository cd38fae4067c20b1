"""Apache Kafka 4, one node in KRaft mode, from Maven Central."""

from __future__ import annotations

import base64
import logging
import subprocess
import time
import uuid
from pathlib import Path
from string import Template

from ingestion.clients import kafka_admin
from ingestion.config import PROJECT_DIR, Settings
from ingestion.services.fetch import maven_classpath
from ingestion.services.process import ManagedProcess, ServiceError, port_open

KAFKA_FILES = PROJECT_DIR / "services" / "kafka"


def kafka_libs(cache_dir: Path) -> Path:
    """The broker's jars, fetched from Maven Central into the cache once."""
    return maven_classpath(cache_dir, KAFKA_FILES / "pom.xml")


def _cluster_id() -> str:
    """A cluster id as `kafka-storage random-uuid` makes one: a UUID in URL-safe base64, never one
    that starts with "-" (which a command line would take for an option)."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id


class KafkaBroker:
    """Apache Kafka 4, one node in KRaft mode (broker and controller), jars from Maven Central."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("kafka", settings.state_dir, "127.0.0.1", settings.kafka_port)

    def up(self) -> None:
        if not self.process.status().running:
            libs = kafka_libs(self.settings.cache_dir)
            config = self._write_config()
            (agent,) = libs.glob("jmx_prometheus_javaagent-*.jar")
            java = [
                "java",
                "-Xms256m",
                "-Xmx1g",
                "-cp",
                # the agent is loaded with -javaagent only
                ":".join(str(jar) for jar in sorted(libs.glob("*.jar")) if jar != agent),
                f"-Dlog4j2.configurationFile={KAFKA_FILES / 'log4j2.properties'}",
            ]
            if not (self.process.home / "data" / "meta.properties").exists():
                cluster_id = _cluster_id()
                # a one-shot tool: the JIT's first tier is enough
                storage_tool = [java[0], "-XX:TieredStopAtLevel=1", *java[1:], "kafka.tools.StorageTool"]
                subprocess.run(
                    [*storage_tool, "format", "--standalone", "-t", cluster_id, "-c", str(config)],
                    check=True,
                    capture_output=True,
                )
            # the broker's metrics for Prometheus (JMX exporter); the storage tool above runs without it
            rules = KAFKA_FILES / "jmx-exporter.yml"
            exporter = f"-javaagent:{agent}=127.0.0.1:{self.settings.kafka_metrics_port}:{rules}"
            self.process.start([java[0], exporter, *java[1:], "kafka.Kafka", str(config)])
            self.process.wait_ready(self._answers, timeout=60)
        self.ensure_topics()
        self._wait_for_group_coordinator()

    def _write_config(self) -> Path:
        template = Template((KAFKA_FILES / "server.properties").read_text())
        config = self.process.home / "server.properties"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            template.substitute(
                port=self.settings.kafka_port,
                controller_port=self.settings.kafka_controller_port,
                data_dir=self.process.home / "data",
                partitions=self.settings.kafka_partitions,
            )
        )
        return config

    def _answers(self) -> bool:
        if not port_open("127.0.0.1", self.settings.kafka_port):
            return False
        try:
            admin = kafka_admin(self.settings)
        except Exception:  # noqa: BLE001 - the broker accepts connections before it serves metadata
            return False
        admin.close()
        return True

    def _wait_for_group_coordinator(self, timeout: float = 90, attempt_s: float = 20) -> None:
        """Kafka creates its offsets topic on the first consumer group and answers NOT_COORDINATOR
        until it is loaded: a probe group joins once here, so the sink never waits on that. Each
        attempt is a new probe in a new group: after a restart, kafka-python's probe can stay stuck
        on a coordinator it marked dead, and a group of an old name may hold a member of the last
        run that the coordinator waits for."""
        from kafka import KafkaConsumer

        # kafka-python warns at every NOT_COORDINATOR answer, which is what this waits out
        logging.getLogger("kafka").setLevel(logging.ERROR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = KafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                group_id=f"pinpipe-ready-{uuid.uuid4().hex[:8]}",
                metadata_max_age_ms=1_000,
            )
            try:
                probe.subscribe([self.settings.topics[0]])
                given_up = min(deadline, time.monotonic() + attempt_s)
                while time.monotonic() < given_up:
                    probe.poll(timeout_ms=200)
                    if probe.assignment():
                        return
            finally:
                probe.close()
        raise ServiceError(f"kafka: no consumer group could join in {timeout:.0f} s; see {self.process.log}")

    def ensure_topics(self) -> None:
        from kafka.admin import NewTopic

        admin = kafka_admin(self.settings)
        try:
            missing = set(self.settings.topics) - set(admin.list_topics())
            if missing:
                admin.create_topics([NewTopic(t, self.settings.kafka_partitions, 1) for t in sorted(missing)])
        finally:
            admin.close()

    def down(self) -> None:
        self.process.stop()
