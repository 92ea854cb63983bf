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

from django.http import HttpRequest
from ninja import Router, Schema

from api import tool_events
from api.anthropic_wire import (
    CountTokensIn,
    MessagesIn,
    error_json,
    estimate_input_tokens,
    to_chat_request,
)
from api.auth import ApiKeyAuth, begin_options
from api.errors import CHAT, error_responses, sse_doc
from api.responses import json_response, served_by_headers, streaming_response
from gateway import pipeline, tool_loop
from gateway.call import Call
from gateway.relay import relay
from gateway.routes import request_for_step
from gateway.tool_loop import ToolProgress, loop_headers
from providers.types import ChatResult, StreamEvent, ToolCall, Usage

router = Router(tags=["Anthropic compatible"], auth=ApiKeyAuth())

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}

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


def message_id(call: Call) -> str:
    return "msg_" + call.request_id[4:]


def message_json(call: Call, result: ChatResult) -> dict[str, Any]:
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

    def __init__(self, call: Call) -> None:
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

    def event(self, event: StreamEvent | ToolProgress) -> bytes:
        if isinstance(event, ToolProgress):
            return tool_events.sse_comment(event)
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
    call: Call = request.ep_call
    call.stream = body.stream
    chat_request = to_chat_request(body)
    metadata = body.metadata
    route = await pipeline.begin(call, chat_request, model=body.model, **begin_options(
        request, run_id=metadata.run_id if metadata else None, step=metadata.step if metadata else None))
    loop = await tool_loop.plan(call, route, chat_request)
    if body.stream:
        events, first = await tool_loop.stream_start(call, route, chat_request, loop)
        writer = EventWriter(call)
        stream = relay(call, events, writer.event, first=first, opening=writer.start(estimate_input_tokens(chat_request)),
                       on_failure=lambda error: writer.error())
        return streaming_response(call, stream, headers=served_by_headers(call) | {"request-id": call.request_id}
                                  | loop_headers(loop))
    result = await tool_loop.answer(call, route, chat_request, loop)
    headers = (served_by_headers(call) | {"X-EP-Cost-USD": f"{call.cost:.8f}", "request-id": call.request_id}
               | loop_headers(loop))
    return json_response(message_json(call, result), call.request_id, headers=headers)


@router.post(
    "/messages/count_tokens",
    summary="Count a message's input tokens (Anthropic format)",
    response={200: dict, **error_responses(*CHAT, schema=AnthropicErrorEnvelope)},
)
async def count_tokens(request: HttpRequest, body: CountTokensIn):
    call: Call = request.ep_call
    chat_request = to_chat_request(body)
    route = await pipeline.begin(call, chat_request, model=body.model, **begin_options(request))
    # What the first step would be sent, persona system prompt included; an
    # estimate, since providers other than Anthropic have no such endpoint.
    sent = request_for_step(chat_request, route, route.steps[0])
    return json_response(
        {"input_tokens": estimate_input_tokens(sent)},
        call.request_id,
        headers={"request-id": call.request_id},
    )
