"""The charts' arithmetic from the ledger: a budget's burn-down and forecast,
spend stacked by persona with the smaller ones as "other"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budgets import trends
from budgets.models import Budget, Usage

pytestmark = pytest.mark.django_db
JUNE = datetime(2025, 6, 1, tzinfo=UTC)  # 30 days


def spent(world, cost: str, at: datetime, persona: str = "architect") -> None:
    Usage.objects.create(request_id=f"r{at.timestamp()}{persona}", created_at=at, team=world.red, persona=persona,
                         endpoint="v1.chat.completions", attempts=1, cost_usd=Decimal(cost))


def test_a_monthly_burn_down_forecasts_the_rate_so_far_to_the_end_of_the_month(world):
    budget = Budget.objects.create(name="red", scope="team", team=world.red, period="month", limit_usd=Decimal(10))
    spent(world, "2", JUNE + timedelta(hours=3))
    spent(world, "1", JUNE + timedelta(days=1, hours=3))
    spent(world, "5", JUNE - timedelta(days=2))  # May: another period
    burn = trends.budget_burn(budget, now=JUNE + timedelta(days=2))
    assert (burn.start, burn.end, len(burn.buckets)) == (JUNE, JUNE + timedelta(days=30), 30)
    assert burn.cumulative == [Decimal(2), Decimal(3), Decimal(3)]
    assert burn.forecast == Decimal(45)  # 3 in 2 days, for 30 days
    assert burn.runs_out_at == JUNE + timedelta(days=2) + timedelta(days=7 * 2 / 3)  # 7 more at 1.5 a day


def test_a_tiny_spend_against_a_huge_limit_forecasts_no_run_out_date(world):
    # The date would be centuries on, past Python's last: the budgets page answered 500.
    budget = Budget.objects.create(name="big", scope="global", period="month", limit_usd=Decimal(10) ** 7)
    spent(world, "0.00000001", JUNE + timedelta(hours=1))
    burn = trends.budget_burn(budget, now=JUNE + timedelta(hours=2))
    assert burn.spent == Decimal("0.00000001") and burn.runs_out_at is None


def test_a_lifetime_budget_has_no_burn_down(world):
    budget = Budget.objects.create(name="all", scope="global", period="lifetime", limit_usd=Decimal(1))
    assert trends.budget_burn(budget, now=JUNE) is None


def test_spend_is_stacked_by_the_biggest_personas_and_the_rest_is_other(world):
    now = JUNE + timedelta(hours=12)
    for index, persona in enumerate(["a", "b", "c", "d", "e", "f", "g"]):
        spent(world, str(10 - index), now - timedelta(hours=1), persona=persona)
    stacked = trends.spend_stacked(dimension="persona", team_ids={world.red.pk}, days=7, now=now)
    assert [label for label, _ in stacked.series] == ["a", "b", "c", "d", "e", "other"]
    assert stacked.series[-1][1][-1] == Decimal(4 + 5)  # f and g, today
    assert stacked.total() == sum(Decimal(10 - i) for i in range(7))
    assert trends.spend_stacked(dimension="persona", team_ids={world.blue.pk}, days=7, now=now).series == []
