"""The ingest API: the Kafka router (``POST /topics/{topic}``), the Kinesis router (``/streams/...``),
health and metrics.

A request is all or nothing: if any record fails its table's raw schema, the request is rejected
with 422 naming the record index and field, and nothing from it reaches the bus. A record is only
reported with an offset or sequence number once Kafka (acks=all) or Kinesis acknowledged it;
otherwise the answer is a 5xx. Kinesis batches pass Kinesis' per-record failures back, as
``PutRecords`` does, for the client to retry those records.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ingestion import clients
from ingestion.api.common import ApiError, Requests
from ingestion.api.health import HealthWatch
from ingestion.api.idempotency import IdempotencyStore
from ingestion.api.streams import streams_router
from ingestion.api.topics import topics_router
from ingestion.bus import KafkaBus, KinesisBus, kafka_bus
from ingestion.config import Settings


def create_app(settings: Settings, bus: KafkaBus | None = None, kinesis: KinesisBus | None = None) -> FastAPI:
    """The API for ``settings``; ``bus`` defaults to a Kafka producer on the configured broker and
    ``kinesis`` to a client of the configured Kinesis endpoint."""
    kafka = bus or kafka_bus(settings)
    streams = kinesis or KinesisBus(clients.kinesis_client(settings))
    requests = Requests(settings)
    metrics = requests.metrics
    kafka_health = HealthWatch(lambda: kafka.healthy(settings.topics[0]))
    kinesis_health = HealthWatch(streams.healthy)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        kafka.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pinpipe ingest API",
        description="Pin, geo and user records into Kafka (REST Proxy v2 compatible) and Kinesis streams.",
        version="1",
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error_code": error.error_code, "message": error.message}, status_code=error.status, headers=error.headers
        )

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        if requests.authorized(request):
            response = await call_next(request)
        else:  # every path but the open ones (/healthz), the docs and metrics included
            response = await _api_error(request, ApiError(401, "Missing or wrong API key: send it as X-API-Key."))
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    # committed requests' answers by their Idempotency-Key: shared by the workers, kept across restarts
    store = IdempotencyStore(
        settings.state_dir / "api-idempotency.sqlite3",
        hours=settings.api_idempotency_hours,
        keys=settings.api_idempotency_keys,
    )
    app.include_router(topics_router(requests, kafka, store))
    app.include_router(streams_router(requests, streams, store))

    async def health(watch: HealthWatch, service: str) -> JSONResponse:
        healthy, why = await watch.healthy()
        return JSONResponse({"status": "ok" if healthy else f"{service} {why}"}, status_code=200 if healthy else 503)

    @app.get("/healthz", summary="The API and its Kafka broker answer (a 503 within a second when not)")
    async def healthz() -> JSONResponse:
        return await health(kafka_health, "kafka")

    @app.get("/healthz/streams", summary="The API and its Kinesis endpoint answer (a 503 within a second when not)")
    async def healthz_streams() -> JSONResponse:
        return await health(kinesis_health, "kinesis")

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
