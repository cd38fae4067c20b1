"""What an error means (`ingestion.faults`): a service away and a write conflict restart a stage,
a defect stops it; a request naming no configured topic or stream is refused before the bus is
asked anything."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError
from fastapi.testclient import TestClient

from ingestion.api.app import create_app
from ingestion.bus import BusError, KinesisBus, RecordRefused
from ingestion.config import Settings
from ingestion.errors import ServiceDown
from ingestion.faults import Fault, classify
from ingestion.supervise import supervised


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (CommitFailedError("Failed to commit transaction: Concurrent transaction failed."), Fault.WRITE_CONFLICT),
        # delta-rs on an S3 lake whose server is down, as it said it in the outage
        (DeltaError("Generic S3 error: Error after 10 retries in 3.2s, max_retries:10"), Fault.SERVICE_AWAY),
        (OSError("Kernel error -> Generic S3 error: error sending request for url"), Fault.SERVICE_AWAY),
        (ConnectionRefusedError(111, "Connection refused"), Fault.SERVICE_AWAY),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), Fault.SERVICE_AWAY),
        (ServiceDown("Kafka does not answer"), Fault.SERVICE_AWAY),
        (BusError("Kafka did not acknowledge 3 records in 30 s"), Fault.SERVICE_AWAY),
        (RecordRefused(0, 2, "MSG_SIZE_TOO_LARGE"), Fault.DEFECT),
        (SchemaMismatchError("Cannot cast schema, number of fields does not match"), Fault.DEFECT),
        (DeltaError("Invalid JSON in log record"), Fault.DEFECT),
        (FileNotFoundError(2, "No such file or directory"), Fault.DEFECT),
        (ValueError("a bug"), Fault.DEFECT),
        (KeyboardInterrupt(), Fault.DEFECT),
    ],
)
def test_each_error_is_told_by_what_it_means(error: BaseException, fault: Fault) -> None:
    assert classify(error) is fault


def test_a_stage_restarts_after_its_lake_was_away_and_stops_on_a_defect(capsys: pytest.CaptureFixture[str]) -> None:
    runs: list[int] = []

    def lake_away_once() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OSError("Kernel error -> Generic S3 error: error sending request for url")

    supervised("loader", lake_away_once, restart=True)
    assert len(runs) == 2
    assert "loader stopped: " in capsys.readouterr().err

    def broken() -> None:
        raise SchemaMismatchError("Cannot cast schema")

    with pytest.raises(SchemaMismatchError):
        supervised("loader", broken, restart=True)


class _Untouchable:
    """A bus or client that fails the test when anything of it is used but closing it."""

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the bus was asked for {name}")


def test_a_request_to_a_topic_or_stream_not_configured_is_refused_before_the_bus_is_asked(tmp_path: Any) -> None:
    settings = Settings(state_dir=tmp_path, topics=("t-pin", "t-geo", "t-user"), streams=("s-pin", "s-geo", "s-user"))
    app = create_app(settings, bus=_Untouchable(), kinesis=KinesisBus(_Untouchable()))  # type: ignore[arg-type]
    with TestClient(app) as client:
        made_up = client.put("/streams/made-up-pin/record", json={"Data": {"index": 1}})
        assert made_up.status_code == 404
        assert "not found; streams are ['s-geo', 's-pin', 's-user']" in made_up.json()["message"]
        assert client.put("/streams/made-up-pin/records", json={"Records": [{"Data": {}}]}).status_code == 404
        assert client.put("/streams/no-table-here/record", json={"Data": {}}).status_code == 404
        topic = client.post(
            "/topics/made-up", json={"records": [{"value": {}}]}, headers={"Content-Type": "application/json"}
        )
        assert topic.status_code == 404
