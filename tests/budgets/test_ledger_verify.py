"""`manage.py ledger_verify`: every budget counter recomputed from the ledger;
drift reported (exit 1) or, with --fix, repaired, also while the ledger
writer is settling requests."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from budgets import ledger
from budgets.models import Budget, BudgetCounter, Reservation, Usage
from budgets.snapshot import budget_info

pytestmark = pytest.mark.django_db(transaction=True)  # the writer has its own connection


def verify(*args: str) -> str:
    out = StringIO()
    call_command("ledger_verify", *args, stdout=out)
    return out.getvalue()


def settle(world, budgets, cost: str, *, reserve: str | None = None, created_at=None) -> str:
    request_id = f"req_{uuid.uuid4().hex}"
    if reserve:
        ledger.budget_reserve(request_id=request_id, budgets=budgets, amount=Decimal(reserve))
    row = Usage(request_id=request_id, team=world.red, persona="architect", provider="demo", model="demo",
                cost_usd=Decimal(cost), created_at=created_at or timezone.now())
    ledger.usage_settle(row=row, budgets=budgets)
    return request_id


@pytest.fixture
def red_budgets(world):
    """A team month budget and a global day budget, both counting red's rows."""
    ledger.forget_counters()
    month = Budget.objects.create(name="red monthly", scope="team", team=world.red, limit_usd=Decimal(100),
                                  thresholds=[])
    day = Budget.objects.create(name="everyone daily", scope="global", period="day", limit_usd=Decimal(100),
                                thresholds=[])
    return month, day, [budget_info(month), budget_info(day)]


def test_counters_the_writer_kept_show_no_drift(world, red_budgets):
    month, day, infos = red_budgets
    settle(world, infos, "0.25", reserve="0.5")
    settle(world, infos, "0.125")
    ledger.budget_reserve(request_id=f"req_{uuid.uuid4().hex}", budgets=infos, amount=Decimal("0.3"))  # in flight
    out = verify()
    assert "Checked 2 counter(s) of 2 budget(s) against the ledger: no drift." in out, out
    assert BudgetCounter.objects.get(budget=day).reserved == Decimal("0.3")


def test_a_drifted_counter_is_reported_then_fixed(world, red_budgets):
    month, day, infos = red_budgets
    settle(world, infos, "0.25", reserve="0.5")
    settle(world, infos, "0.125")
    BudgetCounter.objects.filter(budget=month).update(spent=Decimal("0.5"), reserved=Decimal("0.2"))

    with pytest.raises(CommandError, match=r"1 budget counter\(s\) differ from the ledger"):
        verify()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("ledger_verify", stdout=out)
    assert (f"DRIFT budget {month.id} 'red monthly', period from {timezone.now():%Y-%m}-01: "
            "spent 0.50000000 but the ledger sums 0.37500000 (+0.12500000); "
            "reserved 0.20000000 but its reservations hold 0.00000000 (+0.20000000)") in out.getvalue()
    assert BudgetCounter.objects.get(budget=month).spent == Decimal("0.5")  # only reported

    fixed = verify("--fix")
    assert f"FIXED budget {month.id} 'red monthly'" in fixed and "1 drifted, fixed." in fixed
    counter = BudgetCounter.objects.get(budget=month)
    assert (counter.spent, counter.reserved) == (Decimal("0.375"), Decimal(0))
    assert "no drift." in verify()


def test_each_period_counts_only_its_own_rows(world, red_budgets):
    month, day, infos = red_budgets
    now = timezone.now()
    settle(world, infos, "0.5", created_at=now - timedelta(days=1))
    settle(world, infos, "0.25", created_at=now)
    counters = BudgetCounter.objects.filter(budget=day).order_by("period_start")
    assert [c.spent for c in counters] == [Decimal("0.5"), Decimal("0.25")]
    assert "Checked 3 counter(s)" in verify() or now.day == 1  # month: one counter unless yesterday was last month

    # Yesterday's counter wrongly holding today's spend too is drift, caught.
    BudgetCounter.objects.filter(id=counters[0].id).update(spent=Decimal("0.75"))
    out = verify("--fix")
    assert f"FIXED budget {day.id} 'everyone daily', period from {now - timedelta(days=1):%Y-%m-%d}" in out, out
    assert BudgetCounter.objects.get(id=counters[0].id).spent == Decimal("0.5")


def test_counters_of_disabled_budgets_are_not_checked(world, red_budgets):
    month, day, infos = red_budgets
    settle(world, infos, "0.25")
    Budget.objects.filter(id=day.id).update(enabled=False)
    BudgetCounter.objects.filter(budget=day).update(spent=Decimal(9))
    out = verify()
    assert "Checked 1 counter(s) of 1 budget(s) against the ledger: no drift." in out
    assert "1 counter(s) of disabled budgets not checked." in out


def test_checking_and_fixing_while_the_writer_settles_stay_exact(world, red_budgets):
    month, day, infos = red_budgets
    BudgetCounter.objects.filter(budget=month).delete()
    settle(world, infos, "0.01")
    BudgetCounter.objects.filter(budget=month).update(spent=Decimal(7))  # a drift for --fix to repair
    stop = threading.Event()
    settled = []

    def traffic() -> None:
        while not stop.is_set():
            settled.append(settle(world, infos, "0.01", reserve="0.02"))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        verify("--fix")
        for _ in range(5):
            verify()  # a check (no lock) sees each counter and its rows at one moment: no false drift
            verify("--fix")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert len(settled) > 0
    assert "no drift." in verify()
    counter = BudgetCounter.objects.get(budget=month)
    assert counter.spent == Decimal("0.01") * (len(settled) + 1) and counter.reserved == 0
    assert not Reservation.objects.exists()


def test_week_and_lifetime_periods_are_bounded_as_the_writer_counts_them(world):
    ledger.forget_counters()
    week = Budget.objects.create(name="weekly", scope="team", team=world.red, period="week", limit_usd=Decimal(100),
                                 thresholds=[])
    lifetime = Budget.objects.create(name="forever", scope="team", team=world.red, period="lifetime",
                                     limit_usd=Decimal(100), thresholds=[])
    infos = [budget_info(week), budget_info(lifetime)]
    now = timezone.now()
    for days_ago, cost in ((40, "0.5"), (8, "0.25"), (0, "0.125")):
        settle(world, infos, cost, created_at=now - timedelta(days=days_ago))
    assert BudgetCounter.objects.filter(budget=week).count() == 3
    assert BudgetCounter.objects.get(budget=lifetime).spent == Decimal("0.875")
    assert "Checked 4 counter(s) of 2 budget(s) against the ledger: no drift." in verify()
