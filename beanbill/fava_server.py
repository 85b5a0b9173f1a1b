"""``beanbill fava``: Fava in this process, opening the books through Beancount's cache.

Stock Fava always loads a ledger from its text (``fava.core`` calls Beancount's
``loader._load``, never the pickle cache that ``bean-check`` reads and writes): its
first page of a year of 1,000 organizations takes about 34 s. Loaded from a valid
cache, with Python's cyclic garbage collector paused, the same first page takes about
7 s from the start of ``beanbill fava``; without a valid cache about as long as stock
Fava, and the cache is written for the next start (bench/bench_fava.py). So ``beanbill
fava`` builds Fava's own application (``fava.application.create_app``, read-only) and
replaces one thing: the function Fava loads this ledger with. Every other ledger a
process may open in Fava is loaded as Fava loads it.

Fava still watches the included files and reloads when beanbill appends; the cache is
valid only while every included file keeps the modification time and size it had when
the cache was written, so a reload after an append reads the text (and writes the cache
again for the next reader).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fava.core
from fava.application import create_app
from fava.beans.load import load_uncached as fava_load_uncached

from beanbill.ledger.books import collector_paused, load_through_cache
from beanbill.rating.errors import WorkspaceError

if TYPE_CHECKING:
    from flask import Flask

HOST = "127.0.0.1"  # never another interface: the books are not for the network

_served: set[str] = set()  # main files loaded through the cache, by absolute path
_served_lock = threading.Lock()


def _load_for_fava(beancount_file_path: str, *, is_encrypted: bool) -> Any:
    """Fava's loader, through Beancount's cache for the ledgers ``beanbill fava`` serves.

    After the load, every object alive is moved out of the collector's sight
    (``gc.freeze``): Fava's own work on the entries that follows, and every request
    after it, then never walks the ledger's millions of objects again. A loaded ledger
    holds no reference cycles, so nothing frozen needs the collector to be freed.
    """
    path = os.path.abspath(beancount_file_path)
    with _served_lock:
        served = path in _served
    if is_encrypted or not served:
        return fava_load_uncached(beancount_file_path, is_encrypted=is_encrypted)
    result = load_through_cache(Path(path))
    gc.freeze()
    return result


def _route_through_cache(ledger_path: Path) -> None:
    """Make Fava load ``ledger_path`` with ``_load_for_fava`` (once per process).

    ``fava.core.FavaLedger.load_file`` calls the module's ``load_uncached``; replacing
    that one name is the smallest change that reaches both the first load and every
    reload, and it leaves any other ledger to Fava's own loader.
    """
    with _served_lock:
        _served.add(os.path.abspath(ledger_path))
        # fava.core imports the name without re-exporting it, hence the ignores.
        if fava.core.load_uncached is not _load_for_fava:  # type: ignore[attr-defined]
            fava.core.load_uncached = _load_for_fava  # type: ignore[attr-defined]


def fava_application(ledger_path: Path) -> Flask:
    """Fava's application for the ledger: read-only, its loads through the cache.

    The ledger is loaded at the first request (as Fava does), or earlier by
    ``start_loading``.
    """
    _route_through_cache(ledger_path)
    return create_app([str(ledger_path)], read_only=True)


def start_loading(application: Flask) -> threading.Thread:
    """Load the ledger in the background now, while the server already listens.

    The accountant's first page then waits only for what is left of the load, not for
    all of it after the browser asks; a request that comes first waits for this load
    (Fava loads its ledgers under a lock), it does not start another one. The collector
    stays paused for the whole of Fava's first load, its own indexing of the entries
    included (about 10 % faster than pausing it for Beancount's part alone), and then
    everything loaded is frozen out of its sight.
    """
    ledgers = application.config["LEDGERS"]

    def load() -> None:
        try:
            with collector_paused():
                ledgers.ledgers  # noqa: B018  (the property loads them)
        except Exception:
            return  # the first request loads again, and Fava's page shows what failed
        gc.freeze()

    thread = threading.Thread(target=load, name="fava-load", daemon=True)
    thread.start()
    return thread


def serve(ledger_path: Path, port: int, listening: Callable[[], None] = lambda: None) -> None:
    """Serve Fava on 127.0.0.1:``port`` until interrupted (as the ``fava`` command does).

    ``listening`` is called once the port is bound (to say where to browse); a missing
    ledger or a port already taken is a ``WorkspaceError`` (exit 2, one line).
    """
    from cheroot.wsgi import Server  # Fava's own server, the one its command uses

    if not ledger_path.is_file():  # Fava would serve an error page; say it here instead
        raise WorkspaceError(f"{ledger_path}: no ledger to browse (`beanbill init` writes one)")
    application = fava_application(ledger_path)
    server = Server((HOST, port), application)
    try:
        server.prepare()
    except OSError as error:
        raise WorkspaceError(
            f"cannot listen on {HOST}:{port} ({error}): give another port with --port"
        ) from error
    start_loading(application)
    listening()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
