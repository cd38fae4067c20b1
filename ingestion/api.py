"""Ingest API: Kafka REST Proxy v2 compatible ``POST /topics/{topic}``, validating every record.

A request is all or nothing: if any record fails its topic's raw schema, the request is rejected
with 422 naming the record index and field, and nothing from it reaches Kafka. A record is only
reported with an offset once Kafka acknowledged it (acks=all); otherwise the answer is a 5xx.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ValidationError

from ingestion.bus import BusError, KafkaBus
from ingestion.config import Settings
from ingestion.schemas import KAFKA_JSON, KEY_FIELD, RAW_MODELS

ACCEPTED_CONTENT_TYPES = {KAFKA_JSON, "application/json"}


class ProduceRecord(BaseModel):
    key: str | int | None = None
    value: dict[str, Any]


class ProduceRequest(BaseModel):
    records: list[ProduceRecord]


class ApiError(Exception):
    """An error answered in the REST Proxy's shape: ``{"error_code": ..., "message": ...}``."""

    def __init__(self, status: int, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.error_code = error_code or status * 100


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pinpipe_api_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.records = Counter("pinpipe_api_records", "records acknowledged by the bus", ["topic"], registry=self.registry)
        self.rejected = Counter("pinpipe_api_rejected_records", "records in rejected requests", ["topic"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("pinpipe_api_request_seconds", "request latency", ["route"], registry=self.registry)


def _field_errors(index: int, error: ValidationError) -> str:
    details = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        details.append(f"records[{index}].value.{location}: {problem['msg']}")
    return "; ".join(details)


def create_app(settings: Settings, bus: KafkaBus | None = None) -> FastAPI:
    """The API for ``settings``; ``bus`` defaults to a Kafka producer on the configured broker."""
    bus = bus or KafkaBus(settings.kafka_bootstrap_servers)
    metrics = _Metrics()
    topics = set(settings.topics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        bus.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pinpipe ingest API",
        description="Kafka REST Proxy v2 compatible ingestion of pin, geo and user records.",
        version="1",
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error_code": error.error_code, "message": error.message}, status_code=error.status)

    @app.middleware("http")
    async def _observe(request: Request, call_next):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    def _authorize(request: Request) -> None:
        if settings.api_key and request.headers.get("x-api-key") != settings.api_key:
            raise ApiError(401, "Missing or wrong API key: send it in the X-API-Key header.")

    async def _body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.api_max_body_bytes:
            raise ApiError(413, f"Request body over {settings.api_max_body_bytes} bytes.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.api_max_body_bytes:
                raise ApiError(413, f"Request body over {settings.api_max_body_bytes} bytes.")
        return body

    @app.post("/topics/{topic}", summary="Produce records to a topic (Kafka REST Proxy v2)")
    async def produce(topic: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        if topic not in topics:
            raise ApiError(404, f"Topic {topic!r} not found; topics are {sorted(topics)}.", 40401)
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            raise ApiError(415, f"Content-Type must be one of {sorted(ACCEPTED_CONTENT_TYPES)}, got {content_type!r}.")
        body = await _body(request)
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise ApiError(400, f"Request body is not valid JSON: {error}") from None
        try:
            produce_request = ProduceRequest.model_validate(payload)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ApiError(422, f"Request must be {{\"records\": [{{\"key\"?, \"value\"}}]}}: {problems}", 42200) from None
        table = settings.topic_tables[topic]
        problems = []
        for index, record in enumerate(produce_request.records):
            try:
                RAW_MODELS[table].model_validate(record.value)
            except ValidationError as error:
                problems.append(_field_errors(index, error))
        if problems:
            metrics.rejected.labels(topic).inc(len(produce_request.records))
            shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more records" if len(problems) > 20 else "")
            raise ApiError(422, f"{len(problems)} invalid record(s), none produced: {shown}", 42202)
        # the post's key partitions its pin, geo and user records alike, unless the client sets one
        keyed = [
            (str(record.key if record.key is not None else record.value[KEY_FIELD[table]]), record.value)
            for record in produce_request.records
        ]
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

    @app.get("/healthz", summary="The API and its Kafka broker answer")
    async def healthz() -> JSONResponse:
        healthy = await run_in_threadpool(bus.healthy, settings.topics[0])
        return JSONResponse({"status": "ok" if healthy else "kafka unavailable"}, status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
