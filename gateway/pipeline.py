"""One request: open the call (authenticate) -> begin (resolve the route, check
limits, annotate the trace) -> admit (rate limits, budget reservation) ->
complete or stream, with retries, breakers and fallback -> settle -> exactly one
Usage row (gateway/recording.py). Streams reach the client through
gateway/relay.py.

Every surface (OpenAI, Anthropic and native HTTP, the websocket, the
dashboard's playground) converts its wire format to providers.types and calls
these same functions; nothing else starts or ends a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from django.conf import settings

from accounts.models import hash_key
from accounts.snapshot import KeyInfo
from budgets import pricing, spool
from budgets.ledger import BudgetRefusal, BudgetStoreDown, budget_reserve_async
from budgets.ratelimit import RateLimitRefusal, RateLimitStoreDown, rate_limit_admit
from gateway import response_cache
from gateway.call import Call, Deadline, Route, new_request_id
from gateway.config import Snapshot, config_cache
from gateway.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamFailed,
)
from gateway.observability import tracing
from gateway.recording import account, settle
from gateway.resilience import (
    Breaker,
    backoff_delay,
    counts_against_breaker,
    max_attempts,
    plan_steps,
    timed_events,
)
from gateway.routes import caller_names_check, request_for_step, request_limits_check, route_resolve
from personas.snapshot import CachePolicy, StepInfo
from providers.adapters import adapter_class, get_adapter
from providers.adapters.base import Adapter
from providers.types import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    ImagePart,
    ProviderError,
    StreamEvent,
    has_cache_breakpoint,
)

log = logging.getLogger("gateway.pipeline")

Answer = TypeVar("Answer", ChatResult, EmbeddingResult)


# -- open and begin --------------------------------------------------------------------


async def authenticate(raw_key: str | None) -> KeyInfo:
    # One message for every failure: a caller learns nothing about which keys exist.
    if not raw_key:
        raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer <key>'.")
    info = await config_cache.key(hash_key(raw_key))
    if info is None or info.revoked or (info.expires_at and info.expires_at.timestamp() <= time.time()):
        raise AuthenticationFailed("Invalid API key, or the key was revoked or has expired.")
    return info


async def call_open(raw_key: str | None, *, endpoint: str, request_id: str | None = None,
                    stream: bool = False) -> Call:
    """Authenticate a key and open the Call that becomes the request's one Usage row."""
    key = await authenticate(raw_key)
    return Call(request_id=request_id or new_request_id(), endpoint=endpoint, key=key, stream=stream)


async def begin(call: Call, request: ChatRequest, *, model: str, persona_header: str | None = None,
                run_id: str = "", step: str = "", timeout: float | None = None, cache_mode: str = "") -> Route:
    """Resolve the route for `model`, refuse what is over a limit, and put the
    request on the trace; raises GatewayError (filed on the call by the caller's
    error handling). The answer comes from `complete` or `stream` after this."""
    call.cache_mode = cache_mode
    route = await _route_open(call, model=model, persona_header=persona_header, run_id=run_id, step=step,
                              timeout=timeout)
    request_limits_check(messages=len(request.messages), max_tokens=request.max_tokens, route=route,
                         tools=request.tools)
    _serving(call, route, _needs(request), request)  # refused now, with the reason, if no step can
    tracing.annotate_request(call, request, requested_model=model)
    return route


async def begin_embedding(call: Call, request: EmbeddingRequest, *, model: str, persona_header: str | None = None,
                          run_id: str = "", step: str = "", timeout: float | None = None,
                          cache_mode: str = "") -> Route:
    """`begin` for an embeddings request: its route must have a step that serves embeddings.
    Embeddings are never answered from the response cache (`cache_mode` is accepted and unused)."""
    route = await _route_open(call, model=model, persona_header=persona_header, run_id=run_id, step=step,
                              timeout=timeout)
    if len(request.inputs) > settings.EP_MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"This request has {len(request.inputs)} inputs; this gateway embeds at most "
                             f"{settings.EP_MAX_EMBEDDING_INPUTS} per request.", code="too_many_inputs", param="input")
    _serving(call, route, _embedding_needs(request))
    tracing.annotate_request(call, None, requested_model=model, operation="embeddings")
    return route


