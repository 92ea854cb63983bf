"""Each gateway process's background sweeper: retries queued alert webhooks
and releases expired budget reservations every EP_SWEEP_SECONDS, or at once
when kicked (a new alert). Started lazily by the first recorded request."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings

from budgets.alerts import webhooks_deliver_due
from budgets.ledger import reservations_expire

log = logging.getLogger("budgets.sweeper")

_task: asyncio.Task | None = None
_wake: asyncio.Event | None = None


def _sweep() -> None:
    webhooks_deliver_due()
    reservations_expire()


async def _loop() -> None:
    while True:
        try:
            await asyncio.wait_for(_wake.wait(), timeout=settings.EP_SWEEP_SECONDS)
        except TimeoutError:
            pass
        _wake.clear()
        try:
            await sync_to_async(_sweep, thread_sensitive=False)()
        except Exception:  # keep sweeping; a database blip must not end the loop
            log.warning("background sweep failed", exc_info=True)


def ensure_started() -> None:
    global _task, _wake
    if _task is None or _task.done():
        _wake = asyncio.Event()
        _task = asyncio.get_running_loop().create_task(_loop(), name="ep-sweeper")


def kick() -> None:
    ensure_started()
    _wake.set()
