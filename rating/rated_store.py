"""The one reader of rated output: ``rated/month=YYYY-MM/{lines,totals}.parquet``.

Rating writes these files (``rating.rate``); everything else reads them through here, so
the rated schema is known in one package. The ledger asks for the totals of closed
periods per product family, each with a checksum of its lines (to post them and to notice
a re-rating), and for the detail groups that explain one posting (to invoice it); the
report asks for a month's summary.

One DuckDB connection per store, bounded like every embedded connection of the workspace
(memory limit, spill folder). File paths are query parameters, never pasted into SQL, and
a path read back from the ledger must name a rated file of this workspace.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

import duckdb

from beanbill.rating.errors import RatingError
from beanbill.rating.periods import Month
from beanbill.rating.workspace import Workspace

LINES_FILE = "lines.parquet"
TOTALS_FILE = "totals.parquet"
MONTH_FOLDER = re.compile(r"^month=(\d{4}-\d{2})$")
RATED_FILE = re.compile(r"^[A-Za-z0-9_./-]+/month=\d{4}-\d{2}/lines\.parquet$")
MAX_LARGEST_SHOWN = 1_000


class RatedTotal(NamedTuple):
    """One organization's closed period (or one day of it): full-precision family totals."""

    org: str
    period: str
    period_start: date
    period_end: date  # exclusive
    day: date | None  # the posting's first day: daily postings, and a period's second month
    family_atto: tuple[tuple[str, int], ...]
    checksum: str  # of the lines behind these totals: a re-rating changes it
    rated_file: str  # relative to the workspace, as the ledger records it
    through: date | None = None  # last day included, for a period split at a month end


class RatedGroup(NamedTuple):
    """The rated lines of one meter, resource, pricing band and price, summed over days.

    ``first_day`` and ``last_day``: the first and last day with usage in the group, so an
    invoice line of a meter whose price changed can say from or until which day."""

    family: str
    meter: str
    resource: str
    band: int
    is_free: bool
    price_pico: int
    quantity_micro: int
    amount_atto: int
    first_day: date | None = None
    last_day: date | None = None


class FamilySummary(NamedTuple):
    label: str  # a product family or a billing period kind
    organizations: int
    periods: int
    amount_atto: int


class MonthSummary(NamedTuple):
    by_family: tuple[FamilySummary, ...]
    by_billing_period: tuple[FamilySummary, ...]
    largest: tuple[tuple[str, int], ...]  # (org, amount atto), largest first


def month_folder(workspace: Workspace, month: Month) -> Path:
    return workspace.rated_dir / f"month={month.key}"


def lines_path(workspace: Workspace, month: Month) -> Path:
    return month_folder(workspace, month) / LINES_FILE


def totals_path(workspace: Workspace, month: Month) -> Path:
    return month_folder(workspace, month) / TOTALS_FILE


# A period that straddles a month end (a week) is posted in two parts, each in its month:
# the first keeps the whole period's key (no posting day), the second is keyed by the
# first of its month; both say their last day (``through``). A part is posted once it has
# ended, so a month closes when it ends, not when the week does.
_TOTALS_SQL = """
WITH parts AS (
    SELECT *,
           CASE WHEN $daily THEN day
                WHEN date_trunc('month', day) > period_start
                THEN date_trunc('month', day)::DATE
                ELSE NULL::DATE END AS posting_day,
           CASE WHEN $daily THEN NULL::DATE
                WHEN date_trunc('month', period_start)
                     = date_trunc('month', period_end - INTERVAL 1 DAY) THEN NULL::DATE
                WHEN date_trunc('month', day) > period_start
                THEN (period_end - INTERVAL 1 DAY)::DATE
                ELSE last_day(period_start) END AS through
    FROM read_parquet($path)
), lines AS (
    SELECT * FROM parts
    WHERE coalesce(through + INTERVAL 1 DAY, period_end) <= $as_of
), families AS (
    SELECT org, period, period_start, period_end, posting_day, through, family,
           sum(amount_atto) AS amount
    FROM lines GROUP BY ALL
), totals AS (
    SELECT org, period, period_start, period_end, posting_day, through,
           list(struct_pack(family := family, amount := amount) ORDER BY family) AS families
    FROM families GROUP BY ALL
), checksums AS (
    SELECT org, period, posting_day,
           md5(string_agg(concat_ws('|', day, meter, resource, band,
                                    quantity_micro, amount_atto), ';'
                          ORDER BY day, meter, resource, band)) AS checksum
    FROM lines GROUP BY ALL
)
SELECT t.*, c.checksum FROM totals t
JOIN checksums c ON c.org = t.org AND c.period = t.period
    AND c.posting_day IS NOT DISTINCT FROM t.posting_day
ORDER BY coalesce(t.through + INTERVAL 1 DAY, t.period_end), t.posting_day, t.org
"""

