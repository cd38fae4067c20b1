"""Fetching what a server needs, once, into the cache: Go binaries, Maven classpaths, npm packages;
Debian packages are found on PATH. Builds into the cache take turns across processes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from ingestion.services.process import ServiceError


@contextmanager
def cache_building(cache_dir: Path, what: str) -> Iterator[None]:
    """One process at a time builds ``what`` into the cache (two `services up`, or test workers, at
    once): the next one waits, then finds it built."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(cache_dir / f".{what}.lock"):
        yield


def go_binary(cache_dir: Path, module: str, version: str) -> Path:
    """``go install module@version`` once into the cache; later calls reuse the binary."""
    name = module.rsplit("/", 1)[-1]
    with cache_building(cache_dir, f"go-{name}"):
        return _go_install(cache_dir, module, version, name)


def _go_install(cache_dir: Path, module: str, version: str, name: str) -> Path:
    binary = cache_dir / "go" / f"{name}-{version}"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise ServiceError(f"building {name} needs Go (https://go.dev/dl) on PATH")
    build_dir = cache_dir / "go" / f"build-{name}-{version}"
    # the module and build caches live in the project's cache too, never in ~/go or ~/.cache/go-build
    go_env = {
        "GOBIN": str(build_dir),
        "GOPATH": str(cache_dir / "go" / "path"),
        "GOCACHE": str(cache_dir / "go" / "build-cache"),
        "GOFLAGS": "-modcacherw",
    }
    built = subprocess.run(
        ["go", "install", f"{module}@{version}"], env={**os.environ, **go_env}, capture_output=True, text=True
    )
    if built.returncode != 0:  # its "go: downloading" lines only when something went wrong
        raise ServiceError(f"go install {module}@{version} failed: {built.stderr.strip()[-2000:]}")
    (build_dir / name).rename(binary)
    shutil.rmtree(build_dir, ignore_errors=True)
    return binary


def maven_classpath(cache_dir: Path, pom: Path) -> Path:
    """The runtime jars of ``pom`` copied from Maven Central into the cache once; reused after."""
    with cache_building(cache_dir, f"maven-{pom.parent.name}"):
        return _maven_copy_dependencies(cache_dir, pom)


def _maven_copy_dependencies(cache_dir: Path, pom: Path) -> Path:
    found = re.search(r"<artifactId>kafka_2.13</artifactId>\s*<version>([^<]+)</version>", pom.read_text())
    if found is None:
        raise ServiceError(f"{pom} names no kafka_2.13 version")
    version = found.group(1)
    libs = cache_dir / "kafka" / version / "libs"
    # resolved again when the pom changed (a dependency added), not only when the version did
    wanted = hashlib.sha256(pom.read_bytes()).hexdigest()
    complete = libs / ".complete"
    if complete.exists() and complete.read_text() == wanted:
        return libs
    if shutil.which("mvn") is None:
        raise ServiceError("resolving the Kafka broker's jars needs Maven (mvn) and Java 17+ on PATH")
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-Dmaven.repo.local={cache_dir / 'm2'}",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    complete.write_text(wanted)
    return libs


def npm_package(cache_dir: Path, package: str, version: str) -> Path:
    """``npm install package@version`` once into the cache; later calls reuse it. Returns its folder."""
    with cache_building(cache_dir, f"npm-{package}"):
        return _npm_install(cache_dir, package, version)


def _npm_install(cache_dir: Path, package: str, version: str) -> Path:
    prefix = cache_dir / "npm" / f"{package}-{version}"
    folder = prefix / "node_modules" / package
    if (prefix / ".complete").exists():
        return folder
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise ServiceError(f"installing {package} needs Node.js 18+ and npm on PATH")
    subprocess.run(
        [
            "npm",
            "install",
            "--no-save",
            "--omit=optional",
            "--cache",
            str(cache_dir / "npm" / "_cache"),
            "--prefix",
            str(prefix),
            f"{package}@{version}",
        ],
        check=True,
        capture_output=True,
    )
    (prefix / ".complete").touch()
    return folder
