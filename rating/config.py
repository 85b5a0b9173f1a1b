"""Workspace configuration: settings, catalog and customers, as validated pydantic models.

The files are TOML, read with ``parse_float=Decimal`` so a price written as a bare
number is still exact. Every problem is reported with the file and the field path
(``customer[3] (org-acme).vat_id: ...``), all problems of a file at once.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum.eu import vat as eu_vat
from stdnum.fr import siren as fr_siren

from beanbill.rating.characters import REFUSED_CHARACTERS
from beanbill.rating.errors import ConfigError
from beanbill.rating.money import (
    MAX_BOUND_MICRO,
    MAX_PRICE,
    MAX_PRICE_DECIMALS,
    QUANTITY_ONE_MICRO,
    QUANTITY_SCALE,
    decimal_places,
    is_invoiceable_currency,
)
from beanbill.rating.units import (
    BASIS_UNITS,
    COUNTER_BASES,
    INTERVAL_BASES,
    UNIT_CODES,
    PriceBasis,
    default_unit_code,
    is_time_code,
)

IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FAMILY_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]{0,31}$")
EU_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    ]
)


def _identifier(value: str) -> str:
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


MAX_TEXT_LENGTH = 500  # any configured text (addresses, notes, mentions)
MAX_NAME_LENGTH = 200  # a name: it heads invoices, e-mails and ledger narrations


def _plain_text(value: str) -> str:
    if REFUSED_CHARACTERS.search(value):
        raise ValueError(
            "contains control or bidirectional-override characters, or non-characters "
            "(an invoice's XML and PDF cannot hold them)"
        )
    if not value.strip():
        raise ValueError("must not be blank")
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_TEXT_LENGTH}")
    return value


def _name(value: str) -> str:
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    return _plain_text(value)


def _currency(value: str) -> str:
    if not is_invoiceable_currency(value):
        raise ValueError(
            f"{value!r} is not an ISO 4217 currency code beanbill can invoice in "
            "(three capital letters, e.g. EUR, USD, JPY)"
        )
    return value


def _price(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError(f"price {value} must be a finite number >= 0")
    if decimal_places(value) > MAX_PRICE_DECIMALS:
        raise ValueError(f"price {value} has more than {MAX_PRICE_DECIMALS} decimal places")
    if value > MAX_PRICE:
        raise ValueError(f"price {value} is above the largest price beanbill rates ({MAX_PRICE})")
    return value


def _usage_quantity(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError(f"quantity {value} must be a finite number >= 0")
    if decimal_places(value) > QUANTITY_SCALE:
        raise ValueError(f"quantity {value} has more than {QUANTITY_SCALE} decimal places")
    return value


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code such as 'FR'")
    return value


def checked_email_address(value: str) -> str:
    """An address SMTP can deliver to, normalized (RFC 5321/5322 syntax, internationalized
    domains); anything a header could be injected through is refused by the syntax check."""
    if REFUSED_CHARACTERS.search(value):
        raise ValueError("an e-mail address cannot hold control or non-characters")
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"{value!r} is not an e-mail address: {error}") from None
    # An internationalized domain in its ASCII form (IDNA) when the local part allows:
    # every SMTP server takes it, without the SMTPUTF8 extension.
    return str(checked.ascii_email or checked.normalized)


Identifier = Annotated[str, AfterValidator(_identifier)]
EmailAddress = Annotated[str, AfterValidator(checked_email_address)]
PlainText = Annotated[str, AfterValidator(_plain_text)]
Name = Annotated[str, AfterValidator(_name)]
Price = Annotated[Decimal, AfterValidator(_price)]
UsageQuantity = Annotated[Decimal, AfterValidator(_usage_quantity)]
Country = Annotated[str, AfterValidator(_country)]
CurrencyCode = Annotated[str, AfterValidator(_currency)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_vat_id(vat_id: str, country: str) -> str:
    """Check an EU VAT id offline (checksum); a wrong one is an error, never ignored."""
    compact = eu_vat.compact(vat_id)
    if not eu_vat.is_valid(compact):
        raise ValueError(f"VAT id {vat_id!r} is not valid (checksum or format)")
    prefix = compact[:2]
    expected = "EL" if country == "GR" else country
    if country in EU_COUNTRIES and prefix != expected:
        raise ValueError(f"VAT id {vat_id!r} does not belong to country {country}")
    return compact


def validate_iban(value: str) -> str:
    """An IBAN checked offline (country format and check digits), in its compact form."""
    try:
        return str(stdnum_iban.validate(value))
    except ValueError as error:  # stdnum's ValidationError is a ValueError
        raise ValueError(f"IBAN {value!r} is not valid ({error})") from error


def validate_bic(value: str) -> str:
    try:
        return str(stdnum_bic.validate(value))
    except ValueError as error:
        raise ValueError(f"BIC {value!r} is not valid ({error})") from error


def validate_siren(siren: str) -> str:
    compact = fr_siren.compact(siren)
    if not fr_siren.is_valid(compact):
        raise ValueError(f"SIREN {siren!r} is not valid")
    return str(compact)


# --- settings -----------------------------------------------------------------------------


class Seller(StrictModel):
    legal_name: Name
    legal_form: PlainText | None = None
    share_capital: PlainText | None = None
    address: list[PlainText] = Field(min_length=1, max_length=6)
    country: Country
    vat_id: str | None = None
    registration: PlainText | None = Field(
        default=None, description="Company registration, e.g. 'RCS Paris 732 829 320'"
    )
    siren: str | None = Field(default=None, description="French SIREN (9 digits), for e-invoices")
    email: PlainText | None = Field(
        default=None, description="Contact e-mail printed on every invoice (BT-43)"
    )
    legal_mentions: list[PlainText] = []
    # Where customers pay by transfer (BG-17): printed on every invoice with its reference.
    iban: str | None = None
    bic: str | None = None

    @field_validator("iban")
    @classmethod
    def _iban_is_valid(cls, value: str | None) -> str | None:
        """Checked on its own field, so the error names ``iban``."""
        return None if value is None else validate_iban(value)

    @field_validator("bic")
    @classmethod
    def _bic_is_valid(cls, value: str | None) -> str | None:
        return None if value is None else validate_bic(value)

    @model_validator(mode="after")
    def _vat_matches_country(self) -> Self:
        if self.vat_id is not None:
            object.__setattr__(self, "vat_id", validate_vat_id(self.vat_id, self.country))
        if self.siren is not None:
            object.__setattr__(self, "siren", validate_siren(self.siren))
        if self.bic is not None and self.iban is None:
            raise ValueError("a BIC is given without the IBAN it belongs to")
        return self


class BillingSettings(StrictModel):
    currency: CurrencyCode = "EUR"
    timezone: str = "UTC"
    max_event_duration_days: int = Field(default=31, ge=1, le=92)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value


class EngineSettings(StrictModel):
    """The rating engine: bounds for the embedded DuckDB (beyond ``memory_limit`` it spills
    to ``state/``), or Spark."""

    memory_limit: str = Field(default="4GB", pattern=r"^\d+(\.\d+)?\s*(MB|GB|MiB|GiB)$")
    threads: int = Field(default=0, ge=0, le=256, description="0 = one per core")
    # Where the rating's Ibis expressions run: the embedded DuckDB, or Spark (the same
    # expressions on PySpark; the usage store and rated output stay Parquet either way).
    backend: Literal["duckdb", "spark"] = "duckdb"
    # Spark's master: local[*] on one machine, spark://host:7077 (or yarn, k8s://…) on a cluster.
    spark_master: str = Field(
        default="local[*]", pattern=r"^(local(\[(\*|\d+)\])?|[a-z0-9]+://[^\s]+|yarn)$"
    )


class PostingGranularity(StrEnum):
    PERIOD = "period"
    DAILY = "daily"


class LedgerSettings(StrictModel):
    """How consumption is posted, and where the money of credit purchases arrives.

    ``granularity``: one consumption transaction per organization and billing period, or
    per day. ``credit_purchase_account``: the account a ``credits buy`` is paid into, the
    clearing account of the payment processor that takes purchases (Stripe's by default).
    """

    granularity: PostingGranularity = PostingGranularity.PERIOD
    credit_purchase_account: str = Field(
        default="Assets:Stripe:Balance", pattern=r"^Assets(:[A-Z0-9][A-Za-z0-9-]*)+$"
    )


class InvoicingSettings(StrictModel):
    """Numbering series, payment terms and the mentions every invoice carries."""

    invoice_series: str = Field(default="INV-{year}", pattern=r"^[A-Z][A-Z0-9-]*(\{year\})?$")
    credit_note_series: str = Field(default="CN-{year}", pattern=r"^[A-Z][A-Z0-9-]*(\{year\})?$")
    payment_days: int = Field(default=30, ge=0, le=120)
    vat_rate_percent: Decimal | None = Field(default=None, ge=0, le=100)
    late_penalty_note: PlainText = (
        "Late payment penalty: three times the French legal interest rate."
    )
    recovery_indemnity_note: PlainText = "Fixed indemnity for recovery costs: 40 EUR."
    early_payment_note: PlainText = "No discount for early payment."
    # An amount to pay above 0 and below this is not invoiced: it is carried to the payer's
    # next period and shown there (Stripe cannot collect under 0.50 EUR). 0: no minimum.
    minimum_amount: Price = Decimal("0")
    # When VAT on purchased credit is due. "at_purchase" (default): a payment on account
    # for services makes VAT chargeable when it is received (Directive 2006/112/EC art. 65),
    # so each purchase issues a prepayment invoice (type 386) with VAT, and consumption
    # invoices deduct it. "at_consumption": credit that is a multi-purpose voucher (usable
    # for supplies whose VAT treatment is not known when it is sold; art. 30a-30b) is taxed
    # only when it is used, on the consumption invoice.
    credits_vat: Literal["at_purchase", "at_consumption"] = "at_purchase"
    # One-Stop Shop: B2C customers in another EU country are charged their country's
    # standard rate (art. 58 for electronically supplied services), declared per country.
    oss: bool = False
    oss_rates: dict[Country, Annotated[Decimal, Field(ge=0, le=100)]] = {}

    @field_validator("oss_rates")
    @classmethod
    def _oss_rates_are_eu(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        outside = sorted(set(rates) - EU_COUNTRIES)
        if outside:
            raise ValueError(f"OSS rates are for EU countries only, not {', '.join(outside)}")
        return rates


class StripeSettings(StrictModel):
    """The Stripe target. Keys never live here: only the names of the variables holding them."""

    enabled: bool = True
    api_base: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    api_key_env: str = Field(default="STRIPE_SECRET_KEY", pattern=r"^[A-Z][A-Z0-9_]*$")
    webhook_secret_env: str = Field(default="STRIPE_WEBHOOK_SECRET", pattern=r"^[A-Z][A-Z0-9_]*$")
    collection_method: Literal["send_invoice", "charge_automatically"] = "send_invoice"
    send_invoices: bool = False
    timeout_seconds: int = Field(default=30, ge=1, le=120)
    requests_per_second: int = Field(default=20, ge=1, le=100)  # test mode allows 25
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)

    @model_validator(mode="after")
    def _sends_only_what_stripe_sends(self) -> Self:
        if self.send_invoices and self.collection_method != "send_invoice":
            raise ValueError(
                "send_invoices needs collection_method = 'send_invoice' (Stripe sends only "
                "those; it charges the others)"
            )
        return self


class TrytonTax(StrictModel):
    """Which Tryton tax carries beanbill's VAT of one category and rate (none: no tax)."""

    category: Literal["S", "AE", "O", "G"]  # beanbill's VAT categories (EN16931 codes)
    rate_percent: Annotated[Decimal, Field(ge=0, le=100)]
    tax: PlainText | None = None  # the tax's name in Tryton; omitted: the line bears none


class TrytonSettings(StrictModel):
    """The Tryton ERP target (JSON-RPC). The password never lives here: only the name of
    the environment variable holding it. Accounts are Tryton account codes, taxes Tryton
    tax names; ``beanbill sync push`` checks each one exists before pushing anything."""

    enabled: bool = True
    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    database: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
    user: str = Field(min_length=1, max_length=64, pattern=r"^[^\s]+$")
    password_env: str = Field(default="TRYTON_PASSWORD", pattern=r"^[A-Z][A-Z0-9_]*$")
    # Product family (catalog ``family``, "Addons", "Services") → revenue account code.
    revenue_accounts: dict[str, PlainText] = {}
    # Lines of no single family (discounts, promotional credit, regularizations).
    default_revenue_account: PlainText
    # The prepaid credit deducted from an invoice: a (negative) line on this account.
    prepaid_account: PlainText | None = None
    taxes: list[TrytonTax] = Field(default=[], max_length=100)
    payment_method: PlainText = "Stripe"  # records the ledger's payments on ERP invoices
    timeout_seconds: int = Field(default=30, ge=1, le=300)

    @field_validator("revenue_accounts")
    @classmethod
    def _families_are_names(cls, accounts: dict[str, str]) -> dict[str, str]:
        wrong = sorted(family for family in accounts if not FAMILY_PATTERN.fullmatch(family))
        if wrong:
            raise ValueError(f"not product family names: {', '.join(wrong)}")
        return accounts

    @model_validator(mode="after")
    def _one_tax_per_rate(self) -> Self:
        keys = [(tax.category, tax.rate_percent.normalize()) for tax in self.taxes]
        twice = sorted({f"{c} {r}%" for c, r in keys if keys.count((c, r)) > 1})
        if twice:
            raise ValueError(f"VAT mapped twice: {', '.join(twice)}")
        return self


class EmailSettings(StrictModel):
    """The e-mail target: each issued document sent once to its customer's billing
    addresses over SMTP. The password never lives here: only the name of the environment
    variable holding it (``user`` unset: no AUTH)."""

    enabled: bool = True
    host: str = Field(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}$")
    port: int = Field(default=587, ge=1, le=65535)
    # starttls: plain connection upgraded by STARTTLS (port 587, required when offered
    # nothing else is accepted); tls: implicit TLS (port 465); none: loopback relays only.
    security: Literal["starttls", "tls", "none"] = "starttls"
    user: str | None = Field(default=None, min_length=1, max_length=254, pattern=r"^[^\s]+$")
    password_env: str = Field(default="SMTP_PASSWORD", pattern=r"^[A-Z][A-Z0-9_]*$")
    sender: EmailAddress
    sender_name: Name | None = None  # default: the seller's legal name
    reply_to: EmailAddress | None = None
    bcc: list[EmailAddress] = Field(default=[], max_length=10)  # the finance mailbox
    timeout_seconds: int = Field(default=30, ge=1, le=300)
    # Messages per second at most (many relays throttle senders); 0: no limit.
    messages_per_second: int = Field(default=0, ge=0, le=1000)
    # Documents issued before this day are not sent (a workspace with a history turning
    # e-mail on); unset: every issued document.
    issued_since: date | None = None
    # A private CA to trust for the server's certificate (a relay inside the company).
    ca_file: PlainText | None = None


class HubSpotSettings(StrictModel):
    """The HubSpot CRM target: each organization a company, upserted by the unique
    property ``beanbill_org_id``, its billing properties kept current. The private app's
    token never lives here: only the name of the environment variable holding it."""

    enabled: bool = True
    api_base: str = Field(default="https://api.hubapi.com", pattern=r"^https?://[^\s]+$")
    token_env: str = Field(default="HUBSPOT_TOKEN", pattern=r"^[A-Z][A-Z0-9_]*$")
    batch_size: int = Field(default=100, ge=1, le=100)  # CRM v3 batch endpoints take 100
    timeout_seconds: int = Field(default=30, ge=1, le=120)
    # The property group the billing properties are created in (created if missing).
    property_group: str = Field(default="beanbill_billing", pattern=r"^[a-z][a-z0-9_]{0,99}$")


class SyncSettings(StrictModel):
    """The nightly push: how hard to try, how many at once, and where to."""

    attempts: int = Field(default=6, ge=1, le=12)
    concurrency: int = Field(default=4, ge=1, le=16)
    max_wait_seconds: int = Field(default=30, ge=1, le=300)
    # Names this workspace in remote systems (idempotency keys, metadata): two workspaces
    # sharing one Stripe account must have different ids. Unset: derived from the seller.
    workspace_id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    stripe: StripeSettings | None = None
    tryton: TrytonSettings | None = None
    email: EmailSettings | None = None
    hubspot: HubSpotSettings | None = None

    def workspace_id_of(self, seller: Seller) -> str:
        """This workspace's id in remote systems: the configured one, else the seller's."""
        if self.workspace_id:
            return self.workspace_id
        identity = seller.vat_id or seller.siren or seller.legal_name
        return "ws-" + hashlib.sha256(identity.encode()).hexdigest()[:12]


class StateSettings(StrictModel):
    """Where the shared state lives (sync state, invoice numbering, the webhook inbox).

    Unset ``url``: SQLite files in the workspace's ``state/`` folder (the embedded
    default, one machine). A ``postgresql://user@host:port/database`` URL: a PostgreSQL
    server that several processes and machines share. The password never lives here: libpq
    reads it from the environment variable ``password_env`` names (or ``~/.pgpass``)."""

    url: str | None = Field(default=None, pattern=r"^postgres(ql)?://[^\s]*$", max_length=2000)
    password_env: str = Field(default="PGPASSWORD", pattern=r"^[A-Z][A-Z0-9_]*$")

    @field_validator("url")
    @classmethod
    def _no_password_in_the_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).password is not None:
            raise ValueError(
                "holds a password: put none in the URL, set it in the variable that "
                "password_env names"
            )
        return value


