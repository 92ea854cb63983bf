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
import contextlib
import fcntl
import functools
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from budgets.models import Alert, BudgetCounter, Reservation, Usage
from budgets.snapshot import BudgetInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _ThreadDatabase(threading.local):
    wrapper = None


_thread_database = _ThreadDatabase()


def _db():
    """This thread's default database connection. `django.db.connection` is a
    proxy that looks the connection up in asgiref's Local on every attribute
    access: ~35 lookups per ledger op, 15% of the writer's CPU. The writer is
    one plain thread, so its connection object is found once and kept."""
    wrapper = _thread_database.wrapper
    if wrapper is None:
        wrapper = _thread_database.wrapper = connections[DEFAULT_DB_ALIAS]
    return wrapper


class _SqliteWriterLock:
    """SQLite has one writer. Writers that meet its lock wait in SQLite's busy
    handler, which sleeps 1, 2, 5, 10 ... up to 100 ms between tries: with two
    gateway processes, one process's writer kept losing and its worker idled at
    ~65% of a core (docs/PERFORMANCE.md). So writers queue on locks that wake
    the next waiter the moment they are released: a thread lock within the
    process, then an flock on a file beside the database across processes."""

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._fd_key: tuple[int, str] | None = None

    def _file(self) -> int | None:
        name = str(_db().settings_dict.get("NAME") or "")
        if not name or name.startswith("file:") or ":memory:" in name:
            return None  # in-memory: one process only, the thread lock is enough
        key = (os.getpid(), name)
        if self._fd_key != key:
            self._fd = os.open(f"{name}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_key = key
        return self._fd

    def __enter__(self):
        self._thread_lock.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


_sqlite_writer = _SqliteWriterLock()


def _writing():
    """Hold the writers' queue for one SQLite write transaction (see _SqliteWriterLock)."""
    return _sqlite_writer if _db().vendor == "sqlite" else contextlib.nullcontext()
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


def scope_filter(*, scope: str, team_id: int | None, key_id: int | None, persona: str | None) -> Q:
    """The Usage rows a budget of this scope covers (the period is added by callers)."""
    if scope == "team":
        return Q(team_id=team_id)
    if scope == "key":
        return Q(api_key_id=key_id)
    if scope == "persona":
        return Q(persona=persona or "")
    return Q()


def ledger_filter(budget: BudgetInfo) -> Q:
    return scope_filter(scope=budget.scope, team_id=budget.team_id, key_id=budget.key_id, persona=budget.persona)


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


def _money(value) -> Decimal:
    # SQLite sums decimals as floats: round back to the ledger's 8 places.
    return Decimal(value or 0).quantize(CENT_MILLIONTH)


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
                with _writing():
                    ids = _prepare(ops)
                    with _transaction():
                        results = _apply(ops, ids)
        except (DatabaseError, _Fallback):
            _after_error()
            for op in ops:
                self._execute_alone(op)
        else:
            for op, result in zip(ops, results if ops else ()):
                _resolve(op.future, **result)
        for op in batch:
            if isinstance(op, _Settle) and op.row is None:
                _resolve(op.future, value=[])  # a flush marker

    def _execute_alone(self, op) -> None:
        try:
            with _writing():
                ids = _prepare([op])
                with _transaction():
                    [result] = _apply([op], ids)
        except DatabaseError as error:
            _after_error()
            _resolve(op.future, error=BudgetStoreDown(str(error)[:200]) if isinstance(op, _Reserve) else error)
        except _Fallback as error:
            _resolve(op.future, error=error.__cause__)
        else:
            _resolve(op.future, **result)


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
        _db().close_if_unusable_or_obsolete()
    except DatabaseError:
        pass


writer = LedgerWriter()
atexit.register(writer.flush)


# Request ids this process settled lately (only the writer thread touches it):
# a reservation arriving after its request's settlement is dropped, not held.
SETTLED_MEMORY = 10_000
_settled_recently: OrderedDict[str, None] = OrderedDict()


@contextlib.contextmanager
def _transaction():
    """One write transaction of the writer, on the driver's own connection with
    BEGIN and COMMIT as statements: the writer's statements are fixed SQL, and
    Django's transaction and cursor bookkeeping cost more than they do.

    PostgreSQL: psycopg in pipeline mode, so a batch costs two round trips (its
    reads, then its writes with the COMMIT) instead of one per statement,
    1.1 ms -> ~0.35 ms per transaction here. SQLite: BEGIN IMMEDIATE, as
    Django's atomic() would (transaction_mode). Errors come out as Django's
    DatabaseError, as from the ORM."""
    db = _db()
    db.ensure_connection()
    conn = db.connection
    with db.wrap_database_errors:
        if db.vendor == "postgresql":
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    yield
                    conn.execute("COMMIT")
            except BaseException:
                if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                raise
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


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
        return _apply_unchecked(ops, counters)
    except DatabaseError:
        raise
    except Exception as error:  # a bug, or a counter gone: this op may have written half its work
        raise _Fallback() from error


def _apply_unchecked(ops: list, counters: dict) -> list[dict]:
    settles = [op for op in ops if isinstance(op, _Settle)]
    reserves = [op for op in ops if isinstance(op, _Reserve)]
    ids = {key: counter_id for key, (counter_id, _) in counters.items()}
    # Settlements: rows in and reservations out before the counters are locked.
    # Every request of every process meets on the same few counter rows, so
    # the lock is taken as late as possible and held for few statements. On
    # PostgreSQL these three statements go out together (one round trip).
    released = {}
    if settles:
        rows_inserted = _insert_rows([op.row for op in settles])
        reservations_deleted = _release([op.row.request_id for op in settles])
    state = _locked_counters(ids)
    if settles:
        rows_inserted()
        released = reservations_deleted()

    # Settlements: spend added, reservations given back.
    results: dict[int, dict] = {}
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
        _insert_reservations(new_reservations)
    changed = sorted(delta_spent.keys() | delta_reserved.keys())  # one lock order across processes
    if changed:
        with _cursor() as cursor:
            cursor.executemany(
                f"UPDATE {_table(BudgetCounter)} SET spent = spent + %s, reserved = reserved + %s WHERE id = %s",
                [(delta_spent.get(c, ZERO), delta_reserved.get(c, ZERO), c) for c in changed])
    for op in settles:  # savepoints, rare: only when a threshold was crossed
        if results[id(op)]["value"]:
            results[id(op)]["value"] = [c for c in results[id(op)]["value"] if _alert_row_created(c)]
    return [results[id(op)] for op in ops]


def _cursor():
    """A cursor of the driver itself for the writer's fixed statements (inside
    _transaction). PostgreSQL: psycopg's server-side binding cursor (Django's
    ClientCursor quotes every parameter into the SQL text in Python, a fifth of
    the writer's CPU for the Usage row's thirty columns). SQLite: sqlite3's,
    with the %s placeholders turned into ? once per statement text."""
    db = _db()
    db.ensure_connection()
    if db.vendor == "postgresql":
        return psycopg.Cursor(db.connection)
    return _SqliteCursor(db.connection.cursor())


class _SqliteCursor:
    """sqlite3's cursor with the %s placeholders the statements are written with."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params=()) -> None:
        self._cursor.execute(_qmark(sql), params)

    def executemany(self, sql: str, seq) -> None:
        self._cursor.executemany(_qmark(sql), seq)

    def fetchall(self):
        return self._cursor.fetchall()

    def fetchone(self):
        return self._cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._cursor.close()


@functools.lru_cache(maxsize=1024)
def _qmark(sql: str) -> str:
    return sql.replace("%s", "?")


class _CounterGone(Exception):
    """A cached counter id whose row was deleted (budget removed and re-created)."""


def _locked_counters(ids: dict) -> dict[int, list[Decimal]]:
    """[spent, reserved] of each counter, locked for this transaction. A cached
    id whose row is gone is forgotten and the batch is redone op by op, each
    op finding its counter again before its own transaction."""
    if not ids:
        return {}
    wanted = sorted(set(ids.values()))
    lock = " FOR UPDATE" if _db().features.has_select_for_update else ""
    with _cursor() as cursor:
        cursor.execute(f"SELECT id, spent, reserved FROM {_table(BudgetCounter)} "
                       f"WHERE id IN ({', '.join(['%s'] * len(wanted))}) ORDER BY id{lock}", wanted)
        state = {cid: [_money(spent), _money(reserved)] for cid, spent, reserved in cursor.fetchall()}
    missing = [key for key, cid in ids.items() if cid not in state]
    if missing:
        for key in missing:
            _counter_ids.pop(key, None)
        raise _CounterGone(missing)
    return state


# The writer's statements are plain SQL: Django's query compiler costs more
# CPU than the database does for these few, fixed statements.


@functools.cache
def _quoted_table(model, vendor: str) -> str:
    return _db().ops.quote_name(model._meta.db_table)


def _table(model) -> str:
    return _quoted_table(model, _db().vendor)


@functools.cache
def _insert_shape(model, vendor: str) -> tuple[list, str]:
    """The fields an INSERT of `model` sets (all but the primary key) and their quoted columns."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    return fields, ", ".join(_db().ops.quote_name(f.column) for f in fields)


def _insert_rows(rows: list[Usage]) -> Callable[[], None]:
    """Usage.objects.bulk_create, minus the compiler: each field prepares its own value.
    Sends the INSERT; the function returned reads the new ids (in pipeline mode,
    after the round trip that carries the statements sent with it)."""
    db = _db()
    fields, columns = _insert_shape(Usage, db.vendor)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(f.pre_save(row, True), db) for row in rows for f in fields]
    returning = db.features.can_return_rows_from_bulk_insert
    cursor = _cursor()
    cursor.execute(f"INSERT INTO {_table(Usage)} ({columns}) VALUES {', '.join([one] * len(rows))}"
                   + (" RETURNING id" if returning else ""), params)

    def read_ids() -> None:
        with cursor:
            if returning:
                for row, (pk,) in zip(rows, cursor.fetchall()):
                    row.pk = pk
        for row in rows:
            row._state.adding, row._state.db = False, _db().alias

    return read_ids


