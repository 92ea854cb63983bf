"""One request: authenticate -> resolve route -> (reserve budget) -> call adapter
with fallback -> settle -> record exactly one Usage row.

The wire formats (OpenAI, native, websocket) live elsewhere and only convert
to and from the normalized types in providers/types.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from django.conf import settings

from budgets import pricing
from budgets.ratelimit import Admission, rate_limit_admit
from gateway.observability import tracing
from gateway.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    GatewayError,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    UpstreamFailed,
)
from budgets.snapshot import BudgetInfo
from accounts.snapshot import KeyInfo
from personas.snapshot import PersonaInfo, StepInfo
from gateway.config import Snapshot, config_cache
from accounts.models import hash_key
from gateway.recording import account, estimate_tokens, settle, usage_event, usage_record  # noqa: F401 (re-exported)
from gateway.resilience import (
    Breaker,
    Deadline,
    backoff_delay,
    counts_against_breaker,
    max_attempts,
    plan_steps,
    timed_events,
)
from providers.adapters import get_adapter
from providers.types import ChatRequest, ChatResult, Message, ProviderError, StreamEvent, Usage

log = logging.getLogger("gateway.pipeline")

PERSONA_PREFIX = "persona/"
# Request fields a route step's params may override; other step params go to
# ChatRequest.extra for the adapter (e.g. claude_agent's allowed_tools).
OVERRIDABLE = ("temperature", "top_p", "max_tokens", "stop", "seed", "response_format", "parallel_tool_calls")


def new_request_id() -> str:
    # An identifier, not a secret: 128 random bits without uuid4's os.urandom
    # syscall and UUID object (3% of a request's CPU in the profile).
    return f"req_{random.getrandbits(128):032x}"


@dataclass(slots=True)
class Call:
    """One request through the gateway; it becomes exactly one Usage row."""

    request_id: str
    endpoint: str
    key: KeyInfo | None = None
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    persona: str = ""
    provider: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    status: str = "ok"
    http_status: int = 200
    error_code: str = ""
    error_message: str = ""
    ttft_ms: int | None = None
    attempts: int = 0
    run_id: str = ""
    step: str = ""
    recorded: bool = False
    admitted: bool = False
    budgets: list[BudgetInfo] = field(default_factory=list)
    held: list = field(default_factory=list)  # budgets.ledger.Held
    admission: Admission | None = None
    # Headers every response to this request carries (rate limits).
    response_headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # the caller's own deadline (X-EP-Timeout), seconds
    deadline: Deadline | None = None
    attempt_log: list[dict] = field(default_factory=list)
    # Observability (gateway/observability/tracing.py): the request span, and its trace id for the Usage row.
    span: object = None
    trace_id: str = ""

    def deadline_seconds(self) -> float:
        limit = settings.EP_DEFAULT_DEADLINE_SECONDS
        return min(self.timeout, limit) if self.timeout else limit

    def log_attempt(self, step: StepInfo, outcome: str, started: float) -> None:
        self.attempt_log.append({
            "provider": step.provider.name, "model": step.model, "outcome": outcome,
            "ms": int((time.monotonic() - started) * 1000),
        })
        tracing.attempt_logged(self, step, outcome, started)  # the attempt's span

    def fail(self, error: GatewayError) -> None:
        self.status = error.usage_status
        self.http_status = error.status
        self.error_code = error.code
        self.error_message = error.message[:300]

    def mark_cancelled(self, code: str = "client_disconnected") -> None:
        """The client stopped the request; the row keeps the tokens counted so far."""
        if self.status == "ok":
            self.status, self.http_status, self.error_code = "cancelled", 499, code

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = int((time.perf_counter() - self.started) * 1000)


@dataclass(frozen=True, slots=True)
class Route:
    label: str  # the persona slug, or provider/model for a direct call
    persona: PersonaInfo | None
    steps: tuple[StepInfo, ...]
    max_output_tokens: int | None = None  # the tighter of the persona's and the key's caps


# -- authenticate ------------------------------------------------------------------


async def authenticate(raw_key: str | None) -> KeyInfo:
    # One message for every failure: a caller learns nothing about which keys exist.
    if not raw_key:
        raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer <key>'.")
    info = await config_cache.key(hash_key(raw_key))
    if info is None or info.revoked or (info.expires_at and info.expires_at.timestamp() <= time.time()):
        raise AuthenticationFailed("Invalid API key, or the key was revoked or has expired.")
    return info


# -- resolve -----------------------------------------------------------------------


def route_resolve(*, snapshot: Snapshot, model: str, key: KeyInfo, persona_header: str | None = None) -> Route:
    name = (persona_header or model or "").strip()
    slug = name.removeprefix(PERSONA_PREFIX)
    persona = snapshot.personas.get(slug)
    if persona is not None:
        if not persona.steps:
            raise NotFound(f"Persona '{slug}' has no route: add a provider and model to it.", code="route_empty")
        caps = [c for c in (persona.max_output_tokens, key.max_output_tokens) if c]
        return Route(slug, persona, persona.steps, min(caps) if caps else None)
    if "/" in name and not name.startswith(PERSONA_PREFIX):
        return _direct_route(snapshot, name, key)
    known = ", ".join(sorted(snapshot.personas)) or "none"
    raise NotFound(
        f"Unknown persona '{slug}'. Known personas: {known}.", code="model_not_found", param="model"
    )


def _direct_route(snapshot: Snapshot, name: str, key: KeyInfo) -> Route:
    provider_name, model = name.split("/", 1)
    provider = snapshot.providers.get(provider_name)
    if provider is None or not model:
        raise NotFound(f"Unknown persona or provider/model '{name}'.", code="model_not_found", param="model")
    if not key.has_scope("direct"):
        raise PermissionDenied(
            f"This API key may call personas only, not '{name}' directly (it needs the 'direct' scope).",
            code="direct_model_not_allowed",
        )
    step = StepInfo(0, provider, model, {}, 1, False)
    return Route(name, None, (step,), key.max_output_tokens)


def request_for_step(base: ChatRequest, route: Route, step: StepInfo) -> ChatRequest:
    """The caller's request as this step sends it: persona prompt, defaults, overrides, caps."""
    persona = route.persona
    request = replace(base, model=step.model, messages=list(base.messages), extra=dict(base.extra))
    if persona is not None:
        if persona.system_prompt:
            request.messages.insert(0, Message(role="system", content=persona.system_prompt))
        for name, value in persona.default_params.items():
            if name in OVERRIDABLE and getattr(request, name) in (None, []):
                setattr(request, name, value)
    for name, value in step.params.items():
        if name in OVERRIDABLE:
            setattr(request, name, value)
        else:
            request.extra[name] = value
    # A caller asking above the cap was refused already (gateway/limits.py); this
    # clamps what the operator's defaults and step params ask for.
    cap = route.max_output_tokens
    if cap:
        request.max_tokens = min(request.max_tokens or cap, cap)
    return request


