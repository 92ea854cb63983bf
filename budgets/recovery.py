"""Replaying the ledger's spool (budgets/spool.py) once the database is back.

Each spooled settlement goes through the ledger writer as it would have the
first time: its Usage row inserted, each budget's spend counted and the
request's reservations released, in one transaction, with the alerts it
crosses. A row the ledger already has is skipped (ledger.py,
`_without_rows_already_written`), so a replay repeated after a crash, or of a
settlement whose commit did reach the database, doubles nothing.

Run by every gateway process's sweeper (budgets/sweeper.py: its first pass
runs when the process starts serving, then every EP_SWEEP_SECONDS), and by
`manage.py replay_ledger_spool`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import DatabaseError, DataError, IntegrityError

from accounts.models import ApiKey, Team
from budgets import spool
from budgets.alerts import alerts_dispatch
from budgets.ledger import usage_replay
from budgets.models import Budget
from budgets.snapshot import BudgetInfo, budget_info

log = logging.getLogger("budgets.recovery")

CHUNK = 200  # entries handed to the writer at a time


@dataclass(slots=True)
class Replayed:
    rows: int = 0  # settled now
    skipped: int = 0  # already in the ledger
    rejected: int = 0  # set aside: torn lines, or rows the database refuses
    waiting: int = 0  # left in the spool: the database is still unreachable


def spool_replay() -> Replayed:
    """Replay every claimable spool file; stops at the first sign that the
    database is still down (the rest waits for the next sweep)."""
    done = Replayed()
    if not spool.depth_rows():
        return done
    # Files an earlier pass could not finish first: new ones are claimed only
    # once the database takes those (no renaming round after round while it is down).
    if not (_replay_files(spool.claimed(), done) and _replay_files(spool.claim(), done)):
        done.waiting = spool.depth_rows()
        return done
    if done.rows or done.rejected:
        log.info("ledger spool replayed: %d rows settled, %d already there, %d set aside",
                 done.rows, done.skipped, done.rejected)
    spool.stats()  # recount: admission reads whether the spool is still full
    return done


def _replay_files(paths: list, done: Replayed) -> bool:
    for path in paths:
        with spool.replaying(path) as lines:
            if lines is None:
                continue  # another process is replaying it
            if not _replay_lines(lines, done):
                return False
            spool.finish(path)
    return True


def _replay_lines(lines: list[bytes], done: Replayed) -> bool:
    entries, torn = [], []
    for line in lines:
        try:
            entries.append(spool.decode(line))
        except (ValueError, KeyError, TypeError):
            torn.append(line)
    spool.reject(torn, "not a complete settlement line (a write cut by a crash?)")
    done.rejected += len(torn)
    try:
        budgets = _budgets([i for entry in entries for i in entry.budget_ids])
        _drop_missing_owners(entries)
    except DatabaseError:
        return False
    for start in range(0, len(entries), CHUNK):
        if not _replay_chunk(entries[start:start + CHUNK], budgets, done):
            return False
    return True


def _replay_chunk(entries: list[spool.Entry], budgets: dict[int, BudgetInfo], done: Replayed) -> bool:
    futures = [usage_replay(row=e.row, budgets=[budgets[i] for i in e.budget_ids if i in budgets]) for e in entries]
    rejected = []
    for entry, future in zip(entries, futures):
        try:
            crossings = future.result()
        except (IntegrityError, DataError) as error:
            rejected.append((entry.line, str(error)[:200]))
            continue
        except DatabaseError:
            return False  # still down: this file is replayed again later, skipping what went in now
        except Exception as error:  # noqa: BLE001 - a row our own code cannot settle: set aside, not retried forever
            rejected.append((entry.line, repr(error)[:200]))
            continue
        if crossings is None:
            done.skipped += 1
            continue
        done.rows += 1
        if crossings:
            alerts_dispatch(crossings)
    for line, reason in rejected:
        spool.reject([line], reason)
    done.rejected += len(rejected)
    return True


def _budgets(ids: list[int]) -> dict[int, BudgetInfo]:
    """The budgets the rows settle, as they are now (disabled ones too: their
    counters must still equal their ledger); deleted ones are gone."""
    return {b.id: budget_info(b) for b in Budget.objects.filter(id__in=set(ids)).select_related("persona")}


def _drop_missing_owners(entries: list[spool.Entry]) -> None:
    """A team or key deleted since the request is NULL on its row, as the
    deletion would have made it (on_delete=SET_NULL)."""
    teams = set(Team.objects.filter(id__in={e.row.team_id for e in entries}).values_list("id", flat=True))
    keys = set(ApiKey.objects.filter(id__in={e.row.api_key_id for e in entries}).values_list("id", flat=True))
    for entry in entries:
        if entry.row.team_id not in teams:
            entry.row.team_id = None
        if entry.row.api_key_id not in keys:
            entry.row.api_key_id = None
