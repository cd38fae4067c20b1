"""Prometheus and the Pushgateway (Debian's packages), and Prometheus' configuration."""

from __future__ import annotations

import shutil
from typing import Any

import yaml

from ingestion import metrics
from ingestion.config import PROJECT_DIR, Settings
from ingestion.services.process import ManagedProcess, ServiceError, http_ok

MONITORING_FILES = PROJECT_DIR / "monitoring"
MONITORING_PACKAGES = "apt-get install prometheus prometheus-pushgateway"


def debian_binary(name: str) -> str:
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
        binary = debian_binary("prometheus-pushgateway")
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
        self.process.wait_ready(lambda: http_ok(f"http://127.0.0.1:{self.settings.pushgateway_port}/-/ready"), 30)

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
            if not http_ok(f"{self.url}/-/reload", method="POST"):
                raise ServiceError(
                    f"the Prometheus on {self.url} is not this project's (it refuses to reload): "
                    "stop it, or set PINPIPE_PROMETHEUS_PORT"
                )
            return
        binary = debian_binary("prometheus")
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
        self.process.wait_ready(lambda: http_ok(f"{self.url}/-/ready"), 60)

    def down(self) -> None:
        self.process.stop()
