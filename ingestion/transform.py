"""Transform: the dbt project run in-process on the configured target (dbt's runner, its
environment, its failures), and the documentation site it generates."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ingestion import clients
from ingestion.config import SKIP_UNIT_TESTS, Settings, variable
from ingestion.duckdb_setup import ensure_duckdb_extensions
from ingestion.errors import (
    EngineNotInstalled,
)
from ingestion.lake import Lake, ensure_tables
from ingestion.warehouse import building

if TYPE_CHECKING:
    from dbt.contracts.graph.manifest import Manifest


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
    wanted = {variable(name): "" for name in Settings.model_fields} | settings.environment()
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
    if settings.target == "local":
        _close_duckdb()
    if interrupted.is_set() or isinstance(result.exception, KeyboardInterrupt):  # whatever dbt made of it
        raise KeyboardInterrupt
    if not result.success:
        raise DbtFailed(
            f"dbt {' '.join(args)} failed: {result.exception or 'see the failing nodes above'}", result.result
        )
    return result.result


def _close_duckdb() -> None:
    """dbt-duckdb keeps the database open in this process after an invocation, with DuckDB's write
    lock: after `building` renames the copy over the warehouse, no other process could open it while
    this one lives (a UI beside `pinpipe refresh`), and the next build would reopen that file, not its
    new copy. Closed after each invocation; the next one opens its own."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment: Any = DuckDBConnectionManager._ENV  # declared None: set by the first connection
        if environment is not None:
            environment.close()
        DuckDBConnectionManager.close_all_connections()  # type: ignore[no-untyped-call]


class WarmDbt:
    """dbt kept warm in this process for frequent runs (the streaming models every few seconds): the
    project is parsed once and each invocation reuses the manifest, saving dbt's start-up."""

    # a refresh neither writes dbt's artifacts (the daily build's run_results stay theirs) nor lists
    # every schema's relations up front: about a second of each refresh
    REFRESH_FLAGS = ("--no-write-json", "--no-populate-cache")

    def __init__(self, settings: Settings, on_wait: Callable[[str], None] | None = None) -> None:
        self.settings, self.on_wait = settings, on_wait
        self._manifest: Manifest | None = None

    @property
    def manifest(self) -> Manifest:
        """The project, parsed by the first use."""
        if self._manifest is None:
            self._manifest = run_dbt(self.settings, ["parse", "--quiet"])
        return self._manifest

    def run(self, args: list[str]) -> Any:
        """Run dbt on a private copy of the warehouse and publish it (`building`)."""
        manifest = self.manifest
        with building(self.settings, self.on_wait) as private:
            return run_dbt(private, [*args, *self.REFRESH_FLAGS], manifest=manifest)


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


def target_path(settings: Settings) -> Path:
    """dbt's target directory (artifacts: manifest, run results, docs)."""
    target = Path(os.environ.get("DBT_TARGET_PATH") or "target")
    return target if target.is_absolute() else settings.project_dir / target


DOCS_FILES = ("index.html", "manifest.json", "catalog.json", "static_index.html")


def publish_docs(settings: Settings) -> str:
    """`dbt docs generate`, then the site copied to ``<lake>/docs/``: ``index.html`` with its JSON
    for a web server, and ``static_index.html``, one file that opens from disk; returns where."""
    with building(settings) as private:  # the catalog is read from a copy: readers keep the warehouse
        run_dbt(private, ["docs", "generate", "--quiet", "--static"])
    target = target_path(settings)
    destination = f"{settings.lake.rstrip('/')}/docs"
    if destination.startswith("s3://"):
        bucket, prefix = clients.bucket_and_prefix(destination)
        for name in DOCS_FILES:
            clients.s3_client(settings).upload_file(str(target / name), bucket, f"{prefix}/{name}")
    else:
        Path(destination).mkdir(parents=True, exist_ok=True)
        for name in DOCS_FILES:
            shutil.copy2(target / name, Path(destination) / name)
    return destination
