"""Requests and tokens per minute, per API key and per team.

Fixed one-minute windows (UTC). With Redis, one Lua script checks every
applicable window and counts the request in all of them atomically, so N
requests per window are admitted exactly, however many gateway processes
share the limit. Without Redis the windows live in this process only.

Tokens: a request is admitted while its windows' token count is under the
limit; its actual tokens are added when it settles (so a window can end up
over by the tokens of the requests in flight, which OpenAI's limits also allow).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from accounts.snapshot import KeyInfo
from budgets import shared_state as shared
from budgets.snapshot import RateLimitInfo

log = logging.getLogger("budgets.ratelimit")

WINDOW = 60


class RateLimitRefusal(Exception):
    """A window is full: the pipeline answers 429 with these headers."""

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers = headers


class RateLimitStoreDown(Exception):
    """Redis is unreachable: limits that cannot be checked are not enforced, so the pipeline refuses (503)."""

# KEYS: request-count keys then token-count keys; ARGV: request limits, token limits, ttl.
_ADMIT = """
local n = #KEYS / 2
for i = 1, n do
  local limit = tonumber(ARGV[i])
  if limit >= 0 and tonumber(redis.call('GET', KEYS[i]) or '0') >= limit then return i end
  local tlimit = tonumber(ARGV[n + i])
  if tlimit >= 0 and tonumber(redis.call('GET', KEYS[n + i]) or '0') >= tlimit then return n + i end
end
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * n + 1])
end
return 0
"""


@dataclass(slots=True)
class Admission:
    """What the response headers tell the client (like OpenAI's x-ratelimit-*)."""

    headers: dict[str, str] = field(default_factory=dict)
    token_keys: list[str] = field(default_factory=list)


def _keys(limit: RateLimitInfo, window: int) -> tuple[str, str]:
    base = f"ep:rl:{limit.scope}:{limit.owner_id}:{window}"
    return base + ":req", base + ":tok"


def _limit_arg(value: int | None) -> int:
    return -1 if value is None else value


class _LocalWindows:
    """The no-Redis fallback: one process's own counters."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def admit(self, keys: list[str], limits: list[int]) -> int:
        n = len(keys) // 2
        for i in range(n):
            if limits[i] >= 0 and self.counts.get(keys[i], 0) >= limits[i]:
                return i + 1
            if limits[n + i] >= 0 and self.counts.get(keys[n + i], 0) >= limits[n + i]:
                return n + i + 1
        for i in range(n):
            self.counts[keys[i]] = self.counts.get(keys[i], 0) + 1
        return 0

    def add_tokens(self, keys: list[str], tokens: int) -> None:
        if len(self.counts) > 10_000:
            self.counts.clear()  # old windows: keep memory bounded
        for key in keys:
            self.counts[key] = self.counts.get(key, 0) + tokens


_local = _LocalWindows()


async def rate_limit_admit(key: KeyInfo, limits: list[RateLimitInfo]) -> Admission:
    if not limits:
        return Admission()
    now = time.time()
    window = int(now // WINDOW)
    pairs = [_keys(limit, window) for limit in limits]
    keys = [p[0] for p in pairs] + [p[1] for p in pairs]
    args = [_limit_arg(lim.requests_per_minute) for lim in limits] + [_limit_arg(lim.tokens_per_minute) for lim in limits]
    if shared.redis_enabled():
        try:
            refused = int(await shared.async_redis().eval(_ADMIT, len(keys), *keys, *args, WINDOW * 2))
        except RedisError:
            raise RateLimitStoreDown() from None
    else:
        refused = _local.admit(keys, args)
    reset = max(1, int((window + 1) * WINDOW - now + 0.999))
    headers = _headers(limits[0], reset)
    if refused:
        which = "tokens" if refused > len(limits) else "requests"
        limit = limits[(refused - 1) % len(limits)]
        raise RateLimitRefusal(
            f"Rate limit reached for {limit.scope} ({which} per minute); retry in {reset} s.",
            retry_after=reset, headers=headers,
        )
    return Admission(headers=headers, token_keys=[p[1] for p in pairs])


def _headers(limit: RateLimitInfo, reset: int) -> dict[str, str]:
    headers = {}
    if limit.requests_per_minute is not None:
        headers["x-ratelimit-limit-requests"] = str(limit.requests_per_minute)
        headers["x-ratelimit-reset-requests"] = f"{reset}s"
    if limit.tokens_per_minute is not None:
        headers["x-ratelimit-limit-tokens"] = str(limit.tokens_per_minute)
        headers["x-ratelimit-reset-tokens"] = f"{reset}s"
    return headers


async def rate_limit_add_tokens(admission: Admission, tokens: int) -> None:
    """Count an answered request's tokens. Never raises: the answer is already
    decided, and a Redis outage here must not turn it into an error."""
    if not admission.token_keys or tokens <= 0:
        return
    if shared.redis_enabled():
        pipe = shared.async_redis().pipeline(transaction=False)
        for key in admission.token_keys:
            pipe.incrby(key, tokens)
            pipe.expire(key, WINDOW * 2)
        try:
            await pipe.execute()
        except RedisError:
            log.warning("could not count %d tokens against the rate limits (Redis unreachable)", tokens)
    else:
        _local.add_tokens(admission.token_keys, tokens)
