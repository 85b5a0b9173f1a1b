"""Invoice derivation as a pure function: no DuckDB, no files, no clock.

Consumption transactions are built as the ledger would hold them, rated detail as the
rated store would serve it; ``derive`` must turn them into the same document every time.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from beanbill.examples import SETTINGS
from beanbill.ledger import keys
from beanbill.ledger.accounts import income_account, organization_accounts
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.derive import InvoiceTerms, derive
from beanbill.ledger.invoicing.documents import DocumentError, DocumentType, check_renderable
from beanbill.ledger.invoicing.due import Consumption, Draw, DueInvoice
from beanbill.ledger.invoicing.vat import VatCategory
from beanbill.rating.config import (
    Catalog,
    Customer,
    InvoicingSettings,
    Seller,
    parse_model,
)
from beanbill.rating.rated_store import RatedGroup
from tests.support import egress_meter, example_meter

OCTOBER = date(2026, 10, 1)
NOVEMBER = date(2026, 11, 1)
CATALOG = parse_model(
    Catalog,
    {
        "meter": [
            example_meter("cpu", [{"effective": OCTOBER, "price": "0.00001"}]),
            egress_meter([{"effective": OCTOBER, "price": "0.01"}]),
        ]
    },
    "catalog",
)
SELLER = parse_model(Seller, SETTINGS["seller"], "seller")
TERMS = InvoiceTerms("INV-2026-000007", date(2026, 11, 5), "EUR", InvoicingSettings())


def customer(org: str = "acme", **extra: Any) -> Customer:
    fields = {
        "id": org,
        "name": f"{org} Ltd",
        "address": ["1 Main Street", "Paris"],
        "country": "FR",
        "email": f"billing@{org}.example",
        **extra,
    }
    return parse_model(Customer, fields, "customer")


def consumption(
    org: str,
    income_minor: dict[str, int],
    unbilled_minor: int,
    credit_minor: int = 0,
    draw: Draw | None = None,
) -> Consumption:
    """A consumption transaction shaped as ``ledger.posting`` writes it; a credit drawn
    is purchased credit without VAT at purchase unless ``draw`` says otherwise."""
    accounts = organization_accounts([customer(org)])[org]
    postings = [
        Posting(
            income_account(family),
            -amount,
            "EUR",
            ((keys.RATED_AMOUNT, Decimal(amount).scaleb(-2)),),
        )
        for family, amount in income_minor.items()
    ]
    if credit_minor:
        postings.append(Posting(accounts.credits, credit_minor, "EUR", ((keys.CREDIT_LOT, "l"),)))
    postings.append(Posting(accounts.unbilled, unbilled_minor, "EUR"))
    txn_id = keys.usage_txn_id(org, "2026-10", None)
    transaction = Transaction(NOVEMBER, txn_id, "Usage 2026-10", tuple(postings))
    draws = (draw or Draw("l", "purchase", credit_minor),) if credit_minor else ()
    return Consumption(transaction, org, "2026-10", OCTOBER, NOVEMBER, "rated/x", None, draws=draws)


def due(payer: Customer, *items: Consumption) -> DueInvoice:
    key = keys.InvoiceKey(payer.id, "2026-10").text
    names = tuple(sorted({(item.org, f"{item.org.title()} Team") for item in items}))
    return DueInvoice(key, payer, "2026-10", OCTOBER, NOVEMBER, items, names)


def group(family: str, meter: str, resource: str, quantity: int, amount_minor: int) -> RatedGroup:
    """Rated detail in full precision (atto) for an amount of whole cents."""
    price_pico = amount_minor * 10**10 // quantity
    return RatedGroup(family, meter, resource, 0, False, price_pico, quantity * 10**6, 0)._replace(
        amount_atto=amount_minor * 10**16
    )


def test_lines_follow_the_rated_detail_and_sum_to_the_posting() -> None:
    acme = customer()
    item = consumption("acme", {"Compute": 1000, "Network": 250}, unbilled_minor=1250)
    rated = {
        item.txn_id: [
            group("Compute", "cpu", "acme/app-1", 3600 * 600, 600),
            group("Compute", "cpu", "acme/app-2", 3600 * 400, 400),
            group("Network", "egress", "acme/lb", 25, 250),
        ]
    }
    derived = derive(due(acme, item), rated, CATALOG, SELLER, TERMS)
    document = derived.document
    assert [line.description for line in document.lines] == [
        "vCPU · acme/app-1",
        "vCPU · acme/app-2",
        "Egress · acme/lb",
    ]
    assert [line.net_minor for line in document.lines] == [600, 400, 250]
    assert [line.unit_code for line in document.lines] == ["HUR", "HUR", "E34"]
    assert document.lines[0].quantity == Decimal(600)  # hours of vCPU
    assert document.net_minor == 1250
    assert document.tax_minor == 250  # 20 % French VAT, rounded once
    assert document.vat_breakdown()[0].category is VatCategory.STANDARD
    assert document.number == TERMS.number and document.buyer_reference == "acme"
    assert document.due_date == date(2026, 12, 5)  # 30 days, the default terms
    assert derived.unbilled_minor == (("acme", 1250),)
    assert derive(due(acme, item), rated, CATALOG, SELLER, TERMS) == derived  # pure


def test_credits_drawn_are_prepaid_and_a_central_invoice_names_each_team() -> None:
    parent = customer("group")
    team = consumption("team-a", {"Compute": 500}, unbilled_minor=300, credit_minor=200)
    rated = {team.txn_id: [group("Compute", "cpu", "team-a/app", 3600 * 500, 500)]}
    document = derive(due(parent, team), rated, CATALOG, SELLER, TERMS).document
    assert document.lines[0].section == "Team-A Team"  # the team's name, not its id
    assert "[team-a]" not in document.lines[0].description
    assert document.paid_minor == 200
    assert document.due_minor == 500 + 100 - 200


def test_detail_that_no_longer_explains_the_posting_is_refused() -> None:
    item = consumption("acme", {"Compute": 1000}, unbilled_minor=1000)
    drifted = {item.txn_id: [group("Compute", "cpu", "acme/app-1", 3600, 999)]}
    with pytest.raises(InvoicingError, match="no longer explains the posting"):
        derive(due(customer(), item), drifted, CATALOG, SELLER, TERMS)
    with pytest.raises(InvoicingError, match="no rated detail"):
        derive(due(customer(), item), {}, CATALOG, SELLER, TERMS)


@pytest.mark.parametrize("held_in", ["unbilled", "credits"])
def test_a_provisioned_invoice_itemizes_the_provision_and_regularizes_the_rest(
    held_in: str,
) -> None:
    """The over-consumption is owed (unbilled, an asset); books of earlier versions held
    it as a debit in the credits account, and their invoices still clear it there."""
    provisioned = customer("prov", billing_mode="provisioned")
    accounts = organization_accounts([provisioned])["prov"]
    credits = accounts.credits
    over_account = accounts.unbilled if held_in == "unbilled" else credits
    postings = (
        Posting(income_account("Compute"), -800, "EUR", ((keys.RATED_AMOUNT, Decimal("8")),)),
        Posting(credits, 500, "EUR", ((keys.CREDIT_LOT, "lot-1"),)),
        Posting(over_account, 300, "EUR", ((keys.OVER_CONSUMPTION, True),)),
    )
    transaction = Transaction(NOVEMBER, "usage:prov:2026-10", "Usage 2026-10", postings)
    item = Consumption(transaction, "prov", "2026-10", OCTOBER, NOVEMBER, "rated/x", None)
    derived = derive(due(provisioned, item), {}, CATALOG, SELLER, TERMS)
    assert [(line.description, line.net_minor) for line in derived.document.lines] == [
        (
            "Credit provision for November 2026: Compute (as consumed in October 2026)",
            800,
        ),
        ("Regularization of over-consumption in October 2026", 300),
    ]
    document = derived.document
    assert (document.provision_start, document.provision_end) == (NOVEMBER, date(2026, 11, 30))
    assert (document.period_start, document.period_end) == (OCTOBER, date(2026, 10, 31))
    if held_in == "unbilled":
        assert derived.credits_minor == (("prov", 800),)  # the provision
        assert derived.unbilled_minor == (("prov", 300),)  # the over-consumption, cleared
    else:
        assert derived.credits_minor == (("prov", 1100),)
        assert derived.unbilled_minor == ()


def test_reverse_charge_for_an_eu_business_elsewhere() -> None:
    german = customer("berlin", country="DE", vat_id="DE136695976")
    item = consumption("berlin", {"Network": 250}, unbilled_minor=250)
    rated = {item.txn_id: [group("Network", "egress", "berlin/lb", 25, 250)]}
    document = derive(due(german, item), rated, CATALOG, SELLER, TERMS).document
    assert document.tax_minor == 0
    assert document.vat_breakdown()[0].category is VatCategory.REVERSE_CHARGE


def _compute(org: str, income: int, unbilled: int, draw: Draw | None = None) -> tuple[Any, Any]:
    item = consumption(org, {"Compute": income}, unbilled, draw.amount_minor if draw else 0, draw)
    rated = {item.txn_id: [group("Compute", "cpu", f"{org}/app", 3600 * income, income)]}
    return item, rated


def test_granted_credit_lowers_the_taxable_base_and_purchased_credit_does_not() -> None:
    """25.00 granted on 123.45 of usage: VAT on 98.45 (19.69), not on 123.45 (24.69);
    the same 25.00 purchased (VAT at consumption) is a payment: VAT on 123.45."""
    acme = customer()
    gift, rated = _compute("acme", 12345, 9845, Draw("welcome", "grant", 2500))
    derived = derive(due(acme, gift), rated, CATALOG, SELLER, TERMS)
    document = derived.document
    reduction = document.lines[-1]
    assert (reduction.quantity, reduction.unit_price, reduction.net_minor) == (-1, 25, -2500)
    assert reduction.description == "Promotional credit, a price reduction (ref. welcome)"
    assert (reduction.shown_quantity, reduction.shown_price) == (1, -25)  # reads 1 × −25.00
    assert document.vat_breakdown()[0].base_minor == 9845
    assert document.tax_minor == 1969  # 98.45 × 20 % = 19.69
    assert (document.paid_minor, document.due_minor) == (0, 9845 + 1969)
    assert derived.granted_minor == 2500 and derived.unbilled_minor == (("acme", 9845),)

    bought, rated = _compute("acme", 12345, 9845, Draw("pack", "purchase", 2500))
    document = derive(due(acme, bought), rated, CATALOG, SELLER, TERMS).document
    assert document.vat_breakdown()[0].base_minor == 12345
    assert document.tax_minor == 2469  # 24.69: the gift is not taxed, the payment is
    assert (document.paid_minor, document.due_minor) == (2500, 12345 + 2469 - 2500)


def test_credit_invoiced_at_purchase_is_deducted_with_its_vat_and_not_taxed_again() -> None:
    """100.00 bought with a prepayment invoice (VAT 20.00); 150.00 consumed, 100.00 of it
    from the credit: the invoice states VAT 30.00, deducts 120.00 paid (20.00 of it VAT
    already invoiced) and asks for 60.00; the ledger books 10.00 of VAT."""
    acme = customer()
    item, rated = _compute("acme", 15000, 5000, Draw("pack", "purchase", 10000, 2000, "INV-1"))
    document = derive(due(acme, item), rated, CATALOG, SELLER, TERMS).document
    assert document.tax_minor == 3000
    assert (document.paid_minor, document.prepaid_vat_minor) == (12000, 2000)
    assert document.prepayment_numbers == ("INV-1",)
    assert document.due_minor == 6000


def test_oss_charges_a_consumer_the_rate_of_their_country() -> None:
    consumer = customer("hans", country="DE")
    item, rated = _compute("hans", 10000, 10000)
    oss_terms = TERMS._replace(invoicing=InvoicingSettings(oss=True))
    document = derive(due(consumer, item), rated, CATALOG, SELLER, oss_terms).document
    vat = document.lines[0].vat
    assert (vat.category, vat.rate_percent, vat.country) == (VatCategory.STANDARD, 19, "DE")
    assert document.tax_minor == 1900
    overridden = TERMS._replace(invoicing=InvoicingSettings(oss=True, oss_rates={"DE": "7"}))
    assert derive(due(consumer, item), rated, CATALOG, SELLER, overridden).document.tax_minor == 700
    without = derive(due(consumer, item), rated, CATALOG, SELLER, TERMS).document
    assert (without.tax_minor, without.lines[0].vat.country) == (2000, "FR")  # seller's rate


def test_services_outside_the_eu_are_not_subject_to_eu_vat() -> None:
    american = customer("nyc", country="US")
    item, rated = _compute("nyc", 10000, 10000)
    document = derive(due(american, item), rated, CATALOG, SELLER, TERMS).document
    vat = document.lines[0].vat
    assert (vat.category, vat.exemption_code) == (VatCategory.OUTSIDE_SCOPE, "VATEX-EU-O")
    assert "art. 259-1" in (vat.exemption_reason or "")  # a French seller cites the CGI
    assert document.tax_minor == 0


def test_every_invoice_says_how_to_pay() -> None:
    item, rated = _compute("acme", 10000, 10000)
    document = derive(due(customer(), item), rated, CATALOG, SELLER, TERMS).document
    assert document.payment is not None
    assert document.payment.reference == TERMS.number
    assert (document.payment.iban, document.payment.bic) == (SELLER.iban, SELLER.bic)


def test_documents_that_would_be_invalid_e_invoices_are_refused_before_numbering() -> None:
    item, rated = _compute("nyc", 10000, 10000)
    american = customer("nyc", country="US")
    document = derive(due(american, item), rated, CATALOG, SELLER, TERMS).document
    check_renderable(document)  # a French seller with its SIREN: fine
    anonymous = replace(document, seller=replace(document.seller, siren=None))
    with pytest.raises(DocumentError, match="BR-CO-26"):
        check_renderable(anonymous)
    with pytest.raises(DocumentError, match="BR-CO-25"):
        check_renderable(replace(document, due_date=None))
    note = replace(document, type=DocumentType.CREDIT_NOTE, due_date=None)
    with pytest.raises(DocumentError, match="BR-FR-CO-05"):
        check_renderable(note)
    french = derive(due(customer(), item), rated, CATALOG, SELLER, TERMS).document
    mixed = replace(document, lines=(*document.lines, *french.lines))
    with pytest.raises(DocumentError, match="BR-O-11"):
        check_renderable(mixed)
