"""Loading into bronze, one entry point per source, each taking the settings: emulated posts (the
embedded path) and raw JSON-lines objects (the batch path: what the S3 sink writes, in a bucket or
a local folder, and backfill files).

Every source is read as streams with offsets, and ``bronze.append`` commits each stream's next offset
with its rows, so a rerun, a crash mid-load or overlapping input never loads a record twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ingestion import clients
from ingestion.bronze import AppendResult, Lake, append, committed_offset, ensure_tables, parse_lines
from ingestion.config import Settings
from ingestion.emulate import PostBatch, PostSource, batches
from ingestion.errors import PinpipeError
from ingestion.schemas import RAW_TABLES
from ingestion.sink import parse_object_key


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


def load_new_posts(
    settings: Settings,
    source: PostSource,
    count: int,
    *,
    batch_size: int = 100_000,
    on_batch: Callable[[PostBatch, list[AppendResult]], None] | None = None,
) -> list[AppendResult]:
    """``count`` posts of ``source`` after the last one bronze holds: what `pinpipe run --posts N`
    and the daily DAG load, so each run adds N posts however many came before."""
    lake = Lake.from_settings(settings)
    ensure_tables(lake)
    loaded = min(committed_offset(lake, table, f"emulator/{source.name}") for table in RAW_TABLES)
    return load_posts(settings, source, loaded + count, batch_size=batch_size, on_batch=on_batch)


class GapError(RuntimeError):
    """Offsets are missing between what bronze holds and the next object: never skipped silently."""


class NoRawObjects(PinpipeError):
    """The place to load from does not exist or cannot be read."""


@dataclass(frozen=True)
class RawFile:
    """One object to load: records ``start ..`` of ``stream``, one per line."""

    key: str  # path below the root the objects were listed from
    stream: str
    start: int


class _Store(Protocol):
    @property
    def where(self) -> str: ...

    def keys(self, prefix: str) -> Iterator[str]: ...

    def read(self, key: str) -> bytes: ...


@dataclass(frozen=True)
class _S3Store:
    s3: Any
    bucket: str
    root: str  # key prefix, no trailing slash

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.root}"

    def keys(self, prefix: str) -> Iterator[str]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.root}/{prefix}"
        ):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.root) + 1 :]

    def read(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=f"{self.root}/{key}")["Body"].read())


@dataclass(frozen=True)
class _FolderStore:
    root: Path

    @property
    def where(self) -> str:
        return str(self.root)

    def keys(self, prefix: str) -> Iterator[str]:
        folder = self.root / prefix
        if folder.is_dir():
            yield from (str(path.relative_to(self.root)) for path in sorted(folder.rglob("*")) if path.is_file())

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


def _store(settings: Settings, source: str | None) -> _Store:
    """Where raw objects are read from: ``s3://bucket/prefix``, a local folder, or by default the
    sink's ``s3://<bucket>/raw``."""
    if source is None:
        source = f"s3://{settings.s3_bucket}/raw"
    if source.startswith("s3://"):
        bucket, _, prefix = source[len("s3://") :].partition("/")
        return _S3Store(clients.s3_client(settings), bucket, prefix.strip("/"))
    folder = Path(source).expanduser().resolve()
    if not folder.is_dir():
        raise NoRawObjects(f"{source} is not a folder (give a folder of raw objects or an s3:// prefix)")
    return _FolderStore(folder)


def _streams(store: _Store, topic: str) -> dict[str, list[RawFile]]:
    """The raw objects of ``topic`` by stream, each stream's objects in offset order.

    Objects in the sink's layout (``topics/<topic>/partition=<p>/<topic>+<p>+<start>.json``) belong
    to their Kafka partition's stream, wherever they are stored: a folder holding a copy of the
    sink's objects loads exactly once beside the bucket. Any other JSON-lines file below
    ``<topic>/`` (a backfill) is a stream of its own, from its first line.
    """
    streams: dict[str, list[RawFile]] = {}
    for key in store.keys(f"topics/{topic}/"):
        raw = parse_object_key(key)
        if raw is not None and raw.topic == topic:
            stream = f"kafka/{topic}/{raw.partition}"
            streams.setdefault(stream, []).append(RawFile(key, stream, raw.start))
    for key in store.keys(f"{topic}/"):
        if key.endswith((".json", ".jsonl")):
            stream = f"file/{key}"
            streams[stream] = [RawFile(key, stream, 0)]
    return {stream: sorted(files, key=lambda f: f.start) for stream, files in streams.items()}


def load_raw_objects(
    settings: Settings,
    *,
    source: str | None = None,
    on_object: Callable[[RawFile, AppendResult], None] | None = None,
) -> list[AppendResult]:
    """Append every raw record not yet in bronze from ``source`` (an ``s3://`` prefix or a local
    folder; default the sink's ``s3://<bucket>/raw``), stream by stream in offset order.

    Each Kafka partition is a stream (``kafka/<topic>/<partition>``), as is each backfill file, whose
    next offset is committed in the Delta log with the rows; an object's lines below it are skipped,
    so a rerun, a crash mid-load, or overlapping objects from a restarted sink never load a record
    twice, and a missing range of offsets stops the load (``GapError``) instead of being skipped.
    """
    store = _store(settings, source)
    lake = Lake.from_settings(settings)
    ensure_tables(lake)
    results = []
    for topic, table in settings.topic_tables.items():
        for stream, files in _streams(store, topic).items():
            done = committed_offset(lake, table, stream)
            # the last object starting at or before `done` may hold records from `done` on
            first = max((i for i, f in enumerate(files) if f.start <= done), default=0)
            for raw in files[first:]:
                if raw.start > done:
                    raise GapError(
                        f"{stream}: bronze holds offsets below {done}, the next object {raw.key} starts at {raw.start}"
                    )
                records = parse_lines(table, store.read(raw.key))  # one row or line per offset
                result = append(lake, table, records, stream=stream, start=raw.start, source=f"{store.where}/{raw.key}")
                done = max(done, raw.start + len(records))
                results.append(result)
                if on_object is not None:
                    on_object(raw, result)
    return results
