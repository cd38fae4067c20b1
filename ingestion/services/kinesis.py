"""The local Kinesis: kinesis-mock or kinesalite, from npm."""

from __future__ import annotations

import time
from pathlib import Path

from ingestion.clients import kinesis_client
from ingestion.config import Settings
from ingestion.services.fetch import npm_package
from ingestion.services.process import ManagedProcess, ServiceError, free_port, port_open

# kinesis-mock's Node.js build, the Kinesis LocalStack runs
KINESIS_MOCK_PACKAGE = "kinesis-local"
KINESIS_MOCK_VERSION = "0.6.2"
# the last kinesalite release (2020); in memory, its optional native LevelDB left out
KINESALITE_PACKAGE = "kinesalite"
# keeps kinesalite up when a client goes away mid-request (the file says why)
KINESALITE_PRELOAD = Path(__file__).with_name("kinesalite_preload.cjs")
KINESALITE_VERSION = "3.3.3"
# open shards allowed across all streams (AWS' default is 500 or 200 by region, the local servers' 50
# or 10): high, since tests and benchmarks create many streams on one server
SHARD_LIMIT = 100_000


def kinesis_mock_package(cache_dir: Path) -> Path:
    """kinesis-mock's npm package, installed into the cache once."""
    return npm_package(cache_dir, KINESIS_MOCK_PACKAGE, KINESIS_MOCK_VERSION)


def kinesalite_package(cache_dir: Path) -> Path:
    """kinesalite's npm package, installed into the cache once."""
    return npm_package(cache_dir, KINESALITE_PACKAGE, KINESALITE_VERSION)


class KinesisServer:
    """The local Kinesis on plain HTTP, with the configured streams created: kinesalite by default,
    kinesis-mock (npm ``kinesis-local``) with ``kinesis_server``.

    Both keep the streams in memory: a restart starts them empty, like LocalStack's. With
    ``kinesis_persist`` kinesis-mock writes them under the service's folder every 5 s and reloads
    them on start, but each write serializes every stream whole and stalls reads for seconds as they
    grow (p95 latency 2.7 s → 8.4 s in the streaming benchmark).

    kinesis-mock's cost per call grows with the records a stream holds (its PutRecords hashes every
    record of the shards it writes to), so on two cores its one Node.js thread saturates within a
    minute at a few hundred records/s; kinesalite's cost stays flat (BENCHMARKS.md), hence the default.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("kinesis", settings.state_dir, "127.0.0.1", settings.kinesis_port)

    def up(self) -> None:
        if not self.process.status().running:
            command, env = self._kinesalite() if self.settings.kinesis_server == "kinesalite" else self._kinesis_mock()
            self.process.start(command, env=env)
            self.process.wait_ready(self._answers, timeout=60)
        self.ensure_streams()

    def _kinesis_mock(self) -> tuple[list[str], dict[str, str]]:
        package = kinesis_mock_package(self.settings.cache_dir)
        data = self.process.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        return ["node", str(package / "main.js")], {
            "KINESIS_MOCK_CERT_PATH": str(package / "server.json"),
            "KINESIS_MOCK_PLAIN_PORT": str(self.settings.kinesis_port),
            # it always listens on TLS too; unused here, so any free port rather than a fixed one that may be taken
            "KINESIS_MOCK_TLS_PORT": str(free_port()),
            "AWS_REGION": self.settings.s3_region,
            "SHOULD_PERSIST_DATA": str(self.settings.kinesis_persist).lower(),
            "PERSIST_PATH": str(data),
            "PERSIST_INTERVAL": "5s",
            "CREATE_STREAM_DURATION": "100ms",
            "SPLIT_SHARD_DURATION": "100ms",
            "MERGE_SHARDS_DURATION": "100ms",
            "SHARD_LIMIT": str(SHARD_LIMIT),
            "LOG_LEVEL": "WARN",
        }

    def _kinesalite(self) -> tuple[list[str], dict[str, str]]:
        if self.settings.kinesis_persist:
            raise ServiceError(
                "kinesalite keeps its streams in memory only here: unset PINPIPE_KINESIS_PERSIST or use kinesis-mock"
            )
        package = kinesalite_package(self.settings.cache_dir)
        return [
            "node",
            "--require",
            str(KINESALITE_PRELOAD),
            str(package / "cli.js"),
            "--port",
            str(self.settings.kinesis_port),
            "--shardLimit",
            str(SHARD_LIMIT),
            "--createStreamMs",
            "100",
            "--deleteStreamMs",
            "100",
            "--updateStreamMs",
            "100",
        ], {}

    def _answers(self) -> bool:
        from botocore.exceptions import EndpointConnectionError

        if not port_open("127.0.0.1", self.settings.kinesis_port):
            return False
        try:
            kinesis_client(self.settings).list_streams()
        except EndpointConnectionError:  # a server that failed start-up can close the port again
            return False
        return True

    def ensure_streams(self, timeout: float = 30) -> None:
        client = kinesis_client(self.settings)
        existing = set(client.list_streams()["StreamNames"])
        for stream in self.settings.streams:
            if stream not in existing:
                client.create_stream(StreamName=stream, ShardCount=self.settings.kinesis_shards)
        deadline = time.monotonic() + timeout
        for stream in self.settings.streams:
            while (
                client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
                != "ACTIVE"
            ):
                if time.monotonic() > deadline:
                    raise ServiceError(f"stream {stream} not ACTIVE after {timeout:.0f} s")
                time.sleep(0.1)

    def down(self) -> None:
        self.process.stop()
