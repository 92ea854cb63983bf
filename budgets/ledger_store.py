"""The ledger's statements as the database driver runs them.

The ledger writer (budgets/ledger.py) runs a few fixed statements per batch on
its own thread. Django's query compiler, cursor wrappers and transaction
bookkeeping cost more CPU than the database does for them, so they are plain
SQL on the driver's own connection and cursor: psycopg in pipeline mode on
PostgreSQL, sqlite3 behind an flock queue on SQLite. Errors still come out as
Django's DatabaseError.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from budgets.models import Reservation, Usage

ZERO = Decimal(0)
# The writer runs a few fixed statements (lists as `= ANY(%s)`; a multi-row
# INSERT has a text per batch size), so its connection has PostgreSQL prepare
# each text from its second use: no parse and plan per statement. PostgreSQL's
# CPU per request 0.48 -> ~0.32 ms (docs/PERFORMANCE.md). Django
# leaves preparing off on its own connections (poolers of old did not know
# prepared statements); this is the writer thread's connection only, and
# EP_DB_PREPARED_STATEMENTS=0 turns it off (PgBouncer before 1.21 in
# transaction mode, say).
PREPARE_FROM_SECOND_USE = 1
CENT_MILLIONTH = Decimal("0.00000001")


class _ThreadDatabase(threading.local):
    wrapper = None


_thread_database = _ThreadDatabase()


def thread_connection():
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
        name = str(thread_connection().settings_dict.get("NAME") or "")
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


def writing():
    """Hold the writers' queue for one SQLite write transaction (see _SqliteWriterLock)."""
    return _sqlite_writer if thread_connection().vendor == "sqlite" else contextlib.nullcontext()


def money(value) -> Decimal:
    # SQLite sums decimals as floats: round back to the ledger's 8 places.
    return Decimal(value or 0).quantize(CENT_MILLIONTH)


@contextlib.contextmanager
def transaction():
    """One write transaction of the writer, on the driver's own connection with
    BEGIN and COMMIT as statements: the writer's statements are fixed SQL, and
    Django's transaction and cursor bookkeeping cost more than they do.

    PostgreSQL: psycopg in pipeline mode, so a batch costs two round trips (its
    reads, then its writes with the COMMIT) instead of one per statement,
    1.1 ms -> ~0.35 ms per transaction here. SQLite: BEGIN IMMEDIATE, as
    Django's atomic() would (transaction_mode). Errors come out as Django's
    DatabaseError, as from the ORM."""
    db = thread_connection()
    db.ensure_connection()
    conn = db.connection
    with db.wrap_database_errors:
        if db.vendor == "postgresql":
            threshold = PREPARE_FROM_SECOND_USE if settings.EP_DB_PREPARED_STATEMENTS else None
            if conn.prepare_threshold != threshold:
                conn.prepare_threshold = threshold
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    yield
                    conn.execute("COMMIT")
            except BaseException:
                if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                if threshold is not None:
                    # psycopg can count a statement as prepared whose PREPARE went
                    # down with the aborted pipeline; the session's next use of it
                    # would fail ("prepared statement does not exist") and refuse a
                    # reservation the database could take. A new session starts clean.
                    with contextlib.suppress(DatabaseError):  # a broken connection is being dropped anyway
                        db.close()
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


def open_cursor():
    """A cursor of the driver itself for the writer's fixed statements (inside
    transaction). PostgreSQL: psycopg's server-side binding cursor (Django's
    ClientCursor quotes every parameter into the SQL text in Python, a fifth of
    the writer's CPU for the Usage row's thirty columns). SQLite: sqlite3's,
    with the %s placeholders turned into ? once per statement text."""
    db = thread_connection()
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


@functools.cache
def _quoted_table(model, vendor: str) -> str:
    return thread_connection().ops.quote_name(model._meta.db_table)


def table(model) -> str:
    return _quoted_table(model, thread_connection().vendor)


