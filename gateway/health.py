"""GET /health: is this process able to serve, and what does it depend on."""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest
from ninja import Router

from gateway import pipeline, shared
from gateway.auth import request_id_of
from gateway.responses import json_response

router = Router(tags=["Health"])


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "not healthy"; reported, not raised
        return False
    finally:
        connection.close()


async def _redis_status() -> str:
    if not shared.redis_enabled():
        return "not configured (in-memory)"
    try:
        await shared.async_redis().ping()
        return "ok"
    except Exception:  # reported as down, never a 500
        return "down"


@router.get("/health", summary="Liveness and dependencies", response={200: dict, 503: dict})
async def health(request: HttpRequest):
    started = time.perf_counter()
    database = await sync_to_async(_database_ok, thread_sensitive=False)()
    redis_state = await _redis_status()
    snapshot = await pipeline.current_snapshot() if database else None
    providers = {
        name: {"kind": p.kind, "enabled": p.enabled, "demo": p.kind == "demo"}
        for name, p in (snapshot.providers.items() if snapshot else [])
    }
    healthy = database and redis_state != "down"
    body = {
        "status": "ok" if healthy else "degraded",
        "database": "ok" if database else "down",
        "cache": redis_state,
        "providers": providers,
        "checked_in_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return json_response(body, request_id_of(request), status=200 if healthy else 503)
