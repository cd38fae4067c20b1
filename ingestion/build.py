"""The build and its publication, as `pinpipe transform` and `pinpipe run` do it: bronze's
freshness, `dbt build` on a private copy of the warehouse published whole when it succeeds (with
one rebuild from scratch when staging cannot be merged into), and what the build covers."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.table import Table
from rich.text import Text

from ingestion import (
    artifacts,
    build_inputs,
    metrics,
    reading,
    transform,
    warehouse,
)
from ingestion.config import Settings
from ingestion.output import console, progress_bars


class BuildStopped(Exception):
    """The build ended without publishing (Ctrl-C, a failing model or test), and said so: the
    command exits with ``exit_code`` and nothing more to say."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"the build stopped (exit {exit_code})")
        self.exit_code = exit_code


def build_and_publish(settings: Settings, select: str | None = None, *, full_refresh: bool = False) -> None:
    """`dbt source freshness` then `dbt build`, on a private copy of the warehouse published whole
    when both succeed (readers never wait, nor see a failed build); then what the build covers.

    Staging and int_posts_enriched are incremental; when what they hold cannot be merged into (rows
    of another bronze: another lake, or this one rebuilt; a table of an earlier version of the
    project), the build is run again with ``--full-refresh`` instead of failing."""
    transform.require_engine(settings)
    if settings.target != "databricks":
        warehouse.check_lake(settings)
    # read before the build: rows appended while it runs are new to the next one
    inputs = build_inputs.current_inputs(settings) if settings.target == "local" and select is None else None
    if inputs is not None and not full_refresh and build_inputs.unchanged_since_last_build(settings, inputs):
        console.print(
            f"nothing new since the last build ({inputs.describe()}; the same project and settings):"
            " the warehouse is up to date, dbt not run (`--full-refresh` rebuilds it all the same)",
            highlight=False,
        )
        return
    if inputs is not None and not full_refresh and build_inputs.seeds_changed_since_last_build(settings, inputs):
        console.print(
            "the seeds changed since the last build: rebuilding the incremental models, whose rows were made"
            " with the old ones",
            highlight=False,
        )
        full_refresh = True
    try:
        _build_and_report(settings, select, full_refresh=full_refresh)
        if inputs is not None:
            build_inputs.record(settings, inputs)
    finally:  # a failed build's results too: a failing test is what an operator most needs to see
        done = artifacts.last_invocation(transform.target_path(settings))
        if done is not None:
            artifacts.keep_in_history(done, settings.dbt_history_dir)
            if metrics.push_dbt_results(settings, done, "pinpipe_build"):
                console.print(f"dbt results pushed to {settings.pushgateway_address}", style="dim", highlight=False)


