"""What a build read: each bronze table's Delta version, the project's files and the settings dbt
sees, recorded beside the DuckDB warehouse when a whole build is published. A build with the same
inputs would publish the same warehouse, so `pinpipe transform` says so and skips dbt."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ingestion.config import Settings
from ingestion.lake import BRONZE_TABLES, Lake

# what dbt reads of the project: a change to any of them is a change to what a build makes
PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
PROJECT_FOLDERS = ("models", "macros", "seeds", "tests/generic", "analyses", "snapshots")


@dataclass(frozen=True)
class BuildInputs:
    lake: str
    bronze_versions: dict[str, int | None]  # None: the table does not exist
    project: str  # digest of the project's files
    settings: str  # digest of the settings dbt's environment is made from
    # digest of the seeds alone: the incremental models' rows were made with them
    seeds: str

    def describe(self) -> str:
        versions = [f"{table} v{version}" for table, version in self.bronze_versions.items() if version is not None]
        return f"bronze {', '.join(versions) or 'empty'}"


def current_inputs(settings: Settings) -> BuildInputs:
    lake = Lake.from_settings(settings)
    versions = {}
    for table in BRONZE_TABLES:
        delta = lake.delta_table(table)
        versions[table] = None if delta is None else delta.version()
    return BuildInputs(
        settings.lake,
        versions,
        project_digest(settings.project_dir),
        _settings_digest(settings),
        _digest(settings.project_dir, [], ["seeds"]),
    )


def project_digest(project_dir: Path) -> str:
    """A digest of every file dbt reads of the project."""
    return _digest(project_dir, PROJECT_FILES, PROJECT_FOLDERS)


def _digest(project_dir: Path, files: Sequence[str], folders: Sequence[str]) -> str:
    digest = hashlib.sha256()
    paths = [project_dir / name for name in files]
    for folder in folders:
        paths += sorted((project_dir / folder).rglob("*")) if (project_dir / folder).is_dir() else []
    for path in paths:
        if path.is_file():
            digest.update(str(path.relative_to(project_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _settings_digest(settings: Settings) -> str:
    environment = settings.environment() | settings.production_dbt_environment()
    return hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest()


def _record_file(settings: Settings) -> Path:
    return Path(f"{settings.warehouse}.inputs.json")


def record(settings: Settings, inputs: BuildInputs) -> None:
    """Note what the build just published read (the DuckDB warehouse only: other targets keep
    their tables elsewhere)."""
    if settings.target == "local":
        _record_file(settings).write_text(json.dumps(asdict(inputs), indent=2) + "\n")


def _last_recorded(settings: Settings) -> dict[str, Any] | None:
    """What the published DuckDB warehouse was built from, as recorded; None where that is not known."""
    recorded = _record_file(settings)
    if settings.target != "local" or not recorded.exists():
        return None
    try:
        found = json.loads(recorded.read_text())
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def seeds_changed_since_last_build(settings: Settings, inputs: BuildInputs) -> bool:
    """The seeds differ from those the published DuckDB warehouse was built with (where that is
    known): the rows the incremental models hold were made with the old ones."""
    recorded = _last_recorded(settings)
    return recorded is not None and recorded.get("seeds") not in (None, inputs.seeds)


def unchanged_since_last_build(settings: Settings, inputs: BuildInputs) -> bool:
    """The published DuckDB warehouse was built from exactly ``inputs``."""
    recorded = _last_recorded(settings) if Path(settings.warehouse).exists() else None
    try:
        return recorded is not None and BuildInputs(**recorded) == inputs
    except TypeError:  # written by another version: build, and record it anew
        return False
