"""What the request path knows of budgets and rate limits, held in memory (gateway/config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from accounts.snapshot import KeyInfo
from budgets.models import Budget, RateLimit


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    id: int
    name: str
    scope: str
    team_id: int | None
    key_id: int | None
    persona: str | None
    period: str
    limit: Decimal
    hard: bool
    thresholds: tuple[int, ...]

    def applies_to(self, key: KeyInfo, persona: str) -> bool:
        if self.scope == "team":
            return self.team_id == key.team_id
        if self.scope == "key":
            return self.key_id == key.id
        if self.scope == "persona":
            return self.persona == persona
        return True  # global


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    scope: str  # "team" or "key"
    owner_id: int
    requests_per_minute: int | None
    tokens_per_minute: int | None


def budget_info(b: Budget) -> BudgetInfo:
    return BudgetInfo(b.id, b.name, b.scope, b.team_id, b.api_key_id, b.persona.slug if b.persona_id else None,
                      b.period, b.limit_usd, b.hard, tuple(sorted(int(t) for t in (b.thresholds or ()))))


def load_budgets() -> tuple[BudgetInfo, ...]:
    return tuple(budget_info(b) for b in Budget.objects.filter(enabled=True).select_related("persona"))


def load_rate_limits() -> dict[tuple[str, int], RateLimitInfo]:
    limits = {}
    for r in RateLimit.objects.all():
        scope, owner = ("key", r.api_key_id) if r.api_key_id else ("team", r.team_id)
        limits[(scope, owner)] = RateLimitInfo(scope, owner, r.requests_per_minute, r.tokens_per_minute)
    return limits
