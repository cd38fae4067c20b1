"""The batch path as production runs it: posting client, API, sink and loader all at once, on the
real services (Kafka, versitygw) this script starts; and each stage alone. Both Kafka clients.

Every component is a process of its own, started the way a user starts it (`pinpipe api`,
`pinpipe sink`, `pinpipe load --every`, `pinpipe emulate --to api`). The pipelined figure is posts/s
from the first POST to the last bronze commit (every record of every topic committed in bronze,
read from the Delta log's offsets). Alone: the posting client and the API into Kafka (records/s
acknowledged), the sink draining a full backlog (records/s stored), the loader on the stored
objects (records/s in bronze). CPU seconds per process are reported beside.

    .venv/bin/python bench/bench_pipeline.py                          # 100k and 1M posts, both clients
    .venv/bin/python bench/bench_pipeline.py --posts 30000 --clients confluent-kafka
    .venv/bin/python bench/bench_pipeline.py --monitoring 3 --posts 100000 --clients confluent-kafka
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from ingestion.config import Settings
from ingestion.lake import Lake, table_stats
from ingestion.services import KafkaBroker, PrometheusServer, Pushgateway, S3Server, free_port

PINPIPE = [sys.executable, "-m", "ingestion"]
PY_SPY = str(Path(sys.executable).parent / "py-spy")


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.environment(), "PINPIPE_API_URL": f"http://127.0.0.1:{settings.api_port}"}


@contextmanager
def _running(name: str, command: list[str], settings: Settings, logs: Path) -> Iterator[psutil.Process]:
    """A component as a process of its own (and its children: the API's workers), stopped on exit."""
    with (logs / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            command, env=_env(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield psutil.Process(process.pid)
    finally:
        if process.poll() is None:
            # SIGINT: what py-spy, when it wraps the component, answers by writing its profile
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the process and its children so far (an exited child is no longer counted)."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _wait_api(settings: Settings, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{settings.api_port}/healthz", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.2)


def _in_bronze(lake: Lake, settings: Settings) -> int:
    """Records committed in bronze (the run's lake holds only its own topics), from the row counts
    the Delta log keeps per file: polled while the pipeline runs, it must not read the data."""
    return sum(table_stats(lake, table).rows for table in settings.topic_tables.values())


def _fresh(base: Settings, client: str) -> Settings:
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "topics": (f"pin-{run}", f"geo-{run}", f"user-{run}"),
            "s3_bucket": f"bench-{run}",
            "sink_group": f"sink-{run}",
            "lake": f"s3://bench-{run}/lake",
            "kafka_client": client,
            "api_port": free_port(),
        }
    )
    S3Server(settings).ensure_bucket(settings.s3_bucket)
    KafkaBroker(settings).ensure_topics()
    return settings


def _post_command(posts: int, batch: int, concurrency: int, settings: Settings) -> list[str]:
    return [
        *PINPIPE,
        "emulate",
        "--to",
        "api",
        "--posts",
        str(posts),
        "--batch-size",
        str(batch),
        "--concurrency",
        str(concurrency),
        "--api-url",
        f"http://127.0.0.1:{settings.api_port}",
    ]


def _profiled(name: str, command: list[str], profile: Path | None) -> list[str]:
    """The command, run under py-spy (sampling, folded stacks into ``profile/<name>.txt``) if asked."""
    if profile is None:
        return command
    output = str(profile / f"{name}.txt")
    return [PY_SPY, "record", "--format", "raw", "--subprocesses", "--rate", "200", "-o", output, "--", *command]


def _hot_spots(profile: Path, name: str, top: int = 8) -> list[tuple[str, float]]:
    """The functions a profiled component spent its samples in (self time), as shares."""
    selves: dict[str, int] = {}
    total = 0
    for line in (profile / f"{name}.txt").read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        selves[leaf] = selves.get(leaf, 0) + int(count)
        total += int(count)
    return [(leaf, n / total) for leaf, n in sorted(selves.items(), key=lambda item: -item[1])[:top]]


def _scraped(settings: Settings, scraped: bool) -> Settings:
    """The run's components serving their metrics to the Prometheus of ``base`` (its configuration
    rewritten for their ports), or not serving them at all."""
    if not scraped:
        return settings.model_copy(update={"sink_metrics_port": 0, "loader_metrics_port": 0})
    settings = settings.model_copy(update={"sink_metrics_port": free_port(), "loader_metrics_port": free_port()})
    PrometheusServer(settings).up()
    return settings


def pipelined(
    base: Settings,
    client: str,
    posts: int,
    batch: int,
    concurrency: int,
    logs: Path,
    profile: Path | None = None,
    *,
    scraped: bool = False,
) -> dict[str, float]:
    settings = _scraped(_fresh(base, client), scraped)
    records = 3 * posts
    with (
        _running("api", _profiled("api", [*PINPIPE, "api"], profile), settings, logs) as api,
        _running("sink", _profiled("sink", [*PINPIPE, "sink"], profile), settings, logs) as sink,
        _running(
            "loader", _profiled("loader", [*PINPIPE, "load", "--every", "0.5"], profile), settings, logs
        ) as loader,
    ):
        _wait_api(settings)
        started = time.perf_counter()
        poster = subprocess.run(
            _profiled("poster", _post_command(posts, batch, concurrency, settings), profile),
            env=_env(settings),
            capture_output=True,
            text=True,
        )
        if poster.returncode != 0:
            raise RuntimeError(poster.stdout + poster.stderr)
        posted = time.perf_counter() - started
        lake = Lake.from_settings(settings)  # one: each poll then reads only the newer log entries
        while _in_bronze(lake, settings) < records:
            if time.perf_counter() - started > 3600:
                raise RuntimeError(f"only {_in_bronze(lake, settings):,} of {records:,} records reached bronze")
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
        cpu = {name: _cpu_seconds(p) for name, p in (("api", api), ("sink", sink), ("loader", loader))}
    return {
        "posts_per_s": posts / elapsed,
        "seconds": elapsed,
        "posting_s": posted,
        **{f"{k}_cpu_s": v for k, v in cpu.items()},
    }


