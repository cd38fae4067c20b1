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

import pyarrow as pa
from prometheus_client import CollectorRegistry

from ingestion import clients
from ingestion.bronze import (
    AppendResult,
    StreamSlice,
    append,
    append_slices,
    committed_offset,
    committed_offsets,
    refuse_spark_bronze,
)
from ingestion.bronze_rows import Lines, parse_lines
from ingestion.config import Settings
from ingestion.emulate import PostBatch, PostSource, batches
from ingestion.errors import PinpipeError
from ingestion.failpoints import failpoint
from ingestion.lake import Lake, ensure_tables, newest_ingested_at
from ingestion.metrics import BronzeMetrics
from ingestion.object_keys import object_key, parse_object_key
from ingestion.schemas import RAW_TABLES, RawTable


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
    return _PostLoader(settings, source).load(count, batch_size, on_batch)


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
    loader = _PostLoader(settings, source)
    return loader.load(loader.loaded + count, batch_size, on_batch)


class _PostLoader:
    """Posts of an emulator source into bronze, from the first one not yet in all three tables."""

    def __init__(self, settings: Settings, source: PostSource) -> None:
        self.lake, self.source = Lake.from_settings(settings), source
        ensure_tables(self.lake)
        self.stream = f"emulator/{source.name}"
        self.loaded = min(committed_offset(self.lake, table, self.stream) for table in RAW_TABLES)

    def load(
        self, count: int, batch_size: int, on_batch: Callable[[PostBatch, list[AppendResult]], None] | None
    ) -> list[AppendResult]:
        results = []
        for batch in batches(self.source, count, start=self.loaded, batch_size=batch_size):
            batch_results = []
            for table in RAW_TABLES:
                batch_results.append(
                    append(
                        self.lake,
                        table,
                        batch.table(table),
                        stream=self.stream,
                        start=batch.start,
                        source=f"emulator:{self.source.name}",
                    )
                )
                failpoint("load.posts.after_table")
            results.extend(batch_results)
            if on_batch is not None:
                on_batch(batch, batch_results)
        return results


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


class RawObjectStore(Protocol):
    @property
    def where(self) -> str: ...

    def folders(self, prefix: str) -> list[str]:
        """The folders right below ``prefix`` (each ending in ``/``)."""
        ...

    def keys(self, prefix: str, after: str | None = None) -> Iterator[str]:
        """The objects below ``prefix``, in key order, only those after ``after`` if given."""
        ...

    def read(self, key: str) -> bytes: ...


