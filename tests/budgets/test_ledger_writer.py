"""The ledger's writer thread (budgets/ledger.py LedgerWriter): batched
reservations stay exact, settlement releases what the database holds, and a
reservation that arrives after its request was settled is never held."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db.models import Sum

from budgets import ledger
from budgets.models import Alert, Budget, BudgetCounter, Reservation, Usage
from budgets.snapshot import BudgetInfo

pytestmark = pytest.mark.django_db(transaction=True)  # the writer has its own connection


def budget_info(budget: Budget) -> BudgetInfo:
    return BudgetInfo(budget.id, budget.name, budget.scope, budget.team_id, None, None, budget.period,
                      budget.limit_usd, budget.hard, ())


def row(world, request_id: str, cost: str) -> Usage:
    return Usage(request_id=request_id, team=world.red, persona="architect", provider="demo", model="demo",
                 cost_usd=Decimal(cost))


@pytest.fixture
def red_budget(world) -> BudgetInfo:
    ledger.forget_counters()
    return budget_info(Budget.objects.create(name="red", scope="team", team=world.red, limit_usd=Decimal(1),
                                             hard=True, thresholds=[]))


def test_reservations_from_many_threads_at_once_never_pass_the_limit(world, red_budget):
    def reserve(i: int) -> bool:
        try:
            ledger.budget_reserve(request_id=f"req_{i}", budgets=[red_budget], amount=Decimal("0.3"))
        except ledger.BudgetRefusal:
            return False
        return True

    with ThreadPoolExecutor(max_workers=20) as pool:
        admitted = sum(pool.map(reserve, range(40)))
    assert admitted == 3
    counter = BudgetCounter.objects.get(budget_id=red_budget.id)
    assert counter.reserved == Decimal("0.9") and Reservation.objects.count() == 3


def test_settling_releases_the_reservation_and_counts_the_spend(world, red_budget):
    ledger.budget_reserve(request_id="req_a", budgets=[red_budget], amount=Decimal("0.5"))
    ledger.usage_settle(row=row(world, "req_a", "0.12345678"), budgets=[red_budget])
    counter = BudgetCounter.objects.get(budget_id=red_budget.id)
    assert counter.reserved == 0 and Reservation.objects.count() == 0
    assert counter.spent == Decimal("0.12345678") == Usage.objects.aggregate(s=Sum("cost_usd"))["s"]


def test_a_reservation_arriving_after_its_settlement_is_not_held(world, red_budget):
    # The client went away while the reservation was on its way to the writer:
    # the request settled (nothing held yet), then the reservation arrived.
    ledger.usage_settle(row=row(world, "req_late", "0"), budgets=[red_budget])
    assert ledger.budget_reserve(request_id="req_late", budgets=[red_budget], amount=Decimal("0.5")) == []
    assert Reservation.objects.count() == 0
    assert BudgetCounter.objects.get(budget_id=red_budget.id).reserved == 0


def test_a_counter_deleted_under_the_writer_is_found_again(world, red_budget):
    # The writer caches counter ids; an operator who deletes the counter row
    # (or the budget's period rows) must not break the next write.
    ledger.budget_reserve(request_id="req_1", budgets=[red_budget], amount=Decimal("0.25"))
    ledger.usage_settle(row=row(world, "req_1", "0.1"), budgets=[red_budget])
    BudgetCounter.objects.filter(budget_id=red_budget.id).delete()
    held = ledger.budget_reserve(request_id="req_2", budgets=[red_budget], amount=Decimal("0.25"))
    counter = BudgetCounter.objects.get(budget_id=red_budget.id)
    assert [h.counter_id for h in held] == [counter.id]
    assert counter.spent == Decimal("0.1")  # rebuilt from the ledger
    assert counter.reserved == Decimal("0.25")


def test_a_threshold_alert_is_written_once_whichever_batch_crosses_it(world):
    ledger.forget_counters()
    budget = Budget.objects.create(name="red alerts", scope="team", team=world.red, limit_usd=Decimal(1),
                                   hard=False, thresholds=[50])
    info = BudgetInfo(budget.id, budget.name, budget.scope, budget.team_id, None, None, budget.period,
                      budget.limit_usd, budget.hard, (50,))
    first = ledger.usage_settle(row=row(world, "req_a", "0.6"), budgets=[info])
    second = ledger.usage_settle(row=row(world, "req_b", "0.1"), budgets=[info])
    assert [c.threshold for c in first] == [50] and second == []
    assert Alert.objects.filter(budget=budget, threshold=50).count() == 1


def _prepared_after_two_releases() -> list[str]:
    from budgets import ledger_store as store

    for _ in range(2):
        with store.transaction():
            store.release(["req_none_1", "req_none_2"])()
    with store.thread_connection().connection.cursor() as cursor:  # the same session: its prepared statements
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [text for (text,) in cursor.fetchall()]


def test_the_writer_prepares_its_statements_on_postgresql_unless_turned_off(world, settings):
    """From a text's second use its statement is prepared (no parse and plan per
    request); EP_DB_PREPARED_STATEMENTS=0 (a pooler that cannot keep them) leaves
    every statement unprepared. Lists go as one array, so any number of request
    ids is one text."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's (SQLite caches its own)")
    settings.EP_DB_PREPARED_STATEMENTS = False
    assert not any("budgets_reservation" in text for text in _prepared_after_two_releases())
    connection.close()  # a new session: nothing prepared yet
    settings.EP_DB_PREPARED_STATEMENTS = True
    prepared = [text for text in _prepared_after_two_releases() if "budgets_reservation" in text]
    assert len(prepared) == 1 and "= ANY(" in prepared[0]

