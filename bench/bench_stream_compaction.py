"""What compaction buys a bronze stream table that takes a commit every second.

Appends ``--commits`` micro-batches of ``--records`` user records to ``bronze/user_stream`` (as the
stream consumer does, one commit each, with the shard's offset), and every ``--every`` commits
measures: an append's time (median of the last 20), a DuckDB ``delta_scan`` of the table (what each
dbt refresh of the streaming models reads), its data files and log entries. At the end the same
measures after ``pinpipe compact --retention-hours 0``.

    .venv/bin/python bench/bench_stream_compaction.py              # 3,600 commits (an hour at one a second)
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

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.progress import track
from rich.table import Table

from ingestion.bronze import StreamSlice, append_slices
from ingestion.config import Settings
from ingestion.duckdb_setup import duckdb_config, ensure_duckdb_extensions
from ingestion.lake import Lake, ensure_tables

TABLE = "user_stream"


def _slice(commit: int, size: int) -> StreamSlice:
    first = commit * size
    records = [
        json.dumps(
            {
                "ind": first + i,
                "first_name": "Ada",
                "last_name": "Byron",
                "age": 36,
                "date_joined": "2016-01-01 00:00:00",
            }
        ).encode()
        for i in range(size)
    ]
    columns = {
        "_shard_id": pa.array(["shardId-000000000000"] * size),
        "_sequence_number": pa.array([str(first + i) for i in range(size)]),
        "_arrival_time": pa.array([None] * size, pa.timestamp("us", tz="UTC")),
    }
    return StreamSlice("kinesis/bench-user/shardId-000000000000", first, records, "kinesis://bench-user", columns)


def _measure(lake: Lake, commits: int, append_seconds: list[float]) -> dict[str, float]:
    location = lake.uri(TABLE)
    connection = duckdb.connect(config=duckdb_config(Settings().duckdb_extension_directory))
    connection.sql(f"select count(*) from delta_scan('{location}')").fetchone()  # the extension's load, not measured
    started = time.perf_counter()
    rows = connection.sql(f"select count(*) from delta_scan('{location}')").fetchone()[0]
    scan = time.perf_counter() - started
    log = [entry for entry in os.listdir(f"{location}/_delta_log") if entry.endswith(".json")]
    return {
        "commits": commits,
        "rows": rows,
        "append_ms": statistics.median(append_seconds[-20:]) * 1000,
        "scan_ms": scan * 1000,
        "data_files": len(lake.delta_table(TABLE).file_uris()),
        "log_entries": len(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=3_600)
    parser.add_argument("--records", type=int, default=100, help="records per commit")
    parser.add_argument("--every", type=int, default=900, help="measure every this many commits")
    args = parser.parse_args()
    ensure_duckdb_extensions(Settings().duckdb_extension_directory)
    results, appended = [], []
    with tempfile.TemporaryDirectory() as scratch:
        lake = Lake(f"{scratch}/lake")
        ensure_tables(lake)
        for commit in track(range(args.commits), description="appending micro-batches"):
            started = time.perf_counter()
            append_slices(lake, "user", [_slice(commit, args.records)], target=TABLE)
            appended.append(time.perf_counter() - started)
            if (commit + 1) % args.every == 0:
                results.append({"when": "before", **_measure(lake, commit + 1, appended)})
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ingestion", "--lake", lake.root, "compact", "--retention-hours", "0"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        compaction = time.perf_counter() - started
        for commit in range(args.commits, args.commits + 20):
            started = time.perf_counter()
            append_slices(lake, "user", [_slice(commit, args.records)], target=TABLE)
            appended.append(time.perf_counter() - started)
        results.append({"when": f"compacted ({compaction:.1f} s)", **_measure(lake, args.commits + 20, appended)})
    print(json.dumps(results), flush=True)
    table = Table(title=f"bronze/{TABLE}: one commit of {args.records} records each, then `pinpipe compact`")
    for column in ("", "commits", "rows", "append ms (median of 20)", "delta_scan ms", "data files", "log entries"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            row["when"],
            f"{row['commits']:,}",
            f"{row['rows']:,}",
            f"{row['append_ms']:.0f}",
            f"{row['scan_ms']:.0f}",
            f"{row['data_files']:,}",
            f"{row['log_entries']:,}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
