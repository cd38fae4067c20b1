"""Kafka REST Proxy v2 compatible ``POST /topics/{topic}``: every record validated, then produced."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ingestion.api.common import (
    ApiError,
    Requests,
    encoded_records,
    invalid_records,
    raw_record_problems,
)
from ingestion.api.idempotency import IdempotencyStore, OutcomeUnknown, answered_once
from ingestion.bus import CommitUnknown, KafkaBus, RecordRefused
from ingestion.faults import Fault, classify
from ingestion.schemas import IDEMPOTENCY_KEY, KAFKA_JSON, KEY_FIELD

ACCEPTED_CONTENT_TYPES = {KAFKA_JSON, "application/json"}


SHAPE = '{"records": [{"key"?, "value": {...}}]}'


def _produce_request(payload: object) -> list[dict[str, Any]]:
    """The request's records, each ``{"key"?, "value": {...}}``; a 422 naming what is off otherwise.
    Checked by hand: a model of the envelope would validate every value twice."""
    records = payload.get("records") if isinstance(payload, dict) else None
    if not isinstance(records, list):
        raise ApiError(422, f"Request must be {SHAPE}: records: a list is required", 42200)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("value"), dict):
            raise ApiError(422, f"Request must be {SHAPE}: records.{index}.value: an object is required", 42200)
        key = record.get("key")
        if key is not None and (isinstance(key, bool) or not isinstance(key, str | int)):
            raise ApiError(422, f"Request must be {SHAPE}: records.{index}.key: a string or an integer", 42200)
    return records


def topics_router(requests: Requests, bus: KafkaBus, store: IdempotencyStore) -> APIRouter:
    settings, metrics = requests.settings, requests.metrics
    topics = set(settings.topics)
    router = APIRouter()

    @router.post("/topics/{topic}", summary="Produce records to a topic (Kafka REST Proxy v2)", response_model=None)
    async def produce(topic: str, request: Request) -> dict[str, Any] | Response:
        if topic not in topics:
            raise ApiError(404, f"Topic {topic!r} not found; topics are {sorted(topics)}.", 40401)
        payload = await requests.json(request, ACCEPTED_CONTENT_TYPES)
        records = _produce_request(payload)
        table = settings.topic_tables[topic]
        values = [record["value"] for record in records]
        problems = raw_record_problems(table, values, "records[{}].value")
        if problems:
            metrics.rejected.labels(topic).inc(len(values))
            raise invalid_records(problems, "produced")
        encoded = encoded_records(values, "records[{}].value")
        if isinstance(encoded, ApiError):
            metrics.rejected.labels(topic).inc(len(values))
            raise encoded
        # the post's key partitions its pin, geo and user records alike, unless the client sets one
        keys = [r["key"] if r.get("key") is not None else r["value"][KEY_FIELD[table]] for r in records]
        keyed = [(str(key).encode(), value) for key, value in zip(keys, encoded, strict=True)]
        limit = settings.api_max_record_bytes
        oversized = [
            f"records[{i}]: {len(key) + len(value):,} bytes with its key, over the {limit:,} a record may have"
            for i, (key, value) in enumerate(keyed)
            if len(key) + len(value) > limit
        ]
        if oversized:
            metrics.rejected.labels(topic).inc(len(values))
            raise invalid_records(oversized, "produced")

        async def send() -> dict[str, Any]:
            try:
                with metrics.produce.labels("kafka").time():
                    acknowledgements = await run_in_threadpool(bus.send, topic, keyed)
            except RecordRefused as error:
                metrics.rejected.labels(topic).inc(len(values))
                raise invalid_records([f"records[{error.index}]: Kafka refused it: {error}"], "produced") from None
            except CommitUnknown as error:
                raise OutcomeUnknown(
                    504,
                    f"{error}: the records may be stored. Retried with the same {IDEMPOTENCY_KEY}, the request is"
                    " refused (409) rather than stored twice; without one, a retry may store them twice.",
                    50401,
                ) from None
            except Exception as error:
                if classify(error) is not Fault.SERVICE_AWAY:
                    raise
                raise ApiError(503, str(error), 50302) from None
            metrics.records.labels(topic).inc(len(acknowledgements))
            return {
                "offsets": [
                    {"partition": a.partition, "offset": a.offset, "error_code": None, "error": None}
                    for a in acknowledgements
                ],
                "key_schema_id": None,
                "value_schema_id": None,
            }

        identity = f"/topics/{topic}\n".encode() + orjson.dumps(payload)
        return await answered_once(store, request.headers.get(IDEMPOTENCY_KEY), identity, send)

    return router
