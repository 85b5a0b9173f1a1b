"""Spark for the tests: a Java runtime from Debian and pyspark from PyPI, installed if missing.

- **Java**: Spark 4.0 runs on Java 17 or 21. Without one on ``PATH`` (or in
  ``JAVA_HOME``), Debian's ``openjdk-17-jre-headless`` is installed with apt-get (or
  ``openjdk-21-jre-headless`` where Debian offers no 17), when running as root.
- **pyspark**: the ``spark`` extra of pyproject.toml (one pin, shared with
  ``pip install 'beanbill[spark]'``), installed into this interpreter's environment when
  the installed pyspark is missing or another version.

``python -m tests.peers.spark`` installs both (``make test`` runs it before the suite); a
second run only checks, in well under a second. ``problem()`` says why Spark still cannot
run, and tests/test_spark.py skips with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / ".peers" / "spark.lock"
JAVA_PACKAGES = ("openjdk-17-jre-headless", "openjdk-21-jre-headless")
MINIMUM_JAVA_MAJOR = 17
INSTALL_SECONDS = 900
JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def requirements() -> list[str]:
    """The ``spark`` extra of pyproject.toml: what ``beanbill[spark]`` installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["spark"])


def missing_packages() -> list[str]:
    """The requirements of the ``spark`` extra not satisfied in this environment."""
    missing = []
    for text in requirements():
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def java_executable() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    return shutil.which("java")


def java_major() -> int | None:
    """The major version of the Java runtime Spark would start (None: there is none)."""
    java = java_executable()
    if java is None:
        return None
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = JAVA_VERSION.search(result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def problem() -> str | None:
    """Why Spark cannot run the tests here, or None."""
    major = java_major()
    if major is None:
        return f"no Java runtime (Debian: apt-get install {JAVA_PACKAGES[0]})"
    if major < MINIMUM_JAVA_MAJOR:
        return f"Java {major} is too old for Spark 4 (needs {MINIMUM_JAVA_MAJOR} or later)"
    missing = missing_packages()
    if missing:
        return f"not installed: {', '.join(missing)} (pip install 'beanbill[spark]')"
    return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One installer at a time (parallel test runs share the environment)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def _offered(package: str) -> bool:
    """Whether apt has a version of ``package`` to install."""
    result = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, timeout=60
    )
    return "Candidate:" in result.stdout and "Candidate: (none)" not in result.stdout


def install_java() -> None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError("no Java runtime, and apt-get as root is not available to install one")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "update", "-qq"], capture_output=True, timeout=INSTALL_SECONDS, env=environment
    )
    offered = [package for package in JAVA_PACKAGES if _offered(package)]
    if not offered:
        raise RuntimeError(f"apt offers none of {', '.join(JAVA_PACKAGES)}")
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", offered[0]])


def install() -> None:
    """Java and pyspark, each only if missing."""
    with _locked():
        major = java_major()
        if major is None or major < MINIMUM_JAVA_MAJOR:
            install_java()
        missing = missing_packages()
        if missing:
            _run([sys.executable, "-m", "pip", "install", "--quiet", *missing])
            importlib.invalidate_caches()


if __name__ == "__main__":  # `make test` installs Spark before the suite runs
    started = time.monotonic()
    install()
    reason = problem()
    if reason is not None:
        raise SystemExit(f"Spark is not usable: {reason}")
    elapsed = time.monotonic() - started
    print(f"Spark ready: Java {java_major()}, {', '.join(requirements())} ({elapsed:.1f} s)")
