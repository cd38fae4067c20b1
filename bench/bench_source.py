"""Posts/s from each emulator source into bronze: the in-memory ones (synthetic, the AiCore rows)
beside the source database on SQLite and on a real PostgreSQL (this script starts it), each filled
with the same synthetic posts' keys.

    .venv/bin/python bench/bench_source.py                       # 1M posts per source
    .venv/bin/python bench/bench_source.py --posts 200000 --source-posts 50000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ingestion.config import Settings
from ingestion.emulate import PostSource
from ingestion.load import load_posts
from ingestion.post_sources import make_source
from ingestion.services import PostgresServer, free_port
from ingestion.source import DbSource, connect, create, load_source


def _timed(source: PostSource, posts: int, batch: int, lake: Path) -> tuple[float, float]:
    """Seconds to load ``posts`` posts into a new lake, and the seconds spent in the source."""
    spent = 0.0
    original = source.batch

    def batch_timed(start: int, count: int) -> object:
        nonlocal spent
        began = time.perf_counter()
        try:
            return original(start, count)
        finally:
            spent += time.perf_counter() - began

    source.batch = batch_timed  # type: ignore[method-assign]
    began = time.perf_counter()
    load_posts(Settings(lake=str(lake)), source, posts, batch_size=batch)
    return time.perf_counter() - began, spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument(
        "--source-posts", type=int, default=100_000, help="synthetic posts whose keys fill the database"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        root = Path(scratch)
        root.chmod(0o755)  # PostgreSQL runs as the postgres user when this is root
        postgres = PostgresServer(Settings(state_dir=root / "state", postgres_port=free_port()))
        postgres.up()
        try:
            databases = {
                "sqlite": f"sqlite:///{root / 'source.db'}",
                "postgresql": postgres.settings.local_postgres_url,
            }
            for url in databases.values():
                load_source(create(url), synthetic_posts=args.source_posts)
            sources: dict[str, PostSource] = {
                "synthetic (in memory)": make_source("synthetic", 100),
                "aicore (in memory)": make_source("aicore", 100),
                **{f"db: {name}": DbSource(connect(url), 100) for name, url in databases.items()},
            }
            for name, source in sources.items():
                seconds, in_source = _timed(source, args.posts, args.batch_size, root / name.replace(" ", "_"))
                rows.append((name, seconds, in_source))
                print(name, f"{args.posts / seconds:,.0f} posts/s", f"{in_source:.1f} s in the source", flush=True)
        finally:
            postgres.down()
    table = Table(title=f"{args.posts:,} posts into bronze, {platform.machine()}, {os.cpu_count()} cores")
    for column in ("source", "posts/s into bronze", "seconds", "of which reading the source"):
        table.add_column(column, justify="right")
    for name, seconds, in_source in rows:
        table.add_row(name, f"{args.posts / seconds:,.0f}", f"{seconds:.1f}", f"{in_source:.1f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
