"""Reads for the dashboard's charts: spend over time stacked by a dimension,
each budget's burn-down with a forecast, a workflow run's cost by persona and
step. Like budgets.selectors (whose scoping they share), every read takes the
caller's visible teams and counts model calls only.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Min, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from budgets import periods, rollups
from budgets.models import Budget, Usage
from budgets.selectors import DIMENSIONS, ZERO, day_start, labels_of, model_calls_visible

OTHER = "other"


@dataclass
class Stacked:
    """Spend per day, one series per label (the biggest few, the rest as "other")."""

    days: list[date]
    series: list[tuple[str, list[Decimal]]]

    def total(self) -> Decimal:
        return sum((sum(values, ZERO) for _, values in self.series), ZERO)


def spend_stacked(*, dimension: str, team_ids: set[int] | None, days: int, now: datetime | None = None,
                  top: int = 5) -> Stacked:
    first = day_start(now) - timedelta(days=days - 1)
    field = DIMENSIONS[dimension]
    found = rollups.totals(by=("day", field), sums=("cost",), team_ids=team_ids, since=first)
    labels = labels_of(dimension, {value for _, value in found})
    cells: dict[str, dict[date, Decimal]] = {}
    for (day, value), sums in found.items():
        label = labels[value]
        cells.setdefault(label, {})
        cells[label][day] = cells[label].get(day, ZERO) + sums["cost"]
    ranked = sorted(cells, key=lambda label: (-sum(cells[label].values(), ZERO), label))
    kept, rest = ranked[:top], ranked[top:]
    if rest:  # one "other" series, so the stack still adds up to the whole spend
        merged: dict[date, Decimal] = {}
        for label in rest:
            for day, cost in cells[label].items():
                merged[day] = merged.get(day, ZERO) + cost
        cells[OTHER] = merged
        kept.append(OTHER)
    day_list = [(first + timedelta(days=i)).date() for i in range(days)]
    return Stacked(day_list, [(label, [cells[label].get(d, ZERO) for d in day_list]) for label in kept])


# -- budgets -------------------------------------------------------------------------


@dataclass
class BurnDown:
    """A budget's spend in its current period, bucket by bucket (hours of a daily
    budget, days otherwise), and where the rate so far ends the period."""

    budget: Budget
    start: datetime
    end: datetime
    now: datetime
    buckets: list[datetime]  # each bucket's start, the whole period
    cumulative: list[Decimal]  # spent by the end of each bucket, up to now
    spent: Decimal

    @property
    def forecast(self) -> Decimal:
        """Linear: the spend so far, at the same rate, until the period ends."""
        elapsed = max((self.now - self.start).total_seconds(), 60.0)  # a fresh period is not infinitely fast
        return self.spent * Decimal((self.end - self.start).total_seconds() / elapsed)

    @property
    def runs_out_at(self) -> datetime | None:
        """When the limit is reached at this rate, if before the period ends."""
        limit = self.budget.limit_usd
        if self.spent >= limit:
            return self.now
        if self.spent <= 0:
            return None
        rate = self.spent / Decimal(max((self.now - self.start).total_seconds(), 60.0))
        seconds = (limit - self.spent) / rate
        # Compared before it becomes a date: a slow spend against a large limit
        # is centuries away, past the last date Python has (a 500 before).
        if seconds >= Decimal((self.end - self.now).total_seconds()):
            return None
        return self.now + timedelta(seconds=float(seconds))


def period_end(period: str, start: datetime) -> datetime | None:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return None  # lifetime: no end, so no burn-down to draw


def budget_burn(budget: Budget, now: datetime | None = None) -> BurnDown | None:
    now = now or timezone.now()
    start = periods.period_start(budget.period, now)
    end = period_end(budget.period, start)
    if end is None:
        return None
    step = timedelta(hours=1) if budget.period == "day" else timedelta(days=1)
    scope = periods.scope_filter(scope=budget.scope, team_id=budget.team_id, key_id=budget.api_key_id,
                                 persona=budget.persona.slug if budget.persona else "")
    per_bucket = _spend_per_bucket(scope, start, end, hourly=budget.period == "day")
    buckets, cumulative, running = [], [], ZERO
    at = start
    while at < end:
        buckets.append(at)
        if at <= now:
            running += per_bucket.get(at, ZERO)
            cumulative.append(running)
        at += step
    return BurnDown(budget, start, end, now, buckets, cumulative, running)


def _spend_per_bucket(scope, start: datetime, end: datetime, *, hourly: bool) -> dict[datetime, Decimal]:
    """Spend per hour (a day's budget: today, from the ledger) or per UTC day
    (rolled days from the rollups, the rest from the ledger)."""
    if hourly:
        rows = (Usage.objects.filter(scope, created_at__gte=start, created_at__lt=end)
                .annotate(bucket=TruncHour("created_at")).values("bucket").annotate(cost=Sum("cost_usd")))
        return {_as_datetime(row["bucket"]): row["cost"] or ZERO for row in rows}
    found = rollups.totals(by=("day",), sums=("cost",), since=start, until=end, where=scope, model_calls=False)
    return {_as_datetime(day): sums["cost"] for (day,), sums in found.items()}


def _as_datetime(value) -> datetime:
    """TruncDate gives a date, TruncHour a datetime: both as a UTC datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


# -- workflow runs ---------------------------------------------------------------------


@dataclass
class RunPart:
    persona: str
    step: str
    cost: Decimal
    requests: int
    tokens: int
    first_at: datetime


def run_parts(*, run_id: str, team_ids: set[int] | None) -> list[RunPart]:
    """A run's cost per persona and step, in the order the steps started."""
    rows = (model_calls_visible(team_ids=team_ids).filter(run_id=run_id).values("persona", "step")
            .annotate(cost=Sum("cost_usd"), requests=Count("id"), input=Sum("input_tokens"),
                      output=Sum("output_tokens"), first_at=Min("created_at")).order_by("first_at"))
    return [RunPart(r["persona"] or "(none)", r["step"] or "(no step)", r["cost"] or ZERO, r["requests"],
                    (r["input"] or 0) + (r["output"] or 0), r["first_at"]) for r in rows]
