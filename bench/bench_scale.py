"""Scale benchmark: `pinpipe transform` as a user runs it, beside the nine questions in hand-written
DuckDB SQL (bench/hand_written.sql) on the same bronze, at 1M and 10M posts, and a daily increment
(1% new posts) on the largest warehouse. Every stage runs as its own process, so its peak memory
(max RSS) is its own; the hand-written answers are checked against the marts.

    .venv/bin/python bench/bench_scale.py                       # 1M and 10M posts (about 15 minutes)
    .venv/bin/python bench/bench_scale.py --posts 1000000       # one size
    .venv/bin/python bench/bench_scale.py --dir /big/disk       # where the lakes and warehouses go
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
PINPIPE = str(Path(sys.executable).parent / "pinpipe")


def _measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``command`` in a child of a fresh process: its wall time and its own peak memory."""
    wrapper = [sys.executable, __file__, "--measure", json.dumps(command)]
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_measured(command: list[str]) -> None:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # `pinpipe transform`'s last line: where its time went, phase by phase
    phases = [line for line in done.stdout.splitlines() if line.startswith("timing: ")]
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "phases": phases[-1] if phases else ""}))


def _hand_written(lake: str, warehouse: str) -> None:
    """The nine questions in hand-written SQL on ``lake``'s bronze, then each compared with the mart
    of the same name in ``warehouse`` (a mismatch fails: the reference must answer the same)."""
    import duckdb

    from ingestion.config import Settings
    from ingestion.duckdb_setup import duckdb_config

    settings = Settings()
    script = (BENCH / "hand_written.sql").read_text().replace("{lake}", lake)
    with duckdb.connect(config=duckdb_config(settings.duckdb_extension_directory)) as connection:
        connection.execute(f"set memory_limit = '{settings.duckdb_memory}'")
        connection.execute(f"set temp_directory = '{warehouse}.hand-written.tmp'")
        connection.execute("set preserve_insertion_order = false")
        connection.execute(script)
        connection.execute(f"attach '{warehouse}' as built (read_only)")
        marts = [
            name
            for (name,) in connection.execute(
                "select table_name from duckdb_tables() where database_name = 'built' and schema_name = 'marts'"
            ).fetchall()
            if name != "data_quality"
        ]
        for mart in marts:
            differing = connection.execute(
                f"select count(*) from ((select * from {mart} except all select * from built.marts.{mart})"
                f" union all (select * from built.marts.{mart} except all select * from {mart}))"
            ).fetchone()
            if differing != (0,):
                raise SystemExit(f"hand-written {mart} differs from the mart in {differing[0]} rows")


def _scale(posts: int, increment: bool, scratch: Path, console: Console) -> list[dict]:
    lake, warehouse = scratch / "lake", scratch / "warehouse.duckdb"
    env = {
        **os.environ,
        "PINPIPE_LAKE": str(lake),
        "PINPIPE_WAREHOUSE": str(warehouse),
        "PINPIPE_STATE_DIR": str(scratch / "state"),
        "DBT_TARGET_PATH": str(scratch / "target"),
        "DBT_LOG_PATH": str(scratch / "logs"),
    }
    rows = []

    def step(label: str, command: list[str]) -> dict:
        console.print(f"[dim]{posts:,} posts: {label}…[/dim]")
        measured = _measure(command, env) | {"posts": posts, "step": label}
        if measured["phases"]:
            console.print(f"[dim]  {measured['phases']}[/dim]")
        rows.append(measured)
        return measured

    step("emulate → bronze", [PINPIPE, "emulate", "--posts", str(posts)])
    step("pinpipe transform (first)", [PINPIPE, "transform"])
    _print_node_timings(scratch / "target" / "run_results.json", posts, console)
    step("pinpipe transform --full-refresh", [PINPIPE, "transform", "--full-refresh"])
    step("hand-written SQL", [sys.executable, __file__, "--hand-written", str(lake), str(warehouse)])
    if increment:
        step("emulate 1% more → bronze", [PINPIPE, "emulate", "--posts", str(posts // 100)])
        step("pinpipe transform (daily increment)", [PINPIPE, "transform"])
        _print_node_timings(scratch / "target" / "run_results.json", posts, console)
        step("hand-written SQL (all again)", [sys.executable, __file__, "--hand-written", str(lake), str(warehouse)])
    return rows


def _print_node_timings(run_results: Path, posts: int, console: Console) -> None:
    """Where a build's time goes, from dbt's run_results.json: by kind of node, and the slowest nodes."""
    results = json.loads(run_results.read_text())
    by_kind: dict[str, list[float]] = {}
    for result in results["results"]:
        kind = result["unique_id"].split(".")[0]
        by_kind.setdefault(kind, []).append(result["execution_time"])
    table = Table(title=f"{posts:,} posts: dbt build, {results['elapsed_time']:.1f} s elapsed (threads overlap nodes)")
    for column in ("nodes", "count", "seconds, summed", "slowest"):
        table.add_column(column, justify="left" if column == "nodes" else "right")
    for kind, seconds in sorted(by_kind.items(), key=lambda item: -sum(item[1])):
        table.add_row(kind, str(len(seconds)), f"{sum(seconds):.1f}", f"{max(seconds):.2f}")
    console.print(table)
    slowest = sorted(results["results"], key=lambda r: -r["execution_time"])[:8]
    named = [f"{r['unique_id'].split('.')[-1]} {r['execution_time']:.1f} s" for r in slowest]
    console.print("slowest nodes: " + ", ".join(named))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the lakes and warehouses are made")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--hand-written", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _run_measured(json.loads(args.measure))
        return
    if args.hand_written:
        _hand_written(*args.hand_written)
        return

    console = Console()
    results = []
    for posts in args.posts:
        with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
            results += _scale(posts, increment=posts == max(args.posts), scratch=Path(scratch), console=console)
    table = Table(title=f"scale, {platform.machine()}, {os.cpu_count()} cores; each step its own process")
    for column in ("posts", "step", "seconds", "peak MB", "vs hand-written"):
        table.add_column(column, justify="right" if column != "step" else "left")
    reference = {r["posts"]: r["seconds"] for r in results if r["step"] == "hand-written SQL"}
    for row in results:
        ratio = f"{row['seconds'] / reference[row['posts']]:.1f}×" if "transform" in row["step"] else ""
        table.add_row(f"{row['posts']:,}", row["step"], f"{row['seconds']:.1f}", f"{row['peak_mb']:,.0f}", ratio)
    console.print(table)


if __name__ == "__main__":
    main()
