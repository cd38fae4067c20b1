"""The S3 sink's own logic against an in-memory partition log and bucket: how objects tile the
offsets, when they are flushed, where a restarted or rebalanced sink resumes. The real broker and
S3 server are in test_batch_path.py; these run in-process, so `make mutate` sees them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import pytest

from ingestion.failpoints import ENVIRONMENT_VARIABLE
from ingestion.object_keys import object_key, parse_object_key
from ingestion.sink import FlushPolicy, S3Sink, SinkStalled, _Buffer, as_line
from ingestion.sink_consumers import Message, Partition, Rebalance

PIN: Partition = ("pin", 0)
GEO: Partition = ("geo", 1)


class PartitionLog:
    """Partitions as lists of values; None at an offset is a commit marker or an aborted record
    (a read_committed consumer never returns it, but reads past it)."""

    def __init__(self, partitions: dict[Partition, list[bytes | None]]) -> None:
        self.partitions = partitions
        self.committed: dict[Partition, int] = {}
        self.commits: list[tuple[Partition, int]] = []


class FakeConsumer:
    """The sink's ``Consumer`` over a ``PartitionLog``: ``batch`` records per poll, round robin."""

    def __init__(self, log: PartitionLog, rebalance: Rebalance, batch: int = 7, joins_after_polls: int = 0) -> None:
        self.log, self.rebalance, self.batch = log, rebalance, batch
        self.assigned: set[Partition] = set()
        self.joins_after_polls = joins_after_polls  # polls before the group assigns the partitions
        self.position = {p: log.committed.get(p, 0) for p in log.partitions}
        self.seeks: list[tuple[Partition, int]] = []
        self.closed = False

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        if not self.assigned:
            if self.joins_after_polls:
                self.joins_after_polls -= 1
                return []
            self.assigned = set(self.log.partitions)
            self.rebalance.assigned(sorted(self.assigned))  # as a real consumer does, inside poll
        messages = []
        for partition in sorted(self.assigned):
            values = self.log.partitions[partition]
            taken = 0
            while self.position[partition] < len(values) and taken < min(self.batch, max_records):
                offset = self.position[partition]
                self.position[partition] += 1
                if values[offset] is not None:
                    messages.append(Message(partition, offset, values[offset]))
                    taken += 1
        return messages

    def commit(self, partition: Partition, next_offset: int) -> None:
        self.log.committed[partition] = next_offset
        self.log.commits.append((partition, next_offset))

    def seek(self, partition: Partition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.position[partition] = offset

    def assignment(self) -> set[Partition]:
        return set(self.assigned)

    def read_to(self, partition: Partition) -> int:
        return self.position[partition]

    def end_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return {p: len(self.log.partitions[p]) for p in partitions}

    def committed(self, partition: Partition) -> int:
        return self.log.committed.get(partition, 0)

    def close(self) -> None:
        self.closed = True


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803 - boto3's names
        assert Bucket == "bucket"
        self.objects[Key] = Body
        self.puts.append(Key)

    def lines(self, partition: Partition) -> list[bytes]:
        """The partition's objects' lines in key order, each object starting where its key says."""
        topic, number = partition
        found: list[bytes] = []
        for key in sorted(k for k in self.objects if f"/partition={number}/{topic}+" in k):
            start = parse_object_key(key).start
            assert start == len(found), f"{key} starts at {start}, the objects before it end at {len(found)}"
            found += self.objects[key].splitlines()
        return found


def _sink(
    log: PartitionLog,
    bucket: Bucket,
    policy: FlushPolicy,
    *,
    batch: int = 7,
    joins_after_polls: int = 0,
    **options: Any,
) -> S3Sink:
    def consumer(rebalance: Rebalance) -> FakeConsumer:
        return FakeConsumer(log, rebalance, batch, joins_after_polls)

    return S3Sink(consumer, bucket, "bucket", policy=policy, **options)


def _values(n: int, first: int = 0) -> list[bytes | None]:
    return [json.dumps({"index": first + i}).encode() for i in range(n)]


def test_objects_tile_every_offset_markers_included_and_each_commit_follows_its_put() -> None:
    pins = _values(10)
    pins[3] = pins[4] = None  # an aborted record and a transaction marker
    log, bucket = PartitionLog({PIN: [*pins, None], GEO: _values(5)}), Bucket()
    stats = _sink(log, bucket, FlushPolicy(records=4, seconds=3600), joins_after_polls=2).run(until_caught_up=True)

    assert bucket.lines(PIN) == [b"" if v is None else v for v in pins]  # the trailing marker needs no line
    assert bucket.lines(GEO) == _values(5)
    assert (stats.records, stats.objects) == (13, len(bucket.objects))
    assert all(len([line for line in body.splitlines() if line]) <= 4 for body in bucket.objects.values())
    assert log.committed == {PIN: 10, GEO: 5}
    # the n-th commit is the end of the n-th object put
    ends = []
    for key in bucket.puts:
        raw = parse_object_key(key)
        ends.append(((raw.topic, raw.partition), raw.start + len(bucket.objects[key].splitlines())))
    assert log.commits == ends


def test_an_object_is_flushed_by_size_as_well_as_by_count() -> None:
    log, bucket = PartitionLog({PIN: _values(50)}), Bucket()
    line = len(_values(1)[0]) + 1
    _sink(log, bucket, FlushPolicy(records=1_000, bytes=10 * line, seconds=3600)).run(until_caught_up=True)
    sizes = [len(body) for body in bucket.objects.values()]
    assert len(sizes) == 5, sizes
    assert bucket.lines(PIN) == _values(50)


def test_a_restarted_sink_writes_from_the_committed_offset_over_the_uncommitted_object() -> None:
    log, bucket = PartitionLog({PIN: _values(30)}), Bucket()
    # an earlier sink put offsets 10 .. 19 and died before committing them
    bucket.put_object(Bucket="bucket", Key=object_key("raw", "pin", 0, 10), Body=b"\n".join(_values(10, 10)) + b"\n")
    log.committed[PIN] = 10
    _sink(log, bucket, FlushPolicy(records=12, seconds=3600)).run(until_caught_up=True)
    assert object_key("raw", "pin", 0, 10) in bucket.puts  # replaced, same key
    assert [line for key in sorted(bucket.objects) for line in bucket.objects[key].splitlines()] == _values(20, 10)
    assert log.committed[PIN] == 30


def _buffer_one_poll(sink: S3Sink) -> None:
    """What the sink's loop does with one poll, without the flushes at its end."""
    for message in sink.consumer.poll(10, 0):
        sink.buffers.setdefault(message.partition, _Buffer(0)).add(message.offset, message.value)


def test_a_partition_assigned_back_starts_where_the_group_committed_not_where_this_member_stopped() -> None:
    log, bucket = PartitionLog({PIN: _values(30)}), Bucket()
    sink = _sink(log, bucket, FlushPolicy(records=100, seconds=3600))
    _buffer_one_poll(sink)
    sink.revoked([GEO, PIN])  # GEO has no buffer; PIN's is flushed all the same
    assert log.committed == {PIN: 7}
    # another member stored and committed offsets 7 .. 19 meanwhile; the partition comes back
    log.committed[PIN] = 20
    sink.consumer.seek(PIN, 20)
    sink.assigned([PIN])
    sink.run(until_caught_up=True)
    assert sorted(bucket.objects) == [object_key("raw", "pin", 0, start) for start in (0, 20)]
    assert bucket.objects[object_key("raw", "pin", 0, 20)].splitlines() == _values(10, 20)


def test_revoked_partitions_are_flushed_or_dropped_and_rewound() -> None:
    log, bucket = PartitionLog({PIN: _values(20)}), Bucket()
    sink = _sink(log, bucket, FlushPolicy(records=100, seconds=3600))
    _buffer_one_poll(sink)
    sink.revoked([PIN])
    assert log.committed[PIN] == 7
    assert PIN not in sink.buffers

    dropping = _sink(PartitionLog({PIN: _values(20)}), Bucket(), FlushPolicy(), flush_revoked=False)
    consumer = dropping.consumer
    _buffer_one_poll(dropping)
    dropping.revoked([PIN])
    assert PIN not in dropping.buffers
    assert consumer.log.committed == {}
    dropping.assigned([PIN])
    assert consumer.seeks == [(PIN, 0)]  # read again from the dropped buffer's start


def test_a_sink_that_makes_no_progress_says_which_partitions_are_behind() -> None:
    log, bucket = PartitionLog({PIN: _values(5), GEO: _values(3)}), Bucket()
    sink = _sink(log, bucket, FlushPolicy(seconds=3600))
    # the records the group's end offsets promise never come
    sink.consumer.end_offsets = lambda partitions: {p: 99 if p == PIN else 3 for p in partitions}  # type: ignore[method-assign]
    with pytest.raises(SinkStalled, match=r"assigned 2 partitions, behind \(position, end\): \{'pin/0': \(5, 99\)\}$"):
        sink.run(until_caught_up=True, stall_timeout_s=0.3)
    assert sink.consumer.closed


def test_a_sink_never_given_a_partition_stalls_and_says_so() -> None:
    sink = _sink(PartitionLog({PIN: _values(5)}), Bucket(), FlushPolicy(), joins_after_polls=1_000_000)
    with pytest.raises(SinkStalled, match=r"assigned 0 partitions, behind \(position, end\): none$"):
        sink.run(until_caught_up=True, stall_timeout_s=0.3)


def test_a_slow_but_steady_partition_is_not_a_stall() -> None:
    """One record per poll, none flushed yet: still progress (it was reported as a stall before)."""
    log, bucket = PartitionLog({PIN: _values(8)}), Bucket()
    sink = _sink(log, bucket, FlushPolicy(records=100, seconds=3600), batch=1)
    polled = sink.consumer.poll

    def slowly(max_records: int, timeout_s: float) -> list[Message]:
        time.sleep(0.1)
        return polled(max_records, timeout_s)

    sink.consumer.poll = slowly  # type: ignore[method-assign]
    sink.run(until_caught_up=True, stall_timeout_s=0.25)
    assert bucket.lines(PIN) == _values(8)


def test_buffers_flush_when_their_time_is_up_and_a_stop_ends_the_run_after_its_flushes() -> None:
    log, bucket = PartitionLog({PIN: _values(30)}), Bucket()
    stop, flushed = threading.Event(), []

    def on_flush(key: str, records: int) -> None:
        flushed.append((key, records))
        if sum(count for _, count in flushed) == 30:
            stop.set()

    sink = _sink(log, bucket, FlushPolicy(records=1_000, seconds=0), joins_after_polls=2)
    stats = sink.run(stop=stop, on_flush=on_flush)
    assert bucket.lines(PIN) == _values(30)
    assert [count for _, count in flushed] == [7, 7, 7, 7, 2]  # one object per poll: each buffer was due
    assert [key for key, _ in flushed] == bucket.puts
    assert stats.records == 30


def test_a_run_until_caught_up_stops_at_the_end_offsets_seen_when_it_began() -> None:
    """A producer still writing does not keep the run going: it stops at the ends it first saw."""
    log, bucket = PartitionLog({PIN: _values(20)}), Bucket()
    sink = _sink(log, bucket, FlushPolicy(records=1_000, seconds=3600), batch=3)
    ends = sink.consumer.end_offsets

    def growing(partitions: Iterable[Partition]) -> dict[Partition, int]:
        found = ends(partitions)
        log.partitions[PIN] += _values(5, len(log.partitions[PIN]))  # 5 more records each time it looks
        return found

    sink.consumer.end_offsets = growing  # type: ignore[method-assign]
    sink.run(until_caught_up=True, stall_timeout_s=5)
    assert bucket.lines(PIN)[:20] == _values(20)


def test_a_buffer_counts_the_bytes_of_the_object_it_becomes_and_is_due_by_count_size_or_age() -> None:
    buffer = _Buffer(10, opened_at=100.0)
    for offset, value in [(10, b'{"a": 1}'), (13, b"x\ny"), (14, None)]:
        buffer.add(offset, value)
    buffer.add(11, b"read again")  # a rewind: already buffered, ignored
    body = b"\n".join(buffer.lines) + b"\n"
    assert body == b'{"a": 1}\n\n\n"x\\ny"\nnull\n'
    assert (buffer.size, buffer.next_offset) == (len(body), 15)
    assert buffer.full(FlushPolicy(records=5, bytes=10_000))
    assert not buffer.full(FlushPolicy(records=6, bytes=len(body) + 1))
    assert buffer.full(FlushPolicy(records=6, bytes=len(body)))
    assert not buffer.due(FlushPolicy(records=6, bytes=10_000, seconds=5), now=104.9)
    assert buffer.due(FlushPolicy(records=6, bytes=10_000, seconds=5), now=105.0)
    assert buffer.due(FlushPolicy(records=5, bytes=10_000, seconds=5), now=100.0)


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (None, b"null"),
        (b"", b'""'),
        (b"  ", b'"  "'),
        (b'{"a": 1}', b'{"a": 1}'),
        (b'{"a":\n 1}', b'{"a":1}'),
        (b"not\njson", b'"not\\njson"'),
        (b"\r\n", b'"\\r\\n"'),
        (b'{"a":\r 1,\n "b": "\xc3\xa9"}', b'{"a":1,"b":"\xc3\xa9"}'),  # compact, UTF-8 kept as it is
        (b"\xff\nnot utf-8", b'"\\ufffd\\nnot utf-8"'),  # undecodable bytes replaced, never an error
        (b'{"a":\r1}', b'{"a":1}'),  # a carriage return alone splits a line too
    ],
)
def test_every_value_is_one_line(value: bytes | None, line: bytes) -> None:
    assert as_line(value) == line


