"""An issued document's files under ``invoices/``, named by number, rendered on every core.

HTML, PDF/A-3 with its Factur-X XML, the CII and the UBL (an Invoice for invoices and
prepayment invoices, a CreditNote for credit notes), plus the JSON snapshot connectors
push (exactly what was issued, never a re-derivation). Each file is written atomically;
rewriting one after a crash writes the same bytes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor

from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.derive import Derived, seller_legal_line
from beanbill.ledger.invoicing.documents import InvoiceDocument, document_json
from beanbill.ledger.invoicing.einvoice import cii_xml
from beanbill.ledger.invoicing.numbering import rebuild_advice
from beanbill.ledger.invoicing.render import invoice_html, invoice_pdf
from beanbill.ledger.invoicing.ubl import ubl_xml
from beanbill.rating.storage import write_bytes_atomically
from beanbill.rating.workspace import Workspace

MAX_RENDER_WORKERS = 16
RENDER_PARENT_ENVIRONMENT = "BEANBILL_RENDER_PARENT"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Be killed when the process that started this one dies (Linux), not linger on.

    A killed ``invoice`` must not leave its fork server and render workers running: the
    fork server is bound to beanbill's process, each worker to the fork server.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


# Imported in the fork server (its preload): bind it to the beanbill process that started it.
if os.environ.get(RENDER_PARENT_ENVIRONMENT) == str(os.getppid()):
    _die_with_parent()


def _contents(workspace: Workspace, document: InvoiceDocument) -> dict[str, tuple[str, bytes]]:
    legal = seller_legal_line(workspace.settings.seller)
    outputs = {
        "html": (f"{document.number}.html", invoice_html(document, legal).encode("utf-8")),
        "pdf": (f"{document.number}.pdf", invoice_pdf(document, legal)),
        "cii": (f"{document.number}.cii.xml", cii_xml(document)),
        "ubl": (f"{document.number}.ubl.xml", ubl_xml(document)),
    }
    return outputs


def file_names(document: InvoiceDocument) -> dict[str, str]:
    """kind → file name of every file of the document (the snapshot under "json")."""
    names = {
        "json": f"{document.number}.json",
        "html": f"{document.number}.html",
        "pdf": f"{document.number}.pdf",
        "cii": f"{document.number}.cii.xml",
        "ubl": f"{document.number}.ubl.xml",
    }
    return names


def write_documents(
    workspace: Workspace, document: InvoiceDocument, checked_against_ledger: bool = False
) -> dict[str, str]:
    """Write the document's files, once; kind → path relative to the main ledger's folder.

    Issued documents are write-once. The JSON snapshot says which document a number is:
    if it exists with other content, nothing is written (``InvoicingError``). If it is
    the same document (a run finishing after a crash, or ``invoice render``), only the
    missing files are written: an existing file is never replaced. Without a snapshot,
    any file already under the number is someone else's: refused as well — unless the
    caller derived the document again and checked it against its issuance in the ledger
    (``checked_against_ledger``), which then stands for the lost snapshot.
    """
    folder = workspace.invoices_dir
    names = file_names(document)
    snapshot = document_json(document)
    snapshot_path = folder / names["json"]
    if snapshot_path.exists():
        if snapshot_path.read_bytes() != snapshot:
            raise InvoicingError(
                f"{snapshot_path} holds another document than the one being issued as "
                f"{document.number}: issued documents are never overwritten (was the "
                f"numbering state replaced? {rebuild_advice(workspace)})"
            )
    else:
        present = [name for kind, name in names.items() if (folder / name).exists()]
        if present and not checked_against_ledger:
            raise InvoicingError(
                f"{folder}: {', '.join(present)} exist without their snapshot "
                f"{names['json']}: issued documents are never overwritten"
            )
        write_bytes_atomically(snapshot_path, snapshot)
    missing = {kind for kind, name in names.items() if not (folder / name).exists()}
    if missing:
        for kind, (name, data) in _contents(workspace, document).items():
            if kind in missing:
                write_bytes_atomically(folder / name, data)
    return {
        kind: str((folder / name).relative_to(workspace.ledger_path.parent))
        for kind, name in names.items()
        if kind != "json"
    }


def relative_to_ledger_file(
    workspace: Workspace, ledger_file: str, paths: Mapping[str, str]
) -> dict[str, str]:
    """Document paths as Beancount reads them: relative to the file that holds the entry."""
    folder = (workspace.ledger_path.parent / ledger_file).parent
    return {
        kind: os.path.relpath(workspace.ledger_path.parent / path, folder)
        for kind, path in paths.items()
    }


def _render_one(workspace: Workspace, derived: Derived) -> tuple[Derived, dict[str, str]]:
    return derived, write_documents(workspace, derived.document)


def _ignore() -> None:
    return None


def render_all(
    workspace: Workspace, derived_all: list[Derived], on_done: Callable[[], None] = _ignore
) -> list[tuple[Derived, dict[str, str]]]:
    """Render on every core: documents are independent once numbered."""
    workers = min(os.cpu_count() or 1, MAX_RENDER_WORKERS)
    results: list[tuple[Derived, dict[str, str]]] = []
    if len(derived_all) < 2 or workers < 2:
        for derived in derived_all:
            results.append(_render_one(workspace, derived))
            on_done()
        return results
    # Not "fork": a child forked from a process that already used WeasyPrint (Pango,
    # HarfBuzz) can crash collecting the inherited objects. The fork server is a clean
    # process started once, with the rendering stack preloaded, that forks the workers.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    os.environ[RENDER_PARENT_ENVIRONMENT] = str(os.getpid())  # read by the fork server
    try:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_die_with_parent
        ) as pool:
            futures = [pool.submit(_render_one, workspace, derived) for derived in derived_all]
            for future in futures:
                results.append(future.result())
                on_done()
    finally:
        os.environ.pop(RENDER_PARENT_ENVIRONMENT, None)  # not for later children
    return results
