"""dbt's artifacts read back: what each node of an invocation did (``run_results.json`` with the
``manifest.json`` written beside it), for the metrics pushed after a build and the UI's pipeline
page; and a history of the builds' results, kept under the state dir."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# builds whose results the history keeps
HISTORY_LENGTH = 30


@dataclass(frozen=True)
class NodeResult:
    name: str
    resource_type: str  # model, test, unit_test, seed, source, operation ...
    status: str  # success, pass, warn, fail, error, skipped, no-op
    seconds: float
    rows_affected: int | None  # a model's rows, when the adapter says
    tested_model: str | None  # a test's model: its attached node, else the first model it reads
    dirty_input_check: str | None  # a data-quality check's name (tests with meta.dirty_input_check)
    failures: int | None  # rows a test found


@dataclass(frozen=True)
class Invocation:
    finished_at: datetime
    seconds: float
    nodes: list[NodeResult]


def invocation(run_results: Path) -> Invocation:
    """The invocation of ``run_results`` (a ``run_results.json``; its ``manifest.json`` beside it)."""
    run = json.loads(run_results.read_text())
    manifest_file = run_results.with_name(run_results.name.replace("run_results", "manifest"))
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
    known = manifest.get("nodes", {}) | manifest.get("unit_tests", {})
    nodes = []
    for result in run["results"]:
        unique_id = result["unique_id"]
        node = known.get(unique_id) or {"resource_type": unique_id.split(".")[0], "name": unique_id.split(".")[-1]}
        kind = node["resource_type"]
        affected = (result.get("adapter_response") or {}).get("rows_affected")
        testing = kind in {"test", "unit_test"}
        nodes.append(
            NodeResult(
                name=node["name"],
                resource_type=kind,
                status=str(result["status"]),
                seconds=float(result.get("execution_time") or 0.0),
                rows_affected=affected if not testing and isinstance(affected, int) and affected >= 0 else None,
                tested_model=_tested_model(node) if testing else None,
                dirty_input_check=(node.get("config") or {}).get("meta", {}).get("dirty_input_check"),
                failures=result.get("failures"),
            )
        )
    generated = run["metadata"].get("generated_at")
    finished = datetime.fromisoformat(generated.replace("Z", "+00:00")) if generated else datetime.now(UTC)
    return Invocation(finished, float(run.get("elapsed_time") or 0.0), nodes)


def _tested_model(node: dict[str, Any]) -> str:
    attached = node.get("attached_node") or next(
        (n for n in (node.get("depends_on") or {}).get("nodes", []) if n.startswith("model.")), None
    )
    return str(attached).split(".")[-1] if attached else "none"


def last_invocation(target: Path) -> Invocation | None:
    """The last invocation whose artifacts are in dbt's ``target``; None before any."""
    results = target / "run_results.json"
    return invocation(results) if results.exists() else None


def keep_in_history(done: Invocation, history: Path) -> Path:
    """Keep what an invocation did, compactly (its nodes' results, not the manifest), in ``history``
    named by when it finished; the oldest beyond ``HISTORY_LENGTH`` are removed."""
    history.mkdir(parents=True, exist_ok=True)
    kept = history / f"{done.finished_at.strftime('%Y%m%dT%H%M%S%f')}.json"
    kept.write_text(json.dumps(asdict(done), default=str))
    for old in sorted(history.glob("*.json"))[:-HISTORY_LENGTH]:
        old.unlink()
    return kept


def history(folder: Path) -> list[Invocation]:
    """The builds kept in ``folder``, newest first."""
    found = []
    for path in sorted(folder.glob("*.json"), reverse=True):
        data = json.loads(path.read_text())
        found.append(
            Invocation(
                datetime.fromisoformat(data["finished_at"]),
                data["seconds"],
                [NodeResult(**node) for node in data["nodes"]],
            )
        )
    return found
