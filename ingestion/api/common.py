"""What both routers share: errors in the REST Proxy's shape, metrics, authorization, bodies."""

from __future__ import annotations

import asyncio
import hmac
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from pydantic import BaseModel, ValidationError

from ingestion.config import Settings
from ingestion.metrics import LATENCY_BUCKETS
from ingestion.schemas import RAW_LIST_ADAPTERS, RawTable


class ApiError(Exception):
    """An error answered in the REST Proxy's shape: ``{"error_code": ..., "message": ...}``."""

    def __init__(
        self, status: int, message: str, error_code: int | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.error_code = error_code or status * 100


class Metrics:
    """The API's metrics. Topic and stream labels are only the configured ones (others count as
    ``unknown``), so requests to made-up names cannot grow the number of series."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(known)
        self.registry = CollectorRegistry()
        self.requests = Counter("pinpipe_api_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        # topic: a Kafka topic or a Kinesis stream
        self.records = Counter(
            "pinpipe_api_records_accepted", "records acknowledged by the bus", ["topic"], registry=self.registry
        )
        self.rejected = Counter(
            "pinpipe_api_records_rejected", "records in rejected requests", ["topic"], registry=self.registry
        )
        self.latency = Histogram(
            "pinpipe_api_request_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.produce = Histogram(
            "pinpipe_api_produce_seconds",
            "time for the bus to acknowledge one request's records (Kafka: its transaction committed)",
            ["bus"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or every worker's of `pinpipe api`
        (prometheus-client's multiprocess mode, on when PROMETHEUS_MULTIPROC_DIR is set)."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        workers = CollectorRegistry()
        multiprocess.MultiProcessCollector(workers)  # type: ignore[no-untyped-call]
        return generate_latest(workers)

    def topic(self, name: str) -> str:
        return name if name in self.known else "unknown"


@dataclass
class Requests:
    """Reading requests the way every route does: the API key, the size limit, the content type."""

    settings: Settings
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics([*self.settings.topics, *self.settings.streams])

    def authorized(self, request: Request) -> bool:
        """No key is set, the path is open, or the request sends the key (compared in constant time)."""
        key = self.settings.api_key
        if not key or request.url.path in self.settings.api_open_paths:
            return True
        sent = request.headers.get("x-api-key", "")
        return hmac.compare_digest(sent.encode(), key.get_secret_value().encode())

    async def body(self, request: Request) -> bytes:
        limit = self.settings.api_max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"Request body over {limit} bytes.")
        chunks, size = [], 0
        parts, timeout = request.stream().__aiter__(), self.settings.api_body_timeout_seconds
        while True:
            try:  # a client that stops sending (a slow loris) is cut off, not waited for
                chunk = await asyncio.wait_for(anext(parts), timeout)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise ApiError(
                    408,
                    f"The request body did not arrive in time: no part of it for {timeout:g} s.",
                    headers={"connection": "close"},
                ) from None
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"Request body over {limit} bytes.")
        return b"".join(chunks)

    async def json(self, request: Request, accepted: set[str]) -> object:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in accepted:
            raise ApiError(415, f"Content-Type must be one of {sorted(accepted)}, got {content_type!r}.")
        body = await self.body(request)
        try:  # strict JSON: no NaN or Infinity, no nesting deeper than 1,024
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ApiError(400, f"Request body is not valid JSON: {error}") from None


def field_errors(where: str, error: ValidationError) -> str:
    details = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        details.append(f"{where}.{location}: {problem['msg']}")
    return "; ".join(details)


def raw_record_problems(table: RawTable, values: list[dict[str, Any]], where: str) -> list[str]:
    """What is wrong with each invalid record of ``values`` (one validation of the whole list), each
    named by ``where`` formatted with its index; empty when all are valid."""
    try:
        RAW_LIST_ADAPTERS[table].validate_python(values)
    except ValidationError as error:
        by_record: dict[int, list[str]] = {}
        for problem in error.errors():
            index, *location = problem["loc"]
            by_record.setdefault(int(index), []).append(
                f"{where.format(index)}.{'.'.join(map(str, location))}: {problem['msg']}"
            )
        return ["; ".join(found) for _, found in sorted(by_record.items())]
    return []


def encoded_records(values: list[dict[str, Any]], where: str) -> list[bytes] | ApiError:
    """Each record as the JSON bytes produced to the bus, or the error naming the records that cannot
    be written as JSON other consumers can read (a lone surrogate in a string, say)."""
    encoded, problems = [], []
    for index, value in enumerate(values):
        try:
            encoded.append(orjson.dumps(value))
        except orjson.JSONEncodeError as error:
            problems.append(f"{where.format(index)}: not encodable as JSON: {error}")
    return invalid_records(problems, "put") if problems else encoded


def invalid_records(problems: list[str], what: str) -> ApiError:
    shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more records" if len(problems) > 20 else "")
    return ApiError(422, f"{len(problems)} invalid record(s), none {what}: {shown}", 42202)


def parsed(model: type[BaseModel], payload: object, shape: str) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ApiError(422, f"Request must be {shape}: {problems}", 42200) from None


def instance_metrics_dir(root: Path) -> Path:
    """A folder for one API's multiprocess metrics: ``root/<this process id>``, new and empty, so that
    two APIs on one state dir never share or remove each other's; the folders of APIs no longer
    running are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not process_running(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    return mine


def process_running(pid: int) -> bool:
    """A process with this id runs (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
