"""Emulated user posts: each post is one pin, one geo and one user record sharing a key.

A source is an endless, deterministic stream of posts: post number ``i`` is a pure function of the
seed and ``i``. That makes every source seekable (a loader resumes at any offset without replaying
the prefix), constant in memory, and lets a larger run extend a smaller one with the same seed.

- ``aicore`` replays the real AiCore rows shipped in ``ingestion/data/aicore``, drawing keys
  uniformly with replacement like the original ``user_posting_emulation.py`` (so keys repeat, always
  with identical content).
- ``synthetic`` generates posts with the real data's distributions and dirt: placeholder strings,
  ``k``/``M`` follower counts, both timestamp serializations, trailing spaces, the ``…\\u00a0``
  description endings, repeated keys, and one person (and one country) per poster name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.schemas import RAW_ARROW_SCHEMAS, RAW_TABLES, RawTable

# The exact placeholder strings of the real data (RAW_DATA.md); dbt's cleaning macros null them.
NO_TITLE = "No Title Data Available"
NO_DESCRIPTION_STORY = "No description available Story format"
NO_DESCRIPTION = "No description available"
USER_INFO_ERROR = "User Info Error"
NO_TAGS = "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"
IMAGE_SRC_ERROR = "Image src error."
STORY_FORMAT = "multi-video(story page format)"
ELLIPSIS_NBSP = "\u2026\u00a0"


@dataclass(frozen=True)
class PostBatch:
    """Consecutive posts ``start .. start + len - 1`` of a source, one Arrow table per raw table."""

    start: int
    pin: pa.Table
    geo: pa.Table
    user: pa.Table

    def __len__(self) -> int:
        return self.pin.num_rows

    def table(self, name: RawTable) -> pa.Table:
        return {"pin": self.pin, "geo": self.geo, "user": self.user}[name]

    def split(self, size: int) -> Iterator[PostBatch]:
        """The batch in consecutive pieces of at most ``size`` posts (slices: nothing is copied)."""
        for offset in range(0, len(self), size):
            yield PostBatch(self.start + offset, *(self.table(t).slice(offset, size) for t in RAW_TABLES))

    def records(self) -> Iterator[dict[RawTable, dict[str, Any]]]:
        """The posts as raw dicts, exactly the shapes clients send."""
        for pin, geo, user in zip(self.pin.to_pylist(), self.geo.to_pylist(), self.user.to_pylist(), strict=True):
            yield {"pin": pin, "geo": geo, "user": user}


class PostSource(Protocol):
    name: str

    def batch(self, start: int, count: int) -> PostBatch: ...


def batches(source: PostSource, count: int, *, start: int = 0, batch_size: int = 50_000) -> Iterator[PostBatch]:
    """Posts ``start .. count - 1`` of ``source`` in batches of at most ``batch_size``."""
    for first in range(start, count, batch_size):
        yield source.batch(first, min(batch_size, count - first))


# --- deterministic hashing: splitmix64, vectorised -------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class KeyedRandom:
    """Independent pseudo-random streams keyed by (seed, salt, id): the same id always draws the same."""

    seed: int

    def bits(self, ids: np.ndarray, salt: str) -> np.ndarray:
        salt_value = np.uint64(int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little"))
        with np.errstate(over="ignore"):
            keyed = _splitmix(np.asarray(ids, dtype=np.uint64) ^ _splitmix(np.array([self.seed], np.uint64)))
            return _splitmix(keyed ^ salt_value)

    def integers(self, ids: np.ndarray, salt: str, high: np.ndarray | int) -> np.ndarray:
        return (self.bits(ids, salt) % np.asarray(high, dtype=np.uint64)).astype(np.int64)

    def uniform(self, ids: np.ndarray, salt: str) -> np.ndarray:
        return (self.bits(ids, salt) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --- the real rows shipped with the package ---------------------------------------------------------


@cache
def aicore_tables() -> dict[RawTable, pa.Table]:
    """The shipped AiCore rows, typed as clients send them (geo and user complete, pin a sample)."""
    folder = resources.files("ingestion") / "data" / "aicore"
    files: dict[RawTable, str] = {"pin": "pin_sample.jsonl", "geo": "geo.jsonl", "user": "user.jsonl"}
    tables: dict[RawTable, pa.Table] = {}
    for table, filename in files.items():
        rows = [json.loads(line) for line in (folder / filename).read_text(encoding="utf-8").splitlines()]
        tables[table] = pa.Table.from_pylist(rows, schema=RAW_ARROW_SCHEMAS[table])
    return tables


class AicoreSource:
    """Replays the real rows: post ``i`` is the real pin, geo and user row of a key drawn at random."""

    def __init__(self, seed: int = 100) -> None:
        self.name = f"aicore/seed={seed}"
        self._hasher = KeyedRandom(seed)
        real = aicore_tables()
        keys = real["pin"].column("index")
        self._tables: dict[RawTable, pa.Table] = {"pin": real["pin"]}
        for table in ("geo", "user"):
            # align geo and user rows to the pin sample's key order, so one row position serves all three
            key_position = pc.index_in(keys, value_set=real[table].column("ind"))
            self._tables[table] = real[table].take(key_position)
        self._key_count = len(keys)

    def batch(self, start: int, count: int) -> PostBatch:
        positions = np.arange(start, start + count, dtype=np.uint64)
        rows = pa.array(self._hasher.integers(positions, "key", self._key_count))
        return PostBatch(start, *(self._tables[table].take(rows) for table in RAW_TABLES))


# --- synthetic posts ----------------------------------------------------------------------------------

_FIRST_KEY_SPACE = 11_001  # the original emulator's randint(0, 11000)
_POSTS_PER_PERSON = 2.1  # 11,154 user rows hold 5,307 people
_POST_WINDOW = (np.datetime64("2017-10-19T00:00:00"), np.datetime64("2022-10-19T00:00:00"))
_JOIN_WINDOW = (np.datetime64("2015-10-19T00:00:00"), np.datetime64("2017-10-19T00:00:00"))

# Rates measured on the real rows (pin_sample.jsonl, 1,920 rows).
_PLACEHOLDER_ROW_RATE = 12 / 1920  # every pin column a placeholder at once
_STORY_RATE = 120 / 1920  # multi-video story pins, described as "No description available Story format"
_VIDEO_RATE = 62 / 1920
_NO_DESCRIPTION_RATE = 30 / 1920
_EMPTY_TEXT_RATE = 0.002
_NO_TAGS_RATE = 7 / 1920
_IMAGE_ERROR_RATE = 20 / 1920
_ELLIPSIS_RATE = 710 / 1920
_TRAILING_SPACE_RATE = 34 / 1920
_ISO_T_RATE = 0.2  # share of timestamps serialized as 2020-08-28T03:52:47
_PLAIN_FOLLOWERS_RATE = 313 / 1908
_MILLION_FOLLOWERS_RATE = 145 / 1908


@cache
def _vocabulary() -> dict[str, pa.Array]:
    """Words, names and countries taken from the real rows, so synthetic text looks like real text."""
    real = aicore_tables()
    titles = real["pin"].column("title").to_pylist()
    words = sorted({w for title in titles for w in title.split() if w.isalpha() and len(w) > 2})
    posters = sorted({name.strip() for name in real["pin"].column("poster_name").to_pylist()} - {USER_INFO_ERROR})
    return {
        "word": pa.array(words),
        "poster": pa.array(posters),
        "first_name": pa.array(sorted(set(real["user"].column("first_name").to_pylist()))),
        "last_name": pa.array(sorted(set(real["user"].column("last_name").to_pylist()))),
        "country": pa.array(sorted(set(real["geo"].column("country").to_pylist()))),
        "category": pa.array(sorted(set(real["pin"].column("category").to_pylist()))),
    }


def _uuid4(high: int, low: int) -> str:
    """A version-4 UUID's text from 128 drawn bits."""
    return (
        f"{high >> 32:08x}-{(high >> 16) & 0xFFFF:04x}-4{high & 0xFFF:03x}-"
        f"{8 | (low >> 62):x}{(low >> 48) & 0xFFF:03x}-{low & 0xFFFFFFFFFFFF:012x}"
    )


