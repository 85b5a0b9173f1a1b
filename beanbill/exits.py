"""What every command shares: the exit codes, the one place errors become them, --workspace.

The contract scripts rely on:

- ``0`` done;
- ``1`` done, but a human should look (rejected input, dead letters, discrepancies);
- ``2`` nothing done: a ``BeanbillError`` (bad usage, configuration or input, with where),
  or the machine refused (``OSError``: permissions, disk full), as one line on stderr.

An unexpected exception is a bug: it also exits 2 with one line, naming the exception;
``BEANBILL_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

import click

from beanbill.ledger.accounts import component_collisions
from beanbill.rating.errors import BeanbillError, ConfigError
from beanbill.rating.workspace import CUSTOMERS_FILE, Workspace

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_ERROR = 2
DEBUG_ENVIRONMENT = "BEANBILL_DEBUG"

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn every failure into one clear line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BeanbillError as error:
            _fail(str(error))
        except OSError as error:
            _fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        except Exception as error:
            if os.environ.get(DEBUG_ENVIRONMENT):
                raise
            _fail(
                f"unexpected {type(error).__name__}: {error} (a bug: please report it; "
                f"{DEBUG_ENVIRONMENT}=1 shows where)"
            )

    return wrapper


def load_workspace(root: Path) -> Workspace:
    """A workspace as every command loads it: its files valid, and fit for the ledger.

    Beyond what ``Workspace.load`` checks file by file, organization ids must give
    distinct accounts (``acme.eu`` and ``acme_eu`` would share one).
    """
    workspace = Workspace.load(root)
    problems = component_collisions(workspace.customers.customer)
    if problems:
        raise ConfigError(str(workspace.root / CUSTOMERS_FILE), problems)
    return workspace


def _workspace_given_anywhere(
    context: click.Context, parameter: click.Parameter, value: Path | None
) -> Path:
    """The command's own --workspace, else the nearest group's (`invoice -w B credit N`)."""
    if value is not None:
        return value
    parent = context.parent
    while parent is not None:
        given = parent.params.get("workspace")
        if isinstance(given, Path):
            return given
        parent = parent.parent
    return Path(".")


workspace_option = click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=_workspace_given_anywhere,
    show_default="current folder",
    help="The workspace folder (settings, catalog, customers, usage, ledger, state).",
)
