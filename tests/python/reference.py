"""An independent computation of the nine marts in plain Python, straight from raw post records.

Written from RAW_DATA.md's rules, not from the SQL: it shares no code with the dbt project or the
ingestion package, so a bug in either shows up as a difference.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
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


def clean_text(column: str, value: str | None) -> str | None:
    return None if value is None or value in PLACEHOLDERS.get(column, ()) else value


def follower_count(raw: str | None) -> int | None:
    raw = clean_text("follower_count", raw)
    match = re.fullmatch(r"(\d+)([kM]?)", raw or "")
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "k": 1_000, "M": 1_000_000}[match.group(2)]


def timestamp(raw: str | None) -> datetime | None:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(str(raw), fmt)
        except ValueError:
            pass
    return None


def age_group(age: int | None) -> str | None:
    if age is None or age < 18:
        return None
    return "18-24" if age <= 24 else "25-35" if age <= 35 else "36-50" if age <= 50 else "50+"


@dataclass(frozen=True)
class Post:
    category: str
    poster_name: str | None
    follower_count: int | None
    country: str
    post_year: int | None
    user_name: str
    age: int
    date_joined: datetime | None


def posts_from(records: Iterable[Mapping[str, Mapping]]) -> list[Post]:
    """One post per key (a repeated key carries identical content), cleaned."""
    by_key: dict[int, Post] = {}
    for record in records:
        pin, geo, user = record["pin"], record["geo"], record["user"]
        posted = timestamp(geo["timestamp"])
        poster = clean_text("poster_name", pin["poster_name"])
        by_key[int(pin["index"])] = Post(
            category=pin["category"],
            poster_name=poster.rstrip() if poster is not None else None,
            follower_count=follower_count(pin["follower_count"]),
            country=geo["country"],
            post_year=posted.year if posted else None,
            user_name=f"{user['first_name']} {user['last_name']}",
            age=int(user["age"]),
            date_joined=timestamp(user["date_joined"]),
        )
    return list(by_key.values())


def _tops(counts: Mapping[tuple, int], group: int) -> list[tuple]:
    """Rows (*key, count) whose count is the highest of their group (key[:group]); ties kept."""
    best: dict[tuple, int] = defaultdict(int)
    for key, count in counts.items():
        best[key[:group]] = max(best[key[:group]], count)
    return [(*key, count) for key, count in counts.items() if count == best[key[:group]]]


def _medians(values: Mapping[tuple, list[int]]) -> list[tuple]:
    return [(*key, float(statistics.median(v))) for key, v in values.items() if v]


def marts(records: Iterable[Mapping[str, Mapping]]) -> dict[str, list[tuple]]:
    posts = posts_from(records)

    poster_followers: dict[tuple[str, str], int] = {}
    for p in posts:
        if p.poster_name is not None and p.follower_count is not None:
            key = (p.country, p.poster_name)
            poster_followers[key] = max(poster_followers.get(key, 0), p.follower_count)
    most_followed = _tops(poster_followers, group=1)

    people: dict[tuple, int | None] = {}
    for p in posts:
        person = (p.user_name, p.age, p.date_joined)
        if p.date_joined is None:
            continue
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
        "most_popular_category_by_country": _tops(Counter((p.country, p.category) for p in posts), group=1),
        "posts_per_category_by_year": [
            (*key, n)
            for key, n in Counter(
                (p.post_year, p.category) for p in posts if p.post_year and 2018 <= p.post_year <= 2022
            ).items()
        ],
        "most_followed_user_by_country": most_followed,
        "country_with_most_followed_user": [row for row in most_followed if row[2] == top_count],
        "most_popular_category_by_age_group": _tops(
            Counter((age_group(p.age), p.category) for p in posts if age_group(p.age)), group=1
        ),
        "median_follower_count_by_age_group": _medians(by_group),
        "users_joined_by_year": [(*key, n) for key, n in joined.items()],
        "median_follower_count_by_join_year": _medians(by_year),
        "median_follower_count_by_age_group_and_join_year": _medians(by_group_year),
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
