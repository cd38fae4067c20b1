"""An independent computation of the nine marts in plain Python, straight from raw post records.

Written from RAW_DATA.md's rules, not from the SQL: it shares no code with the dbt project or the
ingestion package, so a bug in either shows up as a difference.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

PLACEHOLDERS = {
    "title": {"No Title Data Available", ""},
    "description": {"No description available Story format", "No description available", ""},
    "poster_name": {"User Info Error"},
    "follower_count": {"User Info Error"},
    "tag_list": {"N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"},
    "image_src": {"Image src error."},
}
CATEGORIES = {
    "art",
    "beauty",
    "christmas",
    "diy-and-crafts",
    "education",
    "event-planning",
    "finance",
    "home-decor",
    "mens-fashion",
    "quotes",
    "tattoos",
    "travel",
    "vehicles",
}
MEDIA_TYPES = {"image", "video", "multi-video(story page format)"}
BIGINT = range(-(2**63), 2**63)
INTEGER = range(-(2**31), 2**31)


def as_text(value: object) -> str | None:
    """A raw JSON value as the text bronze keeps: strings as they are, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def clean_text(column: str, value: str | None) -> str | None:
    """Null for a placeholder, recognised after trailing spaces (and only spaces) are trimmed."""
    return None if value is None or value.rstrip(" ") in PLACEHOLDERS.get(column, ()) else value


def follower_count(raw: str | None) -> int | None:
    raw = clean_text("follower_count", raw)
    match = re.fullmatch(r"([0-9]+)([kM]?)", raw or "", flags=re.ASCII)
    if not match:
        return None
    count = int(match.group(1)) * {"": 1, "k": 1_000, "M": 1_000_000}[match.group(2)]
    return count if count in BIGINT else None


