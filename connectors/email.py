"""The e-mail target: each issued document sent once to its customer's billing addresses.

An invoice, prepayment invoice or credit note goes out as one message: a text and an HTML
body (Jinja2 templates beside this module: amount due, due date, period, how to pay, the
hosted payment page when the Stripe target has synced the invoice), with the PDF/A-3
(Factur-X embedded) and the UBL XML attached as issued. Built with the standard library's
``email.message.EmailMessage``, sent over SMTP (``smtplib``) with STARTTLS or implicit TLS
and AUTH when configured; the password comes from the environment only.

SMTP has no idempotency key. What makes "once" hold is the sync state: the engine records
the message's deterministic ``Message-ID`` before sending (``intent``) and the document as
synced after the server's ``250``. A crash between the two leaves the document pending
with its Message-ID known, and the next run sends it again under the same Message-ID: at
worst one resend per document in flight, which mail clients show as the same message. A
4xx answer is retried (bounded, by the engine's retry policy), a 5xx answer dead-letters
the document with the server's text.
"""

from __future__ import annotations

import hashlib
import queue
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache
from pathlib import Path

import jinja2

from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument
from beanbill.ledger.invoicing.files import file_names
from beanbill.ledger.invoicing.render import money, payment_view, period_text
from beanbill.ledger.invoicing.vat import VatCategory
from beanbill.rating.config import EmailSettings, checked_email_address
from beanbill.sync.interface import RemoteDocument
from beanbill.sync.retry import PermanentError, TransientError

TARGET = "email"
MAX_RECIPIENTS = 20  # billing addresses and BCC together
MAX_ATTACHMENT_BYTES = 15_000_000  # most relays refuse messages above 20-25 MB once encoded
MAX_POOLED_CONNECTIONS = 16
MAX_LINK_LENGTH = 2_000
SENT = "sent"
KINDS = {
    DocumentType.INVOICE: "Invoice",
    DocumentType.CREDIT_NOTE: "Credit note",
    DocumentType.PREPAYMENT_INVOICE: "Prepayment invoice",
}


class EmailAddressError(PermanentError):
    """A document's recipient address is malformed or missing: nothing is sent."""


class AttachmentError(PermanentError):
    """An issued file to attach is missing or too large (``beanbill invoice render``)."""


@dataclass(frozen=True)
class Outgoing:
    """One message and its envelope (the BCC addresses are in the envelope only)."""

    message: EmailMessage
    sender: str
    recipients: tuple[str, ...]
    to: tuple[str, ...]  # the customer's addresses among ``recipients``

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


def message_id(workspace_id: str, document: InvoiceDocument, sender: str, resend: int = 0) -> str:
    """The same for a document on every try and every run, unique across workspaces: the
    number, a digest of workspace, number and type, and the sender's domain. A resend on
    request (``invoice send``) is a new message: its count is in the id."""
    digest = hashlib.sha256(
        f"{workspace_id}:{document.type.value}:{document.number}:{resend}".encode()
    ).hexdigest()[:20]
    suffix = f".resend{resend}" if resend else ""
    domain = sender.rsplit("@", 1)[1]
    return f"<{document.number}{suffix}.{digest}@{domain}>"


def checked_recipients(addresses: Sequence[str]) -> tuple[str, ...]:
    """The addresses, checked again at sending (a snapshot may predate the checks):
    a malformed or missing one is an ``EmailAddressError`` naming it."""
    if not addresses:
        raise EmailAddressError("no billing e-mail address")
    checked = []
    for address in addresses:
        try:
            checked.append(checked_email_address(address))
        except ValueError as error:
            raise EmailAddressError(f"billing e-mail address: {error}") from None
    return tuple(dict.fromkeys(checked))


