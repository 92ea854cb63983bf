"""Each gateway process's background sweeper: replays the ledger's spool
(settlements the database could not take, budgets/recovery.py), retries
queued alert webhooks and releases expired budget reservations, when it
starts and then every EP_SWEEP_SECONDS, or at once when kicked (a new alert);
every EP_ROLLUP_SECONDS it rolls up closed days of the ledger and prunes raw
rows past the retention (budgets/rollups.py).
Started by the process's first API request (api/middleware.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from budgets.alerts import webhooks_deliver_due
from budgets.ledger import reservations_expire
from budgets.recovery import spool_replay
from budgets.rollups import DAYS_PER_SWEEP, rollups_sweep

log = logging.getLogger("budgets.sweeper")

_task: asyncio.Task | None = None
_wake: asyncio.Event | None = None
# Monotonic time of this process's last rollup sweep; None: none yet, due now
# (monotonic time starts near 0 at boot, so a 0 here would wait out the first
# EP_ROLLUP_SECONDS of a freshly booted host).
_rolled_at: float | None = None


def _replay() -> None:
    # Worker threads keep their connections between calls, and Django drops a
    # broken one only at request boundaries, which these threads never see:
    # without this, a database restart would fail every later sweep here.
    close_old_connections()
    spool_replay()  # no query at all while the spool is empty


def _sweep() -> None:
    # The spool first: its settlements release their reservations exactly,
    # before any of them could be taken for a dead request's and expired.
    _replay()
    webhooks_deliver_due()
    reservations_expire()
    _roll_up()


def _roll_up() -> None:
    """Rollups when due: a backlog (a long ledger's first rollup) goes on every
    sweep, a few days at a time, so the sweep's other work never waits long."""
    global _rolled_at
    if settings.EP_ROLLUP_SECONDS <= 0 or (
            _rolled_at is not None and time.monotonic() - _rolled_at < settings.EP_ROLLUP_SECONDS):
        return
    rolled = rollups_sweep()
    if len(rolled) < DAYS_PER_SWEEP:
        _rolled_at = time.monotonic()


async def _run(sweep) -> None:
    try:
        await sync_to_async(sweep, thread_sensitive=False)()
    except Exception:  # keep sweeping; a database blip must not end the loop
        log.warning("background sweep failed", exc_info=True)


async def _loop() -> None:
    await _run(_replay)  # at once: a process that starts replays what an earlier one spooled
    while True:
        try:
            await asyncio.wait_for(_wake.wait(), timeout=settings.EP_SWEEP_SECONDS)
        except TimeoutError:
            pass
        _wake.clear()
        await _run(_sweep)


def ensure_started() -> None:
    global _task, _wake
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _wake = asyncio.Event()
        _task = loop.create_task(_loop(), name="ep-sweeper")


def kick() -> None:
    ensure_started()
    _wake.set()
