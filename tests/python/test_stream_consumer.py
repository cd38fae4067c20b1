"""The stream consumer against a stub Kinesis client: how it paces and what it does when throttled.
The behaviour on the real servers is in test_streaming.py."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from deltalake.exceptions import CommitFailedError

from ingestion import stream
from ingestion.config import Settings
from ingestion.lake import Lake
from ingestion.stream import ShardPart, StreamConsumer


class ThrottlingKinesis:
    """Two shards of user records; every third GetRecords is refused as over the shard's rate."""

    def __init__(self, records_per_shard: int) -> None:
        self.shards = {
            f"shardId-{n}": [
                json.dumps(
                    {
                        "ind": n * 1000 + i,
                        "first_name": "A",
                        "last_name": "B",
                        "age": 30,
                        "date_joined": "2020-01-01 00:00:00",
                    }
                ).encode()
                for i in range(records_per_shard)
            ]
            for n in range(2)
        }
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.throttled_calls: dict[str, set[int]] = defaultdict(set)  # positions in calls[shard]

    def list_shards(self, **_: object) -> dict:
        return {"Shards": [{"ShardId": shard} for shard in self.shards]}

    def get_shard_iterator(self, ShardId: str, **position: str) -> dict:  # noqa: N803 - boto3's names
        after = int(position.get("StartingSequenceNumber", -1))
        return {"ShardIterator": f"{ShardId}:{after + 1}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict:  # noqa: N803
        shard, start = ShardIterator.split(":")
        self.calls[shard].append(time.monotonic())
        if len(self.calls[shard]) % 3 == 0:
            self.throttled_calls[shard].add(len(self.calls[shard]) - 1)
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}}, "GetRecords"
            )
        first = int(start)
        batch = self.shards[shard][first : first + min(Limit, 7)]
        records = [
            {
                "Data": data,
                "SequenceNumber": str(first + i),
                "PartitionKey": "k",
                "ApproximateArrivalTimestamp": datetime.now(UTC),
            }
            for i, data in enumerate(batch)
        ]
        return {"Records": records, "NextShardIterator": f"{shard}:{first + len(batch)}", "MillisBehindLatest": 0}


# Kinesis' documented limits (Kinesis Data Streams quotas, GetRecords): 5 reads per shard per
# second; a throttled shard is left alone for a whole second, the period its read budget refills in.
# Written as numbers, not as the consumer's constants, so a change to those constants fails here.
READS_PER_SHARD_PER_SECOND = 5
SECONDS_AFTER_THROTTLING = 1.0


def test_throttled_reads_are_retried_without_loss_within_kinesis_documented_read_limits(tmp_path: Path) -> None:
    settings = Settings(streams=("unit-user",), lake=str(tmp_path / "lake"), warehouse=str(tmp_path / "w.duckdb"))
    kinesis = ThrottlingKinesis(records_per_shard=30)
    consumer = StreamConsumer(settings, Lake.from_settings(settings), kinesis, flush_records=10)
    consumer.run(until_caught_up=True)

    rows = Lake.from_settings(settings).delta_table("user_stream").to_pyarrow_table().to_pylist()
    assert all(kinesis.throttled_calls.values()), "a shard was never throttled: the test would prove nothing"
    assert Counter(int(r["ind"]) for r in rows) == Counter(n * 1000 + i for n in range(2) for i in range(30))
    for shard, calls in kinesis.calls.items():
        for position, (earlier, later) in enumerate(itertools.pairwise(calls)):
            wanted = (
                SECONDS_AFTER_THROTTLING
                if position in kinesis.throttled_calls[shard]
                else 1 / READS_PER_SHARD_PER_SECOND
            )
            assert later - earlier >= wanted * 0.99, (
                f"{shard} was read {later - earlier:.3f} s after a read (≥ {wanted} s)"
            )
        # and at most 5 reads in any one-second window
        assert all(b - a >= 1.0 * 0.99 for a, b in zip(calls, calls[READS_PER_SHARD_PER_SECOND:], strict=False))


