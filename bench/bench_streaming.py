"""Streaming path benchmark on each real local Kinesis (kinesis-mock, kinesalite): latency from PUT
to a row in the streaming mart at a steady rate, and the consumer's sustained records/s.

Starts each Kinesis server itself (state under a temporary directory), one after the other. Latency: `pinpipe api` and
`pinpipe emulate --to kinesis --rate R --forever` and the consumer `pinpipe stream` run as
processes of their own; this process runs the refresh loop of the streaming models
(`StreamingRefresh`: dbt once, then their compiled SQL, every `--dbt-every` seconds, as the
`pinpipe refresh` that `pinpipe stream --dbt-every` starts does; here, so the rows it shows can be
read between refreshes). A record's latency is the end
of the refresh that first shows it in `streaming.stream_pinterest__pins` minus the time Kinesis
accepted it (its ApproximateArrivalTimestamp, kept as `_arrival_time`; same clock). Throughput:
a backlog put into the streams first, then timed until the consumer has committed all of it.

    # both servers, 500 records/s for 60 s, 30k backlog, flush 0.5 s, a refresh every 0.5 s
    .venv/bin/python bench/bench_streaming.py
    .venv/bin/python bench/bench_streaming.py --server kinesalite --rate 300 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from ingestion import warehouse
from ingestion.clients import kinesis_client
from ingestion.config import Settings
from ingestion.lake import STREAM_TABLES, Lake
from ingestion.post_sources import make_source
from ingestion.services import KinesisServer, free_port
from ingestion.stream import StreamConsumer
from ingestion.streaming_refresh import StreamingRefresh

BIN = Path(sys.executable).parent


def eventually(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _percentile(values: list[float], share: float) -> float:
    # inclusive: within the values measured (the default, exclusive, extrapolates past the largest
    # of a small sample, which made a p95 above the max)
    if len(values) == 1:
        return values[0]
    interpolated = statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]
    return min(interpolated, max(values))  # its rounding can pass the largest value by a last bit


class NothingArrived(RuntimeError):
    """No record reached the streaming mart: the message says what each stage saw."""


# after the posting stops, how long the pins still on their way are awaited (they count)
DRAIN_SECONDS = 30


def _pinpipe(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    """A `pinpipe` process with its output in ``logs/<name>.log``, kept beside the results."""
    log = (logs / f"{name}.log").open("wb")
    return subprocess.Popen([str(BIN / "pinpipe"), *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def _accepted_by_the_api(settings: Settings, table: str | None = None) -> float | None:
    """Records the API accepted into the streams (of ``table`` only, when given)."""
    streams = [stream for stream, of in settings.stream_tables.items() if table in (None, of)]
    try:
        metrics = requests.get(f"http://127.0.0.1:{settings.api_port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "pinpipe_api_records_accepted_total" and sample.labels.get("topic") in streams
    )


def _stages(settings: Settings, processes: dict[str, subprocess.Popen], logs: Path) -> str:
    """What each stage of the path saw, for a run where nothing arrived."""
    died = [f"{name} exited {process.returncode}" for name, process in processes.items() if process.poll() is not None]
    accepted = _accepted_by_the_api(settings)
    pins = Lake.from_settings(settings).delta_table(STREAM_TABLES["pin"])
    in_bronze = "no table" if pins is None else f"{pins.to_pyarrow_table().num_rows:,} rows"
    return (
        f"the API accepted {'no answer' if accepted is None else f'{accepted:,.0f} records'}, "
        f"bronze's {STREAM_TABLES['pin']} holds {in_bronze}"
        f"{'; ' + ', '.join(died) if died else ''}; the processes' logs are in {logs}"
    )


def latency(
    settings: Settings, rate_records: float, seconds: float, flush_seconds: float, dbt_every: float, logs: Path
) -> dict[str, float]:
    """Records/s through the API at a steady rate; each record's PUT → visible latency. The API's,
    the emulator's and the consumer's output go to ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    fresh = StreamingRefresh(settings)
    fresh.run()  # parse, create and compile the models before the clock starts
    env = {**os.environ, **settings.environment()}
    processes = {
        "stream": _pinpipe("stream", ["stream", "--flush-seconds", str(flush_seconds)], env, logs),
        "api": _pinpipe("api", ["api"], env, logs),
    }
    if not eventually(lambda: _accepted_by_the_api(settings) is not None, 60):
        raise NothingArrived(f"the API did not start in 60 s: {_stages(settings, processes, logs)}")
    posts_per_second = rate_records / 3  # a post is a pin, a geo and a user record
    emulate = ["emulate", "--to", "kinesis", "--forever", "--rate", str(posts_per_second)]
    emulate += ["--batch-size", "25", "--concurrency", "4", "--seed", str(int(time.time()))]
    processes["emulator"] = _pinpipe("emulator", emulate, env, logs)
    # the window opens at the first record the API accepts, not at the emulator's launch: its start-up
    # (seconds on a loaded machine) is not posting, and ate a short run's whole window
    if not eventually(lambda: (_accepted_by_the_api(settings, "pin") or 0) > 0, 60):
        raise NothingArrived(f"the emulator posted nothing in 60 s: {_stages(settings, processes, logs)}")
    seen: set[tuple[str, int]] = set()
    newest_seen: datetime | None = None
    latencies, to_bronze, refreshes = [], [], []
    seen_while_posting: int | None = None  # the rate seen is the posting window's, the drain aside
    started = time.monotonic()

    def posting() -> bool:
        return time.monotonic() - started < seconds

    def draining() -> bool:
        """After the posting: every pin the API accepted is awaited, for at most DRAIN_SECONDS."""
        accepted = _accepted_by_the_api(settings, "pin") or 0
        return len(seen) < accepted and time.monotonic() - started < seconds + DRAIN_SECONDS

    try:
        while posting() or draining():
            if not posting() and seen_while_posting is None:  # the posting ends: stop it, then drain
                seen_while_posting = len(latencies)
                processes["emulator"].terminate()
                processes["emulator"].wait()
            stopped = [name for name, process in processes.items() if process.poll() is not None]
            if posting() and stopped:
                raise NothingArrived(f"{', '.join(stopped)} stopped: {_stages(settings, processes, logs)}")
            refresh_started = time.monotonic()
            fresh.run()
            visible_at = datetime.now(UTC)
            refreshes.append(time.monotonic() - refresh_started)
            with warehouse.connect_warehouse(settings) as connection:
                # only the commits since the newest seen (one consumer: its commits' stamps only grow),
                # so reading what is new costs the same at the run's end as at its start
                rows = connection.execute(
                    "select _stream, _offset, _arrival_time, _ingested_at from streaming.stream_pinterest__pins "
                    "where _ingested_at >= coalesce(?, '-infinity'::timestamptz)",
                    [newest_seen],
                ).fetchall()
            for stream, offset, arrived, ingested in rows:
                newest_seen = max(newest_seen or ingested, ingested)
                if (stream, offset) not in seen:
                    seen.add((stream, offset))
                    latencies.append((visible_at - arrived).total_seconds())
                    to_bronze.append((ingested - arrived).total_seconds())
            time.sleep(max(0.0, dbt_every - (time.monotonic() - refresh_started)))
        if not latencies:
            seen_by = _stages(settings, processes, logs)
            waited = seconds + DRAIN_SECONDS
            raise NothingArrived(f"no pin reached streaming.stream_pinterest__pins in {waited:g} s: {seen_by}")
    finally:
        fresh.close()
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait()
    return {
        "pins": len(latencies),
        "seen_records_per_s": 3 * (seen_while_posting if seen_while_posting is not None else len(latencies)) / seconds,
        "p50": _percentile(latencies, 0.5),
        "p95": _percentile(latencies, 0.95),
        "max": max(latencies),
        "bronze_p50": _percentile(to_bronze, 0.5),
        "bronze_p95": _percentile(to_bronze, 0.95),
        "refresh_p50": _percentile(refreshes, 0.5),
        "refresh_p95": _percentile(refreshes, 0.95),
    }


