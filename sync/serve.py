"""`beanbill serve`: receive payment webhooks, keep them durably, post them with one writer.

A request is answered only after its event is in the inbox (SQLite fsync'd, or
PostgreSQL committed): a 2xx means it is kept, whatever happens next. Events arriving
together share one transaction (group commit, ``rating.group_commit``). Bad or stale
signatures get a 400 and change nothing.
Request handlers never touch the ledger; one writer thread drains the inbox in bounded
batches (woken by each new event, and every few seconds regardless), so a crash of the
server loses nothing: on restart the writer finds what was kept and not yet posted.

Each post makes Beancount's cache of the books stale (the accountant's ``beanbill fava``
and ``bean-check`` open a year in seconds only from a valid cache). Once the inbox has
been quiet for a while after a post, the writer checks the books as the nightly run does,
which writes the cache again: the next morning's first page is fast although payments
came in overnight.

With ``rate_open_every_seconds`` the server also rates the open periods provisionally
(``beanbill rate --open``) on that schedule, so the customer API's usage and forecast
stay fresh between nightly runs; provisional figures are never posted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TextIO

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from beanbill.ledger.books import ledger_errors
from beanbill.rating.errors import BeanbillError
from beanbill.rating.group_commit import AsyncGroupCommit
from beanbill.rating.provisional import local_today, provisional_dir, rate_open
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import Connector, WebhookRejected
from beanbill.sync.payments import MAX_EVENTS_PER_BATCH, apply_events
from beanbill.sync.state import NewEvent, SyncState, SyncStateError, payload_text

MAX_BODY_BYTES = 1_000_000
MAX_EVENTS_PER_COMMIT = 256
IDLE_WAKE_SECONDS = 5.0
COALESCE_SECONDS = 0.25
WRITER_LOCK_FILE = "inbox-writer.lock"
ERROR_PAUSE_SECONDS = 2.0
# Quiet time after the last post before the books' cache is written again: long enough
# that a burst of payments is one rewrite (a year's cache takes about 30 s to write).
WARM_AFTER_QUIET_SECONDS = 300.0
logger = logging.getLogger("beanbill.serve")


class InboxWriter:
    """The single ledger writer of the server: drains the inbox until stopped."""

    def __init__(
        self,
        workspace: Workspace,
        connectors: list[Connector],
        state: SyncState,
        warm_after_seconds: float = WARM_AFTER_QUIET_SECONDS,
    ):
        self.workspace = workspace
        self.connectors = connectors
        self.state = state
        self.warm_after_seconds = warm_after_seconds
        self.last_post_monotonic_seconds: float | None = None  # a post the cache lacks
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="beanbill-ledger-writer")
        self.lock_path = workspace.state_dir / WRITER_LOCK_FILE
        self._lock_handle: TextIO | None = None

    def holds_writer_lock(self) -> bool:
        """Whether this process is the workspace's one inbox writer (taking the role when
        it is free). With `serve --workers N`, or replicas sharing the workspace, every
        process keeps events; one posts them, so that a payment's due amount is never
        judged by two writers at once. A writer that dies frees the role (the lock goes
        with its process); another takes it at its next wake-up."""
        if self._lock_handle is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.lock_path.open("a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_handle = handle
        return True

    def _release_writer_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing the file releases the lock
            self._lock_handle = None

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(min(IDLE_WAKE_SECONDS, self.warm_after_seconds))
            # Webhooks come in bursts, and each batch rewrites the day's payments file: a
            # short pause lets one batch take what arrives together (and leaves the
            # request handlers the processor meanwhile).
            self.stopping.wait(COALESCE_SECONDS)
            self.wake.clear()
            try:
                if not self.holds_writer_lock():
                    continue  # another process posts; this one keeps events only
                while True:
                    closed = [
                        apply_events(self.workspace, connector, self.state)
                        for connector in self.connectors
                    ]
                    if any(closed):
                        self.last_post_monotonic_seconds = time.monotonic()
                    if max(closed, default=0) < MAX_EVENTS_PER_BATCH:
                        break  # drained: what comes next wakes the writer
                self._warm_when_quiet()
            except Exception:  # keep serving: the events stay in the inbox for the next try
                logger.exception("posting webhook events failed; will try again")
                self.stopping.wait(ERROR_PAUSE_SECONDS)

    def _warm_when_quiet(self) -> None:
        """Check the books and write their cache once posting has been quiet long enough."""
        if self.last_post_monotonic_seconds is None:
            return
        if time.monotonic() - self.last_post_monotonic_seconds < self.warm_after_seconds:
            return
        self.last_post_monotonic_seconds = None
        errors = ledger_errors(self.workspace.ledger_path)
        if errors:
            logger.error(
                "bean-check finds %d error(s) in the books; first: %s", len(errors), errors[0]
            )

    def start(self) -> None:
        self.thread.start()
        self.wake.set()  # whatever a previous run kept and did not post

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join()
        self._release_writer_lock()


class ProvisionalRater:
    """Rates the open periods now and then every ``every_seconds`` until stopped."""

    def __init__(self, workspace: Workspace, every_seconds: float):
        if every_seconds <= 0:
            raise ValueError("the provisional rating needs a positive interval")
        self.workspace = workspace
        self.every_seconds = every_seconds
        self.rounds = 0  # ratings done, for the health answer
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="beanbill-provisional-rater")

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not self._rated_lately():
                    rate_open(self.workspace, local_today(self.workspace))
                self.rounds += 1
            except Exception:  # keep serving: the next round tries again
                logger.exception("rating the open periods failed; will try again")
            self.stopping.wait(self.every_seconds)

    def _rated_lately(self) -> bool:
        """Whether another server process (`serve --workers`) rated in this half interval:
        then its figures are as fresh as this one's would be."""
        lines = list(provisional_dir(self.workspace).glob("month=*/*.parquet"))
        if not lines:
            return False
        newest = max(path.stat().st_mtime for path in lines)
        return time.time() - newest < self.every_seconds / 2

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


