"""A service's health observed in the background while it is being checked, so that a health check
answers at once: probing the broker inside the request took over 5 s during an outage, and a load
balancer's check with a short timeout then saw a timeout instead of a 503."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# how long a health check waits for the first observation, before it says the state is not known yet
FIRST_LOOK_S = 0.8


class HealthWatch:
    """``probe`` (True when the service answers) run every ``every`` seconds in a thread of its own
    while someone asks (the thread ends ``idle_after`` seconds after the last question, so an API
    nobody health-checks never probes); an observation older than ``stale_after`` seconds (a probe
    stuck past its timeouts) counts as unhealthy."""

    def __init__(
        self, probe: Callable[[], bool], *, every: float = 1.0, stale_after: float = 15.0, idle_after: float = 10.0
    ) -> None:
        self.probe, self.every, self.stale_after, self.idle_after = probe, every, stale_after, idle_after
        self._healthy: bool | None = None
        self._seen_at = self._asked_at = 0.0
        self._first = threading.Event()  # an observation since the thread (re)started
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def healthy(self) -> tuple[bool, str]:
        """Whether the service answered at the last look, and why not when it did not."""
        with self._starting:
            self._asked_at = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._first.clear()
                self._thread = threading.Thread(target=self._watch, name="health-watch", daemon=True)
                self._thread.start()
        if not self._first.wait(FIRST_LOOK_S):
            return False, "not known yet"
        age = time.monotonic() - self._seen_at
        if age > self.stale_after:
            return False, f"no answer for {age:.0f} s"
        return bool(self._healthy), "" if self._healthy else "unavailable"

    def _watch(self) -> None:
        while not self._stop.is_set() and time.monotonic() - self._asked_at < self.idle_after:
            try:
                healthy = self.probe()
            except Exception:  # noqa: BLE001 - a probe that fails says the service is not healthy
                healthy = False
            self._healthy, self._seen_at = healthy, time.monotonic()
            self._first.set()
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
