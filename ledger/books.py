"""Reading the books back: per-organization accounts, credit lots and balances.

The ledger is the source of truth. Credit lots are the transactions that carry
``credit-lot`` metadata; every draw or expiry names the lot it takes from, so what is
left of each lot is derived from the ledger alone, never kept elsewhere.
"""

from __future__ import annotations

import gc
import glob
import os
import pickle
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, cast

from beancount import loader
from beancount.core import data
from beancount.ops import validation

from beanbill.ledger import keys
from beanbill.ledger.accounts import CREDITS_ROOT, VAT_ROOT, under
from beanbill.ledger.entries import TXN_ID_KEY, Posting, Transaction, minor_digits, user_meta
from beanbill.ledger.main_file import PLUGIN_LINE
from beanbill.rating.errors import BeanbillError

LOT_KEY = keys.CREDIT_LOT
LOT_KINDS = ("purchase", "grant")


class LedgerLoadError(BeanbillError):
    """The ledger does not load cleanly; beanbill will not add to a broken ledger."""


class UsageVersion(NamedTuple):
    """A consumption transaction already in the ledger for one organization's period."""

    txn_id: str
    date: date
    checksum: str


class CreditLot(NamedTuple):
    lot_id: str
    org: str
    kind: str
    amount_minor: int  # the credit, excluding VAT
    acquired: date
    expires: date | None
    priority: int
    vat_minor: int = 0  # VAT invoiced on the purchase (``credits_vat = "at_purchase"``)
    invoice_number: str | None = None  # its prepayment invoice


