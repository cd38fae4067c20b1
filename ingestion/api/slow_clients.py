"""Deadlines for slow clients: a connection must send a request's headers within a header timeout
(from when it opens, or from the end of its previous response), and each part of a body within a
body timeout; else it gets 408 and is closed. Without them, clients sending a byte a second (slow
loris) hold their connections open for as long as they like."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingestion.api.common import ApiError

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose next request's headers are not all
    there ``header_timeout`` seconds after it opened or after its last response (uvicorn's own
    keep-alive timeout stops counting at the first byte). Given to uvicorn as
    ``functools.partial(HeaderDeadlineProtocol, header_timeout=...)``, which its workers can unpickle."""

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


class BodyDeadline:
    """ASGI middleware: a request whose next part of body does not arrive within ``body_timeout``
    seconds is answered 408 (an ``ApiError``, in the REST Proxy's error shape) and its connection
    closed. Only the body is timed: what the app awaits afterwards (a disconnect) is not."""

    def __init__(self, app: ASGIApp, body_timeout: float) -> None:
        self.app, self.body_timeout = app, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def receiving() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                raise ApiError(
                    408,
                    f"The request body did not arrive in time: no part of it for {self.body_timeout:g} s.",
                    headers={"connection": "close"},
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receiving, send)
