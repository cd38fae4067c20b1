# `make run` and `make test` work on a fresh machine: each creates the venv it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install spark dev run test test-fast mutate lint fmt ui bench airflow docs clean

# uv installs the pinned requirements into the venv: measured from empty caches, the default and the
# test requirements in 65 s where pip took 134 s
UV_INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python

$(BIN)/.installed: requirements.txt pyproject.toml
	@echo "==> creating the virtualenv $(VENV) ($(PYTHON))"
	$(PYTHON) -m venv $(VENV)
	@echo "==> installing the pinned dependencies from PyPI with uv (about 20 s the first time)"
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.10
	$(UV_INSTALL) -r requirements.txt
	$(UV_INSTALL) --no-deps -e .
	@echo "==> installing DuckDB's delta and httpfs extensions into .cache/duckdb-extensions"
	$(BIN)/pinpipe setup
	@touch $@
	@echo "==> set up: $(VENV) is ready"

install: $(BIN)/.installed

## the Spark and Databricks targets (pyspark, dbt-spark, dbt-databricks: about 500 MB more)
$(BIN)/.spark-installed: requirements-spark.txt $(BIN)/.installed
	@echo "==> installing the Spark and Databricks targets (requirements-spark.txt)"
	$(UV_INSTALL) -r requirements-spark.txt
	@touch $@

spark: $(BIN)/.spark-installed

$(BIN)/.airflow-installed: requirements-airflow.txt $(BIN)/.installed
	@echo "==> installing Airflow and cosmos (requirements-airflow.txt)"
	$(UV_INSTALL) -r requirements-airflow.txt
	@touch $@

# the tests need every target and the DAG: one resolution of all the requirements files
$(BIN)/.dev-installed: requirements-dev.txt requirements-spark.txt requirements-airflow.txt $(BIN)/.installed
	@echo "==> installing the Spark and Airflow requirements and the test and lint tools (requirements-dev.txt)"
	$(UV_INSTALL) -r requirements-dev.txt
	@touch $(BIN)/.spark-installed $(BIN)/.airflow-installed $@

dev: $(BIN)/.dev-installed

## the main job on the embedded default: emulate posts → bronze Delta → dbt build → print the marts
run: install
	$(BIN)/pinpipe run

# pytest-xdist workers: much of the suite waits on servers, JVMs and dbt, so two fit on 2 cores; tests
# that share a costly fixture (Spark, Airflow's database, a built warehouse) share a worker (xdist_group)
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

## every test: Python unit and end-to-end tests on the real services (docs/testing.md: what it needs, how long)
test: dev
	@started=$$(date +%s); $(PYTEST); status=$$?; \
		echo "==> make test: $$(( $$(date +%s) - started )) s (exit $$status)"; exit $$status

## the quick loop (Python only, under 3 minutes): unit tests, in-process kill tests, dbt's unit tests and a
## dbt build of a small bronze compared with the reference; no Kafka, S3 or Kinesis
test-fast: dev
	@started=$$(date +%s); $(PYTEST) -m "not slow"; status=$$?; \
		echo "==> make test-fast: $$(( $$(date +%s) - started )) s (exit $$status)"; exit $$status

## mutation testing of the exactly-once modules (bronze, sink, stream) with mutmut: slow, not in CI;
## `.venv/bin/mutmut results` lists the survivors, `.venv/bin/mutmut show <name>` shows one
mutate: dev
	$(BIN)/mutmut run --max-children 2
	@echo "==> the survivors once more, one by one (a batch run has reported killed mutants as surviving)"
	survivors="$$($(BIN)/mutmut results | grep survived | cut -d: -f1)"; \
		if [ -n "$$survivors" ]; then $(BIN)/mutmut run $$survivors; fi
	$(BIN)/mutmut results

## every check a change must pass: Python lint, format and types; dbt's YAML; SQL style; model layout
LINT_SCRATCH := $(CURDIR)/.state/lint
lint: dev
	@echo "==> ruff (lint, format), mypy"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@echo "==> dbt parse, deprecations and warnings as errors"
	PINPIPE_WAREHOUSE=$(LINT_SCRATCH)/lint.duckdb DBT_TARGET_PATH=$(LINT_SCRATCH)/target \
		$(BIN)/dbt parse --quiet --profiles-dir . --warn-error --no-partial-parse
	@echo "==> sqlfluff (dbt templater) on the models"
	PINPIPE_WAREHOUSE=$(LINT_SCRATCH)/lint.duckdb DBT_TARGET_PATH=$(LINT_SCRATCH)/target $(BIN)/sqlfluff lint models
	@echo "==> every model has its YAML beside it"
	$(BIN)/pytest -q -p no:cacheprovider tests/python/test_project_layout.py

## apply what the formatters can fix by themselves
fmt: dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	PINPIPE_WAREHOUSE=$(LINT_SCRATCH)/lint.duckdb DBT_TARGET_PATH=$(LINT_SCRATCH)/target $(BIN)/sqlfluff fix models

## the web UI on http://127.0.0.1:8501 (after `make run`): insights, real-time, pipeline, SQL
ui: install
	$(BIN)/pinpipe ui

## benchmarks (figures go to BENCHMARKS.md)
bench: install
	$(BIN)/python bench/bench_embedded.py

## Airflow standalone (SQLite, web UI on :8090: the ingest API has :8080) with the DAGs of dags/.
## The venv's bin leads PATH: standalone starts its scheduler, triggerer and dag-processor as `airflow`.
## The DAG's first import parses the dbt project (10-30 s on two busy cores): past Airflow's 30 s default.
AIRFLOW_HOME ?= $(CURDIR)/.state/airflow
AIRFLOW_PORT ?= 8090
airflow: $(BIN)/.airflow-installed
	PATH="$(CURDIR)/$(BIN):$$PATH" AIRFLOW_HOME=$(AIRFLOW_HOME) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=false AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__API__BASE_URL=http://localhost:$(AIRFLOW_PORT) AIRFLOW__COSMOS__ENABLE_TELEMETRY=false \
	AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=120 $(BIN)/airflow standalone

## dbt docs: generate and serve the lineage site on :8081
docs: install
	$(BIN)/pinpipe docs

clean:
	rm -rf lake warehouse target logs