@dataclass
class Books:
    """What beanbill needs to know of a loaded ledger."""

    entries: list[data.Directive]
    currency: str
    missing_documents: tuple[str, ...] = ()  # files of document entries that are gone

    @property
    def digits(self) -> int:
        return minor_digits(self.currency)

    def minor(self, number: Decimal) -> int:
        return int(number.scaleb(self.digits))

    def txn_ids(self) -> set[str]:
        return {entry.meta[TXN_ID_KEY] for entry in self.entries if TXN_ID_KEY in entry.meta}

    def open_accounts(self) -> set[str]:
        return {entry.account for entry in self.entries if isinstance(entry, data.Open)}

    def lots(self) -> dict[str, CreditLot]:
        lots: dict[str, CreditLot] = {}
        for entry in self.entries:
            meta = entry.meta
            if not isinstance(entry, data.Transaction):
                continue
            if meta.get(keys.CREDIT_KIND) not in LOT_KINDS:
                continue
            amount = sum(
                (self.minor(p.units.number) for p in entry.postings
                 if p.units is not None and p.units.number is not None
                 and under(p.account, CREDITS_ROOT)),
                0,
            )  # fmt: skip
            vat = sum(
                (self.minor(p.units.number) for p in entry.postings
                 if p.units is not None and p.units.number is not None
                 and under(p.account, VAT_ROOT)),
                0,
            )  # fmt: skip
            lots[meta[LOT_KEY]] = CreditLot(
                lot_id=meta[LOT_KEY],
                org=meta[keys.ORG],
                kind=meta[keys.CREDIT_KIND],
                amount_minor=-amount,
                acquired=entry.date,
                expires=meta.get("expires"),
                priority=int(meta.get("priority", 0)),
                vat_minor=-vat,
                invoice_number=meta.get(keys.INVOICE_NUMBER),
            )
        return lots

    def lot_remaining(self, excluded_txn_ids: set[str]) -> dict[str, int]:
        """Minor units left in each lot, ignoring the transactions about to be regenerated."""
        remaining = {lot_id: lot.amount_minor for lot_id, lot in self.lots().items()}
        for entry in self.entries:
            if not isinstance(entry, data.Transaction):
                continue
            if entry.meta.get(TXN_ID_KEY) in excluded_txn_ids:
                continue
            for posting in entry.postings:
                lot_id = (posting.meta or {}).get(LOT_KEY)
                if lot_id is not None and lot_id in remaining and posting.units is not None:
                    number = posting.units.number
                    if number is not None:
                        remaining[lot_id] -= self.minor(number)
        return remaining

    @cached_property
    def _transactions_by_id(self) -> dict[str, data.Transaction]:
        return {
            str(entry.meta[TXN_ID_KEY]): entry
            for entry in self.entries
            if isinstance(entry, data.Transaction) and TXN_ID_KEY in entry.meta
        }

    def transaction(self, txn_id: str) -> Transaction:
        """A posted transaction as beanbill's typed record (to reverse it, for instance)."""
        entry = self._transactions_by_id.get(txn_id)
        if entry is None:
            raise LedgerLoadError(f"no transaction with txn-id {txn_id!r} in the ledger")
        postings = tuple(
            Posting(
                p.account,
                self.minor(p.units.number),
                p.units.currency,
                tuple(user_meta(p.meta).items()),
            )
            for p in entry.postings
            if p.units is not None and p.units.number is not None
        )
        meta = tuple((k, v) for k, v in user_meta(entry.meta).items() if k != TXN_ID_KEY)
        narration = entry.narration or ""
        return Transaction(
            entry.date,
            txn_id,
            narration,
            postings,
            tuple(sorted(entry.links)),
            meta,
            entry.payee or "",
        )

    def usage_versions(self) -> dict[tuple[str, str, str], UsageVersion]:
        """(org, period, day or "") → the consumption transaction in force (not reversed)."""
        reversed_ids = {
            entry.meta[keys.REVERSES] for entry in self.entries
            if isinstance(entry, data.Transaction) and keys.REVERSES in entry.meta
        }  # fmt: skip
        active: dict[tuple[str, str, str], UsageVersion] = {}
        for entry in self.entries:
            txn_id = entry.meta.get(TXN_ID_KEY, "")
            if not isinstance(entry, data.Transaction) or not keys.is_usage(txn_id):
                continue
            if txn_id in reversed_ids:
                continue
            day = entry.meta.get(keys.DAY)
            key = (entry.meta[keys.ORG], entry.meta[keys.PERIOD], day.isoformat() if day else "")
            if key in active:
                raise LedgerLoadError(f"two consumption transactions in force for {key}")
            active[key] = UsageVersion(txn_id, entry.date, entry.meta[keys.RATED_CHECKSUM])
        return active

    def balances(self, accounts: Iterable[str]) -> dict[str, int]:
        wanted = set(accounts)
        totals: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            if isinstance(entry, data.Transaction):
                for posting in entry.postings:
                    if posting.account in wanted and posting.units is not None:
                        number = posting.units.number
                        if number is not None:
                            totals[posting.account] += self.minor(number)
        return {account: totals.get(account, 0) for account in accounts}


def _names_the_old_plugin(main_path: Path) -> bool:
    try:
        lines = main_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return OLD_PLUGIN_LINE in (line.strip() for line in lines)


def ledger_errors(main_path: Path) -> list[str]:
    """Beancount's own verdict on the ledger (what bean-check prints), as messages.

    Read from Beancount's pickle cache when it is valid; otherwise checked from the text
    and the cache written, so that the next ``bean-check`` or ``beanbill fava`` opens
    the books in seconds (the nightly ``beanbill run`` ends here, after its last append).
    """
    _, errors, _ = load_through_cache(main_path)
    return [str(error.message) for error in errors]


OLD_PLUGIN_LINE = 'plugin "ledger.plugin"'


def load_books(main_path: Path, currency: str) -> Books:
    """The books as they are now, for a command that may append to them: loaded from the
    text (never from or into Beancount's cache; see ``load_uncached``)."""
    entries, errors, _ = load_uncached(main_path)
    if errors and _names_the_old_plugin(main_path):
        raise LedgerLoadError(
            f"{main_path} loads the invariant plugin under its old name: replace the line "
            f"{OLD_PLUGIN_LINE} with {PLUGIN_LINE} (beanbill's modules install as beanbill.*)"
        )
    missing_files = [error for error in errors if _missing_document(error)]
    errors = [error for error in errors if not _missing_document(error)]
    if errors:
        first = errors[0]
        source: Any = first.source or {}
        raise LedgerLoadError(
            f"{main_path} has {len(errors)} error(s); first: "
            f"{source.get('filename')}:{source.get('lineno')}: {first.message}"
        )
    return Books(
        entries=list(entries),
        currency=currency,
        missing_documents=tuple(str(error.message) for error in missing_files),
    )


