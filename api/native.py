"""POST /api/v1/chat: the native chat endpoint, JSON or SSE.

The native request takes a persona and OpenAI-style messages and tools (one
message format to learn), plus workflow metadata. Its stream events are the
same JSON objects the websocket sends (api/websocket/consumers.py), so this module
also owns that event format: `event_json` and `error_json`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Router
from pydantic import ConfigDict

from api import openai_compat
from api.auth import ApiKeyAuth, begin_options
from api.errors import CHAT, envelope, error_responses, sse_doc
from api.openai_compat import MessageIn, ToolIn
from api.responses import json_response, served_by_headers, streaming_response
from api.wire_model import WireModel
from gateway import pipeline, tool_loop
from gateway.call import Call, Route
from gateway.errors import GatewayError
from gateway.relay import relay
from gateway.tool_loop import ToolProgress, loop_headers, progress_json
from providers.types import ChatRequest, ChatResult, StreamEvent

router = Router(tags=["Native"], auth=ApiKeyAuth())


# -- request ----------------------------------------------------------------------------


class RunMetadata(WireModel):
    """Ties the call to a workflow run; the dashboard groups cost by it."""

    model_config = ConfigDict(extra="ignore")

    run_id: str = Field("", max_length=100)
    step: str = Field("", max_length=100)


class NativeChatIn(WireModel):
    model_config = ConfigDict(extra="ignore")

    persona: str = Field(..., min_length=1, max_length=300, description="A persona slug, or provider/model.")
    messages: list[MessageIn] = Field(..., min_length=1, description="OpenAI-style chat messages.")
    tools: list[ToolIn] | None = Field(None, description="OpenAI-style function tools.")
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = Field(False, description="Answer as server-sent events (see docs/STREAMING.md).")
    metadata: RunMetadata | None = None
    cache: Literal["bypass", "refresh"] | None = Field(
        None, description="The response cache: bypass it, or refresh its answer (as the X-EP-Cache header, "
                          "which wins; the websocket has no headers per message).")


def to_chat_request(body: NativeChatIn) -> ChatRequest:
    """The native body as the pipeline's request, through the OpenAI converter
    so both endpoints read messages and tools exactly alike."""
    return openai_compat.to_chat_request(openai_compat.ChatCompletionIn(
        model=body.persona, messages=body.messages, tools=body.tools, tool_choice=body.tool_choice,
        max_tokens=body.max_tokens, temperature=body.temperature,
    ))


async def native_begin(call: Call, body: NativeChatIn, chat_request: ChatRequest, **options) -> Route:
    """pipeline.begin for a native body: its persona, and its workflow metadata."""
    call.stream = body.stream
    metadata = body.metadata
    options.setdefault("run_id", metadata.run_id if metadata else "")
    options.setdefault("step", metadata.step if metadata else "")
    options["cache_mode"] = options.get("cache_mode") or body.cache or ""
    return await pipeline.begin(call, chat_request, model=body.persona, **options)


# -- the event format (shared with the websocket) --------------------------------------------


def usage_json(call: Call) -> dict:
    usage = call.usage
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
            "cost_usd": str(call.cost)}


def served_json(call: Call) -> dict:
    served = {"request_id": call.request_id, "persona": call.persona, "provider": call.provider, "model": call.model}
    if call.cache_status:  # the persona's response cache: hit, miss, bypass, refresh or skip
        served["cache"] = call.cache_status
    return served


def error_json(request_id: str, error: GatewayError) -> dict:
    return {"type": "error", **envelope(error, request_id)}


def event_json(call: Call, event: StreamEvent | ToolProgress) -> dict:
    """One pipeline StreamEvent (or tool loop progress) as the JSON object clients receive."""
    if isinstance(event, ToolProgress):  # tool_started / tool_finished (gateway/tool_loop.py)
        return progress_json(event)
    if event.type == "delta":
        return {"type": "delta", "text": event.text}
    if event.type == "tool_call":
        return {"type": "tool_call", "index": event.index, "tool_call_id": event.tool_call_id,
                "name": event.name, "arguments": event.arguments}
    if event.type == "usage":
        return {"type": "usage", "usage": usage_json(call)}
    if event.type == "done":
        return {"type": "done", "finish_reason": event.finish_reason or "stop", **served_json(call),
                "usage": usage_json(call)}
    # An error after content was sent: the pipeline filed it on the call.
    error = GatewayError(call.error_message or "provider failed", code=call.error_code or "provider_error",
                         status=call.http_status if call.http_status >= 400 else 502)
    error.type = "upstream_error"
    return error_json(call.request_id, error)


def cancelled_error(reason: str) -> GatewayError:
    error = GatewayError(reason, code="cancelled", status=499)
    error.type = "cancelled"
    return error


# -- the endpoint --------------------------------------------------------------------------


def result_json(call: Call, result: ChatResult) -> dict:
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    return {**served_json(call), "content": result.content, "tool_calls": calls,
            "finish_reason": result.finish_reason, "usage": usage_json(call), "run_id": call.run_id}


SSE_DOC = sse_doc("JSON; or with `stream: true`, server-sent events `delta`, `tool_call`, `usage`, then one "
                  "`done` or `error`. A persona that runs its tools on the platform adds `tool_started` and "
                  "`tool_finished` events between its model calls.")


@router.post("/chat", summary="Chat with a persona (native format; JSON or SSE)",
             response={200: dict, **error_responses(*CHAT)},
             openapi_extra=SSE_DOC)
async def chat(request: HttpRequest, body: NativeChatIn):
    call: Call = request.ep_call
    chat_request = to_chat_request(body)
    metadata = body.metadata
    route = await native_begin(call, body, chat_request, **begin_options(
        request, run_id=metadata.run_id if metadata else None, step=metadata.step if metadata else None))
    loop = await tool_loop.plan(call, route, chat_request)
    if body.stream:
        events, first = await tool_loop.stream_start(call, route, chat_request, loop)
        stream = relay(call, events, lambda event: sse(event_json(call, event)), first=first,
                       on_failure=lambda error: sse(error_json(call.request_id, error)))
        return streaming_response(call, stream, headers=loop_headers(loop))
    result = await tool_loop.answer(call, route, chat_request, loop)
    return json_response(result_json(call, result), call.request_id,
                         headers=served_by_headers(call) | loop_headers(loop))


def sse(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
