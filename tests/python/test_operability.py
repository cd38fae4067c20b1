"""The `pinpipe` command as its users meet it: reads and builds never block each other, builds take
turns, a wrong lake is refused instead of emptying the marts, `--posts N` adds N posts, and every
mistake a user can make ends in one line saying what to do (exit 2), never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ingestion import build_inputs, duckdb_setup, transform, warehouse
from ingestion.config import PROJECT_DIR, Settings
from ingestion.errors import PinpipeError
from ingestion.services import S3Server, free_port

from helpers import Done, one_line_error, pinpipe_here, plain_dbt

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("operability")]

PINPIPE = str(Path(sys.executable).parent / "pinpipe")


def _pinpipe(settings: Settings, *args: str, **env: str) -> Done:
    """`pinpipe` as a process of its own: for what only a real process shows (its exit code after a
    build, a signal, a pipe, a traceback)."""
    environment = {**os.environ, "COLUMNS": "200", **settings.environment(), **env}
    finished = subprocess.run([PINPIPE, *args], env=environment, capture_output=True, text=True, timeout=600)
    return Done(finished.returncode, finished.stdout, finished.stderr)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A warehouse built by two runs of 300 new posts each."""
    scratch = tmp_path_factory.mktemp("operability")
    settings = Settings(lake=str(scratch / "lake"), warehouse=str(scratch / "warehouse" / "pinpipe.duckdb"))
    for _ in range(2):
        done = _pinpipe(settings, "run", "--posts", "300", "--rows", "1", DBT_TARGET_PATH=str(scratch / "target"))
        assert done.code == 0, done.out + done.err
    return settings


def _count(settings: Settings, sql: str) -> int:
    with warehouse.connect_warehouse(settings, read_only=True) as connection:
        return int(connection.execute(sql).fetchone()[0])


def test_posts_n_means_n_new_posts(built: Settings) -> None:
    assert _count(built, "select count(*) from bronze.pin") == 600
    assert _count(built, "select count(distinct _offset) from bronze.pin") == 600


def test_a_build_prints_the_data_quality_and_what_the_marts_cover(built: Settings, tmp_path: Path) -> None:
    # a full refresh: the module's warehouse has nothing new, which a plain transform would only say
    done = _pinpipe(built, "transform", "--full-refresh", DBT_TARGET_PATH=str(tmp_path / "target"))
    assert done.code == 0, done.err
    assert "data quality" in done.out
    assert "posts_incomplete" in done.out
    assert "bronze freshness: " in done.out
    assert "marts built from " in done.out
    assert "complete posts" in done.out


def test_a_reader_held_open_through_a_build_keeps_reading_and_the_next_reader_sees_the_build(
    built: Settings, tmp_path: Path
) -> None:
    before = _count(built, "select count(*) from staging.stg_pinterest__pins")
    reader = duckdb.connect(
        built.warehouse, read_only=True, config=duckdb_setup.duckdb_config(built.duckdb_extension_directory)
    )
    try:
        done = _pinpipe(built, "run", "--posts", "200", "--rows", "1", DBT_TARGET_PATH=str(tmp_path / "target"))
        assert done.code == 0, done.out + done.err  # the open reader did not block the build
        assert reader.execute("select count(*) from staging.stg_pinterest__pins").fetchone()[0] == before
    finally:
        reader.close()
    assert _count(built, "select count(*) from staging.stg_pinterest__pins") > before


