"""The project's layout promises: every model has a YAML file of its own beside it (its description,
columns and tests), named like the model, as dbt's "How we structure our dbt projects" asks."""

from __future__ import annotations

from pathlib import Path

import yaml

from ingestion.config import PROJECT_DIR


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
