"""The `pinpipe` command's own behaviour, in-process: help grouped with the main command first, the
global options accepted after the command too, `pinpipe settings`, and the stages' restart backoff."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from ingestion.api import app_from_environment
from ingestion.cli.app import global_options_first
from ingestion.config import PROJECT_DIR, Settings
from ingestion.supervise import RestartBackoff

from helpers import one_line_error, pinpipe_here


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (["run", "--lake", "L", "--posts", "5"], ["--lake", "L", "run", "--posts", "5"]),
        (["sql", "select 1", "--warehouse=W", "--debug"], ["--warehouse=W", "--debug", "sql", "select 1"]),
        (["--target", "spark", "transform"], ["--target", "spark", "transform"]),
        (["sql", "--", "--lake"], ["sql", "--", "--lake"]),
        (["emulate", "--to", "api"], ["emulate", "--to", "api"]),
    ],
)
def test_global_options_are_read_wherever_they_stand(given: list[str], read: list[str]) -> None:
    assert global_options_first(given) == read


def test_an_option_after_the_command_takes_effect(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pinpipe.duckdb"
    one_line_error(pinpipe_here(None, "marts", "--warehouse", str(missing)), 2, f"no warehouse at {missing}")


def test_help_lists_the_main_command_first_in_its_panels() -> None:
    out = pinpipe_here(None, "--help").out
    panels = [out.index(panel) for panel in ("Start here", "The pipeline's stages", "Operating")]
    assert panels == sorted(panels)
    assert out.index(" run ") < out.index(" emulate ") < out.index(" transform ") < out.index(" settings ")


def test_settings_say_where_each_came_from_and_mask_secrets() -> None:
    done = pinpipe_here(
        None,
        "settings",
        "--lake",
        "/data/lake",
        PINPIPE_S3_SECRET_ACCESS_KEY="hunter2",
        PINPIPE_SOURCE_URL="postgresql+psycopg://analyst:pa55word@db.example.com/pinterest",
        PINPIPE_KAFKA_PARTITIONS="7",
        COLUMNS="250",
    )
    assert done.code == 0, done.err
    rows = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
        for line in done.out.splitlines()
        if line.count("│") == 5
    }
    assert rows["lake"] == ["PINPIPE_LAKE", "/data/lake", "option"]
    assert rows["kafka_partitions"] == ["PINPIPE_KAFKA_PARTITIONS", "7", "environment"]
    assert rows["s3_bucket"] == ["PINPIPE_S3_BUCKET", "pinpipe", "default"]
    assert rows["source_url"][1] == "postgresql+psycopg://analyst:***@db.example.com/pinterest"
    assert rows["s3_secret_access_key"][1] == "**********"
    assert "hunter2" not in done.out
    assert "pa55word" not in done.out


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("PINPIPE_TOPICS", "pin-a, geo-a ,user-a", ("pin-a", "geo-a", "user-a")),  # as the reference shows it
        ("PINPIPE_TOPICS", '["pin-b", "geo-b", "user-b"]', ("pin-b", "geo-b", "user-b")),
        ("PINPIPE_STREAMS", "s-pin,s-geo,s-user", ("s-pin", "s-geo", "s-user")),
        ("PINPIPE_API_OPEN_PATHS", "/healthz", ("/healthz",)),
    ],
)
def test_a_list_setting_is_read_comma_separated_or_as_json_and_passed_on_to_child_processes(
    variable: str, value: str, read: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    settings = Settings()
    field = variable.removeprefix("PINPIPE_").lower()
    assert getattr(settings, field) == read
    monkeypatch.setenv(variable, settings.environment()[variable])  # what a child process is given
    assert getattr(Settings(), field) == read


@pytest.mark.parametrize(("value", "said"), [("", "not empty"), ('["pin", ', "this JSON does not parse")])
def test_a_list_setting_that_is_no_list_is_one_line(value: str, said: str) -> None:
    done = pinpipe_here(None, "settings", PINPIPE_TOPICS=value)
    one_line_error(done, 2, "PINPIPE_TOPICS", "a comma-separated list such as a,b,c, or a JSON list", said)


def test_a_variable_nothing_reads_gets_a_warning_naming_it() -> None:
    # a setting's old name (the lookback before the exact watermarks); the DAG's own variables are read
    done = pinpipe_here(None, "settings", PINPIPE_STAGING_LOOKBACK_MINUTES="60", PINPIPE_SCHEDULE="0 6 * * *")
    assert done.code == 0
    assert done.err.splitlines() == [
        "warning: PINPIPE_STAGING_LOOKBACK_MINUTES is not a pinpipe setting, so it is ignored"
        " (`pinpipe settings` lists them)"
    ]


def _failed_after(backoff: RestartBackoff, ran_s: float) -> float:
    backoff.started(SimpleNamespace())  # type: ignore[arg-type]
    return backoff(SimpleNamespace(outcome_timestamp=backoff.attempt_started + ran_s))  # type: ignore[arg-type]


def test_restarts_back_off_to_a_minute_and_start_over_after_a_long_run() -> None:
    backoff = RestartBackoff()
    assert [_failed_after(backoff, 0.5) for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert _failed_after(backoff, 61) == 1  # a blip after a long run
    assert _failed_after(backoff, 0.5) == 2


def test_the_configuration_reference_is_made_from_the_settings() -> None:
    reference = (PROJECT_DIR / "docs" / "configuration.md").read_text()
    assert pinpipe_here(None, "settings", "--reference").out == reference, (
        "docs/configuration.md is out of date: `pinpipe settings --reference > docs/configuration.md`"
    )
    assert reference.count("| `PINPIPE_") == len(Settings.model_fields)


def test_the_apis_worker_processes_keep_librdkafkas_connection_chatter_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pinpipe api --workers N` serves from spawned processes, which do not inherit the command's
    logging: each quiets librdkafka itself, or a broker outage floods the API's output."""
    monkeypatch.setenv("PINPIPE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("PINPIPE_DEBUG", raising=False)
    librdkafka = logging.getLogger("librdkafka")
    monkeypatch.setattr(librdkafka, "level", logging.NOTSET)
    app_from_environment()
    assert librdkafka.level == logging.CRITICAL
