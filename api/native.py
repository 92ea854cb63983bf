"""POST /api/v1/chat: the native chat endpoint, JSON or SSE.

The native request takes a persona and OpenAI-style messages and tools (one
message format to learn), plus workflow metadata. Its stream events are the
same JSON objects the websocket sends (api/websocket/consumers.py), so this module
also owns that event format: `event_json` and `error_json`.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Router, Schema
from pydantic import ConfigDict

from api import openai_compat
from gateway import pipeline
from gateway.observability import tracing
from api.auth import ApiKeyAuth
from gateway.errors import CHAT, GatewayError, envelope, error_responses
from gateway.limits import request_limits_check
from api.openai_compat import MessageIn, ToolIn
from api.responses import json_response
from providers.types import ChatRequest, ChatResult, StreamEvent

router = Router(tags=["Native"], auth=ApiKeyAuth())
TERMINAL = ("done", "error")


# -- request ----------------------------------------------------------------------------


class RunMetadata(Schema):
    """Ties the call to a workflow run; the dashboard groups cost by it."""

    model_config = ConfigDict(extra="ignore")

    run_id: str = Field("", max_length=100)
    step: str = Field("", max_length=100)


class NativeChatIn(Schema):
    model_config = ConfigDict(extra="ignore")

    persona: str = Field(..., min_length=1, max_length=300, description="A persona slug, or provider/model.")
    messages: list[MessageIn] = Field(..., min_length=1, description="OpenAI-style chat messages.")
    tools: list[ToolIn] | None = Field(None, description="OpenAI-style function tools.")
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = Field(False, description="Answer as server-sent events (see docs/STREAMING.md).")
    metadata: RunMetadata | None = None


def to_chat_request(body: NativeChatIn) -> ChatRequest:
    """The native body as the pipeline's request, through the OpenAI converter
    so both endpoints read messages and tools exactly alike."""
    return openai_compat.to_chat_request(openai_compat.ChatCompletionIn(
        model=body.persona, messages=body.messages, tools=body.tools, tool_choice=body.tool_choice,
        max_tokens=body.max_tokens, temperature=body.temperature,
    ))


def call_begin(call: pipeline.Call, body: NativeChatIn, snapshot) -> pipeline.Route:
    """Fill the call from the body and resolve its route (raises GatewayError)."""
    call.stream = body.stream
    if body.metadata is not None:
        call.run_id, call.step = body.metadata.run_id, body.metadata.step
    route = pipeline.route_resolve(snapshot=snapshot, model=body.persona, key=call.key)
    call.persona = route.persona.slug if route.persona else ""
    request_limits_check(messages=len(body.messages), max_tokens=body.max_tokens, route=route)
    return route


# -- the event format (shared with the websocket) --------------------------------------------


def usage_json(call: pipeline.Call) -> dict:
    usage = call.usage
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
            "cost_usd": str(call.cost)}


def served_json(call: pipeline.Call) -> dict:
    return {"request_id": call.request_id, "persona": call.persona, "provider": call.provider, "model": call.model}


def error_json(request_id: str, error: GatewayError) -> dict:
    return {"type": "error", **envelope(error, request_id)}


def event_json(call: pipeline.Call, event: StreamEvent) -> dict:
    """One pipeline StreamEvent as the JSON object clients receive."""
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


def result_json(call: pipeline.Call, result: ChatResult) -> dict:
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    return {**served_json(call), "content": result.content, "tool_calls": calls,
            "finish_reason": result.finish_reason, "usage": usage_json(call)}


SSE_DOC = {"responses": {200: {"description": "JSON; or with `stream: true`, server-sent events "
                                              "`delta`, `tool_call`, `usage`, then one `done` or `error`.",
                               "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}


@router.post("/chat", summary="Chat with a persona (native format; JSON or SSE)",
             response={200: dict, **error_responses(*CHAT)},
             openapi_extra=SSE_DOC)
async def chat(request: HttpRequest, body: NativeChatIn):
    call: pipeline.Call = request.ep_call
    route = call_begin(call, body, await pipeline.current_snapshot())
    chat_request = to_chat_request(body)
    tracing.annotate_request(call, chat_request, requested_model=body.persona)
    if body.stream:
        return await _sse_response(call, route, chat_request)
    result = await pipeline.chat_complete(call, route, chat_request)
    return json_response(result_json(call, result), call.request_id)


def sse(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _sse_response(call: pipeline.Call, route: pipeline.Route, chat_request: ChatRequest) -> HttpResponse:
    events = pipeline.chat_stream(call, route, chat_request)
    # The first event decides the answer: a route that cannot start at all is
    # a proper HTTP error (raised here, enveloped by the API), not a 200 stream.
    first = await anext(events, None)

    async def body():
        terminal = None
        try:
            event = first
            while event is not None:
                if event.type in TERMINAL:
                    terminal = event_json(call, event)
                    break
                yield sse(event_json(call, event))
                event = await anext(events, None)
        except BaseException:  # the client went away (cancelled) or the loop is stopping
            call.mark_cancelled()
            raise
        finally:
            await events.aclose()
            await pipeline.usage_record(call)
        # After the row is written: a client that saw `done` finds its Usage row.
        yield sse(terminal or error_json(call.request_id, GatewayError("The stream ended early.", code="stream_ended")))

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold events back
    response["X-Request-ID"] = call.request_id
    return response
