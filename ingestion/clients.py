"""Clients of the outside systems (S3, Kinesis, Kafka's admin API), built from the settings in one place.

Stages take these clients; nothing here starts a server (that is ``services``, a tool of the CLI,
the DAG, tests and benchmarks).
"""

from __future__ import annotations

import logging
from typing import Any

from ingestion.config import Settings
from ingestion.errors import LakeMissing, ServiceDown


def _retrying() -> Any:
    """Transient errors (throttling, 5xx, lost connections) retried with jittered exponential backoff,
    a few seconds in all; longer outages end the call, and a supervised stage restarts."""
    from botocore.config import Config

    return Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30)


def s3_client(settings: Settings) -> Any:  # boto3's client classes are generated at run time
    """A boto3 S3 client for the configured endpoint (the local server, or AWS when none is set)."""
    return _aws_client("s3", settings.s3_endpoint_url, settings)


def bucket_and_prefix(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` → ``("bucket", "some/prefix")``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def kafka_unanswered(bootstrap_servers: str, cause: str) -> ServiceDown:
    return ServiceDown(
        f"Kafka at {bootstrap_servers} does not answer ({cause}): start it with `pinpipe services up`, "
        "or set PINPIPE_KAFKA_PORT"
    )


def require_kafka(settings: Settings) -> None:
    """The broker answers (a stage that starts a JVM first would learn it minutes later)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    servers = settings.kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": servers}, logger=logging.getLogger("librdkafka"))
    try:
        admin.list_topics(timeout=10)
    except KafkaException as error:
        raise kafka_unanswered(servers, error.args[0].name()) from None


def require_lake_bucket(settings: Settings) -> None:
    """An ``s3://`` lake's bucket exists: delta-rs reports a missing one as "Generic S3 error"."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = bucket_and_prefix(settings.lake)
    try:
        s3_client(settings).head_bucket(Bucket=bucket)
    except BotoCoreError as error:  # no endpoint, no credentials
        raise lake_unreadable(settings, error) from None
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        raise LakeMissing(
            f"the lake's bucket {bucket!r} does not exist at {settings.s3_endpoint_url or 'AWS S3'}: create it"
            f" (`pinpipe services up` creates {settings.s3_bucket!r} on the local S3 server), or point --lake"
            " (PINPIPE_LAKE) at a bucket that exists"
        ) from None


def lake_unreadable(settings: Settings, error: Exception) -> ServiceDown:
    return ServiceDown(
        f"cannot read the lake {settings.lake} at {settings.s3_endpoint_url or 'AWS S3'}"
        f" ({str(error).strip().splitlines()[0]}): start the local services with `pinpipe services up`,"
        " or check PINPIPE_S3_ENDPOINT_URL and the S3 credentials"
    )


def kinesis_client(settings: Settings) -> Any:
    """A boto3 Kinesis client for the configured endpoint (the local Kinesis by default)."""
    return _aws_client("kinesis", settings.kinesis_url, settings)


def _aws_client(service: str, endpoint_url: str | None, settings: Settings) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        config=_retrying(),
    )


def kafka_admin(settings: Settings) -> Any:
    """Kafka's admin client for the configured broker (topics, metadata)."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=5_000)
