"""The response cache: an exact-match answer store for personas that opt in.

A persona with the cache on (personas.snapshot.CachePolicy) answers a request
it has answered before from here: no provider call, no budget reservation, a
Usage row of its own with cost 0, `cache_hit` and the cost it saved. The
pipeline asks this module only when `route.persona.cache` is set, so a persona
with the cache off pays one attribute test and nothing else.

What is cached:
- the key covers everything that changes the answer: the scope (the caller's
  team, or everyone when the operator shares the persona's cache), the route
  (each step's provider, kind, model and params) and the request as the first
  step is sent it (persona system prompt, defaults and caps applied: messages,
  tools, tool choice, sampling and output parameters). `user` is left out: it
  names the end user for abuse tracking and does not change the answer.
- deterministic requests only: every step's temperature (the caller's, else the
  persona default, else the step param) is 0; unset counts as not
  deterministic (a provider's default samples). The persona's
  `cache_any_temperature` lifts this.
- complete answers only (a stream that ends with `done`, a non-stream answer).

Where: Redis (`ep:rc:<sha256>`, expiring by itself) when REDIS_URL is set,
else the database (gateway.models.CachedAnswer). A store that fails is logged
and the request goes on as a miss: the cache saves money, it never refuses.

The caller steers it with the `X-EP-Cache` request header (api/auth.py):
`bypass` (neither read nor write) or `refresh` (call the provider and replace
the cached answer). Every answer of a persona with the cache on says which
happened in the `X-EP-Cache` response header: hit, miss, bypass, refresh, or
skip (not cacheable, e.g. temperature above 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from datetime import timedelta
from decimal import Decimal

import redis
from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.utils import timezone

from budgets import shared_state as shared
from gateway.call import Call, Route
from gateway.models import CachedAnswer
from gateway.routes import request_for_step
from personas.snapshot import CachePolicy
from providers.types import ChatRequest, ChatResult, StreamEvent, ToolCall, Usage

log = logging.getLogger("gateway.response_cache")

HEADER = "X-EP-Cache"
MODES = ("bypass", "refresh")  # what a caller may ask for
REDIS_PREFIX = "ep:rc:"
REPLAY_CHUNK_CHARS = 16  # a replayed stream's text deltas: about a few tokens each, as a live one
USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cache_write_tokens")


@dataclasses.dataclass(slots=True)
class Cached:
    """One cached answer, with who served it and what it cost then."""

    result: ChatResult
    provider: str
    model: str
    cost: Decimal


# -- the key ---------------------------------------------------------------------------


def _deterministic(route: Route, base: ChatRequest) -> bool:
    return all(request_for_step(base, route, step).temperature == 0 for step in route.steps)


def cache_key(call: Call, route: Route, base: ChatRequest, policy: CachePolicy) -> str | None:
    """The request's key, or None when it may not be cached."""
    if not policy.any_temperature and not _deterministic(route, base):
        return None
    sent = dataclasses.replace(request_for_step(base, route, route.steps[0]), user=None)
    material = {
        "scope": "shared" if policy.shared else f"team:{call.key.team_id}",
        "route": route.label,
        "steps": [[s.provider.name, s.provider.kind, s.model, s.params] for s in route.steps],
        "request": dataclasses.asdict(sent),
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- encoding ---------------------------------------------------------------------------


def _encode(call: Call, result: ChatResult) -> str:
    return json.dumps({
        "content": result.content, "finish_reason": result.finish_reason, "model": result.model,
        "tool_calls": [[c.id, c.name, c.arguments] for c in result.tool_calls],
        "usage": {name: getattr(call.usage, name) for name in USAGE_FIELDS},
        "logprobs": result.logprobs, "provider": call.provider, "served_model": call.model, "cost": str(call.cost),
    }, separators=(",", ":"))


def _decode(text: str | bytes) -> Cached:
    data = json.loads(text)
    result = ChatResult(content=data["content"], tool_calls=[ToolCall(*c) for c in data["tool_calls"]],
                        finish_reason=data["finish_reason"], usage=Usage(**data["usage"]), model=data["model"],
                        logprobs=data["logprobs"])
    return Cached(result, data["provider"], data["served_model"], Decimal(data["cost"]))


# -- the store: Redis, else the database ----------------------------------------------------


def _db_get(key: str) -> str | None:
    row = CachedAnswer.objects.filter(key=key, expires_at__gt=timezone.now()).values_list("payload", flat=True)
    return row.first()


def _db_put(key: str, payload: str, ttl: int) -> None:
    now = timezone.now()
    CachedAnswer.objects.update_or_create(key=key, defaults={"payload": payload,
                                                             "expires_at": now + timedelta(seconds=ttl)})
    # An indexed range that is almost always empty: cheap enough on every write.
    CachedAnswer.objects.filter(expires_at__lte=now).delete()


async def _get(key: str) -> str | bytes | None:
    if shared.redis_enabled():
        return await shared.async_redis().get(REDIS_PREFIX + key)
    return await sync_to_async(_db_get, thread_sensitive=False)(key)


async def _put(key: str, payload: str, ttl: int) -> None:
    if shared.redis_enabled():
        await shared.async_redis().set(REDIS_PREFIX + key, payload, ex=ttl)
        return
    await sync_to_async(_db_put, thread_sensitive=False)(key, payload, ttl)


# -- what the pipeline calls ---------------------------------------------------------------


async def lookup(call: Call, route: Route, base: ChatRequest, policy: CachePolicy) -> Cached | None:
    """The cached answer for this request (the caller files it with `hit_file`
    once it is admitted); else None, and the call remembers the key, so `store`
    can keep the answer."""
    if call.cache_mode == "bypass":
        call.cache_status = "bypass"
        return None
    key = cache_key(call, route, base, policy)
    if key is None:
        call.cache_status = "skip"
        return None
    call.cache_key, call.cache_ttl = key, policy.ttl_seconds
    if call.cache_mode == "refresh":
        call.cache_status = "refresh"
        return None
    try:
        payload = await _get(key)
    except (redis.RedisError, DatabaseError) as error:
        log.warning("response cache unreadable (%s): %s goes to the provider", type(error).__name__, call.request_id)
        payload = None
    if payload is None:
        call.cache_status = "miss"
        return None
    return _decode(payload)


def hit_file(call: Call, cached: Cached) -> None:
    """The call is answered from the cache: its row costs nothing and saves what the answer cost."""
    call.cache_status, call.cache_hit = "hit", True
    call.provider, call.model = cached.provider, cached.model
    call.usage = dataclasses.replace(cached.result.usage)
    call.cost, call.saved = Decimal(0), cached.cost
    call.mark_first_token()


async def store(call: Call, result: ChatResult) -> None:
    """Keep a provider's complete answer under the key `lookup` found."""
    if not call.cache_key or result.finish_reason == "error":
        return
    try:
        await _put(call.cache_key, _encode(call, result), call.cache_ttl)
    except (redis.RedisError, DatabaseError) as error:
        log.warning("response cache not written (%s) for %s", type(error).__name__, call.request_id)


def replay(cached: Cached) -> list[StreamEvent]:
    """A cached answer as the events a live stream of it would have had."""
    result = cached.result
    text = result.content or ""
    events = [StreamEvent("delta", text=text[i:i + REPLAY_CHUNK_CHARS])
              for i in range(0, len(text), REPLAY_CHUNK_CHARS)]
    events += [StreamEvent("tool_call", index=i, tool_call_id=c.id, name=c.name, arguments=c.arguments)
               for i, c in enumerate(result.tool_calls)]
    events.append(StreamEvent("usage", usage=dataclasses.replace(result.usage)))
    events.append(StreamEvent("done", finish_reason=result.finish_reason))
    return events


class Recorder:
    """Assembles a live stream's events into the answer `store` keeps."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, ToolCall] = {}

    def add(self, event: StreamEvent) -> None:
        if event.type == "delta":
            self.text.append(event.text)
        elif event.type == "tool_call":
            call = self.calls.get(event.index)
            if call is None:
                self.calls[event.index] = ToolCall(event.tool_call_id or "", event.name or "", event.arguments)
            else:
                call.arguments += event.arguments

    def result(self, done: StreamEvent, usage: Usage) -> ChatResult:
        content = "".join(self.text)
        calls = [self.calls[i] for i in sorted(self.calls)]
        return ChatResult(content=content or (None if calls else ""), tool_calls=calls,
                          finish_reason=done.finish_reason or "stop", usage=usage)
