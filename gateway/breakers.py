"""Circuit breakers: one per provider+model, judged over a sliding window.

The rule. A breaker counts the *calls* that ended on its provider+model in the
last EP_BREAKER_WINDOW_SECONDS (breaker_window_seconds), where a call is one
request's turn on one route step, with all its retries: it succeeded if the
step answered, failed if the step gave up on a retryable failure (429, 5xx,
timeout; a bad request says nothing about the provider's health). A failure a
retry recovered from is not a failure: a provider that answers a retry is not
down. The breaker opens when, in the window, at least EP_BREAKER_MIN_CALLS
calls (breaker_min_calls) ended and at least EP_BREAKER_FAILURE_RATIO
(breaker_failure_ratio) of them failed. Open, it refuses calls (the route falls
to its next step) for EP_BREAKER_COOLDOWN_SECONDS (breaker_cooldown_seconds);
then exactly one probe call goes through: its success closes the breaker with
a fresh window, its failure opens it again. Calls already past the breaker
when it opens finish with their retries; their outcomes do not move an open
breaker.

So a burst of transient errors across many concurrent calls (each meets one
503, its retry answers) never opens it, while a provider that fails every call
opens it after EP_BREAKER_MIN_CALLS calls.

Shared: with Redis, every gateway process counts into one window (a hash of
ten buckets per breaker; one Lua script per decision, so two processes never
both take the probe). A process sends the successes of a clean breaker (no
failure in the window) in one batch when it next asks Redis, at most every
EP_BREAKER_SHARED_CHECK_SECONDS, instead of one write per call. When Redis is
unreachable each process falls back to its own window: a breaker is advice,
and an outage of Redis must not fail a request the provider can answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from redis.exceptions import RedisError

from budgets import shared_state as shared
from gateway.observability import metrics
from gateway.routes import option
from personas.snapshot import StepInfo
from providers.types import ProviderError

log = logging.getLogger("gateway.breakers")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
BUCKETS = 10  # the window is counted in this many buckets
EXPIRE_SECONDS = 86400

# tally(key, now, window, calls, failures): count into the current bucket, drop
# buckets older than the window, return the window's calls and failures.
_TALLY = """
local function tally(key, now, window, calls, failures)
  local size = window / 10
  local current = math.floor(now / size)
  if calls > 0 then redis.call('HINCRBY', key, 'c' .. current, calls) end
  if failures > 0 then redis.call('HINCRBY', key, 'f' .. current, failures) end
  local total_calls, total_failures = 0, 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local name = fields[i]
    local kind, bucket = string.sub(name, 1, 1), tonumber(string.sub(name, 2))
    if bucket and (kind == 'c' or kind == 'f') then
      if bucket <= current - 10 then
        redis.call('HDEL', key, name)
      elseif kind == 'c' then
        total_calls = total_calls + tonumber(fields[i + 1])
      else
        total_failures = total_failures + tonumber(fields[i + 1])
      end
    end
  end
  redis.call('EXPIRE', key, 86400)
  return total_calls, total_failures
end
local function opened(key, now)
  redis.call('DEL', key)
  redis.call('HSET', key, 'state', 'open', 'since', now)
  redis.call('EXPIRE', key, 86400)
  return 'open'
end
"""
# ARGV: now, cooldown, window, successes not sent yet.
_ALLOW = _TALLY + """
local key = KEYS[1]
local now, cooldown, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'closed' then
  local calls, failures = tally(key, now, window, tonumber(ARGV[4]), 0)
  return 'closed:' .. failures
end
local since = tonumber(redis.call('HGET', key, 'since') or '0')
if now - since >= cooldown then
  redis.call('HSET', key, 'state', 'half_open', 'since', now)
  return 'probe'
end
return 'refuse'
"""
# ARGV: now, window, min calls, failure ratio, 1 if the call failed else 0, successes not sent yet.
_RECORD = _TALLY + """
local key = KEYS[1]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local min_calls, ratio, failed = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'half_open' then
  if failed == 1 then return opened(key, now) end
  redis.call('DEL', key)
  return 'closed'