def payment_link_checked(link: str | None) -> str | None:
    """Only an https address of reasonable length becomes a link in a message."""
    if link is None or len(link) > MAX_LINK_LENGTH or not link.startswith("https://"):
        return None
    if any(character.isspace() or ord(character) < 0x21 for character in link):
        return None
    return link


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("beanbill.connectors", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _template_values(document: InvoiceDocument, payment_link: str | None) -> dict[str, object]:
    """What both bodies say, as plain text (the HTML template escapes it)."""
    owed = document.type is not DocumentType.CREDIT_NOTE and document.due_minor > 0
    payment = payment_view(document)
    reverse_charge = any(line.vat.category is VatCategory.REVERSE_CHARGE for line in document.lines)
    return {
        "kind": KINDS[document.type],
        "number": document.number,
        "buyer": document.buyer.name,
        "seller": document.seller.name,
        "seller_email": document.seller.email or "",
        "issue_date": document.issue_date.isoformat(),
        "period": period_text(document.period_start, document.period_end),
        "total": money(document.gross_minor, document.currency),
        "due": money(document.due_minor, document.currency) if owed else "",
        "due_date": document.due_date.isoformat() if owed and document.due_date else "",
        "paid_in_advance": document.type is DocumentType.PREPAYMENT_INVOICE,
        "corrects": document.preceding_number or "",
        "reason": document.reason or "",
        "iban": payment.iban if payment and owed else "",
        "bic": payment.bic if payment and owed else "",
        "reference": payment.reference if payment and owed else "",
        "payment_link": payment_link if owed else None,
        "reverse_charge": reverse_charge,
        "pdf": file_names(document)["pdf"],
        "ubl": file_names(document)["ubl"],
    }


def subject(document: InvoiceDocument) -> str:
    """``Invoice INV-2026-000001 from Acme Cloud: €14.89 due 2026-12-01``."""
    head = f"{KINDS[document.type]} {document.number} from {document.seller.name}"
    owed = document.type is not DocumentType.CREDIT_NOTE and document.due_minor > 0
    if owed and document.due_date is not None:
        return f"{head}: {money(document.due_minor, document.currency)} due {document.due_date}"
    if document.type is DocumentType.CREDIT_NOTE:
        return f"{head}, cancelling {document.preceding_number}"
    return head


def compose(
    document: InvoiceDocument,
    settings: EmailSettings,
    recipients: Sequence[str],
    attachments: Mapping[str, bytes],
    payment_link: str | None,
    identifier: str,
    now: datetime,
) -> Outgoing:
    """The message of a document: pure, so that a test reads exactly what is sent.

    Headers are set through ``Address`` objects and the policy's folding, so a customer's
    name cannot add a header; ``attachments`` maps each file name to its issued bytes.
    """
    to = checked_recipients(recipients)
    bcc = tuple(address for address in settings.bcc if address not in to)
    if len(to) + len(bcc) > MAX_RECIPIENTS:
        raise EmailAddressError(f"{len(to) + len(bcc)} recipients; at most {MAX_RECIPIENTS}")
    values = _template_values(document, payment_link_checked(payment_link))
    message = EmailMessage()
    user, domain = settings.sender.rsplit("@", 1)
    message["From"] = Address(settings.sender_name or document.seller.name, user, domain)
    message["To"] = [Address("", *address.rsplit("@", 1)) for address in to]
    if settings.reply_to:
        message["Reply-To"] = Address("", *settings.reply_to.rsplit("@", 1))
    message["Subject"] = subject(document)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = identifier
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    message["X-Beanbill-Document"] = document.number
    message.set_content(_environment().get_template("email.txt.j2").render(values))
    message.add_alternative(
        _environment().get_template("email.html.j2").render(values), subtype="html"
    )
    for name, content in attachments.items():
        maintype, subtype = (
            ("application", "pdf") if name.endswith(".pdf") else ("application", "xml")
        )
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return Outgoing(message, settings.sender, (*to, *bcc), to)


def issued_attachments(invoices_dir: Path, document: InvoiceDocument) -> dict[str, bytes]:
    """The PDF/A-3 (its Factur-X inside) and the UBL, exactly as issued."""
    names = file_names(document)
    found: dict[str, bytes] = {}
    for kind in ("pdf", "ubl"):
        path = invoices_dir / names[kind]
        try:
            size = path.stat().st_size
            if size > MAX_ATTACHMENT_BYTES:
                raise AttachmentError(f"{path}: {size:,} bytes, at most {MAX_ATTACHMENT_BYTES:,}")
            found[names[kind]] = path.read_bytes()
        except FileNotFoundError:
            raise AttachmentError(
                f"{path} is missing; `beanbill invoice render {document.number}` writes it"
            ) from None
    return found


def smtp_error(error: BaseException) -> PermanentError | TransientError:
    """What an SMTP failure means for retrying: 4xx and the network are worth another
    try, 5xx is final (RFC 5321 §4.2.1), with the server's own text."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        answers = sorted(error.recipients.items())
        text = "; ".join(f"{address}: {code} {_text(reply)}" for address, (code, reply) in answers)
        if all(400 <= code < 500 for _, (code, _reply) in answers):
            return TransientError(f"SMTP recipients refused for now: {text}")
        return PermanentError(f"SMTP recipients refused: {text}")
    if isinstance(error, smtplib.SMTPResponseException):
        text = f"SMTP {error.smtp_code} {_text(error.smtp_error)}"
        if 400 <= error.smtp_code < 500:
            return TransientError(text)
        return PermanentError(text)
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return PermanentError(f"SMTP server: {error}")
    if isinstance(error, (smtplib.SMTPException, OSError)):  # disconnected, refused, timed out
        return TransientError(f"SMTP connection: {type(error).__name__}: {error}")
    raise error


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:500]


class SmtpConnections:
    """Open SMTP sessions, one per sending thread at a time, reused across messages (a new
    session per message would pay TCP, TLS and AUTH each time)."""

    def __init__(self, settings: EmailSettings, password: str | None, ca_file: str | None) -> None:
        self.settings = settings
        self.password = password
        self.ca_file = ca_file
        self.idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue(MAX_POOLED_CONNECTIONS)

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def open(self) -> smtplib.SMTP:
        settings = self.settings
        timeout = float(settings.timeout_seconds)
        if settings.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=timeout, context=self._tls()
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
        try:
            client.ehlo()
            if settings.security == "starttls":
                if not client.has_extn("starttls"):
                    raise PermanentError(
                        f"SMTP server {settings.host}:{settings.port} offers no STARTTLS: "
                        "refusing to send invoices in clear (set security to 'tls' or fix it)"
                    )
                client.starttls(context=self._tls())
                client.ehlo()
            if settings.user:
                client.login(settings.user, self.password or "")
        except BaseException:
            client.close()
            raise
        return client

    @contextmanager
    def session(self) -> Iterator[smtplib.SMTP]:
        """A live session; one that failed is closed, never returned to the pool."""
        try:
            client = self.idle.get_nowait()
        except queue.Empty:
            client = self.open()
        try:
            yield client
        except BaseException:
            client.close()
            raise
        try:
            self.idle.put_nowait(client)
        except queue.Full:
            _quit(client)

    def close(self) -> None:
        while True:
            try:
                _quit(self.idle.get_nowait())
            except queue.Empty:
                return


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


class Pace:
    """At most ``per_second`` messages a second across threads (0: no limit)."""

    def __init__(self, per_second: int) -> None:
        self.interval_seconds = 1.0 / per_second if per_second else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval_seconds:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval_seconds
        time.sleep(max(0.0, start - now))


class EmailConnector:
    """A document target (``sync.interface.DocumentTarget``), not a payment connector: it
    moves no money and receives no webhooks. ``recipients_of`` names each document's
    addresses (the customer's billing addresses now, else the buyer's on the document),
    ``payment_link_of`` the Stripe hosted invoice page of an invoice number when the
    Stripe target synced it."""

    name = TARGET
    delivers_prepayments = True  # a prepayment invoice is paid already, but still sent

    def __init__(
        self,
        settings: EmailSettings,
        password: str | None,
        invoices_dir: Path,
        workspace_id: str,
        recipients_of: Callable[[InvoiceDocument], Sequence[str]],
        payment_link_of: Callable[[str], str | None] = lambda number: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.invoices_dir = invoices_dir
        self.workspace_id = workspace_id
        self.recipients_of = recipients_of
        self.payment_link_of = payment_link_of
        self.clock = clock
        self.since = settings.issued_since
        self.connections = SmtpConnections(settings, password, settings.ca_file)
        self.pace = Pace(settings.messages_per_second)

    def check(self) -> None:
        """The server answers, speaks TLS as configured and accepts our login."""
        try:
            with self.connections.session() as client:
                code, reply = client.noop()
                if code != 250:
                    raise smtplib.SMTPResponseException(code, reply)
        except (smtplib.SMTPException, OSError) as error:
            raise smtp_error(error) from None

    def intent(self, document: InvoiceDocument) -> dict[str, str]:
        """What the sync state records before sending: the Message-ID it will carry."""
        return {"message_id": message_id(self.workspace_id, document, self.settings.sender)}

    def outgoing(self, document: InvoiceDocument, resend: int = 0) -> Outgoing:
        """The message of ``document``; a resend (1, 2, …) has its own Message-ID and
        refers to the first message (``References``), so clients thread them."""
        link = self.payment_link_of(document.number)
        outgoing = compose(
            document,
            self.settings,
            self.recipients_of(document),
            issued_attachments(self.invoices_dir, document),
            link,
            message_id(self.workspace_id, document, self.settings.sender, resend),
            self.clock(),
        )
        if resend:
            outgoing.message["References"] = self.intent(document)["message_id"]
        return outgoing

    def send(self, outgoing: Outgoing) -> dict[str, str]:
        """Hand the message to the server; ``refused`` names any address it refused while
        accepting others (those got it: sending again would duplicate theirs)."""
        self.pace.wait()
        try:
            with self.connections.session() as client:
                refused = client.send_message(
                    outgoing.message, outgoing.sender, list(outgoing.recipients)
                )
        except (smtplib.SMTPException, OSError) as error:
            raise smtp_error(error) from None
        if refused and all(address in refused for address in outgoing.to):
            # Only the finance copy went: the customer has nothing, so it is not delivered
            # (sending again copies finance twice, which is the lesser harm).
            raise smtp_error(smtplib.SMTPRecipientsRefused(dict(refused)))
        sent = {
            "message_id": outgoing.message_id,
            "recipients": ", ".join(outgoing.recipients),
        }
        if refused:
            sent["refused"] = "; ".join(
                f"{address}: {code} {_text(reply)}" for address, (code, reply) in refused.items()
            )
        return sent

    def push(self, document: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        sent = self.send(self.outgoing(document))
        return RemoteDocument(sent, SENT, document.due_minor)

    def close(self) -> None:
        self.connections.close()
