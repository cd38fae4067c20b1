"""The DuckDB warehouse file: opened for reading or writing, built on a private copy that replaces
it whole (builds take turns under a file lock), and the lake its last build read."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from filelock import FileLock, Timeout

from ingestion import clients
from ingestion.config import Settings
from ingestion.duckdb_setup import duckdb_config, lake_secret_sql
from ingestion.errors import (
    BuildBusy,
    LakeMissing,
    NoWarehouse,
    PinpipeError,
)
from ingestion.lake import Lake
from ingestion.schemas import RAW_TABLES

if TYPE_CHECKING:
    pass


def connect_warehouse(settings: Settings, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The DuckDB warehouse file, opened the way dbt opens it (the same extension directory)."""
    if read_only and not Path(settings.warehouse).exists():
        raise NoWarehouse(
            f"no warehouse at {settings.warehouse}: build it with `pinpipe run` or `pinpipe transform`, "
            "or point --warehouse (PINPIPE_WAREHOUSE) at it"
        )
    config = duckdb_config(settings.duckdb_extension_directory, settings.duckdb_spill_directory)
    try:
        connection = duckdb.connect(settings.warehouse, read_only=read_only, config=config)
    except duckdb.ConnectionException:
        if not read_only:
            raise
        # dbt, run in this very process, still holds the file read-write: DuckDB shares its instance
        # only with connections of the same configuration
        connection = duckdb.connect(settings.warehouse, config=config)
    if settings.lake.startswith("s3://"):  # the bronze views read the lake: DuckDB needs its bucket's secret
        connection.execute(lake_secret_sql(settings))
    return connection


def check_lake(settings: Settings) -> None:
    """Refuse a lake that holds no bronze tables: building on it would replace every mart by an
    empty one, and a mistyped path looks exactly like that."""
    if not settings.lake.startswith("s3://"):
        root = Path(settings.lake)
        if root.exists() and not root.is_dir():
            raise LakeMissing(f"lake {root} is a file, not a folder: point --lake (PINPIPE_LAKE) at the lake's folder")
    lake = Lake.from_settings(settings)
    try:
        found = any(lake.delta_table(table) is not None for table in RAW_TABLES)
    except OSError as error:  # deltalake's S3 errors: "Kernel error -> Generic S3 error"
        raise clients.lake_unreadable(settings, error) from None
    if not found:
        raise LakeMissing(
            f"lake {settings.lake} has no bronze tables: check --lake (PINPIPE_LAKE), "
            "or load posts into it first with `pinpipe emulate` or `pinpipe run`"
        )


@contextmanager
def build_lock(settings: Settings, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    """One build of a warehouse at a time, across processes (a file lock beside it): a second waits,
    saying for whom, up to ``build_wait_seconds``, then gives up with one line."""
    lock = FileLock(f"{settings.warehouse}.build-lock")
    holder = Path(f"{settings.warehouse}.build-lock.holder")  # the lock file itself is emptied by each try
    try:  # both sit beside the warehouse, whose folder must exist and take files (filelock would wait on it)
        holder.parent.mkdir(parents=True, exist_ok=True)
        holder.touch()
    except OSError as error:
        raise PinpipeError(
            f"cannot write in the warehouse's folder {holder.parent}: {error.strerror}; "
            "point --warehouse (PINPIPE_WAREHOUSE) at a writable place"
        ) from None
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = _read_or(holder, "another process")
        if on_wait is not None:
            on_wait(f"waiting for {who}, which is building {settings.warehouse}")
        try:
            lock.acquire(timeout=settings.build_wait_seconds)
        except Timeout:
            raise BuildBusy(
                f"{_read_or(holder, who)} is still building {settings.warehouse} after"
                f" {settings.build_wait_seconds:g} s: wait for it to finish, or raise PINPIPE_BUILD_WAIT_SECONDS"
            ) from None
    try:
        holder.write_text(f"pinpipe (pid {os.getpid()})")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _read_or(path: Path, default: str) -> str:
    try:
        return path.read_text().strip() or default
    except OSError:
        return default


@contextmanager
def building(settings: Settings, on_wait: Callable[[str], None] | None = None) -> Iterator[Settings]:
    """Settings whose warehouse is a private copy of the current one; when the block ends without
    an error, the copy replaces the warehouse in one rename.

    Readers are never blocked by a build, nor a build by readers: an analyst's open session keeps
    reading the file it opened, the next one opens the new build, and nobody sees a half-built or
    failed one. Builds take turns (`build_lock`). Only the DuckDB target has a warehouse file; on
    the others the settings are yielded as they are.
    """
    if settings.target != "local":
        yield settings
        return
    warehouse = Path(settings.warehouse)
    with build_lock(settings, on_wait):
        # The same path every build (builds take turns): dbt's profile names it, and a path of its
        # own would cost every build a full parse of the project. The same file name: DuckDB names
        # the database (catalog) after it.
        scratch = warehouse.parent / ".building" / f"{warehouse.name}.d"
        private = settings.model_copy(update={"warehouse": str(scratch / warehouse.name)})
        shutil.rmtree(scratch, ignore_errors=True)  # a killed build's file, and its write-ahead log
        try:
            _copy_warehouse(settings, private.warehouse)
            yield private
            _publish_warehouse(settings, private.warehouse)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def stage_copy(settings: Settings, path: str) -> str:
    """For a build spread over processes (the DAG's tasks): the warehouse copied to ``path``, where
    the build runs until ``publish_copy``; the DuckDB target only."""
    if settings.target == "local":
        with build_lock(settings, None):
            _copy_warehouse(settings, path)
    return path


def publish_copy(settings: Settings, path: str) -> str:
    """The build at ``path`` (``stage_copy``) replaces the warehouse, whole; returns the warehouse."""
    if settings.target == "local":
        with build_lock(settings, None):
            _publish_warehouse(settings, path)
    return settings.warehouse


def _copy_warehouse(settings: Settings, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if Path(settings.warehouse).exists():
        shutil.copy2(settings.warehouse, path)
    else:
        Path(path).unlink(missing_ok=True)


def _publish_warehouse(settings: Settings, path: str) -> None:
    with connect_warehouse(settings.model_copy(update={"warehouse": path})) as connection:
        connection.execute("checkpoint")  # everything in the file itself, no write-ahead log left behind
    os.replace(path, settings.warehouse)


def _built_from_file(settings: Settings) -> Path:
    return Path(f"{settings.warehouse}.lake")


def built_from_lake(settings: Settings) -> str | None:
    """The lake the DuckDB warehouse's last `pinpipe` build read, when known (other targets: None)."""
    marker = _built_from_file(settings)
    return marker.read_text().strip() if settings.target == "local" and marker.exists() else None


def record_built_from_lake(settings: Settings) -> None:
    """Note which lake the build just published read: the next build on another lake starts staging
    from scratch at once."""
    if settings.target == "local":
        _built_from_file(settings).write_text(settings.lake + "\n")
