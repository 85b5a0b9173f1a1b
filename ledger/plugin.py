"""Beancount plugin: the ledger's own invariants, checked by bean-check and Fava.

Enable with ``plugin "beanbill.ledger.plugin"`` in the main file. It catches hand edits that the
writer would never make:

- two entries with one ``txn-id``;
- a generated transaction whose postings do not all carry an explicit amount in the
  operating currency (beanbill writes every amount; interpolation would hide rounding);
- a ``reverses`` reference to a txn-id that does not exist.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from beancount.core import data

from beanbill.ledger import keys

__plugins__ = ["check_ledger"]

TXN_ID_KEY = keys.TXN_ID


class LedgerInvariantError(NamedTuple):
    source: dict[str, Any]
    message: str
    entry: data.Directive | None


def check_ledger(
    entries: list[data.Directive], options_map: dict[str, Any], config: str | None = None
) -> tuple[list[data.Directive], list[LedgerInvariantError]]:
    errors: list[LedgerInvariantError] = []
    first_seen: dict[str, data.Directive] = {}
    currencies = set(options_map.get("operating_currency") or [])
    for entry in entries:
        txn_id = (entry.meta or {}).get(TXN_ID_KEY)
        if txn_id is None:
            continue
        previous = first_seen.get(txn_id)
        if previous is not None:
            errors.append(
                LedgerInvariantError(
                    entry.meta,
                    f"txn-id {txn_id!r} is used twice (first at "
                    f"{previous.meta.get('filename')}:{previous.meta.get('lineno')})",
                    entry,
                )
            )
            continue
        first_seen[txn_id] = entry
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                if (posting.meta or {}).get("__automatic__"):
                    errors.append(
                        LedgerInvariantError(
                            entry.meta,
                            f"txn-id {txn_id!r}: the amount of {posting.account} is left for "
                            "Beancount to interpolate; generated entries write every amount",
                            entry,
                        )
                    )
        if isinstance(entry, data.Transaction) and currencies:
            for posting in entry.postings:
                if posting.units is None or posting.units.currency not in currencies:
                    errors.append(
                        LedgerInvariantError(
                            entry.meta,
                            f"txn-id {txn_id!r}: posting to {posting.account} is not in "
                            f"{'/'.join(sorted(currencies))}",
                            entry,
                        )
                    )
    for entry in entries:
        reverses = (entry.meta or {}).get(keys.REVERSES)
        if reverses is not None and reverses not in first_seen:
            errors.append(
                LedgerInvariantError(
                    entry.meta, f"reverses {reverses!r}, which is not in the ledger", entry
                )
            )
    return entries, errors