def test_ctrl_c_during_a_build_ends_in_one_line_and_publishes_nothing(built: Settings, tmp_path: Path) -> None:
    interrupted = built.model_copy(update={"warehouse": str(tmp_path / "pinpipe.duckdb")})
    shutil.copy2(built.warehouse, interrupted.warehouse)
    before = Path(interrupted.warehouse).read_bytes()
    environment = {
        **os.environ,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        **interrupted.environment(),
        "DBT_TARGET_PATH": str(tmp_path / "t"),
    }
    build = subprocess.Popen(
        [PINPIPE, "transform", "--full-refresh"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    assert build.stdout is not None
    for line in build.stdout:  # dbt build is under way once freshness is reported
        if line.startswith("bronze freshness"):
            break
    build.send_signal(signal.SIGINT)
    out, err = build.communicate(timeout=120)
    assert build.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert out.strip().splitlines()[-1] == "interrupted: the warehouse keeps its last good build"
    assert Path(interrupted.warehouse).read_bytes() == before


def test_a_broken_key_fails_the_build_with_dbts_failure_shown_and_the_warehouse_kept(
    built: Settings, tmp_path: Path
) -> None:
    # an incremental build holds dbt's errors back (they may only ask for a rebuild from scratch, which
    # pinpipe then does itself): any other failure must still be shown, and fail the build
    broken = built.model_copy(update={"warehouse": str(tmp_path / "pinpipe.duckdb")})
    shutil.copy2(built.warehouse, broken.warehouse)
    # one post key twice, among the rows of staging's newest build: those its tests check
    with warehouse.connect_warehouse(broken) as connection:
        connection.execute(
            "insert into staging.stg_pinterest__pins select * replace (999999 as ind,"
            " _ingested_at - interval 10 day as _ingested_at) from staging.stg_pinterest__pins"
            " where _build = (select max(_build) from staging.stg_pinterest__pins) limit 1"
        )
        connection.execute(
            "insert into staging.stg_pinterest__pins select * from staging.stg_pinterest__pins where ind = 999999"
        )
    done = _pinpipe(
        broken,
        "transform",
        DBT_TARGET_PATH=str(tmp_path / "t"),
        DBT_LOG_PATH=str(tmp_path / "logs"),
    )
    assert done.code == 1, done.out + done.err
    assert "Failure in test unique_stg_pinterest__pins_ind" in done.out
    # held back from the terminal, not from dbt's own log
    assert "Failure in test unique_stg_pinterest__pins_ind" in (tmp_path / "logs" / "dbt.log").read_text()
    assert "the warehouse keeps its last good build" in done.out
    assert "rebuilding from scratch" not in done.out
    assert _count(broken, "select count(*) from staging.stg_pinterest__pins where ind = 999999") == 2


def test_marts_can_be_read_while_a_build_runs(built: Settings, tmp_path: Path) -> None:
    environment = {**os.environ, **built.environment(), "DBT_TARGET_PATH": str(tmp_path / "target")}
    build = subprocess.Popen(
        [PINPIPE, "transform", "--full-refresh"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    building = Path(built.warehouse).parent / ".building"
    try:
        deadline = time.monotonic() + 120
        while not (building.exists() and any(building.iterdir())):
            assert build.poll() is None, "the build finished before it could be watched"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        done = _pinpipe(built, "marts", "--rows", "1")
        assert build.poll() is None, "the build finished before the read: the test proves nothing"
        assert done.code == 0, done.err
        assert "1. most_popular_category_by_country" in done.out
    finally:
        assert build.wait(timeout=300) == 0, build.stderr.read() if build.stderr else ""


def test_a_build_with_nothing_new_says_so_and_runs_no_dbt_and_new_rows_or_settings_build_again(
    settings: Settings, tmp_path: Path
) -> None:
    """Each bronze table's version, the project and the settings a published build read are kept
    beside the warehouse: the same inputs would publish the same warehouse, so nothing runs."""
    settings = settings.model_copy(update={"state_dir": tmp_path / "state"})
    assert pinpipe_here(settings, "run", "--posts", "40", "--rows", "1").code == 0
    builds = list(settings.dbt_history_dir.glob("*.json"))

    again = pinpipe_here(settings, "transform")
    assert again.code == 0, again.err
    assert "nothing new since the last build (bronze pin v" in again.out
    assert "dbt build:" not in again.out
    assert list(settings.dbt_history_dir.glob("*.json")) == builds  # no dbt invocation kept: none ran

    assert pinpipe_here(settings, "emulate", "--posts", "3").code == 0  # new bronze commits
    rebuilt = pinpipe_here(settings, "transform")
    assert "nothing new" not in rebuilt.out
    assert "dbt build:" in rebuilt.out
    # where the build's time went, phase by phase, in its last line
    phases = rebuilt.out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"timing: copy [\d.]+ s, dbt parse [\d.]+ s, source freshness [\d.]+ s, dbt build [\d.]+ s,"
        r" coverage [\d.]+ s, publish [\d.]+ s",
        phases,
    ), phases
    assert _count(settings, "select count(*) from intermediate.int_posts_enriched") == 43
    assert "nothing new" in pinpipe_here(settings, "transform").out
    # another setting dbt sees makes other inputs (the decision, without a build of its own), and a
    # full refresh builds again whatever the inputs
    memory = settings.model_copy(update={"duckdb_memory": "2GB"})
    assert not build_inputs.unchanged_since_last_build(memory, build_inputs.current_inputs(memory))
    assert build_inputs.unchanged_since_last_build(settings, build_inputs.current_inputs(settings))
    assert "dbt build:" in pinpipe_here(settings, "transform", "--full-refresh").out


def test_the_build_inputs_follow_every_project_file_dbt_reads_and_nothing_else(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR / "models", project / "models")
    shutil.copytree(PROJECT_DIR / "macros", project / "macros")
    shutil.copy2(PROJECT_DIR / "dbt_project.yml", project / "dbt_project.yml")
    digest = build_inputs.project_digest(project)
    (project / "README.md").write_text("not read by dbt")
    assert build_inputs.project_digest(project) == digest
    model = project / "models" / "marts" / "insights" / "users_joined_by_year.sql"
    model.write_text(model.read_text() + "\n-- a change\n")
    assert build_inputs.project_digest(project) != digest


def test_a_changed_seed_asks_for_the_incremental_models_to_be_rebuilt_another_model_does_not(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR / "seeds", project / "seeds")
    shutil.copytree(PROJECT_DIR / "models", project / "models")
    settings = Settings(project_dir=project, lake=str(tmp_path / "lake"), warehouse=str(tmp_path / "w.duckdb"))
    assert not build_inputs.seeds_changed_since_last_build(settings, build_inputs.current_inputs(settings))
    build_inputs.record(settings, build_inputs.current_inputs(settings))  # as a published build does
    model = project / "models" / "marts" / "insights" / "users_joined_by_year.sql"
    model.write_text(model.read_text() + "\n-- a change\n")
    assert not build_inputs.seeds_changed_since_last_build(settings, build_inputs.current_inputs(settings))
    seed = project / "seeds" / "pinterest_categories.csv"
    seed.write_text(seed.read_text() + "gardening\n")
    assert build_inputs.seeds_changed_since_last_build(settings, build_inputs.current_inputs(settings))


def test_a_second_build_waits_for_the_first_and_gives_up_with_one_line(built: Settings, tmp_path: Path) -> None:
    with warehouse.build_lock(built, on_wait=None):  # as another pinpipe holds it
        done = pinpipe_here(
            built, "transform", "--full-refresh", PINPIPE_BUILD_WAIT_SECONDS="2", DBT_TARGET_PATH=str(tmp_path / "t")
        )
    holder = f"pinpipe (pid {os.getpid()})"
    assert f"waiting for {holder}" in done.out
    one_line_error(done, 2, f"{holder} is still building", "PINPIPE_BUILD_WAIT_SECONDS")


def test_a_wrong_lake_is_refused_and_the_marts_keep_their_rows(built: Settings, tmp_path: Path) -> None:
    rows = _count(built, "select count(*) from marts.most_popular_category_by_country")
    wrong = built.model_copy(update={"lake": str(tmp_path / "lak")})
    one_line_error(pinpipe_here(wrong, "transform"), 2, f"lake {tmp_path / 'lak'} has no bronze tables", "PINPIPE_LAKE")
    assert not (tmp_path / "lak").exists()
    assert _count(built, "select count(*) from marts.most_popular_category_by_country") == rows > 0


def test_a_query_on_a_warehouse_built_from_another_lake_says_so(built: Settings, tmp_path: Path) -> None:
    other = built.model_copy(update={"lake": str(tmp_path / "other-lake")})
    done = pinpipe_here(other, "sql", "select count(*) as posts from bronze.pin", "--format", "csv")
    assert done.code == 0, done.err
    assert done.out.splitlines()[0] == '"posts"'  # the note is on stderr, the csv clean
    assert f"the warehouse was built from the lake {built.lake}" in done.err
    assert "`pinpipe transform` builds it from" in done.err


def test_a_reader_that_stops_reading_is_not_a_failure(built: Settings) -> None:
    environment = {**os.environ, **built.environment()}
    marts = subprocess.Popen([PINPIPE, "marts"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert marts.stdout is not None
    assert marts.stderr is not None
    marts.stdout.readline()  # as `pinpipe marts | head -1`: the next marts meet the closed end
    marts.stdout.close()
    assert marts.wait(timeout=120) == 0
    assert marts.stderr.read() == b""


def test_a_lake_that_is_a_file_is_refused(built: Settings, tmp_path: Path) -> None:
    a_file = tmp_path / "lake.txt"
    a_file.write_text("not a lake")
    one_line_error(
        pinpipe_here(built.model_copy(update={"lake": str(a_file)}), "transform"), 2, "is a file, not a folder"
    )


@pytest.mark.parametrize(
    ("warehouse", "folder"), [("/proc/pinpipe/pinpipe.duckdb", "/proc/pinpipe"), ("/proc/pinpipe.duckdb", "/proc")]
)
def test_a_warehouse_where_nothing_can_be_written_is_refused(built: Settings, warehouse: str, folder: str) -> None:
    """A folder that cannot be made, and one that exists but takes no files."""
    unwritable = built.model_copy(update={"warehouse": warehouse})
    one_line_error(pinpipe_here(unwritable, "transform"), 2, f"cannot write in the warehouse's folder {folder}:")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["emulte"], "No such command 'emulte'. Did you mean 'emulate'?"),
        (["emulate", "--postz", "3"], "No such option: --postz"),
        (["emulate", "--source", "dbb"], "Invalid value for '--source'"),
        (["emulate", "--posts", "abc"], "Invalid value for '--posts'"),
        (["marts", "--rows", "-1"], "Invalid value for '--rows'"),
    ],
)
def test_a_mistyped_command_or_option_gets_the_usage_and_one_line(args: list[str], said: str) -> None:
    done = pinpipe_here(None, *args)
    assert done.code == 2
    assert done.err.startswith("Usage: pinpipe"), done.err
    assert f"Error: {said}" in done.err
    assert "Traceback" not in done.err
    assert "--debug" not in done.err


def test_sql_that_would_write_is_refused_in_one_line(built: Settings) -> None:
    one_line_error(
        pinpipe_here(built, "sql", "drop table marts.users_joined_by_year"), 2, "only queries run here", "not drop"
    )
    one_line_error(pinpipe_here(built, "sql", "select 1; select 2"), 2, "one statement at a time")
    assert pinpipe_here(built, "sql", "select count(*) from marts.users_joined_by_year").code == 0


def test_sql_that_does_not_parse_gets_one_line(built: Settings) -> None:
    one_line_error(pinpipe_here(built, "sql", "selec 1"), 2, "the SQL does not run", 'syntax error at or near "selec"')


def test_a_missing_warehouse_is_one_line_and_is_not_created(built: Settings, tmp_path: Path) -> None:
    missing = built.model_copy(update={"warehouse": str(tmp_path / "nowhere" / "pinpipe.duckdb")})
    one_line_error(pinpipe_here(missing, "marts"), 2, "no warehouse at", "pinpipe run")
    one_line_error(pinpipe_here(missing, "sql", "select 1"), 2, "no warehouse at")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("PINPIPE_TARGET", "nonsense", "'local', 'spark' or 'databricks'"),
        ("PINPIPE_DUCKDB_MEMORY", "lots", "a size such as 3GB"),
        ("PINPIPE_WAREHOUSE", "/tmp", "/tmp is a folder: name the DuckDB file, such as /tmp/pinpipe.duckdb"),
        ("PINPIPE_STREAM_RETENTION_HOURS", "-5", "greater than or equal to 0"),
        ("PINPIPE_STREAM_RETENTION_HOURS", "abc", "a valid integer"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(built: Settings, variable: str, value: str, said: str) -> None:
    one_line_error(pinpipe_here(built, "sql", "select 1", **{variable: value}), 2, variable, said)


def test_building_from_an_s3_lake_that_does_not_answer_is_one_line(built: Settings, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    down = built.model_copy(
        update={"lake": "s3://pinpipe/lake", "s3_endpoint_url": closed, "warehouse": str(tmp_path / "w.duckdb")}
    )
    done = pinpipe_here(down, "transform")
    one_line_error(done, 2, f"cannot read the lake s3://pinpipe/lake at {closed}", "pinpipe services up")
    assert "WARN" not in done.err  # the Rust crates' own logging stays quiet


@pytest.mark.slow
def test_a_lake_in_a_bucket_that_does_not_exist_is_one_line_naming_it(
    built: Settings, s3_server: S3Server, tmp_path: Path
) -> None:
    missing = built.model_copy(
        update={
            "lake": "s3://no-such-bucket/lake",
            "s3_endpoint_url": s3_server.endpoint_url,
            "warehouse": str(tmp_path / "w.duckdb"),
        }
    )
    for command in (("emulate", "--posts", "10"), ("transform",)):
        one_line_error(
            pinpipe_here(missing, *command), 2, "the lake's bucket 'no-such-bucket' does not exist", "--lake"
        )


def test_loading_with_s3_down_is_one_line(built: Settings) -> None:
    closed = free_port()
    down = built.model_copy(update={"s3_port": closed, "s3_endpoint_url": None})
    one_line_error(pinpipe_here(down, "load"), 1, f"http://127.0.0.1:{closed} does not answer", "pinpipe services up")


def test_the_sink_with_kafka_down_is_one_line(built: Settings) -> None:
    closed = free_port()
    down = built.model_copy(update={"kafka_port": closed})
    one_line_error(pinpipe_here(down, "sink", "--until-caught-up"), 2, f"Kafka at 127.0.0.1:{closed} does not answer")


def test_the_run_builds_the_target_it_is_given(built: Settings) -> None:
    """`--target databricks` reaches dbt-databricks (which asks for its host), not DuckDB."""
    environment = {key: value for key, value in built.environment().items() if key != "PINPIPE_TARGET"}
    finished = subprocess.run(
        [PINPIPE, "--target", "databricks", "run", "--posts", "1"],
        env={k: v for k, v in {**os.environ, **environment}.items() if not k.startswith("DATABRICKS_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 1
    assert "DATABRICKS_HOST" in finished.stdout + finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize(
    ("target", "command"), [("spark", ["transform"]), ("databricks", ["transform"]), ("spark", ["run", "--posts", "5"])]
)
def test_a_target_whose_adapter_is_not_installed_says_to_install_it(
    built: Settings, target: str, command: list[str]
) -> None:
    """The default install (requirements.txt) leaves Spark and Databricks out: pinpipe says how to add
    them, before it starts anything (a run appends no posts first)."""
    posts_before = _count(built, "select count(*) from bronze.pin")
    without_adapter = f"import sys; sys.modules['dbt.adapters.{target}'] = None; from ingestion.cli import main; main()"
    finished = subprocess.run(
        [sys.executable, "-c", without_adapter, "--target", target, *command],
        env={**os.environ, "COLUMNS": "200", **built.environment()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    done = Done(finished.returncode, finished.stdout, finished.stderr)
    one_line_error(done, 2, f"the {target} target", "make spark")
    assert done.out == ""  # no progress bar left above the error
    assert _count(built, "select count(*) from bronze.pin") == posts_before


def test_the_spark_target_without_java_says_to_install_it(built: Settings) -> None:
    without_java = {key: value for key, value in os.environ.items() if key != "JAVA_HOME"}
    finished = subprocess.run(
        [PINPIPE, "--target", "spark", "transform"],
        env={**without_java, "PATH": str(Path(sys.executable).parent), **built.environment()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_line_error(Done(finished.returncode, finished.stdout, finished.stderr), 2, "needs Java 17", "JAVA_HOME")


def test_spark_as_a_client_of_a_cluster_needs_no_local_java(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark Connect (SPARK_REMOTE) runs Spark elsewhere: only the in-process session needs Java here."""
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    spark = Settings(target="spark")
    with pytest.raises(PinpipeError, match="needs Java 17"):
        transform.require_engine(spark)
    monkeypatch.setenv("SPARK_REMOTE", "sc://spark.example.com:15002")
    transform.require_engine(spark)


def test_csv_holds_list_columns_as_json(built: Settings) -> None:
    done = pinpipe_here(
        built, "sql", "--format", "csv", "select ind, coordinates from staging.stg_pinterest__geo limit 3"
    )
    assert done.code == 0, done.err
    rows = list(csv.DictReader(io.StringIO(done.out)))
    assert len(rows) == 3
    for row in rows:
        latitude, longitude = json.loads(row["coordinates"])
        assert isinstance(latitude, float)
        assert isinstance(longitude, float)


def test_help_names_the_environment_variable_of_each_option(built: Settings) -> None:
    done = pinpipe_here(built, "--help")
    for variable in ("PINPIPE_LAKE", "PINPIPE_WAREHOUSE", "PINPIPE_TARGET", "PINPIPE_DEBUG"):
        assert f"env var: {variable}" in done.out


def test_with_debug_the_traceback_is_shown(built: Settings) -> None:
    done = _pinpipe(built, "--debug", "sql", "selec 1")
    assert done.code == 1
    assert "Traceback" in done.err


def _without_the_readme_exports(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The environment of plain dbt with none of the PINPIPE_ variables but ``variables``, the
    warehouse in ``tmp_path`` and the extensions already installed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")}
    return environment | {
        "PINPIPE_WAREHOUSE": str(tmp_path / "w.duckdb"),
        "PINPIPE_DUCKDB_EXTENSION_DIRECTORY": str(Settings().duckdb_extension_directory),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        **variables,
    }


def test_plain_dbt_without_the_readme_exports_points_bronze_at_the_project_lake(tmp_path: Path) -> None:
    settings = Settings()
    finished = plain_dbt(
        "run",
        "--select",
        "stg_pinterest__quarantine",
        env=_without_the_readme_exports(tmp_path),
        cwd=tmp_path,  # anywhere but the project
    )
    if not (PROJECT_DIR / "lake" / "bronze").is_dir():  # a clone where `make run` has not run yet
        assert finished.returncode != 0
        assert f"no bronze tables under {PROJECT_DIR}/lake/bronze/" in finished.stdout
        return
    assert finished.returncode == 0, finished.stdout
    with duckdb.connect(
        str(tmp_path / "w.duckdb"), config=duckdb_setup.duckdb_config(settings.duckdb_extension_directory)
    ) as c:
        (view,) = c.execute(
            "select sql from duckdb_views() where schema_name = 'bronze' and view_name = 'pin'"
        ).fetchone()
    assert f"delta_scan('{PROJECT_DIR}/lake/bronze/pin')" in view


def test_the_docs_site_is_served_until_ctrl_c_which_ends_it_quietly(built: Settings, tmp_path: Path) -> None:
    import urllib.request

    port = free_port()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **built.environment(), "DBT_TARGET_PATH": str(tmp_path / "t")}
    server = subprocess.Popen(
        [PINPIPE, "docs", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith("serving the docs"):
            break
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as page:
        assert page.status == 200
        assert b"<html" in page.read(1000).lower()  # left unread: the server must not mind
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/manifest.json", timeout=10) as served:
        manifest = json.load(served)
    assert manifest["metadata"]["project_name"] == "pinpipe"
    # the site lists the semantic layer beside the models
    assert "metric.pinpipe.median_follower_count" in manifest["metrics"]
    assert "semantic_model.pinpipe.posts" in manifest["semantic_models"]
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=60)
    assert server.returncode == 0, out + err
    assert "Traceback" not in out + err
    assert out.strip().splitlines()[-1] == "docs server stopped"


def test_plain_dbt_on_a_lake_without_bronze_is_one_error_saying_to_load_posts(tmp_path: Path) -> None:
    finished = plain_dbt("build", env=_without_the_readme_exports(tmp_path, PINPIPE_LAKE=str(tmp_path / "lake")))
    assert finished.returncode != 0
    assert f"no bronze tables under {tmp_path / 'lake'}/bronze/: load posts first" in finished.stdout
    assert "Catalog Error" not in finished.stdout  # no model ran on the missing tables
