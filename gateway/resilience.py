"""Retries, circuit breakers, deadlines and stream timeouts around adapter calls.

- Retries: a retryable failure (429, 5xx, timeouts) is retried on the same
  step up to its attempt limit, with exponential backoff and full jitter, or
  after the provider's Retry-After when it gives one. A Retry-After above
  EP_RETRY_AFTER_CAP_SECONDS is not waited for: the route falls over (and if
  nothing is left the client gets the 429 with that Retry-After).
- Deadline: no retry or fallback starts if it cannot finish before the
  request's deadline; every provider call is bounded by what is left of it.
- Circuit breaker per provider+model: closed -> open after N consecutive
  failures -> half-open after the cooldown, when exactly one probe request is
  let through; its success closes the breaker, its failure opens it again.
  With Redis the state is shared by every gateway process (one Lua script per
  transition, so two processes never both take the probe).
- Streams: the first event must come within the first-token timeout and each
  later one within the idle timeout, or the stream ends with a timeout error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.conf import settings

from budgets import shared_state as shared
from gateway.call import Deadline
from gateway.observability import metrics
from personas.snapshot import StepInfo
from providers.types import ProviderError, StreamEvent

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"


# -- deadline and backoff ----------------------------------------------------------------


def option(step: StepInfo, name: str, default: float) -> float:
    """A per-step value: route step params, then provider options, then the setting."""
    value = step.params.get(name, step.provider.adapter_config.options.get(name))
    return float(default if value is None else value)


def backoff_delay(attempt: int, error: ProviderError, step: StepInfo) -> float | None:
    """Seconds to wait before retry number `attempt` (1-based), or None: do not retry here."""
    if error.retry_after is not None:
        if error.retry_after > option(step, "retry_after_cap", settings.EP_RETRY_AFTER_CAP_SECONDS):
            return None
        return error.retry_after
    ceiling = min(settings.EP_RETRY_MAX_BACKOFF_SECONDS, settings.EP_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)  # full jitter: spreads a thundering herd


def max_attempts(step: StepInfo) -> int:
    return max(1, int(option(step, "max_attempts", settings.EP_RETRY_ATTEMPTS)))


# -- circuit breakers ------------------------------------------------------------------

_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return 'closed:' .. (redis.call('HGET', KEYS[1], 'failures') or '0') end
local now, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
if now - since >= cooldown then
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', now)
  return 'probe'
end
return 'refuse'
"""
_FAILURE = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], 86400)
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'failures', 0)
  return 'open'
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= threshold then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'failures', 0)
  return 'open'