def alone(base: Settings, client: str, posts: int, batch: int, concurrency: int, logs: Path) -> dict[str, float]:
    settings = _fresh(base, client)
    records = 3 * posts
    with _running("api-alone", [*PINPIPE, "api"], settings, logs) as api:
        _wait_api(settings)
        started = time.perf_counter()
        subprocess.run(
            _post_command(posts, batch, concurrency, settings), env=_env(settings), check=True, capture_output=True
        )
        api_s = time.perf_counter() - started
        api_cpu = _cpu_seconds(api)
    started = time.perf_counter()
    subprocess.run([*PINPIPE, "sink", "--until-caught-up"], env=_env(settings), check=True, capture_output=True)
    sink_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([*PINPIPE, "load"], env=_env(settings), check=True, capture_output=True)
    load_s = time.perf_counter() - started
    assert _in_bronze(Lake.from_settings(settings), settings) == records
    return {
        "api_records_per_s": records / api_s,
        "api_cpu_s": api_cpu,
        "sink_records_per_s": records / sink_s,
        "load_records_per_s": records / load_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--clients", nargs="*", default=["confluent-kafka", "kafka-python"])
    parser.add_argument("--batch-size", type=int, default=500, help="posts per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--profile", type=Path, help="only the pipelined run, each component under py-spy; "
                        "folded stacks and hot spots into this folder")  # fmt: skip
    parser.add_argument("--monitoring", type=int, metavar="ROUNDS", help="only the pipelined run, ROUNDS times "
                        "without metrics served and with Prometheus scraping every component every second")  # fmt: skip
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        logs = Path(scratch) / "logs"
        logs.mkdir()
        base = Settings(
            state_dir=state,
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            kafka_metrics_port=free_port(),
            s3_port=free_port(),
            kafka_partitions=3,
        ).with_local_s3()
        servers: list[S3Server | KafkaBroker | Pushgateway | PrometheusServer] = [S3Server(base), KafkaBroker(base)]
        if args.monitoring:
            base = base.model_copy(
                update={"prometheus_port": free_port(), "pushgateway_port": free_port(), "scrape_interval_seconds": 1}
            )
            servers += [Pushgateway(base), PrometheusServer(base)]
        for server in servers:
            server.up()
        try:
            if args.monitoring:
                _monitoring_overhead(base, args, logs)
                return
            for client in args.clients:
                for posts in args.posts:
                    row = {"client": client, "posts": posts}
                    if args.profile is not None:
                        row |= pipelined(base, client, posts, args.batch_size, args.concurrency, logs, args.profile)
                        for name in ("poster", "api", "sink", "loader"):
                            print(name, [(leaf, f"{share:.0%}") for leaf, share in _hot_spots(args.profile, name)])
                        continue
                    row |= alone(base, client, posts, args.batch_size, args.concurrency, logs)
                    row |= pipelined(base, client, posts, args.batch_size, args.concurrency, logs)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for server in servers:
                server.down()
    table = Table(
        title=f"batch path, {platform.machine()}, {os.cpu_count()} cores, Kafka and versitygw on the same machine"
    )
    for column in (
        "client",
        "posts",
        "pipelined posts/s",
        "API alone records/s",
        "sink alone records/s",
        "loader alone records/s",
        "API CPU s",
        "sink CPU s",
        "loader CPU s",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        if "api_records_per_s" not in row:
            continue
        table.add_row(
            row["client"],
            f"{row['posts']:,}",
            f"{row['posts_per_s']:,.0f}",
            f"{row['api_records_per_s']:,.0f}",
            f"{row['sink_records_per_s']:,.0f}",
            f"{row['load_records_per_s']:,.0f}",
            f"{row['api_cpu_s']:.0f}",
            f"{row['sink_cpu_s']:.0f}",
            f"{row['loader_cpu_s']:.0f}",
        )
    Console(width=200).print(table)


def _monitoring_overhead(base: Settings, args: argparse.Namespace, logs: Path) -> None:
    """Pipelined runs without and with scraping, alternated so that drift hits both alike."""
    table = Table(title=f"monitoring overhead, {platform.machine()}, {os.cpu_count()} cores, scraped every second")
    columns = ("client", "posts", "scraped", "round", "pipelined posts/s", "API CPU s", "sink CPU s", "loader CPU s")
    for column in columns:
        table.add_column(column, justify="right")
    for client in args.clients:
        for posts in args.posts:
            for round_ in range(1, args.monitoring + 1):
                for scraped in (False, True):
                    row = pipelined(base, client, posts, args.batch_size, args.concurrency, logs, scraped=scraped)
                    print(json.dumps({"client": client, "posts": posts, "scraped": scraped, **row}), flush=True)
                    table.add_row(
                        client,
                        f"{posts:,}",
                        "yes" if scraped else "no",
                        str(round_),
                        f"{row['posts_per_s']:,.0f}",
                        f"{row['api_cpu_s']:.1f}",
                        f"{row['sink_cpu_s']:.1f}",
                        f"{row['loader_cpu_s']:.1f}",
                    )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