def test_the_sink_keeps_running_once_caught_up_until_it_is_stopped() -> None:
    log, bucket = PartitionLog({PIN: _values(10)}), Bucket()
    sink, stop = _sink(log, bucket, FlushPolicy(records=4, seconds=3600)), threading.Event()
    running = threading.Thread(target=sink.run, kwargs={"stop": stop})
    running.start()
    try:
        time.sleep(1)
        assert running.is_alive()  # caught up long ago: `pinpipe sink` waits for more
    finally:
        stop.set()
        running.join(10)
    assert not running.is_alive()
    assert bucket.lines(PIN) == _values(8)  # two full objects; the last two records wait for more


def test_the_sinks_failpoint_is_between_its_s3_put_and_its_offset_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    class Killed(Exception):
        pass

    def kill(pid: int, signal: int) -> None:
        raise Killed

    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "sink.after_put")
    monkeypatch.setattr("ingestion.failpoints.os.kill", kill)
    log, bucket = PartitionLog({PIN: _values(10)}), Bucket()
    with pytest.raises(Killed):
        _sink(log, bucket, FlushPolicy(records=4, seconds=3600)).run(until_caught_up=True)
    assert len(bucket.puts) == 1
    assert not log.commits


def test_object_keys_sort_by_offset_and_parse_back() -> None:
    keys = [object_key("raw", "pin", 3, start) for start in (0, 9, 10, 1_000_000)]
    assert sorted(keys) == keys
    parsed = parse_object_key(keys[2])
    assert (parsed.topic, parsed.partition, parsed.start) == ("pin", 3, 10)
    assert parse_object_key("raw/topics/pin/partition=3/notes.txt") is None


