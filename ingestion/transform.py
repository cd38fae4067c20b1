"""Transform: run the dbt project in-process on the configured target and read the marts back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import yaml
from filelock import FileLock, Timeout

from ingestion import clients
from ingestion.config import SKIP_UNIT_TESTS, Settings
from ingestion.errors import (
    BuildBusy,
    EngineNotInstalled,
    LakeMissing,
    NotReadOnly,
    NoWarehouse,
    PinpipeError,
)
from ingestion.lake import Lake, ensure_tables
from ingestion.schemas import RAW_TABLES

if TYPE_CHECKING:
    from dbt.contracts.graph.manifest import Manifest

# the exposure naming the marts analysts read, in the order of the business questions
INSIGHTS_EXPOSURE = "exposure.pinpipe.pinterest_insights"


# DuckDB extensions shipped as PyPI wheels: installing them from the wheel's file means no download
# from DuckDB's extension site, which this project must not depend on.
_EXTENSION_WHEELS = {"delta": "duckdb_extension_delta", "httpfs": "duckdb_extension_httpfs"}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_config(
    extension_directory: Path, spill_directory: str | None = None
) -> dict[str, str | bool | int | float | list[str]]:
    """The configuration every DuckDB connection of the project opens with (dbt's profile's
    `config_options` too: DuckDB shares a file's instance only with the same configuration)."""
    config: dict[str, str | bool | int | float | list[str]] = {"extension_directory": str(extension_directory)}
    if spill_directory is not None:
        config["temp_directory"] = spill_directory
    return config


def ensure_duckdb_extensions(extension_directory: Path) -> list[str]:
    """Install the delta and httpfs extensions into ``extension_directory`` from their wheels, once;
    returns the ones installed now.

    A DuckDB of this version opened with that ``extension_directory`` autoloads them: dbt (the
    profile sets it), the CLI, and an analyst's own session (README).
    """
    with duckdb.connect(config=duckdb_config(extension_directory)) as connection:
        installed = {
            name
            for (name,) in connection.execute(
                "select extension_name from duckdb_extensions() where installed"
            ).fetchall()
        }
        missing = [extension for extension in _EXTENSION_WHEELS if extension not in installed]
        for extension in missing:
            wheel = Path(str(import_module(_EXTENSION_WHEELS[extension]).__file__)).parent
            binary = wheel / "extensions" / f"v{duckdb.__version__}" / f"{extension}.duckdb_extension"
            # INSTALL takes no prepared parameter: the path is a quoted literal
            connection.execute(f"install {_sql_string(str(binary))}")
    return missing


def connect_warehouse(settings: Settings, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The DuckDB warehouse file, opened the way dbt opens it (the same extension directory)."""
    if read_only and not Path(settings.warehouse).exists():
        raise NoWarehouse(
            f"no warehouse at {settings.warehouse}: build it with `pinpipe run` or `pinpipe transform`, "
            "or point --warehouse (PINPIPE_WAREHOUSE) at it"
        )
    config = duckdb_config(settings.duckdb_extension_directory, settings.duckdb_spill_directory)
    try:
        return duckdb.connect(settings.warehouse, read_only=read_only, config=config)
    except duckdb.ConnectionException:
        if not read_only:
            raise
        # dbt, run in this very process, still holds the file read-write: DuckDB shares its instance
        # only with connections of the same configuration
        return duckdb.connect(settings.warehouse, config=config)


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
    try:  # both sit beside the warehouse, whose folder must exist and take files
        holder.parent.mkdir(parents=True, exist_ok=True)
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
    except OSError as error:  # (after Timeout, which is one)
        raise PinpipeError(
            f"cannot write in the warehouse's folder {holder.parent}: {error.strerror}; "
            "point --warehouse (PINPIPE_WAREHOUSE) at a writable place"
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


@contextmanager
def _noticing_interrupts() -> Iterator[threading.Event]:
    """An event set when Ctrl-C is pressed inside the block, which it still interrupts: DuckDB turns
    an interrupt during a query into that query's error, which dbt may count as a failure and carry
    on past. Only the main thread gets signals, and a process that ignores SIGINT keeps ignoring it."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield interrupted
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupted.set()
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _dbt_environment(settings: Settings, *, production: bool) -> Iterator[None]:
    """dbt reads the profile's paths from the environment: the settings' variables, set for the
    invocation only (an unset setting as empty, so the caller's environment cannot leak in)."""
    wanted = {f"PINPIPE_{name.upper()}": "" for name in Settings.model_fields} | settings.environment()
    wanted |= settings.production_dbt_environment() if production else {}
    unwanted = [name for name in SKIP_UNIT_TESTS if name not in wanted]
    saved = {name: os.environ.get(name) for name in [*wanted, *unwanted]}
    os.environ.update(wanted)
    for name in unwanted:  # a test run in the same process as a production one runs every test
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# dbt commands that read only the project, not the lake
READ_ONLY_COMMANDS = ("parse", "ls", "list", "compile", "debug")


# what the incremental models' guards (macros/incremental/new_bronze_rows.sql) say when what a model
# holds cannot be merged into: rows of another bronze, or a table of an earlier version of the project
_FROM_SCRATCH = ": rebuild it from scratch"


def rebuild_from_scratch_reason(results: Any) -> str | None:
    """Why a failed build's incremental model must be rebuilt from scratch, if that is why it failed."""
    for result in getattr(results, "results", None) or []:
        message = str(result.message)
        if _FROM_SCRATCH in message:
            return message.split(_FROM_SCRATCH)[0].strip().splitlines()[-1].strip()
    return None


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


class DbtFailed(RuntimeError):
    """dbt failed; ``results`` holds what it returned (the nodes' results), when it got that far."""

    def __init__(self, message: str, results: Any = None) -> None:
        super().__init__(message)
        self.results = results


# the dbt adapters the default install leaves out: target → (adapter module, what installs it)
OPTIONAL_ADAPTERS = {
    "spark": ("dbt.adapters.spark", "dbt-spark and PySpark"),
    "databricks": ("dbt.adapters.databricks", "dbt-databricks"),
}


def require_engine(settings: Settings) -> None:
    """What the target's dbt runs need is installed, or the user is told how to install it: the
    adapter (Spark and Databricks are not in the default install) and, for Spark in this process, Java."""
    target = settings.target
    if target in OPTIONAL_ADAPTERS:
        module, packages = OPTIONAL_ADAPTERS[target]
        if find_spec(module) is None:
            raise EngineNotInstalled(
                f"the {target} target needs {packages}, which the default install leaves out: "
                "run `make spark` (or `.venv/bin/pip install -r requirements-spark.txt`)"
            )
    # the profile is read only when Java is missing: run_dbt checks this before every dbt invocation
    if (
        target == "spark"
        and not os.environ.get("JAVA_HOME")
        and not shutil.which("java")
        and _spark_in_process(settings)
    ):
        raise EngineNotInstalled(
            "the spark target runs Spark in this process, which needs Java 17 or later: "
            "install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )


def _spark_in_process(settings: Settings) -> bool:
    """The spark target starts Spark in the dbt process (the profile's ``method: session``, without
    Spark Connect), not a client of a cluster (``thrift``, ``SPARK_REMOTE``) that needs no local Java."""
    profiles = yaml.safe_load((settings.project_dir / "profiles.yml").read_text())
    method = profiles["pinpipe"]["outputs"]["spark"].get("method")
    return method == "session" and not os.environ.get("SPARK_REMOTE")


def run_dbt(
    settings: Settings,
    args: list[str],
    on_event: Callable[[Any], None] | None = None,
    *,
    manifest: Manifest | None = None,
    production: bool = False,
) -> Any:
    """Invoke dbt (``build``, ``test``, ...) in this process on the settings' target; raise when it
    fails. Returns what the command returns (a Manifest for ``parse``, the results for the others).
    With a parsed ``manifest``, dbt skips reading the project; ``production`` runs skip the unit tests
    (``Settings.production_dbt_environment``)."""
    from dbt.cli.main import dbtRunner  # imported late: dbt's import alone costs about a second

    require_engine(settings)
    if settings.target == "local":
        ensure_duckdb_extensions(settings.duckdb_extension_directory)
        if settings.duckdb_temp_directory is not None:  # DuckDB makes only the last folder of the path
            settings.duckdb_temp_directory.mkdir(parents=True, exist_ok=True)
    if settings.target != "databricks" and args[0] not in READ_ONLY_COMMANDS:
        # every source exists from the first run on, empty until its loader writes
        ensure_tables(Lake.from_settings(settings))
    project = str(settings.project_dir)
    with _dbt_environment(settings, production=production), _noticing_interrupts() as interrupted:
        result = dbtRunner(manifest=manifest, callbacks=[on_event] if on_event else []).invoke(
            [*args, "--project-dir", project, "--profiles-dir", project, "--target", settings.target]
        )
    if interrupted.is_set() or isinstance(result.exception, KeyboardInterrupt):  # whatever dbt made of it
        raise KeyboardInterrupt
    if not result.success:
        raise DbtFailed(
            f"dbt {' '.join(args)} failed: {result.exception or 'see the failing nodes above'}", result.result
        )
    return result.result


class WarmDbt:
    """dbt kept warm in this process for frequent runs (the streaming models every few seconds): the
    project is parsed once and each invocation reuses the manifest, saving dbt's start-up."""

    def __init__(self, settings: Settings, on_wait: Callable[[str], None] | None = None) -> None:
        self.settings, self.on_wait = settings, on_wait
        self._manifest: Manifest | None = None

    def run(self, args: list[str]) -> Any:
        """Run dbt on a private copy of the warehouse and publish it (`building`)."""
        if self._manifest is None:
            self._manifest = run_dbt(self.settings, ["parse", "--quiet"])
        with building(self.settings, self.on_wait) as private:
            return run_dbt(private, args, manifest=self._manifest)


@dataclass(frozen=True)
class DirtyInput:
    """One data-quality check as dbt's build reported it: its test's failures are the rows it counted."""

    check: str
    rows: int
    status: str  # pass, warn, or error when the share went past its budget


def dirty_input_counts(results: Any) -> list[DirtyInput]:
    """The data-quality checks' counts from the results of a dbt build (the `dirty_input` tests),
    most rows first; none when the build did not run them."""
    found = []
    for result in getattr(results, "results", None) or []:
        check = result.node.config.meta.get("dirty_input_check") if result.node.resource_type == "test" else None
        if check is not None:
            found.append(DirtyInput(check, int(result.failures or 0), str(result.status)))
    return sorted(found, key=lambda counted: (-counted.rows, counted.check))


def coverage(settings: Settings) -> str:
    """One line on what the marts were built from: complete posts, posts waiting for a partner
    record, people (from the data_quality mart)."""
    with connect_warehouse(settings, read_only=True) as connection:
        checked = dict(
            connection.execute(
                "select check_name, [affected_rows, checked_rows] from marts.data_quality "
                "where check_name in ('posts_incomplete', 'people_without_age_group')"
            ).fetchall()
        )
    incomplete, posts = checked["posts_incomplete"]
    _, people = checked["people_without_age_group"]
    return (
        f"marts built from {posts - incomplete:,} complete posts ({incomplete:,} waiting for a partner record) "
        f"and {people:,} people"
    )


def target_path(settings: Settings) -> Path:
    """dbt's target directory (artifacts: manifest, run results, docs)."""
    target = Path(os.environ.get("DBT_TARGET_PATH") or "target")
    return target if target.is_absolute() else settings.project_dir / target


def marts(settings: Settings) -> list[str]:
    """The marts, in the order of the business questions: the models the insights exposure depends
    on, read from dbt's manifest (the project is parsed first if there is none yet)."""
    manifest = target_path(settings) / "manifest.json"
    if not manifest.exists():
        run_dbt(settings, ["parse", "--quiet"])
    nodes = json.loads(manifest.read_text())["exposures"][INSIGHTS_EXPOSURE]["depends_on"]["nodes"]
    return [node.rsplit(".", 1)[-1] for node in nodes]


DOCS_FILES = ("index.html", "manifest.json", "catalog.json", "static_index.html")


def publish_docs(settings: Settings) -> str:
    """`dbt docs generate`, then the site copied to ``<lake>/docs/``: ``index.html`` with its JSON
    for a web server, and ``static_index.html``, one file that opens from disk; returns where."""
    with building(settings) as private:  # the catalog is read from a copy: readers keep the warehouse
        run_dbt(private, ["docs", "generate", "--quiet", "--static"])
    target = target_path(settings)
    destination = f"{settings.lake.rstrip('/')}/docs"
    if destination.startswith("s3://"):
        bucket, _, prefix = destination[5:].partition("/")
        for name in DOCS_FILES:
            clients.s3_client(settings).upload_file(str(target / name), bucket, f"{prefix}/{name}")
    else:
        Path(destination).mkdir(parents=True, exist_ok=True)
        for name in DOCS_FILES:
            shutil.copy2(target / name, Path(destination) / name)
    return destination


def read_mart(settings: Settings, mart: str) -> pa.Table:
    """A mart of the settings' target, rows in a stable order."""
    if settings.target == "spark":
        return _read_spark_mart(mart)
    with connect_warehouse(settings, read_only=True) as connection:
        return connection.execute(f"select * from marts.{mart} order by all").to_arrow_table()


# what a query may start with, where DuckDB's parser cannot judge the SQL (Spark's, Databricks')
_QUERY_WORDS = {"select", "with", "show", "describe", "desc", "explain", "values", "from", "table"}


def check_read_only(sql: str, *, dialect: str = "duckdb") -> None:
    """Refuse, before it runs, anything but one query: on DuckDB its own parser says what the SQL is;
    on other engines, the statement's first word."""
    if dialect == "duckdb":
        parsed = duckdb.extract_statements(sql)
        texts = [statement.query for statement in parsed]
        reading = [s.type in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN) for s in parsed]
    else:
        texts = [text for text in sql.split(";") if text.strip()]  # a ; inside a string: refused too
        reading = [text.split(maxsplit=1)[0].lower() in _QUERY_WORDS for text in texts]
    if len(texts) != 1:
        raise NotReadOnly(f"one statement at a time, not {len(texts)}")
    if not reading[0]:
        said = texts[0].split(maxsplit=1)[0].lower() if texts[0].strip() else "that"
        raise NotReadOnly(
            f"only queries run here (select, with, describe, show, explain), not {said}: "
            "the warehouse is read-only, dbt builds it"
        )


def query(settings: Settings, sql: str, *, limit: int = 10_000, wait_s: float = 30) -> pa.Table:
    """Run a SQL query on the settings' target. DuckDB is queried directly (read-only, waiting while a
    dbt run holds the file); other targets through ``dbt show --inline``, at most ``limit`` rows.
    Anything but a query is refused (``check_read_only``)."""
    check_read_only(sql, dialect="duckdb" if settings.target == "local" else settings.target)
    if settings.target != "local":
        # no log at all: with --quiet, dbt show still prints the rows, before pinpipe's own output
        result = run_dbt(settings, ["show", "--log-level", "none", "--inline", sql, "--limit", str(limit)])
        rows = result.results[0].agate_table
        return pa.Table.from_pylist([dict(zip(rows.column_names, row, strict=True)) for row in rows.rows])
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with connect_warehouse(settings, read_only=True) as connection:
                return connection.execute(sql).to_arrow_table()
        except duckdb.IOException as error:  # another process is writing (a dbt run): its lock is brief
            if "lock" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _read_spark_mart(mart: str) -> pa.Table:
    """A mart from the Spark session dbt ran in, in this process (dbt-spark's session method)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is None:
        raise RuntimeError("no Spark session in this process: run dbt on the spark target first")
    # dbt ran in a worker thread: take the process's default session, not this thread's active one
    rows = SparkSession.builder.getOrCreate().table(f"marts.{mart}").toArrow()
    return rows.sort_by([(name, "ascending") for name in rows.column_names])
