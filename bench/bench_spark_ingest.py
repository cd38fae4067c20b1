"""The sink's raw objects into bronze two ways, on the same posts: pinpipe's Python loader and the
Spark objects job (PySpark Structured Streaming, `trigger(availableNow=True)`) on one core and on two.

The posts are written once as the sink writes them (<raw>/topics/<topic>/partition=<p>/<first
offset>.json, three partitions per topic); each load is `pinpipe load` as a user runs it, in a fresh
process into a lake of its own, timed from the outside, its CPU summed over the process tree (the
JVM included, sampled every 0.2 s), and its bronze counted afterwards.

    .venv/bin/python bench/bench_spark_ingest.py                  # 1M posts (3M records)
    .venv/bin/python bench/bench_spark_ingest.py --posts 100000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psutil
from rich.console import Console
from rich.table import Table

from ingestion.config import Settings
from ingestion.emulate import batches
from ingestion.lake import Lake, table_stats
from ingestion.object_keys import object_key
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES

PINPIPE = str(Path(sys.executable).parent / "pinpipe")
PARTITIONS = 3


@dataclass(frozen=True)
class Measured:
    engine: str
    seconds: float
    cpu_seconds: float
    peak_mb: float
    records: int


def write_objects(posts: int, raw: Path, records_per_object: int) -> int:
    """The posts as the sink's objects: each table's records dealt round-robin over the partitions in
    runs of ``records_per_object``; the objects written."""
    written = 0
    offsets = {(table, p): 0 for table in RAW_TABLES for p in range(PARTITIONS)}
    with duckdb.connect() as connection:
        for number, batch in enumerate(batches(make_source("synthetic", 100), posts, batch_size=records_per_object)):
            partition = number % PARTITIONS
            for table in RAW_TABLES:
                key = Path(object_key(str(raw), table, partition, offsets[(table, partition)]))
                key.parent.mkdir(parents=True, exist_ok=True)
                rows = batch.table(table)  # noqa: F841 - read by DuckDB's replacement scan
                connection.execute(f"copy rows to '{key}' (format json)")
                offsets[(table, partition)] += len(batch)
                written += 1
    return written


def measure(engine: str, command: list[str], env: dict[str, str], lake: str) -> Measured:
    """Wall time, CPU of the process tree and its peak memory, then the rows bronze holds."""
    cpu: dict[int, float] = {}
    peak = 0.0
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = 0.0
            for member in tree:
                try:
                    times = member.cpu_times()
                    cpu[member.pid] = max(cpu.get(member.pid, 0.0), times.user + times.system)
                    rss += member.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            peak = max(peak, rss / 2**20)
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            output.seek(0)
            raise RuntimeError(f"{engine} failed:\n{output.read()[-3000:]}")
    records = sum(table_stats(Lake(lake), table).rows for table in RAW_TABLES)
    return Measured(engine, elapsed, sum(cpu.values()), peak, records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--records-per-object", type=int, default=50_000)
    parser.add_argument("--masters", default="local[1],local[2]", help="Spark masters to measure, comma-separated")
    args = parser.parse_args()
    console = Console(width=120)
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="bench-spark-ingest-") as scratch:
        raw = Path(scratch) / "raw"
        started = time.perf_counter()
        objects = write_objects(args.posts, raw, args.records_per_object)
        console.print(f"{args.posts:,} posts as {objects} objects in {time.perf_counter() - started:.1f} s")
        runs = [("python", [])] + [(f"spark {m}", ["--engine", "spark"]) for m in args.masters.split(",")]
        results = []
        for engine, extra in runs:
            lake = str(Path(scratch) / f"lake-{len(results)}")
            env = {
                **os.environ,
                "PINPIPE_LAKE": lake,
                "PINPIPE_STATE_DIR": str(settings.state_dir),  # the compiled statements kept there
                "PINPIPE_SPARK_MASTER": engine.removeprefix("spark "),
                "PINPIPE_PUSHGATEWAY_URL": "http://127.0.0.1:9",  # nothing answers: no push
            }
            results.append(measure(engine, [PINPIPE, "load", "--from", str(raw), *extra], env, lake))
            console.print(f"{engine}: {results[-1].seconds:.1f} s")
    table = Table(
        title=f"raw objects → bronze, {args.posts:,} posts ({3 * args.posts:,} records), {os.cpu_count()} cores"
    )
    for column in ("engine", "wall s", "records/s", "CPU s", "CPU µs/record", "peak MB", "bronze rows"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for m in results:
        table.add_row(
            m.engine,
            f"{m.seconds:.1f}",
            f"{m.records / m.seconds:,.0f}",
            f"{m.cpu_seconds:.1f}",
            f"{m.cpu_seconds / max(m.records, 1) * 1e6:.1f}",
            f"{m.peak_mb:,.0f}",
            f"{m.records:,}",
        )
    console.print(table)
    wrong = [m.engine for m in results if m.records != 3 * args.posts]
    if wrong:
        raise SystemExit(f"bronze does not hold every record once: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