end
if state == 'open' then return 'open' end
local calls, failures = tally(key, now, window, 1 + tonumber(ARGV[6]), failed)
if failed == 1 and calls >= min_calls and failures >= ratio * calls then return opened(key, now) end
return 'closed:' .. failures
"""


# -- one process's own windows (no Redis, or Redis unreachable) ---------------------------------


@dataclass(slots=True)
class _LocalState:
    state: str = CLOSED
    since: float = 0.0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [calls, failures]

    def tally(self, now: float, window: float, calls: int, failures: int) -> tuple[int, int]:
        """_TALLY, for this process alone."""
        current = int(now // (window / BUCKETS))
        if calls or failures:
            counts = self.buckets.setdefault(current, [0, 0])
            counts[0] += calls
            counts[1] += failures
        for bucket in [b for b in self.buckets if b <= current - BUCKETS]:
            del self.buckets[bucket]
        return sum(c for c, _ in self.buckets.values()), sum(f for _, f in self.buckets.values())


class Breaker:
    """One provider+model's breaker (the module docstring has the rule)."""

    _local: dict[str, _LocalState] = {}
    # name -> until when (monotonic) a "closed, no failure in the window" verdict
    # from Redis stands without asking again: one EVAL per breaker and process per
    # EP_BREAKER_SHARED_CHECK_SECONDS instead of one per call. Another process's
    # failures reach this one that much later; this process's own, at once.
    _clean_until: dict[str, float] = {}
    # name -> successes of calls on a clean breaker, not yet sent to Redis.
    _unsent: dict[str, int] = {}

    def __init__(self, step: StepInfo) -> None:
        self.provider, self.model = step.provider.name, step.model
        self.name = f"{step.provider.name}/{step.model}"
        self.key = f"ep:breaker:{self.name}"
        # breaker_failures: the option's name before the window (it counted failures in a row).
        min_calls = option(step, "breaker_min_calls", option(step, "breaker_failures", settings.EP_BREAKER_MIN_CALLS))
        self.min_calls = max(1, int(min_calls))
        self.ratio = option(step, "breaker_failure_ratio", settings.EP_BREAKER_FAILURE_RATIO)
        self.window = max(1.0, option(step, "breaker_window_seconds", settings.EP_BREAKER_WINDOW_SECONDS))
        self.cooldown = option(step, "breaker_cooldown_seconds", settings.EP_BREAKER_COOLDOWN_SECONDS)
        self._clean = False  # closed with no failure in the window, as of allow()

    async def allow(self) -> bool:
        """True if a call may go through now (in half-open: only the one probe)."""
        if shared.redis_enabled():
            if self._clean_until.get(self.name, 0.0) > time.monotonic():
                self._clean = True
                return True
            unsent = self._unsent.pop(self.name, 0)
            try:
                verdict = _text(await shared.async_redis().eval(
                    _ALLOW, 1, self.key, time.time(), self.cooldown, self.window, unsent))
            except RedisError as error:
                _redis_unreachable(error)
                return self._allow_locally()
            self._clean = verdict == "closed:0"  # lets succeeded() skip its write
            if self._clean:
                self._clean_until[self.name] = time.monotonic() + settings.EP_BREAKER_SHARED_CHECK_SECONDS
            if not verdict.startswith("closed"):
                metrics.set_breaker_state(self.provider, self.model, HALF_OPEN if verdict == "probe" else OPEN)
            return verdict.startswith("closed") or verdict == "probe"
        return self._allow_locally()

    def _allow_locally(self) -> bool:
        local = self._local.setdefault(self.name, _LocalState())
        if local.state == CLOSED:
            return True
        now = time.time()
        if now - local.since >= self.cooldown:
            local.state, local.since = HALF_OPEN, now
            metrics.set_breaker_state(self.provider, self.model, HALF_OPEN)
            return True
        return False

    async def succeeded(self) -> None:
        """The call answered (after its retries, if any)."""
        if shared.redis_enabled() and self._clean:
            self._unsent[self.name] = self._unsent.get(self.name, 0) + 1
            return
        await self._record(failed=False)

    async def failed(self) -> str:
        """The call gave up on a retryable failure; returns the breaker's state."""
        self._clean = False
        self._clean_until.pop(self.name, None)
        return await self._record(failed=True)

    async def _record(self, *, failed: bool) -> str:
        if shared.redis_enabled():
            unsent = self._unsent.pop(self.name, 0)
            try:
                verdict = _text(await shared.async_redis().eval(
                    _RECORD, 1, self.key, time.time(), self.window, self.min_calls, self.ratio, int(failed), unsent))
            except RedisError as error:
                _redis_unreachable(error)
                verdict = self._record_locally(failed)
        else:
            verdict = self._record_locally(failed)
        state = verdict.split(":")[0]
        if failed or state != CLOSED or verdict == CLOSED:  # moved, or may have: the gauge follows
            metrics.set_breaker_state(self.provider, self.model, state)
        return state

    def _record_locally(self, failed: bool) -> str:
        local = self._local.setdefault(self.name, _LocalState())
        now = time.time()
        if local.state == HALF_OPEN:
            self._local[self.name] = _LocalState(OPEN, now) if failed else _LocalState()
            return OPEN if failed else CLOSED
        if local.state == OPEN:
            return OPEN
        calls, failures = local.tally(now, self.window, 1, int(failed))
        if failed and calls >= self.min_calls and failures >= self.ratio * calls:
            self._local[self.name] = _LocalState(OPEN, now)
            return OPEN
        return f"{CLOSED}:{failures}"

    async def state(self) -> dict:
        """state, and the window's calls and failures (for /health)."""
        if shared.redis_enabled():
            try:
                raw = await shared.async_redis().hgetall(self.key)
            except RedisError as error:
                _redis_unreachable(error)
            else:
                return _shared_state({_text(k): _text(v) for k, v in raw.items()}, self.window)
        local = self._local.get(self.name, _LocalState())
        state = local.state
        if state == OPEN and time.time() - local.since >= self.cooldown:
            state = HALF_OPEN  # the next call will be the probe
        calls, failures = local.tally(time.time(), self.window, 0, 0)
        return {"state": state, "calls": calls, "failures": failures}


