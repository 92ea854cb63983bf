"""Budget reservation and settlement, exact under concurrency.

- Reserve: before any provider is called, the worst-case cost is added to the
  `reserved` of every hard budget that applies, all or none, only while
  `spent + reserved + amount <= limit`. The check runs on counters read under
  the transaction's lock (PostgreSQL row locks, SQLite's single writer), so
  concurrent requests — in one process or many — can never reserve past a limit.
- Settle: the Usage row is inserted, and in the same transaction each budget's
  `spent` grows by the actual cost and the request's reservations are released.
  `spent` is touched nowhere else, so it always equals the sum of the ledger it
  covers.
- Both run on the process's LedgerWriter thread, which batches whatever is
  queued into one transaction (see the class); a caller resumes after commit.
- Reservations of a process that died before settling expire after
  EP_RESERVATION_TTL_SECONDS (`reservations_expire`).

Overshoot bound: a request may cost more than it reserved only when the input
estimate (characters / 3) undercounts its prompt, or when a provider reports
its own cost (claude_agent). Spend then exceeds a limit by at most that
difference summed over the requests in flight when the limit is reached.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from budgets import ledger_store as store
from budgets import rollups, spool
from budgets.ledger_store import ZERO
from budgets.models import Alert, BudgetCounter, Reservation, Usage
from budgets.periods import ledger_filter, period_start
from budgets.snapshot import BudgetInfo

log = logging.getLogger("budgets.ledger")

class BudgetRefusal(Exception):
    """No room in a hard budget; carries what the client needs to know."""

    def __init__(self, budget: BudgetInfo, remaining: Decimal, amount: Decimal) -> None:
        super().__init__(budget.name)
        self.budget, self.remaining, self.amount = budget, remaining, amount


class BudgetStoreDown(Exception):
    """The database that enforces budgets could not be reached: refuse, never admit."""


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
        # Rolled days from the rollups: a lifetime budget's first counter on a
        # long (or pruned) ledger is not a scan of every row.
        spent = rollups.cost_sum(since=start, where=ledger_filter(budget))
        BudgetCounter.objects.bulk_create(
            [BudgetCounter(budget_id=budget.id, period_start=start, spent=store.money(spent))], ignore_conflicts=True
        )
        counter_id = existing.first()
    _counter_ids[(budget.id, start)] = counter_id
    return counter_id


def forget_counters() -> None:
    _counter_ids.clear()


@dataclass(frozen=True, slots=True)
class Held:
    counter_id: int
    amount: Decimal


def budget_reserve(*, request_id: str, budgets: list[BudgetInfo], amount: Decimal) -> list[Held]:
    """Hold `amount` against every hard budget, all or none (runs on the writer)."""
    hard = [b for b in budgets if b.hard]
    if not hard:
        return []
    return writer.submit(_Reserve(request_id, hard, amount, timezone.now())).result()


async def budget_reserve_async(*, request_id: str, budgets: list[BudgetInfo], amount: Decimal) -> list[Held]:
    """budget_reserve for async code: queued to the writer at once, no thread hop.

    A caller cancelled while it waits leaves the reservation queued; its
    settlement, queued after it, releases it (usage_settle)."""
    hard = [b for b in budgets if b.hard]
    if not hard:
        return []
    return await asyncio.wrap_future(writer.submit(_Reserve(request_id, hard, amount, timezone.now())))


@dataclass(frozen=True, slots=True)
class Crossing:
    budget: BudgetInfo
    threshold: int
    period_start: datetime
    spent: Decimal


def usage_settle(*, row: Usage, budgets: list[BudgetInfo], held: list[Held] | None = None) -> list[Crossing]:
    """Write the ledger row, move spend from reserved to spent, return the
    alert thresholds this request crossed (each crossed by exactly one request).

    What is released is whatever the database holds for the row's request id,
    not `held`: a request cancelled while its reservation was being made never
    learns what it holds, and must still release it."""
    return writer.submit(_Settle(row, budgets)).result()


async def usage_settle_async(*, row: Usage, budgets: list[BudgetInfo]) -> list[Crossing]:
    """usage_settle for async code: waits for the writer without holding a thread."""
    return await asyncio.wrap_future(writer.submit(_Settle(row, budgets)))


def usage_replay(*, row: Usage, budgets: list[BudgetInfo]) -> Future:
    """A spooled settlement, queued to the writer (budgets/recovery.py): settled
    as usage_settle would, except that a row the ledger already has is skipped
    (the future's result is None) and a failure is returned, never spooled again."""
    return writer.submit(_Settle(row, budgets, replay=True))


# -- the writer: one thread, one connection, batched transactions ----------------------


@dataclass(slots=True)
class _Reserve:
    request_id: str
    budgets: list[BudgetInfo]
    amount: Decimal
    now: datetime
    future: Future = field(default_factory=Future)


@dataclass(slots=True)
class _Settle:
    row: Usage
    budgets: list[BudgetInfo]
    future: Future = field(default_factory=Future)
    # From the spool (recovery.py): skipped if its row is already in the
    # ledger, and never spooled again when it fails.
    replay: bool = False


class _Fallback(Exception):
    """An op failed in a way that may have left partial writes: redo the batch one op at a time."""


class LedgerWriter:
    """Every ledger write of this process, on one long-lived thread with one
    database connection, in batches: whatever requests queued while the last
    transaction ran go into the next one, so under load a handful of
    statements and one commit serve many requests.

    Each batch is one transaction. Its settlements apply first (they record
    what already happened), then its reservations are decided in queue order
    against the counters read under the transaction's lock (SQLite's single
    writer; `SELECT ... FOR UPDATE` on PostgreSQL), so no two requests in any
    process can reserve past a limit. A caller's future resolves only after the
    commit: a Usage row is durable before its response is sent. If a batch
    fails, each of its ops is retried alone, so one bad op fails only itself.
    """

    MAX_BATCH = 256

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, op: _Reserve | _Settle) -> Future:
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            self._start()
        self._queue.put(op)
        return op.future

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()  # a forked child starts empty
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="ep-ledger-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written (at exit, in tests)."""
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self.submit(_Settle(None, [])).result(timeout=timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._execute(batch)
            except BaseException as error:  # noqa: BLE001 - never let the thread die with callers waiting
                for op in batch:
                    _resolve(op.future, error=error)

    def _execute(self, batch: list) -> None:
        ops = [op for op in batch if not (isinstance(op, _Settle) and op.row is None)]
        try:
            if ops:
                with store.writing():
                    ids = _prepare(ops)
                    with store.transaction():
                        results = _apply(ops, ids)
        except (DatabaseError, _Fallback):
            _after_error()
            unwritten = [(op, error) for op in ops if (error := self._execute_alone(op)) is not None]
            if unwritten:
                _spool(unwritten)
        else:
            for op, result in zip(ops, results if ops else ()):
                _resolve(op.future, **result)
        for op in batch:
            if isinstance(op, _Settle) and op.row is None:
                _resolve(op.future, value=[])  # a flush marker

    def _execute_alone(self, op) -> DatabaseError | None:
        """Run one op in its own transaction. A settlement the database did not
        take is left unresolved and its error returned: its caller waits until
        the spool has it."""
        try:
            with store.writing():
                ids = _prepare([op])
                with store.transaction():
                    [result] = _apply([op], ids)
        except DatabaseError as error:
            _after_error()
            if isinstance(op, _Settle) and not op.replay:
                return error
            _resolve(op.future, error=BudgetStoreDown(str(error)[:200]) if isinstance(op, _Reserve) else error)
        except _Fallback as error:
            _resolve(op.future, error=error.__cause__)
        else:
            _resolve(op.future, **result)
        return None


def _spool(unwritten: list[tuple[_Settle, DatabaseError]]) -> None:
    """Settlements the database refused, kept in the spool (budgets/spool.py)
    until recovery.py replays them; each caller resumes once its line is on
    disk, as it would after a commit. Only if the spool cannot keep one does its
    caller get the database's error (usage_record logs the row as lost)."""
    try:
        kept = {id(row) for row in spool.append([(op.row, [b.id for b in op.budgets]) for op, _ in unwritten])}
    except OSError:
        log.exception("ledger spool unwritable: %d settlement(s) not recorded", len(unwritten))
        kept = set()
    for op, error in unwritten:
        if id(op.row) in kept:
            log.warning("ledger write failed for %s: spooled until the database is back", op.row.request_id)
            _resolve(op.future, value=[])
        else:
            _resolve(op.future, error=error)


def _resolve(future: Future, *, value=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass


def _after_error() -> None:
    forget_counters()
    try:
        store.thread_connection().close_if_unusable_or_obsolete()
    except DatabaseError:
        pass


writer = LedgerWriter()
atexit.register(writer.flush)


# Request ids this process settled lately (only the writer thread touches it):
# a reservation arriving after its request's settlement is dropped, not held.
SETTLED_MEMORY = 10_000
_settled_recently: OrderedDict[str, None] = OrderedDict()


def _prepare(ops: list) -> dict[tuple[int, datetime], tuple[int, BudgetInfo]]:
    """The counter of every budget period the ops touch, found (or created from
    the ledger) before the transaction: a counter created now sums the ledger
    without this batch's rows."""
    keys: dict[tuple[int, datetime], BudgetInfo] = {}
    for op in ops:
        if isinstance(op, _Settle) and op.row.cost_usd:
            for b in op.budgets:
                keys[(b.id, period_start(b.period, op.row.created_at))] = b
        elif isinstance(op, _Reserve):
            for b in op.budgets:
                keys[(b.id, period_start(b.period, op.now))] = b
    return {key: (_counter_id(budget, key[1]), budget) for key, budget in keys.items()}


def _apply(ops: list, counters: dict) -> list[dict]:
    """One batch inside one transaction; returns, per op, value= or error= for its future."""
    try:
        # The statements run on the driver's own cursors: its errors (the
        # database gone mid-batch) become Django's, the database's failures,
        # not mistaken below for a bug in an op.
        with store.thread_connection().wrap_database_errors:
            return _apply_unchecked(ops, counters)
    except DatabaseError:
        raise
    except Exception as error:  # a bug, or a counter gone: this op may have written half its work
        raise _Fallback() from error


def _apply_unchecked(ops: list, counters: dict) -> list[dict]:
    settles = [op for op in ops if isinstance(op, _Settle)]
    reserves = [op for op in ops if isinstance(op, _Reserve)]
    ids = {key: counter_id for key, (counter_id, _) in counters.items()}
    results: dict[int, dict] = {}
    if any(op.replay for op in settles):
        settles = _without_rows_already_written(settles, results)
    # Settlements: rows in and reservations out before the counters are locked.
    # Every request of every process meets on the same few counter rows, so
    # the lock is taken as late as possible and held for few statements. On
    # PostgreSQL these three statements go out together (one round trip).
    released = {}
    if settles:
        rows_inserted = store.insert_rows([op.row for op in settles])
        reservations_deleted = store.release([op.row.request_id for op in settles])
    state = _locked_counters(ids)
    if settles:
        rows_inserted()
        released = reservations_deleted()

    # Settlements: spend added, reservations given back.
    delta_spent: dict[int, Decimal] = {}
    delta_reserved: dict[int, Decimal] = {}
    if settles:
        for counter_id, amount in released.items():
            if counter_id in state:
                state[counter_id][1] -= amount
            delta_reserved[counter_id] = delta_reserved.get(counter_id, ZERO) - amount
    for op in settles:
        crossings = []
        cost = op.row.cost_usd
        if cost:
            for b in op.budgets:
                start = period_start(b.period, op.row.created_at)
                counter_id = ids[(b.id, start)]
                before = state[counter_id][0]
                state[counter_id][0] = spent = before + cost
                delta_spent[counter_id] = delta_spent.get(counter_id, ZERO) + cost
                crossings += [Crossing(b, t, start, spent) for t in b.thresholds
                              if before < b.limit * t / 100 <= spent]
        results[id(op)] = {"value": crossings}

    # Reservations, in queue order, against the counters as settled.
    new_reservations = []
    for op in settles:
        if not op.replay:  # a replayed request's reservation is long made (or expired)
            _settled_recently[op.row.request_id] = None
    while len(_settled_recently) > SETTLED_MEMORY:
        _settled_recently.popitem(last=False)
    for op in reserves:
        if op.request_id in _settled_recently:
            # Its request was cancelled while this reservation was on its way
            # here, and already settled: holding it now would leak it.
            results[id(op)] = {"value": []}
            continue
        counters = [(b, ids[(b.id, period_start(b.period, op.now))]) for b in op.budgets]
        refused = next(((b, c) for b, c in counters if state[c][0] + state[c][1] + op.amount > b.limit), None)
        if refused is not None:
            b, c = refused
            remaining = max(ZERO, b.limit - state[c][0] - state[c][1])
            results[id(op)] = {"error": BudgetRefusal(b, remaining, op.amount)}
            continue
        expires = op.now + timedelta(seconds=settings.EP_RESERVATION_TTL_SECONDS)
        for _, c in counters:
            state[c][1] += op.amount
            delta_reserved[c] = delta_reserved.get(c, ZERO) + op.amount
            new_reservations.append((op.request_id, c, op.amount, expires))
        results[id(op)] = {"value": [Held(c, op.amount) for _, c in counters]}
    if new_reservations:
        store.insert_reservations(new_reservations)
    changed = sorted(delta_spent.keys() | delta_reserved.keys())  # one lock order across processes
    if changed:
        with store.open_cursor() as cursor:
            cursor.executemany(
                f"UPDATE {store.table(BudgetCounter)} SET spent = spent + %s, reserved = reserved + %s WHERE id = %s",
                [(delta_spent.get(c, ZERO), delta_reserved.get(c, ZERO), c) for c in changed])
    for op in settles:  # savepoints, rare: only when a threshold was crossed
        if results[id(op)]["value"]:
            results[id(op)]["value"] = [c for c in results[id(op)]["value"] if _alert_row_created(c)]
    return [results[id(op)] for op in ops]


def _without_rows_already_written(settles: list[_Settle], results: dict[int, dict]) -> list[_Settle]:
    """Replayed settlements whose row the ledger already has (a commit whose
    answer was lost, or a replay repeated) are done: their spend and release
    went in with that row. Request ids are made by the gateway, one per request."""
    present = store.existing_request_ids([op.row.request_id for op in settles if op.replay])
    for op in settles:
        if op.replay and op.row.request_id in present:
            results[id(op)] = {"value": None}
    return [op for op in settles if id(op) not in results]


class _CounterGone(Exception):
    """A cached counter id whose row was deleted (budget removed and re-created)."""


def _locked_counters(ids: dict) -> dict[int, list[Decimal]]:
    """[spent, reserved] of each counter, locked for this transaction. A cached
    id whose row is gone is forgotten and the batch is redone op by op, each
    op finding its counter again before its own transaction."""
    if not ids:
        return {}
    wanted = sorted(set(ids.values()))
    lock = " FOR UPDATE" if store.thread_connection().features.has_select_for_update else ""
    where, params = store.matching_any("id", wanted)
    with store.open_cursor() as cursor:
        cursor.execute(f"SELECT id, spent, reserved FROM {store.table(BudgetCounter)} {where} ORDER BY id{lock}",
                       params)
        state = {cid: [store.money(spent), store.money(reserved)] for cid, spent, reserved in cursor.fetchall()}
    missing = [key for key, cid in ids.items() if cid not in state]
    if missing:
        for key in missing:
            _counter_ids.pop(key, None)
        raise _CounterGone(missing)
    return state


# The writer's statements are plain SQL: Django's query compiler costs more
# CPU than the database does for these few, fixed statements.


def _alert_row_created(crossing: Crossing) -> bool:
    """The alert's row, unless this budget, threshold and period already has one
    (ON CONFLICT: a duplicate must not undo the batch's ledger rows)."""
    budget = crossing.budget
    pct = round(crossing.spent / budget.limit * 100) if budget.limit else 100
    message = f"Budget '{budget.name}' is {pct}% used: ${crossing.spent:.4f} of ${budget.limit:.2f} ({crossing.threshold}% alert)."
    alert = Alert(budget_id=budget.id, threshold=crossing.threshold, period_start=crossing.period_start,
                  message=message[:300])
    db = store.thread_connection()
    fields, columns = store.insert_shape(Alert, db.vendor)
    params = [f.get_db_prep_save(f.pre_save(alert, True), db) for f in fields]
    with store.open_cursor() as cursor:
        cursor.execute(f"INSERT INTO {store.table(Alert)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) "
                       "ON CONFLICT DO NOTHING RETURNING id", params)
        return cursor.fetchone() is not None


def reservations_expire(now: datetime | None = None) -> int:
    """Release reservations whose request never settled (its process died)."""
    now = now or timezone.now()
    released = 0
    with store.writing(), transaction.atomic():
        for reservation in Reservation.objects.select_for_update().filter(expires_at__lt=now):
            BudgetCounter.objects.filter(id=reservation.counter_id).update(reserved=F("reserved") - reservation.amount)
            reservation.delete()
            released += 1
    return released
