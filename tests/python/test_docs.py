"""Documentation coverage: every model, every column each model builds, every source table and every
exposure of the project has a description (what `dbt docs` shows analysts)."""

from __future__ import annotations

import pytest

from ingestion import warehouse
from ingestion.config import Settings
from ingestion.load import load_posts
from ingestion.post_sources import make_source

from helpers import Dbt

pytestmark = pytest.mark.slow

DOCUMENTED_FOLDERS = (
    *("models/staging/", "models/intermediate/", "models/marts/", "models/streaming/", "models/semantic/", "seeds/"),
)


def test_every_model_column_source_and_exposure_is_described(settings: Settings, dbt: Dbt) -> None:
    load_posts(settings, make_source("aicore", 1), 200)
    dbt.run(settings, "seed", "--quiet")  # the relations, to read the columns they really have
    dbt.run(settings, "run", "--quiet")
    manifest = dbt.manifest(settings)

    missing = []
    with warehouse.connect_warehouse(settings) as connection:
        for node in manifest.nodes.values():
            if node.resource_type not in ("model", "seed") or not node.original_file_path.startswith(
                DOCUMENTED_FOLDERS
            ):
                continue
            if not node.description.strip():
                missing.append(f"{node.resource_type} {node.name}")
            built = connection.execute(
                "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                [node.schema, node.alias],
            ).fetchall()
            assert built, f"{node.name} was not built"
            for (column,) in built:
                documented = node.columns.get(column)
                if documented is None or not documented.description.strip():
                    missing.append(f"column {node.name}.{column}")
    for source in manifest.sources.values():
        if not source.description.strip():
            missing.append(f"source {source.source_name}.{source.name}")
    for exposure in manifest.exposures.values():
        if not exposure.description.strip():
            missing.append(f"exposure {exposure.name}")
    # the semantic layer, which the docs site lists beside the models
    for semantic_model in manifest.semantic_models.values():
        described = [semantic_model.description, *(d.description for d in semantic_model.dimensions)]
        described += [m.description for m in semantic_model.measures]
        if not all(text and text.strip() for text in described):
            missing.append(f"semantic model {semantic_model.name} (or one of its dimensions or measures)")
    for metric in manifest.metrics.values():
        if not metric.description.strip():
            missing.append(f"metric {metric.name}")
    for saved_query in manifest.saved_queries.values():
        if not (saved_query.description or "").strip():
            missing.append(f"saved query {saved_query.name}")
    assert manifest.metrics, "the docs would show no metrics"
    assert not missing, "undocumented: " + ", ".join(missing)
