"""The daily DAG: it imports (on a fresh Airflow home too), has its tasks, schedule and operator's
settings, runs end to end with `dag.test()` on the embedded default (every mart right afterwards,
new posts every day), and a failing dbt test fails the run, by name, with an alert.

Each scenario runs Airflow in a process of its own with an Airflow home of its own (SQLite),
since Airflow reads its configuration once, at import.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ingestion.bronze import append
from ingestion.config import PROJECT_DIR, Settings
from ingestion.emulate import batches
from ingestion.lake import Lake
from ingestion.post_sources import make_source
from ingestion.services import Pushgateway, free_port

from helpers import assert_marts_equal_reference, eventually

# one worker runs them all: Airflow's database is migrated once, for every scenario
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("airflow")]

POSTS = 2_000

RUN_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("pinterest_daily")
result = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()},
          "tasks": sorted(dag.task_ids) if dag else [],
          "schedule": str(dag.schedule) if dag else None, "catchup": dag.catchup if dag else None,
          "max_active_runs": dag.max_active_runs if dag else None,
          "dagrun_timeout_s": dag.dagrun_timeout.total_seconds() if dag and dag.dagrun_timeout else None,
          "retries": {t.task_id: t.retries for t in dag.tasks} if dag else {},
          "timeouts_s": {t.task_id: t.execution_timeout.total_seconds() if t.execution_timeout else None
                         for t in dag.tasks} if dag else {}}
if dag:  # the tests' scope on a Sunday's run and on a Monday's (a manual run has no logical date)
    from datetime import datetime
    tests = dag.get_task("dbt.stg_pinterest__pins.test")
    every_row = tests.env["PINPIPE_TEST_EVERY_ROW"]
    run = type("DagRun", (), {"run_after": datetime(2026, 12, 7)})
    result["every_row"] = [tests.render_template(every_row, {"logical_date": when, "dag_run": run})
                           for when in (datetime(2026, 12, 6), datetime(2026, 12, 7), None)]
if sys.argv[2] == "run":
    run = dag.test()
    result["state"] = str(run.state)
    result["task_states"] = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print("RESULT " + json.dumps(result))
"""


@contextmanager
def _webhook() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on a free port that keeps the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()


