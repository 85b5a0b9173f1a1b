"""Named exceptions. Each carries where the problem is, so a user can fix it."""

from __future__ import annotations


class BeanbillError(Exception):
    """Base class of every error beanbill reports to a user (exit code 2)."""


class ConfigError(BeanbillError):
    """A settings, catalog or customers file is missing or invalid."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{path}: invalid configuration\n{lines}")


class WorkspaceError(BeanbillError):
    """The workspace folder is missing, incomplete or locked."""


class PeriodError(BeanbillError):
    """A period specification cannot be understood."""


class IngestError(BeanbillError):
    """An input file cannot be read at all (individual bad events are rejects, not errors)."""


class RatingError(BeanbillError):
    """The usage store cannot be rated consistently with the catalog and customers."""
