"""The main ledger file of a workspace: every option explicit, the house accounts open.

beanbill adds generated files below the marker line with ``include`` directives and never
rewrites what is above it. The seller's legal name is the only configured text here; it
goes through ``ledger.text.quoted`` like any other.
"""

from __future__ import annotations

from beanbill.ledger.accounts import (
    BOOKS_OPEN_DATE,
    CREDITS_ROOT,
    RECEIVABLE_ROOT,
    UNAPPLIED_ROOT,
    UNBILLED_ROOT,
    VAT_OSS_ROOT,
    VAT_ROOT,
    house_accounts,
)
from beanbill.ledger.text import quoted
from beanbill.rating.config import Catalog, Settings

INCLUDE_MARKER = "; --- beanbill: generated includes below this line ---"
PLUGIN_LINE = 'plugin "beanbill.ledger.plugin"'

# How an accountant expects to read the books in Fava (``custom "fava-option"`` entries,
# Fava 1.30): income, liabilities and equity shown positive; the per-organization
# sub-accounts folded under their parent; accounts without a balance or a posting hidden.
# The billing pages (invoices, receivables, credits, revenue, sync): the extension reads the
# sync state too, so it lives in the CLI package, not in this layer.
FAVA_EXTENSION = "beanbill.fava_billing"
PER_ORGANIZATION = (RECEIVABLE_ROOT, UNBILLED_ROOT, CREDITS_ROOT, UNAPPLIED_ROOT, VAT_OSS_ROOT)
FAVA_OPTIONS = (
    ("invert-income-liabilities-equity", "true"),
    ("collapse-pattern", "^(" + "|".join(PER_ORGANIZATION) + ")$"),
    ("show-accounts-with-zero-balance", "false"),
    ("show-accounts-with-zero-transactions", "false"),
)

# Ready-made questions, in Fava's Query page (beanquery). Amounts as the books hold them:
# revenue and liabilities are negative in Beancount, so they are negated to read positive.
QUERIES = (
    (
        "Receivables",
        f"SELECT account, sum(position) AS owed "
        f"WHERE account ~ '^{RECEIVABLE_ROOT}:' GROUP BY account "
        "HAVING sum(number) != 0 ORDER BY account",
    ),
    (
        "Revenue by family",
        "SELECT year(date) AS year, month(date) AS month, account, neg(sum(position)) AS revenue "
        "WHERE account ~ '^Income:' GROUP BY year, month, account ORDER BY year, month, account",
    ),
    (
        "Revenue by customer",
        "SELECT entry_meta('org') AS org, year(date) AS year, month(date) AS month, "
        "neg(sum(position)) AS revenue WHERE account ~ '^Income:' "
        "GROUP BY org, year, month ORDER BY org, year, month",
    ),
    (
        "Unbilled",
        f"SELECT account, sum(position) AS unbilled WHERE account ~ '^{UNBILLED_ROOT}:' "
        "GROUP BY account HAVING sum(number) != 0 ORDER BY account",
    ),
    (
        "Credits held",
        f"SELECT account, neg(sum(position)) AS credit WHERE account ~ '^{CREDITS_ROOT}:' "
        "GROUP BY account HAVING sum(number) != 0 ORDER BY account",
    ),
    (
        "Credit lots",
        f"SELECT date, entry_meta('credit-lot') AS lot, entry_meta('credit-kind') AS kind, "
        f"entry_meta('org') AS org, entry_meta('expires') AS expires, neg(position) AS amount "
        f"WHERE account ~ '^{CREDITS_ROOT}:' AND (entry_meta('credit-kind') = 'purchase' "
        f"OR entry_meta('credit-kind') = 'grant') ORDER BY expires, date",
    ),
    (
        "VAT by month",
        f"SELECT year(date) AS year, month(date) AS month, account, neg(sum(position)) AS vat "
        f"WHERE account ~ '^{VAT_ROOT}' GROUP BY year, month, account "
        f"ORDER BY year, month, account",
    ),
    (
        "Settlements and fees",
        f"SELECT year(date) AS year, month(date) AS month, account, sum(position) AS amount "
        f"WHERE account ~ '^{RECEIVABLE_ROOT}:' AND number < 0 OR account ~ '^Expenses:Fees' "
        f"GROUP BY year, month, account ORDER BY year, month, account",
    ),
)


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
        "; How Fava shows the books, the billing pages (invoices, receivables, credits, revenue,",
        "; sync), and questions an accountant asks (its Query page).",
        f'{BOOKS_OPEN_DATE.isoformat()} custom "fava-extension" "{FAVA_EXTENSION}"',
        *(
            f'{BOOKS_OPEN_DATE.isoformat()} custom "fava-option" "{name}" {quoted(value)}'
            for name, value in FAVA_OPTIONS
        ),
        *(
            f"{BOOKS_OPEN_DATE.isoformat()} query {quoted(name)} {quoted(query)}"
            for name, query in QUERIES
        ),
        "",
    ]
    lines += [
        f"{BOOKS_OPEN_DATE.isoformat()} open {account} {currency}"
        for account in house_accounts(settings, catalog)
    ]
    lines += ["", INCLUDE_MARKER, ""]
    return "\n".join(lines)
