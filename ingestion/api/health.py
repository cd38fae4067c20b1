"""A health check that answers at once: probing the broker inside the request took over 5 s during
an outage, and a load balancer's check with a short timeout then saw a timeout instead of a 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# how long a health check waits for its probe, before it says the service does not answer
ANSWER_WITHIN_S = 0.8


class HealthWatch:
    """``probe`` (True when the service answers) run when asked, one at a time: a check waits for
    it at most ``ANSWER_WITHIN_S``; a probe still running then keeps running in the background, and
    the checks that come meanwhile use it instead of starting another."""

    def __init__(self, probe: Callable[[], bool]) -> None:
        self.probe = probe
        self._probing: asyncio.Future[bool] | None = None
        self._last: bool | None = None  # what the last finished probe found

    async def healthy(self) -> tuple[bool, str]:
        """Whether the service answered, and why not when it did not. While a probe is under way and
        the last one found the service away, that is the answer, at once."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().run_in_executor(None, self._probe)
        elif self._last is False:
            return False, "unavailable"
        try:
            healthy = await asyncio.wait_for(asyncio.shield(self._probing), ANSWER_WITHIN_S)
        except TimeoutError:
            return False, f"not answering within {ANSWER_WITHIN_S:g} s"
        return healthy, "" if healthy else "unavailable"

    def _probe(self) -> bool:
        try:
            self._last = bool(self.probe())
        except Exception:  # noqa: BLE001 - a probe that fails says the service is not healthy
            self._last = False
        return self._last
