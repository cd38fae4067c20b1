"""A deadline for slow clients' headers: a connection must send a request's headers within the
header timeout (from when it opens, or from the end of its previous response), else it gets 408
and is closed. Without it, clients sending a byte a second (slow loris) hold their connections
open for as long as they like. (The body's deadline is where bodies are read: ``Requests.body``.)"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingestion.config import Settings

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose next request's headers are not all
    there ``header_timeout`` seconds after it opened or after its last response (uvicorn's own
    keep-alive timeout stops counting at the first byte); see ``header_deadline``."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()


def header_deadline(settings: Settings) -> Any:
    """uvicorn's ``http`` protocol for the API: httptools with the settings' header timeout (a
    partial of an importable class, which uvicorn's worker processes can unpickle)."""
    return partial(HeaderDeadlineProtocol, header_timeout=settings.api_header_timeout_seconds)
