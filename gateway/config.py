"""Hot-path reads from memory: API keys, personas, routes, providers, models.

The request path must not query the database for what rarely changes. Each
process keeps an immutable snapshot of the routing configuration and a map of
API-key hashes it has looked up. Both are dropped when:
- a config model is saved or deleted in this process (signals, immediately);
- the shared generation moved (another process saved): a counter in Redis,
  or without Redis a row in the database (providers.ConfigGeneration),
  polled at most every EP_CONFIG_CHECK_SECONDS;
- the snapshot is older than EP_CONFIG_CACHE_SECONDS (a backstop).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models.signals import post_delete, post_save
from redis.exceptions import RedisError

from accounts.models import ApiKey, Team
from accounts.snapshot import KeyInfo, load_key
from budgets import shared_state as shared
from budgets.models import Budget, RateLimit
from budgets.snapshot import BudgetInfo, RateLimitInfo, load_budgets, load_rate_limits
from gateway.errors import ServiceUnavailable
from personas.models import Persona, RouteStep
from personas.snapshot import PersonaInfo, load_personas
from providers.models import ConfigGeneration, Model, Provider
from providers.snapshot import ProviderInfo, provider_info
from tools.models import PersonaTools

log = logging.getLogger("gateway.config")

GENERATION_KEY = "ep:config-generation"
MAX_CACHED_KEYS = 10_000


@dataclass(slots=True)
class Snapshot:
    personas: dict[str, PersonaInfo]
    providers: dict[str, ProviderInfo]
    loaded_at: float
    generation: int
    budgets: tuple[BudgetInfo, ...] = ()
    rate_limits: dict[tuple[str, int], RateLimitInfo] = field(default_factory=dict)

    def budgets_for(self, key: KeyInfo, persona: str) -> list[BudgetInfo]:
        return [b for b in self.budgets if b.applies_to(key, persona)]

    def rate_limits_for(self, key: KeyInfo) -> list[RateLimitInfo]:
        found = (self.rate_limits.get(("key", key.id)), self.rate_limits.get(("team", key.team_id)))
        return [r for r in found if r is not None]


# -- loading (sync, runs in a worker thread) --------------------------------------------


def _usable_connection(load):
    """Worker threads keep their database connection between calls, and Django
    drops a broken one only at request boundaries, which these threads never
    see: after a database restart every later load in the thread would fail.
    So each load first drops this thread's connection if an error broke it
    (a flag check, no query, while it is healthy)."""

    @functools.wraps(load)
    def run(*args):
        if connection.errors_occurred:
            connection.close_if_unusable_or_obsolete()
        return load(*args)

    return run


@_usable_connection
def load_snapshot(generation: int) -> Snapshot:
    providers: dict[str, ProviderInfo] = {}
    by_id: dict[int, ProviderInfo] = {}
    for provider in Provider.objects.prefetch_related("models"):
        info = provider_info(provider, provider.models.all())
        providers[info.name] = by_id[info.id] = info
    return Snapshot(load_personas(by_id), providers, time.monotonic(), generation, load_budgets(), load_rate_limits())


# -- the per-process cache -----------------------------------------------------------


@_usable_connection
def _db_generation() -> int:
    return ConfigGeneration.objects.filter(id=1).values_list("value", flat=True).first() or 0


def _db_bump() -> None:
    if not ConfigGeneration.objects.filter(id=1).update(value=models.F("value") + 1):
        # A fresh row starts from the clock, so it never equals a value a
        # process cached before the row was (re)created.
        ConfigGeneration.objects.get_or_create(id=1, defaults={"value": time.time_ns()})


class ConfigCache:
    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._keys: dict[str, KeyInfo | None] = {}
        self._local_generation = 0
        self._shared_generation = 0
        self._checked_at = -1e9
        self._lock: asyncio.Lock | None = None

    def invalidate(self) -> None:
        self._local_generation += 1
        self._keys = {}

    async def _read_shared_generation(self) -> int:
        if shared.redis_enabled():
            return int(await shared.async_redis().get(GENERATION_KEY) or 0)
        return await sync_to_async(_db_generation, thread_sensitive=False)()

    async def _current_generation(self) -> int:
        """Local + shared generation; the shared one is polled at most every
        EP_CONFIG_CHECK_SECONDS (Redis when configured, else the database)."""
        now = time.monotonic()
        if now - self._checked_at >= settings.EP_CONFIG_CHECK_SECONDS:
            self._checked_at = now
            try:
                shared_generation = await self._read_shared_generation()
            except (RedisError, DatabaseError):
                shared_generation = self._shared_generation  # serve what we have; TTL still applies
            if shared_generation != self._shared_generation:
                self._shared_generation = shared_generation
                self._keys = {}
        return self._local_generation * 1_000_003 + self._shared_generation

    def _is_fresh(self, snapshot: Snapshot | None, generation: int) -> bool:
        if snapshot is None or snapshot.generation != generation:
            return False
        return time.monotonic() - snapshot.loaded_at < settings.EP_CONFIG_CACHE_SECONDS

    async def snapshot(self) -> Snapshot:
        generation = await self._current_generation()
        if self._is_fresh(self._snapshot, generation):
            return self._snapshot
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one reload for a burst of requests
            if not self._is_fresh(self._snapshot, generation):
                try:
                    self._snapshot = await sync_to_async(load_snapshot, thread_sensitive=False)(generation)
                except DatabaseError:
                    raise ServiceUnavailable("The configuration database is unreachable; try again shortly.",
                                             code="database_unavailable") from None
        return self._snapshot

    async def key(self, key_hash: str) -> KeyInfo | None:
        await self.snapshot()  # refreshes generation and drops stale keys
        if key_hash in self._keys:
            info = self._keys[key_hash]
        else:
            try:
                info = await sync_to_async(_usable_connection(load_key), thread_sensitive=False)(key_hash)
            except DatabaseError:
                raise ServiceUnavailable("The key database is unreachable; try again shortly.",
                                         code="database_unavailable") from None
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys = {}  # bounded: a flood of random keys cannot grow memory
            self._keys[key_hash] = info
        # The lookup was by an index on the hash, so it already matched; this
        # constant-time check is belt and braces (docs/SECURITY.md, "Keys").
        if info is not None and not hmac.compare_digest(info.key_hash, key_hash):
            return None
        return info


config_cache = ConfigCache()


def bump_generation(**_: Any) -> None:
    """Signal receiver: this process drops its caches at once; other processes
    see the shared generation (Redis, else the database) move. And again once
    the change is committed: a save inside a transaction signals before its
    commit, and a request that reloaded the configuration in between (here, or
    in a process that saw Redis move) read the rows as they were, under the
    new generation, and would serve them until the next change."""
    _changed(in_database=True)
    transaction.on_commit(lambda: _changed(in_database=False))


def _changed(*, in_database: bool) -> None:
    config_cache.invalidate()
    if shared.redis_enabled():
        try:
            shared.sync_redis().incr(GENERATION_KEY)
        except RedisError:  # the change is saved; others see it within EP_CONFIG_CACHE_SECONDS
            log.warning("config changed, but Redis is unreachable: other processes reload it "
                        "within EP_CONFIG_CACHE_SECONDS")
    elif in_database:
        # Written in the change's own transaction: other processes see the new
        # generation and the new rows together, at its commit.
        _db_bump()


def connect_invalidation_signals() -> None:
    # PersonaTools: which personas run tools on the platform (gateway/tool_loop.py) is read per snapshot.
    for model in (ApiKey, Team, Persona, RouteStep, Provider, Model, Budget, RateLimit, PersonaTools):
        post_save.connect(bump_generation, sender=model, dispatch_uid=f"ep-config-{model.__name__}-save")
        post_delete.connect(bump_generation, sender=model, dispatch_uid=f"ep-config-{model.__name__}-delete")