class _Phases:
    """How long each step of a build took, for the one line that ends it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._since
        self._since = now

    def describe(self) -> str:
        return "timing: " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items())


def _build_and_report(settings: Settings, select: str | None, *, full_refresh: bool) -> None:
    phases = _Phases()
    statuses: Counter[str] = Counter()
    results: Any = None
    built_from = warehouse.built_from_lake(settings)
    if not full_refresh and built_from not in (None, settings.lake):
        # said before dbt runs: its guard would fail staging first, in red, and then be rebuilt all the same
        console.print(
            f"the warehouse was built from the lake {built_from}:"
            f" rebuilding the incremental models from {settings.lake}",
            highlight=False,
        )
        full_refresh = True
    try:
        with warehouse.building(settings, on_wait=console.print) as private, progress_bars() as progress:
            phases.done("copy")
            task = progress.add_task(f"dbt parse ({settings.target})", total=None)
            manifest = transform.run_dbt(private, ["parse", "--quiet"])  # once, for both invocations
            phases.done("dbt parse")
            progress.update(task, description=f"dbt source freshness ({settings.target})")
            _print_freshness(transform.run_dbt(private, ["source", "freshness", "--quiet"], manifest=manifest))
            phases.done("source freshness")

            dbt_errors: list[str] = []  # dbt's error lines, as its quiet output prints them
            # an incremental build's errors are held back: when they only say that staging must be
            # rebuilt from scratch, pinpipe says so in one line and does it
            holding_errors = not full_refresh

            def on_event(event: Any) -> None:
                name, data = event.info.name, event.data
                if name == "LogStartLine":
                    progress.update(
                        task, total=data.total, completed=data.index - 1, description=f"dbt {data.description[:50]}"
                    )
                elif name == "NodeFinished":
                    statuses[data.node_info.node_status] += 1
                if event.info.level == "error":
                    dbt_errors.append(event.info.msg)

            args = ["build", "--quiet", *(["--select", select] if select else [])]
            try:
                try:
                    results = transform.run_dbt(
                        private,
                        # (the file log's level follows --log-level unless set: dbt.log keeps everything)
                        [
                            *args,
                            *(
                                ["--log-level", "none", "--log-level-file", "debug"]
                                if holding_errors
                                else ["--full-refresh"]
                            ),
                        ],
                        on_event,
                        manifest=manifest,
                        production=True,
                    )
                except transform.DbtFailed as failed:
                    reason = None if full_refresh else transform.rebuild_from_scratch_reason(failed.results)
                    if reason is None:
                        raise
                    console.print(f"{reason}: rebuilding from scratch", highlight=False)
                    holding_errors = False
                    statuses.clear()
                    results = transform.run_dbt(
                        private, [*args, "--full-refresh"], on_event, manifest=manifest, production=True
                    )
                progress.update(task, description=f"dbt build ({settings.target})", completed=progress.tasks[0].total)
            except KeyboardInterrupt:
                holding_errors = False  # dbt's lines about the queries it cancelled are not news
                raise
            finally:
                if holding_errors:  # the errors dbt did not print itself
                    for error in dbt_errors:
                        console.print(Text.from_ansi(error))
                console.print("dbt build: " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
            phases.done("dbt build")
            # what this build made, from its copy; a selection may have left data_quality out
            built_quality = settings.target == "local" and _built(results, "data_quality")
            covered = reading.coverage(private) if built_quality else None
            phases.done("coverage")
    except KeyboardInterrupt:
        console.print("interrupted: the warehouse keeps its last good build")
        raise BuildStopped(130) from None
    except transform.DbtFailed as failed:
        _print_dirty_input(transform.dirty_input_counts(failed.results or results))
        console.print(f"[red]{failed}[/red] (the warehouse keeps its last good build)")
        raise BuildStopped(1) from None
    phases.done("publish")
    warehouse.record_built_from_lake(settings)
    _print_dirty_input(transform.dirty_input_counts(results))
    if covered is not None:
        console.print(covered)
    console.print(phases.describe(), style="dim", highlight=False)


def _built(results: Any, model: str) -> bool:
    """``model`` was built by this build (a selection may leave it out)."""
    return any(
        result.node.name == model and result.node.resource_type == "model" and str(result.status) == "success"
        for result in getattr(results, "results", None) or []
    )


def _print_freshness(results: Any) -> None:
    """One line: how old each bronze table's newest record is, by dbt's freshness thresholds."""
    ages = [
        f"{r.node.name} {r.age / 3600:.1f} h ({r.status})" for r in results.results if r.node.resource_type == "source"
    ]
    console.print("bronze freshness: " + (", ".join(ages) or "no sources checked"))


def _print_dirty_input(counts: list[transform.DirtyInput]) -> None:
    """The data-quality summary: rows each check counted (dbt's own test results; marts.data_quality
    holds the same numbers)."""
    if not counts:
        return
    table = Table(
        title="data quality (dirty input is counted, never blocking: marts.data_quality)", title_justify="left"
    )
    table.add_column("check")
    table.add_column("rows", justify="right")
    table.add_column("status")
    colour = {"pass": "green", "warn": "yellow"}
    for counted in counts:
        style = colour.get(counted.status, "red")
        table.add_row(counted.check, f"{counted.rows:,}", f"[{style}]{counted.status}[/{style}]")
    console.print(table)