def _missing_document(error: Any) -> bool:
    """A ``document`` entry whose file is gone: that document's problem, not the ledger's.

    Every command goes on (``bean-check`` still reports it); ``beanbill invoice render``
    writes the file again from the issued snapshot.
    """
    return type(error).__name__ == "DocumentError" and str(error.message).startswith(
        "File does not exist"
    )


# Loading. A year of 1,000 organizations is about 250,000 entries: Beancount takes about
# 30 s to load it from text, a few seconds from its pickle cache with Python's cyclic
# garbage collector paused (bench/bench_fava.py). Commands that append load from text
# (their own append makes any cache stale at once); readers (Fava, the checks) go
# through the cache.

LoaderResult = tuple[list[data.Directive], list[Any], dict[str, Any]]

CACHE_DISABLED_VARIABLE = "BEANCOUNT_DISABLE_LOAD_CACHE"
CACHE_FILENAME_VARIABLE = "BEANCOUNT_LOAD_CACHE_FILENAME"


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a ledger loads.

    A load allocates millions of objects that all stay alive, and the collector, which
    runs every few hundred allocations, walks them again and again for nothing: pausing
    it saves about 20 % of a load from text and about 60 % of a load from the cache
    (measured on a year of 1,000 organizations). Nothing is left uncollected: a loaded
    ledger holds no reference cycles (a full collection after dropping one frees nothing).
    Nested pauses and a collector already off are left as they were found.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_uncached(main_path: Path) -> LoaderResult:
    """Beancount's load of the ledger from its text, never reading or writing its cache.

    For commands about to append: their own append makes the cache stale at once, and
    writing it (``loader.load_file`` does, for any load over a second) would pickle
    about 130 MB for nothing, some 12 s a command at a year's size. A cache that
    ``bean-check`` or Fava may still use is left alone.
    """
    with collector_paused():
        return cast(
            LoaderResult, loader._load([(os.path.abspath(main_path), True)], None, None, None)
        )


def cache_path(main_path: Path) -> Path | None:
    """Where ``bean-check`` and Fava look for Beancount's pickle cache of this ledger.

    The same name Beancount computes (``.ledger.beancount.picklecache`` beside the main
    file, or ``BEANCOUNT_LOAD_CACHE_FILENAME``); ``None`` when
    ``BEANCOUNT_DISABLE_LOAD_CACHE`` asks for no cache at all.
    """
    if os.getenv(CACHE_DISABLED_VARIABLE) is not None:
        return None
    pattern = os.getenv(CACHE_FILENAME_VARIABLE) or loader.PICKLE_CACHE_FILENAME
    return Path(loader.get_cache_filename(pattern, os.path.abspath(main_path)))


def load_through_cache(main_path: Path, *, write: bool = True) -> LoaderResult:
    """The ledger from Beancount's pickle cache when it is valid, else from its text.

    For readers (Fava, the checks), never before an append. Valid means what Beancount
    itself checks: every included file has the modification time and size it had when
    the cache was written. On a miss the ledger is loaded as ``bean-check`` loads it
    (with its extra validations, so that ``bean-check`` reading this cache reports what
    it would have found) and, with ``write``, the cache is written for the next reader:
    atomically (a reader sees the old cache or the new one), and only if no included
    file changed while loading (a writer appending meanwhile would leave a cache that
    looks valid but lacks its entries).
    """
    cache = cache_path(main_path)
    with collector_paused():
        if cache is not None:
            cached = _read_cache(cache)
            if cached is not None:
                return cached
        if cache is None or not write:
            return _load_as_checked(main_path)
        return _load_and_write_cache(main_path, cache)


