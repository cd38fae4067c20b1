"""The ingest API (FastAPI): Kafka REST Proxy v2 compatible topics and the seeds' Kinesis streams."""

from fastapi import FastAPI

from ingestion.api.app import create_app
from ingestion.config import Settings
from ingestion.output import debugging, quiet_client_logs

__all__ = ["app_from_environment", "create_app"]


def app_from_environment() -> FastAPI:
    """The API of the ``PINPIPE_*`` environment: what each worker process of `pinpipe api` serves."""
    quiet_client_logs(debugging([]))
    return create_app(Settings())
