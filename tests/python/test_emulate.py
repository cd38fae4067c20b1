from __future__ import annotations

import json
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path

import pytest

from ingestion.emulate import batches
from ingestion.post_sources import make_source
from ingestion.schemas import RAW_MODELS, RAW_TABLES

SHIPPED = Path(__file__).resolve().parents[2] / "ingestion" / "data" / "aicore"


def _records(source_name: str, count: int, seed: int = 7) -> list[dict]:
    return [r for b in batches(make_source(source_name, seed), count, batch_size=997) for r in b.records()]


@pytest.mark.parametrize("source_name", ["aicore", "synthetic"])
def test_every_record_has_exactly_the_raw_shape(source_name: str) -> None:
    for post in _records(source_name, 3_000):
        for table in RAW_TABLES:
            record = post[table]
            assert list(record) == list(RAW_MODELS[table].model_fields), table
            RAW_MODELS[table].model_validate(record)  # raises on a wrong type or timestamp form
        assert post["pin"]["index"] == post["geo"]["ind"] == post["user"]["ind"]
        assert isinstance(post["pin"]["follower_count"], str)
        assert isinstance(post["geo"]["latitude"], float)


@pytest.mark.parametrize("source_name", ["aicore", "synthetic"])
def test_same_seed_same_posts_and_any_offset_can_be_generated_directly(source_name: str) -> None:
    first, again = _records(source_name, 2_000, seed=3), _records(source_name, 2_000, seed=3)
    assert first == again
    assert first != _records(source_name, 2_000, seed=4)
    source = make_source(source_name, 3)
    assert list(source.batch(1_500, 500).records()) == first[1_500:]


@pytest.mark.parametrize("source_name", ["aicore", "synthetic"])
def test_keys_repeat_always_with_identical_content(source_name: str) -> None:
    seen: dict[int, dict] = {}
    repeats = 0
    for post in _records(source_name, 20_000):
        key = post["pin"]["index"]
        if key in seen:
            repeats += 1
            assert post["pin"] == seen[key]["pin"]
            assert post["geo"]["country"] == seen[key]["geo"]["country"]
            for table, field in (("geo", "timestamp"), ("user", "date_joined")):
                # the moment is the same; only its serialization may differ
                assert post[table][field].replace("T", " ") == seen[key][table][field].replace("T", " ")
        seen[key] = post
    assert repeats > 1_000


def test_aicore_replays_the_real_rows_unchanged() -> None:
    real = {
        table: {row["index" if table == "pin" else "ind"]: row for row in map(json.loads, (SHIPPED / name).open())}
        for table, name in (("pin", "pin_sample.jsonl"), ("geo", "geo.jsonl"), ("user", "user.jsonl"))
    }
    posts = _records("aicore", 5_000)
    for post in posts:
        key = post["pin"]["index"]
        assert post["pin"] == real["pin"][key]
        assert post["geo"] == real["geo"][key]
        assert post["user"] == real["user"][key]
    assert len({p["pin"]["index"] for p in posts}) > 1_500  # most of the 1,920 sampled pins


def test_synthetic_posts_carry_the_real_dirt_at_realistic_rates() -> None:
    posts = _records("synthetic", 60_000)
    pins = [p["pin"] for p in posts]
    n = len(pins)

    def rate(predicate) -> float:
        return sum(map(predicate, pins)) / n

    assert 0.003 < rate(lambda p: p["title"] == "No Title Data Available") < 0.012
    assert 0.04 < rate(lambda p: p["description"] == "No description available Story format") < 0.1
    assert 0.005 < rate(lambda p: p["description"] == "No description available") < 0.03
    assert 0.25 < rate(lambda p: p["description"].endswith("\u2026\u00a0")) < 0.5
    assert 0.003 < rate(lambda p: p["follower_count"] == "User Info Error") < 0.012
    assert 0.6 < rate(lambda p: p["follower_count"].endswith("k")) < 0.9
    assert 0.03 < rate(lambda p: p["follower_count"].endswith("M")) < 0.12
    assert 0.08 < rate(lambda p: p["follower_count"].isdigit()) < 0.25
    assert 0.005 < rate(lambda p: p["poster_name"] != p["poster_name"].rstrip()) < 0.04
    assert all((p["image_src"] == "Image src error.") == (p["downloaded"] == 0) for p in pins)
    assert all(p["save_location"] == f"Local save in /data/{p['category']}" for p in pins)
    assert len({p["category"] for p in pins}) == 13
    placeholder_rows = [p for p in pins if p["title"] == "No Title Data Available"]
    assert all(p["poster_name"] == p["follower_count"] == "User Info Error" for p in placeholder_rows)

    forms = Counter("T" in p["geo"]["timestamp"] for p in posts)
    assert 0.1 < forms[True] / n < 0.3
    ages = [p["user"]["age"] for p in posts]
    assert min(ages) == 20
    assert max(ages) == 60


def test_synthetic_poster_names_belong_to_one_person_and_one_country() -> None:
    people, countries = defaultdict(set), defaultdict(set)
    for post in _records("synthetic", 30_000):
        name = post["pin"]["poster_name"]
        if name == "User Info Error":
            continue
        user = post["user"]
        people[name].add((user["first_name"], user["last_name"], user["age"], user["date_joined"].replace("T", " ")))
        countries[name].add(post["geo"]["country"])
    assert all(len(p) == 1 for p in people.values())
    assert all(len(c) == 1 for c in countries.values())
    assert len(people) > 5_000


def test_synthetic_batches_are_bounded_by_batch_size_not_count() -> None:
    stream = batches(make_source("synthetic", 1), 10_000_000, batch_size=50_000)  # lazy: nothing made yet
    assert [(b.start, len(b)) for b in islice(stream, 3)] == [(0, 50_000), (50_000, 50_000), (100_000, 50_000)]


def test_a_batch_split_in_pieces_is_the_batches_of_those_posts() -> None:
    source = make_source("synthetic", 5)
    pieces = list(source.batch(1_000, 1_250).split(500))
    assert [(piece.start, len(piece)) for piece in pieces] == [(1_000, 500), (1_500, 500), (2_000, 250)]
    for piece in pieces:
        assert list(piece.records()) == list(source.batch(piece.start, len(piece)).records())
