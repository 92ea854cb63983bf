"""POST /v1/messages and /v1/messages/count_tokens in Anthropic's wire format.

Claude SDKs and Claude Code work unchanged with ANTHROPIC_BASE_URL pointing
here, and every call goes through the same pipeline (persona routing,
fallback, budgets, one Usage row) whichever provider answers. The request
schema and its conversion are in api/anthropic_wire.py; this module
renders answers, SSE events and errors in Anthropic's shapes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Router, Schema

from gateway import pipeline
from gateway.observability import tracing
from api.anthropic_wire import CountTokensIn, MessagesIn, estimate_input_tokens, to_chat_request
from api.auth import ApiKeyAuth
from gateway.errors import CHAT, GatewayError, error_responses, sse_doc
from gateway.limits import request_limits_check
from api.openai_compat import served_by_headers
from api.responses import json_response
from providers.types import ChatRequest, ChatResult, StreamEvent, ToolCall, Usage

router = Router(tags=["Anthropic compatible"], auth=ApiKeyAuth())

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}

# Anthropic's error `type` per HTTP status; its SDKs pick the exception class by status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# -- errors -------------------------------------------------------------------------


def owns(path: str) -> bool:
    """Whether errors on this path are rendered in Anthropic's shape."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_json(status: int, message: str, code: str, request_id: str) -> dict[str, Any]:
    # Our stable code rides in error.details.error_code, where the anthropic SDK
    # reads a machine-readable cause (APIStatusError.error_code).
    return {
        "type": "error",
        "request_id": request_id,
        "error": {"type": error_type(status), "message": message, "details": {"error_code": code}},
    }


def error_response(error: GatewayError, request_id: str) -> HttpResponse:
    body = error_json(error.status, error.message, error.code, request_id)
    # `request-id` is the header Anthropic's SDKs read into their errors.
    headers = {**error.headers, "request-id": request_id}
    return json_response(body, request_id, status=error.status, headers=headers)


