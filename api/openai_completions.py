"""POST /v1/completions: OpenAI's legacy text completions, on the chat pipeline.

llama-index's `OpenAILike` and older clients call it by default. The prompt
becomes one user message to the routed persona (so its system prompt, fallback,
budgets and one Usage row all apply), and the answer comes back as
`text_completion`, streamed too. What a chat model cannot do for a raw prompt
(echo, suffix, best_of, logprobs on streams, several prompts or choices) is
refused by name rather than ignored.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, Router
from pydantic import ConfigDict

from api import idempotency
from api.auth import ApiKeyAuth, begin_options
from api.errors import CHAT, envelope, error_response, error_responses, sse_doc
from api.openai_compat import StreamOptions, usage_json
from api.responses import json_response, served_by_headers, streaming_response
from api.wire_model import WireModel
from gateway import pipeline
from gateway.call import Call
from gateway.errors import GatewayError, InvalidRequest
from gateway.relay import relay, stream_start
from providers.types import ChatRequest, ChatResult, Message, StreamEvent

router = Router(tags=["OpenAI compatible"], auth=ApiKeyAuth())


class CompletionIn(WireModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=300)
    prompt: str | list[str] = Field(..., description="The prompt; an array of one string is accepted.")
    max_tokens: int | None = Field(16, ge=1, description="OpenAI's default for this endpoint is 16.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


def _refuse_unsupported(body: CompletionIn) -> None:
    unsupported = {
        "n": body.n is not None and body.n > 1, "best_of": body.best_of is not None and body.best_of > 1,
        "echo": body.echo, "suffix": body.suffix is not None, "logprobs": body.logprobs is not None and body.stream,
    }
    for name, asked in unsupported.items():
        if asked:
            raise InvalidRequest(f"'{name}' is not supported on /v1/completions here: the prompt is answered by "
                                 "the routed chat model, one choice per request.", code=f"{name}_not_supported",
                                 param=name)


def prompt_of(prompt: str | list[str]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise InvalidRequest(f"prompt has {len(prompt)} strings; send one prompt per request.",
                             code="multiple_prompts_not_supported", param="prompt")
    return prompt[0]


def to_chat_request(body: CompletionIn) -> ChatRequest:
    _refuse_unsupported(body)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return ChatRequest(model=body.model, messages=[Message("user", prompt_of(body.prompt))],
                       temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_tokens, stop=stop,
                       seed=body.seed, user=body.user, logprobs=body.logprobs is not None,
                       top_logprobs=body.logprobs or None)


def _legacy_logprobs(chat_logprobs: dict | None) -> dict | None:
    """Chat's {"content": [{token, logprob, top_logprobs}]} in the legacy shape."""
    if not chat_logprobs:
        return None
    content = chat_logprobs.get("content") or []
    offsets, offset = [], 0
    for entry in content:
        offsets.append(offset)
        offset += len(entry.get("token", ""))
    return {"tokens": [e.get("token") for e in content], "token_logprobs": [e.get("logprob") for e in content],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top_logprobs") or []} for e in content],
            "text_offset": offsets}


def completion_json(call: Call, result: ChatResult) -> dict[str, Any]:
    return {
        "id": "cmpl-" + call.request_id[4:], "object": "text_completion", "created": int(time.time()),
        "model": call.model,
        "choices": [{"text": result.content or "", "index": 0, "logprobs": _legacy_logprobs(result.logprobs),
                     "finish_reason": result.finish_reason if result.finish_reason != "tool_calls" else "stop"}],
        "usage": usage_json(result.usage),
    }


class TextChunkWriter:
    """StreamEvents as `text_completion` SSE chunks, ending with [DONE]."""

    def __init__(self, call: Call, include_usage: bool) -> None:
        self.call, self.include_usage = call, include_usage
        self.id, self.created = "cmpl-" + call.request_id[4:], int(time.time())

    def _data(self, body: dict) -> bytes:
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def _chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        return self._data({"id": self.id, "object": "text_completion", "created": self.created,
                           "model": self.call.model,
                           "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]})

    def event(self, event: StreamEvent) -> bytes:
        if event.type == "delta":
            return self._chunk(event.text)
        if event.type == "done":
            out = self._chunk("", event.finish_reason or "stop")
            if self.include_usage:
                out += self._data({"id": self.id, "object": "text_completion", "created": self.created,
                                   "model": self.call.model, "choices": [], "usage": usage_json(self.call.usage)})
            return out + b"data: [DONE]\n\n"
        if event.type == "error":
            return self.error()
        return b""

    def error(self, _failure: GatewayError | None = None) -> bytes:
        # In-band after the answer started; no [DONE], so clients see the cut.
        error = GatewayError(self.call.error_message or "provider failed", code=self.call.error_code or "provider_error")
        error.type = "upstream_error"
        return self._data(envelope(error, self.call.request_id))


@router.post("/completions", summary="Create a text completion (OpenAI's legacy format)",
             response={200: dict, **error_responses(*CHAT)},
             openapi_extra=sse_doc("A text_completion; or with `stream: true`, text_completion chunks."))
async def completions(request: HttpRequest, body: CompletionIn):
    call: Call = request.ep_call
    call.stream = body.stream
    chat_request = to_chat_request(body)
    metadata = body.metadata or {}
    route = await pipeline.begin(call, chat_request, model=body.model,
                                 **begin_options(request, run_id=metadata.get("run_id"), step=metadata.get("step")))
    if body.stream:
        events, first = await stream_start(call, route, chat_request)
        writer = TextChunkWriter(call, bool(body.stream_options and body.stream_options.include_usage))
        stream = relay(call, events, writer.event, first=first, on_failure=writer.error)
        return streaming_response(call, stream, headers=served_by_headers(call))

    async def complete() -> HttpResponse:
        result = await pipeline.complete(call, route, chat_request)
        headers = served_by_headers(call) | {"X-EP-Cost-USD": f"{call.cost:.8f}"}
        return json_response(completion_json(call, result), call.request_id, headers=headers)

    return await idempotency.idempotent(request, complete, on_error=lambda e: error_response(request, e))
