"""One configuration object for every stage, read from flags and ``PINPIPE_*`` variables."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ingestion import failpoints
from ingestion.schemas import RAW_TABLES, RawTable

PROJECT_DIR = Path(__file__).resolve().parent.parent


def stream_table(stream: str) -> RawTable | None:
    """The raw table a Kinesis stream carries, from its name's last part: ``streaming-<user>-pin`` → pin
    (the seeds' naming); None for a stream that carries none of them."""
    suffix = stream.rsplit("-", 1)[-1]
    return suffix if suffix in RAW_TABLES else None  # type: ignore[return-value]


# what a production run adds to dbt's environment (Settings.production_dbt_environment)
SKIP_UNIT_TESTS = {"DBT_EXCLUDE_RESOURCE_TYPES": "unit_test"}


# a list setting: its variable is read as `a,b,c` or as a JSON list (validator `_a_list`)
Names = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Where the lake and the warehouse live, and which dbt target builds the marts.

    ``PINPIPE_LAKE`` and ``PINPIPE_WAREHOUSE`` are also read by ``profiles.yml`` and the dbt
    sources, so dbt run by hand sees the same lake as the CLI.
    """

    model_config = SettingsConfigDict(env_prefix="PINPIPE_", extra="ignore")

    lake: str = Field(default=str(PROJECT_DIR / "lake"), description="lake root: a path or s3:// URI")
    warehouse: str = Field(
        default=str(PROJECT_DIR / "warehouse" / "pinpipe.duckdb"), description="DuckDB warehouse file"
    )
    target: Literal["local", "spark", "databricks"] = Field(default="local", description="dbt target in profiles.yml")
    spark_warehouse: str = Field(
        default=str(PROJECT_DIR / "warehouse" / "spark"), description="Spark target: managed tables and Derby metastore"
    )
    build_wait_seconds: float = Field(
        default=900, ge=0, description="how long a build waits for another build of the same warehouse"
    )
    project_dir: Path = Field(default=PROJECT_DIR, description="the dbt project (repository root)")
    state_dir: Path = Field(default=PROJECT_DIR / ".state", description="services' data, logs and pid files")
    # inside the project, not the user's home: a fresh clone is the whole state, and nothing a
    # machine happens to hold elsewhere (~/.cache, ~/.m2, ~/.duckdb) can hide a broken install step
    cache_dir: Path = Field(
        default=PROJECT_DIR / ".cache", description="downloads and builds, reused: DuckDB extensions, jars, binaries"
    )
    duckdb_extension_directory: Path = Field(
        default_factory=lambda given: Path(given["cache_dir"]) / "duckdb-extensions",
        description="where DuckDB finds the delta and httpfs extensions (default <cache dir>/duckdb-extensions); "
        "every DuckDB the project opens is told: dbt's profile, the CLI, the DAG; never ~/.duckdb",
    )
    duckdb_memory: str = Field(
        default="3GB",
        description="DuckDB's memory_limit for builds and queries: beyond it DuckDB spills to the temp "
        "directory instead of failing (a laptop keeps room for everything else)",
    )
    duckdb_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="DuckDB's worker threads (default: one per core)"
    )
    duckdb_temp_directory: Path | None = Field(
        default=None,
        description="where DuckDB spills what does not fit in its memory limit "
        "(default: DuckDB's own, <warehouse>.tmp beside the file being built)",
    )
    run_unit_tests: bool = Field(
        default=False,
        description="production builds (`pinpipe run`, `transform`, the DAG) skip dbt's unit tests, "
        "which test the SQL, not the data; `make test` and CI run them",
    )
    test_every_row: bool = Field(
        default=False,
        description="dbt's data tests of an incremental model check the rows its latest build wrote "
        "(every row on a first build or --full-refresh); true checks every row, as the DAG does on Sundays",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint for an s3:// lake")
    s3_region: str = Field(default="us-east-1", description="the S3 and Kinesis region")
    # defaults are the local S3 server's (pinpipe services); set real credentials for a real bucket
    s3_access_key_id: str = Field(default="pinpipe", description="S3 access key (the local server's by default)")
    s3_secret_access_key: SecretStr = Field(
        default=SecretStr("pinpipe-secret"), description="S3 secret key (the local server's by default)"
    )
    s3_port: int = Field(default=7070, description="port of the local S3 server `pinpipe services up` starts")
    s3_bucket: str = Field(
        default="pinpipe", description="bucket of the sink's raw objects (and of the full stack's lake)"
    )
    kafka_port: int = Field(default=9092, description="port of the local Kafka broker")
    kafka_controller_port: int = Field(default=9093, description="port of the local broker's KRaft controller")
    kafka_partitions: int = Field(default=3, ge=1, description="partitions per topic")
    kafka_client: Literal["confluent-kafka", "kafka-python"] = Field(
        default="confluent-kafka",
        description="the Kafka client of the API's producer and the sink's consumer: librdkafka (confluent-kafka) "
        "or pure Python (kafka-python)",
    )
    ingest_engine: Literal["python", "spark"] = Field(
        default="python",
        description="what loads Kafka's records or the sink's objects into bronze: pinpipe's Python loader, or "
        "PySpark Structured Streaming (`make spark`; docs/spark-ingestion.md)",
    )
    spark_master: str = Field(
        default="local[*]", description="the Spark ingestion's master: local[N] in this process, or a cluster's URL"
    )
    spark_driver_memory: str = Field(
        default="4g", description="the Spark driver's heap, for the spark target and the Spark ingestion"
    )
    load_commit_records: int = Field(
        default=200_000, ge=1, description="records the loader appends per Delta commit, across objects and partitions"
    )
    sink_group: str = Field(default="pinpipe-s3-sink", description="the S3 sink's Kafka consumer group")
    api_port: int = Field(default=8080, description="port of the ingest API (`pinpipe api`)")
    api_workers: int = Field(default=2, ge=1, description="`pinpipe api` worker processes")
    api_key: SecretStr | None = Field(default=None, description="when set, requests must send it as X-API-Key")
    api_max_body_bytes: int = Field(default=5 * 1024 * 1024, description="larger request bodies get 413")
    api_max_record_bytes: int = Field(
        default=1_000_000,
        description="a record's key and value together, at most (Kafka's and librdkafka's default limit): larger "
        "ones get 422 before any record of the request is produced",
    )
    api_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="a connection must send a request's headers within this (from when it opens, or from its last "
        "answer): else 408 and closed",
    )
    api_body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="each part of a request's body must arrive within this: else 408 and closed"
    )
    api_idempotency_hours: float = Field(
        default=24.0, gt=0, description="how long the API remembers a committed request's Idempotency-Key"
    )
    api_idempotency_keys: int = Field(
        default=1_000_000, ge=1, description="at most this many Idempotency-Keys are remembered (the newest)"
    )
    post_give_up_seconds: float = Field(
        default=120.0, gt=0, description="the posting client sends a failed request again until this has passed"
    )
    api_open_paths: Names = Field(
        default=("/healthz", "/healthz/streams"), description="paths served without the API key when one is set"
    )
    topics: Names = Field(default=("pin", "geo", "user"), description="Kafka topics, one per raw table")
    kinesis_server: Literal["kinesis-mock", "kinesalite"] = Field(
        default="kinesalite",
        description="the local Kinesis `pinpipe services up` starts: kinesalite (unmaintained since 2020, but its "
        "cost per call stays flat as streams fill: it keeps up with real time) or kinesis-mock (maintained, what "
        "LocalStack runs; it saturates its core near 400 records/s)",
    )
    kinesis_port: int = Field(default=4568, description="the local Kinesis' plain HTTP port")
    kinesis_endpoint_url: str | None = Field(default=None, description="Kinesis endpoint; default the local Kinesis")
    kinesis_shards: int = Field(default=4, ge=1, description="shards per stream created by `pinpipe services up`")
    kinesis_persist: bool = Field(
        default=False,
        description="kinesis-mock keeps its streams across restarts (slower; kinesalite keeps them in memory only)",
    )
    stream_compact_seconds: float = Field(
        default=300,
        ge=0,
        description="the stream consumer compacts the bronze stream "
        "tables this often (0: never; `pinpipe compact` does it by hand)",
    )
    stream_retention_hours: int = Field(
        default=1,
        ge=0,
        description="time travel kept on the bronze stream tables: "
        "older replaced files and log entries are deleted when they are compacted",
    )
    streams: Names = Field(
        default=("streaming-pin", "streaming-geo", "streaming-user"),
        description="Kinesis streams created on start; a stream carries the raw table its name ends with",
    )
    source_url: str | None = Field(
        default=None,
        description="the source database `--source db` reads (a SQLAlchemy URL): default an SQLite file, "
        "<state dir>/source.db; postgresql+psycopg://pinpipe@127.0.0.1:5433/pinpipe is the PostgreSQL "
        "`pinpipe services up --with postgres` starts",
    )
    postgres_port: int = Field(default=5433, description="the PostgreSQL `pinpipe services up --with postgres` starts")
    warehouse_url: str | None = Field(
        default=None,
        description="the warehouse as a SQLAlchemy URL, for the UI and analysts' tools: default the DuckDB file "
        "(duckdb:///<warehouse>); databricks://token:<token>@<host>?http_path=<path>&catalog=<catalog> for Databricks",
    )
    ui_port: int = Field(default=8501, description="`pinpipe ui` serves the web UI here, on 127.0.0.1")
    ui_refresh_seconds: float = Field(default=5, gt=0, description="the UI's real-time page refreshes this often")
    # monitoring: Prometheus scrapes the running components; one-shot runs push to the Pushgateway
    prometheus_port: int = Field(default=9090, description="Prometheus, started by `pinpipe services up`")
    pushgateway_port: int = Field(default=9091, description="the Pushgateway, started by `pinpipe services up`")
    pushgateway_url: str | None = Field(
        default=None, description="where runs that end push their metrics; default the local Pushgateway"
    )
    scrape_interval_seconds: float = Field(default=15, gt=0, description="how often Prometheus scrapes each component")
    sink_metrics_port: int = Field(default=9101, ge=0, description="`pinpipe sink` serves /metrics here (0: off)")
    loader_metrics_port: int = Field(
        default=9102, ge=0, description="`pinpipe load --every` serves /metrics here (0: off)"
    )
    stream_metrics_port: int = Field(default=9103, ge=0, description="`pinpipe stream` serves /metrics here (0: off)")
    kafka_metrics_port: int = Field(default=9104, description="the Kafka broker's JMX exporter serves /metrics here")

    @field_validator("api_open_paths", "topics", "streams", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        # a variable holds `pin,geo,user` (as the configuration reference shows it) or a JSON list
        if not isinstance(value, str):
            return value
        wanted = "a comma-separated list such as a,b,c, or a JSON list"
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError(f"{wanted}: this JSON does not parse") from None
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError(f"{wanted}, not empty")
        return names

    @field_validator("duckdb_memory")
    @classmethod
    def _a_memory_size(cls, value: str) -> str:
        # DuckDB's own error for a bad size would come at the first query, as a parser error
        if not re.fullmatch(r"(?i)\d+(\.\d+)?\s*([KMGT]i?B|B|%)", value):
            raise ValueError("a size such as 3GB, 512MiB or 50% (of the machine's memory)")
        return value

    @field_validator("warehouse")
    @classmethod
    def _a_file_not_a_folder(cls, value: str) -> str:
        if Path(value).is_dir():
            raise ValueError(f"{value} is a folder: name the DuckDB file, such as {Path(value) / 'pinpipe.duckdb'}")
        return value

    def model_post_init(self, __context: object) -> None:
        if not self.lake.startswith("s3://"):
            self.lake = str(Path(self.lake).resolve())
        self.warehouse = str(Path(self.warehouse).resolve())
        self.spark_warehouse = str(Path(self.spark_warehouse).resolve())
        self.cache_dir = self.cache_dir.resolve()
        self.duckdb_extension_directory = self.duckdb_extension_directory.resolve()
        if self.duckdb_temp_directory is not None:
            self.duckdb_temp_directory = self.duckdb_temp_directory.resolve()

    def production_dbt_environment(self) -> dict[str, str]:
        """What a production run (`pinpipe run`, `transform`, the DAG) adds to dbt's environment:
        unit tests skipped, as dbt advises (they test the SQL against fixtures, not the day's data;
        `make test` and CI run them), unless ``run_unit_tests``."""
        return {} if self.run_unit_tests else dict(SKIP_UNIT_TESTS)

    def environment(self) -> dict[str, str]:
        """These settings as the ``PINPIPE_*`` variables that rebuild them in a child process."""
        values = self.model_dump(mode="json", exclude_none=True)
        values.update({name: value.get_secret_value() for name, value in self if isinstance(value, SecretStr)})
        return {
            variable(name): value if isinstance(value, str) else json.dumps(value) for name, value in values.items()
        }

    @property
    def duckdb_spill_directory(self) -> str:
        """Where DuckDB spills: the setting, else DuckDB's own default beside the warehouse file."""
        return str(self.duckdb_temp_directory) if self.duckdb_temp_directory else f"{self.warehouse}.tmp"

    @property
    def local_s3_endpoint_url(self) -> str:
        """The S3 server `pinpipe services` runs."""
        return f"http://127.0.0.1:{self.s3_port}"

    def with_local_s3(self) -> Settings:
        """These settings, with S3 at the local server of `pinpipe services` unless an endpoint is set."""
        return self if self.s3_endpoint_url else self.model_copy(update={"s3_endpoint_url": self.local_s3_endpoint_url})

    @property
    def embedded_source(self) -> Path:
        """The embedded SQLite source database's file."""
        return self.state_dir / "source.db"

    @property
    def source_database(self) -> str:
        """The source database's URL: the setting, else the embedded SQLite file."""
        return self.source_url or f"sqlite:///{self.embedded_source}"

    @property
    def local_postgres_url(self) -> str:
        """The PostgreSQL `pinpipe services up --with postgres` starts."""
        return f"postgresql+psycopg://pinpipe@127.0.0.1:{self.postgres_port}/pinpipe"

    @property
    def dbt_history_dir(self) -> Path:
        """Where the results of the last builds are kept (for the UI's pipeline page)."""
        return self.state_dir / "dbt-builds"

    @property
    def pushgateway_address(self) -> str:
        return self.pushgateway_url or f"http://127.0.0.1:{self.pushgateway_port}"

    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def kinesis_url(self) -> str:
        return self.kinesis_endpoint_url or f"http://127.0.0.1:{self.kinesis_port}"

    @property
    def topic_tables(self) -> dict[str, RawTable]:
        """Which raw table each Kafka topic carries (topics are given in pin, geo, user order)."""
        return dict(zip(self.topics, RAW_TABLES, strict=True))

    @property
    def stream_tables(self) -> dict[str, RawTable]:
        """The configured Kinesis streams and the raw table each carries."""
        return {stream: table for stream in self.streams if (table := stream_table(stream)) is not None}

    @property
    def storage_options(self) -> dict[str, str] | None:
        """delta-rs storage options for an ``s3://`` lake (None for a local one)."""
        if not self.lake.startswith("s3://"):
            return None
        options = {
            "AWS_REGION": self.s3_region,
            "AWS_ACCESS_KEY_ID": self.s3_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_access_key.get_secret_value(),
        }
        if self.s3_endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.s3_endpoint_url
            options["AWS_ALLOW_HTTP"] = str(self.s3_endpoint_url.startswith("http://")).lower()
        return options


def variable(name: str) -> str:
    """The environment variable of setting ``name``."""
    return f"PINPIPE_{name.upper()}"


# PINPIPE_* variables read elsewhere than here: by the DAG (its shape, its runs' options), by
# profiles.yml, by the CLI and by the failpoints of the kill tests
OTHER_VARIABLES = frozenset(
    {
        "PINPIPE_SCHEDULE",
        "PINPIPE_RETRIES",
        "PINPIPE_SOURCE",
        "PINPIPE_EMULATED_POSTS",
        "PINPIPE_ALERT_WEBHOOK_URL",
        "PINPIPE_SPARK_SNAPSHOT_PARTITIONS",
        "PINPIPE_DEBUG",
        failpoints.ENVIRONMENT_VARIABLE,
    }
)


def unknown_variables(environment: Mapping[str, str]) -> list[str]:
    """The ``PINPIPE_*`` variables of ``environment`` nothing reads: a setting's old name, a typo."""
    known = {variable(name) for name in Settings.model_fields} | OTHER_VARIABLES
    return sorted(name for name in environment if name.startswith("PINPIPE_") and name not in known)


def _shown(value: object) -> str:
    """A setting's value as text: a tuple as its comma list, a ``SecretStr`` as stars, None as nothing."""
    if value is None:
        return ""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


class DescribedSetting(NamedTuple):
    name: str
    variable: str
    value: str
    origin: str  # option, environment or default
    description: str


_PASSWORD_IN_URL = re.compile(r"(://[^:/@]+:)[^@]+@")


def described_settings(settings: Settings, from_options: set[str]) -> list[DescribedSetting]:
    """Every setting: its ``PINPIPE_*`` variable, its value (secrets and the passwords of URLs masked)
    and where it came from (``from_options``: those given as command-line options)."""
    rows = []
    for name, field in Settings.model_fields.items():
        shown = _PASSWORD_IN_URL.sub(r"\1***@", _shown(getattr(settings, name)))
        origin = "option" if name in from_options else "environment" if variable(name) in os.environ else "default"
        rows.append(DescribedSetting(name, variable(name), shown, origin, field.description or ""))
    return rows


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "derived (see its meaning)"
    if field.default is None:
        return "unset"
    if isinstance(field.default, SecretStr):
        return "the local server's"
    return _shown(field.default).replace(str(PROJECT_DIR), ".")


def configuration_reference() -> str:
    """docs/configuration.md, made from ``Settings`` (`pinpipe settings --reference` prints it)."""
    rows = "\n".join(
        f"| `{variable(name)}` | `{_default_text(name)}` | {(field.description or '').replace('|', '/')} |"
        for name, field in Settings.model_fields.items()
    )
    return f"""# Configuration

<!-- made by `pinpipe settings --reference > docs/configuration.md`; a test holds it up to date -->

One settings object (`ingestion/config.py`): every setting is a `PINPIPE_*` environment variable;
`--lake`, `--warehouse` and `--target` are also options, before or after the command, and win.
`pinpipe settings` prints each setting's value now and where it came from (secrets masked).
Paths are relative to the repository (`.`). Back to the [README](../README.md).

| variable | default | meaning |
|---|---|---|
{rows}

`profiles.yml` (in the repository) reads the same variables, so plain dbt sees what the CLI sees.
Plain dbt writes into the warehouse file in place, so a failed run leaves the tables it built
beside older ones; `pinpipe transform` builds a copy and swaps it in whole:

```bash
. .venv/bin/activate
export PINPIPE_LAKE=$PWD/lake PINPIPE_WAREHOUSE=$PWD/warehouse/pinpipe.duckdb
dbt build --profiles-dir .                  # everything, unit tests included (production runs skip them)
dbt source freshness --profiles-dir .       # bronze freshness on _ingested_at
```
"""