def _shared_state(values: dict[str, str], window: float) -> dict:
    current = int(time.time() // (window / BUCKETS))
    calls = failures = 0
    for name, value in values.items():
        if name[:1] in ("c", "f") and name[1:].isdigit() and int(name[1:]) > current - BUCKETS:
            if name[0] == "c":
                calls += int(value)
            else:
                failures += int(value)
    return {"state": values.get("state", CLOSED), "calls": calls, "failures": failures}


def breaker_states(provider: str, models: list[str]) -> dict[str, str]:
    """model -> breaker state, for pages rendered by sync views (the dashboard)."""
    states = {}
    for model in models:
        name = f"{provider}/{model}"
        states[model] = Breaker._local.get(name, _LocalState()).state
        if shared.redis_enabled():
            try:
                states[model] = _text(shared.sync_redis().hget(f"ep:breaker:{name}", "state") or CLOSED)
            except RedisError as error:
                _redis_unreachable(error)
    return states


_last_warning = 0.0


def _redis_unreachable(error: RedisError) -> None:
    """Logged once per 10 s, not once per call: during an outage every call meets it."""
    global _last_warning
    if time.monotonic() - _last_warning >= 10:
        _last_warning = time.monotonic()
        log.warning("circuit breakers: Redis unreachable (%s); each process uses its own window meanwhile",
                    type(error).__name__)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def counts_against_breaker(error: ProviderError) -> bool:
    # The provider's trouble, not the caller's: a bad request says nothing
    # about the provider's health.
    return error.retryable
