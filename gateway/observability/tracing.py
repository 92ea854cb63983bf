"""OpenTelemetry traces: one span per request, a child span per provider attempt.

Attributes follow the GenAI semantic conventions (`gen_ai.*`) plus ours
(`ep.persona`, `ep.request_id`, `ep.cost_usd`). The exporter is chosen by
EP_TRACING (or OTEL_TRACES_EXPORTER): off (default), console, otlp.

Lifecycle: the LedgerMiddleware opens the request span (`request_start`, a child
of the caller's `traceparent` if it sent one) and the request's Call adopts it
the first time it is asked for (`span_of`); `request_end` in usage_record closes
it with what the call cost, since usage_record runs exactly once per call, also
for streams that outlive the middleware. Websocket calls, which pass no
middleware, get their span on first use. Spans are never made "current": an
attempt span may open in one `__anext__` of a stream and close in another,
where a contextvar token could not be detached; parents are passed explicitly.
Attempt spans come from the pipeline, once per provider attempt (see `attempt_logged`).

Off, the tracer is the no-op one: spans cost nothing and the trace id is "".
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.config import config_cache
from gateway.observability.logs import redact
from providers.types import ChatResult, ProviderError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

    from gateway.call import Call
    from personas.snapshot import StepInfo
    from providers.types import ChatRequest

# Provider kind -> gen_ai.system (the semantic conventions' well-known values).
GEN_AI_SYSTEMS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
                  "claude_agent": "anthropic", "demo": "demo", "azure_openai": "azure.ai.openai",
                  "bedrock": "aws.bedrock", "vertex_gemini": "gcp.vertex_ai", "vertex_anthropic": "gcp.vertex_ai"}

_tracer: trace.Tracer | None = None
_provider = None  # the SDK TracerProvider, when tracing is on
# The span the middleware opened for the request this task is serving.
_request_span: contextvars.ContextVar[Span | None] = contextvars.ContextVar("ep_request_span", default=None)
_propagator = TraceContextTextMapPropagator()


def install(processor: SpanProcessor | None) -> None:
    """Send spans to `processor` (None: tracing off). Tests install an in-memory
    exporter here; `_configured_tracer` installs the one EP_TRACING names."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    if processor is None:
        _tracer, _provider = trace.NoOpTracer(), None
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still apply on top of this default.
    resource = Resource.create({"service.name": "execution-platform"})
    _provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER, else parent/always on
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("gateway")


def processor_for(exporter: str) -> SpanProcessor | None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if exporter in ("", "off", "none", "0", "false"):
        return None
    if exporter == "console":  # one JSON object a line, like the logs beside it
        return SimpleSpanProcessor(ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n"))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Endpoint from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT; unset, a collector on localhost.
        return BatchSpanProcessor(OTLPSpanExporter())
    raise ValueError(f"EP_TRACING={exporter!r}: use off, console or otlp")


def tracer() -> trace.Tracer:
    if _tracer is None:
        install(processor_for(settings.EP_TRACING))
    return _tracer


def enabled() -> bool:
    return not isinstance(tracer(), trace.NoOpTracer)


def trace_id_hex(span: Span | None) -> str:
    context = span.get_span_context() if span is not None else None
    return format(context.trace_id, "032x") if context is not None and context.is_valid else ""


def traceparent(span: Span | None) -> str:
    context = span.get_span_context() if span is not None else None
    if context is None or not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def response_headers(span: Span | None) -> dict[str, str]:
    """X-Trace-Id (to search the tracing backend) and traceparent (W3C) for a response."""
    trace_id = trace_id_hex(span)
    return {"X-Trace-Id": trace_id, "traceparent": traceparent(span)} if trace_id else {}


# -- the request span ----------------------------------------------------------------------


def request_start(*, method: str, path: str, request_id: str, headers: Mapping[str, str]) -> Span:
    """Open the span of one HTTP request; the request's Call adopts it later."""
    parent = _propagator.extract(carrier={k.lower(): v for k, v in headers.items()}) if enabled() else None
    span = tracer().start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER, attributes={
        "http.request.method": method, "url.path": path, "ep.request_id": request_id})
    _request_span.set(span)
    return span


def span_of(call: Call) -> Span:
    """The call's request span: the middleware's, or one opened now (websocket calls)."""
    if call.span is None:
        span = _request_span.get()
        if span is None:
            # Started `call.started` ago, on the clock spans use.
            started_ns = time.time_ns() - int((time.perf_counter() - call.started) * 1e9)
            span = tracer().start_span(f"chat {call.endpoint}", kind=SpanKind.SERVER, start_time=started_ns)
        else:
            _request_span.set(None)  # one call per request span
        call.span = span
        call.trace_id = trace_id_hex(span)
        span.set_attributes({"ep.request_id": call.request_id, "gen_ai.operation.name": "chat",
                             "ep.endpoint": call.endpoint})
    return call.span


def annotate_request(call: Call, request: ChatRequest | None, *, requested_model: str = "",
                     operation: str = "chat") -> None:
    """What the client asked for, on the request span (call before the pipeline runs).
    `request` is the chat request; None for operations without chat parameters."""
    span = span_of(call)
    if not span.is_recording():
        return
    params = {} if request is None else _drop_none({"gen_ai.request.max_tokens": request.max_tokens,
                                                     "gen_ai.request.temperature": request.temperature,
                                                     "gen_ai.request.top_p": request.top_p})
    span.set_attributes({"gen_ai.request.model": requested_model or (request.model if request else ""),
                         "gen_ai.operation.name": operation} | params)
    _request_params[call.request_id] = params  # the attempt spans carry them too


