"""Each local Kinesis server alone (kinesis-mock, kinesalite): how the cost of a call grows as the
streams fill, at a steady rate. Explains the streaming benchmark's latency tail.

For each server: three streams (pin, geo, user); a writer sends PutRecords batches at the asked rate
while a reader polls every shard with GetRecords from the start, as the stream consumer does. Per
10-second window: PutRecords and GetRecords latency (p50, p95) and the server process' CPU.

    .venv/bin/python bench/bench_kinesis_servers.py                  # both servers, 375 records/s, 60 s, 4 shards
    .venv/bin/python bench/bench_kinesis_servers.py --server kinesis-mock --shards 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from ingestion.clients import kinesis_client
from ingestion.config import Settings
from ingestion.post_sources import make_source
from ingestion.services import KinesisServer, free_port

WINDOW = 10.0


def _p(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100)[int(share * 100) - 1] * 1000 if len(values) > 1 else float("nan")


def measure(settings: Settings, rate: float, seconds: float, batch_size: int) -> list[dict[str, float]]:
    """Steady PutRecords and a polling reader on ``settings``' streams; one row per window."""
    posts = make_source("synthetic", 7).batch(0, 1_000)
    payloads = {
        stream: [json.dumps(v).encode() for v in posts.table(table).to_pylist()]
        for stream, table in settings.stream_tables.items()
    }
    puts: list[tuple[float, float]] = []
    gets: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def write() -> None:
        client, sent = kinesis_client(settings), 0
        while not stop.is_set():
            for stream, values in payloads.items():
                records = [
                    {"Data": values[(sent + i) % len(values)], "PartitionKey": str(sent + i)} for i in range(batch_size)
                ]
                began = time.monotonic()
                client.put_records(StreamName=stream, Records=records)
                puts.append((began - started, time.monotonic() - began))
            sent += batch_size
            time.sleep(max(0.0, started + sent * len(payloads) / rate - time.monotonic()))

    def read() -> None:
        client = kinesis_client(settings)
        iterators = {
            (stream, shard["ShardId"]): client.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for stream in payloads
            for shard in client.list_shards(StreamName=stream)["Shards"]
        }
        while not stop.is_set():
            polled = time.monotonic()
            for key, iterator in iterators.items():
                began = time.monotonic()
                answer = client.get_records(ShardIterator=iterator, Limit=10_000)
                gets.append((began - started, time.monotonic() - began))
                iterators[key] = answer["NextShardIterator"]
            time.sleep(max(0.0, polled + 0.2 - time.monotonic()))  # Kinesis' 5 reads per shard per second

    server = psutil.Process(KinesisServer(settings).process.pid())
    server.cpu_percent(None)
    workers = [threading.Thread(target=write), threading.Thread(target=read)]
    for worker in workers:
        worker.start()
    cpu: list[float] = []
    while time.monotonic() - started < seconds:
        time.sleep(WINDOW)
        cpu.append(server.cpu_percent(None))
    stop.set()
    for worker in workers:
        worker.join()
    rows = []
    for index, busy in enumerate(cpu):
        low, high = index * WINDOW, (index + 1) * WINDOW
        put = [d for t, d in puts if low <= t < high]
        got = [d for t, d in gets if low <= t < high]
        rows.append(
            {
                "from_s": low,
                "records_held": sum(1 for t, _ in puts if t < high) * batch_size,
                "put_p50_ms": _p(put, 0.5),
                "put_p95_ms": _p(put, 0.95),
                "get_p50_ms": _p(got, 0.5),
                "get_p95_ms": _p(got, 0.95),
                "cpu_percent": busy,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--server", choices=["kinesis-mock", "kinesalite"], action="append", help="repeatable; default both"
    )
    parser.add_argument("--rate", type=float, default=375, help="records per second over the three streams")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=25, help="records per PutRecords")
    args = parser.parse_args()
    table = Table(
        title=f"local Kinesis alone: {args.rate:g} records/s in PutRecords of {args.batch_size}, "
        f"{args.shards} shards per stream"
    )
    for column in (
        "Kinesis",
        "window s",
        "records held",
        "PutRecords p50 ms",
        "p95 ms",
        "GetRecords p50 ms",
        "p95 ms",
        "server CPU %",
    ):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.server or ["kinesis-mock", "kinesalite"]:
            settings = Settings(
                state_dir=Path(scratch) / name,
                kinesis_server=name,
                kinesis_port=free_port(),
                kinesis_shards=args.shards,
                streams=("bench-pin", "bench-geo", "bench-user"),
            )
            server = KinesisServer(settings)
            try:
                server.up()
                rows = measure(settings, args.rate, args.seconds, args.batch_size)
            finally:
                server.down()
            print(json.dumps({"server": name, "windows": rows}), flush=True)
            for row in rows:
                table.add_row(
                    name,
                    f"{row['from_s']:.0f}–{row['from_s'] + WINDOW:.0f}",
                    f"{row['records_held']:,}",
                    *(f"{row[k]:.0f}" for k in ("put_p50_ms", "put_p95_ms", "get_p50_ms", "get_p95_ms", "cpu_percent")),
                )
            table.add_section()
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
