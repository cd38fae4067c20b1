"""Monitoring: the alert rules under promtool, what dbt's artifacts become as metrics, Prometheus'
generated configuration; and, on the real services, a full stack scraped by a real Prometheus."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestion.config import PROJECT_DIR, Settings
from ingestion.metrics import dbt_results_registry
from ingestion.services import (
    KafkaBroker,
    KinesisServer,
    PrometheusServer,
    Pushgateway,
    S3Server,
    ServiceError,
    free_port,
    scrape_config,
)

from helpers import KinesisServers, answers, eventually, prometheus_value

MONITORING = PROJECT_DIR / "monitoring"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not installed: `apt-get install prometheus prometheus-pushgateway` (Debian, Ubuntu)"
    return found


@pytest.mark.slow  # Debian's promtool: `make test-fast` needs nothing but Python
def test_the_alert_rules_are_valid_and_pass_their_promtool_tests() -> None:
    rules = sorted(str(path) for path in (MONITORING / "rules").glob("*.yml"))
    checked = subprocess.run([_promtool(), "check", "rules", *rules], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(str(path) for path in (MONITORING / "tests").glob("*.yml"))
    tested = subprocess.run([_promtool(), "test", "rules", *tests], capture_output=True, text=True, cwd=MONITORING)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _alert(name: str) -> dict[str, Any]:
    groups = yaml.safe_load((MONITORING / "rules" / "pinpipe.yml").read_text())["groups"]
    return next(rule for group in groups for rule in group["rules"] if rule.get("alert") == name)


def test_the_stale_bronze_alerts_use_the_freshness_the_sources_declare() -> None:
    sources = yaml.safe_load((PROJECT_DIR / "models/staging/pinterest/_pinterest__sources.yml").read_text())
    seconds = {"minute": 60, "hour": 3600, "day": 86400}
    declared = {}
    for source in sources["sources"]:
        default = source["config"]["freshness"]
        for table in source["tables"]:
            freshness = table.get("config", {}).get("freshness", default)
            if freshness:
                declared[table["name"]] = {
                    level: freshness[level]["count"] * seconds[freshness[level]["period"]]
                    for level in ("warn_after", "error_after")
                }
    assert set(declared) == {"pin", "geo", "user"}  # the stream tables declare none: no alert for them
    for alert, level in (("PinpipeBronzeStale", "warn_after"), ("PinpipeBronzeStaleError", "error_after")):
        expression = _alert(alert)["expr"]
        tables = set(re.search(r'table=~"([^"]+)"', expression).group(1).split("|"))
        threshold = math.prod(int(n) for n in re.findall(r"\d+", expression.rsplit(">", 1)[1]))
        assert tables == set(declared)
        assert {threshold} == {limits[level] for limits in declared.values()}, alert


def _artifacts(target: Path, results: list[dict[str, Any]], nodes: dict[str, Any], unit_tests: dict[str, Any]) -> None:
    target.mkdir(parents=True)
    run = {"metadata": {"generated_at": "2026-12-01T12:00:00Z"}, "elapsed_time": 12.5, "results": results}
    (target / "run_results.json").write_text(json.dumps(run))
    (target / "manifest.json").write_text(json.dumps({"nodes": nodes, "unit_tests": unit_tests}))


def test_a_dbt_invocations_artifacts_become_metrics_by_node_model_and_check(tmp_path: Path) -> None:
    model, mart = "model.pinpipe.stg_pinterest__pins", "model.pinpipe.users_joined_by_year"
    nodes = {
        model: {"resource_type": "model", "name": "stg_pinterest__pins"},
        mart: {"resource_type": "model", "name": "users_joined_by_year"},
        "test.pinpipe.unique_ind": {
            "resource_type": "test",
            "name": "unique_ind",
            "attached_node": model,
            "config": {"meta": {}},
        },
        "test.pinpipe.rows_match": {  # a test of two models, attached to neither: the first model it reads
            "resource_type": "test",
            "name": "rows_match",
            "attached_node": None,
            "depends_on": {"nodes": ["seed.pinpipe.age_groups", mart, model]},
            "config": {"meta": {}},
        },
        "test.pinpipe.pins_without_category": {
            "resource_type": "test",
            "name": "pins_without_category",
            "attached_node": model,
            "config": {"meta": {"dirty_input_check": "pins_without_category"}},
        },
    }
    unit_tests = {
        "unit_test.pinpipe.users_joined_by_year.counts": {
            "resource_type": "unit_test",
            "name": "counts",
            "depends_on": {"nodes": [mart]},
        }
    }
    results = [
        {"unique_id": model, "status": "success", "execution_time": 1.5, "adapter_response": {"rows_affected": 40}},
        {"unique_id": mart, "status": "success", "execution_time": 0.5, "adapter_response": {}},
        {"unique_id": "test.pinpipe.unique_ind", "status": "fail", "execution_time": 0.1, "failures": 3},
        {"unique_id": "test.pinpipe.rows_match", "status": "pass", "execution_time": 0.1, "failures": 0},
        {"unique_id": "test.pinpipe.pins_without_category", "status": "warn", "execution_time": 0.1, "failures": 7},
        {"unique_id": "unit_test.pinpipe.users_joined_by_year.counts", "status": "pass", "execution_time": 0.2},
    ]
    _artifacts(tmp_path / "target", results, nodes, unit_tests)
    registry = dbt_results_registry(tmp_path / "target")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("pinpipe_dbt_node_duration_seconds", node="stg_pinterest__pins", resource_type="model") == 1.5
    assert sample("pinpipe_dbt_model_rows_affected", model="stg_pinterest__pins") == 40
    assert sample("pinpipe_dbt_model_rows_affected", model="users_joined_by_year") is None  # not reported
    assert sample("pinpipe_dbt_tests", model="stg_pinterest__pins", status="fail") == 1
    assert sample("pinpipe_dbt_tests", model="stg_pinterest__pins", status="warn") == 1
    assert sample("pinpipe_dbt_tests", model="users_joined_by_year", status="pass") == 2  # rows_match and the unit test
    assert sample("pinpipe_dbt_dirty_input_records", check="pins_without_category") == 7
    assert sample("pinpipe_dbt_nodes", resource_type="test", status="fail") == 1
    assert sample("pinpipe_dbt_nodes", resource_type="model", status="success") == 2
    assert sample("pinpipe_dbt_last_run_timestamp_seconds") == 1796126400  # 2026-12-01T12:00:00Z
    assert sample("pinpipe_dbt_run_seconds") == 12.5


def test_without_debians_packages_the_monitoring_services_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    settings = Settings(state_dir=tmp_path / "state", prometheus_port=free_port(), pushgateway_port=free_port())
    for server in (Pushgateway(settings), PrometheusServer(settings)):
        with pytest.raises(ServiceError, match=r"not installed: `apt-get install prometheus prometheus-pushgateway`"):
            server.up()


def test_prometheus_scrapes_every_component_under_the_job_it_pushes_as() -> None:
    settings = Settings(sink_metrics_port=19101, loader_metrics_port=0, scrape_interval_seconds=2)
    config = scrape_config(settings)
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "pinpipe_api": [f"127.0.0.1:{settings.api_port}"],
        "pinpipe_sink": ["127.0.0.1:19101"],
        "pinpipe_stream": [f"127.0.0.1:{settings.stream_metrics_port}"],
        "kafka": [f"127.0.0.1:{settings.kafka_metrics_port}"],
        "prometheus": [f"127.0.0.1:{settings.prometheus_port}"],
        "pushgateway": [f"127.0.0.1:{settings.pushgateway_port}"],
    }  # the loader's metrics are off (port 0)
    pushgateway = next(job for job in config["scrape_configs"] if job["job_name"] == "pushgateway")
    assert pushgateway["honor_labels"] is True  # a pushed job keeps its own name
    assert config["global"]["scrape_interval"] == "2s"
    assert config["rule_files"] == [str(MONITORING / "rules" / "*.yml")]


@pytest.fixture
def monitored(
    s3_server: S3Server,
    kafka_broker: KafkaBroker,
    kinesis_servers: KinesisServers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Settings]:
    """A full stack of its own (topics, streams, bucket, lake, ports) on the session's real S3
    server, Kafka broker and kinesalite, with Prometheus and the Pushgateway scraping every second."""
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        state_dir=tmp_path / "state",
        kafka_port=kafka_broker.settings.kafka_port,
        kafka_controller_port=kafka_broker.settings.kafka_controller_port,
        kafka_metrics_port=kafka_broker.settings.kafka_metrics_port,
        s3_port=s3_server.settings.s3_port,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=f"test-{run}",
        sink_group=f"sink-{run}",
        topics=(f"pin-{run}", f"geo-{run}", f"user-{run}"),
        kinesis_server="kinesalite",
        kinesis_port=kinesis_servers.get("kinesalite").settings.kinesis_port,
        kinesis_shards=2,
        streams=tuple(f"test-{run}-{table}" for table in ("pin", "geo", "user")),
        lake=f"s3://test-{run}/lake",
        warehouse=str(tmp_path / "warehouse.duckdb"),
        api_port=free_port(),
        sink_metrics_port=free_port(),
        loader_metrics_port=free_port(),
        stream_metrics_port=free_port(),
        prometheus_port=free_port(),
        pushgateway_port=free_port(),
        scrape_interval_seconds=1,
    )
    s3_server.ensure_bucket(settings.s3_bucket)
    KafkaBroker(settings).ensure_topics()
    KinesisServer(settings).ensure_streams()
    servers = [Pushgateway(settings), PrometheusServer(settings)]
    try:
        for server in servers:
            server.up()
        yield settings
    finally:
        for server in servers:
            server.down()


@pytest.mark.minutes
@pytest.mark.slow
def test_prometheus_sees_every_record_of_both_paths_no_lag_fresh_bronze_and_the_dbt_results(
    monitored: Settings, tmp_path: Path
) -> None:
    settings, posts, streamed = monitored, 600, 200
    env = {**os.environ, **settings.environment(), "DBT_TARGET_PATH": str(tmp_path / "target")}
    pinpipe = str(Path(sys.executable).parent / "pinpipe")
    stages = {
        "api": [pinpipe, "api", "--workers", "2"],  # two workers: /metrics must count both
        "sink": [pinpipe, "sink", "--flush-seconds", "1"],
        "loader": [pinpipe, "load", "--every", "1"],
        "stream": [pinpipe, "stream"],
    }
    running = {
        name: subprocess.Popen(command, env=env, stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        for name, command in stages.items()
    }
    prometheus = f"http://127.0.0.1:{settings.prometheus_port}"
    try:
        api = f"http://127.0.0.1:{settings.api_port}"
        assert eventually(lambda: answers(f"{api}/healthz"), 60), (tmp_path / "api.log").read_text()
        for to, count in (("api", posts), ("kinesis", streamed)):
            emulated = subprocess.run(
                [pinpipe, "emulate", "--to", to, "--posts", str(count), "--batch-size", "100"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert emulated.returncode == 0, emulated.stderr + (tmp_path / "api.log").read_text()[-3000:]
        topics, streams = "|".join(settings.topics), "|".join(settings.streams)
        wanted = {
            f'sum(pinpipe_api_records_accepted_total{{topic=~"{topics}"}})': 3 * posts,
            f'sum(pinpipe_api_records_accepted_total{{topic=~"{streams}"}})': 3 * streamed,
            "sum(pinpipe_sink_records_stored_total)": 3 * posts,
            "sum(pinpipe_sink_consumer_lag_records)": 0,
            "count(pinpipe_sink_consumer_lag_records)": 3 * settings.kafka_partitions,
            'sum(pinpipe_bronze_records_appended_total{job="pinpipe_loader"})': 3 * posts,
            'sum(pinpipe_bronze_records_appended_total{job="pinpipe_stream"})': 3 * streamed,
            "sum(pinpipe_bronze_records_quarantined_total)": 0,
            "count(pinpipe:bronze_freshness_seconds < 120)": 6,  # the batch and the stream tables
            "count(pinpipe_stream_iterator_age_seconds)": 3 * settings.kinesis_shards,
            f'sum(kafka_server_topic_messages_in_total{{topic=~"{topics}"}}) >= bool {3 * posts}': 1,
            'count(up{job=~"pinpipe_.*|kafka|pushgateway|prometheus"} == 1)': 7,
        }

        def values() -> dict[str, float | None]:
            return {query: prometheus_value(prometheus, query) for query in wanted}

        assert eventually(lambda: values() == wanted, 120), values()
    finally:
        for process in running.values():
            process.terminate()
        for process in running.values():
            process.wait(timeout=60)

    # the daily build's results, pushed by `pinpipe transform`
    build = subprocess.run([pinpipe, "transform"], env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    dbt = {
        'sum(pinpipe_dbt_tests{invocation="pinpipe_build", status=~"fail|error"}) or vector(0)': 0,
        'count(pinpipe_dbt_tests{invocation="pinpipe_build", status="pass"}) > bool 10': 1,
        'count(pinpipe_dbt_node_duration_seconds{invocation="pinpipe_build", resource_type="model"}) > bool 15': 1,
        'count(pinpipe_dbt_dirty_input_records{invocation="pinpipe_build"}) > bool 5': 1,
        'time() - pinpipe_dbt_last_run_timestamp_seconds{invocation="pinpipe_build"} < bool 300': 1,
    }
    assert eventually(lambda: {q: prometheus_value(prometheus, q) for q in dbt} == dbt, 60), {
        q: prometheus_value(prometheus, q) for q in dbt
    }
