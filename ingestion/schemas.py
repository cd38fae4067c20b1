"""The raw record shapes clients send (RAW_DATA.md), as pydantic models and as bronze columns.

Bronze keeps every payload value as the text it arrived as (schema on read): dbt staging does the
typing, so a dirty value is flagged there instead of being rejected or guessed at here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

RawTable = Literal["pin", "geo", "user"]
RAW_TABLES: tuple[RawTable, ...] = ("pin", "geo", "user")

# Confluent Kafka REST Proxy v2's content type for JSON records (the API accepts it, the client sends it)
KAFKA_JSON = "application/vnd.kafka.json.v2+json"
# the header a request's retries share, so the API stores the request once (ingestion/api/idempotency.py)
IDEMPOTENCY_KEY = "Idempotency-Key"

# the two serializations seen in the wild, zero-padded (staging's rule, RAW_DATA.md)
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}", re.ASCII)


def _parse_timestamp(value: object) -> datetime:
    """Accept both serializations seen in the wild, zero-padded, of a real moment; nothing looser."""
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        try:
            return datetime.fromisoformat(value)  # checks the calendar: no month 13, no February 30
        except ValueError:
            pass
    raise ValueError("timestamp must be a zero-padded 2020-08-28 03:52:47 or 2020-08-28T03:52:47 of a real date")


RawTimestamp = Annotated[datetime, BeforeValidator(_parse_timestamp)]

# A post's key, as the API checks it and the loader keeps it: a JSON integer within bigint (staging
# casts keys to bigint; 5.0, true and "5" are not keys)
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
RawKey = Annotated[int, Strict(), Field(ge=_BIGINT_MIN, le=_BIGINT_MAX)]
_KEY: TypeAdapter[int] = TypeAdapter(RawKey)


def is_key(value: object) -> bool:
    """``value`` is a key by ``RawKey``'s rule (the loader's check of records that came past the API)."""
    try:
        _KEY.validate_python(value)
    except ValidationError:
        return False
    return True


class RawRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class RawPin(RawRecord):
    index: RawKey
    unique_id: str
    title: str
    description: str
    poster_name: str
    follower_count: str
    tag_list: str
    is_image_or_video: str
    image_src: str
    downloaded: int
    save_location: str
    category: str


class RawGeo(RawRecord):
    ind: RawKey
    timestamp: RawTimestamp
    latitude: float
    longitude: float
    country: str


class RawUser(RawRecord):
    ind: RawKey
    first_name: str
    last_name: str
    age: int
    date_joined: RawTimestamp


RAW_MODELS: dict[RawTable, type[RawRecord]] = {"pin": RawPin, "geo": RawGeo, "user": RawUser}


def _list_adapter(model: type[RawRecord]) -> TypeAdapter[list[Any]]:
    """A validator of a list of ``model``'s records, as plain dicts: the same fields and rules,
    derived from the model, three times faster than building a model per record."""
    fields = {name: field.rebuild_annotation() for name, field in model.model_fields.items()}
    record: Any = TypedDict(f"{model.__name__}Record", fields)  # type: ignore[misc]
    setattr(record, "__pydantic_config__", model.model_config)  # noqa: B010 - a TypedDict made at run time
    return TypeAdapter(list[record])


# A request's records validated in one call, not one call per record
RAW_LIST_ADAPTERS: dict[RawTable, TypeAdapter[list[Any]]] = {
    table: _list_adapter(model) for table, model in RAW_MODELS.items()
}

KEY_FIELD: dict[RawTable, str] = {"pin": "index", "geo": "ind", "user": "ind"}


# How each raw field type travels as an Arrow column: timestamps stay the text they were sent as
# (either serialization; staging parses them).
_ARROW_TYPES: dict[type, pa.DataType] = {int: pa.int64(), float: pa.float64(), str: pa.string(), datetime: pa.string()}


def _arrow_schema(model: type[RawRecord]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[field.annotation]) for name, field in model.model_fields.items()])  # type: ignore[index]


# The raw records as Arrow columns, typed as clients send them (the emulator's output, and the
# schema the loader parses raw JSON lines with): derived from the models above.
RAW_ARROW_SCHEMAS: dict[RawTable, pa.Schema] = {table: _arrow_schema(model) for table, model in RAW_MODELS.items()}


def payload_fields(table: RawTable) -> list[str]:
    """The raw field names of a table, in the order clients send them."""
    return list(RAW_MODELS[table].model_fields)


# Columns every bronze row carries besides its payload: where it came from and when it landed.
BRONZE_METADATA = pa.schema(
    [
        ("_unknown_fields", pa.string()),  # fields outside the raw schema, as a JSON object
        ("_stream", pa.string()),  # writer identity: also the Delta txn app id
        ("_offset", pa.int64()),  # position of the record in its stream
        ("_source", pa.string()),  # object key, or the emulator that made the record
        ("_batch_id", pa.string()),
        ("_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


def bronze_schema(table: RawTable) -> pa.Schema:
    payload = [pa.field(name, pa.string()) for name in payload_fields(table)]
    return pa.schema(payload + list(BRONZE_METADATA))


# A Kinesis record's own metadata, on the stream tables (bronze/pin_stream, ...).
STREAM_METADATA = pa.schema(
    [
        ("_shard_id", pa.string()),
        ("_sequence_number", pa.string()),  # up to 128 bits: kept as Kinesis' decimal text
        ("_arrival_time", pa.timestamp("us", tz="UTC")),  # when Kinesis accepted the record
    ]
)


def stream_bronze_schema(table: RawTable) -> pa.Schema:
    return pa.schema(list(bronze_schema(table)) + list(STREAM_METADATA))


QUARANTINE_SCHEMA = pa.schema(
    [
        ("table_name", pa.string()),
        ("reason", pa.string()),
        ("raw_record", pa.string()),
        ("line_number", pa.int64()),
        ("_stream", pa.string()),
        ("_offset", pa.int64()),
        ("_source", pa.string()),
        ("_batch_id", pa.string()),
        ("_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
