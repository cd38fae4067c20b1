"""The semantic layer held to the warehouse it reads: each business question answered from the
metrics equals its mart, and metrics by combinations no mart has equal plain SQL on the
intermediate models. Called on the builds the end-to-end tests already make."""

from __future__ import annotations

from collections import Counter

from ingestion import reading
from ingestion.config import Settings
from ingestion.semantic import MetricQuery, SemanticLayer

# new questions (metrics, group-by) and the plain SQL on the intermediate models answering each
NEW_COMBINATIONS = [
    (
        MetricQuery(("posts",), ("post__category", "person__join_year")),
        """select posts.category, people.join_year, count(*)
        from intermediate.int_posts_enriched as posts
        left join intermediate.int_people as people on posts.person_id = people.person_id
        group by all""",
    ),
    (
        MetricQuery(("distinct_posters", "max_follower_count"), ("post__country",)),
        """select country, count(distinct poster_name), max(follower_count)
        from intermediate.int_posts_enriched group by all""",
    ),
    (
        MetricQuery(("median_follower_count", "users_joined"), ("person__age_group", "person__join_year")),
        """select age_group, join_year, quantile_cont(follower_count, 0.5), count(*)
        from intermediate.int_people group by all""",
    ),
    (
        MetricQuery(("posts_per_user", "people_posting"), ("metric_time__year",)),
        """select date_trunc('year', posted_at), count(*) / count(distinct person_id), count(distinct person_id)
        from intermediate.int_posts_enriched group by all""",
    ),
    (
        MetricQuery(("posts",), ("metric_time__year",)),
        """select date_trunc('year', posted_at), count(*) from intermediate.int_posts_enriched group by all""",
    ),
    (
        MetricQuery(
            ("posts_per_user",), ("person__age_group",), where=("{{ Dimension('person__age_group') }} is not null",)
        ),
        """select people.age_group, count(*) / count(distinct posts.person_id)
        from intermediate.int_posts_enriched as posts
        join intermediate.int_people as people on posts.person_id = people.person_id
        where people.age_group is not null
        group by all""",
    ),
]


def _rows(table: object) -> Counter:
    rows = table.to_pylist()  # type: ignore[attr-defined]
    return Counter(tuple(round(v, 6) if isinstance(v, float) else v for v in row.values()) for row in rows)


def assert_semantic_layer_agrees(settings: Settings) -> SemanticLayer:
    """Every question's answer from the metrics equals its mart, row for row (ties and medians
    included); every new combination equals its plain SQL."""
    layer = SemanticLayer(settings)
    questions = [question.name for question in layer.questions()]
    assert sorted(questions) == sorted(reading.marts(settings))
    for question in questions:
        answered, mart = _rows(layer.answer(question).table), _rows(reading.read_mart(settings, question))
        assert answered == mart, (
            f"{question}: only from the metrics {answered - mart}, only in the mart {mart - answered}"
        )
        assert mart, f"{question} is empty: the comparison would prove nothing"
    for query, sql in NEW_COMBINATIONS:
        answered, plain = _rows(layer.query(query).table), _rows(reading.query(settings, sql))
        assert answered == plain, f"{query}: only from the metrics {answered - plain}, only in SQL {plain - answered}"
        assert plain
    return layer
