"""Ingest API: Kafka REST Proxy v2 compatible ``POST /topics/{topic}`` and the seeds' Kinesis
proxy ``/streams/...``, validating every record.

A request is all or nothing: if any record fails its table's raw schema, the request is rejected
with 422 naming the record index and field, and nothing from it reaches the bus. A record is only
reported with an offset or sequence number once Kafka (acks=all) or Kinesis acknowledged it;
otherwise the answer is a 5xx. Kinesis batches pass Kinesis' per-record failures back, as
``PutRecords`` does, for the client to retry those records.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field, ValidationError

from ingestion.bus import BusError, KafkaBus, KinesisBus, NoSuchStream, StreamRejected
from ingestion.config import Settings, stream_table
from ingestion.schemas import KAFKA_JSON, KEY_FIELD, RAW_MODELS, RawTable

ACCEPTED_CONTENT_TYPES = {KAFKA_JSON, "application/json"}


class ProduceRecord(BaseModel):
    key: str | int | None = None
    value: dict[str, Any]


class ProduceRequest(BaseModel):
    records: list[ProduceRecord]


class PutRecordRequest(BaseModel):
    StreamName: str | None = None
    Data: dict[str, Any] | str = Field(description="the record: a JSON object, a JSON string of one, or base64 of one")
    PartitionKey: str | None = Field(default=None, description="default: the record's key (index or ind)")


class PutRecordsEntry(BaseModel):
    Data: dict[str, Any] | str
    PartitionKey: str | None = None


class PutRecordsRequest(BaseModel):
    StreamName: str | None = None
    Records: list[PutRecordsEntry] = Field(min_length=1, max_length=500)


class CreateStreamRequest(BaseModel):
    ShardCount: int | None = Field(default=None, ge=1, le=50)


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
        # topic: a Kafka topic or a Kinesis stream
        self.records = Counter("pinpipe_api_records", "records acknowledged by the bus", ["topic"], registry=self.registry)
        self.rejected = Counter("pinpipe_api_rejected_records", "records in rejected requests", ["topic"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("pinpipe_api_request_seconds", "request latency", ["route"], registry=self.registry)


def _field_errors(where: str, error: ValidationError) -> str:
    details = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        details.append(f"{where}.{location}: {problem['msg']}")
    return "; ".join(details)


def _invalid_records(problems: list[str], what: str) -> ApiError:
    shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more records" if len(problems) > 20 else "")
    return ApiError(422, f"{len(problems)} invalid record(s), none {what}: {shown}", 42202)


def _stream_payload(data: dict[str, Any] | str) -> dict[str, Any]:
    """A Kinesis record's Data as the raw record: an object as is; a string parsed as JSON, or
    decoded from base64 first (what Kinesis clients send)."""
    if isinstance(data, dict):
        return data
    try:
        value = json.loads(data)
    except ValueError:
        try:
            value = json.loads(base64.b64decode(data, validate=True))
        except (ValueError, binascii.Error):
            raise ValueError("not a JSON object, nor a JSON string or base64 of one") from None
    if not isinstance(value, dict):
        raise ValueError(f"must hold a JSON object, got {type(value).__name__}")
    return value


def _parsed(model: type[BaseModel], payload: object, shape: str) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ApiError(422, f"Request must be {shape}: {problems}", 42200) from None


def create_app(settings: Settings, bus: KafkaBus | None = None, kinesis: KinesisBus | None = None) -> FastAPI:
    """The API for ``settings``; ``bus`` defaults to a Kafka producer on the configured broker and
    ``kinesis`` to a client of the configured Kinesis endpoint."""
    from ingestion.services import kinesis_client

    bus = bus or KafkaBus(settings.kafka_bootstrap_servers)
    kinesis = kinesis or KinesisBus(kinesis_client(settings))
    metrics = _Metrics()
    topics = set(settings.topics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        bus.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pinpipe ingest API",
        description="Pin, geo and user records into Kafka (REST Proxy v2 compatible) and Kinesis streams.",
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

    async def _json(request: Request, accepted: set[str]) -> object:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in accepted:
            raise ApiError(415, f"Content-Type must be one of {sorted(accepted)}, got {content_type!r}.")
        body = await _body(request)
        try:
            return json.loads(body)
        except ValueError as error:
            raise ApiError(400, f"Request body is not valid JSON: {error}") from None

    @app.post("/topics/{topic}", summary="Produce records to a topic (Kafka REST Proxy v2)")
    async def produce(topic: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        if topic not in topics:
            raise ApiError(404, f"Topic {topic!r} not found; topics are {sorted(topics)}.", 40401)
        payload = await _json(request, ACCEPTED_CONTENT_TYPES)
        produce_request = _parsed(ProduceRequest, payload, '{"records": [{"key"?, "value"}]}')
        table = settings.topic_tables[topic]
        problems = []
        for index, record in enumerate(produce_request.records):
            try:
                RAW_MODELS[table].model_validate(record.value)
            except ValidationError as error:
                problems.append(_field_errors(f"records[{index}].value", error))
        if problems:
            metrics.rejected.labels(topic).inc(len(produce_request.records))
            raise _invalid_records(problems, "produced")
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

    # --- Kinesis: the seeds' API Gateway proxy --------------------------------------------------------

    async def _kinesis(operation: Callable[..., Any], *args: object) -> Any:
        try:
            return await run_in_threadpool(operation, *args)
        except NoSuchStream as error:
            raise ApiError(404, f"Stream not found: {error}", 40402) from None
        except StreamRejected as error:
            raise ApiError(400, str(error), 40002) from None
        except BusError as error:
            raise ApiError(503, str(error), 50303) from None

    def _writable(stream: str, body_stream: str | None) -> RawTable:
        if body_stream is not None and body_stream != stream:
            raise ApiError(422, f"StreamName {body_stream!r} in the body differs from {stream!r} in the path.", 42201)
        table = stream_table(stream)
        if table is None:
            raise ApiError(404, f"Stream {stream!r} carries no raw table: its name must end in -pin, -geo or -user.", 40403)
        return table

    def _stream_record(table: RawTable, where: str, data: dict[str, Any] | str, key: str | None) -> tuple[bytes, str] | str:
        """The record's bytes and partition key, or what is wrong with it."""
        try:
            payload = _stream_payload(data)
        except ValueError as error:
            return f"{where}.Data: {error}"
        try:
            RAW_MODELS[table].model_validate(payload)
        except ValidationError as error:
            return _field_errors(f"{where}.Data", error)
        return json.dumps(payload, ensure_ascii=False).encode(), key or str(payload[KEY_FIELD[table]])

    @app.get("/streams", summary="List streams (Kinesis ListStreams)")
    async def list_streams(request: Request) -> dict[str, Any]:
        _authorize(request)
        return {"StreamNames": await _kinesis(kinesis.list_streams), "HasMoreStreams": False}

    @app.post("/streams/{stream}", summary="Create a stream (Kinesis CreateStream)")
    async def create_stream(stream: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        # the body is optional here: no body, no content type needed
        payload = await _json(request, {"application/json"}) if request.headers.get("content-length", "0") != "0" else {}
        shards = _parsed(CreateStreamRequest, payload, '{"ShardCount"?}').ShardCount or settings.kinesis_shards
        await _kinesis(kinesis.create_stream, stream, shards)
        return {"StreamName": stream, "ShardCount": shards}

    @app.get("/streams/{stream}", summary="Describe a stream (Kinesis DescribeStream)")
    async def describe_stream(stream: str, request: Request) -> JSONResponse:
        _authorize(request)
        description = await _kinesis(kinesis.describe_stream, stream)
        return JSONResponse(json.loads(json.dumps({"StreamDescription": description}, default=str)))

    @app.delete("/streams/{stream}", summary="Delete a stream (Kinesis DeleteStream)")
    async def delete_stream(stream: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        await _kinesis(kinesis.delete_stream, stream)
        return {"StreamName": stream, "StreamStatus": "DELETING"}

    @app.put("/streams/{stream}/record", summary="Put one record (Kinesis PutRecord)")
    async def put_record(stream: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        record = _parsed(PutRecordRequest, await _json(request, {"application/json"}), '{"StreamName"?, "Data", "PartitionKey"?}')
        table = _writable(stream, record.StreamName)
        encoded = _stream_record(table, "record", record.Data, record.PartitionKey)
        if isinstance(encoded, str):
            metrics.rejected.labels(stream).inc()
            raise _invalid_records([encoded], "put")
        answer = await _kinesis(kinesis.put, stream, *encoded)
        metrics.records.labels(stream).inc()
        return answer

    @app.put("/streams/{stream}/records", summary="Put up to 500 records (Kinesis PutRecords)")
    async def put_records(stream: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        batch = _parsed(PutRecordsRequest, await _json(request, {"application/json"}),
                        '{"StreamName"?, "Records": [{"Data", "PartitionKey"?}] (1 to 500)}')  # fmt: skip
        table = _writable(stream, batch.StreamName)
        encoded = [_stream_record(table, f"Records[{i}]", r.Data, r.PartitionKey) for i, r in enumerate(batch.Records)]
        problems = [e for e in encoded if isinstance(e, str)]
        if problems:
            metrics.rejected.labels(stream).inc(len(batch.Records))
            raise _invalid_records(problems, "put")
        answer = await _kinesis(kinesis.put_many, stream, encoded)
        metrics.records.labels(stream).inc(len(encoded) - answer["FailedRecordCount"])
        return answer

    @app.get("/healthz", summary="The API and its Kafka broker answer")
    async def healthz() -> JSONResponse:
        healthy = await run_in_threadpool(bus.healthy, settings.topics[0])
        return JSONResponse({"status": "ok" if healthy else "kafka unavailable"}, status_code=200 if healthy else 503)

    @app.get("/healthz/streams", summary="The API and its Kinesis endpoint answer")
    async def healthz_streams() -> JSONResponse:
        healthy = await run_in_threadpool(kinesis.healthy)
        return JSONResponse({"status": "ok" if healthy else "kinesis unavailable"}, status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
