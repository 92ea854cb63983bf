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

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import ApiKey, Team
from budgets import periods, rollups
from budgets.models import Budget, Usage
from budgets.rollups import MODEL_CALL, MODEL_ENDPOINTS  # noqa: F401 - where the dashboard finds them

ZERO = Decimal(0)
# Breakdown name -> the field the ledger and its rollups share; the order is the
# costs page's. Team and key are ids, named by `labels_of`.
DIMENSIONS = {
    "team": "team_id",
    "persona": "persona",
    "provider": "provider",
    "model": "model",
    "run": "run_id",
    "key": "api_key_id",
}


def labels_of(dimension: str, values) -> dict:
    """Each grouped value's label: a team's or key's name for its id, "(none)"
    for an empty value or an id no team or key has any more."""
    if dimension == "team":
        names = dict(Team.objects.filter(pk__in=[v for v in values if v]).values_list("pk", "name"))
    elif dimension == "key":
        names = dict(ApiKey.objects.filter(pk__in=[v for v in values if v]).values_list("pk", "name"))
    else:
        names = {v: v for v in values}
    return {v: names.get(v) or "(none)" for v in values}


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
    found = rollups.totals(by=(), sums=("cost",), team_ids=team_ids, since=since, until=until)
    return found[()]["cost"] if found else ZERO


SPEND_SUMS = ("cost", "requests", "input", "output", "hits", "saved", "cache_saved", "prompt_cached_tokens")


@dataclass
class Spend:
    """Model calls over one time range, summed per team, key, persona, provider
    and model: every breakdown and saving of the costs page from one read of
    the rollups and one of the ledger (budgets/rollups.py), not one each."""

    cells: dict[tuple, dict]  # a key of each of `dimensions` -> SPEND_SUMS
    # What a cell's key is made of: every dimension but runs (the costs page's
    # cube), or a day and one dimension (GET /costs: its groups and daily series).
    dimensions: tuple[str, ...] = rollups.DAILY_DIMENSIONS

    def total(self) -> Decimal:
        return sum((cell["cost"] for cell in self.cells.values()), ZERO)

    def _merged(self, dimension: str, *, daily: bool = False) -> dict:
        """SPEND_SUMS per label of `dimension` (per (day, label) with `daily`)."""
        at = self.dimensions.index(DIMENSIONS[dimension])
        day_at = self.dimensions.index("day") if daily else None
        labels = labels_of(dimension, {key[at] for key in self.cells})
        merged: dict = {}
        for key, cell in self.cells.items():
            label = labels[key[at]]
            row = merged.setdefault((key[day_at], label) if daily else label, dict.fromkeys(SPEND_SUMS, 0))
            for name in SPEND_SUMS:
                row[name] += cell[name]
        return merged

    def daily(self, dimension: str) -> dict[tuple[date, str], dict]:
        """SPEND_SUMS per (UTC day, label of `dimension`); needs "day" in the dimensions."""
        return self._merged(dimension, daily=True)

    def by(self, dimension: str, limit: int | None = None) -> list[dict]:
        """Rows of {label, cost, requests, tokens, saved, hits}, biggest spender first (saved: what
        caching saved, response cache and provider prompt caching; hits: answers from the response cache)."""
        rows = [{"label": label, "cost": row["cost"] or ZERO, "requests": row["requests"], "input": row["input"],
                 "output": row["output"], "tokens": row["input"] + row["output"], "saved": row["saved"] or ZERO,
                 "hits": row["hits"]}
                for label, row in self._merged(dimension).items()]
        ranked = sorted(rows, key=lambda row: (-row["cost"], row["label"]))
        return ranked[:limit] if limit else ranked

    def savings(self, dimension: str | None = None) -> dict | list[dict]:
        """What caching saved: the response cache (answers served from it, and
        what they would have cost) and provider prompt caching (input tokens
        read from a provider's cache, and what they cost less than at the full
        input price). With a `dimension`, one row per label where caching did
        something, biggest saving first; without, the totals."""
        if dimension is None:
            return _saving({name: sum((c[name] for c in self.cells.values()), 0) for name in SPEND_SUMS})
        rows = [{**_saving(row), "label": label} for label, row in self._merged(dimension).items()
                if row["hits"] or row["prompt_cached_tokens"] or row["saved"]]
        return sorted(rows, key=lambda row: (-row["saved"], row["label"]))


