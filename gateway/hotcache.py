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
import hmac
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, models
from django.db.models.signals import post_delete, post_save
from redis.exceptions import RedisError

from gateway import shared
from gateway.errors import ServiceUnavailable
from providers.adapters.base import AdapterConfig

GENERATION_KEY = "ep:config-generation"
MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    team_id: int
    team_name: str
    name: str
    prefix: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    key_hash: str = field(default="", repr=False)
    max_output_tokens: int | None = None  # the key's cap on max_tokens (ApiKey.max_output_tokens)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    input_price: Decimal | None
    output_price: Decimal | None
    cached_input_price: Decimal | None
    context_window: int | None
    max_output_tokens: int | None


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    id: int
    name: str
    kind: str
    enabled: bool
    adapter_config: AdapterConfig = field(repr=False)
    models: dict[str, ModelInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepInfo:
    position: int
    provider: ProviderInfo
    model: str
    params: dict[str, Any]
    weight: int
    fallback_on_client_error: bool


@dataclass(frozen=True, slots=True)
class PersonaInfo:
    slug: str
    name: str
    system_prompt: str
    default_params: dict[str, Any]
    max_output_tokens: int | None
    steps: tuple[StepInfo, ...]


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    id: int
    name: str
    scope: str
    team_id: int | None
    key_id: int | None
    persona: str | None
    period: str
    limit: Decimal
    hard: bool
    thresholds: tuple[int, ...]

    def applies_to(self, key: KeyInfo, persona: str) -> bool:
        if self.scope == "team":
            return self.team_id == key.team_id
        if self.scope == "key":
            return self.key_id == key.id
        if self.scope == "persona":
            return self.persona == persona
        return True  # global


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    scope: str  # "team" or "key"
    owner_id: int
    requests_per_minute: int | None
    tokens_per_minute: int | None


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


def _provider_info(provider, models) -> ProviderInfo:
    options = dict(provider.options or {})
    config = AdapterConfig(
        provider_id=provider.id,
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        credential=provider.get_credential(),
        connect_timeout=provider.connect_timeout,
        read_timeout=provider.read_timeout,
        options=options,
    )
    infos = {
        m.name: ModelInfo(
            m.name, m.input_price, m.output_price, m.cached_input_price, m.context_window, m.max_output_tokens
        )
        for m in models
        if m.enabled
    }
    return ProviderInfo(provider.id, provider.name, provider.kind, provider.enabled, config, infos)


def load_snapshot(generation: int) -> Snapshot:
    from personas.models import Persona
    from providers.models import Provider

    providers: dict[str, ProviderInfo] = {}
    by_id: dict[int, ProviderInfo] = {}
    for provider in Provider.objects.prefetch_related("models"):
        info = _provider_info(provider, provider.models.all())
        providers[info.name] = by_id[info.id] = info
    personas: dict[str, PersonaInfo] = {}
    for persona in Persona.objects.filter(enabled=True).prefetch_related("steps"):
        steps = tuple(
            StepInfo(s.position, by_id[s.provider_id], s.model, dict(s.params or {}), s.weight,
                     s.fallback_on_client_error)
            for s in persona.steps.all()
        )
        personas[persona.slug] = PersonaInfo(
            persona.slug, persona.name, persona.system_prompt, dict(persona.default_params or {}),
            persona.max_output_tokens, steps,
        )
    return Snapshot(personas, providers, time.monotonic(), generation, _load_budgets(), _load_rate_limits())


def _load_budgets() -> tuple[BudgetInfo, ...]:
    from budgets.models import Budget

    return tuple(
        BudgetInfo(b.id, b.name, b.scope, b.team_id, b.api_key_id, b.persona.slug if b.persona_id else None,
                   b.period, b.limit_usd, b.hard, tuple(sorted(int(t) for t in (b.thresholds or ()))))
        for b in Budget.objects.filter(enabled=True).select_related("persona")
    )


def _load_rate_limits() -> dict[tuple[str, int], RateLimitInfo]:
    from budgets.models import RateLimit

    limits = {}
    for r in RateLimit.objects.all():
        scope, owner = ("key", r.api_key_id) if r.api_key_id else ("team", r.team_id)
        limits[(scope, owner)] = RateLimitInfo(scope, owner, r.requests_per_minute, r.tokens_per_minute)
    return limits


def load_key(key_hash: str) -> KeyInfo | None:
    from gateway.models import ApiKey

    key = ApiKey.objects.select_related("team").filter(key_hash=key_hash).first()
    if key is None:
        return None
    return KeyInfo(
        key.id, key.team_id, key.team.name, key.name, key.prefix, frozenset(key.scopes or ()),
        key.expires_at, key.revoked_at is not None, key.key_hash, key.max_output_tokens,
    )


# -- the per-process cache -----------------------------------------------------------


def _db_generation() -> int:
    from providers.models import ConfigGeneration

    return ConfigGeneration.objects.filter(id=1).values_list("value", flat=True).first() or 0


def _db_bump() -> None:
    from providers.models import ConfigGeneration

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
                info = await sync_to_async(load_key, thread_sensitive=False)(key_hash)
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
    see the shared generation (Redis, else the database) move."""
    config_cache.invalidate()
    if shared.redis_enabled():
        shared.sync_redis().incr(GENERATION_KEY)
    else:
        _db_bump()


def connect_invalidation_signals() -> None:
    from budgets.models import Budget, RateLimit
    from gateway.models import ApiKey, Team
    from personas.models import Persona, RouteStep
    from providers.models import Model, Provider

    for model in (ApiKey, Team, Persona, RouteStep, Provider, Model, Budget, RateLimit):
        post_save.connect(bump_generation, sender=model, dispatch_uid=f"ep-config-{model.__name__}-save")
        post_delete.connect(bump_generation, sender=model, dispatch_uid=f"ep-config-{model.__name__}-delete")