def timestamp(raw: str | None) -> datetime | None:
    """Exactly one of the two zero-padded serializations, of a real moment."""
    if raw is None or not re.fullmatch(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}", raw, flags=re.ASCII
    ):
        return None
    try:
        return datetime.strptime(raw.replace("T", " "), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def integer(raw: str | None) -> int | None:
    """An integer within 32 bits; never a rounded decimal."""
    if raw is None or not re.fullmatch(r"-?[0-9]+", raw, flags=re.ASCII):
        return None
    value = int(raw)
    return value if value in INTEGER else None


def decimal(raw: str | None) -> float | None:
    """A decimal number, finite as a double."""
    if raw is None or not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", raw, flags=re.ASCII):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def flag(raw: str | None) -> bool | None:
    return {"1": True, "0": False}.get(raw or "")


def age_group(age: int | None) -> str | None:
    if age is None or age < 18:
        return None
    return "18-24" if age <= 24 else "25-35" if age <= 35 else "36-50" if age <= 50 else "50+"


@dataclass(frozen=True)
class Post:
    category: str | None
    poster_name: str | None
    follower_count: int | None
    country: str | None
    post_year: int | None
    user_name: str | None
    age: int | None
    date_joined: datetime | None


def _key(record: Mapping, field: str) -> int:
    return int(as_text(record[field]))  # type: ignore[arg-type]


def _latest_by_key(records: Iterable[Mapping], field: str) -> dict[int, Mapping]:
    """One record per key: the latest ingested, records given in the order they were ingested."""
    latest: dict[int, Mapping] = {}
    for record in records:
        latest[_key(record, field)] = record
    return latest


def posts_from_tables(pins: Iterable[Mapping], geos: Iterable[Mapping], users: Iterable[Mapping]) -> list[Post]:
    """The posts whose three records all arrived (an inner join on the key), each table's latest
    copy of a key winning, cleaned by RAW_DATA.md's rules."""
    latest_pins, latest_geo, latest_users = (
        _latest_by_key(pins, "index"),
        _latest_by_key(geos, "ind"),
        _latest_by_key(users, "ind"),
    )
    posts = []
    for key, pin in latest_pins.items():
        geo, user = latest_geo.get(key), latest_users.get(key)
        if geo is None or user is None:
            continue
        text = {name: as_text(value) for name, value in pin.items()}
        poster = clean_text("poster_name", text.get("poster_name"))
        posted = timestamp(as_text(geo.get("timestamp")))
        first, last = as_text(user.get("first_name")), as_text(user.get("last_name"))
        posts.append(
            Post(
                category=text.get("category"),
                poster_name=poster.rstrip(" ") if poster is not None else None,
                follower_count=follower_count(text.get("follower_count")),
                country=as_text(geo.get("country")),
                post_year=posted.year if posted else None,
                user_name=f"{first} {last}" if first is not None and last is not None else None,
                age=integer(as_text(user.get("age"))),
                date_joined=timestamp(as_text(user.get("date_joined"))),
            )
        )
    return posts


def _tops(counts: Mapping[tuple, int], group: int) -> list[tuple]:
    """Rows (*key, count) whose count is the highest of their group (key[:group]); ties kept."""
    best: dict[tuple, int] = defaultdict(int)
    for key, count in counts.items():
        best[key[:group]] = max(best[key[:group]], count)
    return [(*key, count) for key, count in counts.items() if count == best[key[:group]]]


def _medians(values: Mapping[tuple, list[int]]) -> list[tuple]:
    return [(*key, float(statistics.median(v))) for key, v in values.items() if v]


def marts_from_tables(
    pins: Iterable[Mapping], geos: Iterable[Mapping], users: Iterable[Mapping]
) -> dict[str, list[tuple]]:
    return marts_of(posts_from_tables(pins, geos, users))


def marts_of(posts: list[Post]) -> dict[str, list[tuple]]:
    poster_followers: dict[tuple[str, str], int] = {}
    for p in posts:
        if p.country is not None and p.poster_name is not None and p.follower_count is not None:
            key = (p.country, p.poster_name)
            poster_followers[key] = max(poster_followers.get(key, 0), p.follower_count)
    most_followed = _tops(poster_followers, group=1)

    # a person is (user_name, age, date_joined): a post missing any of the three has no person
    people: dict[tuple, int | None] = {}
    for p in posts:
        if p.user_name is None or p.age is None or p.date_joined is None:
            continue
        person = (p.user_name, p.age, p.date_joined)
        known = [c for c in (people.get(person), p.follower_count) if c is not None]
        people[person] = max(known) if known else None

    by_group: dict[tuple, list[int]] = defaultdict(list)
    by_year: dict[tuple, list[int]] = defaultdict(list)
    by_group_year: dict[tuple, list[int]] = defaultdict(list)
    joined: Counter[tuple] = Counter()
    for (_, age, joined_at), count in people.items():
        group, year = age_group(age), joined_at.year
        in_window = 2015 <= year <= 2020
        if in_window:
            joined[(year,)] += 1
        if count is None:
            continue
        if group:
            by_group[(group,)].append(count)
        if in_window:
            by_year[(year,)].append(count)
        if group and in_window:
            by_group_year[(group, year)].append(count)

    top_count = max((row[2] for row in most_followed), default=None)
    return {
        "most_popular_category_by_country": _tops(
            Counter((p.country, p.category) for p in posts if p.country is not None and p.category is not None), group=1
        ),
        "posts_per_category_by_year": [
            (*key, n)
            for key, n in Counter(
                (p.post_year, p.category)
                for p in posts
                if p.post_year and 2018 <= p.post_year <= 2022 and p.category is not None
            ).items()
        ],
        "most_followed_user_by_country": most_followed,
        "country_with_most_followed_user": [row for row in most_followed if row[2] == top_count],
        "most_popular_category_by_age_group": _tops(
            Counter((age_group(p.age), p.category) for p in posts if age_group(p.age) and p.category is not None),
            group=1,
        ),
        "median_follower_count_by_age_group": _medians(by_group),
        "users_joined_by_year": [(*key, n) for key, n in joined.items()],
        "median_follower_count_by_join_year": _medians(by_year),
        "median_follower_count_by_age_group_and_join_year": _medians(by_group_year),
    }


def data_quality(
    pins: Iterable[Mapping], geos: Iterable[Mapping], users: Iterable[Mapping], quarantined: int
) -> dict[str, int]:
    """The rows each data-quality check should count: per table, the latest record of each key."""
    latest_pins, latest_geo, latest_users = (
        _latest_by_key(pins, "index"),
        _latest_by_key(geos, "ind"),
        _latest_by_key(users, "ind"),
    )

    def unparseable(records: Mapping[int, Mapping], field: str, parse: Callable[[str | None], object]) -> int:
        texts = [as_text(r.get(field)) for r in records.values()]
        return sum(1 for t in texts if t is not None and clean_text(field, t) is not None and parse(t) is None)

    people = [
        r
        for r in latest_users.values()
        if None not in (as_text(r.get("first_name")), as_text(r.get("last_name")))
        and integer(as_text(r.get("age"))) is not None
        and timestamp(as_text(r.get("date_joined"))) is not None
    ]
    complete = set(latest_pins) & set(latest_geo) & set(latest_users)
    distinct_people = {
        (f"{r['first_name']} {r['last_name']}", integer(as_text(r["age"])), timestamp(as_text(r["date_joined"])))
        for key, r in latest_users.items()
        if key in complete and r in people
    }
    return {
        "pins_follower_count_unparseable": unparseable(latest_pins, "follower_count", follower_count),
        "pins_downloaded_unparseable": unparseable(latest_pins, "downloaded", flag),
        "pins_unknown_category": sum(1 for r in latest_pins.values() if as_text(r.get("category")) not in CATEGORIES),
        "pins_unknown_media_type": sum(
            1 for r in latest_pins.values() if as_text(r.get("is_image_or_video")) not in MEDIA_TYPES
        ),
        "geo_country_missing": sum(1 for r in latest_geo.values() if r.get("country") is None),
        "geo_latitude_unparseable": unparseable(latest_geo, "latitude", decimal),
        "geo_longitude_unparseable": unparseable(latest_geo, "longitude", decimal),
        "geo_timestamp_unparseable": unparseable(latest_geo, "timestamp", timestamp),
        "users_age_unparseable": unparseable(latest_users, "age", integer),
        "users_date_joined_unparseable": unparseable(latest_users, "date_joined", timestamp),
        "posts_incomplete": len((set(latest_pins) | set(latest_geo) | set(latest_users)) - complete),
        "users_left_out_of_people": len(latest_users) - len(people),
        "people_without_age_group": sum(1 for person in distinct_people if age_group(person[1]) is None),
        "records_quarantined": quarantined,
    }


# --- the streaming metrics, from the bronze stream rows -------------------------------------------


def _latest_per(rows: Iterable[Mapping], key: str) -> dict[object, Mapping]:
    """The most recently ingested row per key value (ties: the higher stream, then offset)."""
    latest: dict[object, Mapping] = {}
    order = lambda row: (row["_ingested_at"], row["_stream"], row["_offset"])  # noqa: E731
    for row in rows:
        kept = latest.get(row[key])
        if kept is None or order(row) > order(kept):
            latest[row[key]] = row
    return latest


def streaming_metrics(
    pin_rows: list[Mapping], geo_rows: list[Mapping], as_of: datetime, popularity_minutes: int, trending_minutes: int
) -> dict[str, list[tuple]]:
    """profile_popularity and trending_categories_by_country from bronze stream rows (raw text
    payload plus `_arrival_time`, `_ingested_at`, `_stream`, `_offset`): each key once, windows
    (as_of - minutes, as_of] on the time Kinesis received the pin."""
    from datetime import timedelta

    pins = list(_latest_per(pin_rows, "index").values())
    for pin in pins:
        poster = clean_text("poster_name", pin["poster_name"])
        pin["poster"] = poster.rstrip() if poster is not None else None

    def within(row: Mapping, minutes: int) -> bool:
        return as_of - timedelta(minutes=minutes) < row["_arrival_time"] <= as_of

    posters = defaultdict(list)
    for pin in pins:
        if pin["poster"] is not None:
            posters[pin["poster"]].append(pin)
    popularity = []
    for poster, posts in posters.items():
        latest = _latest_per(posts, "poster")[poster]
        popularity.append(
            (
                poster,
                sum(within(p, popularity_minutes) for p in posts),
                len(posts),
                follower_count(latest["follower_count"]),
                max(p["_arrival_time"] for p in posts),
            )
        )

    countries = {int(ind): row["country"] for ind, row in _latest_per(geo_rows, "ind").items()}
    recent = Counter(
        (countries[int(pin["index"])], pin["category"])
        for pin in pins
        if within(pin, trending_minutes)
        and countries.get(int(pin["index"])) is not None
        and pin["category"] is not None
    )
    trending = [
        (country, category, n, 1 + sum(1 for (c, _), m in recent.items() if c == country and m > n))
        for (country, category), n in recent.items()
    ]
    return {"profile_popularity": popularity, "trending_categories_by_country": trending}
