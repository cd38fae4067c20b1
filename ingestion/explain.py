"""Errors told in one line: what went wrong and what to do, and the exit code."""

from __future__ import annotations

import re

from ingestion import (
    post,
    transform,
)
from ingestion.errors import PinpipeError


def explain(error: Exception) -> tuple[str, int]:
    """What went wrong and what to do, in one line, and the exit code: 2 for something the user can
    put right, 1 for a failure of the run."""
    import duckdb
    from botocore.exceptions import ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError
    from pydantic import ValidationError

    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, PinpipeError):
        return first_line, 2
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"PINPIPE_{'_'.join(map(str, e['loc'])).upper()} ({'.'.join(map(str, e['loc']))}): "
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
            if e["type"] != "default_factory_not_called"  # a setting derived from one already wrong
        )
        return f"invalid setting: {problems}", 2
    if isinstance(error, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return f"the SQL does not run: {first_line}", 2
    if isinstance(error, duckdb.IOException):
        return f"{first_line} (is another program holding the warehouse open for writing?)", 1
    if isinstance(error, transform.DbtFailed | post.ApiRejected):
        return first_line, 1
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
        endpoint = re.search(r"https?://[^/\"]+", first_line)
        return (
            f"{endpoint.group(0) if endpoint else 'the endpoint'} does not answer: start the local services with "
            "`pinpipe services up`, or set PINPIPE_S3_ENDPOINT_URL / PINPIPE_KINESIS_ENDPOINT_URL",
            1,
        )
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}", 2
    return f"{type(error).__name__}: {first_line} (run with --debug for the traceback)", 1