# -- call with fallback ------------------------------------------------------------------


def _should_fall_back(error: ProviderError, step: StepInfo) -> bool:
    # A bad request is the caller's: another provider would hide it, unless
    # the operator marked the step for it (e.g. a larger-context fallback).
    return error.retryable or step.fallback_on_client_error


def _usable_steps(route: Route) -> list[StepInfo]:
    """Enabled steps; raises when the route has none."""
    steps = [s for s in route.steps if s.provider.enabled]
    if not steps:
        raise UpstreamFailed(
            ProviderError("unavailable", "every provider on this route is disabled"),
            provider=route.label,
            attempts=0,
        )
    return steps


# -- admit: rate limits, then budget reservation ---------------------------------------


def _input_estimate(request: ChatRequest) -> int:
    # ~3 characters a token: generous on purpose, the reservation is a ceiling.
    text = "".join(m.text() for m in request.messages) + "".join(str(t.parameters) for t in request.tools)
    return len(text) // 3 + 8 * len(request.messages)


def _max_output(step: StepInfo, request: ChatRequest) -> int:
    info = step.provider.models.get(step.model)
    return request.max_tokens or (info and info.max_output_tokens) or settings.EP_DEFAULT_MAX_OUTPUT_TOKENS


def worst_case(route: Route, base: ChatRequest) -> Decimal:
    """The most this call can cost on any step of its route."""
    costs = []
    for step in _usable_steps(route):
        request = request_for_step(base, route, step)
        info = step.provider.models.get(step.model)
        costs.append(pricing.worst_case_cost(kind=step.provider.kind, model=step.model, info=info,
                                              input_tokens=_input_estimate(request),
                                              max_output=_max_output(step, request)))
    return max(costs)


async def admit(call: Call, route: Route, base: ChatRequest) -> None:
    """Rate limits, then reserve the worst case against every hard budget.
    Refuses (raises) before any provider is called."""
    if call.admitted:
        return
    call.admitted = True
    call.deadline = Deadline.after(call.deadline_seconds())
    call.persona = call.persona or (route.persona.slug if route.persona else "")
    snapshot = await config_cache.snapshot()
    call.admission = await rate_limit_admit(call.key, snapshot.rate_limits_for(call.key))
    call.response_headers.update(call.admission.headers)
    call.budgets = snapshot.budgets_for(call.key, call.persona)
    if not any(b.hard for b in call.budgets):
        return
    if base.max_tokens is None:
        # The reservation assumes this many output tokens: make it a real bound.
        base.max_tokens = min(_max_output(s, request_for_step(base, route, s)) for s in _usable_steps(route))
    await _reserve(call, worst_case(route, base))


async def _reserve(call: Call, amount: Decimal) -> None:
    from budgets.ledger import BudgetRefusal, BudgetStoreDown, budget_reserve_async

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


