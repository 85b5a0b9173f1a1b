"""The chart of accounts: every account name beanbill posts to is made here, and only here.

Three kinds of accounts:

- **house accounts**, opened by the main file: the bank, output VAT (and, with the
  One-Stop Shop, one ``Liabilities:VAT:OSS:<country>`` per other EU country), breakage, discounts,
  promotions, one income account per product family, and the account credit purchases
  are paid into (``[ledger] credit_purchase_account``, the processor's clearing account);
- **per-organization accounts** (receivable, unbilled, credits), opened with the
  organization's id and name in ``books/accounts.beancount`` when first needed;
- **connector accounts**: a payment connector declares the accounts it needs
  (``ProcessorAccounts``: clearing balance, disputed funds, fees), opened like the
  organizations' the first time one of its movements is posted. Generic layers never
  name a connector's accounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from beanbill.ledger.entries import Open
from beanbill.ledger.text import ACCOUNT_NAME, LedgerTextError, account_component, components_by_id
from beanbill.rating.config import EU_COUNTRIES, Catalog, Customer, Settings

BOOKS_OPEN_DATE = date(2000, 1, 1)
ACCOUNTS_FILE = "books/accounts.beancount"  # where accounts opened on first use are written
BANK = "Assets:Bank:Operating"
VAT_ROOT = "Liabilities:VAT"
VAT_OUTPUT = "Liabilities:VAT:Output"
VAT_OSS_ROOT = "Liabilities:VAT:OSS"  # VAT charged at another EU country's rate (One-Stop Shop)
CREDITS_EXPIRED = "Income:Credits:Expired"  # breakage of purchased credit
DISCOUNTS = "Income:Discounts"  # coupons: contra revenue
PROMOTIONS = "Expenses:Promotions"  # granted credit, and what expires of it

RECEIVABLE_ROOT = "Assets:Receivable"
UNAPPLIED_ROOT = "Liabilities:Unapplied"  # paid beyond what was due, held for the customer
UNBILLED_ROOT = "Assets:Unbilled"
CREDITS_ROOT = "Liabilities:Credits"
INCOME_ROOT = "Income"
USAGE_INCOME_ROOT = "Income:Usage"
FAMILY_ACCOUNTS = {"Addons": "Income:Addons", "Services": "Income:Services"}


def under(account: str, root: str) -> bool:
    """True when ``account`` is ``root`` or one of its sub-accounts."""
    return account == root or account.startswith(f"{root}:")


def income_account(family: str) -> str:
    return FAMILY_ACCOUNTS.get(family, f"{USAGE_INCOME_ROOT}:{family}")


def family_of(account: str) -> str:
    """The product family an income account books: the inverse of ``income_account``."""
    for family, income in FAMILY_ACCOUNTS.items():
        if income == account:
            return family
    return account.rsplit(":", 1)[-1]


def is_income(account: str) -> bool:
    return under(account, INCOME_ROOT)


def vat_account(seller_country: str, vat_country: str) -> str:
    """Where output VAT is owed: the seller's own return, or the OSS return per country.

    ``vat_country`` is whose VAT an invoice charges (``VatTreatment.country``); empty in
    documents issued before OSS, which charged the seller's.
    """
    if vat_country in ("", seller_country):
        return VAT_OUTPUT
    return f"{VAT_OSS_ROOT}:{vat_country}"


@dataclass(frozen=True)
class OrganizationAccounts:
    receivable: str
    unbilled: str
    credits: str
    unapplied: str  # opened on first use: an overpayment held for the customer

    def all(self) -> tuple[str, str, str]:
        """The accounts every organization has from its first posting."""
        return (self.receivable, self.unbilled, self.credits)


def organization_accounts(customers: Iterable[Customer]) -> dict[str, OrganizationAccounts]:
    """Each organization's accounts; ids that would share an account component are refused."""
    components = components_by_id([customer.id for customer in customers])
    return {
        org: OrganizationAccounts(
            receivable=f"{RECEIVABLE_ROOT}:{component}",
            unbilled=f"{UNBILLED_ROOT}:{component}",
            credits=f"{CREDITS_ROOT}:{component}",
            unapplied=f"{UNAPPLIED_ROOT}:{component}",
        )
        for org, component in components.items()
    }


def component_collisions(customers: Iterable[Customer]) -> list[str]:
    """Every organization id whose account component another id already has, naming both.

    ``acme.eu`` and ``acme_eu`` are distinct ids but one account (``Acme-eu``): the books
    would mix two customers, so such workspaces are refused before anything is posted.
    """
    owners: dict[str, str] = {}
    problems = []
    for customer in customers:
        component = account_component(customer.id)
        owner = owners.setdefault(component, customer.id)
        if owner != customer.id:
            problems.append(
                f"organization ids {owner!r} and {customer.id!r} both map to account "
                f"component {component!r} ({RECEIVABLE_ROOT}:{component}, ...); rename one"
            )
    return problems


@dataclass(frozen=True)
class ProcessorAccounts:
    """What a payment connector (Stripe, ...) declares: where its money sits and costs."""

    clearing: str  # the processor's balance: payments in, refunds and payouts out
    disputed: str  # funds held while a dispute is open
    fees: str  # the processor's fees (an expense)

    def __post_init__(self) -> None:
        for account in self.all():
            check_account(account)

    def all(self) -> tuple[str, str, str]:
        return (self.clearing, self.disputed, self.fees)


def check_account(account: str) -> str:
    if not ACCOUNT_NAME.fullmatch(account):
        raise LedgerTextError(f"{account!r} is not a Beancount account name")
    return account


def house_accounts(settings: Settings, catalog: Catalog) -> list[str]:
    """The accounts the main file opens."""
    families = sorted({meter.family for meter in catalog.rated_meters()} | {"Addons"})
    oss = (
        [vat_account(settings.seller.country, country) for country in EU_COUNTRIES]
        if settings.invoicing.oss
        else []
    )
    return sorted(
        {
            BANK,
            VAT_OUTPUT,
            *oss,
            CREDITS_EXPIRED,
            DISCOUNTS,
            PROMOTIONS,
            settings.ledger.credit_purchase_account,
            *(income_account(family) for family in families),
        }
    )


def organization_opens(
    customers: Iterable[Customer], currency: str, already_open: set[str]
) -> list[Open]:
    """Opens for each organization's accounts not yet open, with its id and name."""
    customers = list(customers)
    accounts = organization_accounts(customers)
    opens: list[Open] = []
    for customer in customers:
        for account in accounts[customer.id].all():
            if account not in already_open:
                meta = (("org-id", customer.id), ("org-name", customer.name))
                opens.append(Open(BOOKS_OPEN_DATE, account, currency, meta))
    return opens


def house_opens(
    settings: Settings, catalog: Catalog, currency: str, already_open: set[str]
) -> list[Open]:
    """Opens for house accounts the main file does not open yet: a product family added
    to the catalog after ``init``, another credit purchase account."""
    return [
        Open(BOOKS_OPEN_DATE, account, currency)
        for account in house_accounts(settings, catalog)
        if account not in already_open
    ]


def processor_opens(
    processor: ProcessorAccounts, name: str, currency: str, already_open: set[str]
) -> list[Open]:
    """Opens for a connector's declared accounts not yet open (the main file's included)."""
    return [
        Open(BOOKS_OPEN_DATE, account, currency, (("connector", name),))
        for account in processor.all()
        if account not in already_open
    ]
