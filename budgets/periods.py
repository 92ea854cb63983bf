"""What a budget covers: its period's start, and the Usage rows of its scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Q

from budgets.snapshot import BudgetInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(period: str, now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return EPOCH


def period_end(period: str, start: datetime) -> datetime | None:
    """Where the period beginning at `start` ends (None: a lifetime never does)."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    return None


def scope_filter(*, scope: str, team_id: int | None, key_id: int | None, persona: str | None) -> Q:
    """The Usage rows a budget of this scope covers (the period is added by callers)."""
    if scope == "team":
        return Q(team_id=team_id)
    if scope == "key":
        return Q(api_key_id=key_id)
    if scope == "persona":
        return Q(persona=persona or "")
    return Q()


def ledger_filter(budget: BudgetInfo) -> Q:
    return scope_filter(scope=budget.scope, team_id=budget.team_id, key_id=budget.key_id, persona=budget.persona)
