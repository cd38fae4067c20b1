"""The source database: the platform's relational store of posts, as the original pipeline had it
(MySQL tables ``pinterest_data``, ``geolocation_data`` and ``user_data``), read through SQLAlchemy
Core. An embedded SQLite file under the state dir by default; PostgreSQL (`pinpipe services up
--with postgres`) or MySQL/MariaDB where the URL says so.

``pinpipe source load`` creates the three tables, typed from the raw record models and keyed by the
post's key, and fills them with the shipped AiCore rows or a number of synthetic posts.
``DbSource`` emulates posts from them the original emulator's way, a random key with replacement per
post whose pin, geo and user rows are posted together, but deterministic per seed (post ``i`` is a
function of the seed, ``i`` and the keys the database holds) and one query per batch of keys, not
one per post.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy
from sqlalchemy.exc import DBAPIError

from ingestion.emulate import KeyedRandom, PostBatch, PostSource, SyntheticSource, aicore_tables, batches
from ingestion.errors import PinpipeError
from ingestion.schemas import KEY_FIELD, RAW_ARROW_SCHEMAS, RAW_LIST_ADAPTERS, RAW_MODELS, RAW_TABLES, RawTable

# the original platform's table names
SOURCE_TABLES: dict[RawTable, str] = {"pin": "pinterest_data", "geo": "geolocation_data", "user": "user_data"}
# keys per query: within SQLite's 32,766 bound parameters, and a statement of reasonable size
KEYS_PER_QUERY = 5_000
ROWS_PER_INSERT = 2_000

_SQL_TYPES: dict[type, Any] = {
    int: sqlalchemy.BigInteger,
    float: sqlalchemy.Float(precision=53),
    str: sqlalchemy.Text,
    datetime: sqlalchemy.DateTime,
}


class SourceUnavailable(PinpipeError):
    """The source database cannot be read: missing, empty, or not answering."""


def source_metadata() -> tuple[sqlalchemy.MetaData, dict[RawTable, sqlalchemy.Table]]:
    """The three source tables, their columns typed from the raw record models, keyed by the post's key."""
    metadata = sqlalchemy.MetaData()
    tables = {
        table: sqlalchemy.Table(
            SOURCE_TABLES[table],
            metadata,
            *(
                sqlalchemy.Column(
                    name,
                    _SQL_TYPES[field.annotation],  # type: ignore[index]
                    primary_key=name == KEY_FIELD[table],
                    autoincrement=False,
                )
                for name, field in RAW_MODELS[table].model_fields.items()
            ),
            mysql_charset="utf8mb4",  # MySQL's and MariaDB's default, latin1, cannot hold every post's text
        )
        for table in RAW_TABLES
    }
    return metadata, tables


def _describe(url: sqlalchemy.URL) -> str:
    return url.render_as_string(hide_password=True)


def _parsed(url: str) -> sqlalchemy.URL:
    try:
        return sqlalchemy.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise SourceUnavailable(
            f"{url!r} is not a SQLAlchemy URL: set PINPIPE_SOURCE_URL to dialect+driver://user@host:port/database, "
            "e.g. postgresql+psycopg://pinpipe@127.0.0.1:5433/pinpipe"
        ) from None


def _engine(url: sqlalchemy.URL, **options: Any) -> sqlalchemy.Engine:
    try:
        return sqlalchemy.create_engine(url, **options)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as error:
        raise SourceUnavailable(
            f"no driver for {url.drivername} ({error}): use postgresql+psycopg, mysql+pymysql or sqlite"
        ) from None


def _sqlite_file(url: sqlalchemy.URL) -> Path | None:
    in_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    return Path(str(url.database)) if in_file else None


def connect(url: str) -> sqlalchemy.Engine:
    """An engine on the source database; a SQLite file must exist (an engine would create it empty)."""
    parsed = _parsed(url)
    file = _sqlite_file(parsed)
    if file is not None and not file.exists():
        raise SourceUnavailable(f"no source database at {file}: create it with `pinpipe source load`")
    return _engine(parsed, pool_pre_ping=True)


def create(url: str) -> sqlalchemy.Engine:
    """An engine on the source database to fill; a SQLite file's folder is made."""
    parsed = _parsed(url)
    file = _sqlite_file(parsed)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    return _engine(parsed)


def _failed(engine: sqlalchemy.Engine, error: DBAPIError) -> SourceUnavailable:
    """What went wrong, in one line: a database that does not answer, or one that refused a statement."""
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
    try:
        with engine.connect():
            pass
    except DBAPIError:
        return SourceUnavailable(
            f"the source database {_describe(engine.url)} cannot be reached ({reason}): check PINPIPE_SOURCE_URL, "
            "start the server (PostgreSQL: `pinpipe services up --with postgres`) and run again; bronze resumes "
            "after the posts it holds"
        )
    return SourceUnavailable(f"the source database {_describe(engine.url)} refused it: {reason}")


