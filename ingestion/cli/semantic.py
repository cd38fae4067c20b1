"""`pinpipe metrics`: the semantic layer's metrics by any of their dimensions, a saved business
question, or the list of what can be asked."""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
import typer

from ingestion.cli.app import START, app, settings_of
from ingestion.cli.start import OutputFormat, print_result
from ingestion.errors import PinpipeError
from ingestion.output import errors
from ingestion.semantic import MetricQuery, SemanticLayer


@app.command(rich_help_panel=START)
def metrics(
    context: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="metrics, e.g. posts median_follower_count")] = None,
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="a dimension to group by, e.g. post__country, person__join_year, metric_time__year"),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(help="a filter, e.g. \"{{ Dimension('post__country') }} = 'Chad'\""),
    ] = None,
    order: Annotated[list[str] | None, typer.Option(help="order by a metric or dimension, -name descending")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many rows")] = None,
    question: Annotated[
        str | None, typer.Option(help="answer a business question by its mart's name, from the metrics")
    ] = None,
    listing: Annotated[
        bool, typer.Option("--list", help="list the metrics, their dimensions and the questions")
    ] = False,
    show_sql: Annotated[bool, typer.Option("--sql", help="also print the SQL MetricFlow generated")] = False,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table for reading, csv or json for tools")
    ] = OutputFormat.table,
    rows: Annotated[int, typer.Option(min=0, help="rows shown as a table")] = 50,
) -> None:
    """Ask the semantic layer (dbt + MetricFlow): metrics by any dimension, e.g.
    `pinpipe metrics posts --by post__category --by post__country`.

    The SQL is MetricFlow's, run read-only on the current target; --list shows what can be asked."""
    layer = SemanticLayer(settings_of(context))
    if listing:
        _print_listing(layer, output)
        return
    if question is not None:
        if names or by or where or order or limit:
            raise PinpipeError(
                f"--question {question} is answered as saved: metrics, --by, --where, --order and --limit do not"
                " apply (ask its metrics with them instead: `pinpipe metrics --list`)"
            )
        answer = layer.answer(question)
        title = question
    else:
        if not names:
            raise PinpipeError(
                "name a metric (`pinpipe metrics posts --by post__category`), or --question, or --list to see them"
            )
        query = MetricQuery(tuple(names), tuple(by or ()), tuple(where or ()), tuple(order or ()), limit)
        answer = layer.query(query)
        title = f"{', '.join(names)}" + (f" by {', '.join(by)}" if by else "")
    if show_sql:  # on stderr: csv and json stay clean for tools
        errors.print(answer.sql, highlight=False, markup=False)
    print_result(title, answer.table, output, rows)


def _print_listing(layer: SemanticLayer, output: OutputFormat) -> None:
    """The metrics, the dimensions and which metrics each reaches, the questions: tables, or CSV or
    JSON one after the other."""
    metrics = layer.metrics()
    print_result(
        "metrics",
        pa.table(
            {
                "metric": [m.name for m in metrics],
                "label": [m.label for m in metrics],
                "description": [m.description for m in metrics],
            }
        ),
        output,
        len(metrics),
    )
    by_dimension: dict[str, list[str]] = {}
    for metric in metrics:
        for dimension in layer.dimensions([metric.name]):
            by_dimension.setdefault(dimension, []).append(metric.name)
    every = {m.name for m in metrics}
    dimensions = pa.table(
        {
            "dimension (--by)": list(by_dimension),
            "of the metrics": ["all" if set(names) == every else ", ".join(names) for names in by_dimension.values()],
        }
    )
    print_result("dimensions", dimensions, output, dimensions.num_rows)
    questions = layer.questions()
    print_result(
        "questions (--question)",
        pa.table({"question": [q.name for q in questions], "asks": [q.description for q in questions]}),
        output,
        len(questions),
    )
