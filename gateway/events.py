"""Live events (new usage, alerts, provider state) on the channel layer.

Everything is published to one group; with Redis as the channel layer an event
raised in one gateway process reaches websockets connected to any of them.
Publishing never fails a request: a broken channel layer loses the live event
only (the ledger row is already written).

Events are sent in batches: `publish` queues the event and returns at once,
and one task per process sends whatever queued during the last
EP_EVENTS_BATCH_SECONDS as a single group message, which each events
websocket unpacks into the same one-event frames as before. With Redis a
group_send costs two round trips and a Lua call; one per request was ~10% of
a request's CPU and its latency sat on every request's path (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger("gateway.events")

GROUP = "ep.events"
KINDS = ("usage", "alert", "provider")
MAX_PENDING = 10_000  # a channel layer that is down must not grow memory: older events go first

_pending: list[dict[str, Any]] = []
_sender: asyncio.Task | None = None


async def publish(kind: str, data: dict[str, Any]) -> None:
    """Queue one event for the live feed; it is sent within EP_EVENTS_BATCH_SECONDS."""
    global _sender
    if len(_pending) >= MAX_PENDING:
        del _pending[: MAX_PENDING // 10]
    _pending.append({"kind": kind, "data": data})
    loop = asyncio.get_running_loop()
    if _sender is None or _sender.done() or _sender.get_loop() is not loop:
        _sender = loop.create_task(_send_batches())


async def _send_batches() -> None:
    while _pending:
        await asyncio.sleep(settings.EP_EVENTS_BATCH_SECONDS)
        batch = _pending[:]
        del _pending[: len(batch)]
        await _send(batch)


async def _send(batch: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    if layer is None or not batch:
        return
    try:
        await layer.group_send(GROUP, {"type": "ep.events", "events": batch})
    except Exception:  # the live feed is best effort; the ledger is not
        log.warning("could not publish %d live events", len(batch), exc_info=True)
