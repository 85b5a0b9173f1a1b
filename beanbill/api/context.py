"""What every request handler shares: the workspace, the API's limits, keys and clock.

One ``ApiContext`` per application (``create_app``), kept on ``app.state``. The books
are loaded once and loaded again only when a ledger file changed (their size or time
stamps), so a burst of requests does not parse the ledger each time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request

from beanbill.api.group_commit import ingest_group_commit
from beanbill.api.keys import KeyStore
from beanbill.api.problems import ApiSettingsError, Unavailable
from beanbill.api.rate_limit import RateLimit, TokenBuckets
from beanbill.ledger.accounts import ACCOUNTS_FILE
from beanbill.ledger.books import LedgerLoadError, load_books
from beanbill.rating.ingest import ingest, ingest_database
from beanbill.rating.workspace import Workspace

MAX_EVENTS_PER_BATCH = 1_000
MAX_BODY_BYTES = 2_000_000  # 1,000 events of up to about 2 KB each
MAX_PAGE_SIZE = 1_000
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class ApiSettings:
    """The API's limits. The defaults suit a server; tests lower or raise them."""

    max_events_per_batch: int = MAX_EVENTS_PER_BATCH
    max_body_bytes: int = MAX_BODY_BYTES
    rate_limit: RateLimit = field(default_factory=RateLimit)

    def __post_init__(self) -> None:
        if not 1 <= self.max_events_per_batch <= 100_000:
            raise ApiSettingsError("max_events_per_batch must be between 1 and 100,000")
        if not 1_000 <= self.max_body_bytes <= 100_000_000:
            raise ApiSettingsError("max_body_bytes must be between 1,000 and 100,000,000")


def today_utc() -> date:
    return datetime.now(UTC).date()


class LedgerCache:
    """The ledger's entries, loaded again only when one of its files changed (the main
    file or a generated one: their paths, sizes and modification times)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._entries: Sequence[Any] = ()

    def _signature_now(self) -> tuple[tuple[str, int, int], ...]:
        main = self.workspace.ledger_path
        # The main file changes when an include is added; generated files grow in books/.
        books = main.parent / Path(ACCOUNTS_FILE).parent
        files = [main, *sorted(books.rglob("*.beancount"))]
        signature = []
        for path in files:
            try:
                status = path.stat()
            except FileNotFoundError:
                continue
            signature.append((str(path), status.st_mtime_ns, status.st_size))
        return tuple(signature)

    def entries(self) -> Sequence[Any]:
        """Beancount's entries as the ledger holds them now."""
        with self._lock:
            signature = self._signature_now()
            if signature != self._signature:
                try:
                    books = load_books(
                        self.workspace.ledger_path, self.workspace.settings.billing.currency
                    )
                except LedgerLoadError as error:
                    raise Unavailable(f"the books do not load: {error}") from error
                self._entries = tuple(books.entries)
                self._signature = signature
            return self._entries


class ApiContext:
    """The state of one application: its workspace, keys, rate limits, clock and books."""

    def __init__(
        self,
        workspace: Workspace,
        settings: ApiSettings,
        today: Callable[[], date] = today_utc,
    ) -> None:
        self.workspace = workspace
        self.settings = settings
        self.today = today
        self.keys = KeyStore(workspace.state_dir)
        self.buckets = TokenBuckets(settings.rate_limit)
        self.ledger = LedgerCache(workspace)
        # Events batches arriving together are ingested together (group commit), two
        # ingests at most at once, each on a cursor of its own; the ingest takes the
        # workspace lock to store, which serializes that part with the other ingest and
        # the CLI's commands.
        database = ingest_database(workspace)
        self.group_commit = ingest_group_commit(
            lambda paths: ingest(workspace, paths, database=database)
        )


def context_of(request: Request) -> ApiContext:
    context = request.app.state.context
    if not isinstance(context, ApiContext):  # pragma: no cover - create_app sets it
        raise Unavailable("the API is not configured")
    return context
