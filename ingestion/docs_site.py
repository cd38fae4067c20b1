"""The generated dbt docs site, served on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ingestion.output import console


def serve_docs(site: Path, port: int) -> None:
    """The static site (index.html reads the manifest and catalog beside it) until Ctrl-C."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the requests are not news
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a browser leaving mid-page is not news
                super().handle_error(request, client_address)

    with Server(("127.0.0.1", port), partial(QuietHandler, directory=site)) as server:
        console.print(f"serving the docs at http://127.0.0.1:{port}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("docs server stopped")