_GROUPS_SQL = """
SELECT family, meter, resource, band, is_free, price_pico,
       sum(quantity_micro) AS quantity_micro, sum(amount_atto) AS amount_atto,
       min(day) AS first_day, max(day) AS last_day
FROM read_parquet($path)
WHERE org = $org AND period = $period
  AND ($first IS NULL OR day >= $first) AND ($last IS NULL OR day <= $last)
GROUP BY ALL ORDER BY family, meter, resource, band, first_day, price_pico
"""


class RatedStore:
    """Reads a workspace's rated files; use as a context manager (one connection)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._connection: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            self._connection = duckdb.connect(config=self.workspace.duckdb_config())
        return self._connection

    def rated_months(self, up_to: Month) -> list[str]:
        """Month keys (YYYY-MM) with rated lines, up to and including ``up_to``."""
        months = []
        for folder in sorted(self.workspace.rated_dir.glob("month=*")):
            match = MONTH_FOLDER.fullmatch(folder.name)
            if match and match.group(1) <= up_to.key and (folder / LINES_FILE).is_file():
                months.append(match.group(1))
        return months

    def closed_totals(self, up_to: Month, as_of: date, daily: bool) -> list[RatedTotal]:
        """Periods ended by ``as_of`` of every rated month up to ``up_to``, in posting order."""
        result: list[RatedTotal] = []
        for key in self.rated_months(up_to):
            path = lines_path(self.workspace, Month.parse(key))
            parameters = {"daily": daily, "path": str(path), "as_of": as_of}
            rows = self.connection.execute(_TOTALS_SQL, parameters).fetchall()
            relative = str(path.relative_to(self.workspace.root))
            for org, period, start, end, posting_day, through, families, checksum in rows:
                result.append(
                    RatedTotal(
                        org=org,
                        period=period,
                        period_start=start,
                        period_end=end,
                        day=posting_day,
                        family_atto=tuple((f["family"], int(f["amount"])) for f in families),
                        checksum=checksum,
                        rated_file=relative,
                        through=through,
                    )
                )
        return result

    def resolve(self, rated_file: str) -> Path:
        """A rated-lines path read back from the ledger, checked to be one of ours."""
        path = (self.workspace.root / rated_file).resolve()
        if not RATED_FILE.fullmatch(rated_file) or path.parent.parent != self.workspace.rated_dir:
            raise RatingError(f"{rated_file!r} is not a rated-lines file of this workspace")
        if not path.is_file():
            raise RatingError(f"{rated_file} is missing: rate its month again")
        return path

    def detail_groups(
        self, rated_file: str, org: str, period: str, first: date | None, last: date | None
    ) -> list[RatedGroup]:
        """The detail behind one posting (its days ``first`` to ``last``, None: the period's
        own bound): one group per meter, resource, band and price."""
        path = self.resolve(rated_file)
        parameters = {"path": str(path), "org": org, "period": period, "first": first, "last": last}
        rows = self.connection.execute(_GROUPS_SQL, parameters).fetchall()
        return [
            RatedGroup(
                family=str(row[0]),
                meter=str(row[1]),
                resource=str(row[2]),
                band=int(row[3]),
                is_free=bool(row[4]),
                price_pico=int(row[5]),
                quantity_micro=int(row[6]),
                amount_atto=int(row[7]),
                first_day=row[8],
                last_day=row[9],
            )
            for row in rows
        ]

    def month_summary(self, month: Month, largest: int) -> MonthSummary:
        """A rated month per product family, per billing period kind, and its largest orgs."""
        if not 0 < largest <= MAX_LARGEST_SHOWN:
            raise RatingError(f"largest must be between 1 and {MAX_LARGEST_SHOWN}")
        path = totals_path(self.workspace, month)
        if not path.is_file():
            raise RatingError(
                f"{month.key} is not rated yet: run `beanbill rate --period {month.key}`"
            )
        source = "read_parquet(?)"
        by_family = self.connection.execute(
            f"SELECT family, count(DISTINCT org), count(DISTINCT org || period), "
            f"sum(amount_atto) FROM {source} GROUP BY family ORDER BY family",
            [str(path)],
        ).fetchall()
        by_kind = self.connection.execute(
            "SELECT billing_period, count(DISTINCT org), count(DISTINCT org || period), "
            f"sum(amount_atto) FROM {source} GROUP BY billing_period ORDER BY billing_period",
            [str(path)],
        ).fetchall()
        top = self.connection.execute(
            f"SELECT org, sum(amount_atto) AS total FROM {source} GROUP BY org "
            "ORDER BY total DESC, org LIMIT ?",
            [str(path), largest],
        ).fetchall()
        return MonthSummary(
            by_family=tuple(FamilySummary(str(f), o, p, int(a)) for f, o, p, a in by_family),
            by_billing_period=tuple(FamilySummary(str(k), o, p, int(a)) for k, o, p, a in by_kind),
            largest=tuple((str(org), int(total)) for org, total in top),
        )
