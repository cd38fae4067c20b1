"""Failpoints: named places inside a commit window where a test makes the process die.

``PINPIPE_FAILPOINT=<name>`` (or ``<name>@<n>``, at the n-th pass) kills the process with SIGKILL the
moment it reaches ``failpoint(<name>)``, as a power cut would: no ``finally``, no flush, no exit
handler. The kill tests use them to stop a loader between two tables' commits or a sink between
its S3 put and its offset commit, the exact moments a random kill almost never hits.

Points: ``bronze.after_quarantine_commit``, ``load.posts.after_table``, ``load.raw.after_commit``,
``sink.after_put``, ``spark.after_bronze_write``, ``stream.after_table_commit``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from ingestion.errors import PinpipeError

ENVIRONMENT_VARIABLE = "PINPIPE_FAILPOINT"
POINTS = (
    "api.after_commit",
    "bronze.after_quarantine_commit",
    "load.posts.after_table",
    "load.raw.after_commit",
    "sink.after_put",
    "spark.after_bronze_write",
    "stream.after_table_commit",
)


class UnknownFailpoint(PinpipeError):
    """``PINPIPE_FAILPOINT`` names no failpoint: a mistyped name would otherwise test nothing."""


# passes per point in this process: a failpoint is a process-wide trap, so its count is too
_passes: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """Die here if ``PINPIPE_FAILPOINT`` names this point (and this is its n-th pass)."""
    wanted = os.environ.get(ENVIRONMENT_VARIABLE)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point not in POINTS or not (nth or "1").isdecimal():
        raise UnknownFailpoint(
            f"{ENVIRONMENT_VARIABLE}={wanted!r}: no such failpoint; unset it or name one of {', '.join(POINTS)}"
            ", optionally with @<n> (the n-th pass)"
        )
    if point != name:
        return
    _passes[name] += 1
    if _passes[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