@dataclass(frozen=True)
class _S3Store:
    s3: Any
    bucket: str
    root: str  # key prefix, no trailing slash

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.root}"

    def folders(self, prefix: str) -> list[str]:
        found = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.root}/{prefix}", Delimiter="/"
        )
        for page in pages:
            found += [item["Prefix"][len(self.root) + 1 :] for item in page.get("CommonPrefixes", [])]
        return found

    def keys(self, prefix: str, after: str | None = None) -> Iterator[str]:
        listing = {"Bucket": self.bucket, "Prefix": f"{self.root}/{prefix}"}
        if after is not None:
            listing["StartAfter"] = f"{self.root}/{after}"
        for page in self.s3.get_paginator("list_objects_v2").paginate(**listing):
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

    def folders(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        return sorted(f"{p.relative_to(self.root)}/" for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def keys(self, prefix: str, after: str | None = None) -> Iterator[str]:
        folder = self.root / prefix
        if folder.is_dir():
            keys = sorted(str(path.relative_to(self.root)) for path in folder.rglob("*") if path.is_file())
            yield from (key for key in keys if after is None or key > after)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


def raw_object_store(settings: Settings, source: str | None) -> RawObjectStore:
    """Where raw objects are read from: ``s3://bucket/prefix``, a local folder, or by default the
    sink's ``s3://<bucket>/raw``."""
    if source is None:
        source = f"s3://{settings.s3_bucket}/raw"
    if source.startswith("s3://"):
        return _S3Store(clients.s3_client(settings), *clients.bucket_and_prefix(source))
    folder = Path(source).expanduser().resolve()
    if not folder.is_dir():
        raise NoRawObjects(f"{source} is not a folder (give a folder of raw objects or an s3:// prefix)")
    return _FolderStore(folder)


def _streams(store: RawObjectStore, topic: str, loaded: Callable[[str], int]) -> dict[str, list[RawFile]]:
    """The raw objects of ``topic`` still to load, by stream, each stream's objects in offset order.

    Objects in the sink's layout (``topics/<topic>/partition=<p>/<topic>+<p>+<start>.json``) belong
    to their Kafka partition's stream, wherever they are stored: a folder holding a copy of the
    sink's objects loads exactly once beside the bucket. A partition is listed only after the key of
    the offset it was ``loaded`` to (keys sort by offset), and whole only when that listing does not
    start at that offset (an object that straddles it, after a sink restart). Any other JSON-lines
    file below ``<topic>/`` (a backfill) is a stream of its own, from its first line.
    """

    def objects(keys: Iterator[str], stream: str) -> list[RawFile]:
        found = [raw for raw in map(parse_object_key, keys) if raw is not None and raw.topic == topic]
        return sorted((RawFile(raw.key, stream, raw.start) for raw in found), key=lambda f: f.start)

    streams: dict[str, list[RawFile]] = {}
    for folder in store.folders(f"topics/{topic}/"):
        number = folder.rstrip("/").rsplit("partition=", 1)[-1]
        if not number.isdigit():
            continue
        stream = f"kafka/{topic}/{int(number)}"
        done = loaded(stream)
        after = object_key("", topic, int(number), done - 1).lstrip("/")
        files = objects(store.keys(folder, after=after), stream) if done else []
        if not files or files[0].start != done:
            files = objects(store.keys(folder), stream)
        streams[stream] = files
    for key in store.keys(f"{topic}/"):
        if key.endswith((".json", ".jsonl")):
            streams[f"file/{key}"] = [RawFile(key, f"file/{key}", 0)]
    return streams


def load_raw_objects(
    settings: Settings,
    *,
    source: str | None = None,
    on_commit: Callable[[AppendResult, list[RawFile]], None] | None = None,
    metrics: BronzeMetrics | None = None,
) -> list[AppendResult]:
    """Append every raw record not yet in bronze from ``source``; see ``RawObjectLoader``."""
    return RawObjectLoader(settings, source, metrics).load(on_commit)


class RawObjectLoader:
    """Appends raw records to bronze from ``source`` (an ``s3://`` prefix or a local folder; default
    the sink's ``s3://<bucket>/raw``), stream by stream in offset order, several objects and
    partitions per Delta commit. One loader keeps its client and open tables between loads.

    Each Kafka partition is a stream (``kafka/<topic>/<partition>``), as is each backfill file, whose
    next offset is committed in the Delta log with the rows; an object's lines below it are skipped,
    so a rerun, a crash mid-load, or overlapping objects from a restarted sink never load a record
    twice, and a missing range of offsets stops the load (``GapError``) instead of being skipped.
    """

    def __init__(self, settings: Settings, source: str | None = None, metrics: BronzeMetrics | None = None) -> None:
        self.settings = settings
        self.store = raw_object_store(settings, source)
        self.lake = Lake.from_settings(settings)
        refuse_spark_bronze(self.lake, list(settings.topic_tables.values()))
        ensure_tables(self.lake)
        self.metrics = metrics or BronzeMetrics(CollectorRegistry())
        for table in settings.topic_tables.values():
            self.metrics.saw(table, newest_ingested_at(self.lake, table))

    def load(self, on_commit: Callable[[AppendResult, list[RawFile]], None] | None = None) -> list[AppendResult]:
        """Every record not yet in bronze (``on_commit`` is told of each commit)."""
        store, lake = self.store, self.lake
        results: list[AppendResult] = []

        def committed(result: AppendResult, files: list[RawFile]) -> None:
            self.metrics.observe(result.table, result)
            if on_commit is not None:
                on_commit(result, files)

        for topic, table in self.settings.topic_tables.items():
            batch = _Batch(lake, table, self.settings.load_commit_records, committed, results)
            loaded = committed_offsets(lake, table)
            for stream, files in _streams(store, topic, loaded).items():
                done = loaded(stream)
                # the last object starting at or before `done` may hold records from `done` on
                first = max((i for i, f in enumerate(files) if f.start <= done), default=0)
                for raw in files[first:]:
                    if raw.start > done:
                        batch.end_stream()
                        batch.commit()  # what came before the gap is loaded all the same
                        raise GapError(
                            f"{stream}: bronze holds offsets below {done}, "
                            f"the next object {raw.key} starts at {raw.start}"
                        )
                    lines = parse_lines(table, store.read(raw.key))  # one line per offset
                    batch.add(raw, lines, f"{store.where}/{raw.key}", overlaps=raw.start < done)
                    done = max(done, raw.start + lines.span)
                batch.end_stream()
            batch.commit()
        return results


class _Batch:
    """Objects gathered for one commit: consecutive objects of a stream merge into one slice (one
    slice per stream and commit, as ``append_slices`` wants); an object overlapping what came before
    it, or one that is not all well formed, is committed on its own, trimmed by offset there."""

    def __init__(
        self,
        lake: Lake,
        table: RawTable,
        commit_records: int,
        on_commit: Callable[[AppendResult, list[RawFile]], None] | None,
        results: list[AppendResult],
    ) -> None:
        self.lake, self.table, self.commit_records = lake, table, commit_records
        self.on_commit, self.results = on_commit, results
        self.slices: list[StreamSlice] = []
        self.files: list[RawFile] = []
        self.records = 0
        self._stream: list[tuple[RawFile, Lines, str]] = []  # the current stream's run of consecutive objects

    def add(self, raw: RawFile, lines: Lines, source: str, *, overlaps: bool) -> None:
        if overlaps or not isinstance(lines.records, pa.Table):
            self.end_stream()
            self.commit()
            self._stream = [(raw, lines, source)]
            self.end_stream()
            self.commit()
            return
        self._stream.append((raw, lines, source))
        self.records += lines.records.num_rows
        if self.records >= self.commit_records:
            self.end_stream()
            self.commit()

    def end_stream(self) -> None:
        if not self._stream:
            return
        first = self._stream[0][0]
        records, positions, span = [], [], 0
        for raw, lines, _ in self._stream:
            count = lines.records.num_rows if isinstance(lines.records, pa.Table) else len(lines.records)
            positions += [raw.start - first.start + p for p in (lines.positions or range(count))]
            records.append(lines.records)
            span = raw.start - first.start + lines.span
        merged: pa.Table | list[bytes] = (
            pa.concat_tables(records) if all(isinstance(r, pa.Table) for r in records) else [*records[0]]
        )
        contiguous = positions == list(range(len(positions)))
        sources = self._stream[0][2] if len(self._stream) == 1 else f"{self._stream[0][2]} .. {self._stream[-1][0].key}"
        self.slices.append(
            StreamSlice(
                first.stream, first.start, merged, sources, positions=None if contiguous else positions, span=span
            )
        )
        self.files += [raw for raw, _, _ in self._stream]
        self._stream = []

    def commit(self) -> None:
        if not self.slices:
            return
        result = append_slices(self.lake, self.table, self.slices)
        failpoint("load.raw.after_commit")
        self.results.append(result)
        if self.on_commit is not None:
            self.on_commit(result, self.files)
        self.slices, self.files, self.records = [], [], 0
