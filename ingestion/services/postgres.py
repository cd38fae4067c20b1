"""PostgreSQL as a source database (Debian's package, run as the postgres user when root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ingestion.config import Settings
from ingestion.services.process import ManagedProcess, ServiceError, port_open


class PostgresServer:
    """PostgreSQL (Debian's ``postgresql`` package) as the source database: a cluster of its own
    under the state dir, on 127.0.0.1, with a superuser and a database both named ``pinpipe`` and
    trust authentication (loopback only: a local development source). Run as the ``postgres`` user
    when this is root, since PostgreSQL refuses to run as root."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess("postgres", settings.state_dir, "127.0.0.1", settings.postgres_port)

    @property
    def data(self) -> Path:
        return self.process.home / "data"

    @staticmethod
    def _program(name: str) -> str:
        installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))  # Debian's layout, newest last
        found = shutil.which(name) or (str(installed[-1]) if installed else None)
        if found is None:
            raise ServiceError("PostgreSQL is not installed: `apt-get install postgresql` (Debian, Ubuntu) adds it")
        return found

    @staticmethod
    def _as_owner(command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def up(self) -> None:
        if not self.process.status().running:
            self.process.home.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.process.home, "postgres", "postgres")
                reach = subprocess.run(self._as_owner(["test", "-w", str(self.process.home)]), check=False)
                if reach.returncode != 0:
                    raise ServiceError(
                        f"PostgreSQL runs as the postgres user, who cannot reach {self.process.home}: let it "
                        "through the folders above it (chmod o+x), or set PINPIPE_STATE_DIR elsewhere"
                    )
            if not (self.data / "PG_VERSION").exists():
                initdb = [self._program("initdb"), "-D", str(self.data), "-U", "pinpipe", "--auth=trust"]
                made = subprocess.run(
                    self._as_owner([*initdb, "-E", "UTF8", "--locale=C"]), capture_output=True, text=True
                )
                if made.returncode != 0:
                    raise ServiceError(f"initdb failed: {made.stderr.strip().splitlines()[-1]}")
            self.process.start(
                self._as_owner(
                    [
                        self._program("postgres"),
                        "-D",
                        str(self.data),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-p",
                        str(self.settings.postgres_port),
                        "-k",
                        str(self.process.home),  # its socket beside its data, not in /var/run
                    ]
                )
            )
            self.process.wait_ready(self._answers, timeout=60)
        self._ensure_database()

    def _engine(self, database: str) -> Any:
        import sqlalchemy

        url = sqlalchemy.make_url(self.settings.local_postgres_url).set(database=database)
        return sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)

    def _answers(self) -> bool:
        import sqlalchemy

        if not port_open("127.0.0.1", self.settings.postgres_port):
            return False
        try:
            with self._engine("postgres").connect():
                return True
        except sqlalchemy.exc.OperationalError:  # starting up, or recovering
            return False

    def _ensure_database(self) -> None:
        import sqlalchemy

        with self._engine("postgres").connect() as connection:
            found = connection.execute(sqlalchemy.text("select 1 from pg_database where datname = 'pinpipe'")).first()
            if found is None:
                connection.execute(sqlalchemy.text("create database pinpipe"))

    def down(self) -> None:
        if self.process.pid() is not None:
            # a fast shutdown: SIGTERM alone waits for every client to disconnect
            stop = [self._program("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
            subprocess.run(self._as_owner(stop), capture_output=True, check=False, timeout=60)
        self.process.stop()
