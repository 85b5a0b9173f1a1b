"""Stoplight Prism serving our own OpenAPI document of a peer, for contract tests without an
account at the peer (HubSpot, first).

- **Install**: ``npm install`` of the pinned ``@stoplight/prism-cli`` into its own folder
  ``.peers/prism-<key>/`` in the repository (ignored by git), never globally: Node's
  packages are not beanbill's. ``<key>`` hashes the pin and Node's major version, so
  changing either installs a new peer. One installer at a time (a file lock); ``python -m
  tests.peers.prism`` installs it before the suite runs (``make test``).
- **Per use**: ``running_prism(document)`` starts ``prism mock`` on a free 127.0.0.1 port
  with ``--errors`` (a request the document does not allow is answered 422 and flagged,
  never answered as if valid), waits until it answers, and stops it by its PID.

Prism keeps no state: each answer is one of the document's examples (the first, or the one
a request asks for with ``Prefer: code=…, example=…``), whatever was sent before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from beanbill.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / ".peers"
PACKAGE = "@stoplight/prism-cli"
# 5.14.2 is the last 5.x that runs on Node 20 (5.15 asks for Node >= 24).
VERSION = "5.14.2"
INSTALL_SECONDS = 600
START_SECONDS = 60.0
STOP_SECONDS = 10.0
PROBE_SECONDS = 1.0
POLL_SECONDS = 0.1
LOG_TAIL_CHARACTERS = 3000


def _node_major() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Prism needs Node.js (node and npm on PATH)")
    result = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    return result.stdout.strip().lstrip("v").split(".")[0]


def cache_key() -> str:
    digest = hashlib.sha256(f"{PACKAGE}@{VERSION} node {_node_major()}".encode())
    return digest.hexdigest()[:16]


def home() -> Path:
    return PEERS / f"prism-{cache_key()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time (parallel test runs share the peer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def installed() -> Path:
    """The ``prism`` executable, installing it on first use."""
    folder = home()
    executable = folder / "node_modules" / ".bin" / "prism"
    stamp = folder / "installed"
    with _locked(folder.with_suffix(".lock")):
        if not stamp.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("Prism needs npm on PATH")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            command = [
                npm, "install", "--prefix", str(folder), "--save-exact", "--no-audit",
                "--no-fund", "--no-update-notifier", "--loglevel=error", f"{PACKAGE}@{VERSION}",
            ]  # fmt: skip
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_SECONDS, cwd=folder
            )
            if result.returncode != 0 or not executable.exists():
                raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
            stamp.write_text(f"{PACKAGE}@{VERSION}\n")
    return executable


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Prism answers once it has read the document; any HTTP answer will do (the probe's
    path is in no document, so Prism answers 404)."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-LOG_TAIL_CHARACTERS:]
            raise RuntimeError(f"prism exited {process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{url}/__prism_probe__", timeout=PROBE_SECONDS)
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"prism did not answer within {START_SECONDS} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_SECONDS)


@contextlib.contextmanager
def running_prism(document: Path, log: Path, errors: bool = True) -> Iterator[str]:
    """``prism mock document`` on a free loopback port, yielding its base URL; its output
    goes to ``log``; stopped by its PID. ``errors``: a request the document does not allow
    is refused (422) instead of answered with a warning header."""
    executable = installed()
    port = free_port()
    command = [str(executable), "mock", str(document), "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    if errors:
        command.append("--errors")
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment,
            cwd=executable.parents[2],
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        _stop(process)


if __name__ == "__main__":  # `make test` installs the peer before the suite runs
    started = time.monotonic()
    path = installed()
    print(f"Prism peer ready: {path} ({time.monotonic() - started:.1f} s)")
