"""A workspace is one folder: settings, catalog, customers, usage, rated output, ledger, state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from beanbill.rating.config import (
    Catalog,
    Customers,
    Settings,
    check_cross_references,
    load_model,
)
from beanbill.rating.errors import ConfigError, WorkspaceError
from beanbill.rating.storage import exclusive_lock

SETTINGS_FILE = "beanbill.toml"
CATALOG_FILE = "catalog.toml"
CUSTOMERS_FILE = "customers.toml"
LEDGER_FILE = "ledger.beancount"
LOCK_FILE = "workspace.lock"  # in the state folder: serializes the commands that write


@dataclass(frozen=True)
class Workspace:
    root: Path
    settings: Settings
    catalog: Catalog
    customers: Customers

    @classmethod
    def load(cls, root: Path) -> Workspace:
        root = root.resolve()
        if not (root / SETTINGS_FILE).is_file():
            raise WorkspaceError(
                f"{root} is not a beanbill workspace (no {SETTINGS_FILE}); "
                "create one with `beanbill init DIR`"
            )
        settings = load_model(Settings, root / SETTINGS_FILE)
        catalog = load_model(Catalog, root / CATALOG_FILE)
        customers = load_model(Customers, root / CUSTOMERS_FILE)
        problems = check_cross_references(settings, catalog, customers)
        if problems:
            raise ConfigError(str(root / CUSTOMERS_FILE), problems)
        return cls(root=root, settings=settings, catalog=catalog, customers=customers)

    def _path(self, relative: str) -> Path:
        return self.root / relative

    @cached_property
    def usage_dir(self) -> Path:
        return self._path(self.settings.paths.usage)

    @cached_property
    def rated_dir(self) -> Path:
        return self._path(self.settings.paths.rated)

    @cached_property
    def rejects_dir(self) -> Path:
        return self._path(self.settings.paths.rejects)

    @cached_property
    def reports_dir(self) -> Path:
        return self._path(self.settings.paths.reports)

    @cached_property
    def state_dir(self) -> Path:
        return self._path(self.settings.paths.state)

    @cached_property
    def invoices_dir(self) -> Path:
        return self._path(self.settings.paths.invoices)

    @cached_property
    def ledger_path(self) -> Path:
        return self._path(self.settings.paths.ledger)

    def duckdb_config(self) -> dict[str, str | bool | int | float | list[str]]:
        """Settings for every embedded DuckDB connection: bounded memory, spill in state/."""
        spill = self.state_dir / "duckdb-spill"
        spill.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": self.settings.engine.memory_limit,
            "temp_directory": str(spill),
            "preserve_insertion_order": "true",
        }
        if self.settings.engine.threads:
            config["threads"] = self.settings.engine.threads
        return config

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the workspace's exclusive lock while changing it."""
        with exclusive_lock(self.state_dir / LOCK_FILE):
            yield
