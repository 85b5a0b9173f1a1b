"""What in the sync state needs a human, per target: read-only, from ``SyncState``.

``beanbill sync status`` prints it and the Fava billing pages show it; both read it
here so that they agree on what "stuck" means:

- a *dead letter* is a document a target refused or that kept failing (``sync retry``
  re-queues it);
- a *pending* document is issued but not yet on the target: never tried, or tried and
  due to be tried again (a credit note also waits for the invoice it corrects);
- the webhook *inbox backlog* is what was received and not yet posted; *problem events*
  were closed without being posted (quarantined: unreadable or refused; unmatched: the
  books could not take them), grouped by their outcome text;
- *payment states* are what a target reported that moves no money (a failed payment, a
  dispute): worth a look, never posted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from beanbill.sync.payments import QUARANTINED
from beanbill.sync.state import PaymentStatus, PushRecord, PushStatus, SyncState

WAITING = "waiting"  # what ``SyncState.inbox_counts`` calls events not yet processed
UNMATCHED = "unmatched"  # the outcome ``payments.apply_events`` gives what it cannot post
PROBLEM_OUTCOMES = (QUARANTINED, UNMATCHED)


@dataclass(frozen=True)
class TargetAttention:
    """One target's state: counts for an overview, and the items a human should see."""

    target: str
    enabled: bool
    push_counts: dict[str, int]  # push status → documents
    dead: tuple[PushRecord, ...]
    pending: tuple[str, ...]  # issued documents not on the target (and not dead)
    retrying: tuple[PushRecord, ...]  # pending documents that failed at least once
    inbox: dict[str, int]  # outcome kind (posted, status, ignored, ...) → events
    problem_events: tuple[tuple[str, int], ...]  # (outcome, events) quarantined or unmatched
    payment_states: tuple[PaymentStatus, ...]

    @property
    def waiting_events(self) -> int:
        return self.inbox.get(WAITING, 0)

    @property
    def needs_attention(self) -> bool:
        """Something only a human can move: dead letters, refused events, payment states."""
        return bool(self.dead or self.problem_events or self.payment_states)


def outcome_kind(outcome: str) -> str:
    """``quarantined: KeyError: ...`` → ``quarantined``: the kind before the detail."""
    return outcome.split(":", 1)[0]


def inbox_by_kind(counts: dict[str, int]) -> dict[str, int]:
    """Inbox counts per outcome (as ``SyncState.inbox_counts`` gives them) per kind."""
    kinds: Counter[str] = Counter()
    for outcome, count in counts.items():
        kinds[outcome_kind(outcome)] += count
    return dict(sorted(kinds.items()))


def problem_events(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(outcome, events) of the events closed without being posted, most frequent first."""
    problems = [(o, c) for o, c in counts.items() if outcome_kind(o) in PROBLEM_OUTCOMES]
    return sorted(problems, key=lambda item: (-item[1], item[0]))


def push_counts(records: Iterable[PushRecord]) -> dict[tuple[str, str], int]:
    """(target, push status) → documents: the overview ``sync status`` prints first."""
    counts = Counter((record.target, record.status.value) for record in records)
    return dict(sorted(counts.items()))


def pending_documents(issued: Sequence[str], records: Iterable[PushRecord]) -> list[str]:
    """The issued documents (in the order given) one target has neither synced nor
    dead-lettered: ``records`` are that target's."""
    settled = {r.document for r in records if r.status is not PushStatus.PENDING}
    return [number for number in issued if number not in settled]


def by_document(records: Iterable[PushRecord]) -> dict[str, dict[str, PushRecord]]:
    """document → target → its push record: each invoice's sync status per target."""
    found: dict[str, dict[str, PushRecord]] = {}
    for record in records:
        found.setdefault(record.document, {})[record.target] = record
    return found


def target_attention(
    state: SyncState, target: str, enabled: bool, issued: Sequence[str]
) -> TargetAttention:
    """One target's attention list; ``issued`` are the documents it should have."""
    records = state.records(target)
    counts = state.inbox_counts(target)
    return TargetAttention(
        target=target,
        enabled=enabled,
        push_counts={status: n for (_, status), n in push_counts(records).items()},
        dead=tuple(r for r in records if r.status is PushStatus.DEAD),
        pending=tuple(pending_documents(issued, records)) if enabled else (),
        retrying=tuple(r for r in records if r.status is PushStatus.PENDING and r.attempts),
        inbox=inbox_by_kind(counts),
        problem_events=tuple(problem_events(counts)),
        payment_states=tuple(state.statuses(target)),
    )


def attention(
    state: SyncState,
    enabled: Sequence[str],
    issued: Sequence[str] | Mapping[str, Sequence[str]],
) -> list[TargetAttention]:
    """Every target enabled now or found in the state (one disabled since keeps its
    dead letters and inbox), by name. ``issued``: the documents every target should have,
    or per target (e-mail also delivers prepayment invoices)."""
    targets = set(enabled) | {record.target for record in state.records()}
    return [
        target_attention(
            state,
            target,
            target in enabled,
            issued.get(target, ()) if isinstance(issued, Mapping) else issued,
        )
        for target in sorted(targets)
    ]
