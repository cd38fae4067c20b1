"""A local server as a process of its own: started, watched through its pid file, stopped;
free ports and the checks that a server answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from ingestion.errors import PinpipeError


class ServiceError(PinpipeError):
    """A local service could not be fetched, built or started: the message says why and where its log is."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    address: str
    pid: int | None
    log: Path


def port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nobody listens on now (on any interface)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        # a service started by this very process must be reaped, or it lingers as a zombie
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class ManagedProcess:
    """A long-running process with a pid file and a log under ``state_dir/name``."""

    name: str
    state_dir: Path
    host: str
    port: int

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def log(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def _pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> ServiceStatus:
        running = port_open(self.host, self.port)
        return ServiceStatus(self.name, running, f"{self.host}:{self.port}", self.pid(), self.log)

    def start(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self._pid_file.write_text(str(process.pid))

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceError(f"{self.name} exited during start-up; see {self.log}")
            if ready():
                return
            time.sleep(0.2)
        raise ServiceError(f"{self.name} not ready on {self.host}:{self.port} after {timeout:.0f} s; see {self.log}")

    def stop(self, timeout: float = 20) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self._pid_file.unlink(missing_ok=True)
        # the port is released a moment after the process is gone: `up` right after must see it closed
        while port_open(self.host, self.port) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def http_ok(url: str, method: str = "GET") -> bool:
    try:
        return requests.request(method, url, timeout=10).ok
    except requests.RequestException:
        return False