def _saving(sums: dict) -> dict:
    saved, cache_saved = sums["saved"] or ZERO, sums["cache_saved"] or ZERO
    return {"hits": sums["hits"], "cache_saved": cache_saved, "prompt_saved": saved - cache_saved,
            "cached_tokens": sums["prompt_cached_tokens"], "saved": saved}


def spend_over(*, team_ids: set[int] | None, since: datetime | None, until: datetime | None = None,
               daily: str | None = None) -> Spend:
    """Model calls over [since, until) in cells of every dimension but runs, or,
    with `daily` (a dimension), of each UTC day and that dimension: a year of
    rollups is ~186,000 rows at 10M, read once for both the groups and their
    daily series (docs/PERFORMANCE.md, "The ledger at scale")."""
    by = ("day", DIMENSIONS[daily]) if daily else rollups.DAILY_DIMENSIONS
    return Spend(rollups.totals(by=by, sums=SPEND_SUMS, team_ids=team_ids, since=since, until=until), by)


def cost_by(*, dimension: str, team_ids: set[int] | None, since: datetime | None,
            until: datetime | None = None) -> dict[str, Decimal]:
    """What each label of one dimension (not runs) cost: one narrow read, for
    the period before a chart's, where the cube's every breakdown is not needed."""
    found = rollups.totals(by=(DIMENSIONS[dimension],), sums=("cost",), team_ids=team_ids, since=since, until=until)
    labels = labels_of(dimension, {value for (value,) in found})
    costs: dict[str, Decimal] = {}
    for (value,), sums in found.items():
        costs[labels[value]] = costs.get(labels[value], ZERO) + sums["cost"]
    return costs


def spend_by(
    *, dimension: str, team_ids: set[int] | None, since: datetime | None, until: datetime | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Rows of {label, cost, requests, tokens}, biggest spender first (rolled
    days from the rollups, the rest from the ledger: budgets/rollups.py)."""
    if dimension != "run":
        return spend_over(team_ids=team_ids, since=since, until=until).by(dimension, limit)
    found = (rollups.top_runs(team_ids=team_ids, since=since, until=until, limit=limit) if limit else
             rollups.totals(by=("run_id",), sums=rollups.RUN_SUMS, team_ids=team_ids, since=since, until=until,
                            runs=True))
    rows = [{"label": run_id or "(none)", "cost": sums["cost"], "requests": sums["requests"], "input": sums["input"],
             "output": sums["output"], "tokens": sums["input"] + sums["output"]} for (run_id,), sums in found.items()]
    ranked = sorted(rows, key=lambda row: (-row["cost"], row["label"]))
    return ranked[:limit] if limit else ranked


def savings(*, team_ids: set[int] | None, since: datetime, dimension: str | None = None) -> dict | list[dict]:
    """Spend.savings over `since` to now."""
    return spend_over(team_ids=team_ids, since=since).savings(dimension)


def spend_per_day(*, team_ids: set[int] | None, days: int, now: datetime | None = None) -> list[tuple[date, Decimal]]:
    """Spend for each of the last `days` UTC days, oldest first, zero-filled."""
    first = day_start(now) - timedelta(days=days - 1)
    totals = {day: sums["cost"] for (day,), sums in
              rollups.totals(by=("day",), sums=("cost",), team_ids=team_ids, since=first).items()}
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
    return rollups.cost_sum(since=period_start(budget.period, now), where=scope)


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
