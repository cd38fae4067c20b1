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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ingestion import transform  # noqa: E402
from ingestion.bronze import Lake, load_posts  # noqa: E402
from ingestion.config import Settings  # noqa: E402
from ingestion.emulate import batches, make_source  # noqa: E402
from ingestion.schemas import RAW_TABLES  # noqa: E402

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
    started, peak = time.perf_counter(), 0.0
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while process.poll() is None:
        peak = max(peak, _tree_rss_mb(process.pid))
        time.sleep(0.2)
    output = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{output[-3000:]}")
    return time.perf_counter() - started, peak


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
    settings = Settings(lake=str(scratch / "lake"), warehouse=str(scratch / "w.duckdb"),
                        spark_warehouse=str(scratch / "spark"))  # fmt: skip
    load_posts(Lake.from_settings(settings), make_source("synthetic", 100), posts)
    _write_raw_json(posts, scratch / "raw")
    env = {**os.environ, "PINPIPE_LAKE": settings.lake, "PINPIPE_WAREHOUSE": settings.warehouse,
           "PINPIPE_SPARK_WAREHOUSE": settings.spark_warehouse, "DBT_TARGET_PATH": str(scratch / "target")}  # fmt: skip
    dbt = [str(BIN / "dbt"), "build", "--quiet", "--profiles-dir", str(settings.project_dir), "--project-dir", str(settings.project_dir)]
    result = {}
    result["duckdb_s"], result["duckdb_mb"] = _measured([*dbt, "--target", "local"], env)
    result["spark_s"], result["spark_mb"] = _measured([*dbt, "--target", "spark"], env)
    out = scratch / "baseline.json"
    result["baseline_s"], result["baseline_mb"] = _measured([str(BIN / "python"), str(BASELINE), str(scratch / "raw"), "--out", str(out)], env)

    baseline = json.loads(out.read_text())
    for mart in transform.MARTS:
        duck = transform.read_mart(settings, mart).to_pylist()
        # the baseline's JSON has no types: compare values as the JSON round trip leaves them
        assert _normalised(json.loads(json.dumps(duck, default=str))) == _normalised(baseline[mart]), mart
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    table = Table(title="nine marts from the same posts: dbt on DuckDB vs dbt on Spark vs the seeds' PySpark (2 cores)")
    for column in ("posts", "dbt DuckDB s", "dbt Spark s", "PySpark baseline s", "baseline / DuckDB", "baseline / dbt Spark",
                   "DuckDB MB", "Spark MB", "baseline MB"):  # fmt: skip
        table.add_column(column, justify="right")
    for posts in args.posts:
        with tempfile.TemporaryDirectory() as scratch:
            r = run_size(posts, Path(scratch))
        table.add_row(f"{posts:,}", f"{r['duckdb_s']:.1f}", f"{r['spark_s']:.1f}", f"{r['baseline_s']:.1f}",
                      f"{r['baseline_s'] / r['duckdb_s']:.1f}×", f"{r['baseline_s'] / r['spark_s']:.2f}×",
                      f"{r['duckdb_mb']:,.0f}", f"{r['spark_mb']:,.0f}", f"{r['baseline_mb']:,.0f}")  # fmt: skip
        Console().print(table)


if __name__ == "__main__":
    main()
