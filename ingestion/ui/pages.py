"""The UI's pages, each a function Streamlit runs (``app.py`` puts them in its navigation). They read
through ``data`` only, so the same page renders in the app and in Streamlit's AppTest."""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt
import pandas as pd
import sqlalchemy
import streamlit as st

from ingestion.config import Settings
from ingestion.errors import NotReadOnly, PinpipeError
from ingestion.semantic import MetricQuery, SemanticLayer, UnknownMetricOrDimension
from ingestion.transform import target_path
from ingestion.ui import data

# a bar chart shows at most this many bars, the largest; the table below it has every row
MOST_BARS = 30


def _settings() -> Settings:
    return Settings()  # the PINPIPE_* environment `pinpipe ui` passes on


@st.cache_resource
def _engine(url: str, warehouse: str) -> sqlalchemy.Engine:
    return data.engine(_settings())


def _warehouse(settings: Settings) -> sqlalchemy.Engine | None:
    try:
        return _engine(data.warehouse_url(settings), settings.warehouse)
    except PinpipeError as missing:
        st.error(str(missing))
        return None


def _chart(insight: data.Insight, frame: pd.DataFrame) -> alt.Chart:
    tooltip = list(frame.columns)
    if insight.kind == "bar":
        x_field = insight.x
        if insight.color is not None:  # a bar per row: tied rows side by side, never stacked into a taller one
            frame = frame.assign(bar=frame[insight.x].astype(str) + " · " + frame[insight.color].astype(str))
            x_field = "bar"
        mark, x = alt.Chart(frame).mark_bar(), alt.X(f"{x_field}:N", sort="-y", title=insight.x)
    else:
        mark, x = alt.Chart(frame).mark_line(point=True), alt.X(f"{insight.x}:O")
    encoding = {"x": x, "y": alt.Y(f"{insight.y}:Q"), "tooltip": tooltip}
    if insight.color is not None:  # 13 categories: a scheme of 20, so no two share a colour
        encoding["color"] = alt.Color(f"{insight.color}:N", scale=alt.Scale(scheme="tableau20"))
    return mark.encode(**encoding)


