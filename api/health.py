"""GET /health: is this process able to serve, and how are its providers doing.

Reports the database, the cache/channel layer, the ledger's spool (rows
waiting for the database, budgets/spool.py), and per provider its circuit
breakers (per model on a route), its error rate and mean latency over the last
five minutes (from the ledger, so every gateway process agrees). `?deep=1`
also sends each enabled provider a one-token probe; it costs a little, so it
needs an admin-scoped key.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections, connection
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router

from api.auth import bearer_token, refuse_key_in_query
from api.errors import error_responses
from api.paths import request_id_of
from api.responses import json_response
from budgets import shared_state as shared
from budgets import spool
from budgets.selectors import provider_stats
from gateway import pipeline
from gateway.config import Snapshot, config_cache
from gateway.errors import PermissionDenied
from gateway.resilience import Breaker
from personas.snapshot import StepInfo
from providers.adapters import get_adapter
from providers.snapshot import ProviderInfo
from providers.types import ChatRequest, Message, ProviderError

router = Router(tags=["Health"])
WINDOW = timedelta(minutes=5)
PROBE_TIMEOUT = 10.0


def _database_ok() -> bool:
    close_old_connections()  # a connection a database restart broke is replaced, not reported down forever
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "not healthy"; reported, not raised
        return False


async def _redis_status() -> str:
    if not shared.redis_enabled():
        return "not configured (in-memory)"
    try:
        await shared.async_redis().ping()
        return "ok"
    except Exception:  # reported as down, never a 500
        return "down"


def _recent_stats() -> dict | None:
    """Per provider, from the ledger; None if it cannot be read (reported, not a 500)."""
    close_old_connections()
    try:
        return provider_stats(since=timezone.now() - WINDOW)
    except DatabaseError:
        return None


def _route_models(snapshot: Snapshot) -> dict[str, set[str]]:
    models: dict[str, set[str]] = {name: set() for name in snapshot.providers}
    for persona in snapshot.personas.values():
        for step in persona.steps:
            models[step.provider.name].add(step.model)
    return models


async def _breakers(provider: ProviderInfo, models: set[str]) -> dict[str, dict]:
    states = {}
    for model in sorted(models):
        states[model] = await Breaker(StepInfo(0, provider, model, {}, 1, False)).state()
    return states


async def _provider_report(provider: ProviderInfo, models: set[str], stats) -> dict:
    recent = stats.get(provider.name)
    return {
        "kind": provider.kind, "enabled": provider.enabled, "demo": provider.kind == "demo",
        "breakers": await _breakers(provider, models),
        # Attempt by attempt (the rows' attempt logs): a provider a request fell back
        # from shows its failures here, not only the provider that answered.
        "requests_5m": recent.requests if recent else 0,
        "attempts_5m": recent.attempts if recent else 0,
        "failed_attempts_5m": recent.failures if recent else 0,
        "skipped_5m": recent.skipped if recent else 0,  # by its open breaker
        "error_rate_5m": round(recent.error_rate, 4) if recent else 0.0,
        "latency_ms_5m": recent.avg_latency_ms if recent else None,
        "last_failure_5m": _failure_report(recent.last_failure) if recent else None,
    }


def _failure_report(attempt: dict | None) -> dict | None:
    """The newest failed attempt, without its message: /health answers anyone, and
    a provider's error text can name internal hosts. Operators read it on the
    dashboard's Providers page and each request's usage detail."""
    if attempt is None:
        return None
    return {name: attempt.get(name) for name in ("model", "outcome", "at")}


async def _probe(provider: ProviderInfo, model: str) -> dict:
    started = time.perf_counter()
    request = ChatRequest(model=model, messages=[Message(role="user", content="ping")], max_tokens=1)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await get_adapter(provider.adapter_config).chat(request)
        outcome = {"ok": True}
    except ProviderError as error:
        outcome = {"ok": False, "error": error.kind}
    except TimeoutError:
        outcome = {"ok": False, "error": "timeout"}
    return {**outcome, "model": model, "ms": round((time.perf_counter() - started) * 1000, 1)}


async def _deep_probes(snapshot: Snapshot, models: dict[str, set[str]]) -> dict[str, dict]:
    targets = [(p, sorted(models[name] or p.models or {"default"})[0])
               for name, p in snapshot.providers.items() if p.enabled]
    results = await asyncio.gather(*(_probe(p, m) for p, m in targets))
    return {p.name: r for (p, _), r in zip(targets, results)}


async def _require_admin(request: HttpRequest) -> None:
    key = await pipeline.authenticate(bearer_token(request) or None)
    if not key.has_scope("admin"):
        raise PermissionDenied("A deep health check probes providers and needs an admin-scoped key.")


@router.get("/health", summary="Liveness, dependencies, provider breakers and health",
            response={200: dict, 503: dict, **error_responses(400, 401, 403, 500)})
async def health(request: HttpRequest, deep: bool = False):
    refuse_key_in_query(request)
    started = time.perf_counter()
    if deep:
        await _require_admin(request)
    database = await sync_to_async(_database_ok, thread_sensitive=False)()
    redis_state = await _redis_status()
    ledger_spool = await sync_to_async(spool.stats, thread_sensitive=False)()
    body = {"status": "ok", "database": "ok" if database else "down", "cache": redis_state,
            "ledger_spool": ledger_spool, "providers": {}}
    if database:
        snapshot = await config_cache.snapshot()
        stats = await sync_to_async(_recent_stats, thread_sensitive=False)()
        if stats is None:
            database, body["database"], stats = False, "degraded", {}
        models = _route_models(snapshot)
        body["providers"] = {name: await _provider_report(p, models[name], stats)
                             for name, p in sorted(snapshot.providers.items())}
        if deep:
            body["probes"] = await _deep_probes(snapshot, models)
    healthy = database and redis_state != "down" and not ledger_spool["full"]
    body["status"] = "ok" if healthy else "degraded"
    body["checked_in_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return json_response(body, request_id_of(request), status=200 if healthy else 503)