def cache_is_valid(main_path: Path) -> bool:
    """Whether the next ``bean-check`` or ``beanbill fava`` would load from the cache."""
    cache = cache_path(main_path)
    if cache is None:
        return False
    with collector_paused():
        return _read_cache(cache) is not None


def _load_as_checked(main_path: Path) -> LoaderResult:
    """A load from text with ``bean-check``'s extra validations (about 2 % more time)."""
    return cast(
        LoaderResult,
        loader._load(
            [(os.path.abspath(main_path), True)],
            None,
            validation.HARDCORE_VALIDATIONS,
            None,
        ),
    )


def _read_cache(cache: Path) -> LoaderResult | None:
    """The cached load if the cache exists, unpickles and is still valid; else ``None``.

    A cache written by another version of Beancount or cut short fails to unpickle in
    many ways (Beancount itself catches every exception here): any of them is a miss.
    """
    try:
        with cache.open("rb") as handle:
            result = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception:  # an old, foreign or truncated cache: recomputed, never fatal
        return None
    if not (isinstance(result, tuple) and len(result) == 3 and isinstance(result[2], dict)):
        return None
    if loader.needs_refresh(result[2]):
        return None
    return cast(LoaderResult, result)


def _load_and_write_cache(main_path: Path, cache: Path) -> LoaderResult:
    """Load from text and write the cache, unless an included file changed meanwhile.

    The temporary file the cache is written into is created first: its change time is
    the file system's "now" when the load started. Beanbill's writer replaces files by
    renaming, which sets the change time (not the modification time) of the file it
    renames; any included file changed at or after that instant may or may not be in
    what was loaded, so the cache is then not written.
    """
    try:
        _remove_leftovers(cache)
        temporary = _create_beside(cache)
    except OSError:  # a folder the reader may not write: no cache, the load goes on
        return _load_as_checked(main_path)
    try:
        started_ns = _next_tick(temporary)
        result = _load_as_checked(main_path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:
        if _changed_since(result[2].get("include", []), started_ns):
            temporary.unlink(missing_ok=True)
            return result
        with temporary.open("wb") as handle:
            # No fsync: the cache can always be recomputed, and a torn one is a miss.
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, cache)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if not isinstance(error, Exception):
            raise  # an interrupt stops the command; a failed write (full disk,
            # an entry a plugin made unpicklable) only costs the next reader the cache
    return result


def _next_tick(temporary: Path) -> int:
    """The file system's clock, read from ``temporary``'s change time once it has moved
    past the tick it was created in.

    File times come from a coarse clock (a few milliseconds a tick): a file written
    just before the load may share the tick the load starts in, and would then look
    changed during the load. Waiting for the next tick (a few milliseconds, at most a
    second on file systems with coarse times) separates before from during.
    """
    first = temporary.stat().st_ctime_ns
    deadline = time.monotonic() + 1.0
    while True:
        os.utime(temporary)  # sets its change time to the file system's now
        now = temporary.stat().st_ctime_ns
        if now > first or time.monotonic() > deadline:
            return now
        time.sleep(0.001)


def _create_beside(cache: Path) -> Path:
    """A new empty file next to the cache (same folder, so the final rename is atomic),
    named after this process so that a leftover can be told from a write in progress."""
    name = f"{cache.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    temporary = cache.with_name(name)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(descriptor)
    return temporary


def _remove_leftovers(cache: Path) -> None:
    """Delete the half-written caches of processes that died writing one (killed, say).

    Each can be as large as the cache itself (about 130 MB for a year); a file whose
    process still runs is a write in progress and stays.
    """
    for leftover in cache.parent.glob(f"{glob.escape(cache.name)}.*-*.tmp"):
        pid = leftover.name[len(cache.name) + 1 :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, and someone else's


def _changed_since(files: Iterable[str], since_ns: int) -> bool:
    """Whether any of ``files`` is gone or had its content or name changed at ``since_ns``
    or later (the change time moves on every write and every rename onto the file)."""
    for name in files:
        try:
            if os.stat(name).st_ctime_ns >= since_ns:
                return True
        except OSError:
            return True
    return False
