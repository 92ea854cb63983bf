"""POST /v1/chat/completions in OpenAI's wire format.

Only conversion lives here: OpenAI's request schema -> providers.types, and
ChatResult / StreamEvents -> OpenAI's response and chunk objects. The work is
gateway.pipeline's, and streams leave through gateway.relay.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Field, Router
from pydantic import ConfigDict

from api import idempotency, tool_events
from api.auth import ApiKeyAuth, begin_options
from api.errors import CHAT, envelope, error_response, error_responses, sse_doc
from api.responses import json_response, served_by_headers, streaming_response
from api.wire_model import WireModel
from gateway import pipeline, tool_loop
from gateway.call import Call
from gateway.errors import GatewayError, InvalidRequest
from gateway.relay import relay
from gateway.tool_loop import ToolProgress, loop_headers
from providers.types import (
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)

router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())


# -- request schema -------------------------------------------------------------------


class ImageURL(WireModel):
    url: str = Field(..., max_length=20_000_000)
    detail: str | None = None


class ContentPartIn(WireModel):
    # Any type is read, so one this gateway cannot carry (file, input_audio...)
    # is refused by name in _content rather than as a failed union branch.
    model_config = ConfigDict(extra="ignore")

    type: str = Field(..., max_length=40)
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCallIn(WireModel):
    name: str
    arguments: str = ""


class ToolCallIn(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPartIn] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDef(WireModel):
    name: str = Field(..., min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(WireModel):
    include_usage: bool = False


class ChatCompletionIn(WireModel):
    # Unknown OpenAI parameters (penalties, ...) are accepted and ignored, as
    # OpenAI-compatible servers commonly do; route-step params can set them.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=300)
    messages: list[MessageIn] = Field(..., min_length=1)
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


# -- OpenAI -> normalized ---------------------------------------------------------------


def _content(content: str | list[ContentPartIn] | None):
    if content is None or isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type == "text":
            parts.append(TextPart(part.text or ""))
        elif part.type == "image_url" and part.image_url is not None:
            parts.append(ImagePart(part.image_url.url, part.image_url.detail))
        else:
            raise InvalidRequest(
                f"Content parts of type '{part.type}' are not supported here: send 'text' or 'image_url' "
                "(with its url) parts.", code="unsupported_content_type", param="messages")
    return parts


def _message(m: MessageIn) -> Message:
    calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []]
    role = "system" if m.role == "developer" else m.role
    return Message(role=role, content=_content(m.content), tool_calls=calls, tool_call_id=m.tool_call_id, name=m.name)


def _tool_choice(choice: str | dict | None) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    name = (choice.get("function") or {}).get("name")
    if not name:
        raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or name a function.", param="tool_choice")
    return name


def to_chat_request(body: ChatCompletionIn) -> ChatRequest:
    if body.n is not None and body.n > 1:
        raise InvalidRequest(
            f"n={body.n}: this gateway answers with one choice per request, so every choice is routed, "
            "budgeted and billed on its own; send n requests instead.", code="n_not_supported", param="n")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true.", param="top_logprobs")
    if body.logprobs and body.stream:
        raise InvalidRequest("logprobs are returned for non-streaming requests only.",
                             code="logprobs_not_supported_for_streams", param="logprobs")
    if body.tool_choice not in (None, "auto", "none", "required") and isinstance(body.tool_choice, str):
        raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or name a function.", param="tool_choice")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return ChatRequest(
        model=body.model,
        messages=[_message(m) for m in body.messages],
        tools=[Tool(t.function.name, t.function.description,
                    t.function.parameters or {"type": "object", "properties": {}}, t.function.strict)
               for t in body.tools or []],
        tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        response_format=body.response_format,
        seed=body.seed,
        user=body.user,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
    )


# -- normalized -> OpenAI -----------------------------------------------------------------


def usage_json(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_calls_json(calls: list[ToolCall]) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def completion_json(call: Call, result: ChatResult) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": result.content}
    if result.tool_calls:
        message["tool_calls"] = _tool_calls_json(result.tool_calls)
    return {
        "id": "chatcmpl-" + call.request_id[4:],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason,
                     "logprobs": result.logprobs}],
        "usage": usage_json(result.usage),
    }


class ChunkWriter:
    """Turns StreamEvents into OpenAI chat.completion.chunk SSE lines."""

    def __init__(self, call: Call, include_usage: bool) -> None:
        self.call = call
        self.include_usage = include_usage
        self.created = int(time.time())
        self.id = "chatcmpl-" + call.request_id[4:]
        self.seen_tool_indexes: set[int] = set()

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        body = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.call.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def first(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def event(self, event: StreamEvent | ToolProgress) -> bytes:
        if isinstance(event, ToolProgress):
            return tool_events.sse_comment(event)
        if event.type == "delta":
            return self._chunk({"content": event.text})
        if event.type == "tool_call":
            return self._chunk({"tool_calls": [self._tool_call_delta(event)]})
        if event.type == "done":
            return self._done(event)
        if event.type == "error":
            return self.error()
        return b""  # usage is sent once, at the end

    def _tool_call_delta(self, event: StreamEvent) -> dict:
        if event.index in self.seen_tool_indexes:
            return {"index": event.index, "function": {"arguments": event.arguments}}
        self.seen_tool_indexes.add(event.index)
        return {"index": event.index, "id": event.tool_call_id, "type": "function",
                "function": {"name": event.name, "arguments": event.arguments}}

    def _done(self, event: StreamEvent) -> bytes:
        out = self._chunk({}, event.finish_reason or "stop")
        if self.include_usage:
            body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.call.model, "choices": [], "usage": usage_json(self.call.usage)}
            out += b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self) -> bytes:
        # In-band error after the answer started; no [DONE], so clients see the cut.
        error = GatewayError(self.call.error_message or "provider failed", code=self.call.error_code or "provider_error")
        error.type = "upstream_error"
        return b"data: " + json.dumps(envelope(error, self.call.request_id)).encode() + b"\n\n"


# -- endpoints --------------------------------------------------------------------------


@router.post("/chat/completions", summary="Create a chat completion (OpenAI format)",
             response={200: dict, **error_responses(*CHAT)},
             openapi_extra=sse_doc("A chat.completion; or with `stream: true`, chat.completion.chunk events."))
async def chat_completions(request: HttpRequest, body: ChatCompletionIn):
    call: Call = request.ep_call
    call.stream = body.stream
    chat_request = to_chat_request(body)
    metadata = body.metadata or {}
    route = await pipeline.begin(call, chat_request, model=body.model,
                                 **begin_options(request, run_id=metadata.get("run_id"), step=metadata.get("step")))
    loop = await tool_loop.plan(call, route, chat_request)
    if body.stream:
        if request.headers.get(idempotency.HEADER):
            raise InvalidRequest("Idempotency-Key is supported for non-streaming requests only.",
                                 code="idempotency_not_supported_for_streams", param=idempotency.HEADER)
        events, first = await tool_loop.stream_start(call, route, chat_request, loop)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = ChunkWriter(call, include_usage)
        stream = relay(call, events, writer.event, first=first, opening=writer.first(),
                       on_failure=lambda error: writer.error())
        return streaming_response(call, stream, headers=served_by_headers(call) | loop_headers(loop))

    async def complete() -> HttpResponse:
        result = await tool_loop.answer(call, route, chat_request, loop)
        headers = served_by_headers(call) | {"X-EP-Cost-USD": f"{call.cost:.8f}"} | loop_headers(loop)
        return json_response(completion_json(call, result), call.request_id, headers=headers)

    return await idempotency.idempotent(request, complete, on_error=lambda e: error_response(request, e))