# Mutation testing (`make mutate`) of bronze.py, sink.py and stream.py: every mutant of bronze.py and
# stream.py that the in-process tests reach is killed. Of sink.py's, these survive, and why:
# - equivalent: `ensure_ascii=None` in `as_line` (falsy like False), `offset >= next_offset` in
#   `_Buffer.add` (a gap of 0 adds nothing), `_on_flush = ""` before `run` sets it, `targets = ""`
#   before `run` sets it, `report_lag` asking for the end offsets of no partitions (none come back);
# - a cache, not a rule: `_next` (each partition's next object start) replaced by None, in `run` or
#   in `report_lag`, makes the sink ask the group for its committed offset, which is the same number
#   one broker round trip later;
# - defensive: `_read_through`'s buffer term, below the consumer's position in both clients;
# - tuning, not behaviour: the poll's timeout and batch size, `stall_timeout_s`'s default and `>`
#   against `>=` at exactly that many seconds;
# - the lag report's cadence in `run` (every LAG_REPORT_SECONDS): the report itself is tested.
# Mutants in functions no in-process test calls (the Kafka clients' adapters, `from_settings`,
# `compact`, which the stream consumer runs in a spawned child) are tested against the real broker
# and in the streaming suite instead.


def _sample(sink: S3Sink, name: str, **labels: str) -> float | None:
    return sink.metrics.registry.get_sample_value(name, labels)


