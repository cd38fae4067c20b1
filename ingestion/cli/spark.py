"""`pinpipe load --engine spark`: the Spark ingestion jobs (ingestion/spark_ingest.py) with a
progress bar and a closing table."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from ingestion.bronze import SparkJob
from ingestion.config import Settings
from ingestion.output import console, progress_bars
from ingestion.spark_ingest import BatchWritten, run_job


def spark_load(settings: Settings, source: str | None, every: float | None, max_per_batch: int | None) -> None:
    """Kafka (``source`` "kafka") or the raw objects at ``source`` into bronze on Spark: until drained,
    or a micro-batch every ``every`` seconds until Ctrl-C."""
    job: SparkJob = "kafka" if source == "kafka" else "objects"
    read = "Kafka" if job == "kafka" else f"{source or 'S3'} objects"
    rows: Counter[str] = Counter()
    batches = replayed = 0
    stopped = False
    how = "until drained" if every is None else f"every {every:g} s, Ctrl-C stops"
    console.print(f"Spark ({settings.spark_master}) {read} → bronze at {settings.lake}, {how}", highlight=False)
    with progress_bars() as progress:
        task = progress.add_task(f"{read} → bronze on Spark (rows)", total=None)

        def written(batch: BatchWritten) -> None:
            nonlocal batches, replayed
            batches += 1
            replayed += batch.replayed
            rows.update(batch.rows)
            progress.advance(task, sum(batch.rows.values()))

        try:
            run_job(
                settings,
                job,
                source=None if job == "kafka" else source,
                every=every,
                master=settings.spark_master,
                max_per_batch=max_per_batch,
                on_batch=written,
            )
        except KeyboardInterrupt:
            stopped = True
            console.print("stopped: the next run resumes after the last micro-batch written")
    table = Table(title=f"bronze rows appended by Spark: {batches} micro-batches ({replayed} replayed after a crash)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in sorted(rows.items()):
        table.add_row(name, f"{count:,}")
    console.print(table if rows else "no micro-batch finished" if stopped else "nothing new: already loaded")
