"""The seeds' API Gateway proxy to Kinesis: ``/streams/...``, every record validated before it is put."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from ingestion.api.common import ApiError, Requests, field_errors, invalid_records, parsed
from ingestion.api.idempotency import IdempotencyStore, answered_once
from ingestion.bus import KinesisBus, NoSuchStream, StreamRejected
from ingestion.config import stream_table
from ingestion.faults import Fault, classify
from ingestion.schemas import IDEMPOTENCY_KEY, KEY_FIELD, RAW_MODELS, RawTable


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


def _stream_payload(data: dict[str, Any] | str) -> dict[str, Any]:
    """A Kinesis record's Data as the raw record: an object as is; a string parsed as JSON, or
    decoded from base64 first (what Kinesis clients send)."""
    if isinstance(data, dict):
        return data
    try:
        value = orjson.loads(data)
    except ValueError:
        try:
            value = orjson.loads(base64.b64decode(data, validate=True))
        except (ValueError, binascii.Error):
            raise ValueError("not a JSON object, nor a JSON string or base64 of one") from None
    if not isinstance(value, dict):
        raise ValueError(f"must hold a JSON object, got {type(value).__name__}")
    return value


def _stream_record(table: RawTable, where: str, data: dict[str, Any] | str, key: str | None) -> tuple[bytes, str] | str:
    """The record's bytes and partition key, or what is wrong with it."""
    try:
        payload = _stream_payload(data)
    except ValueError as error:
        return f"{where}.Data: {error}"
    try:
        RAW_MODELS[table].model_validate(payload)
    except ValidationError as error:
        return field_errors(f"{where}.Data", error)
    try:
        return orjson.dumps(payload), key or str(payload[KEY_FIELD[table]])
    except orjson.JSONEncodeError as error:  # a lone surrogate: not JSON another consumer can read
        return f"{where}.Data: not encodable as JSON: {error}"


def _writable(stream: str, configured: dict[str, RawTable]) -> RawTable:
    """The raw table a put to ``stream`` carries: only the configured streams (PINPIPE_STREAMS) take
    records, those the consumer reads; any other name is a 404 before Kinesis is asked anything."""
    if stream not in configured:
        if stream_table(stream) is None:
            raise ApiError(
                404, f"Stream {stream!r} carries no raw table: its name must end in -pin, -geo or -user.", 40403
            )
        raise ApiError(404, f"Stream {stream!r} not found; streams are {sorted(configured)}.", 40402)
    return configured[stream]


def _same_stream(stream: str, body_stream: str | None) -> None:
    if body_stream is not None and body_stream != stream:
        raise ApiError(422, f"StreamName {body_stream!r} in the body differs from {stream!r} in the path.", 42201)


async def _kinesis(operation: Callable[..., Any], *args: object) -> Any:
    try:
        return await run_in_threadpool(operation, *args)
    except NoSuchStream as error:
        raise ApiError(404, f"Stream not found: {error}", 40402) from None
    except StreamRejected as error:
        raise ApiError(400, str(error), 40002) from None
    except Exception as error:
        if classify(error) is not Fault.SERVICE_AWAY:
            raise
        raise ApiError(503, str(error), 50303) from None


def streams_router(requests: Requests, kinesis: KinesisBus, store: IdempotencyStore) -> APIRouter:
    settings, metrics = requests.settings, requests.metrics
    configured = settings.stream_tables
    router = APIRouter()

    @router.get("/streams", summary="List streams (Kinesis ListStreams)")
    async def list_streams(request: Request) -> dict[str, Any]:
        return {"StreamNames": await _kinesis(kinesis.list_streams), "HasMoreStreams": False}

    @router.post("/streams/{stream}", summary="Create a stream (Kinesis CreateStream)")
    async def create_stream(stream: str, request: Request) -> dict[str, Any]:
        # the body is optional here: no body, no content type needed
        payload = (
            await requests.json(request, {"application/json"})
            if request.headers.get("content-length", "0") != "0"
            else {}
        )
        shards = parsed(CreateStreamRequest, payload, '{"ShardCount"?}').ShardCount or settings.kinesis_shards
        await _kinesis(kinesis.create_stream, stream, shards)
        return {"StreamName": stream, "ShardCount": shards}

    @router.get("/streams/{stream}", summary="Describe a stream (Kinesis DescribeStream)")
    async def describe_stream(stream: str, request: Request) -> JSONResponse:
        description = await _kinesis(kinesis.describe_stream, stream)
        return JSONResponse(json.loads(json.dumps({"StreamDescription": description}, default=str)))

    @router.delete("/streams/{stream}", summary="Delete a stream (Kinesis DeleteStream)")
    async def delete_stream(stream: str, request: Request) -> dict[str, Any]:
        await _kinesis(kinesis.delete_stream, stream)
        return {"StreamName": stream, "StreamStatus": "DELETING"}

    @router.put("/streams/{stream}/record", summary="Put one record (Kinesis PutRecord)", response_model=None)
    async def put_record(stream: str, request: Request) -> dict[str, Any] | Response:
        table = _writable(stream, configured)
        record = parsed(
            PutRecordRequest,
            await requests.json(request, {"application/json"}),
            '{"StreamName"?, "Data", "PartitionKey"?}',
        )
        _same_stream(stream, record.StreamName)
        encoded = _stream_record(table, "record", record.Data, record.PartitionKey)
        if isinstance(encoded, str):
            metrics.rejected.labels(metrics.topic(stream)).inc()
            raise invalid_records([encoded], "put")

        async def put() -> dict[str, Any]:
            with metrics.produce.labels("kinesis").time():
                answer = await _kinesis(kinesis.put, stream, *encoded)
            metrics.records.labels(metrics.topic(stream)).inc()
            return answer

        key = request.headers.get(IDEMPOTENCY_KEY)
        return await answered_once(
            store, key, f"/streams/{stream}/record\n".encode() + record.model_dump_json().encode(), put
        )

    @router.put("/streams/{stream}/records", summary="Put up to 500 records (Kinesis PutRecords)", response_model=None)
    async def put_records(stream: str, request: Request) -> dict[str, Any] | Response:
        table = _writable(stream, configured)
        batch = parsed(
            PutRecordsRequest,
            await requests.json(request, {"application/json"}),
            '{"StreamName"?, "Records": [{"Data", "PartitionKey"?}] (1 to 500)}',
        )
        _same_stream(stream, batch.StreamName)
        encoded = [_stream_record(table, f"Records[{i}]", r.Data, r.PartitionKey) for i, r in enumerate(batch.Records)]
        problems = [e for e in encoded if isinstance(e, str)]
        if problems:
            metrics.rejected.labels(metrics.topic(stream)).inc(len(batch.Records))
            raise invalid_records(problems, "put")

        async def put() -> dict[str, Any]:
            with metrics.produce.labels("kinesis").time():
                answer = await _kinesis(kinesis.put_many, stream, encoded)
            metrics.records.labels(metrics.topic(stream)).inc(len(encoded) - answer["FailedRecordCount"])
            return answer

        key = request.headers.get(IDEMPOTENCY_KEY)
        return await answered_once(
            store, key, f"/streams/{stream}/records\n".encode() + batch.model_dump_json().encode(), put
        )

    return router