async def _body_within(request: Request, limit_bytes: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed the limit: never read it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    workspace: Workspace,
    connectors: list[Connector],
    state: SyncState,
    warm_after_seconds: float = WARM_AFTER_QUIET_SECONDS,
    rate_open_every_seconds: float | None = None,
) -> Starlette:
    """The webhook server; ``rate_open_every_seconds`` (None: never) rates the open
    periods on that schedule."""
    writer = InboxWriter(workspace, connectors, state, warm_after_seconds)
    rater = (
        ProvisionalRater(workspace, rate_open_every_seconds)
        if rate_open_every_seconds is not None
        else None
    )
    by_name = {connector.name: connector for connector in connectors}
    # Events arriving together are kept in one fsync'd transaction (group commit); each
    # is answered once the transaction holding it is committed.
    inbox: AsyncGroupCommit[NewEvent, bool] = AsyncGroupCommit(
        state.store_events, MAX_EVENTS_PER_COMMIT
    )

    async def webhook(request: Request) -> JSONResponse:
        connector = by_name.get(request.path_params["target"])
        if connector is None:
            return JSONResponse({"error": "no such target"}, status_code=404)
        body = await _body_within(request, MAX_BODY_BYTES)
        if body is None:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            event = connector.parse_webhook(body, dict(request.headers))
        except WebhookRejected as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            text = payload_text(event.event_id, event.payload)
        except SyncStateError as error:
            return JSONResponse({"error": str(error)}, status_code=413)
        kept = NewEvent(connector.name, event.event_id, event.event_type, text)
        try:
            new = await inbox.submit(kept)
        except BeanbillError as error:  # full, or the store failed: the sender retries
            return JSONResponse({"error": f"not kept, try again: {error}"}, status_code=503)
        writer.wake.set()
        return JSONResponse({"received": event.event_id, "duplicate": not new})

    async def health(request: Request) -> JSONResponse:
        answer: dict[str, object] = {"ok": True, "writer": writer.thread.is_alive()}
        if rater is not None:
            answer["provisional_ratings"] = rater.rounds
        return JSONResponse(answer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        if rater is not None:
            rater.start()
        try:
            yield
        finally:
            await run_in_threadpool(writer.stop)
            if rater is not None:
                await run_in_threadpool(rater.stop)

    app = Starlette(
        routes=[
            Route("/webhooks/{target}", webhook, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.inbox = inbox  # its count of commits, for tests and benchmarks
    return app
