"""Progress bars for long commands: drawn on a terminal (stderr), silent in cron and CI."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Self

import click


def on_terminal() -> bool:
    return sys.stderr.isatty()


class ProgressBar:
    """A ``rating.progress.Progress`` that draws click's bar once it learns the total.

    Use as a context manager; called with ``(done, total)``. Off a terminal it does nothing.
    """

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = on_terminal() if enabled is None else enabled
        self._bar: Any = None
        self._done = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, traceback)
            self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(max(0, done - self._done))
        self._done = max(done, self._done)
