"""The portal's session: a signed cookie naming the API key's id, never the key itself.

Logging in proves possession of an API key once; from then on the browser holds a cookie
signed with a per-workspace secret (``state/portal-secret``, created once, readable by
the owner only) that names the key's id and a random form token. Every request looks the
key id up again, so revoking the key ends the session at the next page. The cookie is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and
Secure over HTTPS; forms that change anything also carry the form token (CSRF).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from beanbill.rating.storage import fsync_directory

SECRET_FILE = "portal-secret"
SESSION_COOKIE = "beanbill_portal"
LOGIN_COOKIE = "beanbill_portal_login"  # the login form's token, before any session
SESSION_SECONDS = 12 * 3600  # a working day; logging in again costs one paste
LOGIN_FORM_SECONDS = 3600
PORTAL_PATH = "/portal"
SALT_SESSION = "beanbill.portal.session"
SALT_LOGIN = "beanbill.portal.login"


@dataclass(frozen=True)
class Session:
    """What the session cookie holds: whose key, and the token its forms must carry."""

    key_id: str
    form_token: str


def _create_secret(path: Path) -> None:
    """Write a new secret beside the other state, atomically: a temporary file linked to
    its final name, so two processes starting at once keep the same one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: its secret stays
            os.link(temporary, path)
        fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


@functools.lru_cache(maxsize=64)
def _secret_of(path: str) -> str:
    secret_path = Path(path)
    if not secret_path.exists():
        _create_secret(secret_path)
    return secret_path.read_text(encoding="ascii").strip()


def workspace_secret(state_dir: Path) -> str:
    """The workspace's signing secret, created on first use and then kept."""
    return _secret_of(str(state_dir / SECRET_FILE))


def _serializer(state_dir: Path, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        workspace_secret(state_dir), salt=salt, signer_kwargs={"digest_method": hashlib.sha256}
    )


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=PORTAL_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def read_session(request: Request, state_dir: Path) -> Session | None:
    """The session the request's cookie proves, or None (absent, forged or expired)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        data = _serializer(state_dir, SALT_SESSION).loads(cookie, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    key_id, token = data.get("key_id"), data.get("form_token")
    if not isinstance(key_id, str) or not isinstance(token, str):
        return None
    return Session(key_id, token)


def start_session(request: Request, response: Response, state_dir: Path, key_id: str) -> None:
    """Set the session cookie for ``key_id`` with a new form token; drop the login token."""
    data = {"key_id": key_id, "form_token": secrets.token_urlsafe(24)}
    value = _serializer(state_dir, SALT_SESSION).dumps(data)
    _set_cookie(request, response, SESSION_COOKIE, value, SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path=PORTAL_PATH, httponly=True, samesite="strict")


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=PORTAL_PATH, httponly=True, samesite="strict")


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def remember_login_token(request: Request, response: Response, state_dir: Path, token: str) -> None:
    """Keep the login form's token signed in a cookie too (double submit): a form posted
    from another site cannot know it."""
    value = _serializer(state_dir, SALT_LOGIN).dumps(token)
    _set_cookie(request, response, LOGIN_COOKIE, value, LOGIN_FORM_SECONDS)


def login_token_matches(request: Request, state_dir: Path, submitted: str) -> bool:
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not cookie or not submitted:
        return False
    try:
        expected = _serializer(state_dir, SALT_LOGIN).loads(cookie, max_age=LOGIN_FORM_SECONDS)
    except BadSignature:
        return False
    return isinstance(expected, str) and hmac.compare_digest(expected, submitted)


def form_token_matches(session: Session, submitted: str) -> bool:
    return bool(submitted) and hmac.compare_digest(session.form_token, submitted)
