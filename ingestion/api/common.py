"""What both routers share: errors in the REST Proxy's shape, metrics, authorization, bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError

from ingestion.config import Settings


class ApiError(Exception):
    """An error answered in the REST Proxy's shape: ``{"error_code": ..., "message": ...}``."""

    def __init__(self, status: int, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.error_code = error_code or status * 100


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pinpipe_api_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        # topic: a Kafka topic or a Kinesis stream
        self.records = Counter(
            "pinpipe_api_records", "records acknowledged by the bus", ["topic"], registry=self.registry
        )
        self.rejected = Counter(
            "pinpipe_api_rejected_records", "records in rejected requests", ["topic"], registry=self.registry
        )
        self.latency = Histogram("pinpipe_api_request_seconds", "request latency", ["route"], registry=self.registry)


@dataclass
class Requests:
    """Reading requests the way every route does: the API key, the size limit, the content type."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)

    def authorize(self, request: Request) -> None:
        if self.settings.api_key and request.headers.get("x-api-key") != self.settings.api_key:
            raise ApiError(401, "Missing or wrong API key: send it in the X-API-Key header.")

    async def body(self, request: Request) -> bytes:
        limit = self.settings.api_max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"Request body over {limit} bytes.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"Request body over {limit} bytes.")
        return body

    async def json(self, request: Request, accepted: set[str]) -> object:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in accepted:
            raise ApiError(415, f"Content-Type must be one of {sorted(accepted)}, got {content_type!r}.")
        body = await self.body(request)
        try:
            return json.loads(body)
        except ValueError as error:
            raise ApiError(400, f"Request body is not valid JSON: {error}") from None


def field_errors(where: str, error: ValidationError) -> str:
    details = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        details.append(f"{where}.{location}: {problem['msg']}")
    return "; ".join(details)


def invalid_records(problems: list[str], what: str) -> ApiError:
    shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more records" if len(problems) > 20 else "")
    return ApiError(422, f"{len(problems)} invalid record(s), none {what}: {shown}", 42202)


def parsed(model: type[BaseModel], payload: object, shape: str) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ApiError(422, f"Request must be {shape}: {problems}", 42200) from None