def _airflow_environment(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "false",
        # as `make airflow` sets it: the DAG's first import parses the dbt project
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
    }


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Airflow's SQLite database, migrated once for the session (`airflow db migrate`, as a new
    installation does it); each scenario runs on a copy of its own."""
    home = tmp_path_factory.mktemp("airflow-migrated")
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run(
        [airflow, "db", "migrate"], env=_airflow_environment(home), check=True, capture_output=True, timeout=300
    )
    return home / "airflow.db"


def _airflow(
    settings: Settings, tmp_path: Path, action: str, *, database: Path | None = None, **env_vars: str
) -> tuple[dict, str]:
    """Airflow in a process of its own, on a home of its own: with ``database``, a copy of that
    migrated database; without, a fresh home that was never migrated."""
    home = tmp_path / "airflow"
    if database is not None and not home.exists():  # a later day runs on the same home
        home.mkdir()
        shutil.copy2(database, home / database.name)
    env = {
        **_airflow_environment(home),
        "PINPIPE_LAKE": settings.lake,
        "PINPIPE_WAREHOUSE": settings.warehouse,
        "PINPIPE_SOURCE": "emulator",
        "PINPIPE_EMULATED_POSTS": str(POSTS),
        "PINPIPE_STATE_DIR": str(tmp_path / "state"),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "PINPIPE_RETRIES": "2",
        **env_vars,
    }
    finished = subprocess.run(
        [sys.executable, "-c", RUN_DAG, str(PROJECT_DIR / "dags"), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = finished.stdout + finished.stderr
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-5000:]
    return json.loads(lines[-1].removeprefix("RESULT ")), output


def test_the_dag_imports_on_a_fresh_airflow_home_with_its_tasks_schedule_and_limits(
    settings: Settings, tmp_path: Path
) -> None:
    result, _ = _airflow(settings, tmp_path, "import")  # no `airflow db migrate` first
    assert result["import_errors"] == {}
    assert result["schedule"] == "0 12 * * *"
    assert result["catchup"] is False
    assert result["max_active_runs"] == 1
    assert result["dagrun_timeout_s"] == 6 * 3600
    retries = result["retries"]
    assert retries["dbt.stg_pinterest__pins.run"] == 2
    assert retries["load_bronze"] == 2
    assert retries["dbt.stg_pinterest__pins.test"] == 0
    assert retries["dbt.data_quality.test"] == 0
    assert all(count == 0 for task, count in retries.items() if task.endswith("test"))
    assert all(seconds == 3600 for seconds in result["timeouts_s"].values())
    # the incremental models' tests check every row on a Sunday's run, the day's rows on the others
    assert result["every_row"] == ["true", "false", "false"]
    tasks = set(result["tasks"])
    assert {
        "choose_source",
        "sink_catch_up",
        "load_bronze",
        "emulate_posts",
        "prepare_warehouse",
        "source_freshness",
        "publish_warehouse",
        "publish_docs",
    } <= tasks
    models = {
        "stg_pinterest__pins",
        "stg_pinterest__geo",
        "stg_pinterest__users",
        "int_posts_enriched",
        "int_people",
        "most_popular_category_by_country",
        "users_joined_by_year",
    }
    assert {f"dbt.{m}.{step}" for m in models for step in ("run", "test")} <= tasks
    assert not any("stream_" in task for task in tasks)  # the streaming models are not the batch day's


def test_each_daily_run_ingests_new_posts_and_a_broken_rule_fails_its_day_by_name_with_the_warehouse_kept(
    settings: Settings, tmp_path: Path, migrated_database: Path
) -> None:
    """Day one: POSTS new posts, every model built and tested, each dbt task's results pushed, the
    warehouse and the docs published. Day two adds POSTS more, and dirt: dirty input only warns, but
    a broken rule fails the day's data-quality test, by name and with an alert; its models are built
    all the same, and the warehouse readers see stays day one's."""
    gateway = Pushgateway(Settings(state_dir=tmp_path / "state", pushgateway_port=free_port()))
    gateway.up()
    try:
        result, output = _airflow(
            settings,
            tmp_path,
            "run",
            database=migrated_database,
            PINPIPE_PUSHGATEWAY_PORT=str(gateway.settings.pushgateway_port),
        )
        pushed = requests.get(f"http://127.0.0.1:{gateway.settings.pushgateway_port}/metrics", timeout=10).text
    finally:
        gateway.down()
    assert result["state"] == "success", output[-5000:]
    # every dbt task pushed its results, under its own id
    tests: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(pushed):
        if family.name == "pinpipe_dbt_tests":
            for sample in family.samples:
                by_status = tests.setdefault(sample.labels["invocation"], {})
                by_status[sample.labels["status"]] = by_status.get(sample.labels["status"], 0) + sample.value
    test_tasks = {task for task in result["task_states"] if task.startswith("dbt.") and task.endswith("test")}
    assert test_tasks
    assert test_tasks <= set(tests), sorted(test_tasks - set(tests))
    assert all(set(by_status) <= {"pass", "warn"} for by_status in tests.values()), tests
    assert result["task_states"]["emulate_posts"] == "success"
    assert result["task_states"]["sink_catch_up"] == "skipped"
    assert all(state in ("success", "skipped") for state in result["task_states"].values())
    day_one = [r for batch in batches(make_source("synthetic", 100), POSTS) for r in batch.records()]
    assert_marts_equal_reference(settings, day_one)
    published = {p.name for p in (Path(settings.lake) / "docs").iterdir()}
    assert published == {"index.html", "manifest.json", "catalog.json", "static_index.html"}

    # day two's dirt: one odd pin (a category outside the 13, a media type outside the three), counted,
    # never blocking; and geo records whose timestamps all fail to parse, a share that means a broken
    # rule, not dirt
    lake = Lake.from_settings(settings)
    odd = {"index": 99_999, "category": "odd", "is_image_or_video": "hologram"}
    append(lake, "pin", [odd], stream="t", start=0, source="test")
    broken = [
        {"ind": 100_000 + i, "country": "Chad", "timestamp": "28/08/2020", "latitude": 1, "longitude": 2}
        for i in range(1_500)
    ]
    append(lake, "geo", broken, stream="t", start=0, source="test")
    with _webhook() as (url, alerts):
        result, output = _airflow(settings, tmp_path, "run", database=migrated_database, PINPIPE_ALERT_WEBHOOK_URL=url)
    assert result["state"] == "failed"
    assert [alert["task"] for alert in alerts] == ["dbt.data_quality.test"]
    assert alerts[0]["try"] == 1  # tests are not retried
    assert result["task_states"]["emulate_posts"] == "success"
    assert result["task_states"]["dbt.stg_pinterest__pins.test"] == "success"
    assert result["task_states"]["dbt.data_quality.test"] == "failed"
    assert result["task_states"]["publish_warehouse"] != "success"
    assert "pinpipe: task dbt.data_quality.test failed" in output
    # the marts were built all the same, on the day's copy, with the day's new posts and its dirt...
    both_days = [r for batch in batches(make_source("synthetic", 100), 2 * POSTS) for r in batch.records()]
    dirt = [{"pin": odd, "geo": None, "user": None}, *({"pin": None, "geo": g, "user": None} for g in broken)]
    building = Path(settings.warehouse).parent / ".building" / "daily" / Path(settings.warehouse).name
    assert_marts_equal_reference(settings.model_copy(update={"warehouse": str(building)}), [*both_days, *dirt])
    # ...while the warehouse readers see is still day one's
    assert_marts_equal_reference(settings, day_one)


def test_make_airflow_from_a_shell_without_the_venv_reaches_a_healthy_scheduler(
    migrated_database: Path, tmp_path: Path
) -> None:
    """`make airflow` as a user types it, with no venv activated: standalone starts its scheduler,
    triggerer and dag-processor as `airflow` from PATH, and each must send heartbeats."""
    home, port = tmp_path / "airflow", free_port()
    home.mkdir()
    shutil.copy2(migrated_database, home / migrated_database.name)
    outside_the_venv = os.pathsep.join(
        entry for entry in os.environ["PATH"].split(os.pathsep) if Path(entry).resolve() != Path(sys.executable).parent
    )
    log = tmp_path / "standalone.log"
    standalone = subprocess.Popen(
        ["make", "-s", "-C", str(PROJECT_DIR), "airflow", f"AIRFLOW_HOME={home}", f"AIRFLOW_PORT={port}"],
        env={**os.environ, "PATH": outside_the_venv, "VIRTUAL_ENV": ""},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # standalone's components are its children: stopped as one group
    )

    def components() -> dict[str, str]:
        try:
            health = requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}
        return {name: state["status"] for name, state in health.items()}

    try:
        wanted = dict.fromkeys(("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")
        assert eventually(lambda: components() == wanted, 180, every=2), (components(), log.read_text()[-5000:])
        assert "FileNotFoundError" not in log.read_text()
    finally:
        os.killpg(standalone.pid, signal.SIGTERM)
        try:
            standalone.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(standalone.pid, signal.SIGKILL)
