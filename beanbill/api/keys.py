"""API keys: created and shown once, stored hashed, listed, revoked; who a key lets in.

A key is ``bbk_<key id>_<secret>``: the key id (12 hex digits, not secret) finds the
record, the secret is 256 random bits. Only the SHA-256 of the whole key is stored
(``state/api-keys.sqlite``), and it is compared in constant time: a copy of the state
folder lets no one call the API, and the key itself is never written anywhere by
beanbill (not in the database, a log or an error body). A lost key is revoked and a new
one created.

Scopes: an organization's key sees that organization and, when it is a parent
(``Customer.parent`` of its teams), its teams; an admin key sees every organization.
Revoking takes effect at the next request (every request reads the record).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from beanbill.rating.config import Customer
from beanbill.rating.errors import BeanbillError
from beanbill.rating.storage import KeptSqlite, sqlite_state

KEYS_FILE = "api-keys.sqlite"
KEY_PREFIX = "bbk"
KEY_ID_BYTES = 6  # 12 hex digits: finds the record, says nothing of the secret
SECRET_BYTES = 32  # 256 random bits
KEY_PATTERN = re.compile(r"^bbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_LABEL_LENGTH = 100
MAX_KEYS = 10_000  # per workspace: a bound on the table every listing reads
SCHEMA = """CREATE TABLE IF NOT EXISTS api_key (
    key_id TEXT PRIMARY KEY,
    org TEXT,  -- NULL: an admin key
    key_sha256 TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT);"""
# Compared against when a key id is unknown, so that an unknown id costs the same time.
_NO_KEY_DIGEST = hashlib.sha256(b"no such key").hexdigest()


class ApiKeyError(BeanbillError):
    """An API key cannot be created or revoked as asked (unknown organization or key)."""


@dataclass(frozen=True)
class ApiKey:
    """A key's record, as listed: never the key, never its hash."""

    key_id: str
    org: str | None  # None: an admin key
    label: str
    created_at: str
    revoked_at: str | None

    @property
    def is_admin(self) -> bool:
        return self.org is None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``secret_key`` is shown once, to whoever created it, and never again."""

    record: ApiKey
    secret_key: str


@dataclass(frozen=True)
class Principal:
    """Who a request is from: a valid, unrevoked key."""

    key_id: str
    org: str | None  # None: an admin key

    @property
    def is_admin(self) -> bool:
        return self.org is None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(row: tuple[str, str | None, str, str, str | None]) -> ApiKey:
    key_id, org, label, created_at, revoked_at = row
    return ApiKey(key_id, org, label, created_at, revoked_at)


class KeyStore:
    """The workspace's API keys (SQLite, durable: WAL, synchronous=FULL)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / KEYS_FILE
        # Every request looks a key up: on a connection kept per thread. Each lookup is a
        # transaction of its own, so a key revoked by another process fails at the next.
        self._reader = KeptSqlite(self.path, SCHEMA)

    def create(self, org: str | None, known_orgs: Iterable[str], label: str = "") -> CreatedKey:
        """A new key for ``org`` (None: an admin key); ``known_orgs``: the customers' ids."""
        if org is not None and org not in set(known_orgs):
            raise ApiKeyError(f"unknown organization {org!r}")
        if len(label) > MAX_LABEL_LENGTH or not label.isprintable():
            raise ApiKeyError(f"a label is printable text of at most {MAX_LABEL_LENGTH} characters")
        key_id = secrets.token_hex(KEY_ID_BYTES)
        secret_key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
        record = ApiKey(key_id, org, label, _now(), None)
        with sqlite_state(self.path, SCHEMA) as connection:
            connection.execute("BEGIN IMMEDIATE")
            (count,) = connection.execute("SELECT count(*) FROM api_key").fetchone()
            if count >= MAX_KEYS:
                connection.execute("ROLLBACK")
                raise ApiKeyError(f"at most {MAX_KEYS:,} keys per workspace: revoke unused ones")
            connection.execute(
                "INSERT INTO api_key VALUES (?, ?, ?, ?, ?, NULL)",
                (key_id, org, digest(secret_key), label, record.created_at),
            )
            connection.execute("COMMIT")
        return CreatedKey(record, secret_key)

    def keys(self, org: str | None = None) -> list[ApiKey]:
        """Every key (or one organization's), oldest first, revoked ones included."""
        if not self.path.exists():
            return []
        query = "SELECT key_id, org, label, created_at, revoked_at FROM api_key"
        with sqlite_state(self.path, SCHEMA) as connection:
            if org is None:
                rows = connection.execute(f"{query} ORDER BY rowid").fetchall()
            else:
                rows = connection.execute(
                    f"{query} WHERE org = ? ORDER BY rowid", (org,)
                ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good (revoking twice keeps the first time)."""
        with sqlite_state(self.path, SCHEMA) as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "UPDATE api_key SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
            row = connection.execute(
                "SELECT key_id, org, label, created_at, revoked_at FROM api_key WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            connection.execute("COMMIT")
        if row is None:
            raise ApiKeyError(f"no API key {key_id!r}")
        return _record(row)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else (no reason given:
        a caller learns nothing about which keys exist)."""
        match = KEY_PATTERN.fullmatch(key)
        if match is None or not self.path.exists():
            hmac.compare_digest(_NO_KEY_DIGEST, digest(key))
            return None
        with self._reader.connection() as reader:
            row = reader.execute(
                "SELECT org, key_sha256, revoked_at FROM api_key WHERE key_id = ?",
                (match.group(1),),
            ).fetchone()
        stored = row[1] if row else _NO_KEY_DIGEST
        matches = hmac.compare_digest(stored, digest(key))
        if row is None or not matches or row[2] is not None:
            return None
        return Principal(match.group(1), row[0])


def visible_organizations(principal: Principal, customers: Iterable[Customer]) -> frozenset[str]:
    """The organizations a key sees: all (admin), or its own and, for a parent, its teams."""
    everyone = list(customers)
    if principal.org is None:
        return frozenset(customer.id for customer in everyone)
    return frozenset(
        customer.id for customer in everyone if principal.org in (customer.id, customer.parent)
    )
