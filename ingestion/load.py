"""Loading into bronze, one entry point per source, each taking the settings: emulated posts (the
embedded path) and the raw JSON-lines objects the S3 sink writes (the batch path).

Every source is read as streams with offsets, and ``bronze.append`` commits each stream's next offset
with its rows, so a rerun, a crash mid-load or overlapping input never loads a record twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingestion import clients
from ingestion.bronze import AppendResult, Lake, append, committed_offset, ensure_tables, parse_lines
from ingestion.config import Settings
from ingestion.emulate import PostBatch, PostSource, batches
from ingestion.schemas import RAW_TABLES
from ingestion.sink import RawObject, parse_object_key


def load_posts(
    settings: Settings,
    source: PostSource,
    count: int,
    *,
    batch_size: int = 100_000,
    on_batch: Callable[[PostBatch, list[AppendResult]], None] | None = None,
) -> list[AppendResult]:
    """Load posts ``0 .. count - 1`` of ``source`` into bronze pin, geo and user, resuming where it stopped.

    The stream id names the source and its seed, so re-running is incremental: posts already loaded
    are skipped and only the new ones are generated and appended.
    """
    lake = Lake.from_settings(settings)
    ensure_tables(lake)
    stream = f"emulator/{source.name}"
    resume = min(committed_offset(lake, table, stream) for table in RAW_TABLES)
    results = []
    for batch in batches(source, count, start=resume, batch_size=batch_size):
        batch_results = [
            append(lake, table, batch.table(table), stream=stream, start=batch.start, source=f"emulator:{source.name}")
            for table in RAW_TABLES
        ]
        results.extend(batch_results)
        if on_batch is not None:
            on_batch(batch, batch_results)
    return results


class GapError(RuntimeError):
    """Offsets are missing between what bronze holds and the next object: never skipped silently."""


def load_raw_objects(
    settings: Settings, *, prefix: str = "raw", on_object: Callable[[RawObject, AppendResult], None] | None = None
) -> list[AppendResult]:
    """Append every raw record in ``s3://<bucket>/<prefix>/`` not yet in bronze, partition by
    partition in offset order.

    Each Kafka partition is a stream (``kafka/<topic>/<partition>``) whose next offset is committed in
    the Delta log with the rows; an object's lines below it are skipped, so a rerun, a crash mid-load,
    or overlapping objects from a restarted sink never load a record twice.
    """
    lake, s3, bucket = Lake.from_settings(settings), clients.s3_client(settings), settings.s3_bucket
    ensure_tables(lake)
    results = []
    for topic, table in settings.topic_tables.items():
        for partition, objects in _objects_by_partition(s3, bucket, f"{prefix}/topics/{topic}/").items():
            stream = f"kafka/{topic}/{partition}"
            done = committed_offset(lake, table, stream)
            # the last object starting at or before `done` may hold records from `done` on
            first = max((i for i, o in enumerate(objects) if o.start <= done), default=0)
            for raw in objects[first:]:
                if raw.start > done:
                    raise GapError(
                        f"{stream}: bronze holds offsets below {done}, the next object {raw.key} starts at {raw.start}"
                    )
                data = s3.get_object(Bucket=bucket, Key=raw.key)["Body"].read()
                records = parse_lines(table, data)  # one row or line per offset
                result = append(lake, table, records, stream=stream, start=raw.start, source=f"s3://{bucket}/{raw.key}")
                done = max(done, raw.start + len(records))
                results.append(result)
                if on_object is not None:
                    on_object(raw, result)
    return results


def _objects_by_partition(s3: Any, bucket: str, prefix: str) -> dict[int, list[RawObject]]:
    by_partition: dict[int, list[RawObject]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            raw = parse_object_key(item["Key"])
            if raw is not None:
                by_partition.setdefault(raw.partition, []).append(raw)
    return {partition: sorted(objects, key=lambda o: o.start) for partition, objects in by_partition.items()}