def test_the_sink_counts_what_it_stores_and_each_partitions_lag_buffered_records_included() -> None:
    # a trailing transaction marker on PIN: read past, it is not lag
    log, bucket = PartitionLog({PIN: [*_values(10), None], GEO: _values(5)}), Bucket()
    sink = _sink(log, bucket, FlushPolicy(records=4, seconds=3600))
    _buffer_one_poll(sink)  # 7 pins and 5 geos read, none stored
    sink.report_lag()
    assert _sample(sink, "pinpipe_sink_consumer_lag_records", topic="pin", partition="0") == 11
    assert _sample(sink, "pinpipe_sink_consumer_lag_records", topic="geo", partition="1") == 5

    sink.run(until_caught_up=True)
    assert _sample(sink, "pinpipe_sink_consumer_lag_records", topic="pin", partition="0") == 0
    assert _sample(sink, "pinpipe_sink_consumer_lag_records", topic="geo", partition="1") == 0
    assert _sample(sink, "pinpipe_sink_records_stored_total", topic="pin") == 10
    assert _sample(sink, "pinpipe_sink_records_stored_total", topic="geo") == 5
    assert _sample(sink, "pinpipe_sink_records_consumed_total") == 3  # the poll above was not the run's
    objects = {topic: [k for k in bucket.puts if f"/topics/{topic}/" in k] for topic in ("pin", "geo")}
    for topic, keys in objects.items():
        assert _sample(sink, "pinpipe_sink_objects_written_total", topic=topic) == len(keys)
        assert _sample(sink, "pinpipe_sink_written_bytes_total", topic=topic) == sum(
            len(bucket.objects[k]) for k in keys
        )
        assert _sample(sink, "pinpipe_sink_put_seconds_count", topic=topic) == len(keys)
    assert _sample(sink, "pinpipe_sink_rebalances_total", change="assigned") == 1

    # a partition moved to another member: its lag is the new owner's to report
    sink.revoked([GEO])
    sink.consumer.assigned = {PIN}
    sink.report_lag()
    assert _sample(sink, "pinpipe_sink_consumer_lag_records", topic="geo", partition="1") is None
    assert _sample(sink, "pinpipe_sink_rebalances_total", change="revoked") == 1