def _largest(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The ``MOST_BARS`` rows largest in ``column`` (an empty frame as it is: its columns have no type)."""
    return frame.nlargest(MOST_BARS, column) if len(frame) else frame


def _download(frame: pd.DataFrame, name: str) -> None:
    st.download_button(
        "Download CSV", frame.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv", key=f"csv-{name}"
    )


def insights() -> None:
    st.title("Insights")
    settings = _settings()
    warehouse = _warehouse(settings)
    if warehouse is None:
        return
    frames = {insight.mart: data.mart(warehouse, insight.mart) for insight in data.INSIGHTS}
    by_country = frames["most_popular_category_by_country"]
    top_user = frames["country_with_most_followed_user"]
    summary = st.columns(3)
    summary[0].metric("Countries with posts", by_country["country"].nunique())
    summary[1].metric("Users who joined 2015–2020", int(frames["users_joined_by_year"]["number_users_joined"].sum()))
    summary[2].metric("Most followed poster", top_user["poster_name"].iloc[0] if len(top_user) else "none")
    if len(top_user):
        first = top_user.iloc[0]
        tied = f"; {len(top_user) - 1} more tied (question 4)" if len(top_user) > 1 else ""
        summary[2].caption(f"{int(first['follower_count']):,} followers, {first['country']}{tied}")
    for number, insight in enumerate(data.INSIGHTS, start=1):
        frame = frames[insight.mart]
        st.subheader(f"{number}. {insight.question}")
        st.caption(f"`marts.{insight.mart}`: {len(frame):,} rows")
        if insight.filter is not None and len(frame):
            chosen = st.multiselect(
                f"Filter by {insight.filter}", sorted(frame[insight.filter].dropna().unique()), key=insight.mart
            )
            if chosen:
                frame = frame[frame[insight.filter].isin(chosen)]
        shown = _largest(frame, insight.y) if insight.kind == "bar" else frame
        if len(shown) < len(frame):
            st.caption(f"the {MOST_BARS} largest of {len(frame):,} in the chart; every row in the table")
        st.altair_chart(_chart(insight, shown), width="stretch")
        with st.expander("Table and SQL"):
            st.dataframe(frame, hide_index=True)
            _download(frame, insight.mart)
            st.code(f"select * from marts.{insight.mart}", language="sql")
            st.code(data.model_sql(settings, insight.mart), language="sql")


def realtime() -> None:
    st.title("Real-time")
    settings = _settings()
    st.caption(
        f"The streaming models, read again every {settings.ui_refresh_seconds:g} s; "
        "`pinpipe stream --dbt-every 1` keeps them fresh."
    )
    warehouse = _warehouse(settings)
    if warehouse is None:
        return

    @st.fragment(run_every=settings.ui_refresh_seconds)
    def metrics() -> None:
        popularity = data.mart(warehouse, "profile_popularity", schema="streaming")
        trending = data.mart(warehouse, "trending_categories_by_country", schema="streaming")
        top = st.columns(3)
        top[0].metric("Posters active in the window", int((popularity["posts_in_window"] > 0).sum()))
        top[1].metric("Posts in the window", int(popularity["posts_in_window"].sum()))
        top[2].metric("Countries trending", trending["country"].nunique())
        st.caption(f"read at {datetime.now(UTC):%H:%M:%S} UTC")
        st.subheader("Profile popularity: posts in the window")
        busiest = _largest(popularity, "posts_in_window")
        if len(busiest):
            chart = (
                alt.Chart(busiest)
                .mark_bar()
                .encode(x=alt.X("poster_name:N", sort="-y"), y="posts_in_window:Q", tooltip=list(busiest.columns))
            )
            st.altair_chart(chart, width="stretch")
        else:
            st.info("No stream records yet: post some with `pinpipe emulate --to kinesis`.")
        st.dataframe(popularity, hide_index=True)
        _download(popularity, "profile_popularity")
        st.subheader("Trending categories by country: the top category of each")
        leaders = trending[trending["category_rank"] == 1]
        if len(leaders):
            chart = (
                alt.Chart(_largest(leaders, "posts_in_window"))
                .mark_bar()
                .encode(
                    x=alt.X("country:N", sort="-y"),
                    y="posts_in_window:Q",
                    color="category:N",
                    tooltip=list(leaders.columns),
                )
            )
            st.altair_chart(chart, width="stretch")
        st.dataframe(trending, hide_index=True)
        _download(trending, "trending_categories_by_country")

    metrics()


def pipeline() -> None:
    st.title("Pipeline")
    settings = _settings()
    warehouse = _warehouse(settings)  # said first: without it, bronze and the builds below are all there is
    st.subheader("Bronze: rows and freshness")
    health = data.bronze_health(settings)
    columns = st.columns(3)
    for column, table in zip(columns, ("pin", "geo", "user"), strict=True):
        column.metric(f"{table} rows in bronze", f"{int(health.loc[health['table'] == table, 'rows'].iloc[0]):,}")
    st.dataframe(health, hide_index=True)

    st.subheader("dbt builds")
    builds = data.builds(settings)
    if builds.empty:
        st.info("No build kept yet: `pinpipe run` or `pinpipe transform` keeps each build's results.")
    else:
        st.dataframe(builds, hide_index=True)
        models = data.last_build_models(settings)
        st.caption("The last build's models: seconds each, and their tests")
        chart = (
            alt.Chart(models)
            .mark_bar()
            .encode(x=alt.X("model:N", sort="-y"), y="seconds:Q", tooltip=list(models.columns))
        )
        st.altair_chart(chart, width="stretch")
        st.dataframe(models, hide_index=True)

    if warehouse is not None:
        st.subheader("Data quality: dirty input counted, never blocking")
        quality = data.mart(warehouse, "data_quality")
        st.dataframe(quality, hide_index=True)
        _download(quality, "data_quality")
        st.subheader("Quarantined records and their reasons")
        reasons = data.query(
            warehouse,
            "select table_name, reason, count(*) as records from staging.stg_pinterest__quarantine "
            "group by all order by records desc",
        )
        if reasons.empty:
            st.success("Nothing quarantined.")
        else:
            st.dataframe(reasons, hide_index=True)
            latest = data.query(
                warehouse, "select * from staging.stg_pinterest__quarantine order by _ingested_at desc limit 100"
            )
            st.dataframe(latest, hide_index=True)
            _download(latest, "quarantine")

    st.subheader("Running stages (Prometheus)")
    seen = data.prometheus(
        settings,
        {
            "sink lag (records)": "sum(pinpipe_sink_consumer_lag_records)",
            "into bronze (records/s, 5 min)": "sum(rate(pinpipe_bronze_records_appended_total[5m]))",
            "API accepted (records/s, 5 min)": "sum(rate(pinpipe_api_records_accepted_total[5m]))",
            "alerts firing": 'count(ALERTS{alertstate="firing"})',
        },
    )
    if seen is None:
        st.info(f"No Prometheus at {data.prometheus_url(settings)}: `pinpipe services up` starts one.")
    else:
        for column, (label, value) in zip(st.columns(len(seen)), seen.items(), strict=True):
            column.metric(label, "none" if value is None else f"{value:,.0f}")
        st.caption(f"From {data.prometheus_url(settings)}; its Alerts page lists what fires.")


@st.cache_resource
def _semantic_layer(manifest: str, modified: float) -> SemanticLayer:
    """The semantic layer, read again when dbt has written a newer semantic manifest."""
    return SemanticLayer(_settings())


def _explore_chart(frame: pd.DataFrame, metric: str, by: list[str]) -> alt.Chart:
    """The first metric by the first dimension (a line over time, bars otherwise), coloured by the
    second dimension when there is one."""
    over_time = by[0].startswith("metric_time")
    mark = alt.Chart(frame).mark_line(point=True) if over_time else alt.Chart(frame).mark_bar()
    x = alt.X(f"{by[0]}:T") if over_time else alt.X(f"{by[0]}:N", sort="-y")
    encoding = {"x": x, "y": alt.Y(f"{metric}:Q"), "tooltip": list(frame.columns)}
    if len(by) > 1:
        encoding["color"] = alt.Color(f"{by[1]}:N", scale=alt.Scale(scheme="tableau20"))
        if not over_time:
            encoding["xOffset"] = alt.XOffset(f"{by[1]}:N")  # side by side, never stacked
    return mark.encode(**encoding)


def explore() -> None:
    st.title("Explore")
    settings = _settings()
    st.caption(
        "Any metric by any dimension, from the semantic layer (dbt + MetricFlow): the SQL it generated is "
        "below the table. `pinpipe metrics` asks the same from a shell."
    )
    warehouse = _warehouse(settings)
    if warehouse is None:
        return
    manifest = target_path(settings) / "semantic_manifest.json"
    layer = _semantic_layer(str(manifest), manifest.stat().st_mtime if manifest.exists() else 0.0)
    labels = {metric.name: metric.label for metric in layer.metrics()}
    left, right = st.columns(2)
    metrics = left.multiselect("Metrics", list(labels), default=["posts"], format_func=labels.__getitem__)
    if not metrics:
        st.info("Pick a metric.")
        return
    dimensions = layer.dimensions(metrics)
    by = right.multiselect(
        "By", dimensions, default=[d for d in ("post__category",) if d in dimensions], max_selections=3
    )
    try:
        generated = layer.sql(MetricQuery(tuple(metrics), tuple(by)))
    except UnknownMetricOrDimension as refused:
        st.error(str(refused))
        return
    frame = data.query(warehouse, generated)
    st.caption(f"{len(frame):,} rows")
    if by and len(frame):
        st.altair_chart(_explore_chart(frame, metrics[0], by), use_container_width=True)
    st.dataframe(frame, hide_index=True)
    _download(frame, "explore")
    st.subheader("SQL")
    st.code(generated, language="sql")


def sql() -> None:
    st.title("SQL")
    settings = _settings()
    st.caption(f"Read-only queries on the warehouse ({data.warehouse_url(settings)}), through SQLAlchemy.")
    warehouse = _warehouse(settings)
    if warehouse is None:
        return
    statement = st.text_area(
        "Query", "select * from marts.users_joined_by_year", height=120, help="select, with, describe, show, explain"
    )
    if not st.button("Run", type="primary"):
        return
    try:
        result = data.query(warehouse, statement)
    except NotReadOnly as refused:
        st.error(f"Refused: {refused}")
        return
    except Exception as failed:  # noqa: BLE001 - the analyst's SQL: say what the database said, in one line
        st.error(f"The query failed: {str(failed).splitlines()[0]}")
        return
    st.caption(f"{len(result):,} rows")
    st.dataframe(result, hide_index=True)
    _download(result, "query")
    numeric = result.select_dtypes("number").columns
    if len(result.columns) >= 2 and len(numeric) and result.columns[0] not in numeric:
        st.bar_chart(result.head(MOST_BARS), x=result.columns[0], y=numeric[0])
