"""Budget reservation and settlement, exact under concurrency.

- Reserve: before any provider is called, the worst-case cost is added to the
  `reserved` of every hard budget that applies, in one transaction, each with
  one conditional UPDATE (`spent + reserved + amount <= limit`). PostgreSQL's
  row locks (and SQLite's single writer) serialize those statements, so
  concurrent requests — in one process or many — can never reserve past a limit.
- Settle: the Usage row is inserted, and in the same transaction each budget's
  `spent` grows by the actual cost and the reservation is released. `spent` is
  touched nowhere else, so it always equals the sum of the ledger it covers.
- Reservations of a process that died before settling expire after
  EP_RESERVATION_TTL_SECONDS (`reservations_expire`).

Overshoot bound: a request may cost more than it reserved only when the input
estimate (characters / 3) undercounts its prompt, or when a provider reports
its own cost (claude_agent). Spend then exceeds a limit by at most that
difference summed over the requests in flight when the limit is reached.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q, Sum, Value
from django.utils import timezone

from budgets.models import Alert, BudgetCounter, Reservation, Usage
from gateway.hotcache import BudgetInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_sqlite_writer = threading.Lock()


def _writing():
    """SQLite has one writer: queue this process's writers on a lock instead of
    letting them spin in SQLite's busy handler, whose sleeps grow to 100 ms."""
    return _sqlite_writer if connection.vendor == "sqlite" else contextlib.nullcontext()
ZERO = Decimal(0)
CENT_MILLIONTH = Decimal("0.00000001")


class BudgetRefusal(Exception):
    """No room in a hard budget; carries what the client needs to know."""

    def __init__(self, budget: BudgetInfo, remaining: Decimal, amount: Decimal) -> None:
        super().__init__(budget.name)
        self.budget, self.remaining, self.amount = budget, remaining, amount


class BudgetStoreDown(Exception):
    """The database that enforces budgets could not be reached: refuse, never admit."""