class _KafkaPythonMember:
    """kafka-python's KafkaConsumer as the kafka-python adapter uses it, rebalancing while told to."""

    members: ClassVar[list[_KafkaPythonMember]] = []
    rebalancing = True

    def __init__(self, **config: Any) -> None:
        self.config, self.closed = config, False
        self._coordinator = self
        _KafkaPythonMember.members.append(self)

    def rebalance_in_progress(self) -> bool:
        return _KafkaPythonMember.rebalancing

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.topics = topics

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        return {}

    def close(self, autocommit: bool) -> None:
        self.closed = True


class _IgnoredRebalance:
    def revoked(self, partitions: list[Partition]) -> None: ...

    def assigned(self, partitions: list[Partition]) -> None: ...


def test_a_kafka_python_member_stuck_rebalancing_is_replaced_and_a_settled_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kafka

    from ingestion.sink_consumers import KafkaPythonConsumer

    monkeypatch.setattr(kafka, "KafkaConsumer", _KafkaPythonMember)
    monkeypatch.setattr(_KafkaPythonMember, "members", [])
    now = [0.0]
    consumer = KafkaPythonConsumer("broker:9092", "sink", ["pin", "geo"], _IgnoredRebalance(), clock=lambda: now[0])
    limit = KafkaPythonConsumer.STUCK_REBALANCE_S
    # the broker waits at most the rebalance timeout for a member to rejoin: the limit is past it
    assert _KafkaPythonMember.members[0].config["max_poll_interval_ms"] / 1000 < limit

    for now[0] in (0.0, limit / 2, limit):  # rebalancing, not yet for too long
        consumer.poll(100, 0.2)
    assert len(_KafkaPythonMember.members) == 1
    now[0] = limit + 1
    consumer.poll(100, 0.2)
    first, second = _KafkaPythonMember.members
    assert first.closed
    assert not second.closed
    assert second.topics == ["pin", "geo"]
    assert second.config == first.config

    # the new member's time starts when it is seen rebalancing; one that settles is never replaced
    for now[0] in (limit + 2, 2 * limit + 2):
        consumer.poll(100, 0.2)
    assert len(_KafkaPythonMember.members) == 2
    monkeypatch.setattr(_KafkaPythonMember, "rebalancing", False)
    for now[0] in (2 * limit + 3, 10 * limit):
        consumer.poll(100, 0.2)
    assert len(_KafkaPythonMember.members) == 2
