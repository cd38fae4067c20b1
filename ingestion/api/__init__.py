"""The ingest API (FastAPI): Kafka REST Proxy v2 compatible topics and the seeds' Kinesis streams."""

from ingestion.api.app import create_app

__all__ = ["create_app"]
