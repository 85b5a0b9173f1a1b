"""Provisional rating of open billing periods (``beanbill rate --open``).

The customer API shows usage of the period still running and forecasts its end; both need
rated figures before the period closes. They come from the same engine as the final
rating (``rate.rate_month``), run on the months whose periods contain today, and written
to a SEPARATE folder, ``provisional/month=YYYY-MM/``, beside the rated store. ``post``
reads only the rated store, so provisional figures are never posted; rating the same
events again for the closed period gives the same lines (same engine, same rules).

Only the months that hold a current period are kept: older provisional months are
superseded by their final rating and removed, so the folder stays bounded.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import ibis

from beanbill.rating.periods import Month, period_of
from beanbill.rating.progress import Progress, no_progress
from beanbill.rating.rate import RatedMonth, rate_month
from beanbill.rating.rated_store import LINES_FILE, MONTH_FOLDER
from beanbill.rating.workspace import Workspace

PROVISIONAL_FOLDER = "provisional"
KEPT_PREVIOUS_MONTHS = 1  # the month before the oldest open one: a forecast's look-back


def provisional_dir(workspace: Workspace) -> Path:
    """``provisional/`` beside the rated store (never inside it: ``post`` must not see it)."""
    return workspace.rated_dir.parent / PROVISIONAL_FOLDER


def provisional_month_folder(workspace: Workspace, month: Month) -> Path:
    return provisional_dir(workspace) / f"month={month.key}"


def provisional_lines_path(workspace: Workspace, month: Month) -> Path:
    return provisional_month_folder(workspace, month) / LINES_FILE


def local_today(workspace: Workspace, now: datetime | None = None) -> date:
    """Today in the billing time zone, where periods begin and end."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(ZoneInfo(workspace.settings.billing.timezone)).date()


def open_months(workspace: Workspace, today: date) -> list[Month]:
    """The months in which the customers' current periods start (a week that began last
    month is rated with last month), oldest first."""
    kinds = {customer.billing_period for customer in workspace.customers.customer}
    return sorted({Month.of(period_of(kind, today).start) for kind in kinds})


def rate_open(
    workspace: Workspace, today: date, progress: Progress = no_progress
) -> list[RatedMonth]:
    """Rate the months of the current periods into the provisional folder, then remove
    provisional months older than the look-back a forecast needs."""
    months = open_months(workspace, today)
    results: list[RatedMonth] = []
    connection = ibis.duckdb.connect(**workspace.duckdb_config())
    with workspace.writing():
        for index, month in enumerate(months, start=1):
            folder = provisional_month_folder(workspace, month)
            results.append(rate_month(workspace, month, connection, folder=folder))
            progress(index, len(months))
        if months:
            _remove_older_than(workspace, months[0])
    return results


def _remove_older_than(workspace: Workspace, oldest_open: Month) -> None:
    kept_from = oldest_open
    for _ in range(KEPT_PREVIOUS_MONTHS):
        kept_from = kept_from.previous()
    root = provisional_dir(workspace)
    if not root.is_dir():
        return
    for folder in root.iterdir():
        match = MONTH_FOLDER.fullmatch(folder.name)
        if match and folder.is_dir() and match.group(1) < kept_from.key:
            shutil.rmtree(folder)
