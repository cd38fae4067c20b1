"""Retries that never produce twice: a request may carry an ``Idempotency-Key`` header (the posting
client sends one per request and keeps it across its retries). The API remembers each key's answer
once its records are committed, in a SQLite file of the state dir that every worker process shares
and that outlives a restart of the API, and answers a retry with the original answer (the same
offsets) instead of producing again.

A key is remembered for ``api_idempotency_hours`` (24) and the newest ``api_idempotency_keys``
(1,000,000) are kept; a retry after that produces again, as a request without a key would.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ingestion.api.common import ApiError, process_running
from ingestion.failpoints import failpoint
from ingestion.schemas import IDEMPOTENCY_KEY

_PRUNE_EVERY = 1_000  # claims between two prunings
UNDER_WAY = 40901  # the 409 a client may retry
CUT_OFF = 40902  # the 409 of a request that may be stored or not: a retry must not produce it again


class OutcomeUnknown(ApiError):
    """The bus may have stored the request without confirming it: its key is kept as cut off, so a
    retry is refused (409) rather than stored a second time."""


@dataclass(frozen=True)
class Remembered:
    """The answer a committed request got: given again to its retries."""

    status: int
    body: bytes


class IdempotencyStore:
    def __init__(self, path: Path, *, hours: float, keys: int) -> None:
        self.path, self.ttl_s, self.max_keys = path, hours * 3600, keys
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("pragma journal_mode=wal")
            db.execute(
                "create table if not exists answers (key text primary key, request text not null, owner integer,"
                " status integer, body blob, at real not null)"
            )
            db.execute("create index if not exists answers_at on answers (at)")
        self._claims = 0

    def _connect(self) -> sqlite3.Connection:
        # one connection per call: the API's worker threads share the store; writers wait their turn
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def claim(self, key: str, request: bytes) -> Remembered | None:
        """The remembered answer of a committed request with ``key``, or None when this request is
        the first with it (it is then this process's until ``remember`` or ``forget``). Refused: the
        key of another request (422), or of one still under way, or whose process died under way (409)."""
        fingerprint = hashlib.sha256(request).hexdigest()
        with self._connect() as db:
            db.execute("begin immediate")
            row = db.execute(
                "select request, owner, status, body, at from answers where key = ? and at > ?",
                (key, time.time() - self.ttl_s),
            ).fetchone()
            if row is None:
                db.execute(
                    "insert or replace into answers (key, request, owner, at) values (?, ?, ?, ?)",
                    (key, fingerprint, os.getpid(), time.time()),
                )
                db.execute("commit")
                self._maybe_prune()
                return None
            db.execute("commit")
        earlier, owner, status, body, _ = row
        if earlier != fingerprint:
            raise ApiError(
                422, f"{IDEMPOTENCY_KEY} {key!r} was sent with another request: send a new key for a new request."
            )
        if status is not None:
            return Remembered(status, body)
        if owner is not None and process_running(owner):
            raise ApiError(409, f"A request with {IDEMPOTENCY_KEY} {key!r} is under way: retry in a moment.", UNDER_WAY)
        raise ApiError(
            409,
            f"The request with {IDEMPOTENCY_KEY} {key!r} was cut off while it was being stored (its API process died,"
            " or Kafka did not confirm its commit): it may be stored or not; check before sending it again with a new"
            " key.",
            CUT_OFF,
        )

    def remember(self, key: str, answer: Remembered) -> None:
        with self._connect() as db:
            db.execute(
                "update answers set status = ?, body = ?, owner = null where key = ?", (answer.status, answer.body, key)
            )

    def cut_off(self, key: str) -> None:
        """The request may be stored or not: its retries are refused, as after its process died."""
        with self._connect() as db:
            db.execute("update answers set owner = null where key = ? and status is null", (key,))

    def forget(self, key: str) -> None:
        """The request was not stored (refused, or the bus failed before committing): a retry may
        produce it."""
        with self._connect() as db:
            db.execute("delete from answers where key = ? and status is null", (key,))

    def _maybe_prune(self) -> None:
        self._claims += 1
        if self._claims % _PRUNE_EVERY:
            return
        with self._connect() as db:
            db.execute("delete from answers where at <= ?", (time.time() - self.ttl_s,))
            db.execute(
                "delete from answers where at < (select at from answers order by at desc limit 1 offset ?)",
                (self.max_keys - 1,),
            )


async def answered_once(
    store: IdempotencyStore, key: str | None, request: bytes, produce: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any] | Response:
    """``produce()``'s answer; with a ``key``, the answer remembered for it when a request with that
    key was committed before (``request`` identifies the request: its route and body)."""
    if key is None:
        return await produce()
    remembered = await run_in_threadpool(store.claim, key, request)
    if remembered is not None:
        return Response(remembered.body, status_code=remembered.status, media_type="application/json")
    try:
        answer = await produce()
    except OutcomeUnknown:
        await run_in_threadpool(store.cut_off, key)
        raise
    except BaseException:
        await run_in_threadpool(store.forget, key)
        raise
    await run_in_threadpool(store.remember, key, Remembered(200, orjson.dumps(answer)))
    failpoint("api.after_commit")  # committed and remembered, not yet answered
    return answer
