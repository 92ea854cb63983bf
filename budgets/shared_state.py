"""Clients for the state shared between gateway processes (Redis), when configured.

One async client per event loop and one sync client per process, created lazily
and reused: connection setup stays off the request path.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aredis
from django.conf import settings

_sync_client: redis.Redis | None = None
_async_clients: dict[int, aredis.Redis] = {}


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


def sync_redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _sync_client


def async_redis() -> aredis.Redis:
    # An asyncio connection pool belongs to the loop that created it.
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _async_clients[loop_id] = client
    return client
