"""Exit codes scripts can rely on, and the one place named errors become them."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from rating.errors import BeanbillError

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
