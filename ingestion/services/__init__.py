"""Local services the full stack runs on, fetched from package registries and started on loopback.

Every service keeps its data, log and pid file under ``<state dir>/<name>/``; downloads and builds
are cached under the cache directory and reused. ``up`` is idempotent: a service already answering
on its port is left alone.
"""

from ingestion.services.kafka import KafkaBroker
from ingestion.services.kinesis import KinesisServer
from ingestion.services.monitoring import PrometheusServer, Pushgateway, scrape_config
from ingestion.services.postgres import PostgresServer
from ingestion.services.process import ServiceError, ServiceStatus, free_port
from ingestion.services.s3 import S3Server

__all__ = [
    "KafkaBroker",
    "KinesisServer",
    "PostgresServer",
    "PrometheusServer",
    "Pushgateway",
    "S3Server",
    "ServiceError",
    "ServiceStatus",
    "free_port",
    "scrape_config",
]
