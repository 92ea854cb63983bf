"""Reads for the dashboard: spend and request aggregates from the Usage ledger.

`team_ids` is always the caller's visibility (accounts.roles.visible_team_ids):
None means every team, a set limits every aggregate to those teams, so a team
lead's page can never add up another team's rows.
"""

from __future__ import annotations

from collections import defaultdict
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


# The Usage rows' endpoint names (api/auth.py: the path, dotted) of the calls
# that ask a model for something. Listing models, reading costs or runs, the
# health and capability pages are calls too, each with its $0 row, but the cost
# views count what was asked of models; the usage log shows every row.
MODEL_ENDPOINTS = ("v1.chat.completions", "v1.completions", "v1.embeddings", "v1.messages", "v1.responses",
                   "api.v1.chat", "ws.chat", "dashboard.playground")
# A model call whatever its endpoint: a provider was called, or it cost money
# (so no spend can ever fall out of a cost view).
MODEL_CALL = Q(endpoint__in=MODEL_ENDPOINTS) | Q(attempts__gt=0) | ~Q(cost_usd=0)


def usage_visible(*, team_ids: set[int] | None) -> QuerySet[Usage]:
    rows = Usage.objects.all()
    return rows if team_ids is None else rows.filter(team_id__in=team_ids)


def model_calls_visible(*, team_ids: set[int] | None) -> QuerySet[Usage]:
    """usage_visible, model calls only: what every cost view adds up."""
    return usage_visible(team_ids=team_ids).filter(MODEL_CALL)


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
    rows = model_calls_visible(team_ids=team_ids)
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
    rows = model_calls_visible(team_ids=team_ids)
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


# Rows where caching did something: a response cache hit, or a provider call
# with prompt-cached input (or a cache write that changed its price).
CACHING = Q(cache_hit=True) | Q(cached_tokens__gt=0) | ~Q(saved_usd=0)


def _savings_sums() -> dict:
    return {"hits": Count("id", filter=Q(cache_hit=True)),
            "cache_saved": Sum("saved_usd", filter=Q(cache_hit=True)),
            "prompt_saved": Sum("saved_usd", filter=Q(cache_hit=False)),
            "cached_tokens": Sum("cached_tokens", filter=Q(cache_hit=False))}


def _savings_row(row: dict) -> dict:
    cache_saved, prompt_saved = row["cache_saved"] or ZERO, row["prompt_saved"] or ZERO
    return {**row, "hits": row["hits"] or 0, "cached_tokens": row["cached_tokens"] or 0,
            "cache_saved": cache_saved, "prompt_saved": prompt_saved, "saved": cache_saved + prompt_saved}


def savings(*, team_ids: set[int] | None, since: datetime, dimension: str | None = None) -> dict | list[dict]:
    """What caching saved since `since`: the response cache (answers served from
    it, and what they would have cost) and provider prompt caching (input tokens
    read from a provider's cache, and what they cost less than at the full
    input price). With a `dimension` (team, persona, ...), one row per label,
    biggest saving first; without, the totals."""
    rows = model_calls_visible(team_ids=team_ids).filter(CACHING, created_at__gte=since)
    if dimension is None:
        return _savings_row(rows.aggregate(**_savings_sums()))
    grouped = rows.values(label=F(DIMENSIONS[dimension])).annotate(**_savings_sums()).order_by("label")
    found = [_savings_row({**row, "label": row["label"] or "(none)"}) for row in grouped]
    return sorted(found, key=lambda row: (-row["saved"], row["label"]))


def spend_per_day(*, team_ids: set[int] | None, days: int, now: datetime | None = None) -> list[tuple[date, Decimal]]:
    """Spend for each of the last `days` UTC days, oldest first, zero-filled."""
    first = day_start(now) - timedelta(days=days - 1)
    totals = {
        row["day"]: row["cost"]
        for row in model_calls_visible(team_ids=team_ids).filter(created_at__gte=first)
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
    rows = model_calls_visible(team_ids=team_ids).filter(created_at__gte=since)
    if provider is not None:
        rows = rows.filter(provider=provider)
    agg = rows.aggregate(n=Count("id"), errors=Count("id", filter=Q(status="error")),
                         latency=Avg("latency_ms", filter=Q(status="ok")))
    return RequestStats(agg["n"], agg["errors"], round(agg["latency"]) if agg["latency"] is not None else None)


@dataclass
class ProviderHealth:
    """What one provider did since a moment, attempt by attempt (from the rows'
    attempt logs): a request that fell back from it counts its failures here,
    not only under the provider that finally answered."""

    requests: int = 0  # requests that called it at least once
    attempts: int = 0
    failures: int = 0  # attempts that did not answer
    skipped: int = 0  # times its open circuit breaker skipped it
    latency_total_ms: int = 0  # of the answered attempts
    last_failure: dict | None = None  # the newest failed attempt: outcome, error, at

    @property
    def error_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    @property
    def avg_latency_ms(self) -> int | None:
        answered = self.attempts - self.failures
        return round(self.latency_total_ms / answered) if answered else None

    def add(self, attempt: dict, *, first_of_request: bool) -> None:
        if attempt.get("outcome") in SKIPPED_OUTCOMES:
            self.skipped += 1
            return
        self.requests += first_of_request
        self.attempts += 1
        if attempt.get("outcome") == "ok":
            self.latency_total_ms += attempt.get("ms") or 0
        else:
            self.failures += 1
            if self.last_failure is None or attempt.get("at", "") > self.last_failure.get("at", ""):
                self.last_failure = attempt


# Attempt-log outcomes of steps never called: an open breaker, or a step that
# could not serve the request (a capability or a limit of its model).
SKIPPED_OUTCOMES = ("circuit_open", "skipped")


def _attempts_of(provider: str, status: str, latency_ms: int, log: list) -> list[dict]:
    # Rows older than the attempt log: one attempt, judged by the row's status.
    return log or ([{"provider": provider, "outcome": "ok" if status == "ok" else status, "ms": latency_ms}]
                   if provider else [])


def provider_stats(*, since: datetime) -> dict[str, ProviderHealth]:
    """Per provider, every attempt since `since`: answered, failed, skipped.

    Most rows are one answered attempt; the database adds those up. Only the
    others (retries, fallbacks, failures, breaker skips) are read attempt by attempt.
    """
    # A response cache hit called no provider: it says nothing of one's health.
    rows = Usage.objects.filter(created_at__gte=since, cache_hit=False)
    plain = Q(attempts=1, status="ok")
    health: dict[str, ProviderHealth] = defaultdict(ProviderHealth)
    for r in rows.filter(plain).values("provider").annotate(n=Count("id"), ms=Sum("latency_ms")):
        h = health[r["provider"]]
        h.requests += r["n"]
        h.attempts += r["n"]
        h.latency_total_ms += r["ms"] or 0
    others = rows.exclude(plain).filter(Q(attempts__gt=0) | ~Q(provider=""))
    for provider, status, latency_ms, log in others.values_list("provider", "status", "latency_ms", "attempt_log"):
        seen: set[str] = set()
        for attempt in _attempts_of(provider, status, latency_ms, log):
            name = attempt.get("provider", "")
            health[name].add(attempt, first_of_request=name not in seen)
            if attempt.get("outcome") not in SKIPPED_OUTCOMES:
                seen.add(name)
    return dict(health)


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
