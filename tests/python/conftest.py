from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.config import Settings
from ingestion.lake import Lake
from ingestion.services import KafkaBroker, S3Server, free_port

from helpers import Dbt, KinesisServers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of minutes first: xdist hands out its groups largest first, then single tests in
    this order, and a long test handed out last would keep one worker busy while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("minutes") is None)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A lake, a warehouse and a dbt target directory of the test's own."""
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    return Settings(lake=str(tmp_path / "lake"), warehouse=str(tmp_path / "warehouse.duckdb"), target="local")


@pytest.fixture(scope="session")
def dbt() -> Dbt:
    return Dbt()


@pytest.fixture(scope="session")
def spark_warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Spark warehouse and metastore for the whole session: dbt-spark's in-process session is
    started once per process, and the first one fixes where its metastore lives."""
    return str(tmp_path_factory.mktemp("spark"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The real S3 server (versitygw), started once for the session on a free port."""
    server = S3Server(Settings(state_dir=tmp_path_factory.mktemp("state"), s3_port=free_port()))
    server.up()
    yield server
    server.down()


BROKER_PORTS = ("kafka_port", "kafka_controller_port", "kafka_metrics_port")


def _broker_on_free_ports(tmp_path_factory: pytest.TempPathFactory) -> KafkaBroker:
    state_dir = tmp_path_factory.mktemp("state")
    return KafkaBroker(Settings(state_dir=state_dir, **{port: free_port() for port in BROKER_PORTS}))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The real Kafka broker (KRaft, single node), started once for the session on free ports."""
    broker = _broker_on_free_ports(tmp_path_factory)
    broker.up()
    yield broker
    broker.down()


@pytest.fixture(scope="session")
def kinesis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinesisServers]:
    servers = KinesisServers(tmp_path_factory.mktemp("kinesis"))
    yield servers
    for server in servers.running.values():
        server.down()


@pytest.fixture(scope="session")
def disposable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A second real broker, for the tests that stop and start one (outages, restarts): the session's
    broker stays up for every other test. Started by the first test that takes it (`stack_to_stop`)."""
    broker = _broker_on_free_ports(tmp_path_factory)
    yield broker
    broker.down()


@pytest.fixture
def stack_to_stop(stack: Settings, disposable_broker: KafkaBroker) -> tuple[Settings, KafkaBroker]:
    """``stack`` on the disposable broker, up with the test's topics: the test may stop it."""
    broker_settings = ("state_dir", *BROKER_PORTS)
    settings = stack.model_copy(update={name: getattr(disposable_broker.settings, name) for name in broker_settings})
    broker = KafkaBroker(settings)
    broker.up()  # a previous test may have left it down; brings the test's topics
    return settings, broker


@pytest.fixture(params=["confluent-kafka", "kafka-python"])
def stack(
    s3_server: S3Server,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Settings:
    """Settings for one test on the real services, with each Kafka client: its own topics, bucket,
    lake, warehouse and API port."""
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        state_dir=kafka_broker.settings.state_dir,
        kafka_port=kafka_broker.settings.kafka_port,
        kafka_controller_port=kafka_broker.settings.kafka_controller_port,
        s3_port=s3_server.settings.s3_port,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=f"test-{run}",
        sink_group=f"sink-{run}",
        topics=(f"pin-{run}", f"geo-{run}", f"user-{run}"),
        lake=f"s3://test-{run}/lake",
        warehouse=str(tmp_path / "warehouse.duckdb"),
        api_port=free_port(),
        kafka_client=request.param,
    )
    s3_server.ensure_bucket(settings.s3_bucket)
    KafkaBroker(settings).ensure_topics()
    return settings
