"""Server-rendered SVG charts: the view computes the geometry, the template
draws it; no chart library and no script."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 220, 56, 24, 12


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: Decimal
    title: str


@dataclass
class BarChart:
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # (y, "$1.20")
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: int = HEIGHT - BOTTOM
    description: str = ""


def _nice_max(value: Decimal) -> Decimal:
    if value <= 0:
        return Decimal(1)
    for step in (Decimal("0.01"), Decimal("0.05"), Decimal("0.1"), Decimal("0.5"), Decimal(1), Decimal(5),
                 Decimal(10), Decimal(50), Decimal(100), Decimal(500), Decimal(1000)):
        if value <= step * 4:
            return step * ((value / step).to_integral_value(rounding="ROUND_CEILING"))
    return value


def spend_chart(series: list[tuple[date, Decimal]], *, what: str) -> BarChart:
    top = _nice_max(max((v for _, v in series), default=Decimal(0)))
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(len(series), 1)
    bars = []
    for i, (day, value) in enumerate(series):
        h = float(value / top) * plot_h
        label = day.strftime("%d %b") if i % max(1, len(series) // 7) == 0 else ""
        bars.append(Bar(LEFT + i * slot + slot * 0.15, HEIGHT - BOTTOM - h, slot * 0.7, h, label, value,
                        f"{day:%a %d %b}: ${value:.4f}"))
    places = 2 if top >= 1 else 4  # small demo amounts would all read "$0.00"
    ticks = [(HEIGHT - BOTTOM - plot_h * f, f"${top * Decimal(str(f)):.{places}f}") for f in (0, 0.5, 1)]
    total = sum((v for _, v in series), Decimal(0))
    return BarChart(bars, ticks, description=f"{what}: ${total:.4f} over {len(series)} days.")