async def _route_open(call: Call, *, model: str, persona_header: str | None, run_id: str, step: str,
                      timeout: float | None) -> Route:
    # Before anything is filed on the call or sent anywhere (gateway/routes.py says why).
    caller_names_check(model=model, persona_header=persona_header, run_id=run_id, step=step)
    call.run_id, call.step = run_id, step
    if timeout is not None:
        call.timeout = timeout
    route = route_resolve(snapshot=await config_cache.snapshot(), model=model, key=call.key,
                          persona_header=persona_header)
    call.persona = route.persona.slug if route.persona else ""
    return route


# -- call with fallback ------------------------------------------------------------------


def _should_fall_back(error: ProviderError, step: StepInfo) -> bool:
    # A bad request is the caller's: another provider would hide it, unless
    # the operator marked the step for it (e.g. a larger-context fallback).
    return error.retryable or step.fallback_on_client_error


# How a refusal names a capability a route lacks.
CAPABILITY_NAMES = {"token_inputs": "token-array inputs (send the text itself)", "json_schema": "JSON schema output",
                    "json_mode": "JSON output", "tools": "tool calls", "images": "image inputs"}
# The request field a missing capability is about.
CAPABILITY_PARAMS = {"token_inputs": "input", "tools": "tools", "images": "messages", "json_schema": "response_format",
                     "json_mode": "response_format", "logprobs": "logprobs"}


def _serving(call: Call, route: Route, needs: tuple[str, ...], request: ChatRequest | None = None
             ) -> list[StepInfo]:
    """The route's enabled steps that can serve this request: their provider kind
    and their model (the catalog) have every capability in `needs`, and, for a
    chat request, its max_tokens and estimated prompt fit the model's limits.
    Worked out once per call; steps left out are kept for the attempt log with
    their reason. Raises when no step can: a 400 with the first step's reason."""
    if call.serving is not None:
        return call.serving
    steps = [s for s in route.steps if s.provider.enabled]
    if not steps:
        raise UpstreamFailed(
            ProviderError("unavailable", "every provider on this route is disabled"),
            provider=route.label,
            attempts=0,
        )
    serving, skipped = [], []
    for step in steps:
        refusal = _refusal(step, needs, request and request_for_step(request, route, step))
        if refusal is None:
            serving.append(step)
        else:
            skipped.append((step, refusal))
    if not serving:
        raise _refused(route, steps, skipped[0][1])
    call.serving, call.skipped = serving, skipped
    return serving


def _refusal(step: StepInfo, needs: tuple[str, ...], request: ChatRequest | None) -> tuple[str, str] | None:
    """(what it lacks, why) when this step cannot serve the request, else None."""
    capabilities = adapter_class(step.provider.kind).capabilities
    info = step.provider.models.get(step.model)
    for need in needs:
        name = CAPABILITY_NAMES.get(need, need)
        if not getattr(capabilities, need):
            return need, f"{step.provider.name} ({step.provider.kind}) does not serve {name}"
        if info is not None and need in info.unsupported:
            return need, f"the model {step.provider.name}/{step.model} does not serve {name} (model catalog)"
    if request is None or info is None:
        return None
    if info.max_output_tokens and request.max_tokens and request.max_tokens > info.max_output_tokens:
        return "max_tokens", (f"max_tokens is {request.max_tokens}, and {step.provider.name}/{step.model} writes "
                              f"at most {info.max_output_tokens} tokens")
    if info.context_window and (prompt := _prompt_estimate(request)) > info.context_window:
        return "context_window", (f"the prompt is about {prompt:,} tokens, and {step.provider.name}/{step.model} "
                                  f"takes at most {info.context_window:,}")
    return None


