"""Kafka REST Proxy v2 compatible ``POST /topics/{topic}``: every record validated, then produced."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from ingestion.api.common import (
    ApiError,
    Requests,
    encoded_records,
    invalid_records,
    parsed,
    raw_record_problems,
)
from ingestion.bus import BusError, KafkaBus
from ingestion.schemas import KAFKA_JSON, KEY_FIELD

ACCEPTED_CONTENT_TYPES = {KAFKA_JSON, "application/json"}


class ProduceRecord(BaseModel):
    key: str | int | None = None
    value: dict[str, Any]


class ProduceRequest(BaseModel):
    records: list[ProduceRecord]


def topics_router(requests: Requests, bus: KafkaBus) -> APIRouter:
    settings, metrics = requests.settings, requests.metrics
    topics = set(settings.topics)
    router = APIRouter()

    @router.post("/topics/{topic}", summary="Produce records to a topic (Kafka REST Proxy v2)")
    async def produce(topic: str, request: Request) -> dict[str, Any]:
        requests.authorize(request)
        if topic not in topics:
            raise ApiError(404, f"Topic {topic!r} not found; topics are {sorted(topics)}.", 40401)
        payload = await requests.json(request, ACCEPTED_CONTENT_TYPES)
        produce_request = parsed(ProduceRequest, payload, '{"records": [{"key"?, "value"}]}')
        table = settings.topic_tables[topic]
        values = [record.value for record in produce_request.records]
        problems = raw_record_problems(table, values, "records[{}].value")
        if problems:
            metrics.rejected.labels(topic).inc(len(values))
            raise invalid_records(problems, "produced")
        encoded = encoded_records(values, "records[{}].value")
        if isinstance(encoded, ApiError):
            metrics.rejected.labels(topic).inc(len(values))
            raise encoded
        # the post's key partitions its pin, geo and user records alike, unless the client sets one
        keys = [r.key if r.key is not None else r.value[KEY_FIELD[table]] for r in produce_request.records]
        keyed = [(str(key).encode(), value) for key, value in zip(keys, encoded, strict=True)]
        try:
            acknowledgements = await run_in_threadpool(bus.send, topic, keyed)
        except BusError as error:
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

    return router
