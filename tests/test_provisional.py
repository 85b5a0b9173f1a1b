"""Provisional rating of open periods (``beanbill rate --open``): the same engine as the
final rating, into its own folder, never the rated store ``post`` reads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from beanbill.cli import main
from beanbill.demo import write_usage
from beanbill.examples import write_configuration
from beanbill.exits import EXIT_OK
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.provisional import (
    local_today,
    open_months,
    provisional_dir,
    provisional_month_folder,
    rate_open,
)
from beanbill.rating.rated_store import LINES_FILE, TOTALS_FILE, RatedStore, month_folder
from beanbill.rating.workspace import Workspace
from tests.support import rated_demo

OCTOBER = Month(2026, 10)
NOVEMBER = Month(2026, 11)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    workspace, _ = rated_demo(tmp_path_factory.mktemp("provisional") / "ws", 12, seed=5)
    return workspace


def test_open_rating_gives_the_final_rating_s_bytes_for_the_same_events(
    demo: Workspace,
) -> None:
    """The periods' final rating is what the provisional one said, for the same events."""
    rated = {
        name: (month_folder(demo, OCTOBER) / name).read_bytes()
        for name in (LINES_FILE, TOTALS_FILE)
    }
    [result] = rate_open(demo, date(2026, 10, 20))
    folder = provisional_month_folder(demo, OCTOBER)
    assert result.lines_path == folder / LINES_FILE
    assert folder.parent == provisional_dir(demo) != demo.rated_dir
    for name, content in rated.items():
        assert (folder / name).read_bytes() == content, name
        assert (month_folder(demo, OCTOBER) / name).read_bytes() == content  # untouched


def test_the_open_months_are_those_of_the_current_periods(demo: Workspace) -> None:
    # Sunday 1 November 2026: the week began on 26 October, the month and the day today.
    assert open_months(demo, date(2026, 11, 1)) == [OCTOBER, NOVEMBER]
    assert open_months(demo, date(2026, 11, 2)) == [NOVEMBER]


def test_older_provisional_months_are_removed(demo: Workspace) -> None:
    rate_open(demo, date(2026, 10, 20))
    rate_open(demo, date(2026, 11, 10))
    assert provisional_month_folder(demo, OCTOBER).is_dir()  # a forecast's look-back
    rate_open(demo, date(2027, 1, 10))
    kept = sorted(path.name for path in provisional_dir(demo).iterdir())
    assert kept == ["month=2027-01"]


def test_post_never_sees_provisional_figures(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    write_configuration(root, 6, seed=3)
    workspace = Workspace.load(root)
    ingest(workspace, write_usage(root / "inbox", [c.id for c in workspace.customers.customer], 3))
    rate_open(workspace, date(2026, 10, 20))
    assert (provisional_month_folder(workspace, OCTOBER) / LINES_FILE).is_file()
    with RatedStore(workspace) as store:
        assert store.rated_months(NOVEMBER) == []
        assert store.closed_totals(NOVEMBER, date(2026, 11, 30), daily=False) == []


def test_the_rate_command_takes_a_period_or_open(demo: Workspace) -> None:
    runner = CliRunner()
    opened = runner.invoke(main, ["rate", "--open", "-w", str(demo.root)])
    assert opened.exit_code == EXIT_OK, opened.output
    assert "provisional" in opened.output
    for arguments in ([], ["--open", "--period", "2026-10"]):
        refused = runner.invoke(main, ["rate", *arguments, "-w", str(demo.root)])
        assert refused.exit_code == 2, refused.output
        assert "--period MONTH or --open" in refused.output


def test_serve_rates_the_open_periods_on_its_schedule(demo: Workspace) -> None:
    """`beanbill serve --rate-open-minutes N`: the API's usage and forecast stay fresh
    between nightly runs (here every 0.2 s, twice at least)."""
    import time

    from starlette.testclient import TestClient

    from beanbill.sync.serve import create_app
    from beanbill.targets import sync_state

    app = create_app(demo, [], sync_state(demo), rate_open_every_seconds=0.2)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").json()["provisional_ratings"] < 2:
            assert time.monotonic() < deadline, "the open periods were not rated"
            time.sleep(0.1)
    today = local_today(demo)
    assert (provisional_month_folder(demo, Month(today.year, today.month)) / LINES_FILE).is_file()


def test_a_second_server_process_does_not_rate_again_what_another_just_rated(
    demo: Workspace,
) -> None:
    """`serve --workers N` runs a provisional rater in every worker: a round finding the
    figures rated within half its interval (by another worker) leaves them as they are."""
    import time

    from beanbill.sync.serve import ProvisionalRater

    rate_open(demo, local_today(demo))
    lines = sorted(provisional_dir(demo).glob("month=*/*.parquet"))
    before = [path.stat().st_mtime_ns for path in lines]
    second = ProvisionalRater(demo, every_seconds=600)
    assert second._rated_lately()
    second.start()
    deadline = time.monotonic() + 30
    while second.rounds < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second.stop()
    assert [path.stat().st_mtime_ns for path in lines] == before
    assert not ProvisionalRater(demo, every_seconds=0.001)._rated_lately()  # stale: rate
