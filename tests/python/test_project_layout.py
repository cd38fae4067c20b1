"""The project's layout promises: every model has a YAML file of its own beside it (its description,
columns and tests), named like the model, as dbt's "How we structure our dbt projects" asks."""

from __future__ import annotations

from pathlib import Path

import yaml

from ingestion.config import PROJECT_DIR
from ingestion.lake import TABLES


def test_every_model_has_its_own_yaml_file_beside_it_that_describes_it() -> None:
    models = sorted((PROJECT_DIR / "models").rglob("*.sql"))
    assert models, "no models found: the check would prove nothing"
    problems = []
    for model in models:
        properties = model.with_suffix(".yml")
        if not properties.exists():
            problems.append(f"{model.relative_to(PROJECT_DIR)} has no {properties.name} beside it")
            continue
        described = {entry["name"] for entry in yaml.safe_load(properties.read_text()).get("models", [])}
        if model.stem not in described:
            problems.append(f"{properties.relative_to(PROJECT_DIR)} does not describe {model.stem}")
    assert not problems, "; ".join(problems)


def test_no_yaml_file_describes_a_model_that_lives_elsewhere() -> None:
    for properties in (PROJECT_DIR / "models").rglob("*.yml"):
        for entry in yaml.safe_load(properties.read_text()).get("models", []) or []:
            assert Path(properties.parent, f"{entry['name']}.sql").exists(), f"{properties} describes {entry['name']}"


def test_the_loaders_write_the_bronze_tables_dbt_reads() -> None:
    """The Python package lists the bronze tables (it runs without the repository's YAML); dbt's
    sources list them too, with the same meta: which path writes each, which record it carries."""
    sources = yaml.safe_load((PROJECT_DIR / "models/staging/pinterest/_pinterest__sources.yml").read_text())
    (bronze,) = [source for source in sources["sources"] if source["name"] == "bronze"]
    in_dbt = {
        table["name"]: (table["config"]["meta"]["kind"], table["config"]["meta"].get("carries"))
        for table in bronze["tables"]
    }
    assert in_dbt == {name: (table.kind, table.carries) for name, table in TABLES.items()}
