"""The revenue chart, laid out on the server as plain SVG shapes.

No JavaScript and no external asset: the page cannot raise a console error, prints as
it shows, and the template only writes out rectangles and text (autoescaped). Geometry
is in whole pixels from integer arithmetic on minor units: no float touches money.

Each month is one bar, stacked by column (product family, then other income); a
negative column (discounts) stacks below zero, so the bar's parts still sum to the
month's revenue.
"""

from __future__ import annotations

from dataclasses import dataclass

from beanbill.ledger.fava_billing.revenue import RevenueTable

WIDTH = 900
HEIGHT = 340
LEFT = 90  # room for the amounts of the y axis
RIGHT = 12
TOP = 52  # room for two rows of legend
BOTTOM = 28  # room for the months
TICKS_WANTED = 5
MONTH_LABELS_AT_MOST = 12
# Colour-blind-safe (Okabe-Ito), then greys: columns beyond them repeat.
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#999999",
    "#555555",
)
LEGEND_STEP = 150
LEGEND_ROW = 18


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    color: str
    title: str  # the tooltip: month, column, amount


@dataclass(frozen=True)
class Label:
    x: int
    y: int
    text: str


@dataclass(frozen=True)
class LegendItem:
    x: int
    y: int
    color: str
    text: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: int  # x of the plot's right edge
    zero_y: int
    bars: tuple[Bar, ...]
    y_ticks: tuple[Label, ...]
    x_labels: tuple[Label, ...]
    legend: tuple[LegendItem, ...]


def nice_step(span: int) -> int:
    """A round tick step (1, 2 or 5 times a power of ten) giving about five ticks."""
    raw = max(1, -(-span // TICKS_WANTED))
    magnitude = int(10 ** (len(str(raw)) - 1))
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    raise AssertionError("10 × magnitude is always enough")  # pragma: no cover


def _extent(table: RevenueTable) -> tuple[int, int, int]:
    """(lowest, highest) the stacks reach, rounded out to whole ticks (0 is one of them),
    and the tick step."""
    high = low = 0
    for month in table.months:
        amounts = [table.amount(month, column) for column in table.columns]
        high = max(high, sum(a for a in amounts if a > 0))
        low = min(low, sum(a for a in amounts if a < 0))
    step = nice_step(max(high - low, 1))
    return (low // step) * step, max(-(-high // step) * step, step), step


def layout(table: RevenueTable) -> Chart:
    """The chart of ``table``: stacked bars per month, y ticks, month labels, legend."""
    low, high, step = _extent(table)
    plot_height = HEIGHT - TOP - BOTTOM
    plot_right = WIDTH - RIGHT

    def y_of(amount: int) -> int:
        return TOP + (high - amount) * plot_height // (high - low)

    colors = {column: PALETTE[i % len(PALETTE)] for i, column in enumerate(table.columns)}
    slot = (plot_right - LEFT) // max(len(table.months), 1)
    bar_width = max(2, slot * 2 // 3)
    bars = []
    for index, month in enumerate(table.months):
        x = LEFT + index * slot + (slot - bar_width) // 2
        above = below = 0
        for column in table.columns:
            amount = table.amount(month, column)
            if amount == 0:
                continue
            start = above if amount > 0 else below
            end = start + amount
            top, bottom = y_of(max(start, end)), y_of(min(start, end))
            title = f"{month} {column}: {table.formatted(amount)} {table.currency}"
            bars.append(Bar(x, top, bar_width, max(1, bottom - top), colors[column], title))
            above, below = (end, below) if amount > 0 else (above, end)
    ticks = tuple(
        Label(LEFT - 6, y_of(value), table.formatted(value)) for value in range(low, high + 1, step)
    )
    every = -(-len(table.months) // MONTH_LABELS_AT_MOST)
    months = tuple(
        Label(LEFT + index * slot + slot // 2, HEIGHT - 8, month)
        for index, month in enumerate(table.months)
        if index % every == 0
    )
    per_row = (WIDTH - LEFT) // LEGEND_STEP
    legend = tuple(
        LegendItem(
            LEFT + index % per_row * LEGEND_STEP,
            12 + index // per_row * LEGEND_ROW,
            colors[column],
            column,
        )
        for index, column in enumerate(table.columns)
    )
    return Chart(WIDTH, HEIGHT, LEFT, plot_right, y_of(0), tuple(bars), ticks, months, legend)
