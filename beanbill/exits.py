"""What every command shares: exit codes, the one place named errors become them, --workspace."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from beanbill.rating.errors import BeanbillError

EXIT_ERROR = 2

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn beanbill's named errors into a clear message and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BeanbillError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper


workspace_option = click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default="current folder",
    help="The workspace folder (settings, catalog, customers, usage, ledger, state).",
)
