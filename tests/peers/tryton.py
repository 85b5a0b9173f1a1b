"""A real Tryton 8.0 for the ERP connector's tests: installed, set up once, one server per test.

- **Install**: the pinned wheels (``tryton_requirements.txt``) go into their own virtual
  environment under ``.peers/tryton-<key>/`` in the repository (ignored by git), never into
  beanbill's: Tryton's dependencies are not beanbill's. ``<key>`` hashes the pins, the
  setup script and the Python version, so changing any of them builds a new peer.
- **Template database**: ``trytond-admin`` activates ``account_invoice`` in an SQLite file,
  then ``tryton_setup.py`` (run by the peer's Python) adds the company, chart of accounts,
  fiscal years, taxes and payment methods. Built once (~20 s), kept on disk.
- **Per test**: the template is copied into the test's folder, ``trytond`` serves it on a
  free 127.0.0.1 port (its pool loaded at start: ``TRYTOND_DATABASE_NAMES``), and is
  stopped by its PID. The task queue stays off (SQLite has no worker).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from beanbill.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / ".peers"
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "tryton_requirements.txt"
SETUP = HERE / "tryton_setup.py"
TEMPLATE = "template"
DATABASE = "beanbill"
USER = "admin"
PASSWORD = "tryton-test-password"  # a throwaway peer's: given to beanbill through the env
PASSWORD_ENV = "TRYTON_PASSWORD"
START_SECONDS = 30.0
STOP_SECONDS = 10.0
INSTALL_SECONDS = 600
# ``[sync.tryton]`` for the template's chart (tryton_setup.py makes these names).
MAPPING: dict[str, Any] = {
    "user": USER,
    "password_env": PASSWORD_ENV,
    "database": DATABASE,
    "revenue_accounts": {"Compute": "7061", "Storage": "7062"},
    "default_revenue_account": "7068",
    "prepaid_account": "7069",
    "taxes": [
        {"category": "S", "rate_percent": "20", "tax": "VAT 20%"},
        {"category": "S", "rate_percent": "19", "tax": "VAT 19%"},
        {"category": "AE", "rate_percent": "0", "tax": "VAT reverse charge 0%"},
        {"category": "O", "rate_percent": "0"},
    ],
    "payment_method": "Stripe",
}


def cache_key() -> str:
    digest = hashlib.sha256()
    digest.update(REQUIREMENTS.read_bytes())
    digest.update(SETUP.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


def home() -> Path:
    return PEERS / f"tryton-{cache_key()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (parallel test runs share the peer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], environment: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=INSTALL_SECONDS
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def _environment(folder: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TRYTON", "PYTHON"))}
    return {
        **keep,
        "TRYTOND_DATABASE__URI": "sqlite://",
        "TRYTOND_DATABASE__PATH": str(folder),
        **extra,
    }


def is_built() -> bool:
    """Whether the peer and its template are on disk (the demo uses it only then)."""
    return (home() / "installed").exists() and (home() / "template" / "ready").exists()


def installed() -> Path:
    """The peer's bin folder, installing it on first use."""
    bin_folder = home() / "venv" / "bin"
    stamp = home() / "installed"
    with _locked(home().with_suffix(".lock")):
        if not stamp.exists():
            shutil.rmtree(home() / "venv", ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(home() / "venv")])
            _run([str(bin_folder / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)])
            stamp.write_text(REQUIREMENTS.read_text())
    return bin_folder


def template() -> Path:
    """The set-up template database file, built on first use."""
    bin_folder = installed()
    folder = home() / "template"
    database = folder / f"{TEMPLATE}.sqlite"
    stamp = folder / "ready"
    with _locked(home().with_suffix(".lock")):
        if not stamp.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            database.touch()  # trytond-admin initializes an existing SQLite file only
            password_file = folder / "password"
            password_file.write_text(PASSWORD)
            environment = _environment(folder, TRYTONPASSFILE=str(password_file))
            _run(
                [str(bin_folder / "trytond-admin"), "-d", TEMPLATE, "--all", "-u",
                 "account_invoice", "--activate-dependencies", "--email", "admin@example.com"],
                environment,
            )  # fmt: skip
            _run([str(bin_folder / "python"), str(SETUP), TEMPLATE], _environment(folder))
            password_file.unlink()
            stamp.touch()
    return database


@dataclass
class TrytonPeer:
    url: str  # the server's base URL (beanbill's ``[sync.tryton] url``)
    database: str
    folder: Path
    pid: int

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """``[sync.tryton]`` pointing at this peer."""
        return {**MAPPING, "url": self.url, "database": self.database, **overrides}


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    body = {"id": 0, "method": "common.server.version", "params": []}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"trytond exited {process.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(f"{url}/rpc/", json=body, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"trytond did not answer within {START_SECONDS} s")


@contextlib.contextmanager
def running_tryton(folder: Path, database: str = DATABASE) -> Iterator[TrytonPeer]:
    """A trytond serving a fresh copy of the template in ``folder``, stopped by its PID."""
    source = template()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / f"{database}.sqlite")
    port = free_port()
    log = folder / "trytond.log"
    environment = _environment(
        folder, TRYTOND_WEB__LISTEN=f"127.0.0.1:{port}", TRYTOND_DATABASE_NAMES=database
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(installed() / "trytond")], env=environment, stdout=output,
            stderr=subprocess.STDOUT, cwd=folder,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log)
        yield TrytonPeer(url, database, folder, process.pid)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_SECONDS)


if __name__ == "__main__":  # `make test` builds the peer before the suite runs
    print(f"Tryton peer ready: {template()}")
