"""Idempotency-Key: a request carrying one is executed at most once.

The first request with a key (per team) claims it atomically in the shared
cache (`cache.add`: Redis SET NX across processes; local memory in a single
process) and stores its final response there. A repeat with the same body
gets that response back (`Idempotent-Replayed: true`); one that arrives while
the first is still running waits for it; a repeat with a different body is
refused (422). Records live for EP_IDEMPOTENCY_TTL_SECONDS.

With the shared cache unreachable a request with a key is refused before it
runs (503 `idempotency_store_unavailable`: at most once cannot be promised);
once it has run, failing to store its response only logs, never turns the
answer into an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from redis.exceptions import RedisError

from gateway.errors import GatewayError, InvalidRequest, ServiceUnavailable

log = logging.getLogger("api.idempotency")

HEADER = "Idempotency-Key"
REPLAY_HEADERS = ("Content-Type", "X-EP-Persona", "X-EP-Provider", "X-EP-Model", "X-EP-Cost-USD")


class IdempotencyConflict(GatewayError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyInProgress(GatewayError):
    status = 409
    code = "idempotency_in_progress"


def _cache_key(team_id: int, key: str) -> str:
    return f"ep:idem:{team_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def _stored(response: HttpResponse, body_hash: str) -> dict:
    return {"state": "done", "body": body_hash, "status": response.status_code, "content": response.content,
            "headers": {h: response[h] for h in REPLAY_HEADERS if response.has_header(h)}}


def _replay(record: dict) -> HttpResponse:
    response = HttpResponse(record["content"], status=record["status"])
    for name, value in record["headers"].items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


async def _wait_for_first(key: str, deadline: float) -> dict | None:
    while time.monotonic() < deadline:
        record = await cache.aget(key)
        if record is None or record["state"] == "done":
            return record
        await asyncio.sleep(0.05)
    return None


async def idempotent(request: HttpRequest, run: Callable[[], Awaitable[HttpResponse]],
                     on_error: Callable[[GatewayError], HttpResponse]) -> HttpResponse:
    """Run `run()` at most once per (team, Idempotency-Key); without the header, just run it."""
    key = request.headers.get(HEADER)
    if not key:
        return await run()
    if len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be at most 255 characters.", param=HEADER)
    call = request.ep_call
    cache_key = _cache_key(call.key.team_id, key)
    body_hash = hashlib.sha256(request.body).hexdigest()
    ttl = settings.EP_IDEMPOTENCY_TTL_SECONDS
    try:
        first = await cache.aadd(cache_key, {"state": "pending", "body": body_hash}, timeout=ttl)
        if not first:
            return await _repeat(call, cache_key, body_hash)
    except RedisError:
        raise ServiceUnavailable("The idempotency store is unreachable, so this request could run twice; "
                                 "try again shortly.", code="idempotency_store_unavailable") from None
    try:
        response = await run()
    except GatewayError as error:
        response = on_error(error)  # the outcome is stored, failures too
    try:
        await cache.aset(cache_key, _stored(response, body_hash), timeout=ttl)
    except RedisError:  # the answer stands; a repeat waits, then hears 409 idempotency_in_progress
        log.warning("could not store the response of %s for its Idempotency-Key (cache unreachable)",
                    call.request_id)
    return response


async def _repeat(call, cache_key: str, body_hash: str) -> HttpResponse:
    record = await cache.aget(cache_key) or {}
    if record.get("body") not in (None, body_hash):
        raise IdempotencyConflict("This Idempotency-Key was already used with a different request body.",
                                  param=HEADER)
    if record.get("state") == "pending":
        record = await _wait_for_first(cache_key, time.monotonic() + call.deadline_seconds())
    if not record or record.get("state") != "done":
        raise IdempotencyInProgress("A request with this Idempotency-Key is still running; retry later.",
                                    param=HEADER)
    call.error_code = "idempotent_replay"  # the ledger row of a replay: nothing executed, nothing billed
    return _replay(record)