end
return state
"""


@dataclass(slots=True)
class _LocalState:
    state: str = CLOSED
    failures: int = 0
    since: float = 0.0


_CLOSED_CLEAN = _LocalState()


class Breaker:
    """One provider+model's breaker; state in Redis when configured, else here."""

    _local: dict[str, _LocalState] = {}
    # name -> until when (monotonic) a "closed, no failures" verdict from Redis
    # stands without asking again: one EVAL per breaker and process per
    # EP_BREAKER_SHARED_CHECK_SECONDS instead of one per call. Another process's
    # failures reach this one that much later; this process's own, at once.
    _clean_until: dict[str, float] = {}

    def __init__(self, step: StepInfo) -> None:
        self.provider, self.model = step.provider.name, step.model
        self.name = f"{step.provider.name}/{step.model}"
        self.key = f"ep:breaker:{self.name}"
        self.threshold = max(1, int(option(step, "breaker_failures", settings.EP_BREAKER_FAILURES)))
        self.cooldown = option(step, "breaker_cooldown_seconds", settings.EP_BREAKER_COOLDOWN_SECONDS)
        self._clean = False  # closed with no failures counted, as of allow()

    async def allow(self) -> bool:
        """True if a call may go through now (in half-open: only the one probe)."""
        now = time.time()
        if shared.redis_enabled():
            if self._clean_until.get(self.name, 0.0) > time.monotonic():
                self._clean = True
                return True
            verdict = _text(await shared.async_redis().eval(_ALLOW, 1, self.key, now, self.cooldown))
            # "closed:0" (the common case) lets succeeded() skip its write.
            self._clean = verdict == "closed:0"
            if self._clean:
                self._clean_until[self.name] = time.monotonic() + settings.EP_BREAKER_SHARED_CHECK_SECONDS
            if not verdict.startswith("closed"):
                metrics.set_breaker_state(self.provider, self.model, HALF_OPEN if verdict == "probe" else OPEN)
            return verdict.startswith("closed") or verdict == "probe"
        local = self._local.setdefault(self.name, _LocalState())
        if local.state == CLOSED:
            return True
        if now - local.since >= self.cooldown:
            local.state, local.since = HALF_OPEN, now
            metrics.set_breaker_state(self.provider, self.model, HALF_OPEN)
            return True
        return False

    async def succeeded(self) -> None:
        if shared.redis_enabled():
            if not self._clean:
                await shared.async_redis().hset(self.key, mapping={"state": CLOSED, "failures": 0})
                metrics.set_breaker_state(self.provider, self.model, CLOSED)
        elif self._local.get(self.name, _CLOSED_CLEAN) != _CLOSED_CLEAN:
            self._local[self.name] = _LocalState()
            metrics.set_breaker_state(self.provider, self.model, CLOSED)

    async def failed(self) -> str:
        now = time.time()
        self._clean = False
        self._clean_until.pop(self.name, None)
        if shared.redis_enabled():
            state = _text(await shared.async_redis().eval(_FAILURE, 1, self.key, now, self.threshold))
        else:
            local = self._local.setdefault(self.name, _LocalState())
            local.failures += 1
            if local.state == HALF_OPEN or local.failures >= self.threshold:
                local.state, local.since, local.failures = OPEN, now, 0
            state = local.state
        metrics.set_breaker_state(self.provider, self.model, state)
        return state

    async def state(self) -> dict:
        if shared.redis_enabled():
            raw = await shared.async_redis().hgetall(self.key)
            values = {_text(k): _text(v) for k, v in raw.items()}
            return {"state": values.get("state", CLOSED), "failures": int(values.get("failures", 0))}
        local = self._local.get(self.name, _LocalState())
        state = local.state
        if state == OPEN and time.time() - local.since >= self.cooldown:
            state = HALF_OPEN  # the next call will be the probe
        return {"state": state, "failures": local.failures}


def breaker_states(provider: str, models: list[str]) -> dict[str, str]:
    """model -> breaker state, for pages rendered by sync views (the dashboard)."""
    states = {}
    for model in models:
        name = f"{provider}/{model}"
        if shared.redis_enabled():
            states[model] = _text(shared.sync_redis().hget(f"ep:breaker:{name}", "state") or CLOSED)
        else:
            states[model] = Breaker._local.get(name, _LocalState()).state
    return states


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def counts_against_breaker(error: ProviderError) -> bool:
    # The provider's trouble, not the caller's: a bad request says nothing
    # about the provider's health.
    return error.retryable


# -- route order --------------------------------------------------------------------


def plan_steps(steps: list[StepInfo]) -> list[StepInfo]:
    """Steps in position order; steps sharing a position are shuffled by weight,
    so traffic splits between them (weighted load balancing)."""
    ordered: list[StepInfo] = []
    by_position: dict[int, list[StepInfo]] = {}
    for step in steps:
        by_position.setdefault(step.position, []).append(step)
    for position in sorted(by_position):
        group = by_position[position]
        while group:
            pick = random.choices(group, weights=[max(1, s.weight) for s in group])[0]
            ordered.append(pick)
            group = [s for s in group if s is not pick]
    return ordered


# -- stream timeouts ----------------------------------------------------------------------


async def timed_events(events: AsyncIterator[StreamEvent], step: StepInfo, deadline: Deadline
                       ) -> AsyncIterator[StreamEvent]:
    """The adapter's events, or a final timeout error if the first one takes
    longer than the first-token timeout, a later one longer than the idle
    timeout, or the whole stream outlives the deadline."""
    first = option(step, "first_token_timeout", settings.EP_FIRST_TOKEN_TIMEOUT_SECONDS)
    idle = option(step, "idle_timeout", settings.EP_STREAM_IDLE_TIMEOUT_SECONDS)
    waited_first = False
    while True:
        limit = min(idle if waited_first else first, max(0.0, deadline.remaining()))
        try:
            async with asyncio.timeout(limit):  # no task per chunk, unlike wait_for
                event = await anext(events)
        except StopAsyncIteration:
            return
        except TimeoutError:
            what = "between chunks" if waited_first else "for the first token"
            yield StreamEvent("error", error=ProviderError(
                "timeout", f"no data from the provider {what} within {limit:.1f} s", provider=step.provider.name))
            return
        waited_first = True
        yield event
        if event.type in ("done", "error"):
            return