def throughput(settings: Settings, backlog_records: int) -> dict[str, float]:
    """The consumer alone on a backlog already in the streams: records committed per second."""
    client = kinesis_client(settings)
    posts = backlog_records // 3
    batch = make_source("synthetic", 11).batch(0, posts)
    for stream, table in settings.stream_tables.items():
        values = batch.table(table).to_pylist()
        key = "index" if table == "pin" else "ind"
        for first in range(0, len(values), 500):
            records = [
                {"Data": json.dumps(v).encode(), "PartitionKey": str(v[key])} for v in values[first : first + 500]
            ]
            while records:  # kinesis-mock throttles like Kinesis: put the failed ones again
                answer = client.put_records(StreamName=stream, Records=records)
                records = [r for r, result in zip(records, answer["Records"], strict=True) if "ErrorCode" in result]
    consumer = StreamConsumer.from_settings(settings)
    started = time.perf_counter()
    consumer.run(until_caught_up=True)
    elapsed = time.perf_counter() - started
    return {"records": consumer.committed, "seconds": elapsed, "records_per_s": consumer.committed / elapsed}


def run_on(server_name: str, scratch: Path, args: argparse.Namespace, out: Path) -> dict[str, dict[str, float]]:
    """Both measurements on one Kinesis server, each on streams, lake and warehouse of its own; the
    processes' logs under ``out``."""
    base = Settings(
        state_dir=scratch / server_name / "state",
        kinesis_server=server_name,
        kinesis_port=free_port(),
        api_port=free_port(),
        kinesis_shards=args.shards,
    )
    server = KinesisServer(base)

    def fresh(name: str) -> Settings:
        settings = base.model_copy(
            update={
                "streams": tuple(f"{name}-{t}" for t in ("pin", "geo", "user")),
                "lake": f"{scratch}/{server_name}/{name}/lake",
                "warehouse": f"{scratch}/{server_name}/{name}/warehouse.duckdb",
            }
        )
        KinesisServer(settings).up()
        return settings

    try:
        server.up()
        steady = latency(
            fresh("latency"), args.rate, args.seconds, args.flush_seconds, args.dbt_every, out / server_name
        )
        sustained = throughput(fresh("throughput"), args.backlog)
    finally:
        server.down()
    return {"latency": steady, "throughput": sustained}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--server",
        choices=["kinesis-mock", "kinesalite"],
        action="append",
        help="the local Kinesis to measure (repeatable; default both)",
    )
    parser.add_argument("--rate", type=float, default=500, help="records per second put through the API")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--backlog", type=int, default=30_000, help="records for the throughput run")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--flush-seconds", type=float, default=0.5, help="the consumer's --flush-seconds")
    parser.add_argument("--dbt-every", type=float, default=0.5, help="seconds between the starts of two refreshes")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results") / f"streaming-{datetime.now(UTC):%Y%m%dT%H%M%SZ}",
        help="where the results (results.jsonl) and each process's log go",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = Table(title=f"streaming path at {args.rate:g} records/s asked, {args.shards} shards per stream, 2 cores")
    for column in (
        "Kinesis",
        "records/s seen",
        "pins seen",
        "latency p50 s",
        "p95 s",
        "max s",
        "in bronze p50 s",
        "p95 s",
        "refresh p50 s",
        "p95 s",
        "consumer backlog",
        "consumer records/s",
    ):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        for server_name in args.server or ["kinesis-mock", "kinesalite"]:
            try:
                measured = run_on(server_name, Path(scratch), args, args.out)
            except NothingArrived as error:
                raise SystemExit(f"{server_name}: {error}") from None
            line = json.dumps({"server": server_name, **measured})
            print(line, flush=True)
            with (args.out / "results.jsonl").open("a") as results:
                results.write(line + "\n")
            steady, sustained = measured["latency"], measured["throughput"]
            table.add_row(
                server_name,
                f"{steady['seen_records_per_s']:,.0f}",
                f"{steady['pins']:,}",
                f"{steady['p50']:.2f}",
                f"{steady['p95']:.2f}",
                f"{steady['max']:.2f}",
                f"{steady['bronze_p50']:.2f}",
                f"{steady['bronze_p95']:.2f}",
                f"{steady['refresh_p50']:.2f}",
                f"{steady['refresh_p95']:.2f}",
                f"{sustained['records']:,}",
                f"{sustained['records_per_s']:,.0f}",
            )
    Console(width=220).print(table)
    print(f"results and logs: {args.out}")


if __name__ == "__main__":
    main()
