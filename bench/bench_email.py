"""E-mail delivery: documents sent through the e-mail target, against bare ``sendmail``.

    .venv/bin/python bench/bench_email.py --documents 1000

One invoice is issued for real (ingest, rate, post, issue: its PDF/A-3 with Factur-X,
its UBL), then its files and snapshot are copied under ``--documents`` numbers, so every
message carries real attachments (about 45 KB) without rendering a thousand PDFs. A real
SMTP server (aiosmtpd, beanbill.smtp_peer) on loopback receives them:

- **target**: the sync engine (``push_all``: the Message-ID recorded before sending, the
  document marked synced after the 250, four at a time) and the e-mail connector
  (recipients checked, message composed from the templates, attachments read from disk,
  sent over pooled SMTP sessions);
- **floor**, in the same run on the same server: the same messages, composed beforehand,
  handed to ``smtplib.SMTP.sendmail`` one after the other on one session (no state, no
  composing, no reading).
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.ledger.invoicing.documents import InvoiceDocument, load_document  # noqa: E402
from beanbill.ledger.invoicing.files import file_names  # noqa: E402
from beanbill.ledger.invoicing.issue import issue  # noqa: E402
from beanbill.ledger.post import post  # noqa: E402
from beanbill.rating.ingest import ingest  # noqa: E402
from beanbill.rating.periods import Month  # noqa: E402
from beanbill.rating.rate import rate_months  # noqa: E402
from beanbill.smtp_peer import running_smtp  # noqa: E402
from beanbill.sync.push import push_all  # noqa: E402
from beanbill.sync.retry import RetryPolicy  # noqa: E402
from beanbill.sync.state import SqliteSyncState  # noqa: E402
from beanbill.targets import delivery_targets  # noqa: E402
from tests.support import (  # noqa: E402
    SMALL_CATALOG,
    customer,
    october_usage,
    write_jsonl,
    write_workspace,
)

OCTOBER = Month(2026, 10)


def copies(folder: Path, document: InvoiceDocument, count: int) -> list[InvoiceDocument]:
    """``count`` documents with the issued one's content and files under new numbers."""
    made = []
    names = file_names(document)
    for index in range(count):
        copy = replace(document, number=f"BENCH-{index:06d}")
        for kind, name in file_names(copy).items():
            if kind != "json":
                shutil.copyfile(folder / names[kind], folder / name)
        made.append(copy)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    arguments = parser.parse_args()
    from beanbill.examples import SETTINGS

    with tempfile.TemporaryDirectory() as scratch, running_smtp() as peer:
        settings = {
            **SETTINGS,
            "sync": {
                "concurrency": 4,
                "email": {
                    "host": peer.host,
                    "port": peer.port,
                    "security": "none",
                    "sender": "billing@nimbus.example",
                    "bcc": ["finance@nimbus.example"],
                },
            },
        }
        workspace = write_workspace(
            Path(scratch) / "ws", settings, SMALL_CATALOG, [customer("acme")]
        )
        ingest(workspace, [write_jsonl(Path(scratch) / "u.jsonl", october_usage("acme", 10))])
        rate_months(workspace, [OCTOBER])
        post(workspace, OCTOBER, date(2026, 11, 2))
        issue(workspace, OCTOBER, date(2026, 11, 5))
        (issued,) = list(workspace.invoices_dir.glob("INV-*.json"))
        documents = copies(workspace.invoices_dir, load_document(issued), arguments.documents)
        state = SqliteSyncState(workspace.state_dir)
        (target,) = delivery_targets(workspace, state)
        message_bytes = len(target.outgoing(documents[0]).message.as_bytes(policy=SMTP))

        started = time.perf_counter()
        summary = push_all(documents, [target], state, RetryPolicy(), 4)
        target.close()
        target_seconds = time.perf_counter() - started
        assert len(summary.synced) == len(documents) and not summary.dead

        messages = [target.outgoing(document) for document in documents]
        raw = [(m.sender, list(m.recipients), m.message.as_bytes(policy=SMTP)) for m in messages]
        started = time.perf_counter()
        with smtplib.SMTP(peer.host, peer.port) as client:
            for sender, recipients, content in raw:
                client.sendmail(sender, recipients, content)
        floor_seconds = time.perf_counter() - started
        assert len(peer.received) == 2 * len(documents)

    count = len(documents)
    print(f"{count:,} documents, {message_bytes:,} bytes per message (2 attachments)")
    print("| run | messages | seconds | messages/s | of the floor |")
    print("|---|---|---|---|---|")
    target_rate, floor_rate = count / target_seconds, count / floor_seconds
    print(
        f"| e-mail target (push_all, 4 at a time) | {count:,} | {target_seconds:.1f} | "
        f"{target_rate:.0f} | {target_rate / floor_rate:.0%} |"
    )
    print(f"| floor: bare sendmail, one session | {count:,} | {floor_seconds:.1f} | "
          f"{floor_rate:.0f} | 100% |")  # fmt: skip


if __name__ == "__main__":
    main()
