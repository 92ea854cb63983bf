"""Server-rendered SVG charts: the view computes the geometry, the template
draws it; no chart library and no script."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

# In viewBox units. The y-axis labels sit inside the plot, above their lines, so a
# phone's narrow chart needs no margin for them (static/css: bigger text there).
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 960, 280, 8, 34, 30


def _nice_max(value: Decimal) -> Decimal:
    if value <= 0:
        return Decimal(1)
    for step in (Decimal("0.0001"), Decimal("0.0005"), Decimal("0.001"), Decimal("0.005"),
                 Decimal("0.01"), Decimal("0.05"), Decimal("0.1"), Decimal("0.5"), Decimal(1), Decimal(5),
                 Decimal(10), Decimal(50), Decimal(100), Decimal(500), Decimal(1000)):
        if value <= step * 4:
            return step * ((value / step).to_integral_value(rounding="ROUND_CEILING"))
    return value


# -- spend per day, stacked by a dimension ---------------------------------------------

SERIES_CLASSES = 6  # dashboard.css colours .s0 ... .s5; "other" is .s-other


@dataclass
class Segment:
    y: float
    height: float
    css: str
    title: str


@dataclass
class Column:
    x: float
    width: float
    label: str
    total: Decimal
    segments: list[Segment]


@dataclass
class LegendEntry:
    label: str
    css: str
    total: Decimal
    previous: Decimal

    @property
    def change(self) -> str:
        """"+12%", "-3%", "new" against the previous period."""
        if not self.previous:
            return "new" if self.total else "–"
        return f"{(self.total - self.previous) * 100 / self.previous:+.0f}%"


@dataclass
class StackedChart:
    columns: list[Column]
    ticks: list[tuple[float, str]]
    legend: list[LegendEntry]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: int = HEIGHT - BOTTOM
    description: str = ""


def _ticks(top: Decimal, plot_h: float) -> list[tuple[float, str]]:
    places = 2 if top >= 1 else 4 if top >= Decimal("0.01") else 5  # demo amounts would all read "$0.00"
    return [(HEIGHT - BOTTOM - plot_h * f, f"${top * Decimal(str(f)):.{places}f}") for f in (0, 0.5, 1)]


def _css(index: int, label: str) -> str:
    return "s-other" if label == "other" else f"s{index % SERIES_CLASSES}"


def stacked_chart(days: list[date], series: list[tuple[str, list[Decimal]]], *, what: str,
                  previous: dict[str, Decimal]) -> StackedChart:
    """One column per day, one segment per series (bottom up, biggest first);
    the legend compares each series with the previous period of the same length."""
    totals = [sum((values[i] for _, values in series), Decimal(0)) for i in range(len(days))]
    top = _nice_max(max(totals, default=Decimal(0)))
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(len(days), 1)
    columns = []
    for i, day in enumerate(days):
        y, segments = float(HEIGHT - BOTTOM), []
        for index, (label, values) in enumerate(series):
            h = float(values[i] / top) * plot_h
            if h > 0:
                y -= h
                segments.append(Segment(y, h, _css(index, label), f"{day:%a %d %b}, {label}: ${values[i]:.4f}"))
        label = day.strftime("%d %b") if i % max(1, len(days) // 7) == 0 else ""
        columns.append(Column(LEFT + i * slot + slot * 0.15, slot * 0.7, label, totals[i], segments))
    legend = [LegendEntry(label, _css(index, label), sum(values, Decimal(0)), previous.get(label, Decimal(0)))
              for index, (label, values) in enumerate(series)]
    total = sum(totals, Decimal(0))
    return StackedChart(columns, _ticks(top, plot_h), legend,
                        description=f"{what}: ${total:.4f} over {len(days)} days.")


# -- a budget's burn-down ----------------------------------------------------------------------


@dataclass
class BurnChart:
    actual: str  # SVG polyline points: spend so far
    forecast: str  # from now to the period's end at the same rate
    limit_y: float
    ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    description: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: int = HEIGHT - BOTTOM


def burn_chart(*, buckets: list, cumulative: list[Decimal], limit: Decimal, forecast: Decimal,
               label_format: str, description: str) -> BurnChart:
    top = _nice_max(max([limit, forecast, *cumulative]))
    plot_h = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT) / max(len(buckets), 1)

    def y(value: Decimal) -> float:
        return HEIGHT - BOTTOM - float(value / top) * plot_h

    points = [(LEFT, y(Decimal(0)))] + [(LEFT + (i + 1) * step, y(v)) for i, v in enumerate(cumulative)]
    actual = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    last_x, last_y = points[-1]
    every = max(1, len(buckets) // 6)
    x_labels = [(LEFT + i * step, b.strftime(label_format)) for i, b in enumerate(buckets) if i % every == 0]
    return BurnChart(actual, f"{last_x:.1f},{last_y:.1f} {WIDTH:.1f},{y(forecast):.1f}", y(limit),
                     _ticks(top, plot_h), x_labels, description)
