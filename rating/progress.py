"""How long work reports its progress: a callable the caller passes, told ``(done, total)``.

The pipeline never draws anything itself; the command line turns these calls into a
progress bar on a terminal and ignores them in cron or CI (``beanbill.progress``).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]  # (items done so far, items in all)


def no_progress(done: int, total: int) -> None:
    """The default: nobody is watching."""
    return None
