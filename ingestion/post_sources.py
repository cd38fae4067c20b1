"""Where a run's posts come from: the real AiCore rows replayed, synthetic posts, or the source
database (read through SQLAlchemy)."""

from __future__ import annotations

from typing import Literal

from ingestion.emulate import AicoreSource, PostSource, SyntheticSource

SourceName = Literal["aicore", "synthetic", "db"]


def make_source(name: SourceName, seed: int = 100, source_url: str | None = None) -> PostSource:
    """The posts of ``name``: the real rows, synthetic ones, or the source database at ``source_url``."""
    if name == "aicore":
        return AicoreSource(seed)
    if name == "synthetic":
        return SyntheticSource(seed)
    if name == "db" and source_url is not None:
        from ingestion.source import db_source  # SQLAlchemy only when the database is read

        return db_source(source_url, seed)
    raise ValueError(f"unknown source {name!r}: choose aicore, synthetic, or db (with its URL)")
