"""Embedded slice benchmark: bronze load rate and `dbt build` time and memory at several sizes.

Each measurement runs in a fresh child process, so its peak memory (max RSS) is its own.

    .venv/bin/python bench/bench_embedded.py                 # 100k and 1M synthetic posts
    .venv/bin/python bench/bench_embedded.py --posts 100000  # one size
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table


def _child_load(lake: str, posts: int, batch_size: int) -> dict:
    from ingestion.config import Settings
    from ingestion.emulate import batches
    from ingestion.lake import Lake, ensure_tables
    from ingestion.load import load_posts
    from ingestion.post_sources import make_source

    source = make_source("synthetic", 100)
    started = time.perf_counter()
    generated = list(batches(source, posts, batch_size=batch_size))
    generate_seconds = time.perf_counter() - started

    class Pregenerated:  # the same source, served from memory: times the bronze writes alone
        name = source.name

        def batch(self, start: int, count: int):
            return generated[start // batch_size]

    ensure_tables(Lake(lake))
    started = time.perf_counter()
    load_posts(Settings(lake=lake), Pregenerated(), posts, batch_size=batch_size)
    load_seconds = time.perf_counter() - started
    return {"generate_s": generate_seconds, "load_s": load_seconds}


def _child_dbt(lake: str, warehouse: str) -> dict:
    from ingestion import transform
    from ingestion.config import Settings

    settings = Settings(lake=lake, warehouse=warehouse)
    from ingestion.duckdb_setup import ensure_duckdb_extensions

    ensure_duckdb_extensions(settings.duckdb_extension_directory)
    from dbt.cli.main import dbtRunner  # noqa: F401  import cost kept out of the timing

    timings = {}
    # first build: a new warehouse and a full parse; rebuild: what a daily run costs (partial parse)
    for name in ("dbt_build_s", "dbt_rebuild_s"):
        started = time.perf_counter()
        transform.run_dbt(settings, ["build", "--quiet"])
        timings[name] = time.perf_counter() - started
    return timings


def _in_child(stage: str, **kwargs: object) -> dict:
    started = time.perf_counter()
    output = subprocess.run(
        [sys.executable, __file__, "--child", stage, "--kwargs", json.dumps(kwargs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result[f"{stage}_process_s"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--child")
    parser.add_argument("--kwargs")
    args = parser.parse_args()
    if args.child:
        stage = {"load": _child_load, "dbt": _child_dbt}[args.child]
        result = stage(**json.loads(args.kwargs))
        result[f"{args.child}_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    console = Console()
    table = Table(title=f"embedded slice, {platform.processor() or platform.machine()}, {_cores()} cores")
    for column in (
        "posts",
        "generate s",
        "bronze load s",
        "bronze posts/s",
        "load peak MB",
        "dbt build s",
        "dbt rebuild s",
        "dbt process s",
        "dbt peak MB",
    ):
        table.add_column(column, justify="right")
    for posts in args.posts:
        with tempfile.TemporaryDirectory() as scratch:
            lake, warehouse = f"{scratch}/lake", f"{scratch}/warehouse.duckdb"
            load = _in_child("load", lake=lake, posts=posts, batch_size=args.batch_size)
            dbt = _in_child("dbt", lake=lake, warehouse=warehouse)
        table.add_row(
            f"{posts:,}",
            f"{load['generate_s']:.1f}",
            f"{load['load_s']:.2f}",
            f"{posts / load['load_s']:,.0f}",
            f"{load['load_peak_rss_mb']:,.0f}",
            f"{dbt['dbt_build_s']:.1f}",
            f"{dbt['dbt_rebuild_s']:.1f}",
            f"{dbt['dbt_process_s']:.1f}",
            f"{dbt['dbt_peak_rss_mb']:,.0f}",
        )
    console.print(table)


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
