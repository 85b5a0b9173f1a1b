"""The layout as rules the code must keep: imports go one way, each concept lives in one place.

Read from the source with ``ast`` (what the code says, not what a grep matches).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import beanbill
from beanbill.cli import main
from beanbill.examples import SETTINGS, write_toml
from beanbill.exits import EXIT_ERROR
from beanbill.rating.errors import BeanbillError
from beanbill.rating.workspace import CATALOG_FILE, CUSTOMERS_FILE, SETTINGS_FILE

ROOT = Path(__file__).resolve().parent.parent
# Each layer may import itself and the layers listed (the CLI package, beanbill/*.py, any).
ALLOWED = {
    "rating": {"rating"},
    "ledger": {"ledger", "rating"},
    "sync": {"sync", "ledger", "rating"},
    "connectors": {"connectors", "sync", "ledger", "rating"},
}
ACCOUNT_ROOTS = ("Assets:", "Liabilities:", "Equity:", "Income:", "Expenses:")


def sources(layer: str) -> Iterator[tuple[Path, ast.Module]]:
    """A layer's own files (not beanbill/'s symbolic links to the other layers)."""
    for path in sorted((ROOT / layer).rglob("*.py")):
        if path.resolve() == path:
            yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def string_constants(tree: ast.Module) -> Iterator[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.value


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_go_one_way(layer: str) -> None:
    wrong = []
    for path, tree in sources(layer):
        for module in imported_modules(tree):
            parts = module.split(".")
            if parts[0] != "beanbill" or len(parts) < 2:
                continue
            if parts[1] not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_only_rating_reads_rated_output() -> None:
    readers = []
    for layer in ("ledger", "sync", "connectors", "beanbill"):
        for path, tree in sources(layer):
            for text in string_constants(tree):
                if "read_parquet" in text or "lines.parquet" in text or "totals.parquet" in text:
                    readers.append(f"{path.relative_to(ROOT)}: {text[:60]!r}")
    assert readers == []


def test_account_names_are_made_by_the_chart_or_declared_by_a_connector() -> None:
    literals = []
    for layer in ("rating", "ledger", "sync", "beanbill"):
        for path, tree in sources(layer):
            if path == ROOT / "ledger" / "accounts.py":
                continue
            for text in string_constants(tree):
                if text.startswith(ACCOUNT_ROOTS):
                    literals.append(f"{path.relative_to(ROOT)}: {text!r}")
    # A setting's default names the clearing account purchases are paid into.
    assert literals == ["rating/config.py: 'Assets:Stripe:Balance'"]


def all_modules() -> Iterator[str]:
    for info in pkgutil.walk_packages(beanbill.__path__, "beanbill."):
        if ".stripe_peer" not in info.name:  # the demo's Stripe peer runs localstripe
            yield info.name


def test_every_named_error_is_a_beanbill_error() -> None:
    strays = []
    for name in all_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if value.__module__ != name or not issubclass(value, Exception):
                continue
            if not issubclass(value, BeanbillError):
                strays.append(f"{name}.{value.__name__}")
    assert strays == []


def test_asking_what_is_issued_does_not_load_the_rendering_stack() -> None:
    probe = (
        "import sys, beanbill.ledger.invoicing.due, beanbill.ledger.invoicing.derive; "
        "print(sorted(m for m in ('weasyprint', 'facturx', 'drafthorse') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_check_refuses_ids_that_would_share_an_account(tmp_path: Path) -> None:
    catalog = {"service": [{"id": "migration", "name": "Migration", "price": "49.00"}]}
    customers = [
        {
            "id": org,
            "name": f"{org} Ltd",
            "address": ["1 Main Street", "Paris"],
            "country": "FR",
            "email": "billing@acme.example",
        }
        for org in ("acme.eu", "other", "acme_eu")
    ]
    write_toml(tmp_path / SETTINGS_FILE, SETTINGS)
    write_toml(tmp_path / CATALOG_FILE, catalog)
    write_toml(tmp_path / CUSTOMERS_FILE, {"customer": customers})
    for command in (["check"], ["post", "--period", "2026-10"]):
        result = CliRunner().invoke(main, [*command, "-w", str(tmp_path)])
        assert result.exit_code == EXIT_ERROR, result.output
        assert "'acme.eu' and 'acme_eu' both map to account component 'Acme-eu'" in result.output
        assert "Traceback" not in result.output


def test_a_ledger_naming_the_plugin_by_its_old_name_gets_the_fix(tmp_path: Path) -> None:
    main_file = tmp_path / "ledger.beancount"
    text = (ROOT / "ledger.beancount").read_text()
    main_file.write_text(text.replace('"beanbill.ledger.plugin"', '"ledger.plugin"'))
    probe = (
        "import sys\n"
        "from beanbill.ledger.books import LedgerLoadError, load_books\n"
        "try:\n"
        f"    load_books(__import__('pathlib').Path({str(main_file)!r}), 'EUR')\n"
        "except LedgerLoadError as error:\n"
        "    print(error)\n"
    )
    # Run outside the repository: there, the bare name `ledger` is not importable.
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert 'replace the line plugin "ledger.plugin" with plugin "beanbill.ledger.plugin"' in (
        result.stdout
    )