def _insert_reservations(held: list[tuple[str, int, Decimal, datetime]]) -> None:
    expires_at = Reservation._meta.get_field("expires_at")
    amount = Reservation._meta.get_field("amount")
    params = [value for request_id, counter_id, money, expires in held
              for value in (request_id, counter_id, amount.get_db_prep_save(money, _db()),
                            expires_at.get_db_prep_save(expires, _db()))]
    with _cursor() as cursor:
        cursor.execute(f"INSERT INTO {_table(Reservation)} (request_id, counter_id, amount, expires_at) VALUES "
                       + ", ".join(["(%s, %s, %s, %s)"] * len(held)), params)


def _release(request_ids: list[str]) -> Callable[[], dict[int, Decimal]]:
    """Delete these requests' reservations. Sends the DELETE; the function
    returned reads what each counter gets back (as _insert_rows)."""
    where = f"WHERE request_id IN ({', '.join(['%s'] * len(request_ids))})"
    cursor = _cursor()
    if not _db().features.can_return_rows_from_bulk_insert:  # no DELETE ... RETURNING
        with cursor:
            cursor.execute(f"SELECT counter_id, amount FROM {_table(Reservation)} {where}", request_ids)
            held = cursor.fetchall()
            if held:
                cursor.execute(f"DELETE FROM {_table(Reservation)} {where}", request_ids)
        return lambda: _by_counter(held)
    cursor.execute(f"DELETE FROM {_table(Reservation)} {where} RETURNING counter_id, amount", request_ids)

    def read_released() -> dict[int, Decimal]:
        with cursor:
            return _by_counter(cursor.fetchall())

    return read_released


def _by_counter(held) -> dict[int, Decimal]:
    released: dict[int, Decimal] = {}
    for counter_id, amount in held:
        released[counter_id] = released.get(counter_id, ZERO) + _money(amount)
    return released


def _alert_row_created(crossing: Crossing) -> bool:
    """The alert's row, unless this budget, threshold and period already has one
    (ON CONFLICT: a duplicate must not undo the batch's ledger rows)."""
    budget = crossing.budget
    pct = round(crossing.spent / budget.limit * 100) if budget.limit else 100
    message = f"Budget '{budget.name}' is {pct}% used: ${crossing.spent:.4f} of ${budget.limit:.2f} ({crossing.threshold}% alert)."
    alert = Alert(budget_id=budget.id, threshold=crossing.threshold, period_start=crossing.period_start,
                  message=message[:300])
    db = _db()
    fields, columns = _insert_shape(Alert, db.vendor)
    params = [f.get_db_prep_save(f.pre_save(alert, True), db) for f in fields]
    with _cursor() as cursor:
        cursor.execute(f"INSERT INTO {_table(Alert)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) "
                       "ON CONFLICT DO NOTHING RETURNING id", params)
        return cursor.fetchone() is not None


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
