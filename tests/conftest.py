"""Shared fixtures: real workspaces on disk, real DuckDB, real Ibis; no mocks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from beanbill.examples import SETTINGS, write_toml
from beanbill.ledger.main_file import main_ledger_text
from beanbill.rating.workspace import CATALOG_FILE, CUSTOMERS_FILE, SETTINGS_FILE, Workspace

JANUARY = date(2026, 1, 1)
SMALL_CATALOG: dict[str, Any] = {
    "meter": [
        {
            "id": "cpu",
            "name": "vCPU",
            "unit": "vCPU",
            "kind": "interval",
            "family": "Compute",
            "price": [{"effective": JANUARY, "price": "0.0000069444"}],
        },
        {
            "id": "egress",
            "name": "Egress",
            "unit": "GB",
            "kind": "counter",
            "family": "Network",
            "price": [
                {
                    "effective": JANUARY,
                    "free": "100",
                    "tiers": [{"up_to": "1000", "price": "0.01"}, {"price": "0.008"}],
                }
            ],
        },
    ],
    "addon": [
        {
            "id": "backup",
            "name": "Backup",
            "price": {"monthly": "9.90", "weekly": "2.50", "daily": "0.40"},
        }
    ],
    "service": [{"id": "migration", "name": "Migration", "price": "49.00"}],
}


def customer(org: str, period: str = "monthly", **extra: Any) -> dict[str, Any]:
    return {
        "id": org,
        "name": f"{org} Ltd",
        "address": ["1 Main Street", "Paris"],
        "country": "FR",
        "email": f"billing@{org}.example",
        "billing_period": period,
        **extra,
    }


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Workspace]:
    """Write a workspace from dicts (TOML on disk) and load it through the real loader."""

    def make(
        catalog: dict[str, Any] | None = None,
        customers: list[dict[str, Any]] | None = None,
        timezone: str = "UTC",
        name: str = "ws",
        sync: dict[str, Any] | None = None,
    ) -> Workspace:
        root = tmp_path / name
        settings = copy.deepcopy(SETTINGS)
        settings["billing"]["timezone"] = timezone
        if sync is not None:
            settings["sync"] = sync
        write_toml(root / SETTINGS_FILE, settings)
        write_toml(root / CATALOG_FILE, catalog or SMALL_CATALOG)
        write_toml(root / CUSTOMERS_FILE, {"customer": customers or [customer("acme")]})
        workspace = Workspace.load(root)
        text = main_ledger_text(workspace.settings, workspace.catalog)
        workspace.ledger_path.write_text(text)
        return workspace

    return make


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_rejects(path: Path | None) -> list[dict[str, Any]]:
    assert path is not None, "expected a rejects file"
    return [json.loads(line) for line in path.read_text().splitlines()]