@functools.cache
def insert_shape(model, vendor: str) -> tuple[list, str]:
    """The fields an INSERT of `model` sets (all but the primary key) and their quoted columns."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    return fields, ", ".join(thread_connection().ops.quote_name(f.column) for f in fields)


def insert_rows(rows: list[Usage]) -> Callable[[], None]:
    """Usage.objects.bulk_create, minus the compiler: each field prepares its own value.
    Sends the INSERT; the function returned reads the new ids (in pipeline mode,
    after the round trip that carries the statements sent with it)."""
    db = thread_connection()
    fields, columns = insert_shape(Usage, db.vendor)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(f.pre_save(row, True), db) for row in rows for f in fields]
    returning = db.features.can_return_rows_from_bulk_insert
    cursor = open_cursor()
    cursor.execute(f"INSERT INTO {table(Usage)} ({columns}) VALUES {', '.join([one] * len(rows))}"
                   + (" RETURNING id" if returning else ""), params)

    def read_ids() -> None:
        with cursor:
            if returning:
                for row, (pk,) in zip(rows, cursor.fetchall()):
                    row.pk = pk
        for row in rows:
            row._state.adding, row._state.db = False, thread_connection().alias

    return read_ids


def insert_reservations(held: list[tuple[str, int, Decimal, datetime]]) -> None:
    expires_at = Reservation._meta.get_field("expires_at")
    amount = Reservation._meta.get_field("amount")
    params = [value for request_id, counter_id, money, expires in held
              for value in (request_id, counter_id, amount.get_db_prep_save(money, thread_connection()),
                            expires_at.get_db_prep_save(expires, thread_connection()))]
    with open_cursor() as cursor:
        cursor.execute(f"INSERT INTO {table(Reservation)} (request_id, counter_id, amount, expires_at) VALUES "
                       + ", ".join(["(%s, %s, %s, %s)"] * len(held)), params)


def matching_any(column: str, values: list) -> tuple[str, list]:
    """A WHERE clause matching any of `values`, and its parameters: `= ANY(%s)`
    with one array on PostgreSQL (one statement text for any number), IN on SQLite."""
    if thread_connection().vendor == "postgresql":
        return f"WHERE {column} = ANY(%s)", [list(values)]
    return f"WHERE {column} IN ({', '.join(['%s'] * len(values))})", list(values)


def release(request_ids: list[str]) -> Callable[[], dict[int, Decimal]]:
    """Delete these requests' reservations. Sends the DELETE; the function
    returned reads what each counter gets back (as insert_rows)."""
    where, params = matching_any("request_id", request_ids)
    cursor = open_cursor()
    if not thread_connection().features.can_return_rows_from_bulk_insert:  # no DELETE ... RETURNING
        with cursor:
            cursor.execute(f"SELECT counter_id, amount FROM {table(Reservation)} {where}", params)
            held = cursor.fetchall()
            if held:
                cursor.execute(f"DELETE FROM {table(Reservation)} {where}", params)
        return lambda: _by_counter(held)
    cursor.execute(f"DELETE FROM {table(Reservation)} {where} RETURNING counter_id, amount", params)

    def read_released() -> dict[int, Decimal]:
        with cursor:
            return _by_counter(cursor.fetchall())

    return read_released


def _by_counter(held) -> dict[int, Decimal]:
    released: dict[int, Decimal] = {}
    for counter_id, amount in held:
        released[counter_id] = released.get(counter_id, ZERO) + money(amount)
    return released


def existing_request_ids(request_ids: list[str]) -> set[str]:
    """Which of these request ids already have their Usage row (spool replay)."""
    if not request_ids:
        return set()
    where, params = matching_any("request_id", request_ids)
    with open_cursor() as cursor:
        cursor.execute(f"SELECT request_id FROM {table(Usage)} {where}", params)
        return {request_id for (request_id,) in cursor.fetchall()}
