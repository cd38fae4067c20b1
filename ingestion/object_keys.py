"""The layout of the raw objects the sink writes and the loader reads, one JSON-lines object per
run of a topic partition's records, named like Kafka Connect's S3 sink names them:
``<prefix>/topics/<topic>/partition=<p>/<topic>+<p>+<first offset, 10 digits>.json``."""

from __future__ import annotations

import re
from dataclasses import dataclass

OBJECT_KEY = re.compile(
    r"topics/(?P<topic>[^/]+)/partition=(?P<partition>\d+)/(?P=topic)\+(?P=partition)\+(?P<start>\d+)\.json$"
)


def object_key(prefix: str, topic: str, partition: int, start: int) -> str:
    return f"{prefix}/topics/{topic}/partition={partition}/{topic}+{partition}+{start:010d}.json"


@dataclass(frozen=True)
class RawObject:
    key: str
    topic: str
    partition: int
    start: int


def parse_object_key(key: str) -> RawObject | None:
    match = OBJECT_KEY.search(key)
    if match is None:
        return None
    return RawObject(key, match["topic"], int(match["partition"]), int(match["start"]))
