"""What a stage's error means, in one place: a service away (retry with backoff), a write conflict
(retry after reading what the other writer committed), or a defect (stop and say so). The sink,
`load --every`, the stream consumer and the API's producer all decide by it."""

from __future__ import annotations

import re
from enum import Enum

from botocore.exceptions import BotoCoreError, ClientError
from deltalake.exceptions import CommitFailedError, DeltaError

from ingestion.bus import BusError, NoSuchStream, RecordRefused, StreamRejected
from ingestion.errors import ServiceDown


class Fault(Enum):
    SERVICE_AWAY = "a service is away"
    WRITE_CONFLICT = "a write conflict"
    DEFECT = "a defect"


# delta-rs reports its object store's failures (S3 down, refusing, timing out) as DeltaError or
# OSError, and a few as a Rust panic, with no finer type: only the message tells them from a broken
# table or a bug
_OBJECT_STORE_AWAY = re.compile(
    r"Generic S3 error|error sending request|connection (refused|reset|closed)|timed? ?out|dns error"
    r"|Service ?Unavailable|SlowDown|InternalError|broken pipe",
    re.IGNORECASE,
)
_SERVICE_TYPES = (ServiceDown, BusError, BotoCoreError, ClientError, ConnectionError, TimeoutError)


def classify(error: BaseException) -> Fault:
    if isinstance(error, CommitFailedError):
        return Fault.WRITE_CONFLICT
    if isinstance(error, RecordRefused | NoSuchStream | StreamRejected):  # the request's fault, not the bus's
        return Fault.DEFECT
    if isinstance(error, _SERVICE_TYPES):
        return Fault.SERVICE_AWAY
    # a Rust panic (pyo3's PanicException) derives from BaseException, and has no importable type
    from_object_store = isinstance(error, DeltaError | OSError) or type(error).__name__ == "PanicException"
    if from_object_store and _OBJECT_STORE_AWAY.search(str(error)):
        return Fault.SERVICE_AWAY
    return Fault.DEFECT


def retryable(error: BaseException) -> bool:
    """A restart would get past it: a service away, or a conflict with another writer."""
    return classify(error) is not Fault.DEFECT
