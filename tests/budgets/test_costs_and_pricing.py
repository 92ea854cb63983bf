"""Pricing (Decimal, cached and reasoning tokens, DB override vs genai-prices),
GET /costs, and the expiry of reservations left by dead requests."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from budgets.models import Budget, BudgetCounter, Reservation, Usage
from budgets.periods import period_start
from budgets.pricing import cost_of, worst_case_cost
from providers.snapshot import ModelInfo
from providers.types import Usage as Tokens


def info(input_price=None, output_price=None, cached=None, cache_write=None) -> ModelInfo:
    return ModelInfo("m", input_price and Decimal(input_price), output_price and Decimal(output_price),
                     cached and Decimal(cached), None, None, cache_write_price=cache_write and Decimal(cache_write))


def test_cache_writes_cost_what_the_provider_charges_for_them():
    # 1M prompt tokens: 200k plain, 300k read from the cache, 500k written to it
    usage = Tokens(input_tokens=1_000_000, cached_tokens=300_000, cache_write_tokens=500_000)
    # Anthropic: a 5-minute cache entry costs 1.25x the input price ($3): 0.6 + 0.09 + 1.875
    assert cost_of(kind="anthropic", model="m", info=info("3", "15", "0.3"), usage=usage) == Decimal("2.565")
    # the model's own cache-write price wins (a 1-hour TTL: 2x)
    assert cost_of(kind="anthropic", model="m", info=info("3", "15", "0.3", "6"), usage=usage) == Decimal("3.69")
    # elsewhere a write is billed as plain input
    assert cost_of(kind="openai", model="m", info=info("3", "15", "0.3"), usage=usage) == Decimal("2.19")


def test_the_reservation_of_a_request_with_breakpoints_covers_writing_its_whole_prompt():
    plain = worst_case_cost(kind="anthropic", model="m", info=info("3", "15"), input_tokens=1_000_000, max_output=0)
    marked = worst_case_cost(kind="anthropic", model="m", info=info("3", "15"), input_tokens=1_000_000, max_output=0,
                             cache_writes=True)
    assert (plain, marked) == (Decimal("3"), Decimal("3.75"))


def test_table_prices_bill_cached_input_at_the_cached_price():
    usage = Tokens(input_tokens=1_000_000, output_tokens=500_000, cached_tokens=400_000, reasoning_tokens=100_000)
    cost = cost_of(kind="openai", model="m", info=info("2", "8", "0.5"), usage=usage)
    # 600k uncached at $2 + 400k cached at $0.50 + 500k output (reasoning included) at $8
    assert cost == Decimal("1.2") + Decimal("0.2") + Decimal("4")
    assert isinstance(cost, Decimal)


def test_without_table_prices_the_bundled_genai_prices_data_is_used():
    usage = Tokens(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=1_000_000)
    # gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per million
    assert cost_of(kind="openai", model="gpt-4o-mini", info=None, usage=usage) == Decimal("0.675")
    assert cost_of(kind="gemini", model="gemini-2.5-flash", info=info(), usage=Tokens(input_tokens=1000)) > 0


def test_a_database_price_overrides_the_bundled_one():
    usage = Tokens(input_tokens=1_000_000)
    assert cost_of(kind="openai", model="gpt-4o-mini", info=info("9", "9"), usage=usage) == Decimal("9")


def test_a_provider_reported_cost_wins_and_unknown_models_cost_zero():
    assert cost_of(kind="claude_agent", model="x", info=None, usage=Tokens(reported_cost_usd=0.0123)) == Decimal("0.0123")
    assert cost_of(kind="openai", model="no-such-model", info=None, usage=Tokens(input_tokens=10)) == 0


@pytest.mark.parametrize("period,expected", [
    ("day", datetime(2026, 11, 25, tzinfo=UTC)),
    ("week", datetime(2026, 11, 23, tzinfo=UTC)),  # Monday
    ("month", datetime(2026, 11, 1, tzinfo=UTC)),
    ("lifetime", datetime(1970, 1, 1, tzinfo=UTC)),
])
def test_budget_periods_start_in_utc(period, expected):
    assert period_start(period, datetime(2026, 11, 25, 17, 30, tzinfo=UTC)) == expected


def test_reservations_of_dead_requests_expire(db, world):
    budget = Budget.objects.create(name="b", scope="global", limit_usd=1)
    counter = BudgetCounter.objects.create(budget=budget, period_start=period_start("month", timezone.now()),
                                           reserved=Decimal("0.5"))
    Reservation.objects.create(request_id="req_dead", counter=counter, amount=Decimal("0.5"),
                               expires_at=timezone.now() - timedelta(seconds=1))
    Reservation.objects.create(request_id="req_alive", counter=counter, amount=Decimal("0"),
                               expires_at=timezone.now() + timedelta(minutes=5))
    out = io.StringIO()
    call_command("deliver_webhooks", stdout=out)
    assert "released 1 expired reservation" in out.getvalue()
    counter.refresh_from_db()
    assert counter.reserved == 0
    assert list(Reservation.objects.values_list("request_id", flat=True)) == ["req_alive"]


def _spend(live, key: str, persona: str, n: int) -> None:
    for _ in range(n):
        response = httpx.post(live.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": persona, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200


def test_costs_group_spend_and_a_key_sees_only_its_team(live, world):
    _spend(live, world.red_key, "architect", 2)
    _spend(live, world.red_key, "developer", 1)
    _spend(live, world.blue_key, "reviewer", 3)
    headers = {"Authorization": f"Bearer {world.red_key}"}
    body = httpx.get(live.url + "/costs", params={"group_by": "persona"}, headers=headers).json()
    groups = {g["group"]: g for g in body["groups"]}
    assert set(groups) == {"architect", "developer"}  # blue's reviewer spend is invisible to red
    assert groups["architect"]["requests"] == 2
    red_ledger = sum(Usage.objects.filter(team=world.red, endpoint="v1.chat.completions").values_list("cost_usd", flat=True))
    assert Decimal(body["total_cost_usd"]) == red_ledger
    assert body["daily"][0]["day"] == timezone.now().date().isoformat()

    admin = httpx.get(live.url + "/costs", params={"group_by": "team"},
                      headers={"Authorization": f"Bearer {world.admin_key}"}).json()
    assert {g["group"] for g in admin["groups"]} == {"red", "blue"}


def test_costs_export_csv_and_refuse_a_bad_range(live, world):
    _spend(live, world.red_key, "architect", 1)
    headers = {"Authorization": f"Bearer {world.red_key}"}
    response = httpx.get(live.url + "/costs", params={"group_by": "model", "format": "csv"}, headers=headers)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["model", "cost_usd", "requests", "tokens", "saved_usd", "cache_hits"] and rows[1][0] == "demo"
    assert rows[1][4:] == ["0.00000000", "0"]
    bad = httpx.get(live.url + "/costs", params={"start": "last tuesday"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start"
    future = httpx.get(live.url + "/costs", params={"start": "2999-01-01"}, headers=headers).json()
    assert future["requests"] == 0 and future["groups"] == []


def test_every_authenticated_route_is_async():
    """ApiKeyAuth is async: on a sync operation ninja would take the coroutine
    it returns for a successful login. Every operation behind it must be async."""
    from api.auth import ApiKeyAuth
    from api.urls import api

    checked = 0
    for _prefix, router in api._routers:
        for path_view in router.path_operations.values():
            for operation in path_view.operations:
                callbacks = list(operation.auth_callbacks) or [router.auth]
                if any(isinstance(a, ApiKeyAuth) for a in callbacks):
                    assert path_view.is_async, f"{operation.view_func.__name__} must be async"
                    checked += 1
    assert checked >= 6
