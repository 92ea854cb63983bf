"""Retries, circuit breakers, deadlines and stream timeouts around adapter calls.

- Retries: a retryable failure (429, 5xx, timeouts) is retried on the same
  step up to its attempt limit, with exponential backoff and full jitter, or
  after the provider's Retry-After when it gives one. A Retry-After above
  EP_RETRY_AFTER_CAP_SECONDS is not waited for: the route falls over (and if
  nothing is left the client gets the 429 with that Retry-After).
- Deadline: no retry or fallback starts if it cannot finish before the
  request's deadline; every provider call is bounded by what is left of it.
- Circuit breaker per provider+model (gateway/breakers.py, which has the
  rule): judged on the failure ratio of the calls that ended in a sliding
  window, with a minimum volume; a call's retries are part of the call, so
  a retry that answers means a healthy provider. Once a call is past its
  breaker its retries proceed, whatever the breaker does meanwhile.
- Streams: the first event must come within the first-token timeout and each
  later one within the idle timeout, or the stream ends with a timeout error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from django.conf import settings

from gateway.breakers import Breaker as Breaker
from gateway.breakers import breaker_states as breaker_states
from gateway.breakers import counts_against_breaker as counts_against_breaker
from gateway.call import Deadline
from gateway.routes import option
from personas.snapshot import StepInfo
from providers.types import ProviderError, StreamEvent

# -- deadline and backoff ----------------------------------------------------------------


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