def _refused(route: Route, steps: list[StepInfo], refusal: tuple[str, str]) -> InvalidRequest:
    lack, reason = refusal
    if lack == "max_tokens":
        return InvalidRequest(f"'{route.label}' cannot take this request: {reason}.", code="max_tokens_too_large",
                              param="max_tokens")
    if lack == "context_window":
        return InvalidRequest(f"'{route.label}' cannot take this request: {reason}.", code="context_length_exceeded",
                              param="messages")
    serving = ", ".join(f"{s.provider.name}/{s.model}" for s in steps)
    return InvalidRequest(
        f"'{route.label}' routes to {serving}, which does not serve {CAPABILITY_NAMES.get(lack, lack)} "
        f"({reason}); use a persona or provider/model that does (GET /capabilities lists them).",
        code=f"{lack}_not_supported", param=CAPABILITY_PARAMS.get(lack, "model"))


def _skips_logged(call: Call) -> None:
    """The steps `_serving` left out, on the attempt log with their reason (once)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    for step, (_, reason) in call.skipped:
        call.attempt_log.append({"provider": step.provider.name, "model": step.model, "outcome": "skipped",
                                 "ms": 0, "at": now, "error": reason[:ATTEMPT_ERROR_CHARS]})
    call.skipped = []


def _needs(request: ChatRequest) -> tuple[str, ...]:
    """The capabilities a chat request asks of its provider and model beyond plain text."""
    needs = []
    if request.tools:
        needs.append("tools")
    if any(isinstance(m.content, list) and any(isinstance(p, ImagePart) for p in m.content)
           for m in request.messages):
        needs.append("images")
    kind = (request.response_format or {}).get("type")
    if kind in ("json_schema", "json_object"):
        needs.append("json_schema" if kind == "json_schema" else "json_mode")
    if request.logprobs:
        needs.append("logprobs")
    return tuple(needs)


def _prompt_estimate(request: ChatRequest) -> int:
    # ~4 characters a token, as providers count English; not the reservation's
    # generous ceiling (_input_estimate): a prompt that fits must not be refused.
    text = "".join(m.text() for m in request.messages) + "".join(str(t.parameters) for t in request.tools)
    return len(text) // 4


# -- admit: rate limits, then budget reservation ---------------------------------------


def _input_estimate(request: ChatRequest) -> int:
    # ~3 characters a token: generous on purpose, the reservation is a ceiling.
    text = "".join(m.text() for m in request.messages) + "".join(str(t.parameters) for t in request.tools)
    return len(text) // 3 + 8 * len(request.messages)


def _max_output(step: StepInfo, request: ChatRequest) -> int:
    info = step.provider.models.get(step.model)
    return request.max_tokens or (info and info.max_output_tokens) or settings.EP_DEFAULT_MAX_OUTPUT_TOKENS


def worst_case(call: Call, route: Route, base: ChatRequest) -> Decimal:
    """The most this call can cost on any step of its route that can serve it."""
    costs = []
    for step in _serving(call, route, _needs(base), base):
        request = request_for_step(base, route, step)
        info = step.provider.models.get(step.model)
        costs.append(pricing.worst_case_cost(kind=step.provider.kind, model=step.model, info=info,
                                              input_tokens=_input_estimate(request),
                                              max_output=_max_output(step, request),
                                              cache_writes=has_cache_breakpoint(request.messages, request.tools)))
    return max(costs)


async def admit(call: Call, route: Route, base: ChatRequest) -> None:
    """Rate limits, then reserve the worst case of this chat request against every
    hard budget. Refuses (raises) before any provider is called."""

    def ceiling() -> Decimal:
        if base.max_tokens is None:
            # The reservation assumes this many output tokens: make it a real bound.
            base.max_tokens = min(_max_output(s, request_for_step(base, route, s))
                                  for s in _serving(call, route, _needs(base), base))
        return worst_case(call, route, base)

    await _admit(call, route, ceiling)


async def _admit(call: Call, route: Route, ceiling: Callable[[], Decimal]) -> None:
    """Rate limits, then reserve `ceiling()` (the most the call can cost) against
    every hard budget that applies; `ceiling` runs only when one does."""
    if call.admitted:
        return
    call.admitted = True
    if spool.is_full():  # the database is down and the ledger's spool is full: nothing could record it
        raise ServiceUnavailable("The usage ledger cannot record requests right now; try again shortly.",
                                 code="ledger_unavailable")
    call.deadline = Deadline.after(call.deadline_seconds())
    call.persona = call.persona or (route.persona.slug if route.persona else "")
    snapshot = await config_cache.snapshot()
    await _rate_limits_admit(call, snapshot)
    call.budgets = snapshot.budgets_for(call.key, call.persona)
    if not any(b.hard for b in call.budgets):
        return
    await _reserve(call, ceiling())


async def _rate_limits_admit(call: Call, snapshot: Snapshot) -> None:
    try:
        call.admission = await rate_limit_admit(call.key, snapshot.rate_limits_for(call.key))
    except RateLimitRefusal as refusal:
        raise RateLimited(refusal.message, code="rate_limit_exceeded",
                          headers={"Retry-After": str(refusal.retry_after), **refusal.headers}) from None
    except RateLimitStoreDown:
        # Limits we cannot check are limits we cannot enforce: refuse.
        raise ServiceUnavailable("The rate-limit store is unreachable; try again shortly.",
                                 code="rate_limit_store_unavailable") from None
    call.response_headers.update(call.admission.headers)


async def _cached_answer(call: Call, route: Route, base: ChatRequest,
                         policy: CachePolicy) -> response_cache.Cached | None:
    """The response cache's answer, admitted like any request by the rate limits
    (a hit is a request; it adds no tokens) but never by a budget: it costs nothing."""
    cached = await response_cache.lookup(call, route, base, policy)
    if cached is None:
        return None
    call.admitted = True
    await _rate_limits_admit(call, await config_cache.snapshot())
    response_cache.hit_file(call, cached)
    return cached


async def _reserve(call: Call, amount: Decimal) -> None:
    try:
        call.held = await budget_reserve_async(request_id=call.request_id, budgets=call.budgets, amount=amount)
    except BudgetRefusal as refusal:
        b = refusal.budget
        raise BudgetExceeded(
            f"Budget '{b.name}' (${b.limit:.2f} per {b.period}) has ${refusal.remaining:.4f} left; "
            f"this request may cost up to ${refusal.amount:.4f}.", param=None) from None
    except BudgetStoreDown:
        raise ServiceUnavailable("The budget store is unreachable, so spending cannot be checked; try again shortly.",
                                 code="budget_store_unavailable") from None


# -- call with fallback ------------------------------------------------------------------


def complete(call: Call, route: Route, base: ChatRequest) -> Awaitable[ChatResult]:
    """The chat answer of the first step (in route order) that answers, each with its retries;
    from the response cache when the persona has it on and holds this answer."""
    policy = route.persona.cache if route.persona is not None else None
    if policy is None:  # the cache is off: the live call itself, nothing around it
        return _complete_live(call, route, base)
    return _complete_cached(call, route, base, policy)


async def _complete_cached(call: Call, route: Route, base: ChatRequest, policy: CachePolicy) -> ChatResult:
    cached = await _cached_answer(call, route, base, policy)
    if cached is not None:
        return cached.result
    result = await _complete_live(call, route, base)
    await response_cache.store(call, result)
    return result


async def _complete_live(call: Call, route: Route, base: ChatRequest) -> ChatResult:
    await admit(call, route, base)
    _serving(call, route, _needs(base), base)
    return await _first_answer(call, route, lambda adapter, step: adapter.chat(request_for_step(base, route, step)))


async def embed(call: Call, route: Route, base: EmbeddingRequest) -> EmbeddingResult:
    """Vectors from the first step (in route order) that serves embeddings, each with its retries."""
    await _admit(call, route, lambda: _embedding_worst_case(call, route, base))
    _serving(call, route, _embedding_needs(base))
    return await _first_answer(call, route, lambda adapter, step: adapter.embed(replace(base, model=step.model)))


def _embedding_needs(request: EmbeddingRequest) -> tuple[str, ...]:
    return ("embeddings", "token_inputs") if request.has_tokens() else ("embeddings",)


def _embedding_worst_case(call: Call, route: Route, request: EmbeddingRequest) -> Decimal:
    if request.has_tokens():
        tokens = sum(len(ids) for ids in request.inputs)  # exact
    else:
        tokens = sum(len(text) for text in request.inputs) // 3 + len(request.inputs)  # a ceiling, as for chat
    return max(pricing.worst_case_cost(kind=s.provider.kind, model=s.model, info=s.provider.models.get(s.model),
                                       input_tokens=tokens, max_output=0)
               for s in _serving(call, route, _embedding_needs(request)))


async def _first_answer(call: Call, route: Route,
                        invoke: Callable[[Adapter, StepInfo], Awaitable[Answer]]) -> Answer:
    """`invoke` on each serving step in route order until one answers; settles the call."""
    last_error: ProviderError | None = None
    _skips_logged(call)
    for step in plan_steps(call.serving):
        call.provider, call.model = step.provider.name, step.model
        try:
            result = await _complete_step(call, step, invoke)
        except ProviderError as error:
            last_error = error
            if not _should_fall_back(error, step) or call.deadline.remaining() <= 0:
                break
            continue
        call.mark_first_token()
        settle(call, step, result.usage)
        return result
    raise UpstreamFailed(last_error, provider=call.provider, attempts=call.attempts)


async def _complete_step(call: Call, step: StepInfo,
                         invoke: Callable[[Adapter, StepInfo], Awaitable[Answer]]) -> Answer:
    """One step with its retries; raises the last ProviderError when it gives up."""
    breaker = Breaker(step)
    if not await breaker.allow():
        raise _circuit_open(call, step, breaker)
    adapter = get_adapter(step.provider.adapter_config)
    for attempt in range(1, max_attempts(step) + 1):
        call.attempts += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, call.deadline.remaining())):
                result = await invoke(adapter, step)
        except TimeoutError:
            error = ProviderError("timeout", "the request's deadline passed", provider=step.provider.name)
        except ProviderError as provider_error:
            error = provider_error
        else:
            _attempt_logged(call, step, "ok", started)
            await breaker.succeeded()
            return result
        await _after_failure(call, step, breaker, error, started, attempt)
    raise error  # pragma: no cover - _after_failure raises on the last attempt


async def _after_failure(call: Call, step: StepInfo, breaker: Breaker, error: ProviderError,
                         started: float, attempt: int) -> None:
    """Record a failed attempt; return after the backoff if it should be retried, else raise."""
    _attempt_logged(call, step, error.kind, started, error)
    log.warning("provider %s/%s failed (%s), attempt %d", step.provider.name, step.model, error.kind, attempt)
    delay = backoff_delay(attempt, error, step) if error.retryable and attempt < max_attempts(step) else None
    if delay is None or delay >= call.deadline.remaining():
        # The call gives up on this step: that, not each attempt, is what the
        # breaker judges (gateway/breakers.py).
        await (breaker.failed() if counts_against_breaker(error) else breaker.succeeded())
        raise error
    await asyncio.sleep(delay)  # the retry goes ahead, whatever the breaker does meanwhile


def _attempt_logged(call: Call, step: StepInfo, outcome: str, started: float,
                    error: ProviderError | None = None) -> None:
    """One provider attempt, on the call's log (the Usage row: the usage detail page
    and provider health read it) and as a trace span. The error's message is the
    adapter's, which never holds a credential (providers.types.ProviderError)."""
    elapsed = time.monotonic() - started
    call.attempt_log.append({
        "provider": step.provider.name, "model": step.model, "outcome": outcome,
        "ms": int(elapsed * 1000),
        "at": datetime.fromtimestamp(time.time() - elapsed, UTC).isoformat(timespec="milliseconds"),
        **({"error": error.message[:ATTEMPT_ERROR_CHARS]} if error is not None else {}),
    })
    tracing.attempt_logged(call, step, outcome, started)