# -- normalized -> Anthropic ----------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, int]:
    # Anthropic's input_tokens excludes cache reads and writes; ours includes them.
    fresh = max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def tool_input(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        value = None
    # Anthropic's tool_use.input is always an object; a model's broken JSON
    # is kept under one key rather than lost.
    return value if isinstance(value, dict) else {"arguments": call.arguments}


def message_id(call: pipeline.Call) -> str:
    return "msg_" + call.request_id[4:]


def message_json(call: pipeline.Call, result: ChatResult) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if result.content or not result.tool_calls:
        content.append({"type": "text", "text": result.content or ""})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c)} for c in result.tool_calls
    ]
    return {
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(result.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": usage_json(result.usage),
    }


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class EventWriter:
    """Turns StreamEvents into Anthropic's SSE sequence: one content block open
    at a time, text and tool_use blocks numbered in the order they start."""

    def __init__(self, call: pipeline.Call) -> None:
        self.call = call
        self.blocks = 0  # blocks started so far
        self.open: int | None = None  # index of the open block
        self.open_is_text = False
        self.tool_blocks: dict[int, int] = {}  # tool call index -> block index

    def start(self, input_tokens: int) -> bytes:
        usage = (
            usage_json(self.call.usage) if self.call.usage.input_tokens else usage_json(Usage(input_tokens))
        )
        message = {
            "id": message_id(self.call),
            "type": "message",
            "role": "assistant",
            "model": self.call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def event(self, event: StreamEvent) -> bytes:
        if event.type == "delta" and event.text:
            return self._text(event.text)
        if event.type == "tool_call":
            return self._tool(event)
        if event.type == "done":
            return self._done(event)
        if event.type == "error":
            return self.error()
        return b""  # usage: sent once, in message_delta

    def _begin(self, block: dict[str, Any], is_text: bool) -> bytes:
        out = self._close()
        self.open, self.open_is_text = self.blocks, is_text
        self.blocks += 1
        return out + sse(
            "content_block_start", {"type": "content_block_start", "index": self.open, "content_block": block}
        )

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        index, self.open = self.open, None
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _text(self, text: str) -> bytes:
        out = (
            b""
            if self.open is not None and self.open_is_text
            else self._begin({"type": "text", "text": ""}, True)
        )
        return out + self._delta(self.open, {"type": "text_delta", "text": text})

    def _tool(self, event: StreamEvent) -> bytes:
        out = b""
        if event.index not in self.tool_blocks:
            block = {
                "type": "tool_use",
                "id": event.tool_call_id or "",
                "name": event.name or "",
                "input": {},
            }
            out = self._begin(block, False)
            self.tool_blocks[event.index] = self.open
        if event.arguments:
            out += self._delta(
                self.tool_blocks[event.index], {"type": "input_json_delta", "partial_json": event.arguments}
            )
        return out

    def _done(self, event: StreamEvent) -> bytes:
        delta = {
            "stop_reason": STOP_REASONS.get(event.finish_reason or "stop", "end_turn"),
            "stop_sequence": None,
        }
        out = self._close() + sse(
            "message_delta", {"type": "message_delta", "delta": delta, "usage": usage_json(self.call.usage)}
        )
        return out + sse("message_stop", {"type": "message_stop"})

    def error(self) -> bytes:
        # In-band, after content was sent: no message_stop, so clients see the cut.
        status = self.call.http_status if self.call.http_status >= 400 else 502
        body = error_json(
            status,
            self.call.error_message or "provider failed",
            self.call.error_code or "provider_error",
            self.call.request_id,
        )
        return sse("error", body)


# -- endpoints ----------------------------------------------------------------------------


def _run_metadata(request: HttpRequest, call: pipeline.Call, body: MessagesIn) -> None:
    metadata = body.metadata
    call.run_id = request.headers.get("X-EP-Run-Id") or (metadata.run_id if metadata else None) or ""
    call.step = request.headers.get("X-EP-Step") or (metadata.step if metadata else None) or ""


async def _resolve(request: HttpRequest, model: str) -> pipeline.Route:
    call: pipeline.Call = request.ep_call
    route = pipeline.route_resolve(
        snapshot=await pipeline.current_snapshot(),
        model=model,
        key=call.key,
        persona_header=request.headers.get("X-Persona"),
    )
    call.persona = route.persona.slug if route.persona else ""
    return route


class AnthropicErrorDetails(Schema):
    error_code: str


class AnthropicErrorBody(Schema):
    type: str
    message: str
    details: AnthropicErrorDetails


class AnthropicErrorEnvelope(Schema):
    """Errors on the Anthropic routes, in Anthropic's shape (see error_json)."""

    type: Literal["error"]
    request_id: str
    error: AnthropicErrorBody


@router.post("/messages", summary="Create a message (Anthropic format)",
             response={200: dict, **error_responses(*CHAT, schema=AnthropicErrorEnvelope)},
             openapi_extra=sse_doc("A message; or with `stream: true`, Anthropic's message stream events."))
async def create_message(request: HttpRequest, body: MessagesIn):
    call: pipeline.Call = request.ep_call
    call.stream = body.stream
    _run_metadata(request, call, body)
    route = await _resolve(request, body.model)
    request_limits_check(messages=len(body.messages), max_tokens=body.max_tokens, route=route)
    chat_request = to_chat_request(body)
    tracing.annotate_request(call, chat_request, requested_model=body.model)
    if body.stream:
        return await _stream_response(call, route, chat_request)
    result = await pipeline.chat_complete(call, route, chat_request)
    headers = served_by_headers(call) | {"X-EP-Cost-USD": f"{call.cost:.8f}", "request-id": call.request_id}
    return json_response(message_json(call, result), call.request_id, headers=headers)


@router.post(
    "/messages/count_tokens",
    summary="Count a message's input tokens (Anthropic format)",
    response={200: dict, **error_responses(*CHAT, schema=AnthropicErrorEnvelope)},
)
async def count_tokens(request: HttpRequest, body: CountTokensIn):
    call: pipeline.Call = request.ep_call
    route = await _resolve(request, body.model)
    # What the first step would be sent, persona system prompt included; an
    # estimate, since providers other than Anthropic have no such endpoint.
    sent = pipeline.request_for_step(to_chat_request(body), route, route.steps[0])
    return json_response(
        {"input_tokens": estimate_input_tokens(sent)},
        call.request_id,
        headers={"request-id": call.request_id},
    )


async def _stream_response(
    call: pipeline.Call, route: pipeline.Route, chat_request: ChatRequest
) -> HttpResponse:
    events = pipeline.chat_stream(call, route, chat_request)
    # Wait for the first event before answering: if every step fails before
    # any token, the client gets a proper HTTP error instead of a 200 stream.
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    writer = EventWriter(call)
    estimate = estimate_input_tokens(chat_request)

    # A route that fails after a usage-only start ends in an in-band error event.
    body = pipeline.relay(call, events, first, writer.event, opening=writer.start(estimate),
                          on_failure=lambda error: writer.error())
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Request-ID"] = response["request-id"] = call.request_id
    for name, value in served_by_headers(call).items():
        response[name] = value
    return response