class SyntheticSource:
    """Any number of posts with the real data's shapes, distributions and dirt, deterministic per seed."""

    def __init__(self, seed: int = 100) -> None:
        self.name = f"synthetic/seed={seed}"
        self._hash = KeyedRandom(seed)
        self._vocab = _vocabulary()

    def batch(self, start: int, count: int) -> PostBatch:
        positions = np.arange(start, start + count, dtype=np.uint64)
        # The key space grows with the stream, so early posts repeat keys as often as the original
        # emulator's and a longer run extends a shorter one.
        keys = self._hash.integers(positions, "key", _FIRST_KEY_SPACE + positions)
        people = (keys / _POSTS_PER_PERSON).astype(np.int64)
        return PostBatch(start, self._pins(keys, people), self._geo(keys, people), self._users(keys, people))

    # Helpers draw per key (content) or per person (identity), never per position, so a repeated
    # key always carries identical content.
    def _pick(self, vocabulary: str, ids: np.ndarray, salt: str) -> pa.Array:
        words = self._vocab[vocabulary]
        return words.take(pa.array(self._hash.integers(ids, salt, len(words))))

    def _chance(self, ids: np.ndarray, salt: str, rate: float) -> np.ndarray:
        return self._hash.uniform(ids, salt) < rate

    def _words(self, ids: np.ndarray, salt: str, count: int, separator: str) -> pa.Array:
        return pc.binary_join_element_wise(*(self._pick("word", ids, f"{salt}{n}") for n in range(count)), separator)

    def _timestamps(
        self, moment_ids: np.ndarray, form_ids: np.ndarray, salt: str, window: tuple[np.datetime64, np.datetime64]
    ) -> pa.Array:
        """A moment drawn per ``moment_ids``, serialized in either form drawn per ``form_ids``."""
        span = int((window[1] - window[0]) / np.timedelta64(1, "s"))
        moments = window[0] + self._hash.integers(moment_ids, salt, span).astype("timedelta64[s]")
        text = np.datetime_as_string(moments, unit="s")
        iso_t = self._chance(form_ids, f"{salt}-form", _ISO_T_RATE)
        return pa.array(np.where(iso_t, text, np.char.replace(text, "T", " ")))

    def _poster_names(self, people: np.ndarray) -> pa.Array:
        base = self._pick("poster", people, "poster").to_pylist()
        trailing = self._chance(people, "poster-trailing", _TRAILING_SPACE_RATE)
        names = zip(base, people, trailing, strict=True)
        return pa.array([f"{name} {person}{' ' if pad else ''}" for name, person, pad in names])

    def _follower_counts(self, people: np.ndarray) -> pa.Array:
        kind = self._hash.uniform(people, "followers-kind")
        plain = self._hash.integers(people, "followers-plain", 943)
        thousands = 1 + self._hash.integers(people, "followers-k", 985)
        millions = 1 + self._hash.integers(people, "followers-M", 15)
        return pa.array(
            [
                str(p) if u < _PLAIN_FOLLOWERS_RATE else f"{m}M" if u > 1 - _MILLION_FOLLOWERS_RATE else f"{k}k"
                for u, p, k, m in zip(kind, plain, thousands, millions, strict=True)
            ]
        )

    def _pins(self, keys: np.ndarray, people: np.ndarray) -> pa.Table:
        placeholder = self._chance(keys, "placeholder", _PLACEHOLDER_ROW_RATE)
        kind = self._hash.uniform(keys, "kind")
        story = placeholder | (kind < _STORY_RATE)
        video = ~story & (kind < _STORY_RATE + _VIDEO_RATE)
        image_error = placeholder | self._chance(keys, "image-error", _IMAGE_ERROR_RATE)
        category = self._pick("category", keys, "category")

        title = self._words(keys, "title", 4, " ")
        title = pc.if_else(self._chance(keys, "title-empty", _EMPTY_TEXT_RATE), "", title)
        description = self._words(keys, "description", 12, " ")
        ellipsis = self._chance(keys, "ellipsis", _ELLIPSIS_RATE)
        description = pc.if_else(ellipsis, pc.binary_join_element_wise(description, ELLIPSIS_NBSP, ""), description)
        description_kind = self._hash.uniform(keys, "description-kind")
        description = pc.if_else(description_kind < _NO_DESCRIPTION_RATE + _EMPTY_TEXT_RATE, "", description)
        description = pc.if_else(description_kind < _NO_DESCRIPTION_RATE, NO_DESCRIPTION, description)
        description = pc.if_else(story, NO_DESCRIPTION_STORY, description)
        tags = self._words(keys, "tags", 5, ",")
        tags = pc.if_else(placeholder | self._chance(keys, "no-tags", _NO_TAGS_RATE), NO_TAGS, tags)

        digest = self._hash.bits(keys, "image")
        image_src = pa.array([f"https://i.pinimg.com/originals/{d:016x}.jpg" for d in digest])
        image_src = pc.if_else(image_error, IMAGE_SRC_ERROR, image_src)
        low, high = self._hash.bits(keys, "uuid-low"), self._hash.bits(keys, "uuid-high")
        unique_id = pa.array([_uuid4(h, lo) for h, lo in zip(high, low, strict=True)])

        columns = {
            "index": pa.array(keys),
            "unique_id": unique_id,
            "title": pc.if_else(placeholder, NO_TITLE, title),
            "description": description,
            "poster_name": pc.if_else(placeholder, USER_INFO_ERROR, self._poster_names(people)),
            "follower_count": pc.if_else(placeholder, USER_INFO_ERROR, self._follower_counts(people)),
            "tag_list": tags,
            "is_image_or_video": pa.array(np.where(story, STORY_FORMAT, np.where(video, "video", "image"))),
            "image_src": image_src,
            "downloaded": pa.array((~image_error).astype(np.int64)),
            "save_location": pc.binary_join_element_wise("Local save in /data/", category, ""),
            "category": category,
        }
        return pa.table(columns, schema=RAW_ARROW_SCHEMAS["pin"])

    def _geo(self, keys: np.ndarray, people: np.ndarray) -> pa.Table:
        # coordinates are random and do not match the country, as in the real data
        return pa.table(
            {
                "ind": pa.array(keys),
                "timestamp": self._timestamps(keys, keys, "posted", _POST_WINDOW),
                "latitude": pa.array(np.round(-90 + 180 * self._hash.uniform(keys, "latitude"), 4)),
                "longitude": pa.array(np.round(-180 + 360 * self._hash.uniform(keys, "longitude"), 4)),
                "country": self._pick("country", people, "country"),
            },
            schema=RAW_ARROW_SCHEMAS["geo"],
        )

    def _users(self, keys: np.ndarray, people: np.ndarray) -> pa.Table:
        return pa.table(
            {
                "ind": pa.array(keys),
                "first_name": self._pick("first_name", people, "first-name"),
                "last_name": self._pick("last_name", people, "last-name"),
                "age": pa.array(20 + self._hash.integers(people, "age", 41)),
                # the person's join moment is fixed; only its serialization varies per post
                "date_joined": self._timestamps(people, keys, "joined", _JOIN_WINDOW),
            },
            schema=RAW_ARROW_SCHEMAS["user"],
        )