async def chat_complete(call: Call, route: Route, base: ChatRequest) -> ChatResult:
    """The first step (in route order) that answers, each with its retries."""
    await admit(call, route, base)
    last_error: ProviderError | None = None
    for step in plan_steps(_usable_steps(route)):
        call.provider, call.model = step.provider.name, step.model
        try:
            result = await _complete_step(call, route, step, base)
        except ProviderError as error:
            last_error = error
            if not _should_fall_back(error, step) or call.deadline.remaining() <= 0:
                break
            continue
        call.mark_first_token()
        settle(call, step, result.usage)
        return result
    raise UpstreamFailed(last_error, provider=call.provider, attempts=call.attempts)


async def _complete_step(call: Call, route: Route, step: StepInfo, base: ChatRequest) -> ChatResult:
    """One step with its retries; raises the last ProviderError when it gives up."""
    breaker = Breaker(step)
    if not await breaker.allow():
        raise _circuit_open(call, step, breaker)
    adapter = get_adapter(step.provider.adapter_config)
    request = request_for_step(base, route, step)
    for attempt in range(1, max_attempts(step) + 1):
        call.attempts += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, call.deadline.remaining())):
                result = await adapter.chat(request)
        except TimeoutError:
            error = ProviderError("timeout", "the request's deadline passed", provider=step.provider.name)
        except ProviderError as provider_error:
            error = provider_error
        else:
            call.log_attempt(step, "ok", started)
            await breaker.succeeded()
            return result
        await _after_failure(call, step, breaker, error, started, attempt)
    raise error  # pragma: no cover - _after_failure raises on the last attempt


async def _after_failure(call: Call, step: StepInfo, breaker: Breaker, error: ProviderError,
                         started: float, attempt: int) -> None:
    """Record a failed attempt; return after the backoff if it should be retried, else raise."""
    call.log_attempt(step, error.kind, started)
    log.warning("provider %s/%s failed (%s), attempt %d", step.provider.name, step.model, error.kind, attempt)
    state = await breaker.failed() if counts_against_breaker(error) else await breaker.succeeded()
    if not error.retryable or attempt >= max_attempts(step) or state == "open":
        raise error
    delay = backoff_delay(attempt, error, step)
    if delay is None or delay >= call.deadline.remaining():
        raise error
    await asyncio.sleep(delay)


def _circuit_open(call: Call, step: StepInfo, breaker: Breaker) -> ProviderError:
    call.log_attempt(step, "circuit_open", time.monotonic())
    return ProviderError("unavailable", f"circuit breaker open for {breaker.name}", provider=step.provider.name)


async def chat_stream(call: Call, route: Route, base: ChatRequest) -> AsyncIterator[StreamEvent]:
    """Stream from the first step that produces content; retry and fall back only
    before anything reached the client. Ends with `done`, or raises UpstreamFailed
    if no step could start, or yields an `error` event after content was sent."""
    await admit(call, route, base)
    last_error: ProviderError | None = None
    for step in plan_steps(_usable_steps(route)):
        call.provider, call.model = step.provider.name, step.model
        request = request_for_step(base, route, step)
        try:
            async with _closing(_stream_step(call, step, request)) as events:
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
        async with _closing(adapter.stream(request)) as raw:
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


async def _stream_outcome(call: Call, step: StepInfo, breaker: Breaker, last: StreamEvent, started: float) -> None:
    if last.type == "done":
        call.log_attempt(step, "ok", started)
        await breaker.succeeded()
        return
    call.log_attempt(step, last.error.kind, started)
    if counts_against_breaker(last.error):
        await breaker.failed()


class _closing:
    """async-with for an async generator: closes it (and so the upstream call)."""

    def __init__(self, agen) -> None:
        self.agen = agen

    async def __aenter__(self):
        return self.agen

    async def __aexit__(self, *exc) -> None:
        await self.agen.aclose()


async def relay(call: Call, events: AsyncIterator[StreamEvent], first: StreamEvent | None,
                render: Callable[[StreamEvent], Any], *, opening: Any = None,
                on_failure: Callable[[GatewayError], Any] | None = None) -> AsyncIterator[Any]:
    """A stream as a client receives it, in any wire format (`render`).

    However it ends (done, a provider error, the client gone, a route that fails
    after a usage-only start), the upstream call is closed and the request's one
    Usage row is written with the tokens counted so far.
    """
    try:
        if opening is not None:
            yield opening
        event = first
        while event is not None:
            if event.type in ("done", "error"):
                # The row exists before the client sees the end of the stream.
                await usage_record(call)
            yield render(event)
            event = await anext(events, None)
    except GatewayError as error:
        if on_failure is None:
            raise
        call.fail(error)  # the 200 is already sent: end in-band
        await usage_record(call)
        yield on_failure(error)
    except BaseException:  # the client went away (cancelled) or the loop is stopping
        call.mark_cancelled()
        raise
    finally:
        await events.aclose()
        await usage_record(call)


async def current_snapshot() -> Snapshot:
    return await config_cache.snapshot()
