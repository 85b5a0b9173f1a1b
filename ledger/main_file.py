"""The main ledger file of a workspace: every option explicit, the house accounts open.

beanbill adds generated files below the marker line with ``include`` directives and never
rewrites what is above it. The seller's legal name is the only configured text here; it
goes through ``ledger.text.quoted`` like any other.
"""

from __future__ import annotations

from beanbill.ledger.accounts import BOOKS_OPEN_DATE, house_accounts
from beanbill.ledger.text import quoted
from beanbill.rating.config import Catalog, Settings

INCLUDE_MARKER = "; --- beanbill: generated includes below this line ---"
PLUGIN_LINE = 'plugin "beanbill.ledger.plugin"'


def main_ledger_text(settings: Settings, catalog: Catalog) -> str:
    currency = settings.billing.currency
    title = quoted(f"{settings.seller.legal_name} - billing ledger")
    lines = [
        "; The main ledger of a beanbill workspace: open it with `fava ledger.beancount` or",
        "; check it with `bean-check ledger.beancount`.",
        "",
        f'option "title" {title}',
        f'option "operating_currency" "{currency}"',
        'option "booking_method" "STRICT"',
        "; Every amount is written in full; the tolerance only absorbs sub-cent noise.",
        f'option "inferred_tolerance_default" "{currency}:0.005"',
        f'option "display_precision" "{currency}:0.01"',
        "",
        "; beanbill's invariants (unique txn-id, explicit amounts), checked by bean-check.",
        PLUGIN_LINE,
        "",
        f"{BOOKS_OPEN_DATE.isoformat()} commodity {currency}",
        "",
    ]
    lines += [
        f"{BOOKS_OPEN_DATE.isoformat()} open {account} {currency}"
        for account in house_accounts(settings, catalog)
    ]
    lines += ["", INCLUDE_MARKER, ""]
    return "\n".join(lines)