def period_start(period: str, now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return EPOCH


def ledger_filter(budget: BudgetInfo) -> Q:
    """The Usage rows a budget covers (its scope; the period is added by callers)."""
    if budget.scope == "team":
        return Q(team_id=budget.team_id)
    if budget.scope == "key":
        return Q(api_key_id=budget.key_id)
    if budget.scope == "persona":
        return Q(persona=budget.persona)
    return Q()


_counter_ids: dict[tuple[int, datetime], int] = {}


def _counter_id(budget: BudgetInfo, start: datetime) -> int:
    """The counter of this budget and period, created from the ledger if new.

    Callers run this before inserting their own Usage row, so a new counter's
    initial sum never includes the row that is about to be added to it.
    """
    cached = _counter_ids.get((budget.id, start))
    if cached is not None:
        return cached
    existing = BudgetCounter.objects.filter(budget_id=budget.id, period_start=start).values_list("id", flat=True)
    counter_id = existing.first()
    if counter_id is None:
        spent = Usage.objects.filter(ledger_filter(budget), created_at__gte=start).aggregate(s=Sum("cost_usd"))["s"]
        BudgetCounter.objects.bulk_create(
            [BudgetCounter(budget_id=budget.id, period_start=start, spent=_money(spent))], ignore_conflicts=True
        )
        counter_id = existing.first()
    _counter_ids[(budget.id, start)] = counter_id
    return counter_id


def _counters(budgets: list[BudgetInfo], now: datetime) -> dict[int, int]:
    """Counter ids for these budgets, checked against the database in one query:
    a cached id whose row was deleted (budget removed and re-created) is renewed."""
    wanted = {b.id: (b, period_start(b.period, now)) for b in budgets}
    ids = {bid: _counter_id(b, start) for bid, (b, start) in wanted.items()}
    found = set(BudgetCounter.objects.filter(id__in=ids.values()).values_list("id", "budget_id", "period_start"))
    for bid, (budget, start) in wanted.items():
        if (ids[bid], bid, start) not in found:
            _counter_ids.pop((bid, start), None)
            ids[bid] = _counter_id(budget, start)
    return ids


def _money(value) -> Decimal:
    # SQLite sums decimals as floats: round back to the ledger's 8 places.
    return Decimal(value or 0).quantize(CENT_MILLIONTH)


def forget_counters() -> None:
    _counter_ids.clear()


@dataclass(frozen=True, slots=True)
class Held:
    counter_id: int
    amount: Decimal


def _reserve_one(budget: BudgetInfo, counter_id: int, amount: Decimal) -> Held:
    admitted = BudgetCounter.objects.filter(
        id=counter_id, spent__lte=Value(budget.limit - amount) - F("reserved")
    ).update(reserved=F("reserved") + amount)
    if not admitted:
        counter = BudgetCounter.objects.get(id=counter_id)
        raise BudgetRefusal(budget, max(ZERO, budget.limit - counter.spent - counter.reserved), amount)
    return Held(counter_id, amount)


def budget_reserve(*, request_id: str, budgets: list[BudgetInfo], amount: Decimal) -> list[Held]:
    """Hold `amount` against every hard budget, all or none."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.EP_RESERVATION_TTL_SECONDS)
    try:
        with _writing(), transaction.atomic():
            hard = [b for b in budgets if b.hard]
            counters = _counters(hard, now)
            held = [_reserve_one(b, counters[b.id], amount) for b in hard]
            Reservation.objects.bulk_create(
                [Reservation(request_id=request_id, counter_id=h.counter_id, amount=h.amount, expires_at=expires)
                 for h in held]
            )
    except DatabaseError as error:
        forget_counters()
        raise BudgetStoreDown(str(error)[:200]) from None
    return held


@dataclass(frozen=True, slots=True)
class Crossing:
    budget: BudgetInfo
    threshold: int
    period_start: datetime
    spent: Decimal


def usage_settle(*, row: Usage, budgets: list[BudgetInfo], held: list[Held]) -> list[Crossing]:
    """Write the ledger row, move spend from reserved to spent, return the
    alert thresholds this request crossed (each crossed by exactly one request)."""
    now = row.created_at
    with _writing(), transaction.atomic():
        # A refusal costs nothing and held nothing: it must not need the
        # counters (the store may be the very thing that is down).
        counters = _counters(budgets, now) if budgets and (row.cost_usd or held) else {}
        row.save(force_insert=True)
        crossings = _add_spend(budgets, counters, row.cost_usd, now) if row.cost_usd else []
        for h in held:
            BudgetCounter.objects.filter(id=h.counter_id).update(reserved=F("reserved") - h.amount)
        if held:
            Reservation.objects.filter(request_id=row.request_id).delete()
    return crossings


def _add_spend(budgets: list[BudgetInfo], counters: dict[int, int], cost: Decimal, now: datetime) -> list[Crossing]:
    crossings = []
    for budget in budgets:
        counter = BudgetCounter.objects.filter(id=counters[budget.id])
        counter.update(spent=F("spent") + cost)
        spent = counter.values_list("spent", flat=True).get()
        before = spent - cost
        for threshold in budget.thresholds:
            line = budget.limit * threshold / 100
            if before < line <= spent:
                crossings.append(Crossing(budget, threshold, period_start(budget.period, now), spent))
    return [c for c in crossings if _alert_row_created(c)]


def _alert_row_created(crossing: Crossing) -> bool:
    budget = crossing.budget
    pct = round(crossing.spent / budget.limit * 100) if budget.limit else 100
    message = f"Budget '{budget.name}' is {pct}% used: ${crossing.spent:.4f} of ${budget.limit:.2f} ({crossing.threshold}% alert)."
    try:
        with transaction.atomic():  # savepoint: a duplicate must not undo the ledger row
            Alert.objects.create(budget_id=budget.id, threshold=crossing.threshold,
                                 period_start=crossing.period_start, message=message[:300])
    except IntegrityError:
        return False
    return True


def reservations_expire(now: datetime | None = None) -> int:
    """Release reservations whose request never settled (its process died)."""
    now = now or timezone.now()
    released = 0
    with _writing(), transaction.atomic():
        for reservation in Reservation.objects.select_for_update().filter(expires_at__lt=now):
            BudgetCounter.objects.filter(id=reservation.counter_id).update(reserved=F("reserved") - reservation.amount)
            reservation.delete()
            released += 1
    return released
