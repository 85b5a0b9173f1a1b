"""Configuration errors name the file and the field; money in TOML stays exact."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from beanbill.rating.config import Catalog, Settings, load_model
from beanbill.rating.errors import ConfigError, WorkspaceError
from beanbill.rating.workspace import CATALOG_FILE, CUSTOMERS_FILE, Workspace
from tests.support import customer


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bare_toml_numbers_are_read_as_exact_decimals(tmp_path: Path) -> None:
    catalog = load_model(
        Catalog,
        write(
            tmp_path / "c.toml",
            """
[[meter]]
id = "cpu"
name = "vCPU"
unit = "vCPU"
kind = "interval"
family = "Compute"
[[meter.price]]
effective = 2026-01-01
price = 0.0000069444
""",
        ),
    )
    assert catalog.meter[0].price[0].price == Decimal("0.0000069444")


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('price = "0.00000000001"', "more than 10 decimal places"),
        ('price = "-1"', "must be a finite number >= 0"),
        ('price = "1"\ntiers = [{price = "2"}]', "either 'price' (flat) or 'tiers'"),
        ('tiers = [{up_to = "10", price = "1"}]', "last tier must have no 'up_to'"),
        (
            'free = "20"\ntiers = [{up_to = "10", price = "1"}, {price = "0.5"}]',
            "exceed the free allowance",
        ),
    ],
)
def test_bad_prices_are_reported_with_their_field(
    tmp_path: Path, snippet: str, expected: str
) -> None:
    path = write(
        tmp_path / "catalog.toml",
        f"""
[[meter]]
id = "cpu"
name = "vCPU"
unit = "vCPU"
kind = "interval"
family = "Compute"
[[meter.price]]
effective = 2026-01-01
{snippet}
""",
    )
    with pytest.raises(ConfigError) as raised:
        load_model(Catalog, path)
    assert raised.value.path == str(path)
    assert any(
        problem.startswith("meter[0] (cpu).price[0]") and expected in problem
        for problem in raised.value.problems
    ), raised.value.problems


def test_every_problem_of_a_file_is_reported_at_once(
    make_workspace: Callable[..., Workspace],
) -> None:
    workspace = make_workspace()
    path = workspace.root / CUSTOMERS_FILE
    path.write_text("""
[[customer]]
id = "bad id!"
name = "X"
address = ["a"]
country = "France"
email = "not-an-email"
vat_id = "FR00000000000"
""")
    with pytest.raises(ConfigError) as raised:
        Workspace.load(workspace.root)
    text = "\n".join(raised.value.problems)
    assert "customer[0] (bad id!).id" in text
    assert "customer[0] (bad id!).country" in text
    assert "customer[0] (bad id!).email" in text


def test_invalid_vat_id_is_an_error_not_a_silent_domestic_customer(
    make_workspace: Callable[..., Workspace],
) -> None:
    with pytest.raises(ConfigError, match="VAT id 'FR12345678901' is not valid"):
        make_workspace(customers=[customer("acme", vat_id="FR12345678901")])
    with pytest.raises(ConfigError, match="does not belong to country DE"):
        make_workspace(customers=[customer("acme", country="DE", vat_id="FR44732829320")])
    workspace = make_workspace(customers=[customer("acme", vat_id="FR 44 732829320")])
    assert workspace.customers.customer[0].vat_id == "FR44732829320"


def test_cross_file_references_are_checked(make_workspace: Callable[..., Workspace]) -> None:
    with pytest.raises(ConfigError, match="add-on 'nope' is not in the catalog"):
        make_workspace(
            customers=[customer("acme", addons=[{"addon": "nope", "start": "2026-01-01"}])]
        )
    with pytest.raises(ConfigError, match="one currency per workspace"):
        make_workspace(customers=[customer("acme", currency="USD")])
    with pytest.raises(ConfigError, match="parent 'ghost' does not exist"):
        make_workspace(customers=[customer("acme", parent="ghost")])


def test_names_with_control_characters_are_refused(
    make_workspace: Callable[..., Workspace],
) -> None:
    with pytest.raises(ConfigError, match="control or bidirectional-override"):
        make_workspace(customers=[{**customer("acme"), "name": 'Evil"\n2026-01-01 open Assets:X'}])
    with pytest.raises(ConfigError, match="control or bidirectional-override"):
        make_workspace(customers=[{**customer("acme"), "name": "Invoice\u202eevil"}])


def test_missing_and_malformed_files_say_which(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not a beanbill workspace"):
        Workspace.load(tmp_path)
    broken = write(tmp_path / "beanbill.toml", "[seller\nlegal_name = 1")
    with pytest.raises(ConfigError, match="TOML syntax error") as raised:
        load_model(Settings, broken)
    assert raised.value.path == str(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_model(Catalog, tmp_path / CATALOG_FILE)


def test_unknown_time_zone_is_refused(make_workspace: Callable[..., Workspace]) -> None:
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        make_workspace(timezone="Mars/Olympus")


def test_a_catalog_writes_prices_as_published_with_their_basis(tmp_path: Path) -> None:
    """``per`` says what a price is for; free allowances and tier bounds are in it too."""
    catalog = load_model(
        Catalog,
        write(
            tmp_path / "c.toml",
            """
[[meter]]
id = "cpu"
name = "vCPU"
unit = "vCPU"
kind = "interval"
family = "Compute"
per = "hour"
price = [{ effective = 2026-01-01, price = 0.025 }]

[[meter]]
id = "disk"
name = "Block storage"
unit = "GB"
kind = "interval"
family = "Storage"
per = "month"
unit_code = "MON"
price = [{ effective = 2026-01-01, free = 100, tiers = [
    { up_to = 10000, price = 0.01 }, { price = 0.008 } ] }]

[[meter]]
id = "requests"
name = "Requests"
unit = "request"
kind = "counter"
family = "Storage"
per = "million"
price = [{ effective = 2026-01-01, price = 0.40 }]
""",
        ),
    )
    cpu, disk, requests = catalog.meter
    assert (cpu.basis_units, cpu.price[0].price, cpu.invoice_unit_code) == (
        3600,
        Decimal("0.025"),
        "HUR",
    )
    assert (disk.basis_units, disk.invoice_unit_code) == (730 * 3600, "MON")
    assert disk.bound_micro(disk.price[0].free) == 100 * 730 * 3600 * 10**6
    assert (requests.basis_units, requests.invoice_unit_code) == (10**6, "C62")


def test_a_basis_that_does_not_fit_is_reported_with_its_meter(tmp_path: Path) -> None:
    path = write(
        tmp_path / "catalog.toml",
        """
[[meter]]
id = "egress"
name = "Egress"
unit = "GB"
kind = "counter"
family = "Network"
per = "hour"
unit_code = "HUR"
price = [{ effective = 2026-01-01, price = 0.01 }]
""",
    )
    with pytest.raises(ConfigError) as raised:
        load_model(Catalog, path)
    [problem] = raised.value.problems
    assert problem.startswith("meter[0] (egress): ")
    assert "per = 'hour' is not a basis of counter meters: their prices are per unit" in problem
