"""Raw records as bronze rows: payload values kept as the text they arrived as, the lineage
columns added; what cannot be identified (not JSON, not an object, no integer key) becomes a
quarantine row with the reason."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from ingestion.schemas import (
    KEY_FIELD,
    QUARANTINE_SCHEMA,
    RAW_ARROW_SCHEMAS,
    RawTable,
    is_key,
    payload_fields,
)


def with_metadata(rows: pa.Table, metadata: dict[str, object], schema: pa.Schema) -> pa.Table:
    columns = []
    for column in schema:
        if column.name in rows.column_names:
            columns.append(rows[column.name].cast(column.type))
        else:
            columns.append(pa.array([metadata.get(column.name)] * rows.num_rows, column.type))
    return pa.Table.from_arrays(columns, schema=schema)


# --- raw records → bronze rows ----------------------------------------------------------------------


class _Unidentifiable(ValueError):
    """A record bronze cannot key: it goes to quarantine with this message as the reason."""


@dataclass(frozen=True)
class Undecodable:
    """A record its reader could not decode (``reason``), passed on to be quarantined as it came."""

    reason: str
    data: bytes


def to_bronze_rows(
    table: RawTable, records: pa.Table | Sequence[object], *, start: int = 0, positions: Sequence[int] | None = None
) -> tuple[pa.Table, pa.Table]:
    """Split raw records into bronze payload rows (all text, plus ``_offset``) and quarantine rows;
    record ``i`` is at offset ``start + i``, or ``start + positions[i]``."""
    count = records.num_rows if isinstance(records, pa.Table) else len(records)
    offsets = [start + p for p in positions] if positions is not None else list(range(start, start + count))
    if isinstance(records, pa.Table) and records.num_rows and _arrow_rows_are_keyed(table, records):
        return _arrow_to_bronze(table, records, offsets), _empty_quarantine()
    rows = records.to_pylist() if isinstance(records, pa.Table) else records
    return _records_to_bronze(table, rows, offsets, start)


def _arrow_rows_are_keyed(table: RawTable, records: pa.Table) -> bool:
    key = KEY_FIELD[table]
    return (
        key in records.column_names
        and pa.types.is_integer(records.schema.field(key).type)
        and records[key].null_count == 0
        and set(records.column_names) <= set(payload_fields(table))
        and all(not pa.types.is_nested(f.type) for f in records.schema)
    )


def _arrow_to_bronze(table: RawTable, records: pa.Table, offsets: list[int]) -> pa.Table:
    """Fast path for well-formed Arrow input (the emulator, pyarrow's JSON reader): vectorised casts."""
    n = records.num_rows
    columns = {
        name: records[name].cast(pa.string()) if name in records.column_names else pa.nulls(n, pa.string())
        for name in payload_fields(table)
    }
    columns["_offset"] = pa.array(offsets, pa.int64())
    return pa.table(columns)


def _records_to_bronze(
    table: RawTable, records: Sequence[object], offsets: list[int], start: int
) -> tuple[pa.Table, pa.Table]:
    fields = payload_fields(table)
    good: dict[str, list[object]] = {name: [] for name in [*fields, "_unknown_fields", "_offset"]}
    bad: dict[str, list[object]] = {"table_name": [], "reason": [], "raw_record": [], "line_number": [], "_offset": []}
    for position, raw in enumerate(records):
        try:
            record = _identified(table, raw)
        except _Unidentifiable as error:
            bad["table_name"].append(table)
            bad["reason"].append(str(error))
            bad["raw_record"].append(_as_text(raw))
            bad["line_number"].append(offsets[position] - start + 1)
            bad["_offset"].append(offsets[position])
            continue
        for name in fields:
            good[name].append(_value_text(record.get(name)))
        unknown = {k: v for k, v in record.items() if k not in fields}
        good["_unknown_fields"].append(json.dumps(unknown, ensure_ascii=False) if unknown else None)
        good["_offset"].append(offsets[position])
    good_table = pa.table(
        good,
        schema=pa.schema(
            [*(pa.field(n, pa.string()) for n in fields), ("_unknown_fields", pa.string()), ("_offset", pa.int64())]
        ),
    )
    bad_table = pa.table(bad, schema=_quarantine_payload_schema())
    return good_table, bad_table


def _identified(table: RawTable, raw: object) -> dict[str, Any]:
    if isinstance(raw, Undecodable):
        raise _Unidentifiable(raw.reason)
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            raise _Unidentifiable(f"not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise _Unidentifiable(f"not a JSON object but {type(raw).__name__}")
    key = KEY_FIELD[table]
    value = raw.get(key)
    if not is_key(value):
        raise _Unidentifiable(f"field {key!r} must be an integer key within bigint, got {json.dumps(value)}")
    return raw


def _value_text(value: object) -> str | None:
    """The value as the text it arrived as: strings unchanged, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _as_text(raw: object) -> str:
    if isinstance(raw, Undecodable):
        raw = raw.data
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=repr)


def _quarantine_payload_schema() -> pa.Schema:
    return pa.schema(
        [QUARANTINE_SCHEMA.field(n) for n in ("table_name", "reason", "raw_record", "line_number", "_offset")]
    )


def _empty_quarantine() -> pa.Table:
    return _quarantine_payload_schema().empty_table()


@dataclass(frozen=True)
class Lines:
    """An object's records: an Arrow table when every record is well formed (vectorised), else the
    raw lines, for the per-record path that quarantines the bad ones. An empty line is an offset
    without a record (a commit marker): ``positions`` then says which line each record is on."""

    records: pa.Table | list[bytes]
    positions: list[int] | None
    span: int  # lines, records or not: the offsets the object covers


def parse_lines(table: RawTable, data: bytes) -> Lines:
    """The records of a JSON-lines object, one line per offset."""
    lines = data.splitlines()
    positions = [i for i, line in enumerate(lines) if line] if b"" in lines else None
    kept = lines if positions is None else [lines[i] for i in positions]
    body = data if positions is None else b"\n".join(kept)
    try:
        parsed = pa_json.read_json(
            io.BytesIO(body),
            parse_options=pa_json.ParseOptions(
                explicit_schema=RAW_ARROW_SCHEMAS[table], unexpected_field_behavior="error"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return Lines(kept, positions, len(lines))
    keyed = parsed.num_rows == len(kept) and _arrow_rows_are_keyed(table, parsed)
    return Lines(parsed if keyed else kept, positions, len(lines))
