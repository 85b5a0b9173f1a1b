"""A real PostgreSQL for the shared-state tests: Debian's server, a throwaway cluster.

- **Install**: Debian's ``postgresql`` package (``apt-get``, as root) when no server is
  found under ``/usr/lib/postgresql/*/bin``; ``python -m tests.peers.postgres`` does it
  before the suite (``make test``). Without root or apt, ``PostgresUnavailable`` says why
  and the tests skip with that reason.
- **Cluster**: one per test session, started on first use: ``initdb`` into a temporary
  folder owned by a non-root user (the server refuses to run as root: ``postgres``, made
  with ``useradd`` if the package did not), password authentication (SCRAM) on
  127.0.0.1 at a free port, durability off (``fsync``, ``synchronous_commit``: a
  throwaway cluster, and the tests are about concurrency, not disks). About two seconds.
- **Stopping**: a small watchdog process holds a pipe from the test process; when the
  pipe closes (the session ends, or the test process is killed), it stops the server
  (``pg_ctl stop -m immediate``) and deletes the folder: nothing is left running.
- **Per test**: a database of its own (``database()``), dropped afterwards with its
  connections.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from beanbill.ports import free_port
from beanbill.rating.config import StateSettings

SERVER_ROOT = Path("/usr/lib/postgresql")
OWNER = "postgres"  # Debian's package creates it; made here when missing
SUPERUSER = "beanbill_test"
PASSWORD = "throwaway-cluster-password"  # a throwaway cluster's: given to beanbill by env
PASSWORD_ENV = "BEANBILL_TEST_PG_PASSWORD"
INSTALL_SECONDS = 900
START_SECONDS = 60
STOP_SECONDS = 30
INSTALL_LOCK = Path(tempfile.gettempdir()) / "beanbill-postgres-install.lock"
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
"""
# Reads its stdin until the test process closes it (or dies), then stops the cluster.
WATCHDOG = """
import json, shutil, subprocess, sys
sys.stdin.buffer.read()
subprocess.run(json.loads(sys.argv[1]), capture_output=True, timeout=30)
shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be installed or started here (the tests skip, saying why)."""


def binaries() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = [
        folder
        for folder in SERVER_ROOT.glob("*/bin")
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists()
    ]
    found.sort(key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _is_root() -> bool:
    return os.geteuid() == 0


def install() -> Path:
    """The server's bin folder, installing Debian's ``postgresql`` first if it is missing."""
    found = binaries()
    if found is not None:
        return found
    if not _is_root() or shutil.which("apt-get") is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed and cannot be installed here (needs root and "
            "apt-get): `apt-get install postgresql`, then run the tests again"
        )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs install once
        if binaries() is None:
            for command in (
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "postgresql"],
            ):
                result = subprocess.run(
                    command, capture_output=True, text=True, env=environment,
                    timeout=INSTALL_SECONDS,
                )  # fmt: skip
                if result.returncode != 0:
                    raise PostgresUnavailable(
                        f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}"
                    )
    found = binaries()
    if found is None:
        raise PostgresUnavailable(f"postgresql installed, but no server under {SERVER_ROOT}")
    return found


def _owner() -> str | None:
    """The user the server runs as when the tests run as root (None: the current user)."""
    if not _is_root():
        return None
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OWNER],
            check=True, capture_output=True,
        )  # fmt: skip
    return OWNER


def _as_owner(owner: str | None, command: list[str]) -> list[str]:
    return command if owner is None else ["runuser", "-u", owner, "--", *command]


@dataclass
class PostgresPeer:
    host: str
    port: int
    folder: Path
    watchdog: subprocess.Popen[bytes]
    names: itertools.count[int]

    def url(self, database: str) -> str:
        """``[state] url`` for ``database``: no password in it (``PASSWORD_ENV`` has it)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres"), password=PASSWORD, autocommit=True)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test, dropped afterwards (with its connections)."""
        name = f"test_{os.getpid()}_{next(self.names)}"
        with self.admin() as connection:
            connection.execute(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            with self.admin() as connection:
                connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Close the watchdog's pipe: it stops the server and deletes the folder."""
        if self.watchdog.stdin is not None and not self.watchdog.stdin.closed:
            self.watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.watchdog.wait(STOP_SECONDS)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=START_SECONDS)
    if result.returncode != 0:
        raise PostgresUnavailable(f"{what} failed: {(result.stdout + result.stderr)[-1500:]}")


def start() -> PostgresPeer:
    """A new cluster in a temporary folder, serving on 127.0.0.1; stopped by ``stop()`` or
    when this process ends, however it ends."""
    bin_folder = install()
    owner = _owner()
    folder = Path(tempfile.mkdtemp(prefix="beanbill-pg-"))
    data = folder / "data"
    password_file = folder / "password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    if owner is not None:
        account = pwd.getpwnam(owner)
        for path in (folder, password_file):
            os.chown(path, account.pw_uid, account.pw_gid)
    pg_ctl = str(bin_folder / "pg_ctl")
    stop_command = _as_owner(owner, [pg_ctl, "stop", "-D", str(data), "-m", "immediate"])
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, json.dumps(stop_command), str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the tests reaches it only as the pipe closing
    )  # fmt: skip
    port = free_port()
    peer = PostgresPeer("127.0.0.1", port, folder, watchdog, itertools.count(1))
    try:
        _run(
            _as_owner(owner, [
                str(bin_folder / "initdb"), "-D", str(data), "-U", SUPERUSER,
                f"--pwfile={password_file}", "-A", "scram-sha-256", "-E", "UTF8",
                "--locale=C", "--no-sync",
            ]),
            "initdb",
        )  # fmt: skip
        with (data / "postgresql.conf").open("a") as settings:
            settings.write(SETTINGS.format(port=port, folder=folder))
        log = folder / "server.log"
        _run(
            _as_owner(owner, [pg_ctl, "start", "-D", str(data), "-l", str(log), "-w",
                              "-t", str(START_SECONDS)]),
            "pg_ctl start",
        )  # fmt: skip
    except BaseException:
        peer.stop()
        raise
    return peer


_shared: PostgresPeer | None = None
_shared_problem: str | None = None
_shared_lock = threading.Lock()


def shared() -> PostgresPeer:
    """The session's cluster, started on first use and stopped when the process ends."""
    global _shared, _shared_problem
    with _shared_lock:
        if _shared_problem is not None:
            raise PostgresUnavailable(_shared_problem)
        if _shared is None:
            try:
                _shared = start()
            except PostgresUnavailable as problem:
                _shared_problem = str(problem)
                raise
            atexit.register(_shared.stop)
        return _shared


BACKENDS = ("sqlite", "postgres")  # what the shared state tests run against


@contextlib.contextmanager
def backend_settings(backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateSettings]:
    """``[state]`` for one test: SQLite (the default), or a new database of the session's
    cluster with its password in ``PASSWORD_ENV`` (the test skips, saying why, when no
    PostgreSQL can be had)."""
    if backend == "sqlite":
        yield StateSettings()
        return
    try:
        peer = shared()
    except PostgresUnavailable as problem:
        pytest.skip(str(problem))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with peer.database() as url:
        yield StateSettings(url=url, password_env=PASSWORD_ENV)


if __name__ == "__main__":  # `make test`: install the server, check a cluster starts
    try:
        peer = start()
    except PostgresUnavailable as problem:
        print(f"note: {problem}; the PostgreSQL tests will be skipped")
        sys.exit(0)
    with peer.database() as url:
        print(f"PostgreSQL peer ready: {binaries()} ({url})")
    peer.stop()
