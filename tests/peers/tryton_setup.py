"""Build the Tryton peer's template database: run by the peer's own Python, never by beanbill's.

``python tryton_setup.py FOLDER NAME`` activates account_invoice in ``FOLDER/NAME.sqlite``
(already initialized by ``trytond-admin``) and gives it what an accountant would set up
before beanbill pushes anything, using the setup helpers Tryton ships in its wheels:
a company in EUR, the universal chart of accounts, fiscal years 2025-2027 with their
invoice sequences, revenue accounts per product family, an account for the prepaid
credit deducted, VAT taxes and two payment methods. The tests and the benchmark map
beanbill onto these names (tests/peers/tryton.py: ``MAPPING``): change both together.
"""

from __future__ import annotations

import datetime
import sys
from decimal import Decimal

from proteus import Model, config
from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, get_accounts
from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
from trytond.modules.company.tests.tools import create_company

YEARS = (2025, 2026, 2027)
REVENUE_ACCOUNTS = {"7061": "Compute revenue", "7062": "Storage revenue", "7068": "Other revenue"}
PREPAID_ACCOUNT = ("7069", "Prepaid credits applied")
TAXES = {
    "VAT 20%": Decimal("0.20"),
    "VAT 19%": Decimal("0.19"),  # the demo's German consumer (One-Stop Shop)
    "VAT reverse charge 0%": Decimal("0"),
}
PAYMENT_METHODS = ("Stripe", "Bank transfer")


def main(name: str) -> None:
    connection = config.set_trytond(name)
    Party = Model.get("party.party")
    company_party = Party(name="Beanbill Test SAS")
    company_party.save()
    create_company(company_party, "EUR")
    connection._context = Model.get("res.user").get_preferences(True, {})
    create_chart()
    accounts = get_accounts()
    for year in YEARS:
        fiscalyear = set_fiscalyear_invoice_sequences(
            create_fiscalyear(today=(datetime.date(year, 1, 1), datetime.date(year, 12, 31)))
        )
        fiscalyear.click("create_period")
    Account = Model.get("account.account")
    revenue = accounts["revenue"]
    for code, title in REVENUE_ACCOUNTS.items():
        Account(name=title, code=code, type=revenue.type, parent=revenue.parent).save()
    # Tryton takes only revenue accounts on customer invoice lines, so the prepaid credit
    # deducted from an invoice is a (negative) revenue line on an account of its own.
    code, title = PREPAID_ACCOUNT
    Account(name=title, code=code, type=revenue.type, parent=revenue.parent).save()
    Tax = Model.get("account.tax")
    for tax_name, rate in TAXES.items():
        tax = Tax(name=tax_name, description=tax_name, type="percentage", rate=rate)
        tax.invoice_account = accounts["tax"]
        tax.credit_note_account = accounts["tax"]
        tax.save()
    Journal = Model.get("account.journal")
    (cash_journal,) = Journal.find([("type", "=", "cash")])
    Method = Model.get("account.invoice.payment.method")
    for method_name in PAYMENT_METHODS:
        Method(
            name=method_name,
            journal=cash_journal,
            credit_account=accounts["cash"],
            debit_account=accounts["cash"],
        ).save()


if __name__ == "__main__":
    main(sys.argv[1])