class Paths(StrictModel):
    """Where each kind of data lives, relative to the workspace folder."""

    usage: str = "usage"
    rated: str = "rated"
    rejects: str = "rejects"
    reports: str = "reports"
    state: str = "state"
    ledger: str = "ledger.beancount"  # the main file; generated files sit beside it
    invoices: str = "invoices"


class Settings(StrictModel):
    seller: Seller
    billing: BillingSettings = BillingSettings()
    engine: EngineSettings = EngineSettings()
    ledger: LedgerSettings = LedgerSettings()
    invoicing: InvoicingSettings = InvoicingSettings()
    sync: SyncSettings = SyncSettings()
    state: StateSettings = StateSettings()
    paths: Paths = Paths()


# --- catalog ------------------------------------------------------------------------------


class MeterKind(StrEnum):
    INTERVAL = "interval"
    COUNTER = "counter"


class TierMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"


class BillingPeriod(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class BillingMode(StrEnum):
    POSTPAID = "postpaid"
    PREPAID = "prepaid"
    PROVISIONED = "provisioned"


class Tier(StrictModel):
    up_to: UsageQuantity | None = None
    price: Price


class Band(StrictModel):
    """One normalized pricing band between ``lower`` and ``upper`` at ``price`` per basis
    unit (all three in the meter's price basis): graduated, the units past ``lower`` up to
    ``upper``; volume, every unit past the free allowance when the period's total is in
    (lower, upper]."""

    index: int
    lower: Decimal
    upper: Decimal | None
    price: Decimal
    is_free: bool


class PriceVersion(StrictModel):
    """Prices in force from ``effective`` (a day in the period time zone) on.

    Prices, ``free`` and tier bounds (``up_to``) are all in the meter's price basis
    (``Meter.per``): with ``per = "month"`` on a GB meter, "the first 100 GB-month free, up
    to 10,000 GB-month at 0.01, beyond at 0.008". ``free`` units come first in every
    billing period; tier bounds count the period's usage from zero, free units included,
    and are inclusive: a volume total of exactly ``up_to`` is priced by that tier.
    """

    effective: date
    mode: TierMode = TierMode.GRADUATED
    free: UsageQuantity = Decimal(0)
    price: Price | None = None
    tiers: list[Tier] = []

    @model_validator(mode="after")
    def _tiers_are_consistent(self) -> Self:
        if (self.price is None) == (not self.tiers):
            raise ValueError("give either 'price' (flat) or 'tiers', not both or neither")
        tiers = self.tiers or [Tier(price=self.price or Decimal(0))]
        if tiers[-1].up_to is not None:
            raise ValueError("the last tier must have no 'up_to' (it is unbounded)")
        bounds = [tier.up_to for tier in tiers[:-1]]
        if any(bound is None for bound in bounds):
            raise ValueError("only the last tier may omit 'up_to'")
        previous = self.free
        for bound in bounds:
            if bound is None or bound <= previous:
                raise ValueError("tier bounds must increase strictly and exceed the free allowance")
            previous = bound
        return self

    def bands(self) -> list[Band]:
        tiers = self.tiers or [Tier(price=self.price or Decimal(0))]
        bands: list[Band] = []
        if self.free > 0:
            bands.append(
                Band(index=0, lower=Decimal(0), upper=self.free, price=Decimal(0), is_free=True)
            )
        lower = self.free
        for tier in tiers:
            bands.append(
                Band(
                    index=len(bands), lower=lower, upper=tier.up_to, price=tier.price, is_free=False
                )
            )
            lower = tier.up_to if tier.up_to is not None else lower
        return bands


MAX_MINIMUM_SECONDS = 86_400  # a day: events longer than the minimum are never extended


def _unit_code(value: str) -> str:
    if value not in UNIT_CODES:
        raise ValueError(
            f"unit_code {value!r} is not a UN/ECE Recommendation 20 code beanbill supports "
            f"({', '.join(UNIT_CODES)})"
        )
    return value


UnitCodeText = Annotated[str, AfterValidator(_unit_code)]


class Meter(StrictModel):
    """A metered resource. ``per``: the basis its prices, free allowance and tier bounds
    are written in, as the provider publishes them (interval meters: second, the default,
    minute, hour, day or month of 730 hours; counters: unit, the default, thousand or
    million; see ``rating.units``). ``unit_code``: the UN/ECE Recommendation 20 code of its
    invoice lines, when the default derived from basis and unit does not fit."""

    id: Identifier
    name: Name
    unit: PlainText
    kind: MeterKind
    family: str = Field(description="Product family, an account component such as 'Compute'")
    price: list[PriceVersion] = Field(min_length=1)
    per: PriceBasis | None = None
    unit_code: UnitCodeText | None = None
    # Interval meters: each event is billed at least this long (a provider's per-event
    # minimum, e.g. 60 s); timestamps are whole seconds, so a 0.8 s job is 0 s without it.
    minimum_seconds: int = Field(default=0, ge=0, le=MAX_MINIMUM_SECONDS)

    @model_validator(mode="after")
    def _minimum_is_for_intervals(self) -> Self:
        if self.minimum_seconds and self.kind is not MeterKind.INTERVAL:
            raise ValueError("minimum_seconds applies to interval meters only")
        return self

    @model_validator(mode="after")
    def _basis_fits_kind(self) -> Self:
        """An interval meter's usage is unit-seconds, priced per a length of time; a
        counter's is units, priced per a number of them. Nothing converts one to the other."""
        interval = self.kind is MeterKind.INTERVAL
        bases = INTERVAL_BASES if interval else COUNTER_BASES
        if self.per is not None and self.per not in bases:
            raise ValueError(
                f"per = {self.per.value!r} is not a basis of {self.kind.value} meters: their "
                f"prices are per {', '.join(basis.value for basis in bases)}"
            )
        if self.unit_code is not None and is_time_code(self.unit_code) != interval:
            fitting = [code for code in UNIT_CODES if is_time_code(code) == interval]
            measures = "a time" if interval else "a number of units"
            raise ValueError(
                f"unit_code {self.unit_code!r} does not fit {self.kind.value} meters, whose "
                f"usage is {measures}: use one of {', '.join(fitting)}"
            )
        return self

    @model_validator(mode="after")
    def _bounds_are_ratable(self) -> Self:
        """Free allowances and tier bounds, in micro rating units, must stay in range."""
        for version in self.price:
            for bound in [version.free, *(tier.up_to for tier in version.tiers)]:
                if bound is not None and self.bound_micro(bound) >= MAX_BOUND_MICRO:
                    raise ValueError(
                        f"{bound} per {self.price_basis.value} is beyond the largest usage "
                        f"beanbill can rate ({MAX_BOUND_MICRO} micro {self.rating_unit})"
                    )
        return self

    @property
    def price_basis(self) -> PriceBasis:
        if self.per is not None:
            return self.per
        return PriceBasis.SECOND if self.kind is MeterKind.INTERVAL else PriceBasis.UNIT

    @property
    def basis_units(self) -> int:
        """How many rating units (unit-seconds or units) one price basis holds."""
        return BASIS_UNITS[self.price_basis]

    @property
    def rating_unit(self) -> str:
        return f"{self.unit}-seconds" if self.kind is MeterKind.INTERVAL else self.unit

    @property
    def invoice_unit_code(self) -> str:
        if self.unit_code is not None:
            return self.unit_code
        return default_unit_code(self.kind is MeterKind.INTERVAL, self.price_basis, self.unit)

    def bound_micro(self, bound: Decimal) -> int:
        """A free allowance or tier bound (in basis units) in micro rating units, exactly:
        bounds have at most six decimals and a basis is a whole number of rating units."""
        return int(bound * self.basis_units * QUANTITY_ONE_MICRO)

    @field_validator("family")
    @classmethod
    def _family_is_account_component(cls, value: str) -> str:
        if not FAMILY_PATTERN.fullmatch(value):
            raise ValueError(f"family {value!r} must be a capitalized word such as 'Compute'")
        return value

    @field_validator("price")
    @classmethod
    def _versions_are_ordered(cls, versions: list[PriceVersion]) -> list[PriceVersion]:
        dates = [version.effective for version in versions]
        if len(set(dates)) != len(dates):
            raise ValueError("two price versions share one effective date")
        return sorted(versions, key=lambda version: version.effective)


class Addon(StrictModel):
    """A price per billing period, prorated per second over the part of the period the
    subscription covers (``prorate = false``: the whole price for every period it touches).
    """

    id: Identifier
    name: Name
    price: dict[BillingPeriod, Price] = Field(min_length=1)
    prorate: bool = True


class Service(StrictModel):
    """A one-shot operation, reported as a counter event whose ``meter`` is the service id,
    priced per unit (an operation)."""

    id: Identifier
    name: Name
    unit: PlainText = "operation"
    price: Price
    effective: date = date(2000, 1, 1)
    unit_code: UnitCodeText | None = None

    @field_validator("unit_code")
    @classmethod
    def _counts_operations(cls, value: str | None) -> str | None:
        if value is not None and is_time_code(value):
            raise ValueError(f"unit_code {value!r} measures time; a service counts operations")
        return value

    def as_meter(self) -> Meter:
        version = PriceVersion(effective=self.effective, price=self.price)
        return Meter(
            id=self.id,
            name=self.name,
            unit=self.unit,
            kind=MeterKind.COUNTER,
            family="Services",
            price=[version],
            unit_code=self.unit_code,
        )


class Catalog(StrictModel):
    meter: list[Meter] = []
    addon: list[Addon] = []
    service: list[Service] = []

    @model_validator(mode="after")
    def _ids_are_unique(self) -> Self:
        """Meters, services and add-ons share one id space: a rated line names one of them."""
        ids = [meter.id for meter in self.meter]
        ids += [service.id for service in self.service]
        ids += [addon.id for addon in self.addon]
        duplicates = sorted({item for item in ids if ids.count(item) > 1})
        if duplicates:
            raise ValueError(
                f"ids used twice among meters, services and add-ons: {', '.join(duplicates)}"
            )
        return self

    def rated_meters(self) -> list[Meter]:
        """Meters and services alike: a service is a counter meter of family 'Services'."""
        return [*self.meter, *(service.as_meter() for service in self.service)]

    def addon_by_id(self) -> dict[str, Addon]:
        return {addon.id: addon for addon in self.addon}


# --- customers ----------------------------------------------------------------------------


UTC_ZONE = ZoneInfo("UTC")


class AddonSubscription(StrictModel):
    """An add-on from ``start`` to ``end``: a day means its local midnight (``end``: the
    last day included, so up to the next midnight); a TOML offset date-time
    (``2026-10-31T14:30:00Z``) is that instant (``end`` exclusive)."""

    addon: Identifier
    start: AwareDatetime | date
    end: AwareDatetime | date | None = Field(default=None, description="last day included")

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        # Checked in UTC: a day against an instant may differ by the zone's offset, and a
        # subscription that covers no second of a period bills nothing for it anyway.
        end = self.end_instant(UTC_ZONE)
        if end is not None and end <= self.start_instant(UTC_ZONE):
            raise ValueError("add-on subscription ends before it starts")
        return self

    def start_instant(self, zone: ZoneInfo) -> datetime:
        return _instant(self.start, zone)

    def end_instant(self, zone: ZoneInfo) -> datetime | None:
        """The first instant after the subscription (None: it has not ended)."""
        if self.end is None:
            return None
        if isinstance(self.end, datetime):
            return self.end.astimezone(UTC)
        return _instant(self.end + timedelta(days=1), zone)


def _instant(moment: date, zone: ZoneInfo) -> datetime:
    """A day's local midnight in ``zone``, or an aware instant itself, in UTC."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=zone).astimezone(UTC)


class Coupon(StrictModel):
    """A discount on invoices: a percentage or a fixed amount, on everything or one family."""

    id: Identifier
    percent: Decimal | None = Field(default=None, gt=0, le=100)
    amount: Price | None = None
    family: str | None = None
    valid_from: date | None = None
    valid_to: date | None = Field(default=None, description="last day included")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.percent is None) == (self.amount is None):
            raise ValueError("give either 'percent' or 'amount'")
        return self

    def applies_to(self, first_day: date, last_day: date) -> bool:
        starts = self.valid_from or date.min
        ends = self.valid_to or date.max
        return starts <= last_day and ends >= first_day


class Customer(StrictModel):
    id: Identifier
    name: Name
    address: list[PlainText] = Field(min_length=1, max_length=6)
    country: Country
    vat_id: str | None = None
    email: EmailAddress
    # Where invoices are e-mailed (the e-mail target); empty: ``email``.
    billing_emails: list[EmailAddress] = Field(default=[], max_length=10)
    currency: CurrencyCode = "EUR"
    billing_mode: BillingMode = BillingMode.POSTPAID
    billing_period: BillingPeriod = BillingPeriod.MONTHLY
    parent: Identifier | None = None
    addons: list[AddonSubscription] = []
    coupons: list[Coupon] = []
    siren: str | None = None

    @model_validator(mode="after")
    def _vat_matches_country(self) -> Self:
        if self.vat_id is not None:
            object.__setattr__(self, "vat_id", validate_vat_id(self.vat_id, self.country))
        if self.siren is not None:
            object.__setattr__(self, "siren", validate_siren(self.siren))
        if self.parent == self.id:
            raise ValueError("an organization cannot be its own parent")
        return self


class Customers(StrictModel):
    customer: list[Customer] = []

    @model_validator(mode="after")
    def _references_are_valid(self) -> Self:
        by_id: dict[str, Customer] = {}
        for customer in self.customer:
            if customer.id in by_id:
                raise ValueError(f"organization id {customer.id!r} is used twice")
            by_id[customer.id] = customer
        for customer in self.customer:
            if customer.parent is None:
                continue
            parent = by_id.get(customer.parent)
            if parent is None:
                raise ValueError(f"{customer.id}: parent {customer.parent!r} does not exist")
            if parent.parent is not None:
                raise ValueError(
                    f"{customer.id}: parent {parent.id!r} has a parent itself; "
                    "central invoicing supports one level"
                )
            if (customer.billing_mode, customer.billing_period) != (
                parent.billing_mode,
                parent.billing_period,
            ):
                raise ValueError(
                    f"{customer.id}: billing mode and period must be those of its parent "
                    f"{parent.id!r}, which invoices it"
                )
        return self

    def by_id(self) -> dict[str, Customer]:
        return {customer.id: customer for customer in self.customer}


# --- loading ------------------------------------------------------------------------------

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(str(path), ["file not found"]) from error
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"not UTF-8 text: {error}"]) from error
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [f"TOML syntax error: {error}"]) from error


def _describe_location(data: Mapping[str, Any], location: tuple[int | str, ...]) -> str:
    """Turn ('customer', 3, 'vat_id') into "customer[3] (org-acme).vat_id"."""
    parts: list[str] = []
    node: Any = data
    for step in location:
        if isinstance(step, int):
            label = f"[{step}]"
            node = node[step] if isinstance(node, list) and step < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                label += f" ({node['id']})"
            parts.append(label)
        else:
            parts.append(f".{step}" if parts else step)
            node = node.get(step) if isinstance(node, dict) else None
    return "".join(parts) or "(file)"


def parse_model(model: type[ModelT], data: dict[str, Any], source: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{_describe_location(data, tuple(item['loc']))}: {item['msg']}"
            for item in error.errors()
        ]
        raise ConfigError(source, problems) from error


def load_model(model: type[ModelT], path: Path) -> ModelT:
    return parse_model(model, read_toml(path), str(path))


def check_cross_references(settings: Settings, catalog: Catalog, customers: Customers) -> list[str]:
    """Problems that span files: currencies, add-on ids, add-on prices per billing period."""
    problems: list[str] = []
    addons = catalog.addon_by_id()
    currency = settings.billing.currency
    for customer in customers.customer:
        if customer.currency != currency:
            problems.append(
                f"customer {customer.id}: currency {customer.currency} differs from the "
                f"workspace currency {currency} (one currency per workspace)"
            )
        for subscription in customer.addons:
            addon = addons.get(subscription.addon)
            if addon is None:
                problems.append(
                    f"customer {customer.id}: add-on {subscription.addon!r} is not in the catalog"
                )
            elif customer.billing_period not in addon.price:
                problems.append(
                    f"customer {customer.id}: add-on {addon.id} has no "
                    f"{customer.billing_period.value} price"
                )
    return problems
