"""A real SMTP server on loopback (aiosmtpd) for the e-mail target's tests and the demo.

It speaks SMTP as aiosmtpd does (EHLO, STARTTLS with the certificate given, AUTH only
over TLS when a password is set, SMTPUTF8, a size limit), keeps what it accepted (the
envelope and the exact bytes received, also written to ``outbox`` as ``.eml`` files when a
folder is given), and can answer like a real relay that is busy or refuses: a scripted
reply at RCPT or DATA (``421``/``451`` for a while, ``550`` for an address). It is stricter
than a relay where it is cheap: a message without a Message-ID or a From is refused (RFC
5322 §3.6 requires From; §3.6.4 says every message SHOULD have a Message-ID).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from beanbill.ports import free_port

MAX_MESSAGE_BYTES = 30_000_000


@dataclass(frozen=True)
class Received:
    """A message the server accepted (answered 250 to)."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes

    def parsed(self) -> EmailMessage:
        """The message as a reader sees it: headers of an SMTPUTF8 message are UTF-8
        (RFC 6532), which a bytes parser would leave as escapes."""
        try:
            text = self.content.decode("utf-8")
        except UnicodeDecodeError:
            message = email.message_from_bytes(self.content, policy=email.policy.default)
        else:
            message = email.message_from_string(text, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    @property
    def message_id(self) -> str:
        return str(self.parsed()["Message-ID"])


@dataclass
class Script:
    """Replies to give instead of accepting: at DATA (``data``, in order, one per
    message) and at RCPT for an address (``refuse``, every time)."""

    data: deque[str] = field(default_factory=deque)
    refuse: dict[str, str] = field(default_factory=dict)


class Handler:
    """aiosmtpd's handler: what the server does at RCPT and DATA."""

    def __init__(self, outbox: Path | None, password: str | None) -> None:
        self.received: list[Received] = []
        self.script = Script()
        self.outbox = outbox
        self.password = password
        self.lock = threading.Lock()
        self.logins: list[str] = []
        self.delay_seconds = 0.0  # before answering DATA: a slow relay (tests kill mid-batch)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            refused = self.script.refuse.get(address.lower())
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        with self.lock:
            if self.script.data:
                return self.script.data.popleft()
        content = bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(content, policy=email.policy.default)
        if message["Message-ID"] is None or message["From"] is None:
            return "554 5.6.0 message without Message-ID or From refused"
        received = Received(envelope.mail_from, tuple(envelope.rcpt_tos), content)
        with self.lock:
            self.received.append(received)
            count = len(self.received)
        if self.outbox is not None:
            self.outbox.mkdir(parents=True, exist_ok=True)
            (self.outbox / f"{count:06d}.eml").write_bytes(content)
        return "250 2.0.0 OK: queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, credentials: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(credentials, LoginPassword) or self.password is None:
            return AuthResult(success=False, handled=False)
        valid = credentials.password.decode() == self.password
        if valid:
            with self.lock:
                self.logins.append(credentials.login.decode())
        return AuthResult(success=valid, handled=False)


@dataclass
class SmtpPeer:
    host: str
    port: int
    handler: Handler

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def answer_data(self, *replies: str) -> None:
        """The next messages get these replies at DATA instead of being accepted."""
        with self.handler.lock:
            self.handler.script.data.extend(replies)

    def refuse(self, address: str, reply: str) -> None:
        with self.handler.lock:
            self.handler.script.refuse[address.lower()] = reply

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.received.clear()
            self.handler.script = Script()


@contextmanager
def running_smtp(
    port: int = 0,
    outbox: Path | None = None,
    certificate: tuple[Path, Path] | None = None,
    password: str | None = None,
) -> Iterator[SmtpPeer]:
    """An SMTP server on 127.0.0.1 (a free port unless given); with ``certificate``
    (cert, key) it offers STARTTLS and requires it; with ``password`` it requires AUTH."""
    import ssl

    from aiosmtpd.controller import Controller

    handler = Handler(outbox, password)
    options: dict[str, Any] = {"data_size_limit": MAX_MESSAGE_BYTES, "enable_SMTPUTF8": True}
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(certificate[0]), str(certificate[1]))
        options.update(tls_context=context, require_starttls=True)
    if password is not None:
        options.update(
            authenticator=handler.authenticate, auth_required=True, auth_require_tls=True
        )
    if port == 0:
        port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SmtpPeer("127.0.0.1", port, handler)
    finally:
        controller.stop()
