"""Long-running stages kept running: a stage stopped by a failing service (Kafka, S3, Kinesis) is
started again after a backoff, saying why in one line."""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never

from ingestion.explain import explain
from ingestion.faults import retryable
from ingestion.output import errors


class RestartBackoff:
    """tenacity's wait between restarts: 1 s, doubling to 60 s, and 1 s again after a run of a
    minute or more (a blip after days of running is not the tenth failure in a row)."""

    def __init__(self) -> None:
        self.failures, self.attempt_started = 0, time.monotonic()

    def started(self, _: RetryCallState) -> None:
        self.attempt_started = time.monotonic()

    def __call__(self, state: RetryCallState) -> float:
        ran = (state.outcome_timestamp or time.monotonic()) - self.attempt_started
        self.failures = 1 if ran > 60 else self.failures + 1
        return min(2.0 ** (self.failures - 1), 60.0)


def supervised(stage: str, run: Callable[[], None], *, restart: bool) -> None:
    """Run a long-running stage; when a service it needs fails (Kafka, S3, Kinesis down or erroring
    past the clients' own retries, the lake's object store included) or another writer's commit
    wins, say so in one line and run it again after a backoff (``RestartBackoff``); a defect stops
    it (``ingestion.faults``). Every stage resumes from what it committed, so a restart neither loses
    nor repeats a record."""
    if not restart:
        run()
        return
    backoff = RestartBackoff()

    def say(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        reason = explain(error)[0] if isinstance(error, Exception) else f"{type(error).__name__}: {error}"
        delay = state.next_action.sleep if state.next_action else 0
        errors.print(f"{stage} stopped: {reason}; restarting in {delay:g} s", highlight=False)

    Retrying(
        retry=retry_if_exception(retryable),
        wait=backoff,
        before=backoff.started,
        before_sleep=say,
        stop=stop_never,
        reraise=True,
    )(run)
