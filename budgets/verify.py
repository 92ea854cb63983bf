"""Budget counters recomputed from the ledger (the `ledger_verify` command).

Each BudgetCounter claims two sums: `spent`, the cost of the Usage rows its
budget covers in its period, and `reserved`, the Reservation rows held against
it. The ledger writer keeps both in step in the transaction that writes a row
(budgets/ledger.py); this recomputes them, to prove a restored backup or to
find what an operator's hand edit, or a bug, left behind, and with `fix`
writes the ledger's figures back.

A settlement commits its row and its counter change together, so a counter
and the ledger agree in any consistent snapshot: each counter is checked in a
read-only snapshot of its own, taking no lock, even while gateways run (on a
large ledger a sum takes a while, and a lock would hold every request that
settles against that budget meanwhile). Only a drift to repair is read again
with the counter row locked, and repaired in that transaction.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from budgets import ledger_store as store
from budgets import rollups
from budgets.models import Budget, BudgetCounter, Reservation
from budgets.periods import ledger_filter, period_end
from budgets.snapshot import budget_info


@dataclass(frozen=True, slots=True)
class Drift:
    counter_id: int
    budget_id: int
    budget_name: str
    period_start: datetime
    spent: Decimal
    ledger_spent: Decimal
    reserved: Decimal
    held: Decimal

    def describe(self) -> str:
        parts = []
        if self.spent != self.ledger_spent:
            parts.append(f"spent {self.spent:f} but the ledger sums {self.ledger_spent:f} "
                         f"({self.spent - self.ledger_spent:+f})")
        if self.reserved != self.held:
            parts.append(f"reserved {self.reserved:f} but its reservations hold {self.held:f} "
                         f"({self.reserved - self.held:+f})")
        return (f"budget {self.budget_id} '{self.budget_name}', period from {self.period_start:%Y-%m-%d}: "
                + "; ".join(parts))


@dataclass(slots=True)
class Verification:
    checked: int = 0
    budgets: set[int] = field(default_factory=set)
    drifts: list[Drift] = field(default_factory=list)
    skipped_disabled: int = 0
    expired_reservations: int = 0
    fixed: bool = False


def ledger_verify(*, fix: bool = False) -> Verification:
    """Every counter of every enabled budget against the ledger; with `fix`,
    a drifted counter is set to the ledger's figures in the same transaction
    that found the drift.

    Counters of disabled budgets are skipped: the gateway stops counting a
    disabled budget (budgets.snapshot.load_budgets), so they are expected to
    lag the ledger until it is enabled again."""
    result = Verification(fixed=fix)
    counters = BudgetCounter.objects.order_by("id").values_list("id", "budget__enabled")
    for counter_id, enabled in counters.iterator():
        if not enabled:
            result.skipped_disabled += 1
            continue
        drift = _counter_check(counter_id, fix=fix, budgets=result.budgets)
        if drift is not None:
            result.drifts.append(drift)
        result.checked += 1
    result.expired_reservations = Reservation.objects.filter(expires_at__lt=timezone.now()).count()
    return result


def _counter_check(counter_id: int, *, fix: bool, budgets: set[int]) -> Drift | None:
    """Checked in a snapshot, without a lock; a drift to repair is checked again
    with the counter locked and repaired in that transaction."""
    drift = _counter_read(counter_id, budgets, repair=False)
    if drift is None or not fix:
        return drift
    return _counter_read(counter_id, budgets, repair=True)


def _counter_read(counter_id: int, budgets: set[int], *, repair: bool) -> Drift | None:
    with _repairing() if repair else _snapshot():
        counters = BudgetCounter.objects.filter(id=counter_id)
        counter = (counters.select_for_update() if repair else counters).first()
        if counter is None:
            return None  # its budget was deleted meanwhile
        budget = Budget.objects.select_related("persona").get(id=counter.budget_id)
        budgets.add(budget.id)
        ledger_spent, held = _ledger_sums(budget, counter)
        spent, reserved = store.money(counter.spent), store.money(counter.reserved)
        if spent == ledger_spent and reserved == held:
            return None
        if repair:
            BudgetCounter.objects.filter(id=counter.id).update(spent=ledger_spent, reserved=held)
        return Drift(counter.id, budget.id, budget.name, counter.period_start, spent, ledger_spent, reserved, held)


@contextlib.contextmanager
def _snapshot():
    """One transaction whose reads all see the same moment, taking no lock:
    REPEATABLE READ on PostgreSQL (a counter and its rows are committed together,
    so they agree in any snapshot); an SQLite transaction reads one snapshot."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


@contextlib.contextmanager
def _repairing():
    """The counter row locked (FOR UPDATE in the query), settlements on it
    waiting until the repair commits; SQLite's writers queued (ledger_store)."""
    with store.writing(), transaction.atomic():
        yield


def _ledger_sums(budget: Budget, counter: BudgetCounter) -> tuple[Decimal, Decimal]:
    """What the counter should say: the cost of the rows its budget covers in
    its period, and the reservations held against it."""
    # Days whose raw rows were pruned (EP_USAGE_RETENTION_DAYS) count from their
    # rollups, which rollups_verify proves against the rows while they are kept.
    spent = rollups.cost_sum(since=counter.period_start, until=period_end(budget.period, counter.period_start),
                             where=ledger_filter(budget_info(budget)))
    held = Reservation.objects.filter(counter_id=counter.id).aggregate(s=Sum("amount"))["s"]
    return store.money(spent), store.money(held)
