"""The batch day: new posts into bronze, freshness, every dbt model as its own task with its tests
(astronomer-cosmos), and the docs site published into the lake. Daily at 12:00 UTC by default.

What shapes the DAG is read when the file is parsed, from the environment only (Airflow parses DAG
files often: no Variable lookups then):
- ``PINPIPE_TARGET``: dbt target, ``local`` (DuckDB), ``spark`` or ``databricks``;
- ``PINPIPE_SCHEDULE``: a cron expression (``0 12 * * *``); ``PINPIPE_RETRIES`` (2, five minutes apart);
- the ``PINPIPE_*`` variables of the project (lake, warehouse, ports) as everywhere else.

What a run does is read by its tasks, from an Airflow Variable or else the environment variable of
the same name in upper case:
- ``pinpipe_source``: where the day's posts come from: ``services`` (drain Kafka to S3, load),
  ``emulator`` (emulate ``pinpipe_emulated_posts`` posts straight into bronze), or ``auto`` (the
  services when Kafka answers, else the emulator).
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


def _variable(name: str, default: str) -> str:
    """An Airflow Variable, else the environment variable of the same name in upper case: for tasks only."""
    return Variable.get(name, default=None) or os.environ.get(name.upper(), default)


def report_failure(context: dict[str, Any]) -> None:
    """Name the failed task (a dbt model, or its tests) and where its log is."""
    instance = context["task_instance"]
    log.error(
        "pinpipe: task %s failed in run %s (try %s): %s; log: %s",
        instance.task_id,
        context["run_id"],
        instance.try_number,
        context.get("exception"),
        instance.log_url,
    )


DEFAULT_ARGS = {
    "owner": "pinpipe",
    "retries": int(os.environ.get("PINPIPE_RETRIES", "2")),
    "retry_delay": timedelta(minutes=5),
    "on_failure_callback": report_failure,
}

# one project, one profile: the repository's profiles.yml, target from the settings
PROFILE = ProfileConfig(
    profile_name="pinpipe", target_name=SETTINGS.target, profiles_yml_filepath=PROJECT_DIR / "profiles.yml"
)
PROJECT = ProjectConfig(dbt_project_path=PROJECT_DIR, install_dbt_deps=False)
# dbt runs in the workers' own interpreter (dbtRunner), from the same environment as Airflow
EXECUTION = ExecutionConfig(
    invocation_mode=InvocationMode.DBT_RUNNER, dbt_executable_path=str(Path(sys.executable).parent / "dbt")
)


with DAG(
    dag_id="pinterest_daily",
    description="posts → bronze → dbt (one task per model, tests after each) → docs",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
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
        from ingestion.sink import S3Sink

        return S3Sink.from_settings(SETTINGS.with_local_s3()).run(until_caught_up=True).records

    @task
    def load_bronze() -> int:
        """New S3 objects → bronze Delta, exactly once."""
        from ingestion.load import load_raw_objects

        return sum(r.appended for r in load_raw_objects(SETTINGS.with_local_s3()))

    @task
    def emulate_posts() -> int:
        """The embedded default: emulated posts straight into bronze (incremental: only new ones)."""
        from ingestion.emulate import make_source
        from ingestion.load import load_posts

        posts = int(_variable("pinpipe_emulated_posts", "5000"))
        return sum(r.appended for r in load_posts(SETTINGS, make_source("synthetic", 100), posts))

    @task(trigger_rule="none_failed_min_one_success")
    def source_freshness() -> None:
        """`dbt source freshness`: warns on a stale source, fails on one past its error threshold."""
        from ingestion import transform

        transform.run_dbt(SETTINGS, ["source", "freshness", "--quiet"])

    models = DbtTaskGroup(
        group_id="dbt",
        project_config=PROJECT,
        profile_config=PROFILE,
        execution_config=EXECUTION,
        # the batch models; the streaming ones are kept fresh every few seconds by `pinpipe refresh`
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            invocation_mode=InvocationMode.DBT_RUNNER,
            exclude=["path:models/streaming"],
            test_behavior=TestBehavior.AFTER_EACH,
            # a test of two nodes (a model against a seed) runs once both are built, as a task of its own
            should_detach_multiple_parents_tests=True,
        ),
        # cosmos runs dbt in a copy of the project: the settings' absolute paths, not the profile's relative defaults
        operator_args={"install_deps": False, "env": SETTINGS.environment()},
        default_args=DEFAULT_ARGS,
    )

    @task
    def publish_docs() -> str:
        """`dbt docs generate`, and the static site copied into the lake under docs/."""
        from ingestion import transform

        return transform.publish_docs(SETTINGS)

    branch = choose_source()
    fresh = source_freshness()
    branch >> sink_catch_up() >> load_bronze() >> fresh
    branch >> emulate_posts() >> fresh
    fresh >> models >> publish_docs()
