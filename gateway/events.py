"""Live events (new usage, alerts, provider state) on the channel layer.

Everything is published to one group; with Redis as the channel layer an event
raised in one gateway process reaches websockets connected to any of them.
Publishing never fails a request: a broken channel layer loses the live event
only (the ledger row is already written).
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

log = logging.getLogger("gateway.events")

GROUP = "ep.events"
KINDS = ("usage", "alert", "provider")


async def publish(kind: str, data: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(GROUP, {"type": "ep.event", "kind": kind, "data": data})
    except Exception:  # the live feed is best effort; the ledger is not
        log.warning("could not publish %s event", kind, exc_info=True)
