"""The S3 server (versitygw, built from its Go module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingestion.clients import s3_client
from ingestion.config import Settings
from ingestion.services.fetch import go_binary
from ingestion.services.process import ManagedProcess, port_open

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"


def versitygw_binary(cache_dir: Path) -> Path:
    """versitygw, built with the Go toolchain into the cache once."""
    return go_binary(cache_dir, VERSITYGW_MODULE, VERSITYGW_VERSION)


class S3Server:
    """versitygw, an S3-compatible gateway over a local directory (posix backend)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("s3", settings.state_dir, "127.0.0.1", settings.s3_port)

    @property
    def endpoint_url(self) -> str:
        return self.settings.local_s3_endpoint_url

    def client(self) -> Any:
        return s3_client(self.settings.model_copy(update={"s3_endpoint_url": self.endpoint_url}))

    def up(self) -> None:
        if not self.process.status().running:
            binary = versitygw_binary(self.settings.cache_dir)
            data = self.process.home / "data"
            data.mkdir(parents=True, exist_ok=True)
            self.process.start(
                [str(binary), "--port", f"127.0.0.1:{self.settings.s3_port}", "posix", str(data)],
                env={
                    "ROOT_ACCESS_KEY": self.settings.s3_access_key_id,
                    "ROOT_SECRET_KEY": self.settings.s3_secret_access_key.get_secret_value(),
                },
            )
            self.process.wait_ready(self._answers, timeout=30)
        self.ensure_bucket(self.settings.s3_bucket)

    def _answers(self) -> bool:
        if not port_open("127.0.0.1", self.settings.s3_port):
            return False
        self.client().list_buckets()
        return True

    def ensure_bucket(self, bucket: str) -> None:
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)

    def down(self) -> None:
        self.process.stop()