def _circuit_open(call: Call, step: StepInfo, breaker: Breaker) -> ProviderError:
    error = ProviderError("unavailable", f"circuit breaker open for {breaker.name}", provider=step.provider.name)
    _attempt_logged(call, step, "circuit_open", time.monotonic(), error)
    return error


def stream(call: Call, route: Route, base: ChatRequest) -> AsyncIterator[StreamEvent]:
    """Stream from the first step that produces content; retry and fall back only
    before anything reached the client. Ends with `done`, or raises UpstreamFailed
    if no step could start, or yields an `error` event after content was sent.
    A persona with the response cache on replays a cached answer as a stream."""
    policy = route.persona.cache if route.persona is not None else None
    if policy is None:  # the cache is off: the live stream itself, no layer around it
        return _stream_live(call, route, base)
    return _stream_cached(call, route, base, policy)


async def _stream_cached(call: Call, route: Route, base: ChatRequest,
                         policy: CachePolicy) -> AsyncIterator[StreamEvent]:
    cached = await _cached_answer(call, route, base, policy)
    if cached is not None:
        for event in response_cache.replay(cached):
            yield event
        return
    recorder = response_cache.Recorder()
    async with aclosing(_stream_live(call, route, base)) as events:
        async for event in events:
            if event.type == "done":  # kept before the client sees the end
                await response_cache.store(call, recorder.result(event, call.usage))
            recorder.add(event)
            yield event


