"""The batch day: new posts into bronze, every dbt model as its own task with its tests
(astronomer-cosmos) on a private copy of the warehouse, published whole when all passed, then the
docs site published into the lake. Daily at 12:00 UTC by default.

What shapes the DAG is read when the file is parsed, from the environment only (Airflow parses DAG
files often, and a fresh Airflow home has no database yet: no Variable lookups then):
- ``PINPIPE_TARGET``: dbt target, ``local`` (DuckDB), ``spark`` or ``databricks``;
- ``PINPIPE_SCHEDULE``: a cron expression (``0 12 * * *``); ``PINPIPE_RETRIES``: retries of the
  loading and model tasks (2, five minutes apart; tests are never retried, a rerun would not change
  their answer);
- the ``PINPIPE_*`` variables of the project (lake, warehouse, ports) as everywhere else.

The data tests of the incremental models check the rows each day's build wrote (their newest
``_build``); the run of a Sunday (its logical date) checks every row (``PINPIPE_TEST_EVERY_ROW``).

What a run does is read by its tasks, from an Airflow Variable or else the environment variable of
the same name in upper case:
- ``pinpipe_source``: where the day's posts come from: ``services`` (drain Kafka to S3, load),
  ``emulator`` (``pinpipe_emulated_posts`` new posts straight into bronze), or ``auto`` (the
  services when Kafka answers, else the emulator);
- ``pinpipe_alert_webhook_url``: where a failed task is reported (a JSON POST), besides the log.

Each dbt task, the sink and the load push their results to the Pushgateway when one answers
(``PINPIPE_PUSHGATEWAY_PORT`` or ``_URL``; `pinpipe services up` starts one): dbt's under job
``pinpipe_dbt`` grouped by task id.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Variable, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior

from ingestion.config import PROJECT_DIR, Settings

log = logging.getLogger(__name__)

SETTINGS = Settings()  # the PINPIPE_* environment: lake, warehouse, target
SCHEDULE = os.environ.get("PINPIPE_SCHEDULE", "0 12 * * *")
# the run builds here, and the last task publishes it over the warehouse (DuckDB only)
BUILDING = SETTINGS.model_copy(
    update={"warehouse": str(Path(SETTINGS.warehouse).parent / ".building" / "daily" / Path(SETTINGS.warehouse).name)}
)


def _variable(name: str, default: str) -> str:
    """An Airflow Variable, else the environment variable of the same name in upper case: for tasks only."""
    return Variable.get(name, default=None) or os.environ.get(name.upper(), default)


def report_failure(context: dict[str, Any]) -> None:
    """Name the failed task (a dbt model, or its tests) and where its log is, in the log and, when a
    webhook is set (``pinpipe_alert_webhook_url``), in a JSON POST to it."""
    import requests

    instance = context["task_instance"]
    alert = {
        "dag": instance.dag_id,
        "task": instance.task_id,
        "run": context["run_id"],
        "try": instance.try_number,
        "error": str(context.get("exception")),
        "log": instance.log_url,
    }
    log.error("pinpipe: task %(task)s failed in run %(run)s (try %(try)s): %(error)s; log: %(log)s", alert)
    webhook = _variable("pinpipe_alert_webhook_url", "")
    if webhook:
        try:
            requests.post(webhook, json=alert, timeout=10).raise_for_status()
        except requests.RequestException as error:  # the alert failing must not hide the failure itself
            log.error("pinpipe: the alert to %s failed: %s", webhook, error)


def push_dbt_results(project_dir: str, **kwargs: Any) -> None:
    """After each dbt task (cosmos calls it with the task's copy of the project): the task's results
    to the Pushgateway, when one answers, grouped by the task's id."""
    from ingestion import artifacts, metrics, transform

    task_id = kwargs["context"]["task_instance"].task_id
    done = artifacts.last_invocation(
        transform.target_path(SETTINGS.model_copy(update={"project_dir": Path(project_dir)}))
    )
    if done is not None:
        metrics.push_dbt_results(SETTINGS, done, task_id)


DEFAULT_ARGS = {
    "owner": "pinpipe",
    "retries": int(os.environ.get("PINPIPE_RETRIES", "2")),
    "retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": report_failure,
}

# the dbt tasks' environment: the settings, production's flags, and on a Sunday's run the data tests
# of every row of the incremental models (the other days: the rows that day's build wrote)
DBT_ENVIRONMENT = BUILDING.environment() | BUILDING.production_dbt_environment()
DBT_ENVIRONMENT["PINPIPE_TEST_EVERY_ROW"] = (
    "{{ 'true' if (logical_date or dag_run.run_after).weekday() == 6 else '"
    + DBT_ENVIRONMENT["PINPIPE_TEST_EVERY_ROW"]
    + "' }}"
)

# one project, one profile: the repository's profiles.yml, target from the settings
PROFILE = ProfileConfig(
    profile_name="pinpipe", target_name=SETTINGS.target, profiles_yml_filepath=PROJECT_DIR / "profiles.yml"
)


def _manifest() -> Path:
    """dbt's manifest of the project, for cosmos to render the models as tasks: parsed again only when
    a project file changed since. Read from a file rather than `dbt ls` cached in an Airflow Variable
    (cosmos' default), so the DAG imports on an Airflow home whose database is not set up yet."""
    from ingestion import transform

    target = SETTINGS.state_dir / "dag" / "target"
    manifest = target / "manifest.json"
    project_files = [PROJECT_DIR / "dbt_project.yml", PROJECT_DIR / "profiles.yml"] + [
        path for folder in ("models", "macros", "seeds", "tests") for path in (PROJECT_DIR / folder).rglob("*")
    ]
    newest = max(path.stat().st_mtime for path in project_files if path.is_file())
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        transform.run_dbt(SETTINGS, ["parse", "--quiet", "--target-path", str(target)])
    return manifest


PROJECT = ProjectConfig(dbt_project_path=PROJECT_DIR, manifest_path=_manifest(), install_dbt_deps=False)
# dbt runs in the workers' own interpreter (dbtRunner), from the same environment as Airflow
EXECUTION = ExecutionConfig(
    invocation_mode=InvocationMode.DBT_RUNNER, dbt_executable_path=str(Path(sys.executable).parent / "dbt")
)


with DAG(
    dag_id="pinterest_daily",
    description="posts → bronze → dbt (one task per model, tests after each) → warehouse published → docs",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=DEFAULT_ARGS,
    # DuckDB is one file, one writer at a time: models run one by one on the embedded default
    max_active_tasks=1 if SETTINGS.target == "local" else 8,
    tags=["pinpipe", "batch"],
) as daily:

    @task.branch
    def choose_source() -> str:
        """The services' posts when Kafka is up (or asked for), else emulated ones."""
        from ingestion.services import KafkaBroker

        source = _variable("pinpipe_source", "auto")
        if source == "auto":
            source = "services" if KafkaBroker(SETTINGS).process.status().running else "emulator"
        log.info("pinpipe: today's posts come from the %s", source)
        return "sink_catch_up" if source == "services" else "emulate_posts"

    @task
    def sink_catch_up() -> int:
        """Kafka → S3 objects, until every record present at the start is stored."""
        from ingestion.batch import sink_until_caught_up

        stats, _ = sink_until_caught_up(SETTINGS.with_local_s3())
        return stats.records

    @task
    def load_bronze() -> int:
        """New S3 objects → bronze Delta, exactly once: pinpipe's loader, or the Spark objects job with
        ``trigger(availableNow=True)`` when PINPIPE_INGEST_ENGINE is spark."""
        settings = SETTINGS.with_local_s3()
        if settings.ingest_engine == "spark":
            from ingestion.lake import QUARANTINE
            from ingestion.spark_ingest import run_job

            batches = run_job(settings, "objects", master=settings.spark_master)
            return sum(rows for batch in batches for table, rows in batch.rows.items() if table != QUARANTINE)
        from ingestion.batch import load_new_objects

        results, _ = load_new_objects(settings)
        return sum(result.appended for result in results)

    # not retried: a retry after a partial load would add another day's posts
    @task(retries=0)
    def emulate_posts() -> int:
        """The embedded default: ``pinpipe_emulated_posts`` new posts straight into bronze."""
        from ingestion.load import load_new_posts
        from ingestion.post_sources import make_source

        posts = int(_variable("pinpipe_emulated_posts", "5000"))
        return sum(r.appended for r in load_new_posts(SETTINGS, make_source("synthetic", 100), posts))

    @task(trigger_rule="none_failed_min_one_success")
    def prepare_warehouse() -> str:
        """Check the lake holds bronze tables, then copy the warehouse to where this run builds."""
        from ingestion import warehouse

        warehouse.check_lake(SETTINGS)
        return warehouse.stage_copy(SETTINGS, BUILDING.warehouse)

    @task
    def source_freshness() -> None:
        """`dbt source freshness`: warns on a stale source, fails on one past its error threshold."""
        from ingestion import transform

        transform.run_dbt(BUILDING, ["source", "freshness", "--quiet"])

    models = DbtTaskGroup(
        group_id="dbt",
        project_config=PROJECT,
        profile_config=PROFILE,
        execution_config=EXECUTION,
        # the batch models; the streaming ones are kept fresh every few seconds by `pinpipe refresh`
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            invocation_mode=InvocationMode.DBT_RUNNER,
            exclude=["path:models/streaming"],
            test_behavior=TestBehavior.AFTER_EACH,
            # a test of two nodes (a model against a seed) runs once both are built, as a task of its own
            should_detach_multiple_parents_tests=True,
        ),
        # cosmos runs dbt in a copy of the project: the settings' absolute paths, the run's own warehouse
        # and production's flags: unit tests are for `make test` and CI, not the daily run
        operator_args={
            "install_deps": False,
            "env": DBT_ENVIRONMENT,
            "callback": push_dbt_results,
        },
        default_args=DEFAULT_ARGS,
    )

    @task
    def publish_warehouse() -> str:
        """Every model built and tested: the run's warehouse replaces the one readers see, whole."""
        from ingestion import warehouse

        return warehouse.publish_copy(SETTINGS, BUILDING.warehouse)

    @task
    def publish_docs() -> str:
        """`dbt docs generate`, and the site (also as one static page) copied into the lake under docs/."""
        from ingestion import transform

        return transform.publish_docs(SETTINGS)

    branch = choose_source()
    prepared = prepare_warehouse()
    branch >> sink_catch_up() >> load_bronze() >> prepared
    branch >> emulate_posts() >> prepared
    prepared >> source_freshness() >> models >> publish_warehouse() >> publish_docs()

# a test gives the same answer on a rerun: tests fail at once (models and loads may retry)
for dbt_task in daily.tasks:
    if dbt_task.task_id.startswith("dbt.") and dbt_task.task_id.endswith("test"):
        dbt_task.retries = 0