async def request_end(call: Call) -> None:
    """Close the call's request span with its outcome (usage_record calls this)."""
    span = span_of(call)
    _end_answered(call)
    annotated = _request_params.pop(call.request_id, None) is not None
    if not span.is_recording():
        return
    if call.persona:
        span.update_name(f"chat {call.persona}")
    attributes: dict[str, Any] = {
        "ep.persona": call.persona,
        "ep.provider": call.provider,
        "ep.status": call.status,
        "ep.attempts": call.attempts,
        "ep.cost_usd": float(call.cost),
        "ep.stream": call.stream,
        "http.response.status_code": call.http_status,
        "gen_ai.usage.input_tokens": call.usage.input_tokens,
        "gen_ai.usage.output_tokens": call.usage.output_tokens,
    }
    if not annotated and (call.persona or call.model):  # an endpoint that did not call annotate_request
        attributes["gen_ai.request.model"] = call.persona or call.model
    if call.provider:
        attributes["gen_ai.system"] = await _system_of(call.provider)
        attributes["gen_ai.response.model"] = call.model
    if call.ttft_ms is not None:
        attributes["ep.ttft_ms"] = call.ttft_ms
    if call.status != "ok":
        attributes["error.type"] = call.error_code or call.status
    span.set_attributes(attributes)
    if call.status == "error":
        span.set_status(Status(StatusCode.ERROR, redact(call.error_message)[:200]))
    span.end()


def http_end(span: Span, status: int) -> None:
    """Close a request span no Call adopted (refused before authentication, /health, ...)."""
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status))
        span.end()
    if _request_span.get() is span:
        _request_span.set(None)


async def _system_of(provider_name: str) -> str:
    try:
        provider = (await config_cache.snapshot()).providers.get(provider_name)
    except Exception:  # noqa: BLE001 - the config store is down: the span still ends, less precise
        provider = None
    kind = provider.kind if provider is not None else provider_name
    return GEN_AI_SYSTEMS.get(kind, kind)


# -- attempt spans -------------------------------------------------------------------------
#
# Made by the pipeline once per provider attempt
# (answer, failure, or a step skipped by its open breaker): the span is opened
# retroactively at the attempt's start and ended now. A successful attempt's span
# stays open until request_end, where the call's usage and model are known (a
# non-streamed answer is settled after it is logged).

_answered: dict[str, tuple[Span, int]] = {}  # request id -> (ok attempt span, its end time)
_request_params: dict[str, dict[str, Any]] = {}  # request id -> gen_ai.request.* the client set


def attempt_logged(call: Call, step: StepInfo, outcome: str, started: float) -> None:
    """One provider attempt of `call`: `outcome` is "ok" or the ProviderError's kind
    ("circuit_open" for a skipped step); `started` is its time.monotonic() start."""
    if not enabled():
        return
    now_ns = time.time_ns()
    kind = step.provider.kind
    system = GEN_AI_SYSTEMS.get(kind, kind)
    span = tracer().start_span(
        f"chat {step.model}",
        context=trace.set_span_in_context(span_of(call)),
        kind=SpanKind.CLIENT,
        start_time=now_ns - int(max(0.0, time.monotonic() - started) * 1e9),
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": step.model,
            "ep.provider": step.provider.name,
            "ep.attempt": call.attempts,
            "ep.route_position": step.position,
            "ep.request_id": call.request_id,
            "ep.outcome": outcome,
        } | _request_params.get(call.request_id, {}),
    )
    if outcome == "ok":
        _answered[call.request_id] = (span, now_ns)
        return
    annotate_attempt(span, outcome)
    span.end(end_time=now_ns)


def _end_answered(call: Call) -> None:
    entry = _answered.pop(call.request_id, None)
    if entry is None:
        return
    span, end_ns = entry
    span.set_attributes({"gen_ai.response.model": call.model,
                         "gen_ai.usage.input_tokens": call.usage.input_tokens,
                         "gen_ai.usage.output_tokens": call.usage.output_tokens})
    if call.status != "ok":  # content came, then the stream failed or was cancelled
        annotate_attempt(span, call.error_code or call.status)
    span.end(end_time=end_ns)


def annotate_attempt(span: Span, result_or_error: Any) -> None:
    """Record an attempt's outcome on its span: a ChatResult, a ProviderError,
    any other exception, or an error kind as the attempt log names it."""
    if not span.is_recording():
        return
    outcome = result_or_error
    if isinstance(outcome, ChatResult):
        span.set_attributes(_drop_none({
            "gen_ai.response.model": outcome.model or None,
            "gen_ai.response.id": outcome.provider_request_id,
            "gen_ai.response.finish_reasons": [outcome.finish_reason] if outcome.finish_reason else None,
            "gen_ai.usage.input_tokens": outcome.usage.input_tokens,
            "gen_ai.usage.output_tokens": outcome.usage.output_tokens,
        }))
    elif isinstance(outcome, ProviderError):
        span.set_attributes({"error.type": outcome.kind, "ep.retryable": outcome.retryable})
        span.set_status(Status(StatusCode.ERROR, redact(str(outcome))[:200]))
    elif isinstance(outcome, BaseException):
        span.set_attribute("error.type", type(outcome).__qualname__)
        span.set_status(Status(StatusCode.ERROR, redact(str(outcome))[:200]))
    elif outcome:
        span.set_attribute("error.type", str(outcome))
        span.set_status(Status(StatusCode.ERROR, str(outcome)))


def _drop_none(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