async def _stream_live(call: Call, route: Route, base: ChatRequest) -> AsyncIterator[StreamEvent]:
    await admit(call, route, base)
    last_error: ProviderError | None = None
    _skips_logged(call)
    for step in plan_steps(_serving(call, route, _needs(base), base)):
        call.provider, call.model = step.provider.name, step.model
        request = request_for_step(base, route, step)
        try:
            async with aclosing(_stream_step(call, step, request)) as events:
                async for event in events:
                    account(call, step, request, event)
                    yield event
            return
        except ProviderError as error:  # raised only before any content
            last_error = error
            if not _should_fall_back(error, step):
                break
    raise UpstreamFailed(last_error or ProviderError("unavailable", "no provider answered"),
                         provider=call.provider, attempts=call.attempts)


async def _stream_step(call: Call, step: StepInfo, request: ChatRequest) -> AsyncIterator[StreamEvent]:
    """One step's stream with its retries before the first content event.
    Raises ProviderError if it gives up before content; after content, a
    failure is the final `error` event."""
    breaker = Breaker(step)
    if not await breaker.allow():
        raise _circuit_open(call, step, breaker)
    adapter = get_adapter(step.provider.adapter_config)
    for attempt in range(1, max_attempts(step) + 1):
        call.attempts += 1
        started = time.monotonic()
        held: list[StreamEvent] = []  # usage before content: released with the content
        sent_content, error = False, None
        async with aclosing(adapter.stream(request)) as raw:
            async for event in timed_events(raw, step, call.deadline):
                if event.type == "error" and not sent_content:
                    error = event.error
                    break
                held.append(event)
                if sent_content or event.type in CONTENT:
                    sent_content = True
                    final = event.type in ("done", "error")
                    if final:  # logged before the end reaches the client, which records the row
                        await _stream_outcome(call, step, breaker, event, started)
                    for item in held:
                        yield item
                    held.clear()
                    if final:
                        return
            else:
                if sent_content:  # ended after content without done: a cut the adapter missed
                    cut = StreamEvent("error", error=ProviderError(
                        "unavailable", "the stream ended before it finished", provider=step.provider.name))
                    await _stream_outcome(call, step, breaker, cut, started)
                    yield cut
                    return
        if error is None:
            error = ProviderError("unavailable", "the stream ended before any content", provider=step.provider.name)
        await _after_failure(call, step, breaker, error, started, attempt)


CONTENT = ("delta", "tool_call", "done")
ATTEMPT_ERROR_CHARS = 200  # of a failed attempt's message, kept on its Usage row


async def _stream_outcome(call: Call, step: StepInfo, breaker: Breaker, last: StreamEvent, started: float) -> None:
    if last.type == "done":
        _attempt_logged(call, step, "ok", started)
        await breaker.succeeded()
        return
    _attempt_logged(call, step, last.error.kind, started, last.error)
    if counts_against_breaker(last.error):
        await breaker.failed()
