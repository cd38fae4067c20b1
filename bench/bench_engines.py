"""Three ways to the nine marts on the same posts: dbt on DuckDB (`local`), dbt on Spark with Delta
(`spark`), and the seeds' PySpark DataFrame script (bench/baselines/pyspark_seeds.py).

For each size, the same synthetic posts are loaded into bronze (for dbt) and written as raw JSON
lines (for the baseline). Each run is a fresh process, timed from the outside with its peak memory
(the process tree's resident memory, sampled); the baseline's marts are checked equal to DuckDB's.

    .venv/bin/python bench/bench_engines.py                    # 100k and 1M posts
    .venv/bin/python bench/bench_engines.py --posts 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from ingestion import reading
from ingestion.config import Settings
from ingestion.emulate import batches
from ingestion.load import load_posts
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_TABLES

BIN = Path(sys.executable).parent
BASELINE = Path(__file__).resolve().parent / "baselines" / "pyspark_seeds.py"


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (the JVM is a grandchild of dbt)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 2**20


def _measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak memory (MB, sampled every 0.2 s over the process tree) of a command."""
    # output goes to a file: a pipe nobody reads until the end fills up and blocks Spark's logging
    with tempfile.TemporaryFile("w+") as output:
        started, peak = time.perf_counter(), 0.0
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        while process.poll() is None:
            peak = max(peak, _tree_rss_mb(process.pid))
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            output.seek(0)
            raise RuntimeError(f"{command} failed:\n{output.read()[-3000:]}")
    return elapsed, peak


def _write_raw_json(posts: int, raw: Path) -> None:
    with duckdb.connect() as connection:
        for batch in batches(make_source("synthetic", 100), posts, batch_size=200_000):
            for table in RAW_TABLES:
                (raw / table).mkdir(parents=True, exist_ok=True)
                rows = batch.table(table)  # noqa: F841 - read by DuckDB's replacement scan
                connection.execute(f"copy rows to '{raw / table / f'part-{batch.start:09d}.json'}' (format json)")


def _normalised(rows: list[dict]) -> Counter:
    return Counter(tuple(round(float(v), 6) if isinstance(v, float) else v for v in row.values()) for row in rows)


def run_size(posts: int, scratch: Path) -> dict[str, float]:
    settings = Settings(
        lake=str(scratch / "lake"), warehouse=str(scratch / "w.duckdb"), spark_warehouse=str(scratch / "spark")
    )
    load_posts(settings, make_source("synthetic", 100), posts)
    _write_raw_json(posts, scratch / "raw")
    env = {
        **os.environ,
        "PINPIPE_LAKE": settings.lake,
        "PINPIPE_WAREHOUSE": settings.warehouse,
        "PINPIPE_SPARK_WAREHOUSE": settings.spark_warehouse,
        "DBT_TARGET_PATH": str(scratch / "target"),
    }
    project = ["--profiles-dir", str(settings.project_dir), "--project-dir", str(settings.project_dir)]
    result = {}
    for target, name in (("local", "duckdb"), ("spark", "spark")):
        # `build` runs the models with their 63 data and 24 unit tests; `run` only the models,
        # which is what the baseline does (it tests nothing), on the warehouse the build left
        result[f"{name}_s"], result[f"{name}_mb"] = _measured(
            [str(BIN / "dbt"), "--quiet", "build", *project, "--target", target], env
        )
        result[f"{name}_run_s"], _ = _measured([str(BIN / "dbt"), "--quiet", "run", *project, "--target", target], env)
    out = scratch / "baseline.json"
    result["baseline_s"], result["baseline_mb"] = _measured(
        [str(BIN / "python"), str(BASELINE), str(scratch / "raw"), "--out", str(out)], env
    )

    baseline = json.loads(out.read_text())
    for mart in reading.marts(settings):
        duck = reading.read_mart(settings, mart).to_pylist()
        # the baseline's JSON has no types: compare values as the JSON round trip leaves them
        assert _normalised(json.loads(json.dumps(duck, default=str))) == _normalised(baseline[mart]), mart
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    table = Table(title="nine marts from the same posts: dbt on DuckDB vs dbt on Spark vs the seeds' PySpark (2 cores)")
    for column in (
        "posts",
        "PySpark baseline s",
        "dbt DuckDB build s",
        "run s",
        "dbt Spark build s",
        "run s",
        "baseline / DuckDB build",
        "baseline / Spark build",
        "baseline / Spark run",
        "baseline MB",
        "DuckDB MB",
        "Spark MB",
    ):
        table.add_column(column, justify="right")
    for posts in args.posts:
        with tempfile.TemporaryDirectory() as scratch:
            r = run_size(posts, Path(scratch))
        print(json.dumps({"posts": posts, **{k: round(v, 2) for k, v in r.items()}}), flush=True)
        table.add_row(
            f"{posts:,}",
            f"{r['baseline_s']:.1f}",
            f"{r['duckdb_s']:.1f}",
            f"{r['duckdb_run_s']:.1f}",
            f"{r['spark_s']:.1f}",
            f"{r['spark_run_s']:.1f}",
            f"{r['baseline_s'] / r['duckdb_s']:.1f}×",
            f"{r['baseline_s'] / r['spark_s']:.2f}×",
            f"{r['baseline_s'] / r['spark_run_s']:.2f}×",
            f"{r['baseline_mb']:,.0f}",
            f"{r['duckdb_mb']:,.0f}",
            f"{r['spark_mb']:,.0f}",
        )
        Console(width=200).print(table)


if __name__ == "__main__":
    main()
