"""Reads for the dashboard: spend and request aggregates from the Usage ledger.

`team_ids` is always the caller's visibility (accounts.roles.visible_team_ids):
None means every team, a set limits every aggregate to those teams, so a team
lead's page can never add up another team's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from budgets import periods
from budgets.models import Budget, Usage

ZERO = Decimal(0)
# Breakdown name -> Usage field; the order is the costs page's.
DIMENSIONS = {
    "team": "team__name",
    "persona": "persona",
    "provider": "provider",
    "model": "model",
    "run": "run_id",
    "key": "api_key__name",
}


def usage_visible(*, team_ids: set[int] | None) -> QuerySet[Usage]:
    rows = Usage.objects.all()
    return rows if team_ids is None else rows.filter(team_id__in=team_ids)


def budgets_visible(*, team_ids: set[int] | None) -> QuerySet[Budget]:
    budgets = Budget.objects.select_related("team", "api_key", "persona").order_by("name")
    if team_ids is None:
        return budgets
    # A lead sees the budgets of their teams and of their teams' keys.
    return budgets.filter(Q(team_id__in=team_ids) | Q(api_key__team_id__in=team_ids))


def day_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def period_start(period: str, now: datetime | None = None) -> datetime | None:
    """The start (UTC) of the budget period containing `now`; None for lifetime."""
    start = periods.period_start(period, now or timezone.now())
    return None if start == periods.EPOCH else start


def spend_total(*, team_ids: set[int] | None, since: datetime | None, until: datetime | None = None) -> Decimal:
    rows = usage_visible(team_ids=team_ids)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows.aggregate(total=Sum("cost_usd"))["total"] or ZERO


def spend_by(
    *, dimension: str, team_ids: set[int] | None, since: datetime | None, until: datetime | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Rows of {label, cost, requests, tokens}, biggest spender first."""
    field = DIMENSIONS[dimension]
    rows = usage_visible(team_ids=team_ids)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    grouped = (
        rows.values(label=F(field))
        .annotate(cost=Sum("cost_usd"), requests=Count("id"), input=Sum("input_tokens"), output=Sum("output_tokens"))
        .order_by("-cost", "label")
    )
    return [{**row, "label": row["label"] or "(none)", "tokens": (row["input"] or 0) + (row["output"] or 0)}
            for row in (grouped[:limit] if limit else grouped)]


def spend_per_day(*, team_ids: set[int] | None, days: int, now: datetime | None = None) -> list[tuple[date, Decimal]]:
    """Spend for each of the last `days` UTC days, oldest first, zero-filled."""
    first = day_start(now) - timedelta(days=days - 1)
    totals = {
        row["day"]: row["cost"]
        for row in usage_visible(team_ids=team_ids).filter(created_at__gte=first)
        .annotate(day=TruncDate("created_at")).values("day").annotate(cost=Sum("cost_usd"))
    }
    return [((first + timedelta(days=i)).date(), totals.get((first + timedelta(days=i)).date(), ZERO))
            for i in range(days)]


@dataclass
class RequestStats:
    requests: int
    errors: int
    avg_latency_ms: int | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def request_stats(*, team_ids: set[int] | None, since: datetime, provider: str | None = None) -> RequestStats:
    rows = usage_visible(team_ids=team_ids).filter(created_at__gte=since)
    if provider is not None:
        rows = rows.filter(provider=provider)
    agg = rows.aggregate(n=Count("id"), errors=Count("id", filter=Q(status="error")),
                         latency=Avg("latency_ms", filter=Q(status="ok")))
    return RequestStats(agg["n"], agg["errors"], round(agg["latency"]) if agg["latency"] is not None else None)


def provider_stats(*, since: datetime) -> dict[str, RequestStats]:
    """Per provider: requests, provider failures and mean latency of answers since `since`."""
    rows = (Usage.objects.filter(created_at__gte=since).exclude(provider="").values("provider")
            .annotate(n=Count("id"), errors=Count("id", filter=Q(status="error")),
                      latency=Avg("latency_ms", filter=Q(status="ok"))))
    return {r["provider"]: RequestStats(r["n"], r["errors"], round(r["latency"]) if r["latency"] is not None else None)
            for r in rows}


def budget_spend(budget: Budget, now: datetime | None = None) -> Decimal:
    """What the ledger says this budget's scope has spent in its current period."""
    scope = periods.scope_filter(scope=budget.scope, team_id=budget.team_id, key_id=budget.api_key_id,
                                persona=budget.persona.slug if budget.persona else "")
    rows = Usage.objects.filter(scope)
    start = period_start(budget.period, now)
    if start is not None:
        rows = rows.filter(created_at__gte=start)
    return rows.aggregate(total=Sum("cost_usd"))["total"] or ZERO


@dataclass
class BudgetUse:
    budget: Budget
    spent: Decimal

    @property
    def percent(self) -> int:
        limit = self.budget.limit_usd
        return int(self.spent * 100 / limit) if limit else 0

    @property
    def level(self) -> str:
        return "bad" if self.percent >= 100 else "warn" if self.percent >= 80 else "ok"

    @property
    def sentence(self) -> str:
        return f"Budget '{self.budget.name}' is {self.percent}% used (${self.spent:.2f} of ${self.budget.limit_usd:.2f})."


def budget_uses(*, team_ids: set[int] | None) -> list[BudgetUse]:
    now = timezone.now()
    return [BudgetUse(b, budget_spend(b, now)) for b in budgets_visible(team_ids=team_ids)]