def test_consumers_of_two_shard_parts_read_disjoint_shards_and_together_every_record_once(tmp_path: Path) -> None:
    settings = Settings(streams=("unit-user",), lake=str(tmp_path / "lake"), warehouse=str(tmp_path / "w.duckdb"))
    lake, kinesis = Lake.from_settings(settings), ThrottlingKinesis(records_per_shard=20)
    StreamConsumer(settings, lake, kinesis, flush_records=10, part=ShardPart(1, 2)).run(until_caught_up=True)
    first = lake.delta_table("user_stream").to_pyarrow_table().to_pylist()
    assert {row["_shard_id"] for row in first} == {"shardId-0"}
    StreamConsumer(settings, lake, kinesis, flush_records=10, part=ShardPart(2, 2)).run(until_caught_up=True)
    rows = lake.delta_table("user_stream").to_pyarrow_table().to_pylist()
    assert Counter(int(r["ind"]) for r in rows) == Counter(n * 1000 + i for n in range(2) for i in range(20))


def test_shard_parts_split_the_shards_by_their_number_evenly_and_without_overlap() -> None:
    shard_ids = [f"shardId-{n:012d}" for n in range(6)]
    parts = [ShardPart.parse(f"{i}/3") for i in (1, 2, 3)]
    assert [sum(part.owns(shard) for part in parts) for shard in shard_ids] == [1] * 6
    assert [sum(part.owns(shard) for shard in shard_ids) for part in parts] == [2, 2, 2]
    assert ShardPart.parse("1/1").owns("an-id-without-a-number")


# "1/2/3" is refused whichever slash splits it (make mutate's one survivor here, partition made
# rpartition, is the same function)
@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "", "-1/2", "1/2/3"])
def test_a_shard_part_that_is_not_i_of_n_says_what_is_wanted(text: str) -> None:
    with pytest.raises(ValueError, match=r"--shards takes i/N"):
        ShardPart.parse(text)


def test_compaction_between_commits_keeps_every_record_once_and_a_restart_resumes_after_it(tmp_path: Path) -> None:
    settings = Settings(
        streams=("unit-user",),
        lake=str(tmp_path / "lake"),
        warehouse=str(tmp_path / "w.duckdb"),
        stream_compact_seconds=0.5,
        stream_retention_hours=0,
    )
    lake = Lake.from_settings(settings)
    StreamConsumer(settings, lake, ThrottlingKinesis(records_per_shard=40), flush_records=5).run(until_caught_up=True)
    table = lake.delta_table("user_stream")
    commits = len(
        [entry for entry in (tmp_path / "lake/bronze/user_stream/_delta_log").iterdir() if entry.suffix == ".json"]
    )
    assert len(table.file_uris()) < 8, "the stream table was not compacted"
    assert commits < table.version(), "old log entries were not cleaned up"

    # more records arrive; a new consumer resumes after each shard's last committed record
    StreamConsumer(settings, lake, ThrottlingKinesis(records_per_shard=60), flush_records=5).run(until_caught_up=True)
    rows = lake.delta_table("user_stream").to_pyarrow_table().to_pylist()
    assert sorted(int(r["ind"]) for r in rows) == [n * 1000 + i for n in range(2) for i in range(60)]
    assert sorted((r["_stream"], r["_offset"]) for r in rows) == [
        (f"kinesis/unit-user/shardId-{n}", i) for n in range(2) for i in range(60)
    ]


def test_a_failed_compaction_is_logged_and_the_consumer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        streams=("unit-user",),
        lake=str(tmp_path / "lake"),
        warehouse=str(tmp_path / "w.duckdb"),
        stream_compact_seconds=0.01,
    )

    def failed(*args: object, **kwargs: object) -> None:
        raise CommitFailedError("a concurrent writer won")

    monkeypatch.setattr(stream, "compact_in_child", failed)
    StreamConsumer(
        settings, Lake.from_settings(settings), ThrottlingKinesis(records_per_shard=20), flush_records=5
    ).run(until_caught_up=True)
    rows = Lake.from_settings(settings).delta_table("user_stream").to_pyarrow_table().to_pylist()
    assert len(rows) == 40
    assert "compacting user_stream failed: CommitFailedError: a concurrent writer won" in caplog.text
