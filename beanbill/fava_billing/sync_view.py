"""The sync state as the Fava pages see it: found from the ledger's path, read-only.

Fava knows only the ledger file. The main ledger is the workspace's (``beanbill init``
writes it in the workspace root, beside ``beanbill.toml``), so the workspace, its
settings (which targets are enabled) and its state folder are found from it. Nothing
here fails the page: no workspace, no state yet, or a state this beanbill cannot read
become a sentence on the Sync page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from beanbill.exits import load_workspace
from beanbill.rating.errors import BeanbillError
from beanbill.rating.workspace import SETTINGS_FILE, Workspace
from beanbill.sync.attention import TargetAttention, attention, by_document
from beanbill.sync.state import STATE_FILE, PushRecord, open_sync_state, sync_mark
from beanbill.targets import enabled_target_names


@dataclass(frozen=True)
class FoundWorkspace:
    """The workspace of a ledger, or why there is none to read."""

    workspace: Workspace | None
    problem: str | None


@dataclass(frozen=True)
class SyncView:
    """What the Sync page and the Invoices' sync column show."""

    note: str | None  # why nothing is shown (no workspace, no state yet, unreadable)
    enabled: tuple[str, ...] = ()
    targets: tuple[TargetAttention, ...] = ()
    documents: dict[str, dict[str, PushRecord]] = field(default_factory=dict)

    def targets_of(self, number: str) -> list[str]:
        """The targets an invoice has a status on: every enabled one, and any other the
        state has it on."""
        return sorted(set(self.enabled) | set(self.documents.get(number, {})))


def find_workspace(ledger_path: Path) -> FoundWorkspace:
    """The workspace whose main ledger is ``ledger_path`` (beside its beanbill.toml)."""
    ledger = ledger_path.resolve()
    root = ledger.parent
    if not (root / SETTINGS_FILE).is_file():
        return FoundWorkspace(None, f"{ledger} is not in a beanbill workspace (no {SETTINGS_FILE})")
    try:
        workspace = load_workspace(root)
    except BeanbillError as error:
        return FoundWorkspace(None, f"the workspace settings cannot be read: {error}")
    if workspace.ledger_path.resolve() != ledger:
        return FoundWorkspace(None, f"{ledger} is not the main ledger of {root}")
    return FoundWorkspace(workspace, None)


def read_sync(found: FoundWorkspace, issued: Sequence[str]) -> SyncView:
    """The sync state of ``found``'s workspace; ``issued`` are the documents every
    enabled target should have. A missing state is never created here."""
    workspace = found.workspace
    if workspace is None:
        return SyncView(note=found.problem)
    enabled = enabled_target_names(workspace)
    path = workspace.state_dir / STATE_FILE
    shared = workspace.settings.state.url is not None  # PostgreSQL: no file to look for
    if not shared and not path.is_file() and not sync_mark(workspace).exists():
        targets = ", ".join(enabled) or "no target is enabled"
        return SyncView(note=f"No sync state yet ({path}): nothing was pushed ({targets}).")
    try:
        state = open_sync_state(workspace)
        return SyncView(
            note=None,
            enabled=enabled,
            targets=tuple(attention(state, enabled, issued)),
            documents=by_document(state.records()),
        )
    except (BeanbillError, sqlite3.Error) as error:
        return SyncView(note=f"The sync state cannot be read: {error}")