def load_source(
    engine: sqlalchemy.Engine,
    *,
    synthetic_posts: int | None = None,
    seed: int = 100,
    on_rows: Callable[[RawTable, int], None] | None = None,
) -> dict[RawTable, int]:
    """(Re)create the source tables and fill them: the AiCore rows, or the distinct keys of
    ``synthetic_posts`` synthetic posts. Returns the rows per table."""
    metadata, tables = source_metadata()
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        loaded = dict.fromkeys(RAW_TABLES, 0)
        for table, rows in _rows(synthetic_posts, seed):
            values = RAW_LIST_ADAPTERS[table].validate_python(rows)  # timestamps as datetimes, ints as ints
            with engine.begin() as connection:
                for first in range(0, len(values), ROWS_PER_INSERT):
                    chunk = values[first : first + ROWS_PER_INSERT]
                    connection.execute(sqlalchemy.insert(tables[table]), chunk)
                    if on_rows is not None:
                        on_rows(table, len(chunk))
            loaded[table] += len(values)
    except DBAPIError as error:
        raise _failed(engine, error) from None
    return loaded


def _rows(synthetic_posts: int | None, seed: int) -> Iterator[tuple[RawTable, list[dict[str, Any]]]]:
    """Each table's rows, one per key: the AiCore rows, or synthetic posts (a repeated key carries the
    same content: the first is kept)."""
    if synthetic_posts is None:
        for table, rows in aicore_tables().items():
            yield table, rows.to_pylist()
        return
    seen: dict[RawTable, set[int]] = {table: set() for table in RAW_TABLES}
    for batch in batches(SyntheticSource(seed), synthetic_posts):
        for table in RAW_TABLES:
            fresh = []
            for row in batch.table(table).to_pylist():
                if row[KEY_FIELD[table]] not in seen[table]:
                    seen[table].add(row[KEY_FIELD[table]])
                    fresh.append(row)
            yield table, fresh


class DbSource:
    """Posts drawn from the source database: post ``i`` is the pin, geo and user rows of a key drawn
    with replacement (by the seed and ``i``) among the keys all three tables hold."""

    def __init__(self, engine: sqlalchemy.Engine, seed: int = 100) -> None:
        self.engine = engine
        self.name = f"db:{_describe(engine.url)}/seed={seed}"
        self._hasher = KeyedRandom(seed)
        self._tables = source_metadata()[1]
        pin, geo, user = (self._tables[table] for table in RAW_TABLES)
        pin_key = pin.c[KEY_FIELD["pin"]]
        self._joined = pin.join(geo, geo.c.ind == pin_key).join(user, user.c.ind == pin_key)
        try:
            with engine.connect() as connection:
                keys = connection.execute(sqlalchemy.select(pin_key).select_from(self._joined).order_by(pin_key))
                self._keys = np.array([key for (key,) in keys], dtype=np.int64)
        except DBAPIError as error:
            raise _failed(engine, error) from None
        if not len(self._keys):
            raise SourceUnavailable(
                f"the source database {_describe(engine.url)} holds no posts: fill it with `pinpipe source load`"
            )

    def batch(self, start: int, count: int) -> PostBatch:
        positions = np.arange(start, start + count, dtype=np.uint64)
        keys = self._keys[self._hasher.integers(positions, "key", len(self._keys))]
        wanted = np.unique(keys)
        rows = self._rows(wanted)
        if not np.array_equal(rows["_keys"], wanted):
            raise SourceUnavailable(
                f"the source database {_describe(self.engine.url)} lost posts while they were emulated: "
                "reload it with `pinpipe source load` and emulate into a new lake"
            )
        order = pa.array(np.searchsorted(wanted, keys))
        return PostBatch(start, *(rows[table].take(order) for table in RAW_TABLES))

    def _rows(self, keys: np.ndarray) -> dict[str, Any]:
        """The three tables' rows of ``keys`` (sorted, distinct), in key order, as Arrow tables typed
        as clients send them; ``_keys`` holds the keys."""
        columns = [(table, column) for table in RAW_TABLES for column in self._tables[table].c]
        pin_key = self._tables["pin"].c[KEY_FIELD["pin"]]
        query = (
            sqlalchemy.select(*(column for _, column in columns))
            .select_from(self._joined)
            .where(pin_key.in_(sqlalchemy.bindparam("keys", expanding=True)))
            .order_by(pin_key)
        )
        found: list[tuple[Any, ...]] = []
        try:
            with self.engine.connect() as connection:
                for first in range(0, len(keys), KEYS_PER_QUERY):
                    chunk = [int(key) for key in keys[first : first + KEYS_PER_QUERY]]
                    found += connection.execute(query, {"keys": chunk}).all()
        except DBAPIError as error:
            raise _failed(self.engine, error) from None
        result: dict[str, Any] = {"_keys": np.array([row[0] for row in found], dtype=np.int64)}
        for table in RAW_TABLES:
            positions = [i for i, (owner, _) in enumerate(columns) if owner == table]
            schema = RAW_ARROW_SCHEMAS[table]
            result[table] = pa.table(
                {
                    field.name: pa.array([_raw(row[i]) for row in found], field.type)
                    for field, i in zip(schema, positions, strict=True)
                },
                schema=schema,
            )
        return result


def _raw(value: object) -> object:
    """A database value as clients send it: a timestamp as its text (the original emulator's str())."""
    return str(value) if isinstance(value, datetime) else value


def db_source(url: str, seed: int = 100) -> PostSource:
    return DbSource(connect(url), seed)
